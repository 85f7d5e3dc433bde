//! The node's membership in its cluster: [`ClusterRuntime::start`] starts
//! gossip and the cluster API, announces the node, and spawns the
//! replication task ([`run`]) that connects gossip to the node's state;
//! [`ClusterRuntime::members`] and [`ClusterRuntime::leave`] serve the admin
//! API and the shutdown.
//!
//! The task owns the flow, one `select!` over four inputs:
//! - peers' changes → [`Command::Peer`] (applied by [`super::peers`]),
//!   then [`reconcile`] if health, loads or primaries may have moved;
//! - this node's session records from the [`Outbox`] → gossip;
//! - a tick (every 250 ms at most) → [`reconcile`];
//! - gossip's request for a catch-up → [`catchup::refetch_all`].
//!
//! The task and the cluster API stop at [`ClusterRuntime::leave`]; they and
//! the initial catch-up hold `Weak` references and also end when the
//! runtime or the control is dropped.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::outbox::{self, Outbox};
use super::reconcile::{reconcile, Published};
use super::view::ClusterView;
use super::{catchup, faults};
use crate::cluster::{
    Cluster, ClusterChange, ClusterChangeStream, ClusterConfig, ClusterError, ClusterKey, GossipKey, GossipValue,
    Member, SecureTransport,
};
use crate::config::ClusterSettings;
use crate::control::{Command, Control, Done};

/// A node's membership in its cluster.
pub struct ClusterRuntime {
    pub cluster: Cluster,
    pub view: Arc<ClusterView>,
    /// Where the cluster API (catch-up) listens: the gossip port, over TCP.
    pub api_addr: SocketAddr,
    /// The cluster API's bearer token, derived from the cluster secret.
    token: Arc<str>,
    stop: watch::Sender<bool>,
    /// Copies of the gossip and API sockets, for an in-place upgrade.
    pub sockets: Vec<crate::upgrade::Handed>,
    /// Gossip was handed to a new process: nothing to leave at stop.
    handed_over: std::sync::atomic::AtomicBool,
}

impl ClusterRuntime {
    /// Starts gossip and the cluster API for `control`'s config, and the task
    /// that connects them. `extra_seeds`: from `join` and `data_dir`.
    pub async fn start(
        control: &Arc<Control>,
        extra_seeds: Vec<String>,
        admin: Option<SocketAddr>,
        inherited: &mut crate::upgrade::Inherited,
    ) -> anyhow::Result<Arc<ClusterRuntime>> {
        let cfg = control.snapshot().config.clone();
        let Some(cc) = cfg.cluster.clone() else { anyhow::bail!("the config has no [cluster] table") };
        // Made by `Control::start` for a config with `[cluster]`; records
        // written since then are waiting in it.
        let Some(outbox) = control.take_outbox() else { anyhow::bail!("the cluster runtime is already started") };
        let mut seeds = cc.seeds.clone();
        for s in extra_seeds {
            if !seeds.contains(&s) {
                seeds.push(s);
            }
        }
        let (cluster, api_listener, sockets) = bind(gossip_config(&cfg.node.name, &cc, &seeds), &cc, inherited).await?;
        announce(&cluster, admin).await?;
        let (stop, stop_rx) = watch::channel(false);
        let view = Arc::new(ClusterView::default());
        // A node whose store was damaged and moved aside at start fetches
        // the table from a peer at once, as a node with seeds does.
        let store_lost = control.sessions().is_some_and(|s| s.moved_aside().is_some());
        let first_sync = !seeds.is_empty() || store_lost;
        view.syncing.store(first_sync, Ordering::Relaxed);
        view.first_sync_pending.store(first_sync, Ordering::Relaxed);
        // A node with no one to sync from routes at once.
        view.serving.send_replace(!first_sync);
        let token: Arc<str> = Arc::from(crate::cluster::transport::wire::api_token(&cc.secret));
        let api_addr = cluster.gossip_addr();
        let handed_over = Default::default();
        let rt = Arc::new(ClusterRuntime { cluster, view, api_addr, token, stop, sockets, handed_over });
        // Before the task starts: peers' changes reach the view through it.
        let _ = control.cluster.set(rt.clone());
        tokio::spawn(catchup::serve(api_listener, Arc::downgrade(control), rt.token.clone(), stop_rx.clone()));
        let changes = rt.cluster.subscribe();
        let catchups = rt.cluster.catchup_requests();
        tokio::spawn(run(Arc::downgrade(&rt), Arc::downgrade(control), changes, outbox, catchups, stop_rx));
        if first_sync {
            tokio::spawn(catchup::first_sync(Arc::downgrade(&rt.view), rt.token.clone(), Arc::downgrade(control)));
        }
        Ok(rt)
    }

    /// Every member, this node included, with the load it reports.
    pub async fn members(&self) -> Vec<(Member, Option<(u64, u64)>)> {
        let members = self.cluster.members().await;
        members
            .into_iter()
            .map(|m| {
                let load = if m.is_self { None } else { self.view.peer_load(&m.id) };
                (m, load)
            })
            .collect()
    }

    /// Announces the leave, gossips it briefly and stops. Does nothing
    /// after [`ClusterRuntime::hand_over`].
    pub async fn leave(&self) {
        if self.handed_over.load(Ordering::Relaxed) {
            return;
        }
        let _ = self.stop.send(true);
        if let Err(e) = self.cluster.leave().await {
            tracing::warn!("leaving the cluster: {e}");
        }
    }
}

impl ClusterRuntime {
    /// In-place upgrade: stops the replication task, the cluster API and
    /// gossip without announcing a leave; the new process gossips on the
    /// same sockets as a newer generation of this node.
    pub async fn hand_over(&self) {
        self.handed_over.store(true, Ordering::Relaxed);
        let _ = self.stop.send(true);
        if let Err(e) = self.cluster.shutdown().await {
            tracing::warn!("stopping gossip for the new process: {e}");
        }
    }
}

/// Gossip settings from the `[cluster]` table.
fn gossip_config(node: &str, cc: &ClusterSettings, seeds: &[String]) -> ClusterConfig {
    let mut config = ClusterConfig::new(node.to_string(), cc.listen);
    config.advertise = cc.advertise;
    config.seeds = seeds.to_vec();
    config.gossip_interval = cc.gossip_interval;
    config.failure_detector.initial_interval = cc.gossip_interval;
    config.leave_grace = cc.gossip_interval * 3;
    config
}

/// Starts gossip (UDP) and binds the cluster API (TCP) on the same port.
/// TCP is bound first, so that port 0 (tests, the demo) picks a port free
/// for both; a UDP clash on such a port tries another.
async fn bind(
    config: ClusterConfig,
    cc: &ClusterSettings,
    inherited: &mut crate::upgrade::Inherited,
) -> anyhow::Result<(Cluster, TcpListener, Vec<crate::upgrade::Handed>)> {
    use crate::upgrade::{Handed, Role};
    use anyhow::Context as _;
    let key = ClusterKey::derive(&cc.secret);
    let faults = faults::from_env();
    let transport = || {
        let t = SecureTransport::new(key.clone()).with_replay_config(config.replay);
        match &faults {
            Some(f) => t.with_fault_injector(f.clone()),
            None => t,
        }
    };
    let (gossip_role, api_role) = (Role::Gossip { bind: cc.listen }, Role::ClusterApi { bind: cc.listen });
    let handed = |udp: &std::net::UdpSocket, api: &TcpListener| -> anyhow::Result<Vec<Handed>> {
        Ok(vec![Handed::of(gossip_role.clone(), udp)?, Handed::of(api_role.clone(), api)?])
    };
    // An upgrade's new process gossips on the old one's sockets.
    if let (Some(udp), Some(api)) = (inherited.take_udp(&gossip_role), inherited.take_tcp(&api_role)?) {
        let api = TcpListener::from_std(api)?;
        let mut attempt = config.clone();
        attempt.listen = udp.local_addr()?;
        let sockets = handed(&udp, &api)?;
        let cluster = Cluster::start_on(attempt, transport(), udp).await.context("cannot start gossip")?;
        return Ok((cluster, api, sockets));
    }
    let mut tries = 0;
    loop {
        tries += 1;
        let api_listener = TcpListener::bind(cc.listen)
            .await
            .with_context(|| format!("cannot listen on {}/tcp for the cluster API ([cluster] listen)", cc.listen))?;
        let mut attempt = config.clone();
        attempt.listen.set_port(api_listener.local_addr()?.port());
        let udp = match std::net::UdpSocket::bind(attempt.listen) {
            Ok(u) => u,
            Err(_) if cc.listen.port() == 0 && tries < 20 => continue,
            Err(source) => {
                return Err(anyhow::Error::new(crate::cluster::ClusterError::Bind { addr: attempt.listen, source })
                    .context("cannot start gossip"))
            }
        };
        let sockets = handed(&udp, &api_listener)?;
        let cluster = Cluster::start_on(attempt, transport(), udp).await.context("cannot start gossip")?;
        return Ok((cluster, api_listener, sockets));
    }
}

/// Publishes this node's version and admin API address.
async fn announce(cluster: &Cluster, admin: Option<SocketAddr>) -> Result<(), ClusterError> {
    let mut entries = vec![(GossipKey::NodeVersion, GossipValue::Version(env!("CARGO_PKG_VERSION").to_string()))];
    if let Some(a) = admin {
        entries.push((GossipKey::NodeAdminAddr, GossipValue::AdminAddr(a)));
    }
    cluster.set_many(entries).await
}

/// The replication task: applies peers' changes, publishes this node's
/// state and records.
async fn run(
    rt: Weak<ClusterRuntime>,
    control: Weak<Control>,
    mut changes: ClusterChangeStream,
    mut outbox: Outbox,
    mut catchups: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let interval = match control.upgrade() {
        Some(c) => c.snapshot().config.cluster.as_ref().map_or(Duration::from_millis(500), |c| c.gossip_interval),
        None => return,
    };
    let mut tick = tokio::time::interval(interval.min(Duration::from_millis(250)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut published = Published::default();
    let mut batch = Vec::with_capacity(outbox::BATCH);
    let started = tokio::time::Instant::now();
    catchups.borrow_and_update();
    loop {
        tokio::select! {
            change = changes.recv() => {
                let Some(change) = change else { return };
                let (Some(rt), Some(control)) = (rt.upgrade(), control.upgrade()) else { return };
                let mut dirty = peer_change(&control, change).await;
                // Apply what else is ready before recomputing.
                while let Some(change) = changes.try_recv() {
                    dirty |= peer_change(&control, change).await;
                }
                if dirty {
                    reconcile(&rt.cluster, &rt.view, &control, &mut published).await;
                    serve_when_known(&rt.view, &control, started);
                }
            }
            n = outbox.next_batch(&mut batch) => {
                if n == 0 {
                    return;
                }
                let Some(rt) = rt.upgrade() else { return };
                outbox::gossip(&rt.cluster, &mut batch).await;
            }
            _ = tick.tick() => {
                let (Some(rt), Some(control)) = (rt.upgrade(), control.upgrade()) else { return };
                reconcile(&rt.cluster, &rt.view, &control, &mut published).await;
                serve_when_known(&rt.view, &control, started);
            }
            changed = catchups.changed() => {
                if changed.is_err() {
                    return;
                }
                let (Some(rt), Some(control)) = (rt.upgrade(), control.upgrade()) else { return };
                catchup::refetch_all(&rt.view, &rt.token, &control);
            }
            _ = stop.changed() => return,
        }
    }
}

/// The longest a starting node waits to learn the cluster's state before it
/// routes with what it has (its first catch-up waits 15 s for a peer).
pub const SERVING_WAIT: Duration = Duration::from_secs(20);

/// Marks the node serving once its first catch-up is over and every live
/// peer's active server for each `primary` pool group is known (applied by
/// the reconcile that ran just before), or once [`SERVING_WAIT`] has passed.
fn serve_when_known(view: &ClusterView, control: &Control, started: tokio::time::Instant) {
    if *view.serving.borrow() {
        return;
    }
    let snap = control.snapshot();
    let peers = view.live_peers().len();
    let known = !view.first_sync_pending.load(Ordering::Relaxed)
        && crate::control::primary::groups(&snap)
            .iter()
            .all(|g| view.primary_choices(&snap.pools[g[0]].cfg.name) >= peers);
    let waited = started.elapsed() >= SERVING_WAIT;
    if known || waited {
        if waited && !known {
            tracing::warn!("the cluster's state is not known after {SERVING_WAIT:?}: routing with what this node has");
        } else {
            tracing::info!(peers, "the cluster's state is known: accepting connections");
        }
        view.serving.send_replace(true);
    }
}

/// Applies a peer's change through the node's one command path; true when
/// what this node derives from peers needs a recompute.
async fn peer_change(control: &Control, change: ClusterChange) -> bool {
    matches!(control.execute(Command::Peer(change)).await, Ok(Done::Peer { reconcile: true }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the soak: chitchat asks for a catch-up as gossip starts,
    /// before any peer is live; that catch-up fails, and it used to end
    /// the starting node's first catch-up, so the node routed at once on
    /// its own guesses.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_catch_up_does_not_end_a_starting_nodes_wait_for_the_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("cluster.key");
        std::fs::write(&secret, "3f1c9a7be2d54f08a6c1e9b27d3f5a8c0b4e6d2f1a9c8b7e5d3c2b1a0f9e8d7c\n").unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let toml = format!(
            "[node]\nname = \"lonely\"\ndata_dir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [cluster]\nlisten = \"127.0.0.1:0\"\nseeds = [\"127.0.0.1:9\"]\nsecret_file = \"{}\"\n\
             [[listeners]]\nname = \"http\"\nbind = \"127.0.0.1:0\"\n\
             [[pools]]\nname = \"p\"\nbalance = \"primary\"\nservers = [{{ addr = \"127.0.0.1:9\" }}]\n\
             [[routes]]\nname = \"all\"\npath_prefix = \"/\"\npool = \"p\"\n",
            dir.path().join("data").display(),
            secret.display()
        );
        let cfg = crate::config::parse_str(&toml, "node.toml", dir.path()).unwrap();
        let node = crate::runtime::Node::start(cfg).await.unwrap();
        let rt = node.control.cluster().unwrap();
        let pending = |rt: &ClusterRuntime| {
            (
                rt.view.syncing.load(Ordering::Relaxed),
                rt.view.first_sync_pending.load(Ordering::Relaxed),
                *rt.view.serving.borrow(),
            )
        };
        assert_eq!(pending(rt), (true, true, false), "(syncing, first sync pending, serving)");
        // Gossip asks for a catch-up while no peer is live: it fails at once.
        catchup::refetch_all(&rt.view, &rt.token, &node.control);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(pending(rt), (true, true, false), "still waiting for the cluster");
        // And the listener accepts nothing yet: a request gets no answer.
        let mut s = tokio::net::TcpStream::connect(node.addr("http").unwrap()).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut s, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let read =
            tokio::time::timeout(Duration::from_millis(300), tokio::io::AsyncReadExt::read(&mut s, &mut buf)).await;
        assert!(read.is_err(), "answered before the node knew the cluster: {read:?}");
        node.stop().await;
    }
}
