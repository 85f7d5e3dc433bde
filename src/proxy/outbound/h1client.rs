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
//! The bytes on the wire (the request head, the response head's parsing,
//! framing and reuse rules, chunked coding) are `wire`'s; this file moves
//! them between the socket and the request.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::pool::ServerPool;
use super::server_io::ServerIo;
use crate::proxy::body::{BodyError, UpstreamBody};
use crate::proxy::idle_timer::IdleTimer;
use crate::proxy::wire::chunked::{self, Decoded};
use crate::proxy::wire::response::{parse_head, Framing, Head, HeadError, Parsed, MAX_HEAD, MAX_HEADERS, MAX_INTERIM};
use crate::proxy::wire::{report_response, ResponseFault};
/// The read buffer's first size: a typical response head and small body.
const READ_BUF: usize = 4 * 1024;
/// Most bytes asked for in one body read.
const BODY_READ: usize = 64 * 1024;

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
    let mut interim = 0;
    poll_fn(|cx| loop {
        if streams {
            match poll_heard(io, cx, buf, &mut interim) {
                Heard::Again => continue,
                Heard::Stop(r) => return Poll::Ready(r.map_err(|err| SendError::Io { err, written })),
                Heard::Nothing => {}
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
                if let Ok(data) = frame.into_data() {
                    queue.push_data(data, chunked);
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

/// What the server said while the request body streams.
enum Heard {
    /// Nothing yet.
    Nothing,
    /// Something (an interim answer, dropped; or bytes to look at): look again.
    Again,
    /// Stop sending: a final answer (or a close, or bytes that are no
    /// answer, or more than `MAX_INTERIM` interim answers) is there for
    /// `read_head` to take or report; or reading failed.
    Stop(io::Result<()>),
}

/// Reads what the server sends while the body streams: interim (1xx)
/// answers are dropped and the upload goes on; anything else stops it.
fn poll_heard(io: &mut ServerIo, cx: &mut Context<'_>, buf: &mut BytesMut, interim: &mut usize) -> Heard {
    match early_answer(buf) {
        Early::Interim(len) if *interim < MAX_INTERIM => {
            *interim += 1;
            buf.advance(len);
            return Heard::Again;
        }
        Early::Interim(_) | Early::Final => return Heard::Stop(Ok(())),
        Early::Incomplete => {}
    }
    match poll_read(io, cx, buf, READ_BUF) {
        Poll::Ready(Ok(0)) => Heard::Stop(Ok(())),
        Poll::Ready(Ok(_)) => Heard::Again,
        Poll::Ready(Err(err)) => Heard::Stop(Err(err)),
        Poll::Pending => Heard::Nothing,
    }
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
    /// A piece of the body, chunk-framed if `chunked` (empty pieces are
    /// skipped: an empty chunk would end the body).
    fn push_data(&mut self, data: Bytes, chunked: bool) {
        if data.is_empty() {
            return;
        }
        if chunked {
            let mut line = Vec::with_capacity(18);
            chunked::size_line(data.len(), &mut line);
            self.push(Bytes::from(line));
            self.push(data);
            self.push(Bytes::from_static(b"\r\n"));
        } else {
            self.push(data);
        }
    }

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

/// Reads the response head, skipping interim (1xx other than 101)
/// responses. Bytes after the head stay in `buf`.
pub async fn read_head(io: &mut ServerIo, buf: &mut BytesMut, head_request: bool) -> Result<Head, HeadError> {
    let mut interim = 0;
    poll_fn(|cx| loop {
        if !buf.is_empty() {
            match parse_head(buf, head_request)? {
                Parsed::Head(h) => return Poll::Ready(Ok(h)),
                Parsed::Interim if interim == MAX_INTERIM => {
                    return Poll::Ready(Err(HeadError::Invalid {
                        fault: ResponseFault::Interim,
                        detail: format!("more than {MAX_INTERIM} interim (1xx) answers"),
                    }))
                }
                Parsed::Interim => {
                    interim += 1;
                    continue;
                }
                Parsed::Partial if buf.len() >= MAX_HEAD => {
                    return Poll::Ready(Err(HeadError::Invalid {
                        fault: ResponseFault::TooLarge,
                        detail: format!("response head larger than {MAX_HEAD} bytes"),
                    }))
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

#[derive(Debug, Clone)]
enum State {
    Length(u64),
    UntilClose,
    Chunked(chunked::Decoder),
    Done,
}

impl ServerBody {
    pub fn new(io: ServerIo, pool: Arc<ServerPool>, head: &Head, buf: BytesMut, read_timeout: Duration) -> Self {
        let state = match head.framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(chunked::Decoder::default()),
            Framing::UntilClose => State::UntilClose,
        };
        let done = matches!(state, State::Done);
        let mut body =
            ServerBody { io: Some(io), pool, reusable: head.reusable, buf, state, idle: IdleTimer::new(read_timeout) };
        if done {
            body.finish();
        }
        body
    }

    /// The body is complete: the connection goes back to its pool if it
    /// can carry another request and nothing unexpected follows.
    fn finish(&mut self) {
        self.state = State::Done;
        if let Some(io) = self.io.take() {
            if !self.buf.is_empty() {
                // Bytes the server sent past its own answer: whatever they
                // are, they must not become the next request's answer.
                report_response(
                    ResponseFault::BytesAfterBody,
                    &self.pool.addr().to_string(),
                    &format_args!("{} bytes after the end of the body; connection closed", self.buf.len()),
                );
            } else if self.reusable {
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

    /// Takes up to `n` buffered bytes as a data frame.
    fn take(&mut self, n: u64) -> Bytes {
        let n = (n.min(self.buf.len() as u64)) as usize;
        self.buf.split_to(n).freeze()
    }

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

impl Body for ServerBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> PollFrame {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Length(left) => {
                    let left = *left;
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
                State::Chunked(decoder) => match decoder.decode(&mut this.buf) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::End) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore(want)) => {
                        if let Some(p) =
                            this.need_more(cx, want.max(READ_BUF as u64), "in the middle of a chunked body")
                        {
                            return p;
                        }
                    }
                    Err(e) => {
                        report_response(ResponseFault::Chunked, &this.pool.addr().to_string(), &e);
                        return this.abort(BodyError::Server(io::Error::new(io::ErrorKind::InvalidData, e)));
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

/// A server connection after a 101: the bytes read past the response head
/// first, then the socket.
pub type Upgraded = super::relay::Prefixed<ServerIo>;
