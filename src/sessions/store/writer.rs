//! The store's writer thread: the only code that writes the redb file.
//! Fed by [`super::StoreHandle`]s through a bounded channel; commits in
//! groups (see [`super::StoreOptions`]) and answers flushes after the commit
//! that covers them.
//!
//! When a commit fails (a full disk, a read-only filesystem) or the file
//! cannot be opened, the writes are kept in memory (the newest record per
//! key, at most [`super::MAX_PENDING`]), the database is closed (redb
//! refuses every write after an I/O error until it is reopened), and the
//! writer tries again every [`super::StoreOptions::retry_interval`] until a
//! commit succeeds.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::Instant;

use redb::{Database, Durability, ReadableTable};

use super::{io_error, Counters, Op, Opener, Slot, StoreError, StoreOptions, EXPIRY, MAX_PENDING, SESSIONS};
use crate::sessions::record::SessionRecord;

/// The writer thread's state. The open database is the one in `slot`
/// (shared with [`super::Store::load_all`]), empty after a failure.
pub(super) struct Writer {
    pub(super) slot: Slot,
    pub(super) open: Opener,
    pub(super) path: PathBuf,
    pub(super) rx: super::Queue,
    pub(super) opts: StoreOptions,
    pub(super) counters: Arc<Counters>,
    pub(super) pending: Pending,
    /// The file was handed to another process ([`Op::Release`]): writes are
    /// kept in memory without retrying until [`Op::Resume`].
    pub(super) released: bool,
}

/// One group commit's worth of work.
#[derive(Default)]
struct Batch {
    puts: Vec<SessionRecord>,
    sweep_at: Option<u64>,
    waiters: Vec<SyncSender<Result<(), StoreError>>>,
}

/// Writes that failed, waiting for the file: the newest record per key.
#[derive(Default)]
pub(super) struct Pending {
    records: HashMap<(String, String), SessionRecord>,
    sweep_at: Option<u64>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.records.is_empty() && self.sweep_at.is_none()
    }

    /// Keeps `puts` for the next try; records beyond the cap are dropped and counted.
    fn keep(&mut self, puts: Vec<SessionRecord>, sweep_at: Option<u64>, counters: &Counters) {
        self.sweep_at = self.sweep_at.max(sweep_at);
        for r in puts {
            let id = (r.pool.clone(), r.key.clone());
            match self.records.get(&id) {
                Some(old) if (old.version, old.origin.as_str()) >= (r.version, r.origin.as_str()) => {}
                Some(_) => {
                    self.records.insert(id, r);
                }
                None if self.records.len() >= MAX_PENDING => {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    self.records.insert(id, r);
                }
            }
        }
        counters.pending.store(self.records.len() as u64, Ordering::Relaxed);
    }
}

impl Writer {
    pub(super) fn run(mut self) {
        let mut batch = Batch::default();
        loop {
            // Wait for the first write of a batch (or, with writes waiting
            // for the file, for the next retry), then collect until the
            // interval ends, the batch is full, or someone waits on a flush.
            let first = if self.pending.is_empty() {
                match self.rx.recv() {
                    Ok(op) => op,
                    Err(_) => return,
                }
            } else {
                match self.rx.recv_timeout(self.opts.retry_interval) {
                    Ok(op) => op,
                    Err(RecvTimeoutError::Timeout) => {
                        let _ = self.commit(&mut batch);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        self.last_try(&mut batch);
                        return;
                    }
                }
            };
            let deadline = Instant::now() + self.opts.commit_interval;
            let mut next = Some(first);
            let mut closing = false;
            while let Some(op) = next.take() {
                match op {
                    Op::Put(r) => batch.puts.push(r),
                    Op::Sweep(t) => batch.sweep_at = batch.sweep_at.max(Some(t)),
                    Op::Flush(w) => {
                        batch.waiters.push(w);
                        break;
                    }
                    Op::Release(w) => {
                        let _ = self.commit(&mut batch);
                        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
                        self.released = true;
                        let kept: Vec<SessionRecord> = self.pending.records.drain().map(|(_, r)| r).collect();
                        self.pending.sweep_at = None;
                        self.counters.pending.store(0, Ordering::Relaxed);
                        tracing::info!(
                            not_written = kept.len(),
                            "sessions store {} released to another process",
                            self.path.display()
                        );
                        let _ = w.send(kept);
                        break;
                    }
                    Op::Resume => {
                        self.released = false;
                        tracing::info!("sessions store {} taken back", self.path.display());
                        break;
                    }
                    Op::Close => {
                        closing = true;
                        break;
                    }
                }
                if batch.puts.len() >= self.opts.max_batch {
                    break;
                }
                match self.rx.gather(deadline) {
                    Ok(op) => next = Some(op),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => closing = true,
                }
            }
            if closing {
                self.last_try(&mut batch);
                return;
            }
            let result = self.commit(&mut batch);
            for w in batch.waiters.drain(..) {
                let _ = w.send(result.clone());
            }
        }
    }

    /// The commit at close: what still cannot be written is lost, and said.
    fn last_try(&mut self, batch: &mut Batch) {
        if self.released {
            // The other process has the file, and the records went to it.
            tracing::debug!(records = self.pending.records.len(), "released sessions store closing");
            for w in batch.waiters.drain(..) {
                let _ = w.send(Ok(()));
            }
            return;
        }
        let result = self.commit(batch);
        for w in batch.waiters.drain(..) {
            let _ = w.send(result.clone());
        }
        if result.is_err() {
            tracing::error!(
                records = self.pending.records.len(),
                "sessions store {}: closing with session records that could not be written",
                self.path.display()
            );
        }
    }

    fn commit(&mut self, batch: &mut Batch) -> Result<(), StoreError> {
        let mut puts = std::mem::take(&mut batch.puts);
        let sweep_at = batch.sweep_at.take().max(self.pending.sweep_at.take());
        let retried = self.pending.records.len();
        puts.extend(self.pending.records.drain().map(|(_, r)| r));
        if puts.is_empty() && sweep_at.is_none() {
            return Ok(());
        }
        if self.released {
            // Kept for a resume; the new process got them over the socket.
            self.pending.keep(puts, sweep_at, &self.counters);
            return Ok(());
        }
        let db = match self.database() {
            Ok(db) => db,
            Err(e) => return Err(self.failed(e, puts, sweep_at)),
        };
        match write_batch(&db, &puts, sweep_at) {
            Ok((written, swept)) => {
                self.counters.commits.fetch_add(1, Ordering::Relaxed);
                self.counters.records_written.fetch_add(written, Ordering::Relaxed);
                self.counters.swept.fetch_add(swept, Ordering::Relaxed);
                self.counters.pending.store(0, Ordering::Relaxed);
                if let Some(was) = self.counters.clear_problem() {
                    tracing::info!(
                        records = retried,
                        "sessions store {} is written again (it failed: {}); the records kept in memory meanwhile are committed",
                        self.path.display(),
                        was.error
                    );
                }
                Ok(())
            }
            Err(e) => {
                // redb refuses every write after an I/O error until the
                // database is reopened.
                *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
                let e = io_error(&self.path, "commit", e);
                Err(self.failed(e, puts, sweep_at))
            }
        }
    }

    /// The open database, reopening it after a failure.
    fn database(&mut self) -> Result<Arc<Database>, StoreError> {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(db) = slot.as_ref() {
            return Ok(db.clone());
        }
        let db = Arc::new((self.open)()?);
        *slot = Some(db.clone());
        Ok(db)
    }

    /// Keeps the writes for the next try; logs the first failure at `error`.
    fn failed(&mut self, e: StoreError, puts: Vec<SessionRecord>, sweep_at: Option<u64>) -> StoreError {
        self.counters.commit_errors.fetch_add(1, Ordering::Relaxed);
        self.pending.keep(puts, sweep_at, &self.counters);
        if self.counters.set_problem(&e) {
            tracing::error!(
                records = self.pending.records.len(),
                "{e}; the session records stay in memory and are written when the file can be, trying every {}s",
                self.opts.retry_interval.as_secs_f64()
            );
        } else {
            tracing::debug!("{e}");
        }
        e
    }
}

/// One transaction: the puts that win over what is stored (writes from
/// several threads may be queued out of order), then the sweep. Returns
/// (records written, records swept).
fn write_batch(db: &Database, puts: &[SessionRecord], sweep_at: Option<u64>) -> Result<(u64, u64), redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    let (mut written, mut swept) = (0, 0);
    {
        let mut sessions = txn.open_table(SESSIONS)?;
        let mut expiry = txn.open_table(EXPIRY)?;
        for r in puts {
            let id = (r.pool.as_str(), r.key.as_str());
            let old = sessions.get(id)?.map(|v| {
                let (_, expires, version, origin, _) = v.value();
                (expires, version, origin.to_owned())
            });
            if let Some((old_expires, old_version, old_origin)) = old {
                if (r.version.0, r.origin.as_str()) <= (old_version, old_origin.as_str()) {
                    continue;
                }
                expiry.remove((old_expires, id.0, id.1))?;
            }
            sessions.insert(id, (r.server.as_str(), r.expires_at_ms, r.version.0, r.origin.as_str(), r.tombstone))?;
            expiry.insert((r.expires_at_ms, id.0, id.1), ())?;
            written += 1;
        }
        if let Some(now_ms) = sweep_at {
            // ("", "") sorts first, so this is every expiry <= now_ms.
            let mut expired: Vec<(u64, String, String)> = Vec::new();
            for item in expiry.range(..(now_ms.saturating_add(1), "", ""))? {
                let (k, _) = item?;
                let (at, pool, key) = k.value();
                expired.push((at, pool.to_owned(), key.to_owned()));
            }
            for (at, pool, key) in &expired {
                expiry.remove((*at, pool.as_str(), key.as_str()))?;
                sessions.remove((pool.as_str(), key.as_str()))?;
            }
            swept = expired.len() as u64;
        }
    }
    txn.commit()?;
    Ok((written, swept))
}
