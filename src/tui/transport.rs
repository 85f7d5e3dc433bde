//! The dashboard's only way to the node: the admin HTTP API through
//! [`AdminClient`], so `top` works against a local node or any node it can
//! reach. Turns answers into the app's vocabulary ([`SessionsAnswer`],
//! [`LookupAnswer`], an action's answer in words) and errors into one line.

use std::time::Duration;

use http::Method;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use super::app::{Action, LookupAnswer, SessionsAnswer};
use crate::api::{ActionResult, SessionRecordView, SessionsView, Status};
use crate::ctl::{AdminClient, CtlError};

/// Longer than a poll interval would be pointless: the next poll follows.
const TIMEOUT: Duration = Duration::from_secs(3);
/// Reload validates and applies a whole config; give it longer.
const ACTION_TIMEOUT: Duration = Duration::from_secs(15);

pub struct Transport {
    polls: AdminClient,
    actions: AdminClient,
}

impl Transport {
    pub fn new(admin_url: &str, token: Option<String>) -> Transport {
        Transport {
            // Reads never send the token: they do not need it.
            polls: AdminClient::new(admin_url, None, TIMEOUT),
            actions: AdminClient::new(admin_url, token, ACTION_TIMEOUT),
        }
    }

    /// `GET /api/v1/status`.
    pub async fn status(&self) -> Result<Status, String> {
        self.polls.status().await.map(|(s, _)| s).map_err(|e| e.to_string())
    }

    /// `GET /api/v1/sessions`; 404 means no pool has affinity.
    pub async fn sessions(&self) -> Result<SessionsAnswer, String> {
        match self.polls.json::<SessionsView>(Method::GET, "/api/v1/sessions", None).await {
            Ok((v, _)) => Ok(SessionsAnswer::View(v)),
            Err(CtlError::Api { status: 404, message, .. }) => Ok(SessionsAnswer::NoAffinity(message)),
            Err(e) => Err(e.to_string()),
        }
    }

    /// `GET /api/v1/sessions?key=K`; 404 means no live session for the key.
    pub async fn lookup(&self, key: &str) -> Result<LookupAnswer, String> {
        let path = format!("/api/v1/sessions?key={}", utf8_percent_encode(key, NON_ALPHANUMERIC));
        match self.polls.json::<Vec<SessionRecordView>>(Method::GET, &path, None).await {
            Ok((v, _)) => Ok(LookupAnswer::Found(v)),
            Err(CtlError::Api { status: 404, message, .. }) => Ok(LookupAnswer::NotFound(message)),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Sends a write action; `Ok` is the API's answer in words.
    pub async fn act(&self, action: &Action) -> Result<String, String> {
        let server_path = |s: &super::app::ServerRef| {
            format!(
                "/api/v1/pools/{}/servers/{}",
                utf8_percent_encode(&s.pool, NON_ALPHANUMERIC),
                utf8_percent_encode(&s.server, NON_ALPHANUMERIC)
            )
        };
        let answer = match action {
            Action::Drain(s) | Action::Maintenance(s) | Action::Enable(s) => {
                let verb = match action {
                    Action::Drain(_) => "drain",
                    Action::Maintenance(_) => "maintenance",
                    _ => "enable",
                };
                let path = format!("{}/{verb}", server_path(s));
                self.actions
                    .json::<ActionResult>(Method::POST, &path, None)
                    .await
                    .map(|(r, _)| format!("{}/{}: {} -> {}", r.pool, r.server, r.from, r.to))
            }
            Action::Weight(s, w) => {
                let path = format!("{}/weight", server_path(s));
                let body = serde_json::json!({ "weight": w }).to_string();
                self.actions
                    .json::<ActionResult>(Method::PUT, &path, Some(body))
                    .await
                    .map(|(r, _)| format!("{}/{}: weight {} -> {}", r.pool, r.server, r.from, r.to))
            }
            Action::Reload => {
                self.actions.json::<serde_json::Value>(Method::POST, "/api/v1/reload", None).await.map(|(v, _)| {
                    let mut s = format!("reloaded {}", v["source"].as_str().unwrap_or("the config"));
                    let warnings: Vec<&str> =
                        v["warnings"].as_array().into_iter().flatten().filter_map(|w| w.as_str()).collect();
                    if !warnings.is_empty() {
                        s.push_str(&format!("; needs a restart: {}", warnings.join("; ")));
                    }
                    s
                })
            }
        };
        answer.map_err(|e| one_line(&e.to_string()))
    }
}

/// API errors may list details on several lines; the footer has one.
fn one_line(s: &str) -> String {
    s.split('\n').map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}
