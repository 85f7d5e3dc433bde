//! Body types of the data path, as enums rather than boxed trait objects so
//! that a request allocates nothing for its body plumbing.
//!
//! - [`UpstreamBody`]: what is sent to a server. Small bodies are kept whole
//!   so that a retry can resend them; large ones stream from the client
//!   through a [`StreamSlot`] that can be taken back, untouched, when the
//!   connection to a server failed before any byte was read from it.
//!
//! What goes back to the client is `outbound::response::ProxyBody`.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::proxy::idle_timer::IdleTimer;

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
