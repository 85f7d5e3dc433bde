//! The session store keeps no copy of its file in memory (issue #23): redb
//! moves every page it writes into its page cache, whose own default is
//! 1 GiB, so a store with that default held about 140 bytes per session
//! that nothing reads. The node's store caps it (`CACHE_SIZE`). Measured
//! with this crate's counting allocator (live heap bytes), with the same
//! writes through a store with redb's default, to show the measure sees
//! the cache at all.

use crate::{agent_session, live_heap_bytes, ALONE};

use sysmanage_node::sessions::{unix_now_ms, SessionRecord, Store, StoreOptions, CACHE_SIZE};

/// Sessions written: enough that redb's copy of the file (about 200 bytes
/// of heap per record written in random order) is many times the cap.
const RECORDS: usize = 20_000;

/// Live heap bytes that writing [`RECORDS`] sessions in random order leaves
/// behind, with `cache_size` bytes of redb's cache, the store still open.
fn heap_after_writes(cache_size: usize) -> i64 {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions { cache_size, ..StoreOptions::default() };
    let store = Store::open_with(dir.path(), opts).unwrap();
    let handle = store.handle();
    let now = unix_now_ms();
    let before = live_heap_bytes();
    // Built up front; each is freed once written.
    let records: Vec<SessionRecord> = (0..RECORDS)
        .map(|i| {
            agent_session(format!("agent-{:016x}.example.com", (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)), now)
        })
        .collect();
    for r in records {
        handle.put_wait(r).unwrap();
    }
    handle.flush().unwrap();
    let grown = live_heap_bytes() - before;
    assert_eq!(handle.stats().records_written, RECORDS as u64, "every record was committed");
    store.close().unwrap();
    grown
}

#[tokio::test]
async fn the_store_does_not_keep_its_file_in_memory() {
    let _alone = ALONE.lock().await;
    let redb_default = tokio::task::spawn_blocking(|| heap_after_writes(1 << 30)).await.unwrap();
    let capped = tokio::task::spawn_blocking(|| heap_after_writes(CACHE_SIZE)).await.unwrap();
    // The measure sees redb's cache: with its default it holds the file.
    assert!(redb_default > 3 << 20, "redb's default cache: {redb_default} bytes after {RECORDS} records");
    // Capped: the cache and the writer's bookkeeping, nowhere near a copy.
    assert!(
        capped < (CACHE_SIZE as i64) + (512 << 10),
        "capped store grew the heap by {capped} bytes after {RECORDS} records (redb's default: {redb_default})"
    );
}
