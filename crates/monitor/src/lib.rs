//! Monitoring of deployed models: how far the features and predictions served have moved from
//! what the model was trained on (`drift`, on the two-sample statistics of `stats`), whether
//! its errors changed as late labels arrive (`quality`, with the streaming `detectors`), and
//! what to do about it (`retrain`). `service` runs monitors (`spec`) over the deployments'
//! inference logs; `report` draws their history.

pub mod detectors;
pub mod drift;
pub mod quality;
pub mod report;
pub mod retrain;
pub mod service;
pub mod spec;
pub mod stats;
pub mod telemetry;

pub use retrain::{Outcome, RetrainDecision};
pub use service::{Alert, History, MonitorRun, Monitors, Score};
pub use spec::{Monitor, MonitorSpec};
