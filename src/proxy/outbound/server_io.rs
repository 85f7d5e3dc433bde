//! The socket of a connection to a server, with the pool's `send_timeout`
//! enforced on it: a write that stays blocked (the
//! server stopped reading) for longer than `send_timeout` fails the request,
//! as nginx's `proxy_send_timeout` ("between two successive write
//! operations"). The timer is allocated only when a write first stalls.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::proxy::idle_timer::IdleTimer;

/// The transport to a server: plain TCP, or TLS over it.
pub enum ServerStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            ServerStream::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            ServerStream::Tls($s) => {
                let $s = Pin::new($s.as_mut());
                $e
            }
        }
    };
}

impl tokio::io::AsyncRead for ServerStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl tokio::io::AsyncWrite for ServerStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            ServerStream::Plain(s) => s.is_write_vectored(),
            ServerStream::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }
}

/// A connection to a server with the write-stall timer.
pub struct ServerIo {
    inner: ServerStream,
    stall: IdleTimer,
}

impl ServerIo {
    pub fn new(stream: ServerStream, send_timeout: Duration) -> Self {
        ServerIo { inner: stream, stall: IdleTimer::new(send_timeout) }
    }

    /// For an idle pooled connection: false if the server closed it (or
    /// sent something unasked, which makes it unusable too). Costs no
    /// system call unless the socket was reported readable since its last
    /// read drained it (tokio clears readiness on a short read).
    pub fn idle_and_open(&self) -> bool {
        let tcp = match &self.inner {
            ServerStream::Plain(s) => s,
            ServerStream::Tls(s) => s.get_ref().0,
        };
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        match tcp.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Called when a write could not proceed: fails once the write has been
    /// blocked for `send_timeout`.
    fn on_blocked(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if self.stall.expired(cx) {
            Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "send_timeout: the server stopped reading"))
        } else {
            Poll::Pending
        }
    }
}

impl AsyncRead for ServerIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ServerIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.on_blocked(cx).map(Err),
            ready => {
                self.stall.progressed();
                ready
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.on_blocked(cx).map(Err),
            ready => {
                self.stall.progressed();
                ready
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.on_blocked(cx).map(Err),
            ready => {
                self.stall.progressed();
                ready
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
