//! Recommendation deployments over the feature store.
//!
//! - `spec`: a recommender's definition file — groups, models, candidates, rules, diversity.
//! - `train`: `kairos recsys train` — training data through a feature view, the two towers and
//!   the ranker trained and registered with lineage, item embeddings written to an indexed
//!   group.
//! - `history`: each user's interactions and each item's, read from the interactions group and
//!   kept current by following its log.
//! - `live`: a loaded recommender's request path (retrieve → filter → rank → diversify).
//! - `service`: `Recommenders`, what the REST API and the V2 model view call.

pub mod history;
pub mod live;
pub mod service;
pub mod spec;
pub mod train;
pub mod v2;

pub mod error {
    //! A recommender fails the way a deployment does, and transports map it the same way.
    pub use kairos_deploy::{DeployError, Result};
}

pub use live::{RecommendRequest, RecommendResponse, Recommended, Stages};
pub use service::{InteractionEvent, RecommenderStatus, Recommenders};
pub use spec::RecommenderSpec;
