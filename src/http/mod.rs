//! The daemon's HTTP face: the server and its endpoints, the status model it
//! serves, and the Prometheus metrics.

pub(crate) mod metrics;
pub(crate) mod server;
pub(crate) mod status;

pub use metrics::{ApplyAction, Metrics, ReconcileResult};
pub use server::{Hook, ServerState, fetch_status, serve};
pub use status::{ObjectState, ObjectStatus, SourceStatus, SourceType, StatusBoard, SyncResult};
