//! Serde types of the admin API, shared by `admin` (which produces them) and
//! the `ctl`, `health` and `top` clients (which read them). Field names are
//! part of the API contract.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub node: NodeInfo,
    pub listeners: Vec<ListenerInfo>,
    pub totals: Totals,
    pub pools: Vec<PoolStatus>,
    /// Newest first.
    pub events: Vec<Event>,
    /// `None`: a standalone node (or a node older than clustering).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStatus>,
    /// The rate-limit zones, in config order.
    #[serde(default)]
    pub rate_limits: Vec<RateLimitStatus>,
}

/// One rate-limit zone in `/api/v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RateLimitStatus {
    pub name: String,
    /// The limit as configured: `5/s burst 10` or `100 per 1m`.
    pub limit: String,
    /// Window zones summed over the cluster's nodes.
    pub cluster: bool,
    /// Clients (keys) tracked now, and the most the zone holds.
    pub keys: usize,
    pub max_keys: usize,
    /// Requests refused since the zone was built (a reload that changes the
    /// zone starts it again).
    pub rejected: u64,
    /// Clients with live state dropped because the zone was full.
    pub evicted_live: u64,
}

/// The node's cluster, in `/api/v1/status` and `/api/v1/members`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClusterStatus {
    /// This node's gossip address (UDP; the cluster API is on the same TCP port).
    pub gossip_addr: String,
    /// Members by state (`live`, `joining`, `leaving`, `left`, `dead`).
    pub live: usize,
    pub dead: usize,
    /// A catch-up of the session table is due or running.
    pub syncing: bool,
    pub last_sync: Option<SyncStatus>,
    /// Datagrams dropped on receipt (any reason) and of them, the ones that
    /// failed authentication (another secret, or forged).
    pub datagrams_dropped: u64,
    pub auth_failures: u64,
    /// This node's gossip state (what each peer holds of it): keys and bytes.
    #[serde(default)]
    pub state_keys: usize,
    #[serde(default)]
    pub state_bytes: usize,
    pub members: Vec<MemberInfo>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SyncStatus {
    pub peer: Option<String>,
    pub records: usize,
    pub applied: usize,
    pub took_ms: u64,
    pub at_unix_ms: u64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MemberInfo {
    pub name: String,
    /// Gossip address.
    pub addr: String,
    /// Grows on every restart of the member.
    pub generation: u64,
    pub state: String,
    pub is_self: bool,
    /// Milliseconds since its heartbeat last advanced (`None`: this node).
    pub last_heard_ms: Option<u64>,
    pub version: Option<String>,
    pub admin_addr: Option<String>,
    /// Sticky sessions and connections the member reports for its servers.
    pub sessions: Option<u64>,
    pub connections: Option<u64>,
    /// Unix ms since which the member drains (`ctl drain-node`); `None`
    /// when it does not.
    #[serde(default)]
    pub draining_since_unix_ms: Option<u64>,
}

impl MemberInfo {
    /// Its state in one word: `draining` for a live member that drains.
    pub fn shown_state(&self) -> &str {
        match (self.state.as_str(), self.draining_since_unix_ms) {
            ("live", Some(_)) => "draining",
            (s, _) => s,
        }
    }

    /// `self` for this node, seconds since heard (with `suffix`), or `-`.
    pub fn heard(&self, suffix: &str) -> String {
        match (self.is_self, self.last_heard_ms) {
            (true, _) => "self".to_string(),
            (false, Some(ms)) => format!("{:.1}s{suffix}", ms as f64 / 1000.0),
            (false, None) => "-".to_string(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeInfo {
    pub name: String,
    pub version: String,
    pub uptime_seconds: u64,
    pub started_at_unix_ms: u64,
    pub config_source: String,
    /// Whether write actions are enabled (a token is configured).
    pub admin_writes: bool,
    /// CPU use of the process in percent of one core since the previous
    /// status request (the first: since start).
    #[serde(default)]
    pub cpu_percent: Option<f64>,
    /// Resident memory of the process.
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// Whether the node drains (`ctl drain-node`), since when and over
    /// which window its tunnels are shed.
    #[serde(default)]
    pub drain: NodeDrain,
}

/// A node's draining state: `GET /api/v1/status` (`node.drain`) and the
/// answer of `POST /api/v1/node/drain` and `/undrain`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NodeDrain {
    pub draining: bool,
    /// Unix ms since which the node drains.
    #[serde(default)]
    pub since_unix_ms: Option<u64>,
    /// The window over which its WebSocket tunnels are shed, in ms.
    #[serde(default)]
    pub over_ms: Option<u64>,
    /// Answers of drain and undrain: whether it drained before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub was_draining: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ListenerInfo {
    pub name: String,
    /// As configured (`bind`); port 0 means "any free port".
    pub bind: String,
    /// The address the listener got (the port chosen for port 0). Absent
    /// from older nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default)]
    pub tls: bool,
    /// Client connections open now on this listener, and accepted since
    /// start.
    #[serde(default)]
    pub connections: u64,
    #[serde(default)]
    pub accepted: u64,
    /// Completed and failed TLS handshakes since start (0 without TLS).
    #[serde(default)]
    pub tls_handshakes: u64,
    #[serde(default)]
    pub tls_handshake_failures: u64,
}

impl ListenerInfo {
    /// The bound address when known, else the configured one.
    pub fn addr(&self) -> &str {
        self.address.as_deref().unwrap_or(&self.bind)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Totals {
    pub requests: u64,
    /// Over the last ten seconds.
    pub requests_per_second: f64,
    pub responses_5xx: u64,
    /// Share of 5xx responses over the last ten seconds (0..1).
    pub error_rate: f64,
    pub active_connections: u64,
    pub websocket_tunnels: u64,
    pub retries: u64,
    /// Requests refused by the rate-limit zones, summed (a zone's count
    /// starts again when a reload changes it). Absent from older nodes.
    #[serde(default)]
    pub rate_limited: Option<u64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PoolStatus {
    pub name: String,
    pub balance: String,
    /// Servers that can take new requests now.
    pub available: usize,
    pub total: usize,
    pub servers: Vec<ServerStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServerStatus {
    pub name: String,
    pub addr: String,
    pub backup: bool,
    /// `up`, `down` (checks), `out` (passive health), `draining`,
    /// `maintenance`.
    pub state: String,
    /// Active checks' verdict: `up` or `down`.
    pub health: String,
    /// `normal`, `draining` or `maintenance`.
    pub admin: String,
    /// Configured weight, or the one set through the API.
    pub weight: u32,
    /// What balancing uses now (lower while slow start ramps).
    pub effective_weight: u32,
    pub active_connections: u32,
    /// Live sticky sessions pinned to the server (`None`: the pool has no
    /// affinity).
    #[serde(default)]
    pub sessions: Option<usize>,
    pub requests_total: u64,
    pub requests_per_second: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    #[serde(default)]
    pub p99_ms: Option<f64>,
    /// 5xx answers from the server since start, and per second over the
    /// last ten seconds.
    #[serde(default)]
    pub responses_5xx: u64,
    #[serde(default)]
    pub responses_5xx_per_second: f64,
    /// Requests sent again to another server after this one failed them.
    #[serde(default)]
    pub retries: u64,
    /// WebSocket tunnels open now to the server.
    #[serde(default)]
    pub websocket_tunnels: u64,
    pub last_check: Option<CheckResult>,
    /// Active checks since start, passed and failed.
    #[serde(default)]
    pub checks_ok: u64,
    #[serde(default)]
    pub checks_failed: u64,
    /// Attempts the proxy saw fail (passive health, `max_fails`) since start.
    #[serde(default)]
    pub passive_failures: u64,
    pub consecutive_failures: u32,
    pub changed_at_unix_ms: u64,
    /// Nodes that see the server up, of the live nodes that report on it
    /// (this node included). Absent on a standalone node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes_up: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes_reporting: Option<usize>,
    /// `primary` pools: the server every node sends to.
    #[serde(default)]
    pub active: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckResult {
    pub ok: bool,
    pub latency_ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Event {
    pub at_unix_ms: u64,
    pub kind: String,
    pub pool: Option<String>,
    pub server: Option<String>,
    pub message: String,
}

/// `GET /api/health/detailed`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HealthReport {
    /// `healthy`, `degraded`, `unhealthy`, or `draining` (503) while the
    /// node drains.
    pub status: String,
    pub timestamp: String,
    pub checks: HealthChecks,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HealthChecks {
    pub backends: BackendsCheck,
    pub uptime: UptimeCheck,
    /// Present when a pool has sticky sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_store: Option<StoreCheck>,
    /// Present in a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterCheck>,
    /// Present while the node drains (`ctl drain-node`): the report's
    /// status is then `draining`, answered 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining: Option<NodeDrain>,
}

/// The cluster check of `/api/health/detailed`: `syncing` while the session
/// table is being fetched from a peer (the node routes, but sessions created
/// elsewhere may not be known yet), `degraded` when it could not catch up.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClusterCheck {
    /// `healthy`, `syncing` or `degraded`.
    pub status: String,
    pub syncing: bool,
    pub live_members: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoreCheck {
    pub status: String,
    pub file: String,
    /// A probe write committed to disk and a table read, end to end.
    pub latency_ms: f64,
    pub records: usize,
    /// Commits that failed since start (e.g. a full disk).
    pub commit_errors: u64,
    /// Records waiting in memory for the file to be writable again.
    #[serde(default)]
    pub pending: u64,
    /// What keeps the file from being written now, or the probe's failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Where a damaged file found at start was moved (this node then
    /// started with an empty store), and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_aside: Option<MovedAsideInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MovedAsideInfo {
    pub to: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackendsCheck {
    pub status: String,
    pub pools: Vec<PoolHealth>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PoolHealth {
    pub name: String,
    /// Whether a route sends traffic to this pool.
    pub routed: bool,
    pub available: usize,
    pub total: usize,
    pub status: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UptimeCheck {
    pub status: String,
    pub seconds: u64,
}

/// `GET /api/health/websocket`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WebsocketHealth {
    pub status: String,
    pub active_tunnels: u64,
    pub limit: u64,
    pub ratio: f64,
}

/// The answer to an admin action.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ActionResult {
    pub pool: String,
    pub server: String,
    pub from: String,
    pub to: String,
}

/// Error bodies: `{"error": "...", "details": [...]}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ApiError {
    pub error: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

/// `GET /api/v1/sessions`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionsView {
    /// Records in the table (live, expired not yet swept, tombstones).
    pub total: usize,
    /// Live sessions per server, per pool.
    pub pools: std::collections::BTreeMap<String, std::collections::BTreeMap<String, usize>>,
}

/// One session record (`GET /api/v1/sessions?key=K`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionRecordView {
    pub key: String,
    pub pool: String,
    pub server: String,
    pub expires_at_unix_ms: u64,
    pub version: u64,
    pub origin: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_shows_the_address_it_got_and_older_nodes_still_read() {
        // An older node's answer has only `bind`: it still reads, and shows it.
        let old: ListenerInfo = serde_json::from_str(r#"{"name":"http","bind":"127.0.0.1:0"}"#).unwrap();
        assert_eq!((old.addr(), old.tls, old.connections), ("127.0.0.1:0", false, 0));
        let new = ListenerInfo { address: Some("127.0.0.1:41234".into()), ..old };
        assert_eq!(new.addr(), "127.0.0.1:41234");
        let json = serde_json::to_value(&new).unwrap();
        assert_eq!(json["bind"], "127.0.0.1:0");
        assert_eq!(json["address"], "127.0.0.1:41234");
    }
}
