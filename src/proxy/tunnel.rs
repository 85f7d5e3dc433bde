//! A WebSocket tunnel after the 101: bytes copied both ways until either
//! side closes (half-close passed through), the tunnel is idle for the
//! route's `tunnel_timeout`, the server is put in maintenance, or the node
//! shuts down (agents then reconnect to another node). Bytes are counted as they pass; the
//! session's TTL is refreshed while the tunnel lives.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::metrics::COUNTERS;

/// Copy buffer per direction of a tunnel.
pub const TUNNEL_BUFFER: usize = 2 * 1024;

/// Why a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Closed,
    Idle,
    Maintenance,
    Shutdown,
    Error,
}

/// One side of the tunnel, counting what is read from it.
struct Counted<T> {
    inner: T,
    last_ms: Arc<AtomicU64>,
    /// Where the bytes read from this side are added.
    total: &'static AtomicU64,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.total.fetch_add(n as u64, Ordering::Relaxed);
            self.last_ms.store(crate::clock::now_ms(), Ordering::Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Copies until the tunnel ends; `touch` runs every `touch_every` while it
/// lives (session TTL refresh).
pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    client: Upgraded,
    server: S,
    idle: Duration,
    kick: &tokio::sync::Notify,
    mut closing: tokio::sync::watch::Receiver<bool>,
    touch_every: Duration,
    mut touch: impl FnMut(),
) -> (End, u64, u64) {
    let last = Arc::new(AtomicU64::new(crate::clock::now_ms()));
    let mut client = Counted { inner: TokioIo::new(client), last_ms: last.clone(), total: &COUNTERS.tunnel_bytes_up };
    let mut server = Counted { inner: server, last_ms: last.clone(), total: &COUNTERS.tunnel_bytes_down };
    let kicked = kick.notified();
    tokio::pin!(kicked);
    // `touch_every` is a quarter of the session TTL (at least 1 s by config),
    // so at least 250 ms; the floor only keeps `interval` off zero. A floor
    // of 1 s let sessions with a TTL under 2 s expire while their tunnel
    // was open: the first refresh came after the record had expired.
    let mut touch_tick = tokio::time::interval(touch_every.max(Duration::from_millis(100)));
    touch_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    touch_tick.tick().await;
    // 2 KiB per direction instead of tokio's 8 KiB default: agents' tunnels
    // are mostly idle and small messages; large ones still stream, in more
    // reads (BENCHMARKS.md, idle tunnels).
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut server, TUNNEL_BUFFER, TUNNEL_BUFFER);
    tokio::pin!(copy);
    let idle_ms = idle.as_millis() as u64;
    loop {
        let since = crate::clock::now_ms().saturating_sub(last.load(Ordering::Relaxed));
        let wait = Duration::from_millis(idle_ms.saturating_sub(since).max(1));
        tokio::select! {
            r = &mut copy => {
                return match r {
                    Ok((up, down)) => (End::Closed, up, down),
                    Err(_) => (End::Error, 0, 0),
                };
            }
            _ = tokio::time::sleep(wait) => {
                let since = crate::clock::now_ms().saturating_sub(last.load(Ordering::Relaxed));
                if since >= idle_ms {
                    return (End::Idle, 0, 0);
                }
            }
            _ = &mut kicked => return (End::Maintenance, 0, 0),
            _ = closing.wait_for(|c| *c) => return (End::Shutdown, 0, 0),
            _ = touch_tick.tick() => touch(),
        }
    }
}
