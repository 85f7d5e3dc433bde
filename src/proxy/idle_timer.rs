//! A timer for "nothing happened for this long" between two I/O events:
//! armed when an operation first has to wait, disarmed when it progresses.
//! The `Sleep` is allocated the first time it is needed and reused after, so
//! streams that never wait cost nothing.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

pub struct IdleTimer {
    after: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl IdleTimer {
    pub fn new(after: Duration) -> Self {
        IdleTimer { after, sleep: None, armed: false }
    }

    pub fn after(&self) -> Duration {
        self.after
    }

    /// Call when the operation returned `Pending`: arms the timer if it is not
    /// running and reports whether it expired (registering the waker if not).
    pub fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.armed {
            self.armed = true;
            let deadline = Instant::now() + self.after;
            match &mut self.sleep {
                Some(s) => s.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        self.sleep.as_mut().is_some_and(|s| s.as_mut().poll(cx).is_ready())
    }

    /// Call when the operation made progress.
    pub fn progressed(&mut self) {
        self.armed = false;
    }
}
