//! `/api/v1/sessions`: counts per server, one record by key, and the write
//! actions unpin (DELETE) and move (POST .../move), which need the token.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::{authorize, control_error, error, unexpected, Shared};
use crate::api::{SessionRecordView, SessionsView};
use crate::control::{Command, ControlError, Done};
use crate::sessions::{unix_now_ms, SessionRecord};

#[derive(Deserialize)]
pub struct KeyQuery {
    key: Option<String>,
}

fn view(r: &SessionRecord) -> SessionRecordView {
    SessionRecordView {
        key: r.key.clone(),
        pool: r.pool.clone(),
        server: r.server.clone(),
        expires_at_unix_ms: r.expires_at_ms,
        version: r.version.0,
        origin: r.origin.clone(),
    }
}

fn no_sessions() -> Response {
    control_error(ControlError::NoSessions)
}

pub async fn list(State(st): State<Shared>, Query(q): Query<KeyQuery>) -> Response {
    let Some(sessions) = st.control.sessions() else { return no_sessions() };
    let snap = st.control.snapshot();
    let pools: Vec<&str> =
        snap.pools.iter().filter(|p| p.cfg.affinity.is_some()).map(|p| p.cfg.name.as_str()).collect();
    if let Some(key) = q.key {
        let now = unix_now_ms();
        let records: Vec<SessionRecordView> = pools
            .iter()
            .filter_map(|p| sessions.table.record(p, &key))
            .filter(|r| r.is_live(now) && !r.tombstone)
            .map(|r| view(&r))
            .collect();
        if records.is_empty() {
            return error(StatusCode::NOT_FOUND, format!("no session for key \"{key}\""), vec![]);
        }
        return Json(records).into_response();
    }
    let mut counts = BTreeMap::new();
    for p in pools {
        let per_server: BTreeMap<String, usize> = sessions.table.counts_per_server(p).into_iter().collect();
        counts.insert(p.to_string(), per_server);
    }
    Json(SessionsView { total: sessions.table.len(), pools: counts }).into_response()
}

pub async fn unpin(State(st): State<Shared>, Path(key): Path<String>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&st, &headers) {
        return *r;
    }
    match st.control.execute(Command::UnpinSession { key: key.clone() }).await {
        Ok(Done::Unpinned { pools }) => Json(serde_json::json!({ "key": key, "unpinned_from": pools })).into_response(),
        Ok(other) => unexpected(other),
        Err(e) => control_error(e),
    }
}

#[derive(Deserialize)]
pub struct MoveBody {
    pool: String,
    server: String,
}

pub async fn move_to(
    State(st): State<Shared>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = authorize(&st, &headers) {
        return *r;
    }
    if st.control.sessions().is_none() {
        return no_sessions();
    }
    let target: MoveBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected a JSON body such as {{\"pool\": \"agents\", \"server\": \"s2\"}}: {e}"),
                vec![],
            )
        }
    };
    match st.control.execute(Command::MoveSession { key, pool: target.pool, server: target.server }).await {
        Ok(Done::Moved(rec)) => Json(view(&rec)).into_response(),
        Ok(other) => unexpected(other),
        Err(e) => control_error(e),
    }
}
