//! The admin HTTP API (axum) on its own listener: node health, Prometheus
//! metrics, status, and write actions (drain, maintenance, enable, weight,
//! reload, draining the whole node) behind a bearer token; and the stats page ([`page`]) that reads
//! and drives it from a browser.
//!
//! Reads the snapshot and counters; writes only through [`Control`]. Never
//! on the request path.

pub mod metric_families;
mod node;
pub mod page;
pub mod prometheus;
pub mod sampler;
mod sessions;
mod status;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::{ActionResult, ApiError};
use crate::control::{Command, Control, ControlError, Done};
use crate::health::AdminState;

pub use sampler::Sampler;

/// What the handlers share.
pub struct AdminContext {
    pub control: Arc<Control>,
    pub sampler: Arc<Sampler>,
    pub cpu: prometheus::CpuMeter,
    /// CPU use between status requests (the page's), apart from `cpu`,
    /// which measures between Prometheus scrapes.
    pub status_cpu: prometheus::CpuMeter,
    pub started: Instant,
    pub started_unix_ms: u64,
}

type Shared = Arc<AdminContext>;

/// Serves the admin API until `shutdown` turns true.
pub async fn serve(listener: TcpListener, control: Arc<Control>, mut shutdown: watch::Receiver<bool>) {
    let sampler = Arc::new(Sampler::default());
    tokio::spawn(sampler::run(sampler.clone(), Arc::downgrade(&control)));
    let state = Arc::new(AdminContext {
        control,
        sampler,
        cpu: prometheus::CpuMeter::default(),
        status_cpu: prometheus::CpuMeter::default(),
        started: Instant::now(),
        started_unix_ms: crate::health::server::unix_ms(),
    });
    let app = router(state);
    let stop = async move {
        let _ = shutdown.wait_for(|s| *s).await.map(|_| ());
    };
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
        tracing::error!(error = %e, "admin API stopped");
    }
}

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/", get(page::to_page))
        .route("/stats", get(page::file))
        .route("/stats/", get(page::to_page))
        .route("/stats/{file}", get(page::file))
        .route("/health", get(status::plain_health))
        .route("/api/health", get(status::basic_health))
        .route("/api/health/detailed", get(status::detailed_health))
        .route("/api/health/websocket", get(status::websocket_health))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status::status))
        .route("/api/v1/members", get(status::members))
        .route("/api/v1/pools/{pool}/servers/{server}/weight", put(set_weight))
        .route("/api/v1/pools/{pool}/servers/{server}/{action}", post(server_action))
        .route("/api/v1/reload", post(reload))
        .route("/api/v1/node/drain", post(node::drain))
        .route("/api/v1/node/undrain", post(node::undrain))
        .route("/api/v1/sessions", get(sessions::list))
        .route("/api/v1/sessions/{key}", axum::routing::delete(sessions::unpin))
        .route("/api/v1/sessions/{key}/move", post(sessions::move_to))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint".into(), vec![]) })
        .with_state(state)
}

async fn metrics(State(st): State<Shared>) -> Response {
    let snap = st.control.snapshot();
    let proxy_state = st.control.shared.state.load_full();
    let cpu = st.cpu.percent(st.started.elapsed().as_secs_f64());
    let sessions = st.control.sessions();
    let mut body = prometheus::render(&snap, &proxy_state, sessions.as_deref(), cpu);
    let cluster = status::cluster_status(&st.control).await;
    let stats = st.control.cluster().map(|rt| rt.cluster.transport_stats()).unwrap_or_default();
    prometheus::render_cluster(&mut body, cluster.as_ref().map(|c| (c, stats)));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

pub(crate) fn error(status: StatusCode, error: String, details: Vec<String>) -> Response {
    (status, Json(ApiError { error, details })).into_response()
}

/// `Ok` when the request carries the configured bearer token.
pub(crate) fn authorize(st: &AdminContext, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let snap = st.control.snapshot();
    let Some(token) = snap.config.admin.token.as_deref() else {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "write actions are off: no admin token is configured (set admin.token_file)".into(),
            vec![],
        )));
    };
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if crate::cluster::secret::ct_eq(g.trim().as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(Box::new(unauthorized("wrong admin token"))),
        None => Err(Box::new(unauthorized("missing admin token: send Authorization: Bearer <token>"))),
    }
}

fn unauthorized(msg: &str) -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, msg.into(), vec![]);
    r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    r
}

pub(crate) fn control_error(e: ControlError) -> Response {
    match e {
        ControlError::UnknownPool { .. }
        | ControlError::UnknownServer { .. }
        | ControlError::NoSessions
        | ControlError::NoSession { .. }
        | ControlError::NoAffinityPool { .. }
        | ControlError::NoSessionServer { .. } => error(StatusCode::NOT_FOUND, e.to_string(), vec![]),
        ControlError::BadWeight(_) | ControlError::BadShedOver(_) => {
            error(StatusCode::BAD_REQUEST, e.to_string(), vec![])
        }
        ControlError::Sessions(_) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string(), vec![]),
        ControlError::Config(errs) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the config is invalid; the running config is kept".into(),
            errs.0.iter().map(|x| x.to_string()).collect(),
        ),
    }
}

/// A command answered with the wrong kind of [`Done`]: a bug, answered 500.
pub(crate) fn unexpected(done: Done) -> Response {
    tracing::error!(?done, "the control plane answered a command with an unexpected result");
    error(StatusCode::INTERNAL_SERVER_ERROR, "internal error: unexpected result of the command".into(), vec![])
}

async fn server_action(
    State(st): State<Shared>,
    Path((pool, server, action)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&st, &headers) {
        return *r;
    }
    let to = match action.as_str() {
        "drain" => AdminState::Draining,
        "maintenance" => AdminState::Maintenance,
        "enable" => AdminState::Normal,
        other => {
            return error(
                StatusCode::NOT_FOUND,
                format!("unknown action \"{other}\": use drain, maintenance or enable"),
                vec![],
            )
        }
    };
    let command = Command::SetAdminState { pool: pool.clone(), server: server.clone(), state: to };
    match st.control.execute(command).await {
        Ok(Done::AdminState { was }) => {
            Json(ActionResult { pool, server, from: was.as_str().into(), to: to.as_str().into() }).into_response()
        }
        Ok(other) => unexpected(other),
        Err(e) => control_error(e),
    }
}

#[derive(serde::Deserialize)]
struct WeightBody {
    weight: u32,
}

async fn set_weight(
    State(st): State<Shared>,
    Path((pool, server)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = authorize(&st, &headers) {
        return *r;
    }
    let weight = match serde_json::from_slice::<WeightBody>(&body) {
        Ok(b) => b.weight,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected a JSON body such as {{\"weight\": 3}}: {e}"),
                vec![],
            )
        }
    };
    match st.control.execute(Command::SetWeight { pool: pool.clone(), server: server.clone(), weight }).await {
        Ok(Done::Weight { was }) => {
            Json(ActionResult { pool, server, from: was.to_string(), to: weight.to_string() }).into_response()
        }
        Ok(other) => unexpected(other),
        Err(e) => control_error(e),
    }
}

async fn reload(State(st): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&st, &headers) {
        return *r;
    }
    match st.control.execute(Command::Reload).await {
        Ok(Done::Reloaded(report)) => Json(report).into_response(),
        Ok(other) => unexpected(other),
        Err(e) => control_error(e),
    }
}
