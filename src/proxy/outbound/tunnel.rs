//! A WebSocket tunnel after the 101: bytes copied both ways until both
//! sides have closed (a half-close is passed through, and the other side
//! then has the route's `tunnel_fin_timeout` to finish), the tunnel is idle
//! for the route's `tunnel_timeout`, the server is put in maintenance, or
//! is marked down by active checks (pools with `close_tunnels_on_down`),
//! or the node shuts down (agents then reconnect to another node). The last
//! two close every tunnel of the server or node, so each waits a random
//! part of `limits.tunnel_close_spread` first: thousands of agents do not
//! reconnect in the same millisecond. Bytes are counted as they pass; the
//! session's TTL is refreshed while the tunnel lives.
//!
//! # Shedding
//!
//! A node sheds its tunnels when it drains (`ctl drain-node`) and when the
//! old process of an in-place upgrade gives up the tunnels it still holds:
//! the caller gives a [`Shed`] order through the node's `Shared`
//! (`proxy::Shared::shed_tunnels(over, why)`, undone by
//! `Shared::stop_shedding()`). Each tunnel then closes at its own random
//! instant within `over` counted from the order (not from when the tunnel
//! saw it), so the closes spread evenly over the window and agents
//! reconnect through other nodes a few at a time; a tunnel opened during
//! the window closes within what is left of it, one opened after the window
//! within `over` of its opening ([`shed_at`]). `None` cancels the closes not
//! yet done. Every ended tunnel is counted by reason in
//! `sysmanage_tunnels_ended_total` ([`End::label`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::futures::Notified;

use super::relay::{Direction, Prefixed};
use crate::health::{ServerState, TUNNEL_BELL};
use crate::metrics::COUNTERS;
use crate::tls::TlsServerStream;

/// Why a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Closed,
    Idle,
    /// One side closed and the other did not finish within the fin timeout.
    HalfClosed,
    Maintenance,
    ServerDown,
    /// The server is no longer the active server of its `primary` pool.
    NotActive,
    Shutdown,
    /// Shed because the node drains (`ctl drain-node`).
    Draining,
    /// Shed by the old process of an in-place upgrade.
    Upgrade,
    Error,
}

impl End {
    /// Every reason, in the order of `metrics::TUNNEL_END_REASONS`.
    pub const ALL: [End; 10] = [
        End::Closed,
        End::Idle,
        End::HalfClosed,
        End::Maintenance,
        End::ServerDown,
        End::NotActive,
        End::Shutdown,
        End::Draining,
        End::Upgrade,
        End::Error,
    ];

    /// The `reason` label of `sysmanage_tunnels_ended_total`.
    pub const fn label(self) -> &'static str {
        crate::metrics::TUNNEL_END_REASONS[self.index()]
    }

    /// Its index in `metrics::TUNNEL_END_REASONS` and `Counters::tunnels_ended`.
    pub const fn index(self) -> usize {
        match self {
            End::Closed => 0,
            End::Idle => 1,
            End::HalfClosed => 2,
            End::Maintenance => 3,
            End::ServerDown => 4,
            End::NotActive => 5,
            End::Shutdown => 6,
            End::Draining => 7,
            End::Upgrade => 8,
            End::Error => 9,
        }
    }

    /// Counts a tunnel that ended for this reason.
    pub fn count(self) {
        COUNTERS.tunnels_ended[self.index()].fetch_add(1, Ordering::Relaxed);
    }
}

/// An order to close every tunnel of the node within a window: the node
/// drains, or the old process of an upgrade gives up its tunnels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shed {
    /// The window, from `since_ms`.
    pub over: Duration,
    /// Why: [`End::Draining`] or [`End::Upgrade`].
    pub why: End,
    /// When the order was given, in `clock::now_ms` time.
    pub since_ms: u64,
}

impl Shed {
    /// An order given now.
    pub fn now(over: Duration, why: End) -> Shed {
        Shed { over, why, since_ms: crate::clock::now_ms() }
    }
}

/// When a tunnel opened at `opened_ms` closes under `order` (in
/// `clock::now_ms` time); `pick(n)` is a random number in `0..n` (n > 0).
/// A tunnel open when the order was given closes at a random instant of
/// the window; one opened during it, within what is left of it; one opened
/// after it, within `over` of its opening. Pure, for the tests.
pub fn shed_at(order: &Shed, opened_ms: u64, mut pick: impl FnMut(u64) -> u64) -> u64 {
    let over = order.over.as_millis() as u64;
    let end = order.since_ms + over;
    let (from, width) = if opened_ms <= order.since_ms {
        (order.since_ms, over)
    } else if opened_ms < end {
        (opened_ms, end - opened_ms)
    } else {
        (opened_ms, over)
    };
    from + if width == 0 { 0 } else { pick(width) }
}

/// How long a tunnel may live in each of its states.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// No byte either way for this long closes the tunnel.
    pub idle: Duration,
    /// After one side closed, the other gets this long.
    pub fin: Duration,
    /// Closing with the others (shutdown, server down): a random delay up
    /// to this first.
    pub spread: Duration,
    /// Close when the server is marked down.
    pub close_on_down: bool,
}

/// The node's orders to all its open tunnels: close now (the node shuts
/// down; each tunnel waits its random part of `tunnel_close_spread`) or
/// shed over a window ([`Shed`]). One per node, in `proxy::Shared`. Each
/// order rings `health::TUNNEL_BELL`, on which every tunnel waits; a tunnel
/// then reads the orders.
#[derive(Default)]
pub struct Orders {
    closing: AtomicBool,
    shed: std::sync::Mutex<Option<Shed>>,
    /// Bumped with each shed order or its cancel.
    shed_version: AtomicU32,
}

impl Orders {
    /// The node shuts down: every tunnel closes (spread).
    pub fn close_all(&self) {
        self.closing.store(true, Ordering::Release);
        TUNNEL_BELL.notify_waiters();
    }

    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Gives a shed order (`None`: cancels the one given).
    pub fn shed(&self, order: Option<Shed>) {
        *self.shed.lock().unwrap_or_else(|e| e.into_inner()) = order;
        self.shed_version.fetch_add(1, Ordering::Release);
        TUNNEL_BELL.notify_waiters();
    }

    /// The shed order in force.
    pub fn shed_order(&self) -> Option<Shed> {
        *self.shed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The client's side of a tunnel: its socket itself when the connection's
/// type is one the listeners make (plain TCP or TLS over TCP), else
/// hyper's `Upgraded` (boxed: the rare case).
pub enum Client {
    Tcp(TcpStream),
    Tls(Box<TlsServerStream<TcpStream>>),
    Hyper(Box<TokioIo<Upgraded>>),
}

macro_rules! client_io {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Client::Tcp($s) => {
                let $s = Pin::new($s);
                $e
            }
            Client::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
            Client::Hyper($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncRead for Client {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        client_io!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Client {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        client_io!(self, s => s.poll_write(cx, buf))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        client_io!(self, s => s.poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        client_io!(self, s => s.poll_shutdown(cx))
    }
}

/// Takes the client's side of a tunnel out of hyper's `Upgraded`. The
/// connection's own code provides it (`inbound::conn::unwrap_upgraded`, for
/// its socket type), through the connection's `ConnInfo`.
pub type UnwrapClient = fn(Upgraded) -> Prefixed<Client>;

/// A socket type of the listeners, which a tunnel holds as itself.
pub trait ClientSocket: Sized {
    fn into_client(self) -> Client;
}

impl ClientSocket for TcpStream {
    fn into_client(self) -> Client {
        Client::Tcp(self)
    }
}

impl ClientSocket for TlsServerStream<TcpStream> {
    fn into_client(self) -> Client {
        Client::Tls(Box::new(self))
    }
}

impl Client {
    /// hyper's `Upgraded` kept as it is (a connection of another type).
    pub fn upgraded(u: Upgraded) -> Prefixed<Client> {
        Prefixed::new(Client::Hyper(Box::new(TokioIo::new(u))), Bytes::new())
    }
}

/// Keeps a tunnel's sticky session alive: refreshed every quarter of its
/// TTL while the tunnel lives.
/// The pool and the server are the tunnel's own ([`ServerState`]).
pub struct SessionTouch {
    sessions: Arc<crate::sessions::Sessions>,
    key: Box<str>,
    /// The session TTL, in the milliseconds the table counts in.
    ttl_ms: u64,
    /// When the tunnel refreshes it next (`clock::now_ms` time): here
    /// rather than in the tunnel, which then holds it only when sticky.
    next_ms: u64,
}

impl SessionTouch {
    pub fn new(sessions: Arc<crate::sessions::Sessions>, key: Box<str>, ttl: Duration) -> SessionTouch {
        // `next_ms` is set when the tunnel opens.
        SessionTouch { sessions, key, ttl_ms: ttl.as_millis() as u64, next_ms: u64::MAX }
    }

    /// A quarter of the session TTL (at least 1 s by config, so at least
    /// 250 ms); the floor only keeps the period off zero. A period of a
    /// second or more let sessions with a TTL under 2 s expire while their
    /// tunnel was open: the first refresh came after the record had expired.
    fn every_ms(&self) -> u64 {
        (self.ttl_ms / 4).max(100)
    }

    fn refresh(&self, server: &ServerState) {
        let now = crate::sessions::unix_now_ms();
        if let crate::sessions::Touch::Refreshed(rec) =
            self.sessions.table.touch(&server.pool, &self.key, &server.name, Duration::from_millis(self.ttl_ms), now)
        {
            self.sessions.persist(rec);
        }
    }
}

/// What a tunnel holds until it ends, beside its sockets: it counts as
/// connection activity, and as a request in flight to its server and an
/// open tunnel (the guards are dropped with it).
pub struct Guards {
    pub busy: crate::proxy::activity::ActiveGuard,
    pub count: TunnelCount,
}

/// Counts an open WebSocket tunnel, node-wide and for its server, and as a
/// request in flight to its server (the request's own count ends when the
/// tunnel starts), until dropped.
pub struct TunnelCount(Arc<ServerState>);

impl TunnelCount {
    /// The tunnel's server.
    pub fn server(&self) -> &ServerState {
        &self.0
    }

    pub fn new(server: Arc<ServerState>) -> TunnelCount {
        COUNTERS.websocket_tunnels.fetch_add(1, Ordering::Relaxed);
        server.stats.tunnels.fetch_add(1, Ordering::Relaxed);
        server.in_flight.fetch_add(1, Ordering::Relaxed);
        TunnelCount(server)
    }
}

impl Drop for TunnelCount {
    fn drop(&mut self) {
        COUNTERS.websocket_tunnels.fetch_sub(1, Ordering::Relaxed);
        self.0.stats.tunnels.fetch_sub(1, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A running tunnel. A hand-written future, so that what an idle
    /// tunnel holds is exactly this: its two sockets, two copy states of a
    /// few words (no buffer, see `relay`), one timer for all its deadlines,
    /// one waiter on its server's bell and one on the node's, and its
    /// counts. Resolves to why it ended and the bytes copied each way.
    /// Kept small enough for tokio's task cell to be 512 bytes, not 640
    /// (`upgrade::size`): what only a closing or sticky tunnel needs is
    /// boxed apart ([`Closing`], [`SessionTouch`]).
    pub struct Tunnel<S> {
        client: Client,
        server: S,
        up: Direction,
        down: Direction,
        // The soonest deadline, armed lazily at or before it (the deadline
        // it is armed at is its own, `Sleep::deadline`): a byte that moves
        // the idle deadline later costs no timer reset.
        #[pin]
        timer: tokio::time::Sleep,
        #[pin]
        bell: Notified<'static>,
        orders: Arc<Orders>,
        timers: Timers,
        // `limits.spread`.
        spread_ms: u32,
        last_ms: u64,
        opened_ms: u64,
        touch: Option<Box<SessionTouch>>,
        // `state.tunnel_events` as seen at the start.
        kicks: u32,
        downs: u32,
        demotions: u32,
        shed_seen: u32,
        flags: u8,
        guards: Guards,
    }
}

impl<S> Tunnel<S> {
    /// The server the tunnel goes to.
    pub fn server(&self) -> &ServerState {
        self.guards.count.server()
    }
}

const SHUTTING: u8 = 1;
const DOWN: u8 = 2;
const NOT_ACTIVE: u8 = 4;
/// `limits.close_on_down`.
const CLOSE_ON_DOWN: u8 = 8;

impl<S: AsyncRead + AsyncWrite + Unpin> Tunnel<S> {
    /// The bytes each side sent past the upgrade's head are written to the
    /// other first.
    pub fn new(
        client: Prefixed<Client>,
        server: Prefixed<S>,
        limits: Limits,
        orders: Arc<Orders>,
        touch: Option<Box<SessionTouch>>,
        guards: Guards,
    ) -> Self {
        let ((client, to_server), (server, to_client)) = (client.into_parts(), server.into_parts());
        if !matches!(client, Client::Hyper(_)) {
            // The client's connection task is over (its socket is ours): it
            // must not stay allocated for the waker it left.
            guards.busy.forget_reader();
        }
        let now = crate::clock::now_ms();
        let ev = &guards.count.0.tunnel_events;
        let (kicks, downs, demotions) =
            (ev.kicks.load(Ordering::Acquire), ev.downs.load(Ordering::Acquire), ev.demotions.load(Ordering::Acquire));
        let touch = touch.map(|mut t| {
            t.next_ms = now + t.every_ms();
            t
        });
        let timers = Timers::new(limits.idle, limits.fin);
        let first = timers.next(now).min(touch.as_ref().map_or(u64::MAX, |t| t.next_ms));
        Tunnel {
            client,
            server,
            up: Direction::starting_with(&to_server),
            down: Direction::starting_with(&to_client),
            timer: tokio::time::sleep_until(crate::clock::instant_at(first).into()),
            bell: TUNNEL_BELL.notified(),
            timers,
            spread_ms: limits.spread.as_millis().min(u32::MAX as u128) as u32,
            orders,
            last_ms: now,
            opened_ms: now,
            touch,
            kicks,
            downs,
            demotions,
            // Not seen yet: an order given before the tunnel opened (the
            // node already drains) applies to it.
            shed_seen: u32::MAX,
            flags: if limits.close_on_down { CLOSE_ON_DOWN } else { 0 },
            guards,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Future for Tunnel<S> {
    type Output = (End, u64, u64);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<(End, u64, u64)> {
        let mut this = self.project();
        // The bell: a waiter that rang is replaced (and polled, so that it
        // waits) before the events and orders are read, so none is missed.
        while this.bell.as_mut().poll(cx).is_ready() {
            this.bell.set(TUNNEL_BELL.notified());
        }
        let server = this.guards.count.server();
        let ev = &server.tunnel_events;
        if ev.kicks.load(Ordering::Acquire) != *this.kicks {
            return Poll::Ready((End::Maintenance, 0, 0));
        }
        let spread = Duration::from_millis(u64::from(*this.spread_ms));
        if *this.flags & CLOSE_ON_DOWN != 0 {
            if *this.flags & DOWN == 0 && ev.downs.load(Ordering::Acquire) != *this.downs {
                *this.flags |= DOWN;
                this.timers.close_with_others(spread, End::ServerDown);
            }
            if *this.flags & NOT_ACTIVE == 0 && ev.demotions.load(Ordering::Acquire) != *this.demotions {
                *this.flags |= NOT_ACTIVE;
                this.timers.close_with_others(spread, End::NotActive);
            }
        }
        if *this.flags & SHUTTING == 0 && this.orders.closing() {
            *this.flags |= SHUTTING;
            this.timers.close_with_others(spread, End::Shutdown);
        }
        let version = this.orders.shed_version.load(Ordering::Acquire);
        if version != *this.shed_seen {
            *this.shed_seen = version;
            this.timers.shed(this.orders.shed_order(), *this.opened_ms);
        }

        // The bytes.
        let (up0, down0) = (this.up.copied(), this.down.copied());
        let up = this.up.poll_copy(cx, Pin::new(&mut *this.client), Pin::new(&mut *this.server));
        let down = this.down.poll_copy(cx, Pin::new(&mut *this.server), Pin::new(&mut *this.client));
        let (up, down) = match (up, down) {
            (Poll::Ready(Err(_)), _) | (_, Poll::Ready(Err(_))) => return Poll::Ready((End::Error, 0, 0)),
            (Poll::Ready(Ok(up)), Poll::Ready(Ok(down))) => return Poll::Ready((End::Closed, up, down)),
            _ => (this.up.copied() - up0, this.down.copied() - down0),
        };
        let mut now = crate::clock::now_ms();
        if up + down > 0 {
            COUNTERS.tunnel_bytes_up.fetch_add(up, Ordering::Relaxed);
            COUNTERS.tunnel_bytes_down.fetch_add(down, Ordering::Relaxed);
            *this.last_ms = now;
        }
        if this.up.read_done() || this.down.read_done() {
            // One side closed: the other now has the fin timeout.
            this.timers.one_side_closed(now);
        }

        // The deadlines.
        loop {
            if let Some(t) = this.touch.as_deref_mut() {
                if now >= t.next_ms {
                    t.refresh(this.guards.count.server());
                    t.next_ms = now + t.every_ms();
                }
            }
            if let Some(end) = this.timers.expired(*this.last_ms, now) {
                return Poll::Ready((end, 0, 0));
            }
            let next = this.timers.next(*this.last_ms).min(this.touch.as_ref().map_or(u64::MAX, |t| t.next_ms));
            let armed = crate::clock::ms_at(this.timer.deadline().into_std());
            if this.timer.is_elapsed() || armed > next {
                let at = next.max(now + 1);
                this.timer.as_mut().reset(crate::clock::instant_at(at).into());
            }
            if this.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            now = crate::clock::now_ms();
        }
    }
}

/// The tunnel's deadlines, in `clock::now_ms` time: silence (`idle_ms`
/// since the last byte), and those of a tunnel on its way out
/// ([`Closing`]).
struct Timers {
    idle_ms: u64,
    /// What the other side has once one side closed.
    fin_ms: u64,
    /// Made when the first of its deadlines is set: an idle tunnel has none.
    closing: Option<Box<Closing>>,
}

/// The deadlines of a tunnel on its way out: one side closed, a close
/// decided with the others (shutdown, server down), a close ordered
/// node-wide. Boxed apart from the tunnel, which has none of them for most
/// of its life.
#[derive(Default)]
struct Closing {
    /// One side closed: the other has until then.
    fin_at: Option<u64>,
    close_at: Option<(u64, End)>,
    /// A close ordered node-wide ([`Shed`]); apart from `close_at` so that
    /// undraining cancels it alone.
    shed_at: Option<(u64, End)>,
}

impl Timers {
    fn new(idle: Duration, fin: Duration) -> Timers {
        Timers { idle_ms: idle.as_millis() as u64, fin_ms: fin.as_millis() as u64, closing: None }
    }

    fn closing(&mut self) -> &mut Closing {
        self.closing.get_or_insert_with(Box::default)
    }

    /// The soonest deadline, the last byte having passed at `last`.
    fn next(&self, last: u64) -> u64 {
        let idle = last + self.idle_ms;
        let Some(c) = self.closing.as_deref() else { return idle };
        let at = |d: Option<(u64, End)>| d.map_or(u64::MAX, |(at, _)| at);
        idle.min(c.fin_at.unwrap_or(u64::MAX)).min(at(c.close_at)).min(at(c.shed_at))
    }

    /// Why the tunnel ends at `now`, if a deadline has passed.
    fn expired(&self, last: u64, now: u64) -> Option<End> {
        if let Some(c) = self.closing.as_deref() {
            match (c.close_at, c.shed_at) {
                (Some((at, why)), _) if now >= at => return Some(why),
                (_, Some((at, why))) if now >= at => return Some(why),
                _ if c.fin_at.is_some_and(|at| now >= at) => return Some(End::HalfClosed),
                _ => {}
            }
        }
        (now.saturating_sub(last) >= self.idle_ms).then_some(End::Idle)
    }

    /// One side closed at `now` (or earlier: the first call counts).
    fn one_side_closed(&mut self, now: u64) {
        let at = now + self.fin_ms;
        self.closing().fin_at.get_or_insert(at);
    }

    /// A close decided with the other tunnels: at a random instant within
    /// `spread`, unless one is due sooner.
    fn close_with_others(&mut self, spread: Duration, why: End) {
        let at = spread_from_now(spread);
        let c = self.closing();
        c.close_at = Some(soonest(c.close_at, at, why));
    }

    /// A node-wide order: close at this tunnel's instant of it, or (`None`)
    /// not any more.
    fn shed(&mut self, order: Option<Shed>, opened_ms: u64) {
        match order {
            Some(o) => self.closing().shed_at = Some((shed_at(&o, opened_ms, |n| fastrand::u64(0..n)), o.why)),
            // Every tunnel's first look at the orders finds none: no box.
            None => {
                if let Some(c) = self.closing.as_deref_mut() {
                    c.shed_at = None;
                }
            }
        }
    }
}

/// Now plus a random part of `spread`, in `clock::now_ms` time.
fn spread_from_now(spread: Duration) -> u64 {
    let ms = spread.as_millis() as u64;
    crate::clock::now_ms() + if ms == 0 { 0 } else { fastrand::u64(0..ms) }
}

/// The earlier of a close already decided and a new one.
fn soonest(current: Option<(u64, End)>, at: u64, why: End) -> (u64, End) {
    match current {
        Some((t, w)) if t <= at => (t, w),
        _ => (at, why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(since_ms: u64, over_ms: u64) -> Shed {
        Shed { over: Duration::from_millis(over_ms), why: End::Draining, since_ms }
    }

    /// Tunnels open at the order close at `since + pick(over)`: the whole
    /// window is used, from its first to its last millisecond.
    #[test]
    fn shed_instants_spread_over_the_window() {
        let o = order(10_000, 3_000);
        assert_eq!(shed_at(&o, 5_000, |_| 0), 10_000);
        assert_eq!(shed_at(&o, 5_000, |n| n - 1), 12_999);
        // A thousand tunnels with evenly drawn numbers land evenly: every
        // tenth of the window gets a tenth of them.
        let mut tenths = [0u32; 10];
        for i in 0..1000u64 {
            let at = shed_at(&o, 9_000, |n| i * n / 1000);
            assert!((10_000..13_000).contains(&at), "{at}");
            tenths[((at - 10_000) / 300) as usize] += 1;
        }
        assert!(tenths.iter().all(|t| *t == 100), "{tenths:?}");
        // The range asked of the random source is the window.
        let mut asked = 0;
        shed_at(&o, 0, |n| {
            asked = n;
            0
        });
        assert_eq!(asked, 3_000);
    }

    /// A tunnel opened during the window closes within what is left of
    /// it; one opened after it, within `over` of its opening.
    #[test]
    fn late_tunnels_stay_inside_the_window_or_get_one_of_their_own() {
        let o = order(10_000, 3_000);
        let mut asked = 0;
        let at = shed_at(&o, 12_000, |n| {
            asked = n;
            n - 1
        });
        assert_eq!((asked, at), (1_000, 12_999));
        assert_eq!(shed_at(&o, 20_000, |_| 0), 20_000);
        assert_eq!(shed_at(&o, 20_000, |n| n - 1), 22_999);
        // A window of zero closes at once, without asking for a number.
        assert_eq!(shed_at(&order(10_000, 0), 5_000, |_| unreachable!()), 10_000);
    }

    /// The timers follow the order, and `None` (undrain) cancels a shed
    /// close not yet done without touching the others.
    #[test]
    fn undrain_cancels_the_shed_close_only() {
        let last = 1_000;
        let mut t = Timers::new(Duration::from_secs(3_600), Duration::from_secs(1));
        // Every tunnel's first look at the orders finds none: no box.
        t.shed(None, 1_000);
        assert!(t.closing.is_none());
        t.shed(Some(order(2_000, 1_000)), 1_000);
        let (at, why) = t.closing.as_ref().and_then(|c| c.shed_at).unwrap();
        assert!((2_000..3_000).contains(&at) && why == End::Draining);
        assert_eq!(t.next(last), at);
        assert_eq!(t.expired(last, at), Some(End::Draining));
        assert_eq!(t.expired(last, at - 1), None);
        t.shed(None, 1_000);
        assert_eq!(t.expired(last, 3_000), None);
        assert_eq!(t.next(last), 1_000 + 3_600_000);
        // A side closed: the fin timeout counts from the first close seen.
        t.one_side_closed(4_000);
        t.one_side_closed(4_500);
        assert_eq!(t.next(last), 5_000);
        assert_eq!((t.expired(last, 4_999), t.expired(last, 5_000)), (None, Some(End::HalfClosed)));
        // A close decided with the others stays when an order is cancelled,
        // and comes first when both are due.
        t.closing().close_at = Some((4_800, End::Shutdown));
        t.shed(Some(order(4_000, 0)), 1_000);
        assert_eq!(t.expired(last, 4_800), Some(End::Shutdown));
        t.shed(None, 1_000);
        assert_eq!(t.next(last), 4_800);
        // An upgrade's order counts as such.
        t.closing().close_at = None;
        t.shed(Some(Shed { over: Duration::ZERO, why: End::Upgrade, since_ms: 4_600 }), 1_000);
        assert_eq!(t.expired(last, 4_600), Some(End::Upgrade));
    }

    #[test]
    fn every_end_has_its_own_label() {
        for (i, e) in End::ALL.iter().enumerate() {
            assert_eq!(e.index(), i, "{e:?}");
            assert_eq!(e.label(), crate::metrics::TUNNEL_END_REASONS[i]);
        }
        assert_eq!(End::Draining.label(), "draining");
        assert_eq!(End::Upgrade.label(), "upgrade");
    }
}
