//! Checks a [`RawConfig`] and builds the typed [`Config`]: ranges, units,
//! addresses, unique names and cross-references. Collects every error instead
//! of stopping at the first, so `check-config` shows them all at once.
//!
//! One file per part of the config: [`node`] (`[node]`, `[admin]`,
//! `[limits]`, `[log]`, `[headers]`), [`listeners`], [`rate_limits`],
//! [`pools`] (with their [`checks`]), [`routes`] and [`cluster`]. The parts
//! are checked in that order, which is the order of their errors.

mod checks;
mod cluster;
mod listeners;
mod node;
pub use node::hostname;
mod pools;
mod rate_limits;
mod routes;

use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use super::locate::KeyPath;
use super::raw::*;
use super::units::{parse_duration, parse_size};
use super::*;

/// Every error found: the key it is about and the message.
type Errors = Vec<(KeyPath, String)>;

/// What every check shares: the errors found so far, and the readers of
/// common values that record an error and carry on with the default.
struct Ctx {
    errors: Errors,
}

impl Ctx {
    /// Records an error about the key at `path`.
    fn err(&mut self, path: KeyPath, msg: impl Into<String>) {
        self.errors.push((path, msg.into()));
    }

    /// A value written in units, read by `parse`, or `default` when absent.
    fn parsed<T>(
        &mut self,
        value: &Option<String>,
        path: KeyPath,
        default: T,
        parse: fn(&str) -> Result<T, String>,
    ) -> T {
        match value {
            None => default,
            Some(v) => parse(v).unwrap_or_else(|e| {
                self.err(path, e);
                default
            }),
        }
    }

    /// A duration such as `"10s"`, or `default` when absent.
    fn duration(&mut self, value: &Option<String>, path: KeyPath, default: Duration) -> Duration {
        self.parsed(value, path, default, parse_duration)
    }

    /// A size in bytes such as `"16KiB"`, or `default` when absent.
    fn size(&mut self, value: &Option<String>, path: KeyPath, default: u64) -> u64 {
        self.parsed(value, path, default, parse_size)
    }

    /// An integer in `range`, or `default` when absent.
    fn int(&mut self, value: Option<i64>, path: KeyPath, lo: i64, hi: i64, default: i64) -> i64 {
        match value {
            None => default,
            Some(v) if (lo..=hi).contains(&v) => v,
            Some(v) => {
                self.err(path, format!("must be {lo}..={hi}, got {v}"));
                default
            }
        }
    }

    /// One of two words, each standing for a value; the first when absent
    /// or wrong (e.g. `on_missing = "reject"` or `"balance"`).
    fn either<T>(&mut self, value: Option<&str>, path: KeyPath, first: (&str, T), second: (&str, T)) -> T {
        match value {
            None => first.1,
            Some(v) if v == first.0 => first.1,
            Some(v) if v == second.0 => second.1,
            Some(v) => {
                self.err(path, format!("expected \"{}\" or \"{}\", got \"{v}\"", first.0, second.0));
                first.1
            }
        }
    }

    /// A required, non-empty name that is unique among `seen`.
    fn name(&mut self, value: &Option<String>, path: KeyPath, what: &str, seen: &mut HashSet<String>) -> String {
        match value.as_deref().map(str::trim) {
            None | Some("") => {
                self.err(path, format!("every {what} needs a non-empty name"));
                String::new()
            }
            Some(n) => {
                if !n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                    self.err(path.clone(), format!("must use only letters, digits, '-', '_' and '.', got \"{n}\""));
                }
                if !seen.insert(n.to_string()) {
                    self.err(path, format!("{what} name \"{n}\" is used twice; names must be unique"));
                }
                n.to_string()
            }
        }
    }
}

/// Parses `host:port` (an IP literal, or a name resolved now).
fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Ok(a);
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("expected host:port such as \"127.0.0.1:8080\", got \"{text}\""));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("expected host:port such as \"127.0.0.1:8080\", got \"{text}\""));
    }
    match text.to_socket_addrs() {
        Ok(mut it) => it.next().ok_or_else(|| format!("\"{host}\" resolves to no address")),
        Err(e) => Err(format!("cannot resolve \"{host}\": {e}")),
    }
}

/// Checks every part of `raw` in turn (each part's errors in the order of
/// its keys); a [`Config`] only when there is no error at all.
pub(super) fn validate(raw: RawConfig, label: &str, base: &Path) -> Result<Config, Errors> {
    let mut cx = Ctx { errors: Vec::new() };
    let root = KeyPath::root();
    let node = node::validate_node(&mut cx, &raw.node, root.key("node"));
    let admin = node::validate_admin(&mut cx, &raw.admin, root.key("admin"), base);
    let limits = node::validate_limits(&mut cx, &raw.limits, root.key("limits"));
    let log = node::validate_log(&mut cx, &raw.log, root.key("log"));
    let headers = node::validate_headers(&mut cx, &raw.headers, root.key("headers"));
    let listeners = listeners::validate_listeners(&mut cx, &raw.listeners, root.key("listeners"), base);
    let has_cluster = raw.cluster.is_some();
    let rate_limits =
        rate_limits::validate_rate_limits(&mut cx, &raw.rate_limits, root.key("rate_limits"), has_cluster);
    let pools = pools::validate_pools(&mut cx, &raw.pools, root.key("pools"), base);
    let routes = routes::validate_routes(&mut cx, &raw.routes, root.key("routes"), &pools, &rate_limits, base);
    let cluster = raw.cluster.as_ref().map(|c| cluster::validate_cluster(&mut cx, c, root.key("cluster"), base));

    if !cx.errors.is_empty() {
        return Err(cx.errors);
    }

    Ok(Config {
        source: label.to_string(),
        node,
        admin,
        metrics_enabled: raw.metrics.enabled.unwrap_or(true),
        limits,
        log,
        headers,
        cluster,
        listeners,
        rate_limits,
        pools,
        routes,
    })
}
