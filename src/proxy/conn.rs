//! One client connection: its activity tracking and the I/O wrapper that
//! enforces the header read timeout and the keep-alive idle timeout.
//!
//! hyper's own `header_read_timeout` also runs while a keep-alive connection
//! waits for its next request, so it cannot express "10 s to send a request
//! head, 60 s of idle keep-alive" as nginx does. [`ClientIo`] does: while no
//! request is in flight it closes the connection `keepalive_timeout` after the
//! last response (or after accept), or `header_timeout` after the first byte
//! of a new request head arrived, whichever applies. While a request or an
//! upgraded tunnel is active, no timer runs here.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Shared between a connection's I/O wrapper and the requests on it.
#[derive(Debug, Default)]
pub struct ConnActivity {
    /// Requests (or tunnels) in progress on this connection.
    active: AtomicU32,
    /// Requests started so far: a request answered before the reader looked
    /// again still moves the connection from its header timer to idle.
    started: AtomicU64,
    /// What the connection holds until its last user (the connection task or
    /// a WebSocket tunnel taken over from it) is gone: its place under
    /// `max_connections`, and the shutdown drain's sender.
    holds: Mutex<Option<Box<dyn Send + Sync + std::fmt::Debug>>>,
    /// HTTP/2 connections exchange control frames while idle; those bytes do
    /// not start a request head.
    http2: AtomicBool,
    /// The reader waiting while a request was busy: woken when the last
    /// request ends, so the idle timer starts even if no byte arrives.
    reader: AtomicWaker,
}

impl ConnActivity {
    /// Activity that keeps `hold` (e.g. a semaphore permit) alive as long as
    /// the connection or any tunnel made from it, and counts the connection
    /// in `sysmanage_active_connections` for as long.
    pub fn holding(hold: Box<dyn Send + Sync + std::fmt::Debug>) -> Self {
        crate::metrics::COUNTERS.active_connections.fetch_add(1, Ordering::Relaxed);
        ConnActivity {
            active: AtomicU32::new(0),
            started: AtomicU64::new(0),
            holds: Mutex::new(Some(hold)),
            http2: AtomicBool::new(false),
            reader: AtomicWaker::new(),
        }
    }

    pub fn mark_http2(&self) {
        if !self.http2.load(Ordering::Relaxed) {
            self.http2.store(true, Ordering::Relaxed);
        }
    }
}

/// Marks its connection busy for as long as it lives.
#[derive(Debug)]
pub struct ActiveGuard(Arc<ConnActivity>);

impl Drop for ConnActivity {
    fn drop(&mut self) {
        if self.holds.get_mut().map(|h| h.is_some()).unwrap_or(false) {
            crate::metrics::COUNTERS.active_connections.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl ActiveGuard {
    pub fn new(activity: &Arc<ConnActivity>) -> Self {
        activity.started.fetch_add(1, Ordering::Relaxed);
        activity.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(activity.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.reader.wake();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A request is in progress: no timer.
    Busy,
    /// Waiting for the next request: `keepalive_timeout` runs.
    Idle,
    /// The first bytes of a request head arrived: `header_timeout` runs.
    Head,
}

/// The client connection's I/O, with the idle and header timers.
pub struct ClientIo<T> {
    inner: T,
    activity: Arc<ConnActivity>,
    header_timeout: Duration,
    keepalive_timeout: Duration,
    phase: Phase,
    timer: Pin<Box<Sleep>>,
    /// `activity.started` when the reader last looked.
    seen_started: u64,
}

impl<T> ClientIo<T> {
    pub fn new(inner: T, activity: Arc<ConnActivity>, header_timeout: Duration, keepalive_timeout: Duration) -> Self {
        // A new connection must send its first request head within
        // header_timeout, as nginx's client_header_timeout.
        ClientIo {
            inner,
            activity,
            header_timeout,
            keepalive_timeout,
            phase: Phase::Head,
            timer: Box::pin(tokio::time::sleep(header_timeout)),
            seen_started: 0,
        }
    }

    fn set_phase(&mut self, phase: Phase) {
        if self.phase == phase {
            return;
        }
        self.phase = phase;
        let after = match phase {
            Phase::Busy => return,
            Phase::Idle => self.keepalive_timeout,
            Phase::Head => self.header_timeout,
        };
        self.timer.as_mut().reset(Instant::now() + after);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ClientIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let mut busy = this.activity.active.load(Ordering::Acquire) > 0;
        if busy {
            // Register, then look again: a request that ended in between
            // either is seen now or wakes us.
            this.activity.reader.register(cx.waker());
            busy = this.activity.active.load(Ordering::Acquire) > 0;
        }
        let started = this.activity.started.load(Ordering::Relaxed);
        if busy {
            this.set_phase(Phase::Busy);
        } else if this.phase == Phase::Busy || started != this.seen_started {
            // A request ran since we last looked (perhaps answered at once):
            // the connection is idle now, with a fresh keep-alive timer.
            this.phase = Phase::Busy;
            this.set_phase(Phase::Idle);
        }
        this.seen_started = started;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before
                    && this.phase == Phase::Idle
                    && !this.activity.http2.load(Ordering::Relaxed)
                {
                    this.set_phase(Phase::Head);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.phase != Phase::Busy && this.timer.as_mut().poll(cx).is_ready() {
                    let what = if this.phase == Phase::Head { "header_timeout" } else { "keepalive_timeout" };
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)));
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ClientIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

use std::future::Future;
