//! Messages ⇄ datagrams: the sending side splits a serialized chitchat
//! envelope into one or two frames and seals each; the receiving side opens,
//! applies the replay rules and joins fragments. Synchronous and free of I/O
//! so that unit tests and the fuzz target drive it directly with any clock.

use std::borrow::Cow;
use std::net::SocketAddr;

use super::replay::{Reassembly, ReplayCache, ReplayConfig};
use super::wire::{self, ClusterKey, DropReason, Frame, MAX_FRAGMENT_PAYLOAD, MAX_MESSAGE, NONCE_LEN};

/// Why a message could not be sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("gossip message of {len} bytes is larger than the transport's {MAX_MESSAGE}-byte maximum")]
    TooLarge { len: usize },
    #[error("gossip message is empty")]
    Empty,
    #[error("the system random number generator failed: {0}")]
    Random(String),
}

/// Seals messages with a key.
#[derive(Debug, Clone)]
pub struct Sealer {
    key: ClusterKey,
}

impl Sealer {
    pub fn new(key: ClusterKey) -> Self {
        Sealer { key }
    }

    /// Seals `message` sent at `now_ms` into one datagram, or two when it is
    /// larger than [`MAX_FRAGMENT_PAYLOAD`]. Fresh random nonce per datagram,
    /// fresh random message id per message.
    pub fn seal(&self, message: &[u8], now_ms: u64) -> Result<Vec<Vec<u8>>, SealError> {
        if message.is_empty() {
            return Err(SealError::Empty);
        }
        if message.len() > MAX_MESSAGE {
            return Err(SealError::TooLarge { len: message.len() });
        }
        let mut id = [0u8; 8];
        wire::random_bytes(&mut id).map_err(|e| SealError::Random(e.to_string()))?;
        let message_id = u64::from_be_bytes(id);
        let count = message.len().div_ceil(MAX_FRAGMENT_PAYLOAD) as u8;
        let mut out = Vec::with_capacity(usize::from(count));
        let mut plain = Vec::with_capacity(message.len().min(MAX_FRAGMENT_PAYLOAD) + wire::FRAME_HEADER_LEN);
        for (index, payload) in message.chunks(MAX_FRAGMENT_PAYLOAD).enumerate() {
            plain.clear();
            Frame { sent_at_ms: now_ms, message_id, index: index as u8, count, payload }.write(&mut plain);
            let mut nonce = [0u8; NONCE_LEN];
            wire::random_bytes(&mut nonce).map_err(|e| SealError::Random(e.to_string()))?;
            let mut datagram = Vec::new();
            wire::seal(&self.key, &nonce, &plain, &mut datagram);
            out.push(datagram);
        }
        Ok(out)
    }
}

/// Opens datagrams: authentication, replay rules, reassembly.
#[derive(Debug)]
pub struct Opener {
    key: ClusterKey,
    config: ReplayConfig,
    replay: ReplayCache,
    reassembly: Reassembly,
}

impl Opener {
    pub fn new(key: ClusterKey, config: ReplayConfig) -> Self {
        Opener { key, config, replay: ReplayCache::new(config), reassembly: Reassembly::new() }
    }

    /// Opens one datagram received from `from` at `now_ms` (decrypting it in
    /// place). `Ok(Some(message))` is a whole message; `Ok(None)` means a
    /// fragment was kept until its sibling arrives.
    pub fn open<'a>(
        &mut self,
        datagram: &'a mut [u8],
        from: SocketAddr,
        now_ms: u64,
    ) -> Result<Option<Cow<'a, [u8]>>, DropReason> {
        let plain = wire::open(&self.key, datagram)?;
        let frame = Frame::parse(plain)?;
        self.replay.check(frame.message_id, frame.index, frame.sent_at_ms, now_ms)?;
        if frame.count == 1 {
            return Ok(Some(Cow::Borrowed(frame.payload)));
        }
        Ok(self.reassembly.add(from, &frame, now_ms, self.config.window)?.map(Cow::Owned))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::secret::ClusterSecret;

    const NOW: u64 = 1_700_000_000_000;

    fn key(s: &str) -> ClusterKey {
        ClusterKey::derive(&ClusterSecret::from_bytes(s.as_bytes()).unwrap())
    }

    fn pair() -> (Sealer, Opener) {
        let k = key("0123456789abcdef0123456789abcdef");
        (Sealer::new(k.clone()), Opener::new(k, ReplayConfig::default()))
    }

    fn from() -> SocketAddr {
        "127.0.0.2:7946".parse().unwrap()
    }

    #[test]
    fn round_trip() {
        let (s, mut o) = pair();
        let mut d = s.seal(b"chitchat bytes", NOW).unwrap();
        assert_eq!(d.len(), 1);
        let got = o.open(&mut d[0], from(), NOW + 5).unwrap().unwrap();
        assert_eq!(&*got, b"chitchat bytes");
    }

    #[test]
    fn nonces_and_ids_are_fresh() {
        let (s, _) = pair();
        let a = s.seal(b"same", NOW).unwrap().remove(0);
        let b = s.seal(b"same", NOW).unwrap().remove(0);
        assert_ne!(a[2..26], b[2..26], "nonce");
        assert_ne!(a, b);
    }

    #[test]
    fn wrong_key_fails_authentication() {
        let (s, _) = pair();
        let mut other = Opener::new(key("another secret, 32 bytes or more!!"), ReplayConfig::default());
        let mut d = s.seal(b"x", NOW).unwrap().remove(0);
        assert!(other.open(&mut d, from(), NOW).unwrap_err().is_auth_failure());
    }

    #[test]
    fn tampered_and_truncated_fail() {
        let (s, mut o) = pair();
        let d = s.seal(b"some gossip", NOW).unwrap().remove(0);
        for i in 0..d.len() {
            let mut t = d.clone();
            t[i] = t[i].wrapping_add(1);
            assert!(o.open(&mut t, from(), NOW).is_err(), "byte {i}");
        }
        for len in 0..d.len() {
            let mut t = d[..len].to_vec();
            assert!(o.open(&mut t, from(), NOW).is_err(), "len {len}");
        }
        // The untouched datagram still opens: failures left no state behind.
        let mut ok = d.clone();
        assert!(o.open(&mut ok, from(), NOW).unwrap().is_some());
    }

    #[test]
    fn replayed_stale_and_future_fail() {
        let (s, mut o) = pair();
        let d = s.seal(b"once", NOW).unwrap().remove(0);
        assert!(o.open(&mut d.clone(), from(), NOW).unwrap().is_some());
        assert_eq!(o.open(&mut d.clone(), from(), NOW + 1).unwrap_err(), DropReason::Replayed);
        let other_addr: SocketAddr = "10.9.9.9:1".parse().unwrap();
        assert_eq!(o.open(&mut d.clone(), other_addr, NOW + 1).unwrap_err(), DropReason::Replayed);

        let old = s.seal(b"old", NOW - 30_001).unwrap().remove(0);
        assert_eq!(o.open(&mut old.clone(), from(), NOW).unwrap_err(), DropReason::Stale);
        let future = s.seal(b"future", NOW + 30_001).unwrap().remove(0);
        assert_eq!(o.open(&mut future.clone(), from(), NOW).unwrap_err(), DropReason::Future);
    }

    #[test]
    fn largest_chitchat_message_is_two_fragments() {
        let (s, mut o) = pair();
        let msg: Vec<u8> = (0..wire::MAX_DATAGRAM).map(|i| (i % 251) as u8).collect();
        let mut d = s.seal(&msg, NOW).unwrap();
        assert_eq!(d.len(), 2);
        assert!(d.iter().all(|x| x.len() <= wire::MAX_DATAGRAM));
        let (first, second) = d.split_at_mut(1);
        assert_eq!(o.open(&mut second[0], from(), NOW).unwrap(), None);
        let whole = o.open(&mut first[0], from(), NOW).unwrap().unwrap();
        assert_eq!(&*whole, &msg[..]);
        // A replayed fragment does not start a new message.
        let mut again = s.seal(&msg, NOW).unwrap();
        let copy = again[0].clone();
        assert_eq!(o.open(&mut again[0], from(), NOW).unwrap(), None);
        assert_eq!(o.open(&mut copy.clone(), from(), NOW).unwrap_err(), DropReason::Replayed);
    }

    #[test]
    fn limits() {
        let (s, _) = pair();
        assert!(matches!(s.seal(b"", NOW), Err(SealError::Empty)));
        assert!(matches!(s.seal(&vec![0; MAX_MESSAGE + 1], NOW), Err(SealError::TooLarge { .. })));
    }
}
