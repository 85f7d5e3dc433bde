//! The single writer of the node's desired state. It owns the config, the
//! registry of server runtime state and the health-check tasks; it applies
//! typed commands ([`command::Command`]: reload, admin state, weight,
//! session moves, draining the node, peers' changes) and publishes a new immutable snapshot
//! for the proxy; [`diff`] says what a reload changes.
//!
//! Called by `runtime` (start, SIGHUP), `admin` (API actions) and the
//! replication task (peers' changes). Operators' commands are serialised by
//! an async mutex, so two reloads never interleave.

pub mod command;
pub mod diff;
pub mod primary;
pub mod replication;

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::task::JoinSet;

pub use self::command::{Command, Done, DrainState};
use self::diff::Change;
use crate::config::{self, Config, ConfigErrors};
use crate::health::active::spawn_check;
use crate::health::EventLog;
use crate::proxy::outbound::check::CheckProbe;
use crate::proxy::{ProxyState, Shared};
use crate::sessions::Sessions;
use crate::state::{Registry, Snapshot};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no pool named \"{pool}\" (pools: {known})")]
    UnknownPool { pool: String, known: String },
    #[error("pool \"{pool}\" has no server named \"{server}\" (servers: {known})")]
    UnknownServer { pool: String, server: String, known: String },
    #[error("weight must be 1..=256, got {0}")]
    BadWeight(u32),
    #[error("the config is invalid; the running config is kept:\n{0}")]
    Config(ConfigErrors),
    // Transparent: `{:#}` would print the message twice (once as the
    // source).
    #[error(transparent)]
    Sessions(#[from] crate::sessions::StoreError),
    #[error("no pool has affinity: there are no sessions")]
    NoSessions,
    #[error("no session for key \"{key}\"")]
    NoSession { key: String },
    #[error("no pool with affinity named \"{pool}\"")]
    NoAffinityPool { pool: String },
    #[error("pool \"{pool}\" has no server named \"{server}\"")]
    NoSessionServer { pool: String, server: String },
    #[error("over must be at most 1h, got {}", humantime::format_duration(*.0))]
    BadShedOver(Duration),
}

/// A listener as the node bound it: its name, the address it got (the
/// port chosen for port 0), whether it terminates TLS, and its counters.
#[derive(Debug, Clone)]
pub struct BoundListener {
    pub name: String,
    pub addr: std::net::SocketAddr,
    pub tls: bool,
    pub stats: Arc<crate::proxy::ListenerStats>,
}

/// What a reload did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReloadReport {
    pub source: String,
    pub pools: usize,
    pub routes: usize,
    /// Changes that were not applied and need a restart.
    pub warnings: Vec<String>,
}

pub struct Control {
    pub shared: Arc<Shared>,
    pub events: Arc<EventLog>,
    /// The config file, if the node was started with one (`None`: the
    /// embedded default).
    config_path: Option<PathBuf>,
    inner: Mutex<Inner>,
    /// Sticky sessions, opened when a pool first has `affinity`.
    sessions: std::sync::Mutex<Option<Arc<Sessions>>>,
    /// The listeners as bound at start (listener changes need a restart).
    listeners: std::sync::Mutex<Vec<BoundListener>>,
    /// TLS certificate stores of the listeners, reloaded with the config.
    cert_stores: std::sync::Mutex<Vec<(String, Arc<crate::tls::CertStore>)>>,
    /// Set once when the node runs in a cluster.
    cluster: std::sync::OnceLock<Arc<replication::ClusterRuntime>>,
    /// In a cluster: the session outbox's sending half, given to the
    /// session store when it opens, and its receiving half until the
    /// replication task takes it.
    gossip: Option<tokio::sync::mpsc::Sender<crate::sessions::SessionRecord>>,
    outbox: std::sync::Mutex<Option<replication::Outbox>>,
    /// Set while the node drains (`Command::DrainNode`).
    drain: std::sync::Mutex<Option<DrainState>>,
}

struct Inner {
    registry: Registry,
    checks: JoinSet<()>,
}

impl Control {
    /// Builds the first snapshot and starts health checks and the slow-start
    /// ticker. Must run inside a tokio runtime.
    pub fn start(config: Config, config_path: Option<PathBuf>) -> Result<Arc<Control>, ControlError> {
        let events = Arc::new(EventLog::new(200));
        let (gossip, outbox) = match config.cluster {
            Some(_) => {
                let (tx, outbox) = replication::session_outbox();
                (Some(tx), Some(outbox))
            }
            None => (None, None),
        };
        let sessions = open_sessions_if_needed(&config, None, &gossip)?;
        let mut inner = Inner { registry: Registry::default(), checks: JoinSet::new() };
        let snapshot = Arc::new(Snapshot::new(config, &mut inner.registry, events.clone()));
        inner.spawn_checks(&snapshot, &events);
        let shared = Arc::new(Shared::new(ProxyState::new(snapshot, None, sessions.clone())));
        let control = Arc::new(Control {
            shared,
            events,
            config_path,
            inner: Mutex::new(inner),
            sessions: std::sync::Mutex::new(sessions),
            listeners: std::sync::Mutex::new(Vec::new()),
            cert_stores: std::sync::Mutex::new(Vec::new()),
            cluster: std::sync::OnceLock::new(),
            gossip,
            outbox: std::sync::Mutex::new(outbox),
            drain: std::sync::Mutex::new(None),
        });
        tokio::spawn(ramp_ticker(Arc::downgrade(&control)));
        Ok(control)
    }

    /// Starts gossip when the config has a `[cluster]` table (`extra_seeds`:
    /// from `join` and `data_dir`). Call once, after [`Control::start`].
    pub async fn start_cluster(
        self: &Arc<Self>,
        extra_seeds: Vec<String>,
        admin: Option<std::net::SocketAddr>,
        inherited: &mut crate::upgrade::Inherited,
    ) -> anyhow::Result<Option<Arc<replication::ClusterRuntime>>> {
        if self.snapshot().config.cluster.is_none() {
            return Ok(None);
        }
        // `start` sets `self.cluster` before any peer's change arrives.
        Ok(Some(replication::ClusterRuntime::start(self, extra_seeds, admin, inherited).await?))
    }

    /// The session outbox's receiving half, for the replication task (once).
    fn take_outbox(&self) -> Option<replication::Outbox> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    pub fn cluster(&self) -> Option<&Arc<replication::ClusterRuntime>> {
        self.cluster.get()
    }

    /// Whether the node drains, since when and over which window.
    pub fn drain_state(&self) -> Option<DrainState> {
        *self.drain.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn sessions(&self) -> Option<Arc<Sessions>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Commits and closes the session store (at shutdown). Blocks.
    pub fn close_sessions(&self) {
        if let Some(s) = self.sessions() {
            match s.close() {
                Ok(()) => tracing::info!(file = %s.path().display(), "session store flushed and closed"),
                Err(e) => tracing::error!("closing the session store: {e}"),
            }
        }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.state.load().snapshot.clone()
    }

    /// Records a listener the node bound (for the admin API).
    pub fn add_listener(&self, listener: BoundListener) {
        self.listeners.lock().unwrap_or_else(|e| e.into_inner()).push(listener);
    }

    /// The listeners the node bound, in config order.
    pub fn listeners(&self) -> Vec<BoundListener> {
        self.listeners.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn add_cert_store(&self, listener: &str, store: Arc<crate::tls::CertStore>) {
        self.cert_stores.lock().unwrap_or_else(|e| e.into_inner()).push((listener.to_string(), store));
    }

    /// Re-reads the config file (or the embedded default) and applies it;
    /// on error the running config stays and every error is returned.
    /// Certificates are re-read too.
    pub async fn reload(&self) -> Result<ReloadReport, ControlError> {
        let path = self.config_path.clone();
        // Reading files and resolving names blocks: keep it off the runtime.
        let loaded = tokio::task::spawn_blocking(move || match &path {
            Some(p) => config::load_file(p),
            None => config::default_config(),
        })
        .await
        .unwrap_or_else(|e| {
            Err(ConfigErrors(vec![config::ConfigError {
                file: "config".into(),
                position: None,
                key: String::new(),
                message: format!("reading the config failed: {e}"),
            }]))
        });
        // Certificate files are read off the runtime too.
        let stores = self.cert_stores.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let cert_problems = tokio::task::spawn_blocking(move || reload_certificates(&stores)).await.unwrap_or_default();
        match loaded {
            Ok(cfg) => {
                let mut report = self.apply(cfg).await;
                report.warnings.extend(cert_problems);
                Ok(report)
            }
            Err(e) => {
                self.events.push("reload", None, None, format!("refused: {} error(s)", e.0.len()));
                tracing::error!("reload refused, keeping the running config:\n{e}");
                Err(ControlError::Config(e))
            }
        }
    }

    /// Applies a validated config: new routes, pools and servers take effect
    /// for new requests; open connections, streams and tunnels continue.
    pub async fn apply(&self, cfg: Config) -> ReloadReport {
        let mut inner = self.inner.lock().await;
        let sessions = match open_sessions_if_needed(&cfg, self.sessions(), &self.gossip) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("sticky sessions unavailable: {e}");
                None
            }
        };
        *self.sessions.lock().unwrap_or_else(|e| e.into_inner()) = sessions.clone();
        let old = self.shared.state.load_full();
        let warnings: Vec<String> = diff::diff(&old.snapshot.config, &cfg).iter().filter_map(Change::warning).collect();
        let report = ReloadReport {
            source: cfg.source.clone(),
            pools: cfg.pools.len(),
            routes: cfg.routes.len(),
            warnings: warnings.clone(),
        };
        let snapshot = Arc::new(Snapshot::new(cfg, &mut inner.registry, self.events.clone()));
        inner.checks.abort_all();
        inner.spawn_checks(&snapshot, &self.events);
        self.shared.state.store(Arc::new(ProxyState::new(snapshot, Some(&old), sessions)));
        for w in &warnings {
            tracing::warn!("{w}");
        }
        self.events.push(
            "reload",
            None,
            None,
            format!("applied {} ({} pools, {} routes)", report.source, report.pools, report.routes),
        );
        tracing::info!(source = %report.source, "config reloaded");
        report
    }
}

/// Re-reads every listener's certificate files; a listener whose files are
/// broken keeps its current certificates. Blocks (file reads).
fn reload_certificates(stores: &[(String, Arc<crate::tls::CertStore>)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, store) in stores {
        match store.reload() {
            Ok(warnings) => {
                for w in warnings {
                    tracing::warn!(listener = %name, "TLS: {w}");
                }
            }
            Err(e) => {
                tracing::error!(listener = %name, "TLS certificates not reloaded, keeping the current ones: {e}");
                problems.push(format!("listener {name}: certificates not reloaded: {e}"));
            }
        }
    }
    problems
}

/// The sessions to use for `cfg`: the open ones, or a newly opened store if
/// a pool has `affinity` and none is open yet (its records also go to
/// `gossip`, in a cluster).
fn open_sessions_if_needed(
    cfg: &Config,
    open: Option<Arc<Sessions>>,
    gossip: &Option<tokio::sync::mpsc::Sender<crate::sessions::SessionRecord>>,
) -> Result<Option<Arc<Sessions>>, ControlError> {
    if open.is_some() || !cfg.pools.iter().any(|p| p.affinity.is_some()) {
        return Ok(open);
    }
    Ok(Some(Sessions::open(&cfg.node.name, &cfg.node.data_dir, gossip.clone())?))
}

impl Inner {
    fn spawn_checks(&mut self, snapshot: &Snapshot, events: &Arc<EventLog>) {
        for pool in &snapshot.pools {
            for server in &pool.servers {
                for (idx, check) in pool.cfg.checks.iter().enumerate() {
                    let probe = CheckProbe::for_check(&pool.cfg, server.addr, check);
                    spawn_check(server.state.clone(), idx, check.clone(), probe, events, &mut self.checks);
                }
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.checks.abort_all();
    }
}

/// Recomputes slow-start weights four times a second and sweeps rate-limit
/// zones every ten; ends with the control.
async fn ramp_ticker(control: Weak<Control>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut ticks: u64 = 0;
    loop {
        tick.tick().await;
        ticks += 1;
        let Some(control) = control.upgrade() else { return };
        if ticks.is_multiple_of(40) {
            // Every 10 s: rate-limit zones give back the memory of idle clients.
            let now = crate::clock::now_ms();
            for z in control.shared.state.load().zones.iter().flatten() {
                z.zone.sweep(now);
            }
        }
        let snap = control.snapshot();
        let now = crate::clock::now_ms();
        for pool in &snap.pools {
            for s in &pool.servers {
                s.state.refresh_weight(now);
            }
        }
        if snap.config.cluster.is_none() {
            // A standalone node is its own majority (the cluster task does
            // this in a cluster, once it has heard its peers: a choice made
            // here before would count as a vote of its own).
            primary::update(&snap, None, &control.events);
        }
    }
}
