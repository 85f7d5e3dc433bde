//! Clients of the admin API for operators: `sysmanage-node ctl ...` (tables
//! or JSON) and `sysmanage-node health` (the seed's monitoring script as a
//! command, with exit codes 0 healthy, 1 degraded, 2 unhealthy/unreachable,
//! 3 draining).
//!
//! Talks HTTP to any node it can reach; knows nothing of the node's
//! internals beyond the [`crate::api`] types.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::api::{ActionResult, ApiError, HealthReport, NodeDrain, Status};
use crate::cli::{CtlAction, DEFAULT_TOKEN_FILE};

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("cannot reach the admin API at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("{url} answered {status}: {message}")]
    Api { url: String, status: u16, message: String },
    #[error("unexpected answer from {url}: {detail}")]
    Decode { url: String, detail: String },
    #[error("cannot read the admin token file {path}: {detail}")]
    Token { path: String, detail: String },
}

/// A small HTTP client for the admin API.
pub struct AdminClient {
    base: String,
    token: Option<String>,
    timeout: Duration,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl AdminClient {
    pub fn new(base: &str, token: Option<String>, timeout: Duration) -> Self {
        AdminClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            timeout,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Sends a request; returns the status and body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<(StatusCode, Bytes), CtlError> {
        let url = format!("{}{}", self.base, path);
        let mut req = Request::builder().method(method).uri(&url).header(header::USER_AGENT, "sysmanage-node-ctl");
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| CtlError::Unreachable { url: url.clone(), detail: e.to_string() })?;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| CtlError::Unreachable { url: url.clone(), detail: crate::model::error_chain(&e) })?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| CtlError::Unreachable { url: url.clone(), detail: e.to_string() })?
                .to_bytes();
            Ok((status, body))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(CtlError::Unreachable { url, detail: format!("no answer within {:?}", self.timeout) }),
        }
    }

    /// GET or write, decoding a JSON answer; API errors become [`CtlError::Api`].
    pub async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<(T, Bytes), CtlError> {
        let url = format!("{}{}", self.base, path);
        let (status, bytes) = self.send(method, path, body).await?;
        if !status.is_success() {
            let message = match serde_json::from_slice::<ApiError>(&bytes) {
                Ok(e) if e.details.is_empty() => e.error,
                Ok(e) => format!("{}\n  {}", e.error, e.details.join("\n  ")),
                Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
            };
            return Err(CtlError::Api { url, status: status.as_u16(), message });
        }
        let value = serde_json::from_slice(&bytes).map_err(|e| CtlError::Decode { url, detail: e.to_string() })?;
        Ok((value, bytes))
    }

    pub async fn status(&self) -> Result<(Status, Bytes), CtlError> {
        self.json(Method::GET, "/api/v1/status", None).await
    }
}

/// Reads the token: the given file, else the default file if it exists.
pub fn read_token(file: Option<&Path>) -> Result<Option<String>, CtlError> {
    let (path, required) = match file {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_TOKEN_FILE), false),
    };
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(Some(t.trim().to_string())),
        Err(_) if !required => Ok(None),
        Err(e) => Err(CtlError::Token { path: path.display().to_string(), detail: e.to_string() }),
    }
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |x| format!("{x:.1}"))
}

/// The `ctl backends` table.
pub fn backends_table(s: &Status) -> String {
    let mut out = String::new();
    for p in &s.pools {
        out.push_str(&format!("pool {} ({}, {}/{} available)\n", p.name, p.balance, p.available, p.total));
        out.push_str(&format!(
            "  {:<22} {:<12} {:>6} {:>6} {:>6} {:>9} {:>8} {:>8} {:>10} {:>5}\n",
            "SERVER", "STATE", "WEIGHT", "EFF", "ACTIVE", "REQ/S", "P50ms", "P95ms", "CHECK", "FAILS"
        ));
        for sv in &p.servers {
            let check = match &sv.last_check {
                None => "-".to_string(),
                Some(c) => format!("{} {:.1}ms", if c.ok { "ok" } else { "FAIL" }, c.latency_ms),
            };
            let name = if sv.backup { format!("{} (backup)", sv.name) } else { sv.name.clone() };
            out.push_str(&format!(
                "  {:<22} {:<12} {:>6} {:>6} {:>6} {:>9.1} {:>8} {:>8} {:>10} {:>5}\n",
                name,
                sv.state,
                sv.weight,
                sv.effective_weight,
                sv.active_connections,
                sv.requests_per_second,
                opt_ms(sv.p50_ms),
                opt_ms(sv.p95_ms),
                check,
                sv.consecutive_failures
            ));
        }
    }
    out
}

/// The `ctl status` summary.
pub fn status_text(s: &Status) -> String {
    let t = &s.totals;
    let mut out = format!(
        "node {} (version {}, up {}s, config {})\n",
        s.node.name, s.node.version, s.node.uptime_seconds, s.node.config_source
    );
    for l in &s.listeners {
        out.push_str(&format!("listener {} on {}\n", l.name, l.addr()));
    }
    out.push_str(&format!(
        "requests {} ({:.1}/s), 5xx rate {:.2}%, p50 {} ms, p95 {} ms, p99 {} ms\n",
        t.requests,
        t.requests_per_second,
        t.error_rate * 100.0,
        opt_ms(t.p50_ms),
        opt_ms(t.p95_ms),
        opt_ms(t.p99_ms)
    ));
    out.push_str(&format!(
        "connections {}, websocket tunnels {}, retries {}\n",
        t.active_connections, t.websocket_tunnels, t.retries
    ));
    out.push_str(&backends_table(s));
    if !s.events.is_empty() {
        out.push_str("recent events:\n");
        for e in s.events.iter().take(10) {
            let at = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(e.at_unix_ms));
            let who = match (&e.pool, &e.server) {
                (Some(p), Some(s)) => format!(" {p}/{s}"),
                (Some(p), None) => format!(" {p}"),
                _ => String::new(),
            };
            out.push_str(&format!("  {at} {}{who}: {}\n", e.kind, e.message));
        }
    }
    out
}

/// `ctl members`: one line per member.
pub fn members_table(c: &crate::api::ClusterStatus) -> String {
    let mut out = format!(
        "{} live, {} dead{}; datagrams dropped {} (auth failures {}); gossip state {} keys, {:.1} KiB\n",
        c.live,
        c.dead,
        if c.syncing { ", syncing sessions" } else { "" },
        c.datagrams_dropped,
        c.auth_failures,
        c.state_keys,
        c.state_bytes as f64 / 1024.0
    );
    out.push_str(&format!(
        "{:<16} {:<8} {:<21} {:>14} {:>10} {:>9} {:>11} {}\n",
        "NAME", "STATE", "ADDRESS", "GENERATION", "HEARD", "SESSIONS", "CONNECTIONS", "VERSION"
    ));
    for m in &c.members {
        let name = if m.is_self { format!("{} *", m.name) } else { m.name.clone() };
        let heard = m.heard(" ago");
        let num = |v: Option<u64>| v.map_or("-".to_string(), |n| n.to_string());
        out.push_str(&format!(
            "{:<16} {:<8} {:<21} {:>14} {:>10} {:>9} {:>11} {}\n",
            name,
            m.shown_state(),
            m.addr,
            m.generation,
            heard,
            num(m.sessions),
            num(m.connections),
            m.version.as_deref().unwrap_or("-")
        ));
    }
    out
}

/// Runs a `ctl` action; returns the exit code.
pub async fn run_ctl(admin: &str, token_file: Option<&Path>, json: bool, action: CtlAction) -> ExitCode {
    let result = async {
        let token = read_token(token_file)?;
        let c = AdminClient::new(admin, token, Duration::from_secs(10));
        action_output(&c, admin, json, action).await
    }
    .await;
    match result {
        Ok(out) => {
            print!("{out}");
            if !out.ends_with('\n') {
                println!();
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sysmanage-node ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Performs `action` through the admin API and returns what to print: the
/// answer as it came with `--json`, else a table or a line made from it.
async fn action_output(c: &AdminClient, admin: &str, json: bool, action: CtlAction) -> Result<String, CtlError> {
    let out = match action {
        CtlAction::Status => shown(json, c.status().await?, status_text),
        CtlAction::Backends => shown(json, c.status().await?, backends_table),
        CtlAction::Members => {
            let answer: (crate::api::ClusterStatus, _) = c.json(Method::GET, "/api/v1/members", None).await?;
            shown(json, answer, members_table)
        }
        CtlAction::Sessions { key } => sessions_output(c, admin, json, key.as_deref()).await?,
        CtlAction::Drain { ref pool, ref server }
        | CtlAction::Maintenance { ref pool, ref server }
        | CtlAction::Enable { ref pool, ref server } => {
            let verb = match action {
                CtlAction::Drain { .. } => "drain",
                CtlAction::Maintenance { .. } => "maintenance",
                _ => "enable",
            };
            let path = format!("{}/{verb}", server_path(pool, server));
            let answer: (ActionResult, _) = c.json(Method::POST, &path, None).await?;
            shown(json, answer, |r| format!("{}/{}: {} -> {}\n", r.pool, r.server, r.from, r.to))
        }
        CtlAction::Weight { pool, server, weight } => {
            let path = format!("{}/weight", server_path(&pool, &server));
            let body = serde_json::json!({ "weight": weight }).to_string();
            let answer: (ActionResult, _) = c.json(Method::PUT, &path, Some(body)).await?;
            shown(json, answer, |r| format!("{}/{}: weight {} -> {}\n", r.pool, r.server, r.from, r.to))
        }
        CtlAction::Reload => {
            let answer: (serde_json::Value, _) = c.json(Method::POST, "/api/v1/reload", None).await?;
            shown(json, answer, reload_text)
        }
        CtlAction::DrainNode { over } => {
            let body = over.map(|o| serde_json::json!({ "over": o }).to_string());
            let answer: (NodeDrain, _) = c.json(Method::POST, "/api/v1/node/drain", body).await?;
            shown(json, answer, drain_text)
        }
        CtlAction::UndrainNode => {
            let answer: (NodeDrain, _) = c.json(Method::POST, "/api/v1/node/undrain", None).await?;
            shown(json, answer, drain_text)
        }
    };
    Ok(out)
}

/// The admin API path of one server of a pool.
fn server_path(pool: &str, server: &str) -> String {
    format!("/api/v1/pools/{pool}/servers/{server}")
}

/// The answer's body as it came with `--json`, else `text` of the decoded
/// answer.
fn shown<T>(json: bool, (value, raw): (T, Bytes), text: impl FnOnce(&T) -> String) -> String {
    if json {
        String::from_utf8_lossy(&raw).into_owned()
    } else {
        text(&value)
    }
}

/// `ctl sessions`: the records of one key (`--key`), else the live
/// sessions per server of each pool.
async fn sessions_output(c: &AdminClient, admin: &str, json: bool, key: Option<&str>) -> Result<String, CtlError> {
    let path = match key {
        Some(k) => format!("/api/v1/sessions?key={}", percent_encode(k)),
        None => "/api/v1/sessions".to_string(),
    };
    let (v, raw): (serde_json::Value, _) = c.json(Method::GET, &path, None).await?;
    if json {
        Ok(String::from_utf8_lossy(&raw).into_owned())
    } else if key.is_some() {
        Ok(session_records_text(&v))
    } else {
        let view: crate::api::SessionsView = serde_json::from_value(v)
            .map_err(|e| CtlError::Decode { url: admin.to_string(), detail: e.to_string() })?;
        Ok(sessions_view_text(&view))
    }
}

/// One line per session record: key, pool and server, expiry and origin.
fn session_records_text(records: &serde_json::Value) -> String {
    let mut s = String::new();
    for r in records.as_array().into_iter().flatten() {
        s.push_str(&format!(
            "{} -> {}/{} (expires {}, origin {})\n",
            r["key"].as_str().unwrap_or("?"),
            r["pool"].as_str().unwrap_or("?"),
            r["server"].as_str().unwrap_or("?"),
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + Duration::from_millis(r["expires_at_unix_ms"].as_u64().unwrap_or(0))
            ),
            r["origin"].as_str().unwrap_or("?"),
        ));
    }
    s
}

/// The number of records, then the live sessions per server of each pool.
fn sessions_view_text(view: &crate::api::SessionsView) -> String {
    let mut s = format!("{} session records\n", view.total);
    for (pool, servers) in &view.pools {
        s.push_str(&format!("pool {pool}\n"));
        for (server, n) in servers {
            s.push_str(&format!("  {server:<24} {n}\n"));
        }
    }
    s
}

/// `ctl drain-node` and `ctl undrain-node`: the node's state now.
pub fn drain_text(d: &NodeDrain) -> String {
    let was = match d.was_draining {
        Some(true) => " (it was draining)",
        Some(false) => " (it was not draining)",
        None => "",
    };
    match (d.draining, d.over_ms) {
        (true, Some(ms)) => format!(
            "node draining{was}: health answers 503, WebSocket tunnels close spread over {}\n",
            humantime::format_duration(Duration::from_millis(ms))
        ),
        (true, None) => format!("node draining{was}\n"),
        (false, _) => format!("node not draining{was}: health answers as usual\n"),
    }
}

/// `ctl reload`: the config loaded, then its warnings.
fn reload_text(v: &serde_json::Value) -> String {
    let mut s = format!("reloaded {}\n", v["source"].as_str().unwrap_or("?"));
    for w in v["warnings"].as_array().into_iter().flatten() {
        s.push_str(&format!("warning: {}\n", w.as_str().unwrap_or("")));
    }
    s
}

/// `sysmanage-node health`: prints the body; exit 0 healthy, 1 degraded,
/// 2 unhealthy or unreachable, 3 draining.
pub async fn run_health(url: &str, retries: u32, timeout: f64) -> ExitCode {
    let timeout = Duration::from_secs_f64(timeout.clamp(0.1, 300.0));
    let (base, path) = split_url(url);
    let c = AdminClient::new(&base, None, timeout);
    let mut last_err = String::new();
    for attempt in 0..=retries {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        match c.send(Method::GET, &path, None).await {
            Ok((status, body)) => {
                println!("{}", String::from_utf8_lossy(&body).trim_end());
                let parsed: Option<HealthReport> = serde_json::from_slice(&body).ok();
                let verdict = parsed.map(|r| r.status).unwrap_or_default();
                return match (status.as_u16(), verdict.as_str()) {
                    (200, "healthy") => ExitCode::from(0),
                    (200, "degraded") => ExitCode::from(1),
                    (503, "draining") => {
                        eprintln!("sysmanage-node health: the node is draining (ctl undrain-node ends it)");
                        ExitCode::from(3)
                    }
                    _ => ExitCode::from(2),
                };
            }
            Err(e) => last_err = e.to_string(),
        }
    }
    eprintln!("sysmanage-node health: {last_err}");
    ExitCode::from(2)
}

/// Percent-encodes a query value.
fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `http://host:port/path` → (`http://host:port`, `/path`).
fn split_url(url: &str) -> (String, String) {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => (url[..after_scheme + i].to_string(), url[after_scheme + i..].to_string()),
        None => (url.to_string(), "/api/health/detailed".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split() {
        assert_eq!(split_url("http://a:1/x/y"), ("http://a:1".into(), "/x/y".into()));
        assert_eq!(split_url("http://a:1"), ("http://a:1".into(), "/api/health/detailed".into()));
    }
}
