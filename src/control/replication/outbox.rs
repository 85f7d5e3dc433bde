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
//! The sending half is handed to the node's `Sessions` by
//! [`Outbox::hand_over`]: at start when the session store is open, and
//! otherwise on the first tick after the reload that opens it (the store
//! opens when a pool first has `affinity`). `Sessions` keeps the first
//! sender it is given.

use std::sync::{Arc, Weak};

use tokio::sync::mpsc;

use super::record;
use crate::cluster::Cluster;
use crate::control::Control;
use crate::sessions::{SessionRecord, Sessions};

/// Session records gossiped per batch.
pub(super) const BATCH: usize = 4096;
/// Room for session records waiting to be gossiped.
const CAPACITY: usize = 65_536;

/// Both halves of the channel; owned by the replication task.
pub(super) struct Outbox {
    tx: mpsc::Sender<SessionRecord>,
    rx: mpsc::Receiver<SessionRecord>,
    /// The sessions `tx` was handed to.
    handed_to: Weak<Sessions>,
}

impl Outbox {
    pub(super) fn new() -> Outbox {
        let (tx, rx) = mpsc::channel(CAPACITY);
        Outbox { tx, rx, handed_to: Weak::new() }
    }

    /// Hands the sending half to the node's sessions if they are open and
    /// do not have it yet. Cheap when there is nothing to do.
    pub(super) fn hand_over(&mut self, control: &Control) {
        let Some(sessions) = control.sessions() else { return };
        if std::ptr::eq(self.handed_to.as_ptr(), Arc::as_ptr(&sessions)) {
            return;
        }
        sessions.replicate_to(self.tx.clone());
        self.handed_to = Arc::downgrade(&sessions);
    }

    /// Waits for records and moves up to [`BATCH`] of them into `batch`;
    /// 0 when the channel is closed. Cancel-safe.
    pub(super) async fn next_batch(&mut self, batch: &mut Vec<SessionRecord>) -> usize {
        self.rx.recv_many(batch, BATCH).await
    }
}

/// Sets a batch of this node's records as gossip keys (empties `batch`).
pub(super) async fn gossip(cluster: &Cluster, batch: &mut Vec<SessionRecord>) {
    let entries: Vec<_> = batch.drain(..).map(record::into_gossip).collect();
    if let Err(e) = cluster.set_many(entries).await {
        tracing::warn!("sessions not gossiped: {e}");
    }
}
