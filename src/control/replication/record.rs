//! A session record as gossip: the one place that maps a
//! [`SessionRecord`] to and from its wire form. There is one record type;
//! the wire form is text.
//!
//! A record travels as one gossip entry: the key `session:{pool}:{key}`
//! (encoded by [`crate::cluster::keys`], which knows nothing of `sessions`
//! and carries the value as opaque text) and the value
//!
//! ```text
//! L {expires_ms} {hlc} {origin} {server}     a live record
//! T {expires_ms} {hlc} {origin}              a tombstone (no server)
//! ```
//!
//! with the names escaped by [`escape_name`] and the version as the raw
//! hybrid-logical-clock `u64`. The same entry, as one text line
//! `{key}\t{value}`, is what the catch-up endpoint serves ([`encode_lines`],
//! [`decode_lines`]). So gossip, catch-up and peers of older versions all
//! read the same bytes. Pure code.

use crate::cluster::keys::decode_entry;
use crate::cluster::{escape_name, unescape_name, GossipKey, GossipValue};
use crate::sessions::{Hlc, SessionRecord};

/// Why a gossip value is not a session record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("session value `{value}` is malformed: {what}")]
pub(super) struct BadValue {
    value: String,
    what: &'static str,
}

/// The gossip entry of a record; `None` when a name it needs is empty (a
/// record the table never holds).
pub(super) fn into_gossip(record: SessionRecord) -> Option<(GossipKey, GossipValue)> {
    let value = encode_value(&record)?;
    Some((GossipKey::Session { pool: record.pool, key: record.key }, GossipValue::Session(value)))
}

/// The value text of a record: `L …` or `T …` (see the module header).
fn encode_value(r: &SessionRecord) -> Option<String> {
    if r.origin.is_empty() || r.pool.is_empty() || r.key.is_empty() {
        return None;
    }
    let (exp, version, origin) = (r.expires_at_ms, r.version.0, escape_name(&r.origin));
    if r.tombstone {
        return Some(format!("T {exp} {version} {origin}"));
    }
    if r.server.is_empty() {
        return None;
    }
    Some(format!("L {exp} {version} {origin} {}", escape_name(&r.server)))
}

/// The record of a gossip entry `session:{pool}:{key}` = `value`.
pub(super) fn from_gossip(pool: String, key: String, value: &str) -> Result<SessionRecord, BadValue> {
    let bad = |what| BadValue { value: value.to_string(), what };
    let mut parts = value.split(' ');
    let tombstone = match parts.next() {
        Some("L") => false,
        Some("T") => true,
        _ => return Err(bad("flag is not L or T")),
    };
    let mut number = |what| parts.next().and_then(|s| s.parse::<u64>().ok()).ok_or_else(|| bad(what));
    let expires_at_ms = number("expiry is not an integer")?;
    let version = Hlc(number("version is not an integer")?);
    let mut name = |what| parts.next().and_then(unescape_name).ok_or_else(|| bad(what));
    let origin = name("origin is missing, empty or not UTF-8")?;
    let server = if tombstone { String::new() } else { name("server is missing, empty or not UTF-8")? };
    if parts.next().is_some() {
        return Err(bad("trailing fields"));
    }
    Ok(SessionRecord { key, pool, server, expires_at_ms, version, origin, tombstone })
}

/// The catch-up body: one `{gossip key}\t{gossip value}` line per record.
/// A record whose names cannot be encoded (empty) is left out.
pub(super) fn encode_lines(records: Vec<SessionRecord>) -> String {
    let mut out = String::with_capacity(records.len() * 96);
    for r in records {
        let Some((key, value)) = into_gossip(r) else { continue };
        let (Ok(k), Ok(v)) = (key.encode(), value.encode()) else { continue };
        out.push_str(&k);
        out.push('\t');
        out.push_str(&v);
        out.push('\n');
    }
    out
}

/// Parses [`encode_lines`]'s output; malformed lines are skipped and
/// counted.
pub(super) fn decode_lines(body: &str) -> (Vec<SessionRecord>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    for line in body.lines().filter(|l| !l.is_empty()) {
        let record = match line.split_once('\t').and_then(|(k, v)| decode_entry(k, v).ok()) {
            Some((GossipKey::Session { pool, key }, GossipValue::Session(v))) => from_gossip(pool, key, &v).ok(),
            _ => None,
        };
        match record {
            Some(r) => out.push(r),
            None => bad += 1,
        }
    }
    (out, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Vec<SessionRecord> {
        vec![
            SessionRecord {
                key: "host:a b\n".into(),
                pool: "agents".into(),
                server: "s1".into(),
                expires_at_ms: 10,
                version: Hlc(5),
                origin: "lb1".into(),
                tombstone: false,
            },
            SessionRecord {
                key: "h2".into(),
                pool: "agents".into(),
                server: String::new(),
                expires_at_ms: 11,
                version: Hlc(6),
                origin: "lb2".into(),
                tombstone: true,
            },
        ]
    }

    #[test]
    fn table_lines_round_trip_and_garbage_is_skipped() {
        let records = records();
        let text = encode_lines(records.clone());
        assert_eq!(text.lines().count(), 2);
        let (back, bad) = decode_lines(&format!("{text}garbage\nsession:p:k\tX 1 2 3\nserver:p:s\tup 1\n"));
        assert_eq!(back, records);
        assert_eq!(bad, 3);
    }

    #[test]
    fn the_wire_form_is_unchanged() {
        // Peers of older versions read these bytes: gossip and catch-up alike.
        let text = encode_lines(records());
        assert_eq!(text, "session:agents:host%3Aa%20b%0A\tL 10 5 lb1 s1\nsession:agents:h2\tT 11 6 lb2\n");
    }

    #[test]
    fn a_tombstone_goes_out_without_its_server() {
        let mut tomb = records().remove(1);
        tomb.server = "s1".into();
        let (key, value) = into_gossip(tomb.clone()).expect("encodable");
        assert_eq!(key, GossipKey::session("agents", "h2"));
        assert_eq!(value, GossipValue::Session("T 11 6 lb2".into()));
        let back = from_gossip("agents".into(), "h2".into(), "T 11 6 lb2").unwrap();
        assert_eq!(back, SessionRecord { server: String::new(), ..tomb });
    }

    #[test]
    fn the_value_is_compact_and_escapes_names() {
        let mut r = records().remove(0);
        (r.expires_at_ms, r.version, r.server, r.origin) =
            (1_700_000_000_000, Hlc(u64::MAX), "srv:1 b".into(), "lb 1".into());
        let (_, value) = into_gossip(r.clone()).unwrap();
        let GossipValue::Session(text) = value else { panic!("not a session value") };
        assert_eq!(text, "L 1700000000000 18446744073709551615 lb%201 srv%3A1%20b");
        assert_eq!(from_gossip(r.pool.clone(), r.key.clone(), &text).unwrap(), r);
    }

    #[test]
    fn records_without_names_are_not_gossiped() {
        let live = records().remove(0);
        assert!(into_gossip(SessionRecord { server: String::new(), ..live.clone() }).is_none());
        assert!(into_gossip(SessionRecord { origin: String::new(), ..live.clone() }).is_none());
        assert!(into_gossip(SessionRecord { key: String::new(), ..live }).is_none());
    }

    /// Adversarial: 20,000 lines mutated from valid ones (bytes replaced,
    /// inserted or dropped from an alphabet of the format's own characters).
    /// Every line is a record or counted bad, never a panic, and a record
    /// reads back the same after being written again.
    #[test]
    fn mutated_lines_parse_to_records_that_round_trip_or_are_counted_bad() {
        let valid = encode_lines(records());
        let alphabet: Vec<char> = "LT 0123456789%:\t\r\nab-é\u{0}".chars().collect();
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let mut line: Vec<char> = valid.lines().nth(rng.usize(..2)).unwrap().chars().collect();
            for _ in 0..rng.usize(1..4) {
                let at = rng.usize(..=line.len());
                match rng.u8(..3) {
                    0 if at < line.len() => line[at] = alphabet[rng.usize(..alphabet.len())],
                    1 => line.insert(at, alphabet[rng.usize(..alphabet.len())]),
                    _ if at < line.len() => {
                        line.remove(at);
                    }
                    _ => {}
                }
            }
            let text: String = line.into_iter().collect();
            let (got, bad) = decode_lines(&text);
            assert_eq!(got.len() + bad, text.lines().filter(|l| !l.is_empty()).count(), "{text:?}");
            let again = encode_lines(got.clone());
            assert_eq!(decode_lines(&again), (got, 0), "{text:?} -> {again:?}");
        }
    }

    #[test]
    fn malformed_values_are_errors() {
        for v in [
            "",
            "X 1 2 o s",
            "L 1 2 o",
            "L 1 2 o s extra",
            "L one 2 o s",
            "T 1 2",
            "L 1 2 %ff s",
            "L 1 2  s",
            "T 1 -2 o",
        ] {
            let e = from_gossip("p".into(), "k".into(), v).unwrap_err();
            assert!(e.to_string().contains(&format!("`{v}`")), "{v:?}: {e}");
        }
    }
}
