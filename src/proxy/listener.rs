//! Listeners: accept loops, the connection cap, the PROXY protocol header and
//! TLS handshake when configured, hyper's HTTP/1.1 or HTTP/2 server per
//! connection, and graceful shutdown.
//!
//! HTTP/2 is chosen by ALPN or by the client's connection preface (prior
//! knowledge); everything else is HTTP/1.1. An idle HTTP/1.1 keep-alive
//! connection is *parked*: hyper's connection is ended without closing the
//! socket (its buffers and state freed), the task waits for the socket to
//! become readable, the keep-alive timer or shutdown, and a new hyper
//! connection takes over when the client sends again (see `conn.rs`).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::Poll;

use bytes::Bytes;
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};

use super::conn::{ActiveGuard, ClientIo, ConnActivity, ReadReady};
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
        h1: http1_builder(&opts.limits),
        h2: http2_builder(&opts.limits),
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
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    drain: mpsc::Sender<()>,
    shutdown: watch::Receiver<bool>,
}

fn http1_builder(limits: &Limits) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.keep_alive(true).max_buf_size(limits.max_header_size).header_read_timeout(None).timer(TokioTimer::new());
    b
}

fn http2_builder(limits: &Limits) -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.max_header_list_size(limits.max_header_size as u32).max_concurrent_streams(256).timer(TokioTimer::new());
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
        match Box::pin(crate::proxy_protocol::read_header(&mut stream, ctx.limits.header_timeout)).await {
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
    let addrs = Addrs { client, tcp_peer: peer, local };
    match &listener.tls {
        // Boxed (here and below) so that the task is no larger than what a
        // connection needs for its whole life; the largest states are boxed
        // further down and live only while they run.
        None => Box::pin(serve_connection(stream, addrs, listener.clone(), None, activity, ctx)).await,
        Some(acceptor) => {
            let started = Instant::now();
            // The block ends before the await, so that the TLS stream
            // (large) is not also kept in this task's state.
            let serve = {
                let handshake = Box::pin(tokio::time::timeout(ctx.limits.header_timeout, acceptor.accept(stream)));
                let tls = match handshake.await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        COUNTERS.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(listener = %listener.name, %peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        COUNTERS.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(listener = %listener.name, %peer, "TLS handshake timed out (header_timeout)");
                        return;
                    }
                };
                COUNTERS.tls_handshake.record_us(started.elapsed().as_micros() as u64);
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                Box::pin(serve_connection(tls, addrs, listener.clone(), Some(h2), activity, ctx))
            };
            serve.await
        }
    }
}

/// The addresses of one client connection.
#[derive(Clone, Copy)]
struct Addrs {
    /// The client: the TCP peer, or the PROXY header's source.
    client: SocketAddr,
    tcp_peer: SocketAddr,
    local: SocketAddr,
}

/// `PRI * HTTP/2.0`: how an HTTP/2 client with prior knowledge starts.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves one connection with HTTP/2 or HTTP/1.1. `tls_h2`: `None` for
/// plain TCP, else whether ALPN chose h2.
async fn serve_connection<I>(
    io: I,
    addrs: Addrs,
    listener: Arc<ListenerRuntime>,
    tls_h2: Option<bool>,
    activity: Arc<ConnActivity>,
    ctx: &AcceptContext,
) where
    I: AsyncRead + AsyncWrite + ReadReady + Unpin + Send + 'static,
{
    let mut io = ClientIo::new(io, activity.clone(), ctx.limits.header_timeout, ctx.limits.keepalive_timeout);
    let info = Arc::new(ConnInfo {
        peer: addrs.client,
        tcp_peer: addrs.tcp_peer,
        local: addrs.local,
        tls: tls_h2.is_some(),
        listener,
        activity: activity.clone(),
    });
    let shared = ctx.shared.clone();
    let svc = service_fn(move |req: hyper::Request<Incoming>| {
        // Busy from the moment hyper parsed the head (see `ClientIo`).
        let guard = ActiveGuard::for_request(&info.activity, !req.body().is_end_stream());
        handle(shared.clone(), info.clone(), req, guard)
    });
    let h2 = match tls_h2 {
        Some(true) => true,
        _ => match sniff_h2(&mut io).await {
            Ok(h2) => h2,
            Err(e) => {
                tracing::debug!(client = %addrs.client, error = %e, "client connection ended before a request");
                return;
            }
        },
    };
    let mut stop = ctx.shutdown.clone();
    let result = if h2 {
        activity.mark_http2();
        Box::pin(serve_http2(io, svc, stop, ctx)).await
    } else {
        serve_http1(io, svc, &activity, &mut stop, ctx).await
    };
    if let Err(e) = result {
        tracing::debug!(client = %addrs.client, error = %e, "client connection ended with an error");
    }
}

/// HTTP/2 on one connection until it ends or the node shuts down.
async fn serve_http2<I, S>(
    io: ClientIo<I>,
    svc: S,
    mut stop: watch::Receiver<bool>,
    ctx: &AcceptContext,
) -> hyper::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = super::body::ProxyBody> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut conn = pin!(ctx.h2.serve_connection(TokioIo::new(io), svc));
    tokio::select! {
        r = conn.as_mut() => r,
        _ = async { let _ = stop.wait_for(|s| *s).await; } => {
            // Finish the streams in flight, then close (GOAWAY).
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

/// Reads the first bytes until they either are the HTTP/2 preface (`true`)
/// or cannot be (`false`); they are rewound into `io` for hyper.
async fn sniff_h2<I: AsyncRead + Unpin>(io: &mut ClientIo<I>) -> std::io::Result<bool> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut n = 0;
    let h2 = loop {
        let got = io.read(&mut buf[n..]).await?;
        if got == 0 {
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            break false;
        }
        n += got;
        if buf[..n] != H2_PREFACE[..n] {
            break false;
        }
        if n == H2_PREFACE.len() {
            break true;
        }
    };
    io.rewind(Bytes::copy_from_slice(&buf[..n]));
    Ok(h2)
}

/// HTTP/1.1 on one connection: one hyper connection per busy period, the
/// socket parked in between (see the module header).
async fn serve_http1<I, S>(
    mut io: ClientIo<I>,
    mut svc: S,
    activity: &ConnActivity,
    stop: &mut watch::Receiver<bool>,
    ctx: &AcceptContext,
) -> hyper::Result<()>
where
    I: AsyncRead + AsyncWrite + ReadReady + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = super::body::ProxyBody> + Unpin,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    io.set_parkable(true);
    loop {
        // Boxed: while parked, the task keeps only the socket and timers.
        let conn = Box::new(ctx.h1.serve_connection(TokioIo::new(io), svc).with_upgrades());
        (io, svc) = match drive_http1(conn, activity, stop).await {
            Http1End::Closed(r) => return r,
            Http1End::Parked(parts) => {
                let mut io = parts.io.into_inner();
                // Part of the next request was already read: it is served
                // first, and the connection is not parked meanwhile.
                io.rewind(parts.read_buf);
                (io, parts.service)
            }
        };
        if !io.has_rewound() {
            if let Err(e) = wait_parked(&mut io, stop).await {
                tracing::trace!(error = %e, "parked connection closed");
                return Ok(());
            }
        }
    }
}

/// A parked connection's wait: `Ok` once the client sends something, an
/// error when the keep-alive timer runs out or the node shuts down.
async fn wait_parked<I: ReadReady>(io: &mut ClientIo<I>, stop: &mut watch::Receiver<bool>) -> std::io::Result<()> {
    let mut stopped = pin!(async { stop.wait_for(|s| *s).await.is_ok() });
    poll_fn(|cx| {
        if stopped.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(std::io::Error::other("shutting down")));
        }
        io.poll_parked(cx)
    })
    .await
}

type Http1Conn<I, S> = http1::UpgradeableConnection<TokioIo<ClientIo<I>>, S>;

enum Http1End<I, S> {
    /// hyper's connection ended (the client closed, `Connection: close`, an
    /// error, an upgrade to a tunnel, or a graceful shutdown).
    Closed(hyper::Result<()>),
    /// hyper's connection was ended while idle; the socket lives on.
    Parked(http1::Parts<TokioIo<ClientIo<I>>, S>),
}

/// Runs hyper's connection until it ends, is parked, or is shut down.
async fn drive_http1<I, S>(
    mut conn: Box<Http1Conn<I, S>>,
    activity: &ConnActivity,
    stop: &mut watch::Receiver<bool>,
) -> Http1End<I, S>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = super::body::ProxyBody> + Unpin,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut stopping = false;
    let mut parking = false;
    // Set when a park turned out not to be possible: hyper then closes
    // the connection after its current exchange, as asked.
    let mut abandoned = false;
    let result = {
        let mut stopped = pin!(async { stop.wait_for(|s| *s).await.is_ok() });
        poll_fn(|cx| {
            if !stopping && stopped.as_mut().poll(cx).is_ready() {
                // Finish the request in flight, then close.
                stopping = true;
                Pin::new(&mut *conn).graceful_shutdown();
            }
            if let Poll::Ready(r) = Pin::new(&mut *conn).poll(cx) {
                return Poll::Ready(r);
            }
            if !stopping && !abandoned && activity.take_park_request() {
                // hyper waits for a next request with nothing buffered to
                // send: a graceful shutdown ends an idle connection at once.
                Pin::new(&mut *conn).graceful_shutdown();
                match Pin::new(&mut *conn).poll(cx) {
                    Poll::Ready(r) => {
                        parking = true;
                        return Poll::Ready(r);
                    }
                    Poll::Pending => {
                        abandoned = true;
                        activity.park_done();
                    }
                }
            }
            Poll::Pending
        })
        .await
    };
    activity.park_done();
    if parking && result.is_ok() {
        if let Some(parts) = conn.into_parts() {
            return Http1End::Parked(parts);
        }
    }
    Http1End::Closed(result)
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
