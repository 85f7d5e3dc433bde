//! Configuration: TOML text → [`raw::RawConfig`] (serde, unknown keys
//! rejected) → [`validate`] → [`Config`].
//!
//! Every error names the file, line and column, the key, and what was
//! expected, e.g. `node.toml:14:9: pools[0].servers[2].weight: must be
//! 1..=256, got 0`. Called by `runtime` (run), `control` (reload) and
//! `app` (check-config); reads files, touches nothing else.

mod keys;
mod locate;
pub mod raw;
#[cfg(test)]
pub mod sample;
pub mod units;
mod validate;
pub use validate::hostname;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::Method;

pub use keys::{Key, KEYS};
pub use locate::{KeyPath, Locator};

use crate::model::{Balance, RetryOn};

/// The longest `limits.shed_over`, and `over` of a node's drain.
pub const MAX_SHED_OVER: Duration = Duration::from_secs(3600);

/// The default config compiled into the binary (`run` without `-c`).
pub const DEFAULT_CONFIG: &str = include_str!("../../assets/default.toml");

/// A validated configuration. Indexes between sections (route → pool) are
/// checked, so users of it never look a name up.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where it came from, for messages (`node.toml` or `<embedded default>`).
    pub source: String,
    pub node: NodeConfig,
    pub admin: AdminConfig,
    /// Record per-request metrics (route counters, latency histograms).
    /// Off only to measure what they cost; `/metrics` then shows zeros for
    /// those families.
    pub metrics_enabled: bool,
    pub limits: Limits,
    pub log: LogConfig,
    pub headers: HeaderConfig,
    /// `None`: a standalone node.
    pub cluster: Option<ClusterSettings>,
    pub listeners: Vec<ListenerConfig>,
    pub rate_limits: Vec<RateLimitConfig>,
    pub pools: Vec<PoolConfig>,
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    pub name: String,
    pub data_dir: PathBuf,
    /// Runtime worker threads; 1 runs a single-threaded runtime.
    pub workers: usize,
    /// How long the runtime keeps polling for I/O after the last request
    /// instead of sleeping ([`crate::busy_poll`]); zero: off.
    pub busy_poll: Duration,
    /// While busy polling, how long to wait after a turn of the event loop
    /// that served few requests before polling again, so that events arrive
    /// in batches ([`crate::busy_poll`]); zero: off.
    pub busy_poll_coalesce: Duration,
}

/// The `[cluster]` table: gossip with peers.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSettings {
    /// Gossip (UDP) and the cluster API (TCP, same port).
    pub listen: SocketAddr,
    /// The address peers reach this node at; `None`: `listen`.
    pub advertise: Option<SocketAddr>,
    /// `host:port` of nodes to join through.
    pub seeds: Vec<String>,
    pub secret_file: PathBuf,
    /// Read and checked from `secret_file` when the config is loaded.
    pub secret: crate::cluster::ClusterSecret,
    pub gossip_interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// Where the admin API listens; `None` when disabled.
    pub listen: Option<SocketAddr>,
    pub token_file: Option<PathBuf>,
    /// The bearer token read from `token_file`; without it, writes are off.
    pub token: Option<String>,
    /// Serve the stats page at `/stats` (default true).
    pub stats: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// A client must send a whole request head within this time.
    pub header_timeout: Duration,
    /// An idle keep-alive client connection is closed after this time.
    pub keepalive_timeout: Duration,
    /// A client sending a request body must send something at least this
    /// often (nginx's `client_body_timeout`); 408 otherwise.
    pub body_timeout: Duration,
    /// A write to a client may stay blocked (the client stopped reading)
    /// this long before the connection is closed (nginx's `send_timeout`).
    pub send_timeout: Duration,
    /// Largest request body accepted (413 above it).
    pub max_body: u64,
    /// Largest request head accepted (431 above it).
    pub max_header_size: usize,
    /// Client connections held at once, over all listeners; more wait in the
    /// kernel's accept queue.
    pub max_connections: usize,
    /// How long in-flight requests may run after SIGTERM.
    pub shutdown_timeout: Duration,
    /// WebSocket tunnels closed together (node shutdown, a server marked
    /// down) close spread over this window, so that thousands of agents
    /// do not reconnect in the same millisecond.
    pub tunnel_close_spread: Duration,
    /// A node that drains (`ctl drain-node`), or the old process of an
    /// in-place upgrade, closes its WebSocket tunnels spread over this
    /// window, so that agents move to other nodes a few at a time.
    pub shed_over: Duration,
    /// The old process of an in-place upgrade keeps its open tunnels this
    /// long before shedding them over `shed_over`.
    pub upgrade_drain_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
    pub access_log: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HeaderConfig {
    /// Add the seed's security headers to every response.
    pub security: bool,
    /// Set `X-Forwarded-For`, `X-Real-IP`, `X-Forwarded-Proto` and
    /// `X-Forwarded-Host` on requests to servers.
    pub forwarded: bool,
    pub frame_options: String,
    /// `Strict-Transport-Security` value for HTTPS responses (`None`: off).
    pub hsts: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    pub name: String,
    pub bind: SocketAddr,
    pub tls: Option<TlsConfig>,
    /// Redirect plain-HTTP requests to HTTPS on this port.
    pub redirect_to_https: Option<u16>,
    /// Exact paths that are not redirected (e.g. `/health`).
    pub redirect_except: Vec<String>,
    /// Read a PROXY protocol v1/v2 header before anything else.
    pub accept_proxy_protocol: bool,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<Cidr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    /// Certificates; the first is the default (no or unknown SNI).
    pub certificates: Vec<CertificateConfig>,
    /// Generate and keep a self-signed certificate in `data_dir` for `hosts`.
    pub self_signed: Option<Vec<String>>,
    /// `TLSv1.2`, `TLSv1.3`; empty: both.
    pub protocols: Vec<String>,
    /// Cipher suite names (nginx/OpenSSL or IANA spelling); empty: defaults.
    pub ciphers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CertificateConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// SNI names; empty: the certificate's own names.
    pub names: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip.trim().parse::<std::net::IpAddr>().ok()?, Some(p.trim().parse::<u8>().ok()?)),
            None => (s.trim().parse().ok()?, None),
        };
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { addr: ip, prefix })
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::*;
        let ip = match (self.addr, ip) {
            (V4(_), V6(v6)) => v6.to_ipv4_mapped().map(V4).unwrap_or(V6(v6)),
            _ => ip,
        };
        match (self.addr, ip) {
            (V4(a), V4(b)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix) };
                u32::from(a) & mask == u32::from(b) & mask
            }
            (V6(a), V6(b)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - self.prefix) };
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RateKind {
    /// nginx `limit_req rate burst nodelay`.
    Bucket { per_second: f64, burst: u32 },
    /// At most `limit` requests in any rolling `window` (HAProxy stick table).
    Window { limit: u32, window: Duration },
}

/// As an operator writes it: `5/s burst 10`, `100 per 1m`.
impl fmt::Display for RateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RateKind::Bucket { per_second, burst } => write!(f, "{per_second}/s burst {burst}"),
            RateKind::Window { limit, window } => write!(f, "{limit} per {}", humantime::format_duration(*window)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    ClientIp,
    Header(http::HeaderName),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    pub name: String,
    pub kind: RateKind,
    pub key: RateKey,
    /// Status over the limit (429 by default; nginx answers 503).
    pub status: u16,
    /// Most clients remembered at once (the zone's memory bound).
    pub max_keys: usize,
    /// Window zones in a cluster: the limit applies to the sum of every
    /// node's count for a key.
    pub cluster: bool,
}

/// PROXY protocol header sent on new connections to a pool's servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendProxyProtocol {
    V1,
    V2,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub name: String,
    pub balance: Balance,
    /// `primary` only: go back to an earlier server in the list when it
    /// recovers (default: stay on the current one until it fails).
    pub failback: bool,
    /// Close a server's WebSocket tunnels when active checks mark it down
    /// (HAProxy's `on-marked-down shutdown-sessions`).
    pub close_tunnels_on_down: bool,
    /// Idle keep-alive connections kept per server.
    pub keepalive: usize,
    pub keepalive_timeout: Duration,
    pub connect_timeout: Duration,
    /// Longest wait for the response head after the request was sent.
    pub read_timeout: Duration,
    /// Longest stall while writing the request to the server.
    pub send_timeout: Duration,
    /// Further servers tried after the first fails.
    pub retries: u32,
    pub retry_on: RetryOn,
    /// Failures within `fail_timeout` that make a server unavailable; 0 turns
    /// passive health off.
    pub max_fails: u32,
    pub fail_timeout: Duration,
    /// Sticky sessions: requests with the same key go to the same server.
    pub affinity: Option<AffinityConfig>,
    /// Speak TLS to the servers.
    pub tls: Option<UpstreamTlsConfig>,
    /// Send a PROXY protocol header to the servers (connections then carry
    /// one client each and are not pooled).
    pub send_proxy_protocol: Option<SendProxyProtocol>,
    /// After recovering, a server's weight ramps from 1 to full over this
    /// time (zero: at once).
    pub slow_start: Duration,
    pub servers: Vec<ServerConfig>,
    /// Active health checks; all must pass for a server to be up.
    pub checks: Vec<CheckConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTlsConfig {
    /// CA certificates that sign the servers' certificates (PEM); without
    /// it, the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate: only when written out explicitly.
    pub insecure_skip_verify: bool,
    /// Name checked against the certificate; the server's address otherwise.
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AffinityConfig {
    /// `cookie:NAME`, `query:NAME` or `header:NAME`.
    pub key: String,
    /// `sysmanage-token:hostname` or `jwt:CLAIM`.
    pub extract: Option<String>,
    pub policy: AffinityPolicy,
    /// How long a key stays pinned after its last use.
    pub ttl: Duration,
    /// No or undecodable key: 400 `Missing session ID` (`reject`), or
    /// balance without affinity.
    pub reject_missing: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AffinityPolicy {
    LeastLoaded,
    Hash,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    Http {
        method: Method,
        path: String,
        /// `Host` header; the server's address when absent.
        host: Option<String>,
        status_lo: u16,
        status_hi: u16,
        /// The body must contain this (first 64 KiB are read).
        body: Option<String>,
    },
    Tcp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CheckConfig {
    pub kind: CheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures that take a server down.
    pub fall: u32,
    /// Consecutive successes that bring it back.
    pub rise: u32,
    /// `false`: plain text even to a pool with `tls` (`None`: as the pool).
    pub tls: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Name used in logs, metrics and the API (defaults to the address text).
    pub name: String,
    pub addr: SocketAddr,
    /// The address as written (`host:port`), sent nowhere but shown to users.
    pub addr_text: String,
    pub weight: u32,
    pub backup: bool,
    /// Most requests in flight at once; 0 means no limit.
    pub max_conns: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub name: String,
    pub matcher: RouteMatch,
    pub action: RouteAction,
    pub rate_limit: Option<usize>,
    /// A WebSocket tunnel with no bytes either way for this long is closed.
    pub tunnel_timeout: Duration,
    /// Once one side of a tunnel has closed, the other gets this long to
    /// finish (HAProxy's `timeout client-fin` / `server-fin`).
    pub tunnel_fin_timeout: Duration,
    /// No server for an Upgrade: close the connection without a response
    /// (`true`, the default: agents treat that as transient) or answer 503.
    pub close_when_unavailable: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteMatch {
    pub path: PathMatch,
    /// Lower-case host without port.
    pub host: Option<String>,
    pub methods: Option<Vec<Method>>,
    /// Match only requests that ask for a WebSocket upgrade.
    pub websocket: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RouteAction {
    Proxy { pool: usize },
    Respond { status: u16, body: Bytes, content_type: String },
    Static { dir: PathBuf, cache_control: Option<String> },
    Redirect { to: String, status: u16 },
}

/// One located config error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub position: Option<(usize, usize)>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every error found in one config, in file order.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Reads and validates a config file.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let label = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: label.clone(),
            position: None,
            key: String::new(),
            message: format!("cannot read the config file: {e}"),
        }])
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse_str(&text, &label, &base)
}

/// The embedded default config.
pub fn default_config() -> Result<Config, ConfigErrors> {
    parse_str(DEFAULT_CONFIG, "<embedded default>", Path::new("."))
}

/// Parses and validates config text; `label` names it in errors and relative
/// paths (static directories) resolve against `base`.
pub fn parse_str(text: &str, label: &str, base: &Path) -> Result<Config, ConfigErrors> {
    let locator = Locator::new(text);
    let raw: raw::RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let (position, key) = match e.span() {
                Some(span) => (Some(locator.line_col(span.start)), locator.path_at(span.start).to_string()),
                None => (None, String::new()),
            };
            return Err(ConfigErrors(vec![ConfigError {
                file: label.to_string(),
                position,
                key,
                message: e.message().trim().to_string(),
            }]));
        }
    };
    validate::validate(raw, label, base).map_err(|errors| {
        let mut out: Vec<ConfigError> = errors
            .into_iter()
            .map(|(path, message)| ConfigError {
                file: label.to_string(),
                position: locator.position(&path),
                key: path.to_string(),
                message,
            })
            .collect();
        out.sort_by_key(|e| e.position.unwrap_or((usize::MAX, 0)));
        ConfigErrors(out)
    })
}

impl Config {
    /// A short human summary for `check-config`.
    pub fn summary(&self) -> String {
        let mut s = format!("{}: OK\n", self.source);
        s.push_str(&format!("  node {} ({} workers)\n", self.node.name, self.node.workers));
        for l in &self.listeners {
            s.push_str(&format!("  listener {} on {}\n", l.name, l.bind));
        }
        for p in &self.pools {
            s.push_str(&format!("  pool {} ({}, {} servers)\n", p.name, p.balance, p.servers.len()));
            for sv in &p.servers {
                s.push_str(&format!(
                    "    server {} weight {}{}{}\n",
                    sv.addr_text,
                    sv.weight,
                    if sv.backup { " backup" } else { "" },
                    if sv.max_conns > 0 { format!(" max_conns {}", sv.max_conns) } else { String::new() },
                ));
            }
        }
        for r in &self.routes {
            let path = match &r.matcher.path {
                PathMatch::Exact(p) => format!("= {p}"),
                PathMatch::Prefix(p) => format!("{p}*"),
            };
            let action = match &r.action {
                RouteAction::Proxy { pool } => format!("pool {}", self.pools[*pool].name),
                RouteAction::Respond { status, .. } => format!("respond {status}"),
                RouteAction::Static { dir, .. } => format!("static {}", dir.display()),
                RouteAction::Redirect { to, status } => format!("redirect {status} {to}"),
            };
            s.push_str(&format!("  route {} {} -> {}\n", r.name, path, action));
        }
        s
    }
}
