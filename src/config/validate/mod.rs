//! Checks a [`RawConfig`] and builds the typed [`Config`]: ranges, units,
//! addresses, unique names and cross-references. Collects every error instead
//! of stopping at the first, so `check-config` shows them all at once.

use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::Method;

use super::locate::KeyPath;
use super::raw::*;
use super::units::{parse_duration, parse_size};
use super::*;
use crate::model::{Balance, RetryOn};

type Errors = Vec<(KeyPath, String)>;

struct Ctx {
    errors: Errors,
}

impl Ctx {
    fn err(&mut self, path: KeyPath, msg: impl Into<String>) {
        self.errors.push((path, msg.into()));
    }

    fn duration(&mut self, value: &Option<String>, path: KeyPath, default: Duration) -> Duration {
        match value {
            None => default,
            Some(v) => parse_duration(v).unwrap_or_else(|e| {
                self.err(path, e);
                default
            }),
        }
    }

    fn size(&mut self, value: &Option<String>, path: KeyPath, default: u64) -> u64 {
        match value {
            None => default,
            Some(v) => parse_size(v).unwrap_or_else(|e| {
                self.err(path, e);
                default
            }),
        }
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

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "sysmanage-node".to_string())
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

pub(super) fn validate(raw: RawConfig, label: &str, base: &Path) -> Result<Config, Errors> {
    let mut cx = Ctx { errors: Vec::new() };
    let root = KeyPath::root();

    // [node]
    let np = root.key("node");
    let busy_poll = cx.duration(&raw.node.busy_poll, np.key("busy_poll"), Duration::ZERO);
    if busy_poll > Duration::from_millis(100) {
        cx.err(np.key("busy_poll"), format!("must be 0s..=100ms (0s: off), got {busy_poll:?}"));
    }
    let node = NodeConfig {
        name: match raw.node.name.as_deref().map(str::trim) {
            Some("") => {
                cx.err(np.key("name"), "must not be empty (leave it out to use the hostname)");
                hostname()
            }
            Some(n) => n.to_string(),
            None => hostname(),
        },
        data_dir: PathBuf::from(raw.node.data_dir.clone().unwrap_or_else(|| "/var/lib/sysmanage-node".into())),
        workers: {
            let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
            match cx.int(raw.node.workers, np.key("workers"), 0, 256, 0) {
                0 => cores,
                n => n as usize,
            }
        },
        busy_poll,
        busy_poll_coalesce: {
            let key = np.key("busy_poll_coalesce");
            let d = cx.duration(&raw.node.busy_poll_coalesce, key.clone(), Duration::ZERO);
            if d > Duration::from_millis(1) {
                cx.err(key, format!("must be 0s..=1ms (0s: off), got {d:?}"));
            } else if !d.is_zero() && busy_poll.is_zero() {
                cx.err(key, "needs node.busy_poll: batching happens inside the busy-poll loop, which is off");
            }
            d
        },
    };

    // [admin]
    let ap = root.key("admin");
    let admin = {
        let enabled = raw.admin.enabled.unwrap_or(true);
        let listen = match raw.admin.listen.as_deref() {
            _ if !enabled => None,
            None => Some(SocketAddr::from(([127, 0, 0, 1], 9100))),
            Some(l) => match l.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    cx.err(
                        ap.key("listen"),
                        format!("expected an IP address and port such as \"127.0.0.1:9100\", got \"{l}\""),
                    );
                    None
                }
            },
        };
        let token_file = raw.admin.token_file.as_ref().map(|f| base.join(f));
        let token = match &token_file {
            None => None,
            Some(f) => match std::fs::read_to_string(f) {
                Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
                Ok(_) => {
                    cx.err(
                        ap.key("token_file"),
                        format!("{} is empty: write a random token into it (e.g. 64 hex characters)", f.display()),
                    );
                    None
                }
                Err(e) => {
                    cx.err(ap.key("token_file"), format!("cannot read {}: {e}", f.display()));
                    None
                }
            },
        };
        AdminConfig { listen, token_file, token }
    };

    // [limits]
    let lp = root.key("limits");
    let l = &raw.limits;
    let header_timeout = cx.duration(&l.header_timeout, lp.key("header_timeout"), Duration::from_secs(10));
    if header_timeout.is_zero() {
        cx.err(lp.key("header_timeout"), "must be above zero (slow clients would never be cut off)");
    }
    let max_header_size = cx.size(&l.max_header_size, lp.key("max_header_size"), 16 << 10);
    if !(8192..=1 << 20).contains(&max_header_size) {
        cx.err(lp.key("max_header_size"), format!("must be 8KiB..=1MiB, got {max_header_size} bytes"));
    }
    let limits = Limits {
        header_timeout,
        keepalive_timeout: cx.duration(&l.keepalive_timeout, lp.key("keepalive_timeout"), Duration::from_secs(60)),
        body_timeout: cx.duration(&l.body_timeout, lp.key("body_timeout"), Duration::from_secs(60)),
        max_body: cx.size(&l.max_body, lp.key("max_body"), 32 << 20),
        max_header_size: max_header_size.clamp(8192, 1 << 20) as usize,
        max_connections: cx.int(l.max_connections, lp.key("max_connections"), 1, 1_000_000, 10_000) as usize,
        shutdown_timeout: cx.duration(&l.shutdown_timeout, lp.key("shutdown_timeout"), Duration::from_secs(30)),
        tunnel_close_spread: cx.duration(
            &l.tunnel_close_spread,
            lp.key("tunnel_close_spread"),
            Duration::from_millis(500),
        ),
    };
    if limits.tunnel_close_spread > Duration::from_secs(60) {
        cx.err(lp.key("tunnel_close_spread"), format!("must be 0s..=60s, got {:?}", limits.tunnel_close_spread));
    }

    // [log]
    let gp = root.key("log");
    let log = LogConfig {
        level: match raw.log.level.as_deref() {
            None => "info".into(),
            Some(v @ ("error" | "warn" | "info" | "debug" | "trace")) => v.into(),
            Some(v) => {
                cx.err(gp.key("level"), format!("expected one of error, warn, info, debug, trace, got \"{v}\""));
                "info".into()
            }
        },
        format: match raw.log.format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(v) => {
                cx.err(gp.key("format"), format!("expected \"text\" or \"json\", got \"{v}\""));
                LogFormat::Text
            }
        },
        access_log: raw.log.access_log.unwrap_or(true),
    };

    // [headers]
    let hp = root.key("headers");
    let frame_options = raw.headers.frame_options.clone().unwrap_or_else(|| "DENY".into());
    if http::HeaderValue::from_str(&frame_options).is_err() {
        cx.err(hp.key("frame_options"), "must be a valid header value such as \"DENY\" or \"SAMEORIGIN\"");
    }
    let hsts = match raw.headers.hsts.as_deref() {
        None => Some("max-age=31536000; includeSubDomains".to_string()),
        Some("") => None,
        Some(v) => {
            if http::HeaderValue::from_str(v).is_err() {
                cx.err(hp.key("hsts"), "must be a valid header value such as \"max-age=31536000\" (or \"\" for none)");
            }
            Some(v.to_string())
        }
    };
    let headers = HeaderConfig {
        security: raw.headers.security.unwrap_or(true),
        forwarded: raw.headers.forwarded.unwrap_or(true),
        frame_options,
        hsts,
    };

    // [[listeners]]
    let mut names = HashSet::new();
    let mut binds = HashSet::new();
    let mut listeners = Vec::new();
    if raw.listeners.is_empty() {
        cx.err(root.key("listeners"), "at least one [[listeners]] entry is needed");
    }
    for (i, rl) in raw.listeners.iter().enumerate() {
        let p = root.key("listeners").index(i);
        let name = cx.name(&rl.name, p.key("name"), "listener", &mut names);
        let bind = match rl.bind.as_deref() {
            None => {
                cx.err(p.key("bind"), "missing: expected an address such as \"0.0.0.0:80\"");
                None
            }
            Some(b) => match b.parse::<SocketAddr>() {
                Ok(a) => {
                    if a.port() != 0 && !binds.insert(a) {
                        cx.err(p.key("bind"), format!("{a} is bound by another listener"));
                    }
                    Some(a)
                }
                Err(_) => {
                    cx.err(
                        p.key("bind"),
                        format!("expected an IP address and port such as \"0.0.0.0:80\", got \"{b}\""),
                    );
                    None
                }
            },
        };
        let tls = rl.tls.as_ref().map(|t| validate_tls(&mut cx, t, p.key("tls"), base));
        let redirect_to_https = rl
            .redirect_to_https
            .map(|_| cx.int(rl.redirect_to_https, p.key("redirect_to_https"), 1, 65535, 443) as u16);
        if redirect_to_https.is_some() && tls.is_some() {
            cx.err(p.key("redirect_to_https"), "only applies to plain-HTTP listeners (this one has tls)");
        }
        if rl.redirect_except.is_some() && redirect_to_https.is_none() {
            cx.err(p.key("redirect_except"), "only applies together with redirect_to_https");
        }
        let mut trusted_proxies = Vec::new();
        for (j, c) in rl.trusted_proxies.iter().flatten().enumerate() {
            match Cidr::parse(c) {
                Some(x) => trusted_proxies.push(x),
                None => cx.err(
                    p.key("trusted_proxies").index(j),
                    format!("expected an address or CIDR such as \"10.0.0.0/8\" or \"::1\", got \"{c}\""),
                ),
            }
        }
        if let Some(bind) = bind {
            listeners.push(ListenerConfig {
                name,
                bind,
                tls,
                redirect_to_https,
                redirect_except: rl.redirect_except.clone().unwrap_or_else(|| vec!["/health".to_string()]),
                accept_proxy_protocol: rl.accept_proxy_protocol.unwrap_or(false),
                trusted_proxies,
            });
        }
    }

    // [[rate_limits]]
    let mut names = HashSet::new();
    let mut rate_limits = Vec::new();
    for (i, rr) in raw.rate_limits.iter().enumerate() {
        let p = root.key("rate_limits").index(i);
        let name = cx.name(&rr.name, p.key("name"), "rate limit", &mut names);
        let kind = match (&rr.rate, rr.requests, &rr.window) {
            (Some(r), None, None) => {
                let per_second = parse_rate(r).unwrap_or_else(|e| {
                    cx.err(p.key("rate"), e);
                    1.0
                });
                RateKind::Bucket { per_second, burst: cx.int(rr.burst, p.key("burst"), 0, 1_000_000, 0) as u32 }
            }
            (None, Some(_), Some(_)) => {
                if rr.burst.is_some() {
                    cx.err(p.key("burst"), "only applies to rate zones (rate = ...), not to requests/window zones");
                }
                let window = cx.duration(&rr.window, p.key("window"), Duration::from_secs(10));
                if window < Duration::from_millis(1) {
                    cx.err(p.key("window"), "must be at least 1ms");
                }
                RateKind::Window { limit: cx.int(rr.requests, p.key("requests"), 1, 1_000_000_000, 1) as u32, window }
            }
            _ => {
                cx.err(
                    p.clone(),
                    "set either rate (with burst), e.g. rate = \"10/s\", or requests and window, e.g. requests = 20, window = \"10s\"",
                );
                RateKind::Bucket { per_second: 1.0, burst: 0 }
            }
        };
        let key = match rr.key.as_deref() {
            None | Some("client_ip") => RateKey::ClientIp,
            Some(k) => match k.strip_prefix("header:").map(|h| http::HeaderName::from_bytes(h.trim().as_bytes())) {
                Some(Ok(h)) => RateKey::Header(h),
                _ => {
                    cx.err(p.key("key"), format!("expected \"client_ip\" or \"header:NAME\", got \"{k}\""));
                    RateKey::ClientIp
                }
            },
        };
        let status = cx.int(rr.status, p.key("status"), 400, 599, 429) as u16;
        let max_keys = cx.int(rr.max_keys, p.key("max_keys"), 64, 100_000_000, 1_000_000) as usize;
        // The limiter's own limits (e.g. a bucket that would take years to
        // refill), checked now rather than failing at start.
        let probe = crate::ratelimit::ZoneConfig {
            name: name.clone(),
            kind: match kind {
                RateKind::Bucket { per_second, burst } => crate::ratelimit::ZoneKind::Bucket { per_second, burst },
                RateKind::Window { limit, window } => crate::ratelimit::ZoneKind::Window { limit, window },
            },
            key: crate::ratelimit::KeySource::ClientIp,
            max_keys: 64,
        };
        if let Err(e) = crate::ratelimit::Zone::new(probe) {
            cx.err(p.clone(), e.to_string());
        }
        let cluster = match rr.cluster {
            Some(true) if !matches!(kind, RateKind::Window { .. }) => {
                cx.err(
                    p.key("cluster"),
                    "applies only to window zones (requests + window): a token bucket cannot be summed across nodes",
                );
                false
            }
            Some(true) if raw.cluster.is_none() => {
                cx.err(p.key("cluster"), "needs a [cluster] table: a standalone node has no peers to sum with");
                false
            }
            c => c.unwrap_or(false),
        };
        rate_limits.push(RateLimitConfig { name, kind, key, status, max_keys, cluster });
    }

    // [[pools]]
    let mut names = HashSet::new();
    let mut pools = Vec::new();
    for (i, rp) in raw.pools.iter().enumerate() {
        pools.push(validate_pool(&mut cx, rp, root.key("pools").index(i), &mut names, base));
    }
    // `primary` pools over the same servers share one active server
    // (control::primary), so they must agree on failing back.
    for (i, p) in pools.iter().enumerate() {
        let servers = |q: &PoolConfig| q.servers.iter().map(|s| (s.addr, s.backup)).collect::<Vec<_>>();
        let lead = pools[..i]
            .iter()
            .find(|q| q.balance == Balance::Primary && p.balance == Balance::Primary && servers(q) == servers(p));
        if let Some(q) = lead.filter(|q| q.failback != p.failback) {
            cx.err(
                root.key("pools").index(i).key("failback"),
                format!(
                    "pool \"{}\" has the same servers as pool \"{}\", and the two share one active server: set \
                     failback the same in both",
                    p.name, q.name
                ),
            );
        }
    }

    // [[routes]]
    let mut names = HashSet::new();
    let mut routes = Vec::new();
    if raw.routes.is_empty() {
        cx.err(root.key("routes"), "at least one [[routes]] entry is needed (every request would get 404)");
    }
    for (i, rr) in raw.routes.iter().enumerate() {
        let p = root.key("routes").index(i);
        if let Some(r) = validate_route(&mut cx, rr, p, &mut names, &pools, &rate_limits, base) {
            routes.push(r);
        }
    }

    let cluster = raw.cluster.as_ref().map(|c| validate_cluster(&mut cx, c, root.key("cluster"), base));

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

fn validate_cluster(cx: &mut Ctx, rc: &RawCluster, p: KeyPath, base: &Path) -> ClusterSettings {
    let addr = |cx: &mut Ctx, v: &str, key: &str| match parse_addr(v) {
        Ok(a) => Some(a),
        Err(e) => {
            cx.err(p.key(key), e);
            None
        }
    };
    let listen = match rc.listen.as_deref() {
        None => SocketAddr::from(([0, 0, 0, 0], 7946)),
        Some(v) => addr(cx, v, "listen").unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 7946))),
    };
    let advertise = rc.advertise.as_deref().and_then(|v| addr(cx, v, "advertise"));
    match advertise {
        Some(a) if a.ip().is_unspecified() || a.port() == 0 => {
            cx.err(p.key("advertise"), format!("must be an address peers can reach (not {a})"))
        }
        None if listen.ip().is_unspecified() => cx.err(
            p.key("advertise"),
            format!(
                "listen = \"{listen}\" is a wildcard address: set advertise to the IP:port peers reach this node at"
            ),
        ),
        _ => {}
    }
    let mut seeds = Vec::new();
    for (i, seed) in rc.seeds.iter().flatten().enumerate() {
        let seed = seed.trim();
        match seed.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0) => {
                seeds.push(seed.to_string())
            }
            _ => cx.err(
                p.key("seeds").index(i),
                format!("expected host:port of a peer's cluster listener such as \"10.0.1.11:7946\", got \"{seed}\""),
            ),
        }
    }
    let secret_file = match rc.secret_file.as_deref() {
        Some(f) => base.join(f),
        None => {
            cx.err(
                p.key("secret_file"),
                "is required: every node of a cluster reads the same secret (`sysmanage-node init` writes one)",
            );
            PathBuf::new()
        }
    };
    let secret = if secret_file.as_os_str().is_empty() {
        None
    } else {
        match crate::cluster::load_secret(&secret_file) {
            Ok(s) => Some(s),
            Err(e) => {
                cx.err(p.key("secret_file"), e.to_string());
                None
            }
        }
    };
    let gossip_interval = cx.duration(&rc.gossip_interval, p.key("gossip_interval"), Duration::from_millis(500));
    if !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&gossip_interval) {
        cx.err(p.key("gossip_interval"), format!("must be 10ms..=60s, got {gossip_interval:?}"));
    }
    // Without a valid secret the config is refused, so a placeholder is fine.
    let secret = secret.unwrap_or_else(|| {
        crate::cluster::ClusterSecret::from_bytes(b"placeholder-0123456789abcdefghijklmnop")
            .expect("the placeholder is a valid secret")
    });
    ClusterSettings { listen, advertise, seeds, secret_file, secret, gossip_interval }
}

/// `"10/s"`, `"300/m"`, `"10r/s"` (nginx spelling) → requests per second.
fn parse_rate(text: &str) -> Result<f64, String> {
    let expected = "expected a rate such as \"10/s\" or \"300/m\"";
    let (n, unit) = text.split_once('/').ok_or_else(|| format!("{expected}, got \"{text}\""))?;
    let n: f64 = n.trim().trim_end_matches('r').parse().map_err(|_| format!("{expected}, got \"{text}\""))?;
    if !(n > 0.0 && n.is_finite()) {
        return Err(format!("{expected}, and above zero, got \"{text}\""));
    }
    match unit.trim() {
        "s" => Ok(n),
        "m" => Ok(n / 60.0),
        other => Err(format!("{expected}: unknown unit \"{other}\" (use s or m)")),
    }
}

fn validate_pool(cx: &mut Ctx, rp: &RawPool, p: KeyPath, names: &mut HashSet<String>, base: &Path) -> PoolConfig {
    let name = cx.name(&rp.name, p.key("name"), "pool", names);
    let balance = match rp.balance.as_deref() {
        None => Balance::RoundRobin,
        Some(b) => Balance::parse(b).unwrap_or_else(|| {
            cx.err(p.key("balance"), format!("expected one of {}, got \"{b}\"", Balance::NAMES));
            Balance::RoundRobin
        }),
    };
    let mut retry_on = RetryOn::default();
    match &rp.retry_on {
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
    let mut servers = Vec::new();
    let mut server_names = HashSet::new();
    if rp.servers.is_empty() {
        cx.err(p.key("servers"), "a pool needs at least one server");
    }
    for (j, rs) in rp.servers.iter().enumerate() {
        let sp = p.key("servers").index(j);
        let Some(addr_text) = rs.addr.as_deref().map(str::trim) else {
            cx.err(sp.key("addr"), "missing: expected host:port such as \"127.0.0.1:8080\"");
            continue;
        };
        let addr = match parse_addr(addr_text) {
            Ok(a) => a,
            Err(e) => {
                cx.err(sp.key("addr"), e);
                continue;
            }
        };
        let sname = rs.name.clone().unwrap_or_else(|| addr_text.to_string());
        if !server_names.insert(sname.clone()) {
            cx.err(
                sp.key(if rs.name.is_some() { "name" } else { "addr" }),
                format!("server \"{sname}\" appears twice in pool \"{name}\""),
            );
        }
        servers.push(ServerConfig {
            name: sname,
            addr,
            addr_text: addr_text.to_string(),
            weight: cx.int(rs.weight, sp.key("weight"), 1, 256, 1) as u32,
            backup: rs.backup.unwrap_or(false),
            max_conns: cx.int(rs.max_conns, sp.key("max_conns"), 0, 1_000_000, 0) as u32,
        });
    }
    if !servers.is_empty() && servers.iter().all(|s| s.backup) {
        cx.err(p.key("servers"), "every server is a backup: at least one must not be");
    }
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
    let mut checks = Vec::new();
    if rp.checks.len() > 32 {
        cx.err(p.key("checks"), format!("at most 32 checks per pool, got {}", rp.checks.len()));
    }
    for (j, rc) in rp.checks.iter().enumerate() {
        checks.push(validate_check(cx, rc, p.key("checks").index(j)));
    }
    let send_proxy_protocol = match rp.send_proxy_protocol.as_deref() {
        None => None,
        Some("v1") => Some(SendProxyProtocol::V1),
        Some("v2") => Some(SendProxyProtocol::V2),
        Some(other) => {
            cx.err(p.key("send_proxy_protocol"), format!("expected \"v1\" or \"v2\", got \"{other}\""));
            None
        }
    };
    let affinity = rp.affinity.as_ref().map(|a| {
        let ap = p.key("affinity");
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
        let reject_missing = match a.on_missing.as_deref() {
            None | Some("reject") => true,
            Some("balance") => false,
            Some(other) => {
                cx.err(ap.key("on_missing"), format!("expected \"reject\" or \"balance\", got \"{other}\""));
                true
            }
        };
        AffinityConfig { key, extract: a.extract.clone(), policy, ttl, reject_missing }
    });
    let tls = rp.tls.as_ref().map(|t| {
        let tp = p.key("tls");
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
    });
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

fn validate_tls(cx: &mut Ctx, t: &RawTls, p: KeyPath, base: &Path) -> TlsConfig {
    let mut certificates = Vec::new();
    let self_signed = t.self_signed.unwrap_or(false);
    match (&t.cert, &t.key) {
        (Some(c), Some(k)) => {
            certificates.push(CertificateConfig { cert: base.join(c), key: base.join(k), names: Vec::new() })
        }
        (None, None) => {}
        (Some(_), None) => cx.err(p.key("key"), "missing: cert needs its key"),
        (None, Some(_)) => cx.err(p.key("cert"), "missing: key needs its cert"),
    }
    for (j, rc) in t.certificates.iter().enumerate() {
        let cp = p.key("certificates").index(j);
        match (&rc.cert, &rc.key) {
            (Some(c), Some(k)) => certificates.push(CertificateConfig {
                cert: base.join(c),
                key: base.join(k),
                names: rc.names.clone().unwrap_or_default(),
            }),
            _ => cx.err(cp, "each certificate needs cert and key"),
        }
    }
    if self_signed && !certificates.is_empty() {
        cx.err(p.key("self_signed"), "set either self_signed = true or cert/key files, not both");
    }
    if !self_signed && certificates.is_empty() {
        cx.err(p.clone(), "missing: set cert and key (PEM files), or self_signed = true");
    }
    if t.hosts.is_some() && !self_signed {
        cx.err(p.key("hosts"), "only applies with self_signed = true");
    }
    let protocols = t.protocols.clone().unwrap_or_default();
    if let Err(e) = crate::tls::parse_protocols(&protocols) {
        cx.err(p.key("protocols"), e.to_string());
    }
    let ciphers = t.ciphers.clone().unwrap_or_default();
    if let Err(e) = crate::tls::parse_cipher_suites(&ciphers) {
        cx.err(p.key("ciphers"), e.to_string());
    }
    TlsConfig {
        certificates,
        self_signed: self_signed.then(|| t.hosts.clone().unwrap_or_else(|| vec!["localhost".to_string()])),
        protocols,
        ciphers,
    }
}

fn validate_check(cx: &mut Ctx, rc: &RawCheck, p: KeyPath) -> CheckConfig {
    let interval = cx.duration(&rc.interval, p.key("interval"), Duration::from_secs(5));
    if interval < Duration::from_millis(100) {
        cx.err(p.key("interval"), format!("must be at least 100ms, got {interval:?}"));
    }
    let timeout = cx.duration(&rc.timeout, p.key("timeout"), Duration::from_secs(3).min(interval));
    if timeout.is_zero() {
        cx.err(p.key("timeout"), "must be above zero");
    }
    let kind = match rc.kind.as_deref() {
        None | Some("http") => {
            let method = match rc.method.as_deref() {
                None => Method::GET,
                Some(m) => Method::from_bytes(m.to_ascii_uppercase().as_bytes()).unwrap_or_else(|_| {
                    cx.err(
                        p.key("method"),
                        format!("expected an HTTP method such as \"GET\" or \"HEAD\", got \"{m}\""),
                    );
                    Method::GET
                }),
            };
            let path = rc.path.clone().unwrap_or_else(|| "/".into());
            if !path.starts_with('/') || http::uri::PathAndQuery::try_from(path.as_str()).is_err() {
                cx.err(p.key("path"), format!("must be a URL path starting with '/', got \"{path}\""));
            }
            if let Some(h) = &rc.host {
                if http::HeaderValue::from_str(h).is_err() || h.is_empty() {
                    cx.err(p.key("host"), format!("must be a valid Host header value, got \"{h}\""));
                }
            }
            let (status_lo, status_hi) = match &rc.expect_status {
                None => (200, 399),
                Some(RawStatusSpec::Code(c)) if (100..=599).contains(c) => (*c as u16, *c as u16),
                Some(RawStatusSpec::Code(c)) => {
                    cx.err(p.key("expect_status"), format!("must be 100..=599, got {c}"));
                    (200, 399)
                }
                Some(RawStatusSpec::Range(r)) => match parse_status_range(r) {
                    Some(x) => x,
                    None => {
                        cx.err(
                            p.key("expect_status"),
                            format!("expected a status such as 200 or a range such as \"200-399\", got \"{r}\""),
                        );
                        (200, 399)
                    }
                },
            };
            CheckKind::Http { method, path, host: rc.host.clone(), status_lo, status_hi, body: rc.expect_body.clone() }
        }
        Some("tcp") => {
            for (key, set) in [
                ("method", rc.method.is_some()),
                ("path", rc.path.is_some()),
                ("host", rc.host.is_some()),
                ("expect_status", rc.expect_status.is_some()),
                ("expect_body", rc.expect_body.is_some()),
            ] {
                if set {
                    cx.err(p.key(key), "only applies to type = \"http\" checks");
                }
            }
            CheckKind::Tcp
        }
        Some(other) => {
            cx.err(p.key("type"), format!("expected \"http\" or \"tcp\", got \"{other}\""));
            CheckKind::Tcp
        }
    };
    CheckConfig {
        kind,
        interval,
        timeout,
        fall: cx.int(rc.fall, p.key("fall"), 1, 100, 3) as u32,
        rise: cx.int(rc.rise, p.key("rise"), 1, 100, 2) as u32,
    }
}

/// `"200-399"` or `"204"`.
fn parse_status_range(r: &str) -> Option<(u16, u16)> {
    let (lo, hi) = r.split_once('-').unwrap_or((r, r));
    let (lo, hi): (u16, u16) = (lo.trim().parse().ok()?, hi.trim().parse().ok()?);
    ((100..=599).contains(&lo) && (lo..=599).contains(&hi)).then_some((lo, hi))
}

fn validate_route(
    cx: &mut Ctx,
    rr: &RawRoute,
    p: KeyPath,
    names: &mut HashSet<String>,
    pools: &[PoolConfig],
    rate_limits: &[RateLimitConfig],
    base: &Path,
) -> Option<RouteConfig> {
    let name = cx.name(&rr.name, p.key("name"), "route", names);
    let path = match (&rr.path, &rr.path_prefix) {
        (Some(_), Some(_)) => {
            cx.err(p.key("path_prefix"), "set either path (exact) or path_prefix, not both");
            None
        }
        (None, None) => {
            cx.err(p.clone(), "missing: set path (exact match) or path_prefix");
            None
        }
        (Some(x), None) | (None, Some(x)) if !x.starts_with('/') => {
            let key = if rr.path.is_some() { "path" } else { "path_prefix" };
            cx.err(p.key(key), format!("must start with '/', got \"{x}\""));
            None
        }
        (Some(x), None) => Some(PathMatch::Exact(x.clone())),
        (None, Some(x)) => Some(PathMatch::Prefix(x.clone())),
    };
    let methods = rr.methods.as_ref().map(|list| {
        list.iter()
            .enumerate()
            .filter_map(|(j, m)| match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(m) => Some(m),
                Err(_) => {
                    cx.err(p.key("methods").index(j), format!("expected an HTTP method such as \"GET\", got \"{m}\""));
                    None
                }
            })
            .collect::<Vec<_>>()
    });
    let host = rr.host.as_ref().map(|h| h.trim().to_ascii_lowercase());
    if host.as_deref() == Some("") {
        cx.err(p.key("host"), "must not be empty (leave it out to match any host)");
    }

    let mut actions = Vec::new();
    if let Some(pool) = &rr.pool {
        match pools.iter().position(|x| &x.name == pool) {
            Some(i) => actions.push(RouteAction::Proxy { pool: i }),
            None => {
                let known: Vec<&str> = pools.iter().map(|x| x.name.as_str()).collect();
                cx.err(p.key("pool"), format!("no pool named \"{pool}\" (pools: {})", list_or_none(&known)));
                actions.push(RouteAction::Proxy { pool: 0 });
            }
        }
    }
    if let Some(resp) = &rr.respond {
        let status = cx.int(resp.status, p.key("respond").key("status"), 200, 599, 200) as u16;
        let content_type = resp.content_type.clone().unwrap_or_else(|| "text/plain; charset=utf-8".into());
        if http::HeaderValue::from_str(&content_type).is_err() {
            cx.err(p.key("respond").key("content_type"), "must be a valid header value");
        }
        actions.push(RouteAction::Respond {
            status,
            body: Bytes::from(resp.body.clone().unwrap_or_default()),
            content_type,
        });
    }
    if let Some(dir) = &rr.static_dir {
        let dir = base.join(dir);
        if !dir.is_dir() {
            cx.err(p.key("static_dir"), format!("{} is not a readable directory", dir.display()));
        }
        if let Some(cc) = &rr.cache_control {
            if http::HeaderValue::from_str(cc).is_err() {
                cx.err(p.key("cache_control"), "must be a valid header value");
            }
        }
        actions.push(RouteAction::Static { dir, cache_control: rr.cache_control.clone() });
    } else if rr.cache_control.is_some() {
        cx.err(p.key("cache_control"), "only applies to routes with static_dir");
    }
    if let Some(red) = &rr.redirect {
        let status = cx.int(red.status, p.key("redirect").key("status"), 301, 308, 302) as u16;
        if ![301, 302, 303, 307, 308].contains(&status) {
            cx.err(p.key("redirect").key("status"), format!("must be 301, 302, 303, 307 or 308, got {status}"));
        }
        let to = red.to.clone().unwrap_or_default();
        if to.is_empty() || http::HeaderValue::from_str(&to).is_err() {
            cx.err(
                p.key("redirect").key("to"),
                "missing or invalid: expected a URL or path such as \"https://example.com/\"",
            );
        }
        actions.push(RouteAction::Redirect { to, status });
    }
    if actions.len() > 1 {
        cx.err(p.clone(), "set exactly one action: pool, respond, static_dir or redirect (several are set)");
    }
    let rate_limit = rr.rate_limit.as_ref().and_then(|z| {
        let i = rate_limits.iter().position(|x| &x.name == z);
        if i.is_none() {
            let known: Vec<&str> = rate_limits.iter().map(|x| x.name.as_str()).collect();
            cx.err(p.key("rate_limit"), format!("no rate limit named \"{z}\" (rate_limits: {})", list_or_none(&known)));
        }
        i
    });
    let websocket = rr.websocket.unwrap_or(false);
    if websocket && !matches!(actions.first(), Some(RouteAction::Proxy { .. }) | None) {
        cx.err(p.key("websocket"), "a websocket route must proxy to a pool");
    }
    let action = match actions.into_iter().next() {
        Some(a) => a,
        None => {
            cx.err(p.clone(), "missing action: set pool, respond, static_dir or redirect");
            return None;
        }
    };
    let tunnel_timeout = cx.duration(&rr.tunnel_timeout, p.key("tunnel_timeout"), Duration::from_secs(3600));
    if tunnel_timeout < Duration::from_secs(1) {
        cx.err(p.key("tunnel_timeout"), "must be at least 1s (agents heartbeat every 30 s; keep it well above 60 s)");
    }
    let tunnel_fin_timeout = cx.duration(&rr.tunnel_fin_timeout, p.key("tunnel_fin_timeout"), Duration::from_secs(10));
    if tunnel_fin_timeout < Duration::from_millis(100) {
        cx.err(p.key("tunnel_fin_timeout"), "must be at least 100ms");
    }
    let close_when_unavailable = match rr.on_unavailable.as_deref() {
        None | Some("close") => true,
        Some("status") => false,
        Some(other) => {
            cx.err(p.key("on_unavailable"), format!("expected \"close\" or \"status\", got \"{other}\""));
            true
        }
    };
    if !websocket && (rr.tunnel_timeout.is_some() || rr.tunnel_fin_timeout.is_some() || rr.on_unavailable.is_some()) {
        let key = if rr.tunnel_timeout.is_some() {
            "tunnel_timeout"
        } else if rr.tunnel_fin_timeout.is_some() {
            "tunnel_fin_timeout"
        } else {
            "on_unavailable"
        };
        cx.err(p.key(key), "only applies to websocket = true routes");
    }
    Some(RouteConfig {
        name,
        matcher: RouteMatch { path: path?, host, methods, websocket },
        action,
        rate_limit,
        tunnel_timeout,
        tunnel_fin_timeout,
        close_when_unavailable,
    })
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none defined".to_string()
    } else {
        names.join(", ")
    }
}
