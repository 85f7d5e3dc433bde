//! Copies a tunnel's bytes both ways without holding a buffer while the
//! tunnel is idle.
//!
//! `tokio::io::copy_bidirectional` keeps one buffer per direction for the
//! tunnel's whole life (2 KiB each here before), although an agent's tunnel
//! carries a few hundred bytes every half-minute. Here every read goes into
//! a buffer of the worker thread ([`SCRATCH`], 16 KiB, shared by all the
//! tunnels the thread runs) and is written on at once in the same poll; only
//! the bytes the other side cannot take now are copied into an owned buffer
//! of their exact size ([`Spill`]), kept until written, and freed. A tunnel
//! waiting for bytes therefore holds no buffer at all: just its sockets and
//! its task. Bytes already read past an upgrade's head ([`Prefixed`]) start
//! their direction as a spill. The bytes held in spills are counted in
//! `sysmanage_tunnel_buffered_bytes`.
//!
//! Semantics are `copy_bidirectional`'s: each direction copies until its
//! reader ends, then shuts the writer down (a half-close passes through);
//! the whole ends when both directions have, or at the first error. Writers
//! are flushed when their reader has nothing more for now (TLS writers hold
//! a record until flushed).

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::metrics::COUNTERS;

/// The per-thread read buffer's size: a large message moves in 16 KiB
/// reads (a TLS record's worth), with no per-tunnel memory.
pub const SCRATCH_SIZE: usize = 16 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; SCRATCH_SIZE].into_boxed_slice());
}

/// Bytes read from one side that the other side did not take yet.
struct Spill {
    bytes: Box<[u8]>,
    pos: usize,
}

impl Spill {
    fn of(bytes: &[u8]) -> Spill {
        COUNTERS.tunnel_buffered_bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Spill { bytes: bytes.into(), pos: 0 }
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        COUNTERS.tunnel_buffered_bytes.fetch_sub(self.bytes.len() as u64, Ordering::Relaxed);
    }
}

/// One direction's state: a few words while idle.
#[derive(Default)]
pub(super) struct Direction {
    spill: Option<Box<Spill>>,
    /// Bytes written to the writer since its last flush.
    need_flush: bool,
    /// The reader ended: shut the writer down, then done.
    read_done: bool,
    done: bool,
    copied: u64,
}

impl Direction {
    /// A direction whose first bytes to write are `pending` (read past an
    /// upgrade's head), before anything from its reader. They are held as
    /// a spill: counted as buffered until written.
    pub(super) fn starting_with(pending: &[u8]) -> Direction {
        Direction { spill: (!pending.is_empty()).then(|| Box::new(Spill::of(pending))), ..Direction::default() }
    }

    /// Bytes written on so far.
    pub(super) fn copied(&self) -> u64 {
        self.copied
    }

    /// The reader has ended (its writer is shut down, or being).
    pub(super) fn read_done(&self) -> bool {
        self.read_done
    }
}

impl Direction {
    /// Copies from `r` to `w` until `r` has nothing more for now (Pending),
    /// or the direction is done (Ready).
    pub(super) fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut r: Pin<&mut R>,
        mut w: Pin<&mut W>,
    ) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(self.copied));
        }
        loop {
            if let Some(spill) = &mut self.spill {
                while spill.pos < spill.bytes.len() {
                    let n = ready!(w.as_mut().poll_write(cx, &spill.bytes[spill.pos..]))?;
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    spill.pos += n;
                    self.copied += n as u64;
                    self.need_flush = true;
                }
                self.spill = None;
            }
            if self.read_done {
                if self.need_flush {
                    ready!(w.as_mut().poll_flush(cx))?;
                    self.need_flush = false;
                }
                ready!(w.as_mut().poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(self.copied));
            }
            let read = SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let mut buf = ReadBuf::new(&mut scratch[..]);
                match r.as_mut().poll_read(cx, &mut buf) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => {
                        let got = buf.filled().len();
                        if got == 0 {
                            self.read_done = true;
                            return Poll::Ready(Ok(()));
                        }
                        let mut off = 0;
                        while off < got {
                            match w.as_mut().poll_write(cx, &scratch[off..got]) {
                                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                                Poll::Ready(Ok(n)) => off += n,
                                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                                Poll::Pending => break,
                            }
                        }
                        self.copied += off as u64;
                        self.need_flush |= off > 0;
                        if off < got {
                            // The writer is full: keep the rest, exactly.
                            self.spill = Some(Box::new(Spill::of(&scratch[off..got])));
                        }
                        Poll::Ready(Ok(()))
                    }
                }
            });
            match read {
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    if self.need_flush {
                        ready!(w.as_mut().poll_flush(cx))?;
                        self.need_flush = false;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// An upgraded connection handed to its tunnel: the socket, and the bytes
/// already read from it past the upgrade's head (nearly always none),
/// which the tunnel writes on before anything it reads
/// ([`Direction::starting_with`]).
pub struct Prefixed<T> {
    io: T,
    pre: Bytes,
}

impl<T> Prefixed<T> {
    pub fn new(io: T, pre: Bytes) -> Self {
        // An empty slice of a read buffer would still hold the whole buffer.
        let pre = if pre.is_empty() { Bytes::new() } else { pre };
        Prefixed { io, pre }
    }

    /// The socket and the bytes read past the head.
    pub fn into_parts(self) -> (T, Bytes) {
        (self.io, self.pre)
    }
}

/// Copies between `a` and `b` both ways until both directions have ended
/// (the tests' driver of [`Direction`]; tunnels poll theirs themselves);
/// returns the bytes copied from `a` to `b` and from `b` to `a`.
#[cfg(test)]
pub async fn both_ways<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let (mut a_to_b, mut b_to_a) = (Direction::default(), Direction::default());
    std::future::poll_fn(|cx| {
        let up = a_to_b.poll_copy(cx, Pin::new(&mut *a), Pin::new(&mut *b))?;
        let down = b_to_a.poll_copy(cx, Pin::new(&mut *b), Pin::new(&mut *a))?;
        match (up, down) {
            (Poll::Ready(up), Poll::Ready(down)) => Poll::Ready(Ok((up, down))),
            _ => Poll::Pending,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn buffered() -> u64 {
        COUNTERS.tunnel_buffered_bytes.load(Ordering::Relaxed)
    }

    /// Held by the tests that spill, so that one reads the gauge while no
    /// other moves it (no other test in this crate runs a relay).
    static SPILLING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    #[tokio::test]
    async fn bytes_cross_both_ways_and_a_half_close_passes_through() {
        let (mut client, mut a) = tokio::io::duplex(64 * 1024);
        let (mut b, mut server) = tokio::io::duplex(64 * 1024);
        let relay = tokio::spawn(async move { both_ways(&mut a, &mut b).await });
        client.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        server.write_all(b"world!").await.unwrap();
        let mut got = [0u8; 6];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"world!");
        // The client half-closes: the server sees EOF and can still answer.
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        server.write_all(b"last words").await.unwrap();
        server.shutdown().await.unwrap();
        let mut tail = Vec::new();
        client.read_to_end(&mut tail).await.unwrap();
        assert_eq!(tail, b"last words");
        assert_eq!(relay.await.unwrap().unwrap(), (5, 16));
    }

    /// Bytes read past an upgrade's head are written before anything read
    /// after them, counted as copied, and as buffered until written.
    #[tokio::test]
    async fn bytes_read_past_the_head_go_first() {
        let _spilling = SPILLING.lock().await;
        let (mut client, mut a) = tokio::io::duplex(1024);
        let (mut b, mut server) = tokio::io::duplex(1024);
        let mut up = Direction::starting_with(b"early ");
        assert_eq!(buffered(), 6);
        client.write_all(b"later").await.unwrap();
        client.shutdown().await.unwrap();
        let copied = std::future::poll_fn(|cx| up.poll_copy(cx, Pin::new(&mut a), Pin::new(&mut b))).await.unwrap();
        assert_eq!((copied, buffered()), (11, 0));
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"early later");
        // Nothing pending: no spill.
        assert!(Direction::starting_with(b"").spill.is_none());
    }

    #[tokio::test]
    async fn a_large_message_streams_through_small_pipes_and_nothing_stays_held() {
        let _spilling = SPILLING.lock().await;
        // Pipes of 1 KiB: almost every read spills; 8 MiB must still arrive
        // in order, and the spill is freed once the reader caught up.
        let (mut client, mut a) = tokio::io::duplex(1024);
        let (mut b, mut server) = tokio::io::duplex(1024);
        let relay = tokio::spawn(async move { both_ways(&mut a, &mut b).await });
        let message: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let sent = message.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client.shutdown().await.unwrap();
            client
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert!(got == message, "the message arrived changed ({} of {} bytes)", got.len(), message.len());
        drop(server);
        let _client = writer.await.unwrap();
        let (up, _) = relay.await.unwrap().unwrap();
        assert_eq!(up, message.len() as u64);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_blocked_writer_holds_exactly_the_unwritten_bytes_until_it_drains() {
        let _spilling = SPILLING.lock().await;
        let (mut client, mut a) = tokio::io::duplex(64 * 1024);
        let (mut b, mut server) = tokio::io::duplex(4 * 1024);
        let relay = tokio::spawn(async move { both_ways(&mut a, &mut b).await });
        client.write_all(&[7u8; 20 * 1024]).await.unwrap();
        // The relay reads up to 16 KiB, writes 4 KiB, spills the rest.
        let mut held = 0;
        for _ in 0..100 {
            tokio::task::yield_now().await;
            held = buffered();
            if held > 0 {
                break;
            }
        }
        assert!(held > 0 && held <= SCRATCH_SIZE as u64, "spill while the writer is full: {held}");
        let mut got = vec![0u8; 20 * 1024];
        server.read_exact(&mut got).await.unwrap();
        assert!(got.iter().all(|b| *b == 7));
        // Caught up and idle: the tunnel holds no buffer.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(buffered(), 0, "bytes still held by an idle tunnel");
        drop(client);
        drop(server);
        let _ = relay.await.unwrap();
    }
}
