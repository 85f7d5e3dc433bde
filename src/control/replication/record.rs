//! A session record as gossip: the one place that maps
//! [`SessionRecord`] to and from its wire form.
//!
//! A record travels as one gossip entry: the key `session:{pool}:{key}` and
//! a [`SessionEntry`] value, `{L|T} {expires_ms} {hlc} {origin} {server}`
//! (both encoded by [`crate::cluster::keys`], which knows nothing of
//! `sessions`). The same entry, as one text line `{key}\t{value}`, is what
//! the catch-up endpoint serves ([`encode_lines`], [`decode_lines`]). So
//! gossip, catch-up and peers of older versions all read the same bytes.
//!
//! [`SessionEntry`] is the record without its pool and key (they are in the
//! gossip key), with the version as the raw hybrid-logical-clock `u64` and
//! no server for a tombstone. Pure code.

use crate::cluster::keys::decode_entry;
use crate::cluster::{GossipKey, GossipValue, SessionEntry};
use crate::sessions::{Hlc, SessionRecord};

/// The gossip entry of a record.
pub(super) fn into_gossip(record: SessionRecord) -> (GossipKey, GossipValue) {
    let entry = SessionEntry {
        server: if record.tombstone { String::new() } else { record.server },
        expires_at_ms: record.expires_at_ms,
        version: record.version.0,
        origin: record.origin,
        tombstone: record.tombstone,
    };
    (GossipKey::Session { pool: record.pool, key: record.key }, GossipValue::Session(entry))
}

/// The record of a gossip entry `session:{pool}:{key}` = `entry`.
pub(super) fn from_gossip(pool: String, key: String, entry: SessionEntry) -> SessionRecord {
    SessionRecord {
        key,
        pool,
        server: entry.server,
        expires_at_ms: entry.expires_at_ms,
        version: Hlc(entry.version),
        origin: entry.origin,
        tombstone: entry.tombstone,
    }
}

/// The catch-up body: one `{gossip key}\t{gossip value}` line per record.
/// A record whose names cannot be encoded (empty) is left out.
pub(super) fn encode_lines(records: Vec<SessionRecord>) -> String {
    let mut out = String::with_capacity(records.len() * 96);
    for r in records {
        let (key, value) = into_gossip(r);
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
        match line.split_once('\t').and_then(|(k, v)| decode_entry(k, v).ok()) {
            Some((GossipKey::Session { pool, key }, GossipValue::Session(e))) => out.push(from_gossip(pool, key, e)),
            _ => bad += 1,
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
        let (key, value) = into_gossip(tomb.clone());
        assert_eq!(key, GossipKey::session("agents", "h2"));
        let GossipValue::Session(entry) = value else { panic!("not a session value") };
        assert_eq!(entry.server, "");
        assert_eq!(from_gossip("agents".into(), "h2".into(), entry), SessionRecord { server: String::new(), ..tomb });
    }
}
