//! libFuzzer target for the session records a peer sends
//! (`sysmanage_node::control::replication::parse_session_lines`: the
//! catch-up body, whose lines are also the gossip entries): any input gives
//! records and a count of malformed lines, never a panic; every non-empty
//! line is one or the other; and the records, written again, read back the
//! same with no malformed line.
//! Run with `bench/fuzz_for.sh session_lines`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sysmanage_node::control::replication::{parse_session_lines, session_lines};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (records, bad) = parse_session_lines(text);
    assert_eq!(records.len() + bad, text.lines().filter(|l| !l.is_empty()).count());
    let again = session_lines(records.clone());
    assert_eq!(parse_session_lines(&again), (records, 0));
});
