//! HTTP/1.1 on one client connection, with idle connections *parked*.
//!
//! hyper keeps a read buffer, a write buffer and its dispatcher state for
//! as long as its connection lives, about 20 KiB for an idle keep-alive
//! connection. [`Http1Serve`] ends hyper's connection whenever it is idle
//! (`ClientIo` says when: no request in flight, the response flushed,
//! nothing to read) without closing the socket, keeps only the socket and
//! its timers, and starts a new hyper connection when the client sends
//! again. It is a hand-written future rather than an `async fn` so that
//! its parked state is exactly what is listed here (an `async fn` keeps
//! room for every value it ever moved across an await).
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
use super::conn::{ClientIo, ConnActivity, ReadReady};

/// Resolves when the node starts shutting down.
pub type ShutdownSignal = Pin<Box<dyn Future<Output = ()> + Send>>;

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
    shutdown: ShutdownSignal,
    stopping: bool,
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
        shutdown: ShutdownSignal,
    ) -> Self {
        io.set_parkable(true);
        let conn = Box::new(builder.serve_connection(TokioIo::new(io), svc).with_upgrades());
        Http1Serve {
            state: State::Active { conn, parking: false, abandoned: false },
            activity,
            builder,
            shutdown,
            stopping: false,
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
        None
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
        if !this.stopping && this.shutdown.as_mut().poll(cx).is_ready() {
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
