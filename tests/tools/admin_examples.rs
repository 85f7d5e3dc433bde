//! The JSON examples of the admin API reference (`docs/src/reference-admin-api.md`)
//! have the shape of what a real node answers: a node in a cluster (of
//! one), with sticky sessions and one session, is asked each documented
//! `GET`, and every field of the example must be in the answer and every
//! field of the answer in the example, at every level. The same node's
//! `/metrics` is held against the metric definitions and their reference:
//! every family once, with its type and help text, and its label names and
//! the values of its enumerated labels the ones its row gives.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::Value;

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
/// anything; arrays compare their first elements.
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
        (Value::Object(_), _) | (Value::Array(_), _) | (_, Value::Object(_)) | (_, Value::Array(_)) => {
            out.push(format!("{path}: {doc} in the example, {real} in the answer"))
        }
        _ => {}
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_examples_have_the_shape_of_real_answers() {
    let page = std::fs::read_to_string(PAGE).unwrap();
    let backend = Backend::start("app1").await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("cluster.key");
    support::write_secret(&secret, "5c1d2c3b4a5968778695a4b3c2d1e0f0e1d2c3b4a5968778695a4b3c2d1e0f0");
    let ip = std::net::IpAddr::from([127, 0, 0, 1]);
    let gossip = std::net::SocketAddr::new(ip, support::free_port(ip));
    let pool = format!(
        "affinity = {{ key = \"header:X-Agent\" }}\nchecks = [{{ path = \"/\", interval = \"200ms\" }}]\n{}",
        support::servers(&[(&backend, "")])
    );
    let extra = format!(
        "[node]\nname = \"lb1\"\ndata_dir = \"{}\"\n[cluster]\nlisten = \"{gossip}\"\nsecret_file = \"{}\"\n\
         [[rate_limits]]\nname = \"z\"\nrate = \"1/s\"\n\
         [[routes]]\nname = \"limited\"\npath_prefix = \"/limited\"\npool = \"p\"\nrate_limit = \"z\"\n",
        dir.path().join("data").display(),
        secret.display()
    );
    let node = support::start_node(&support::config(&pool, &extra)).await;
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
        ("### Sessions", "/api/v1/sessions?key=agent-17"),
    ] {
        let (status, _, body) = support::get(&c, admin, path).await;
        assert_eq!(status, 200, "{path}: {body}");
        let real: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        shape_diff(path, &example(&page, heading), &real, &mut wrong);
    }
    assert!(wrong.is_empty(), "the reference differs from a real node's answers:\n{}", wrong.join("\n"));
}
