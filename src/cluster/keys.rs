//! Gossip key names and value encodings: the one place that knows what a
//! chitchat key means (quickwit-cluster style: constants plus a typed layer
//! over the raw strings).
//!
//! | key                      | value                                        |
//! |--------------------------|----------------------------------------------|
//! | `server:{pool}:{server}` | health view: `{up|down|draining|maintenance} {since_ms}` |
//! | `load:{pool}:{server}`   | `{sessions} {connections}`                   |
//! | `session:{pool}:{key}`   | a session record, as text that `control::replication::record` writes and reads |
//! | `rate:{zone}:{key hex}`  | `{count} {at_ms}`: this node's count of a cluster-wide rate-limit key at unix ms `at_ms` |
//! | `primary:{pool}`         | the active server of a `primary` pool as this node chose it |
//! | `node:version`           | the node's version string                    |
//! | `node:admin_addr`        | admin API `host:port`                        |
//! | `node:leaving`           | unix ms at which the node began a graceful leave |
//! | `node:draining`          | unix ms since which the node drains (`ctl drain-node`); absent when it does not |
//!
//! Name components (pool, server, session key, origin) are percent-encoded
//! for `%`, `:`, whitespace and control characters, so any name round-trips
//! and a key splits unambiguously; ordinary names stay readable. Every
//! function here is pure; malformed input is an error, never a panic.
//!
//! Session keys are written with chitchat's `set_with_ttl`: chitchat keeps
//! them visible for its `marked_for_deletion_grace_period` and then collects
//! them, which bounds the window of recent records in gossip.

use std::fmt;
use std::net::SocketAddr;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};
use thiserror::Error;

pub const SERVER_PREFIX: &str = "server:";
pub const LOAD_PREFIX: &str = "load:";
pub const SESSION_PREFIX: &str = "session:";
pub const PRIMARY_PREFIX: &str = "primary:";
pub const RATE_PREFIX: &str = "rate:";
pub const NODE_VERSION: &str = "node:version";
pub const NODE_ADMIN_ADDR: &str = "node:admin_addr";
pub const NODE_LEAVING: &str = "node:leaving";
pub const NODE_DRAINING: &str = "node:draining";

/// Characters escaped inside name components.
const COMPONENT: &AsciiSet = &CONTROLS.add(b'%').add(b':').add(b' ');

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    #[error("unknown gossip key `{0}`")]
    UnknownKey(String),
    #[error("gossip key `{key}`: {what}")]
    BadKey { key: String, what: &'static str },
    #[error("gossip value for `{key}` is malformed: {what} (value `{value}`)")]
    BadValue { key: String, value: String, what: &'static str },
    #[error("{what} is empty; gossip names must not be empty")]
    EmptyName { what: &'static str },
    #[error("gossip key `{key}` cannot hold a {value} value")]
    Mismatch { key: String, value: &'static str },
}

/// A typed gossip key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GossipKey {
    /// This node's view of one server's health.
    Server {
        pool: String,
        server: String,
    },
    /// This node's session and connection counts for one server.
    Load {
        pool: String,
        server: String,
    },
    /// A recent session record.
    Session {
        pool: String,
        key: String,
    },
    /// This node's count of one key of a cluster-wide rate-limit zone.
    Rate {
        zone: String,
        key: u64,
    },
    /// The active server this node uses for a `primary` pool.
    Primary {
        pool: String,
    },
    NodeVersion,
    NodeAdminAddr,
    NodeLeaving,
    /// Set while the node drains.
    NodeDraining,
}

/// A name component of `key`, decoded; `what` names an empty one.
fn dec(key: &str, s: &str, what: &'static str) -> Result<String, KeyError> {
    if s.is_empty() {
        return Err(KeyError::BadKey { key: key.to_string(), what });
    }
    unescape_name(s).ok_or_else(|| KeyError::BadKey { key: key.to_string(), what: "percent-encoding is not UTF-8" })
}

/// A name (pool, server, node, session key) as it stands inside a gossip
/// key or value: `%`, `:`, white space and control characters
/// percent-encoded, so that names split unambiguously on `:` and spaces.
pub fn escape_name(s: &str) -> impl fmt::Display + '_ {
    utf8_percent_encode(s, COMPONENT)
}

/// The name [`escape_name`] wrote; `None` when it is empty or its
/// percent-encoding is not UTF-8.
pub fn unescape_name(s: &str) -> Option<String> {
    if s.is_empty() {
        return None;
    }
    percent_decode_str(s).decode_utf8().ok().map(|c| c.into_owned())
}

fn non_empty(s: &str, what: &'static str) -> Result<(), KeyError> {
    if s.is_empty() {
        Err(KeyError::EmptyName { what })
    } else {
        Ok(())
    }
}

impl GossipKey {
    pub fn server(pool: &str, server: &str) -> Self {
        GossipKey::Server { pool: pool.to_string(), server: server.to_string() }
    }

    pub fn load(pool: &str, server: &str) -> Self {
        GossipKey::Load { pool: pool.to_string(), server: server.to_string() }
    }

    pub fn session(pool: &str, key: &str) -> Self {
        GossipKey::Session { pool: pool.to_string(), key: key.to_string() }
    }

    pub fn rate(zone: &str, key: u64) -> Self {
        GossipKey::Rate { zone: zone.to_string(), key }
    }

    pub fn primary(pool: &str) -> Self {
        GossipKey::Primary { pool: pool.to_string() }
    }

    /// The chitchat key string. Fails only on an empty name component.
    pub fn encode(&self) -> Result<String, KeyError> {
        Ok(match self {
            GossipKey::Server { pool, server } => {
                non_empty(pool, "pool name")?;
                non_empty(server, "server name")?;
                format!("{SERVER_PREFIX}{}:{}", escape_name(pool), escape_name(server))
            }
            GossipKey::Load { pool, server } => {
                non_empty(pool, "pool name")?;
                non_empty(server, "server name")?;
                format!("{LOAD_PREFIX}{}:{}", escape_name(pool), escape_name(server))
            }
            GossipKey::Session { pool, key } => {
                non_empty(pool, "pool name")?;
                non_empty(key, "session key")?;
                format!("{SESSION_PREFIX}{}:{}", escape_name(pool), escape_name(key))
            }
            GossipKey::Rate { zone, key } => {
                non_empty(zone, "zone name")?;
                format!("{RATE_PREFIX}{}:{key:016x}", escape_name(zone))
            }
            GossipKey::Primary { pool } => {
                non_empty(pool, "pool name")?;
                format!("{PRIMARY_PREFIX}{}", escape_name(pool))
            }
            GossipKey::NodeVersion => NODE_VERSION.to_string(),
            GossipKey::NodeAdminAddr => NODE_ADMIN_ADDR.to_string(),
            GossipKey::NodeLeaving => NODE_LEAVING.to_string(),
            GossipKey::NodeDraining => NODE_DRAINING.to_string(),
        })
    }

    /// Parses a chitchat key string.
    pub fn parse(key: &str) -> Result<Self, KeyError> {
        let two = |rest: &str| -> Result<(String, String), KeyError> {
            let (a, b) = rest.split_once(':').ok_or(KeyError::BadKey { key: key.to_string(), what: "missing `:`" })?;
            if b.contains(':') {
                return Err(KeyError::BadKey { key: key.to_string(), what: "too many `:`" });
            }
            Ok((dec(key, a, "empty pool name")?, dec(key, b, "empty name")?))
        };
        if let Some(rest) = key.strip_prefix(SERVER_PREFIX) {
            let (pool, server) = two(rest)?;
            return Ok(GossipKey::Server { pool, server });
        }
        if let Some(rest) = key.strip_prefix(LOAD_PREFIX) {
            let (pool, server) = two(rest)?;
            return Ok(GossipKey::Load { pool, server });
        }
        if let Some(rest) = key.strip_prefix(SESSION_PREFIX) {
            let (pool, key) = two(rest)?;
            return Ok(GossipKey::Session { pool, key });
        }
        if let Some(rest) = key.strip_prefix(RATE_PREFIX) {
            let (zone, hex) = two(rest)?;
            if hex.len() != 16 {
                return Err(KeyError::BadKey { key: key.to_string(), what: "rate key is not 16 hex digits" });
            }
            let k = u64::from_str_radix(&hex, 16)
                .map_err(|_| KeyError::BadKey { key: key.to_string(), what: "rate key is not 16 hex digits" })?;
            return Ok(GossipKey::Rate { zone, key: k });
        }
        if let Some(rest) = key.strip_prefix(PRIMARY_PREFIX) {
            if rest.contains(':') {
                return Err(KeyError::BadKey { key: key.to_string(), what: "too many `:`" });
            }
            return Ok(GossipKey::Primary { pool: dec(key, rest, "empty pool name")? });
        }
        match key {
            NODE_VERSION => Ok(GossipKey::NodeVersion),
            NODE_ADMIN_ADDR => Ok(GossipKey::NodeAdminAddr),
            NODE_LEAVING => Ok(GossipKey::NodeLeaving),
            NODE_DRAINING => Ok(GossipKey::NodeDraining),
            _ => Err(KeyError::UnknownKey(key.to_string())),
        }
    }
}

/// A server's state as one node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerHealth {
    Up,
    Down,
    Draining,
    Maintenance,
}

impl ServerHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerHealth::Up => "up",
            ServerHealth::Down => "down",
            ServerHealth::Draining => "draining",
            ServerHealth::Maintenance => "maintenance",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "up" => ServerHealth::Up,
            "down" => ServerHealth::Down,
            "draining" => ServerHealth::Draining,
            "maintenance" => ServerHealth::Maintenance,
            _ => return None,
        })
    }
}

/// Value of `server:{pool}:{server}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthView {
    pub state: ServerHealth,
    /// Unix ms since which the server has been in `state` (by this node).
    pub since_ms: u64,
}

/// Value of `load:{pool}:{server}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadSummary {
    pub sessions: u64,
    pub connections: u64,
}

/// A decoded gossip value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GossipValue {
    Health(HealthView),
    Load(LoadSummary),
    /// The value of `session:{pool}:{key}`, as text: the cluster module
    /// does not depend on `sessions`, and `control::replication::record` is
    /// the one place that turns a session record into this text and back.
    Session(String),
    /// The server name of `primary:{pool}`.
    Primary(String),
    /// A node's count of a rate-limit key, and when (unix ms) it was counted.
    Rate {
        count: u32,
        at_ms: u64,
    },
    Version(String),
    AdminAddr(SocketAddr),
    Leaving {
        since_ms: u64,
    },
    /// Unix ms since which the node drains.
    Draining {
        since_ms: u64,
    },
}

impl HealthView {
    pub fn encode(&self) -> String {
        format!("{} {}", self.state.as_str(), self.since_ms)
    }

    pub fn decode(key: &str, value: &str) -> Result<Self, KeyError> {
        let bad = |what| KeyError::BadValue { key: key.to_string(), value: value.to_string(), what };
        let (state, since) = value.split_once(' ').ok_or_else(|| bad("expected `<state> <since_ms>`"))?;
        let state = ServerHealth::parse(state).ok_or_else(|| bad("state is not up|down|draining|maintenance"))?;
        let since_ms = since.parse().map_err(|_| bad("since_ms is not an integer"))?;
        Ok(HealthView { state, since_ms })
    }
}

impl LoadSummary {
    pub fn encode(&self) -> String {
        format!("{} {}", self.sessions, self.connections)
    }

    pub fn decode(key: &str, value: &str) -> Result<Self, KeyError> {
        let bad = |what| KeyError::BadValue { key: key.to_string(), value: value.to_string(), what };
        let (s, c) = value.split_once(' ').ok_or_else(|| bad("expected `<sessions> <connections>`"))?;
        Ok(LoadSummary {
            sessions: s.parse().map_err(|_| bad("sessions is not an integer"))?,
            connections: c.parse().map_err(|_| bad("connections is not an integer"))?,
        })
    }
}

impl GossipValue {
    fn kind(&self) -> &'static str {
        match self {
            GossipValue::Health(_) => "health",
            GossipValue::Load(_) => "load",
            GossipValue::Session(_) => "session",
            GossipValue::Primary(_) => "primary",
            GossipValue::Rate { .. } => "rate",
            GossipValue::Version(_) => "version",
            GossipValue::AdminAddr(_) => "admin address",
            GossipValue::Leaving { .. } => "leaving",
            GossipValue::Draining { .. } => "draining",
        }
    }

    /// Checks that this value is the kind `key` holds.
    pub fn check_fits(&self, key: &GossipKey) -> Result<(), KeyError> {
        let fits = matches!(
            (key, self),
            (GossipKey::Server { .. }, GossipValue::Health(_))
                | (GossipKey::Load { .. }, GossipValue::Load(_))
                | (GossipKey::Session { .. }, GossipValue::Session(_))
                | (GossipKey::Primary { .. }, GossipValue::Primary(_))
                | (GossipKey::Rate { .. }, GossipValue::Rate { .. })
                | (GossipKey::NodeVersion, GossipValue::Version(_))
                | (GossipKey::NodeAdminAddr, GossipValue::AdminAddr(_))
                | (GossipKey::NodeLeaving, GossipValue::Leaving { .. })
                | (GossipKey::NodeDraining, GossipValue::Draining { .. })
        );
        if fits {
            Ok(())
        } else {
            Err(KeyError::Mismatch { key: key.encode().unwrap_or_else(|_| format!("{key:?}")), value: self.kind() })
        }
    }

    /// The chitchat value string.
    pub fn encode(&self) -> Result<String, KeyError> {
        Ok(match self {
            GossipValue::Health(h) => h.encode(),
            GossipValue::Load(l) => l.encode(),
            GossipValue::Session(text) => {
                non_empty(text, "session value")?;
                text.clone()
            }
            GossipValue::Rate { count, at_ms } => format!("{count} {at_ms}"),
            GossipValue::Primary(server) => {
                non_empty(server, "server name")?;
                server.clone()
            }
            GossipValue::Version(v) => v.clone(),
            GossipValue::AdminAddr(a) => a.to_string(),
            GossipValue::Leaving { since_ms } | GossipValue::Draining { since_ms } => since_ms.to_string(),
        })
    }
}

/// Decodes one chitchat key/value pair. Unknown keys give
/// [`KeyError::UnknownKey`] so that a newer peer's keys can be skipped.
pub fn decode_entry(key: &str, value: &str) -> Result<(GossipKey, GossipValue), KeyError> {
    let k = GossipKey::parse(key)?;
    let v = match &k {
        GossipKey::Server { .. } => GossipValue::Health(HealthView::decode(key, value)?),
        GossipKey::Load { .. } => GossipValue::Load(LoadSummary::decode(key, value)?),
        GossipKey::Session { .. } if value.is_empty() => {
            return Err(KeyError::BadValue { key: key.to_string(), value: String::new(), what: "empty session value" })
        }
        GossipKey::Session { .. } => GossipValue::Session(value.to_string()),
        GossipKey::Rate { .. } => {
            let bad = |what| KeyError::BadValue { key: key.to_string(), value: value.to_string(), what };
            let (c, at) = value.split_once(' ').ok_or_else(|| bad("expected `<count> <at_ms>`"))?;
            GossipValue::Rate {
                count: c.parse().map_err(|_| bad("count is not an integer"))?,
                at_ms: at.parse().map_err(|_| bad("at_ms is not an integer"))?,
            }
        }
        GossipKey::Primary { .. } if value.is_empty() => {
            return Err(KeyError::BadValue { key: key.to_string(), value: String::new(), what: "empty server name" })
        }
        GossipKey::Primary { .. } => GossipValue::Primary(value.to_string()),
        GossipKey::NodeVersion => GossipValue::Version(value.to_string()),
        GossipKey::NodeAdminAddr => GossipValue::AdminAddr(value.parse().map_err(|_| KeyError::BadValue {
            key: key.to_string(),
            value: value.to_string(),
            what: "not a socket address",
        })?),
        GossipKey::NodeLeaving | GossipKey::NodeDraining => {
            let since_ms = value.parse().map_err(|_| KeyError::BadValue {
                key: key.to_string(),
                value: value.to_string(),
                what: "not an integer",
            })?;
            match k {
                GossipKey::NodeLeaving => GossipValue::Leaving { since_ms },
                _ => GossipValue::Draining { since_ms },
            }
        }
    };
    Ok((k, v))
}

/// Typed reads over a chitchat [`chitchat::NodeState`] (quickwit's
/// `NodeStateExt` pattern). Malformed values read as absent.
pub trait NodeStateExt {
    fn health_view(&self, pool: &str, server: &str) -> Option<HealthView>;
    fn load_summary(&self, pool: &str, server: &str) -> Option<LoadSummary>;
    fn node_version(&self) -> Option<&str>;
    fn admin_addr(&self) -> Option<SocketAddr>;
    /// Set when the node announced a graceful leave.
    fn leaving_since_ms(&self) -> Option<u64>;
    /// Set while the node drains.
    fn draining_since_ms(&self) -> Option<u64>;
}

impl NodeStateExt for chitchat::NodeState {
    fn health_view(&self, pool: &str, server: &str) -> Option<HealthView> {
        let key = GossipKey::server(pool, server).encode().ok()?;
        HealthView::decode(&key, self.get(&key)?).ok()
    }

    fn load_summary(&self, pool: &str, server: &str) -> Option<LoadSummary> {
        let key = GossipKey::load(pool, server).encode().ok()?;
        LoadSummary::decode(&key, self.get(&key)?).ok()
    }

    fn node_version(&self) -> Option<&str> {
        self.get(NODE_VERSION)
    }

    fn admin_addr(&self) -> Option<SocketAddr> {
        self.get(NODE_ADMIN_ADDR)?.parse().ok()
    }

    fn leaving_since_ms(&self) -> Option<u64> {
        self.get(NODE_LEAVING)?.parse().ok()
    }

    fn draining_since_ms(&self) -> Option<u64> {
        self.get(NODE_DRAINING)?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(k: GossipKey, v: GossipValue) {
        let ks = k.encode().unwrap();
        let vs = v.encode().unwrap();
        assert_eq!(decode_entry(&ks, &vs).unwrap(), (k, v), "{ks} = {vs}");
    }

    #[test]
    fn keys_look_as_documented() {
        assert_eq!(GossipKey::server("api", "s1").encode().unwrap(), "server:api:s1");
        assert_eq!(GossipKey::load("api", "s1").encode().unwrap(), "load:api:s1");
        assert_eq!(GossipKey::session("agents", "host-1.example").encode().unwrap(), "session:agents:host-1.example");
        assert_eq!(GossipKey::NodeVersion.encode().unwrap(), "node:version");
        assert_eq!(GossipKey::NodeAdminAddr.encode().unwrap(), "node:admin_addr");
        // A server named by its address keeps its colon, escaped.
        assert_eq!(GossipKey::server("api", "10.0.1.10:8080").encode().unwrap(), "server:api:10.0.1.10%3A8080");
    }

    #[test]
    fn every_kind_round_trips() {
        roundtrip(
            GossipKey::server("api", "10.0.1.10:8080"),
            GossipValue::Health(HealthView { state: ServerHealth::Draining, since_ms: 1_712_345_678_901 }),
        );
        for state in [ServerHealth::Up, ServerHealth::Down, ServerHealth::Maintenance] {
            roundtrip(GossipKey::server("p", "s"), GossipValue::Health(HealthView { state, since_ms: 0 }));
        }
        roundtrip(GossipKey::load("api", "s 1"), GossipValue::Load(LoadSummary { sessions: 12, connections: 30 }));
        // A session value is text here (`control::replication::record` reads it).
        roundtrip(
            GossipKey::session("agents", "weird:key %20 with spaces\n"),
            GossipValue::Session("L 1 2 o s".into()),
        );
        roundtrip(GossipKey::NodeVersion, GossipValue::Version("0.1.0 (abc)".into()));
        roundtrip(GossipKey::NodeAdminAddr, GossipValue::AdminAddr("127.0.0.1:9100".parse().unwrap()));
        roundtrip(GossipKey::NodeLeaving, GossipValue::Leaving { since_ms: 42 });
        roundtrip(GossipKey::NodeDraining, GossipValue::Draining { since_ms: 43 });
        roundtrip(GossipKey::primary("db:main"), GossipValue::Primary("s 1:x".into()));
        roundtrip(GossipKey::rate("auth:x", 0xdead_beef_0000_0001), GossipValue::Rate { count: 7, at_ms: 42 });
        assert!(decode_entry("rate:auth:12", "1 2").is_err(), "a short key is refused");
        assert!(decode_entry("rate:auth:00000000000000zz", "1 2").is_err());
        assert!(decode_entry("rate:auth:0000000000000001", "x 2").is_err());
        assert!(decode_entry("primary:db", "").is_err(), "an empty server name is refused");
        assert!(decode_entry("primary:a:b", "s").is_err(), "a pool name with a raw `:` is refused");
    }

    #[test]
    fn malformed_keys_are_errors() {
        for k in ["", "server:", "server:api", "server::s1", "server:api:", "server:a:b:c", "load:x", "session:%ff:k"] {
            assert!(GossipKey::parse(k).is_err(), "{k:?}");
        }
        assert!(matches!(GossipKey::parse("future:thing"), Err(KeyError::UnknownKey(_))));
        assert!(matches!(GossipKey::server("", "s").encode(), Err(KeyError::EmptyName { .. })));
        assert!(matches!(GossipKey::session("p", "").encode(), Err(KeyError::EmptyName { .. })));
    }

    #[test]
    fn malformed_values_are_errors() {
        let cases = [
            ("server:a:b", ""),
            ("server:a:b", "up"),
            ("server:a:b", "sideways 5"),
            ("server:a:b", "up -5"),
            ("server:a:b", "up 5 6"),
            ("load:a:b", "1"),
            ("load:a:b", "x 2"),
            ("session:a:b", ""),
            ("node:admin_addr", "nowhere"),
            ("node:leaving", "soon"),
            ("node:draining", "now"),
        ];
        for (k, v) in cases {
            assert!(decode_entry(k, v).is_err(), "{k} = {v:?}");
        }
        let e = decode_entry("server:a:b", "sideways 5").unwrap_err().to_string();
        assert!(e.contains("server:a:b") && e.contains("sideways"), "{e}");
    }

    #[test]
    fn values_must_fit_their_key() {
        let load = GossipValue::Load(LoadSummary::default());
        assert!(load.check_fits(&GossipKey::load("p", "s")).is_ok());
        let e = load.check_fits(&GossipKey::server("p", "s")).unwrap_err();
        assert_eq!(e, KeyError::Mismatch { key: "server:p:s".into(), value: "load" });
        assert!(GossipValue::Leaving { since_ms: 1 }.check_fits(&GossipKey::NodeVersion).is_err());
    }

    #[test]
    fn names_escape_and_come_back() {
        for name in ["s1", "10.0.1.10:8080", "a b\n%", "é"] {
            assert_eq!(unescape_name(&escape_name(name).to_string()).as_deref(), Some(name));
        }
        assert_eq!(escape_name("10.0.1.10:8080").to_string(), "10.0.1.10%3A8080");
        assert_eq!(unescape_name(""), None);
        assert_eq!(unescape_name("%ff"), None);
    }
}
