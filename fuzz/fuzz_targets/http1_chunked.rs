//! libFuzzer target for the chunked-coding decoder
//! (`sysmanage_node::proxy::wire::chunked::Decoder`) and the size lines the
//! node writes (`chunked::size_line`). Run with `bench/fuzz_http1.sh`.
//!
//! Input: `[n][n cut bytes][body]`, n = first byte % 16. The cut bytes are
//! the sizes (each + 1, used in turn, cycling) of the pieces the body is fed
//! in; with n = 0 it is fed one byte at a time.
//!
//! Invariants:
//! - the body decoded whole and decoded as it arrives in pieces gives the
//!   same data, the same outcome (end, needs more, or the same
//!   `ChunkError`) and, after the end, the same bytes left over;
//! - `NeedMore(n)` asks for at least one byte, and `Data` is never empty;
//! - the body bytes, cut into chunks by the same sizes and encoded with
//!   `size_line` + data + CRLF + `0\r\n\r\n` (with an extension or a trailer
//!   on some), decode back to themselves with `End` and exactly the bytes
//!   after the body left over; `chunk_size` reads every size line back.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sysmanage_node::proxy::wire::chunked::{chunk_size, size_line, ChunkError, Decoded, Decoder};

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    End,
    NeedMore,
    Err(ChunkError),
}

/// Decodes what `buf` holds until the decoder needs more, ends or fails.
fn drain(d: &mut Decoder, buf: &mut BytesMut, out: &mut Vec<u8>) -> Outcome {
    loop {
        match d.decode(buf) {
            Ok(Decoded::Data(b)) => {
                assert!(!b.is_empty(), "an empty Data");
                out.extend_from_slice(&b);
            }
            Ok(Decoded::End) => {
                assert!(d.is_done());
                return Outcome::End;
            }
            Ok(Decoded::NeedMore(n)) => {
                assert!(n >= 1, "NeedMore(0)");
                return Outcome::NeedMore;
            }
            Err(e) => return Outcome::Err(e),
        }
    }
}

/// Decodes `input` in one piece: data, outcome, bytes left over.
fn whole(input: &[u8]) -> (Vec<u8>, Outcome, Vec<u8>) {
    let mut d = Decoder::default();
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    let outcome = drain(&mut d, &mut buf, &mut out);
    (out, outcome, buf.to_vec())
}

/// Decodes `input` fed in pieces of the sizes `cuts` (cycled).
fn pieces(input: &[u8], cuts: &[u8]) -> (Vec<u8>, Outcome, Vec<u8>) {
    let mut d = Decoder::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut at = 0;
    let mut sizes = cuts.iter().map(|&c| usize::from(c) + 1).cycle();
    let mut outcome = Outcome::NeedMore;
    while at < input.len() {
        let n = sizes.next().unwrap_or(1).min(input.len() - at);
        buf.extend_from_slice(&input[at..at + n]);
        at += n;
        outcome = drain(&mut d, &mut buf, &mut out);
        match outcome {
            Outcome::NeedMore => {}
            Outcome::End => {
                // Whatever was not fed yet is left over too.
                buf.extend_from_slice(&input[at..]);
                return (out, outcome, buf.to_vec());
            }
            Outcome::Err(_) => return (out, outcome, Vec::new()),
        }
    }
    if input.is_empty() {
        outcome = drain(&mut d, &mut buf, &mut out);
    }
    (out, outcome, buf.to_vec())
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let n = usize::from(first % 16).min(rest.len());
    let (cuts, body) = rest.split_at(n);

    // Whole and in pieces: the same.
    let mut a = whole(body);
    let mut b = pieces(body, cuts);
    if matches!(a.1, Outcome::Err(_)) {
        // After an error nothing is read on; the bytes left are not
        // meaningful.
        a.2.clear();
        b.2.clear();
    }
    assert_eq!(a, b, "whole and in pieces ({cuts:?}) differ for {:?}", body.escape_ascii().to_string());

    // Round trip: the body bytes as chunks of the cut sizes.
    let mut encoded = Vec::new();
    let mut sizes = cuts.iter().map(|&c| usize::from(c) + 1).cycle();
    let mut at = 0;
    let mut i = 0;
    while at < body.len() {
        let len = sizes.next().unwrap_or(body.len()).min(body.len() - at);
        let start = encoded.len();
        size_line(len, &mut encoded);
        let line = &encoded[start..encoded.len() - 2];
        assert_eq!(chunk_size(line), Some(len as u64), "size line {:?}", line.escape_ascii().to_string());
        if i % 3 == 1 {
            // An extension on some chunks.
            encoded.truncate(encoded.len() - 2);
            encoded.extend_from_slice(b";ext=\"v\"\r\n");
        }
        encoded.extend_from_slice(&body[at..at + len]);
        encoded.extend_from_slice(b"\r\n");
        at += len;
        i += 1;
    }
    encoded.extend_from_slice(b"0\r\n");
    if first & 0x80 != 0 {
        encoded.extend_from_slice(b"X-Trailer: t\r\n");
    }
    encoded.extend_from_slice(b"\r\n");
    let body_len = encoded.len();
    encoded.extend_from_slice(b"NEXT");
    let want = (body.to_vec(), Outcome::End, b"NEXT".to_vec());
    assert_eq!(whole(&encoded), want, "round trip of {:?}", encoded.escape_ascii().to_string());
    assert_eq!(pieces(&encoded, cuts), want, "round trip in pieces of {:?}", encoded.escape_ascii().to_string());
    assert_eq!(whole(&encoded[..body_len]).2, b"", "bytes left over");
});
