//! The session store's writer thread is not woken once per record (issue
//! #23): while it gathers a batch it looks for more writes every few
//! milliseconds instead of sleeping on the channel, which made every
//! `put` from a worker wake it (two context switches on the workers' core
//! per new session in a reconnect storm). Observed through the writer
//! thread's own count of voluntary context switches (Linux
//! `/proc/self/task/TID/status`), with writes spaced so that a writer
//! waiting on the channel would sleep between any two of them; and every
//! record is still committed.

use std::time::Duration;

use crate::ALONE;

use sysmanage_node::sessions::{unix_now_ms, Hlc, SessionRecord, Store, StoreOptions};

const RECORDS: usize = 400;

/// The voluntary context switches of this process's thread named
/// `sessions-store` (the tests of this crate run one at a time, so there
/// is one). A new thread names itself once it runs: waited for.
fn writer_switches() -> u64 {
    for _ in 0..200 {
        let found = writer_threads();
        if !found.is_empty() {
            assert_eq!(found.len(), 1, "one writer thread in this process");
            return found[0];
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no thread named sessions-store in this process");
}

fn writer_threads() -> Vec<u64> {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else { continue };
        if comm.trim() != "sessions-store" {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("voluntary_ctxt_switches:")).unwrap();
        found.push(line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap());
    }
    found
}

#[tokio::test]
async fn the_writer_is_not_woken_for_each_record() {
    let _alone = ALONE.lock().await;
    tokio::task::spawn_blocking(|| {
        let dir = tempfile::tempdir().unwrap();
        // One batch window longer than all the writes take.
        let opts = StoreOptions { commit_interval: Duration::from_millis(400), ..StoreOptions::default() };
        let store = Store::open_with(dir.path(), opts).unwrap();
        let handle = store.handle();
        let now = unix_now_ms();
        let before = writer_switches();
        for i in 0..RECORDS {
            handle
                .put(SessionRecord {
                    key: format!("agent-{i:05}.example.com"),
                    pool: "agents".into(),
                    server: "app1".into(),
                    expires_at_ms: now + 3_600_000,
                    version: Hlc::from_parts(now, 0),
                    origin: "lb1".into(),
                    tombstone: false,
                })
                .unwrap();
            // Longer than a wake-up takes: a writer blocked on the channel
            // would be woken by every put.
            std::thread::sleep(Duration::from_micros(300));
        }
        handle.flush().unwrap();
        let switches = writer_switches() - before;
        assert_eq!(handle.stats().records_written, RECORDS as u64, "every record was committed");
        assert_eq!(store.load_all(now).unwrap().len(), RECORDS, "and is read back");
        // About one per 5 ms of gathering (the writes take >= 120 ms), the
        // commit's own, and the flush: far below one per record.
        assert!(switches < RECORDS as u64 / 4, "{switches} voluntary context switches for {RECORDS} records");
        store.close().unwrap();
    })
    .await
    .unwrap();
}
