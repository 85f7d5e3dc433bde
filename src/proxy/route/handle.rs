//! One request, step by step: the request check (`Host`, path), the HTTPS
//! redirect of a plain listener, the route match, the route's rate limit,
//! then the route's action (a fixed response, a redirect, a static file, or
//! forwarding to a pool), then the response headers, metrics and the
//! access log ([`finish`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};

use super::context::{CloseConnection, ConnInfo};
use super::matching::{host_without_port, match_route, RequestKey};
use super::state::{ProxyState, Shared};
use super::static_files::{self, StaticError};
use crate::balance::hash_bytes;
use crate::config::{PathMatch, RouteAction, RouteConfig};
use crate::metrics::{self, COUNTERS};
use crate::proxy::activity::ActiveGuard;
use crate::proxy::body::ClientBody;
use crate::proxy::error::ProxyError;
use crate::proxy::outbound::affinity::Affinity;
use crate::proxy::outbound::forward::{Forward, Outcome};
use crate::proxy::outbound::response::{text_response, ProxyBody};
use crate::proxy::outbound::tunnel;
use crate::proxy::wire::fields::is_websocket_upgrade;
use crate::proxy::wire::report_request;
use crate::proxy::wire::request::{check, refusal_text, Refused};

/// Handles one request from any listener, HTTP/1.1 or HTTP/2.
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
    let method = req.method().clone();
    let (client_ip, via_trusted_proxy) = conn.client_ip(req.headers());
    let version = req.version();
    let cx = Steps { shared: &shared, state: &state, conn: &conn, started, client_ip, via_trusted_proxy, version };
    // Before any route: `Host` and the path are what routing reads.
    let checked = check(&mut req, conn.local);
    let path_for_log = state.access_log.then(|| req.uri().path().to_string());
    let mut served = Served::default();
    if let Err(refused) = checked {
        let mut response = cx.refuse(&req, refused);
        cx.finish(&mut response, &method, path_for_log, served, guard);
        return Ok(response);
    }
    if let Some(mut response) = cx.redirect_to_https(&req) {
        cx.finish(&mut response, &method, path_for_log, served, guard);
        return Ok(response);
    }
    let websocket = is_websocket_upgrade(req.headers());
    let route_idx = {
        let key = RequestKey { method: req.method(), path: req.uri().path(), host: request_host(&req), websocket };
        match_route(&state.snapshot.config.routes, &key)
    };
    if state.metrics {
        state.route_stats.count(route_idx, &method);
    }
    let mut response = match route_idx {
        None => text_response(StatusCode::NOT_FOUND, "404 Not Found: no route matches\n"),
        Some(i) => {
            let route = &state.snapshot.config.routes[i];
            served.route = Some(route.name.as_str());
            // The route's rate limit, then its action. The request is
            // awaited here, not in a function of each action: every async
            // layer would move the request and the response once more.
            match (cx.rate_limit(route, req.headers(), websocket)?, &route.action) {
                (Some(limited), _) => limited,
                (None, RouteAction::Respond { status, .. }) if shared.is_draining() && (200..300).contains(status) => {
                    // The node's own health answer tells fronts to stop
                    // sending clients here (`ctl drain-node`).
                    text_response(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
                }
                (None, RouteAction::Respond { status, body, content_type }) => {
                    fixed_response(*status, body, content_type)
                }
                (None, RouteAction::Redirect { to, status }) => redirect(&req, to, *status),
                (None, RouteAction::Static { dir, cache_control }) => {
                    serve_static(route, &req, dir, cache_control).await
                }
                (None, RouteAction::Proxy { pool }) => {
                    let (result, outcome) = cx.forward(route, *pool, websocket).run(req).await;
                    cx.forwarded(route, *pool, websocket, result, outcome, &mut served)?
                }
            }
        }
    };
    cx.finish(&mut response, &method, path_for_log, served, guard);
    Ok(response)
}

/// What the steps of one request share.
struct Steps<'a> {
    shared: &'a Shared,
    state: &'a ProxyState,
    conn: &'a ConnInfo,
    started: Instant,
    client_ip: IpAddr,
    via_trusted_proxy: bool,
    /// The request's HTTP version.
    version: Version,
}

/// What the access log and the metrics say of a request besides its response.
#[derive(Default)]
struct Served<'a> {
    route: Option<&'a str>,
    server: Option<&'a str>,
    /// When a proxied request's server response head was read.
    answered: Option<Instant>,
}

impl<'a> Steps<'a> {
    /// 400 for a request that `check` refused (counted and logged).
    fn refuse(&self, req: &Request<ClientBody>, refused: Refused) -> Response<ProxyBody> {
        report_request(refused.fault, Some(self.client_ip), &refused.detail);
        let mut response = text_response(StatusCode::BAD_REQUEST, refusal_text(refused.fault));
        if req.version() != Version::HTTP_2 {
            // HTTP/1: the connection ends after the answer (an HTTP/2
            // stream ends by itself; `Connection` is not allowed there).
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }

    /// A listener with `redirect_to_https` answers every path but its
    /// exceptions with a redirect.
    fn redirect_to_https(&self, req: &Request<ClientBody>) -> Option<Response<ProxyBody>> {
        let port = self.conn.listener.redirect_to_https?;
        if self.conn.listener.redirect_except.iter().any(|p| p == req.uri().path()) {
            return None;
        }
        Some(https_redirect(req, port))
    }

    /// The route's rate-limit answer if its zone refuses this request; a
    /// refused agent WebSocket upgrade closes the connection instead (a
    /// 429 is a non-101 answer: agents would fall back to polling).
    fn rate_limit(
        &self,
        route: &RouteConfig,
        headers: &http::HeaderMap,
        websocket: bool,
    ) -> Result<Option<Response<ProxyBody>>, CloseConnection> {
        let Some(limited) = route.rate_limit.and_then(|z| self.state.rate_limited(z, self.client_ip, headers)) else {
            return Ok(None);
        };
        if websocket && route.matcher.websocket && route.close_when_unavailable {
            return Err(CloseConnection("rate limited WebSocket upgrade"));
        }
        Ok(Some(limited))
    }

    /// What forwarding the request to the route's pool needs.
    #[inline(always)]
    fn forward(&self, route: &'a RouteConfig, pool: usize, websocket: bool) -> Forward<'a> {
        let (state, conn, cfg) = (self.state, self.conn, &self.state.snapshot.config);
        let pool_ref = &state.snapshot.pools[pool];
        Forward {
            pool: pool_ref,
            events: &state.snapshot.events,
            upstreams: &state.upstreams[pool],
            client_ip: self.client_ip,
            peer_ip: conn.peer.ip(),
            client_addr: SocketAddr::new(self.client_ip, conn.peer.port()),
            local_addr: conn.local,
            via_trusted_proxy: self.via_trusted_proxy,
            proto: if conn.tls { "https" } else { "http" },
            client_hash: match self.client_ip {
                IpAddr::V4(v4) => hash_bytes(&v4.octets()),
                IpAddr::V6(v6) => hash_bytes(&v6.octets()),
            },
            max_body: cfg.limits.max_body,
            body_timeout: cfg.limits.body_timeout,
            metrics: state.metrics,
            websocket: websocket && route.matcher.websocket,
            tunnel: tunnel::Limits {
                idle: route.tunnel_timeout,
                fin: route.tunnel_fin_timeout,
                spread: cfg.limits.tunnel_close_spread,
                close_on_down: pool_ref.cfg.close_tunnels_on_down,
            },
            tunnels: &self.shared.tunnels,
            affinity: match (&pool_ref.cfg.affinity, &state.affinity_keys[pool], &state.sessions) {
                (Some(cfg), Some(key), Some(sessions)) => Some(Affinity { key, cfg, sessions }),
                _ => None,
            },
            activity: &conn.activity,
            unwrap_client: conn.unwrap_upgraded,
            started: self.started,
            forwarded: state.forwarded,
        }
    }

    /// The forwarding's result, for the client: the server's response, or
    /// the error's status and message (logged); an agent's WebSocket
    /// upgrade that no server took closes the connection instead.
    #[inline(always)]
    fn forwarded(
        &self,
        route: &'a RouteConfig,
        pool: usize,
        websocket: bool,
        result: Result<Response<ProxyBody>, ProxyError>,
        outcome: Outcome,
        served: &mut Served<'a>,
    ) -> Result<Response<ProxyBody>, CloseConnection> {
        let pool_ref = &self.state.snapshot.pools[pool];
        served.answered = outcome.answered;
        served.server = outcome.server.map(|i| pool_ref.servers[i].name.as_str());
        let e = match result {
            Ok(r) => return Ok(r),
            Err(e) => e,
        };
        tracing::warn!(
            route = %route.name,
            pool = %pool_ref.cfg.name,
            server = served.server.unwrap_or("-"),
            attempts = outcome.attempts,
            side = ?e.source_side(),
            error = %e,
            "request failed"
        );
        let is_ws = websocket && route.matcher.websocket;
        if is_ws && route.close_when_unavailable && !matches!(e, ProxyError::MissingSessionId { .. }) {
            // SysManage agents fall back to 15 minutes of polling after two
            // non-101 answers; a closed connection is retried as transient.
            return Err(CloseConnection("no server took the WebSocket upgrade"));
        }
        Ok(text_response(e.status(), e.client_message()))
    }
}

/// A route's fixed response (`respond`).
fn fixed_response(status: u16, body: &Bytes, content_type: &str) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(body.clone()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

/// A route's redirect: `$request_uri` in `to` is the request's path and query.
fn redirect(req: &Request<ClientBody>, to: &str, status: u16) -> Response<ProxyBody> {
    let target = to.replace("$request_uri", req.uri().path_and_query().map_or("/", |p| p.as_str()));
    let mut r = text_response(StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND), "");
    match HeaderValue::from_str(&target) {
        Ok(v) => {
            r.headers_mut().insert(header::LOCATION, v);
            r
        }
        Err(_) => text_response(StatusCode::BAD_REQUEST, "400 Bad Request: cannot redirect this URL\n"),
    }
}

/// A route's static files: the path after the route's prefix, under `dir`.
async fn serve_static(
    route: &RouteConfig,
    req: &Request<ClientBody>,
    dir: &std::path::Path,
    cache_control: &Option<String>,
) -> Response<ProxyBody> {
    let path = req.uri().path();
    let rest = match &route.matcher.path {
        PathMatch::Prefix(p) => &path[p.len().min(path.len())..],
        PathMatch::Exact(_) => "",
    };
    let ims = req.headers().get(header::IF_MODIFIED_SINCE);
    match static_files::serve(dir, rest, req.method(), cache_control.as_deref(), ims).await {
        Ok(r) => r,
        Err(StaticError::Forbidden) => text_response(StatusCode::FORBIDDEN, "403 Forbidden: path not allowed\n"),
        Err(StaticError::NotFound) => text_response(StatusCode::NOT_FOUND, "404 Not Found\n"),
        Err(StaticError::MethodNotAllowed) => {
            let mut r = text_response(StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed\n");
            r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            r
        }
    }
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

impl Steps<'_> {
    /// Response headers, metrics and the access log for every response (in
    /// place: a response is a few hundred bytes, better not moved around).
    fn finish(
        &self,
        response: &mut Response<ProxyBody>,
        method: &Method,
        path_for_log: Option<String>,
        served: Served<'_>,
        guard: ActiveGuard,
    ) {
        let (state, timing) = (self.state, Timing { started: self.started, answered: served.answered });
        state.security.apply(response.headers_mut());
        if self.conn.tls {
            if let Some(hsts) = &state.hsts {
                response.headers_mut().insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
            }
        }
        let status = response.status().as_u16();
        if self.shared.closes_after_response() && status != 101 && self.version != Version::HTTP_2 {
            // A draining node tells keep-alive clients to go (and come back
            // through a front that now sends them to another node); HTTP/2
            // connections get a GOAWAY from inbound.
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
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
                client = %self.client_ip,
                method = %method,
                path = %path,
                status,
                bytes = bytes.or_else(|| http_body::Body::size_hint(response.body()).exact()).unwrap_or(0),
                duration_ms = (timing.elapsed().as_secs_f64() * 1e6).round() / 1000.0,
                route = served.route.unwrap_or("-"),
                server = served.server.unwrap_or("-"),
            );
        }
        response.body_mut().set_guard(guard);
    }
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
