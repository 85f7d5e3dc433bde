//! The per-request service: route match, then the route's action (proxy,
//! fixed response, static file, redirect), then response headers, metrics
//! and the access log.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};

use super::affinity::Affinity;
use super::body::{ClientBody, ProxyBody};
use super::conn::{ActiveGuard, ConnActivity};
use super::error::ProxyError;
use super::forward::{pool_options, text_response, Forward};
use super::headers::{SecurityHeaders, X_FORWARDED_FOR};
use super::listener::ListenerRuntime;
use super::route_stats::RouteStats;
use super::routing::{host_without_port, match_route, RequestKey};
use super::static_files::{self, StaticError};
use super::upstream::{PoolOptions, ServerPool};
use super::wire::fields::is_websocket_upgrade;
use super::wire::report_request;
use super::wire::request::{check, refusal_text};
use crate::balance::hash_bytes;
use crate::config::{PathMatch, RateKey, RateKind, RouteAction};
use crate::metrics::{self, COUNTERS};
use crate::ratelimit::{Decision, KeySource, Zone, ZoneConfig, ZoneKind};
use crate::sessions::{AffinityKey, Sessions};
use crate::state::Snapshot;

/// Everything the request path reads for one config generation.
pub struct ProxyState {
    pub snapshot: Arc<Snapshot>,
    /// Connections of every server, by pool index then server index.
    pub upstreams: Vec<Vec<Arc<ServerPool>>>,
    pub security: SecurityHeaders,
    /// Set the `X-Forwarded-*` headers on requests to servers.
    pub forwarded: bool,
    pub access_log: bool,
    /// Per-request metrics on (config `metrics.enabled`).
    pub metrics: bool,
    pub route_stats: RouteStats,
    /// `Strict-Transport-Security` for HTTPS responses.
    pub hsts: Option<HeaderValue>,
    /// One zone per `[[rate_limits]]` entry, by index (`None` only if the
    /// limiter refused settings that validation let through).
    pub zones: Vec<Option<RateZone>>,
    /// The node's sticky sessions (when a pool has `affinity`).
    pub sessions: Option<Arc<Sessions>>,
    /// Each pool's parsed affinity key, by pool index.
    pub affinity_keys: Vec<Option<AffinityKey>>,
}

/// A rate-limit zone and what to answer over its limit.
pub struct RateZone {
    pub config: crate::config::RateLimitConfig,
    pub zone: Arc<Zone>,
}

impl ProxyState {
    /// `Some(response)` when zone `z` refuses this request.
    fn rate_limited(&self, z: usize, client_ip: IpAddr, headers: &http::HeaderMap) -> Option<Response<ProxyBody>> {
        let rz = self.zones.get(z)?.as_ref()?;
        let key = rz.zone.key_for_request(client_ip, headers)?;
        match rz.zone.check(key, crate::clock::now_ms()) {
            Decision::Allow => None,
            d @ Decision::Reject { .. } => {
                let status = StatusCode::from_u16(rz.config.status).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
                let mut r = text_response(status, "429 Too Many Requests: slow down\n");
                if status != StatusCode::TOO_MANY_REQUESTS {
                    *r.body_mut() =
                        ProxyBody::full(format!("{} {}\n", status.as_u16(), status.canonical_reason().unwrap_or("")));
                }
                if let Some(secs) = d.retry_after_secs() {
                    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
                }
                tracing::debug!(zone = %rz.config.name, client = %client_ip, "rate limited");
                Some(r)
            }
        }
    }
}

/// TLS settings for connections to `addr` of pool `p`. Settings that cannot
/// be built (the CA file went missing after validation) make every
/// connection fail with the reason, never fall back to plain text.
fn upstream_tls(
    p: &crate::config::PoolConfig,
    addr: std::net::SocketAddr,
) -> Option<Result<super::upstream::UpstreamTls, String>> {
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
    Some(Ok(super::upstream::UpstreamTls { config, server_name, source: t.clone() }))
}

fn zone_config(c: &crate::config::RateLimitConfig) -> ZoneConfig {
    ZoneConfig {
        name: c.name.clone(),
        kind: match c.kind {
            RateKind::Bucket { per_second, burst } => ZoneKind::Bucket { per_second, burst },
            RateKind::Window { limit, window } => ZoneKind::Window { limit, window },
        },
        key: match &c.key {
            RateKey::ClientIp => KeySource::ClientIp,
            RateKey::Header(h) => KeySource::Header(h.clone()),
        },
        max_keys: c.max_keys,
    }
}

impl ProxyState {
    /// Builds the request path's state for a snapshot. Server connection
    /// pools (with their idle connections) are taken over from `previous`
    /// for servers whose address and connection settings did not change.
    pub fn new(snapshot: Arc<Snapshot>, previous: Option<&ProxyState>, sessions: Option<Arc<Sessions>>) -> Self {
        let cfg = &snapshot.config;
        let reuse = |p: &crate::config::PoolConfig, addr: std::net::SocketAddr, opts: PoolOptions| {
            let prev = previous?;
            let i = prev.snapshot.config.pools.iter().position(|q| q.name == p.name)?;
            prev.upstreams[i]
                .iter()
                .find(|u| u.addr() == addr && u.options() == opts && u.tls_source() == p.tls.as_ref())
                .cloned()
        };
        let upstreams: Vec<Vec<Arc<ServerPool>>> = cfg
            .pools
            .iter()
            .map(|p| {
                let opts = pool_options(p);
                p.servers
                    .iter()
                    .map(|s| {
                        reuse(p, s.addr, opts).unwrap_or_else(|| ServerPool::new(s.addr, opts, upstream_tls(p, s.addr)))
                    })
                    .collect()
            })
            .collect();
        // Pools that close a down server's tunnels close its idle
        // connections too (the pools' sweepers follow the servers' health).
        for ((conns, p), pool) in upstreams.iter().zip(&cfg.pools).zip(&snapshot.pools) {
            for (c, s) in conns.iter().zip(&pool.servers) {
                c.follow_health(p.close_tunnels_on_down.then_some(&s.state));
            }
        }
        let affinity_keys = cfg
            .pools
            .iter()
            .map(|p| p.affinity.as_ref().and_then(|a| AffinityKey::parse(&a.key, a.extract.as_deref()).ok()))
            .collect();
        ProxyState {
            sessions,
            affinity_keys,
            upstreams,
            security: SecurityHeaders::new(cfg.headers.security, &cfg.headers.frame_options),
            forwarded: cfg.headers.forwarded,
            access_log: cfg.log.access_log,
            metrics: cfg.metrics_enabled,
            hsts: cfg.headers.hsts.as_deref().and_then(|h| HeaderValue::from_str(h).ok()),
            zones: cfg
                .rate_limits
                .iter()
                .map(|c| {
                    // A zone with the same settings keeps its clients' state across a reload.
                    let kept = previous
                        .and_then(|p| p.zones.iter().flatten().find(|z| &z.config == c))
                        .map(|z| z.zone.clone());
                    let zone = match kept {
                        Some(z) => z,
                        None => match Zone::new(zone_config(c)) {
                            Ok(z) => Arc::new(z),
                            Err(e) => {
                                tracing::error!(zone = %c.name, error = %e, "rate limit zone not created");
                                return None;
                            }
                        },
                    };
                    Some(RateZone { config: c.clone(), zone })
                })
                .collect(),
            route_stats: RouteStats::new(cfg.routes.iter().map(|r| r.name.as_str()), previous.map(|p| &p.route_stats)),
            snapshot,
        }
    }
}

/// Shared by every connection of every listener.
pub struct Shared {
    pub state: ArcSwap<ProxyState>,
    /// Turns true when the node shuts down: WebSocket tunnels close at once
    /// (agents reconnect to another node) while HTTP requests drain.
    pub closing: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    pub fn new(state: ProxyState) -> Self {
        Shared { state: ArcSwap::from_pointee(state), closing: tokio::sync::watch::Sender::new(false) }
    }
}

/// Facts about one client connection.
pub struct ConnInfo {
    /// The client as far as the connection tells: the TCP peer, or the
    /// source of a PROXY protocol header.
    pub peer: SocketAddr,
    /// The TCP peer itself.
    pub tcp_peer: SocketAddr,
    /// The address the client connected to.
    pub local: SocketAddr,
    pub tls: bool,
    pub listener: Arc<ListenerRuntime>,
    pub activity: Arc<ConnActivity>,
}

impl ConnInfo {
    /// The real client IP: the connection's client, or, when that is a
    /// trusted proxy, the right-most address in `X-Forwarded-For` that is not
    /// a trusted proxy. Untrusted peers' headers are ignored.
    pub fn client_ip(&self, headers: &http::HeaderMap) -> (IpAddr, bool) {
        let immediate = self.peer.ip();
        if self.listener.trusted_proxies.is_empty() || !self.listener.trusts(immediate) {
            return (immediate, false);
        }
        let mut leftmost = None;
        for v in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
            let Ok(s) = v.to_str() else { continue };
            for part in s.rsplit(',') {
                let Ok(ip) = part.trim().parse::<IpAddr>() else { continue };
                if !self.listener.trusts(ip) {
                    return (ip, true);
                }
                leftmost = Some(ip);
            }
        }
        (leftmost.unwrap_or(immediate), true)
    }
}

/// Returned instead of a response when the connection must close without
/// one (an agent's WebSocket upgrade with no server to take it).
#[derive(Debug, thiserror::Error)]
#[error("closing the connection without a response: {0}")]
pub struct CloseConnection(pub &'static str);

pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    mut req: Request<ClientBody>,
    guard: ActiveGuard,
) -> Result<Response<ProxyBody>, CloseConnection> {
    let started = Instant::now();
    metrics::inc(&COUNTERS.requests);
    crate::busy_poll::traffic();
    if req.version() == Version::HTTP_2 {
        conn.activity.mark_http2();
    }
    let state = shared.state.load_full();
    let cfg = &state.snapshot.config;
    let method = req.method().clone();
    let (client_ip, via_trusted_proxy) = conn.client_ip(req.headers());
    if let Err(refused) = check(&mut req, conn.local) {
        // Before any route: `Host` and the path are what routing reads.
        report_request(refused.fault, Some(client_ip), &refused.detail);
        let mut response = text_response(StatusCode::BAD_REQUEST, refusal_text(refused.fault));
        if req.version() != Version::HTTP_2 {
            // HTTP/1: the connection ends after the answer (an HTTP/2
            // stream ends by itself; `Connection` is not allowed there).
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        let path_for_log = state.access_log.then(|| req.uri().path().to_string());
        let timing = Timing { started, answered: None };
        finish(&state, &conn, &mut response, timing, &method, path_for_log, None, None, client_ip, guard);
        return Ok(response);
    }
    let websocket = is_websocket_upgrade(req.headers());
    let path_for_log = if state.access_log { Some(req.uri().path().to_string()) } else { None };

    if let Some(port) = conn.listener.redirect_to_https {
        if !conn.listener.redirect_except.iter().any(|p| p == req.uri().path()) {
            let response = https_redirect(&req, port);
            let timing = Timing { started, answered: None };
            let mut response = response;
            finish(&state, &conn, &mut response, timing, &method, path_for_log, None, None, client_ip, guard);
            return Ok(response);
        }
    }

    let route_idx = {
        let host = request_host(&req);
        let key = RequestKey { method: req.method(), path: req.uri().path(), host, websocket };
        match_route(&cfg.routes, &key)
    };
    if state.metrics {
        state.route_stats.count(route_idx, &method);
    }
    let mut server_name: Option<&str> = None;
    let mut answered: Option<Instant> = None;
    let limited =
        route_idx.and_then(|i| cfg.routes[i].rate_limit).and_then(|z| state.rate_limited(z, client_ip, req.headers()));
    if limited.is_some() {
        if let Some(route) = route_idx.map(|i| &cfg.routes[i]) {
            if websocket && route.matcher.websocket && route.close_when_unavailable {
                // A 429 is a non-101 answer: agents would fall back to polling.
                return Err(CloseConnection("rate limited WebSocket upgrade"));
            }
        }
    }
    let response = match route_idx {
        None => text_response(StatusCode::NOT_FOUND, "404 Not Found: no route matches\n"),
        Some(_) if limited.is_some() => limited.unwrap_or_else(|| text_response(StatusCode::TOO_MANY_REQUESTS, "")),
        Some(i) => {
            let route = &cfg.routes[i];
            match &route.action {
                RouteAction::Respond { status, body, content_type } => {
                    let mut r = Response::new(ProxyBody::full(body.clone()));
                    *r.status_mut() = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
                    if let Ok(v) = HeaderValue::from_str(content_type) {
                        r.headers_mut().insert(header::CONTENT_TYPE, v);
                    }
                    r
                }
                RouteAction::Redirect { to, status } => {
                    let target = to.replace("$request_uri", req.uri().path_and_query().map_or("/", |p| p.as_str()));
                    let mut r = text_response(StatusCode::from_u16(*status).unwrap_or(StatusCode::FOUND), "");
                    match HeaderValue::from_str(&target) {
                        Ok(v) => {
                            r.headers_mut().insert(header::LOCATION, v);
                            r
                        }
                        Err(_) => text_response(StatusCode::BAD_REQUEST, "400 Bad Request: cannot redirect this URL\n"),
                    }
                }
                RouteAction::Static { dir, cache_control } => {
                    let path = req.uri().path();
                    let rest = match &route.matcher.path {
                        PathMatch::Prefix(p) => &path[p.len().min(path.len())..],
                        PathMatch::Exact(_) => "",
                    };
                    let ims = req.headers().get(header::IF_MODIFIED_SINCE);
                    match static_files::serve(dir, rest, req.method(), cache_control.as_deref(), ims).await {
                        Ok(r) => r,
                        Err(StaticError::Forbidden) => {
                            text_response(StatusCode::FORBIDDEN, "403 Forbidden: path not allowed\n")
                        }
                        Err(StaticError::NotFound) => text_response(StatusCode::NOT_FOUND, "404 Not Found\n"),
                        Err(StaticError::MethodNotAllowed) => {
                            let mut r = text_response(StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed\n");
                            r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                            r
                        }
                    }
                }
                RouteAction::Proxy { pool } => {
                    let pool_ref = &state.snapshot.pools[*pool];
                    let ip = client_ip;
                    let ip_hash = match ip {
                        std::net::IpAddr::V4(v4) => hash_bytes(&v4.octets()),
                        std::net::IpAddr::V6(v6) => hash_bytes(&v6.octets()),
                    };
                    let fwd = Forward {
                        pool: pool_ref,
                        events: &state.snapshot.events,
                        upstreams: &state.upstreams[*pool],
                        client_ip: ip,
                        peer_ip: conn.peer.ip(),
                        client_addr: std::net::SocketAddr::new(client_ip, conn.peer.port()),
                        local_addr: conn.local,
                        via_trusted_proxy,
                        proto: if conn.tls { "https" } else { "http" },
                        client_hash: ip_hash,
                        max_body: cfg.limits.max_body,
                        body_timeout: cfg.limits.body_timeout,
                        metrics: state.metrics,
                        websocket: websocket && route.matcher.websocket,
                        tunnel: super::tunnel::Limits {
                            idle: route.tunnel_timeout,
                            fin: route.tunnel_fin_timeout,
                            spread: cfg.limits.tunnel_close_spread,
                            close_on_down: pool_ref.cfg.close_tunnels_on_down,
                        },
                        closing: &shared.closing,
                        affinity: match (&pool_ref.cfg.affinity, &state.affinity_keys[*pool], &state.sessions) {
                            (Some(cfg), Some(key), Some(sessions)) => Some(Affinity { key, cfg, sessions }),
                            _ => None,
                        },
                        activity: &conn.activity,
                        started,
                        forwarded: state.forwarded,
                    };
                    let is_ws = fwd.websocket;
                    let (result, outcome) = fwd.run(req).await;
                    answered = outcome.answered;
                    server_name = outcome.server.map(|i| pool_ref.servers[i].name.as_str());
                    match result {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::warn!(
                                route = %route.name,
                                pool = %pool_ref.cfg.name,
                                server = server_name.unwrap_or("-"),
                                attempts = outcome.attempts,
                                side = ?e.source_side(),
                                error = %e,
                                "request failed"
                            );
                            if is_ws
                                && route.close_when_unavailable
                                && !matches!(e, ProxyError::MissingSessionId { .. })
                            {
                                // SysManage agents fall back to 15 minutes of
                                // polling after two non-101 answers; a closed
                                // connection is retried as transient.
                                return Err(CloseConnection("no server took the WebSocket upgrade"));
                            }
                            text_response(e.status(), e.client_message())
                        }
                    }
                }
            }
        }
    };
    let route = route_idx.map(|i| cfg.routes[i].name.as_str());
    let timing = Timing { started, answered };
    let mut response = response;
    finish(&state, &conn, &mut response, timing, &method, path_for_log, route, server_name, client_ip, guard);
    Ok(response)
}

/// When a request started and, for a proxied one, when its server's
/// response head was read (the clock is read once for both uses).
#[derive(Clone, Copy)]
struct Timing {
    started: Instant,
    answered: Option<Instant>,
}

impl Timing {
    fn elapsed(&self) -> std::time::Duration {
        self.answered.unwrap_or_else(Instant::now).saturating_duration_since(self.started)
    }
}

/// Response headers, metrics and the access log for every response (in
/// place: a response is a few hundred bytes, better not moved around).
#[allow(clippy::too_many_arguments)]
fn finish(
    state: &ProxyState,
    conn: &ConnInfo,
    response: &mut Response<ProxyBody>,
    timing: Timing,
    method: &http::Method,
    path_for_log: Option<String>,
    route: Option<&str>,
    server: Option<&str>,
    client_ip: IpAddr,
    guard: ActiveGuard,
) {
    state.security.apply(response.headers_mut());
    if conn.tls {
        if let Some(hsts) = &state.hsts {
            response.headers_mut().insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
    }
    let status = response.status().as_u16();
    if state.metrics {
        metrics::count_response(status);
        COUNTERS.request_duration.record_us(timing.elapsed().as_micros() as u64);
    }
    if let Some(path) = path_for_log {
        let bytes = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        tracing::info!(
            target: "access",
            client = %client_ip,
            method = %method,
            path = %path,
            status,
            bytes = bytes.or_else(|| http_body::Body::size_hint(response.body()).exact()).unwrap_or(0),
            duration_ms = (timing.elapsed().as_secs_f64() * 1e6).round() / 1000.0,
            route = route.unwrap_or("-"),
            server = server.unwrap_or("-"),
        );
    }
    response.body_mut().set_guard(guard);
}

/// The request's host without port: `Host`, or the HTTP/2 `:authority`.
fn request_host(req: &Request<ClientBody>) -> Option<&str> {
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .map(host_without_port)
}

/// 301 (GET, HEAD) or 308 (others, which must keep their method and body)
/// to the same host, path and query on HTTPS.
fn https_redirect(req: &Request<ClientBody>, port: u16) -> Response<ProxyBody> {
    let host = request_host(req);
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        return text_response(StatusCode::BAD_REQUEST, "400 Bad Request: no Host to redirect to\n");
    };
    let host = if host.contains(':') { format!("[{host}]") } else { host.to_string() };
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 { format!("https://{host}{pq}") } else { format!("https://{host}:{port}{pq}") };
    let status = if matches!(*req.method(), http::Method::GET | http::Method::HEAD) {
        StatusCode::MOVED_PERMANENTLY
    } else {
        StatusCode::PERMANENT_REDIRECT
    };
    let mut r = text_response(status, "");
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            r.headers_mut().insert(header::LOCATION, v);
            r
        }
        Err(_) => text_response(StatusCode::BAD_REQUEST, "400 Bad Request: cannot redirect this URL\n"),
    }
}
