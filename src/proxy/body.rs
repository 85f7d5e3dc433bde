//! Body types of the data path, as enums rather than boxed trait objects so
//! that a request allocates nothing for its body plumbing.
//!
//! - [`UpstreamBody`]: what is sent to a server. Small bodies are kept whole
//!   so that a retry can resend them; large ones stream from the client
//!   through a [`StreamSlot`] that can be taken back, untouched, when the
//!   connection to a server failed before any byte was read from it.
//! - [`ProxyBody`]: what is sent to the client: a server's streamed body, a
//!   fixed body, or a file; it holds the connection's activity guard so the
//!   idle timer restarts only when the response is done.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::io::AsyncRead;

use super::conn::ActiveGuard;
use super::forward::InFlight;
use super::h1client::ServerBody;
use super::idle_timer::IdleTimer;

/// Errors a body can yield.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body is larger than max_body ({0} bytes)")]
    TooLarge(u64),
    #[error("client body: {0}")]
    Client(#[from] hyper::Error),
    #[error("reading file: {0}")]
    File(#[from] std::io::Error),
    #[error("request body was already taken")]
    Taken,
    #[error("the client sent no body data for {0:?} (body_timeout)")]
    ClientTimeout(Duration),
    #[error("the server sent nothing for {0:?} (read_timeout)")]
    ReadTimeout(Duration),
    #[error("server body: {0}")]
    Server(std::io::Error),
}

/// A client's request body: hyper's (HTTP/2, and HTTP/1.1 requests hyper
/// parsed), or none at all (the body-less requests the fast path parses itself).
#[derive(Debug)]
pub enum ClientBody {
    Empty,
    Hyper(Incoming),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::Hyper(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::Hyper(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::Hyper(b) => b.size_hint(),
        }
    }
}

/// A client request body counted against `max_body`.
pub struct LimitedIncoming {
    inner: ClientBody,
    seen: u64,
    limit: u64,
    /// The client must keep sending: `body_timeout` between two reads.
    idle: IdleTimer,
    /// Set when the limit was crossed, so the proxy answers 413 rather than
    /// reporting an upstream failure.
    exceeded: Arc<AtomicBool>,
}

impl LimitedIncoming {
    pub fn new(inner: ClientBody, limit: u64, body_timeout: Duration, exceeded: Arc<AtomicBool>) -> Self {
        LimitedIncoming { inner, seen: 0, limit, idle: IdleTimer::new(body_timeout), exceeded }
    }
}

impl Body for LimitedIncoming {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if polled.is_ready() {
            this.idle.progressed();
        }
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if this.seen > this.limit {
                        this.exceeded.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(BodyError::TooLarge(this.limit))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Client(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending if this.idle.expired(cx) => {
                Poll::Ready(Some(Err(BodyError::ClientTimeout(this.idle.after()))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A streamed client body that can be taken back while no frame of it has
/// been read, so a failed connect can be retried on another server.
#[derive(Clone)]
pub struct StreamSlot {
    body: Arc<Mutex<Option<LimitedIncoming>>>,
    touched: Arc<AtomicBool>,
    /// Set when the whole body has been handed to the server connection.
    finished: Arc<AtomicBool>,
    hint: SizeHint,
}

impl StreamSlot {
    pub fn new(body: LimitedIncoming) -> Self {
        let hint = body.size_hint();
        StreamSlot {
            body: Arc::new(Mutex::new(Some(body))),
            touched: Arc::new(AtomicBool::new(false)),
            finished: Arc::new(AtomicBool::new(false)),
            hint,
        }
    }

    /// Whether the whole body has been sent on.
    pub fn finished(&self) -> bool {
        self.finished.load(Ordering::Relaxed)
    }

    /// Whether any part of the body has been read (and so may have reached a
    /// server).
    pub fn touched(&self) -> bool {
        self.touched.load(Ordering::Relaxed)
    }
}

/// A request body on its way to a server.
pub enum UpstreamBody {
    Empty,
    Full(Option<Bytes>),
    Stream(StreamSlot),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            UpstreamBody::Empty => Poll::Ready(None),
            UpstreamBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            UpstreamBody::Stream(slot) => {
                let mut guard = slot.body.lock().unwrap_or_else(|e| e.into_inner());
                let Some(body) = guard.as_mut() else {
                    return Poll::Ready(Some(Err(BodyError::Taken)));
                };
                let r = Pin::new(body).poll_frame(cx);
                match &r {
                    Poll::Ready(Some(_)) => slot.touched.store(true, Ordering::Relaxed),
                    Poll::Ready(None) => slot.finished.store(true, Ordering::Relaxed),
                    Poll::Pending => {}
                }
                r
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Empty => true,
            UpstreamBody::Full(b) => b.is_none(),
            UpstreamBody::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Empty => SizeHint::with_exact(0),
            UpstreamBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            UpstreamBody::Stream(s) => s.hint,
        }
    }
}

impl UpstreamBody {
    /// The body for another attempt: the same bytes, or the same stream
    /// (usable only while none of it was read).
    pub fn again(&self) -> UpstreamBody {
        match self {
            UpstreamBody::Empty => UpstreamBody::Empty,
            UpstreamBody::Full(b) => UpstreamBody::Full(b.clone()),
            UpstreamBody::Stream(s) => UpstreamBody::Stream(s.clone()),
        }
    }
}

/// A response body on its way to the client.
pub struct ProxyBody {
    kind: Kind,
    _active: Option<ActiveGuard>,
    _in_flight: Option<InFlight>,
}

enum Kind {
    Empty,
    Full(Option<Bytes>),
    Upstream(ServerBody),
    File(FileBody),
}

pub struct FileBody {
    file: tokio::fs::File,
    remaining: u64,
    buf: BytesMut,
}

const FILE_CHUNK: usize = 64 * 1024;

impl ProxyBody {
    pub fn empty() -> Self {
        ProxyBody { kind: Kind::Empty, _active: None, _in_flight: None }
    }
    pub fn full(b: impl Into<Bytes>) -> Self {
        ProxyBody { kind: Kind::Full(Some(b.into())), _active: None, _in_flight: None }
    }
    /// A server's response body (it fails if the server sends nothing for
    /// `read_timeout`, nginx's `proxy_read_timeout`, between two reads).
    pub fn upstream(body: ServerBody) -> Self {
        ProxyBody { kind: Kind::Upstream(body), _active: None, _in_flight: None }
    }
    pub fn file(file: tokio::fs::File, len: u64) -> Self {
        ProxyBody {
            kind: Kind::File(FileBody { file, remaining: len, buf: BytesMut::new() }),
            _active: None,
            _in_flight: None,
        }
    }
    /// Counts the request as in flight to its server until the body is done.
    pub fn with_in_flight(mut self, in_flight: InFlight) -> Self {
        self._in_flight = Some(in_flight);
        self
    }
    /// Attaches the connection's activity guard: the connection counts as
    /// busy until this body is finished or dropped.
    pub fn set_guard(&mut self, guard: ActiveGuard) {
        self._active = Some(guard);
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match &mut this.kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(body) => Pin::new(body).poll_frame(cx),
            Kind::File(f) => f.poll_chunk(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(b) => b.is_none(),
            Kind::Upstream(b) => b.is_end_stream(),
            Kind::File(f) => f.remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream(b) => b.size_hint(),
            Kind::File(f) => SizeHint::with_exact(f.remaining),
        }
    }
}

impl FileBody {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = (self.remaining as usize).min(FILE_CHUNK);
        if self.buf.capacity() < want {
            self.buf.reserve(want);
        }
        // Safe API only: grow the buffer with zeros, read into it, trim.
        self.buf.resize(want, 0);
        let mut read_buf = tokio::io::ReadBuf::new(&mut self.buf[..want]);
        match Pin::new(&mut self.file).poll_read(cx, &mut read_buf) {
            Poll::Pending => {
                self.buf.clear();
                Poll::Pending
            }
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(BodyError::File(e)))),
            Poll::Ready(Ok(())) => {
                let n = read_buf.filled().len();
                if n == 0 {
                    // The file shrank while being sent: end the body short so
                    // the client sees a truncated response, not a hang.
                    self.remaining = 0;
                    return Poll::Ready(Some(Err(BodyError::File(std::io::ErrorKind::UnexpectedEof.into()))));
                }
                self.remaining -= n as u64;
                self.buf.truncate(n);
                Poll::Ready(Some(Ok(Frame::data(self.buf.split().freeze()))))
            }
        }
    }
}
