//! The server side of a TLS connection: rustls's `ServerConnection` over a
//! socket, as an `AsyncRead + AsyncWrite` for hyper.
//!
//! tokio-rustls does the same, but its handshake future flushes everything
//! before it resolves. After a TLS 1.3 handshake that is the session
//! ticket, which then leaves in a segment of its own, right after the
//! client's Finished (often together with its first request). The client
//! wakes up for it, reads and stores it, and waits again for the answer.
//! [`accept`] leaves a TLS 1.3 ticket queued instead: it goes out in the
//! same write as the first response, one system call and one wake-up of
//! the client fewer per handshake, which is what a busy load generator or
//! agent pays for. Nothing the client needs for the handshake is held
//! back: the server's Finished goes out in its first flight, and a TLS 1.2
//! handshake (whose last flight is the server's Finished) is flushed in
//! full before [`accept`] returns.
//!
//! Reads follow tokio-rustls too: socket bytes are read only while rustls
//! holds no plaintext, so `Pending` means "rustls is empty and the socket
//! would block" (what parking an idle connection relies on). A close by
//! the client without `close_notify` is an `UnexpectedEof` error, as rustls
//! reports it.

use std::future::poll_fn;
use std::io::{self, BufRead, IoSlice, Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::{ProtocolVersion, ServerConfig, ServerConnection};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A server-side TLS connection over `IO` (a `TcpStream` in the node).
pub struct TlsServerStream<IO> {
    io: IO,
    conn: ServerConnection,
    /// `close_notify` is queued (shutdown was asked once).
    closing: bool,
    /// What rustls has queued is only the TLS 1.3 tickets of the handshake:
    /// a flush leaves them for the first write (hyper flushes its empty
    /// buffer before it has anything to say).
    held: bool,
    /// TLS bytes handed to the socket so far, wrapping: a write or flush
    /// can move some and still return `Pending`, and the client's send
    /// timer must see that as progress.
    socket_bytes: u32,
}

/// Runs the server handshake on `io`. TLS 1.3 session tickets stay queued
/// for the first write (see the module's documentation); everything else
/// the handshake produced has been written when this returns.
pub async fn accept<IO>(config: Arc<ServerConfig>, io: IO) -> io::Result<TlsServerStream<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let conn = ServerConnection::new(config).map_err(io::Error::other)?;
    let mut tls = TlsServerStream { io, conn, closing: false, held: false, socket_bytes: 0 };
    poll_fn(|cx| tls.poll_handshake(cx)).await?;
    Ok(tls)
}

/// A handshaken TLS connection without its socket, to move the socket from
/// one runtime to another ([`TlsServerStream::into_parts`]).
pub struct TlsState {
    conn: ServerConnection,
    closing: bool,
    held: bool,
}

impl<IO> TlsServerStream<IO> {
    /// The socket and the TLS state, apart: nothing is lost (what rustls
    /// holds, read or queued, stays in the state).
    pub fn into_parts(self) -> (IO, TlsState) {
        (self.io, TlsState { conn: self.conn, closing: self.closing, held: self.held })
    }

    /// The stream again, over `io` (the same socket, as another type).
    pub fn from_parts(io: IO, state: TlsState) -> Self {
        TlsServerStream { io, conn: state.conn, closing: state.closing, held: state.held, socket_bytes: 0 }
    }

    /// TLS bytes handed to the socket so far, wrapping at 2^32: compared
    /// between two polls, a change says a write or flush made progress even
    /// if it returned `Pending`.
    pub fn socket_bytes(&self) -> u32 {
        self.socket_bytes
    }

    /// The rustls connection: ALPN, SNI, protocol version, cipher suite.
    pub fn conn(&self) -> &ServerConnection {
        &self.conn
    }

    /// The socket underneath.
    pub fn io(&self) -> &IO {
        &self.io
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TlsServerStream<IO> {
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_write_all_tls(cx))?;
            if !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if ready!(self.poll_read_tls(cx))? == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "client closed during the TLS handshake",
                )));
            }
            if !self.conn.is_handshaking() && self.conn.protocol_version() == Some(ProtocolVersion::TLSv1_3) {
                // Only post-handshake messages (the tickets) are queued:
                // they leave with the first response.
                self.held = self.conn.wants_write();
                return Poll::Ready(Ok(()));
            }
        }
    }

    /// Reads TLS bytes from the socket into rustls and processes them.
    /// `Ok(0)`: the client closed the TCP connection. A protocol error is
    /// answered with rustls's alert (best effort) and returned.
    fn poll_read_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let n = match self.conn.read_tls(&mut SyncIo { io: &mut self.io, cx }) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
            Err(e) => return Poll::Ready(Err(e)),
        };
        if let Err(e) = self.conn.process_new_packets() {
            // The alert rustls queued for the error; the connection is
            // over whether it can be written or not.
            let _ = self.poll_write_tls(cx);
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
        }
        Poll::Ready(Ok(n))
    }

    /// Writes queued TLS records to the socket (one `writev` for all of
    /// them when the socket takes them).
    fn poll_write_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        match self.conn.write_tls(&mut SyncIo { io: &mut self.io, cx }) {
            Ok(0) => Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => {
                self.socket_bytes = self.socket_bytes.wrapping_add(n as u32);
                Poll::Ready(Ok(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    /// Writes everything queued, or `Pending` until the socket takes it.
    fn poll_write_all_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.conn.wants_write() {
            ready!(self.poll_write_tls(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    /// After plaintext was queued: write what the socket takes now. The
    /// rest stays queued in rustls (within its buffer limit) and goes out
    /// with the next write or flush.
    fn push_tls(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.poll_write_all_tls(cx) {
            Poll::Ready(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }

    fn poll_write_with(
        &mut self,
        cx: &mut Context<'_>,
        mut write: impl FnMut(&mut ServerConnection) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        // rustls takes nothing only while its buffer is full: once the
        // socket took some, there is room again.
        self.held = false;
        for _ in 0..2 {
            let n = write(&mut self.conn)?;
            self.push_tls(cx)?;
            if n > 0 {
                return Poll::Ready(Ok(n));
            }
            if self.conn.wants_write() {
                return Poll::Pending;
            }
        }
        Poll::Ready(Err(io::ErrorKind::WriteZero.into()))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsServerStream<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            // Copied out of rustls's buffer: `Read::read` would need `buf`
            // initialised, and zeroing hyper's whole read buffer on every
            // read costs more than the rest of a request together.
            match this.conn.reader().into_first_chunk() {
                Ok(chunk) => {
                    // Empty: the client's close_notify (a clean end).
                    let n = chunk.len().min(buf.remaining());
                    buf.put_slice(&chunk[..n]);
                    this.conn.reader().consume(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            // rustls holds no plaintext: read from the socket. At its end
            // rustls's reader reports a clean close or UnexpectedEof.
            ready!(this.poll_read_tls(cx))?;
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsServerStream<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.poll_write_with(cx, |conn| conn.writer().write(buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if bufs.iter().all(|b| b.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        // rustls puts the slices into one record (up to its size limit).
        self.poll_write_with(cx, |conn| conn.writer().write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.held {
            ready!(this.poll_write_all_tls(cx))?;
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.closing {
            this.conn.send_close_notify();
            this.closing = true;
            this.held = false;
        }
        ready!(this.poll_write_all_tls(cx))?;
        match ready!(Pin::new(&mut this.io).poll_shutdown(cx)) {
            // The client closed first (it had its answer): nothing lost.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Poll::Ready(Ok(())),
            r => Poll::Ready(r),
        }
    }
}

/// The socket as the blocking `Read`/`Write` rustls expects: `Pending`
/// becomes `WouldBlock`, with the task's waker registered.
struct SyncIo<'a, 'b, IO> {
    io: &'a mut IO,
    cx: &'a mut Context<'b>,
}

impl<IO: AsyncRead + Unpin> Read for SyncIo<'_, '_, IO> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut buf = ReadBuf::new(buf);
        match Pin::new(&mut *self.io).poll_read(self.cx, &mut buf) {
            Poll::Ready(Ok(())) => Ok(buf.filled().len()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl<IO: AsyncWrite + Unpin> Write for SyncIo<'_, '_, IO> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_write(self.cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_write_vectored(self.cx, bufs) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
