//! A server's `101 Switching Protocols` to a client's WebSocket upgrade:
//! the tunnel between the two runs in a task of its own, counted as
//! connection activity and as a request in flight to its server, and keeps
//! its sticky session alive.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap};
use http::Response;

use super::forward::Forward;
use super::h1client;
use super::response::{InFlight, ProxyBody};
use super::tunnel;
use crate::health::ServerState;
use crate::metrics::COUNTERS;
use crate::proxy::activity::ActiveGuard;
use crate::proxy::wire::fields::remove_hop_by_hop;
use crate::sessions::Sessions;

/// What a tunnel needs to keep its session alive.
pub(super) struct SessionTouch {
    pub(super) sessions: Arc<Sessions>,
    pub(super) pool: String,
    pub(super) key: String,
    pub(super) server: String,
    pub(super) ttl: Duration,
}

/// Counts an open WebSocket tunnel, node-wide and for its server, until
/// dropped.
struct TunnelCount(Arc<ServerState>);

impl TunnelCount {
    fn new(server: Arc<ServerState>) -> TunnelCount {
        COUNTERS.websocket_tunnels.fetch_add(1, Ordering::Relaxed);
        server.stats.tunnels.fetch_add(1, Ordering::Relaxed);
        TunnelCount(server)
    }
}

impl Drop for TunnelCount {
    fn drop(&mut self) {
        COUNTERS.websocket_tunnels.fetch_sub(1, Ordering::Relaxed);
        self.0.stats.tunnels.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Forward<'_> {
    /// Starts the tunnel and answers the client's upgrade.
    pub(super) fn tunnel(
        &self,
        mut parts: http::response::Parts,
        server: h1client::Upgraded,
        in_flight: InFlight,
        client_upgrade: hyper::upgrade::OnUpgrade,
        touch: Option<SessionTouch>,
        idx: usize,
    ) -> Response<ProxyBody> {
        let busy = ActiveGuard::new(self.activity);
        let pool = self.pool.cfg.name.clone();
        let state = self.pool.servers[idx].state.clone();
        let limits = self.tunnel;
        let closing = self.closing.subscribe();
        let shed = self.shed.subscribe();
        tokio::spawn(async move {
            let _busy = busy;
            let _in_flight = in_flight;
            let _tunnel = TunnelCount::new(state.clone());
            match client_upgrade.await {
                Ok(client) => {
                    let touch_every = touch.as_ref().map_or(Duration::from_secs(3600), |t| t.ttl / 4);
                    let refresh = || {
                        if let Some(t) = &touch {
                            let now = crate::sessions::unix_now_ms();
                            if let crate::sessions::Touch::Refreshed(rec) =
                                t.sessions.table.touch(&t.pool, &t.key, &t.server, t.ttl, now)
                            {
                                t.sessions.persist(rec);
                            }
                        }
                    };
                    let (end, up, down) =
                        tunnel::run(client, server, limits, &state, closing, shed, touch_every, refresh).await;
                    end.count();
                    tracing::debug!(%pool, server = %state.name, ?end, up, down, "websocket tunnel ended");
                }
                Err(e) => tracing::warn!(%pool, error = %e, "websocket upgrade failed"),
            }
        });
        let keep: HeaderMap = parts.headers.clone();
        remove_hop_by_hop(&mut parts.headers, true);
        if let Some(v) = keep.get(header::UPGRADE) {
            parts.headers.insert(header::UPGRADE, v.clone());
        }
        Response::from_parts(parts, ProxyBody::empty())
    }
}
