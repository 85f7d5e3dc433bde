//! Connections to servers: for each server a small stack of idle
//! connections, reused most-recently-idle first, up to the pool's
//! `keepalive`, for at most `keepalive_timeout`. An idle connection is only
//! its socket: the request path speaks HTTP/1.1 on it itself
//! ([`super::h1client`]), so nothing else (no task, no buffer) is kept while
//! it waits. Connections the server closed while idle are noticed when
//! taken (without a system call in the common case) and by a sweep.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::server_io::{ServerIo, ServerStream};
use crate::config::PoolConfig;

/// How connections to one server are made and kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOptions {
    /// Idle connections kept.
    pub keepalive: usize,
    pub keepalive_timeout: Duration,
    pub connect_timeout: Duration,
    pub send_timeout: Duration,
    /// Send a PROXY protocol header first; such a connection carries one
    /// client only, so it is never pooled.
    pub proxy_protocol: Option<crate::config::SendProxyProtocol>,
}

/// Connection settings of a pool's servers.
pub fn pool_options(cfg: &PoolConfig) -> PoolOptions {
    PoolOptions {
        keepalive: cfg.keepalive,
        keepalive_timeout: cfg.keepalive_timeout,
        connect_timeout: cfg.connect_timeout,
        send_timeout: cfg.send_timeout,
        proxy_protocol: cfg.send_proxy_protocol,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("connect: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
}

struct Idle {
    io: ServerIo,
    since: Instant,
}

/// TLS to a server: the client config and the name to verify.
pub struct UpstreamTls {
    pub config: std::sync::Arc<rustls::ClientConfig>,
    pub server_name: rustls_pki_types::ServerName<'static>,
    /// The settings it was built from (to tell whether a reload changed them).
    pub source: crate::config::UpstreamTlsConfig,
}

/// TLS settings for connections to `addr` of pool `p`. Settings that cannot
/// be built (the CA file went missing after validation) make every
/// connection fail with the reason, never fall back to plain text.
pub fn upstream_tls(p: &crate::config::PoolConfig, addr: std::net::SocketAddr) -> Option<Result<UpstreamTls, String>> {
    let t = p.tls.as_ref()?;
    crate::tls::install_crypto_provider();
    let opts = crate::tls::UpstreamTlsOptions {
        ca_file: t.ca_file.clone(),
        insecure_skip_verify: t.insecure_skip_verify,
        alpn: vec![b"http/1.1".to_vec()],
    };
    let config = match crate::tls::upstream_config(&opts) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(pool = %p.name, "upstream TLS unusable, connections will fail: {e}");
            return Some(Err(format!("upstream TLS unusable: {e}")));
        }
    };
    let server_name = match &t.server_name {
        Some(n) => match rustls_pki_types::ServerName::try_from(n.clone()) {
            Ok(n) => n,
            Err(e) => return Some(Err(format!("bad server_name {n:?}: {e}"))),
        },
        None => rustls_pki_types::ServerName::IpAddress(addr.ip().into()),
    };
    Some(Ok(UpstreamTls { config, server_name, source: t.clone() }))
}

/// The connections to one server.
pub struct ServerPool {
    addr: SocketAddr,
    opts: PoolOptions,
    /// TLS to the server; `Err` when its settings could not be built: then
    /// every connection fails with that reason (never plain text instead).
    tls: Option<Result<UpstreamTls, String>>,
    idle: Mutex<Vec<Idle>>,
    /// The server's health, for a pool that closes a down server's
    /// connections (`close_tunnels_on_down`): while the checks call it
    /// down, the sweeper drops its idle connections (a hung server keeps
    /// nothing of ours open). Set at each config load.
    health: Mutex<Option<std::sync::Weak<crate::health::ServerState>>>,
}

impl ServerPool {
    pub fn new(addr: SocketAddr, opts: PoolOptions, tls: Option<Result<UpstreamTls, String>>) -> Arc<Self> {
        let pool = Arc::new(ServerPool { addr, opts, tls, idle: Mutex::new(Vec::new()), health: Mutex::new(None) });
        if opts.keepalive > 0 && opts.proxy_protocol.is_none() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(sweep(Arc::downgrade(&pool)));
            }
        }
        pool
    }

    /// The TLS settings this pool connects with.
    pub fn tls_source(&self) -> Option<&crate::config::UpstreamTlsConfig> {
        self.tls.as_ref().and_then(|t| t.as_ref().ok()).map(|t| &t.source)
    }

    pub fn options(&self) -> PoolOptions {
        self.opts
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// An idle connection that is still open, if there is one (`now`: the
    /// caller's reading of the clock).
    pub fn take_idle(&self, now: Instant) -> Option<ServerIo> {
        if self.opts.proxy_protocol.is_some() {
            return None;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(c) = idle.pop() {
            if now.saturating_duration_since(c.since) < self.opts.keepalive_timeout && c.io.idle_and_open() {
                return Some(c.io);
            }
            // Closed by the server, or idle too long: dropping it closes it.
        }
        None
    }

    /// A new connection; `client` and `local` (the client's address and the
    /// address it connected to) go into the PROXY header when one is sent.
    pub async fn connect(&self, client: SocketAddr, local: SocketAddr) -> Result<ServerIo, ConnectError> {
        self.connect_for(Some((client, local))).await
    }

    /// A new connection made by the node itself (a health check): a PROXY
    /// header carries the connection's own addresses, as HAProxy's checks do.
    pub async fn connect_own(&self) -> Result<ServerIo, ConnectError> {
        self.connect_for(None).await
    }

    async fn connect_for(&self, addrs: Option<(SocketAddr, SocketAddr)>) -> Result<ServerIo, ConnectError> {
        let mut stream =
            match tokio::time::timeout(self.opts.connect_timeout, tokio::net::TcpStream::connect(self.addr)).await {
                Ok(r) => r?,
                Err(_) => return Err(ConnectError::Timeout(self.opts.connect_timeout)),
            };
        let _ = stream.set_nodelay(true);
        if let Some(version) = self.opts.proxy_protocol {
            use tokio::io::AsyncWriteExt;
            let (client, local) = match addrs {
                Some(a) => a,
                None => (stream.local_addr()?, stream.peer_addr()?),
            };
            let header = match version {
                crate::config::SendProxyProtocol::V1 => crate::proxy_protocol::encode_v1(client, local),
                crate::config::SendProxyProtocol::V2 => crate::proxy_protocol::encode_v2(client, local),
            };
            match tokio::time::timeout(self.opts.send_timeout, stream.write_all(&header)).await {
                Ok(r) => r?,
                Err(_) => return Err(ConnectError::Timeout(self.opts.send_timeout)),
            }
        }
        let stream = match &self.tls {
            None => ServerStream::Plain(stream),
            Some(Err(reason)) => {
                return Err(ConnectError::Tls(std::io::Error::other(reason.clone())));
            }
            Some(Ok(tls)) => {
                let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
                let handshake = connector.connect(tls.server_name.clone(), stream);
                match tokio::time::timeout(self.opts.connect_timeout, handshake).await {
                    Ok(Ok(s)) => ServerStream::Tls(Box::new(s)),
                    Ok(Err(e)) => return Err(ConnectError::Tls(e)),
                    Err(_) => return Err(ConnectError::Timeout(self.opts.connect_timeout)),
                }
            }
        };
        Ok(ServerIo::new(stream, self.opts.send_timeout))
    }

    /// A connection whose response was read to its end, ready for another
    /// request.
    pub fn put_back(&self, io: ServerIo) {
        if self.opts.keepalive == 0 || self.opts.proxy_protocol.is_some() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= self.opts.keepalive {
            // Keep the most recent ones: the oldest is the likeliest to have
            // been closed by the server.
            idle.remove(0);
        }
        idle.push(Idle { io, since: Instant::now() });
    }

    /// Follow `state` (the server's health) to close idle connections
    /// while it is down; `None`: keep them.
    pub fn follow_health(&self, state: Option<&Arc<crate::health::ServerState>>) {
        *self.health.lock().unwrap_or_else(|e| e.into_inner()) = state.map(Arc::downgrade);
    }

    /// Closes idle connections that timed out or that the server closed,
    /// and all of them while the followed health says down.
    fn sweep_once(&self) {
        let down = self
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(std::sync::Weak::upgrade)
            .is_some_and(|s| !s.is_up());
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if down {
            idle.clear();
            return;
        }
        let timeout = self.opts.keepalive_timeout;
        idle.retain(|c| c.since.elapsed() < timeout && c.io.idle_and_open());
    }

    /// Idle connections now (for tests and status).
    pub fn idle_count(&self) -> usize {
        self.idle.lock().map(|i| i.len()).unwrap_or(0)
    }
}

/// Every second (or `keepalive_timeout` if shorter), closes the idle
/// connections that expired or were closed by the server, so they do not
/// linger in CLOSE_WAIT; ends with its pool.
async fn sweep(pool: std::sync::Weak<ServerPool>) {
    let every = match pool.upgrade() {
        Some(p) => p.opts.keepalive_timeout.clamp(Duration::from_millis(100), Duration::from_secs(1)),
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match pool.upgrade() {
            Some(p) => p.sweep_once(),
            None => return,
        }
    }
}
