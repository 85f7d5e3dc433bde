//! The node as a whole: `POST /api/v1/node/drain` (optional body
//! `{"over": "90s"}`) and `POST /api/v1/node/undrain`, behind the admin
//! token, answered with the node's draining state ([`NodeDrain`]); and that
//! state for status and health.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{authorize, control_error, error, unexpected, Shared};
use crate::api::NodeDrain;
use crate::control::{Command, Control, Done, DrainState};

/// The body of `POST /api/v1/node/drain`; every field optional.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DrainBody {
    /// The window over which tunnels are shed (default `limits.shed_over`).
    over: Option<String>,
}

/// The API's view of a drain state.
fn shown(state: Option<DrainState>, was: Option<Option<DrainState>>) -> NodeDrain {
    NodeDrain {
        draining: state.is_some(),
        since_unix_ms: state.map(|s| s.since_unix_ms),
        over_ms: state.map(|s| s.over.as_millis() as u64),
        was_draining: was.map(|w| w.is_some()),
    }
}

/// The node's draining state now (status, health).
pub fn drain_status(control: &Control) -> Option<NodeDrain> {
    control.drain_state().map(|s| shown(Some(s), None))
}

pub async fn drain(State(st): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(r) = authorize(&st, &headers) {
        return *r;
    }
    let over = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let parsed = match serde_json::from_slice::<DrainBody>(&body) {
            Ok(b) => b.over,
            Err(e) => {
                let msg = format!("expected no body or a JSON body such as {{\"over\": \"90s\"}}: {e}");
                return error(StatusCode::BAD_REQUEST, msg, vec![]);
            }
        };
        match parsed.as_deref().map(crate::config::units::parse_duration) {
            None => None,
            Some(Ok(d)) => Some(d),
            Some(Err(e)) => return error(StatusCode::BAD_REQUEST, format!("over: {e}"), vec![]),
        }
    };
    match st.control.execute(Command::DrainNode { over }).await {
        Ok(Done::NodeDrain { was, now }) => Json(shown(now, Some(was))).into_response(),
        Ok(other) => unexpected(other),
        Err(e) => control_error(e),
    }
}

pub async fn undrain(State(st): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&st, &headers) {
        return *r;
    }
    match st.control.execute(Command::UndrainNode).await {
        Ok(Done::NodeDrain { was, now }) => Json(shown(now, Some(was))).into_response(),
        Ok(other) => unexpected(other),
        Err(e) => control_error(e),
    }
}
