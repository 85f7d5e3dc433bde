//! Deterministic fuzzing of the datagram decoder: 100,000 seeded random and
//! mutated datagrams. Nothing may panic, and no changed datagram may open
//! (that would be a forgery). The cargo-fuzz target in `fuzz/` explores
//! further; this test keeps the property in every `cargo test`.

use std::net::SocketAddr;

use sysmanage_node::cluster::transport::replay::ReplayConfig;
use sysmanage_node::cluster::transport::wire::{self, DropReason, Frame, NONCE_LEN};
use sysmanage_node::cluster::transport::{Opener, Sealer};
use sysmanage_node::cluster::{ClusterKey, ClusterSecret};

const ROUNDS: usize = 100_000;
const NOW: u64 = 1_800_000_000_000;

fn key(secret: &str) -> ClusterKey {
    ClusterKey::derive(&ClusterSecret::from_bytes(secret.as_bytes()).unwrap())
}

fn mutate(rng: &mut fastrand::Rng, d: &mut Vec<u8>) {
    match rng.u8(..6) {
        0 if !d.is_empty() => {
            let i = rng.usize(..d.len());
            d[i] ^= 1 << rng.u8(..8);
        }
        1 if !d.is_empty() => {
            let i = rng.usize(..d.len());
            d[i] = rng.u8(..);
        }
        2 => d.truncate(rng.usize(..=d.len())),
        3 => {
            let extra = rng.usize(1..64);
            d.extend((0..extra).map(|_| rng.u8(..)));
        }
        4 if d.len() > 2 => {
            // Swap two bytes.
            let (i, j) = (rng.usize(..d.len()), rng.usize(..d.len()));
            d.swap(i, j);
        }
        _ => {
            // Several flips at once.
            for _ in 0..rng.usize(1..8) {
                if d.is_empty() {
                    break;
                }
                let i = rng.usize(..d.len());
                d[i] = d[i].wrapping_add(rng.u8(1..));
            }
        }
    }
}

#[test]
fn hundred_thousand_random_and_mutated_datagrams() {
    let k = key("fuzz-secret-0123456789abcdef-ABCDEF");
    let sealer = Sealer::new(k.clone());
    let mut opener = Opener::new(k.clone(), ReplayConfig::default());
    let mut rng = fastrand::Rng::with_seed(0x5eed_c1a5_u64);
    let from: SocketAddr = "127.0.0.3:7946".parse().unwrap();

    // Valid datagrams to mutate, one of them two fragments long.
    let mut pool: Vec<Vec<u8>> = Vec::new();
    for len in [1usize, 7, 64, 300, 1_400, 9_000] {
        let msg: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        pool.extend(sealer.seal(&msg, NOW).unwrap());
    }
    let small = pool.len();
    let big: Vec<u8> = (0..wire::MAX_DATAGRAM).map(|_| rng.u8(..)).collect();
    pool.extend(sealer.seal(&big, NOW).unwrap());

    let mut outcomes = std::collections::HashMap::<&'static str, usize>::new();
    let mut delivered = 0usize;
    for round in 0..ROUNDS {
        let now = NOW + (round as u64 % 1_000);
        let mode = rng.u8(..4);
        let (mut d, original) = match mode {
            0 => {
                let len = if rng.bool() { rng.usize(..128) } else { rng.usize(..4_096) };
                ((0..len).map(|_| rng.u8(..)).collect::<Vec<u8>>(), None)
            }
            1 | 2 => {
                // The two 64 KB fragments are slow to authenticate in a debug
                // build: pick them in 1 % of the rounds.
                let pick = if rng.u8(..100) == 0 { rng.usize(small..pool.len()) } else { rng.usize(..small) };
                let original = pool[pick].clone();
                let mut d = original.clone();
                mutate(&mut rng, &mut d);
                (d, Some(original))
            }
            _ => {
                // Authentic, with an arbitrary frame: fuzzes frame parsing,
                // the replay rules and reassembly behind the tag.
                let mut plain: Vec<u8> = Vec::new();
                if rng.bool() {
                    let payload: Vec<u8> = (0..rng.usize(..64)).map(|_| rng.u8(..)).collect();
                    Frame {
                        sent_at_ms: now.wrapping_add(rng.u64(..80_000)).wrapping_sub(40_000),
                        message_id: rng.u64(..16),
                        index: rng.u8(..3),
                        count: rng.u8(..4),
                        payload: &payload,
                    }
                    .write(&mut plain);
                } else {
                    plain.extend((0..rng.usize(..40)).map(|_| rng.u8(..)));
                }
                let mut nonce = [0u8; NONCE_LEN];
                nonce.iter_mut().for_each(|b| *b = rng.u8(..));
                let mut d = Vec::new();
                wire::seal(&k, &nonce, &plain, &mut d);
                (d, None)
            }
        };
        let changed = original.as_ref().map(|o| *o != d).unwrap_or(false);
        match opener.open(&mut d, from, now) {
            Ok(message) => {
                assert!(!changed, "round {round}: a modified datagram opened (forgery)");
                if message.is_some() {
                    delivered += 1;
                }
                *outcomes.entry("accepted").or_default() += 1;
            }
            Err(reason) => {
                if mode == 0 || changed {
                    assert_ne!(reason, DropReason::Replayed, "round {round}: junk cannot be a replay");
                }
                *outcomes.entry(reason.as_str()).or_default() += 1;
            }
        }
    }
    eprintln!("{ROUNDS} datagrams: {outcomes:?}, {delivered} messages delivered");
    for reason in ["too_short", "bad_version", "unknown_key", "auth_failed", "malformed", "stale", "future", "replayed"]
    {
        assert!(outcomes.get(reason).copied().unwrap_or(0) > 0, "no {reason} in {outcomes:?}");
    }
    assert!(delivered > 0);
}

/// Writes the committed seeds of the cargo-fuzz target (same key and clock
/// as `fuzz/fuzz_targets/cluster_datagram.rs`). Run by hand:
/// `cargo test --test cluster datagram_fuzz::write_fuzz_seeds -- --ignored`.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let k = key("fuzz-secret-0123456789abcdef-ABCDEF");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/cluster_datagram");
    std::fs::create_dir_all(&dir).unwrap();
    let frame = |id: u64, index: u8, count: u8, payload: &[u8], at: u64| {
        let mut v = Vec::new();
        Frame { sent_at_ms: at, message_id: id, index, count, payload }.write(&mut v);
        v
    };
    let seal = |plain: &[u8]| {
        let mut d = Vec::new();
        wire::seal(&k, &[0x42; NONCE_LEN], plain, &mut d);
        d
    };
    let with_mode = |mode: u8, body: &[u8]| [&[mode][..], body].concat();
    let record = |flag: u8, body: &[u8]| [&[body.len() as u8, flag][..], body].concat();

    let valid = seal(&frame(1, 0, 1, b"hello gossip", NOW));
    std::fs::write(dir.join("raw_valid"), with_mode(0, &valid)).unwrap();
    std::fs::write(dir.join("raw_short"), with_mode(0, &valid[..30])).unwrap();
    std::fs::write(dir.join("frame_whole"), with_mode(1, &frame(2, 0, 1, b"payload", NOW))).unwrap();
    std::fs::write(dir.join("frame_fragment"), with_mode(1, &frame(3, 1, 2, b"second half", NOW))).unwrap();
    std::fs::write(dir.join("frame_stale"), with_mode(1, &frame(4, 0, 1, b"old", NOW - 60_000))).unwrap();
    let seq = [
        record(1, &frame(5, 0, 2, b"first ", NOW)),
        record(1, &frame(5, 1, 2, b"second", NOW)),
        record(0, &valid),
        record(0, &valid),
        record(1 | (100 << 1), &frame(6, 0, 1, b"later", NOW + 50_000)),
    ]
    .concat();
    std::fs::write(dir.join("sequence"), with_mode(2, &seq)).unwrap();
}
