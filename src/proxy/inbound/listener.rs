//! Listeners: accept loops, the connection cap, the PROXY protocol header and
//! TLS handshake when configured, hyper's HTTP/1.1 or HTTP/2 server per
//! connection, and graceful shutdown.
//!
//! HTTP/2 is chosen by ALPN or by the client's connection preface (prior
//! knowledge); everything else is HTTP/1.1. An idle HTTP/1.1 keep-alive
//! connection is *parked* (at once, or after `conn::PARK_AFTER` of idleness
//! if its client sends back to back): hyper's connection is ended without
//! closing the socket (its buffers and state freed), the task waits for the
//! socket to become readable, the keep-alive timer or shutdown, and a new
//! hyper connection takes over when the client sends again (see `conn.rs`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use std::future::Future;
use std::pin::{pin, Pin};

use bytes::Bytes;
use futures_util::future::{Either, FutureExt, OptionFuture};
use http_body::Body as _;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};

use super::closing::{Closing, Slot};
use super::conn::{ClientIo, ClientTimeouts, SocketProgress};
use super::handshakes::HandshakeThreads;
use super::http1::{Http1Config, Http1Serve, RequestService, ViaHyper};
use crate::config::{Config, Limits, TlsConfig};
use crate::metrics::COUNTERS;
use crate::proxy::activity::{ActiveGuard, ConnActivity};
use crate::proxy::body::ClientBody;
use crate::proxy::route::context::{CloseConnection, ConnInfo, ListenerPolicy};
use crate::proxy::route::{handle, Shared};
use crate::tls::{CertSource, CertStore, ServerTlsOptions};

/// Connection-level settings, copied out of the config at start.
#[derive(Clone)]
pub struct ServeOptions {
    pub limits: Limits,
    /// In a cluster: turns true when the node knows the cluster's state;
    /// the listeners accept nothing before (connections wait in the
    /// kernel's queue). `None`: accept at once.
    pub ready: Option<watch::Receiver<bool>>,
    /// Set before the shutdown signal when the node retires after an
    /// in-place upgrade: its WebSocket tunnels are kept, not closed.
    pub retire: Arc<std::sync::OnceLock<Retire>>,
}

/// How a node that handed its sockets to a new process finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retire {
    /// Open WebSocket tunnels are kept this long (or until they close).
    pub keep_tunnels: Duration,
    /// Then the rest close, each at a random instant within this window.
    pub shed_over: Duration,
}

/// A bound listener and what it does with each connection. Built at start;
/// listener changes need a restart (certificates reload in place).
pub struct Listener {
    pub name: String,
    pub socket: TcpListener,
    pub runtime: Arc<ListenerRuntime>,
}

/// A listener's settings: those of the connection (TLS, the PROXY
/// protocol header) and those its requests read ([`ListenerPolicy`]).
pub struct ListenerRuntime {
    /// The server config TLS handshakes on this listener use.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub cert_store: Option<Arc<CertStore>>,
    pub accept_proxy_protocol: bool,
    pub policy: Arc<ListenerPolicy>,
    /// Its counters, read by the admin API.
    pub stats: Arc<ListenerStats>,
}

/// One listener's connections and TLS handshakes.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Client connections open now (and any tunnel made from them).
    pub open: AtomicU64,
    pub accepted: AtomicU64,
    pub tls_handshakes: AtomicU64,
    pub tls_handshake_failures: AtomicU64,
}

/// Counts a connection as open on its listener until dropped; held with the
/// connection's permit, so it lives as long as the connection and its
/// tunnels.
#[derive(Debug)]
struct OpenOn(Arc<ListenerStats>);

impl OpenOn {
    fn new(stats: &Arc<ListenerStats>) -> OpenOn {
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        OpenOn(stats.clone())
    }
}

impl Drop for OpenOn {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
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
    // One handshake thread per worker. Without them (they could not be
    // started), handshakes run on the workers, as they did before.
    let handshakes = match listeners.iter().any(|l| l.runtime.tls.is_some()) {
        false => None,
        true => HandshakeThreads::start(tokio::runtime::Handle::current().metrics().num_workers())
            .inspect_err(|e| tracing::warn!(error = %e, "TLS handshakes run on the workers: no thread for them"))
            .ok(),
    };
    let ctx = Arc::new(AcceptContext {
        shared,
        limits: opts.limits.clone(),
        conns: Arc::new(Semaphore::new(opts.limits.max_connections)),
        h1: Arc::new(Http1Config { hyper: http1_builder(&opts.limits), max_head: opts.limits.max_header_size }),
        h2: http2_builder(&opts.limits),
        drain: drain_tx,
        shutdown: shutdown.clone(),
        closing: Arc::new(Closing::default()),
        ready: opts.ready.clone(),
        handshakes,
    });
    let mut tasks = Vec::new();
    for l in listeners {
        tasks.push(tokio::spawn(accept_loop(l, ctx.clone())));
    }
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
    let retire = opts.retire.get().copied();
    match retire {
        None => {
            ctx.shared.tunnels.close_all();
            // Requests in progress finish; keep-alive connections then close.
            ctx.closing.close();
        }
        Some(_) => {
            // HAProxy's `idle-close-on-response`: an idle keep-alive client
            // gets one more answer, with `Connection: close`, instead of a
            // close that may cross its next request; those still idle after
            // the keep-alive timeout are closed.
            ctx.shared.set_retiring();
            let (closing, wait) = (ctx.closing.clone(), opts.limits.keepalive_timeout);
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                closing.close();
            });
        }
    }
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    let shared = ctx.shared.clone();
    drop(ctx);
    let open = COUNTERS.active_connections.load(Ordering::Relaxed);
    let Some(retire) = retire else {
        tracing::info!(open_connections = open, deadline = ?opts.limits.shutdown_timeout, "stopped accepting; draining");
        match tokio::time::timeout(opts.limits.shutdown_timeout, drain_rx.recv()).await {
            Ok(_) => tracing::info!("all connections closed"),
            Err(_) => tracing::warn!("drain deadline reached; closing the remaining connections"),
        }
        return;
    };
    tracing::info!(
        open_connections = open,
        keep_tunnels = ?retire.keep_tunnels,
        "upgrade: the new process accepts; this one finishes its requests and keeps its WebSocket tunnels"
    );
    if tokio::time::timeout(retire.keep_tunnels, drain_rx.recv()).await.is_ok() {
        tracing::info!("upgrade: all connections closed");
        return;
    }
    let open = COUNTERS.active_connections.load(Ordering::Relaxed);
    tracing::info!(open_connections = open, over = ?retire.shed_over, "upgrade: closing the remaining WebSocket tunnels, spread");
    shared.shed_tunnels(retire.shed_over, crate::proxy::outbound::tunnel::End::Upgrade);
    // Each tunnel closes within the window; a half-closed one may take its
    // fin timeout more.
    let deadline = retire.shed_over + opts.limits.shutdown_timeout;
    match tokio::time::timeout(deadline, drain_rx.recv()).await {
        Ok(_) => tracing::info!("upgrade: all connections closed"),
        Err(_) => tracing::warn!("upgrade: drain deadline reached; closing the remaining connections"),
    }
}

/// What every connection of every listener shares.
struct AcceptContext {
    shared: Arc<Shared>,
    limits: Limits,
    conns: Arc<Semaphore>,
    h1: Arc<Http1Config>,
    h2: http2::Builder<TokioExecutor>,
    drain: mpsc::Sender<()>,
    shutdown: watch::Receiver<bool>,
    /// Shutdown for HTTP/1.1 connections (one waker each, no future).
    closing: Arc<Closing>,
    ready: Option<watch::Receiver<bool>>,
    /// Where TLS handshakes run: `None` when no listener has TLS.
    handshakes: Option<Arc<HandshakeThreads>>,
}

/// hyper's HTTP/1.1 server settings. `writev(false)`: the response head and
/// body are copied into one buffer and written with one `write`, instead of
/// queued as separate buffers for `writev`. For the small answers that make
/// up SysManage's traffic that is cheaper (callgrind, `bench/instructions.sh`:
/// 22.2k → 21.8k instructions per plain request, 28.2k → 27.4k over TLS,
/// where rustls copies into one record either way); large bodies pay one
/// more copy in memory.
fn http1_builder(limits: &Limits) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.keep_alive(true)
        .max_buf_size(limits.max_header_size)
        .header_read_timeout(None)
        .timer(TokioTimer::new())
        .writev(false);
    b
}

fn http2_builder(limits: &Limits) -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.max_header_list_size(limits.max_header_size as u32).max_concurrent_streams(256).timer(TokioTimer::new());
    b
}

async fn accept_loop(l: Listener, ctx: Arc<AcceptContext>) {
    if let Some(mut ready) = ctx.ready.clone() {
        // Bounded by the replication task, which sets it after at most
        // `SERVING_WAIT`; a dropped sender (no cluster any more) lets go too.
        if !*ready.borrow() {
            tracing::info!(listener = %l.name, "waiting to learn the cluster's state before accepting connections");
            let _ = ready.wait_for(|r| *r).await;
        }
    }
    let mut trouble = AcceptTrouble::default();
    loop {
        // Shutdown aborts this task at an await, where nothing is accepted
        // yet; a connection already accepted is served (its client sent a
        // request, and dropping the socket would reset it: the old process
        // of an in-place upgrade did that to one request in a few thousand).
        if *ctx.shutdown.borrow() {
            return;
        }
        // Wait for room before accepting: excess clients queue in the
        // kernel's backlog instead of being accepted and starved.
        let Ok(permit) = ctx.conns.clone().acquire_owned().await else { return };
        let (stream, peer) = match l.socket.accept().await {
            Ok(x) => x,
            Err(e) => {
                if let Some(pause) = trouble.failed(&l.name, &e) {
                    drop(permit);
                    tokio::time::sleep(pause).await;
                }
                continue;
            }
        };
        trouble.accepted(&l.name);
        crate::busy_poll::traffic();
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let runtime = l.runtime.clone();
        // The permit and the drain sender live as long as the connection
        // and any WebSocket tunnel made from it.
        let open = OpenOn::new(&runtime.stats);
        let activity = Arc::new(ConnActivity::holding(Box::new((permit, ctx.drain.clone(), open))));
        tokio::spawn(connection(stream, peer, runtime, activity, ctx));
    }
}

/// Why `accept` failed, as far as what to do next goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AcceptFailure {
    /// The connection died in the queue (the client gave up): take the next.
    Gone,
    /// Out of file descriptors (`EMFILE`, `ENFILE`).
    Descriptors,
    /// Out of socket memory (`ENOBUFS`, `ENOMEM`).
    Memory,
    Other,
}

impl AcceptFailure {
    fn of(e: &std::io::Error) -> AcceptFailure {
        // Linux errno values.
        const ENOMEM: i32 = 12;
        const ENFILE: i32 = 23;
        const EMFILE: i32 = 24;
        const ENOBUFS: i32 = 105;
        const ECONNABORTED: i32 = 103;
        const EPROTO: i32 = 71;
        const ECONNRESET: i32 = 104;
        const ETIMEDOUT: i32 = 110;
        const EPERM: i32 = 1;
        match e.raw_os_error() {
            Some(EMFILE | ENFILE) => AcceptFailure::Descriptors,
            Some(ENOBUFS | ENOMEM) => AcceptFailure::Memory,
            Some(ECONNABORTED | EPROTO | ECONNRESET | ETIMEDOUT | EPERM) => AcceptFailure::Gone,
            _ => AcceptFailure::Other,
        }
    }

    /// Its index in `COUNTERS.accept_errors` (`metrics::ACCEPT_ERROR_REASONS`).
    fn reason(self) -> Option<usize> {
        match self {
            AcceptFailure::Gone => None,
            AcceptFailure::Descriptors => Some(0),
            AcceptFailure::Memory => Some(1),
            AcceptFailure::Other => Some(2),
        }
    }
}

/// A listener's run of failed accepts: how long to pause, what was logged.
/// Out of descriptors, accepting again at once would fail again at once
/// (the waiting connection stays in the kernel's queue), so the loop
/// pauses, 10 ms doubling to 1 s, logs once per 10 s with the count, and
/// resumes by itself when descriptors are free again (connections that end
/// give theirs back).
#[derive(Debug, Default)]
struct AcceptTrouble {
    pause: Option<Duration>,
    /// Failures since the last log line, and when that was.
    unlogged: u64,
    logged: Option<tokio::time::Instant>,
    /// Failures of this run.
    total: u64,
}

const ACCEPT_PAUSE_FIRST: Duration = Duration::from_millis(10);
const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);

impl AcceptTrouble {
    /// Counts and logs a failure; how long to pause before the next accept.
    fn failed(&mut self, listener: &str, e: &std::io::Error) -> Option<Duration> {
        let kind = AcceptFailure::of(e);
        let Some(reason) = kind.reason() else {
            tracing::debug!(listener, error = %e, "a connection closed before it was accepted");
            return None;
        };
        crate::metrics::COUNTERS.accept_errors[reason].fetch_add(1, Ordering::Relaxed);
        self.total += 1;
        self.unlogged += 1;
        let now = tokio::time::Instant::now();
        if self.logged.is_none_or(|at| now.duration_since(at) >= ACCEPT_LOG_EVERY) {
            let hint = match kind {
                AcceptFailure::Descriptors => {
                    "out of file descriptors: raise the limit (LimitNOFILE in the systemd unit, ulimit -n) or lower limits.max_connections below it"
                }
                AcceptFailure::Memory => "out of socket memory",
                _ => "unexpected error",
            };
            tracing::error!(
                listener,
                error = %e,
                failures = self.unlogged,
                "accept failed: {hint}; new connections wait in the kernel's queue, retrying with a pause of up to 1s"
            );
            self.unlogged = 0;
            self.logged = Some(now);
        }
        let pause = self.pause.map_or(ACCEPT_PAUSE_FIRST, |p| (p * 2).min(ACCEPT_PAUSE_MAX));
        self.pause = Some(pause);
        Some(pause)
    }

    /// A connection was accepted: ends a run of failures, and says so.
    fn accepted(&mut self, listener: &str) {
        if self.total > 0 {
            tracing::info!(listener, failures = self.total, "accepting connections again");
            *self = AcceptTrouble::default();
        }
    }
}

/// One client connection from accept to close. The setup (PROXY header,
/// TLS handshake, protocol sniff) runs boxed and is freed before serving, so
/// that a parked plain HTTP/1.1 connection's task holds little more than
/// its [`Http1Serve`]. Combinators rather than an `async fn`: an `async fn`
/// would keep room for the serving future twice (as the setup's result and
/// as the future it awaits).
fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<ListenerRuntime>,
    activity: Arc<ConnActivity>,
    ctx: Arc<AcceptContext>,
) -> impl Future<Output = ()> + Send {
    Box::pin(setup(stream, peer, listener, activity, ctx)).then(OptionFuture::from).map(drop)
}

/// A connection's serving future: plain HTTP/1.1 inline, anything else
/// (TLS, HTTP/2) boxed.
type Serving<S> = Either<Http1Plain<S>, Pin<Box<dyn Future<Output = ()> + Send>>>;

/// Plain HTTP/1.1, with errors logged.
type Http1Plain<S> = futures_util::future::Map<Http1Serve<TcpStream, S>, fn(hyper::Result<()>)>;

fn log_end(result: hyper::Result<()>) {
    if let Err(e) = result {
        tracing::debug!(error = %e, "client connection ended with an error");
    }
}

async fn setup(
    mut stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<ListenerRuntime>,
    activity: Arc<ConnActivity>,
    ctx: Arc<AcceptContext>,
) -> Option<Serving<impl ProxyService>> {
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
                tracing::debug!(listener = %listener.policy.name, %peer, error = %e, "closing: bad or missing PROXY protocol header");
                return None;
            }
        }
    }
    let addrs = Addrs { client, tcp_peer: peer, local };
    let Some(tls_config) = listener.tls.clone() else {
        let (io, svc, h2) = prepare(stream, addrs, listener, None, activity.clone(), &ctx).await?;
        if h2 {
            return Some(Either::Right(Box::pin(serve_http2(io, svc, activity, ctx))));
        }
        let serve = Http1Serve::new(io, svc, activity, ctx.h1.clone(), ctx.closing.clone(), addrs.client.ip());
        return Some(Either::Left(serve.map(log_end as fn(hyper::Result<()>))));
    };
    let started = Instant::now();
    let tls = match tls_handshake(stream, tls_config, ctx.limits.header_timeout, ctx.handshakes.as_deref()).await {
        Ok(tls) => tls,
        Err(e) => {
            COUNTERS.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
            listener.stats.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(listener = %listener.policy.name, %peer, error = %e, "TLS handshake failed");
            return None;
        }
    };
    COUNTERS.tls_handshake.record_us(started.elapsed().as_micros() as u64);
    listener.stats.tls_handshakes.fetch_add(1, Ordering::Relaxed);
    let alpn_h2 = tls.conn().alpn_protocol() == Some(b"h2");
    let (io, svc, h2) = prepare(tls, addrs, listener, Some(alpn_h2), activity.clone(), &ctx).await?;
    if h2 {
        return Some(Either::Right(Box::pin(serve_http2(io, svc, activity, ctx))));
    }
    let serve = Http1Serve::new(io, svc, activity, ctx.h1.clone(), ctx.closing.clone(), addrs.client.ip());
    Some(Either::Right(Box::pin(serve.map(log_end))))
}

/// The server side of a TLS handshake within `limit`: on a handshake thread
/// when there are some (see `handshakes`), the socket moving there and back.
async fn tls_handshake(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    limit: Duration,
    threads: Option<&HandshakeThreads>,
) -> std::io::Result<crate::tls::TlsServerStream<TcpStream>> {
    async fn within(
        stream: TcpStream,
        config: Arc<rustls::ServerConfig>,
        limit: Duration,
    ) -> std::io::Result<crate::tls::TlsServerStream<TcpStream>> {
        match tokio::time::timeout(limit, crate::tls::accept(config, stream)).await {
            Ok(done) => done,
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out (header_timeout)")),
        }
    }
    let Some(threads) = threads else {
        return within(stream, config, limit).await;
    };
    let socket = stream.into_std()?;
    let done = threads
        .run(async move {
            let tls = within(TcpStream::from_std(socket)?, config, limit).await?;
            let (stream, state) = tls.into_parts();
            Ok::<_, std::io::Error>((stream.into_std()?, state))
        })
        .await;
    let (socket, state) = done.ok_or_else(|| std::io::Error::other("the TLS handshake threads stopped"))??;
    Ok(crate::tls::TlsServerStream::from_parts(TcpStream::from_std(socket)?, state))
}

/// The per-request service of one connection.
trait ProxyService:
    RequestService<Error = CloseConnection, Future: Send + 'static> + Clone + Unpin + Send + 'static
{
}

impl<T> ProxyService for T where
    T: RequestService<Error = CloseConnection, Future: Send + 'static> + Clone + Unpin + Send + 'static
{
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

/// The connection's I/O wrapper and service, and whether it speaks HTTP/2
/// (`alpn_h2`: `None` for plain TCP, else whether ALPN chose h2; otherwise
/// the client's first bytes tell). `None` if the client left first.
async fn prepare<I>(
    io: I,
    addrs: Addrs,
    listener: Arc<ListenerRuntime>,
    alpn_h2: Option<bool>,
    activity: Arc<ConnActivity>,
    ctx: &AcceptContext,
) -> Option<(ClientIo<I>, impl ProxyService, bool)>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static + crate::proxy::outbound::tunnel::ClientSocket + SocketProgress,
{
    let mut io = ClientIo::new(io, activity.clone(), ClientTimeouts::of(&ctx.limits));
    let info = Arc::new(ConnInfo {
        peer: addrs.client,
        tcp_peer: addrs.tcp_peer,
        local: addrs.local,
        tls: alpn_h2.is_some(),
        listener: listener.policy.clone(),
        activity,
        unwrap_upgraded: super::conn::unwrap_upgraded::<I>,
    });
    let shared = ctx.shared.clone();
    let svc = service_fn(move |req: hyper::Request<ClientBody>| {
        // Busy from the moment hyper parsed the head (see `ClientIo`).
        let guard = ActiveGuard::for_request(&info.activity, !req.body().is_end_stream());
        handle(shared.clone(), info.clone(), req, guard)
    });
    let h2 = match alpn_h2 {
        Some(true) => true,
        _ => {
            // A client that connected but has sent nothing yet must not
            // hold a graceful shutdown for its whole `header_timeout`: it
            // waits on `closing` like a connection between requests (and
            // registers there only if its first bytes are not in yet).
            let mut sniff = pin!(sniff_h2(&mut io));
            let mut slot = Slot::default();
            let sniffed = std::future::poll_fn(|cx| match sniff.as_mut().poll(cx) {
                Poll::Pending if ctx.closing.poll(&mut slot, cx) => {
                    Poll::Ready(Err(std::io::Error::other("shutting down")))
                }
                polled => polled,
            })
            .await;
            ctx.closing.leave(&mut slot);
            match sniffed {
                Ok(h2) => h2,
                Err(e) => {
                    tracing::debug!(client = %addrs.client, error = %e, "client connection ended before a request");
                    return None;
                }
            }
        }
    };
    Some((io, svc, h2))
}

/// How long an HTTP/2 connection opened while the node drains is served
/// before its GOAWAY.
const H2_DRAINING_GRACE: Duration = Duration::from_secs(1);

/// HTTP/2 on one connection until it ends, the node shuts down, or it
/// drains.
async fn serve_http2<I, S>(io: ClientIo<I>, svc: S, activity: Arc<ConnActivity>, ctx: Arc<AcceptContext>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static + SocketProgress,
    S: ProxyService,
{
    activity.mark_http2();
    let mut stop = ctx.shutdown.clone();
    let mut draining = ctx.shared.drain_signal.subscribe();
    // A connection opened while the node drains is served for a moment
    // first: the requests it came with get their answers (and the health
    // route's 503) before the GOAWAY.
    let opened_draining = *draining.borrow_and_update();
    let mut conn = pin!(ctx.h2.serve_connection(TokioIo::new(io), ViaHyper(svc)));
    let result = tokio::select! {
        r = conn.as_mut() => r,
        // Shutdown, or the node drains (`ctl drain-node`): finish the
        // streams in flight, then close (GOAWAY).
        _ = async {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {}
                _ = async {
                    let _ = draining.wait_for(|d| *d).await;
                    if opened_draining {
                        tokio::time::sleep(H2_DRAINING_GRACE).await;
                    }
                } => {}
            }
        } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    log_end(result);
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

/// Binds every configured listener and sets up its TLS.
/// Binds every listener of `cfg`, or takes its socket from `inherited` (an
/// in-place upgrade) when the old process had one of the same name and
/// address.
pub async fn bind_all(cfg: &Config, inherited: &mut crate::upgrade::Inherited) -> Result<Vec<Listener>, ListenerError> {
    let mut out = Vec::new();
    for l in &cfg.listeners {
        let role = crate::upgrade::Role::Listener { name: l.name.clone(), bind: l.bind };
        let error = |e| ListenerError::Bind { name: l.name.clone(), addr: l.bind, error: e };
        let socket = match inherited.take_tcp(&role).map_err(error)? {
            Some(taken) => TcpListener::from_std(taken).map_err(error)?,
            None => bind(l.bind).map_err(error)?,
        };
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
            tls,
            cert_store,
            accept_proxy_protocol: l.accept_proxy_protocol,
            policy: Arc::new(ListenerPolicy {
                name: l.name.clone(),
                redirect_to_https: l.redirect_to_https,
                redirect_except: l.redirect_except.clone(),
                trusted_proxies: l.trusted_proxies.clone(),
            }),
            stats: Arc::default(),
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

/// What a TLS listener is built from: its server config, its certificate
/// store, and warnings (expiring certificates, substituted cipher suites)
/// for the caller to show.
type TlsSetup = (Arc<rustls::ServerConfig>, Arc<CertStore>, Vec<String>);

fn tls_setup(t: &TlsConfig, data_dir: &std::path::Path) -> Result<TlsSetup, crate::tls::TlsError> {
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
    Ok((config, store, all))
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

#[cfg(test)]
mod accept_tests {
    use super::*;

    #[test]
    fn accept_failures_are_told_apart_by_errno() {
        let e = std::io::Error::from_raw_os_error;
        assert_eq!(AcceptFailure::of(&e(24)), AcceptFailure::Descriptors);
        assert_eq!(AcceptFailure::of(&e(23)), AcceptFailure::Descriptors);
        assert_eq!(AcceptFailure::of(&e(105)), AcceptFailure::Memory);
        assert_eq!(AcceptFailure::of(&e(103)), AcceptFailure::Gone);
        assert_eq!(AcceptFailure::of(&e(22)), AcceptFailure::Other);
        assert_eq!(AcceptFailure::of(&std::io::Error::other("x")), AcceptFailure::Other);
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_double_to_a_second_and_reset_once_a_connection_is_accepted() {
        let emfile = std::io::Error::from_raw_os_error(24);
        let before = crate::metrics::COUNTERS.accept_errors[0].load(Ordering::Relaxed);
        let mut t = AcceptTrouble::default();
        let pauses: Vec<u64> = (0..10).map(|_| t.failed("l", &emfile).unwrap().as_millis() as u64).collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        assert!(crate::metrics::COUNTERS.accept_errors[0].load(Ordering::Relaxed) >= before + 10);
        // Logged once for the ten (the next line is due 10 s later).
        assert_eq!(t.unlogged, 9);
        tokio::time::advance(ACCEPT_LOG_EVERY).await;
        t.failed("l", &emfile);
        assert_eq!(t.unlogged, 0);
        // A client that gave up in the queue: no pause, not counted.
        assert_eq!(t.failed("l", &std::io::Error::from_raw_os_error(103)), None);
        assert_eq!(t.total, 11);
        t.accepted("l");
        assert_eq!(t.failed("l", &emfile), Some(ACCEPT_PAUSE_FIRST));
    }
}
