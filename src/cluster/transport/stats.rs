//! Transport counters: relaxed atomics bumped by the socket task, read as a
//! plain [`TransportStats`] snapshot by the admin API and tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::wire::DropReason;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Shared by every socket a [`super::SecureTransport`] opens.
        #[derive(Debug, Default)]
        pub(crate) struct TransportCounters {
            $(pub(crate) $name: AtomicU64,)*
            /// Unix ms of the last authentication-failure warning.
            pub(crate) last_auth_warn_ms: AtomicU64,
        }

        /// A snapshot of the transport's counters.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct TransportStats {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl TransportCounters {
            pub(crate) fn snapshot(&self) -> TransportStats {
                TransportStats { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Datagrams handed to the socket.
    datagrams_sent,
    /// Bytes handed to the socket (sealed).
    bytes_sent,
    /// Datagrams read from the socket, valid or not.
    datagrams_received,
    /// Bytes read from the socket.
    bytes_received,
    /// Chitchat messages handed to chitchat after every check passed.
    messages_delivered,
    /// Messages sent as two fragments (larger than one datagram carries).
    messages_split,
    /// Messages joined from two fragments.
    messages_joined,
    too_short,
    too_long,
    bad_version,
    /// Key id of another key (another cluster secret).
    unknown_key,
    /// Tag did not verify.
    auth_failed,
    malformed,
    stale,
    future,
    replayed,
    /// Authentic but not a chitchat message.
    invalid_payload,
    /// Messages too large to seal, or nonce generation failures.
    seal_errors,
    /// Socket send errors.
    send_errors,
    /// Datagrams dropped by the fault injector (tests).
    fault_dropped,
    /// Datagrams delayed by the fault injector (tests).
    fault_delayed,
    /// Times the local envelope relay was rebuilt after losing a datagram.
    relay_resets,
}

impl TransportCounters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn record_drop(&self, reason: DropReason) {
        let c = match reason {
            DropReason::TooShort => &self.too_short,
            DropReason::TooLong => &self.too_long,
            DropReason::BadVersion => &self.bad_version,
            DropReason::UnknownKey => &self.unknown_key,
            DropReason::AuthFailed => &self.auth_failed,
            DropReason::Malformed => &self.malformed,
            DropReason::Stale => &self.stale,
            DropReason::Future => &self.future,
            DropReason::Replayed => &self.replayed,
            DropReason::InvalidPayload => &self.invalid_payload,
        };
        Self::add(c, 1);
    }

    /// True at most once per `every_ms`: rate limit for warnings.
    pub(crate) fn auth_warn_due(&self, now_ms: u64, every_ms: u64) -> bool {
        let last = self.last_auth_warn_ms.load(Ordering::Relaxed);
        if last != 0 && now_ms.saturating_sub(last) < every_ms {
            return false;
        }
        self.last_auth_warn_ms.compare_exchange(last, now_ms.max(1), Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
}

impl TransportStats {
    /// Datagrams that failed authentication (wrong secret or forged).
    pub fn auth_failures(&self) -> u64 {
        self.unknown_key + self.auth_failed
    }

    /// Datagrams dropped on receipt, for any reason.
    pub fn dropped(&self) -> u64 {
        self.too_short
            + self.too_long
            + self.bad_version
            + self.unknown_key
            + self.auth_failed
            + self.malformed
            + self.stale
            + self.future
            + self.replayed
            + self.invalid_payload
    }
}

/// A cheap handle to read a transport's counters after the transport was
/// handed to chitchat.
#[derive(Debug, Clone)]
pub struct StatsHandle(pub(crate) Arc<TransportCounters>);

impl StatsHandle {
    pub fn snapshot(&self) -> TransportStats {
        self.0.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_counted_by_reason() {
        let c = TransportCounters::default();
        c.record_drop(DropReason::AuthFailed);
        c.record_drop(DropReason::UnknownKey);
        c.record_drop(DropReason::Replayed);
        let s = c.snapshot();
        assert_eq!((s.auth_failed, s.unknown_key, s.replayed), (1, 1, 1));
        assert_eq!(s.auth_failures(), 2);
        assert_eq!(s.dropped(), 3);
    }

    #[test]
    fn auth_warning_is_rate_limited() {
        let c = TransportCounters::default();
        assert!(c.auth_warn_due(1_000, 10_000));
        assert!(!c.auth_warn_due(5_000, 10_000));
        assert!(c.auth_warn_due(11_000, 10_000));
    }
}
