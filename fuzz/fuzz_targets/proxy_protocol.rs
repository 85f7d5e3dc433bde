//! libFuzzer target for `sysmanage_node::proxy_protocol::parse`: any input
//! must give a header, `Incomplete` or an error, never a panic, and a header
//! must hold the same properties the seeded test in
//! `tests/proxy/proxy_protocol.rs` checks (bounded, prefix-stable, re-encodable).
//! Run with `bench/fuzz_proxy_protocol.sh`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sysmanage_node::proxy_protocol::{encode_v1, encode_v2, parse, Parsed, MAX_HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(Parsed::Complete { header, consumed }) => {
            assert!(consumed <= data.len() && consumed <= MAX_HEADER_LEN);
            assert_eq!(parse(&data[..consumed]).ok(), Some(Parsed::Complete { header, consumed }));
            // Reading up to `needed` at each step never passes the header.
            let mut at = 0;
            while at < consumed {
                match parse(&data[..at]) {
                    Ok(Parsed::Incomplete { needed }) => {
                        assert!(needed >= 1 && at + needed <= consumed);
                        at += needed;
                    }
                    other => panic!("prefix {at} of a {consumed}-byte header gave {other:?}"),
                }
            }
            if let (Some(src), Some(dst)) = (header.source, header.destination) {
                for encoded in [encode_v1(src, dst), encode_v2(src, dst)] {
                    assert_eq!(parse(&encoded).ok(), Some(Parsed::Complete { header, consumed: encoded.len() }));
                }
            }
        }
        Ok(Parsed::Incomplete { needed }) => {
            assert!(needed >= 1 && data.len() + needed <= MAX_HEADER_LEN);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
