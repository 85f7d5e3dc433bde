//! The dependency rule of `docs/ARCHITECTURE.md`, checked on the source.
//!
//! Every path a source file names (`crate::a::b`, `super::a`, in `use`
//! lines and in code; unit tests and comments left out) is one edge from
//! the file's module to the module it names. The top-level modules sit in
//! layers, lowest first ([`LAYERS`]): a module may use only modules of lower
//! layers, so there is no cycle between them and no module of the node uses
//! a tool. Inside `proxy` the same holds for its parts ([`PROXY_LAYERS`]):
//! inbound → route → outbound → the modules beside them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Top-level modules, lowest layer first.
const LAYERS: &[&[&str]] = &[
    &["clock", "model", "api", "metrics"],
    &["balance", "busy_poll", "tls", "cluster", "ratelimit", "proxy_protocol"],
    &["sessions"],
    &["config"],
    &["health"],
    &["state", "upgrade"],
    &["proxy"],
    &["control"],
    &["admin"],
    &["runtime"],
    // The tools: clients of a node, or commands that run once.
    &["cli", "init"],
    &["ctl"],
    &["tui"],
    &["demo"],
    &["app"],
];

/// The parts of `proxy`, lowest layer first.
const PROXY_LAYERS: &[&[&str]] =
    &[&["error", "headers", "idle_timer", "activity"], &["body"], &["wire"], &["outbound"], &["route"], &["inbound"]];

/// One module path naming another that its layer does not allow.
#[derive(Debug, PartialEq)]
struct Violation {
    file: String,
    uses: String,
    rule: String,
}

fn layer_of(layers: &[&[&str]], name: &str) -> Option<usize> {
    layers.iter().position(|l| l.contains(&name))
}

/// The module path of a source file: `src/proxy/route/handle.rs` is
/// `proxy::route::handle`, `src/proxy/route/mod.rs` is `proxy::route`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    parts
}

/// The code of a file without its unit tests and comments.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines().map(|l| l.split_once("//").map_or(l, |(code, _)| code)).collect::<Vec<_>>().join("\n")
}

/// The paths that follow `prefix` (`crate::` or `super::`), with `use`
/// groups (`crate::{a, b::c}`) spread out; each as its segments.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `my_crate::`, not `crate::`
        }
        let mut supers = Vec::new();
        while let Some(r) = rest.strip_prefix("super::") {
            supers.push("super".to_string());
            rest = r;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let segs = segments(item.trim());
                if !segs.is_empty() {
                    out.push(supers.iter().cloned().chain(segs).collect());
                }
            }
        } else {
            out.push(supers.into_iter().chain(segments(rest)).collect());
        }
    }
    out
}

/// `a::b::C` → `["a", "b", "C"]` (stops at the first character that cannot
/// be part of a path).
fn segments(s: &str) -> Vec<String> {
    let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(s.len());
    s[..end].split("::").filter(|p| !p.is_empty()).map(String::from).collect()
}

/// The violations of one file's code.
fn check_file(module: &[String], file: &str, code: &str) -> Vec<Violation> {
    let mut targets: Vec<Vec<String>> = paths_after(code, "crate::");
    for rel in paths_after(code, "super::") {
        // `super::x` in module `a::b` names `a::x`; each further `super` goes up one.
        let ups = 1 + rel.iter().take_while(|s| *s == "super").count();
        let base = &module[..module.len().saturating_sub(ups)];
        targets.push(base.iter().cloned().chain(rel.into_iter().skip(ups - 1)).collect());
    }
    let mut out = Vec::new();
    let Some(from_top) = module.first() else { return out };
    for t in targets {
        let Some(to_top) = t.first() else { continue };
        let rule = if to_top != from_top {
            check_layers(LAYERS, "top-level module", from_top, to_top)
        } else if from_top == "proxy" && module.len() > 1 && t.len() > 1 && module[1] != t[1] {
            check_layers(PROXY_LAYERS, "part of proxy", &module[1], &t[1])
        } else {
            None
        };
        if let Some(rule) = rule {
            out.push(Violation { file: file.to_string(), uses: t.join("::"), rule });
        }
    }
    out
}

/// `None` if `from` may use `to`; otherwise the rule it breaks.
fn check_layers(layers: &[&[&str]], what: &str, from: &str, to: &str) -> Option<String> {
    match (layer_of(layers, from), layer_of(layers, to)) {
        (Some(f), Some(t)) if t < f => None,
        (Some(f), Some(t)) => Some(format!(
            "{from} (layer {f}) may use only lower layers, and {to} is in layer {t}: move the code or the layer"
        )),
        (None, _) => Some(format!("{what} {from} has no layer: add it to the table in tests/architecture.rs")),
        (_, None) => Some(format!("{what} {to} has no layer: add it to the table in tests/architecture.rs")),
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_module_uses_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(files.len() > 100, "the source tree was not found: {}", src.display());
    let mut violations = Vec::new();
    let mut seen_top = BTreeSet::new();
    for file in &files {
        let module = module_of(&src, file);
        if let Some(top) = module.first() {
            seen_top.insert(top.clone());
        }
        let text = std::fs::read_to_string(file).expect("readable source file");
        let name = file.strip_prefix(&src).expect("under src").display().to_string();
        violations.extend(check_file(&module, &name, &code_of(&text)));
    }
    let report: Vec<String> =
        violations.iter().map(|v| format!("src/{}: uses crate::{}: {}", v.file, v.uses, v.rule)).collect();
    assert!(report.is_empty(), "{} dependency rule violation(s):\n{}", report.len(), report.join("\n"));
    // Every top-level module has its place (`main` is the binary's root).
    for top in seen_top.iter().filter(|t| *t != "main") {
        assert!(
            layer_of(LAYERS, top).is_some(),
            "src/{top}: a top-level module with no layer in tests/architecture.rs"
        );
    }
}

#[test]
fn a_back_edge_is_reported() {
    // A lower module that names a higher one: the check must catch it, in
    // every form a path can take.
    let cases = [
        (vec!["config", "validate"], "use crate::proxy::route::handle;"),
        (vec!["clock"], "let x = crate::control::Control::start(cfg);"),
        (vec!["sessions", "table"], "use crate::{metrics, tui::App};"),
        (vec!["proxy", "outbound", "forward"], "use crate::proxy::route::state::ProxyState;"),
        (vec!["proxy", "wire", "request"], "use crate::proxy::inbound::conn::ClientIo;"),
        (vec!["proxy", "outbound", "forward"], "use super::super::inbound::conn::ClientIo;"),
        (vec!["proxy", "route"], "use super::inbound::listener;"),
        (vec!["health", "active"], "use crate::newmodule::Thing;"),
    ];
    for (module, code) in cases {
        let module: Vec<String> = module.into_iter().map(String::from).collect();
        let found = check_file(&module, "case.rs", code);
        assert_eq!(found.len(), 1, "{module:?}: `{code}` should break the rule once, found {found:?}");
    }
    // And allowed edges are not reported.
    let fine = [
        (vec!["proxy", "route", "handle"], "use crate::proxy::outbound::forward::Forward; use super::matching;"),
        (vec!["admin"], "use crate::{control::Control, metrics};"),
        (vec!["proxy", "wire", "request"], "use crate::proxy::body::ClientBody; // crate::proxy::route"),
        (vec!["demo"], "let n = crate::runtime::Node::start(cfg);"),
    ];
    for (module, code) in fine {
        let module: Vec<String> = module.into_iter().map(String::from).collect();
        let found = check_file(&module, "case.rs", &code_of(code));
        assert!(found.is_empty(), "{module:?}: `{code}` is allowed, found {found:?}");
    }
}
