//! HTTP/1.1 on one client connection, with idle connections *parked*.
//!
//! hyper keeps a read buffer, a write buffer and its dispatcher state for
//! as long as its connection lives, about 20 KiB for an idle keep-alive
//! connection. [`Http1Serve`] ends hyper's connection when it has been idle
//! long enough without closing the socket, keeps only the socket and its
//! timers, and starts a new hyper connection when the client sends again.
//! `ClientIo` says when: no request in flight, the response flushed,
//! nothing to read, and idle at once after a pause of a client that has
//! not sent back to back, else for `conn::PARK_AFTER` (so a busy client is
//! not parked and restarted between its requests). The delayed case comes
//! from `ClientIo`'s timer: its wake-up makes hyper read, the read marks the
//! park wanted, and the request is taken here right after hyper's poll.
//! It is a hand-written future rather than an `async fn` so that its
//! parked state is exactly what is listed here (an `async fn` keeps room
//! for every value it ever moved across an await).
//!
//! Called by `listener` once the connection is known to speak HTTP/1.1.
//! The keep-alive, header and shutdown rules are the listener's; this file
//! only carries them across parking.

use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::body::ProxyBody;
use super::closing::{Closing, Slot};
use super::conn::{ClientIo, ConnActivity, ReadReady};

type Conn<I, S> = http1::UpgradeableConnection<TokioIo<ClientIo<I>>, S>;

enum State<I, S: HttpService<Incoming>> {
    /// hyper serves the connection. `parking`: a graceful shutdown was
    /// asked because the connection was idle; `abandoned`: hyper turned out
    /// not to be idle, so this connection is no longer parked.
    Active {
        conn: Box<Conn<I, S>>,
        parking: bool,
        abandoned: bool,
    },
    /// Only the socket (and the service, two `Arc`s) is kept.
    Parked {
        io: ClientIo<I>,
        svc: S,
    },
    Done,
}

/// Serves HTTP/1.1 on `io` until the connection closes; see the module
/// header.
pub struct Http1Serve<I, S: HttpService<Incoming>> {
    state: State<I, S>,
    activity: Arc<ConnActivity>,
    builder: Arc<http1::Builder>,
    closing: Arc<Closing>,
    slot: Slot,
    stopping: bool,
    /// Parks so far, for the tests.
    #[cfg(test)]
    parks: Arc<std::sync::atomic::AtomicU32>,
}

impl<I, S> Http1Serve<I, S>
where
    I: AsyncRead + AsyncWrite + ReadReady + Unpin + Send + 'static,
    S: HttpService<Incoming, ResBody = ProxyBody> + Unpin,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub fn new(
        mut io: ClientIo<I>,
        svc: S,
        activity: Arc<ConnActivity>,
        builder: Arc<http1::Builder>,
        closing: Arc<Closing>,
    ) -> Self {
        io.set_parkable(true);
        let conn = Box::new(builder.serve_connection(TokioIo::new(io), svc).with_upgrades());
        Http1Serve {
            state: State::Active { conn, parking: false, abandoned: false },
            activity,
            builder,
            closing,
            slot: Slot::default(),
            stopping: false,
            #[cfg(test)]
            parks: Default::default(),
        }
    }

    /// hyper's connection finished with `result`: park the socket if this
    /// was a park, else the connection is over.
    fn ended(&mut self, result: hyper::Result<()>) -> Option<hyper::Result<()>> {
        let state = mem::replace(&mut self.state, State::Done);
        self.activity.park_done();
        let State::Active { conn, parking: true, .. } = state else { return Some(result) };
        if result.is_err() {
            return Some(result);
        }
        let Some(parts) = conn.into_parts() else { return Some(result) };
        let mut io = parts.io.into_inner();
        // Part of the next request was already read: it is served first,
        // and the connection is not parked meanwhile.
        io.rewind(parts.read_buf);
        self.state = State::Parked { io, svc: parts.service };
        #[cfg(test)]
        self.parks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        None
    }
}

impl<I, S: HttpService<Incoming>> Drop for Http1Serve<I, S> {
    fn drop(&mut self) {
        self.closing.leave(&mut self.slot);
    }
}

impl<I, S> Future for Http1Serve<I, S>
where
    I: AsyncRead + AsyncWrite + ReadReady + Unpin + Send + 'static,
    S: HttpService<Incoming, ResBody = ProxyBody> + Unpin,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Output = hyper::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
        let this = self.get_mut();
        if !this.stopping && this.closing.poll(&mut this.slot, cx) {
            this.stopping = true;
            match &mut this.state {
                // Finish the request in flight, then close.
                State::Active { conn, .. } => Pin::new(&mut **conn).graceful_shutdown(),
                State::Parked { .. } => this.state = State::Done,
                State::Done => {}
            }
        }
        loop {
            match &mut this.state {
                State::Done => return Poll::Ready(Ok(())),
                State::Parked { io, .. } => {
                    if !io.has_rewound() {
                        match io.poll_parked(cx) {
                            Poll::Pending => return Poll::Pending,
                            Poll::Ready(Ok(())) => {}
                            Poll::Ready(Err(e)) => {
                                // keepalive_timeout, or the socket failed.
                                tracing::trace!(error = %e, "parked connection closed");
                                this.state = State::Done;
                                return Poll::Ready(Ok(()));
                            }
                        }
                    }
                    let State::Parked { io, svc } = mem::replace(&mut this.state, State::Done) else {
                        unreachable!("matched Parked above")
                    };
                    let conn = Box::new(this.builder.serve_connection(TokioIo::new(io), svc).with_upgrades());
                    this.state = State::Active { conn, parking: false, abandoned: false };
                }
                State::Active { conn, parking, abandoned } => {
                    if let Poll::Ready(r) = Pin::new(&mut **conn).poll(cx) {
                        match this.ended(r) {
                            Some(r) => return Poll::Ready(r),
                            None => continue,
                        }
                    }
                    if this.stopping || *abandoned || !this.activity.take_park_request() {
                        return Poll::Pending;
                    }
                    // hyper waits for a next request with nothing left to
                    // send: a graceful shutdown ends an idle connection at
                    // once, and `ClientIo` keeps the socket open.
                    Pin::new(&mut **conn).graceful_shutdown();
                    match Pin::new(&mut **conn).poll(cx) {
                        Poll::Ready(r) => {
                            *parking = true;
                            match this.ended(r) {
                                Some(r) => return Poll::Ready(r),
                                None => continue,
                            }
                        }
                        Poll::Pending => {
                            // Not idle after all: hyper closes the
                            // connection after its exchange, as asked.
                            *abandoned = true;
                            this.activity.park_done();
                            return Poll::Pending;
                        }
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

    use hyper::service::service_fn;
    use hyper_util::rt::TokioTimer;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::proxy::conn::{ActiveGuard, PARK_AFTER};

    /// A client connected to an [`Http1Serve`] that answers "ok" to every
    /// request, and the count of its parks.
    async fn serve() -> (TcpStream, Arc<AtomicU32>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (socket, _) = listener.accept().await.unwrap();
        let activity = Arc::new(ConnActivity::default());
        let io = ClientIo::new(socket, activity.clone(), Duration::from_secs(10), Duration::from_secs(60));
        let act = activity.clone();
        let svc = service_fn(move |req: hyper::Request<Incoming>| {
            // As the listener's service: busy until the response is sent.
            let guard = ActiveGuard::for_request(&act, !hyper::body::Body::is_end_stream(req.body()));
            let mut body = ProxyBody::full("ok");
            body.set_guard(guard);
            async move { Ok::<_, Infallible>(hyper::Response::new(body)) }
        });
        let mut builder = http1::Builder::new();
        builder.keep_alive(true).header_read_timeout(None).timer(TokioTimer::new());
        let serve = Http1Serve::new(io, svc, activity, Arc::new(builder), Arc::new(Closing::default()));
        let parks = serve.parks.clone();
        tokio::spawn(serve);
        (client, parks)
    }

    async fn request(client: &mut TcpStream) {
        client.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while !got.ends_with(b"\r\n\r\nok") {
            let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0, "closed; got {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&got));
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
        request(&mut client).await;
        // A first pause: parked at once, well before PARK_AFTER.
        assert!(parks_reach(&parks, 1, PARK_AFTER / 2).await, "the first pause was not parked at once");
        // Back to back: never parked between these requests.
        let mut last_sent = Instant::now();
        for _ in 0..50 {
            // Before the request: the connection goes idle after this.
            last_sent = Instant::now();
            request(&mut client).await;
        }
        assert_eq!(parks.load(Ordering::Relaxed), 1, "parked between back-to-back requests");
        // Idle: parked once PARK_AFTER has passed (the timer's wake-up
        // makes hyper read, the read asks to park), and not before.
        assert!(parks_reach(&parks, 2, PARK_AFTER * 3).await, "an idle connection was never parked");
        assert!(last_sent.elapsed() >= PARK_AFTER, "parked after {:?}", last_sent.elapsed());
        // Served on a new hyper connection; after that long pause the
        // client is no longer taken as back to back: parked at once again.
        request(&mut client).await;
        assert!(parks_reach(&parks, 3, PARK_AFTER / 2).await, "not parked at once after a long pause");
    }
}
