//! Route matching: ordered, first match wins. Pure and synchronous.

use http::Method;

use crate::config::{PathMatch, RouteConfig};

/// What a request offers for matching.
pub struct RequestKey<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    /// Host without port, as sent (compared case-insensitively).
    pub host: Option<&'a str>,
    pub websocket: bool,
}

/// The first route that matches, by index.
pub fn match_route(routes: &[RouteConfig], key: &RequestKey<'_>) -> Option<usize> {
    routes.iter().position(|r| {
        let m = &r.matcher;
        let path_ok = match &m.path {
            PathMatch::Exact(p) => key.path == p,
            PathMatch::Prefix(p) => key.path.starts_with(p.as_str()),
        };
        path_ok
            && (!m.websocket || key.websocket)
            && m.methods.as_ref().is_none_or(|ms| ms.contains(key.method))
            && m.host.as_ref().is_none_or(|h| key.host.is_some_and(|k| k.eq_ignore_ascii_case(h)))
    })
}

/// The host part of a `Host` header or authority, without the port.
pub fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str, method: Method, host: Option<&str>, ws: bool) -> String {
        let cfg = crate::config::sample::config();
        let key = RequestKey { method: &method, path, host, websocket: ws };
        cfg.routes[match_route(&cfg.routes, &key).unwrap()].name.clone()
    }

    #[test]
    fn first_match_wins_with_conditions() {
        assert_eq!(route("/health", Method::GET, None, false), "health");
        assert_eq!(route("/health/x", Method::GET, None, false), "default");
        assert_eq!(route("/api/agent/connect", Method::GET, None, true), "ws");
        assert_eq!(route("/api/agent/connect", Method::GET, None, false), "default");
        assert_eq!(route("/x", Method::GET, Some("ADMIN.example.com"), false), "admin-host");
        assert_eq!(route("/x", Method::POST, Some("admin.example.com"), false), "default");
    }

    #[test]
    fn host_ports_are_stripped() {
        assert_eq!(host_without_port("example.com:8080"), "example.com");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("[::1]:80"), "::1");
    }
}
