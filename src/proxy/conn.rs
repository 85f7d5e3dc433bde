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
//!
//! It also tells the HTTP/1.1 driver (`listener`) when a keep-alive
//! connection can be *parked*: no request in flight, every response byte
//! flushed, and the socket has nothing to read. The driver then ends hyper's
//! connection without closing the socket (poll_shutdown does nothing while
//! parking), which frees hyper's buffers and per-connection state, waits
//! for the socket to become readable with [`ClientIo::poll_parked`], and
//! starts a new hyper connection on it.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
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
    /// The last request came with a body that may not have been read to its
    /// end: hyper might still have to drain it, so the connection is not
    /// parked until a later request (or the end of that body) says so.
    body_open: AtomicBool,
    /// Parking handshake between [`ClientIo`] and the HTTP/1.1 driver:
    /// [`PARK_NONE`], [`PARK_WANTED`] or [`PARK_ENDING`].
    park: AtomicU8,
}

/// No parking in progress.
const PARK_NONE: u8 = 0;
/// The reader found the connection idle with nothing to read.
const PARK_WANTED: u8 = 1;
/// The driver is ending hyper's connection to park it: shutdown must not
/// close the socket.
const PARK_ENDING: u8 = 2;

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
            body_open: AtomicBool::new(false),
            park: AtomicU8::new(PARK_NONE),
        }
    }

    /// The current request's body was read to its end.
    pub fn body_finished(&self) {
        self.body_open.store(false, Ordering::Relaxed);
    }

    /// For the driver: true once if the reader asked to park; from then on
    /// until [`ConnActivity::park_done`] the socket is not shut down.
    pub fn take_park_request(&self) -> bool {
        self.park.compare_exchange(PARK_WANTED, PARK_ENDING, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    /// For the driver: parking finished or was abandoned.
    pub fn park_done(&self) {
        self.park.store(PARK_NONE, Ordering::Release);
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

    /// A request was parsed (taken when hyper calls the service, before its
    /// future first runs, so no moment between parsing and answering looks
    /// idle); `has_body`: its body is not known to be empty.
    pub fn for_request(activity: &Arc<ConnActivity>, has_body: bool) -> Self {
        activity.body_open.store(has_body, Ordering::Relaxed);
        Self::new(activity)
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
    /// Bytes read before the current hyper connection started (the
    /// protocol sniff, or what a parked connection's hyper had buffered),
    /// returned before anything else is read from `inner`.
    rewound: Option<Bytes>,
    /// The HTTP/1.1 driver parks this connection when it goes idle.
    parkable: bool,
    /// Bytes were written since the last completed flush: hyper may still
    /// hold part of a response.
    unflushed: bool,
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
            rewound: None,
            parkable: false,
            unflushed: false,
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Lets the reader ask the HTTP/1.1 driver to park the connection when
    /// it is idle (never for HTTP/2, whose idle connections still talk).
    pub fn set_parkable(&mut self, parkable: bool) {
        self.parkable = parkable;
    }

    /// Hands `bytes` (already read from the socket) to the next reader. They
    /// are the start of a request, so the header timer runs from now if the
    /// connection was idle.
    pub fn rewind(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        if self.phase == Phase::Idle {
            self.set_phase(Phase::Head);
        }
        self.rewound = Some(bytes);
    }

    /// Bytes are waiting from [`ClientIo::rewind`].
    pub fn has_rewound(&self) -> bool {
        self.rewound.is_some()
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

/// A client transport whose readiness can be awaited without reading: what
/// a parked connection waits on.
pub trait ReadReady {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl ReadReady for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
}

/// A connection is parked only right after a read returned `Pending`, and
/// tokio-rustls returns `Pending` only once rustls holds no plaintext and
/// the socket would block: the socket's readiness is then the right signal.
impl ReadReady for tokio_rustls::server::TlsStream<TcpStream> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_ref().0.poll_read_ready(cx)
    }
}

impl<T: ReadReady> ClientIo<T> {
    /// Waits, while parked, until the client sends something (`Ok`) or the
    /// keep-alive timer runs out (`Err(TimedOut)`).
    pub fn poll_parked(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Poll::Ready(r) = self.inner.poll_read_ready(cx) {
            return Poll::Ready(r);
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "keepalive_timeout")));
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ClientIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(bytes) = &mut this.rewound {
            let n = bytes.len().min(buf.remaining());
            buf.put_slice(&bytes[..n]);
            bytes.advance(n);
            if bytes.is_empty() {
                this.rewound = None;
            }
            return Poll::Ready(Ok(()));
        }
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
                if this.phase == Phase::Idle
                    && this.parkable
                    && !this.unflushed
                    && !this.activity.body_open.load(Ordering::Relaxed)
                {
                    // Idle, everything sent, nothing to read: the driver
                    // looks at this right after hyper's poll returns.
                    let _ = this.activity.park.compare_exchange(
                        PARK_NONE,
                        PARK_WANTED,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    );
                }
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
        self.unflushed = true;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.unflushed = true;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // hyper flushes the transport only once its own buffer is empty.
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        if matches!(r, Poll::Ready(Ok(()))) {
            self.unflushed = false;
        }
        r
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.activity.park.load(Ordering::Acquire) == PARK_ENDING {
            // hyper's connection ends so that the socket can be parked.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

use std::future::Future;

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn client_io() -> (ClientIo<tokio::io::DuplexStream>, tokio::io::DuplexStream, Arc<ConnActivity>) {
        let (ours, theirs) = tokio::io::duplex(1024);
        let activity = Arc::new(ConnActivity::default());
        let mut io = ClientIo::new(ours, activity.clone(), Duration::from_secs(10), Duration::from_secs(60));
        io.set_parkable(true);
        (io, theirs, activity)
    }

    /// Polls one read: `Some(bytes)` if it completed, `None` if pending.
    fn read_once(io: &mut ClientIo<tokio::io::DuplexStream>) -> Option<Vec<u8>> {
        let mut buf = [0u8; 64];
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut rb = ReadBuf::new(&mut buf);
        match Pin::new(io).poll_read(&mut cx, &mut rb) {
            Poll::Ready(Ok(())) => Some(rb.filled().to_vec()),
            Poll::Ready(Err(e)) => panic!("read failed: {e}"),
            Poll::Pending => None,
        }
    }

    #[tokio::test]
    async fn asks_to_park_only_when_idle_flushed_and_nothing_to_read() {
        let (mut io, mut client, activity) = client_io();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(read_once(&mut io).is_some());
        // A request head is being read: no parking.
        assert!(read_once(&mut io).is_none());
        assert!(!activity.take_park_request());
        let guard = ActiveGuard::for_request(&activity, false);
        assert!(read_once(&mut io).is_none());
        assert!(!activity.take_park_request(), "busy");
        io.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        drop(guard);
        assert!(read_once(&mut io).is_none());
        assert!(!activity.take_park_request(), "the response was not flushed yet");
        io.flush().await.unwrap();
        assert!(read_once(&mut io).is_none());
        assert!(activity.take_park_request(), "idle, flushed, nothing to read");
        activity.park_done();
    }

    #[tokio::test]
    async fn a_request_body_not_read_to_its_end_blocks_parking() {
        let (mut io, mut client, activity) = client_io();
        client.write_all(b"POST / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(read_once(&mut io).is_some());
        drop(ActiveGuard::for_request(&activity, true));
        io.flush().await.unwrap();
        assert!(read_once(&mut io).is_none());
        assert!(!activity.take_park_request());
        activity.body_finished();
        assert!(read_once(&mut io).is_none());
        assert!(activity.take_park_request());
    }

    #[tokio::test]
    async fn rewound_bytes_come_first_and_start_the_header_timer() {
        let (mut io, mut client, activity) = client_io();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = vec![0u8; 18];
        io.read_exact(&mut buf).await.unwrap();
        drop(ActiveGuard::for_request(&activity, false));
        io.rewind(Bytes::from_static(b"GET /next"));
        assert!(io.has_rewound());
        client.write_all(b" HTTP/1.1").await.unwrap();
        assert_eq!(read_once(&mut io).unwrap(), b"GET /next");
        assert_eq!(read_once(&mut io).unwrap(), b" HTTP/1.1");
        // Part of a head is here: the header timer runs, no parking.
        assert!(read_once(&mut io).is_none());
        assert!(!activity.take_park_request());
    }

    #[tokio::test]
    async fn shutdown_keeps_the_socket_open_while_parking() {
        let (mut io, mut client, activity) = client_io();
        activity.park.store(PARK_WANTED, Ordering::Release);
        assert!(activity.take_park_request());
        io.shutdown().await.unwrap();
        activity.park_done();
        io.write_all(b"still open").await.unwrap();
        let mut buf = [0u8; 10];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"still open");
        io.shutdown().await.unwrap();
        assert_eq!(client.read(&mut buf).await.unwrap(), 0, "a real shutdown closes");
    }
}
