//! The JSON examples of the admin API reference (`docs/src/reference-admin-api.md`)
//! have the shape of what a real node answers: a node in a cluster (of
//! one), with sticky sessions and one session, is asked each documented
//! `GET`, and every field of the example must be in the answer and every
//! field of the answer in the example, at every level, with values of the
//! same kind. Then the write actions and the errors: the examples whose
//! values the test node reproduces (server actions, weight, unpin, the 401,
//! 403, 404 and 400 bodies, and the messages the text quotes) must be its
//! answers exactly, the others (move, reload, 422) have their shape. The
//! same node's
//! `/metrics` is held against the metric definitions and their reference:
//! every family once, with its type and help text, and its label names and
//! the values of its enumerated labels the ones its row gives.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

use sysmanage_node::admin::metric_families::FAMILIES;

use crate::support::{self, Backend};

const PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/src/reference-admin-api.md");

/// The first ```json block after the heading line `heading`.
fn example(page: &str, heading: &str) -> Value {
    let start = page.find(&format!("\n{heading}\n")).unwrap_or_else(|| panic!("no heading {heading:?} in {PAGE}"));
    let rest = &page[start..];
    let block = rest.split("```json\n").nth(1).and_then(|b| b.split("```").next());
    let block = block.unwrap_or_else(|| panic!("no ```json block after {heading:?}"));
    serde_json::from_str(block).unwrap_or_else(|e| panic!("the example after {heading:?} is not JSON: {e}\n{block}"))
}

/// Differences in field names between `doc` and `real`, with their paths.
/// `null` on either side (a field the example or the node leaves unknown)
/// and an object whose only field is `"…"` (an abbreviation) match
/// anything; arrays compare their first elements; other values must be of
/// the same kind (string, number, boolean).
fn shape_diff(path: &str, doc: &Value, real: &Value, out: &mut Vec<String>) {
    match (doc, real) {
        (Value::Null, _) | (_, Value::Null) => {}
        (Value::Object(d), _) if d.len() == 1 && d.contains_key("…") => {}
        (Value::Object(d), Value::Object(r)) => {
            for k in d.keys().filter(|k| !r.contains_key(*k)) {
                out.push(format!("{path}.{k}: in the example, not in the answer"));
            }
            for k in r.keys().filter(|k| !d.contains_key(*k)) {
                out.push(format!("{path}.{k}: in the answer, not in the example"));
            }
            for (k, dv) in d {
                if let Some(rv) = r.get(k) {
                    shape_diff(&format!("{path}.{k}"), dv, rv, out);
                }
            }
        }
        (Value::Array(d), Value::Array(r)) => {
            if let (Some(dv), Some(rv)) = (d.first(), r.first()) {
                shape_diff(&format!("{path}[0]"), dv, rv, out);
            }
        }
        (Value::String(_), Value::String(_))
        | (Value::Number(_), Value::Number(_))
        | (Value::Bool(_), Value::Bool(_)) => {}
        _ => out.push(format!("{path}: {doc} in the example, {real} in the answer")),
    }
}

const METRICS_PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/src/reference-metrics.md");

/// Labels whose values the metrics reference lists (the others are names
/// from the configuration, or HTTP methods and status classes).
const ENUMERATED: [&str; 5] = ["reason", "result", "direction", "event", "state"];

/// `text` without its parenthesised parts (nested ones included).
fn without_parentheses(text: &str) -> String {
    let mut depth = 0usize;
    text.chars()
        .filter(|c| {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                _ => return depth == 0,
            }
            false
        })
        .collect()
}

/// Checks the label names (and enumerated label values) of every family in
/// `/metrics` output against its row of the metrics reference.
fn metric_rows_match(metrics: &str, wrong: &mut Vec<String>) {
    let page = std::fs::read_to_string(METRICS_PAGE).unwrap();
    // family → its labels cell
    let mut rows = std::collections::BTreeMap::new();
    for line in page.lines() {
        let Some(rest) = line.strip_prefix("| `sysmanage_") else { continue };
        let cells: Vec<&str> = rest.split(" | ").collect();
        let name = format!("sysmanage_{}", cells[0].trim_end_matches('`'));
        rows.insert(name, cells.get(2).copied().unwrap_or_default().trim_end_matches(" |").to_string());
    }
    let histograms: Vec<&str> =
        metrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" histogram")).collect();
    // family → label → values seen
    let mut seen: std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<String>>> =
        Default::default();
    for line in metrics.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, _) = line.rsplit_once(' ').unwrap_or((line, ""));
        let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
        let family = histograms
            .iter()
            .find(|h| name.strip_prefix(**h).is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s)))
            .map_or(name, |h| *h);
        let entry = seen.entry(family.to_string()).or_default();
        for pair in labels.trim_end_matches('}').split(',').filter(|p| !p.is_empty()) {
            let (label, value) = pair.split_once('=').unwrap_or((pair, ""));
            if label != "le" {
                entry.entry(label.to_string()).or_default().push(value.trim_matches('"').to_string());
            }
        }
    }
    for (family, labels) in &seen {
        let Some(cell) = rows.get(family) else {
            wrong.push(format!("{family}: on /metrics, not in {METRICS_PAGE}"));
            continue;
        };
        let mut documented: Vec<String> = without_parentheses(cell)
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, l)| l.to_string())
            .collect();
        documented.sort();
        let exported: Vec<String> = labels.keys().cloned().collect(); // sorted
        if documented != exported {
            wrong.push(format!("{family}: labels {exported:?} on /metrics, {documented:?} in the reference"));
        }
        for (label, values) in labels.iter().filter(|(l, _)| ENUMERATED.contains(&l.as_str())) {
            for value in values.iter().filter(|v| !cell.contains(&format!("`{v}`"))) {
                wrong.push(format!("{family}: {label}=\"{value}\" on /metrics, not in the reference"));
            }
        }
    }
}

/// Every family of `metric_families::FAMILIES` is on `/metrics` once, in
/// that order, with its type and help text, and no other.
fn families_match(metrics: &str, wrong: &mut Vec<String>) {
    let exported: Vec<(&str, &str)> =
        metrics.lines().filter_map(|l| l.strip_prefix("# HELP ")?.split_once(' ')).collect();
    let defined: Vec<(&str, &str)> = FAMILIES.iter().map(|f| (f.name, f.help)).collect();
    if exported != defined {
        wrong.push(format!("# HELP lines on /metrics: {exported:?}\nfamilies defined: {defined:?}"));
    }
    let types: Vec<(&str, &str)> = metrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split_once(' ')).collect();
    let defined: Vec<(&str, &str)> = FAMILIES.iter().map(|f| (f.name, f.kind.as_str())).collect();
    if types != defined {
        wrong.push(format!("# TYPE lines on /metrics: {types:?}\nfamilies defined: {defined:?}"));
    }
}

#[test]
fn shape_diff_finds_missing_and_extra_fields() {
    let doc: Value = serde_json::json!({"a": 1, "b": {"c": [{"d": 1}]}, "e": null, "f": {"…": "x"}});
    let real: Value = serde_json::json!({"a": 2, "b": {"c": [{"d": 2, "x": 1}]}, "e": {"y": 1}, "f": {"z": 1}, "g": 1});
    let mut out = Vec::new();
    shape_diff("", &doc, &real, &mut out);
    assert_eq!(out, vec![".g: in the answer, not in the example", ".b.c[0].x: in the answer, not in the example"]);
    let mut out = Vec::new();
    shape_diff("", &serde_json::json!({"a": "1", "b": true}), &serde_json::json!({"a": 1, "b": false}), &mut out);
    assert_eq!(out, vec![".a: \"1\" in the example, 1 in the answer"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_examples_have_the_shape_of_real_answers() {
    let page = std::fs::read_to_string(PAGE).unwrap();
    let (app1, app2) = (Backend::start("app1").await, Backend::start("app2").await);
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("cluster.key");
    support::write_secret(&secret, "5c1d2c3b4a5968778695a4b3c2d1e0f0e1d2c3b4a5968778695a4b3c2d1e0f0");
    let ip = std::net::IpAddr::from([127, 0, 0, 1]);
    let gossip = std::net::SocketAddr::new(ip, support::free_port(ip));
    let pool = format!(
        "affinity = {{ key = \"header:X-Agent\" }}\nchecks = [{{ path = \"/\", interval = \"200ms\" }}]\n{}",
        support::servers(&[(&app1, ""), (&app2, "")])
    );
    let tables = format!(
        "[cluster]\nlisten = \"{gossip}\"\nsecret_file = \"{}\"\n\
         [[rate_limits]]\nname = \"z\"\nrate = \"1/s\"\n\
         [[routes]]\nname = \"limited\"\npath_prefix = \"/limited\"\npool = \"agents\"\nrate_limit = \"z\"\n",
        secret.display()
    );
    let toml = support::NodeToml::new()
        .node(&format!("name = \"lb1\"\ndata_dir = \"{}\"", dir.path().join("data").display()))
        .admin(&support::ws::admin_token_line(dir.path()))
        .listener("http", "")
        .pool("agents", &pool)
        .tables(&tables)
        .route("default", "/", "agents", "")
        .to_string();
    let (node, _config_dir, config_path) = support::start_node_file(&toml).await;
    let admin = node.admin.expect("admin API on");
    let http = node.listeners[0].1;
    let c = support::client();

    // One session, so that the sessions answer has a record.
    let req =
        Request::get(format!("http://{http}/")).header("x-agent", "agent-17").body(Full::new(Bytes::new())).unwrap();
    let (status, _, _) = support::send(&c, req).await;
    assert_eq!(status, 200);
    // A check has run, so that `last_check` is an object.
    let client = &c;
    support::wait_until(Duration::from_secs(10), "a health check has run", || async move {
        let (_, _, body) = support::get(client, admin, "/api/v1/status").await;
        serde_json::from_str::<Value>(&body).is_ok_and(|v| !v["pools"][0]["servers"][0]["last_check"].is_null())
    })
    .await;

    // Through the rate-limited route, so that its zone has a sample.
    let req = Request::get(format!("http://{http}/limited"))
        .header("x-agent", "agent-17")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, _) = support::send(&c, req).await;
    assert_eq!(status, 200);

    let mut wrong = Vec::new();
    let (_, _, metrics) = support::get(&c, admin, "/metrics").await;
    metric_rows_match(&metrics, &mut wrong);
    families_match(&metrics, &mut wrong);
    for (heading, path) in [
        ("### `GET /api/health/detailed`", "/api/health/detailed"),
        ("### `GET /api/health/websocket`", "/api/health/websocket"),
        ("### `GET /api/v1/status`", "/api/v1/status"),
        ("### `GET /api/v1/members`", "/api/v1/members"),
        ("#### `GET /api/v1/sessions?key=K`", "/api/v1/sessions?key=agent-17"),
    ] {
        let (status, _, body) = support::get(&c, admin, path).await;
        assert_eq!(status, 200, "{path}: {body}");
        let real: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        shape_diff(path, &example(&page, heading), &real, &mut wrong);
    }
    session_counts_match(&page, admin, &mut wrong).await;
    actions_match(&page, admin, &mut wrong).await;
    // A node without a token file, for the 403, and without affinity.
    let other = support::start_node(&support::config(&support::servers(&[(&app1, "")]), "")).await;
    let other_admin = other.admin.expect("admin API on");
    errors_match(&page, admin, other_admin, &config_path, &mut wrong).await;
    assert!(wrong.is_empty(), "the reference differs from a real node's answers:\n{}", wrong.join("\n"));
}

/// One write action with the admin token (`None`: without it): the status
/// and the body as JSON.
async fn call(admin: SocketAddr, method: Method, path: &str, token: Option<&str>, body: &str) -> (StatusCode, Value) {
    let (status, text) = support::ws::admin_call(admin, method, path, token, body).await;
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
    (status, json)
}

const TOKEN: Option<&str> = Some(support::ws::ADMIN_TOKEN);

/// `GET /api/v1/sessions` without a key: pool and server names are keys
/// there, so its example is compared by kind: `total` a number, `pools`
/// the pools with affinity, each a map of this pool's servers to numbers.
async fn session_counts_match(page: &str, admin: SocketAddr, wrong: &mut Vec<String>) {
    let doc = example(page, "#### `GET /api/v1/sessions`");
    let (status, real) = call(admin, Method::GET, "/api/v1/sessions", None, "").await;
    let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
    // Every pool a map of server names to numbers.
    let counts = |pools: &Value, servers: &[&str]| {
        pools.as_object().is_some_and(|p| {
            p.values().all(|s| {
                s.as_object().is_some_and(|s| {
                    s.iter().all(|(name, n)| (servers.is_empty() || servers.contains(&name.as_str())) && n.is_u64())
                })
            })
        })
    };
    let fine = status == StatusCode::OK
        && keys(&doc) == keys(&real)
        && doc["total"].is_u64()
        && real["total"].is_u64()
        && counts(&doc["pools"], &[])
        && keys(&real["pools"]) == Some(vec!["agents".to_string()])
        && counts(&real["pools"], &["app1", "app2"]);
    if !fine {
        wrong.push(format!("/api/v1/sessions: {status} {real} for the example {doc}"));
    }
}

/// The answers of the write actions: server actions and weight exactly as
/// the examples give them (the test node has the examples' names), the
/// session move and reload by shape, the unpin exactly.
async fn actions_match(page: &str, admin: SocketAddr, wrong: &mut Vec<String>) {
    let server = "/api/v1/pools/agents/servers/app1";
    let drain = example(page, "#### `POST /api/v1/pools/{pool}/servers/{server}/drain`");
    let (status, real) = call(admin, Method::POST, &format!("{server}/drain"), TOKEN, "").await;
    if status != StatusCode::OK || real != drain {
        wrong.push(format!("drain: {status} {real}, the example says {drain}"));
    }
    for (action, from, to) in [("maintenance", "draining", "maintenance"), ("enable", "maintenance", "normal")] {
        let (status, real) = call(admin, Method::POST, &format!("{server}/{action}"), TOKEN, "").await;
        let expected = json!({"pool": "agents", "server": "app1", "from": from, "to": to});
        if status != StatusCode::OK || real != expected {
            wrong.push(format!("{action}: {status} {real}, expected {expected} as the drain example"));
        }
    }
    let weight = example(page, "#### `PUT /api/v1/pools/{pool}/servers/{server}/weight`");
    let (status, real) = call(admin, Method::PUT, &format!("{server}/weight"), TOKEN, r#"{"weight": 3}"#).await;
    if status != StatusCode::OK || real != weight {
        wrong.push(format!("weight: {status} {real}, the example says {weight}"));
    }

    let moved = example(page, "#### `POST /api/v1/sessions/{key}/move`");
    let body = r#"{"pool": "agents", "server": "app2"}"#;
    let (status, real) = call(admin, Method::POST, "/api/v1/sessions/agent-17/move", TOKEN, body).await;
    if status != StatusCode::OK || real["server"] != "app2" {
        wrong.push(format!("move: {status} {real}"));
    }
    shape_diff("move", &moved, &real, wrong);
    let unpinned = example(page, "#### `DELETE /api/v1/sessions/{key}`");
    let (status, real) = call(admin, Method::DELETE, "/api/v1/sessions/agent-17", TOKEN, "").await;
    if status != StatusCode::OK || real != unpinned {
        wrong.push(format!("unpin: {status} {real}, the example says {unpinned}"));
    }

    node_drain_matches(page, admin, wrong).await;

    let reload = example(page, "#### `POST /api/v1/reload`");
    let (status, real) = call(admin, Method::POST, "/api/v1/reload", TOKEN, "").await;
    if status != StatusCode::OK || real["pools"] != 1 || real["routes"] != 2 {
        wrong.push(format!("reload: {status} {real}"));
    }
    shape_diff("reload", &reload, &real, wrong);
}

/// Draining the node: the drain answer by shape (its time varies), the
/// health endpoints' 503 while it drains, the undrain answer and the `over`
/// errors exactly as the text quotes them.
async fn node_drain_matches(page: &str, admin: SocketAddr, wrong: &mut Vec<String>) {
    let drain = example(page, "#### `POST /api/v1/node/drain`");
    let (status, real) = call(admin, Method::POST, "/api/v1/node/drain", TOKEN, r#"{"over": "90s"}"#).await;
    if status != StatusCode::OK || real["draining"] != true || real["over_ms"] != 90_000 {
        wrong.push(format!("node drain: {status} {real}"));
    }
    shape_diff("node drain", &drain, &real, wrong);
    for path in ["/api/health", "/api/health/detailed", "/health"] {
        let (status, _, body) = support::get(&support::client(), admin, path).await;
        if status != 503 || !body.contains("draining") {
            wrong.push(format!("{path} while draining: {status} {body}"));
        }
    }
    let quoted = r#"{"draining": false, "since_unix_ms": null, "over_ms": null, "was_draining": true}"#;
    let undrained: Value = serde_json::from_str(quoted).unwrap();
    let (status, real) = call(admin, Method::POST, "/api/v1/node/undrain", TOKEN, "").await;
    if status != StatusCode::OK || real != undrained || !page.contains(&format!("`{quoted}`")) {
        wrong.push(format!("node undrain: {status} {real}, quoted in the reference as {undrained}"));
    }
    for body in [r#"{"over": "soon"}"#, r#"{"over": "2h"}"#] {
        let (got, real) = call(admin, Method::POST, "/api/v1/node/drain", TOKEN, body).await;
        let message = real["error"].as_str().unwrap_or_default();
        // The reference wraps the quoted message over lines.
        let flat = page.split_whitespace().collect::<Vec<_>>().join(" ");
        if got != 400 || !flat.contains(&format!("`{message}`")) {
            wrong.push(format!("node drain with {body}: {got} {real}, not quoted in the reference with 400"));
        }
    }
}

/// An answer that must be the example exactly.
fn expect(wrong: &mut Vec<String>, what: &str, (status, real): (StatusCode, Value), code: u16, doc: Value) {
    if status != code || real != doc {
        wrong.push(format!("{what}: {status} {real}, the reference says {code} {doc}"));
    }
}

/// The error examples: 401, 404 and 400 exactly as the examples give them
/// (and the other messages the text quotes), 403 from a node without a
/// token, 422 by shape after the config file is broken.
async fn errors_match(
    page: &str,
    admin: SocketAddr,
    other_admin: SocketAddr,
    config: &std::path::Path,
    wrong: &mut Vec<String>,
) {
    let drain = "/api/v1/pools/agents/servers/app1/drain";
    let doc = example(page, "#### 401: no token, or another one");
    expect(wrong, "no token", call(admin, Method::POST, drain, None, "").await, 401, doc);
    let (_, headers, _) = support::send(
        &support::client(),
        Request::post(format!("http://{admin}{drain}")).body(Full::new(Bytes::new())).unwrap(),
    )
    .await;
    if headers.get("www-authenticate").is_none_or(|v| v != "Bearer") {
        wrong.push(format!("401 without WWW-Authenticate: Bearer: {headers:?}"));
    }
    let doc = example(page, "#### 404: unknown pool, server, action, key or endpoint");
    let unknown_pool = call(admin, Method::POST, "/api/v1/pools/apx/servers/app1/drain", TOKEN, "").await;
    expect(wrong, "unknown pool", unknown_pool, 404, doc);
    let doc = example(page, "#### 400: a bad weight or body");
    let weight = "/api/v1/pools/agents/servers/app1/weight";
    expect(wrong, "weight 0", call(admin, Method::PUT, weight, TOKEN, r#"{"weight": 0}"#).await, 400, doc);

    // The messages the text quotes in code spans, with their status.
    for (status, method, path, token, body) in [
        (401, Method::POST, drain, Some("another"), ""),
        (404, Method::POST, "/api/v1/pools/agents/servers/app9/drain", TOKEN, ""),
        (404, Method::POST, "/api/v1/pools/agents/servers/app1/restart", TOKEN, ""),
        (404, Method::GET, "/api/v1/sessions?key=agent-99", None, ""),
        (404, Method::GET, "/api/v1/nothing", None, ""),
    ] {
        let (got, real) = call(admin, method, path, token, body).await;
        let message = real["error"].as_str().unwrap_or_default();
        if got != status || !page.contains(&format!("`{message}`")) && !page.contains(&format!("\"{message}\"")) {
            wrong.push(format!("{path}: {got} {real}, not quoted in the reference with {status}"));
        }
    }
    let (got, real) = call(admin, Method::PUT, weight, TOKEN, "three").await;
    let message = real["error"].as_str().unwrap_or_default();
    let prefix = r#"expected a JSON body such as {"weight": 3}: "#;
    if got != 400 || !message.starts_with(prefix) || !page.contains(&format!("`{prefix}…`")) {
        wrong.push(format!("a body that is not JSON: {got} {real}"));
    }

    // 403 from a node without a token file, and the sessions' 404 without affinity.
    let doc = example(page, "#### 403: no token configured");
    expect(wrong, "no token file", call(other_admin, Method::POST, "/api/v1/reload", TOKEN, "").await, 403, doc);
    let (got, real) = call(other_admin, Method::GET, "/api/v1/sessions", None, "").await;
    let message = real["error"].as_str().unwrap_or_default();
    if got != 404 || !page.contains(&format!("`{message}`")) {
        wrong.push(format!("sessions without affinity: {got} {real}, not quoted in the reference"));
    }

    // 422: the file no longer parses; the running config is kept.
    let doc = example(page, "#### 422: an invalid configuration on reload");
    std::fs::write(config, "[[pools]]\nname = 3\n").unwrap();
    let (got, real) = call(admin, Method::POST, "/api/v1/reload", TOKEN, "").await;
    if got != 422 || real["error"] != doc["error"] || !real["details"][0].is_string() {
        wrong.push(format!("reload of a broken config: {got} {real}, the reference says 422 {doc}"));
    }
    shape_diff("422", &doc, &real, wrong);
}
