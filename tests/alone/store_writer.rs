//! The session store's writer thread is not woken once per record (issue
//! #23): while it gathers a batch it looks for more writes every few
//! milliseconds instead of sleeping on the channel, which made every
//! `put` from a worker wake it (two context switches on the workers' core
//! per new session in a reconnect storm). Observed through the writer
//! thread's own count of voluntary context switches (Linux
//! `/proc/self/task/TID/status`), with writes spaced so that a writer
//! waiting on the channel would sleep between any two of them; and every
//! record is still committed. A trickle of writes puts it back to sleeping
//! on the channel rather than looking every few milliseconds.

use std::time::Duration;

use crate::{agent_session, ALONE};

use sysmanage_node::sessions::{unix_now_ms, Store, StoreOptions};

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

/// Puts `n` records `spacing` apart into a fresh store whose batch window
/// (`window`) is longer than all of them take, flushes, checks that every
/// record was committed, and returns the writer's voluntary context
/// switches meanwhile.
fn switches_for(n: usize, spacing: Duration, window: Duration) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions { commit_interval: window, ..StoreOptions::default() };
    let store = Store::open_with(dir.path(), opts).unwrap();
    let handle = store.handle();
    let now = unix_now_ms();
    let before = writer_switches();
    for i in 0..n {
        handle.put(agent_session(format!("agent-{i:05}.example.com"), now)).unwrap();
        std::thread::sleep(spacing);
    }
    handle.flush().unwrap();
    let switches = writer_switches() - before;
    assert_eq!(handle.stats().records_written, n as u64, "every record was committed");
    assert_eq!(store.load_all(now).unwrap().len(), n, "and is read back");
    store.close().unwrap();
    switches
}

#[tokio::test]
async fn the_writer_is_not_woken_for_each_record() {
    let _alone = ALONE.lock().await;
    // 0.3 ms apart: longer than a wake-up takes, so a writer blocked on the
    // channel would be woken by every put (717 times, measured before).
    let switches =
        tokio::task::spawn_blocking(|| switches_for(RECORDS, Duration::from_micros(300), Duration::from_millis(400)))
            .await
            .unwrap();
    // About one per 5 ms of gathering (the writes take >= 120 ms), the
    // commit's own, and the flush: far below one per record.
    assert!(switches < RECORDS as u64 / 4, "{switches} voluntary context switches for {RECORDS} records");
}

#[tokio::test]
async fn a_trickle_of_writes_does_not_keep_the_writer_looking() {
    let _alone = ALONE.lock().await;
    // 30 ms apart in one batch window: a writer looking every 5 ms for
    // the whole window would switch about 60 times; one that goes back to
    // sleeping on the channel after an empty look, about twice per record.
    let n = 10;
    let switches =
        tokio::task::spawn_blocking(move || switches_for(n, Duration::from_millis(30), Duration::from_millis(1000)))
            .await
            .unwrap();
    assert!(switches <= 3 * n as u64 + 2, "{switches} voluntary context switches for {n} records 30 ms apart");
}
