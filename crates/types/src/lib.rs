//! The shared vocabulary of Kairos.
//!
//! Every other crate speaks in these types: feature types and schemas ([`schema`]), the typed
//! values of one row ([`value`]), the parsing and validation of an inserted batch ([`ingest`]),
//! and the clock ([`clock`]) that lets tests own time.
//!
//! Nothing here does I/O beyond decoding bytes a caller already holds.

pub mod clock;
pub mod expectations;
pub mod export;
pub mod fault;
pub mod ingest;
pub mod panic;
pub mod position;
pub mod schema;
pub mod value;

pub use clock::{Clock, ManualClock, SystemClock};
pub use ingest::{Format, IngestError};
pub use position::{LogCut, LogPosition};
pub use schema::{
    Column, FeatureGroup, FeatureGroupSpec, FeatureType, SpecError, TableId, VectorIndexSpec,
};
pub use value::{OnlineRow, Value};
