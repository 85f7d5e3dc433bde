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

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::metrics::COUNTERS;

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

/// What both sides of a tunnel share: when a byte last passed, and when
/// one side first closed (0: neither has).
struct Activity {
    last_ms: AtomicU64,
    fin_ms: AtomicU64,
    /// Wakes the tunnel's loop when a side closes (its timer changes).
    fin: tokio::sync::Notify,
}

/// One side of the tunnel, counting what is read from it.
struct Counted<T> {
    inner: T,
    activity: Arc<Activity>,
    /// Where the bytes read from this side are added.
    total: &'static AtomicU64,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let room = buf.remaining() > 0;
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.total.fetch_add(n as u64, Ordering::Relaxed);
            self.activity.last_ms.store(crate::clock::now_ms(), Ordering::Relaxed);
        } else if room && matches!(r, Poll::Ready(Ok(()))) {
            // This side closed: the other now has the fin timeout.
            let now = crate::clock::now_ms().max(1);
            if self.activity.fin_ms.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                self.activity.fin.notify_one();
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Copies until the tunnel ends; `touch` runs every `touch_every` while it
/// lives (session TTL refresh).
#[allow(clippy::too_many_arguments)]
pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    client: Upgraded,
    server: S,
    limits: Limits,
    state: &crate::health::ServerState,
    mut closing: tokio::sync::watch::Receiver<bool>,
    mut shed: tokio::sync::watch::Receiver<Option<Shed>>,
    touch_every: Duration,
    mut touch: impl FnMut(),
) -> (End, u64, u64) {
    let activity = Arc::new(Activity {
        last_ms: AtomicU64::new(crate::clock::now_ms()),
        fin_ms: AtomicU64::new(0),
        fin: tokio::sync::Notify::new(),
    });
    let mut client =
        Counted { inner: TokioIo::new(client), activity: activity.clone(), total: &COUNTERS.tunnel_bytes_up };
    let mut server = Counted { inner: server, activity: activity.clone(), total: &COUNTERS.tunnel_bytes_down };
    let kicked = state.kick.notified();
    let marked_down = state.marked_down.notified();
    let demoted = state.demoted.notified();
    tokio::pin!(kicked, marked_down, demoted);
    // `touch_every` is a quarter of the session TTL (at least 1 s by config),
    // so at least 250 ms; the floor only keeps `interval` off zero. A floor
    // of 1 s let sessions with a TTL under 2 s expire while their tunnel
    // was open: the first refresh came after the record had expired.
    let mut touch_tick = tokio::time::interval(touch_every.max(Duration::from_millis(100)));
    touch_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    touch_tick.tick().await;
    // No buffer while idle: reads go through the worker thread's buffer
    // (see `relay`).
    let copy = super::relay::both_ways(&mut client, &mut server);
    tokio::pin!(copy);
    let opened_ms = crate::clock::now_ms();
    let mut timers = Timers {
        idle_ms: limits.idle.as_millis() as u64,
        fin_ms: limits.fin.as_millis() as u64,
        close_at: None,
        shed_at: None,
    };
    // An order given before the tunnel opened (the node already drains).
    timers.shed(*shed.borrow_and_update(), opened_ms);
    let (mut shutting, mut down, mut not_active, mut shed_gone) = (false, false, false, false);
    loop {
        let wait = Duration::from_millis(timers.next(&activity).saturating_sub(crate::clock::now_ms()).max(1));
        tokio::select! {
            r = &mut copy => {
                return match r {
                    Ok((up, down)) => (End::Closed, up, down),
                    Err(_) => (End::Error, 0, 0),
                };
            }
            _ = tokio::time::sleep(wait) => {
                if let Some(end) = timers.expired(&activity, crate::clock::now_ms()) {
                    return (end, 0, 0);
                }
            }
            // A side closed: the loop's timer now includes the fin timeout.
            _ = activity.fin.notified() => {}
            _ = &mut kicked => return (End::Maintenance, 0, 0),
            _ = &mut marked_down, if limits.close_on_down && !down => {
                down = true;
                timers.close_with_others(limits.spread, End::ServerDown);
            }
            _ = &mut demoted, if limits.close_on_down && !not_active => {
                not_active = true;
                timers.close_with_others(limits.spread, End::NotActive);
            }
            _ = closing.wait_for(|c| *c), if !shutting => {
                shutting = true;
                timers.close_with_others(limits.spread, End::Shutdown);
            }
            changed = shed.changed(), if !shed_gone => match changed {
                Ok(()) => timers.shed(*shed.borrow_and_update(), opened_ms),
                // The node's state is gone (tests): no order can come.
                Err(_) => shed_gone = true,
            },
            _ = touch_tick.tick() => touch(),
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
    /// The fin deadline, if a side has closed.
    fn fin_at(&self, activity: &Activity) -> u64 {
        match activity.fin_ms.load(Ordering::Relaxed) {
            0 => u64::MAX,
            t => t + self.fin_ms,
        }
    }

    /// The soonest deadline.
    fn next(&self, activity: &Activity) -> u64 {
        let idle = activity.last_ms.load(Ordering::Relaxed) + self.idle_ms;
        let closing = self.close_at.map_or(u64::MAX, |(at, _)| at);
        let shed = self.shed_at.map_or(u64::MAX, |(at, _)| at);
        idle.min(self.fin_at(activity)).min(closing).min(shed)
    }

    /// Why the tunnel ends at `now`, if a deadline has passed.
    fn expired(&self, activity: &Activity, now: u64) -> Option<End> {
        match self.close_at {
            Some((at, why)) if now >= at => Some(why),
            _ if self.shed_at.is_some_and(|(at, _)| now >= at) => self.shed_at.map(|(_, why)| why),
            _ if now >= self.fin_at(activity) => Some(End::HalfClosed),
            _ if now.saturating_sub(activity.last_ms.load(Ordering::Relaxed)) >= self.idle_ms => Some(End::Idle),
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
        let activity = Activity { last_ms: AtomicU64::new(1_000), fin_ms: AtomicU64::new(0), fin: Default::default() };
        let mut t = Timers { idle_ms: 3_600_000, fin_ms: 1_000, close_at: None, shed_at: None };
        t.shed(Some(order(2_000, 1_000)), 1_000);
        let (at, why) = t.shed_at.unwrap();
        assert!((2_000..3_000).contains(&at) && why == End::Draining);
        assert_eq!(t.next(&activity), at);
        assert_eq!(t.expired(&activity, at), Some(End::Draining));
        assert_eq!(t.expired(&activity, at - 1), None);
        t.shed(None, 1_000);
        assert_eq!(t.expired(&activity, 3_000), None);
        assert_eq!(t.next(&activity), 1_000 + 3_600_000);
        // An upgrade's order counts as such.
        t.shed(Some(Shed { over: Duration::ZERO, why: End::Upgrade, since_ms: 5_000 }), 1_000);
        assert_eq!(t.expired(&activity, 5_000), Some(End::Upgrade));
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
