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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;

use super::affinity::Affinity;
use super::failure::{connect_failure, head_failure, read_timeout, send_failure, Failure};
use super::h1client::{self, SendError, ServerBody};
use super::pool::ServerPool;
use super::response::{text_response, InFlight, ProxyBody};
use super::server_io::ServerIo;
use super::tunnel;
use super::tunnel::SessionTouch;
use crate::health::EventLog;
use crate::metrics::{self, COUNTERS};
use crate::proxy::activity::ConnActivity;
use crate::proxy::body::{BodyError, ClientBody, LimitedIncoming, StreamSlot, UpstreamBody};
use crate::proxy::error::ProxyError;
use crate::proxy::headers::forwarded;
use crate::proxy::wire::fields::remove_hop_by_hop;
use crate::proxy::wire::request::{encode_head, BodyFraming};
use crate::proxy::wire::response::{Head, HeadError};
use crate::proxy::wire::{report_request, report_response, RequestFault, ResponseFault};
use crate::state::{Pool, Server};

/// Bodies up to this size (by `Content-Length`) are kept in memory so that a
/// failed attempt can be retried with the same body.
pub const RETRY_BODY_MAX: u64 = 64 * 1024;

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
    /// The node's orders to its tunnels (shutdown, shedding).
    pub tunnels: &'a Arc<tunnel::Orders>,
    /// Sticky sessions of this pool, if it has them.
    pub affinity: Option<Affinity<'a>>,
    pub activity: &'a Arc<ConnActivity>,
    /// Takes the client's connection out of hyper for a tunnel.
    pub unwrap_client: tunnel::UnwrapClient,
    /// When the request's head was handled: the time of the first attempt
    /// (one clock read per request instead of one per use).
    pub started: std::time::Instant,
    /// Set the `X-Forwarded-*` headers (config `headers.forwarded`).
    pub forwarded: bool,
}

/// The request head, encoded once, and what the attempts need to know of
/// the request.
struct Encoded {
    /// Request line and header fields.
    head: Bytes,
    /// The body is sent chunk-encoded.
    chunked: bool,
    head_request: bool,
    /// The method may be sent again (idempotent).
    may_repeat: bool,
}

/// The request as every attempt sends it.
#[derive(Clone, Copy)]
struct Outgoing<'a> {
    encoded: &'a Encoded,
    body: &'a UpstreamBody,
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

impl Forward<'_> {
    /// Forwards the request: its session key and body first, its head
    /// encoded once, then one attempt per server until one answers or the
    /// retry rules say stop.
    pub async fn run(&self, mut req: Request<ClientBody>) -> (Result<Response<ProxyBody>, ProxyError>, Outcome) {
        let mut outcome = Outcome { server: None, attempts: 0, answered: None };
        let client_upgrade = self.websocket.then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let mut session_key = match self.session_key(&parts) {
            Ok(key) => key,
            Err(e) => return (Err(e), outcome),
        };
        let content_length =
            parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if content_length.is_some_and(|n| n > self.max_body) {
            return (Err(ProxyError::BodyTooLarge { limit: self.max_body }), outcome);
        }
        // Allocated only for requests with a streamed body.
        let mut exceeded: Option<Arc<AtomicBool>> = None;
        let body = match self.request_body(body, content_length, &mut exceeded).await {
            Ok(body) => body,
            Err(e) => return (Err(e), outcome),
        };
        let encoded = self.encode_request(parts, &body, content_length);
        let request = Outgoing { encoded: &encoded, body: &body };

        let cfg = &self.pool.cfg;
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
                // Counted against the server whose attempt failed.
                metrics::inc(&self.pool.servers[tried[attempt - 1]].state.stats.retries);
            }
            let server = &self.pool.servers[idx];
            let in_flight = InFlight::new(&server.state.in_flight);
            let failure = match self.exchange(idx, &request, attempt_started).await {
                Ok((resp, io, buf)) => {
                    let status = resp.parts.status.as_u16();
                    self.record_answer(server, status, attempt_started, &mut outcome);
                    let last = attempt + 1 == max_attempts;
                    if self.retry_status(server, status, &request, last, &tried[..=attempt], now) {
                        continue;
                    }
                    let touch = self.session_touch(session_key.take(), attempt, idx);
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
                    let again = self.attempt_failed(server, &err, attempt, &request, reached, wanted);
                    last_err = Some(err);
                    if !again {
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

    /// The request's session key for a pool with affinity; a request
    /// without one is refused if the pool says `reject_missing`.
    fn session_key(&self, parts: &http::request::Parts) -> Result<Option<String>, ProxyError> {
        let Some(a) = &self.affinity else { return Ok(None) };
        match a.key.extract(&parts.uri, &parts.headers) {
            Ok(k) => Ok(Some(k)),
            Err(e) if a.cfg.reject_missing => Err(ProxyError::MissingSessionId { reason: e.to_string() }),
            Err(_) => Ok(None),
        }
    }

    /// The body as every attempt sends it: none, read whole (a length up to
    /// [`RETRY_BODY_MAX`], so that a retry can resend it), or streamed
    /// (`exceeded` then tells whether it went over `max_body`).
    async fn request_body(
        &self,
        body: ClientBody,
        content_length: Option<u64>,
        exceeded: &mut Option<Arc<AtomicBool>>,
    ) -> Result<UpstreamBody, ProxyError> {
        if body.is_end_stream() {
            return Ok(UpstreamBody::Empty);
        }
        if content_length.is_some_and(|n| n <= RETRY_BODY_MAX) {
            let limited =
                LimitedIncoming::new(body, self.max_body.min(RETRY_BODY_MAX), self.body_timeout, Default::default());
            return match limited.collect().await {
                Ok(collected) => {
                    self.activity.body_finished();
                    Ok(UpstreamBody::Full(Some(collected.to_bytes())))
                }
                Err(e) => Err(self.client_body_error(e)),
            };
        }
        let exceeded = exceeded.insert(Default::default()).clone();
        Ok(UpstreamBody::Stream(StreamSlot::new(LimitedIncoming::new(
            body,
            self.max_body,
            self.body_timeout,
            exceeded,
        ))))
    }

    /// The request head as every attempt sends it, encoded once: the
    /// client's fields without hop-by-hop ones, `Host` (from the target's
    /// authority if the client sent none), the `X-Forwarded-*` fields, and
    /// one framing field decided here from what was parsed (the length
    /// hyper or h2 checked, or the bytes kept), never copied.
    fn encode_request(&self, parts: http::request::Parts, body: &UpstreamBody, content_length: Option<u64>) -> Encoded {
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
        let framing = match (body, content_length) {
            (UpstreamBody::Full(Some(b)), _) => BodyFraming::Length(b.len() as u64),
            (UpstreamBody::Stream(_), Some(n)) => BodyFraming::Length(n),
            (UpstreamBody::Stream(_), None) => BodyFraming::Chunked,
            // An empty body the client framed: said as a zero length (a
            // POST without any length may be refused with 411).
            (_, Some(_)) => BodyFraming::Length(0),
            (_, None) => BodyFraming::None,
        };
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let method = parts.method;
        Encoded {
            head: encode_head(&method, target, &headers, fwd.as_ref(), framing),
            chunked: framing == BodyFraming::Chunked,
            head_request: method == Method::HEAD,
            may_repeat: idempotent(&method),
        }
    }

    /// Per-server response statistics (when metrics are on) and the time
    /// the response head was read.
    fn record_answer(&self, server: &Server, status: u16, attempt_started: std::time::Instant, outcome: &mut Outcome) {
        if self.metrics {
            let answered = std::time::Instant::now();
            outcome.answered = Some(answered);
            let us = answered.saturating_duration_since(attempt_started).as_micros() as u64;
            server.state.stats.record_response(status, us);
        }
    }

    /// Passive health for an answer, and whether to try another server
    /// instead: its status is listed in `retry_on`, the request can be sent
    /// again, and another server is there to take it.
    fn retry_status(
        &self,
        server: &Server,
        status: u16,
        request: &Outgoing<'_>,
        last: bool,
        tried: &[usize],
        now: u64,
    ) -> bool {
        let cfg = &self.pool.cfg;
        if !cfg.retry_on.status(status) {
            server.state.passive.record_success();
            return false;
        }
        if server.state.passive.record_failure(crate::clock::now_ms()) {
            self.passive_down(server, &format!("answered {status}"));
        }
        let resendable = request.encoded.may_repeat && !matches!(request.body, UpstreamBody::Stream(_));
        if resendable && !last && self.pool.select(self.client_hash, tried, now).is_some() {
            tracing::warn!(pool = %cfg.name, server = %server.name, status, "retrying: server answered with a status listed in retry_on");
            return true;
        }
        false
    }

    /// The session a WebSocket tunnel keeps alive (moved to server `idx`
    /// first if an earlier attempt failed on its server).
    fn session_touch(&self, key: Option<String>, attempt: usize, idx: usize) -> Option<Box<SessionTouch>> {
        let (a, key) = (self.affinity.as_ref()?, key?);
        if attempt > 0 {
            a.moved(self.pool, &key, idx);
        }
        Some(Box::new(SessionTouch::new(a.sessions.clone(), key.into_boxed_str(), a.cfg.ttl)))
    }

    /// Counts a failed attempt against its server; true if the request may
    /// go to another server (the failure kind is in `retry_on`, and the
    /// request can be sent again: idempotent or not sent at all, with its
    /// body still here).
    fn attempt_failed(
        &self,
        server: &Server,
        err: &ProxyError,
        attempt: usize,
        request: &Outgoing<'_>,
        reached: bool,
        wanted: bool,
    ) -> bool {
        metrics::inc(&COUNTERS.upstream_errors);
        server.state.stats.record_error();
        if server.state.passive.record_failure(crate::clock::now_ms()) {
            self.passive_down(server, err.kind());
        }
        let body_here = match request.body {
            UpstreamBody::Stream(s) => !s.touched(),
            _ => true,
        };
        let resendable = body_here && (request.encoded.may_repeat || !reached);
        tracing::warn!(pool = %self.pool.cfg.name, server = %server.name, error = %err, attempt = attempt + 1, "upstream attempt failed");
        wanted && resendable
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
        let Outgoing { encoded: &Encoded { ref head, chunked, head_request, may_repeat }, body } = *request;
        let cfg = &self.pool.cfg;
        let name = &self.pool.servers[idx].name;
        let upstream = &self.upstreams[idx];
        let (mut io, mut pooled) = match upstream.take_idle(sent) {
            Some(io) => (io, true),
            None => (self.connect(idx).await?, false),
        };
        let resendable = !matches!(body, UpstreamBody::Stream(_));
        loop {
            let mut buf = BytesMut::new();
            let mut attempt_body = body.again();
            match h1client::write_request(&mut io, head, &mut attempt_body, chunked, &mut buf).await {
                Ok(()) => {}
                Err(SendError::Io { written: false, .. }) if pooled => {
                    (io, pooled) = (self.connect(idx).await?, false);
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
                    answered(&mut h, body, name);
                    return Ok((h, io, buf));
                }
                Ok(Err(HeadError::Closed)) if pooled && resendable && may_repeat => {
                    (io, pooled) = (self.connect(idx).await?, false);
                }
                Ok(Err(e)) => {
                    if let Some(fault) = e.fault() {
                        report_response(fault, name, &e);
                    }
                    return Err(head_failure(e, name, cfg));
                }
                Err(_) => return Err(read_timeout(name, cfg)),
            }
        }
    }

    /// A new connection to server `idx`.
    async fn connect(&self, idx: usize) -> Result<ServerIo, Failure> {
        let name = &self.pool.servers[idx].name;
        self.upstreams[idx]
            .connect(self.client_addr, self.local_addr)
            .await
            .map_err(|e| connect_failure(e, name, &self.pool.cfg))
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
    #[inline(always)]
    fn respond(
        &self,
        head: Head,
        io: ServerIo,
        buf: BytesMut,
        in_flight: InFlight,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
        touch: Option<Box<SessionTouch>>,
        idx: usize,
    ) -> Response<ProxyBody> {
        if head.parts.status == StatusCode::SWITCHING_PROTOCOLS {
            // An upgraded connection never goes back to the pool.
            if let Some(client_upgrade) = client_upgrade {
                let upgraded = h1client::Upgraded::new(io, buf.freeze());
                let response = self.tunnel(head.parts, upgraded, client_upgrade, touch, idx);
                // The tunnel counts itself in flight now.
                drop(in_flight);
                return response;
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

/// A server's response head, taken: a distrusted framing is reported, and
/// an answer that came before the whole streamed body was sent leaves the
/// connection out of step (not reused).
fn answered(head: &mut Head, body: &UpstreamBody, server: &str) {
    if let Some(fault) = head.distrust {
        report_response(fault, server, &"answer taken, connection not reused");
    }
    if let UpstreamBody::Stream(s) = body {
        head.reusable &= s.finished();
    }
}
