//! Benchmark: load a sticky-session store of N records at start.
//!
//!   sessions_load write DIR [N]   write N records (default 1,000,000) into a fresh DIR/sessions.redb
//!   sessions_load load DIR        time Store::open + load_into(Table), print RSS
//!
//! See bench/sessions_load.sh and BENCHMARKS.md.
use std::path::Path;
use std::time::{Duration, Instant};

use sysmanage_node::sessions::{unix_now_ms, Hlc, SessionRecord, Store, StoreOptions, Table};

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The store's options; `SESSIONS_CACHE=BYTES` sets redb's page cache
/// (the node's default otherwise), to measure what the cap costs.
fn options() -> StoreOptions {
    let mut opts = StoreOptions::default();
    if let Some(bytes) = std::env::var("SESSIONS_CACHE").ok().and_then(|v| v.parse().ok()) {
        opts.cache_size = bytes;
    }
    opts
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("");
    let dir = Path::new(args.get(2).expect("usage: sessions_load write|load DIR [N]"));
    match mode {
        "write" => {
            let n: usize = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(1_000_000);
            let t0 = Instant::now();
            let opts = options();
            let cache_size = opts.cache_size;
            let store = Store::open_with(dir, opts).unwrap();
            let h = store.handle();
            let now = unix_now_ms();
            let servers = ["app1", "app2", "app3"];
            // SESSIONS_RANDOM=1: keys inserted in no order (else in order).
            let random = std::env::var("SESSIONS_RANDOM").is_ok_and(|v| v == "1");
            for i in 0..n {
                let r = SessionRecord {
                    key: if random {
                        // A permutation of 0..2^64: keys in no order, as
                        // agents' names arrive.
                        format!("agent-{:016x}.example.com", (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
                    } else {
                        format!("agent-{i:07}.example.com")
                    },
                    pool: "agents".into(),
                    server: servers[i % 3].into(),
                    expires_at_ms: now + 3_600_000,
                    version: Hlc::from_parts(now, (i % 65_536) as u16),
                    origin: "lb1".into(),
                    tombstone: false,
                };
                // The queue holds 65,536 writes: flush every 32,768.
                loop {
                    match h.put(r.clone()) {
                        Ok(()) => break,
                        Err(_) => {
                            h.flush().unwrap();
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                }
                if i % 32_768 == 32_767 {
                    h.flush().unwrap();
                }
            }
            h.flush().unwrap();
            let stats = h.stats();
            // With the store still open: what its cache holds.
            let rss = rss_kib();
            store.close().unwrap();
            let size = std::fs::metadata(dir.join("sessions.redb")).map(|m| m.len()).unwrap_or(0);
            println!(
                "wrote {n} records in {:.2} s; written={} dropped={} commits={}; file {:.1} MiB; rss before close {rss} KiB; cache {} B",
                t0.elapsed().as_secs_f64(),
                stats.records_written,
                stats.dropped,
                stats.commits,
                size as f64 / 1048576.0,
                cache_size
            );
        }
        "load" => {
            let before = rss_kib();
            let t0 = Instant::now();
            let store = Store::open_with(dir, options()).unwrap();
            let t_open = t0.elapsed();
            let table = Table::new("lb1");
            let loaded = store.load_into(&table, unix_now_ms()).unwrap();
            let total = t0.elapsed();
            let after = rss_kib();
            println!(
                "loaded={loaded} open_s={:.3} load_s={:.3} total_s={:.3} rss_before_kib={before} rss_after_kib={after}",
                t_open.as_secs_f64(),
                (total - t_open).as_secs_f64(),
                total.as_secs_f64()
            );
            // Keep `table` alive until after the RSS reading.
            std::hint::black_box(&table);
            drop(store);
        }
        _ => panic!("usage: sessions_load write|load DIR [N]"),
    }
}
