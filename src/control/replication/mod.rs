//! The node in its cluster: turns gossip into local state and local state
//! into gossip. One task ([`run`]) owns the flow:
//!
//! - peers' health views are kept per live peer; a peer's `down` wakes the
//!   local checks of that server ([`crate::health::ServerState::probe_now`]);
//! - `primary` pools: the active server is chosen from the majority view
//!   ([`super::primary`]) and published, so every node sends to the same
//!   server and a restarted node adopts the others' choice;
//! - peers' connection counts are summed into
//!   [`crate::health::ServerState::remote_connections`] for `least_loaded`;
//! - session records written here go out as TTL keys (a bounded window);
//!   records from peers are merged into the table and the store;
//! - a node that starts with seeds, or that chitchat resets, fetches the full
//!   session table from a live peer over the cluster API ([`catchup`]) and
//!   reports `syncing` until it has it.
//!
//! Nothing here is on the request path: the proxy reads only atomics in
//! [`crate::health::ServerState`] and the session table.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::Control;
use crate::api::SyncStatus;
use crate::cluster::{Cluster, ClusterChangeStream, GossipKey, GossipValue, Member};

pub mod catchup;
mod outbox;
mod peers;
mod reconcile;
mod record;
pub mod view;

use outbox::Outbox;
use reconcile::{reconcile, Published};
pub use view::ClusterView;

/// How long a starting node waits for a first peer before it stops
/// reporting `syncing` and serves with what it has.
const FIRST_PEER_WAIT: Duration = Duration::from_secs(15);

/// A node's membership in its cluster.
pub struct ClusterRuntime {
    pub cluster: Cluster,
    pub view: Arc<ClusterView>,
    /// Where the cluster API (catch-up) listens: the gossip port, over TCP.
    pub api_addr: SocketAddr,
    token: Arc<str>,
    stop: watch::Sender<bool>,
}

impl ClusterRuntime {
    /// Starts gossip and the cluster API for `control`'s config, and the task
    /// that connects them. `extra_seeds`: from `join` and `data_dir`.
    pub async fn start(
        control: &Arc<Control>,
        extra_seeds: Vec<String>,
        admin: Option<SocketAddr>,
    ) -> anyhow::Result<Arc<ClusterRuntime>> {
        use anyhow::Context as _;
        let cfg = control.snapshot().config.clone();
        let Some(cc) = cfg.cluster.clone() else { anyhow::bail!("the config has no [cluster] table") };
        let mut seeds = cc.seeds.clone();
        for s in extra_seeds {
            if !seeds.contains(&s) {
                seeds.push(s);
            }
        }
        let mut config = crate::cluster::ClusterConfig::new(cfg.node.name.clone(), cc.listen);
        config.advertise = cc.advertise;
        config.seeds = seeds.clone();
        config.gossip_interval = cc.gossip_interval;
        config.failure_detector.initial_interval = cc.gossip_interval;
        config.leave_grace = cc.gossip_interval * 3;
        let key = crate::cluster::ClusterKey::derive(&cc.secret);
        let faults = std::env::var_os(FAULT_FILE_ENV).map(|file| {
            let faults = crate::cluster::FaultInjector::new();
            tracing::warn!(file = %std::path::Path::new(&file).display(), "test fault injection is on ({FAULT_FILE_ENV})");
            tokio::spawn(watch_fault_file(std::path::PathBuf::from(file), faults.clone()));
            faults
        });
        let transport = || {
            let t = crate::cluster::SecureTransport::new(key.clone()).with_replay_config(config.replay);
            match &faults {
                Some(f) => t.with_fault_injector(f.clone()),
                None => t,
            }
        };
        // The cluster API shares the gossip port, over TCP: bound first, so
        // that port 0 (tests, the demo) picks a port free for both.
        let mut tries = 0;
        let (cluster, api_listener) = loop {
            tries += 1;
            let api_listener = tokio::net::TcpListener::bind(cc.listen).await.with_context(|| {
                format!("cannot listen on {}/tcp for the cluster API ([cluster] listen)", cc.listen)
            })?;
            let mut attempt = config.clone();
            attempt.listen.set_port(api_listener.local_addr()?.port());
            match Cluster::start_with_transport(attempt, transport()).await {
                Ok(c) => break (c, api_listener),
                Err(crate::cluster::ClusterError::Bind { .. }) if cc.listen.port() == 0 && tries < 20 => continue,
                Err(e) => return Err(anyhow::Error::new(e).context("cannot start gossip")),
            }
        };
        let bound = cluster.gossip_addr();
        let api_addr = SocketAddr::new(bound.ip(), bound.port());
        let mut entries = vec![(GossipKey::NodeVersion, GossipValue::Version(env!("CARGO_PKG_VERSION").to_string()))];
        if let Some(a) = admin {
            entries.push((GossipKey::NodeAdminAddr, GossipValue::AdminAddr(a)));
        }
        cluster.set_many(entries).await?;
        let (stop, stop_rx) = watch::channel(false);
        let view = Arc::new(ClusterView::default());
        view.syncing.store(!seeds.is_empty(), Ordering::Relaxed);
        let token: Arc<str> = Arc::from(crate::cluster::transport::wire::api_token(&cc.secret));
        let rt = Arc::new(ClusterRuntime { cluster, view, api_addr, token, stop });
        // Records written from now on reach gossip (if the store is open).
        let mut outbox = Outbox::new();
        outbox.hand_over(control);
        tokio::spawn(catchup::serve(api_listener, Arc::downgrade(control), rt.token.clone(), stop_rx.clone()));
        let changes = rt.cluster.subscribe();
        let catchups = rt.cluster.catchup_requests();
        tokio::spawn(run(Arc::downgrade(&rt), Arc::downgrade(control), changes, outbox, catchups, stop_rx));
        if !seeds.is_empty() {
            tokio::spawn(first_sync(Arc::downgrade(&rt), Arc::downgrade(control)));
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

    /// Announces the leave, gossips it briefly and stops.
    pub async fn leave(&self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.cluster.leave().await {
            tracing::warn!("leaving the cluster: {e}");
        }
    }
}

/// Names a file of fault rules (`cluster::FaultInjector::apply` syntax) that
/// the node re-reads every 100 ms: the test hook end-to-end tests use to
/// drop, delay or partition gossip between real processes. Unset in
/// production; the node logs a warning when it is set.
pub const FAULT_FILE_ENV: &str = "SYSMANAGE_NODE_FAULT_FILE";

async fn watch_fault_file(file: std::path::PathBuf, faults: crate::cluster::FaultInjector) {
    let mut applied = String::new();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if text == applied {
            continue;
        }
        match faults.apply(if text.trim().is_empty() { "clear" } else { &text }) {
            Ok(()) => tracing::warn!(rules = %text.trim(), "test fault rules applied"),
            Err(e) => tracing::error!(file = %file.display(), "test fault rules not applied: {e}"),
        }
        applied = text;
    }
}

/// The initial catch-up of a node that starts with seeds: waits for a
/// first live peer, then fetches; retries while peers fail, for a bounded time.
async fn first_sync(rt: Weak<ClusterRuntime>, control: Weak<Control>) {
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (Some(rt), Some(control)) = (rt.upgrade(), control.upgrade()) else { return };
        if !rt.view.live_peers().is_empty() {
            match sync_from_peers(&rt, &control, false).await {
                Ok(_) => return,
                Err(e) => tracing::warn!("session catch-up failed, retrying: {e}"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if started.elapsed() > FIRST_PEER_WAIT {
            let error = format!(
                "no peer answered within {}s; serving with the local session table",
                FIRST_PEER_WAIT.as_secs()
            );
            tracing::warn!("{error}");
            rt.view.set_sync_error(error);
            rt.view.syncing.store(false, Ordering::Relaxed);
            return;
        }
    }
}

/// Fetches the session table from live peers: from the first that answers,
/// or (`all`, after gossip reset this node's view of a peer, e.g. a healed
/// partition) from every live peer, because records written on either side
/// may have left the gossip window.
async fn sync_from_peers(rt: &ClusterRuntime, control: &Control, all: bool) -> Result<SyncStatus, String> {
    rt.view.syncing.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let mut last_err = "no live peer".to_string();
    let mut info = SyncStatus::default();
    let mut from = Vec::new();
    for peer in rt.view.live_peers() {
        match catchup::fetch(peer.gossip_addr, &rt.token).await {
            Ok(records) => {
                let n = records.len();
                let applied = match control.sessions() {
                    Some(s) => {
                        let now = crate::sessions::unix_now_ms();
                        tokio::task::spawn_blocking(move || s.merge_remote_blocking(records, now)).await.unwrap_or(0)
                    }
                    None => 0,
                };
                crate::metrics::COUNTERS.sessions_merged.fetch_add(applied as u64, Ordering::Relaxed);
                tracing::info!(peer = %peer, records = n, applied, "session table caught up");
                info.records += n;
                info.applied += applied;
                from.push(peer.name.to_string());
                if !all {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(peer = %peer, "session catch-up from this peer failed: {e}");
                last_err = format!("{peer}: {e}");
            }
        }
    }
    if from.is_empty() {
        rt.view.set_sync_error(last_err.clone());
        return Err(last_err);
    }
    info.peer = Some(from.join(","));
    info.took_ms = started.elapsed().as_millis() as u64;
    info.at_unix_ms = crate::sessions::unix_now_ms();
    rt.view.set_synced(info.clone());
    rt.view.syncing.store(false, Ordering::Relaxed);
    Ok(info)
}

/// The cluster task: applies peers' changes, publishes this node's state.
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
    catchups.borrow_and_update();
    loop {
        tokio::select! {
            change = changes.recv() => {
                let Some(change) = change else { return };
                let (Some(rt), Some(control)) = (rt.upgrade(), control.upgrade()) else { return };
                let mut dirty = peers::apply(&rt.view, &control, change);
                // Apply what else is ready before recomputing.
                while let Some(change) = changes.try_recv() {
                    dirty |= peers::apply(&rt.view, &control, change);
                }
                if dirty {
                    reconcile(&rt.cluster, &rt.view, &control, &mut published).await;
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
                // A store opened by a reload since the last tick.
                outbox.hand_over(&control);
                reconcile(&rt.cluster, &rt.view, &control, &mut published).await;
            }
            changed = catchups.changed() => {
                if changed.is_err() {
                    return;
                }
                let (Some(rt), Some(control)) = (rt.upgrade(), control.upgrade()) else { return };
                tracing::info!("gossip asked for a catch-up (this node was reset or fell behind): fetching the session table");
                rt.view.syncing.store(true, Ordering::Relaxed);
                let (rt, control) = (Arc::downgrade(&rt), Arc::downgrade(&control));
                tokio::spawn(async move {
                    if let (Some(rt), Some(control)) = (rt.upgrade(), control.upgrade()) {
                        if sync_from_peers(&rt, &control, true).await.is_err() {
                            rt.view.syncing.store(false, Ordering::Relaxed);
                        }
                    }
                });
            }
            _ = stop.changed() => return,
        }
    }
}
