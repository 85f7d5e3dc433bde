//! Forwarding one request to a pool: server choice, the upstream request,
//! retries, passive health, and the WebSocket tunnel after a 101.
//!
//! Retry rules (nginx's `proxy_next_upstream`, made explicit):
//! - a failure kind listed in the pool's `retry_on` may be retried, on another
//!   server, up to `retries` more times;
//! - only when the request can be sent again: its method is idempotent, or no
//!   byte of it reached the server (connect failures);
//! - and only when its body is still here: bodies with a `Content-Length` up
//!   to [`RETRY_BODY_MAX`] are read whole first and kept; larger or chunked
//!   bodies stream and can be resent only if no part was read yet.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;

use super::affinity::Affinity;
use super::body::{BodyError, ClientBody, LimitedIncoming, ProxyBody, StreamSlot, UpstreamBody};
use super::conn::{ActiveGuard, ConnActivity};
use super::error::ProxyError;
use super::h1client::{self, SendError, ServerBody};
use super::headers::forwarded;
use super::tunnel;
use super::upstream::{ConnectError, PoolOptions, ServerPool};
use super::upstream_io::ServerIo;
use super::wire::fields::remove_hop_by_hop;
use super::wire::request::{encode_head, BodyFraming};
use super::wire::response::{Head, HeadError};
use super::wire::{report_request, report_response, RequestFault, ResponseFault};
use crate::config::PoolConfig;
use crate::health::EventLog;
use crate::metrics::{self, COUNTERS};
use crate::sessions::Sessions;
use crate::state::{Pool, Server};

/// Bodies up to this size (by `Content-Length`) are kept in memory so that a
/// failed attempt can be retried with the same body.
pub const RETRY_BODY_MAX: u64 = 64 * 1024;

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

/// Counts a request as in flight to a server until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicU32>);

impl InFlight {
    fn new(counter: &Arc<AtomicU32>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Request facts the forwarder needs besides the request itself.
pub struct Forward<'a> {
    pub pool: &'a Pool,
    pub events: &'a EventLog,
    /// Connections of each server of `pool`, by server index.
    pub upstreams: &'a [Arc<ServerPool>],
    pub client_ip: IpAddr,
    /// The connection's peer (PROXY protocol source or TCP peer).
    pub peer_ip: IpAddr,
    /// Client and local address of the connection (PROXY header to servers).
    pub client_addr: std::net::SocketAddr,
    pub local_addr: std::net::SocketAddr,
    /// `peer_ip` is a trusted proxy, so its `X-Forwarded-For` is kept.
    pub via_trusted_proxy: bool,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub proto: &'static str,
    pub client_hash: u64,
    pub max_body: u64,
    pub body_timeout: Duration,
    /// Record per-server response statistics.
    pub metrics: bool,
    pub websocket: bool,
    /// A WebSocket tunnel's limits (the route's `tunnel_timeout` and
    /// `tunnel_fin_timeout`, the pool's `close_tunnels_on_down`,
    /// `limits.tunnel_close_spread`).
    pub tunnel: tunnel::Limits,
    /// Turns true at shutdown: tunnels close.
    pub closing: &'a tokio::sync::watch::Sender<bool>,
    /// Sticky sessions of this pool, if it has them.
    pub affinity: Option<Affinity<'a>>,
    pub activity: &'a Arc<ConnActivity>,
    /// When the request's head was handled: the time of the first attempt
    /// (one clock read per request instead of one per use).
    pub started: std::time::Instant,
    /// Set the `X-Forwarded-*` headers (config `headers.forwarded`).
    pub forwarded: bool,
}

/// What a tunnel needs to keep its session alive.
struct SessionTouch {
    sessions: Arc<Sessions>,
    pool: String,
    key: String,
    server: String,
    ttl: Duration,
}

/// The request as every attempt sends it.
#[derive(Clone, Copy)]
struct Outgoing<'a> {
    /// Request line and header fields, encoded once.
    head: &'a Bytes,
    body: &'a UpstreamBody,
    /// The body is sent chunk-encoded.
    chunked: bool,
    head_request: bool,
    /// The method may be sent again (idempotent).
    may_repeat: bool,
}

/// What happened, for the access log.
pub struct Outcome {
    pub server: Option<usize>,
    pub attempts: u32,
    /// When the server's response head was read.
    pub answered: Option<std::time::Instant>,
}

fn idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

enum Failure {
    /// Try another server if the rules allow; `reached`: bytes of the request
    /// may have reached the server.
    Retryable { err: ProxyError, reached: bool, wanted: bool },
    /// Stop now with this error.
    Fatal(ProxyError),
}

impl Forward<'_> {
    pub async fn run(&self, mut req: Request<ClientBody>) -> (Result<Response<ProxyBody>, ProxyError>, Outcome) {
        let mut outcome = Outcome { server: None, attempts: 0, answered: None };
        let client_upgrade = self.websocket.then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let cfg = &self.pool.cfg;
        let session_key = match &self.affinity {
            None => None,
            Some(a) => match a.key.extract(&parts.uri, &parts.headers) {
                Ok(k) => Some(k),
                Err(e) if a.cfg.reject_missing => {
                    return (Err(ProxyError::MissingSessionId { reason: e.to_string() }), outcome)
                }
                Err(_) => None,
            },
        };

        let content_length =
            parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if content_length.is_some_and(|n| n > self.max_body) {
            return (Err(ProxyError::BodyTooLarge { limit: self.max_body }), outcome);
        }
        // Allocated only for requests with a body.
        let mut exceeded: Option<Arc<AtomicBool>> = None;
        let body = if body.is_end_stream() {
            UpstreamBody::Empty
        } else if content_length.is_some_and(|n| n <= RETRY_BODY_MAX) {
            let limited =
                LimitedIncoming::new(body, self.max_body.min(RETRY_BODY_MAX), self.body_timeout, Default::default());
            match limited.collect().await {
                Ok(collected) => {
                    self.activity.body_finished();
                    UpstreamBody::Full(Some(collected.to_bytes()))
                }
                Err(e) => return (Err(self.client_body_error(e)), outcome),
            }
        } else {
            UpstreamBody::Stream(StreamSlot::new(LimitedIncoming::new(
                body,
                self.max_body,
                self.body_timeout,
                exceeded.insert(Default::default()).clone(),
            )))
        };

        let mut headers = parts.headers;
        remove_hop_by_hop(&mut headers, self.websocket);
        if !headers.contains_key(header::HOST) {
            if let Some(a) = parts.uri.authority() {
                if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                    headers.insert(header::HOST, v);
                }
            }
        }
        let fwd = self.forwarded.then(|| {
            forwarded(
                &headers,
                self.client_ip,
                self.peer_ip,
                self.via_trusted_proxy,
                self.proto,
                headers.get(header::HOST),
            )
        });
        // The body's framing on the wire, decided here from what was parsed
        // (the length hyper or h2 checked, or the bytes kept) and written
        // as the head's only framing field; the head is encoded once for
        // every attempt.
        let framing = match (&body, content_length) {
            (UpstreamBody::Full(Some(b)), _) => BodyFraming::Length(b.len() as u64),
            (UpstreamBody::Stream(_), Some(n)) => BodyFraming::Length(n),
            (UpstreamBody::Stream(_), None) => BodyFraming::Chunked,
            // An empty body the client framed: said as a zero length (a
            // POST without any length may be refused with 411).
            (_, Some(_)) => BodyFraming::Length(0),
            (_, None) => BodyFraming::None,
        };
        let chunked = framing == BodyFraming::Chunked;
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let method = parts.method;
        let head = encode_head(&method, target, &headers, fwd.as_ref(), framing);
        drop(headers);
        let head_request = method == Method::HEAD;
        let may_repeat = idempotent(&method);

        let max_attempts = 1 + cfg.retries as usize;
        let mut tried = [usize::MAX; 17];
        let mut last_err: Option<ProxyError> = None;
        for attempt in 0..max_attempts {
            let attempt_started = if attempt == 0 { self.started } else { std::time::Instant::now() };
            let now = crate::clock::ms_at(attempt_started);
            let pinned = match (&self.affinity, &session_key) {
                (Some(a), Some(k)) if attempt == 0 => a.server_for(self.pool, k, now),
                _ => None,
            };
            let Some(idx) = pinned.or_else(|| self.pool.select(self.client_hash, &tried[..attempt], now)) else {
                break;
            };
            tried[attempt] = idx;
            outcome.server = Some(idx);
            outcome.attempts = attempt as u32 + 1;
            if attempt > 0 {
                metrics::inc(&COUNTERS.retries);
            }
            let server = &self.pool.servers[idx];
            let in_flight = InFlight::new(&server.state.in_flight);
            let request = Outgoing { head: &head, body: &body, chunked, head_request, may_repeat };
            let result = self.exchange(idx, &request, attempt_started).await;
            let is_last = attempt + 1 == max_attempts;
            let failure = match result {
                Ok((resp, io, buf)) => {
                    let status = resp.parts.status.as_u16();
                    if self.metrics {
                        let answered = std::time::Instant::now();
                        outcome.answered = Some(answered);
                        let us = answered.saturating_duration_since(attempt_started).as_micros() as u64;
                        server.state.stats.record_response(status, us);
                    }
                    if cfg.retry_on.status(status) {
                        if server.state.passive.record_failure(crate::clock::now_ms()) {
                            self.passive_down(server, &format!("answered {status}"));
                        }
                        let resendable = may_repeat && !matches!(body, UpstreamBody::Stream(_));
                        if resendable
                            && !is_last
                            && self.pool.select(self.client_hash, &tried[..=attempt], now).is_some()
                        {
                            tracing::warn!(pool = %cfg.name, server = %server.name, status, "retrying: server answered with a status listed in retry_on");
                            continue;
                        }
                    } else {
                        server.state.passive.record_success();
                    }
                    let touch = match (&self.affinity, session_key) {
                        (Some(a), Some(key)) => {
                            if attempt > 0 {
                                a.moved(self.pool, &key, idx);
                            }
                            Some(SessionTouch {
                                sessions: a.sessions.clone(),
                                pool: cfg.name.clone(),
                                key,
                                server: server.name.clone(),
                                ttl: a.cfg.ttl,
                            })
                        }
                        _ => None,
                    };
                    return (Ok(self.respond(resp, io, buf, in_flight, client_upgrade, touch, idx)), outcome);
                }
                Err(_) if exceeded.as_ref().is_some_and(|e| e.load(Ordering::Relaxed)) => {
                    Failure::Fatal(ProxyError::BodyTooLarge { limit: self.max_body })
                }
                Err(f) => f,
            };
            drop(in_flight);
            match failure {
                Failure::Fatal(err) => return (Err(err), outcome),
                Failure::Retryable { err, reached, wanted } => {
                    metrics::inc(&COUNTERS.upstream_errors);
                    server.state.stats.record_error();
                    if server.state.passive.record_failure(crate::clock::now_ms()) {
                        self.passive_down(server, err.kind());
                    }
                    let body_here = match &body {
                        UpstreamBody::Stream(s) => !s.touched(),
                        _ => true,
                    };
                    let resendable = body_here && (may_repeat || !reached);
                    tracing::warn!(pool = %cfg.name, server = %server.name, error = %err, attempt = attempt + 1, "upstream attempt failed");
                    last_err = Some(err);
                    if !(wanted && resendable) {
                        break;
                    }
                }
            }
        }
        let err = last_err.unwrap_or_else(|| {
            metrics::inc(&COUNTERS.no_server);
            ProxyError::NoServer { pool: cfg.name.clone() }
        });
        (Err(err), outcome)
    }

    /// One attempt on server `idx`: a pooled connection if one is ready,
    /// else a new one. A pooled connection the server closed before taking
    /// a byte, or closed without answering a request that may be sent
    /// again, is replaced once by a new connection: the server closed an
    /// idle connection, which is not its failure.
    async fn exchange(
        &self,
        idx: usize,
        request: &Outgoing<'_>,
        sent: std::time::Instant,
    ) -> Result<(Head, ServerIo, BytesMut), Failure> {
        let Outgoing { head, body, chunked, head_request, may_repeat } = *request;
        let cfg = &self.pool.cfg;
        let name = &self.pool.servers[idx].name;
        let upstream = &self.upstreams[idx];
        let (mut io, mut pooled) = match upstream.take_idle(sent) {
            Some(io) => (io, true),
            None => (
                upstream.connect(self.client_addr, self.local_addr).await.map_err(|e| connect_failure(e, name, cfg))?,
                false,
            ),
        };
        let resendable = !matches!(body, UpstreamBody::Stream(_));
        loop {
            let mut buf = BytesMut::new();
            let mut attempt_body = body.again();
            match h1client::write_request(&mut io, head, &mut attempt_body, chunked, &mut buf).await {
                Ok(()) => {}
                Err(SendError::Io { written: false, .. }) if pooled => {
                    io = upstream
                        .connect(self.client_addr, self.local_addr)
                        .await
                        .map_err(|e| connect_failure(e, name, cfg))?;
                    pooled = false;
                    continue;
                }
                Err(SendError::Io { err, written }) => return Err(send_failure(err, written, name, cfg)),
                Err(SendError::Body(e)) => return Err(self.body_failure(e)),
            }
            let read = h1client::read_head(&mut io, &mut buf, head_request);
            // read_timeout runs from when the server has the whole request:
            // the time the client took to send its body is not the
            // server's. Without a body that is when the attempt started
            // (one clock read less per request).
            let from = match body {
                UpstreamBody::Empty => sent,
                _ => std::time::Instant::now(),
            };
            let deadline = tokio::time::Instant::from_std(from) + cfg.read_timeout;
            match tokio::time::timeout_at(deadline, read).await {
                Ok(Ok(mut h)) => {
                    if let Some(fault) = h.distrust {
                        report_response(fault, name, &"answer taken, connection not reused");
                    }
                    if let UpstreamBody::Stream(s) = body {
                        // Answered before the whole body was sent: the
                        // connection is out of step.
                        h.reusable &= s.finished();
                    }
                    return Ok((h, io, buf));
                }
                Ok(Err(HeadError::Closed)) if pooled && resendable && may_repeat => {
                    io = upstream
                        .connect(self.client_addr, self.local_addr)
                        .await
                        .map_err(|e| connect_failure(e, name, cfg))?;
                    pooled = false;
                }
                Ok(Err(e)) => {
                    if let Some(fault) = e.fault() {
                        report_response(fault, name, &e);
                    }
                    return Err(head_failure(e, name, cfg));
                }
                Err(_) => {
                    return Err(Failure::Retryable {
                        err: ProxyError::Timeout {
                            server: name.clone(),
                            timeout_ms: cfg.read_timeout.as_millis() as u64,
                        },
                        reached: true,
                        wanted: cfg.retry_on.timeout,
                    })
                }
            }
        }
    }

    fn passive_down(&self, server: &Server, reason: &str) {
        let cfg = &self.pool.cfg;
        tracing::warn!(pool = %cfg.name, server = %server.name, fail_timeout = ?cfg.fail_timeout, reason, "server out after max_fails failures");
        self.events.push(
            "passive",
            Some(&cfg.name),
            Some(&server.name),
            format!("out for {:?} after {} failures (last: {reason})", cfg.fail_timeout, cfg.max_fails),
        );
    }

    /// Turns a server's response into the client's: hop-by-hop headers go,
    /// the body streams through, and a 101 starts the tunnel.
    #[allow(clippy::too_many_arguments)]
    fn respond(
        &self,
        head: Head,
        io: ServerIo,
        buf: BytesMut,
        in_flight: InFlight,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
        touch: Option<SessionTouch>,
        idx: usize,
    ) -> Response<ProxyBody> {
        if head.parts.status == StatusCode::SWITCHING_PROTOCOLS {
            // An upgraded connection never goes back to the pool.
            if let Some(client_upgrade) = client_upgrade {
                return self.tunnel(
                    head.parts,
                    h1client::Upgraded::new(io, buf),
                    in_flight,
                    client_upgrade,
                    touch,
                    idx,
                );
            }
            // A switch nobody asked for: the connection is dropped (never
            // pooled) and the client gets a 502.
            drop(io);
            report_response(
                ResponseFault::UnexpectedUpgrade,
                &self.pool.servers[idx].name,
                &"101 Switching Protocols to a request without Upgrade",
            );
            drop(in_flight);
            return text_response(StatusCode::BAD_GATEWAY, "502 Bad Gateway: the server failed to answer\n");
        }
        let body = ServerBody::new(io, self.upstreams[idx].clone(), &head, buf, self.pool.cfg.read_timeout);
        let mut parts = head.parts;
        if head.hop_by_hop_left {
            remove_hop_by_hop(&mut parts.headers, false);
        }
        Response::from_parts(parts, ProxyBody::upstream(body).with_in_flight(in_flight))
    }

    fn tunnel(
        &self,
        mut parts: http::response::Parts,
        server: h1client::Upgraded,
        in_flight: InFlight,
        client_upgrade: hyper::upgrade::OnUpgrade,
        touch: Option<SessionTouch>,
        idx: usize,
    ) -> Response<ProxyBody> {
        let busy = ActiveGuard::new(self.activity);
        let pool = self.pool.cfg.name.clone();
        let state = self.pool.servers[idx].state.clone();
        let limits = self.tunnel;
        let closing = self.closing.subscribe();
        tokio::spawn(async move {
            let _busy = busy;
            let _in_flight = in_flight;
            COUNTERS.websocket_tunnels.fetch_add(1, Ordering::Relaxed);
            let _tunnel = TunnelCount;
            match client_upgrade.await {
                Ok(client) => {
                    let touch_every = touch.as_ref().map_or(Duration::from_secs(3600), |t| t.ttl / 4);
                    let refresh = || {
                        if let Some(t) = &touch {
                            let now = crate::sessions::unix_now_ms();
                            if let crate::sessions::Touch::Refreshed(rec) =
                                t.sessions.table.touch(&t.pool, &t.key, &t.server, t.ttl, now)
                            {
                                t.sessions.persist(rec);
                            }
                        }
                    };
                    let (end, up, down) =
                        tunnel::run(client, server, limits, &state, closing, touch_every, refresh).await;
                    tracing::debug!(%pool, server = %state.name, ?end, up, down, "websocket tunnel ended");
                }
                Err(e) => tracing::warn!(%pool, error = %e, "websocket upgrade failed"),
            }
        });
        let keep: HeaderMap = parts.headers.clone();
        remove_hop_by_hop(&mut parts.headers, true);
        if let Some(v) = keep.get(header::UPGRADE) {
            parts.headers.insert(header::UPGRADE, v.clone());
        }
        Response::from_parts(parts, ProxyBody::empty())
    }
}

/// Counts an open WebSocket tunnel until dropped.
struct TunnelCount;

impl Drop for TunnelCount {
    fn drop(&mut self) {
        COUNTERS.websocket_tunnels.fetch_sub(1, Ordering::Relaxed);
    }
}

fn connect_failure(e: ConnectError, server: &str, cfg: &PoolConfig) -> Failure {
    match e {
        ConnectError::Timeout(d) => Failure::Retryable {
            err: ProxyError::Timeout { server: server.to_string(), timeout_ms: d.as_millis() as u64 },
            reached: false,
            wanted: cfg.retry_on.timeout,
        },
        other => Failure::Retryable {
            err: ProxyError::Connect { server: server.to_string(), detail: other.to_string() },
            reached: false,
            wanted: cfg.retry_on.error,
        },
    }
}

/// Writing the request failed; `written`: some of it reached the server.
fn send_failure(err: std::io::Error, written: bool, server: &str, cfg: &PoolConfig) -> Failure {
    if err.kind() == std::io::ErrorKind::TimedOut {
        // send_timeout on the socket: the server stopped reading our request.
        return Failure::Retryable {
            err: ProxyError::Timeout { server: server.to_string(), timeout_ms: cfg.send_timeout.as_millis() as u64 },
            reached: written,
            wanted: cfg.retry_on.timeout,
        };
    }
    Failure::Retryable {
        err: ProxyError::Upstream { server: server.to_string(), detail: format!("sending the request: {err}") },
        reached: written,
        wanted: cfg.retry_on.error,
    }
}

impl Forward<'_> {
    /// The client's body failed while it was being sent: the client's
    /// fault, never retried. A body that does not decode is counted as
    /// malformed.
    fn body_failure(&self, e: BodyError) -> Failure {
        Failure::Fatal(self.client_body_error(e))
    }

    fn client_body_error(&self, e: BodyError) -> ProxyError {
        match e {
            BodyError::ClientTimeout(d) => ProxyError::ClientTimeout { after: d },
            BodyError::TooLarge(_) => ProxyError::BodyTooLarge { limit: self.max_body },
            other => {
                let detail = crate::model::error_chain(&other);
                if let BodyError::Client(e) = &other {
                    if !e.is_incomplete_message() && !e.is_closed() && !e.is_canceled() && !e.is_timeout() {
                        report_request(RequestFault::Body, Some(self.client_ip), &detail);
                    }
                }
                ProxyError::ClientBody { detail }
            }
        }
    }
}

/// Reading the response head failed.
fn head_failure(e: HeadError, server: &str, cfg: &PoolConfig) -> Failure {
    match e {
        HeadError::Invalid { detail, .. } => Failure::Retryable {
            err: ProxyError::InvalidResponse { server: server.to_string(), detail },
            reached: true,
            wanted: cfg.retry_on.invalid_response || cfg.retry_on.error,
        },
        other => Failure::Retryable {
            err: ProxyError::Upstream { server: server.to_string(), detail: other.to_string() },
            reached: true,
            wanted: cfg.retry_on.error,
        },
    }
}

/// A fixed plain-text response.
pub fn text_response(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}
