//! The request path's state for one configuration generation
//! ([`ProxyState`]), built at start and at every reload from the control
//! plane's snapshot, and [`Shared`], through which every connection reads
//! the current one, with the node-wide signals: shutdown, draining and
//! the order to shed tunnels.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::stats::RouteStats;
use crate::config::{RateKey, RateKind};
use crate::proxy::headers::SecurityHeaders;
use crate::proxy::outbound::pool::{pool_options, upstream_tls, PoolOptions, ServerPool};
use crate::proxy::outbound::response::{text_response, ProxyBody};
use crate::proxy::outbound::tunnel::{End, Shed};
use crate::ratelimit::{Decision, KeySource, Zone, ZoneConfig, ZoneKind};
use crate::sessions::{AffinityKey, Sessions};
use crate::state::Snapshot;

/// Everything the request path reads for one config generation.
pub struct ProxyState {
    pub snapshot: Arc<Snapshot>,
    /// Connections of every server, by pool index then server index.
    pub upstreams: Vec<Vec<Arc<ServerPool>>>,
    pub security: SecurityHeaders,
    /// Set the `X-Forwarded-*` headers on requests to servers.
    pub forwarded: bool,
    pub access_log: bool,
    /// Per-request metrics on (config `metrics.enabled`).
    pub metrics: bool,
    pub route_stats: RouteStats,
    /// `Strict-Transport-Security` for HTTPS responses.
    pub hsts: Option<HeaderValue>,
    /// One zone per `[[rate_limits]]` entry, by index (`None` only if the
    /// limiter refused settings that validation let through).
    pub zones: Vec<Option<RateZone>>,
    /// The node's sticky sessions (when a pool has `affinity`).
    pub sessions: Option<Arc<Sessions>>,
    /// Each pool's parsed affinity key, by pool index.
    pub affinity_keys: Vec<Option<AffinityKey>>,
}

/// A rate-limit zone and what to answer over its limit.
pub struct RateZone {
    pub config: crate::config::RateLimitConfig,
    pub zone: Arc<Zone>,
}

impl ProxyState {
    /// `Some(response)` when zone `z` refuses this request.
    pub(super) fn rate_limited(
        &self,
        z: usize,
        client_ip: IpAddr,
        headers: &http::HeaderMap,
    ) -> Option<Response<ProxyBody>> {
        let rz = self.zones.get(z)?.as_ref()?;
        let key = rz.zone.key_for_request(client_ip, headers)?;
        match rz.zone.check(key, crate::clock::now_ms()) {
            Decision::Allow => None,
            d @ Decision::Reject { .. } => {
                let status = StatusCode::from_u16(rz.config.status).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
                let mut r = text_response(status, "429 Too Many Requests: slow down\n");
                if status != StatusCode::TOO_MANY_REQUESTS {
                    *r.body_mut() =
                        ProxyBody::full(format!("{} {}\n", status.as_u16(), status.canonical_reason().unwrap_or("")));
                }
                if let Some(secs) = d.retry_after_secs() {
                    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
                }
                tracing::debug!(zone = %rz.config.name, client = %client_ip, "rate limited");
                Some(r)
            }
        }
    }
}

fn zone_config(c: &crate::config::RateLimitConfig) -> ZoneConfig {
    ZoneConfig {
        name: c.name.clone(),
        kind: match c.kind {
            RateKind::Bucket { per_second, burst } => ZoneKind::Bucket { per_second, burst },
            RateKind::Window { limit, window } => ZoneKind::Window { limit, window },
        },
        key: match &c.key {
            RateKey::ClientIp => KeySource::ClientIp,
            RateKey::Header(h) => KeySource::Header(h.clone()),
        },
        max_keys: c.max_keys,
    }
}

impl ProxyState {
    /// Builds the request path's state for a snapshot. Server connection
    /// pools (with their idle connections) are taken over from `previous`
    /// for servers whose address and connection settings did not change.
    pub fn new(snapshot: Arc<Snapshot>, previous: Option<&ProxyState>, sessions: Option<Arc<Sessions>>) -> Self {
        let cfg = &snapshot.config;
        let reuse = |p: &crate::config::PoolConfig, addr: std::net::SocketAddr, opts: PoolOptions| {
            let prev = previous?;
            let i = prev.snapshot.config.pools.iter().position(|q| q.name == p.name)?;
            prev.upstreams[i]
                .iter()
                .find(|u| u.addr() == addr && u.options() == opts && u.tls_source() == p.tls.as_ref())
                .cloned()
        };
        let upstreams: Vec<Vec<Arc<ServerPool>>> = cfg
            .pools
            .iter()
            .map(|p| {
                let opts = pool_options(p);
                p.servers
                    .iter()
                    .map(|s| {
                        reuse(p, s.addr, opts).unwrap_or_else(|| ServerPool::new(s.addr, opts, upstream_tls(p, s.addr)))
                    })
                    .collect()
            })
            .collect();
        // Pools that close a down server's tunnels close its idle
        // connections too (the pools' sweepers follow the servers' health).
        for ((conns, p), pool) in upstreams.iter().zip(&cfg.pools).zip(&snapshot.pools) {
            for (c, s) in conns.iter().zip(&pool.servers) {
                c.follow_health(p.close_tunnels_on_down.then_some(&s.state));
            }
        }
        let affinity_keys = cfg
            .pools
            .iter()
            .map(|p| p.affinity.as_ref().and_then(|a| AffinityKey::parse(&a.key, a.extract.as_deref()).ok()))
            .collect();
        ProxyState {
            sessions,
            affinity_keys,
            upstreams,
            security: SecurityHeaders::new(cfg.headers.security, &cfg.headers.frame_options),
            forwarded: cfg.headers.forwarded,
            access_log: cfg.log.access_log,
            metrics: cfg.metrics_enabled,
            hsts: cfg.headers.hsts.as_deref().and_then(|h| HeaderValue::from_str(h).ok()),
            zones: cfg
                .rate_limits
                .iter()
                .map(|c| {
                    // A zone with the same settings keeps its clients' state across a reload.
                    let kept = previous
                        .and_then(|p| p.zones.iter().flatten().find(|z| &z.config == c))
                        .map(|z| z.zone.clone());
                    let zone = match kept {
                        Some(z) => z,
                        None => match Zone::new(zone_config(c)) {
                            Ok(z) => Arc::new(z),
                            Err(e) => {
                                tracing::error!(zone = %c.name, error = %e, "rate limit zone not created");
                                return None;
                            }
                        },
                    };
                    Some(RateZone { config: c.clone(), zone })
                })
                .collect(),
            route_stats: RouteStats::new(cfg.routes.iter().map(|r| r.name.as_str()), previous.map(|p| &p.route_stats)),
            snapshot,
        }
    }
}

/// Shared by every connection of every listener.
pub struct Shared {
    pub state: ArcSwap<ProxyState>,
    /// The node's orders to its WebSocket tunnels: close when the node
    /// shuts down (agents reconnect to another node while HTTP requests
    /// drain), or shed over a window ([`Shared::shed_tunnels`]).
    pub tunnels: Arc<crate::proxy::outbound::tunnel::Orders>,
    /// The node drains: HTTP/1 responses carry `Connection: close`, HTTP/2
    /// connections get a GOAWAY, `respond` routes answer 503. Read per
    /// response (one atomic load); `drain_signal` wakes HTTP/2 connections.
    draining: AtomicBool,
    pub drain_signal: tokio::sync::watch::Sender<bool>,
    /// The old process of an in-place upgrade: HTTP/1 responses carry
    /// `Connection: close` (idle keep-alive clients get one more answer
    /// instead of a close that races their next request); nothing else
    /// changes.
    retiring: AtomicBool,
}

impl Shared {
    pub fn new(state: ProxyState) -> Self {
        Shared {
            state: ArcSwap::from_pointee(state),
            tunnels: Default::default(),
            draining: AtomicBool::new(false),
            drain_signal: tokio::sync::watch::Sender::new(false),
            retiring: AtomicBool::new(false),
        }
    }

    /// Orders every WebSocket tunnel of the node, open now or opened later,
    /// to close at its own random instant within `over` from now, counted
    /// as `why` ([`End::Draining`], [`End::Upgrade`]). A later order
    /// replaces this one. For the in-place upgrade, the old process calls
    /// `shed_tunnels(limits.shed_over, End::Upgrade)` once
    /// `limits.upgrade_drain_timeout` has passed.
    pub fn shed_tunnels(&self, over: Duration, why: End) {
        self.tunnels.shed(Some(Shed::now(over, why)));
    }

    /// Cancels the order: tunnels not closed yet stay open.
    pub fn stop_shedding(&self) {
        self.tunnels.shed(None);
    }

    /// Puts the data plane into draining (`true`) or back (`false`); the
    /// tunnels are shed apart ([`Shared::shed_tunnels`]).
    pub fn set_draining(&self, on: bool) {
        self.draining.store(on, Ordering::Relaxed);
        self.drain_signal.send_replace(on);
    }

    /// Whether the node drains (see [`Shared::set_draining`]).
    #[inline]
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The node retires after an in-place upgrade: every HTTP/1 connection
    /// closes after its next response.
    pub fn set_retiring(&self) {
        self.retiring.store(true, Ordering::Relaxed);
    }

    /// Whether HTTP/1 responses end their connection (draining or retiring).
    #[inline]
    pub fn closes_after_response(&self) -> bool {
        self.is_draining() || self.retiring.load(Ordering::Relaxed)
    }
}
