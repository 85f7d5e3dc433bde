//! Memory and speed of rate-limit zones under a flood of distinct client
//! addresses. A benchmark, not a test; results go to `bench/RATELIMIT.md`.
//!
//! ```text
//! cargo run --release --example ratelimit_flood            # every scenario
//! cargo run --release --example ratelimit_flood -- bucket-v4
//! ```
//!
//! Each scenario runs in a fresh child process so its RSS (VmRSS from
//! /proc/self/status, before and after) is not inflated by the previous one.
//! All keys of a flood arrive at the same millisecond, so none is idle: the
//! worst case for memory, where only `max_keys` bounds the zone.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sysmanage_node::clock;
use sysmanage_node::ratelimit::{key_for_ip, KeySource, Zone, ZoneConfig, ZoneKind};

const FLOOD: u32 = 1_000_000;

const SCENARIOS: &[(&str, &str)] = &[
    ("bucket-v4", "bucket 10/s burst 20, 1M IPv4, max_keys 2M"),
    ("bucket-v6", "bucket 10/s burst 20, 1M IPv6, max_keys 2M"),
    ("window-v4", "window 20/10s, 1M IPv4, max_keys 2M"),
    ("window-v6", "window 20/10s, 1M IPv6, max_keys 2M"),
    ("bucket-cap", "bucket 10/s burst 20, 1M IPv4, max_keys 100k"),
    ("bucket-spread", "bucket 10/s burst 20, 1M IPv4 over 100 s (10 new per ms), max_keys 2M, no sweep"),
    ("window-cap", "window 20/10s, 1M IPv6, max_keys 100k"),
    ("hot-1t", "known keys, 1 thread: 10k keys, 20M checks"),
    ("hot-2t", "known keys, 2 threads: 10k keys, 20M checks each"),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        None => run_all(&args[0]),
        Some(name) => match SCENARIOS.iter().find(|(n, _)| *n == name) {
            Some((name, what)) => {
                run_one(name, what);
                ExitCode::SUCCESS
            }
            None => {
                let names: Vec<&str> = SCENARIOS.iter().map(|(n, _)| *n).collect();
                eprintln!("unknown scenario {name:?}; expected one of {}", names.join(", "));
                ExitCode::FAILURE
            }
        },
    }
}

fn run_all(program: &str) -> ExitCode {
    for (name, _) in SCENARIOS {
        match Command::new(program).arg(name).status() {
            Ok(status) if status.success() => {}
            Ok(status) => {
                eprintln!("scenario {name} failed: {status}");
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("cannot run {program} {name}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

fn zone(kind: ZoneKind, max_keys: usize) -> Zone {
    let config = ZoneConfig { name: "flood".into(), kind, key: KeySource::ClientIp, max_keys };
    match Zone::new(config) {
        Ok(z) => z,
        Err(e) => panic!("benchmark zone is invalid: {e}"),
    }
}

fn bucket() -> ZoneKind {
    ZoneKind::Bucket { per_second: 10.0, burst: 20 }
}

fn window() -> ZoneKind {
    ZoneKind::Window { limit: 20, window: Duration::from_secs(10) }
}

fn v4(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)) // 10.0.0.0 + i
}

fn v6(i: u32) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15)))
}

fn run_one(name: &str, what: &str) {
    match name {
        "bucket-v4" => flood(name, what, zone(bucket(), 2_000_000), v4),
        "bucket-v6" => flood(name, what, zone(bucket(), 2_000_000), v6),
        "window-v4" => flood(name, what, zone(window(), 2_000_000), v4),
        "window-v6" => flood(name, what, zone(window(), 2_000_000), v6),
        "bucket-cap" => flood(name, what, zone(bucket(), 100_000), v4),
        "bucket-spread" => spread(name, what, zone(bucket(), 2_000_000)),
        "window-cap" => flood(name, what, zone(window(), 100_000), v6),
        "hot-1t" => hot(name, what, 1),
        "hot-2t" => hot(name, what, 2),
        _ => unreachable!("names come from SCENARIOS"),
    }
}

/// Inserts `FLOOD` distinct addresses at one instant, then sweeps once they
/// are all idle.
fn flood(name: &str, what: &str, zone: Zone, addr: fn(u32) -> IpAddr) {
    let before = Mem::read();
    let start = Instant::now();
    let mut refused = 0u32;
    for i in 0..FLOOD {
        if !zone.check(key_for_ip(addr(i)), 0).is_allowed() {
            refused += 1;
        }
    }
    let elapsed = start.elapsed();
    let after = Mem::read();
    let stats = zone.stats();
    assert_eq!(refused, 0, "a new key was refused");
    assert!(stats.keys <= zone.max_keys(), "cap exceeded: {stats:?}");

    // 30 s later every key is idle (bucket full, window aged out).
    let start = Instant::now();
    let dropped = zone.sweep(30_000);
    let sweep = start.elapsed();
    let swept = Mem::read();

    let delta = after.rss_kib.saturating_sub(before.rss_kib);
    println!("## {name}: {what}");
    println!("  keys held {:>9} (cap {}), evicted live {}", stats.keys, zone.max_keys(), stats.evicted_live);
    println!(
        "  RSS before {:>7.1} MiB, after {:>7.1} MiB (+{:.1} MiB, {:.1} B/key held), peak {:.1} MiB",
        mib(before.rss_kib),
        mib(after.rss_kib),
        mib(delta),
        delta as f64 * 1024.0 / stats.keys.max(1) as f64,
        mib(after.hwm_kib)
    );
    println!(
        "  {} checks in {:.3} s: {:.2} M checks/s ({:.0} ns/check, key hashing included)",
        FLOOD,
        elapsed.as_secs_f64(),
        f64::from(FLOOD) / elapsed.as_secs_f64() / 1e6,
        elapsed.as_nanos() as f64 / f64::from(FLOOD)
    );
    println!(
        "  sweep at +30 s dropped {dropped} keys in {:.1} ms; RSS after sweep {:.1} MiB",
        sweep.as_secs_f64() * 1e3,
        mib(swept.rss_kib)
    );
}

/// New keys arriving over time, each idle 100 ms after its request: with no
/// `sweep` call, shards drop idle keys before their maps grow.
fn spread(name: &str, what: &str, zone: Zone) {
    let before = Mem::read();
    let start = Instant::now();
    let mut most = 0;
    for i in 0..FLOOD {
        zone.check(key_for_ip(v4(i)), u64::from(i / 10));
        if i % 10_000 == 0 {
            most = most.max(zone.stats().keys);
        }
    }
    let elapsed = start.elapsed();
    let after = Mem::read();
    println!("## {name}: {what}");
    println!(
        "  keys held at the end {}, most seen {most}, evicted live {}",
        zone.stats().keys,
        zone.stats().evicted_live
    );
    println!(
        "  RSS before {:.1} MiB, after {:.1} MiB, peak {:.1} MiB; {:.2} M checks/s",
        mib(before.rss_kib),
        mib(after.rss_kib),
        mib(after.hwm_kib),
        f64::from(FLOOD) / elapsed.as_secs_f64() / 1e6
    );
}

/// Checks on keys the zone already holds: the steady-state request path.
fn hot(name: &str, what: &str, threads: u32) {
    const KEYS: u64 = 10_000;
    const CHECKS: u64 = 20_000_000;
    // A huge rate so that checks are admitted (the longer path).
    let zone = Arc::new(zone(ZoneKind::Bucket { per_second: 1e6, burst: 1_000 }, 100_000));
    let keys: Arc<Vec<u64>> = Arc::new((0..KEYS as u32).map(|i| key_for_ip(v4(i))).collect());
    for &k in keys.iter() {
        zone.check(k, clock::now_ms());
    }
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (zone, keys) = (zone.clone(), keys.clone());
            std::thread::spawn(move || {
                let mut allowed = 0u64;
                for i in 0..CHECKS {
                    let key = keys[((i * 7919 + u64::from(t) * 31) % KEYS) as usize];
                    // The process clock, as the proxy reads it (its cost included).
                    if zone.check(key, clock::now_ms()).is_allowed() {
                        allowed += 1;
                    }
                }
                allowed
            })
        })
        .collect();
    let allowed: u64 = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    let elapsed = start.elapsed();
    let total = CHECKS * u64::from(threads);
    println!("## {name}: {what}");
    println!(
        "  {total} checks in {:.3} s: {:.2} M checks/s overall ({:.0} ns/check/thread), {:.1} % admitted",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64() / 1e6,
        elapsed.as_nanos() as f64 * f64::from(threads) / total as f64,
        allowed as f64 * 100.0 / total as f64
    );
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

struct Mem {
    rss_kib: u64,
    hwm_kib: u64,
}

impl Mem {
    fn read() -> Mem {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        Mem { rss_kib: field("VmRSS:"), hwm_kib: field("VmHWM:") }
    }
}
