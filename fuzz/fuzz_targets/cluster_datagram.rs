//! libFuzzer target for the gossip datagram decoder
//! (`sysmanage_node::cluster::transport::Opener`): any bytes must be
//! dropped with a reason or open into a message, never panic; an authentic
//! frame that opens must give back exactly its payload. Run with
//! `bench/fuzz_cluster.sh`.
//!
//! The first byte picks a mode:
//! - 0: the rest is a raw datagram (header, key id, tag checks);
//! - 1: the rest is a *plaintext frame*, sealed with the fuzz key first, so
//!   that frame parsing, the replay window and reassembly behind the tag are
//!   reachable;
//! - 2: the rest is a sequence of `[len][flag][bytes]` records fed to one
//!   decoder with an advancing clock (replays, fragments, expiry).

#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sysmanage_node::cluster::transport::replay::ReplayConfig;
use sysmanage_node::cluster::transport::wire::{self, Frame, NONCE_LEN};
use sysmanage_node::cluster::transport::Opener;
use sysmanage_node::cluster::{ClusterKey, ClusterSecret};

const NOW: u64 = 1_800_000_000_000;

fn key() -> &'static ClusterKey {
    static KEY: OnceLock<ClusterKey> = OnceLock::new();
    KEY.get_or_init(|| {
        ClusterKey::derive(&ClusterSecret::from_bytes(b"fuzz-secret-0123456789abcdef-ABCDEF").expect("valid secret"))
    })
}

fn from() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 3], 7946))
}

fn sealed(plain: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    wire::seal(key(), &[0x42; NONCE_LEN], plain, &mut d);
    d
}

/// Opens an authentic datagram made from `plain` and checks the result.
fn open_authentic(opener: &mut Opener, plain: &[u8], now: u64) {
    let mut d = sealed(plain);
    if let Ok(Some(message)) = opener.open(&mut d, from(), now) {
        let frame = Frame::parse(plain).expect("an opened datagram has a valid frame");
        if frame.count == 1 {
            assert_eq!(&*message, frame.payload);
        } else {
            assert!(message.len() >= frame.payload.len());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut opener = Opener::new(key().clone(), ReplayConfig::default());
    match mode % 3 {
        0 => {
            let mut d = rest.to_vec();
            let _ = opener.open(&mut d, from(), NOW);
        }
        1 => open_authentic(&mut opener, rest, NOW),
        _ => {
            let mut now = NOW;
            let mut input = rest;
            while let [len, flag, tail @ ..] = input {
                let n = usize::from(*len).min(tail.len());
                let (record, next) = tail.split_at(n);
                now += u64::from(*flag >> 1) * 500;
                if flag & 1 == 0 {
                    let mut d = record.to_vec();
                    let _ = opener.open(&mut d, from(), now);
                } else {
                    open_authentic(&mut opener, record, now);
                }
                input = next;
            }
        }
    }
});
