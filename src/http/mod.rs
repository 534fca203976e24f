//! The daemon's HTTP face: the server and its endpoints, the status model it
//! serves, and the Prometheus metrics.

pub mod metrics;
pub mod server;
pub mod status;
