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
use crate::proxy::{self, ServeOptions};

/// `sysmanage-node run` (and `join PEER`): blocks until a shutdown signal
/// and the drain end.
pub fn run(path: Option<&Path>, join: Option<&str>) -> anyhow::Result<()> {
    let cfg = load(path)?;
    init_tracing(&cfg);
    if let Some(peer) = join {
        if cfg.cluster.is_none() {
            anyhow::bail!(
                "join needs a [cluster] table in {} (listen, advertise, secret_file: see man 5 sysmanage-node.toml; \
                 `sysmanage-node init` writes one)",
                cfg.source
            );
        }
        remember_seed(&cfg.node.data_dir, peer)?;
    }
    let workers = cfg.node.workers;
    let runtime = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()
    }
    .context("cannot start the async runtime")?;
    let path = path.map(Path::to_path_buf);
    let (busy_poll, coalesce) = (cfg.node.busy_poll, cfg.node.busy_poll_coalesce);
    runtime.block_on(async move {
        if !busy_poll.is_zero() {
            // Ends with the runtime, after the drain.
            tokio::spawn(crate::busy_poll::run(busy_poll, coalesce));
        }
        let node = Node::start_with_path(cfg, path).await?;
        wait_for_signals(&node).await;
        node.stop().await;
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
}

impl Node {
    /// Starts a node from a config that did not come from a file (reload
    /// re-reads the embedded default).
    pub async fn start(cfg: Config) -> anyhow::Result<Node> {
        Self::start_with_path(cfg, None).await
    }

    pub async fn start_with_path(cfg: Config, path: Option<PathBuf>) -> anyhow::Result<Node> {
        let seeds = if cfg.cluster.is_some() { saved_seeds(&cfg.node.data_dir) } else { Vec::new() };
        if let Some(c) = &cfg.cluster {
            // Every node keys rate-limit clients alike (cluster-wide zones).
            let (k0, k1) = crate::cluster::transport::wire::ratelimit_seed(&c.secret);
            if !crate::ratelimit::key::use_shared_seed(k0, k1) {
                tracing::warn!("rate-limit keys were made before the cluster seed was set: cluster-wide zones cannot sum this node's counts");
            }
        }
        let bound = proxy::bind_all(&cfg).await?;
        let listeners =
            bound.iter().map(|l| Ok((l.name.clone(), l.socket.local_addr()?))).collect::<std::io::Result<Vec<_>>>()?;
        let admin_listener = match cfg.admin.listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} for the admin API (admin.listen)"))?,
            ),
            None => None,
        };
        let admin = admin_listener.as_ref().map(|l| l.local_addr()).transpose()?;
        let opts = ServeOptions { limits: cfg.limits.clone(), ready: None };
        for (name, addr) in &listeners {
            tracing::info!(listener = %name, %addr, "listening");
        }
        if let Some(addr) = admin {
            tracing::info!(%addr, writes = cfg.admin.token.is_some(), "admin API listening");
        }
        tracing::info!(node = %cfg.node.name, source = %cfg.source, pools = cfg.pools.len(), routes = cfg.routes.len(), "sysmanage-node started");
        let control = Control::start(cfg, path)?;
        control.start_cluster(seeds, admin).await?;
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
        let task = tokio::spawn(proxy::serve(bound, control.shared.clone(), opts, rx));
        Ok(Node { listeners, admin, control, shutdown, task, admin_task })
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

async fn wait_for_signals(node: &Node) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
    else {
        tracing::error!("cannot install signal handlers; stopping");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); return; }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); return; }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the config");
                // Errors are logged and kept in the events by reload itself.
                let _ = node.control.execute(crate::control::Command::Reload).await;
            }
        }
    }
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
