//! Sticky sessions: which request belongs to which server, kept in memory
//! for the request path, persisted to redb, and shared with peers.
//!
//! - [`key`]: the affinity key of a request (cookie, query, header; the
//!   hostname inside a SysManage token, a JWT claim). Pure.
//! - [`record`]: [`SessionRecord`], hybrid-logical-clock versions, and the
//!   last-writer-wins rule every node applies. Pure.
//! - [`table`]: the concurrent in-memory table `proxy` reads and writes.
//! - [`policy`]: which server a new session goes to. Pure.
//! - [`store`]: the redb file and its single group-committing writer thread.
//! - [`sweeper`]: the background task that drops expired records.
//!
//! Called by `proxy` (key, table, policy), `cluster` (records, table), and
//! `app` (store, sweeper). Depends on `balance` only for its stable hashes.
//! The request path touches only the table: it never waits on the store,
//! which is fed through a non-blocking queue.

pub mod key;
pub mod policy;
pub mod record;
pub mod store;
pub mod sweeper;
pub mod table;

pub use key::{AffinityKey, KeyError, KeySpecError};
pub use policy::{Candidate, Policy};
pub use record::{unix_now_ms, wins, Hlc, HlcClock, SessionRecord};
pub use store::{Store, StoreError, StoreHandle, StoreOptions, StoreStats};
pub use sweeper::spawn_sweeper;
pub use table::{Claim, Table, Touch};

/// The sessions of a running node: the table the request path reads, the
/// handle that queues writes, and the store itself (closed at shutdown).
pub struct Sessions {
    pub table: std::sync::Arc<Table>,
    pub store: StoreHandle,
    owner: std::sync::Mutex<Option<Store>>,
    path: std::path::PathBuf,
}

impl Sessions {
    /// Opens (or creates) `data_dir/sessions.redb`, loads the live records
    /// and starts the sweeper. Must run inside a tokio runtime.
    pub fn open(node: &str, data_dir: &std::path::Path) -> Result<std::sync::Arc<Sessions>, StoreError> {
        let store = Store::open(data_dir)?;
        let table = std::sync::Arc::new(Table::new(node));
        let loaded = store.load_into(&table, unix_now_ms())?;
        tracing::info!(file = %store.path().display(), loaded, "session store opened");
        let handle = store.handle();
        spawn_sweeper(table.clone(), handle.clone(), std::time::Duration::from_secs(10));
        let path = store.path().to_path_buf();
        Ok(std::sync::Arc::new(Sessions { table, store: handle, owner: std::sync::Mutex::new(Some(store)), path }))
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Queues a record for the store; a full queue is logged, the record
    /// stays in memory.
    pub fn persist(&self, record: SessionRecord) {
        if let Err(e) = self.store.put(record) {
            tracing::warn!("session not persisted: {e}");
        }
    }

    /// Commits everything queued and closes the file (at shutdown). Blocks.
    pub fn close(&self) -> Result<(), StoreError> {
        let store = self.owner.lock().unwrap_or_else(|e| e.into_inner()).take();
        match store {
            Some(s) => s.close(),
            None => Ok(()),
        }
    }
}
