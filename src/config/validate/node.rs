//! The node's own tables: `[node]`, `[admin]`, `[limits]`, `[log]` and
//! `[headers]`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Ctx;
use crate::config::raw::*;
use crate::config::*;

/// This machine's hostname, the node's name when `node.name` is left out
/// (`init` writes it into the configuration it makes).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "sysmanage-node".to_string())
}

/// `[node]`: name, data directory, workers and the busy poller. The
/// coalescing wait needs the busy poller, so both are checked together.
pub(super) fn validate_node(cx: &mut Ctx, rn: &RawNode, np: KeyPath) -> NodeConfig {
    let busy_poll = cx.duration(&rn.busy_poll, np.key("busy_poll"), Duration::ZERO);
    if busy_poll > Duration::from_millis(100) {
        cx.err(np.key("busy_poll"), format!("must be 0s..=100ms (0s: off), got {busy_poll:?}"));
    }
    NodeConfig {
        name: match rn.name.as_deref().map(str::trim) {
            Some("") => {
                cx.err(np.key("name"), "must not be empty (leave it out to use the hostname)");
                hostname()
            }
            Some(n) => n.to_string(),
            None => hostname(),
        },
        data_dir: PathBuf::from(rn.data_dir.clone().unwrap_or_else(|| "/var/lib/sysmanage-node".into())),
        workers: {
            let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
            match cx.int(rn.workers, np.key("workers"), 0, 256, 0) {
                0 => cores,
                n => n as usize,
            }
        },
        busy_poll,
        busy_poll_coalesce: {
            let key = np.key("busy_poll_coalesce");
            let d = cx.duration(&rn.busy_poll_coalesce, key.clone(), Duration::ZERO);
            if d > Duration::from_millis(1) {
                cx.err(key, format!("must be 0s..=1ms (0s: off), got {d:?}"));
            } else if !d.is_zero() && busy_poll.is_zero() {
                cx.err(key, "needs node.busy_poll: batching happens inside the busy-poll loop, which is off");
            }
            d
        },
    }
}

/// `[admin]`: where the admin API listens (nowhere when disabled) and the
/// token that allows writes, read from its file now.
pub(super) fn validate_admin(cx: &mut Ctx, ra: &RawAdmin, ap: KeyPath, base: &Path) -> AdminConfig {
    let enabled = ra.enabled.unwrap_or(true);
    let listen = match ra.listen.as_deref() {
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
    let token_file = ra.token_file.as_ref().map(|f| base.join(f));
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
    AdminConfig { listen, token_file, token, stats: ra.stats.unwrap_or(true) }
}

/// `[limits]`: client timeouts, sizes, connections and shutdown.
pub(super) fn validate_limits(cx: &mut Ctx, l: &RawLimits, lp: KeyPath) -> Limits {
    let header_timeout = cx.duration(&l.header_timeout, lp.key("header_timeout"), Duration::from_secs(10));
    if header_timeout.is_zero() {
        cx.err(lp.key("header_timeout"), "must be above zero (slow clients would never be cut off)");
    }
    let send_timeout = cx.duration(&l.send_timeout, lp.key("send_timeout"), Duration::from_secs(60));
    if send_timeout.is_zero() {
        cx.err(lp.key("send_timeout"), "must be above zero (every response that fills the socket would be cut off)");
    }
    let max_header_size = cx.size(&l.max_header_size, lp.key("max_header_size"), 16 << 10);
    if !(8192..=1 << 20).contains(&max_header_size) {
        cx.err(lp.key("max_header_size"), format!("must be 8KiB..=1MiB, got {max_header_size} bytes"));
    }
    let limits = Limits {
        header_timeout,
        keepalive_timeout: cx.duration(&l.keepalive_timeout, lp.key("keepalive_timeout"), Duration::from_secs(60)),
        body_timeout: cx.duration(&l.body_timeout, lp.key("body_timeout"), Duration::from_secs(60)),
        send_timeout,
        max_body: cx.size(&l.max_body, lp.key("max_body"), 32 << 20),
        max_header_size: max_header_size.clamp(8192, 1 << 20) as usize,
        max_connections: cx.int(l.max_connections, lp.key("max_connections"), 1, 1_000_000, 10_000) as usize,
        shutdown_timeout: cx.duration(&l.shutdown_timeout, lp.key("shutdown_timeout"), Duration::from_secs(30)),
        tunnel_close_spread: cx.duration(
            &l.tunnel_close_spread,
            lp.key("tunnel_close_spread"),
            Duration::from_millis(500),
        ),
        shed_over: cx.duration(&l.shed_over, lp.key("shed_over"), Duration::from_secs(180)),
        upgrade_drain_timeout: cx.duration(
            &l.upgrade_drain_timeout,
            lp.key("upgrade_drain_timeout"),
            Duration::from_secs(300),
        ),
    };
    if limits.tunnel_close_spread > Duration::from_secs(60) {
        cx.err(lp.key("tunnel_close_spread"), format!("must be 0s..=60s, got {:?}", limits.tunnel_close_spread));
    }
    if limits.shed_over > crate::config::MAX_SHED_OVER {
        cx.err(lp.key("shed_over"), format!("must be 0s..=1h, got {:?}", limits.shed_over));
    }
    if limits.upgrade_drain_timeout > Duration::from_secs(24 * 3600) {
        cx.err(lp.key("upgrade_drain_timeout"), format!("must be 0s..=24h, got {:?}", limits.upgrade_drain_timeout));
    }
    limits
}

/// `[log]`: level, format and whether requests are logged.
pub(super) fn validate_log(cx: &mut Ctx, l: &RawLog, gp: KeyPath) -> LogConfig {
    LogConfig {
        level: match l.level.as_deref() {
            None => "info".into(),
            Some(v @ ("error" | "warn" | "info" | "debug" | "trace")) => v.into(),
            Some(v) => {
                cx.err(gp.key("level"), format!("expected one of error, warn, info, debug, trace, got \"{v}\""));
                "info".into()
            }
        },
        format: cx.either(l.format.as_deref(), gp.key("format"), ("text", LogFormat::Text), ("json", LogFormat::Json)),
        access_log: l.access_log.unwrap_or(true),
    }
}

/// `[headers]`: the security and forwarding headers added to responses and
/// requests; the values are checked as header values now.
pub(super) fn validate_headers(cx: &mut Ctx, h: &RawHeaders, hp: KeyPath) -> HeaderConfig {
    let frame_options = h.frame_options.clone().unwrap_or_else(|| "DENY".into());
    if http::HeaderValue::from_str(&frame_options).is_err() {
        cx.err(hp.key("frame_options"), "must be a valid header value such as \"DENY\" or \"SAMEORIGIN\"");
    }
    let hsts = match h.hsts.as_deref() {
        None => Some("max-age=31536000; includeSubDomains".to_string()),
        Some("") => None,
        Some(v) => {
            if http::HeaderValue::from_str(v).is_err() {
                cx.err(hp.key("hsts"), "must be a valid header value such as \"max-age=31536000\" (or \"\" for none)");
            }
            Some(v.to_string())
        }
    };
    HeaderConfig { security: h.security.unwrap_or(true), forwarded: h.forwarded.unwrap_or(true), frame_options, hsts }
}
