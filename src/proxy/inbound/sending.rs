//! A response on its way to a client of the HTTP/1.1 fast path: the head
//! encoded by `wire::response::encode_head`, then the body copied into one
//! write buffer per write (its chunks framed as the head said), so that a
//! small answer leaves in one `write`.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite};

use super::conn::{ClientIo, SocketProgress};
use super::http1::client_gone;
use crate::proxy::outbound::response::{text_response, ProxyBody};
use crate::proxy::wire::chunked;
use crate::proxy::wire::response::{encode_head, SendFraming as Framing};

/// A response body is copied into the write buffer until it holds this
/// much, then written.
const FILL: usize = 64 * 1024;

/// A response on its way to the client.
pub(super) struct Sending {
    /// `None` once it has ended: it is dropped then, before the last bytes
    /// are written (as hyper does), so its guards end the request's
    /// accounting (the server's in-flight count, the connection's activity)
    /// before the client can see the whole answer and send its next
    /// request, perhaps on another connection.
    body: Option<ProxyBody>,
    /// How the body goes out; `Length` counts the bytes still to come.
    framing: Framing,
    /// Encoded bytes not yet written, from `pos`.
    out: Vec<u8>,
    pos: usize,
    /// The connection ends after this response.
    close: bool,
    /// Some of `out` has been written: the client has seen the head.
    started: bool,
}

fn broken(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl Sending {
    /// The service's response, its head encoded (`close`: the connection
    /// ends after it).
    #[inline(always)]
    pub(super) fn answer(response: Response<ProxyBody>, close: bool) -> Self {
        let (parts, body) = response.into_parts();
        let mut out = Vec::with_capacity(256);
        let (framing, close) =
            encode_head(parts.status, &parts.headers, body.size_hint(), body.is_end_stream(), close, &mut out);
        Sending::new(body, framing, out, close)
    }

    /// `out` holds the encoded head. A body that does not go out (204,
    /// 304, a refused status) is not read at all, as with hyper.
    pub(super) fn new(body: ProxyBody, framing: Framing, out: Vec<u8>, close: bool) -> Self {
        let body = (framing != Framing::Empty).then_some(body);
        Sending { body, framing, out, pos: 0, close, started: false }
    }

    /// A plain-text answer of the node's own that ends the connection.
    pub(super) fn refusal(status: http::StatusCode, text: &'static str) -> Self {
        let (parts, body) = text_response(status, text).into_parts();
        let mut out = Vec::with_capacity(160);
        let (framing, _) = encode_head(parts.status, &parts.headers, body.size_hint(), false, true, &mut out);
        Sending::new(body, framing, out, true)
    }

    /// Adds one frame of the body to `out`.
    fn push(&mut self, data: Bytes) -> io::Result<()> {
        match &mut self.framing {
            Framing::Length(left) => {
                let n = data.len() as u64;
                if n > *left {
                    return Err(broken("response body longer than its content-length"));
                }
                *left -= n;
                self.out.extend_from_slice(&data);
            }
            Framing::Chunked if !data.is_empty() => {
                chunked::size_line(data.len(), &mut self.out);
                self.out.extend_from_slice(&data);
                self.out.extend_from_slice(b"\r\n");
            }
            Framing::Chunked | Framing::Empty => {}
        }
        Ok(())
    }

    /// The body ended: it is dropped, and the framing's end goes to `out`.
    fn finish(&mut self) -> io::Result<()> {
        self.body = None;
        match self.framing {
            Framing::Length(left) if left > 0 => Err(broken("response body shorter than its content-length")),
            Framing::Chunked => {
                self.out.extend_from_slice(b"0\r\n\r\n");
                Ok(())
            }
            Framing::Length(_) | Framing::Empty => Ok(()),
        }
    }

    /// Writes the response; `Ok(true)` when it is all sent and the
    /// connection stays open.
    pub(super) fn poll_send<T: AsyncRead + AsyncWrite + Unpin + SocketProgress>(
        &mut self,
        io: &mut ClientIo<T>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<bool>> {
        loop {
            let mut waiting = false;
            while let (true, Some(body)) = (self.out.len() < FILL, self.body.as_mut()) {
                match Pin::new(body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            self.push(data)?;
                        }
                    }
                    Poll::Ready(Some(Err(e))) if !self.started => {
                        // Nothing has reached the client yet (the server's
                        // body failed before the first write): a 502 in
                        // place of the answer, as when the head failed.
                        tracing::debug!(error = %e, "response body failed before any byte was sent: answered 502");
                        crate::metrics::count_response(502);
                        *self = Sending::refusal(
                            http::StatusCode::BAD_GATEWAY,
                            "502 Bad Gateway: the server failed to answer\n",
                        );
                    }
                    // Once the head is out, closing without the body's end
                    // (a short length, no last chunk) is the abort the client
                    // sees.
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(io::Error::other(e))),
                    Poll::Ready(None) => self.finish()?,
                    Poll::Pending => {
                        waiting = true;
                        break;
                    }
                }
            }
            while self.pos < self.out.len() {
                match ready!(Pin::new(&mut *io).poll_write(cx, &self.out[self.pos..])) {
                    Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Ok(n) => {
                        self.pos += n;
                        self.started = true;
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            self.out.clear();
            self.pos = 0;
            let ended = self.body.is_none();
            if ended || waiting {
                // Everything so far leaves now (TLS records included)
                // while the body has nothing more yet.
                ready!(Pin::new(&mut *io).poll_flush(cx))?;
                if ended {
                    return Poll::Ready(Ok(!self.close));
                }
                if client_gone(io, cx) {
                    return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
                }
                return Poll::Pending;
            }
        }
    }
}
