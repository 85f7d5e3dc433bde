//! The node's "shutting down" signal for HTTP/1.1 client connections,
//! without a future per connection.
//!
//! A `watch` or `Notify` waiter is a future each connection keeps for its
//! whole life (about 150 bytes in a box with the receiver) and polls on
//! every wake-up. Here a connection registers its task's waker once in a
//! shared slab (a waker's two words) and then reads one atomic per poll;
//! [`Closing::close`] sets the flag and wakes every registered task. Idle
//! keep-alive connections are what a node has most of, so this is part of
//! their per-connection cost (BENCHMARKS.md, idle memory).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::{Context, Waker};

#[derive(Default)]
pub struct Closing {
    closed: AtomicBool,
    wakers: Mutex<slab::Slab<Waker>>,
}

/// One connection's place in [`Closing`]; give it back with
/// [`Closing::leave`].
#[derive(Debug, Default)]
pub struct Slot(Option<usize>);

impl Closing {
    /// Whether the node is shutting down; the first call registers the
    /// task to be woken when it does.
    pub fn poll(&self, slot: &mut Slot, cx: &mut Context<'_>) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return true;
        }
        if slot.0.is_none() {
            let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
            slot.0 = Some(wakers.insert(cx.waker().clone()));
            // `close` sets the flag before taking the lock: seen now, or
            // this waker is woken.
            return self.closed.load(Ordering::Acquire);
        }
        false
    }

    pub fn leave(&self, slot: &mut Slot) {
        if let Some(key) = slot.0.take() {
            let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
            wakers.try_remove(key);
        }
    }

    /// The node shuts down: every registered connection is woken.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|e| e.into_inner()));
        for (_, w) in wakers {
            w.wake();
        }
    }

    /// Connections registered now (for tests).
    pub fn registered(&self) -> usize {
        self.wakers.lock().map(|w| w.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn registers_once_wakes_all_on_close_and_forgets_those_that_left() {
        let closing = Closing::default();
        let (a, b) = (Arc::new(Count(AtomicUsize::new(0))), Arc::new(Count(AtomicUsize::new(0))));
        let (wa, wb) = (Waker::from(a.clone()), Waker::from(b.clone()));
        let (mut sa, mut sb) = (Slot::default(), Slot::default());
        assert!(!closing.poll(&mut sa, &mut Context::from_waker(&wa)));
        assert!(!closing.poll(&mut sa, &mut Context::from_waker(&wa)));
        assert!(!closing.poll(&mut sb, &mut Context::from_waker(&wb)));
        assert_eq!(closing.registered(), 2, "one registration per connection");
        closing.leave(&mut sb);
        assert_eq!(closing.registered(), 1);
        closing.close();
        assert_eq!(a.0.load(Ordering::SeqCst), 1);
        assert_eq!(b.0.load(Ordering::SeqCst), 0, "a connection that left is not woken");
        assert!(closing.poll(&mut sa, &mut Context::from_waker(&wa)));
        let mut late = Slot::default();
        assert!(closing.poll(&mut late, &mut Context::from_waker(&wb)), "closed before registering");
        closing.leave(&mut sa);
    }
}
