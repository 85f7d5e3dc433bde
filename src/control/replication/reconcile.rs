//! This node's side of the exchange, run on every tick of the replication
//! task and after peers' changes: what it publishes, and what it derives
//! from the peers' values.
//!
//! Published when they change (one `set_many` per round):
//! - `server:{pool}:{server}`: this node's health view of each server;
//! - `load:{pool}:{server}`: its sessions and connections per server, at most
//!   once a second;
//! - `rate:{zone}:{key}`: its counts of cluster-wide rate-limit keys, every
//!   500 ms;
//! - `primary:{pool}`: the active server it chose for each `primary` pool.
//!
//! Derived: the peers' connections summed into
//! [`ServerState::remote_connections`] (read by `least_loaded`), and the
//! active server of `primary` pools ([`crate::control::primary::update`],
//! with the peers' votes).
//!
//! Session records are not here: they go out through [`super::outbox`] as
//! they are written.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::view::{ClusterView, ServerKey};
use crate::cluster::{Cluster, GossipKey, GossipValue, HealthView, LoadSummary, ServerHealth};
use crate::control::{primary, Control};
use crate::health::{AdminState, ServerState};
use crate::state::Snapshot;

/// Load reports are refreshed at most this often.
const LOAD_EVERY: Duration = Duration::from_secs(1);
/// Cluster-wide rate-limit counts are published this often.
const RATES_EVERY: Duration = Duration::from_millis(500);

type Entries = Vec<(GossipKey, GossipValue)>;

/// What this node last published, to send only changes.
#[derive(Default)]
pub(super) struct Published {
    health: HashMap<ServerKey, HealthView>,
    load: HashMap<ServerKey, LoadSummary>,
    primary: HashMap<String, String>,
    load_at: Option<Instant>,
    rates: HashMap<(String, u64), u32>,
    rates_at: Option<Instant>,
}

/// Publishes changed health views, loads, rate counts and primaries;
/// recomputes remote connections and the active primaries.
pub(super) async fn reconcile(cluster: &Cluster, view: &ClusterView, control: &Control, published: &mut Published) {
    let snap = control.snapshot();
    let mut out = health_entries(&snap, published);
    if due(&mut published.load_at, LOAD_EVERY) {
        out.extend(load_entries(&snap, control, published));
    }
    if due(&mut published.rates_at, RATES_EVERY) {
        out.extend(rate_entries(control, published));
    }
    sum_remote_connections(&snap, view);
    out.extend(primary_entries(&snap, view, control, published));
    if !out.is_empty() {
        if let Err(e) = cluster.set_many(out).await {
            tracing::warn!("cluster state not published: {e}");
        }
    }
}

/// Whether `every` has passed since `last` (then `last` becomes now).
fn due(last: &mut Option<Instant>, every: Duration) -> bool {
    if last.is_some_and(|at| at.elapsed() < every) {
        return false;
    }
    *last = Some(Instant::now());
    true
}

/// Records `value` as published under `key`; true when it differs from the
/// value published before.
fn changed<K: Eq + Hash, V: PartialEq>(published: &mut HashMap<K, V>, key: K, value: V) -> bool {
    if published.get(&key) == Some(&value) {
        return false;
    }
    published.insert(key, value);
    true
}

/// This node's view of a server, as published.
fn local_health(s: &ServerState) -> HealthView {
    let state = match s.admin_state() {
        AdminState::Maintenance => ServerHealth::Maintenance,
        AdminState::Draining => ServerHealth::Draining,
        AdminState::Normal if s.is_up() => ServerHealth::Up,
        AdminState::Normal => ServerHealth::Down,
    };
    HealthView { state, since_ms: s.changed_at_unix_ms.load(Ordering::Relaxed) }
}

fn health_entries(snap: &Snapshot, published: &mut Published) -> Entries {
    let mut out = Vec::new();
    for pool in &snap.pools {
        for s in &pool.servers {
            let health = local_health(&s.state);
            if changed(&mut published.health, (pool.cfg.name.clone(), s.name.clone()), health) {
                out.push((GossipKey::server(&pool.cfg.name, &s.name), GossipValue::Health(health)));
            }
        }
    }
    out
}

fn load_entries(snap: &Snapshot, control: &Control, published: &mut Published) -> Entries {
    let mut out = Vec::new();
    let sessions = control.sessions();
    for pool in &snap.pools {
        let counts = match (&sessions, &pool.cfg.affinity) {
            (Some(s), Some(_)) => s.table.counts_per_server(&pool.cfg.name),
            _ => HashMap::new(),
        };
        for s in &pool.servers {
            let load = LoadSummary {
                sessions: counts.get(&s.name).copied().unwrap_or(0) as u64,
                connections: u64::from(s.state.in_flight.load(Ordering::Relaxed)),
            };
            if changed(&mut published.load, (pool.cfg.name.clone(), s.name.clone()), load) {
                out.push((GossipKey::load(&pool.cfg.name, &s.name), GossipValue::Load(load)));
            }
        }
    }
    out
}

/// This node's counts of cluster-wide zones that changed since the last
/// round (keys that fell to nothing are published once as 0).
fn rate_entries(control: &Control, published: &mut Published) -> Entries {
    let mut out = Vec::new();
    let state = control.shared.state.load();
    let (now, at_ms) = (crate::clock::now_ms(), crate::sessions::unix_now_ms());
    let mut seen = HashSet::new();
    for z in state.zones.iter().flatten().filter(|z| z.config.cluster) {
        for (key, count) in z.zone.local_counts(now, 1) {
            let k = (z.config.name.clone(), key);
            seen.insert(k.clone());
            if changed(&mut published.rates, k, count) {
                out.push((GossipKey::rate(&z.config.name, key), GossipValue::Rate { count, at_ms }));
            }
        }
    }
    published.rates.retain(|k, _| {
        let keep = seen.contains(k);
        if !keep {
            out.push((GossipKey::rate(&k.0, k.1), GossipValue::Rate { count: 0, at_ms }));
        }
        keep
    });
    out
}

/// Peers' connections, summed per server, where `least_loaded` reads them.
fn sum_remote_connections(snap: &Snapshot, view: &ClusterView) {
    let peers = view.peers();
    for pool in &snap.pools {
        for s in &pool.servers {
            let key = (pool.cfg.name.clone(), s.name.clone());
            let sum: u64 = peers.values().filter_map(|p| p.load.get(&key)).map(|l| l.connections).sum();
            s.state.remote_connections.store(sum.min(u64::from(u32::MAX)) as u32, Ordering::Relaxed);
        }
    }
}

/// Chooses the active server of `primary` pools with the peers' votes; the
/// choices that changed.
fn primary_entries(snap: &Snapshot, view: &ClusterView, control: &Control, published: &mut Published) -> Entries {
    let mut out = Vec::new();
    for (pool, server) in primary::update(snap, Some(view), &control.events) {
        if changed(&mut published.primary, pool.clone(), server.clone()) {
            out.push((GossipKey::primary(&pool), GossipValue::Primary(server)));
        }
    }
    out
}
