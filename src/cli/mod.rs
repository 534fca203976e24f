//! The binary's commands: each turns parsed arguments into library calls and an
//! [`Exit`]. This is the edge of the program, so errors are `anyhow` here and typed
//! (`thiserror`) everywhere below.

pub(crate) mod args;
mod chart;
mod completions;
mod control;
mod daemon;
mod get;
mod preview;
mod progress;
mod push;
mod reload;
mod render;
mod revision;
mod status;
mod sync;
mod version;

pub(crate) use completions::{completions, man};
pub(crate) use control::{reconcile, resume, suspend};
pub(crate) use daemon::run_daemon;
pub(crate) use get::get;
pub(crate) use preview::diff;
pub(crate) use push::push;
pub(crate) use status::status;
pub(crate) use sync::{Mode, sync};
pub(crate) use version::version;

/// How `converge` exits; scripts rely on these codes (`diff` follows `diff(1)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Exit {
    Ok = 0,
    /// `diff` found changes; `status`: a source is not synced.
    Changes = 1,
    Error = 2,
    /// `apply --wait`: applied, but something failed or was not ready in time;
    /// `apply`: a hook or a wave failed the sync; `status`: synced, but an object
    /// failed or went missing.
    NotReady = 3,
}
