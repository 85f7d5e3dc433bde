//! Listeners: accept loops, the connection cap, hyper's HTTP/1.1 + HTTP/2
//! server per connection, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

use super::conn::{ClientIo, ConnActivity};
use super::service::{handle, ConnInfo, Shared};
use crate::config::Limits;
use crate::metrics::COUNTERS;

/// Connection-level settings, copied out of the config at start.
#[derive(Clone)]
pub struct ServeOptions {
    pub limits: Limits,
}

/// Runs every listener until `shutdown` turns true, then waits up to
/// `limits.shutdown_timeout` for in-flight requests to finish.
pub async fn serve(
    listeners: Vec<(String, TcpListener)>,
    shared: Arc<Shared>,
    opts: ServeOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    // Every connection task holds a clone of `drain_tx`; when all are gone,
    // `drain_rx.recv()` returns None (mini-redis's shutdown pattern).
    let (drain_tx, mut drain_rx) = mpsc::channel::<()>(1);
    let conns = Arc::new(Semaphore::new(opts.limits.max_connections));
    let builder = Arc::new(http_builder(&opts.limits));
    let mut tasks = Vec::new();
    for (name, listener) in listeners {
        let accept = accept_loop(
            name,
            listener,
            shared.clone(),
            opts.limits.clone(),
            conns.clone(),
            builder.clone(),
            drain_tx.clone(),
            shutdown.clone(),
        );
        tasks.push(tokio::spawn(accept));
    }
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
    for t in &tasks {
        t.abort();
    }
    drop(drain_tx);
    let open = COUNTERS.active_connections.load(Ordering::Relaxed);
    tracing::info!(open_connections = open, deadline = ?opts.limits.shutdown_timeout, "stopped accepting; draining");
    match tokio::time::timeout(opts.limits.shutdown_timeout, drain_rx.recv()).await {
        Ok(_) => tracing::info!("all connections closed"),
        Err(_) => tracing::warn!("drain deadline reached; closing the remaining connections"),
    }
}

fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1().keep_alive(true).max_buf_size(limits.max_header_size).header_read_timeout(None).timer(TokioTimer::new());
    b.http2().max_header_list_size(limits.max_header_size as u32).max_concurrent_streams(256).timer(TokioTimer::new());
    b
}

#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    name: String,
    listener: TcpListener,
    shared: Arc<Shared>,
    limits: Limits,
    conns: Arc<Semaphore>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    drain: mpsc::Sender<()>,
    shutdown: watch::Receiver<bool>,
) {
    loop {
        // Wait for room before accepting: excess clients queue in the
        // kernel's backlog instead of being accepted and starved.
        let Ok(permit) = conns.clone().acquire_owned().await else { return };
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if *shutdown.borrow() {
            return;
        }
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(ConnActivity::default());
        let io = ClientIo::new(stream, activity.clone(), limits.header_timeout, limits.keepalive_timeout);
        let info = Arc::new(ConnInfo { peer, activity });
        let shared = shared.clone();
        let svc = service_fn(move |req| handle(shared.clone(), info.clone(), req));
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc).into_owned();
        let drain = drain.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            COUNTERS.active_connections.fetch_add(1, Ordering::Relaxed);
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
                tracing::debug!(client = %peer, error = %e, "client connection ended with an error");
            }
            COUNTERS.active_connections.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
            drop(drain);
        });
    }
}

/// Binds every configured listener, failing with the address that could not
/// be bound.
pub async fn bind_all(cfg: &crate::config::Config) -> Result<Vec<(String, TcpListener)>, BindError> {
    let mut out = Vec::new();
    for l in &cfg.listeners {
        let listener = bind(l.bind).map_err(|e| BindError { name: l.name.clone(), addr: l.bind, source: e })?;
        out.push((l.name.clone(), listener));
    }
    Ok(out)
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} (listener {name}): {source}")]
pub struct BindError {
    pub name: String,
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}
