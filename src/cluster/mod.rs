//! Cluster membership and shared state over chitchat 0.13, on an encrypted
//! and authenticated UDP transport.
//!
//! - [`secret`]: the cluster secret file and `init`'s generator;
//! - [`transport`]: chitchat's `Transport` over sealed UDP datagrams, replay
//!   protection, fault injection for tests;
//! - [`keys`]: gossip key names and typed value encodings;
//! - [`members`]: members, typed [`ClusterChange`] events, the pure diff;
//! - this file: [`Cluster`], a thin wrapper that starts chitchat, publishes
//!   this node's values, lists members and streams typed changes.
//!
//! Called by the composition root and the control task only. **Nothing here
//! is on the request path**: chitchat's state sits behind a tokio mutex that
//! gossip rounds take, so readers on the request path would contend with
//! them. Every method takes that mutex for one synchronous closure and never
//! holds it across an `.await`. Consumers learn peer state from the change
//! stream ([`Cluster::subscribe`]) and publish it into their own snapshot.
//!
//! Background work (the member watcher) holds a `Weak` reference and ends
//! when the [`Cluster`] is dropped.

pub mod keys;
pub mod members;
pub mod secret;
pub mod transport;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use chitchat::{spawn_chitchat, Chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, NodeState, ProtocolVersion};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

pub use chitchat::FailureDetectorConfig;
pub use keys::{
    escape_name, unescape_name, GossipKey, GossipValue, HealthView, KeyError, LoadSummary, NodeStateExt, ServerHealth,
};
pub use members::{ClusterChange, Member, MemberId, MemberState};
pub use secret::{generate_secret, load_secret, ClusterSecret, SecretError};
pub use transport::{ClusterKey, FaultInjector, ReplayConfig, SecureTransport, StatsHandle, TransportStats};

use members::{MemberView, MembersView};

#[derive(Debug, Error)]
pub enum ClusterError {
    #[error(
        "cannot bind the gossip socket to {addr}/udp: {source}; is another node running, or is [cluster] listen wrong?"
    )]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("[cluster] listen = {listen} is a wildcard address; set [cluster] advertise to the address peers reach this node at")]
    AdvertiseRequired { listen: SocketAddr },
    #[error("cannot start gossip: {0}")]
    Start(String),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("gossip did not stop cleanly: {0}")]
    Shutdown(String),
}

/// Settings of one cluster node. [`ClusterConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Node id: the node name, unique in the cluster.
    pub node_name: String,
    /// Nodes with another cluster id refuse this one (a second guard after
    /// the secret).
    pub cluster_id: String,
    /// Gossip UDP address to bind (port 0 picks one).
    pub listen: SocketAddr,
    /// Address peers reach this node at; default: the bound address.
    pub advertise: Option<SocketAddr>,
    /// `host:port` of seed nodes (hostnames are re-resolved by chitchat).
    pub seeds: Vec<String>,
    pub gossip_interval: Duration,
    pub failure_detector: FailureDetectorConfig,
    /// How long TTL keys (sessions) and deleted keys stay in gossip.
    pub key_ttl: Duration,
    /// Generation id; default: unix ms at start, so it grows on restart.
    pub generation: Option<u64>,
    pub replay: ReplayConfig,
    /// How long [`Cluster::leave`] gossips the leave before stopping.
    pub leave_grace: Duration,
}

impl ClusterConfig {
    pub fn new(node_name: impl Into<String>, listen: SocketAddr) -> Self {
        let gossip_interval = Duration::from_millis(500);
        ClusterConfig {
            node_name: node_name.into(),
            cluster_id: "sysmanage-node".to_string(),
            listen,
            advertise: None,
            seeds: Vec::new(),
            gossip_interval,
            failure_detector: FailureDetectorConfig {
                phi_threshold: 8.0,
                sampling_window_size: 1_000,
                max_interval: Duration::from_secs(10),
                initial_interval: gossip_interval,
                dead_node_grace_period: Duration::from_secs(3_600),
            },
            key_ttl: Duration::from_secs(60),
            generation: None,
            replay: ReplayConfig::default(),
            leave_grace: gossip_interval * 3,
        }
    }
}

fn unix_now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// State shared with the background watcher.
struct Inner {
    self_id: ChitchatId,
    seeds: Vec<String>,
    started: Instant,
    chitchat: Arc<tokio::sync::Mutex<Chitchat>>,
    stats: StatsHandle,
    catchup_rx: watch::Receiver<u64>,
    watched: Mutex<Watched>,
}

#[derive(Default)]
struct Watched {
    view: MembersView,
    subscribers: Vec<mpsc::UnboundedSender<ClusterChange>>,
    /// Heartbeat and when it last advanced, per node.
    heard: HashMap<ChitchatId, (u64, Instant)>,
    /// When the "nobody answers" warning was last logged.
    isolated_warned: Option<Instant>,
}

impl Inner {
    fn watched(&self) -> std::sync::MutexGuard<'_, Watched> {
        self.watched.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running cluster node.
pub struct Cluster {
    inner: Arc<Inner>,
    /// Taken by the first [`Cluster::shutdown`].
    handle: tokio::sync::Mutex<Option<ChitchatHandle>>,
    leave_grace: Duration,
}

impl Cluster {
    /// Starts gossip with a transport keyed by `key`.
    pub async fn start(config: ClusterConfig, key: ClusterKey) -> Result<Cluster, ClusterError> {
        let transport = SecureTransport::new(key).with_replay_config(config.replay);
        Self::start_with_transport(config, transport).await
    }

    /// Starts gossip on a given transport (tests add a fault injector).
    pub async fn start_with_transport(
        config: ClusterConfig,
        transport: SecureTransport,
    ) -> Result<Cluster, ClusterError> {
        let socket =
            StdUdpSocket::bind(config.listen).map_err(|source| ClusterError::Bind { addr: config.listen, source })?;
        Self::start_on(config, transport, socket).await
    }

    /// Starts gossip on a socket already bound (an in-place upgrade hands
    /// the old process's socket over).
    pub async fn start_on(
        config: ClusterConfig,
        transport: SecureTransport,
        socket: StdUdpSocket,
    ) -> Result<Cluster, ClusterError> {
        let bound = socket.local_addr().map_err(|source| ClusterError::Bind { addr: config.listen, source })?;
        let advertise = match config.advertise {
            Some(a) => a,
            None if bound.ip().is_unspecified() => return Err(ClusterError::AdvertiseRequired { listen: bound }),
            None => bound,
        };
        let transport = transport.with_bound_socket(socket);
        let stats = transport.stats_handle();
        let generation = config.generation.unwrap_or_else(unix_now_ms);
        let self_id = ChitchatId::new(config.node_name.as_str(), generation, advertise);
        let (catchup_tx, catchup_rx) = watch::channel(0u64);
        let chitchat_config = ChitchatConfig {
            chitchat_id: self_id.clone(),
            cluster_id: config.cluster_id.clone(),
            gossip_interval: config.gossip_interval,
            listen_addr: bound,
            seed_nodes: config.seeds.clone(),
            failure_detector_config: config.failure_detector.clone(),
            marked_for_deletion_grace_period: config.key_ttl,
            // Runs under chitchat's lock: only bump a counter.
            catchup_callback: Some(Box::new(move || catchup_tx.send_modify(|n| *n += 1))),
            extra_liveness_predicate: None,
            // Every node runs chitchat 0.13, which reads V1 (compressed digests).
            protocol_version: ProtocolVersion::V1,
        };
        let handle = spawn_chitchat(chitchat_config, Vec::new(), &transport)
            .await
            .map_err(|e| ClusterError::Start(format!("{e:#}")))?;
        let chitchat = handle.chitchat();
        let live_rx = chitchat.lock().await.live_nodes_watcher();
        let inner = Arc::new(Inner {
            self_id,
            seeds: config.seeds.clone(),
            started: Instant::now(),
            chitchat,
            stats,
            catchup_rx,
            watched: Mutex::new(Watched::default()),
        });
        tokio::spawn(watch_members(Arc::downgrade(&inner), live_rx, config.gossip_interval));
        info!(node = %config.node_name, generation, gossip = %bound, advertise = %advertise, seeds = ?config.seeds, "gossip started");
        Ok(Cluster { inner, handle: tokio::sync::Mutex::new(Some(handle)), leave_grace: config.leave_grace })
    }

    pub fn self_id(&self) -> MemberId {
        MemberId::from(&self.inner.self_id)
    }

    /// The address peers gossip with.
    pub fn gossip_addr(&self) -> SocketAddr {
        self.inner.self_id.gossip_advertise_addr
    }

    pub fn transport_stats(&self) -> TransportStats {
        self.inner.stats.snapshot()
    }

    /// Counts chitchat's catch-up requests: it changes when this node was
    /// reset or fell too far behind, and the caller should fetch the full
    /// session table from a peer.
    pub fn catchup_requests(&self) -> watch::Receiver<u64> {
        self.inner.catchup_rx.clone()
    }

    /// Publishes this node's values. Session keys get chitchat's TTL; others
    /// stay until changed or deleted. Encoding (and the check that each value
    /// fits its key) happens before the lock; on error nothing is published.
    pub async fn set_many(
        &self,
        entries: impl IntoIterator<Item = (GossipKey, GossipValue)>,
    ) -> Result<(), ClusterError> {
        let mut encoded = Vec::new();
        for (k, v) in entries {
            v.check_fits(&k)?;
            let ttl = matches!(k, GossipKey::Session { .. } | GossipKey::Rate { .. });
            encoded.push((k.encode()?, v.encode()?, ttl));
        }
        self.with_chitchat(move |c| {
            let me = c.self_node_state();
            for (k, v, ttl) in encoded {
                if ttl {
                    me.set_with_ttl(k, v);
                } else {
                    me.set(k, v);
                }
            }
        })
        .await;
        Ok(())
    }

    pub async fn set(&self, key: GossipKey, value: GossipValue) -> Result<(), ClusterError> {
        self.set_many([(key, value)]).await
    }

    /// Deletes one of this node's keys (peers see [`ClusterChange::Removed`]).
    pub async fn delete(&self, key: &GossipKey) -> Result<(), ClusterError> {
        let k = key.encode()?;
        self.with_chitchat(move |c| {
            let me = c.self_node_state();
            if me.get(&k).is_some() {
                me.delete(&k);
            }
        })
        .await;
        Ok(())
    }

    /// Runs `f` on chitchat under its lock. `f` is synchronous, so the lock
    /// is never held across an await; keep it short (gossip waits on it).
    pub async fn with_chitchat<T>(&self, f: impl FnOnce(&mut Chitchat) -> T) -> T {
        let mut guard = self.inner.chitchat.lock().await;
        f(&mut guard)
    }

    /// This node's gossip state: keys (TTL keys still held included) and
    /// their bytes (key + value + an 8-byte version each), what every peer
    /// keeps of it.
    pub async fn self_state_size(&self) -> (usize, usize) {
        self.with_chitchat(|c| {
            c.self_node_state()
                .key_values_including_deleted()
                .fold((0, 0), |(n, b), (k, v)| (n + 1, b + k.len() + v.value.len() + 8))
        })
        .await
    }

    /// Every known member, this node included, sorted by name.
    pub async fn members(&self) -> Vec<Member> {
        let (mut members, heartbeats) = self
            .with_chitchat(|c| {
                let live: Vec<ChitchatId> = c.live_nodes().cloned().collect();
                let dead: Vec<ChitchatId> = c.dead_nodes().cloned().collect();
                let self_id = c.self_chitchat_id().clone();
                let mut out = Vec::new();
                let mut heartbeats = Vec::new();
                for (id, ns) in c.node_states() {
                    let leaving = ns.leaving_since_ms().is_some();
                    let state = match (id == &self_id, live.contains(id), dead.contains(id), leaving) {
                        (true, ..) => MemberState::Live,
                        (_, true, _, false) => MemberState::Live,
                        (_, true, _, true) => MemberState::Leaving,
                        (_, false, true, true) => MemberState::Left,
                        (_, false, true, false) => MemberState::Dead,
                        (_, false, false, _) => MemberState::Joining,
                    };
                    let heartbeat = u64::from(ns.heartbeat());
                    heartbeats.push((id.clone(), heartbeat));
                    out.push(Member {
                        id: MemberId::from(id),
                        state,
                        is_self: id == &self_id,
                        heartbeat,
                        last_heard: None,
                        version: ns.node_version().map(str::to_string),
                        admin_addr: ns.admin_addr(),
                        draining_since_ms: ns.draining_since_ms(),
                    });
                }
                (out, heartbeats)
            })
            .await;
        let now = Instant::now();
        let mut watched = self.inner.watched();
        note_heartbeats(&mut watched.heard, heartbeats, now);
        for m in members.iter_mut().filter(|m| !m.is_self) {
            let key = ChitchatId::new(m.id.name.clone(), m.id.generation, m.id.gossip_addr);
            m.last_heard = watched.heard.get(&key).map(|(_, at)| now.duration_since(*at));
        }
        members.sort_by(|a, b| a.id.cmp(&b.id));
        without_superseded(members)
    }

    /// Typed changes of the other nodes: first the current state (as
    /// `Joined` and `Set` events), then every change, with no gap between.
    /// Unbounded: the consumer (the control task) must keep reading.
    pub fn subscribe(&self) -> ClusterChangeStream {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut watched = self.inner.watched();
        for change in members::diff(&MembersView::new(), &watched.view) {
            let _ = tx.send(change);
        }
        watched.subscribers.push(tx);
        ClusterChangeStream { rx }
    }

    /// Graceful leave: announces `node:leaving`, gossips it for
    /// `leave_grace`, then stops gossip. Peers see the node as leaving at
    /// once and drop it when its heartbeats stop.
    pub async fn leave(&self) -> Result<(), ClusterError> {
        self.set(GossipKey::NodeLeaving, GossipValue::Leaving { since_ms: unix_now_ms() }).await?;
        tokio::time::sleep(self.leave_grace).await;
        self.shutdown().await
    }

    /// Stops gossip without announcing anything (peers detect the silence).
    /// A second call does nothing.
    pub async fn shutdown(&self) -> Result<(), ClusterError> {
        let Some(handle) = self.handle.lock().await.take() else { return Ok(()) };
        info!(node = %self.inner.self_id.node_id, "gossip stopping");
        handle.shutdown().await.map_err(|e| ClusterError::Shutdown(format!("{e:#}")))
    }
}

/// A node's generations as a restart (or an in-place upgrade) shows them:
/// an older generation that a newer live one replaced is dropped (the node
/// is not dead, it came back; chitchat forgets it after its grace period),
/// and a newer generation not yet live beside a live older one is
/// `joining`, not `dead` (the failure detector has not heard it yet).
fn without_superseded(members: Vec<Member>) -> Vec<Member> {
    let newest_live: HashMap<&str, u64> =
        members.iter().filter(|m| m.state == MemberState::Live).fold(HashMap::new(), |mut acc, m| {
            let g = acc.entry(&*m.id.name).or_insert(0);
            *g = (*g).max(m.id.generation);
            acc
        });
    let verdicts: Vec<Option<MemberState>> = members
        .iter()
        .map(|m| match newest_live.get(&*m.id.name) {
            _ if m.state == MemberState::Live => Some(m.state),
            Some(g) if *g > m.id.generation => None,
            Some(_) if m.state == MemberState::Dead => Some(MemberState::Joining),
            _ => Some(m.state),
        })
        .collect();
    members
        .into_iter()
        .zip(verdicts)
        .filter_map(|(mut m, v)| {
            m.state = v?;
            Some(m)
        })
        .collect()
}

fn note_heartbeats(heard: &mut HashMap<ChitchatId, (u64, Instant)>, beats: Vec<(ChitchatId, u64)>, now: Instant) {
    for (id, beat) in beats {
        match heard.get_mut(&id) {
            Some(entry) if entry.0 == beat => {}
            Some(entry) => *entry = (beat, now),
            None => {
                heard.insert(id, (beat, now));
            }
        }
    }
}

fn view_of(self_id: &ChitchatId, live: &std::collections::BTreeMap<ChitchatId, NodeState>) -> MembersView {
    live.iter()
        .filter(|(id, _)| *id != self_id)
        .map(|(id, ns)| {
            let values = ns.key_values().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            (MemberId::from(id), Arc::new(MemberView { max_version: ns.max_version(), values }))
        })
        .collect()
}

/// Turns chitchat's live-node updates into [`ClusterChange`]s for every
/// subscriber, and samples heartbeats for `last_heard`. Ends when the
/// [`Cluster`] is dropped (weak reference) or chitchat stops.
async fn watch_members(
    inner: Weak<Inner>,
    mut live_rx: watch::Receiver<std::collections::BTreeMap<ChitchatId, NodeState>>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = live_rx.changed() => {
                if changed.is_err() {
                    break;
                }
                let Some(inner) = inner.upgrade() else { break };
                let new_view = view_of(&inner.self_id, &live_rx.borrow_and_update());
                let mut watched = inner.watched();
                let changes = members::diff(&watched.view, &new_view);
                watched.view = new_view;
                if !changes.is_empty() {
                    debug!(changes = changes.len(), "cluster changes");
                    watched.subscribers.retain(|tx| changes.iter().all(|c| tx.send(c.clone()).is_ok()));
                }
            }
            _ = tick.tick() => {
                let Some(inner) = inner.upgrade() else { break };
                let beats: Vec<(ChitchatId, u64)> = {
                    let c = inner.chitchat.lock().await;
                    c.node_states().iter().map(|(id, ns)| (id.clone(), u64::from(ns.heartbeat()))).collect()
                };
                let alone = beats.len() <= 1;
                let mut watched = inner.watched();
                note_heartbeats(&mut watched.heard, beats, Instant::now());
                warn_if_isolated(&inner, &mut watched, alone);
            }
        }
    }
    debug!("cluster member watcher stopped");
}

/// After this long with seeds but no authenticated message from anyone, the
/// node says so: a peer with another secret drops our datagrams silently, so
/// silence is all a node with the wrong secret ever sees.
const ISOLATED_AFTER: Duration = Duration::from_secs(15);
const ISOLATED_WARN_EVERY: Duration = Duration::from_secs(60);

fn warn_if_isolated(inner: &Inner, watched: &mut Watched, alone: bool) {
    if inner.seeds.is_empty() || !alone || inner.started.elapsed() < ISOLATED_AFTER {
        return;
    }
    let stats = inner.stats.snapshot();
    if stats.messages_delivered > 0 || stats.datagrams_sent == 0 {
        return;
    }
    if watched.isolated_warned.is_some_and(|at| at.elapsed() < ISOLATED_WARN_EVERY) {
        return;
    }
    watched.isolated_warned = Some(Instant::now());
    warn!(
        seeds = ?inner.seeds,
        datagrams_sent = stats.datagrams_sent,
        auth_failures = stats.auth_failures(),
        "no peer has answered gossip for {}s: check that the seeds are reachable over UDP and that every node has the same cluster secret (peers drop datagrams sealed with another secret without answering)",
        inner.started.elapsed().as_secs()
    );
}

/// The stream returned by [`Cluster::subscribe`].
#[derive(Debug)]
pub struct ClusterChangeStream {
    rx: mpsc::UnboundedReceiver<ClusterChange>,
}

impl ClusterChangeStream {
    /// The next change; `None` once the cluster is gone.
    pub async fn recv(&mut self) -> Option<ClusterChange> {
        self.rx.recv().await
    }

    /// A change if one is ready.
    pub fn try_recv(&mut self) -> Option<ClusterChange> {
        self.rx.try_recv().ok()
    }
}

impl futures_util::Stream for ClusterChangeStream {
    type Item = ClusterChange;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ClusterChange>> {
        self.rx.poll_recv(cx)
    }
}

#[cfg(test)]
mod superseded_tests {
    use super::*;

    fn member(name: &str, generation: u64, state: MemberState) -> Member {
        Member {
            id: MemberId { name: name.into(), generation, gossip_addr: "127.0.0.1:7946".parse().unwrap() },
            state,
            is_self: false,
            heartbeat: 1,
            last_heard: None,
            version: None,
            admin_addr: None,
            draining_since_ms: None,
        }
    }

    #[test]
    fn an_older_generation_replaced_by_a_live_one_is_not_listed() {
        let members = vec![
            member("a", 1, MemberState::Dead),
            member("a", 2, MemberState::Live),
            member("b", 5, MemberState::Dead),
            member("c", 3, MemberState::Live),
            member("c", 4, MemberState::Dead),
            member("d", 7, MemberState::Live),
            member("d", 6, MemberState::Live),
            member("e", 8, MemberState::Left),
        ];
        let kept: Vec<(String, u64, MemberState)> = without_superseded(members)
            .into_iter()
            .map(|m| (m.id.name.to_string(), m.id.generation, m.state))
            .collect();
        // a@1 came back as a@2; b is really dead; c@4 is coming up beside
        // the live c@3 (joining, not dead); both live d are listed; e left.
        use MemberState::*;
        assert_eq!(
            kept,
            vec![
                ("a".into(), 2, Live),
                ("b".into(), 5, Dead),
                ("c".into(), 3, Live),
                ("c".into(), 4, Joining),
                ("d".into(), 7, Live),
                ("d".into(), 6, Live),
                ("e".into(), 8, Left),
            ]
        );
    }
}
