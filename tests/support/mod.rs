//! Helpers for the source integration tests (`tests/source_*.rs`): real `git`
//! processes, a real HTTP server in front of `git http-backend`, all on loopback.
//! A missing tool fails the test with what to install; nothing is skipped.
#![allow(dead_code)] // each test binary uses a different part

pub mod git;
pub mod git_http;
pub mod sshd;
