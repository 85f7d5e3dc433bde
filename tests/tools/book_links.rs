//! Every internal link of the book (`docs/src`) leads somewhere: the file
//! exists and, when the link names an anchor, the page has a heading with
//! that id (computed as mdBook computes heading ids). Every page is in
//! `SUMMARY.md`, so that no page is left out of the book.
//!
//! CI also builds the book with `mdbook build docs` (`.ci/run`). mdBook
//! itself does not check links. Measured here on 2 cores: lychee checks
//! files and anchors of the built HTML but takes 5.5 minutes to install;
//! mdbook-linkcheck2 takes 3.8 minutes and does not check anchors (a link
//! to a missing `#anchor` passed it); the original mdbook-linkcheck does not
//! run under mdBook 0.5. Hence this test, which costs nothing to install;
//! `.ci/run` also runs lychee where it is already installed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const BOOK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/src");

/// The text of a page without fenced code blocks and inline code spans:
/// what mdBook renders as prose, where links and headings live.
fn prose(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            out.push(String::new());
            continue;
        }
        if fenced {
            out.push(String::new());
            continue;
        }
        // Drop `code` spans, keep the rest of the line.
        let mut kept = String::new();
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                kept.push_str(part);
            }
        }
        out.push(kept);
    }
    out
}

/// mdBook's id of a heading: lower-case letters and digits, `-` and `_`
/// kept, whitespace turned into `-`, the rest dropped; a repeated id gets
/// `-1`, `-2`, ... in order.
fn heading_ids(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim().replace('`', "");
        let id: String = title
            .chars()
            .filter_map(|c| {
                if c.is_alphanumeric() || c == '_' || c == '-' {
                    Some(c.to_lowercase().next().unwrap_or(c))
                } else if c.is_whitespace() {
                    Some('-')
                } else {
                    None
                }
            })
            .collect();
        let n = seen.entry(id.clone()).or_default();
        ids.insert(if *n == 0 { id.clone() } else { format!("{id}-{n}") });
        *n += 1;
    }
    ids
}

/// A page's text with its `{{#include FILE}}` lines replaced by the file
/// (the headings of an included file are the page's).
fn page_text(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let dir = path.parent().unwrap_or(Path::new(BOOK));
    Some(
        text.lines()
            .map(|line| match line.trim().strip_prefix("{{#include ").and_then(|l| l.strip_suffix("}}")) {
                Some(file) => std::fs::read_to_string(dir.join(file.trim())).unwrap_or_else(|e| panic!("{file}: {e}")),
                None => line.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// Targets of the inline links `[text](target)` of a line.
fn link_targets(line: &str) -> Vec<String> {
    line.split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .map(|t| t.split_whitespace().next().unwrap_or_default().to_string())
        .collect()
}

fn pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(BOOK)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    pages
}

#[test]
fn every_internal_link_of_the_book_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        let name = page.file_name().unwrap().to_string_lossy().to_string();
        for (n, line) in prose(&text).iter().enumerate() {
            for target in link_targets(line) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (file, anchor) = target.split_once('#').unwrap_or((&target, ""));
                let file = if file.is_empty() { page.clone() } else { Path::new(BOOK).join(file) };
                if file.extension().is_some_and(|e| e != "md") {
                    // A picture or another file: it must exist.
                    if !file.is_file() {
                        broken.push(format!("{name}:{}: {target}: no such file", n + 1));
                    }
                    continue;
                }
                let Some(target_text) = page_text(&file) else {
                    broken.push(format!("{name}:{}: {target}: no such file", n + 1));
                    continue;
                };
                if !anchor.is_empty() && !heading_ids(&target_text).contains(anchor) {
                    broken.push(format!("{name}:{}: {target}: no heading with id {anchor:?}", n + 1));
                }
            }
        }
    }
    assert!(checked > 50, "found only {checked} links: is the scan broken?");
    assert!(broken.is_empty(), "broken links in docs/src:\n{}", broken.join("\n"));
}

#[test]
fn every_page_is_in_the_summary() {
    let summary = std::fs::read_to_string(Path::new(BOOK).join("SUMMARY.md")).unwrap();
    let listed: BTreeSet<String> = summary.lines().flat_map(link_targets).collect();
    for page in pages() {
        let name = page.file_name().unwrap().to_string_lossy().to_string();
        if name != "SUMMARY.md" {
            assert!(listed.contains(&name), "docs/src/{name} is not in SUMMARY.md");
        }
    }
}

#[test]
fn heading_ids_follow_mdbook() {
    let ids = heading_ids("# A b\n## `[node]`\n## `[[listeners]]`\n### `listeners.tls`\n## A b\n```\n# not\n```\n");
    let want: BTreeSet<String> =
        ["a-b", "node", "listeners", "listenerstls", "a-b-1"].into_iter().map(String::from).collect();
    assert_eq!(ids, want);
    assert_eq!(link_targets("see [x](a.md#b) and [y](c.md)"), vec!["a.md#b", "c.md"]);
    assert_eq!(prose("a `[x](y)` b")[0], "a  b");
}
