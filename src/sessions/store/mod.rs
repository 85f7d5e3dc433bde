//! Session persistence: one redb file, `sessions.redb` in `data_dir`,
//! written by one thread.
//!
//! The in-memory [`super::Table`] is the read path; this store only makes
//! records survive a restart. Callers (`proxy` after a table change,
//! `cluster` after a merge, the sweeper) enqueue writes through a
//! [`StoreHandle`] with a non-blocking send; no redb call ever runs on the
//! request path. The writer thread group-commits: it collects writes for at
//! most [`StoreOptions::commit_interval`] (or [`StoreOptions::max_batch`]
//! of them) and commits them in one transaction with
//! `Durability::Immediate`, so the fsync cost is paid per batch, not per
//! session. `control` opens the store, which is loaded into the table at
//! start ([`Store::load_all`]); `runtime` flushes it at shutdown.
//!
//! A running node opens it with [`Store::open_or_recover`], which keeps the
//! node up whatever the file's state (only a file held by another process
//! refuses the start):
//! - a damaged file, or one written by a newer build, is renamed aside
//!   (`sessions.redb.corrupt-<UTC time>`, kept for inspection) and an empty
//!   store is started; [`StoreHandle::moved_aside`] says so until restart;
//! - a file that cannot be opened or written (read-only filesystem, full
//!   disk, `data_dir` not creatable) leaves the records in memory: the
//!   writer keeps what it could not commit and retries every
//!   [`StoreOptions::retry_interval`], reopening the file (redb refuses
//!   every write after an I/O error until it is reopened).
//!   [`StoreHandle::problem`] says what is wrong until a commit succeeds.
//!
//! Layout (schema version [`SCHEMA_VERSION`]):
//! - `meta`: `"schema_version" → u64`; a file with a newer version is refused.
//! - `sessions`: `(pool, key) → (server, expires_at_ms, version, origin, tombstone)`.
//! - `expiry`: `(expires_at_ms, pool, key) → ()`, the TTL index the sweep
//!   walks instead of scanning every record.

#[cfg(test)]
mod tests;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, StorageError, TableDefinition};

use super::record::{Hlc, SessionRecord};
use super::table::Table;
use writer::Writer;

/// The database file's name inside `data_dir`.
pub const FILE_NAME: &str = "sessions.redb";
/// The layout this build writes and reads.
pub const SCHEMA_VERSION: u64 = 1;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SCHEMA_KEY: &str = "schema_version";
type RecordValue<'a> = (&'a str, u64, u64, &'a str, bool);
const SESSIONS: TableDefinition<(&str, &str), RecordValue> = TableDefinition::new("sessions");
const EXPIRY: TableDefinition<(u64, &str, &str), ()> = TableDefinition::new("expiry");

/// Why the store cannot be opened or written. Messages name the file and
/// say what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data_dir {path}: {detail}")]
    DataDir { path: PathBuf, detail: String },
    #[error(
        "sessions store {path} is locked by another process: is another sysmanage-node running with the same data_dir?"
    )]
    Locked { path: PathBuf },
    #[error("sessions store {path} is corrupt ({detail})")]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "sessions store {path} has schema version {found}, but this sysmanage-node knows only up to {supported} (a newer sysmanage-node wrote it)"
    )]
    SchemaTooNew { path: PathBuf, found: u64, supported: u64 },
    #[error("cannot open sessions store {path}: {detail}")]
    Open { path: PathBuf, detail: String },
    #[error("sessions store {path}: {action} failed: {detail}")]
    Io { path: PathBuf, action: &'static str, detail: String },
    #[error("sessions store write queue is full ({capacity} writes waiting; the disk is not keeping up): the record stays in memory only")]
    QueueFull { capacity: usize },
    #[error("sessions store is closed")]
    Closed,
}

/// Tuning of the writer thread.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// Longest a write waits for its batch to be committed.
    pub commit_interval: Duration,
    /// A batch is committed as soon as it holds this many writes.
    pub max_batch: usize,
    /// Writes that may wait for the writer; beyond it, writes are refused.
    pub queue_capacity: usize,
    /// How often writes that failed (the file cannot be written) are tried
    /// again.
    pub retry_interval: Duration,
    /// Bytes of file pages redb may keep in memory ([`CACHE_SIZE`]).
    pub cache_size: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            commit_interval: Duration::from_millis(50),
            max_batch: 1024,
            queue_capacity: 65_536,
            retry_interval: Duration::from_secs(2),
            cache_size: CACHE_SIZE,
        }
    }
}

/// redb's page cache, at most (its own default is 1 GiB). redb moves every
/// page it writes into this cache, so by default the node would hold a
/// copy of the whole file (about 140 bytes per session) that nothing reads:
/// the in-memory table is the read path, and the writer's B-tree walks only
/// need the branch pages near the root and the tail of the expiry index.
/// Pages beyond this are read back from the kernel's page cache when a
/// write needs them. `bench/sessions_load.sh` measures what the cap costs
/// in write throughput (BENCHMARKS.md).
pub const CACHE_SIZE: usize = 256 * 1024;

/// Records kept in memory for a file that cannot be written, at most; the
/// writes beyond are dropped (counted in [`StoreStats::dropped`]).
pub const MAX_PENDING: usize = 1_000_000;

/// Counters of the writer, for metrics and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Transactions committed.
    pub commits: u64,
    /// Records written (puts that won over what was stored).
    pub records_written: u64,
    /// Records the sweep deleted.
    pub swept: u64,
    /// Writes refused because the queue was full.
    pub dropped: u64,
    /// Commits (or reopenings of the file) that failed; their writes wait
    /// in memory and are retried.
    pub commit_errors: u64,
    /// Records waiting in memory for the file to be writable again.
    pub pending: u64,
}

/// What is wrong with the store now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreProblem {
    pub error: String,
    /// Unix milliseconds when it started.
    pub since_unix_ms: u64,
}

/// A damaged (or too new) file that was renamed aside at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedAside {
    pub to: PathBuf,
    /// Why the file could not be used.
    pub reason: String,
}

#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
    records_written: AtomicU64,
    swept: AtomicU64,
    dropped: AtomicU64,
    commit_errors: AtomicU64,
    pending: AtomicU64,
    problem: Mutex<Option<StoreProblem>>,
    moved_aside: Mutex<Option<MovedAside>>,
}

impl Counters {
    /// Records a failure; true when the store was healthy until now.
    fn set_problem(&self, error: &StoreError) -> bool {
        let mut p = self.problem.lock().unwrap_or_else(|e| e.into_inner());
        let first = p.is_none();
        if first {
            *p = Some(StoreProblem { error: error.to_string(), since_unix_ms: crate::sessions::unix_now_ms() });
        } else if let Some(p) = p.as_mut() {
            p.error = error.to_string();
        }
        first
    }

    /// Clears the failure; what it was, if there was one.
    fn clear_problem(&self) -> Option<StoreProblem> {
        self.problem.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The database the writer uses, shared with [`Store::load_all`]; empty
/// while the file cannot be opened.
type Slot = Arc<Mutex<Option<Arc<Database>>>>;
/// Opens the file again after a failure.
type Opener = Box<dyn FnMut() -> Result<Database, StoreError> + Send>;

enum Op {
    Put(SessionRecord),
    /// Delete what expired at or before this Unix millisecond.
    Sweep(u64),
    Flush(SyncSender<Result<(), StoreError>>),
    /// Commit, close the file and keep later writes in memory (an upgrade's
    /// new process opens it); answered with the records not committed.
    Release(SyncSender<Vec<SessionRecord>>),
    /// Open the file again and write what was kept (the upgrade failed).
    Resume,
    Close,
}

/// The open store. Owns the writer thread: [`Store::close`] (or drop)
/// commits what is queued and stops it.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    db: Slot,
    handle: StoreHandle,
    writer: Option<JoinHandle<()>>,
}

/// A cheap, cloneable sender of writes to the store's writer thread.
#[derive(Debug, Clone)]
pub struct StoreHandle {
    tx: mpsc::Sender<Op>,
    /// Operations sent and not yet received by the writer.
    queued: Arc<AtomicUsize>,
    path: Arc<Path>,
    capacity: usize,
    counters: Arc<Counters>,
}

/// The writer's end of the queue. The queue is std's unbounded channel,
/// which allocates its slots in blocks of a few dozen as they fill and frees
/// them as they drain, bounded by a count of what is in it: a bounded
/// (`sync_channel`) queue of `queue_capacity` slots was allocated and
/// written in full at start, 8 MiB that an idle node kept for nothing.
struct Queue {
    rx: mpsc::Receiver<Op>,
    queued: Arc<AtomicUsize>,
}

impl Queue {
    fn took<E>(&self, got: Result<Op, E>) -> Result<Op, E> {
        if got.is_ok() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
        got
    }

    fn recv(&self) -> Result<Op, mpsc::RecvError> {
        self.took(self.rx.recv())
    }

    fn recv_timeout(&self, timeout: Duration) -> Result<Op, RecvTimeoutError> {
        self.took(self.rx.recv_timeout(timeout))
    }

    /// The next write of a batch that is being gathered, before `deadline`.
    /// While writes come faster than [`GATHER_TICK`], the writer looks for
    /// them every tick instead of sleeping on the channel, so that the
    /// senders (the workers) do not wake it for each record: a storm of new
    /// agents made about two context switches per session on the workers'
    /// core. A tick that finds nothing puts it back to sleep on the channel,
    /// so that a trickle of writes (sessions refreshed by their tunnels)
    /// does not keep it looking every tick.
    fn gather(&self, deadline: Instant) -> Result<Op, RecvTimeoutError> {
        let mut looked = false;
        loop {
            match self.rx.try_recv() {
                Ok(op) => return self.took(Ok(op)),
                Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(RecvTimeoutError::Timeout);
            }
            if looked {
                return self.recv_timeout(deadline - now);
            }
            std::thread::sleep((deadline - now).min(GATHER_TICK));
            looked = true;
        }
    }
}

/// How often the writer looks for more writes while it gathers a batch
/// (a flush waits at most this much longer than it would otherwise).
const GATHER_TICK: Duration = Duration::from_millis(5);

impl Store {
    /// Opens (or creates) `data_dir/sessions.redb` with default options.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        Store::open_with(data_dir, StoreOptions::default())
    }

    /// Opens the store strictly: any problem with the file is an error.
    pub fn open_with(data_dir: &Path, opts: StoreOptions) -> Result<Store, StoreError> {
        let path = data_dir.join(FILE_NAME);
        let cache = opts.cache_size;
        let db = open_file(data_dir, &path, cache)?;
        let opener = {
            let (data_dir, path) = (data_dir.to_owned(), path.clone());
            Box::new(move || open_file(&data_dir, &path, cache)) as Opener
        };
        Store::start(path, Some(db), opener, opts, Arc::default())
    }

    /// Opens the store for a running node, which must stay up whatever the
    /// file's state: only [`StoreError::Locked`] (another process holds the
    /// file) is an error. A damaged or too new file is moved aside and an
    /// empty store started; a file that cannot be opened leaves the node
    /// with its records in memory, retried every
    /// [`StoreOptions::retry_interval`]. Returns the store and the records
    /// in force at `now_ms`.
    pub fn open_or_recover(
        data_dir: &Path,
        opts: StoreOptions,
        now_ms: u64,
    ) -> Result<(Store, Vec<SessionRecord>), StoreError> {
        let path = data_dir.join(FILE_NAME);
        let counters = Arc::new(Counters::default());
        let cache = opts.cache_size;
        let mut opener = {
            let (data_dir, path, counters) = (data_dir.to_owned(), path.clone(), counters.clone());
            Box::new(move || open_recovering(&data_dir, &path, &counters, cache)) as Opener
        };
        let (db, records) = match opener() {
            Ok(db) => match read_all(&db, &path, now_ms) {
                Ok(records) => (Some(db), records),
                // Damage that the integrity check did not see: the same as at open.
                Err(e @ StoreError::Corrupt { .. }) => {
                    drop(db);
                    move_aside(&path, &e, &counters)?;
                    (Some(open_file(data_dir, &path, cache)?), Vec::new())
                }
                Err(e) => return Err(e),
            },
            Err(e @ StoreError::Locked { .. }) => return Err(e),
            Err(e) => {
                counters.set_problem(&e);
                tracing::error!(
                    "{e}; serving with sessions in memory only, trying again every {}s",
                    opts.retry_interval.as_secs_f64()
                );
                (None, Vec::new())
            }
        };
        Ok((Store::start(path, db, opener, opts, counters)?, records))
    }

    fn start(
        path: PathBuf,
        db: Option<Database>,
        open: Opener,
        opts: StoreOptions,
        counters: Arc<Counters>,
    ) -> Result<Store, StoreError> {
        let slot: Slot = Arc::new(Mutex::new(db.map(Arc::new)));
        let (tx, rx) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let handle = StoreHandle {
            tx,
            queued: queued.clone(),
            path: Arc::from(path.as_path()),
            capacity: opts.queue_capacity,
            counters: counters.clone(),
        };
        let writer = Writer {
            slot: slot.clone(),
            open,
            path: path.clone(),
            rx: Queue { rx, queued },
            opts,
            counters,
            pending: Default::default(),
            released: false,
        };
        let writer =
            std::thread::Builder::new().name("sessions-store".into()).spawn(move || writer.run()).map_err(|e| {
                StoreError::Open { path: path.clone(), detail: format!("cannot start the writer thread: {e}") }
            })?;
        Ok(Store { path, db: slot, handle, writer: Some(writer) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn handle(&self) -> StoreHandle {
        self.handle.clone()
    }

    /// Every stored record still in force at `now_ms` (tombstones included:
    /// the table needs them to refuse older copies from peers).
    pub fn load_all(&self, now_ms: u64) -> Result<Vec<SessionRecord>, StoreError> {
        let db = self.db.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match db {
            Some(db) => read_all(&db, &self.path, now_ms),
            None => Ok(Vec::new()),
        }
    }

    /// [`Store::load_all`] merged into `table`; returns how many records it took.
    pub fn load_into(&self, table: &Table, now_ms: u64) -> Result<usize, StoreError> {
        Ok(self.load_all(now_ms)?.into_iter().map(|r| table.merge(r, now_ms)).filter(|merged| *merged).count())
    }

    /// Commits everything queued, stops the writer thread and closes the file.
    pub fn close(mut self) -> Result<(), StoreError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), StoreError> {
        let Some(writer) = self.writer.take() else { return Ok(()) };
        let flushed = self.handle.flush();
        // The writer may already be gone (it panicked); joining tells.
        let _ = self.handle.control(Op::Close);
        match writer.join() {
            Ok(()) => flushed,
            Err(_) => Err(StoreError::Io {
                path: self.path.clone(),
                action: "writing",
                detail: "the writer thread panicked".into(),
            }),
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::error!("{e}");
        }
    }
}

impl StoreHandle {
    /// Queues a record to be written (a tombstone is a record too). Never
    /// blocks; refuses when the queue is full.
    pub fn put(&self, record: SessionRecord) -> Result<(), StoreError> {
        self.send(Op::Put(record))
    }

    /// Queues a record, waiting while the queue is full. Blocks the calling
    /// thread (bulk loads from a peer).
    pub fn put_wait(&self, record: SessionRecord) -> Result<(), StoreError> {
        while !self.reserve() {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.sent(Op::Put(record))
    }

    /// Queues the deletion of records expired at `now_ms`.
    pub fn sweep(&self, now_ms: u64) -> Result<(), StoreError> {
        self.send(Op::Sweep(now_ms))
    }

    /// Waits until everything queued before the call is committed. Blocks
    /// the calling thread (from async code: `spawn_blocking`).
    pub fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.control(Op::Flush(tx))?;
        rx.recv().map_err(|_| StoreError::Closed)?
    }

    /// Commits what is queued and closes the file, for another process to
    /// open (an in-place upgrade); later writes stay in memory, silently,
    /// until [`StoreHandle::resume`] or close. Returns the records that
    /// could not be committed (a full disk), for the caller to pass on.
    /// Blocks the calling thread.
    pub fn release(&self) -> Result<Vec<SessionRecord>, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.control(Op::Release(tx))?;
        rx.recv().map_err(|_| StoreError::Closed)
    }

    /// Opens the file again after [`StoreHandle::release`] and writes the
    /// records kept meanwhile.
    pub fn resume(&self) -> Result<(), StoreError> {
        self.control(Op::Resume)
    }

    pub fn stats(&self) -> StoreStats {
        let c = &self.counters;
        StoreStats {
            commits: c.commits.load(Ordering::Relaxed),
            records_written: c.records_written.load(Ordering::Relaxed),
            swept: c.swept.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            commit_errors: c.commit_errors.load(Ordering::Relaxed),
            pending: c.pending.load(Ordering::Relaxed),
        }
    }

    /// What keeps the file from being written now, if anything.
    pub fn problem(&self) -> Option<StoreProblem> {
        self.counters.problem.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The damaged file this store replaced at open, if it did.
    pub fn moved_aside(&self) -> Option<MovedAside> {
        self.counters.moved_aside.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a write, or refuses it when `capacity` operations wait.
    fn send(&self, op: Op) -> Result<(), StoreError> {
        if !self.reserve() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return Err(StoreError::QueueFull { capacity: self.capacity });
        }
        self.sent(op)
    }

    /// Takes a place in the queue if one is free.
    fn reserve(&self) -> bool {
        let capacity = self.capacity.max(1);
        self.queued.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < capacity).then_some(n + 1)).is_ok()
    }

    /// Sends `op` into a place taken by [`StoreHandle::reserve`].
    fn sent(&self, op: Op) -> Result<(), StoreError> {
        self.tx.send(op).map_err(|_| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            StoreError::Closed
        })
    }

    /// Flush, release, resume and close: never refused for a full queue.
    fn control(&self, op: Op) -> Result<(), StoreError> {
        self.queued.fetch_add(1, Ordering::AcqRel);
        self.sent(op)
    }
}

/// Every record of `db` in force at `now_ms` (tombstones included).
fn read_all(db: &Database, path: &Path, now_ms: u64) -> Result<Vec<SessionRecord>, StoreError> {
    let io = |e: redb::Error| io_error(path, "reading", e);
    let txn = db.begin_read().map_err(|e| io(e.into()))?;
    let table = txn.open_table(SESSIONS).map_err(|e| io(e.into()))?;
    let mut out = Vec::new();
    for item in table.iter().map_err(|e| io(e.into()))? {
        let (k, v) = item.map_err(|e| io(e.into()))?;
        let (pool, key) = k.value();
        let (server, expires_at_ms, version, origin, tombstone) = v.value();
        if expires_at_ms <= now_ms {
            continue;
        }
        out.push(SessionRecord {
            key: key.to_owned(),
            pool: pool.to_owned(),
            server: server.to_owned(),
            expires_at_ms,
            version: Hlc(version),
            origin: origin.to_owned(),
            tombstone,
        });
    }
    Ok(out)
}

/// Creates `data_dir` and opens (or creates) the file in it, checked, with
/// `cache` bytes of redb's page cache.
fn open_file(data_dir: &Path, path: &Path, cache: usize) -> Result<Database, StoreError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| StoreError::DataDir { path: data_dir.to_owned(), detail: e.to_string() })?;
    // Integrity is checked on open: a file damaged outside redb then gives
    // an error instead of a panic later. The file is small; the check is quick.
    let db = Database::builder()
        .set_check_integrity_on_open(true)
        .set_cache_size(cache)
        .create(path)
        .map_err(|e| open_error(path, e))?;
    prepare_schema(&db, path)?;
    Ok(db)
}

/// [`open_file`], moving a damaged or too new file aside first.
fn open_recovering(data_dir: &Path, path: &Path, counters: &Counters, cache: usize) -> Result<Database, StoreError> {
    match open_file(data_dir, path, cache) {
        Err(e @ (StoreError::Corrupt { .. } | StoreError::SchemaTooNew { .. })) => {
            move_aside(path, &e, counters)?;
            open_file(data_dir, path, cache)
        }
        other => other,
    }
}

/// Renames an unusable file to `<file>.corrupt-<UTC time>` beside it, kept
/// for inspection, and logs it at `error`.
fn move_aside(path: &Path, why: &StoreError, counters: &Counters) -> Result<(), StoreError> {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().replace(':', "");
    let mut to = path.as_os_str().to_owned();
    to.push(format!(".corrupt-{stamp}"));
    let to = PathBuf::from(to);
    std::fs::rename(path, &to).map_err(|e| StoreError::Io {
        path: path.to_owned(),
        action: "moving the unusable file aside",
        detail: e.to_string(),
    })?;
    tracing::error!(
        moved_to = %to.display(),
        "{why}; the file was moved aside and this node starts with an empty session store \
         (in a cluster the table is fetched from a peer; otherwise sessions are re-created as agents reconnect)"
    );
    *counters.moved_aside.lock().unwrap_or_else(|e| e.into_inner()) = Some(MovedAside { to, reason: why.to_string() });
    Ok(())
}

/// Creates the tables on first open; refuses a layout newer than this build's.
fn prepare_schema(db: &Database, path: &Path) -> Result<(), StoreError> {
    let fail = |e: redb::Error| open_redb_error(path, e);
    let mut txn = db.begin_write().map_err(|e| fail(e.into()))?;
    txn.set_durability(Durability::Immediate).map_err(|e| fail(e.into()))?;
    {
        let mut meta = txn.open_table(META).map_err(|e| fail(e.into()))?;
        let found = meta.get(SCHEMA_KEY).map_err(|e| fail(e.into()))?.map(|v| v.value());
        match found {
            Some(found) if found > SCHEMA_VERSION => {
                return Err(StoreError::SchemaTooNew { path: path.to_owned(), found, supported: SCHEMA_VERSION });
            }
            // Versions older than the current one would be migrated here.
            Some(_) => {}
            None => {
                meta.insert(SCHEMA_KEY, SCHEMA_VERSION).map_err(|e| fail(e.into()))?;
            }
        }
        txn.open_table(SESSIONS).map_err(|e| fail(e.into()))?;
        txn.open_table(EXPIRY).map_err(|e| fail(e.into()))?;
    }
    txn.commit().map_err(|e| fail(e.into()))
}

fn open_error(path: &Path, e: DatabaseError) -> StoreError {
    let path = path.to_owned();
    match e {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => StoreError::Locked { path },
        DatabaseError::UpgradeRequired(v) => StoreError::Corrupt {
            path,
            detail: format!("written in redb file format {v}, which this build cannot read"),
        },
        DatabaseError::Storage(e) => storage_error(path, e),
        other => StoreError::Open { path, detail: other.to_string() },
    }
}

fn open_redb_error(path: &Path, e: redb::Error) -> StoreError {
    match e {
        redb::Error::Corrupted(detail) => StoreError::Corrupt { path: path.to_owned(), detail },
        redb::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            StoreError::Corrupt { path: path.to_owned(), detail: io.to_string() }
        }
        other => StoreError::Open { path: path.to_owned(), detail: other.to_string() },
    }
}

fn storage_error(path: PathBuf, e: StorageError) -> StoreError {
    match e {
        StorageError::Corrupted(detail) => StoreError::Corrupt { path, detail },
        // redb reports a file that is not a redb database this way.
        StorageError::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            StoreError::Corrupt { path, detail: io.to_string() }
        }
        other => StoreError::Open { path, detail: other.to_string() },
    }
}

fn io_error(path: &Path, action: &'static str, e: redb::Error) -> StoreError {
    match e {
        redb::Error::Corrupted(detail) => StoreError::Corrupt { path: path.to_owned(), detail },
        other => StoreError::Io { path: path.to_owned(), action, detail: other.to_string() },
    }
}
