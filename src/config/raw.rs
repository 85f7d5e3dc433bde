//! The config file as written: serde types with every unknown key rejected.
//!
//! Numbers that have a valid range are read as wide integers so that the
//! validator, not serde, reports them with the range that is expected.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub node: RawNode,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub headers: RawHeaders,
    pub cluster: Option<RawCluster>,
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    #[serde(default)]
    pub rate_limits: Vec<RawRateLimit>,
    #[serde(default)]
    pub pools: Vec<RawPool>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub name: Option<String>,
    pub data_dir: Option<String>,
    pub workers: Option<i64>,
    pub busy_poll: Option<String>,
    pub busy_poll_coalesce: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub enabled: Option<bool>,
    pub listen: Option<String>,
    pub token_file: Option<String>,
    pub stats: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub header_timeout: Option<String>,
    pub keepalive_timeout: Option<String>,
    pub body_timeout: Option<String>,
    pub send_timeout: Option<String>,
    pub max_body: Option<String>,
    pub max_header_size: Option<String>,
    pub max_connections: Option<i64>,
    pub shutdown_timeout: Option<String>,
    pub tunnel_close_spread: Option<String>,
    pub shed_over: Option<String>,
    pub upgrade_drain_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub level: Option<String>,
    pub format: Option<String>,
    pub access_log: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaders {
    pub security: Option<bool>,
    pub forwarded: Option<bool>,
    pub frame_options: Option<String>,
    pub hsts: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub listen: Option<String>,
    pub advertise: Option<String>,
    pub seeds: Option<Vec<String>>,
    pub secret_file: Option<String>,
    pub gossip_interval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: Option<String>,
    pub bind: Option<String>,
    pub tls: Option<RawTls>,
    pub redirect_to_https: Option<i64>,
    pub redirect_except: Option<Vec<String>>,
    pub accept_proxy_protocol: Option<bool>,
    pub trusted_proxies: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub self_signed: Option<bool>,
    pub hosts: Option<Vec<String>>,
    pub protocols: Option<Vec<String>>,
    pub ciphers: Option<Vec<String>>,
    #[serde(default)]
    pub certificates: Vec<RawCertificate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub names: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub name: Option<String>,
    pub rate: Option<String>,
    pub burst: Option<i64>,
    pub requests: Option<i64>,
    pub window: Option<String>,
    pub key: Option<String>,
    pub status: Option<i64>,
    pub max_keys: Option<i64>,
    pub cluster: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub name: Option<String>,
    pub balance: Option<String>,
    pub failback: Option<bool>,
    pub close_tunnels_on_down: Option<bool>,
    pub keepalive: Option<i64>,
    pub keepalive_timeout: Option<String>,
    pub connect_timeout: Option<String>,
    pub read_timeout: Option<String>,
    pub send_timeout: Option<String>,
    pub retries: Option<i64>,
    pub retry_on: Option<Vec<String>>,
    pub max_fails: Option<i64>,
    pub fail_timeout: Option<String>,
    pub slow_start: Option<String>,
    pub send_proxy_protocol: Option<String>,
    pub tls: Option<RawUpstreamTls>,
    pub affinity: Option<RawAffinity>,
    #[serde(default)]
    pub servers: Vec<RawServer>,
    #[serde(default)]
    pub checks: Vec<RawCheck>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    pub ca_file: Option<String>,
    pub insecure_skip_verify: Option<bool>,
    pub server_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAffinity {
    pub key: Option<String>,
    pub extract: Option<String>,
    pub policy: Option<String>,
    pub ttl: Option<String>,
    pub on_missing: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub host: Option<String>,
    pub expect_status: Option<RawStatusSpec>,
    pub expect_body: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub fall: Option<i64>,
    pub rise: Option<i64>,
    pub tls: Option<bool>,
}

/// `200` or `"200-399"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawStatusSpec {
    Code(i64),
    Range(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub addr: Option<String>,
    pub name: Option<String>,
    pub weight: Option<i64>,
    pub backup: Option<bool>,
    pub max_conns: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<String>,
    pub path: Option<String>,
    pub path_prefix: Option<String>,
    pub host: Option<String>,
    pub methods: Option<Vec<String>>,
    pub websocket: Option<bool>,
    pub pool: Option<String>,
    pub rate_limit: Option<String>,
    pub respond: Option<RawRespond>,
    pub static_dir: Option<String>,
    pub cache_control: Option<String>,
    pub redirect: Option<RawRedirect>,
    pub tunnel_timeout: Option<String>,
    pub tunnel_fin_timeout: Option<String>,
    pub on_unavailable: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRespond {
    pub status: Option<i64>,
    pub body: Option<String>,
    pub content_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedirect {
    pub to: Option<String>,
    pub status: Option<i64>,
}
