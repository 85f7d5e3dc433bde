//! Maps config keys to their place in the TOML text, so that every error can
//! say `file:line:column`.
//!
//! The validator works on typed serde values and reports a [`KeyPath`] such as
//! `pools[0].servers[2].weight`; [`Locator`] walks the same path through a
//! span-preserving `toml_edit` parse of the text to find where it was written.
//! It also goes the other way for serde errors, which only carry a byte span.

use std::fmt;
use std::ops::Range;

use toml_edit::{ImDocument, Item, Table, Value};

/// One step in a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A dotted key path such as `pools[0].servers[2].weight`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    pub fn root() -> Self {
        KeyPath(Vec::new())
    }
    /// This path extended by a key.
    pub fn key(&self, key: &str) -> Self {
        let mut v = self.0.clone();
        v.push(Seg::Key(key.to_string()));
        KeyPath(v)
    }
    /// This path extended by an array index.
    pub fn index(&self, i: usize) -> Self {
        let mut v = self.0.clone();
        v.push(Seg::Index(i));
        KeyPath(v)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for seg in &self.0 {
            match seg {
                Seg::Key(k) => {
                    if !first {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Seg::Index(i) => write!(f, "[{i}]")?,
            }
            first = false;
        }
        Ok(())
    }
}

/// Resolves key paths and byte offsets against one config text.
pub struct Locator<'a> {
    text: &'a str,
    doc: Option<ImDocument<&'a str>>,
}

enum Node<'d> {
    Item(&'d Item),
    Value(&'d Value),
    Table(&'d Table),
}

impl<'a> Locator<'a> {
    pub fn new(text: &'a str) -> Self {
        Locator { text, doc: ImDocument::parse(text).ok() }
    }

    /// 1-based (line, column) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }

    /// Where the value at `path` was written; falls back to the nearest
    /// ancestor that exists (a missing key is reported at its table).
    pub fn position(&self, path: &KeyPath) -> Option<(usize, usize)> {
        let doc = self.doc.as_ref()?;
        let mut node = Node::Table(doc.as_table());
        let mut best: Option<Range<usize>> = None;
        for seg in &path.0 {
            let next = match (&node, seg) {
                (Node::Table(t), Seg::Key(k)) => t.get_key_value(k).map(|(key, item)| {
                    best = item.span().or_else(|| key.span()).or(best.clone());
                    Node::Item(item)
                }),
                (Node::Item(item), seg) => match (item, seg) {
                    (Item::Table(t), Seg::Key(k)) => t.get_key_value(k).map(|(key, item)| {
                        best = item.span().or_else(|| key.span()).or(best.clone());
                        Node::Item(item)
                    }),
                    (Item::ArrayOfTables(a), Seg::Index(i)) => a.get(*i).map(|t| {
                        best = t.span().or(best.clone());
                        Node::Table(t)
                    }),
                    (Item::Value(v), _) => step_value(v, seg, &mut best),
                    _ => None,
                },
                (Node::Value(v), seg) => step_value(v, seg, &mut best),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        best.map(|r| self.line_col(r.start))
    }

    /// The deepest key path whose written span contains `offset` (used to name
    /// the key of a serde error, which only knows a byte span).
    pub fn path_at(&self, offset: usize) -> KeyPath {
        let mut path = KeyPath::root();
        if let Some(doc) = self.doc.as_ref() {
            walk_table(doc.as_table(), offset, &mut path);
        }
        path
    }
}

fn step_value<'d>(v: &'d Value, seg: &Seg, best: &mut Option<Range<usize>>) -> Option<Node<'d>> {
    match (v, seg) {
        (Value::InlineTable(t), Seg::Key(k)) => t.get_key_value(k).map(|(key, item)| {
            *best = item.span().or_else(|| key.span()).or(best.clone());
            Node::Item(item)
        }),
        (Value::Array(a), Seg::Index(i)) => a.get(*i).map(|v| {
            *best = v.span().or(best.clone());
            Node::Value(v)
        }),
        _ => None,
    }
}

fn contains(span: Option<Range<usize>>, offset: usize) -> bool {
    span.is_some_and(|r| r.start <= offset && offset < r.end.max(r.start + 1))
}

fn walk_table(t: &Table, offset: usize, path: &mut KeyPath) {
    for (k, item) in t.iter() {
        let key_span = t.key(k).and_then(|key| key.span());
        if contains(key_span, offset) {
            path.0.push(Seg::Key(k.to_string()));
            return;
        }
        match item {
            Item::ArrayOfTables(a) => {
                for (i, sub) in a.iter().enumerate() {
                    if contains(sub.span(), offset) || table_contains(sub, offset) {
                        path.0.push(Seg::Key(k.to_string()));
                        path.0.push(Seg::Index(i));
                        walk_table(sub, offset, path);
                        return;
                    }
                }
            }
            Item::Table(sub) => {
                if contains(sub.span(), offset) || table_contains(sub, offset) {
                    path.0.push(Seg::Key(k.to_string()));
                    walk_table(sub, offset, path);
                    return;
                }
            }
            Item::Value(v) => {
                if contains(v.span(), offset) {
                    path.0.push(Seg::Key(k.to_string()));
                    walk_value(v, offset, path);
                    return;
                }
            }
            Item::None => {}
        }
    }
}

/// Whether any key or value written inside `t` covers `offset` (a `[table]`
/// header's span does not cover the keys below it).
fn table_contains(t: &Table, offset: usize) -> bool {
    t.iter().any(|(k, item)| {
        contains(t.key(k).and_then(|key| key.span()), offset)
            || contains(item.span(), offset)
            || item.as_table().is_some_and(|sub| table_contains(sub, offset))
            || item.as_array_of_tables().is_some_and(|a| a.iter().any(|sub| table_contains(sub, offset)))
    })
}

fn walk_value(v: &Value, offset: usize, path: &mut KeyPath) {
    match v {
        Value::Array(a) => {
            for (i, sub) in a.iter().enumerate() {
                if contains(sub.span(), offset) {
                    path.0.push(Seg::Index(i));
                    walk_value(sub, offset, path);
                    return;
                }
            }
        }
        Value::InlineTable(t) => {
            for (k, item) in t.iter() {
                let key_span = t.key(k).and_then(|key| key.span());
                if contains(key_span, offset) {
                    path.0.push(Seg::Key(k.to_string()));
                    return;
                }
                if contains(item.span(), offset) {
                    path.0.push(Seg::Key(k.to_string()));
                    walk_value(item, offset, path);
                    return;
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[node]\nname = \"a\"\n\n[[pools]]\nname = \"api\"\nservers = [\n  { addr = \"1.2.3.4:80\" },\n  { addr = \"x\", weight = 0 },\n]\n";

    #[test]
    fn finds_nested_inline_values() {
        let loc = Locator::new(TEXT);
        let p = KeyPath::root().key("pools").index(0).key("servers").index(1).key("weight");
        assert_eq!(p.to_string(), "pools[0].servers[1].weight");
        assert_eq!(loc.position(&p), Some((8, 26)));
        let n = KeyPath::root().key("node").key("name");
        assert_eq!(loc.position(&n), Some((2, 8)));
    }

    #[test]
    fn missing_key_falls_back_to_parent() {
        let loc = Locator::new(TEXT);
        let p = KeyPath::root().key("pools").index(0).key("servers").index(1).key("nope");
        assert_eq!(loc.position(&p), Some((8, 3)));
    }

    #[test]
    fn offset_to_path() {
        let loc = Locator::new(TEXT);
        let offset = TEXT.find("weight").unwrap();
        assert_eq!(loc.path_at(offset).to_string(), "pools[0].servers[1].weight");
        let offset = TEXT.find("\"a\"").unwrap();
        assert_eq!(loc.path_at(offset).to_string(), "node.name");
    }
}
