//! What this node knows of its peers: per live peer, the values it
//! published (health views, loads, `primary` choices, rate-limit counts),
//! and how the last session catch-up went. The admin API shows it and
//! [`crate::control::primary`] votes with it.
//!
//! Written only by the replication task: [`super::peers`] keeps the peers'
//! values, [`super::catchup`] the sync status. Read by anyone holding the
//! runtime. Depends on nothing else in `control`, so `primary` can read it
//! without a cycle.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::api::SyncStatus;
use crate::cluster::{HealthView, LoadSummary, MemberId, ServerHealth};

/// (pool, server).
pub(super) type ServerKey = (String, String);

/// What one live peer published.
#[derive(Debug, Default, Clone)]
pub(super) struct PeerState {
    pub(super) health: HashMap<ServerKey, HealthView>,
    pub(super) load: HashMap<ServerKey, LoadSummary>,
    /// Pool → the server the peer uses as its active one.
    pub(super) primary: HashMap<String, String>,
    /// Cluster-wide rate-limit zones: (zone, key) → (count, unix ms).
    pub(super) rates: HashMap<(String, u64), (u32, u64)>,
}

/// The cluster state the admin API shows.
#[derive(Debug, Default)]
pub struct ClusterView {
    peers: Mutex<BTreeMap<MemberId, PeerState>>,
    /// A catch-up is due or running.
    pub syncing: AtomicBool,
    /// The first catch-up of a starting node has not ended yet (a catch-up
    /// gossip asks for meanwhile may fail for want of live peers without
    /// ending it).
    pub first_sync_pending: AtomicBool,
    sync: Mutex<SyncStatus>,
    /// True once this node knows enough of the cluster to route: its first
    /// catch-up is over and every live peer's choice of active server for
    /// `primary` pools is known (or the wait for them ended). The
    /// listeners accept no connection before (clients wait in the kernel's
    /// queue), so a node that restarts never routes an agent on its own
    /// guesses. Set by the replication task.
    pub serving: tokio::sync::watch::Sender<bool>,
}

impl ClusterView {
    /// The live peers and what they published (the replication task's).
    pub(super) fn peers(&self) -> MutexGuard<'_, BTreeMap<MemberId, PeerState>> {
        self.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How the last catch-up went.
    pub fn last_sync(&self) -> SyncStatus {
        self.sync.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Records a finished catch-up.
    pub(super) fn set_synced(&self, status: SyncStatus) {
        *self.sync.lock().unwrap_or_else(PoisonError::into_inner) = status;
    }

    /// Records why the last catch-up failed; the last success stays.
    pub(super) fn set_sync_error(&self, error: String) {
        self.sync.lock().unwrap_or_else(PoisonError::into_inner).error = Some(error);
    }

    /// How many live peers have published an active server for `pool`.
    pub fn primary_choices(&self, pool: &str) -> usize {
        self.peers().values().filter(|p| p.primary.contains_key(pool)).count()
    }

    /// Live peers, by id.
    pub fn live_peers(&self) -> Vec<MemberId> {
        self.peers().keys().cloned().collect()
    }

    /// How many live peers published each server as `pool`'s active one.
    pub fn primary_tally(&self, pool: &str) -> HashMap<String, usize> {
        let mut tally = HashMap::new();
        for p in self.peers().values() {
            if let Some(s) = p.primary.get(pool) {
                *tally.entry(s.clone()).or_default() += 1;
            }
        }
        tally
    }

    /// Peers that see the server up, and peers that reported on it.
    pub fn peer_votes(&self, pool: &str, server: &str) -> (usize, usize) {
        let key = (pool.to_string(), server.to_string());
        let peers = self.peers();
        let mut up = 0;
        let mut reported = 0;
        for p in peers.values() {
            if let Some(h) = p.health.get(&key) {
                reported += 1;
                if h.state == ServerHealth::Up {
                    up += 1;
                }
            }
        }
        (up, reported)
    }

    /// Sum of a peer's load reports: (sessions, connections).
    pub fn peer_load(&self, id: &MemberId) -> Option<(u64, u64)> {
        let peers = self.peers();
        let p = peers.get(id)?;
        Some(p.load.values().fold((0, 0), |(s, c), l| (s + l.sessions, c + l.connections)))
    }
}
