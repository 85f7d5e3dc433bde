//! What the client gets back: [`ProxyBody`], a response body that is a
//! server's streamed body, a fixed body or a file, and holds the
//! connection's activity guard (the idle timer restarts only when the
//! response is done) and the request's [`InFlight`] count; and
//! [`text_response`] for the node's own short answers.

use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncRead;

use super::h1client::ServerBody;
use crate::proxy::activity::ActiveGuard;
use crate::proxy::body::BodyError;

/// Counts a request as in flight to a server until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicU32>);

impl InFlight {
    pub(super) fn new(counter: &Arc<AtomicU32>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
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

/// A fixed plain-text response.
pub fn text_response(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}
