//! Listeners: accept loops, the connection cap, the PROXY protocol header and
//! TLS handshake when configured, hyper's HTTP/1.1 + HTTP/2 server per
//! connection, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};

use super::conn::{ClientIo, ConnActivity};
use super::service::{handle, ConnInfo, Shared};
use crate::config::{Cidr, Config, Limits, TlsConfig};
use crate::metrics::COUNTERS;
use crate::tls::{CertSource, CertStore, ServerTlsOptions};

/// Connection-level settings, copied out of the config at start.
#[derive(Clone)]
pub struct ServeOptions {
    pub limits: Limits,
}

/// A bound listener and what it does with each connection. Built at start;
/// listener changes need a restart (certificates reload in place).
pub struct Listener {
    pub name: String,
    pub socket: TcpListener,
    pub runtime: Arc<ListenerRuntime>,
}

pub struct ListenerRuntime {
    pub name: String,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub cert_store: Option<Arc<CertStore>>,
    pub redirect_to_https: Option<u16>,
    pub redirect_except: Vec<String>,
    pub accept_proxy_protocol: bool,
    pub trusted_proxies: Vec<Cidr>,
}

impl ListenerRuntime {
    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|c| c.contains(ip))
    }
}

/// The messages carry their cause, as this crate's errors do (e.g.
/// `TlsError::Unreadable` includes its `io::Error`), so the cause is not
/// also returned by `source()`: `run` prints start errors with anyhow's
/// `{:#}`, which would repeat every cause in the chain.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("cannot listen on {addr} (listener {name}): {error}")]
    Bind { name: String, addr: SocketAddr, error: std::io::Error },
    #[error("listener {name}: TLS: {error}")]
    Tls { name: String, error: crate::tls::TlsError },
}

/// Runs every listener until `shutdown` turns true, then waits up to
/// `limits.shutdown_timeout` for in-flight requests to finish.
pub async fn serve(
    listeners: Vec<Listener>,
    shared: Arc<Shared>,
    opts: ServeOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    // Every connection task holds a clone of `drain_tx`; when all are gone,
    // `drain_rx.recv()` returns None (mini-redis's shutdown pattern).
    let (drain_tx, mut drain_rx) = mpsc::channel::<()>(1);
    let ctx = Arc::new(AcceptContext {
        shared,
        limits: opts.limits.clone(),
        conns: Arc::new(Semaphore::new(opts.limits.max_connections)),
        builder: http_builder(&opts.limits),
        drain: drain_tx,
        shutdown: shutdown.clone(),
    });
    let mut tasks = Vec::new();
    for l in listeners {
        tasks.push(tokio::spawn(accept_loop(l, ctx.clone())));
    }
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
    ctx.shared.closing.send_replace(true);
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    drop(ctx);
    let open = COUNTERS.active_connections.load(Ordering::Relaxed);
    tracing::info!(open_connections = open, deadline = ?opts.limits.shutdown_timeout, "stopped accepting; draining");
    match tokio::time::timeout(opts.limits.shutdown_timeout, drain_rx.recv()).await {
        Ok(_) => tracing::info!("all connections closed"),
        Err(_) => tracing::warn!("drain deadline reached; closing the remaining connections"),
    }
}

/// What every connection of every listener shares.
struct AcceptContext {
    shared: Arc<Shared>,
    limits: Limits,
    conns: Arc<Semaphore>,
    builder: auto::Builder<TokioExecutor>,
    drain: mpsc::Sender<()>,
    shutdown: watch::Receiver<bool>,
}

fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1().keep_alive(true).max_buf_size(limits.max_header_size).header_read_timeout(None).timer(TokioTimer::new());
    b.http2().max_header_list_size(limits.max_header_size as u32).max_concurrent_streams(256).timer(TokioTimer::new());
    b
}

async fn accept_loop(l: Listener, ctx: Arc<AcceptContext>) {
    loop {
        // Wait for room before accepting: excess clients queue in the
        // kernel's backlog instead of being accepted and starved.
        let Ok(permit) = ctx.conns.clone().acquire_owned().await else { return };
        let (stream, peer) = match l.socket.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(listener = %l.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if *ctx.shutdown.borrow() {
            return;
        }
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let runtime = l.runtime.clone();
        // The permit and the drain sender live as long as the connection
        // and any WebSocket tunnel made from it.
        let activity = Arc::new(ConnActivity::holding(Box::new((permit, ctx.drain.clone()))));
        tokio::spawn(async move {
            connection(stream, peer, runtime, activity, &ctx).await;
        });
    }
}

/// One client connection from accept to close.
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<ListenerRuntime>,
    activity: Arc<ConnActivity>,
    ctx: &AcceptContext,
) {
    let mut client = peer;
    let mut local = stream.local_addr().unwrap_or(peer);
    if listener.accept_proxy_protocol {
        match crate::proxy_protocol::read_header(&mut stream, ctx.limits.header_timeout).await {
            Ok(h) => {
                if let Some(src) = h.source {
                    // An IPv4 client behind a TCP6 header is still IPv4.
                    client = SocketAddr::new(src.ip().to_canonical(), src.port());
                }
                if let Some(dst) = h.destination {
                    local = dst;
                }
            }
            Err(e) => {
                tracing::debug!(listener = %listener.name, %peer, error = %e, "closing: bad or missing PROXY protocol header");
                return;
            }
        }
    }
    match &listener.tls {
        None => serve_connection(stream, client, peer, local, listener.clone(), false, activity, ctx).await,
        Some(acceptor) => {
            let started = Instant::now();
            match tokio::time::timeout(ctx.limits.header_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    COUNTERS.tls_handshake.record_us(started.elapsed().as_micros() as u64);
                    serve_connection(tls, client, peer, local, listener.clone(), true, activity, ctx).await
                }
                Ok(Err(e)) => {
                    COUNTERS.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(listener = %listener.name, %peer, error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    COUNTERS.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(listener = %listener.name, %peer, "TLS handshake timed out (header_timeout)");
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_connection<I>(
    io: I,
    client: SocketAddr,
    tcp_peer: SocketAddr,
    local: SocketAddr,
    listener: Arc<ListenerRuntime>,
    tls: bool,
    activity: Arc<ConnActivity>,
    ctx: &AcceptContext,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = ClientIo::new(io, activity.clone(), ctx.limits.header_timeout, ctx.limits.keepalive_timeout);
    let info = Arc::new(ConnInfo { peer: client, tcp_peer, local, tls, listener, activity });
    let shared = ctx.shared.clone();
    let svc = service_fn(move |req| handle(shared.clone(), info.clone(), req));
    let conn = ctx.builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    let mut stop = ctx.shutdown.clone();
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = async { let _ = stop.wait_for(|s| *s).await; } => {
            // Finish the request in flight, then close (HTTP/2: GOAWAY).
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(client = %client, error = %e, "client connection ended with an error");
    }
}

/// Binds every configured listener and sets up its TLS.
pub async fn bind_all(cfg: &Config) -> Result<Vec<Listener>, ListenerError> {
    let mut out = Vec::new();
    for l in &cfg.listeners {
        let socket = bind(l.bind).map_err(|e| ListenerError::Bind { name: l.name.clone(), addr: l.bind, error: e })?;
        let (tls, cert_store) = match &l.tls {
            None => (None, None),
            Some(t) => {
                let (acceptor, store, warnings) = tls_setup(t, &cfg.node.data_dir)
                    .map_err(|e| ListenerError::Tls { name: l.name.clone(), error: e })?;
                for w in warnings {
                    tracing::warn!(listener = %l.name, "TLS: {w}");
                }
                (Some(acceptor), Some(store))
            }
        };
        let runtime = Arc::new(ListenerRuntime {
            name: l.name.clone(),
            tls,
            cert_store,
            redirect_to_https: l.redirect_to_https,
            redirect_except: l.redirect_except.clone(),
            accept_proxy_protocol: l.accept_proxy_protocol,
            trusted_proxies: l.trusted_proxies.clone(),
        });
        out.push(Listener { name: l.name.clone(), socket, runtime });
    }
    Ok(out)
}

/// What `check-config` reports about the listeners' certificates without
/// starting anything: (listener, warnings or the error). Self-signed
/// listeners are skipped (their certificate is made at first start).
pub fn check_tls(cfg: &Config) -> Vec<(String, Result<Vec<String>, String>)> {
    crate::tls::install_crypto_provider();
    cfg.listeners
        .iter()
        .filter_map(|l| {
            let t = l.tls.as_ref().filter(|t| t.self_signed.is_none())?;
            let result = tls_setup(t, &cfg.node.data_dir).map(|(_, _, warnings)| warnings).map_err(|e| e.to_string());
            Some((l.name.clone(), result))
        })
        .collect()
}

/// The acceptor and certificate store of a TLS listener, and warnings
/// (expiring certificates, substituted cipher suites) for the caller to show.
fn tls_setup(
    t: &TlsConfig,
    data_dir: &std::path::Path,
) -> Result<(tokio_rustls::TlsAcceptor, Arc<CertStore>, Vec<String>), crate::tls::TlsError> {
    crate::tls::install_crypto_provider();
    let sources: Vec<CertSource> = match &t.self_signed {
        Some(hosts) => {
            let (cert, key) = crate::tls::ensure_self_signed(data_dir, hosts)?;
            vec![CertSource::new(cert, key)]
        }
        None => t
            .certificates
            .iter()
            .map(|c| {
                let mut s = CertSource::new(c.cert.clone(), c.key.clone());
                s.names = c.names.clone();
                s
            })
            .collect(),
    };
    let (store, warnings) = CertStore::load(sources)?;
    let mut all: Vec<String> = warnings.iter().map(|w| w.to_string()).collect();
    let store = Arc::new(store);
    let opts = ServerTlsOptions { protocols: t.protocols.clone(), ciphers: t.ciphers.clone(), ..Default::default() };
    let (config, warnings) = crate::tls::server_config(store.clone(), &opts)?;
    all.extend(warnings.iter().map(|w| w.to_string()));
    Ok((tokio_rustls::TlsAcceptor::from(config), store, all))
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}
