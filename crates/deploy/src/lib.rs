//! Kairos serving: deployments that run the transformer (online feature vectors, on-demand
//! features, frozen transforms) and the predictor in one process, swap revisions atomically,
//! log every prediction to a feature group, and account latency against an objective.
//!
//! [`deployments::Deployments`] is the service the transports call; [`v2`] is the Open
//! Inference Protocol's view of it (models, tensors, infer), which the REST and gRPC
//! transports in `kairos-serve` speak.

pub mod deployments;
pub mod error;
pub mod inference_log;
pub mod live;
pub mod telemetry;
pub mod training;
pub mod v2;

pub use deployments::{
    DeploymentStatus, Deployments, EntryPrediction, PredictRequest, PredictResponse,
};
pub use error::{DeployError, Result};
pub use live::{Live, Scored};
