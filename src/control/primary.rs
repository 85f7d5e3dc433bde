//! The active server of `primary` pools, on a standalone node or in a
//! cluster: chosen from the majority view ([`choose_primary`]) and marked
//! in each server's `active_primary`, which the request path reads.
//!
//! Pools over the same servers (the same addresses, backups included, in
//! the same order) share one choice: SysManage's usual setup has an agents
//! pool behind the WebSocket route and an API pool for everything else,
//! and SysManage reaches an agent only through the server process that
//! holds its WebSocket, so the two must never name different servers. The
//! group's servers count as up only where they are up in every pool of the
//! group, and the first pool's `failback` applies (validation makes them
//! agree).
//!
//! Called by the control ticker on a standalone node and by
//! `replication::reconcile` in a cluster. Reads the peers' votes from
//! [`ClusterView`] and nothing else of `control`, so the replication module
//! can call it without a cycle.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use super::replication::view::ClusterView;
use crate::health::{AdminState, EventLog};
use crate::model::Balance;
use crate::state::{choose_primary, PrimaryVotes, Snapshot};

/// The `primary` pools of `snap` grouped by server list (indices into
/// `snap.pools`), each group in config order, groups by their first pool.
pub fn groups(snap: &Snapshot) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let servers = |i: usize| -> Vec<(std::net::SocketAddr, bool)> {
        snap.pools[i].servers.iter().map(|s| (s.addr, s.backup)).collect()
    };
    for (i, pool) in snap.pools.iter().enumerate() {
        if pool.cfg.balance != Balance::Primary {
            continue;
        }
        match groups.iter_mut().find(|g| servers(g[0]) == servers(i)) {
            Some(g) => g.push(i),
            None => groups.push(vec![i]),
        }
    }
    groups
}

/// Recomputes the active server of every `primary` pool from this node's
/// view and the peers' (`None`: a standalone node) and marks it. Returns
/// each pool's active server (to publish).
pub fn update(snap: &Snapshot, view: Option<&ClusterView>, events: &EventLog) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for group in groups(snap) {
        let pools: Vec<&crate::state::Pool> = group.iter().map(|&i| &snap.pools[i]).collect();
        let lead = pools[0];
        let votes: Vec<PrimaryVotes> = (0..lead.servers.len())
            .map(|i| {
                let local = pools.iter().all(|p| {
                    let s = &p.servers[i].state;
                    s.is_up() && s.admin_state() == AdminState::Normal
                });
                // Peers: up where every pool of the group is up for them.
                let votes: Vec<(usize, usize)> = match view {
                    Some(v) => pools.iter().map(|p| v.peer_votes(&p.cfg.name, &p.servers[i].name)).collect(),
                    None => Vec::new(),
                };
                let up = votes.iter().map(|v| v.0).min().unwrap_or(0);
                let reported = votes.iter().map(|v| v.1).max().unwrap_or(0);
                PrimaryVotes { backup: lead.servers[i].backup, up: up + usize::from(local), voters: reported + 1 }
            })
            .collect();
        // A node that does not serve yet (it is learning the cluster's
        // state) has no choice of its own to defend: it takes the peers'.
        let learning = view.is_some_and(|v| !*v.serving.borrow());
        let current = lead.servers.iter().position(|s| s.state.active_primary.load(Ordering::Relaxed));
        let current = if learning { None } else { current };
        let tally = view.map(|v| peer_choices(v, &pools)).unwrap_or_default();
        // Most votes; ties go to the earlier server in the list.
        let preferred = tally.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).map(|(&i, _)| i);
        // A server that most of the nodes (this one included) name wins
        // over this node's own choice: a node that restarted and chose
        // before it heard the others comes round to theirs.
        let current = agreed(&tally, current).or(current);
        let chosen = choose_primary(&votes, current, preferred, lead.cfg.failback);
        for p in &pools {
            let before = p.servers.iter().position(|s| s.state.active_primary.load(Ordering::Relaxed));
            for (i, s) in p.servers.iter().enumerate() {
                s.state.active_primary.store(Some(i) == chosen, Ordering::Relaxed);
            }
            if chosen != before {
                if let Some(old) = before {
                    // Its agents follow the API to the new active server.
                    p.servers[old].state.demote();
                }
                let from = before.map_or("none", |i| p.servers[i].name.as_str());
                let to = chosen.map_or("none", |i| p.servers[i].name.as_str());
                tracing::warn!(pool = %p.cfg.name, from, to, "active server changed");
                events.push(
                    "primary",
                    Some(&p.cfg.name),
                    chosen.map(|i| p.servers[i].name.as_str()),
                    format!("active server {from} -> {to}"),
                );
            }
            if let Some(i) = chosen {
                out.push((p.cfg.name.clone(), p.servers[i].name.clone()));
            }
        }
    }
    out
}

/// How many peers published each server (by index) as the group's active
/// one; a peer counts once, by the group's first pool (every pool of a
/// group names the same server).
fn peer_choices(view: &ClusterView, pools: &[&crate::state::Pool]) -> HashMap<usize, usize> {
    let lead = pools[0];
    let mut tally = HashMap::new();
    for (server, n) in view.primary_tally(&lead.cfg.name) {
        if let Some(i) = lead.servers.iter().position(|s| s.name == server) {
            *tally.entry(i).or_default() += n;
        }
    }
    tally
}

/// The server that a strict majority of the nodes that made a choice name,
/// counting this node's `current` choice with the peers'.
fn agreed(peers: &HashMap<usize, usize>, current: Option<usize>) -> Option<usize> {
    let voters = peers.values().sum::<usize>() + usize::from(current.is_some());
    let count = |i: usize| peers.get(&i).copied().unwrap_or(0) + usize::from(current == Some(i));
    peers.keys().copied().chain(current).find(|&i| count(i) * 2 > voters)
}

#[cfg(test)]
mod tests {
    use super::agreed;
    use std::collections::HashMap;

    #[test]
    fn a_node_that_chose_alone_adopts_the_majority() {
        // Restarted, it chose 0 before it heard that both peers name 1.
        assert_eq!(agreed(&HashMap::from([(1, 2)]), Some(0)), Some(1));
        // The majority includes this node's own choice.
        assert_eq!(agreed(&HashMap::from([(1, 1), (0, 1)]), Some(1)), Some(1));
        // No strict majority: nothing agreed (the node keeps its choice).
        assert_eq!(agreed(&HashMap::from([(1, 1)]), Some(0)), None);
        assert_eq!(agreed(&HashMap::from([(0, 1), (1, 1)]), None), None);
        // No peer has chosen yet: its own choice is the majority of one.
        assert_eq!(agreed(&HashMap::new(), Some(0)), Some(0));
        assert_eq!(agreed(&HashMap::new(), None), None);
    }
}
