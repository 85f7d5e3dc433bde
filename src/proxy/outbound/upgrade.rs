//! A server's `101 Switching Protocols` to a client's WebSocket upgrade:
//! the tunnel between the two runs in a task of its own, counted as
//! connection activity and as a request in flight to its server, and keeps
//! its sticky session alive.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::header::{self, HeaderMap};
use http::Response;
use hyper::upgrade::OnUpgrade;

use super::forward::Forward;
use super::h1client;
use super::response::ProxyBody;
use super::server_io::ServerIo;
use super::tunnel;
use crate::proxy::activity::ActiveGuard;
use crate::proxy::wire::fields::remove_hop_by_hop;

/// What a tunnel starts with once the client's side is there; one box
/// until then.
struct Start {
    server: h1client::Upgraded,
    limits: tunnel::Limits,
    orders: Arc<tunnel::Orders>,
    touch: Option<Box<tunnel::SessionTouch>>,
    guards: tunnel::Guards,
    unwrap: tunnel::UnwrapClient,
}

pin_project_lite::pin_project! {
    /// A tunnel's task: waits for hyper to hand over the client's side,
    /// then is the tunnel itself (no room kept for anything else).
    #[project = TaskState]
    enum TunnelTask {
        Waiting { upgrade: OnUpgrade, start: Option<Box<Start>> },
        Running { #[pin] tunnel: tunnel::Tunnel<ServerIo> },
    }
}

impl Future for TunnelTask {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match self.as_mut().project() {
                TaskState::Waiting { upgrade, start } => {
                    let client = ready!(Pin::new(upgrade).poll(cx));
                    let Some(start) = start.take() else { return Poll::Ready(()) };
                    let Start { server, limits, orders, touch, guards, unwrap } = *start;
                    match client {
                        Ok(client) => {
                            let client = unwrap(client);
                            let tunnel = tunnel::Tunnel::new(client, server, limits, orders, touch, guards);
                            self.set(TunnelTask::Running { tunnel });
                        }
                        Err(e) => {
                            let state = guards.count.server();
                            tracing::warn!(pool = %state.pool, error = %e, "websocket upgrade failed");
                            return Poll::Ready(());
                        }
                    }
                }
                TaskState::Running { mut tunnel } => {
                    let (end, up, down) = ready!(tunnel.as_mut().poll(cx));
                    end.count();
                    let state = tunnel.as_ref().get_ref().server();
                    tracing::debug!(pool = %state.pool, server = %state.name, ?end, up, down, "websocket tunnel ended");
                    return Poll::Ready(());
                }
            }
        }
    }
}

impl Forward<'_> {
    /// Starts the tunnel and answers the client's upgrade. The tunnel counts
    /// as a request in flight to its server from here (`TunnelCount`).
    pub(super) fn tunnel(
        &self,
        mut parts: http::response::Parts,
        server: h1client::Upgraded,
        client_upgrade: OnUpgrade,
        touch: Option<Box<tunnel::SessionTouch>>,
        idx: usize,
    ) -> Response<ProxyBody> {
        let guards = tunnel::Guards {
            busy: ActiveGuard::new(self.activity),
            count: tunnel::TunnelCount::new(self.pool.servers[idx].state.clone()),
        };
        let start = Box::new(Start {
            server,
            limits: self.tunnel,
            orders: self.tunnels.clone(),
            touch,
            guards,
            unwrap: self.unwrap_client,
        });
        tokio::spawn(TunnelTask::Waiting { upgrade: client_upgrade, start: Some(start) });
        let keep: HeaderMap = parts.headers.clone();
        remove_hop_by_hop(&mut parts.headers, true);
        if let Some(v) = keep.get(header::UPGRADE) {
            parts.headers.insert(header::UPGRADE, v.clone());
        }
        Response::from_parts(parts, ProxyBody::empty())
    }
}

#[cfg(test)]
mod size {
    use std::mem::size_of;

    /// The largest task future for which tokio's task cell is 512 bytes
    /// rather than 640 (tokio 1.54, x86_64 and aarch64; recompute when tokio
    /// changes `runtime/task/core.rs`). The cell (`Cell`, `repr(C)`, aligned
    /// to 128 bytes) is a `Header` of 32 bytes (state, queue link, vtable,
    /// owner id), a `Core` of 24 bytes beside the future (scheduler handle,
    /// task id, the tag of the `Stage` enum padded to 8), the future, and a
    /// `Trailer` of 48 bytes (owned-list links, join waker, terminate hook):
    /// 32 + 24 + F + 48 <= 512. Checked with a counting allocator: a future
    /// of 408 bytes gets a 512-byte cell, one of 416 a 640-byte cell.
    const FUTURE_MAX_FOR_A_512_BYTE_CELL: usize = 408;

    /// An idle tunnel's task is its `TunnelTask`, nearly all of it the
    /// `Tunnel`: kept within a 512-byte task cell (see BENCHMARKS.md, idle
    /// WebSocket tunnels).
    #[test]
    fn an_idle_tunnels_task_fits_a_512_byte_cell() {
        // The bound is for release builds: there tokio's sockets are 32
        // bytes; debug assertions add mio's 8-byte selector id to each.
        let socket = size_of::<tokio::net::TcpStream>();
        assert_eq!(socket, if cfg!(debug_assertions) { 40 } else { 32 }, "tokio's socket changed size: recompute");
        let size = size_of::<super::TunnelTask>() - 2 * (socket - 32);
        assert!(size <= FUTURE_MAX_FOR_A_512_BYTE_CELL, "a tunnel's task future is {size} bytes in a release build");
        // No buffer in it: the copy state of a direction is a few words.
        assert!(size_of::<super::super::relay::Direction>() <= 24);
    }
}
