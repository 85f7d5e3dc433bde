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
    pub sessions: Arc<crate::sessions::Sessions>,
    pub key: Box<str>,
    pub ttl: Duration,
}

impl SessionTouch {
    /// A quarter of the session TTL (at least 1 s by config, so at least
    /// 250 ms); the floor only keeps the period off zero. A period of a
    /// second or more let sessions with a TTL under 2 s expire while their
    /// tunnel was open: the first refresh came after the record had expired.
    fn every_ms(&self) -> u64 {
        (self.ttl.as_millis() as u64 / 4).max(100)
    }

    fn refresh(&self, server: &ServerState) {
        let now = crate::sessions::unix_now_ms();
        if let crate::sessions::Touch::Refreshed(rec) =
            self.sessions.table.touch(&server.pool, &self.key, &server.name, self.ttl, now)
        {
            self.sessions.persist(rec);
        }
    }
}

/// What a tunnel holds until it ends, beside its sockets: it counts as
/// connection activity, a request in flight to its server and an open
/// tunnel (the guards are dropped with it).
pub struct Guards {
    pub busy: crate::proxy::activity::ActiveGuard,
    pub in_flight: super::response::InFlight,
    pub count: TunnelCount,
}

/// Counts an open WebSocket tunnel, node-wide and for its server, until
/// dropped.
pub struct TunnelCount(Arc<ServerState>);

impl TunnelCount {
    /// The tunnel's server.
    pub fn server(&self) -> &ServerState {
        &self.0
    }

    pub fn new(server: Arc<ServerState>) -> TunnelCount {
        COUNTERS.websocket_tunnels.fetch_add(1, Ordering::Relaxed);
        server.stats.tunnels.fetch_add(1, Ordering::Relaxed);
        TunnelCount(server)
    }
}

impl Drop for TunnelCount {
    fn drop(&mut self) {
        COUNTERS.websocket_tunnels.fetch_sub(1, Ordering::Relaxed);
        self.0.stats.tunnels.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A running tunnel. A hand-written future, so that what an idle
    /// tunnel holds is exactly this: its two sockets, two copy states of a
    /// few words (no buffer, see `relay`), one timer for all its deadlines,
    /// one waiter on its server's bell and one on the node's, and its
    /// counts. Resolves to why it ended and the bytes copied each way.
    pub struct Tunnel<S> {
        client: Prefixed<Client>,
        server: S,
        up: Direction,
        down: Direction,
        // The soonest deadline, armed lazily at or before it: a byte that
        // moves the idle deadline later costs no timer reset.
        #[pin]
        timer: tokio::time::Sleep,
        armed_ms: u64,
        #[pin]
        bell: Notified<'static>,
        orders: Arc<Orders>,
        timers: Timers,
        // `limits.spread`.
        spread_ms: u32,
        last_ms: u64,
        fin_ms: u64,
        opened_ms: u64,
        next_touch_ms: u64,
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
    pub fn new(
        client: Prefixed<Client>,
        server: S,
        limits: Limits,
        orders: Arc<Orders>,
        touch: Option<Box<SessionTouch>>,
        guards: Guards,
    ) -> Self {
        if !matches!(client.get_ref(), Client::Hyper(_)) {
            // The client's connection task is over (its socket is ours): it
            // must not stay allocated for the waker it left.
            guards.busy.forget_reader();
        }
        let now = crate::clock::now_ms();
        let ev = &guards.count.0.tunnel_events;
        let (kicks, downs, demotions) =
            (ev.kicks.load(Ordering::Acquire), ev.downs.load(Ordering::Acquire), ev.demotions.load(Ordering::Acquire));
        Tunnel {
            client,
            server,
            up: Direction::default(),
            down: Direction::default(),
            timer: tokio::time::sleep(Duration::ZERO),
            armed_ms: 0,
            bell: TUNNEL_BELL.notified(),
            timers: Timers {
                idle_ms: limits.idle.as_millis() as u64,
                fin_ms: limits.fin.as_millis() as u64,
                close_at: None,
                shed_at: None,
            },
            spread_ms: limits.spread.as_millis().min(u32::MAX as u128) as u32,
            orders,
            last_ms: now,
            fin_ms: 0,
            opened_ms: now,
            next_touch_ms: touch.as_ref().map_or(u64::MAX, |t| now + t.every_ms()),
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
        if *this.fin_ms == 0 && (this.up.read_done() || this.down.read_done()) {
            // One side closed: the other now has the fin timeout.
            *this.fin_ms = now.max(1);
        }

        // The deadlines.
        loop {
            if now >= *this.next_touch_ms {
                if let Some(t) = this.touch {
                    t.refresh(this.guards.count.server());
                    *this.next_touch_ms = now + t.every_ms();
                }
            }
            if let Some(end) = this.timers.expired(*this.last_ms, *this.fin_ms, now) {
                return Poll::Ready((end, 0, 0));
            }
            let next = this.timers.next(*this.last_ms, *this.fin_ms).min(*this.next_touch_ms);
            if *this.armed_ms == 0 || this.timer.is_elapsed() || *this.armed_ms > next {
                let wait = next.saturating_sub(now).max(1);
                this.timer.as_mut().reset(tokio::time::Instant::now() + Duration::from_millis(wait));
                *this.armed_ms = now + wait;
            }
            if this.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            now = crate::clock::now_ms();
        }
    }
}

/// The tunnel's deadlines, in `clock::now_ms` time: silence (`idle_ms`
/// since the last byte), a half-closed tunnel (`fin_ms` after one side
/// closed), and a close decided with the others (shutdown, server down).
struct Timers {
    idle_ms: u64,
    fin_ms: u64,
    close_at: Option<(u64, End)>,
    /// A close ordered node-wide ([`Shed`]); apart from `close_at` so that
    /// undraining cancels it alone.
    shed_at: Option<(u64, End)>,
}

impl Timers {
    /// The fin deadline, if a side closed at `fin` (0: neither has).
    fn fin_at(&self, fin: u64) -> u64 {
        match fin {
            0 => u64::MAX,
            t => t + self.fin_ms,
        }
    }

    /// The soonest deadline, the last byte having passed at `last`.
    fn next(&self, last: u64, fin: u64) -> u64 {
        let idle = last + self.idle_ms;
        let closing = self.close_at.map_or(u64::MAX, |(at, _)| at);
        let shed = self.shed_at.map_or(u64::MAX, |(at, _)| at);
        idle.min(self.fin_at(fin)).min(closing).min(shed)
    }

    /// Why the tunnel ends at `now`, if a deadline has passed.
    fn expired(&self, last: u64, fin: u64, now: u64) -> Option<End> {
        match self.close_at {
            Some((at, why)) if now >= at => Some(why),
            _ if self.shed_at.is_some_and(|(at, _)| now >= at) => self.shed_at.map(|(_, why)| why),
            _ if now >= self.fin_at(fin) => Some(End::HalfClosed),
            _ if now.saturating_sub(last) >= self.idle_ms => Some(End::Idle),
            _ => None,
        }
    }

    /// A close decided with the other tunnels: at a random instant within
    /// `spread`, unless one is due sooner.
    fn close_with_others(&mut self, spread: Duration, why: End) {
        self.close_at = Some(soonest(self.close_at, spread_from_now(spread), why));
    }

    /// A node-wide order: close at this tunnel's instant of it, or (`None`)
    /// not any more.
    fn shed(&mut self, order: Option<Shed>, opened_ms: u64) {
        self.shed_at = order.map(|o| (shed_at(&o, opened_ms, |n| fastrand::u64(0..n)), o.why));
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
        let (last, fin) = (1_000, 0);
        let mut t = Timers { idle_ms: 3_600_000, fin_ms: 1_000, close_at: None, shed_at: None };
        t.shed(Some(order(2_000, 1_000)), 1_000);
        let (at, why) = t.shed_at.unwrap();
        assert!((2_000..3_000).contains(&at) && why == End::Draining);
        assert_eq!(t.next(last, fin), at);
        assert_eq!(t.expired(last, fin, at), Some(End::Draining));
        assert_eq!(t.expired(last, fin, at - 1), None);
        t.shed(None, 1_000);
        assert_eq!(t.expired(last, fin, 3_000), None);
        assert_eq!(t.next(last, fin), 1_000 + 3_600_000);
        // An upgrade's order counts as such.
        t.shed(Some(Shed { over: Duration::ZERO, why: End::Upgrade, since_ms: 5_000 }), 1_000);
        assert_eq!(t.expired(last, fin, 5_000), Some(End::Upgrade));
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
#[cfg(test)]
mod size {
    /// What an idle tunnel's task holds is its `Tunnel` (the task adds
    /// tokio's header, in steps of 128 bytes): kept to 512 bytes, so that
    /// the task stays at 640 (see BENCHMARKS.md, idle WebSocket tunnels).
    #[test]
    fn an_idle_tunnel_holds_at_most_512_bytes_beside_its_sockets_registrations() {
        let size = std::mem::size_of::<super::Tunnel<super::super::h1client::Upgraded>>();
        assert!(size <= 512, "a tunnel is {size} bytes");
        // No buffer in it: the copy state of a direction is a few words.
        assert!(std::mem::size_of::<super::Direction>() <= 24);
    }
}
