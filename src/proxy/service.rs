//! The per-request service: route match, then the route's action (proxy,
//! fixed response, static file, redirect), then response headers, metrics
//! and the access log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use super::body::ProxyBody;
use super::conn::{ActiveGuard, ConnActivity};
use super::forward::{pool_options, text_response, Forward};
use super::headers::{is_websocket_upgrade, SecurityHeaders};
use super::route_stats::RouteStats;
use super::routing::{host_without_port, match_route, RequestKey};
use super::static_files::{self, StaticError};
use super::upstream::{PoolOptions, ServerPool};
use crate::balance::hash_bytes;
use crate::config::{PathMatch, RouteAction};
use crate::metrics::{self, COUNTERS};
use crate::state::Snapshot;

/// Everything the request path reads for one config generation.
pub struct ProxyState {
    pub snapshot: Arc<Snapshot>,
    /// Connections of every server, by pool index then server index.
    pub upstreams: Vec<Vec<Arc<ServerPool>>>,
    pub security: SecurityHeaders,
    pub access_log: bool,
    pub route_stats: RouteStats,
}

impl ProxyState {
    /// Builds the request path's state for a snapshot. Server connection
    /// pools (with their idle connections) are taken over from `previous`
    /// for servers whose address and connection settings did not change.
    pub fn new(snapshot: Arc<Snapshot>, previous: Option<&ProxyState>) -> Self {
        let cfg = &snapshot.config;
        let reuse = |pool: &str, addr: std::net::SocketAddr, opts: PoolOptions| -> Option<Arc<ServerPool>> {
            let prev = previous?;
            let i = prev.snapshot.config.pools.iter().position(|q| q.name == pool)?;
            prev.upstreams[i].iter().find(|u| u.addr() == addr && u.options() == opts).cloned()
        };
        let upstreams = cfg
            .pools
            .iter()
            .map(|p| {
                let opts = pool_options(p);
                p.servers
                    .iter()
                    .map(|s| reuse(&p.name, s.addr, opts).unwrap_or_else(|| ServerPool::new(s.addr, opts)))
                    .collect()
            })
            .collect();
        ProxyState {
            upstreams,
            security: SecurityHeaders::new(cfg.headers.security, &cfg.headers.frame_options),
            access_log: cfg.log.access_log,
            route_stats: RouteStats::new(cfg.routes.iter().map(|r| r.name.as_str()), previous.map(|p| &p.route_stats)),
            snapshot,
        }
    }
}

/// Shared by every connection of every listener.
pub struct Shared {
    pub state: ArcSwap<ProxyState>,
}

impl Shared {
    pub fn new(state: ProxyState) -> Self {
        Shared { state: ArcSwap::from_pointee(state) }
    }
}

/// Facts about one client connection.
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub activity: Arc<ConnActivity>,
}

/// Returned instead of a response when the connection must close without
/// one (an agent's WebSocket upgrade with no server to take it).
#[derive(Debug, thiserror::Error)]
#[error("closing the connection without a response: {0}")]
pub struct CloseConnection(pub &'static str);

pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, CloseConnection> {
    let started = Instant::now();
    let guard = ActiveGuard::new(&conn.activity);
    metrics::inc(&COUNTERS.requests);
    if req.version() == Version::HTTP_2 {
        conn.activity.mark_http2();
    }
    let state = shared.state.load_full();
    let cfg = &state.snapshot.config;
    let websocket = is_websocket_upgrade(req.headers());
    let method = req.method().clone();
    let path_for_log = if state.access_log { Some(req.uri().path().to_string()) } else { None };

    let route_idx = {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .map(host_without_port);
        let key = RequestKey { method: req.method(), path: req.uri().path(), host, websocket };
        match_route(&cfg.routes, &key)
    };
    state.route_stats.count(route_idx, &method);
    let mut server_name: Option<&str> = None;
    let mut response = match route_idx {
        None => text_response(StatusCode::NOT_FOUND, "404 Not Found: no route matches\n"),
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
                    let ip = conn.peer.ip();
                    let ip_hash = match ip {
                        std::net::IpAddr::V4(v4) => hash_bytes(&v4.octets()),
                        std::net::IpAddr::V6(v6) => hash_bytes(&v6.octets()),
                    };
                    let fwd = Forward {
                        pool: pool_ref,
                        events: &state.snapshot.events,
                        upstreams: &state.upstreams[*pool],
                        client_ip: ip,
                        client_hash: ip_hash,
                        max_body: cfg.limits.max_body,
                        body_timeout: cfg.limits.body_timeout,
                        websocket: websocket && route.matcher.websocket,
                        activity: &conn.activity,
                    };
                    let is_ws = fwd.websocket;
                    let (result, outcome) = fwd.run(req).await;
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
                                && matches!(
                                    e,
                                    super::error::ProxyError::NoServer { .. }
                                        | super::error::ProxyError::Connect { .. }
                                )
                            {
                                // SysManage agents fall back to 15 minutes of
                                // polling after two non-101 answers; a closed
                                // connection is retried as transient.
                                return Err(CloseConnection("no server available for a WebSocket upgrade"));
                            }
                            text_response(e.status(), e.client_message())
                        }
                    }
                }
            }
        }
    };
    state.security.apply(response.headers_mut());
    let status = response.status().as_u16();
    metrics::count_response(status);
    COUNTERS.request_duration.record_us(started.elapsed().as_micros() as u64);
    if let Some(path) = path_for_log {
        let bytes = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let route = route_idx.map_or("-", |i| cfg.routes[i].name.as_str());
        tracing::info!(
            target: "access",
            client = %conn.peer.ip(),
            method = %method,
            path = %path,
            status,
            bytes = bytes.unwrap_or(0),
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
            route,
            server = server_name.unwrap_or("-"),
        );
    }
    let (parts, body) = response.into_parts();
    Ok(Response::from_parts(parts, body.with_guard(guard)))
}
