//! Fault injection into this node's gossip transport, for end-to-end tests
//! ([`FAULT_FILE_ENV`]).

use std::path::PathBuf;
use std::time::Duration;

use crate::cluster::FaultInjector;

/// Names a file of fault rules (`cluster::FaultInjector::apply` syntax) that
/// the node re-reads every 100 ms: the test hook end-to-end tests use to
/// drop, delay or partition gossip between real processes. Unset in
/// production; the node logs a warning when it is set.
pub const FAULT_FILE_ENV: &str = "SYSMANAGE_NODE_FAULT_FILE";

/// The fault injector for the gossip transport when [`FAULT_FILE_ENV`] is
/// set, with a task that applies the file's rules as they change.
pub(super) fn from_env() -> Option<FaultInjector> {
    std::env::var_os(FAULT_FILE_ENV).map(|file| {
        let faults = FaultInjector::new();
        tracing::warn!(file = %std::path::Path::new(&file).display(), "test fault injection is on ({FAULT_FILE_ENV})");
        tokio::spawn(watch_fault_file(PathBuf::from(file), faults.clone()));
        faults
    })
}

async fn watch_fault_file(file: PathBuf, faults: FaultInjector) {
    let mut applied = String::new();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if text == applied {
            continue;
        }
        match faults.apply(if text.trim().is_empty() { "clear" } else { &text }) {
            Ok(()) => tracing::warn!(rules = %text.trim(), "test fault rules applied"),
            Err(e) => tracing::error!(file = %file.display(), "test fault rules not applied: {e}"),
        }
        applied = text;
    }
}
