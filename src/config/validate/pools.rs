//! `[[pools]]`: servers, timeouts, retries, sticky sessions and TLS to the
//! servers. Health checks are in [`super::checks`].

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use super::checks::validate_checks;
use super::{parse_addr, Ctx};
use crate::config::raw::*;
use crate::config::*;
use crate::model::{Balance, RetryOn};

/// Every `[[pools]]` entry, then the rule that spans pools: `primary` pools
/// over the same servers agree on failing back.
pub(super) fn validate_pools(cx: &mut Ctx, raw: &[RawPool], pp: KeyPath, base: &Path) -> Vec<PoolConfig> {
    let mut names = HashSet::new();
    let pools: Vec<PoolConfig> =
        raw.iter().enumerate().map(|(i, rp)| validate_pool(cx, rp, pp.index(i), &mut names, base)).collect();
    check_failback_agreement(cx, &pools, &pp);
    pools
}

/// `primary` pools over the same servers share one active server
/// (control::primary), so they must agree on failing back.
fn check_failback_agreement(cx: &mut Ctx, pools: &[PoolConfig], pp: &KeyPath) {
    for (i, p) in pools.iter().enumerate() {
        let servers = |q: &PoolConfig| q.servers.iter().map(|s| (s.addr, s.backup)).collect::<Vec<_>>();
        let lead = pools[..i]
            .iter()
            .find(|q| q.balance == Balance::Primary && p.balance == Balance::Primary && servers(q) == servers(p));
        if let Some(q) = lead.filter(|q| q.failback != p.failback) {
            cx.err(
                pp.index(i).key("failback"),
                format!(
                    "pool \"{}\" has the same servers as pool \"{}\", and the two share one active server: set \
                     failback the same in both",
                    p.name, q.name
                ),
            );
        }
    }
}

/// One pool: each part is checked by its own function, in the order of the
/// errors it reports; the plain numbers and durations are read here.
fn validate_pool(cx: &mut Ctx, rp: &RawPool, p: KeyPath, names: &mut HashSet<String>, base: &Path) -> PoolConfig {
    let name = cx.name(&rp.name, p.key("name"), "pool", names);
    let balance = match rp.balance.as_deref() {
        None => Balance::RoundRobin,
        Some(b) => Balance::parse(b).unwrap_or_else(|| {
            cx.err(p.key("balance"), format!("expected one of {}, got \"{b}\"", Balance::NAMES));
            Balance::RoundRobin
        }),
    };
    let retry_on = retry_conditions(cx, rp.retry_on.as_deref(), &p);
    let servers = pool_servers(cx, rp, &p, &name);
    let [connect_timeout, read_timeout, send_timeout] = pool_timeouts(cx, rp, &p);
    let checks = validate_checks(cx, &rp.checks, p.key("checks"), rp.tls.is_some());
    let send_proxy_protocol = match rp.send_proxy_protocol.as_deref() {
        None => None,
        Some("v1") => Some(SendProxyProtocol::V1),
        Some("v2") => Some(SendProxyProtocol::V2),
        Some(other) => {
            cx.err(p.key("send_proxy_protocol"), format!("expected \"v1\" or \"v2\", got \"{other}\""));
            None
        }
    };
    let affinity = rp.affinity.as_ref().map(|a| validate_affinity(cx, a, p.key("affinity"), balance));
    let tls = rp.tls.as_ref().map(|t| validate_upstream_tls(cx, t, p.key("tls"), base));
    PoolConfig {
        tls,
        affinity,
        send_proxy_protocol,
        slow_start: cx.duration(&rp.slow_start, p.key("slow_start"), Duration::ZERO),
        checks,
        name,
        failback: match rp.failback {
            Some(_) if balance != Balance::Primary => {
                cx.err(p.key("failback"), "applies only to balance = \"primary\"");
                false
            }
            f => f.unwrap_or(false),
        },
        balance,
        close_tunnels_on_down: rp.close_tunnels_on_down.unwrap_or(true),
        keepalive: cx.int(rp.keepalive, p.key("keepalive"), 0, 100_000, 32) as usize,
        keepalive_timeout: cx.duration(&rp.keepalive_timeout, p.key("keepalive_timeout"), Duration::from_secs(60)),
        connect_timeout,
        read_timeout,
        send_timeout,
        retries: cx.int(rp.retries, p.key("retries"), 0, 16, 2) as u32,
        retry_on,
        max_fails: cx.int(rp.max_fails, p.key("max_fails"), 0, 1000, 1) as u32,
        fail_timeout: cx.duration(&rp.fail_timeout, p.key("fail_timeout"), Duration::from_secs(10)),
        servers,
    }
}

/// `retry_on`: the conditions under which a request is sent again; errors
/// and timeouts when left out.
fn retry_conditions(cx: &mut Ctx, list: Option<&[String]>, p: &KeyPath) -> RetryOn {
    let mut retry_on = RetryOn::default();
    match list {
        None => {
            retry_on.error = true;
            retry_on.timeout = true;
        }
        Some(list) => {
            for (j, cond) in list.iter().enumerate() {
                if !retry_on.add(cond) {
                    cx.err(p.key("retry_on").index(j), format!("expected one of {}, got \"{cond}\"", RetryOn::NAMES));
                }
            }
        }
    }
    retry_on
}

/// The pool's servers (at least one, not all backups). A server whose
/// address is missing or does not resolve is left out; its error is kept.
fn pool_servers(cx: &mut Ctx, rp: &RawPool, p: &KeyPath, pool: &str) -> Vec<ServerConfig> {
    let mut servers = Vec::new();
    let mut server_names = HashSet::new();
    if rp.servers.is_empty() {
        cx.err(p.key("servers"), "a pool needs at least one server");
    }
    for (j, rs) in rp.servers.iter().enumerate() {
        if let Some(s) = validate_server(cx, rs, p.key("servers").index(j), pool, &mut server_names) {
            servers.push(s);
        }
    }
    if !servers.is_empty() && servers.iter().all(|s| s.backup) {
        cx.err(p.key("servers"), "every server is a backup: at least one must not be");
    }
    servers
}

/// One server: its address (resolved now), a name unique in the pool (the
/// address text when not given), weight, backup and connection cap.
fn validate_server(
    cx: &mut Ctx,
    rs: &RawServer,
    sp: KeyPath,
    pool: &str,
    server_names: &mut HashSet<String>,
) -> Option<ServerConfig> {
    let Some(addr_text) = rs.addr.as_deref().map(str::trim) else {
        cx.err(sp.key("addr"), "missing: expected host:port such as \"127.0.0.1:8080\"");
        return None;
    };
    let addr = match parse_addr(addr_text) {
        Ok(a) => a,
        Err(e) => {
            cx.err(sp.key("addr"), e);
            return None;
        }
    };
    let sname = rs.name.clone().unwrap_or_else(|| addr_text.to_string());
    if !server_names.insert(sname.clone()) {
        cx.err(
            sp.key(if rs.name.is_some() { "name" } else { "addr" }),
            format!("server \"{sname}\" appears twice in pool \"{pool}\""),
        );
    }
    Some(ServerConfig {
        name: sname,
        addr,
        addr_text: addr_text.to_string(),
        weight: cx.int(rs.weight, sp.key("weight"), 1, 256, 1) as u32,
        backup: rs.backup.unwrap_or(false),
        max_conns: cx.int(rs.max_conns, sp.key("max_conns"), 0, 1_000_000, 0) as u32,
    })
}

/// The connect, read and send timeouts to the servers, none of them zero.
fn pool_timeouts(cx: &mut Ctx, rp: &RawPool, p: &KeyPath) -> [Duration; 3] {
    let connect_timeout = cx.duration(&rp.connect_timeout, p.key("connect_timeout"), Duration::from_secs(5));
    let read_timeout = cx.duration(&rp.read_timeout, p.key("read_timeout"), Duration::from_secs(60));
    let send_timeout = cx.duration(&rp.send_timeout, p.key("send_timeout"), Duration::from_secs(60));
    for (key, d) in
        [("connect_timeout", connect_timeout), ("read_timeout", read_timeout), ("send_timeout", send_timeout)]
    {
        if d.is_zero() {
            cx.err(p.key(key), "must be above zero");
        }
    }
    [connect_timeout, read_timeout, send_timeout]
}

/// A pool's `affinity` table (sticky sessions): the key and how it is
/// extracted, how new keys are placed (a `primary` pool places them on its
/// active server, so `hash` cannot apply), how long a key is kept, and what
/// a request without a key gets.
fn validate_affinity(cx: &mut Ctx, a: &RawAffinity, ap: KeyPath, balance: Balance) -> AffinityConfig {
    let key = a.key.clone().unwrap_or_default();
    if let Err(e) = crate::sessions::AffinityKey::parse(&key, a.extract.as_deref()) {
        let which = if matches!(
            e,
            crate::sessions::KeySpecError::Extract { .. } | crate::sessions::KeySpecError::TokenField { .. }
        ) {
            "extract"
        } else {
            "key"
        };
        cx.err(ap.key(which), e.to_string());
    }
    let policy = match a.policy.as_deref() {
        None | Some("least_loaded") => AffinityPolicy::LeastLoaded,
        Some("hash") if balance == Balance::Primary => {
            cx.err(
                ap.key("policy"),
                "\"hash\" cannot apply with balance = \"primary\": new keys always go to the pool's active \
                 server; remove policy (or set \"least_loaded\")",
            );
            AffinityPolicy::LeastLoaded
        }
        Some("hash") => AffinityPolicy::Hash,
        Some(other) => {
            cx.err(ap.key("policy"), format!("expected \"least_loaded\" or \"hash\", got \"{other}\""));
            AffinityPolicy::LeastLoaded
        }
    };
    let ttl = cx.duration(&a.ttl, ap.key("ttl"), Duration::from_secs(3600));
    if ttl < Duration::from_secs(1) {
        cx.err(ap.key("ttl"), "must be at least 1s");
    }
    let reject_missing = cx.either(a.on_missing.as_deref(), ap.key("on_missing"), ("reject", true), ("balance", false));
    AffinityConfig { key, extract: a.extract.clone(), policy, ttl, reject_missing }
}

/// A pool's `tls` table (TLS to the servers): the CA file (loaded now) or no
/// verification at all, not both, and the name to verify.
fn validate_upstream_tls(cx: &mut Ctx, t: &RawUpstreamTls, tp: KeyPath, base: &Path) -> UpstreamTlsConfig {
    let insecure = t.insecure_skip_verify.unwrap_or(false);
    if insecure && t.ca_file.is_some() {
        cx.err(tp.key("insecure_skip_verify"), "set either ca_file or insecure_skip_verify = true, not both");
    }
    if let Some(name) = &t.server_name {
        if rustls_pki_types::ServerName::try_from(name.as_str()).is_err() {
            cx.err(tp.key("server_name"), format!("expected a DNS name or IP address, got \"{name}\""));
        }
    }
    let ca_file = t.ca_file.as_ref().map(|f| base.join(f));
    if let Some(f) = &ca_file {
        if let Err(e) = crate::tls::load_ca_roots(f) {
            cx.err(tp.key("ca_file"), e.to_string());
        }
    }
    UpstreamTlsConfig { ca_file, insecure_skip_verify: insecure, server_name: t.server_name.clone() }
}
