//! The reference half of the book (`docs/src/reference-*.md`) cannot drift
//! from the code:
//!
//! - the key tables of `reference-config.md` are generated from
//!   `config::KEYS` (which `config_keys.rs` checks against the parser), and
//!   every key is in exactly one of them;
//! - the help of every command in `reference-cli.md` is generated from the
//!   clap definitions;
//! - the table of `reference-metrics.md` is generated from
//!   `admin::metric_families::FAMILIES` (which `/metrics` is written from),
//!   every metric name of `src/metrics.rs` has exactly one family there,
//!   and so exactly one row, with its type;
//! - every admin endpoint routed in `src/admin/mod.rs` has exactly one row
//!   in `reference-admin-api.md`, and only those.
//!
//! The generated parts sit between `<!-- generated: WHAT -->` and
//! `<!-- end of generated part -->`; the rest of each page is written by
//! hand. The tests fail when a committed page differs from what would be
//! generated; to regenerate:
//!
//! ```sh
//! UPDATE_DOCS=1 cargo test --test tools reference_docs
//! ```

use std::collections::BTreeMap;

use clap::CommandFactory;
use sysmanage_node::admin::metric_families::{Family, FAMILIES};
use sysmanage_node::config::{Key, KEYS};

const BOOK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/src");

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// How generated parts are marked in a file: the opening line is
/// `open` + what to generate + `close`, the part ends at the line `end`.
struct Markers {
    open: &'static str,
    close: &'static str,
    end: &'static str,
}

const MARKDOWN: Markers = Markers { open: "<!-- generated: ", close: " -->", end: "<!-- end of generated part -->" };
const ROFF: Markers = Markers { open: ".\\\" generated: ", close: "", end: ".\\\" end of generated part" };

/// `text` with the part after every opening marker line (up to the end
/// marker) replaced by `fill(WHAT)`.
fn fill_markers(text: &str, m: &Markers, mut fill: impl FnMut(&str) -> String) -> String {
    let mut out = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        out.push_str(line);
        out.push('\n');
        let Some(what) = line.strip_prefix(m.open).and_then(|l| l.strip_suffix(m.close)) else {
            continue;
        };
        for skipped in lines.by_ref() {
            if skipped == m.end {
                break;
            }
        }
        out.push_str(&fill(what));
        out.push_str(m.end);
        out.push('\n');
    }
    out
}

/// Writes `generated` to `path` with `UPDATE_DOCS` set; otherwise fails when
/// the committed file differs, naming the first line that does.
fn check_or_update(path: &str, generated: &str) {
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(path, generated).unwrap();
        return;
    }
    let committed = read(path);
    if committed != generated {
        let line = committed.lines().zip(generated.lines()).position(|(a, b)| a != b);
        let line = line.unwrap_or(committed.lines().count().min(generated.lines().count()));
        panic!(
            "{path} is out of date (first difference at line {}):\n  committed: {:?}\n  generated: {:?}\n\
             regenerate it with: UPDATE_DOCS=1 cargo test --test tools reference_docs",
            line + 1,
            committed.lines().nth(line).unwrap_or("<end>"),
            generated.lines().nth(line).unwrap_or("<end>"),
        );
    }
}

// ---------------------------------------------------------------- config

/// The table a key belongs to: its path without the last part (`.` for
/// the top-level tables).
fn parent(key: &Key) -> &str {
    key.path.rsplit_once('.').map_or(".", |(p, _)| p)
}

fn leaf(key: &Key) -> &str {
    key.path.rsplit_once('.').map_or(key.path, |(_, l)| l)
}

/// A Markdown table cell: a `|` would end it.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

fn key_table(prefix: &str) -> String {
    let keys: Vec<&Key> = KEYS.iter().filter(|k| parent(k) == prefix).collect();
    assert!(!keys.is_empty(), "reference-config.md has a table for {prefix:?}, which has no keys");
    let mut s = String::from("| key | type | default | meaning |\n|---|---|---|---|\n");
    for k in keys {
        s.push_str(&format!("| `{}` | {} | {} | {} |\n", leaf(k), cell(k.kind), cell(k.default), cell(k.meaning)));
    }
    s
}

fn config_page() -> String {
    let path = format!("{BOOK}/reference-config.md");
    fill_markers(&read(&path), &MARKDOWN, |what| {
        let prefix = what.strip_prefix("keys ").unwrap_or_else(|| panic!("unknown marker {what:?} in {path}"));
        key_table(prefix)
    })
}

/// Roff for one line of running text: Markdown code spans become bold,
/// `*emphasis*` italic, links their text; `\` and `-` are escaped and a
/// leading `.` or `'` is made literal.
fn roff(markdown: &str) -> String {
    // Links first: their text may hold code spans.
    let mut text = String::new();
    let mut rest = markdown;
    while let Some(mid) = rest.find("](") {
        let (Some(start), Some(end)) = (rest[..mid].rfind('['), rest[mid..].find(')').map(|i| mid + i)) else {
            break;
        };
        text.push_str(&rest[..start]);
        text.push_str(&rest[start + 1..mid]);
        rest = &rest[end + 1..];
    }
    text.push_str(rest);
    let mut out = String::new();
    for (i, part) in text.split('`').enumerate() {
        let escaped = part.replace('\\', "\\e").replace('-', "\\-").replace('"', "\\(dq");
        if i % 2 == 1 {
            out.push_str(&format!("\\fB{escaped}\\fR"));
        } else {
            // `*word*` → italic (a lone `*`, as in `*.example.com`, is in code).
            let mut italic = false;
            for (j, piece) in escaped.split('*').enumerate() {
                if j > 0 {
                    out.push_str(if italic { "\\fR" } else { "\\fI" });
                    italic = !italic;
                }
                out.push_str(piece);
            }
        }
    }
    if out.starts_with('.') || out.starts_with('\'') {
        out.insert_str(0, "\\&");
    }
    out
}

fn key_entries(prefix: &str) -> String {
    let keys: Vec<&Key> = KEYS.iter().filter(|k| parent(k) == prefix).collect();
    assert!(!keys.is_empty(), "man/sysmanage-node.toml.5 has a block for {prefix:?}, which has no keys");
    let mut s = String::new();
    for k in keys {
        let default = match k.default {
            "—" => String::new(),
            "*required*" => "; required".to_string(),
            d => format!("; default: {}", roff(d)),
        };
        s.push_str(&format!(".TP\n.BR {} \" ({}{default})\"\n{}\n", leaf(k), roff(k.kind), roff(k.meaning)));
    }
    s
}

fn man_page() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/man/sysmanage-node.toml.5");
    fill_markers(&read(path), &ROFF, |what| {
        let prefix = what.strip_prefix("keys ").unwrap_or_else(|| panic!("unknown marker {what:?} in {path}"));
        key_entries(prefix)
    })
}

#[test]
fn config_man_page_matches_the_keys() {
    check_or_update(concat!(env!("CARGO_MANIFEST_DIR"), "/man/sysmanage-node.toml.5"), &man_page());
}

#[test]
fn roff_of_markdown() {
    assert_eq!(roff("a `b-c` [see](x.md#y) *d*"), "a \\fBb\\-c\\fR see \\fId\\fR");
    assert_eq!(roff("`*.example.com` \"x\""), "\\fB*.example.com\\fR \\(dqx\\(dq");
    assert_eq!(roff(".x"), "\\&.x");
    assert_eq!(roff("`[\"GET\"]` and [a `b`](c.md)"), "\\fB[\\(dqGET\\(dq]\\fR and a \\fBb\\fR");
}

#[test]
fn config_reference_matches_the_keys() {
    check_or_update(&format!("{BOOK}/reference-config.md"), &config_page());
}

#[test]
fn every_config_key_is_in_the_reference_once() {
    let page = config_page();
    // (table, key) of every generated row.
    let mut rows: BTreeMap<String, usize> = BTreeMap::new();
    let mut table: Option<String> = None;
    for line in page.lines() {
        if let Some(what) = line.strip_prefix("<!-- generated: keys ").and_then(|l| l.strip_suffix(" -->")) {
            table = Some(what.to_string());
        } else if line == MARKDOWN.end {
            table = None;
        } else if let (Some(t), Some(rest)) = (&table, line.strip_prefix("| `")) {
            let leaf = rest.split('`').next().unwrap_or_default();
            let path = if t == "." { leaf.to_string() } else { format!("{t}.{leaf}") };
            *rows.entry(path).or_default() += 1;
        }
    }
    let mut wrong = Vec::new();
    for key in KEYS {
        match rows.remove(key.path) {
            Some(1) => {}
            Some(n) => wrong.push(format!("{} ({n} rows)", key.path)),
            None => wrong.push(format!("{} (no row: add `<!-- generated: keys {} -->`)", key.path, parent(key))),
        }
    }
    wrong.extend(rows.into_keys().map(|k| format!("{k} (not a key)")));
    assert!(wrong.is_empty(), "reference-config.md: {wrong:?}");
}

#[test]
fn every_key_has_a_type_a_default_and_a_meaning() {
    for k in KEYS {
        assert!(
            !k.kind.trim().is_empty() && !k.default.trim().is_empty() && k.meaning.trim().len() > 10,
            "src/config/keys.rs: {} needs its type, default and meaning",
            k.path
        );
    }
}

// ---------------------------------------------------------------- command line

fn command() -> clap::Command {
    let mut cmd = sysmanage_node::cli::Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

fn visible(cmd: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    cmd.get_subcommands().filter(|s| !s.is_hide_set())
}

fn help_section(c: &clap::Command) -> String {
    let name = c.get_bin_name().unwrap_or(c.get_name());
    let help = c.clone().render_long_help().to_string();
    let help: Vec<&str> = help.trim_end().lines().map(str::trim_end).collect();
    format!("### `{name}`\n\n```text\n{}\n```\n\n", help.join("\n"))
}

fn cli_page() -> String {
    let path = format!("{BOOK}/reference-cli.md");
    fill_markers(&read(&path), &MARKDOWN, |what| {
        assert_eq!(what, "commands", "unknown marker in {path}");
        let cmd = command();
        let mut s = String::new();
        for sub in visible(&cmd) {
            s.push_str(&help_section(sub));
            for action in visible(sub) {
                s.push_str(&help_section(action));
            }
        }
        s
    })
}

#[test]
fn cli_reference_matches_the_command_line() {
    check_or_update(&format!("{BOOK}/reference-cli.md"), &cli_page());
}

#[test]
fn cli_reference_has_every_command_and_option() {
    let page = cli_page();
    let cmd = command();
    for sub in visible(&cmd) {
        let name = sub.get_bin_name().unwrap_or_default().to_string();
        assert_eq!(page.matches(&format!("### `{name}`\n")).count(), 1, "{name}");
        for c in std::iter::once(sub).chain(visible(sub)) {
            for long in c.get_arguments().filter(|a| !a.is_hide_set()).filter_map(|a| a.get_long()) {
                assert!(page.contains(&format!("--{long}")), "--{long} of {}", c.get_name());
            }
        }
    }
}

// ---------------------------------------------------------------- metrics

/// Names of every metric family of `src/metrics.rs` (the `sysmanage_*`
/// constants).
fn metric_names() -> Vec<String> {
    let metrics = read(concat!(env!("CARGO_MANIFEST_DIR"), "/src/metrics.rs"));
    let names: Vec<String> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("pub const ")?.split_once(": &str = \"")?.1.strip_suffix("\";"))
        .filter(|name| name.starts_with("sysmanage_"))
        .map(str::to_string)
        .collect();
    assert!(names.len() >= 20, "read the metric names from src/metrics.rs: {names:?}");
    names
}

#[test]
fn every_metric_name_has_one_family_definition() {
    let mut defined: BTreeMap<&str, usize> = BTreeMap::new();
    for f in FAMILIES {
        *defined.entry(f.name).or_default() += 1;
    }
    let mut wrong = Vec::new();
    for name in metric_names() {
        match defined.remove(name.as_str()) {
            Some(1) => {}
            Some(n) => wrong.push(format!("{name}: {n} families")),
            None => wrong.push(format!("{name}: no family in src/admin/metric_families.rs")),
        }
    }
    wrong.extend(defined.into_keys().map(|k| format!("{k}: a family, not a name of src/metrics.rs")));
    assert!(wrong.is_empty(), "src/admin/metric_families.rs: {wrong:?}");
}

/// The labels cell of a family's row: `` `name` (values) `` for each label.
fn labels_cell(f: &Family) -> String {
    if f.labels.is_empty() {
        return "—".to_string();
    }
    let labels: Vec<String> = f
        .labels
        .iter()
        .map(|l| if l.values.is_empty() { format!("`{}`", l.name) } else { format!("`{}` ({})", l.name, l.values) })
        .collect();
    labels.join(", ")
}

fn metrics_table() -> String {
    let mut s = String::from("| name | type | labels | meaning |\n|---|---|---|---|\n");
    for f in FAMILIES {
        let meaning = if f.note.is_empty() { f.help.to_string() } else { format!("{} {}", f.help, f.note) };
        s.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            f.name,
            f.kind.as_str(),
            cell(&labels_cell(f)),
            cell(&meaning)
        ));
    }
    s
}

fn metrics_page() -> String {
    let path = format!("{BOOK}/reference-metrics.md");
    fill_markers(&read(&path), &MARKDOWN, |what| {
        assert_eq!(what, "metric families", "unknown marker in {path}");
        metrics_table()
    })
}

#[test]
fn metrics_reference_matches_the_families() {
    check_or_update(&format!("{BOOK}/reference-metrics.md"), &metrics_page());
}

#[test]
fn every_metric_is_in_the_reference_once_with_its_type() {
    let page = metrics_page();
    let mut rows: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in page.lines() {
        let Some(rest) = line.strip_prefix("| `sysmanage_") else { continue };
        let mut cells = rest.split(" | ");
        let name = format!("sysmanage_{}", cells.next().unwrap_or_default().trim_end_matches('`'));
        rows.entry(name).or_default().push(cells.next().unwrap_or_default().to_string());
    }
    let mut wrong = Vec::new();
    for name in metric_names() {
        let kind = FAMILIES.iter().find(|f| f.name == name).map_or("?", |f| f.kind.as_str());
        match rows.remove(&name).as_deref() {
            Some([k]) if k == kind => {}
            Some([k]) => wrong.push(format!("{name}: type {k}, /metrics says {kind}")),
            Some(more) => wrong.push(format!("{name}: {} rows", more.len())),
            None => wrong.push(format!("{name}: no row")),
        }
    }
    wrong.extend(rows.into_keys().map(|k| format!("{k}: not a metric of src/metrics.rs")));
    assert!(wrong.is_empty(), "reference-metrics.md: {wrong:?}");
}

/// The page's sentence on histogram buckets gives `metrics::BUCKETS_US`.
#[test]
fn metrics_reference_gives_the_histogram_buckets() {
    let buckets: Vec<String> = sysmanage_node::metrics::BUCKETS_US
        .iter()
        .map(|&us| if us >= 1_000_000 { format!("{} s", us as f64 / 1e6) } else { format!("{} ms", us as f64 / 1e3) })
        .collect();
    let (last, rest) = buckets.split_last().unwrap();
    let sentence = format!("{} and {last}", rest.join(", "));
    let page = read(&format!("{BOOK}/reference-metrics.md")).split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(page.contains(&sentence), "reference-metrics.md should give the histogram buckets as: {sentence}");
}

// ---------------------------------------------------------------- admin API

/// `METHOD PATH` of every endpoint the admin router serves.
pub(crate) fn admin_endpoints() -> Vec<String> {
    let router = read(concat!(env!("CARGO_MANIFEST_DIR"), "/src/admin/mod.rs"));
    let mut out = Vec::new();
    for line in router.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix(".route(\"") else { continue };
        let Some((path, handler)) = rest.split_once("\", ") else { continue };
        let method = ["get", "post", "put", "delete"]
            .into_iter()
            .find(|m| handler.starts_with(&format!("{m}(")) || handler.contains(&format!("::{m}(")))
            .unwrap_or_else(|| panic!("method of {line}"));
        let method = method.to_uppercase();
        if path.ends_with("/{action}") {
            // `server_action` accepts these three (and answers 404 for others).
            for action in ["drain", "maintenance", "enable"] {
                assert!(router.contains(&format!("\"{action}\" =>")), "server_action no longer has {action}");
                out.push(format!("{method} {}", path.replace("{action}", action)));
            }
        } else {
            out.push(format!("{method} {path}"));
        }
    }
    assert!(out.len() >= 14, "read the routes of src/admin/mod.rs: {out:?}");
    out
}

#[test]
fn every_admin_endpoint_is_in_the_reference_once() {
    let page = read(&format!("{BOOK}/reference-admin-api.md"));
    let mut rows: BTreeMap<String, usize> = BTreeMap::new();
    for line in page.lines() {
        let Some(rest) = line.strip_prefix("| `") else { continue };
        let request = rest.split('`').next().unwrap_or_default();
        let Some((method, _)) = request.split_once(' ') else { continue };
        if !["GET", "POST", "PUT", "DELETE"].contains(&method) {
            continue;
        }
        // `GET /api/v1/sessions[?key=K]`: the endpoint without its query.
        let endpoint = request.split(['[', '?']).next().unwrap_or_default().to_string();
        *rows.entry(endpoint).or_default() += 1;
        let token = rest.split(" | ").nth(1).unwrap_or_default();
        let expected = if method == "GET" { "—" } else { "needed" };
        assert_eq!(token, expected, "the token column of {request}");
    }
    let mut wrong = Vec::new();
    for endpoint in admin_endpoints() {
        match rows.remove(&endpoint) {
            Some(1) => {}
            Some(n) => wrong.push(format!("{endpoint}: {n} rows")),
            None => wrong.push(format!("{endpoint}: no row")),
        }
    }
    wrong.extend(rows.into_keys().map(|k| format!("{k}: not served by src/admin/mod.rs")));
    assert!(wrong.is_empty(), "reference-admin-api.md: {wrong:?}");
}

#[test]
fn markers_are_filled_in_place() {
    let text = "a\n<!-- generated: x -->\nold\n<!-- end of generated part -->\nb\n";
    assert_eq!(
        fill_markers(text, &MARKDOWN, |w| format!("new {w}\n")),
        "a\n<!-- generated: x -->\nnew x\n<!-- end of generated part -->\nb\n"
    );
}
