//! The hand-written prose of the man pages (`man/sysmanage-node.1.in`,
//! the sections of `man/sysmanage-node.toml.5` outside the generated key
//! entries) tells some of what the book tells. Rather than generate one
//! from the other, this test holds the facts they share to the code and
//! to each other:
//!
//! - ADMIN API of sysmanage-node(1) names every endpoint the admin router
//!   serves, and no other (as the book's admin API table does,
//!   `reference_docs.rs`);
//! - SIGNALS names the signals the node handles (`src/runtime.rs`), the
//!   same ones as the book's signal table;
//! - the settings RELOAD of sysmanage-node.toml(5), the book's "Signals,
//!   reload and shutdown" and the guide's "Configuration changes" say need
//!   a restart are exactly those a reload warns about
//!   (`src/control/diff.rs`);
//! - every file FILES of either page names is in the book;
//! - every configuration key either page's prose names is a key
//!   (`config::KEYS`).

use std::collections::BTreeSet;

use sysmanage_node::config::KEYS;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The arguments of a macro line: words, or "quoted" strings.
fn macro_args(rest: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut chars = rest.trim().chars().peekable();
    while let Some(&c) = chars.peek() {
        if c == ' ' {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut arg = String::new();
            while let Some(c) = chars.next() {
                match (c, chars.peek()) {
                    ('"', Some('"')) => {
                        arg.push('"');
                        chars.next();
                    }
                    ('"', _) => break,
                    _ => arg.push(c),
                }
            }
            args.push(arg);
        } else {
            let mut arg = String::new();
            while let Some(&c) = chars.peek().filter(|c| **c != ' ') {
                arg.push(c);
                chars.next();
            }
            args.push(arg);
        }
    }
    args
}

/// Plain text of roff source: font macros' arguments joined as they print
/// (`.B`/`.I` with spaces, `.BR`/`.BI`/... without), escapes undone, other
/// requests dropped but `.SH NAME`, kept as a line `## NAME`, and
/// paragraph breaks, kept as blank lines.
fn roff_text(roff: &str) -> String {
    let mut out = String::new();
    for line in roff.lines() {
        let text = if [".PP", ".LP", ".P"].contains(&line) {
            String::new()
        } else if let Some(name) = line.strip_prefix(".SH ") {
            format!("## {}", name.trim_matches('"'))
        } else if let Some(rest) = line.strip_prefix(".B ").or_else(|| line.strip_prefix(".I ")) {
            macro_args(rest).join(" ")
        } else if [".BR ", ".BI ", ".IR ", ".RB ", ".IB ", ".RI "].iter().any(|m| line.starts_with(m)) {
            macro_args(&line[4..]).concat()
        } else if line.starts_with('.') || line.starts_with('\'') {
            continue;
        } else {
            line.to_string()
        };
        let text = text
            .replace("\\fB", "")
            .replace("\\fI", "")
            .replace("\\fR", "")
            .replace("\\fP", "")
            .replace("\\-", "-")
            .replace("\\(dq", "\"")
            .replace("\\&", "")
            .replace("\\e", "\\");
        out.push_str(&text);
        out.push('\n');
    }
    out
}

/// The text of section `name` of a page from [`roff_text`].
fn section<'a>(text: &'a str, name: &str) -> &'a str {
    let start = text.find(&format!("## {name}\n")).unwrap_or_else(|| panic!("no section {name}"));
    let body = &text[start + name.len() + 4..];
    &body[..body.find("\n## ").unwrap_or(body.len())]
}

fn man1() -> String {
    roff_text(&read("man/sysmanage-node.1.in"))
}

fn man5() -> String {
    roff_text(&read("man/sysmanage-node.toml.5"))
}

/// Every page of the book, one after the other.
fn book() -> String {
    let mut pages: Vec<_> = std::fs::read_dir(format!("{ROOT}/docs/src"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    pages.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect()
}

/// The paragraph of `text` that starts with `start` (up to a blank line).
fn paragraph<'a>(text: &'a str, start: &str) -> &'a str {
    let at = text.find(start).unwrap_or_else(|| panic!("no paragraph starting {start:?}"));
    let rest = &text[at..];
    &rest[..rest.find("\n\n").unwrap_or(rest.len())]
}

/// Dotted configuration key paths in `text` (`limits.max_body`), and the
/// tables `[cluster]` / `[[listeners]]` as `cluster` / `listeners`.
fn key_mentions(text: &str) -> BTreeSet<String> {
    let tables: BTreeSet<&str> = KEYS.iter().filter(|k| !k.path.contains('.')).map(|k| k.path).collect();
    let mut out = BTreeSet::new();
    let words = text.split(|c: char| !(c.is_ascii_lowercase() || c == '_' || c == '.' || c == '[' || c == ']'));
    for word in words {
        let word = word.trim_matches('.');
        let bare = word.trim_matches(|c| c == '[' || c == ']');
        let Some(table) = bare.split('.').next() else { continue };
        // File names: `node.toml`, `admin.token`, `cluster.key`.
        let file =
            bare.rsplit('.').next().is_some_and(|ext| ["toml", "token", "key", "redb", "service"].contains(&ext));
        if !tables.contains(table) || file {
            continue;
        }
        if bare.contains('.') || word.starts_with('[') {
            out.insert(bare.to_string());
        }
    }
    out
}

#[test]
fn admin_api_section_names_every_endpoint() {
    let text = man1();
    let admin = section(&text, "ADMIN API");
    // `METHOD /path` at the start of a line, parameters in capitals.
    let mut named: BTreeSet<String> = BTreeSet::new();
    for line in admin.lines() {
        let mut words = line.split(' ');
        let (Some(method), Some(path)) = (words.next(), words.next()) else { continue };
        if ["GET", "POST", "PUT", "DELETE"].contains(&method) && path.starts_with('/') {
            named.insert(format!("{method} {}", path.split('?').next().unwrap_or(path)));
        }
    }
    let mut served = BTreeSet::new();
    for endpoint in crate::reference_docs::admin_endpoints() {
        // `{pool}` → `POOL`
        let mut man = String::new();
        for (i, part) in endpoint.split(['{', '}']).enumerate() {
            man.push_str(&if i % 2 == 1 { part.to_uppercase() } else { part.to_string() });
        }
        served.insert(man);
    }
    let missing: Vec<_> = served.difference(&named).collect();
    let extra: Vec<_> = named.difference(&served).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "ADMIN API of man/sysmanage-node.1.in: missing {missing:?}, not served {extra:?}"
    );
}

#[test]
fn signals_are_those_the_node_handles_and_the_books() {
    let signals = |text: &str| -> BTreeSet<String> {
        text.split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| w.len() > 3 && w.starts_with("SIG") && w[3..].chars().all(|c| c.is_ascii_uppercase()))
            .map(str::to_string)
            .collect()
    };
    let text = man1();
    let man = signals(section(&text, "SIGNALS"));
    let book_page = read("docs/src/reference-requests.md");
    let book_section = &book_page[book_page.find("## Signals, reload and shutdown").unwrap()..];
    let book = signals(&book_section[..book_section[3..].find("\n## ").unwrap_or(book_section.len())]);
    assert_eq!(man, book, "signals named in sysmanage-node(1) SIGNALS and in the book's reference-requests.md");
    // Handled: the man page's entries (`.TP` tags), against the runtime.
    let runtime = read("src/runtime.rs");
    for (name, kind) in [("SIGTERM", "terminate"), ("SIGINT", "interrupt"), ("SIGHUP", "hangup")] {
        assert!(runtime.contains(&format!("SignalKind::{kind}()")), "src/runtime.rs no longer handles {name}");
        assert!(man.contains(name), "sysmanage-node(1) does not describe {name}");
    }
}

/// The settings a reload only warns about, from `src/control/diff.rs`.
fn restart_only() -> BTreeSet<String> {
    let diff = read("src/control/diff.rs");
    let start = diff.find("let restart_only = [").expect("restart_only in src/control/diff.rs");
    let block = &diff[start..start + diff[start..].find("];").unwrap()];
    let keys: BTreeSet<String> =
        block.lines().filter_map(|l| l.trim().strip_prefix("(\"")?.split('"').next()).map(str::to_string).collect();
    assert!(keys.len() > 10, "read restart_only of src/control/diff.rs: {keys:?}");
    keys
}

#[test]
fn restart_only_settings_are_the_ones_a_reload_warns_about() {
    let code = restart_only();
    let text = man5();
    let reload = section(&text, "RELOAD");
    let man = key_mentions(&reload[reload.find("\n\n").map_or(0, |i| i + 2)..]);
    let book_page = read("docs/src/reference-requests.md");
    let book = key_mentions(paragraph(&book_page, "These need a restart"));
    let guide_page = read("docs/src/operating.md");
    let guide = key_mentions(paragraph(&guide_page, "Some keys are read only at start"));
    assert_eq!(man, code, "sysmanage-node.toml(5) RELOAD (second paragraph) against src/control/diff.rs");
    assert_eq!(book, code, "reference-requests.md (\"These need a restart\") against src/control/diff.rs");
    assert_eq!(guide, code, "operating.md (\"Some keys are read only at start\") against src/control/diff.rs");
}

#[test]
fn files_named_by_the_man_pages_are_in_the_book() {
    let book = book();
    let (one, five) = (man1(), man5());
    let mut missing = Vec::new();
    for files in [section(&one, "FILES"), section(&five, "FILES")] {
        for path in files.split([' ', ',', '\n', '(', ')']).filter(|w| w.starts_with('/')) {
            let path = path.trim_end_matches(['.', ':', ';']);
            if !book.contains(path) {
                missing.push(path.to_string());
            }
        }
    }
    assert!(missing.is_empty(), "files in the man pages' FILES, not in the book: {missing:?}");
}

#[test]
fn keys_named_in_the_man_pages_prose_are_keys() {
    let keys: BTreeSet<&str> = KEYS.iter().map(|k| k.path).collect();
    let mut wrong = Vec::new();
    for (page, text) in [("sysmanage-node(1)", man1()), ("sysmanage-node.toml(5)", man5())] {
        for key in key_mentions(&text) {
            if !keys.contains(key.as_str()) {
                wrong.push(format!("{page}: {key}"));
            }
        }
    }
    assert!(wrong.is_empty(), "not configuration keys: {wrong:?}");
}

#[test]
fn roff_to_text() {
    let roff =
        ".SH FILES\n.BI \"POST /a/\" POOL /b\n.BR limits.max_body ,\n.PP\n.B \"x y\" z\nplain \\- \\fBbold\\fR\n.TP\n";
    assert_eq!(roff_text(roff), "## FILES\nPOST /a/POOL/b\nlimits.max_body,\n\nx y z\nplain - bold\n");
    assert_eq!(
        key_mentions("the [cluster] table, limits.max_body and [[listeners]]; not example.com nor node.toml"),
        ["cluster", "limits.max_body", "listeners"].map(String::from).into()
    );
}
