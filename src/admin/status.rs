//! Status and health endpoints: build the API types from the snapshot, the
//! server states and the sampler's rates.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::sampler::Rates;
use super::Shared;
use crate::api::*;
use crate::config::RouteAction;
use crate::control::replication::ClusterView;
use crate::health::{AdminState, ServerState};
use crate::metrics::COUNTERS;
use crate::state::{Pool, Server, Snapshot};

fn timestamp() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// `GET /health`: `healthy`, or 503 `draining` while the node drains.
pub async fn plain_health(State(st): State<Shared>) -> Response {
    match st.control.drain_state() {
        None => "healthy\n".into_response(),
        Some(_) => (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response(),
    }
}

/// `GET /api/health`: `ok`, or 503 `draining` while the node drains (so
/// that fronts send new clients to other nodes).
pub async fn basic_health(State(st): State<Shared>) -> Response {
    match super::node::drain_status(&st.control) {
        None => Json(serde_json::json!({"status": "ok", "timestamp": timestamp()})).into_response(),
        Some(d) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "status": "draining",
                "timestamp": timestamp(),
                "draining_since_unix_ms": d.since_unix_ms,
            })),
        )
            .into_response(),
    }
}

fn worst(a: &str, b: &str) -> &'static str {
    let rank = |s: &str| match s {
        "unhealthy" => 2,
        "degraded" => 1,
        _ => 0,
    };
    match rank(a).max(rank(b)) {
        2 => "unhealthy",
        1 => "degraded",
        _ => "healthy",
    }
}

/// The backends check: per pool available/total; degraded below 80 %,
/// unhealthy when a pool that routes traffic has no server left.
pub fn backends_check(st: &super::AdminContext) -> BackendsCheck {
    let snap = st.control.snapshot();
    let now = crate::clock::now_ms();
    let mut overall = "healthy";
    let mut pools = Vec::new();
    for (i, p) in snap.pools.iter().enumerate() {
        let routed = snap.config.routes.iter().any(|r| matches!(r.action, RouteAction::Proxy { pool } if pool == i));
        let total = p.servers.len();
        let available = p.available_count(now);
        let status = if available == 0 && routed {
            "unhealthy"
        } else if (available as f64) < 0.8 * total as f64 {
            "degraded"
        } else {
            "healthy"
        };
        overall = worst(overall, status);
        pools.push(PoolHealth { name: p.cfg.name.clone(), routed, available, total, status: status.into() });
    }
    BackendsCheck { status: overall.into(), pools }
}

pub async fn detailed_health(State(st): State<Shared>) -> Response {
    let backends = backends_check(&st);
    let uptime = UptimeCheck { status: "healthy".into(), seconds: st.started.elapsed().as_secs() };
    let session_store = store_check(&st).await;
    let cluster = cluster_check(&st).await;
    let mut status = worst(&backends.status, &uptime.status);
    if let Some(s) = &session_store {
        status = worst(status, &s.status);
    }
    if let Some(c) = &cluster {
        status = worst(status, &c.status);
    }
    let draining = super::node::drain_status(&st.control);
    if draining.is_some() {
        // Whatever the checks say, a draining node wants no new clients.
        status = "draining";
    }
    let code =
        if matches!(status, "unhealthy" | "draining") { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    let report = HealthReport {
        status: status.into(),
        timestamp: timestamp(),
        checks: HealthChecks { backends, uptime, session_store, cluster, draining },
    };
    (code, Json(report)).into_response()
}

/// `syncing` while the session table is fetched from a peer; `degraded`
/// when the last catch-up failed (the node routes with what it has).
async fn cluster_check(st: &super::AdminContext) -> Option<ClusterCheck> {
    let rt = st.control.cluster()?;
    let syncing = rt.view.syncing.load(Ordering::Relaxed);
    let last = rt.view.last_sync();
    let status = match (syncing, &last.error) {
        (true, _) => "syncing",
        (false, Some(_)) => "degraded",
        (false, None) => "healthy",
    };
    Some(ClusterCheck {
        status: status.into(),
        syncing,
        live_members: rt.view.live_peers().len() + 1,
        error: if syncing { None } else { last.error },
    })
}

/// The cluster part of the status: members with their state and load.
pub async fn cluster_status(control: &crate::control::Control) -> Option<ClusterStatus> {
    let rt = control.cluster()?;
    let members = rt.members().await;
    let stats = rt.cluster.transport_stats();
    let (state_keys, state_bytes) = rt.cluster.self_state_size().await;
    let last = rt.view.last_sync();
    let count = |state: crate::cluster::MemberState| members.iter().filter(|(m, _)| m.state == state).count();
    Some(ClusterStatus {
        gossip_addr: rt.cluster.gossip_addr().to_string(),
        live: count(crate::cluster::MemberState::Live),
        dead: count(crate::cluster::MemberState::Dead),
        syncing: rt.view.syncing.load(Ordering::Relaxed),
        last_sync: (last.at_unix_ms > 0 || last.error.is_some()).then_some(last),
        datagrams_dropped: stats.dropped(),
        auth_failures: stats.auth_failures(),
        state_keys,
        state_bytes,
        members: members
            .into_iter()
            .map(|(m, load)| MemberInfo {
                name: m.id.name.to_string(),
                addr: m.id.gossip_addr.to_string(),
                generation: m.id.generation,
                state: m.state.as_str().into(),
                is_self: m.is_self,
                last_heard_ms: m.last_heard.map(|d| d.as_millis() as u64),
                version: m.version,
                admin_addr: m.admin_addr.map(|a| a.to_string()),
                sessions: load.map(|l| l.0),
                connections: load.map(|l| l.1),
                draining_since_unix_ms: m.draining_since_ms,
            })
            .collect(),
    })
}

pub async fn members(State(st): State<Shared>) -> Response {
    match cluster_status(&st.control).await {
        Some(c) => Json(c).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(ApiError {
                error: "this node is standalone: its config has no [cluster] table".into(),
                details: Vec::new(),
            }),
        )
            .into_response(),
    }
}

pub async fn websocket_health(State(st): State<Shared>) -> Json<WebsocketHealth> {
    let limit = st.control.snapshot().config.limits.max_connections as u64;
    let active = COUNTERS.websocket_tunnels.load(Ordering::Relaxed);
    let ratio = if limit == 0 { 0.0 } else { active as f64 / limit as f64 };
    Json(WebsocketHealth {
        status: if ratio > 0.9 { "degraded" } else { "healthy" }.into(),
        active_tunnels: active,
        limit,
        ratio,
    })
}

/// `GET /api/v1/status`: the node, its listeners, the totals, every pool
/// with its servers, the recent events and the cluster.
pub async fn status(State(st): State<Shared>) -> Json<Status> {
    let snap = st.control.snapshot();
    let rates = st.sampler.rates(&st.control);
    let pools = pools_status(&st, &snap, &rates);
    let events = snap.events.recent(50);
    let cluster = cluster_status(&st.control).await;
    Json(Status {
        cluster,
        node: node_info(&st, &snap),
        listeners: listeners(&st, &snap),
        totals: totals(&st, &rates),
        pools,
        events,
        rate_limits: rate_limits(&st),
    })
}

/// The configured listeners, with the address each got and its counters
/// (a node started without [`crate::runtime::Node`] has none bound).
fn listeners(st: &super::AdminContext, snap: &Snapshot) -> Vec<ListenerInfo> {
    let bound = st.control.listeners();
    snap.config
        .listeners
        .iter()
        .map(|l| {
            let b = bound.iter().find(|b| b.name == l.name);
            let load = |f: fn(&crate::proxy::ListenerStats) -> &std::sync::atomic::AtomicU64| {
                b.map_or(0, |b| f(&b.stats).load(Ordering::Relaxed))
            };
            ListenerInfo {
                name: l.name.clone(),
                bind: l.bind.to_string(),
                address: b.map(|b| b.addr.to_string()),
                tls: l.tls.is_some(),
                connections: load(|s| &s.open),
                accepted: load(|s| &s.accepted),
                tls_handshakes: load(|s| &s.tls_handshakes),
                tls_handshake_failures: load(|s| &s.tls_handshake_failures),
            }
        })
        .collect()
}

/// Every rate-limit zone with its limit and what it refused.
fn rate_limits(st: &super::AdminContext) -> Vec<RateLimitStatus> {
    let proxy = st.control.shared.state.load();
    proxy
        .zones
        .iter()
        .flatten()
        .map(|z| {
            let stats = z.zone.stats();
            RateLimitStatus {
                name: z.config.name.clone(),
                limit: z.config.kind.to_string(),
                cluster: z.config.cluster,
                keys: stats.keys,
                max_keys: z.zone.max_keys(),
                rejected: stats.rejected,
                evicted_live: stats.evicted_live,
            }
        })
        .collect()
}

/// This node: name, version, uptime, config and whether writes are on.
fn node_info(st: &super::AdminContext, snap: &Snapshot) -> NodeInfo {
    NodeInfo {
        name: snap.config.node.name.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_seconds: st.started.elapsed().as_secs(),
        started_at_unix_ms: st.started_unix_ms,
        config_source: snap.config.source.clone(),
        admin_writes: snap.config.admin.token.is_some(),
        cpu_percent: Some(st.status_cpu.percent(st.started.elapsed().as_secs_f64())),
        memory_bytes: super::prometheus::resident_memory_bytes(),
        drain: super::node::drain_status(&st.control).unwrap_or_default(),
    }
}

/// The node-wide counters now and the sampler's rates.
fn totals(st: &super::AdminContext, rates: &Rates) -> Totals {
    Totals {
        requests: COUNTERS.requests.load(Ordering::Relaxed),
        requests_per_second: rates.requests_per_second,
        responses_5xx: COUNTERS.responses[5].load(Ordering::Relaxed),
        error_rate: rates.error_rate,
        active_connections: COUNTERS.active_connections.load(Ordering::Relaxed),
        websocket_tunnels: COUNTERS.websocket_tunnels.load(Ordering::Relaxed),
        retries: COUNTERS.retries.load(Ordering::Relaxed),
        rate_limited: Some(
            st.control.shared.state.load().zones.iter().flatten().map(|z| z.zone.stats().rejected).sum(),
        ),
        p50_ms: rates.p50_ms,
        p95_ms: rates.p95_ms,
        p99_ms: rates.p99_ms,
    }
}

/// Every pool with its servers; the sessions per server where the pool has
/// affinity, and the nodes' votes when this node is in a cluster.
fn pools_status(st: &super::AdminContext, snap: &Snapshot, rates: &Rates) -> Vec<PoolStatus> {
    let now = crate::clock::now_ms();
    let sessions = st.control.sessions();
    let view = st.control.cluster().map(|c| c.view.clone());
    snap.pools
        .iter()
        .map(|p| {
            let counts = match (&sessions, &p.cfg.affinity) {
                (Some(s), Some(_)) => Some(s.table.counts_per_server(&p.cfg.name)),
                _ => None,
            };
            let servers =
                p.servers.iter().map(|s| server_status(p, s, counts.as_ref(), rates, view.as_deref(), now)).collect();
            PoolStatus {
                name: p.cfg.name.clone(),
                balance: p.cfg.balance.to_string(),
                available: p.available_count(now),
                total: p.servers.len(),
                servers,
            }
        })
        .collect()
}

/// One server as this node sees it: state, weights, load, rates, the last
/// check, and how many nodes see it up (peers' votes plus this node's own).
fn server_status(
    p: &Pool,
    s: &Server,
    counts: Option<&HashMap<String, usize>>,
    rates: &Rates,
    view: Option<&ClusterView>,
    now: u64,
) -> ServerStatus {
    let state = &s.state;
    let admin = state.admin_state();
    let summary = server_summary(state, admin, now);
    let r = rates.servers.get(&(p.cfg.name.clone(), s.name.clone())).copied().unwrap_or_default();
    let last_check = last_check(state);
    let votes = view.map(|v| {
        let (up, reported) = v.peer_votes(&p.cfg.name, &s.name);
        let local = state.is_up() && admin != AdminState::Maintenance;
        (up + usize::from(local), reported + 1)
    });
    ServerStatus {
        name: s.name.clone(),
        addr: s.addr.to_string(),
        backup: s.backup,
        state: summary.into(),
        health: if state.is_up() { "up" } else { "down" }.into(),
        admin: admin.as_str().into(),
        weight: state.base_weight(),
        effective_weight: state.effective_weight(),
        active_connections: state.in_flight.load(Ordering::Relaxed),
        sessions: counts.map(|c| c.get(&s.name).copied().unwrap_or(0)),
        requests_total: state.stats.total_responses(),
        requests_per_second: r.requests_per_second,
        p50_ms: r.p50_ms,
        p95_ms: r.p95_ms,
        p99_ms: r.p99_ms,
        responses_5xx: state.stats.responses[5].load(Ordering::Relaxed),
        responses_5xx_per_second: r.responses_5xx_per_second,
        retries: state.stats.retries.load(Ordering::Relaxed),
        websocket_tunnels: state.stats.tunnels.load(Ordering::Relaxed),
        last_check,
        checks_ok: state.stats.checks_ok.load(Ordering::Relaxed),
        checks_failed: state.stats.checks_failed.load(Ordering::Relaxed),
        passive_failures: state.passive.failures_total(),
        consecutive_failures: state.stats.consecutive_failures.load(Ordering::Relaxed),
        changed_at_unix_ms: state.changed_at_unix_ms.load(Ordering::Relaxed),
        nodes_up: votes.map(|(up, _)| up),
        nodes_reporting: votes.map(|(_, reporting)| reporting),
        active: state.active_primary.load(Ordering::Relaxed),
    }
}

/// A server's state in one word: what an operator set comes first, then
/// active health, then passive health.
fn server_summary(state: &ServerState, admin: AdminState, now: u64) -> &'static str {
    match admin {
        AdminState::Maintenance => "maintenance",
        AdminState::Draining => "draining",
        AdminState::Normal if !state.is_up() => "down",
        AdminState::Normal if state.passive.is_down(now) => "out",
        AdminState::Normal => "up",
    }
}

/// The result of the server's last active check, if it has been checked.
fn last_check(state: &ServerState) -> Option<CheckResult> {
    match state.stats.last_check.load(Ordering::Relaxed) {
        0 => None,
        v => Some(CheckResult {
            ok: v == 1,
            latency_ms: state.stats.last_check_latency_us.load(Ordering::Relaxed) as f64 / 1000.0,
        }),
    }
}

/// Writes a probe record through the store's writer and waits for it to be
/// committed (off the runtime), then reads the table. Degraded while the
/// file cannot be written (the node keeps serving from memory), when the
/// probe takes over a second, and when a damaged file was moved aside at
/// start (until a restart, or in a cluster until the table was fetched from
/// a peer).
async fn store_check(st: &super::AdminContext) -> Option<StoreCheck> {
    let sessions = st.control.sessions()?;
    let started = std::time::Instant::now();
    let probe = crate::sessions::SessionRecord {
        key: "probe".into(),
        pool: "__health".into(),
        server: "-".into(),
        // Already expired: a restart never loads it into the table.
        expires_at_ms: crate::sessions::unix_now_ms(),
        version: sessions.table.clock().now(),
        origin: sessions.table.node().to_string(),
        tombstone: false,
    };
    let s2 = sessions.clone();
    let written = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        tokio::task::spawn_blocking(move || s2.store.put(probe).and_then(|_| s2.store.flush())),
    )
    .await;
    let _ = sessions.table.get("__health", "probe", crate::sessions::unix_now_ms());
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let probe_error = match written {
        Ok(Ok(Ok(()))) => None,
        Ok(Ok(Err(e))) => Some(e.to_string()),
        Ok(Err(e)) => Some(format!("probe task failed: {e}")),
        Err(_) => Some("the store did not commit within 3 s".to_string()),
    };
    let error = sessions.store.problem().map(|p| p.error).or(probe_error);
    let moved_aside =
        sessions.moved_aside().map(|m| MovedAsideInfo { to: m.to.display().to_string(), reason: m.reason });
    let stats = sessions.store.stats();
    let status = if error.is_some() || moved_aside.is_some() || latency_ms > 1000.0 { "degraded" } else { "healthy" };
    Some(StoreCheck {
        status: status.into(),
        file: sessions.path().display().to_string(),
        latency_ms,
        records: sessions.table.len(),
        commit_errors: stats.commit_errors,
        pending: stats.pending,
        error,
        moved_aside,
    })
}
