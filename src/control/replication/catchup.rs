//! The cluster API: one endpoint, `GET /cluster/v1/sessions`, that hands a
//! peer the full session table (tombstones included) so that a node that
//! joins, restarts or was reset by gossip catches up at once instead of
//! waiting for records to be re-gossiped. It listens on the gossip port over
//! TCP and answers only requests that carry the bearer token derived from
//! the cluster secret.
//!
//! Body: one record per line, `{gossip key}\t{gossip value}`, the same
//! encodings as gossip ([`super::record`]), so any name round-trips.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use tokio::sync::watch;

use super::record;
use crate::control::Control;
use crate::sessions::SessionRecord;

pub const PATH: &str = "/cluster/v1/sessions";
/// Largest table accepted from a peer (about 10 million records).
const BODY_LIMIT: usize = 1 << 30;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone)]
struct ApiState {
    control: Weak<Control>,
    token: Arc<str>,
}

/// Serves the cluster API until `stop` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    control: Weak<Control>,
    token: Arc<str>,
    mut stop: watch::Receiver<bool>,
) {
    let app = Router::new().route(PATH, get(sessions)).with_state(ApiState { control, token });
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
        tracing::error!("cluster API stopped: {e}");
    }
}

async fn sessions(State(st): State<ApiState>, headers: HeaderMap) -> Response {
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if !given.is_some_and(|g| crate::admin::ct_eq(g.trim().as_bytes(), st.token.as_bytes())) {
        tracing::warn!("cluster API: a request without the cluster secret's token was refused");
        return (StatusCode::UNAUTHORIZED, "cluster API: missing or wrong token (is the cluster secret the same?)\n")
            .into_response();
    }
    let Some(control) = st.control.upgrade() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    };
    let Some(sessions) = control.sessions() else {
        // No pool has affinity: an empty table.
        return (StatusCode::OK, "").into_response();
    };
    let body =
        tokio::task::spawn_blocking(move || record::encode_lines(sessions.table.snapshot())).await.unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// Fetches a peer's table from its cluster API at `addr`.
pub async fn fetch(addr: SocketAddr, token: &str) -> Result<Vec<SessionRecord>, String> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connecting to {addr}/tcp timed out"))?
        .map_err(|e| format!("cannot connect to {addr}/tcp: {e}"))?;
    let _ = stream.set_nodelay(true);
    let exchange = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(conn);
        let req = http::Request::get(PATH)
            .header(header::HOST, addr.to_string())
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| format!("request: {e}"))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), BODY_LIMIT)
            .collect()
            .await
            .map_err(|e| format!("reading the table: {e}"))?
            .to_bytes();
        if status == StatusCode::UNAUTHORIZED {
            return Err("refused (401): the peer has another cluster secret".to_string());
        }
        if !status.is_success() {
            return Err(format!("status {status}: {}", String::from_utf8_lossy(&body).trim()));
        }
        Ok(body)
    };
    let body = tokio::time::timeout(FETCH_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no complete answer within {}s", FETCH_TIMEOUT.as_secs()))??;
    let (records, bad) = tokio::task::spawn_blocking(move || record::decode_lines(&String::from_utf8_lossy(&body)))
        .await
        .map_err(|e| e.to_string())?;
    if bad > 0 {
        tracing::warn!(peer = %addr, bad, "malformed lines in a peer's session table were skipped");
    }
    Ok(records)
}
