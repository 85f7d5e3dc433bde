//! HTTP/1.1 on one client connection: the fast path, hyper, and parking.
//!
//! Between requests [`Http1Serve`] holds only the socket (in `ClientIo`,
//! with its timers) and the service. It reads the next request head itself
//! into a buffer on the stack: a body-less `GET` that `wire::request::parse`
//! takes is served here (the service's future, then the response written
//! with `wire::response::encode_head`, the body copied into one buffer per
//! write); a head that breaks the framing rules is answered 400 here; any
//! other request starts a hyper connection with the bytes already read.
//!
//! hyper keeps a read buffer, a write buffer and its dispatcher state for
//! as long as its connection lives, about 20 KiB for an idle keep-alive
//! connection. [`Http1Serve`] ends hyper's connection when it has been idle
//! long enough without closing the socket, and goes back to reading heads
//! itself. `ClientIo` says when: no request in flight, the response
//! flushed, nothing to read, and idle at once after a pause of a client
//! that has not sent back to back, else for `conn::PARK_AFTER` (so a busy
//! client is not parked and restarted between its requests). The delayed
//! case comes from `ClientIo`'s timer: its wake-up makes hyper read, the
//! read marks the park wanted, and the request is taken here right after
//! hyper's poll. The same signal frees the fast path's request future
//! (kept from one request to the next while the client is busy).
//! It is a hand-written future rather than an `async fn` so that its
//! idle state is exactly what is listed here (an `async fn` keeps room
//! for every value it ever moved across an await).
//!
//! Called by `listener` once the connection is known to speak HTTP/1.1.
//! The keep-alive, header and shutdown rules are the listener's; this file
//! only carries them across parking.

use std::future::Future;
use std::io;
use std::mem::{self, MaybeUninit};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{Request, Response};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::closing::{Closing, Slot};
use super::conn::{ClientIo, SocketProgress};
use super::sending::Sending;
use crate::proxy::activity::ConnActivity;
use crate::proxy::body::ClientBody;
use crate::proxy::outbound::response::ProxyBody;
use crate::proxy::wire::request::{self as wire_request, Parsed};
use crate::proxy::wire::{report_request, RequestFault};

/// The service of a connection's requests, whoever parsed them.
pub trait RequestService:
    Service<Request<ClientBody>, Response = Response<ProxyBody>, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
{
}
impl<T> RequestService for T where
    T: Service<
        Request<ClientBody>,
        Response = Response<ProxyBody>,
        Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    >
{
}

/// A [`RequestService`] as hyper's service: hyper's body becomes
/// [`ClientBody::Hyper`].
#[derive(Clone)]
pub struct ViaHyper<S>(pub S);

impl<S: RequestService> Service<Request<Incoming>> for ViaHyper<S> {
    type Response = Response<ProxyBody>;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, req: Request<Incoming>) -> S::Future {
        self.0.call(req.map(ClientBody::Hyper))
    }
}

/// HTTP/1.1 settings of a listener.
pub struct Http1Config {
    /// For the requests hyper serves.
    pub hyper: http1::Builder,
    /// `limits.max_header_size`: the fast path takes heads up to this size
    /// (and at most [`HEAD_BUF`]).
    pub max_head: usize,
}

/// The fast path reads a request head into a buffer of this size on the
/// stack; longer heads go to hyper.
const HEAD_BUF: usize = 4096;

type Conn<I, S> = http1::UpgradeableConnection<TokioIo<ClientIo<I>>, ViaHyper<S>>;

enum State<I, S: RequestService> {
    /// hyper serves the connection. `parking`: a graceful shutdown was
    /// asked because the connection was idle; `abandoned`: hyper turned out
    /// not to be idle, so this connection is no longer parked.
    Active {
        conn: Box<Conn<I, S>>,
        parking: bool,
        abandoned: bool,
    },
    /// Between requests (or parked): only the socket and the service (two
    /// `Arc`s) are kept; the next head is read by the fast path.
    Parked {
        io: ClientIo<I>,
        svc: S,
    },
    /// A request taken by the fast path, until its response is sent: the
    /// service's future (in [`Http1Serve::fut`]) until it answers, then
    /// `sending`.
    Exchange {
        io: ClientIo<I>,
        svc: S,
        sending: Option<Box<Sending>>,
    },
    /// Closing the connection: after a response that ends it, at
    /// `keepalive_timeout` or `header_timeout`, or at shutdown.
    Closing {
        io: ClientIo<I>,
    },
    Done,
}

impl<I, S: RequestService> State<I, S> {
    /// A parked connection goes to `Closing` (one polite shutdown attempt);
    /// any other state ends.
    fn close_parked(&mut self) {
        if let State::Parked { io, .. } = mem::replace(self, State::Done) {
            *self = State::Closing { io };
        }
    }
}

/// The service's future of the fast path's current request, in an
/// allocation kept for the connection's next request while the client
/// sends back to back (see [`Http1Serve::fut`]).
type FutSlot<F> = Option<Pin<Box<Option<F>>>>;

/// While a fast-path request is in flight: true if the client closed its
/// side or the socket failed, so the exchange (and the request to the
/// server) is dropped, as hyper does. Bytes that arrive meanwhile (the
/// next, pipelined request) are kept for the next head.
pub(super) fn client_gone<T: AsyncRead + Unpin>(io: &mut ClientIo<T>, cx: &mut Context<'_>) -> bool {
    if io.has_rewound() {
        return false;
    }
    let mut storage = [MaybeUninit::<u8>::uninit(); HEAD_BUF];
    let mut buf = ReadBuf::uninit(&mut storage);
    match Pin::new(&mut *io).poll_read(cx, &mut buf) {
        Poll::Pending => false,
        Poll::Ready(Ok(())) if buf.filled().is_empty() => true,
        Poll::Ready(Ok(())) => {
            io.rewind(Bytes::copy_from_slice(buf.filled()));
            false
        }
        Poll::Ready(Err(_)) => true,
    }
}

/// Serves HTTP/1.1 on `io` until the connection closes; see the module
/// header.
pub struct Http1Serve<I, S: RequestService> {
    state: State<I, S>,
    /// The request future of the fast path. It is several KiB, too large
    /// for the allocator's per-thread cache, so its allocation is reused
    /// from one request to the next, and given back when the connection
    /// goes idle the way hyper's connection is parked (at once after the
    /// first pause, else after `conn::PARK_AFTER` of idleness).
    fut: FutSlot<S::Future>,
    activity: Arc<ConnActivity>,
    config: Arc<Http1Config>,
    closing: Arc<Closing>,
    slot: Slot,
    stopping: bool,
    /// The client's address, for the log of a refused request.
    client: std::net::IpAddr,
    /// Parks so far, for the tests.
    #[cfg(test)]
    parks: Arc<std::sync::atomic::AtomicU32>,
}

impl<I, S> Http1Serve<I, S>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static + SocketProgress,
    S: RequestService + Clone + Unpin + Send + 'static,
    S::Future: Send + 'static,
{
    pub fn new(
        mut io: ClientIo<I>,
        svc: S,
        activity: Arc<ConnActivity>,
        config: Arc<Http1Config>,
        closing: Arc<Closing>,
        client: std::net::IpAddr,
    ) -> Self {
        io.set_parkable(true);
        Http1Serve {
            state: State::Parked { io, svc },
            fut: None,
            activity,
            config,
            closing,
            slot: Slot::default(),
            stopping: false,
            client,
            #[cfg(test)]
            parks: Default::default(),
        }
    }

    /// hyper serves the connection from here, starting with `read` (bytes
    /// already read from it).
    fn start_hyper(&mut self, mut io: ClientIo<I>, svc: S, read: &[u8]) {
        io.rewind(Bytes::copy_from_slice(read));
        // A park asked for while the fast path waited is not hyper's.
        self.activity.park_done();
        let conn = Box::new(self.config.hyper.serve_connection(TokioIo::new(io), ViaHyper(svc)).with_upgrades());
        self.state = State::Active { conn, parking: false, abandoned: false };
    }

    /// hyper's connection finished with `result`: park the socket if this
    /// was a park, else the connection is over.
    fn ended(&mut self, result: hyper::Result<()>) -> Option<hyper::Result<()>> {
        let state = mem::replace(&mut self.state, State::Done);
        self.activity.park_done();
        if let Err(e) = &result {
            // A head hyper refused (later requests of a connection it
            // serves): counted and logged like the fast path's refusals.
            if e.is_parse_too_large() {
                report_request(RequestFault::TooLarge, Some(self.client), e);
            } else if e.is_parse() {
                report_request(RequestFault::Hyper, Some(self.client), e);
            }
        }
        let State::Active { conn, parking: true, .. } = state else { return Some(result) };
        if result.is_err() {
            return Some(result);
        }
        let Some(parts) = conn.into_parts() else { return Some(result) };
        let mut io = parts.io.into_inner();
        // Part of the next request was already read: it is served first.
        io.rewind(parts.read_buf);
        self.state = State::Parked { io, svc: parts.service.0 };
        #[cfg(test)]
        self.parks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        None
    }

    /// Reads the next request head on a connection between requests:
    /// `Ready` when the state changed (a fast-path exchange, hyper, or the
    /// end), `Pending` while nothing arrived.
    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let State::Parked { io, .. } = &mut self.state else { return Poll::Ready(()) };
        let mut storage = [MaybeUninit::<u8>::uninit(); HEAD_BUF];
        let mut buf = ReadBuf::uninit(&mut storage);
        let max_head = self.config.max_head.min(HEAD_BUF);
        let parsed = loop {
            let before = buf.filled().len();
            match Pin::new(&mut *io).poll_read(cx, &mut buf) {
                // Part of a head and no more yet: hyper goes on with it
                // (header_timeout runs since its first byte).
                Poll::Pending if before > 0 => break Parsed::Hyper,
                Poll::Pending => {
                    if self.activity.take_park_request() {
                        // Idle long enough: give back the request future's
                        // allocation.
                        self.fut = None;
                        self.activity.park_done();
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => {
                    // keepalive_timeout or header_timeout: closed politely
                    // (FIN, and close_notify over TLS); or the socket failed.
                    tracing::trace!(error = %e, "idle connection closed");
                    if e.kind() == io::ErrorKind::TimedOut {
                        self.state.close_parked();
                    } else {
                        self.state = State::Done;
                    }
                    return Poll::Ready(());
                }
                Poll::Ready(Ok(())) if buf.filled().len() == before => {
                    // The client closed (perhaps in the middle of a head,
                    // which hyper would only report the same way).
                    self.state = State::Done;
                    return Poll::Ready(());
                }
                Poll::Ready(Ok(())) => match wire_request::parse(buf.filled(), max_head) {
                    Parsed::Partial => continue,
                    parsed => break parsed,
                },
            }
        };
        let State::Parked { io, svc } = mem::replace(&mut self.state, State::Done) else {
            unreachable!("matched Parked above")
        };
        match parsed {
            Parsed::Request(req) => {
                let fut = svc.call(req);
                match &mut self.fut {
                    Some(slot) => slot.set(Some(fut)),
                    None => self.fut = Some(Box::pin(Some(fut))),
                }
                self.state = State::Exchange { io, svc, sending: None };
            }
            Parsed::Malformed(fault) => {
                // Counted and answered like the service's own errors; the
                // connection closes after the answer.
                crate::metrics::count_response(400);
                let text = wire_request::refusal_text(fault);
                report_request(fault, Some(self.client), &text.trim_end());
                let sending = Sending::refusal(http::StatusCode::BAD_REQUEST, text);
                self.state = State::Exchange { io, svc, sending: Some(Box::new(sending)) };
            }
            _ => self.start_hyper(io, svc, buf.filled()),
        }
        Poll::Ready(())
    }

    /// A fast-path exchange: the service's answer, then its bytes to the
    /// client; `Ready` when the state changed (the next head, closing, or
    /// the end).
    fn poll_exchange(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let State::Exchange { io, sending, .. } = &mut self.state else { return Poll::Ready(()) };
        let sent = loop {
            match sending {
                Some(sending) => break ready!(sending.poll_send(io, cx)),
                None => match ready!(poll_answer::<I, S>(&mut self.fut, io, cx)) {
                    Ok(response) => *sending = Some(Box::new(Sending::answer(response, self.stopping))),
                    Err(e) => break Err(e),
                },
            }
        };
        let State::Exchange { io, svc, .. } = mem::replace(&mut self.state, State::Done) else {
            unreachable!("matched Exchange above")
        };
        self.state = match sent {
            Ok(true) if !self.stopping => State::Parked { io, svc },
            Ok(_) => State::Closing { io },
            Err(e) => {
                tracing::debug!(error = %e, "client connection ended with an error");
                State::Done
            }
        };
        Poll::Ready(())
    }

    /// hyper serves the connection: `Ready(Some(result))` when it is over,
    /// `Ready(None)` when it was parked (the state changed).
    fn poll_active(&mut self, cx: &mut Context<'_>) -> Poll<Option<hyper::Result<()>>> {
        let State::Active { conn, parking, abandoned } = &mut self.state else { return Poll::Ready(None) };
        if let Poll::Ready(r) = Pin::new(&mut **conn).poll(cx) {
            return Poll::Ready(self.ended(r));
        }
        if self.stopping || *abandoned || !self.activity.take_park_request() {
            return Poll::Pending;
        }
        // hyper waits for a next request with nothing left to send: a
        // graceful shutdown ends an idle connection at once, and `ClientIo`
        // keeps the socket open.
        Pin::new(&mut **conn).graceful_shutdown();
        match Pin::new(&mut **conn).poll(cx) {
            Poll::Ready(r) => {
                *parking = true;
                Poll::Ready(self.ended(r))
            }
            Poll::Pending => {
                // Not idle after all: hyper closes the connection after
                // its exchange, as asked.
                *abandoned = true;
                self.activity.park_done();
                Poll::Pending
            }
        }
    }
}

/// The service's answer to a fast-path request; an error if it gave none
/// (it closes the connection, as hyper does with a service error) or the
/// client left before it.
#[inline(always)]
fn poll_answer<I, S>(
    fut: &mut FutSlot<S::Future>,
    io: &mut ClientIo<I>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<Response<ProxyBody>>>
where
    I: AsyncRead + Unpin,
    S: RequestService,
{
    let Some(mut pending) = fut.as_mut().and_then(|f| f.as_mut().as_pin_mut()) else {
        unreachable!("an exchange without a response has its future")
    };
    let answer = match pending.as_mut().poll(cx) {
        Poll::Ready(answer) => Some(answer),
        Poll::Pending if client_gone(io, cx) => None,
        Poll::Pending => return Poll::Pending,
    };
    if let Some(f) = fut.as_mut() {
        f.set(None);
    }
    Poll::Ready(match answer {
        Some(Ok(response)) => Ok(response),
        Some(Err(e)) => Err(io::Error::other(e.into())),
        None => Err(io::Error::new(io::ErrorKind::ConnectionAborted, "client closed the connection before the answer")),
    })
}

impl<I, S: RequestService> Drop for Http1Serve<I, S> {
    fn drop(&mut self) {
        self.closing.leave(&mut self.slot);
    }
}

impl<I, S> Future for Http1Serve<I, S>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static + SocketProgress,
    S: RequestService + Clone + Unpin + Send + 'static,
    S::Future: Send + 'static,
{
    type Output = hyper::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
        let this = self.get_mut();
        if !this.stopping && this.closing.poll(&mut this.slot, cx) {
            this.stopping = true;
            match &mut this.state {
                // Finish the request in flight, then close.
                State::Active { conn, .. } => Pin::new(&mut **conn).graceful_shutdown(),
                State::Parked { .. } => this.state.close_parked(),
                State::Exchange { .. } | State::Closing { .. } | State::Done => {}
            }
        }
        loop {
            match &mut this.state {
                State::Done => return Poll::Ready(Ok(())),
                State::Parked { .. } => ready!(this.poll_head(cx)),
                State::Exchange { .. } => ready!(this.poll_exchange(cx)),
                State::Closing { io } => {
                    // One attempt, never a wait: a client that stopped
                    // reading must not keep the connection (no timer runs
                    // here). Plain TCP shuts down at once; a TLS
                    // close_notify that does not fit is dropped.
                    let _ = Pin::new(io).poll_shutdown(cx);
                    this.state = State::Done;
                }
                State::Active { .. } => {
                    if let Some(result) = ready!(this.poll_active(cx)) {
                        return Poll::Ready(result);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    use http_body::Body as _;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioTimer;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::proxy::activity::ActiveGuard;
    use crate::proxy::inbound::conn::{ClientTimeouts, PARK_AFTER};

    /// A client connected to an [`Http1Serve`] that answers "ok" to every
    /// request, and the count of its parks.
    async fn serve() -> (TcpStream, Arc<AtomicU32>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (socket, _) = listener.accept().await.unwrap();
        let activity = Arc::new(ConnActivity::default());
        let timeouts = ClientTimeouts::of(&crate::config::default_config().unwrap().limits);
        let io = ClientIo::new(socket, activity.clone(), timeouts);
        let act = activity.clone();
        let svc = service_fn(move |req: hyper::Request<ClientBody>| {
            // As the listener's service: busy until the response is sent.
            let guard = ActiveGuard::for_request(&act, !req.body().is_end_stream());
            let mut body = ProxyBody::full("ok");
            body.set_guard(guard);
            async move { Ok::<_, Infallible>(hyper::Response::new(body)) }
        });
        let mut builder = http1::Builder::new();
        builder.keep_alive(true).header_read_timeout(None).timer(TokioTimer::new());
        let config = Arc::new(Http1Config { hyper: builder, max_head: 8192 });
        let serve =
            Http1Serve::new(io, svc, activity, config, Arc::new(Closing::default()), "127.0.0.1".parse().unwrap());
        let parks = serve.parks.clone();
        tokio::spawn(serve);
        (client, parks)
    }

    /// A request hyper serves (the fast path leaves requests with a
    /// `Connection` field to hyper).
    const VIA_HYPER: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: keep-alive\r\n\r\n";
    /// A request the fast path serves.
    const FAST: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";

    async fn request(client: &mut TcpStream, req: &[u8]) {
        client.write_all(req).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while !got.ends_with(b"\r\n\r\nok") {
            let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0, "closed; got {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        assert!(
            got.starts_with(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ndate: "),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
    }

    /// Waits up to `within` for `parks` to reach `n`; false if it did not.
    async fn parks_reach(parks: &AtomicU32, n: u32, within: Duration) -> bool {
        let until = Instant::now() + within;
        while parks.load(Ordering::Relaxed) < n {
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    #[tokio::test]
    async fn a_back_to_back_client_is_parked_only_after_park_after() {
        let (mut client, parks) = serve().await;
        request(&mut client, VIA_HYPER).await;
        // A first pause: parked at once, well before PARK_AFTER.
        assert!(parks_reach(&parks, 1, PARK_AFTER / 2).await, "the first pause was not parked at once");
        // Back to back: never parked between these requests.
        let mut last_sent = Instant::now();
        for _ in 0..50 {
            // Before the request: the connection goes idle after this.
            last_sent = Instant::now();
            request(&mut client, VIA_HYPER).await;
        }
        assert_eq!(parks.load(Ordering::Relaxed), 1, "parked between back-to-back requests");
        // Idle: parked once PARK_AFTER has passed (the timer's wake-up
        // makes hyper read, the read asks to park), and not before.
        assert!(parks_reach(&parks, 2, PARK_AFTER * 3).await, "an idle connection was never parked");
        assert!(last_sent.elapsed() >= PARK_AFTER, "parked after {:?}", last_sent.elapsed());
        // Served on a new hyper connection; after that long pause the
        // client is no longer taken as back to back: parked at once again.
        request(&mut client, VIA_HYPER).await;
        assert!(parks_reach(&parks, 3, PARK_AFTER / 2).await, "not parked at once after a long pause");
    }

    #[tokio::test]
    async fn fast_path_requests_never_start_hyper() {
        let (mut client, parks) = serve().await;
        for _ in 0..20 {
            request(&mut client, FAST).await;
        }
        // Sent in two pieces: the fast path waits for the rest of the head.
        client.write_all(&FAST[..7]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        request(&mut client, &FAST[7..]).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(parks.load(Ordering::Relaxed), 0, "hyper served a fast-path request");
        // A request for hyper, then fast ones again once hyper is parked
        // (after PARK_AFTER: the client has been sending back to back).
        request(&mut client, VIA_HYPER).await;
        assert!(parks_reach(&parks, 1, PARK_AFTER * 3).await, "hyper's connection was not parked");
        for _ in 0..5 {
            request(&mut client, FAST).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(parks.load(Ordering::Relaxed), 1);
    }
}
