//! The hand-over of session records written on this node to the gossip
//! task.
//!
//! The request path (and the admin API's unpin and move) changes a record
//! in the session table and calls `Sessions::persist`, which queues it for
//! the store and `try_send`s it into this outbox: a bounded channel, never
//! awaited (a full one counts `sessions_not_gossiped`; peers then learn the
//! record from a catch-up). The replication task takes up to [`BATCH`]
//! records at a time and sets them as TTL keys `session:{pool}:{key}`
//! ([`gossip`]).
//!
//! The channel is made by [`channel`] when the node starts with a
//! `[cluster]` table (a reload cannot add one): [`crate::control::Control`]
//! keeps the sending half and gives it to the session store whenever it
//! opens it (at start, or at the reload that first sets `affinity`), and
//! the replication task takes the receiving half, [`Outbox`], when it
//! starts. Records written before gossip starts wait in the channel.

use tokio::sync::mpsc;

use super::record;
use crate::cluster::Cluster;
use crate::sessions::SessionRecord;

/// Session records gossiped per batch.
pub(super) const BATCH: usize = 4096;
/// Room for session records waiting to be gossiped.
const CAPACITY: usize = 65_536;

/// The outbox of a node in a cluster: the sending half for the session
/// store, and the [`Outbox`] the replication task reads.
pub fn channel() -> (mpsc::Sender<SessionRecord>, Outbox) {
    let (tx, rx) = mpsc::channel(CAPACITY);
    (tx, Outbox { rx })
}

/// The receiving half; owned by the replication task.
pub struct Outbox {
    rx: mpsc::Receiver<SessionRecord>,
}

impl Outbox {
    /// Waits for records and moves up to [`BATCH`] of them into `batch`;
    /// 0 when the channel is closed. Cancel-safe.
    pub(super) async fn next_batch(&mut self, batch: &mut Vec<SessionRecord>) -> usize {
        self.rx.recv_many(batch, BATCH).await
    }
}

/// Sets a batch of this node's records as gossip keys (empties `batch`).
pub(super) async fn gossip(cluster: &Cluster, batch: &mut Vec<SessionRecord>) {
    let entries: Vec<_> = batch.drain(..).filter_map(record::into_gossip).collect();
    if let Err(e) = cluster.set_many(entries).await {
        tracing::warn!("sessions not gossiped: {e}");
    }
}
