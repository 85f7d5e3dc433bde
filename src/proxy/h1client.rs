//! HTTP/1.1 to servers, driven inside the client's request instead of by
//! hyper's client.
//!
//! hyper's client runs every server connection as its own task and hands
//! each request, response head and body chunk across channels between that
//! task and the request's. On a proxy that is most of the user-space work
//! per request (BENCHMARKS.md, "Own HTTP/1.1 to servers"). Here the request
//! future writes the request itself, reads and parses the response head
//! (`httparse`, as hyper does), and the response body is decoded from the
//! socket by the body the client connection polls: no task, no channel, no
//! waker hand-off, and the request head is encoded once for all attempts.
//!
//! An idle server connection is only its socket (no buffers): the read
//! buffer lives from the request's write to the end of its response body,
//! and the connection goes back to its pool the moment the body's last byte
//! is read.
//!
//! Framing follows RFC 9112 §6: no body for HEAD, 1xx, 204 and 304;
//! `Transfer-Encoding` (chunked last, else read to close) before
//! `Content-Length` (repeated values must agree); otherwise read to close.
//! A response with both, or read to close, or `Connection: close`, or
//! HTTP/1.0 without keep-alive, is never reused.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::body::{BodyError, UpstreamBody};
use super::headers::{fold_content_length, BadContentLength, Forwarded};
use super::idle_timer::IdleTimer;
use super::upstream::ServerPool;
use super::upstream_io::ServerIo;

/// Largest response head accepted (status line and header fields).
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a response head (hyper's default too).
const MAX_HEADERS: usize = 100;
/// The read buffer's first size: a typical response head and small body.
const READ_BUF: usize = 4 * 1024;
/// Most bytes asked for in one body read.
const BODY_READ: usize = 64 * 1024;
/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4 * 1024;

/// Encodes a request head: request line and header fields (lower-case
/// names, as hyper writes them), with the forwarding headers of `fwd` in
/// place of any of those names in `headers`.
pub fn encode_head(method: &Method, target: &str, headers: &HeaderMap, fwd: Option<&Forwarded>) -> Bytes {
    let mut len = method.as_str().len() + target.len() + 13 + fwd.map_or(0, Forwarded::len_hint);
    for (k, v) in headers {
        len += k.as_str().len() + v.len() + 4;
    }
    let mut out = Vec::with_capacity(len + 2);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (k, v) in headers {
        // `Expect: 100-continue` was the client's question to us (hyper
        // answered it when the body was first read); the body goes to the
        // server without waiting, so the server is not asked.
        if (fwd.is_some() && Forwarded::replaces(k)) || k == header::EXPECT {
            continue;
        }
        out.extend_from_slice(k.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(f) = fwd {
        f.write(&mut out);
    }
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

/// Why sending a request failed.
#[derive(Debug)]
pub enum SendError {
    /// The connection failed; `written`: some bytes were accepted by it.
    Io { err: io::Error, written: bool },
    /// The client's body failed (too large, timed out, broken).
    Body(BodyError),
}

/// Writes the request: `head`, then the body (chunk-encoded if `chunked`).
/// While a streamed body is being sent, a response that arrives early (a
/// server refusing an upload) ends the sending; `buf` then holds its start.
pub async fn write_request(
    io: &mut ServerIo,
    head: &Bytes,
    body: &mut UpstreamBody,
    chunked: bool,
    buf: &mut BytesMut,
) -> Result<(), SendError> {
    let mut queue = Queue::default();
    queue.push(head.clone());
    if let UpstreamBody::Full(Some(b)) = body {
        queue.push(b.clone());
    }
    let streams = matches!(body, UpstreamBody::Stream(_));
    let mut written = false;
    let mut body_done = !streams;
    poll_fn(|cx| loop {
        if streams {
            // What the server sends while the body streams: interim (1xx)
            // answers are dropped and the upload goes on; a final answer
            // (or a close, or bytes that are no answer) stops it, for
            // `read_head` to report.
            match early_answer(buf) {
                Early::Interim(len) => {
                    buf.advance(len);
                    continue;
                }
                Early::Final => return Poll::Ready(Ok(())),
                Early::Incomplete => {}
            }
            match poll_read(io, cx, buf, READ_BUF) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(_)) => continue,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(SendError::Io { err, written })),
                Poll::Pending => {}
            }
        }
        if !queue.is_empty() {
            match queue.poll_write(io, cx) {
                Poll::Ready(Ok(n)) => {
                    written |= n > 0;
                    continue;
                }
                Poll::Ready(Err(err)) => return Poll::Ready(Err(SendError::Io { err, written })),
                Poll::Pending => return Poll::Pending,
            }
        }
        if body_done {
            return Poll::Ready(Ok(()));
        }
        match ready!(Pin::new(&mut *body).poll_frame(cx)) {
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else { continue };
                if data.is_empty() {
                    continue;
                }
                if chunked {
                    queue.push(Bytes::from(format!("{:x}\r\n", data.len())));
                    queue.push(data);
                    queue.push(Bytes::from_static(b"\r\n"));
                } else {
                    queue.push(data);
                }
            }
            Some(Err(e)) => return Poll::Ready(Err(SendError::Body(e))),
            None => {
                body_done = true;
                if chunked {
                    queue.push(Bytes::from_static(b"0\r\n\r\n"));
                }
            }
        }
    })
    .await
}

/// What the server sent while the request body was still streaming.
enum Early {
    /// Nothing, or the start of a head.
    Incomplete,
    /// A whole interim (1xx, not 101) answer of this many bytes.
    Interim(usize),
    /// A final answer, or bytes that cannot start one.
    Final,
}

fn early_answer(buf: &BytesMut) -> Early {
    if buf.is_empty() {
        return Early::Incomplete;
    }
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) => match resp.code {
            Some(code) if (100..200).contains(&code) && code != 101 => Early::Interim(len),
            _ => Early::Final,
        },
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => Early::Incomplete,
        _ => Early::Final,
    }
}

/// Bytes waiting to be written (at most four pieces: a head and a body, or
/// a chunk's size line, data and CRLF), written with one vectored write
/// when the transport takes them. Inline, so a request allocates nothing
/// for it.
#[derive(Default)]
struct Queue {
    parts: [Bytes; 4],
    start: usize,
    end: usize,
}

impl Queue {
    fn push(&mut self, b: Bytes) {
        if b.is_empty() {
            return;
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        // Callers push only after the queue was drained, at most 3 pieces.
        debug_assert!(self.end < self.parts.len());
        self.parts[self.end] = b;
        self.end += 1;
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn poll_write(&mut self, io: &mut ServerIo, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let live = &self.parts[self.start..self.end];
        let n = if live.len() == 1 || !io.is_write_vectored() {
            ready!(Pin::new(&mut *io).poll_write(cx, &live[0]))?
        } else {
            let mut slices = [io::IoSlice::new(&[]); 4];
            for (s, p) in slices.iter_mut().zip(live) {
                *s = io::IoSlice::new(p);
            }
            ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..live.len()]))?
        };
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        let mut left = n;
        while left > 0 {
            let first = &mut self.parts[self.start];
            if first.len() <= left {
                left -= first.len();
                *first = Bytes::new();
                self.start += 1;
            } else {
                first.advance(left);
                left = 0;
            }
        }
        Poll::Ready(Ok(n))
    }
}

/// Reads once into `buf`; `want`: how much the caller expects at most.
/// `Ok(0)` is the end of the stream.
///
/// Small reads (response heads, small bodies) go through a stack buffer and
/// are copied into `buf` at their exact size: a fresh 4 KiB+ heap buffer
/// per response costs more in the allocator (glibc serves it from its large
/// bins, consolidating on the way) than copying a few hundred bytes.
fn poll_read(io: &mut ServerIo, cx: &mut Context<'_>, buf: &mut BytesMut, want: usize) -> Poll<io::Result<usize>> {
    let spare = buf.capacity() - buf.len();
    if want > READ_BUF || spare >= READ_BUF {
        if spare < 512 {
            buf.reserve(want.max(READ_BUF));
        }
        return tokio_util::io::poll_read_buf(Pin::new(io), cx, buf);
    }
    let mut stack = [const { std::mem::MaybeUninit::<u8>::uninit() }; READ_BUF];
    let mut rb = ReadBuf::uninit(&mut stack);
    ready!(Pin::new(io).poll_read(cx, &mut rb))?;
    buf.extend_from_slice(rb.filled());
    Poll::Ready(Ok(rb.filled().len()))
}

/// Why reading a response head failed.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error("the server closed the connection before sending a response")]
    Closed,
    #[error("the server closed the connection in the middle of the response head")]
    Truncated,
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Invalid(String),
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// A parsed response head.
pub struct Head {
    pub parts: http::response::Parts,
    pub framing: Framing,
    /// The connection may carry another request after this response.
    pub reusable: bool,
    /// Hop-by-hop fields may remain in `parts.headers` (a 101, or fields
    /// named in `Connection`); the fixed ones were left out otherwise.
    pub hop_by_hop_left: bool,
}

/// Reads the response head, skipping interim (1xx other than 101)
/// responses. Bytes after the head stay in `buf`.
pub async fn read_head(io: &mut ServerIo, buf: &mut BytesMut, head_request: bool) -> Result<Head, HeadError> {
    poll_fn(|cx| loop {
        if !buf.is_empty() {
            match parse_head(buf, head_request)? {
                Parsed::Head(h) => return Poll::Ready(Ok(h)),
                Parsed::Interim => continue,
                Parsed::Partial if buf.len() >= MAX_HEAD => {
                    return Poll::Ready(Err(HeadError::Invalid(format!("response head larger than {MAX_HEAD} bytes"))))
                }
                Parsed::Partial => {}
            }
        }
        let had = buf.len();
        if ready!(poll_read(io, cx, buf, READ_BUF))? == 0 {
            return Poll::Ready(Err(if had == 0 { HeadError::Closed } else { HeadError::Truncated }));
        }
    })
    .await
}

enum Parsed {
    Head(Head),
    /// A 1xx response was skipped.
    Interim,
    Partial,
}

fn invalid(what: impl Into<String>) -> HeadError {
    HeadError::Invalid(what.into())
}

fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Parsed, HeadError> {
    // Offsets of names and values in `buf`, so that values can share the
    // frozen head instead of being copied one by one.
    let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    let (len, code, minor, n) = {
        // Uninitialised: filling 100 empty headers first costs more than
        // parsing a typical head.
        let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let len =
            match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, &mut headers) {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
                Err(e) => return Err(invalid(format!("malformed response head: {e}"))),
            };
        let base = buf.as_ptr() as usize;
        let n = resp.headers.len();
        for (span, h) in spans.iter_mut().zip(resp.headers.iter()) {
            let name = h.name.as_ptr() as usize - base;
            let value = h.value.as_ptr() as usize - base;
            *span = (name as u32, h.name.len() as u32, value as u32, h.value.len() as u32);
        }
        (len, resp.code.unwrap_or(0), resp.version.unwrap_or(1), n)
    };
    let head = buf.split_to(len).freeze();
    let status = StatusCode::from_u16(code).map_err(|_| invalid(format!("invalid status code {code}")))?;
    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(Parsed::Interim);
    }
    // One pass: framing and connection facts are noted as the fields go
    // by, and hop-by-hop fields are left out (kept for a 101, whose
    // `Upgrade` the tunnel needs). Room for the security headers added
    // later, so the map does not grow per response.
    let upgrade = status == StatusCode::SWITCHING_PROTOCOLS;
    let mut headers = HeaderMap::with_capacity(n + 4);
    let mut facts = Facts::default();
    for &(ns, nl, vs, vl) in &spans[..n] {
        let name = HeaderName::from_bytes(&head[ns as usize..(ns + nl) as usize])
            .map_err(|_| invalid("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs as usize..(vs + vl) as usize))
            .map_err(|_| invalid(format!("invalid value for header {name}")))?;
        if name == header::CONTENT_LENGTH {
            facts.content_length(&value)?;
        } else if name == header::TRANSFER_ENCODING {
            facts.transfer_encoding(&value);
        } else if name == header::CONNECTION {
            facts.connection(&value);
            if !upgrade {
                // Put back below if it names other fields, for
                // `remove_hop_by_hop` to read.
                match facts.connection_values.0 {
                    None => facts.connection_values.0 = Some(value),
                    Some(_) => facts.connection_values.1.push(value),
                }
                continue;
            }
        }
        if !upgrade && is_hop_by_hop(&name) {
            continue;
        }
        headers.append(name, value);
    }
    if facts.names_others {
        let (first, rest) = std::mem::take(&mut facts.connection_values);
        for v in first.into_iter().chain(rest) {
            headers.append(header::CONNECTION, v);
        }
    }
    let version = if minor == 0 { Version::HTTP_10 } else { Version::HTTP_11 };
    let mut reusable = match version {
        Version::HTTP_10 => facts.keep_alive,
        _ => !facts.close,
    };
    let framing = if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Empty
    } else if facts.transfer_encoding {
        if facts.length.is_some() {
            // Both: Transfer-Encoding wins, and the connection is not
            // trusted with another request (RFC 9112 §6.3).
            headers.remove(header::CONTENT_LENGTH);
            reusable = false;
        }
        if facts.chunked_last {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if let Some(n) = facts.length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    if framing == Framing::UntilClose {
        reusable = false;
    }
    let mut resp = http::Response::new(());
    *resp.status_mut() = status;
    *resp.version_mut() = version;
    *resp.headers_mut() = headers;
    let (parts, ()) = resp.into_parts();
    let hop_by_hop_left = upgrade || facts.names_others;
    Ok(Parsed::Head(Head { parts, framing, reusable, hop_by_hop_left }))
}

/// What the header fields say about framing and the connection.
#[derive(Default)]
struct Facts {
    length: Option<u64>,
    transfer_encoding: bool,
    chunked_last: bool,
    close: bool,
    keep_alive: bool,
    /// `Connection` names other fields (hop-by-hop by that listing).
    names_others: bool,
    /// The `Connection` fields (the first inline: servers send one).
    connection_values: (Option<HeaderValue>, Vec<HeaderValue>),
}

impl Facts {
    /// A `Content-Length` value: every one (and every comma-separated item)
    /// must be the same number.
    fn content_length(&mut self, v: &HeaderValue) -> Result<(), HeadError> {
        fold_content_length(v.as_bytes(), &mut self.length).map_err(|e| match e {
            BadContentLength::Invalid => invalid("invalid Content-Length"),
            BadContentLength::Conflicting => invalid("conflicting Content-Length values"),
        })
    }

    /// `Transfer-Encoding`: the last coding of the last field decides.
    fn transfer_encoding(&mut self, v: &HeaderValue) {
        self.transfer_encoding = true;
        let last = v.as_bytes().rsplit(|&b| b == b',').next().unwrap_or_default();
        self.chunked_last = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
    }

    fn connection(&mut self, v: &HeaderValue) {
        for token in v.as_bytes().split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if !token.is_empty() && !token.eq_ignore_ascii_case(b"upgrade") {
                self.names_others = true;
            }
        }
    }
}

/// The fixed hop-by-hop fields (RFC 9110 §7.6.1), compared without hashing.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::TE
        || name == header::TRAILER
        || name == header::UPGRADE
        || name == header::PROXY_AUTHENTICATE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// A server's response body, decoded from its connection as the client
/// side polls it; the connection goes back to `pool` once the body is read
/// to its end (if it can carry another request), and is closed if the body
/// is dropped before that.
pub struct ServerBody {
    io: Option<ServerIo>,
    pool: Arc<ServerPool>,
    reusable: bool,
    buf: BytesMut,
    state: State,
    /// `read_timeout` between two reads from the server.
    idle: IdleTimer,
}

/// What `poll_frame` returns.
type PollFrame = Poll<Option<Result<Frame<Bytes>, BodyError>>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    UntilClose,
    /// Expecting a chunk-size line.
    ChunkSize,
    /// Inside a chunk, with this many data bytes left.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer fields after the last chunk, up to an empty line.
    Trailers,
    Done,
}

impl ServerBody {
    pub fn new(io: ServerIo, pool: Arc<ServerPool>, head: &Head, buf: BytesMut, read_timeout: Duration) -> Self {
        let state = match head.framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
        };
        let mut body =
            ServerBody { io: Some(io), pool, reusable: head.reusable, buf, state, idle: IdleTimer::new(read_timeout) };
        if state == State::Done {
            body.finish();
        }
        body
    }

    /// The body is complete: the connection goes back to its pool if it
    /// can carry another request and nothing unexpected follows.
    fn finish(&mut self) {
        self.state = State::Done;
        if let Some(io) = self.io.take() {
            if self.reusable && self.buf.is_empty() {
                self.pool.put_back(io);
            }
        }
        self.buf = BytesMut::new();
    }

    /// Reads more into the buffer. `Ok(false)`: the server closed.
    fn fill(&mut self, cx: &mut Context<'_>, want: u64) -> Poll<Result<bool, BodyError>> {
        let Some(io) = self.io.as_mut() else { return Poll::Ready(Ok(false)) };
        let want = want.clamp(1, BODY_READ as u64) as usize;
        match poll_read(io, cx, &mut self.buf, want) {
            Poll::Ready(Ok(n)) => {
                self.idle.progressed();
                Poll::Ready(Ok(n > 0))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(BodyError::Server(e))),
            Poll::Pending if self.idle.expired(cx) => Poll::Ready(Err(BodyError::ReadTimeout(self.idle.after()))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// The body ends with `e`; the connection is closed.
    fn abort(&mut self, e: BodyError) -> PollFrame {
        self.state = State::Done;
        self.io = None;
        Poll::Ready(Some(Err(e)))
    }

    fn fail(&mut self, what: &'static str) -> PollFrame {
        self.abort(BodyError::Server(io::Error::new(io::ErrorKind::InvalidData, what)))
    }

    /// Takes up to `n` buffered bytes as a data frame.
    fn take(&mut self, n: u64) -> Bytes {
        let n = (n.min(self.buf.len() as u64)) as usize;
        self.buf.split_to(n).freeze()
    }

    /// One line (without its CRLF) from the buffer, if a whole one is there.
    fn line(&mut self) -> Option<Bytes> {
        let end = self.buf.iter().position(|&b| b == b'\n')?;
        let mut line = self.buf.split_to(end + 1);
        line.truncate(end);
        if line.last() == Some(&b'\r') {
            line.truncate(end - 1);
        }
        Some(line.freeze())
    }
}

/// The size of a chunk from its size line (`1a;ext=1` → 26).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return None;
    }
    let rest = line[digits..].trim_ascii_start();
    if !rest.is_empty() && rest[0] != b';' {
        return None;
    }
    let s = std::str::from_utf8(&line[..digits]).ok()?;
    u64::from_str_radix(s, 16).ok()
}

impl Body for ServerBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> PollFrame {
        let this = self.get_mut();
        loop {
            match this.state {
                State::Done => return Poll::Ready(None),
                State::Length(left) => {
                    if !this.buf.is_empty() {
                        let data = this.take(left);
                        let left = left - data.len() as u64;
                        this.state = State::Length(left);
                        if left == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    if let Some(p) = this.need_more(cx, left, "before the end of the body") {
                        return p;
                    }
                }
                State::UntilClose => {
                    if !this.buf.is_empty() {
                        let data = this.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    match ready!(this.fill(cx, BODY_READ as u64)) {
                        Ok(true) => {}
                        // The close is the end of this body.
                        Ok(false) => {
                            this.state = State::Done;
                            this.io = None;
                            return Poll::Ready(None);
                        }
                        Err(e) => return this.abort(e),
                    }
                }
                State::ChunkData(left) => {
                    if !this.buf.is_empty() {
                        let data = this.take(left);
                        let left = left - data.len() as u64;
                        this.state = if left == 0 { State::ChunkEnd } else { State::ChunkData(left) };
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    if let Some(p) = this.need_more(cx, left, "in the middle of a chunked body") {
                        return p;
                    }
                }
                State::ChunkSize | State::ChunkEnd | State::Trailers => {
                    let Some(line) = this.line() else {
                        if this.buf.len() > MAX_LINE {
                            return this.fail("chunk-size or trailer line too long");
                        }
                        if let Some(p) = this.need_more(cx, READ_BUF as u64, "in the middle of a chunked body") {
                            return p;
                        }
                        continue;
                    };
                    match this.state {
                        State::ChunkSize => match chunk_size(&line) {
                            Some(0) => this.state = State::Trailers,
                            Some(n) => this.state = State::ChunkData(n),
                            None => return this.fail("invalid chunk size"),
                        },
                        State::ChunkEnd if line.is_empty() => this.state = State::ChunkSize,
                        State::ChunkEnd => return this.fail("chunk data longer than its size"),
                        _ if line.is_empty() => {
                            this.finish();
                            return Poll::Ready(None);
                        }
                        // A trailer field: not passed on.
                        _ => {}
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

impl ServerBody {
    /// Reads more of a body that must not end yet; `Some` is what to
    /// return now (pending, or the failure; `cut`: where a close came).
    fn need_more(&mut self, cx: &mut Context<'_>, want: u64, cut: &'static str) -> Option<PollFrame> {
        match self.fill(cx, want) {
            Poll::Pending => Some(Poll::Pending),
            Poll::Ready(Ok(true)) => None,
            Poll::Ready(Ok(false)) => Some(self.abort(BodyError::Server(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the server closed the connection {cut}"),
            )))),
            Poll::Ready(Err(e)) => Some(self.abort(e)),
        }
    }
}

/// A server connection after a 101: the bytes read past the response head
/// first, then the socket.
pub struct Upgraded {
    pre: Bytes,
    io: ServerIo,
}

impl Upgraded {
    pub fn new(io: ServerIo, pre: BytesMut) -> Self {
        Upgraded { pre: pre.freeze(), io }
    }
}

impl AsyncRead for Upgraded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, head_request: bool) -> Result<(Head, BytesMut), HeadError> {
        let mut buf = BytesMut::from(text);
        loop {
            match parse_head(&mut buf, head_request)? {
                Parsed::Head(h) => return Ok((h, buf)),
                Parsed::Interim => continue,
                Parsed::Partial => return Err(HeadError::Truncated),
            }
        }
    }

    #[test]
    fn encodes_the_request_line_and_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("example.org"));
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        h.insert("x-real-ip", HeaderValue::from_static("6.6.6.6"));
        let head = encode_head(&Method::POST, "/p?q=1", &h, None);
        assert_eq!(
            &head[..],
            b"POST /p?q=1 HTTP/1.1\r\nhost: example.org\r\nx-a: 1\r\nx-a: 2\r\nx-real-ip: 6.6.6.6\r\n\r\n"
        );
        let ip = "192.0.2.1".parse().unwrap();
        let fwd = super::super::headers::forwarded(&h, ip, ip, false, "http", None);
        let head = encode_head(&Method::GET, "/", &h, Some(&fwd));
        let text = std::str::from_utf8(&head).unwrap();
        assert!(!text.contains("6.6.6.6"), "the client's X-Real-IP is replaced: {text}");
        assert!(text.ends_with("x-real-ip: 192.0.2.1\r\nx-forwarded-proto: http\r\n\r\n"), "{text}");
    }

    #[test]
    fn a_content_length_response_keeps_its_body_bytes_and_is_reusable() {
        let (h, rest) = parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Y: z\r\n\r\nhello", false).unwrap();
        assert_eq!(h.parts.status, StatusCode::OK);
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.reusable);
        assert_eq!(h.parts.headers["x-y"], "z");
        assert_eq!(&rest[..], b"hello");
    }

    #[test]
    fn interim_responses_are_skipped() {
        let (h, _) = parse("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", false).unwrap();
        assert_eq!(h.parts.status, StatusCode::NO_CONTENT);
        assert_eq!(h.framing, Framing::Empty);
    }

    #[test]
    fn framing_rules() {
        let f = |t: &str, head: bool| parse(t, head).map(|(h, _)| (h.framing, h.reusable));
        assert_eq!(f("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true).unwrap(), (Framing::Empty, true));
        assert_eq!(f("HTTP/1.1 304 Not Modified\r\n\r\n", false).unwrap(), (Framing::Empty, true));
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", false).unwrap(),
            (Framing::Chunked, true)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", false).unwrap(),
            (Framing::Chunked, false),
            "both: chunked wins, the connection is not reused"
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false).unwrap(),
            (Framing::UntilClose, false)
        );
        assert_eq!(f("HTTP/1.1 200 OK\r\n\r\n", false).unwrap(), (Framing::UntilClose, false));
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", false).unwrap(),
            (Framing::Length(1), false)
        );
        assert_eq!(f("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false).unwrap(), (Framing::Length(1), false));
        assert_eq!(
            f("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n", false).unwrap(),
            (Framing::Length(1), true)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 4, 4\r\nContent-Length: 4\r\n\r\n", false).unwrap(),
            (Framing::Length(4), true)
        );
    }

    #[test]
    fn hop_by_hop_fields_are_left_out_in_the_same_pass() {
        let (h, _) = parse(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(h.parts.headers.len(), 1, "{:?}", h.parts.headers);
        assert!(!h.hop_by_hop_left);
        assert_eq!(h.framing, Framing::Chunked);
        // Fields named in Connection: the Connection field stays for
        // `remove_hop_by_hop` to read.
        let (h, _) =
            parse("HTTP/1.1 200 OK\r\nX-Secret: s\r\nConnection: x-secret\r\nContent-Length: 0\r\n\r\n", false)
                .unwrap();
        assert!(h.hop_by_hop_left);
        assert_eq!(h.parts.headers["connection"], "x-secret");
        // A 101 keeps Connection and Upgrade for the tunnel.
        let (h, _) =
            parse("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", false)
                .unwrap();
        assert_eq!(h.parts.headers["upgrade"], "websocket");
        assert!(h.hop_by_hop_left);
    }

    #[test]
    fn bad_heads_are_refused_with_a_reason() {
        let err = |t: &str| parse(t, false).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err("HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n").contains("conflicting"));
        assert!(err("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n").contains("invalid Content-Length"));
        assert!(err("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n").contains("invalid"));
        assert!(err("SSH-2.0-OpenSSH\r\n\r\n").contains("malformed response head"));
        assert!(err("HTTP/1.1 099 Odd\r\n\r\n").contains("invalid status code"));
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunk_size(b"1a"), Some(26));
        assert_eq!(chunk_size(b"0"), Some(0));
        assert_eq!(chunk_size(b"A;name=value"), Some(10));
        assert_eq!(chunk_size(b"10 ;x"), Some(16));
        assert_eq!(chunk_size(b""), None);
        assert_eq!(chunk_size(b"g"), None);
        assert_eq!(chunk_size(b"1 2"), None);
        assert_eq!(chunk_size(b"ffffffffffffffffff"), None);
    }
}
