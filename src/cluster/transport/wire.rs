//! The encrypted datagram format: key derivation, sealing, opening, framing.
//! Pure, synchronous code over byte slices (the fuzz target drives it).
//!
//! # Datagram
//!
//! ```text
//! offset  size  field
//! 0       1     wire version (WIRE_VERSION = 1)
//! 1       1     key id: a byte derived from the key, so that a receiver tells
//!               "another cluster secret" from "corrupted" without trying
//! 2       24    nonce: random per datagram (XChaCha20-Poly1305's 192-bit
//!               nonce makes random nonces safe: no counter to keep)
//! 26      n+16  ciphertext of the frame below, then the 16-byte Poly1305 tag
//! ```
//!
//! The associated data is bytes 0..2 (version and key id), so neither can be
//! changed without failing authentication.
//!
//! # Frame (the plaintext)
//!
//! ```text
//! 0   8   sender's wall clock, unix ms, big endian
//! 8   8   message id: random 64 bits, the same in every fragment of a message
//! 16  1   fragment: index << 4 | count (count 1 or 2, index < count)
//! 17  ..  payload: (part of) one serialized chitchat envelope
//! ```
//!
//! Chitchat fills datagrams up to 65,507 bytes (the IPv4 UDP maximum); with
//! the 59 bytes this format adds, the largest chitchat messages do not fit in
//! one datagram and are split in two fragments, each sealed on its own.
//!
//! # Key derivation
//!
//! HKDF-SHA256 over the secret bytes with salt [`KDF_SALT`]; the 32-byte key
//! is expanded with info [`KDF_INFO_KEY`], the key id byte with
//! [`KDF_INFO_KEY_ID`]. The strings are fixed: changing one changes every key.

use std::fmt;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{KeyInit, Tag, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;

use crate::cluster::secret::ClusterSecret;

pub const WIRE_VERSION: u8 = 1;
pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;
/// Version, key id and nonce.
pub const HEADER_LEN: usize = 2 + NONCE_LEN;
/// Timestamp, message id, fragment byte.
pub const FRAME_HEADER_LEN: usize = 8 + 8 + 1;
/// Everything a datagram carries besides payload bytes.
pub const OVERHEAD: usize = HEADER_LEN + FRAME_HEADER_LEN + TAG_LEN;
/// The largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;
/// Payload bytes one datagram carries at most.
pub const MAX_FRAGMENT_PAYLOAD: usize = MAX_DATAGRAM - OVERHEAD;
/// Fragments a message may have: two cover chitchat's 65,507-byte maximum.
pub const MAX_FRAGMENTS: u8 = 2;
/// The largest message (chitchat envelope) the transport carries.
pub const MAX_MESSAGE: usize = MAX_FRAGMENT_PAYLOAD * MAX_FRAGMENTS as usize;

pub const KDF_SALT: &[u8] = b"sysmanage-node cluster secret v1";
pub const KDF_INFO_KEY: &[u8] = b"sysmanage-node gossip datagram key v1";
/// HKDF info of the bearer token of the cluster API (catch-up).
pub const KDF_INFO_API_TOKEN: &[u8] = b"sysmanage-node cluster api token v1";

/// HKDF info of the rate-limit key seed.
pub const KDF_INFO_RATE_SEED: &[u8] = b"sysmanage-node rate limit key seed v1";

/// The SipHash keys every node of a cluster hashes rate-limit keys with, so
/// that a client has the same key on every node (cluster-wide zones).
pub fn ratelimit_seed(secret: &ClusterSecret) -> (u64, u64) {
    let hk = Hkdf::<Sha256>::new(Some(KDF_SALT), secret.as_bytes());
    let mut seed = [0u8; 16];
    hk.expand(KDF_INFO_RATE_SEED, &mut seed).expect("16 bytes is a valid HKDF-SHA256 output length");
    let (a, b) = seed.split_at(8);
    (u64::from_le_bytes(a.try_into().unwrap_or_default()), u64::from_le_bytes(b.try_into().unwrap_or_default()))
}

/// The bearer token peers present to the cluster API: 32 bytes derived from
/// the secret (never the secret itself), as hex. Nodes with the same secret
/// derive the same token.
pub fn api_token(secret: &ClusterSecret) -> String {
    let hk = Hkdf::<Sha256>::new(Some(KDF_SALT), secret.as_bytes());
    let mut token = [0u8; 32];
    hk.expand(KDF_INFO_API_TOKEN, &mut token).expect("32 bytes is a valid HKDF-SHA256 output length");
    token.iter().map(|b| format!("{b:02x}")).collect()
}
pub const KDF_INFO_KEY_ID: &[u8] = b"sysmanage-node gossip key id v1";

/// Why a datagram was dropped. Every variant has a counter in
/// [`super::TransportStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than an empty sealed frame.
    TooShort,
    /// Longer than [`MAX_DATAGRAM`] (only reachable from the decoder API).
    TooLong,
    /// Unknown wire version byte.
    BadVersion,
    /// Key id of another key: almost surely another cluster secret.
    UnknownKey,
    /// Tag did not verify: another secret, or bytes changed on the way.
    AuthFailed,
    /// Authentic, but the frame is not well formed (fragment fields, empty).
    Malformed,
    /// Sent longer ago than the replay window (or before a replay-cache
    /// overflow floor).
    Stale,
    /// Sent further in the future than the allowed clock skew.
    Future,
    /// Same message id and fragment seen within the window.
    Replayed,
    /// Authentic and fresh, but chitchat could not decode the payload.
    InvalidPayload,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::TooShort => "too_short",
            DropReason::TooLong => "too_long",
            DropReason::BadVersion => "bad_version",
            DropReason::UnknownKey => "unknown_key",
            DropReason::AuthFailed => "auth_failed",
            DropReason::Malformed => "malformed",
            DropReason::Stale => "stale",
            DropReason::Future => "future",
            DropReason::Replayed => "replayed",
            DropReason::InvalidPayload => "invalid_payload",
        }
    }

    /// Whether the datagram failed authentication (wrong secret or forged).
    pub fn is_auth_failure(self) -> bool {
        matches!(self, DropReason::UnknownKey | DropReason::AuthFailed)
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The datagram key derived from the cluster secret. `Debug` is redacted.
#[derive(Clone)]
pub struct ClusterKey {
    cipher: XChaCha20Poly1305,
    id: u8,
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterKey(id {:#04x}, redacted)", self.id)
    }
}

impl ClusterKey {
    pub fn derive(secret: &ClusterSecret) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(KDF_SALT), secret.as_bytes());
        let mut key = [0u8; 32];
        let mut id = [0u8; 1];
        // 32 and 1 bytes are far below HKDF-SHA256's 8160-byte limit.
        hk.expand(KDF_INFO_KEY, &mut key).expect("32 bytes is a valid HKDF-SHA256 output length");
        hk.expand(KDF_INFO_KEY_ID, &mut id).expect("1 byte is a valid HKDF-SHA256 output length");
        ClusterKey { cipher: XChaCha20Poly1305::new(&key.into()), id: id[0] }
    }

    /// The key id byte carried in every datagram.
    pub fn id(&self) -> u8 {
        self.id
    }
}

/// A parsed frame (plaintext of one datagram).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub sent_at_ms: u64,
    pub message_id: u64,
    pub index: u8,
    pub count: u8,
    pub payload: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Parses and checks a frame: 1 ≤ count ≤ [`MAX_FRAGMENTS`], index <
    /// count, non-empty payload.
    pub fn parse(plain: &'a [u8]) -> Result<Self, DropReason> {
        if plain.len() <= FRAME_HEADER_LEN {
            return Err(DropReason::Malformed);
        }
        let sent_at_ms = u64::from_be_bytes(plain[0..8].try_into().map_err(|_| DropReason::Malformed)?);
        let message_id = u64::from_be_bytes(plain[8..16].try_into().map_err(|_| DropReason::Malformed)?);
        let frag = plain[16];
        let (index, count) = (frag >> 4, frag & 0x0f);
        if count == 0 || count > MAX_FRAGMENTS || index >= count {
            return Err(DropReason::Malformed);
        }
        Ok(Frame { sent_at_ms, message_id, index, count, payload: &plain[FRAME_HEADER_LEN..] })
    }

    /// Appends the frame's bytes to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.sent_at_ms.to_be_bytes());
        out.extend_from_slice(&self.message_id.to_be_bytes());
        out.push((self.index << 4) | (self.count & 0x0f));
        out.extend_from_slice(self.payload);
    }
}

/// Seals `plaintext` into a datagram appended to `out` (cleared first).
pub fn seal(key: &ClusterKey, nonce: &[u8; NONCE_LEN], plaintext: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(HEADER_LEN + plaintext.len() + TAG_LEN);
    out.push(WIRE_VERSION);
    out.push(key.id);
    out.extend_from_slice(nonce);
    out.extend_from_slice(plaintext);
    let (head, body) = out.split_at_mut(HEADER_LEN);
    let tag = key
        .cipher
        .encrypt_in_place_detached(XNonce::from_slice(&head[2..]), &head[..2], body)
        // Only fails for messages longer than 2^38 bytes.
        .expect("datagram plaintext is far below the XChaCha20-Poly1305 length limit");
    out.extend_from_slice(&tag);
}

/// Verifies and decrypts a datagram in place; returns the plaintext (a
/// sub-slice of `datagram`). Checks cheapest first: length, version, key id,
/// then the tag.
pub fn open<'a>(key: &ClusterKey, datagram: &'a mut [u8]) -> Result<&'a [u8], DropReason> {
    if datagram.len() < HEADER_LEN + TAG_LEN {
        return Err(DropReason::TooShort);
    }
    if datagram.len() > MAX_DATAGRAM {
        return Err(DropReason::TooLong);
    }
    if datagram[0] != WIRE_VERSION {
        return Err(DropReason::BadVersion);
    }
    if datagram[1] != key.id {
        return Err(DropReason::UnknownKey);
    }
    let tag_at = datagram.len() - TAG_LEN;
    let (head, rest) = datagram.split_at_mut(HEADER_LEN);
    let (body, tag) = rest.split_at_mut(tag_at - HEADER_LEN);
    key.cipher
        .decrypt_in_place_detached(XNonce::from_slice(&head[2..]), &head[..2], body, Tag::from_slice(tag))
        .map_err(|_| DropReason::AuthFailed)?;
    Ok(body)
}

/// Fills `buf` from the operating system's CSPRNG. Nonces and message ids
/// must not repeat under one key; 192 random bits per nonce make a repeat
/// negligible without any state to persist across restarts.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), getrandom::Error> {
    getrandom::fill(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn key(secret: &str) -> ClusterKey {
        ClusterKey::derive(&ClusterSecret::from_bytes(secret.as_bytes()).unwrap())
    }

    const S1: &str = "0123456789abcdef0123456789abcdef";
    const S2: &str = "fedcba9876543210fedcba9876543210";

    fn frame_bytes(payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        Frame { sent_at_ms: 1, message_id: 2, index: 0, count: 1, payload }.write(&mut v);
        v
    }

    #[test]
    fn derivation_is_deterministic_and_secret_dependent() {
        let (a, b, c) = (key(S1), key(S1), key(S2));
        assert_eq!(a.id(), b.id());
        let mut d = Vec::new();
        seal(&a, &[7; NONCE_LEN], b"hello", &mut d);
        let mut d2 = d.clone();
        assert_eq!(open(&b, &mut d2).unwrap(), b"hello");
        let mut d3 = d.clone();
        // Another secret: either another key id or a failed tag.
        assert!(open(&c, &mut d3).unwrap_err().is_auth_failure());
    }

    #[test]
    fn layout_and_overhead() {
        let k = key(S1);
        let plain = frame_bytes(b"xyz");
        let mut d = Vec::new();
        seal(&k, &[9; NONCE_LEN], &plain, &mut d);
        assert_eq!(d.len(), OVERHEAD + 3);
        assert_eq!(d[0], WIRE_VERSION);
        assert_eq!(d[1], k.id());
        assert_eq!(&d[2..26], &[9; NONCE_LEN]);
        assert_eq!(OVERHEAD, 59);
        assert_eq!(MAX_FRAGMENT_PAYLOAD, 65_448);
        const { assert!(MAX_MESSAGE >= MAX_DATAGRAM, "two fragments carry chitchat's largest message") };
    }

    #[test]
    fn every_tampered_byte_fails() {
        let k = key(S1);
        let mut d = Vec::new();
        seal(&k, &[1; NONCE_LEN], &frame_bytes(b"payload"), &mut d);
        for i in 0..d.len() {
            let mut t = d.clone();
            t[i] ^= 0x01;
            let err = open(&k, &mut t).unwrap_err();
            let expected = match i {
                0 => DropReason::BadVersion,
                1 => DropReason::UnknownKey,
                _ => DropReason::AuthFailed,
            };
            assert_eq!(err, expected, "byte {i}");
        }
    }

    #[test]
    fn truncated_fails() {
        let k = key(S1);
        let mut d = Vec::new();
        seal(&k, &[1; NONCE_LEN], &frame_bytes(b"payload"), &mut d);
        for len in 0..d.len() {
            let mut t = d[..len].to_vec();
            let err = open(&k, &mut t).unwrap_err();
            if len < HEADER_LEN + TAG_LEN {
                assert_eq!(err, DropReason::TooShort, "len {len}");
            } else {
                assert_eq!(err, DropReason::AuthFailed, "len {len}");
            }
        }
    }

    #[test]
    fn frame_checks() {
        let ok = frame_bytes(b"p");
        assert_eq!(Frame::parse(&ok).unwrap().payload, b"p");
        assert_eq!(Frame::parse(&ok[..FRAME_HEADER_LEN]), Err(DropReason::Malformed));
        for frag in [0x00u8, 0x03, 0x11, 0x22, 0x20, 0xf1] {
            let mut f = ok.clone();
            f[16] = frag;
            assert_eq!(Frame::parse(&f), Err(DropReason::Malformed), "frag {frag:#x}");
        }
        let mut f = ok.clone();
        f[16] = 0x12;
        let fr = Frame::parse(&f).unwrap();
        assert_eq!((fr.index, fr.count), (1, 2));
    }
}
