//! The running node: `run` builds the async runtime from the config,
//! starts a [`Node`] (listeners, control plane, cluster, admin API, proxy)
//! and waits for signals: SIGHUP reloads, SIGTERM / SIGINT drain and stop.
//! Tests and `demo` start nodes in-process through [`Node`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin;
use crate::config::{self, Config, LogFormat};
use crate::control::{BoundListener, Control};
use crate::proxy::{self, Retire, ServeOptions};
use crate::upgrade::predecessor::{Launch, Link};
use crate::upgrade::successor::Successor;
use crate::upgrade::wire::{ToNew, ToOld};
use crate::upgrade::{Handed, Role, UpgradeError};

/// `sysmanage-node run` (and `join PEER`): blocks until a shutdown signal
/// and the drain end.
pub fn run(path: Option<&Path>, join: Option<&str>) -> anyhow::Result<()> {
    let launch = crate::upgrade::predecessor::Launch::of_this_process();
    // Started by an upgrade: take the sockets first, so that even a config
    // that does not load is reported to the running node.
    let successor = match std::env::var_os(crate::upgrade::SOCKET_ENV) {
        Some(socket) => Some(Arc::new(
            Successor::connect(Path::new(&socket)).context("upgrade: cannot take over from the running node")?,
        )),
        None => None,
    };
    let fail = |e: anyhow::Error| {
        if let Some(s) = &successor {
            s.fail(&format!("{e:#}"));
        }
        e
    };
    let cfg = load(path).map_err(fail)?;
    init_tracing(&cfg);
    if let Some(peer) = join {
        if cfg.cluster.is_none() {
            return Err(fail(anyhow::anyhow!(
                "join needs a [cluster] table in {} (listen, advertise, secret_file: see man 5 sysmanage-node.toml; \
                 `sysmanage-node init` writes one)",
                cfg.source
            )));
        }
        remember_seed(&cfg.node.data_dir, peer).map_err(fail)?;
    }
    let workers = cfg.node.workers;
    let runtime = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()
    }
    .context("cannot start the async runtime")
    .map_err(fail)?;
    let path = path.map(Path::to_path_buf);
    let (busy_poll, coalesce) = (cfg.node.busy_poll, cfg.node.busy_poll_coalesce);
    let data_dir = cfg.node.data_dir.clone();
    runtime.block_on(async move {
        if !busy_poll.is_zero() {
            // Ends with the runtime, after the drain.
            tokio::spawn(crate::busy_poll::run(busy_poll, coalesce));
        }
        let node = match Node::start_with(cfg, path, successor.clone()).await {
            Ok(node) => node,
            Err(e) => {
                if let Some(s) = &successor {
                    s.fail(&format!("{e:#}"));
                }
                return Err(e);
            }
        };
        node.serving().await;
        if let Some(s) = &successor {
            // The old node stops accepting now; it names this process to
            // systemd as the service's main process.
            s.ready().context("upgrade: cannot tell the old node that this process is ready")?;
            tracing::info!(old_pid = s.old_pid, "upgrade: this process serves; the old one finishes its connections");
        } else {
            crate::upgrade::notify::notify("READY=1");
        }
        crate::upgrade::write_pid_file(&data_dir);
        match wait_for_signals(&node, &launch).await {
            End::Stop => {
                crate::upgrade::notify::notify("STOPPING=1");
                node.stop().await;
            }
            End::Retire => {
                // SIGTERM while retiring (`systemctl stop` signals every
                // process of the service) ends the wait for the tunnels:
                // they close now, spread as at any stop.
                let shared = node.control.shared.clone();
                let cut = tokio::spawn(async move {
                    use tokio::signal::unix::{signal, SignalKind};
                    if let (Ok(mut term), Ok(mut int)) =
                        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
                    {
                        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
                        tracing::info!("signal while retiring: closing the remaining tunnels now");
                        shared.tunnels.close_all();
                    }
                });
                node.stop().await;
                cut.abort();
            }
        }
        crate::upgrade::remove_pid_file(&data_dir);
        Ok(())
    })
}

/// A running node: its bound addresses and the handle to stop it. Tests
/// start nodes in-process through this.
pub struct Node {
    /// Bound address of each listener, by name, in config order.
    pub listeners: Vec<(String, SocketAddr)>,
    /// Bound address of the admin API, if enabled.
    pub admin: Option<SocketAddr>,
    pub control: Arc<Control>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    admin_task: Option<JoinHandle<()>>,
    /// Copies of the listening sockets, for an in-place upgrade.
    sockets: Vec<Handed>,
    retire: Arc<std::sync::OnceLock<Retire>>,
}

impl Node {
    /// Starts a node from a config that did not come from a file (reload
    /// re-reads the embedded default).
    pub async fn start(cfg: Config) -> anyhow::Result<Node> {
        Self::start_with_path(cfg, None).await
    }

    pub async fn start_with_path(cfg: Config, path: Option<PathBuf>) -> anyhow::Result<Node> {
        Self::start_with(cfg, path, None).await
    }

    /// Starts a node; with `successor`, on the sockets, session store and
    /// cluster place of the node that started this process (an upgrade).
    pub async fn start_with(
        cfg: Config,
        path: Option<PathBuf>,
        successor: Option<Arc<Successor>>,
    ) -> anyhow::Result<Node> {
        let mut inherited = successor.as_ref().map(|s| s.take_inherited()).unwrap_or_default();
        let seeds = if cfg.cluster.is_some() { saved_seeds(&cfg.node.data_dir) } else { Vec::new() };
        if let Some(c) = &cfg.cluster {
            // Every node keys rate-limit clients alike (cluster-wide zones).
            let (k0, k1) = crate::cluster::transport::wire::ratelimit_seed(&c.secret);
            if !crate::ratelimit::key::use_shared_seed(k0, k1) {
                tracing::warn!("rate-limit keys were made before the cluster seed was set: cluster-wide zones cannot sum this node's counts");
            }
        }
        let bound = proxy::bind_all(&cfg, &mut inherited).await?;
        let listeners =
            bound.iter().map(|l| Ok((l.name.clone(), l.socket.local_addr()?))).collect::<std::io::Result<Vec<_>>>()?;
        let mut sockets = Vec::new();
        for (l, c) in bound.iter().zip(&cfg.listeners) {
            sockets.push(Handed::of(Role::Listener { name: c.name.clone(), bind: c.bind }, &l.socket)?);
        }
        let admin_listener = match cfg.admin.listen {
            Some(addr) => {
                let role = Role::Admin { bind: addr };
                let l = match inherited.take_tcp(&role)? {
                    Some(l) => tokio::net::TcpListener::from_std(l)?,
                    None => tokio::net::TcpListener::bind(addr)
                        .await
                        .with_context(|| format!("cannot listen on {addr} for the admin API (admin.listen)"))?,
                };
                sockets.push(Handed::of(role, &l)?);
                Some(l)
            }
            None => None,
        };
        let admin = admin_listener.as_ref().map(|l| l.local_addr()).transpose()?;
        let opts = ServeOptions { limits: cfg.limits.clone(), ready: None, retire: Arc::default() };
        for (name, addr) in &listeners {
            tracing::info!(listener = %name, %addr, "listening");
        }
        if let Some(addr) = admin {
            tracing::info!(%addr, writes = cfg.admin.token.is_some(), "admin API listening");
        }
        // Everything that can fail on a bad config has passed.
        let carried = match &successor {
            Some(s) => s.release_store().await?,
            None => Vec::new(),
        };
        let has_cluster = cfg.cluster.is_some();
        tracing::info!(node = %cfg.node.name, source = %cfg.source, pools = cfg.pools.len(), routes = cfg.routes.len(), "sysmanage-node started");
        let control = Control::start(cfg, path)?;
        take_over_servers(&control, &carried);
        if let Some(s) = &successor {
            if has_cluster {
                s.release_cluster().await?;
            }
            if let (Some(records), Some(sessions)) = (s.take_records(), control.sessions()) {
                tokio::spawn(apply_handed_records(records, sessions));
            }
        }
        let cluster = control.start_cluster(seeds, admin, &mut inherited).await?;
        if let Some(rt) = &cluster {
            for h in &rt.sockets {
                sockets.push(Handed { role: h.role.clone(), fd: h.fd.try_clone()? });
            }
        }
        if !inherited.is_empty() {
            let roles: Vec<String> = inherited.roles().iter().map(ToString::to_string).collect();
            tracing::info!(sockets = ?roles, "upgrade: sockets the config no longer uses are closed");
        }
        for (l, (_, addr)) in bound.iter().zip(&listeners) {
            let tls = l.runtime.tls.is_some();
            control.add_listener(BoundListener {
                name: l.name.clone(),
                addr: *addr,
                tls,
                stats: l.runtime.stats.clone(),
            });
            if let Some(store) = &l.runtime.cert_store {
                // New certificate files are picked up within seconds; SIGHUP
                // and the reload API reload them at once.
                crate::tls::spawn_cert_watcher(store, std::time::Duration::from_secs(5));
                control.add_cert_store(&l.name, store.clone());
            }
        }
        let (shutdown, rx) = watch::channel(false);
        let admin_task = admin_listener.map(|l| tokio::spawn(admin::serve(l, control.clone(), rx.clone())));
        let opts = ServeOptions { ready: control.cluster().map(|rt| rt.view.serving.subscribe()), ..opts };
        let retire = opts.retire.clone();
        let task = tokio::spawn(proxy::serve(bound, control.shared.clone(), opts, rx));
        Ok(Node { listeners, admin, control, shutdown, task, admin_task, sockets, retire })
    }

    /// Returns once the listeners accept: at once, or in a cluster when the
    /// node knows the cluster's state (at most `SERVING_WAIT`).
    pub async fn serving(&self) {
        if let Some(rt) = self.control.cluster() {
            let mut serving = rt.view.serving.subscribe();
            let _ = serving.wait_for(|s| *s).await;
        }
    }

    /// The address of the listener called `name`.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners.iter().find(|(n, _)| n == name).map(|(_, a)| *a)
    }

    /// Stops accepting, drains, flushes the session store, and returns when
    /// the node has stopped.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        if let Some(t) = self.admin_task {
            let _ = t.await;
        }
        if let Some(c) = self.control.cluster() {
            c.leave().await;
        }
        let control = self.control.clone();
        let _ = tokio::task::spawn_blocking(move || control.close_sessions()).await;
    }
}

/// Where `join` remembers its peers, one `host:port` per line.
pub fn seeds_file(data_dir: &Path) -> PathBuf {
    data_dir.join("cluster-seeds")
}

/// Seeds remembered by earlier `join`s (none when the file is absent).
fn saved_seeds(data_dir: &Path) -> Vec<String> {
    let file = seeds_file(data_dir);
    match std::fs::read_to_string(&file) {
        Ok(text) => {
            text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect()
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            tracing::warn!(file = %file.display(), "cannot read the remembered cluster seeds: {e}");
            Vec::new()
        }
    }
}

/// Adds `peer` to the seeds file, so that a restart rejoins through it.
fn remember_seed(data_dir: &Path, peer: &str) -> anyhow::Result<()> {
    let valid = peer.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
    if !valid {
        anyhow::bail!(
            "join: expected PEER as host:port of a member's cluster listener (e.g. 10.0.1.11:7946), got \"{peer}\""
        );
    }
    let mut seeds = saved_seeds(data_dir);
    if seeds.iter().any(|s| s == peer) {
        return Ok(());
    }
    seeds.push(peer.to_string());
    std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let file = seeds_file(data_dir);
    let text =
        format!("# peers remembered by `sysmanage-node join`; a restart rejoins through them\n{}\n", seeds.join("\n"));
    std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
    tracing::info!(file = %file.display(), %peer, "seed remembered");
    Ok(())
}

/// How the signal loop ended.
enum End {
    /// SIGTERM or SIGINT: drain and stop.
    Stop,
    /// A new process took over: finish the connections and exit.
    Retire,
}

async fn wait_for_signals(node: &Node, launch: &Launch) -> End {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut usr2)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined2()),
    ) else {
        tracing::error!("cannot install signal handlers; stopping");
        return End::Stop;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); return End::Stop; }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); return End::Stop; }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the config");
                // Errors are logged and kept in the events by reload itself.
                let _ = node.control.execute(crate::control::Command::Reload).await;
            }
            _ = usr2.recv() => {
                tracing::info!(binary = %launch.binary.display(), "SIGUSR2: upgrading in place");
                if node.upgrade(launch).await {
                    return End::Retire;
                }
            }
        }
    }
}

/// How long the new process of an upgrade may take to be ready: its start,
/// plus learning the cluster's state.
const UPGRADE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

impl Node {
    /// Hands this node's sockets, store and cluster place to a new process
    /// started from `launch` (see [`crate::upgrade`]). `true` when the new
    /// process serves: this node then stops accepting and retires. On
    /// failure this node keeps serving, and the reason is logged and
    /// written to the status file.
    pub async fn upgrade(&self, launch: &Launch) -> bool {
        let data_dir = self.control.snapshot().config.node.data_dir.clone();
        let status = |state: &str, new_pid: Option<u32>, message: String| {
            let s = crate::upgrade::Status {
                old_pid: std::process::id(),
                new_pid,
                state: state.to_string(),
                message,
                at_ms: crate::sessions::unix_now_ms(),
            };
            crate::upgrade::write_status(&data_dir, &s);
        };
        status("started", None, String::new());
        match self.hand_over(&data_dir, launch).await {
            Ok((pid, version)) => {
                tracing::info!(new_pid = pid, version, "upgrade: the new process serves; this one retires");
                crate::upgrade::notify::notify(&format!("MAINPID={pid}\nSTATUS=upgraded to {version}"));
                status("ready", Some(pid), version);
                let limits = &self.control.snapshot().config.limits;
                let _ = self.retire.set(retire_settings(limits));
                true
            }
            Err((e, pid)) => {
                status("failed", pid, e.to_string());
                tracing::error!("upgrade failed, this process keeps serving: {e}");
                false
            }
        }
    }

    async fn hand_over(&self, data_dir: &Path, launch: &Launch) -> Result<(u32, String), (UpgradeError, Option<u32>)> {
        let sockets: Vec<&Handed> = self.sockets.iter().collect();
        let mut link = Link::start(data_dir, launch, &sockets).await.map_err(|e| (e, None))?;
        let pid = link.pid;
        let (mut store_released, mut cluster_released) = (false, false);
        let deadline = tokio::time::Instant::now() + UPGRADE_WAIT;
        let result = loop {
            let msg = match tokio::time::timeout_at(deadline, link.next()).await {
                Ok(Ok(msg)) => msg,
                Ok(Err(e)) => break Err(e),
                Err(_) => break Err(UpgradeError::Timeout(UPGRADE_WAIT)),
            };
            match msg {
                ToOld::Failed { error } => break Err(UpgradeError::Failed(error)),
                ToOld::ReleaseStore => {
                    if let Some(sessions) = self.control.sessions() {
                        let forward = link.records();
                        let released = tokio::task::spawn_blocking(move || sessions.release(forward)).await;
                        match released {
                            Ok(Ok(unwritten)) => {
                                for r in unwritten {
                                    link.send(ToNew::Record(r));
                                }
                            }
                            Ok(Err(e)) => break Err(UpgradeError::Failed(format!("releasing the session store: {e}"))),
                            Err(e) => break Err(UpgradeError::Failed(format!("releasing the session store: {e}"))),
                        }
                    }
                    store_released = true;
                    let servers = self
                        .control
                        .snapshot()
                        .pools
                        .iter()
                        .flat_map(|p| p.servers.iter().map(|s| s.state.carry()))
                        .collect();
                    link.send(ToNew::StoreReleased { servers });
                }
                ToOld::ReleaseCluster => {
                    if let Some(rt) = self.control.cluster() {
                        rt.hand_over().await;
                    }
                    cluster_released = true;
                    link.send(ToNew::ClusterReleased);
                }
                ToOld::Ready { pid, version } => break Ok((pid, version)),
            }
        };
        match result {
            Ok(ok) => Ok(ok),
            Err(e) => {
                link.abandon().await;
                if store_released {
                    if let Some(sessions) = self.control.sessions() {
                        sessions.resume();
                    }
                }
                if cluster_released {
                    tracing::error!(
                        "upgrade: gossip was already handed to the new process, which failed: this process serves \
                         without the cluster until it is restarted"
                    );
                }
                Err((e, Some(pid)))
            }
        }
    }
}

/// Applies the old process's server states (an upgrade): those of the
/// servers that are still in the config, at the same address.
fn take_over_servers(control: &Control, carried: &[crate::health::server::Carried]) {
    let snapshot = control.snapshot();
    for c in carried {
        let found = snapshot.pools.iter().find(|p| p.cfg.name == c.pool).and_then(|p| {
            p.servers.iter().find(|s| s.name == c.name && s.addr == c.addr).map(|s| (s, p.cfg.checks.len()))
        });
        if let Some((server, checks)) = found {
            let changed = server.state.take_over(c, checks);
            if !changed.is_empty() {
                tracing::info!(pool = %c.pool, server = %c.name, state = ?changed, "upgrade: server state taken over");
            }
        }
    }
}

/// The old node's timings after an upgrade.
fn retire_settings(limits: &crate::config::Limits) -> Retire {
    Retire { keep_tunnels: limits.upgrade_drain_timeout, shed_over: limits.shed_over }
}

/// Applies the session records the old node wrote after it released the
/// store, until it exits.
async fn apply_handed_records(
    mut records: tokio::sync::mpsc::UnboundedReceiver<crate::sessions::SessionRecord>,
    sessions: Arc<crate::sessions::Sessions>,
) {
    let mut applied = 0u64;
    while let Some(r) = records.recv().await {
        if sessions.table.merge(r.clone(), crate::sessions::unix_now_ms()) {
            sessions.persist(r);
            applied += 1;
        }
    }
    tracing::info!(applied, "upgrade: the old process has exited; its session records are all applied");
}

fn load(path: Option<&Path>) -> anyhow::Result<Config> {
    let result = match path {
        Some(p) => config::load_file(p),
        None => config::default_config(),
    };
    result.map_err(|e| anyhow::anyhow!("invalid config:\n{e}"))
}

fn init_tracing(cfg: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(format!("{},rustls=error", cfg.log.level)));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match cfg.log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
