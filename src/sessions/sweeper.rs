//! The TTL sweeper: a background task that drops expired records and old
//! tombstones from the table and asks the store to do the same.
//!
//! Spawned when the sessions open. It holds the table through a `Weak`, so it ends on its
//! own once the table is dropped; it never blocks (the store's sweep is a
//! queued write).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::record::unix_now_ms;
use super::store::{StoreError, StoreHandle};
use super::table::Table;

/// Sweeps `table` and `store` every `every` (first sweep after one period)
/// until the table is dropped.
pub fn spawn_sweeper(table: Arc<Table>, store: StoreHandle, every: Duration) -> JoinHandle<()> {
    let table = Arc::downgrade(&table);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(table) = table.upgrade() else { return };
            let now = unix_now_ms();
            let removed = table.sweep(now);
            drop(table);
            if removed > 0 {
                tracing::debug!(removed, "swept expired sessions");
            }
            match store.sweep(now) {
                Ok(()) => {}
                // Closed at shutdown: the table is about to go too.
                Err(StoreError::Closed) => {}
                Err(e) => tracing::warn!("session sweep not queued: {e}"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::store::Store;

    async fn wait_for(what: &str, cond: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn sweeps_table_and_store_then_ends_with_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let table = Arc::new(Table::new("lb1"));
        let now = unix_now_ms();
        // Written a minute ago with a 1 s TTL: expired. The other is live.
        let old = table.assign("agents", "old", "s1", Duration::from_secs(1), now - 60_000);
        let live = table.assign("agents", "live", "s1", Duration::from_secs(3600), now);
        store.handle().put(old).unwrap();
        store.handle().put(live).unwrap();

        let task = spawn_sweeper(table.clone(), store.handle(), Duration::from_millis(10));
        wait_for("the table sweep", || table.len() == 1).await;
        wait_for("the store sweep", || store.handle().stats().swept == 1).await;
        assert_eq!(table.counts_per_server("agents").get("s1"), Some(&1));
        assert_eq!(store.load_all(0).unwrap().len(), 1);

        assert!(!task.is_finished());
        drop(table);
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("sweeper still running").unwrap();
    }
}
