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
//! `control` (opens the store, which starts the sweeper). Depends on `balance` only for its stable hashes.
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
pub use store::{MovedAside, Store, StoreError, StoreHandle, StoreOptions, StoreProblem, StoreStats, CACHE_SIZE};
pub use sweeper::spawn_sweeper;
pub use table::{Claim, Table, Touch};

/// The sessions of a running node: the table the request path reads, the
/// handle that queues writes, and the store itself (closed at shutdown).
pub struct Sessions {
    pub table: std::sync::Arc<Table>,
    pub store: StoreHandle,
    /// Where records this node writes go to be gossiped (in a cluster).
    gossip: Option<tokio::sync::mpsc::Sender<SessionRecord>>,
    owner: std::sync::Mutex<Option<Store>>,
    path: std::path::PathBuf,
    refilled: std::sync::atomic::AtomicBool,
    /// During an in-place upgrade, after the store was released: where the
    /// records this node writes (or merges) go, to the new process.
    handover: arc_swap::ArcSwapOption<tokio::sync::mpsc::UnboundedSender<SessionRecord>>,
}

impl Sessions {
    /// Opens (or creates) `data_dir/sessions.redb`, loads the live records
    /// and starts the sweeper. In a cluster, `gossip` is the replication
    /// task's outbox: every record this node writes is also sent there.
    /// Only a file held by another process is an error: an unusable file is
    /// moved aside, one that cannot be written leaves the records in memory
    /// (see [`Store::open_or_recover`]). Must run inside a tokio runtime.
    pub fn open(
        node: &str,
        data_dir: &std::path::Path,
        gossip: Option<tokio::sync::mpsc::Sender<SessionRecord>>,
    ) -> Result<std::sync::Arc<Sessions>, StoreError> {
        let now = unix_now_ms();
        let (store, records) = Store::open_or_recover(data_dir, StoreOptions::default(), now)?;
        let table = std::sync::Arc::new(Table::new(node));
        let loaded = records.into_iter().map(|r| table.merge(r, now)).filter(|merged| *merged).count();
        tracing::info!(file = %store.path().display(), loaded, "session store opened");
        let handle = store.handle();
        spawn_sweeper(table.clone(), handle.clone(), std::time::Duration::from_secs(10));
        let path = store.path().to_path_buf();
        Ok(std::sync::Arc::new(Sessions {
            table,
            store: handle,
            gossip,
            owner: std::sync::Mutex::new(Some(store)),
            path,
            refilled: Default::default(),
            handover: Default::default(),
        }))
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The damaged file moved aside at start, while it matters: until the
    /// table was filled again from a peer ([`Sessions::refilled`]).
    pub fn moved_aside(&self) -> Option<MovedAside> {
        if self.refilled.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        self.store.moved_aside()
    }

    /// The session table was fetched whole from a peer: what a store moved
    /// aside at start held is known again.
    pub fn refilled(&self) {
        self.refilled.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Queues a record this node wrote for the store, and for the peers when
    /// the node is in a cluster. A full queue is logged (store) or counted
    /// (gossip: peers then learn the record from a catch-up); the record
    /// stays in memory.
    pub fn persist(&self, record: SessionRecord) {
        if let Some(tx) = &self.gossip {
            if tx.try_send(record.clone()).is_err() {
                crate::metrics::COUNTERS.sessions_not_gossiped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        self.hand_over(&record);
        if let Err(e) = self.store.put(record) {
            tracing::warn!("session not persisted: {e}");
        }
    }

    /// In an upgrade: commits what is queued and closes the file for the
    /// new process, which from now on receives every record this node
    /// writes or merges through `forward`. Returns the records that could
    /// not be committed, to send too. Blocks.
    pub fn release(
        &self,
        forward: tokio::sync::mpsc::UnboundedSender<SessionRecord>,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        // First: no record written during the release is missed.
        self.handover.store(Some(std::sync::Arc::new(forward)));
        self.store.release()
    }

    /// The upgrade failed: the file is this node's again.
    pub fn resume(&self) {
        self.handover.store(None);
        if let Err(e) = self.store.resume() {
            tracing::error!("taking the session store back: {e}");
        }
    }

    fn hand_over(&self, record: &SessionRecord) {
        if let Some(tx) = self.handover.load().as_ref() {
            let _ = tx.send(record.clone());
        }
    }

    /// Applies a peer's record: kept (and queued for the store) when it wins
    /// over the one held. Never re-gossiped.
    pub fn merge_remote(&self, record: SessionRecord, now_ms: u64) -> bool {
        if !self.table.merge(record.clone(), now_ms) {
            return false;
        }
        self.hand_over(&record);
        if let Err(e) = self.store.put(record) {
            tracing::warn!("peer's session not persisted: {e}");
        }
        true
    }

    /// Like [`Sessions::merge_remote`] for a whole table from a peer; waits
    /// for room in the store's queue instead of dropping. Blocks (call from
    /// `spawn_blocking`). Returns how many records were applied.
    pub fn merge_remote_blocking(&self, records: Vec<SessionRecord>, now_ms: u64) -> usize {
        let mut applied = 0;
        for record in records {
            if self.table.merge(record.clone(), now_ms) {
                applied += 1;
                if let Err(e) = self.store.put_wait(record) {
                    tracing::warn!("peer's session not persisted: {e}");
                }
            }
        }
        applied
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
