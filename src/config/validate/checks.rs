//! A pool's `[[pools.checks]]`: active health checks over HTTP or TCP.

use std::time::Duration;

use http::Method;

use super::Ctx;
use crate::config::raw::*;
use crate::config::*;

/// A pool's checks, at most 32.
/// `pool_tls`: the pool has `tls`, which checks use unless they say
/// `tls = false`.
pub(super) fn validate_checks(cx: &mut Ctx, raw: &[RawCheck], cp: KeyPath, pool_tls: bool) -> Vec<CheckConfig> {
    if raw.len() > 32 {
        cx.err(cp.clone(), format!("at most 32 checks per pool, got {}", raw.len()));
    }
    raw.iter()
        .enumerate()
        .map(|(j, rc)| {
            let p = cp.index(j);
            if rc.tls == Some(true) && !pool_tls {
                cx.err(p.key("tls"), "the pool has no `tls` table to check with: add [pools.tls] or leave tls out");
            }
            validate_check(cx, rc, p)
        })
        .collect()
}

/// One check: how often, how long it may take, what it sends and expects,
/// and how many results in a row mark a server down or up.
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
        None | Some("http") => http_check(cx, rc, &p),
        Some("tcp") => {
            tcp_check(cx, rc, &p);
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
        tls: rc.tls,
    }
}

/// An HTTP check: the request (method, path, Host) and the answer expected
/// (a status or range of them, and optionally a text in the body).
fn http_check(cx: &mut Ctx, rc: &RawCheck, p: &KeyPath) -> CheckKind {
    let method = match rc.method.as_deref() {
        None => Method::GET,
        Some(m) => Method::from_bytes(m.to_ascii_uppercase().as_bytes()).unwrap_or_else(|_| {
            cx.err(p.key("method"), format!("expected an HTTP method such as \"GET\" or \"HEAD\", got \"{m}\""));
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
    let (status_lo, status_hi) = expected_status(cx, rc.expect_status.as_ref(), p);
    CheckKind::Http { method, path, host: rc.host.clone(), status_lo, status_hi, body: rc.expect_body.clone() }
}

/// `expect_status`: a code or a range; 200-399 when left out.
fn expected_status(cx: &mut Ctx, spec: Option<&RawStatusSpec>, p: &KeyPath) -> (u16, u16) {
    match spec {
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
    }
}

/// A TCP check only connects: the keys of HTTP checks are errors there.
fn tcp_check(cx: &mut Ctx, rc: &RawCheck, p: &KeyPath) {
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
}

/// `"200-399"` or `"204"`.
fn parse_status_range(r: &str) -> Option<(u16, u16)> {
    let (lo, hi) = r.split_once('-').unwrap_or((r, r));
    let (lo, hi): (u16, u16) = (lo.trim().parse().ok()?, hi.trim().parse().ok()?);
    ((100..=599).contains(&lo) && (lo..=599).contains(&hi)).then_some((lo, hi))
}
