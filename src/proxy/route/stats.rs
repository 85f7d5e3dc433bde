//! `sysmanage_requests_total{method,endpoint}`: requests per route and
//! method. The endpoint label is the route name, so cardinality is bounded by
//! the config; methods outside the common eight count as `OTHER`. Counters
//! are kept by route name across reloads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::Method;

pub const METHODS: [&str; 8] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "OTHER"];
const UNMATCHED: &str = "unmatched";

type Counts = Arc<[AtomicU64; 8]>;

pub struct RouteStats {
    /// One per route, in route order, then the `unmatched` counter.
    routes: Vec<(String, Counts)>,
}

fn method_index(m: &Method) -> usize {
    match *m {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::PATCH => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

impl RouteStats {
    /// Counters for `names` (route order), reusing those of `previous` by name.
    pub fn new<'a>(names: impl Iterator<Item = &'a str>, previous: Option<&RouteStats>) -> Self {
        let find = |n: &str| previous.and_then(|p| p.routes.iter().find(|(x, _)| x == n).map(|(_, c)| c.clone()));
        let fresh = || -> Counts { Arc::new(Default::default()) };
        let mut routes: Vec<(String, Counts)> = names.map(|n| (n.to_string(), find(n).unwrap_or_else(fresh))).collect();
        routes.push((UNMATCHED.to_string(), find(UNMATCHED).unwrap_or_else(fresh)));
        RouteStats { routes }
    }

    /// Counts one request for route `idx` (`None`: no route matched).
    pub fn count(&self, idx: Option<usize>, method: &Method) {
        let i = idx.unwrap_or(self.routes.len() - 1).min(self.routes.len() - 1);
        self.routes[i].1[method_index(method)].fetch_add(1, Ordering::Relaxed);
    }

    /// (route, method, count) for every non-zero counter.
    pub fn read(&self) -> Vec<(String, &'static str, u64)> {
        let mut out = Vec::new();
        for (name, counts) in &self.routes {
            for (m, c) in METHODS.iter().zip(counts.iter()) {
                let n = c.load(Ordering::Relaxed);
                if n > 0 {
                    out.push((name.clone(), *m, n));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_route_and_method_and_survive_reload() {
        let a = RouteStats::new(["api", "ws"].into_iter(), None);
        a.count(Some(0), &Method::GET);
        a.count(Some(0), &Method::from_bytes(b"PROPFIND").unwrap());
        a.count(None, &Method::POST);
        let b = RouteStats::new(["ws", "api", "new"].into_iter(), Some(&a));
        b.count(Some(1), &Method::GET);
        let mut r = b.read();
        r.sort();
        assert_eq!(r, vec![("api".into(), "GET", 2), ("api".into(), "OTHER", 1), ("unmatched".into(), "POST", 1)]);
    }
}
