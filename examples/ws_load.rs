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
//!   ws_load storm ADDR N M [PATH]        a reconnect storm: M established tunnels beating every
//!                                        BEAT_EVERY_MS (default 500) on a thread of their own,
//!                                        then N agents connecting all at once (each: TCP connect,
//!                                        TLS handshake, Upgrade, 101; a 60 s limit). Prints
//!                                        "STORM ..." (time until all are open, connect->101
//!                                        percentiles, errors) and the established tunnels'
//!                                        heartbeat round trips before, during and after it.
//!                                        STORM_RESUME=1: each agent connects once first and
//!                                        its storm handshake resumes that session (a ticket).
//!                                        STORM_AGENTS_NICE=K: the storm's agents run at nice +K
//!                                        (the beating thread and the backends keep theirs), so
//!                                        that on a machine shared with them the agents' own
//!                                        handshake work does not delay the heartbeats measured.
//!
//! ADDR is host:port, or tls://host:port for TLS: a full handshake every time
//! (no resumption), TLS 1.3 with X25519 only (what OpenSSL 3.0, hence nginx
//! and HAProxy here, negotiates too), the certificate not verified against a
//! root but the handshake's signature checked, as an agent's TLS does.
//! PATH defaults to /api/agent/connect. Raw client (no WebSocket library):
//! one socket and a few hundred bytes per connection, so the client's own memory
//! does not matter. Single-threaded runtime (storm: two, one per thread).
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// A connection to the proxy, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Conn = Box<dyn Io>;

/// Where to connect: `host:port`, or `tls://host:port`.
#[derive(Clone)]
struct Target {
    addr: String,
    tls: Option<tokio_rustls::TlsConnector>,
}

/// TLS handshakes that resumed a session (STORM_RESUME).
static RESUMED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Target {
    fn parse(s: &str) -> Target {
        match s.strip_prefix("tls://") {
            None => Target { addr: s.to_string(), tls: None },
            Some(addr) => {
                sysmanage_node::tls::install_crypto_provider();
                let provider = rustls::crypto::CryptoProvider {
                    kx_groups: vec![rustls::crypto::aws_lc_rs::kx_group::X25519],
                    ..rustls::crypto::aws_lc_rs::default_provider()
                };
                let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
                    .with_protocol_versions(&[&rustls::version::TLS13])
                    .expect("TLS 1.3")
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(sysmanage_node::tls::InsecureSkipVerify::new()))
                    .with_no_client_auth();
                // Every handshake a full one, as after a node's restart.
                config.resumption = rustls::client::Resumption::disabled();
                Target { addr: addr.to_string(), tls: Some(tokio_rustls::TlsConnector::from(Arc::new(config))) }
            }
        }
    }

    /// The same, with a session cache of its own (an agent's): its next
    /// handshakes resume the session of its first.
    fn resuming(&self) -> Target {
        let tls = self.tls.as_ref().map(|tls| {
            let mut config = (**tls.config()).clone();
            config.resumption = rustls::client::Resumption::in_memory_sessions(4);
            tokio_rustls::TlsConnector::from(Arc::new(config))
        });
        Target { addr: self.addr.clone(), tls }
    }

    async fn connect(&self) -> Result<Conn, String> {
        let s = TcpStream::connect(&self.addr).await.map_err(|e| format!("connect: {e}"))?;
        let _ = s.set_nodelay(true);
        match &self.tls {
            None => Ok(Box::new(s)),
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let s = tls.connect(name, s).await.map_err(|e| format!("tls: {e}"))?;
                if s.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                    RESUMED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(Box::new(s))
            }
        }
    }
}

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
async fn handshake(target: &Target, req: &[u8]) -> Result<Conn, String> {
    let mut s = target.connect().await?;
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

async fn rate(target: Target, rate: u64, secs: u64, path: String) {
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
        let (target, lat, errors, timeline) = (target.clone(), lat.clone(), errors.clone(), timeline.clone());
        let sec = start.elapsed().as_secs();
        handles.push(tokio::spawn(async move {
            let t0 = Instant::now();
            match tokio::time::timeout(Duration::from_secs(10), handshake(&target, &req)).await {
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
async fn open_tunnels(target: &Target, n: u64, path: &str) -> Vec<Conn> {
    let sem = Arc::new(tokio::sync::Semaphore::new(100));
    let run = format!("{:x}", fastrand::u32(..));
    let t0 = Instant::now();
    let mut handles = Vec::with_capacity(n as usize);
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let req = request(path, &format!("agent-{run}-{i:07}.example.com"));
        let target = target.clone();
        handles.push(tokio::spawn(async move {
            let r = handshake(&target, &req).await;
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

async fn hold(target: Target, n: u64, secs: u64, path: String) {
    let mut open = open_tunnels(&target, n, &path).await;
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

fn beat_every(default_ms: u64) -> Duration {
    Duration::from_millis(std::env::var("BEAT_EVERY_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(default_ms))
}

/// Heartbeats of a set of tunnels: (when it was sent, in ms from `epoch`;
/// its round trip in µs), and how many went unanswered.
#[derive(Default)]
struct Beats {
    rtts: std::sync::Mutex<Vec<(u64, u64)>>,
    lost: std::sync::atomic::AtomicU64,
}

impl Beats {
    /// The round trips (µs, sorted) of the beats sent in `[from, to)` ms.
    fn within(&self, from: u64, to: u64) -> Vec<u64> {
        let mut v: Vec<u64> =
            self.rtts.lock().unwrap().iter().filter(|(at, _)| (from..to).contains(at)).map(|(_, us)| *us).collect();
        v.sort_unstable();
        v
    }
}

/// Each tunnel sends a heartbeat every `every` (the first at a random
/// offset) and reads its echo, until `go_on` says stop. Returns the tunnels.
async fn beat_all(
    open: Vec<Conn>,
    every: Duration,
    epoch: Instant,
    beats: Arc<Beats>,
    go_on: impl Fn() -> bool + Clone + Send + 'static,
) -> Vec<Conn> {
    let mut tasks = Vec::new();
    for mut s in open {
        let (beats, go_on) = (beats.clone(), go_on.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(fastrand::u64(0..every.as_millis() as u64))).await;
            let mut tick = tokio::time::interval(every);
            let mut buf = [0u8; 64];
            while go_on() {
                tick.tick().await;
                let t0 = Instant::now();
                if s.write_all(&heartbeat_frame()).await.is_err() {
                    beats.lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return s;
                }
                // The echo: an unmasked frame of 2 + 16 bytes.
                let mut got = 0;
                while got < 18 {
                    match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf[got..])).await {
                        Ok(Ok(k)) if k > 0 => got += k,
                        _ => {
                            beats.lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            return s;
                        }
                    }
                }
                let at = t0.duration_since(epoch).as_millis() as u64;
                beats.rtts.lock().unwrap().push((at, t0.elapsed().as_micros() as u64));
            }
            s
        }));
    }
    let mut back = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Ok(s) = t.await {
            back.push(s);
        }
    }
    back
}

fn rtt_line(name: &str, v: &[u64]) -> String {
    format!("{name} n={} rtt_ms p50={:.3} p99={:.3} max={:.3}", v.len(), pct(v, 50.0), pct(v, 99.0), pct(v, 100.0))
}

async fn beat(target: Target, n: u64, secs: u64, path: String) {
    let every = beat_every(3000);
    let open = open_tunnels(&target, n, &path).await;
    let start = Instant::now();
    let beats = Arc::new(Beats::default());
    let until = Duration::from_secs(secs);
    beat_all(open, every, start, beats.clone(), move || start.elapsed() < until).await;
    let v = beats.within(0, u64::MAX);
    println!(
        "BEATS n={} lost={} in {:.1}s rtt_ms p50={:.3} p99={:.3} max={:.3}",
        v.len(),
        beats.lost.load(std::sync::atomic::Ordering::Relaxed),
        start.elapsed().as_secs_f64(),
        pct(&v, 50.0),
        pct(&v, 99.0),
        pct(&v, 100.0)
    );
}

/// A reconnect storm: `m` established tunnels beat on a thread of their own
/// (so that the storm's work in this process delays them no more than the
/// kernel's scheduler does), then `n` agents connect at once.
fn storm(target: Target, n: u64, m: u64, path: String) {
    let epoch = Instant::now();
    let beats = Arc::new(Beats::default());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let beater = {
        let (target, path, beats, stop) = (target.clone(), path.clone(), beats.clone(), stop.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let open = open_tunnels(&target, m, &path).await;
                let opened = open.len();
                ready_tx.send(opened).unwrap();
                let go_on = move || !stop.load(std::sync::atomic::Ordering::Relaxed);
                beat_all(open, beat_every(500), epoch, beats, go_on).await.len()
            })
        })
    };
    let established = ready_rx.recv().expect("the beating thread opens its tunnels");
    let ms = |t: Instant| t.duration_since(epoch).as_millis() as u64;
    if let Some(k) = std::env::var("STORM_AGENTS_NICE").ok().and_then(|v| v.parse::<i32>().ok()) {
        // This thread only (Linux: a thread id names one thread).
        let tid = rustix::thread::gettid();
        let nice = (rustix::process::getpriority_process(Some(tid)).expect("getpriority") + k).min(19);
        rustix::process::setpriority_process(Some(tid), nice).expect("setpriority");
        println!("AGENTS_NICE {nice}");
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (from, to, held) = rt.block_on(async {
        let run = format!("{:x}", fastrand::u32(..));
        let name = |i: u64| format!("storm-{run}-{i:07}.example.com");
        // STORM_RESUME=1: every agent has been connected once (and holds the
        // ticket it got), as after a network blip rather than a restart.
        let agents: Vec<Target> = match std::env::var("STORM_RESUME").is_ok_and(|v| v == "1") {
            false => vec![target.clone()],
            true => {
                let agents: Vec<Target> = (0..n).map(|_| target.resuming()).collect();
                let sem = Arc::new(tokio::sync::Semaphore::new(100));
                let mut first = Vec::new();
                for (i, agent) in agents.iter().enumerate() {
                    let permit = sem.clone().acquire_owned().await.unwrap();
                    let (agent, req) = (agent.clone(), request(&path, &name(i as u64)));
                    first.push(tokio::spawn(async move {
                        let r = handshake(&agent, &req).await.map(drop);
                        drop(permit);
                        r
                    }));
                }
                let mut ok = 0;
                for t in first {
                    ok += t.await.unwrap().is_ok() as u64;
                }
                println!("FIRST_CONNECTIONS ok={ok} of {n} (each agent's ticket kept)");
                RESUMED.store(0, std::sync::atomic::Ordering::Relaxed);
                agents
            }
        };
        // Two seconds of heartbeats before the storm, for comparison.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let start = Instant::now();
        let mut tasks = Vec::with_capacity(n as usize);
        for i in 0..n {
            let req = request(&path, &name(i));
            let target = agents[i as usize % agents.len()].clone();
            tasks.push(tokio::spawn(async move {
                let t0 = Instant::now();
                let r = tokio::time::timeout(Duration::from_secs(60), handshake(&target, &req)).await;
                let r = r.unwrap_or_else(|_| Err("timeout 60s".into()));
                r.map(|s| (s, t0.elapsed(), Instant::now()))
            }));
        }
        let mut took = Vec::with_capacity(n as usize);
        let mut held = Vec::with_capacity(n as usize);
        let mut errors = std::collections::BTreeMap::<String, u64>::new();
        let mut last = start;
        for t in tasks {
            match t.await.unwrap() {
                Ok((s, d, at)) => {
                    took.push(d.as_micros() as u64);
                    last = last.max(at);
                    held.push(s);
                }
                Err(e) => *errors.entry(e).or_default() += 1,
            }
        }
        took.sort_unstable();
        println!(
            "STORM n={n} resumed={} open={} failed={} all_open_s={:.3} connect_to_101_ms p50={:.1} p90={:.1} p99={:.1} max={:.1} errors={:?}",
            RESUMED.load(std::sync::atomic::Ordering::Relaxed),
            took.len(),
            errors.values().sum::<u64>(),
            last.duration_since(start).as_secs_f64(),
            pct(&took, 50.0),
            pct(&took, 90.0),
            pct(&took, 99.0),
            pct(&took, 100.0),
            errors
        );
        // Two seconds after it, then the established tunnels stop beating.
        tokio::time::sleep(Duration::from_secs(2)).await;
        (ms(start), ms(last), held)
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let still = beater.join().expect("the beating thread");
    drop(held);
    println!("ESTABLISHED m={m} open={established} beating_at_end={still}");
    println!("{}", rtt_line("BEATS_BEFORE", &beats.within(0, from)));
    println!(
        "{} lost={}",
        rtt_line("BEATS_DURING", &beats.within(from, to.max(from + 1))),
        beats.lost.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!("{}", rtt_line("BEATS_AFTER", &beats.within(to.max(from + 1), u64::MAX)));
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let usage = "usage: ws_load rate ADDR RATE SECS [PATH] | hold ADDR N SECS [PATH] | beat ADDR N SECS [PATH] \
                 | storm ADDR N M [PATH]";
    let target = Target::parse(a.get(2).expect(usage));
    let x: u64 = a.get(3).expect(usage).parse().unwrap();
    let y: u64 = a.get(4).expect(usage).parse().unwrap();
    let path = a.get(5).cloned().unwrap_or_else(|| "/api/agent/connect".into());
    if a[1] == "storm" {
        return storm(target, x, y, path);
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        match a[1].as_str() {
            "rate" => rate(target, x, y, path).await,
            "hold" => hold(target, x, y, path).await,
            "beat" => beat(target, x, y, path).await,
            _ => panic!("{usage}"),
        }
    })
}
