//! Monitoring of deployed models: how far the features and predictions served have moved from
//! what the model was trained on (`drift`, on the two-sample statistics of `stats`), and
//! whether its errors changed as late labels arrive (`detectors`).

pub mod detectors;
pub mod drift;
pub mod stats;
