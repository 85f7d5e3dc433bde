//! One client connection's I/O wrapper, which enforces the header read
//! timeout, the keep-alive idle timeout and the send timeout.
//!
//! hyper's own `header_read_timeout` also runs while a keep-alive connection
//! waits for its next request, so it cannot express "10 s to send a request
//! head, 60 s of idle keep-alive" as nginx does. [`ClientIo`] does: while no
//! request is in flight it closes the connection `keepalive_timeout` after the
//! last response (or after accept), or `header_timeout` after the first byte
//! of a new request head arrived, whichever applies. While a request or an
//! upgraded tunnel is active, none of those runs here.
//!
//! Writes have their own timer, whatever the phase: a write (or flush) to
//! the client that stays blocked for `send_timeout` (the client stopped
//! reading, so the socket's send buffer stays full) fails the connection,
//! as nginx's `send_timeout` does. It counts from the moment a write first
//! has to wait and restarts whenever one progresses, so a slow but reading
//! client is never cut; it costs nothing until a write waits
//! ([`IdleTimer`]).
//!
//! It also tells the HTTP/1.1 driver (`http1`) when a keep-alive connection
//! can be *parked*: no request in flight, every response byte flushed, the
//! socket has nothing to read, and the connection has been idle long enough
//! (see [`PARK_AFTER`]: at once after a pause of a client that is not
//! sending back to back, else after `PARK_AFTER` of idleness). The driver
//! then ends hyper's connection without closing the socket (poll_shutdown
//! does nothing while parking), which frees hyper's buffers and
//! per-connection state, and reads the next request head itself (the fast
//! path of `http1`). A connection on the fast path is parked the same way:
//! what it gives back is its request future's allocation.
//!
//! # Timers
//!
//! The deadlines are plain [`Instant`]s (`since`, the start of the current
//! phase, plus the phase's timeout), updated on each phase change with one
//! clock read. One tokio [`Sleep`] per connection is armed *lazily*: a phase
//! change resets it only if it already fired or is armed later than the new
//! phase needs; an earlier wake-up is kept. When it fires, [`ClientIo`]
//! looks at the phase and the deadlines, acts on what is due (closes the
//! connection, or marks it due for parking) and re-arms it for the next
//! instant that matters. Why: resetting a registered tokio timer to an
//! earlier instant takes the timer driver's lock, and a reset on each phase
//! change does that for every request (its header deadline comes before the
//! keep-alive deadline set when the connection went idle). A client sending
//! back to back now costs no timer reset per request, only about one early
//! wake-up of its task per `PARK_AFTER`: when it goes idle the sleep is
//! armed no later than `PARK_AFTER` (and `header_timeout`) after the idle
//! start, which is before the header deadline of any request that follows,
//! so starting a head needs no reset either.
//!
//! Accuracy: lazy arming only wakes a connection early, never late, and a
//! wake-up re-arms for the exact next deadline, so `header_timeout`,
//! `keepalive_timeout` and the park delay hold to tokio's timer resolution
//! (1 ms) plus scheduling delay. The timer may also fire while a request is
//! in flight (no deadline then): that is one spurious poll of the task. One
//! case is looser: the start of a next request that arrived together with
//! the previous one (pipelined) sits in hyper's buffer unseen here, so its
//! header deadline (counted from the idle start) is enforced only once the
//! connection is parked, up to `PARK_AFTER` late if `header_timeout` is
//! shorter than that.

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::proxy::activity::{ConnActivity, PARK_ENDING, PARK_NONE, PARK_WANTED};
use crate::proxy::idle_timer::IdleTimer;
use crate::proxy::outbound::relay::Prefixed;
use crate::proxy::outbound::tunnel::{Client, ClientSocket};
use crate::tls::TlsServerStream;

/// How long a connection whose client sends requests back to back must
/// stay idle before it is parked.
///
/// Parking costs ending hyper's connection and starting a new one (a `Box`,
/// two 8 KiB buffers, the graceful-shutdown handshake); under load the next
/// request of a keep-alive client usually arrives microseconds after the
/// response was flushed, so parking at once would pay that for nearly every
/// request. One second is far above any gap between the requests of a busy
/// client, short enough that a client which went quiet gives back hyper's
/// ~20 KiB soon, far below the default `keepalive_timeout` (60 s) and
/// `header_timeout` (10 s), and it also bounds how often the lazy timer of a
/// busy connection wakes up early (about once per `PARK_AFTER`).
///
/// A connection whose client has not shown that it sends back to back (its
/// first pause, or the first after a pause of at least `PARK_AFTER`) is
/// still parked at once: connections that send one request and go idle
/// (agents polling at long intervals, many connections opened together)
/// then never hold hyper's buffers together, which would raise the
/// allocator's high-water mark (and RSS) even after they were parked. A
/// busy client pays one park for its first pause only (and for the first
/// pause after each long one).
pub const PARK_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A request is in progress: no deadline.
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
    /// When the current phase began: the deadlines are `since` plus the
    /// phase's timeout (see the module header).
    since: Instant,
    /// The one registered timer, armed lazily at or before the earliest
    /// instant that matters (a deadline, or the time to park).
    timer: Pin<Box<Sleep>>,
    /// The client's last pause between requests was shorter than
    /// [`PARK_AFTER`]: the connection is parked only after `PARK_AFTER` of
    /// idleness instead of at once.
    back_to_back: bool,
    /// Idle long enough to be parked (the other conditions are looked at on
    /// each read).
    park_due: bool,
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
    /// `send_timeout`: runs while a write to the client is blocked.
    send: IdleTimer,
    /// `inner.socket_bytes()` when a write last had to wait.
    seen_socket_bytes: u32,
}

/// How far a client stream's writes got below it: a stream that can move
/// bytes to its socket during a write or flush that still returns
/// `Pending` (TLS: rustls's queued records go out a few at a time) says
/// so, for the send timer to count it as progress. A plain socket moves
/// nothing while it returns `Pending`.
pub trait SocketProgress {
    /// Bytes handed to the socket so far, wrapping; only changes matter.
    fn socket_bytes(&self) -> u32 {
        0
    }
}

impl SocketProgress for tokio::net::TcpStream {}

#[cfg(test)]
impl SocketProgress for tokio::io::DuplexStream {}

impl<IO> SocketProgress for TlsServerStream<IO> {
    fn socket_bytes(&self) -> u32 {
        TlsServerStream::socket_bytes(self)
    }
}

/// A client connection's timeouts (`limits.*`).
#[derive(Debug, Clone, Copy)]
pub struct ClientTimeouts {
    pub header: Duration,
    pub keepalive: Duration,
    pub send: Duration,
}

impl ClientTimeouts {
    pub fn of(limits: &crate::config::Limits) -> Self {
        ClientTimeouts { header: limits.header_timeout, keepalive: limits.keepalive_timeout, send: limits.send_timeout }
    }
}

impl<T> ClientIo<T> {
    pub fn new(inner: T, activity: Arc<ConnActivity>, timeouts: ClientTimeouts) -> Self {
        let ClientTimeouts { header: header_timeout, keepalive: keepalive_timeout, send } = timeouts;
        // A new connection must send its first request head within
        // header_timeout, as nginx's client_header_timeout.
        let now = Instant::now();
        ClientIo {
            inner,
            activity,
            header_timeout,
            keepalive_timeout,
            phase: Phase::Head,
            since: now,
            timer: Box::pin(tokio::time::sleep_until(now + header_timeout)),
            back_to_back: false,
            park_due: false,
            seen_started: 0,
            rewound: None,
            parkable: false,
            unflushed: false,
            send: IdleTimer::new(send),
            seen_socket_bytes: 0,
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
    /// are the start of a request, so the header timer runs if the
    /// connection was idle. Bytes still waiting from an earlier rewind come
    /// after them: `bytes` were read from those first (the fast path reads
    /// at most 4 KiB of what a parked hyper connection had buffered).
    pub fn rewind(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        if self.phase == Phase::Idle {
            // What a parked hyper connection had buffered: bytes read while
            // idle start a head at once (and an idle connection is parked
            // only then), so these came before the connection went idle and
            // the head's clock runs from the idle start, not from the park.
            let idle_since = self.since;
            self.set_phase(Phase::Head);
            self.since = idle_since;
            self.arm_by(idle_since + self.header_timeout);
        }
        self.rewound = Some(match self.rewound.take() {
            None => bytes,
            Some(rest) => {
                let mut joined = BytesMut::with_capacity(bytes.len() + rest.len());
                joined.extend_from_slice(&bytes);
                joined.extend_from_slice(&rest);
                joined.freeze()
            }
        });
    }

    /// Bytes are waiting from [`ClientIo::rewind`].
    pub fn has_rewound(&self) -> bool {
        self.rewound.is_some()
    }

    /// Moves to `phase`: one clock read, and the timer is re-armed only if
    /// it would otherwise wake up too late (or already fired).
    fn set_phase(&mut self, phase: Phase) {
        if self.phase == phase {
            return;
        }
        let was = self.phase;
        self.phase = phase;
        self.park_due = false;
        if phase == Phase::Busy {
            // No deadline while busy: if the timer fires meanwhile it finds
            // nothing due, and the next phase re-arms it.
            return;
        }
        let now = Instant::now();
        let wake = if phase == Phase::Head {
            if was == Phase::Idle {
                self.back_to_back = now.saturating_duration_since(self.since) < PARK_AFTER;
            }
            now + self.header_timeout
        } else {
            self.park_due = !self.back_to_back;
            let mut after = self.keepalive_timeout;
            if self.back_to_back && self.parkable {
                // The park time, and no later than the header deadline of
                // a request starting now: the head that likely follows soon
                // then needs no re-arm (its deadline is later still).
                after = after.min(PARK_AFTER).min(self.header_timeout);
            }
            now + after
        };
        self.since = now;
        self.arm_by(wake);
    }

    /// Makes the timer wake up at `wake` or earlier. An earlier wake-up is
    /// left as it is (it finds nothing due and re-arms then): no timer work
    /// at all on most phase changes. Only a timer that fired or would wake
    /// too late is reset (moving a registered tokio timer earlier takes the
    /// timer driver's lock).
    fn arm_by(&mut self, wake: Instant) {
        if self.timer.is_elapsed() || self.timer.deadline() > wake {
            self.timer.as_mut().reset(wake);
        }
    }

    /// Polls the timer; each time it fired, [`ClientIo::fired`] acts on what
    /// is due and re-arms it. `Err`: the connection timed out.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Result<(), &'static str> {
        while self.timer.as_mut().poll(cx).is_ready() {
            self.fired()?;
        }
        Ok(())
    }

    /// The timer fired, perhaps early (it is armed lazily): a passed
    /// deadline ends the connection, an idle connection that waited long
    /// enough becomes due for parking, and the timer is re-armed for the
    /// next instant that matters (always later than now, so the caller's
    /// next poll of it is pending).
    fn fired(&mut self) -> Result<(), &'static str> {
        let now = Instant::now();
        let next = match self.phase {
            // Nothing to watch; entering Idle or Head re-arms it earlier.
            Phase::Busy => now + self.keepalive_timeout,
            Phase::Head => {
                let deadline = self.since + self.header_timeout;
                if now >= deadline {
                    crate::metrics::COUNTERS.client_timeouts[HEADER].fetch_add(1, Ordering::Relaxed);
                    return Err("header_timeout");
                }
                deadline
            }
            Phase::Idle => {
                let deadline = self.since + self.keepalive_timeout;
                if now >= deadline {
                    return Err("keepalive_timeout");
                }
                let park_at = self.since + PARK_AFTER;
                if self.park_due || !self.parkable {
                    deadline
                } else if now >= park_at {
                    self.park_due = true;
                    deadline
                } else {
                    park_at.min(deadline)
                }
            }
        };
        self.timer.as_mut().reset(next);
        Ok(())
    }
}

/// Indices of `COUNTERS.client_timeouts` (`metrics::CLIENT_TIMEOUT_KINDS`).
const HEADER: usize = 0;
const SEND: usize = 1;

fn timed_out(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what)
}

impl<T: SocketProgress> ClientIo<T> {
    /// What a write, flush or shutdown returned, with `send_timeout`
    /// applied: a blocked one runs the timer (and fails once it expired),
    /// progress stops it, including bytes the stream moved to its socket
    /// before it returned `Pending`.
    fn sent<R>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.send.progressed();
            return polled;
        }
        let moved = self.inner.socket_bytes();
        if moved != self.seen_socket_bytes {
            self.seen_socket_bytes = moved;
            self.send.progressed();
        }
        if !self.send.expired(cx) {
            return Poll::Pending;
        }
        crate::metrics::COUNTERS.client_timeouts[SEND].fetch_add(1, Ordering::Relaxed);
        tracing::debug!(after = ?self.send.after(), "the client stopped reading a response: closed (send_timeout)");
        Poll::Ready(Err(timed_out("send_timeout")))
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
                // The timer's wake-up lands here: hyper reads whenever it
                // waits for a request, so a deadline or the time to park is
                // seen on the next poll of hyper's connection.
                if this.phase != Phase::Busy {
                    if let Err(what) = this.poll_timer(cx) {
                        return Poll::Ready(Err(timed_out(what)));
                    }
                }
                if this.phase == Phase::Idle
                    && this.park_due
                    && this.parkable
                    && !this.unflushed
                    && !this.activity.body_open.load(Ordering::Relaxed)
                {
                    // Idle long enough, everything sent, nothing to read:
                    // the driver looks at this right after hyper's poll
                    // returns.
                    let _ = this.activity.park.compare_exchange(
                        PARK_NONE,
                        PARK_WANTED,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    );
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin + SocketProgress> AsyncWrite for ClientIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.unflushed = true;
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.sent(cx, polled)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.unflushed = true;
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.sent(cx, polled)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // hyper flushes the transport only once its own buffer is empty.
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        let r = self.sent(cx, polled);
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
        // TLS: close_notify waits for the socket like any write.
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.sent(cx, polled)
    }
}

use std::future::Future;

/// The client's side of a WebSocket tunnel, out of hyper's `Upgraded`:
/// unwrapped down to its socket when it is a `ClientIo<T>` (hyper's box,
/// the connection's timer and bookkeeping are given back: the tunnel needs
/// neither deadlines nor parking), with the bytes already read from it
/// past the request head; else kept as it is. Given to the tunnel through
/// `ConnInfo::unwrap_upgraded`.
pub fn unwrap_upgraded<T>(upgraded: hyper::upgrade::Upgraded) -> Prefixed<Client>
where
    T: ClientSocket + SocketProgress + AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let parts = match upgraded.downcast::<hyper_util::rt::TokioIo<ClientIo<T>>>() {
        Ok(parts) => parts,
        Err(u) => return Client::upgraded(u),
    };
    let io = parts.io.into_inner();
    // hyper read `read_buf` before what the connection still had rewound.
    let pre = match io.rewound {
        Some(rest) if !rest.is_empty() => {
            let mut all = BytesMut::with_capacity(parts.read_buf.len() + rest.len());
            all.extend_from_slice(&parts.read_buf);
            all.extend_from_slice(&rest);
            all.freeze()
        }
        _ => parts.read_buf,
    };
    Prefixed::new(io.inner.into_client(), pre)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::activity::ActiveGuard;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const TIMEOUTS: ClientTimeouts = ClientTimeouts {
        header: Duration::from_secs(10),
        keepalive: Duration::from_secs(60),
        send: Duration::from_secs(30),
    };

    fn client_io() -> (ClientIo<tokio::io::DuplexStream>, tokio::io::DuplexStream, Arc<ConnActivity>) {
        let (ours, theirs) = tokio::io::duplex(1024);
        let activity = Arc::new(ConnActivity::default());
        let mut io = ClientIo::new(ours, activity.clone(), TIMEOUTS);
        io.set_parkable(true);
        (io, theirs, activity)
    }

    /// Polls one read.
    fn poll_once(io: &mut ClientIo<tokio::io::DuplexStream>) -> Poll<io::Result<Vec<u8>>> {
        let mut buf = [0u8; 64];
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut rb = ReadBuf::new(&mut buf);
        Pin::new(io).poll_read(&mut cx, &mut rb).map_ok(|()| rb.filled().to_vec())
    }

    /// Polls one read: `Some(bytes)` if it completed, `None` if pending.
    fn read_once(io: &mut ClientIo<tokio::io::DuplexStream>) -> Option<Vec<u8>> {
        match poll_once(io) {
            Poll::Ready(Ok(bytes)) => Some(bytes),
            Poll::Ready(Err(e)) => panic!("read failed: {e}"),
            Poll::Pending => None,
        }
    }

    /// Polls one read that must fail with a timeout; returns which one.
    fn read_timed_out(io: &mut ClientIo<tokio::io::DuplexStream>) -> String {
        match poll_once(io) {
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::TimedOut => e.to_string(),
            other => panic!("expected a timeout, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_second_rewind_comes_before_what_was_still_waiting() {
        let (mut io, _client, _activity) = client_io();
        io.rewind(Bytes::from_static(b"0123456789"));
        let mut first = [0u8; 4];
        assert_eq!(io.read(&mut first).await.unwrap(), 4);
        // What was read goes back in front of the six bytes still waiting.
        io.rewind(Bytes::copy_from_slice(&first));
        let mut all = [0u8; 16];
        let n = io.read(&mut all).await.unwrap();
        assert_eq!(&all[..n], b"0123456789");
        assert!(!io.has_rewound());
    }

    /// One request answered at once: the client sends a head, it is read,
    /// answered and flushed, the client reads the answer; then the reader
    /// looks again (and finds the connection idle).
    async fn exchange(
        io: &mut ClientIo<tokio::io::DuplexStream>,
        client: &mut tokio::io::DuplexStream,
        activity: &Arc<ConnActivity>,
    ) {
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(read_once(io).is_some());
        drop(ActiveGuard::for_request(activity, false));
        io.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        io.flush().await.unwrap();
        let mut buf = [0u8; 19];
        client.read_exact(&mut buf).await.unwrap();
        assert!(read_once(io).is_none());
    }

    /// A connection whose client has sent back to back once: its first
    /// pause parked at once, the next request came 10 ms later.
    async fn back_to_back_client() -> (ClientIo<tokio::io::DuplexStream>, tokio::io::DuplexStream, Arc<ConnActivity>) {
        let (mut io, mut client, activity) = client_io();
        exchange(&mut io, &mut client, &activity).await;
        assert!(activity.take_park_request(), "a first pause parks at once");
        activity.park_done();
        tokio::time::advance(Duration::from_millis(10)).await;
        exchange(&mut io, &mut client, &activity).await;
        (io, client, activity)
    }

    const MS: Duration = Duration::from_millis(1);

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

    #[tokio::test(start_paused = true)]
    async fn a_back_to_back_client_is_asked_to_park_only_after_park_after() {
        let (mut io, _client, activity) = back_to_back_client().await;
        assert!(!activity.take_park_request(), "not at once after a back-to-back request");
        tokio::time::advance(PARK_AFTER - MS).await;
        assert!(read_once(&mut io).is_none());
        assert!(!activity.take_park_request(), "idle for less than PARK_AFTER");
        tokio::time::advance(2 * MS).await;
        assert!(read_once(&mut io).is_none());
        assert!(activity.take_park_request(), "idle for PARK_AFTER");
        activity.park_done();
    }

    #[tokio::test(start_paused = true)]
    async fn back_to_back_requests_do_not_re_arm_the_timer() {
        let (mut io, mut client, activity) = back_to_back_client().await;
        let armed = io.timer.deadline();
        for _ in 0..20 {
            tokio::time::advance(10 * MS).await;
            exchange(&mut io, &mut client, &activity).await;
            assert!(!activity.take_park_request());
        }
        assert_eq!(io.timer.deadline(), armed, "the timer was re-armed between back-to-back requests");
        // It fires early (armed after the first of these requests), finds
        // the connection idle for less than PARK_AFTER and re-arms for the
        // time to park.
        tokio::time::advance(PARK_AFTER - 20 * 10 * MS).await;
        assert!(read_once(&mut io).is_none());
        assert!(!activity.take_park_request());
        tokio::time::advance(20 * 10 * MS).await;
        assert!(read_once(&mut io).is_none());
        assert!(activity.take_park_request());
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_started_while_idle_is_cut_at_header_timeout() {
        let (mut io, mut client, activity) = back_to_back_client().await;
        tokio::time::advance(Duration::from_millis(500)).await;
        client.write_all(b"GET /slow HT").await.unwrap();
        assert_eq!(read_once(&mut io).unwrap(), b"GET /slow HT");
        // The timer (armed for the time to park, before the head's
        // deadline) fires on the way and is re-armed for the deadline.
        tokio::time::advance(Duration::from_secs(10) - MS).await;
        assert!(read_once(&mut io).is_none());
        assert!(!activity.take_park_request(), "a head is being read");
        tokio::time::advance(2 * MS).await;
        assert_eq!(read_timed_out(&mut io), "header_timeout");
    }

    #[tokio::test(start_paused = true)]
    async fn header_and_send_timeouts_are_counted() {
        let count = |i: usize| crate::metrics::COUNTERS.client_timeouts[i].load(Ordering::Relaxed);
        // Other tests in this process count too: at least one more each.
        let (header, send) = (count(HEADER), count(SEND));
        let (mut io, _client, _activity) = client_io();
        tokio::time::advance(TIMEOUTS.header).await;
        assert_eq!(read_timed_out(&mut io), "header_timeout");
        assert!(count(HEADER) > header);
        let (mut io, _client, _activity) = client_io();
        fill(&mut io);
        tokio::time::advance(TIMEOUTS.send).await;
        assert_eq!(write_once(&mut io, b"x"), Some(Err("send_timeout".to_string())));
        assert!(count(SEND) > send);
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_request_head_is_cut_at_header_timeout() {
        let (mut io, mut client, _activity) = client_io();
        client.write_all(b"GET / HT").await.unwrap();
        assert!(read_once(&mut io).is_some());
        tokio::time::advance(Duration::from_secs(10) - MS).await;
        assert!(read_once(&mut io).is_none());
        tokio::time::advance(2 * MS).await;
        assert_eq!(read_timed_out(&mut io), "header_timeout");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_that_is_not_parked_closes_at_keepalive_timeout() {
        let (mut io, _client, activity) = back_to_back_client().await;
        tokio::time::advance(PARK_AFTER + MS).await;
        assert!(read_once(&mut io).is_none());
        // The driver found hyper busy and abandoned the park, say.
        assert!(activity.take_park_request());
        activity.park_done();
        tokio::time::advance(Duration::from_secs(60) - PARK_AFTER - 2 * MS).await;
        assert!(read_once(&mut io).is_none());
        tokio::time::advance(2 * MS).await;
        assert_eq!(read_timed_out(&mut io), "keepalive_timeout");
    }

    #[tokio::test(start_paused = true)]
    async fn a_parked_connection_closes_at_keepalive_timeout_only() {
        let (mut io, mut client, activity) = client_io();
        exchange(&mut io, &mut client, &activity).await;
        assert!(activity.take_park_request());
        activity.park_done();
        // The timer is still armed for the first head's deadline (10 s):
        // it fires early and is re-armed for the keep-alive deadline.
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(read_once(&mut io).is_none());
        tokio::time::advance(Duration::from_secs(49) - 2 * MS).await;
        assert!(read_once(&mut io).is_none());
        tokio::time::advance(2 * MS).await;
        assert_eq!(read_timed_out(&mut io), "keepalive_timeout");
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_long_pause_the_next_pause_parks_at_once_again() {
        let (mut io, mut client, activity) = back_to_back_client().await;
        tokio::time::advance(PARK_AFTER + 500 * MS).await;
        assert!(read_once(&mut io).is_none());
        assert!(activity.take_park_request());
        activity.park_done();
        exchange(&mut io, &mut client, &activity).await;
        assert!(activity.take_park_request(), "the client's last pause was long: park at once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_buffered_before_a_park_keeps_its_clock_from_the_idle_start() {
        let (mut io, _client, activity) = back_to_back_client().await;
        tokio::time::advance(PARK_AFTER + MS).await;
        assert!(read_once(&mut io).is_none());
        assert!(activity.take_park_request());
        // What hyper had buffered comes back with the socket.
        io.rewind(Bytes::from_static(b"GET /ne"));
        activity.park_done();
        assert_eq!(read_once(&mut io).unwrap(), b"GET /ne");
        tokio::time::advance(Duration::from_secs(10) - PARK_AFTER - 3 * MS).await;
        assert!(read_once(&mut io).is_none());
        tokio::time::advance(3 * MS).await;
        assert_eq!(read_timed_out(&mut io), "header_timeout");
    }

    /// Polls one write of `bytes`: `Ok(n)`, or `Err` with its message;
    /// `None` if it is blocked.
    fn write_once(io: &mut ClientIo<tokio::io::DuplexStream>, bytes: &[u8]) -> Option<Result<usize, String>> {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        match Pin::new(io).poll_write(&mut cx, bytes) {
            Poll::Ready(Ok(n)) => Some(Ok(n)),
            Poll::Ready(Err(e)) => {
                assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
                Some(Err(e.to_string()))
            }
            Poll::Pending => None,
        }
    }

    /// Fills the duplex's 1 KiB until a write blocks.
    fn fill(io: &mut ClientIo<tokio::io::DuplexStream>) {
        let mut written = 0;
        while let Some(r) = write_once(io, &[b'x'; 512]) {
            written += r.expect("not timed out yet");
            assert!(written <= 1024, "the duplex holds 1 KiB");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_is_cut_at_send_timeout() {
        let (mut io, _client, activity) = client_io();
        // In the middle of a request (no read deadline runs then).
        let _busy = ActiveGuard::for_request(&activity, false);
        fill(&mut io);
        tokio::time::advance(TIMEOUTS.send - MS).await;
        assert!(write_once(&mut io, b"more").is_none(), "blocked, not yet timed out");
        tokio::time::advance(MS).await;
        assert_eq!(write_once(&mut io, b"more"), Some(Err("send_timeout".to_string())));
        // A vectored write that stays blocked counts the same way.
        let (mut io, _client, _activity) = client_io();
        fill(&mut io);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(write_once(&mut io, b"x").is_none());
        tokio::time::advance(TIMEOUTS.send).await;
        match Pin::new(&mut io).poll_write_vectored(&mut cx, &[io::IoSlice::new(b"x")]) {
            Poll::Ready(Err(e)) => assert_eq!(e.to_string(), "send_timeout"),
            other => panic!("expected send_timeout, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_client_that_keeps_reading_is_not_cut() {
        let (mut io, mut client, _activity) = client_io();
        // Five times: blocked for three quarters of send_timeout, then the
        // client reads and the write goes on. 3.75 send_timeouts in all.
        for round in 0..5 {
            fill(&mut io);
            tokio::time::advance(TIMEOUTS.send * 3 / 4).await;
            assert!(write_once(&mut io, b"x").is_none(), "round {round}: still blocked, not timed out");
            let mut buf = [0u8; 2048];
            assert!(client.read(&mut buf).await.unwrap() > 0);
            assert!(matches!(write_once(&mut io, b"x"), Some(Ok(1))), "round {round}: the write went on");
        }
    }

    /// A stream like TLS: its flush moves `step` bytes to the socket each
    /// time it is polled and still returns `Pending` (rustls's queue
    /// draining into a slow client's socket).
    struct Trickle {
        moved: u32,
        step: u32,
    }

    impl SocketProgress for Trickle {
        fn socket_bytes(&self) -> u32 {
            self.moved
        }
    }

    impl AsyncWrite for Trickle {
        fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
            Poll::Pending
        }
        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.moved = self.moved.wrapping_add(self.step);
            Poll::Pending
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    fn poll_flush_once(io: &mut ClientIo<Trickle>) -> Poll<io::Result<()>> {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        Pin::new(io).poll_flush(&mut cx)
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_moved_during_a_pending_flush_are_progress() {
        let activity = Arc::new(ConnActivity::default());
        let mut io = ClientIo::new(Trickle { moved: 0, step: 1 }, activity.clone(), TIMEOUTS);
        // Every poll moves bytes: never cut, over five send_timeouts.
        for _ in 0..10 {
            assert!(poll_flush_once(&mut io).is_pending());
            tokio::time::advance(TIMEOUTS.send / 2).await;
        }
        assert!(poll_flush_once(&mut io).is_pending());
        // Nothing moves any more: cut one send_timeout after the last move.
        io.inner.step = 0;
        tokio::time::advance(TIMEOUTS.send - MS).await;
        assert!(poll_flush_once(&mut io).is_pending());
        tokio::time::advance(MS).await;
        match poll_flush_once(&mut io) {
            Poll::Ready(Err(e)) => assert_eq!(e.to_string(), "send_timeout"),
            other => panic!("expected send_timeout, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_shutdown_that_stays_blocked_is_cut_at_send_timeout() {
        // TLS's close_notify waits for the socket like any write.
        let activity = Arc::new(ConnActivity::default());
        let mut io = ClientIo::new(Trickle { moved: 0, step: 0 }, activity.clone(), TIMEOUTS);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut io).poll_shutdown(&mut cx).is_pending());
        tokio::time::advance(TIMEOUTS.send).await;
        match Pin::new(&mut io).poll_shutdown(&mut cx) {
            Poll::Ready(Err(e)) => assert_eq!(e.to_string(), "send_timeout"),
            other => panic!("expected send_timeout, got {other:?}"),
        }
    }
}
