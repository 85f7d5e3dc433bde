//! Members and typed change events, and the pure diff between two views of
//! the live members that produces those events.
//!
//! Chitchat tells its watchers "here is the new set of live nodes with their
//! state" (on join, death, and any value change). [`diff`] turns two such
//! views into [`ClusterChange`]s; a subscriber first receives the diff from an
//! empty view (the snapshot) and then every later diff, so it never misses a
//! state. Consecutive writes of one key between two views coalesce into the
//! last value, which is what last-writer-wins consumers want.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use super::keys::{self, GossipKey, GossipValue, KeyError};

/// A node incarnation: its name, the generation it started with, and where
/// it gossips. A restart keeps the name and gets a higher generation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId {
    pub name: Arc<str>,
    pub generation: u64,
    pub gossip_addr: SocketAddr,
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{} (generation {})", self.name, self.gossip_addr, self.generation)
    }
}

impl From<&chitchat::ChitchatId> for MemberId {
    fn from(id: &chitchat::ChitchatId) -> Self {
        MemberId { name: id.node_id.clone(), generation: id.generation_id, gossip_addr: id.gossip_advertise_addr }
    }
}

/// How this node sees a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberState {
    /// Heartbeats arrive (or it is this node).
    Live,
    /// Known, but the failure detector has not decided yet.
    Joining,
    /// Announced a graceful leave and is still reachable.
    Leaving,
    /// Announced a graceful leave and is gone.
    Left,
    /// The failure detector declared it dead.
    Dead,
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Live => "live",
            MemberState::Joining => "joining",
            MemberState::Leaving => "leaving",
            MemberState::Left => "left",
            MemberState::Dead => "dead",
        }
    }
}

/// One member as listed by [`super::Cluster::members`].
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub id: MemberId,
    pub state: MemberState,
    pub is_self: bool,
    /// Chitchat heartbeat counter last seen.
    pub heartbeat: u64,
    /// Time since its heartbeat last advanced here (`None` for this node or
    /// before the first observation).
    pub last_heard: Option<Duration>,
    pub version: Option<String>,
    pub admin_addr: Option<SocketAddr>,
    /// Unix ms since which it drains (`ctl drain-node`), if it does.
    pub draining_since_ms: Option<u64>,
}

/// A typed change in the cluster, for nodes other than this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterChange {
    /// A member became live.
    Joined(MemberId),
    /// A member is no longer live (dead, or left). Its values no longer
    /// count; no `Removed` is sent for them.
    Departed(MemberId),
    /// A member set (or changed) a value.
    Set { node: MemberId, key: GossipKey, value: GossipValue },
    /// A member's key disappeared (deleted, or its TTL ran out).
    Removed { node: MemberId, key: GossipKey },
}

/// What the diff needs of one live member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberView {
    /// Chitchat's max version of the node: equal means nothing changed.
    pub max_version: u64,
    pub values: BTreeMap<String, String>,
}

/// Live members by id.
pub type MembersView = BTreeMap<MemberId, Arc<MemberView>>;

fn set_change(node: &MemberId, key: &str, value: &str) -> Option<ClusterChange> {
    match keys::decode_entry(key, value) {
        Ok((key, value)) => Some(ClusterChange::Set { node: node.clone(), key, value }),
        Err(KeyError::UnknownKey(_)) => None,
        Err(e) => {
            debug!(node = %node, error = %e, "malformed gossip value skipped");
            None
        }
    }
}

/// The changes that turn `old` into `new`. Pure. Unknown keys (from a newer
/// peer) and malformed values are skipped.
pub fn diff(old: &MembersView, new: &MembersView) -> Vec<ClusterChange> {
    let mut out = Vec::new();
    for id in old.keys() {
        if !new.contains_key(id) {
            out.push(ClusterChange::Departed(id.clone()));
        }
    }
    for (id, view) in new {
        match old.get(id) {
            None => {
                out.push(ClusterChange::Joined(id.clone()));
                out.extend(view.values.iter().filter_map(|(k, v)| set_change(id, k, v)));
            }
            Some(before) if Arc::ptr_eq(before, view) || before.max_version == view.max_version => {}
            Some(before) => {
                for (k, v) in &view.values {
                    if before.values.get(k) != Some(v) {
                        out.extend(set_change(id, k, v));
                    }
                }
                for k in before.values.keys() {
                    if !view.values.contains_key(k) {
                        if let Ok(key) = GossipKey::parse(k) {
                            out.push(ClusterChange::Removed { node: id.clone(), key });
                        }
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::keys::{HealthView, LoadSummary, ServerHealth};

    fn id(name: &str, generation: u64) -> MemberId {
        MemberId { name: name.into(), generation, gossip_addr: "127.0.0.1:7946".parse().unwrap() }
    }

    fn view(max_version: u64, kv: &[(&str, &str)]) -> Arc<MemberView> {
        Arc::new(MemberView { max_version, values: kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() })
    }

    #[test]
    fn snapshot_is_the_diff_from_nothing() {
        let mut new = MembersView::new();
        new.insert(id("a", 1), view(2, &[("server:api:s1", "up 5"), ("future:key", "x"), ("load:api:s1", "bad")]));
        let changes = diff(&MembersView::new(), &new);
        assert_eq!(
            changes,
            vec![
                ClusterChange::Joined(id("a", 1)),
                ClusterChange::Set {
                    node: id("a", 1),
                    key: GossipKey::server("api", "s1"),
                    value: GossipValue::Health(HealthView { state: ServerHealth::Up, since_ms: 5 }),
                },
            ]
        );
    }

    #[test]
    fn updates_removals_and_departures() {
        let mut old = MembersView::new();
        old.insert(id("a", 1), view(2, &[("server:api:s1", "up 5"), ("load:api:s1", "1 2")]));
        old.insert(id("b", 1), view(1, &[]));
        let mut new = MembersView::new();
        new.insert(id("a", 1), view(4, &[("server:api:s1", "down 9"), ("node:version", "0.1.0")]));
        new.insert(id("b", 2), view(1, &[]));
        let changes = diff(&old, &new);
        assert!(changes.contains(&ClusterChange::Departed(id("b", 1))));
        assert!(changes.contains(&ClusterChange::Joined(id("b", 2))));
        assert!(changes.contains(&ClusterChange::Set {
            node: id("a", 1),
            key: GossipKey::server("api", "s1"),
            value: GossipValue::Health(HealthView { state: ServerHealth::Down, since_ms: 9 }),
        }));
        assert!(changes.contains(&ClusterChange::Set {
            node: id("a", 1),
            key: GossipKey::NodeVersion,
            value: GossipValue::Version("0.1.0".into()),
        }));
        assert!(changes.contains(&ClusterChange::Removed { node: id("a", 1), key: GossipKey::load("api", "s1") }));
        assert_eq!(changes.len(), 5, "{changes:#?}");
        let _ = LoadSummary::default();
    }

    #[test]
    fn unchanged_version_means_no_events() {
        let mut old = MembersView::new();
        old.insert(id("a", 1), view(2, &[("server:api:s1", "up 5")]));
        let new = old.clone();
        assert!(diff(&old, &new).is_empty());
    }
}
