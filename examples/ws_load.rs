//! WebSocket load generator for the sticky-session / tunnel benchmarks.
//!
//!   ws_load rate ADDR RATE SECS [PATH]   open RATE new WebSocket connections per second for SECS,
//!                                        each with a NEW hostname in a SysManage-style token
//!                                        (?token=base64(JSON)); time TCP connect -> 101 response
//!                                        head; close right after the 101. Prints percentiles.
//!   ws_load hold ADDR N SECS [PATH]      open N tunnels (100 handshakes in flight), print
//!                                        "READY open=.. failed=..", hold them idle SECS, exit.
//!   ws_load beat ADDR N SECS [PATH]      open N tunnels, print "READY ...", then for SECS each
//!                                        sends a heartbeat (a 16-byte masked text frame) every
//!                                        BEAT_EVERY_MS (default 3000, first at a random offset)
//!                                        and reads its echo; prints "BEATS n=.. lost=.." and the
//!                                        round trip's percentiles.
//!
//! PATH defaults to /api/agent/connect. Raw TCP client (no WebSocket library):
//! one socket and a few hundred bytes per connection, so the client's own memory
//! does not matter. Single-threaded runtime.
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A token shaped like SysManage's, fresh for every attempt (the demo's
/// backend makes them).
fn token(hostname: &str) -> String {
    sysmanage_node::demo::backend::connection_token(hostname, "127.0.0.1")
}

fn request(path: &str, hostname: &str) -> Vec<u8> {
    format!(
        "GET {path}?token={} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        token(hostname)
    )
    .into_bytes()
}

/// Connects, sends the Upgrade, reads the response head. Ok(stream) on 101.
async fn handshake(addr: &str, req: &[u8]) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let _ = s.set_nodelay(true);
    s.write_all(req).await.map_err(|e| format!("write: {e}"))?;
    let mut buf = [0u8; 1024];
    let mut n = 0;
    loop {
        let r = s.read(&mut buf[n..]).await.map_err(|e| format!("read: {e}"))?;
        if r == 0 {
            return Err("eof before response".into());
        }
        n += r;
        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        if n == buf.len() {
            return Err("head too long".into());
        }
    }
    if buf.starts_with(b"HTTP/1.1 101") {
        Ok(s)
    } else {
        let line = String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_string();
        Err(format!("status: {line}"))
    }
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn rate(addr: String, rate: u64, secs: u64, path: String) {
    let lat = Arc::new(std::sync::Mutex::new(Vec::<u64>::with_capacity((rate * secs) as usize)));
    // (second of the run the connection started in, latency in µs), for the timeline.
    let timeline = Arc::new(std::sync::Mutex::new(Vec::<(u64, u64)>::with_capacity((rate * secs) as usize)));
    let errors = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<String, u64>::new()));
    let total = rate * secs;
    let period = Duration::from_nanos(1_000_000_000 / rate);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let run = format!("{:x}", fastrand::u32(..));
    let start = Instant::now();
    let mut handles = Vec::with_capacity(total as usize);
    let mut late_max = Duration::ZERO;
    for i in 0..total {
        tick.tick().await;
        let due = start + period * i as u32;
        late_max = late_max.max(Instant::now().saturating_duration_since(due));
        let req = request(&path, &format!("agent-{run}-{i:07}.example.com"));
        let (addr, lat, errors, timeline) = (addr.clone(), lat.clone(), errors.clone(), timeline.clone());
        let sec = start.elapsed().as_secs();
        handles.push(tokio::spawn(async move {
            let t0 = Instant::now();
            match tokio::time::timeout(Duration::from_secs(10), handshake(&addr, &req)).await {
                Ok(Ok(s)) => {
                    let us = t0.elapsed().as_micros() as u64;
                    lat.lock().unwrap().push(us);
                    timeline.lock().unwrap().push((sec, us));
                    drop(s);
                }
                Ok(Err(e)) => *errors.lock().unwrap().entry(e).or_default() += 1,
                Err(_) => *errors.lock().unwrap().entry("timeout 10s".into()).or_default() += 1,
            }
        }));
    }
    let issued = start.elapsed();
    for h in handles {
        let _ = h.await;
    }
    let all = start.elapsed();
    let mut v = lat.lock().unwrap().clone();
    v.sort_unstable();
    let ok = v.len();
    println!(
        "rate target={rate}/s secs={secs} issued={total} in {:.2}s (issue rate {:.0}/s, max scheduling lag {:.1} ms) \
         ok101={ok} achieved={:.0}/s",
        issued.as_secs_f64(),
        total as f64 / issued.as_secs_f64(),
        late_max.as_secs_f64() * 1000.0,
        ok as f64 / all.as_secs_f64()
    );
    println!(
        "latency_ms p50={:.3} p90={:.3} p99={:.3} p99.9={:.3} max={:.3}",
        pct(&v, 50.0),
        pct(&v, 90.0),
        pct(&v, 99.0),
        pct(&v, 99.9),
        pct(&v, 100.0)
    );
    let over = v.iter().filter(|&&us| us > 5000).count();
    println!("over_5ms={over} ({:.2}%)", over as f64 * 100.0 / ok.max(1) as f64);
    // Per second: how many took over 5 ms, and the max. Shows whether the tail is
    // spread out or comes in bursts (stalls of the proxy or of the machine).
    let tl = timeline.lock().unwrap();
    let mut line = String::from("per-second over_5ms/max_ms:");
    for s in 0..secs {
        let xs: Vec<u64> = tl.iter().filter(|t| t.0 == s).map(|t| t.1).collect();
        let o = xs.iter().filter(|&&us| us > 5000).count();
        let m = xs.iter().copied().max().unwrap_or(0);
        line.push_str(&format!(" {s}:{o}/{:.0}", m as f64 / 1000.0));
    }
    println!("{line}");
    let errs = errors.lock().unwrap();
    println!("errors={} {:?}", errs.values().sum::<u64>(), *errs);
}

/// Opens `n` tunnels, 100 handshakes in flight, and prints
/// "READY open=.. failed=.. in ..s {reasons}".
async fn open_tunnels(addr: &str, n: u64, path: &str) -> Vec<TcpStream> {
    let sem = Arc::new(tokio::sync::Semaphore::new(100));
    let run = format!("{:x}", fastrand::u32(..));
    let t0 = Instant::now();
    let mut handles = Vec::with_capacity(n as usize);
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let req = request(path, &format!("agent-{run}-{i:07}.example.com"));
        let addr = addr.to_string();
        handles.push(tokio::spawn(async move {
            let r = handshake(&addr, &req).await;
            drop(permit);
            r
        }));
    }
    let mut open = Vec::with_capacity(n as usize);
    let mut failed = std::collections::BTreeMap::<String, u64>::new();
    for h in handles {
        match h.await.unwrap() {
            Ok(s) => open.push(s),
            Err(e) => *failed.entry(e).or_default() += 1,
        }
    }
    println!(
        "READY open={} failed={} in {:.1}s {:?}",
        open.len(),
        failed.values().sum::<u64>(),
        t0.elapsed().as_secs_f64(),
        failed
    );
    open
}

async fn hold(addr: String, n: u64, secs: u64, path: String) {
    let mut open = open_tunnels(&addr, n, &path).await;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    // Check the tunnels are still open: a closed one reads EOF at once.
    let mut alive = 0;
    let mut b = [0u8; 64];
    for s in &mut open {
        match tokio::time::timeout(Duration::from_millis(0), s.read(&mut b)).await {
            Err(_) => alive += 1,
            Ok(Ok(n)) if n > 0 => alive += 1,
            _ => {}
        }
    }
    println!("DONE alive_after_hold={alive}");
}

/// A client's masked text frame of 16 bytes, as an agent's heartbeat.
fn heartbeat_frame() -> [u8; 22] {
    let payload = *b"{\"heartbeat\":1} ";
    let mask: [u8; 4] = fastrand::u32(..).to_be_bytes();
    let mut f = [0u8; 22];
    f[0] = 0x81;
    f[1] = 0x80 | payload.len() as u8;
    f[2..6].copy_from_slice(&mask);
    for (i, b) in payload.iter().enumerate() {
        f[6 + i] = b ^ mask[i % 4];
    }
    f
}

async fn beat(addr: String, n: u64, secs: u64, path: String) {
    let every = Duration::from_millis(std::env::var("BEAT_EVERY_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(3000));
    let open = open_tunnels(&addr, n, &path).await;
    let start = Instant::now();
    let rtts = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let lost = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for mut s in open {
        let (rtts, lost) = (rtts.clone(), lost.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(fastrand::u64(0..every.as_millis() as u64))).await;
            let mut tick = tokio::time::interval(every);
            let mut buf = [0u8; 64];
            while start.elapsed() < Duration::from_secs(secs) {
                tick.tick().await;
                let t0 = Instant::now();
                if s.write_all(&heartbeat_frame()).await.is_err() {
                    lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return s;
                }
                // The echo: an unmasked frame of 2 + 16 bytes.
                let mut got = 0;
                while got < 18 {
                    match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf[got..])).await {
                        Ok(Ok(k)) if k > 0 => got += k,
                        _ => {
                            lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            return s;
                        }
                    }
                }
                rtts.lock().unwrap().push(t0.elapsed().as_micros() as u64);
            }
            s
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut v = rtts.lock().unwrap().clone();
    v.sort_unstable();
    println!(
        "BEATS n={} lost={} in {:.1}s rtt_ms p50={:.3} p99={:.3} max={:.3}",
        v.len(),
        lost.load(std::sync::atomic::Ordering::Relaxed),
        start.elapsed().as_secs_f64(),
        pct(&v, 50.0),
        pct(&v, 99.0),
        pct(&v, 100.0)
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    let usage = "usage: ws_load rate ADDR RATE SECS [PATH] | hold ADDR N SECS [PATH] | beat ADDR N SECS [PATH]";
    let addr = a.get(2).expect(usage).clone();
    let x: u64 = a.get(3).expect(usage).parse().unwrap();
    let secs: u64 = a.get(4).expect(usage).parse().unwrap();
    let path = a.get(5).cloned().unwrap_or_else(|| "/api/agent/connect".into());
    match a[1].as_str() {
        "rate" => rate(addr, x, secs, path).await,
        "hold" => hold(addr, x, secs, path).await,
        "beat" => beat(addr, x, secs, path).await,
        _ => panic!("{usage}"),
    }
}
