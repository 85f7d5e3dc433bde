//! `[[routes]]`: what a request matches and what answers it. Routes name
//! pools and rate limits, so they are checked after those.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::Method;

use super::Ctx;
use crate::config::raw::*;
use crate::config::*;

/// Every `[[routes]]` entry (at least one is needed). A route without a
/// path or an action is left out; its error is kept.
pub(super) fn validate_routes(
    cx: &mut Ctx,
    raw: &[RawRoute],
    rp: KeyPath,
    pools: &[PoolConfig],
    rate_limits: &[RateLimitConfig],
    base: &Path,
) -> Vec<RouteConfig> {
    let mut names = HashSet::new();
    let mut routes = Vec::new();
    if raw.is_empty() {
        cx.err(rp.clone(), "at least one [[routes]] entry is needed (every request would get 404)");
    }
    let rate_limits: Vec<&str> = rate_limits.iter().map(|x| x.name.as_str()).collect();
    for (i, rr) in raw.iter().enumerate() {
        if let Some(r) = validate_route(cx, rr, rp.index(i), &mut names, pools, &rate_limits, base) {
            routes.push(r);
        }
    }
    routes
}

/// One route: its matcher (path, host, methods, websocket), exactly one
/// action, the rate limit it names and, for websocket routes, the tunnel's
/// timeouts.
fn validate_route(
    cx: &mut Ctx,
    rr: &RawRoute,
    p: KeyPath,
    names: &mut HashSet<String>,
    pools: &[PoolConfig],
    rate_limits: &[&str],
    base: &Path,
) -> Option<RouteConfig> {
    let name = cx.name(&rr.name, p.key("name"), "route", names);
    let path = route_path(cx, rr, &p);
    let methods = route_methods(cx, rr.methods.as_deref(), &p);
    let host = rr.host.as_ref().map(|h| h.trim().to_ascii_lowercase());
    if host.as_deref() == Some("") {
        cx.err(p.key("host"), "must not be empty (leave it out to match any host)");
    }
    let actions = route_actions(cx, rr, &p, pools, base);
    let rate_limit = rr
        .rate_limit
        .as_ref()
        .and_then(|z| position_of(cx, p.key("rate_limit"), rate_limits, z, "rate limit", "rate_limits"));
    let websocket = rr.websocket.unwrap_or(false);
    if websocket && !matches!(actions.first(), Some(RouteAction::Proxy { .. }) | None) {
        cx.err(p.key("websocket"), "a websocket route must proxy to a pool");
    }
    let Some(action) = actions.into_iter().next() else {
        cx.err(p.clone(), "missing action: set pool, respond, static_dir or redirect");
        return None;
    };
    let (tunnel_timeout, tunnel_fin_timeout, close_when_unavailable) = tunnel_settings(cx, rr, &p, websocket);
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

/// `path` (exact) or `path_prefix`: one of them, starting with '/'.
fn route_path(cx: &mut Ctx, rr: &RawRoute, p: &KeyPath) -> Option<PathMatch> {
    match (&rr.path, &rr.path_prefix) {
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
    }
}

/// `methods`: HTTP methods (any case); the invalid ones are left out, each
/// with its error.
fn route_methods(cx: &mut Ctx, list: Option<&[String]>, p: &KeyPath) -> Option<Vec<Method>> {
    list.map(|list| {
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
    })
}

/// The actions a route sets, in the order pool, respond, static_dir,
/// redirect; more than one is an error (the first is kept).
fn route_actions(cx: &mut Ctx, rr: &RawRoute, p: &KeyPath, pools: &[PoolConfig], base: &Path) -> Vec<RouteAction> {
    let mut actions = Vec::new();
    if let Some(pool) = &rr.pool {
        let known: Vec<&str> = pools.iter().map(|x| x.name.as_str()).collect();
        let i = position_of(cx, p.key("pool"), &known, pool, "pool", "pools");
        actions.push(RouteAction::Proxy { pool: i.unwrap_or(0) });
    }
    if let Some(resp) = &rr.respond {
        actions.push(respond_action(cx, resp, p.key("respond")));
    }
    if let Some(dir) = &rr.static_dir {
        actions.push(static_action(cx, rr, dir, p, base));
    } else if rr.cache_control.is_some() {
        cx.err(p.key("cache_control"), "only applies to routes with static_dir");
    }
    if let Some(red) = &rr.redirect {
        actions.push(redirect_action(cx, red, p.key("redirect")));
    }
    if actions.len() > 1 {
        cx.err(p.clone(), "set exactly one action: pool, respond, static_dir or redirect (several are set)");
    }
    actions
}

/// `respond`: a fixed answer (status, body and its content type).
fn respond_action(cx: &mut Ctx, resp: &RawRespond, rp: KeyPath) -> RouteAction {
    let status = cx.int(resp.status, rp.key("status"), 200, 599, 200) as u16;
    let content_type = resp.content_type.clone().unwrap_or_else(|| "text/plain; charset=utf-8".into());
    if http::HeaderValue::from_str(&content_type).is_err() {
        cx.err(rp.key("content_type"), "must be a valid header value");
    }
    RouteAction::Respond { status, body: Bytes::from(resp.body.clone().unwrap_or_default()), content_type }
}

/// `static_dir`: files from a directory (relative to the config file), with
/// an optional `cache_control` header.
fn static_action(cx: &mut Ctx, rr: &RawRoute, dir: &str, p: &KeyPath, base: &Path) -> RouteAction {
    let dir = base.join(dir);
    if !dir.is_dir() {
        cx.err(p.key("static_dir"), format!("{} is not a readable directory", dir.display()));
    }
    if let Some(cc) = &rr.cache_control {
        if http::HeaderValue::from_str(cc).is_err() {
            cx.err(p.key("cache_control"), "must be a valid header value");
        }
    }
    RouteAction::Static { dir, cache_control: rr.cache_control.clone() }
}

/// `redirect`: a redirect status and the URL or path to go to.
fn redirect_action(cx: &mut Ctx, red: &RawRedirect, rp: KeyPath) -> RouteAction {
    let status = cx.int(red.status, rp.key("status"), 301, 308, 302) as u16;
    if ![301, 302, 303, 307, 308].contains(&status) {
        cx.err(rp.key("status"), format!("must be 301, 302, 303, 307 or 308, got {status}"));
    }
    let to = red.to.clone().unwrap_or_default();
    if to.is_empty() || http::HeaderValue::from_str(&to).is_err() {
        cx.err(rp.key("to"), "missing or invalid: expected a URL or path such as \"https://example.com/\"");
    }
    RouteAction::Redirect { to, status }
}

/// A websocket route's tunnel timeout, half-close timeout and whether a
/// tunnel request with no server available gets its connection closed (or
/// a status); set on any other route they are an error.
fn tunnel_settings(cx: &mut Ctx, rr: &RawRoute, p: &KeyPath, websocket: bool) -> (Duration, Duration, bool) {
    let tunnel_timeout = cx.duration(&rr.tunnel_timeout, p.key("tunnel_timeout"), Duration::from_secs(3600));
    if tunnel_timeout < Duration::from_secs(1) {
        cx.err(p.key("tunnel_timeout"), "must be at least 1s (agents heartbeat every 30 s; keep it well above 60 s)");
    }
    let tunnel_fin_timeout = cx.duration(&rr.tunnel_fin_timeout, p.key("tunnel_fin_timeout"), Duration::from_secs(10));
    if tunnel_fin_timeout < Duration::from_millis(100) {
        cx.err(p.key("tunnel_fin_timeout"), "must be at least 100ms");
    }
    let close_when_unavailable =
        cx.either(rr.on_unavailable.as_deref(), p.key("on_unavailable"), ("close", true), ("status", false));
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
    (tunnel_timeout, tunnel_fin_timeout, close_when_unavailable)
}

/// The index of the entry called `name` among `known` (the names of a
/// section); when there is none, an error that lists them.
fn position_of(cx: &mut Ctx, path: KeyPath, known: &[&str], name: &str, what: &str, section: &str) -> Option<usize> {
    let i = known.iter().position(|k| *k == name);
    if i.is_none() {
        cx.err(path, format!("no {what} named \"{name}\" ({section}: {})", list_or_none(known)));
    }
    i
}

/// The names joined with commas, or "none defined".
fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none defined".to_string()
    } else {
        names.join(", ")
    }
}
