//! A timer for "nothing happened for this long" between two I/O events:
//! armed when an operation first has to wait, disarmed when it progresses.
//! The `Sleep` is allocated the first time it is needed and reused after, so
//! streams that never wait cost nothing: two words (a server connection
//! holds one for its writes, every tunnel's included).

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

pub struct IdleTimer {
    /// The timeout, in nanoseconds: a word where a `Duration` takes two
    /// (exact up to 584 years, where it saturates).
    after_ns: u64,
    /// Made the first time an operation waits.
    stall: Option<Pin<Box<Stall>>>,
}

pin_project_lite::pin_project! {
    /// The timer, and whether it runs: an operation is waiting, and has not
    /// progressed since it started to.
    struct Stall {
        #[pin]
        sleep: Sleep,
        armed: bool,
    }
}

impl IdleTimer {
    pub fn new(after: Duration) -> Self {
        IdleTimer { after_ns: u64::try_from(after.as_nanos()).unwrap_or(u64::MAX), stall: None }
    }

    pub fn after(&self) -> Duration {
        Duration::from_nanos(self.after_ns)
    }

    /// Call when the operation returned `Pending`: arms the timer if it is not
    /// running and reports whether it expired (registering the waker if not).
    pub fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let after = self.after();
        let stall = self.stall.get_or_insert_with(|| {
            Box::pin(Stall { sleep: tokio::time::sleep_until(Instant::now() + after), armed: true })
        });
        let mut stall = stall.as_mut().project();
        if !*stall.armed {
            *stall.armed = true;
            stall.sleep.as_mut().reset(Instant::now() + after);
        }
        stall.sleep.poll(cx).is_ready()
    }

    /// Call when the operation made progress.
    pub fn progressed(&mut self) {
        if let Some(stall) = &mut self.stall {
            *stall.as_mut().project().armed = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wait counts from when the operation first had to wait; progress
    /// restarts it from the next wait, with the same timer.
    #[tokio::test(start_paused = true)]
    async fn counts_from_the_first_wait_and_restarts_after_progress() {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut t = IdleTimer::new(Duration::from_secs(10));
        assert!(t.stall.is_none(), "a timer is made only when an operation waits");
        assert!(!t.expired(&mut cx));
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!t.expired(&mut cx));
        t.progressed();
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!t.expired(&mut cx), "expired 11 s after the first wait, though progress came in between");
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!t.expired(&mut cx));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(t.expired(&mut cx) && t.expired(&mut cx), "expired stays expired until progress");
        assert_eq!(t.after(), Duration::from_secs(10));
        // Two words while no operation waits (a server connection holds one).
        assert_eq!(std::mem::size_of::<IdleTimer>(), 16);
    }
}
