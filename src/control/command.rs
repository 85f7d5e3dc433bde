//! Everything that changes the node, as one type: what the admin API and
//! the signals ask the single writer to do, and what peers tell this node.
//! [`Control::execute`] applies one [`Command`] and says what it did in a
//! [`Done`].
//!
//! An operator's command holds the writer's lock throughout, so two of them
//! never interleave. A peer's change ([`Command::Peer`], from the
//! replication task, thousands a second when a peer catches up) does not
//! take that lock: it changes this node's view of the cluster and the
//! session table, never the configuration or the registry, and each of its
//! handlers ([`super::replication`]'s `peers`) is short and synchronous.

use std::sync::Arc;
use std::time::Duration;

use super::{Control, ControlError, ReloadReport};
use crate::cluster::{ClusterChange, GossipKey, GossipValue};
use crate::config::Config;
use crate::health::{AdminState, ServerState};
use crate::sessions::{unix_now_ms, SessionRecord, Sessions};

/// A change to the node, from an operator.
#[derive(Debug)]
pub enum Command {
    /// Re-read the config file (or the embedded default) and apply it:
    /// SIGHUP and `POST /api/v1/reload`.
    Reload,
    /// Apply a configuration that is already validated.
    Apply(Box<Config>),
    /// Drain, maintenance, or back to normal.
    SetAdminState { pool: String, server: String, state: AdminState },
    /// A server's weight until the next reload (1..=256).
    SetWeight { pool: String, server: String, weight: u32 },
    /// Forget a session key in every pool with affinity.
    UnpinSession { key: String },
    /// Pin a session key to a server of a pool with affinity.
    MoveSession { key: String, pool: String, server: String },
    /// Put the whole node into draining (a rolling upgrade of a cluster):
    /// health answers 503 `draining`, clients are told to close their
    /// connections, WebSocket tunnels are shed over `over` (default
    /// `limits.shed_over`). Again while draining: a new window from now.
    DrainNode { over: Option<Duration> },
    /// Back from draining: tunnels not yet shed stay.
    UndrainNode,
    /// A peer's change arrived by gossip: a member joined or left, or set or
    /// removed a key (health view, load, session record, active server,
    /// rate count).
    Peer(ClusterChange),
}

/// The node drains: since when (unix ms), and the window over which its
/// tunnels are shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainState {
    pub since_unix_ms: u64,
    pub over: Duration,
}

/// What a command did.
#[derive(Debug)]
pub enum Done {
    Reloaded(ReloadReport),
    /// The admin state before the command.
    AdminState {
        was: AdminState,
    },
    /// The weight before the command.
    Weight {
        was: u32,
    },
    /// The pools the key was unpinned from.
    Unpinned {
        pools: Vec<String>,
    },
    /// The session's record after the move.
    Moved(SessionRecord),
    /// The node's draining state before and after the command.
    NodeDrain {
        was: Option<DrainState>,
        now: Option<DrainState>,
    },
    /// A peer's change was applied; `reconcile`: health views, loads or
    /// active servers may have moved, so what this node derives from them
    /// needs a recompute.
    Peer {
        reconcile: bool,
    },
}

impl Control {
    /// Applies one command; see [`Command`].
    pub async fn execute(&self, command: Command) -> Result<Done, ControlError> {
        match command {
            Command::Reload => self.reload().await.map(Done::Reloaded),
            Command::Apply(cfg) => Ok(Done::Reloaded(self.apply(*cfg).await)),
            Command::SetAdminState { pool, server, state } => {
                self.set_admin_state(&pool, &server, state).await.map(|was| Done::AdminState { was })
            }
            Command::SetWeight { pool, server, weight } => {
                self.set_weight(&pool, &server, weight).await.map(|was| Done::Weight { was })
            }
            Command::UnpinSession { key } => self.unpin_session(&key).await.map(|pools| Done::Unpinned { pools }),
            Command::MoveSession { key, pool, server } => {
                self.move_session(&key, &pool, &server).await.map(Done::Moved)
            }
            Command::DrainNode { over } => {
                self.drain_node(over).await.map(|(was, now)| Done::NodeDrain { was, now: Some(now) })
            }
            Command::UndrainNode => Ok(Done::NodeDrain { was: self.undrain_node().await, now: None }),
            Command::Peer(change) => Ok(Done::Peer { reconcile: self.peer_change(change) }),
        }
    }

    /// Drains the node (see [`Command::DrainNode`]); returns the state
    /// before and after.
    async fn drain_node(&self, over: Option<Duration>) -> Result<(Option<DrainState>, DrainState), ControlError> {
        let _one_writer = self.inner.lock().await;
        let over = over.unwrap_or(self.snapshot().config.limits.shed_over);
        if over > crate::config::MAX_SHED_OVER {
            return Err(ControlError::BadShedOver(over));
        }
        let was = self.drain_state();
        let now = DrainState { since_unix_ms: was.map_or_else(unix_now_ms, |w| w.since_unix_ms), over };
        *self.drain.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
        self.shared.set_draining(true);
        self.shared.shed_tunnels(over, crate::proxy::TunnelEnd::Draining);
        let tunnels = crate::metrics::COUNTERS.websocket_tunnels.load(std::sync::atomic::Ordering::Relaxed);
        tracing::info!(?over, tunnels, "node draining: WebSocket tunnels shed over the window");
        self.events.push("admin", None, None, format!("node draining ({tunnels} tunnels shed over {over:?})"));
        if was.is_none() {
            self.publish_drain(Some(now.since_unix_ms)).await;
        }
        Ok((was, now))
    }

    /// Ends draining; returns the state before.
    async fn undrain_node(&self) -> Option<DrainState> {
        let _one_writer = self.inner.lock().await;
        let was = self.drain.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.shared.stop_shedding();
        self.shared.set_draining(false);
        if was.is_some() {
            tracing::info!("node no longer draining");
            self.events.push("admin", None, None, "node no longer draining".to_string());
            self.publish_drain(None).await;
        }
        was
    }

    /// Tells the cluster whether this node drains (`node:draining`).
    async fn publish_drain(&self, since_unix_ms: Option<u64>) {
        let Some(rt) = self.cluster() else { return };
        let done = match since_unix_ms {
            Some(since_ms) => rt.cluster.set(GossipKey::NodeDraining, GossipValue::Draining { since_ms }).await,
            None => rt.cluster.delete(&GossipKey::NodeDraining).await,
        };
        if let Err(e) = done {
            tracing::warn!("cannot gossip the node's draining state: {e}");
        }
    }

    /// Drain, maintenance or enable (back to normal); returns the old state.
    pub async fn set_admin_state(
        &self,
        pool: &str,
        server: &str,
        state: AdminState,
    ) -> Result<AdminState, ControlError> {
        let _one_writer = self.inner.lock().await;
        let s = self.find(pool, server)?;
        let old = s.set_admin_state(state);
        if old != state {
            tracing::info!(%pool, %server, from = old.as_str(), to = state.as_str(), "admin state changed");
            self.events.push("admin", Some(pool), Some(server), format!("{} -> {}", old.as_str(), state.as_str()));
        }
        Ok(old)
    }

    /// Sets a server's weight until the next reload; returns the old one.
    pub async fn set_weight(&self, pool: &str, server: &str, weight: u32) -> Result<u32, ControlError> {
        if !(1..=256).contains(&weight) {
            return Err(ControlError::BadWeight(weight));
        }
        let _one_writer = self.inner.lock().await;
        let s = self.find(pool, server)?;
        let old = s.base_weight();
        s.set_weight_override(weight);
        tracing::info!(%pool, %server, from = old, to = weight, "weight changed");
        self.events.push("admin", Some(pool), Some(server), format!("weight {old} -> {weight}"));
        Ok(old)
    }

    /// Removes `key` from every pool with affinity (the removals are
    /// stored and gossiped as tombstones); returns those pools.
    async fn unpin_session(&self, key: &str) -> Result<Vec<String>, ControlError> {
        let _one_writer = self.inner.lock().await;
        let sessions = self.sessions_or_err()?;
        let snap = self.snapshot();
        let mut removed = Vec::new();
        for p in snap.pools.iter().filter(|p| p.cfg.affinity.is_some()) {
            if let Some(tomb) = sessions.table.remove(&p.cfg.name, key, unix_now_ms()) {
                removed.push(p.cfg.name.clone());
                sessions.persist(tomb);
            }
        }
        if removed.is_empty() {
            return Err(ControlError::NoSession { key: key.to_string() });
        }
        self.events.push("admin", None, None, format!("session \"{key}\" unpinned"));
        Ok(removed)
    }

    /// Pins `key` to `server` of `pool` (stored and gossiped).
    async fn move_session(&self, key: &str, pool: &str, server: &str) -> Result<SessionRecord, ControlError> {
        let _one_writer = self.inner.lock().await;
        let sessions = self.sessions_or_err()?;
        let snap = self.snapshot();
        let Some(p) = snap.pool(pool).filter(|p| p.cfg.affinity.is_some()) else {
            return Err(ControlError::NoAffinityPool { pool: pool.to_string() });
        };
        if !p.servers.iter().any(|s| s.name == server) {
            return Err(ControlError::NoSessionServer { pool: pool.to_string(), server: server.to_string() });
        }
        let ttl = p.cfg.affinity.as_ref().map(|a| a.ttl).unwrap_or_default();
        let rec = sessions.table.assign(pool, key, server, ttl, unix_now_ms());
        sessions.persist(rec.clone());
        self.events.push("admin", Some(pool), Some(server), format!("session \"{key}\" moved here"));
        Ok(rec)
    }

    /// A peer's change, applied to this node's view of the cluster (no
    /// view outside a cluster: nothing to do).
    fn peer_change(&self, change: ClusterChange) -> bool {
        match self.cluster() {
            Some(rt) => super::replication::apply_peer_change(&rt.view, self, change),
            None => false,
        }
    }

    fn sessions_or_err(&self) -> Result<Arc<Sessions>, ControlError> {
        self.sessions().ok_or(ControlError::NoSessions)
    }

    fn find(&self, pool: &str, server: &str) -> Result<Arc<ServerState>, ControlError> {
        let snap = self.snapshot();
        let Some(p) = snap.pool(pool) else {
            let known: Vec<&str> = snap.pools.iter().map(|p| p.cfg.name.as_str()).collect();
            return Err(ControlError::UnknownPool { pool: pool.to_string(), known: known.join(", ") });
        };
        match p.servers.iter().find(|s| s.name == server) {
            Some(s) => Ok(s.state.clone()),
            None => {
                let known: Vec<&str> = p.servers.iter().map(|s| s.name.as_str()).collect();
                Err(ControlError::UnknownServer {
                    pool: pool.to_string(),
                    server: server.to_string(),
                    known: known.join(", "),
                })
            }
        }
    }
}
