//! What a peer's change does here: one handler per kind of change.
//!
//! | change                              | handler          | effect |
//! |-------------------------------------|------------------|--------|
//! | a member is live                    | [`joined`]       | an empty [`PeerState`], an event |
//! | a member is dead or left            | [`departed`]     | its values stop counting, its rate counts are re-summed |
//! | `session:{pool}:{key}` set          | [`session`]      | read by [`super::record`]; merged into the table and queued to the store (last writer wins) |
//! | `server:{pool}:{server}` set        | [`health`]       | kept for the votes; a peer's `down` probes the server now |
//! | `load:{pool}:{server}` set          | [`load`]         | kept; summed into `remote_connections` by [`super::reconcile`] |
//! | `primary:{pool}` set                | [`primary`]      | kept for the tally of active servers |
//! | `rate:{zone}:{key}` set or removed  | [`rate`], [`rate_removed`] | the live peers' counts summed into the zone |
//! | another key removed                 | [`removed`]      | dropped from the peer's state |
//!
//! Every handler is synchronous and short: the replication task sends each
//! change as it arrives as a `Command::Peer`, which [`apply`]s it. A peer's session record is
//! merged here and never gossiped again: only the node that wrote a record
//! publishes it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::record;
use super::view::{ClusterView, PeerState};
use crate::cluster::{ClusterChange, GossipKey, GossipValue, HealthView, LoadSummary, MemberId, ServerHealth};
use crate::control::Control;
use crate::health::ServerState;
use crate::sessions::SessionRecord;
use crate::state::Snapshot;

/// Applies one change; true when health views, loads or primaries may need
/// a recompute ([`super::reconcile`]).
pub(in crate::control) fn apply(view: &ClusterView, control: &Control, change: ClusterChange) -> bool {
    match change {
        ClusterChange::Joined(id) => joined(view, control, id),
        ClusterChange::Departed(id) => departed(view, control, id),
        ClusterChange::Set { node, key, value } => match (key, value) {
            (GossipKey::Session { pool, key }, GossipValue::Session(value)) => {
                match record::from_gossip(pool, key, &value) {
                    Ok(record) => session(control, record),
                    Err(e) => {
                        tracing::debug!(member = %node, "malformed gossip value skipped: {e}");
                        false
                    }
                }
            }
            (GossipKey::Server { pool, server }, GossipValue::Health(h)) => {
                health(view, control, node, pool, server, h)
            }
            (GossipKey::Load { pool, server }, GossipValue::Load(l)) => load(view, node, pool, server, l),
            (GossipKey::Primary { pool }, GossipValue::Primary(server)) => primary(view, node, pool, server),
            (GossipKey::Rate { zone, key }, GossipValue::Rate { count, at_ms }) => {
                rate(view, control, node, (zone, key), (count, at_ms))
            }
            _ => false,
        },
        ClusterChange::Removed { node, key: GossipKey::Rate { zone, key } } => {
            rate_removed(view, control, &node, (zone, key))
        }
        ClusterChange::Removed { node, key } => removed(view, &node, key),
    }
}

fn joined(view: &ClusterView, control: &Control, id: MemberId) -> bool {
    tracing::info!(member = %id, "cluster member is live");
    control.events.push("cluster", None, None, format!("{} joined", id.name));
    view.peers().entry(id).or_default();
    true
}

fn departed(view: &ClusterView, control: &Control, id: MemberId) -> bool {
    tracing::warn!(member = %id, "cluster member is gone (dead or left)");
    control.events.push("cluster", None, None, format!("{} left or is dead", id.name));
    let gone = view.peers().remove(&id);
    for (zone, key) in gone.map(|p| p.rates.into_keys().collect::<Vec<_>>()).unwrap_or_default() {
        sum_rate(view, control, &zone, key);
    }
    true
}

/// A peer's session record: kept when it wins over the one held.
fn session(control: &Control, record: SessionRecord) -> bool {
    if let Some(s) = control.sessions() {
        if s.merge_remote(record, crate::sessions::unix_now_ms()) {
            crate::metrics::COUNTERS.sessions_merged.fetch_add(1, Ordering::Relaxed);
        }
    }
    false
}

fn health(view: &ClusterView, control: &Control, node: MemberId, pool: String, server: String, h: HealthView) -> bool {
    if h.state == ServerHealth::Down {
        if let Some(s) = find_server(&control.snapshot(), &pool, &server) {
            if s.is_up() {
                tracing::info!(%pool, %server, peer = %node.name, "a peer sees the server down: probing it now");
                s.report_peer_down();
            }
        }
    }
    peer(view, node, |p| {
        p.health.insert((pool, server), h);
    });
    true
}

fn load(view: &ClusterView, node: MemberId, pool: String, server: String, l: LoadSummary) -> bool {
    peer(view, node, |p| {
        p.load.insert((pool, server), l);
    });
    true
}

fn primary(view: &ClusterView, node: MemberId, pool: String, server: String) -> bool {
    peer(view, node, |p| {
        p.primary.insert(pool, server);
    });
    true
}

/// A peer's count of one key of a cluster-wide rate-limit zone, at unix ms.
fn rate(view: &ClusterView, control: &Control, node: MemberId, zone_key: (String, u64), count_at: (u32, u64)) -> bool {
    let (zone, key) = zone_key.clone();
    peer(view, node, |p| {
        p.rates.insert(zone_key, count_at);
    });
    sum_rate(view, control, &zone, key);
    false
}

fn rate_removed(view: &ClusterView, control: &Control, node: &MemberId, zone_key: (String, u64)) -> bool {
    if let Some(p) = view.peers().get_mut(node) {
        p.rates.remove(&zone_key);
    }
    sum_rate(view, control, &zone_key.0, zone_key.1);
    false
}

fn removed(view: &ClusterView, node: &MemberId, key: GossipKey) -> bool {
    let mut peers = view.peers();
    let Some(p) = peers.get_mut(node) else { return false };
    match key {
        GossipKey::Server { pool, server } => p.health.remove(&(pool, server)).is_some(),
        GossipKey::Load { pool, server } => p.load.remove(&(pool, server)).is_some(),
        GossipKey::Primary { pool } => p.primary.remove(&pool).is_some(),
        _ => false,
    }
}

/// Updates what `node` published (a peer not yet known starts empty).
fn peer(view: &ClusterView, node: MemberId, update: impl FnOnce(&mut PeerState)) {
    update(view.peers().entry(node).or_default());
}

/// Sums the live peers' counts of one key of a cluster-wide zone into the
/// zone, where the request path reads it.
fn sum_rate(view: &ClusterView, control: &Control, zone: &str, key: u64) {
    let state = control.shared.state.load();
    let Some(z) = state.zones.iter().flatten().find(|z| z.config.cluster && z.config.name == zone) else { return };
    let Some(window) = z.zone.window() else { return };
    let window_ms = window.as_millis() as u64;
    let now_unix = crate::sessions::unix_now_ms();
    let k = (zone.to_string(), key);
    let sum: u64 = view
        .peers()
        .values()
        .filter_map(|p| p.rates.get(&k))
        .filter(|(_, at)| at.saturating_add(window_ms) > now_unix)
        .map(|(n, _)| u64::from(*n))
        .sum();
    z.zone.set_remote(key, sum.min(u64::from(u32::MAX)) as u32, crate::clock::now_ms() + window_ms);
}

fn find_server(snap: &Snapshot, pool: &str, server: &str) -> Option<Arc<ServerState>> {
    snap.pool(pool)?.servers.iter().find(|s| s.name == server).map(|s| s.state.clone())
}
