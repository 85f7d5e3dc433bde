//! Tests that must not share their process with other tests: they read the
//! process-wide counters (`sysmanage_node::metrics::COUNTERS`) as exact
//! deltas, or need most of the process's file descriptors. They are a crate
//! of their own (no other crate's tests run in this process), and each holds
//! [`ALONE`] while it runs (`smuggling`: while each of its cases runs), so
//! that under `cargo test` they run one at a time.

#[path = "../support/mod.rs"]
mod support;

#[path = "../support/raw_backend.rs"]
mod raw_backend;
#[path = "../support/strict_h1.rs"]
mod strict_h1;

mod idle_tunnels;
mod smuggling;
mod tls_metrics;
mod upgrade;
mod websocket_scale;

/// Held by a test of this crate for as long as nothing else may run.
static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
