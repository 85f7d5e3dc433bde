//! A client connection's activity, shared by everything that works for it:
//! the connection's I/O wrapper (`inbound::conn::ClientIo`, which runs its
//! idle and header timers and decides when to park it), the requests on it
//! (each holds an [`ActiveGuard`] until its response body is done), and a
//! WebSocket tunnel taken over from it (which keeps its `max_connections`
//! place).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use futures_util::task::AtomicWaker;

/// Shared between a connection's I/O wrapper and the requests on it.
#[derive(Debug, Default)]
pub struct ConnActivity {
    /// Requests (or tunnels) in progress on this connection.
    pub(in crate::proxy) active: AtomicU32,
    /// Requests started so far: a request answered before the reader looked
    /// again still moves the connection from its header timer to idle.
    pub(in crate::proxy) started: AtomicU64,
    /// What the connection holds until its last user (the connection task or
    /// a WebSocket tunnel taken over from it) is gone: its place under
    /// `max_connections`, and the shutdown drain's sender. Only dropped with
    /// the activity, so no lock (the record then fits an 80-byte allocation
    /// instead of 96: it lives as long as any tunnel made from it).
    pub(in crate::proxy) holds: Option<Box<dyn Send + Sync + std::fmt::Debug>>,
    /// HTTP/2 connections exchange control frames while idle; those bytes do
    /// not start a request head.
    pub(in crate::proxy) http2: AtomicBool,
    /// The reader waiting while a request was busy: woken when the last
    /// request ends, so the idle timer starts even if no byte arrives.
    pub(in crate::proxy) reader: AtomicWaker,
    /// The last request came with a body that may not have been read to its
    /// end: hyper might still have to drain it, so the connection is not
    /// parked until a later request (or the end of that body) says so.
    pub(in crate::proxy) body_open: AtomicBool,
    /// Parking handshake between `ClientIo` and the HTTP/1.1 driver:
    /// [`PARK_NONE`], [`PARK_WANTED`] or [`PARK_ENDING`].
    pub(in crate::proxy) park: AtomicU8,
}

/// No parking in progress.
pub(in crate::proxy) const PARK_NONE: u8 = 0;
/// The reader found the connection idle with nothing to read.
pub(in crate::proxy) const PARK_WANTED: u8 = 1;
/// The driver is ending hyper's connection to park it: shutdown must not
/// close the socket.
pub(in crate::proxy) const PARK_ENDING: u8 = 2;

impl ConnActivity {
    /// Activity that keeps `hold` (e.g. a semaphore permit) alive as long as
    /// the connection or any tunnel made from it, and counts the connection
    /// in `sysmanage_active_connections` for as long.
    pub fn holding(hold: Box<dyn Send + Sync + std::fmt::Debug>) -> Self {
        crate::metrics::COUNTERS.active_connections.fetch_add(1, Ordering::Relaxed);
        ConnActivity {
            active: AtomicU32::new(0),
            started: AtomicU64::new(0),
            holds: Some(hold),
            http2: AtomicBool::new(false),
            reader: AtomicWaker::new(),
            body_open: AtomicBool::new(false),
            park: AtomicU8::new(PARK_NONE),
        }
    }

    /// The current request's body was read to its end.
    pub fn body_finished(&self) {
        self.body_open.store(false, Ordering::Relaxed);
    }

    /// For the driver: true once if the reader asked to park; from then on
    /// until [`ConnActivity::park_done`] the socket is not shut down.
    pub fn take_park_request(&self) -> bool {
        // Called after every poll of hyper's connection: a plain load first
        // keeps the usual answer (no request) free of a locked instruction.
        self.park.load(Ordering::Acquire) == PARK_WANTED
            && self.park.compare_exchange(PARK_WANTED, PARK_ENDING, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    /// For the driver: parking finished or was abandoned.
    pub fn park_done(&self) {
        self.park.store(PARK_NONE, Ordering::Release);
    }

    pub fn mark_http2(&self) {
        if !self.http2.load(Ordering::Relaxed) {
            self.http2.store(true, Ordering::Relaxed);
        }
    }
}

/// Marks its connection busy for as long as it lives.
#[derive(Debug)]
pub struct ActiveGuard(Arc<ConnActivity>);

impl Drop for ConnActivity {
    fn drop(&mut self) {
        if self.holds.is_some() {
            crate::metrics::COUNTERS.active_connections.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl ActiveGuard {
    pub fn new(activity: &Arc<ConnActivity>) -> Self {
        activity.started.fetch_add(1, Ordering::Relaxed);
        activity.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(activity.clone())
    }

    /// A request was parsed (taken when hyper calls the service, before its
    /// future first runs, so no moment between parsing and answering looks
    /// idle); `has_body`: its body is not known to be empty.
    pub fn for_request(activity: &Arc<ConnActivity>, has_body: bool) -> Self {
        activity.body_open.store(has_body, Ordering::Relaxed);
        Self::new(activity)
    }
}

impl ActiveGuard {
    /// Drops the waker the connection's reader left, once that reader is
    /// gone for good (its socket went to a WebSocket tunnel): a waker keeps
    /// its finished task allocated.
    pub fn forget_reader(&self) {
        drop(self.0.reader.take());
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.reader.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    /// A connection's record lives as long as the connection and any tunnel
    /// made from it: with `Arc`'s two counts, 72 bytes, which the allocator
    /// serves from 80-byte chunks (glibc: size + 8, rounded up to 16).
    #[test]
    fn the_activity_record_fits_an_80_byte_allocation() {
        assert!(std::mem::size_of::<super::ConnActivity>() <= 56);
    }
}
