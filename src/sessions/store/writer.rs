//! The store's writer thread: the only code that writes the redb file.
//! Fed by [`super::StoreHandle`]s through a bounded channel; commits in
//! groups (see [`super::StoreOptions`]) and answers flushes after the commit
//! that covers them.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::Instant;

use redb::{Database, Durability, ReadableTable};

use super::{io_error, Counters, Op, StoreError, StoreOptions, EXPIRY, SESSIONS};
use crate::sessions::record::SessionRecord;

/// The writer thread's state.
pub(super) struct Writer {
    pub(super) db: Arc<Database>,
    pub(super) path: PathBuf,
    pub(super) rx: Receiver<Op>,
    pub(super) opts: StoreOptions,
    pub(super) counters: Arc<Counters>,
}

/// One group commit's worth of work.
#[derive(Default)]
struct Batch {
    puts: Vec<SessionRecord>,
    sweep_at: Option<u64>,
    waiters: Vec<SyncSender<Result<(), StoreError>>>,
}

impl Writer {
    pub(super) fn run(self) {
        let mut batch = Batch::default();
        loop {
            // Wait for the first write of a batch, then collect until the
            // interval ends, the batch is full, or someone waits on a flush.
            let Ok(first) = self.rx.recv() else { return };
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
                    Op::Close => {
                        closing = true;
                        break;
                    }
                }
                if batch.puts.len() >= self.opts.max_batch {
                    break;
                }
                match self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(op) => next = Some(op),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => closing = true,
                }
            }
            let result = self.commit(&mut batch);
            for w in batch.waiters.drain(..) {
                let _ = w.send(result.clone());
            }
            if closing {
                return;
            }
        }
    }

    fn commit(&self, batch: &mut Batch) -> Result<(), StoreError> {
        if batch.puts.is_empty() && batch.sweep_at.is_none() {
            return Ok(());
        }
        let puts = std::mem::take(&mut batch.puts);
        let sweep_at = batch.sweep_at.take();
        match write_batch(&self.db, &puts, sweep_at) {
            Ok((written, swept)) => {
                self.counters.commits.fetch_add(1, Ordering::Relaxed);
                self.counters.records_written.fetch_add(written, Ordering::Relaxed);
                self.counters.swept.fetch_add(swept, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.counters.commit_errors.fetch_add(1, Ordering::Relaxed);
                let e = io_error(&self.path, "commit", e);
                tracing::error!(records = puts.len(), "{e}; these session records are kept in memory only");
                Err(e)
            }
        }
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
