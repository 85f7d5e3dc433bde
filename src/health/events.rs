//! A bounded list of recent events (health transitions, admin actions,
//! reloads) for the status API and the dashboard. Written off the request
//! path only; the lock is held for a push or a copy.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::server::unix_ms;

/// The API's event type is the one kept here.
pub use crate::api::Event;

#[derive(Debug)]
pub struct EventLog {
    cap: usize,
    events: Mutex<VecDeque<Event>>,
}

impl EventLog {
    pub fn new(cap: usize) -> Self {
        EventLog { cap, events: Mutex::new(VecDeque::with_capacity(cap)) }
    }

    pub fn push(&self, kind: &str, pool: Option<&str>, server: Option<&str>, message: String) {
        let e = Event {
            at_unix_ms: unix_ms(),
            kind: kind.to_string(),
            pool: pool.map(str::to_string),
            server: server.map(str::to_string),
            message,
        };
        let mut q = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() == self.cap {
            q.pop_front();
        }
        q.push_back(e);
    }

    /// Newest first.
    pub fn recent(&self, n: usize) -> Vec<Event> {
        let q = self.events.lock().unwrap_or_else(|e| e.into_inner());
        q.iter().rev().take(n).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_newest_first() {
        let log = EventLog::new(3);
        for i in 0..5 {
            log.push("health", Some("p"), None, format!("e{i}"));
        }
        let r: Vec<String> = log.recent(10).into_iter().map(|e| e.message).collect();
        assert_eq!(r, vec!["e4", "e3", "e2"]);
    }
}
