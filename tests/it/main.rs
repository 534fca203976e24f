//! The integration tests: one crate, so one link of the library and the test
//! harness in `common` compiled once. `cargo test --test it MODULE` runs one file's
//! tests, e.g. `cargo test --test it daemon_git::`.

// The crate's `unreachable_pub` lint keeps the library's API honest; in this test
// crate nothing is exported, and the harness's `pub` is its interface to the tests.
#![allow(unreachable_pub)]

mod common;

mod bad_input;
mod claims;
mod clusters;
mod completions;
mod controlplane;
mod crash;
mod daemon;
mod daemon_git;
mod daemon_restart;
mod deploy;
mod drift;
mod engine;
mod faults;
mod get;
mod health;
mod health_rules;
mod helm_hooks;
mod helm_repo;
mod hostile;
mod kube_client;
mod layout;
mod leader;
mod notify;
mod oci;
mod ordering;
mod ownership;
mod preview;
mod reconcile;
mod relist;
mod reload;
mod render;
mod render_daemon;
mod run_once;
mod secrets;
mod server;
mod shard;
mod sops;
mod source_dir;
mod source_git;
mod suspend;
mod symlinks;
mod tenancy;
mod web;
mod yaml_kubectl;
