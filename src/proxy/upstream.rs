//! Connections to servers: for each server a small stack of idle HTTP/1.1
//! connections (hyper's low-level client, one task per connection), reused
//! most-recently-idle first, up to the pool's `keepalive`, for at most
//! `keepalive_timeout`.
//!
//! Written for the request path instead of hyper-util's generic pooled
//! client: no per-request boxing, no pool-key hashing, origin-form URIs, and
//! a request that never reached the connection is handed back
//! (`try_send_request`), so "no byte was sent" is known exactly.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::{self, SendRequest};

use super::body::UpstreamBody;
use super::upstream_io::{ServerIo, ServerStream};

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

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("connect: {0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP handshake: {0}")]
    Handshake(hyper::Error),
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
}

struct Idle {
    sender: SendRequest<UpstreamBody>,
    since: Instant,
}

/// TLS to a server: the client config and the name to verify.
pub struct UpstreamTls {
    pub config: std::sync::Arc<rustls::ClientConfig>,
    pub server_name: rustls_pki_types::ServerName<'static>,
    /// The settings it was built from (to tell whether a reload changed them).
    pub source: crate::config::UpstreamTlsConfig,
}

/// The connections to one server.
pub struct ServerPool {
    addr: SocketAddr,
    opts: PoolOptions,
    /// TLS to the server; `Err` when its settings could not be built: then
    /// every connection fails with that reason (never plain text instead).
    tls: Option<Result<UpstreamTls, String>>,
    idle: Mutex<Vec<Idle>>,
}

/// A connection taken from the pool; it goes back when dropped (after the
/// response body is done), unless it was upgraded or closed.
pub struct Lease {
    sender: Option<SendRequest<UpstreamBody>>,
    pool: Arc<ServerPool>,
}

impl ServerPool {
    pub fn new(addr: SocketAddr, opts: PoolOptions, tls: Option<Result<UpstreamTls, String>>) -> Arc<Self> {
        Arc::new(ServerPool { addr, opts, tls, idle: Mutex::new(Vec::new()) })
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

    /// An idle connection that is ready, if there is one.
    pub fn take_idle(self: &Arc<Self>) -> Option<Lease> {
        if self.opts.proxy_protocol.is_some() {
            return None;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(c) = idle.pop() {
            if c.sender.is_ready() && c.since.elapsed() < self.opts.keepalive_timeout {
                return Some(Lease { sender: Some(c.sender), pool: self.clone() });
            }
            // Closed, busy finishing a response, or idle too long: drop it
            // (dropping the sender closes the connection).
        }
        None
    }

    /// A new connection; `client` and `local` (the client's address and the
    /// address it connected to) go into the PROXY header when one is sent.
    pub async fn connect(self: &Arc<Self>, client: SocketAddr, local: SocketAddr) -> Result<Lease, ConnectError> {
        let mut stream =
            match tokio::time::timeout(self.opts.connect_timeout, tokio::net::TcpStream::connect(self.addr)).await {
                Ok(r) => r?,
                Err(_) => return Err(ConnectError::Timeout(self.opts.connect_timeout)),
            };
        let _ = stream.set_nodelay(true);
        if let Some(version) = self.opts.proxy_protocol {
            use tokio::io::AsyncWriteExt;
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
        let io = ServerIo::new(stream, self.opts.send_timeout);
        let (sender, conn) = http1::Builder::new().handshake(io).await.map_err(ConnectError::Handshake)?;
        let addr = self.addr;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(server = %addr, error = %e, "server connection ended with an error");
            }
        });
        Ok(Lease { sender: Some(sender), pool: self.clone() })
    }

    fn put_back(&self, sender: SendRequest<UpstreamBody>) {
        if sender.is_closed() || self.opts.keepalive == 0 || self.opts.proxy_protocol.is_some() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= self.opts.keepalive {
            // Keep the most recent ones: the oldest is the likeliest to have
            // been closed by the server.
            idle.remove(0);
        }
        idle.push(Idle { sender, since: Instant::now() });
    }

    /// Idle connections now (for tests and status).
    pub fn idle_count(&self) -> usize {
        self.idle.lock().map(|i| i.len()).unwrap_or(0)
    }
}

impl Lease {
    pub fn sender(&mut self) -> &mut SendRequest<UpstreamBody> {
        // Present from construction until drop or `detach`.
        self.sender.as_mut().expect("lease holds a sender")
    }

    /// The connection will not be reused (upgraded to a tunnel, or failed).
    pub fn detach(mut self) {
        self.sender = None;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(s) = self.sender.take() {
            self.pool.put_back(s);
        }
    }
}
