//! Turning a client into a fixed-size key, and the hasher the zone tables use
//! on those keys.
//!
//! Keys are 64-bit SipHash values under a random per-process seed, so nobody
//! outside the process can predict them. A client that picks many source
//! addresses (any IPv6 /64) or header values therefore cannot aim them at one
//! table bucket or one shard, and cannot collide with a chosen victim's key.
//! In a cluster the seed is derived from the cluster secret instead
//! ([`use_shared_seed`]), so that every node gives a client the same key and
//! cluster-wide zones can sum the nodes' counts; it is still unknown outside
//! the cluster.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::IpAddr;
use std::sync::OnceLock;

enum Seed {
    Random(RandomState),
    Shared(u64, u64),
}

static SEED: OnceLock<Seed> = OnceLock::new();

fn seed() -> &'static Seed {
    SEED.get_or_init(|| Seed::Random(RandomState::new()))
}

/// Keys from now on are SipHash under `(k0, k1)`, the same on every node of
/// a cluster. Must run before the first key is made; returns false (and
/// changes nothing) when keys were already made under another seed.
pub fn use_shared_seed(k0: u64, k1: u64) -> bool {
    let s = SEED.get_or_init(|| Seed::Shared(k0, k1));
    matches!(s, Seed::Shared(a, b) if *a == k0 && *b == k1)
}

impl Seed {
    fn hash_one<T: std::hash::Hash>(&self, value: T) -> u64 {
        match self {
            Seed::Random(r) => r.hash_one(value),
            Seed::Shared(k0, k1) => {
                #[allow(deprecated)] // SipHash-2-4 with explicit keys; std has no other keyed hasher
                let mut h = std::hash::SipHasher::new_with_keys(*k0, *k1);
                value.hash(&mut h);
                h.finish()
            }
        }
    }
}

/// The key of a client address. An IPv4 address and the same address written
/// as IPv4-mapped IPv6 (`::ffff:a.b.c.d`, what a dual-stack socket reports)
/// give the same key. IPv6 addresses are keyed whole (like nginx's
/// `$binary_remote_addr`), not by prefix.
pub fn key_for_ip(ip: IpAddr) -> u64 {
    let bits = match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
        IpAddr::V6(v6) => v6.to_bits(),
    };
    seed().hash_one(bits)
}

/// The key of a header value (its raw bytes, compared exactly).
pub fn key_for_header(value: &[u8]) -> u64 {
    seed().hash_one(value)
}

/// A bijective 64-bit finaliser (MurmurHash3 `fmix64`). Keys from
/// [`key_for_ip`] are already uniform; mixing again costs a few cycles and
/// keeps arbitrary `u64` keys (tests, future key sources) spread over shards
/// and buckets. Being a bijection, it adds no collisions.
pub(super) fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Hasher for `u64` keys in the zone tables: [`mix`] of the key.
#[derive(Default)]
pub(super) struct MixHasher(u64);

impl Hasher for MixHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Not reached for `u64` keys (they call `write_u64`); kept correct anyway.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = mix(self.0 ^ u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = mix(n);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn ipv4_and_its_mapped_ipv6_form_share_a_key() {
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
        assert_eq!(key_for_ip(v4), key_for_ip(mapped));
    }

    #[test]
    fn distinct_addresses_get_distinct_keys() {
        let a = key_for_ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
        let b = key_for_ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 8)));
        let c = key_for_ip(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)));
        let d = key_for_ip(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 8)));
        assert!(a != b && a != c && a != d && b != c && b != d && c != d);
        // An IPv6 address whose low 32 bits equal an IPv4 address is still distinct.
        let v4_tail = key_for_ip(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0xc000, 0x0207)));
        assert_ne!(a, v4_tail);
    }

    #[test]
    fn header_keys_are_stable_and_exact() {
        assert_eq!(key_for_header(b"agent-17"), key_for_header(b"agent-17"));
        assert_ne!(key_for_header(b"agent-17"), key_for_header(b"Agent-17"));
        assert_ne!(key_for_header(b""), key_for_header(b"\0"));
    }

    #[test]
    fn mix_spreads_small_integers() {
        // Consecutive keys must not land in the same shard (bits 32..38).
        let shards: std::collections::HashSet<u64> = (0..64u64).map(|k| (mix(k) >> 32) & 63).collect();
        assert!(shards.len() > 32, "only {} of 64 shards used", shards.len());
    }
}
