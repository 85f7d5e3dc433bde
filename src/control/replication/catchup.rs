//! Catch-up: the whole session table, peer to peer, for records that are
//! no longer (or not yet) in gossip. Gossip carries only a bounded window of
//! recent records (TTL keys), so a node that joins, restarts, or that
//! chitchat reset (e.g. after a healed partition) fetches the table at once
//! instead of waiting for records to be re-gossiped.
//!
//! - Serve: [`serve`], one endpoint `GET /cluster/v1/sessions` on the gossip
//!   port over TCP, answering only the bearer token derived from the
//!   cluster secret. Body: one record per line, `{gossip key}\t{gossip
//!   value}`, the same encodings as gossip ([`super::record`]), so any name
//!   round-trips.
//! - Fetch: [`first_sync`] when a node starts with seeds or with a session
//!   store that was damaged and moved aside (from the first live peer that
//!   answers), [`refetch_all`] when gossip asks for a
//!   catch-up (from every live peer, since records written on either side
//!   may have left the gossip window). Records are merged with the same
//!   last-writer-wins rule as gossiped ones.
//!
//! [`ClusterView::syncing`] is true while a catch-up is due or running; the
//! outcome is kept in the view for the admin API.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use tokio::sync::watch;

use super::record;
use super::view::ClusterView;
use crate::api::SyncStatus;
use crate::control::Control;
use crate::sessions::SessionRecord;

const PATH: &str = "/cluster/v1/sessions";
/// Largest table accepted from a peer (about 10 million records).
const BODY_LIMIT: usize = 1 << 30;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a starting node waits for a first peer before it stops
/// reporting `syncing` and serves with what it has.
const FIRST_PEER_WAIT: Duration = Duration::from_secs(15);

#[derive(Clone)]
struct ApiState {
    control: Weak<Control>,
    token: Arc<str>,
}

/// Serves the cluster API until `stop` turns true.
pub(super) async fn serve(
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
    if !given.is_some_and(|g| crate::cluster::secret::ct_eq(g.trim().as_bytes(), st.token.as_bytes())) {
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
async fn fetch(addr: SocketAddr, token: &str) -> Result<Vec<SessionRecord>, String> {
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

/// The initial catch-up of a node that starts with seeds: waits for a
/// first live peer, then fetches; retries while peers fail, for a bounded time.
pub(super) async fn first_sync(view: Weak<ClusterView>, token: Arc<str>, control: Weak<Control>) {
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (Some(view), Some(control)) = (view.upgrade(), control.upgrade()) else { return };
        if !view.live_peers().is_empty() {
            match sync_from_peers(&view, &token, &control, false).await {
                Ok(_) => {
                    view.first_sync_pending.store(false, Ordering::Relaxed);
                    return;
                }
                Err(e) => tracing::warn!("session catch-up failed, retrying: {e}"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if started.elapsed() > FIRST_PEER_WAIT {
            let error =
                format!("no peer answered within {}s; serving with the local session table", FIRST_PEER_WAIT.as_secs());
            tracing::warn!("{error}");
            view.set_sync_error(error);
            view.syncing.store(false, Ordering::Relaxed);
            view.first_sync_pending.store(false, Ordering::Relaxed);
            return;
        }
    }
}

/// Gossip asked for a catch-up (this node was reset or fell behind): fetches
/// the table from every live peer, in the background.
pub(super) fn refetch_all(view: &Arc<ClusterView>, token: &Arc<str>, control: &Arc<Control>) {
    tracing::info!("gossip asked for a catch-up (this node was reset or fell behind): fetching the session table");
    view.syncing.store(true, Ordering::Relaxed);
    let (view, token, control) = (Arc::downgrade(view), token.clone(), Arc::downgrade(control));
    tokio::spawn(async move {
        if let (Some(view), Some(control)) = (view.upgrade(), control.upgrade()) {
            // A failure leaves a starting node's first catch-up due.
            if sync_from_peers(&view, &token, &control, true).await.is_err()
                && !view.first_sync_pending.load(Ordering::Relaxed)
            {
                view.syncing.store(false, Ordering::Relaxed);
            }
        }
    });
}

/// Fetches the session table from live peers: from the first that answers,
/// or (`all`) from every live peer.
async fn sync_from_peers(view: &ClusterView, token: &str, control: &Control, all: bool) -> Result<SyncStatus, String> {
    view.syncing.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let mut last_err = "no live peer".to_string();
    let mut info = SyncStatus::default();
    let mut from = Vec::new();
    for peer in view.live_peers() {
        match fetch(peer.gossip_addr, token).await {
            Ok(records) => {
                let n = records.len();
                let applied = merge(control, records).await;
                crate::metrics::COUNTERS.sessions_merged.fetch_add(applied as u64, Ordering::Relaxed);
                tracing::info!(peer = %peer, records = n, applied, "session table caught up");
                info.records += n;
                info.applied += applied;
                from.push(peer.name.to_string());
                if !all {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(peer = %peer, "session catch-up from this peer failed: {e}");
                last_err = format!("{peer}: {e}");
            }
        }
    }
    if from.is_empty() {
        view.set_sync_error(last_err.clone());
        return Err(last_err);
    }
    if let Some(s) = control.sessions() {
        s.refilled();
    }
    info.peer = Some(from.join(","));
    info.took_ms = started.elapsed().as_millis() as u64;
    info.at_unix_ms = crate::sessions::unix_now_ms();
    view.set_synced(info.clone());
    view.syncing.store(false, Ordering::Relaxed);
    Ok(info)
}

/// Merges a peer's table into the session table and the store, off the
/// runtime; how many records won.
async fn merge(control: &Control, records: Vec<SessionRecord>) -> usize {
    let Some(s) = control.sessions() else { return 0 };
    let now = crate::sessions::unix_now_ms();
    tokio::task::spawn_blocking(move || s.merge_remote_blocking(records, now)).await.unwrap_or(0)
}
