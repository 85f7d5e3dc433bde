//! Adversarial HTTP/1 framing: request smuggling from clients, response
//! splitting and pool poisoning from servers, and the same attacks over
//! HTTP/2 and TLS. DESIGN.md §4 decisions 12–14.
//!
//! Every case runs against a fresh node whose one pool has one raw,
//! recording server ([`raw_backend`]) and keeps its connections
//! (`keepalive`), so a desynchronised server connection would be reused. After
//! each case:
//! - every server connection's bytes must parse with an independent strict
//!   HTTP/1.1 parser ([`strict_h1`]), each request with exactly one `Host`,
//!   at most one framing field and no `_` in field names;
//! - the requests the server saw must be exactly those the case expects;
//! - a second client's `GET /victim` must get its own answer.

use crate::{raw_backend, strict_h1, support, ALONE};

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use raw_backend::{answer, Action, ConnLog, RawBackend, Seen};
use strict_h1::{parse_prefix, parse_response, Framing, HeaderFields, Parsed, ParsedRequest, ParsedResponse, Tail};
use support::tls::{client_trusting, tls_connect, write_cert, BOTH};
use support::{config_listeners, h2_client, listener, scrape, start_node};
use sysmanage_node::runtime::Node;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The longest wait for any answer.
const WAIT: Duration = Duration::from_secs(3);
const VICTIM: &[u8] = b"GET /victim HTTP/1.1\r\nHost: v\r\n\r\n";
/// Pool settings of every case: connections kept (the poisoning vector),
/// one attempt, passive health off (a broken answer must not hide the
/// victim behind a 503).
const POOL: &str = "keepalive = 64\nretries = 0\nmax_fails = 0";
const REQUESTS_METRIC: &str = "sysmanage_malformed_requests_total";
const RESPONSES_METRIC: &str = "sysmanage_malformed_responses_total";

// ---------------------------------------------------------------------------
// Clients

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A raw client connection (plain or TLS) with what it has read so far.
struct Client {
    io: Box<dyn Io>,
    buf: Vec<u8>,
    eof: bool,
}

#[derive(Debug)]
enum ReadErr {
    /// Closed before a complete response; what came before.
    Closed(String),
    /// Still open, no complete response; what came so far.
    Timeout(String),
    /// Not valid HTTP/1.1 to the strict parser.
    Invalid(String, String),
}

type Answer = Result<ParsedResponse, ReadErr>;

fn esc(b: &[u8]) -> String {
    let mut s = String::new();
    for &c in b.iter().take(600) {
        match c {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    if b.len() > 600 {
        s.push_str(&format!("...({} bytes)", b.len()));
    }
    s
}

fn show(a: &Answer) -> String {
    match a {
        Ok(r) => format!("{} {:?} (framing {:?})", r.status, esc(&r.body), r.framing),
        Err(ReadErr::Closed(got)) => format!("a close before a complete response, after {got:?}"),
        Err(ReadErr::Timeout(got)) => format!("no complete response in time, connection open, after {got:?}"),
        Err(ReadErr::Invalid(e, got)) => format!("an invalid response ({e}): {got:?}"),
    }
}

impl Client {
    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.io.write_all(bytes).await?;
        self.io.flush().await
    }

    async fn fill(&mut self, deadline: Instant) -> Result<(), ()> {
        let mut chunk = [0u8; 16384];
        match tokio::time::timeout_at(deadline, self.io.read(&mut chunk)).await {
            Err(_) => Err(()),
            Ok(Ok(0)) | Ok(Err(_)) => {
                self.eof = true;
                Ok(())
            }
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
        }
    }

    /// The next final response (interim 1xx skipped), within `limit`.
    async fn response(&mut self, head: bool, limit: Duration) -> Answer {
        let deadline = Instant::now() + limit;
        loop {
            match parse_response(&self.buf, head, self.eof) {
                Ok(Parsed::Done(r, n)) => {
                    self.buf.drain(..n);
                    if r.status >= 200 || r.status == 101 {
                        return Ok(r);
                    }
                    continue;
                }
                Ok(Parsed::Partial) => {}
                Err(e) => return Err(ReadErr::Invalid(e, esc(&self.buf))),
            }
            if self.eof {
                return Err(ReadErr::Closed(esc(&self.buf)));
            }
            if self.fill(deadline).await.is_err() {
                return Err(ReadErr::Timeout(esc(&self.buf)));
            }
        }
    }

    /// Reads until the node closes: the bytes left after the responses
    /// read so far, or `None` if the connection is still open after `limit`.
    async fn rest_until_close(&mut self, limit: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + limit;
        while !self.eof {
            self.fill(deadline).await.ok()?;
        }
        Some(std::mem::take(&mut self.buf))
    }
}

// ---------------------------------------------------------------------------
// A node in front of one raw server

struct Harness {
    node: Node,
    backend: RawBackend,
    tls: Option<(Arc<rustls::ClientConfig>, tempfile::TempDir)>,
}

impl Harness {
    /// `pool`: the pool's settings (its `servers` is added); `extra`: more
    /// tables (`[limits]`, routes before the default one).
    async fn start(backend: RawBackend, pool: &str, extra: &str, tls: bool) -> Harness {
        let mut tls_attr = String::new();
        let tls = if tls {
            let dir = tempfile::tempdir().unwrap();
            let cert = write_cert(dir.path(), "server", &["localhost"]);
            tls_attr = format!("tls = {{ {} }}", cert.inline());
            Some((client_trusting(&[&cert], BOTH, &[]), dir))
        } else {
            None
        };
        let pool = format!("{pool}\nservers = [{{ addr = \"{}\", name = \"raw\" }}]", backend.addr);
        let node = start_node(&config_listeners(&listener("http", &tls_attr), &pool, extra, "")).await;
        Harness { node, backend, tls }
    }

    async fn connect(&self) -> Client {
        let addr = self.node.addr("http").unwrap();
        let io: Box<dyn Io> = match &self.tls {
            Some((cfg, _)) => Box::new(tls_connect(addr, cfg.clone(), "localhost").await.expect("TLS handshake")),
            None => Box::new(TcpStream::connect(addr).await.unwrap()),
        };
        Client { io, buf: Vec::new(), eof: false }
    }

    /// Sends `bytes` in one write on a fresh connection; the first answer.
    async fn exchange(&self, bytes: &[u8], head: bool) -> (Client, Answer) {
        let mut c = self.connect().await;
        // (A node refusing early may close before reading everything.)
        let _ = c.send(bytes).await;
        let a = c.response(head, WAIT).await;
        (c, a)
    }

    /// A second client's ordinary request gets its own answer.
    async fn victim(&self) -> Result<(), String> {
        let (_, a) = self.exchange(VICTIM, false).await;
        match a {
            Ok(r) if r.status == 200 && r.body == b"target=/victim" => Ok(()),
            other => Err(format!("the victim's GET /victim got {}", show(&other))),
        }
    }

    async fn metric(&self, name: &str) -> f64 {
        metric_sum(&scrape(&self.node).await, name)
    }

    async fn stop(self) {
        self.node.stop().await;
    }
}

/// The sum of a counter over all its label sets (0 when absent).
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}

// ---------------------------------------------------------------------------
// What the server must have seen

/// One request the server must get: method, target, body, and optionally
/// its Host and its framing.
#[derive(Debug, Clone)]
struct Exp {
    method: &'static str,
    target: String,
    body: Vec<u8>,
    host: Option<&'static str>,
    framing: Option<Framing>,
}

impl Exp {
    fn new(method: &'static str, target: &str, body: &[u8]) -> Exp {
        Exp { method, target: target.to_string(), body: body.to_vec(), host: None, framing: None }
    }
    fn get(target: &str) -> Exp {
        Exp::new("GET", target, b"")
    }
    fn post(target: &str, body: &[u8]) -> Exp {
        Exp::new("POST", target, body)
    }
    fn host(mut self, h: &'static str) -> Exp {
        self.host = Some(h);
        self
    }
    /// A known length must reach the server as `Content-Length`.
    fn length(mut self) -> Exp {
        self.framing = Some(Framing::Length);
        self
    }
    fn victim() -> Exp {
        Exp::get("/victim").host("v")
    }
    fn matches(&self, r: &ParsedRequest) -> bool {
        r.method == self.method
            && r.target == self.target
            && r.body == self.body
            && self.host.is_none_or(|h| r.one("host").as_deref() == Some(h))
            && self.framing.is_none_or(|f| r.framing == f)
    }
}

fn describe(r: &ParsedRequest) -> String {
    let names: Vec<&str> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
    format!(
        "{} {} host={:?} framing={:?} body={:?} fields={names:?}",
        r.method,
        r.target,
        r.one("host"),
        r.framing,
        esc(&r.body).chars().take(80).collect::<String>()
    )
}

/// The rules every request the node writes must follow.
fn check_request(r: &ParsedRequest) -> Result<(), String> {
    let hosts = r.values("host").len();
    if hosts != 1 {
        return Err(format!("{hosts} Host fields"));
    }
    if let Some((n, _)) = r.headers.iter().find(|(n, _)| n.contains('_')) {
        return Err(format!("field name with '_' reached the server: {n}"));
    }
    let framing_fields = r.values("content-length").len() + r.values("transfer-encoding").len();
    if framing_fields > 1 || (!r.body.is_empty() && framing_fields != 1) {
        return Err(format!("{framing_fields} framing fields for a {}-byte body", r.body.len()));
    }
    Ok(())
}

/// Checks every server connection strictly, and that the requests the server
/// saw are exactly `expected`, in order. `incomplete_ok`: a connection may
/// end with part of a request if the node closed it (an aborted body).
async fn check_backend(b: &RawBackend, expected: &[Exp], incomplete_ok: bool) -> Result<(), String> {
    // A connection left with part of a request must be closed by the node:
    // give it a moment.
    let start = Instant::now();
    loop {
        let open_partial = b.conns().iter().any(|c| {
            !c.eof && !c.closed_here && c.error.is_none() && matches!(parse_prefix(&c.bytes).1, Tail::Incomplete(_))
        });
        if !open_partial || start.elapsed() > Duration::from_secs(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let conns = b.conns();
    let mut errors = Vec::new();
    for (i, c) in conns.iter().enumerate() {
        let (reqs, tail) = parse_prefix(&c.bytes);
        match tail {
            Tail::Empty => {}
            Tail::Incomplete(_) if incomplete_ok && c.eof => {}
            Tail::Incomplete(n) => errors.push(format!(
                "server connection {i} ends with {n} bytes of an incomplete request{}",
                if c.eof { " (closed by the node)" } else { ", still open" }
            )),
            Tail::Invalid(e) => errors.push(format!("server connection {i} is not strict HTTP/1.1: {e}")),
        }
        for r in &reqs {
            if let Err(e) = check_request(r) {
                errors.push(format!("server connection {i}: {}: {e}", describe(r)));
            }
        }
    }
    let seen: Vec<Seen> = b.seen();
    let ok = seen.len() == expected.len() && seen.iter().zip(expected).all(|(s, e)| e.matches(&s.req));
    if !ok {
        let seen: Vec<String> = seen.iter().map(|s| format!("[conn {}] {}", s.conn, describe(&s.req))).collect();
        let want: Vec<String> =
            expected.iter().map(|e| format!("{} {} body={:?}", e.method, e.target, esc(&e.body))).collect();
        errors.push(format!("the server saw {seen:#?}\n  expected {want:#?}"));
    }
    if errors.is_empty() {
        return Ok(());
    }
    let dump: Vec<String> = conns.iter().enumerate().map(|(i, c)| format!("conn {i}: {}", esc(&c.bytes))).collect();
    Err(format!("{}\n  server bytes: {dump:#?}", errors.join("\n  ")))
}

/// Fails the test with every failing case at once.
fn report(failures: Vec<String>) {
    assert!(failures.is_empty(), "{} case(s) failed:\n\n{}", failures.len(), failures.join("\n\n"));
}

// ---------------------------------------------------------------------------
// Request-side cases: one attack as the first request of a connection

#[derive(Debug, Clone)]
enum Expect {
    /// Forwarded once as `Exp`; the client gets `200 target=<target>`.
    Ok(Exp),
    /// Several requests in the one write, each forwarded once, in order,
    /// each answered `200 target=<target>` in order.
    Pipelined(Vec<Exp>),
    /// 400 (`400 Bad Request...`), the client connection closed after it,
    /// nothing forwarded, counted as malformed.
    Refused,
    /// A broken body: 400 or a close without an answer; the server never
    /// gets a complete request (part of one, on a connection the node then
    /// closed, is allowed).
    BodyRefused,
    /// Forwarded as `Ok`, or refused as `Refused`.
    Either(Exp),
    /// This status and body start, nothing forwarded.
    Status(u16, &'static str),
}

type RawCheck = fn(&[ConnLog]) -> Result<(), String>;

struct Case {
    name: String,
    bytes: Vec<u8>,
    expect: Expect,
    /// A further check of the server connections' bytes.
    raw_check: Option<RawCheck>,
}

fn case(name: impl Into<String>, bytes: impl AsRef<[u8]>, expect: Expect) -> Case {
    Case { name: name.into(), bytes: bytes.as_ref().to_vec(), expect, raw_check: None }
}

fn ok(name: impl Into<String>, bytes: impl AsRef<[u8]>, exp: Exp) -> Case {
    case(name, bytes, Expect::Ok(exp))
}

/// `bytes` then `GET <second>` in the same write: both forwarded, in order.
fn pipelined(name: impl Into<String>, bytes: impl AsRef<[u8]>, first: Exp, second: Exp) -> Case {
    let mut all = bytes.as_ref().to_vec();
    let host = second.host.unwrap_or("h");
    all.extend_from_slice(format!("GET {} HTTP/1.1\r\nHost: {host}\r\n\r\n", second.target).as_bytes());
    case(name, all, Expect::Pipelined(vec![first, second]))
}

fn refused(name: impl Into<String>, bytes: impl AsRef<[u8]>) -> Case {
    case(name, bytes, Expect::Refused)
}

fn body_refused(name: impl Into<String>, bytes: impl AsRef<[u8]>) -> Case {
    case(name, bytes, Expect::BodyRefused)
}

/// A node setup for request cases.
#[derive(Clone, Copy)]
struct Setup {
    pool: &'static str,
    extra: &'static str,
    tls: bool,
}

const PLAIN: Setup = Setup { pool: POOL, extra: "", tls: false };
const TLS: Setup = Setup { pool: POOL, extra: "", tls: true };

async fn run_cases(setup: Setup, cases: Vec<Case>) {
    let mut failures = Vec::new();
    for c in &cases {
        let _alone = ALONE.lock().await;
        let h = Harness::start(RawBackend::start().await, setup.pool, setup.extra, setup.tls).await;
        let result = run_case(&h, c).await;
        h.stop().await;
        if let Err(e) = result {
            let tls = if setup.tls { " (TLS)" } else { "" };
            failures.push(format!("[{}]{tls} sent {}\n  {e}", c.name, esc(&c.bytes)));
        }
    }
    report(failures);
}

async fn run_case(h: &Harness, c: &Case) -> Result<(), String> {
    let before = h.metric(REQUESTS_METRIC).await;
    let head = c.bytes.starts_with(b"HEAD ");
    let (mut client, answer) = h.exchange(&c.bytes, head).await;
    let mut errors = Vec::new();
    let got = |a: &Answer| format!("the client got {}", show(a));
    let status = answer.as_ref().ok().map(|r| r.status);
    // What the server must see, besides the victim; and whether a part of a
    // request may be left on a closed connection.
    let forwarded = match &c.expect {
        Expect::Ok(e) => Some(vec![e.clone()]),
        Expect::Either(e) if status == Some(200) => Some(vec![e.clone()]),
        Expect::Pipelined(es) => Some(es.clone()),
        _ => None,
    };
    let (mut expected, incomplete_ok) = match (&c.expect, forwarded) {
        (_, Some(exps)) => {
            let mut answer = answer;
            for (i, e) in exps.iter().enumerate() {
                if i > 0 {
                    answer = client.response(false, WAIT).await;
                }
                match &answer {
                    Ok(r) if r.status == 200 && r.body == format!("target={}", e.target).as_bytes() => {}
                    a => errors.push(format!("answer {}: {}, want 200 \"target={}\"", i + 1, got(a), e.target)),
                }
            }
            // Nothing after the answers (one more would be a request the
            // node made out of another one's bytes).
            let _ = client.io.shutdown().await;
            if let Some(rest) = client.rest_until_close(Duration::from_secs(1)).await {
                if !rest.is_empty() {
                    errors.push(format!("bytes after the answers: {}", esc(&rest)));
                }
            }
            (exps, false)
        }
        (Expect::Refused | Expect::Either(_), None) => {
            match &answer {
                Ok(r) if r.status == 400 && r.body.starts_with(b"400 Bad Request") => {
                    match client.rest_until_close(Duration::from_secs(2)).await {
                        None => errors.push("the client connection stayed open after the 400".into()),
                        Some(rest) if !rest.is_empty() => errors.push(format!("bytes after the 400: {}", esc(&rest))),
                        Some(_) => {}
                    }
                }
                a => errors.push(format!("{}, want 400 \"400 Bad Request...\" and a close", got(a))),
            }
            (vec![], false)
        }
        (Expect::BodyRefused, None) => {
            match &answer {
                Ok(r) if r.status == 400 => {
                    if client.rest_until_close(Duration::from_secs(2)).await.is_none() {
                        errors.push("the client connection stayed open after the 400".into());
                    }
                }
                Err(ReadErr::Closed(partial)) if partial.is_empty() => {}
                a => errors.push(format!("{}, want 400 or a close without an answer", got(a))),
            }
            (vec![], true)
        }
        (Expect::Status(code, start), None) => {
            match &answer {
                Ok(r) if r.status == *code && r.body.starts_with(start.as_bytes()) => {}
                a => errors.push(format!("{}, want {code} {start:?}", got(a))),
            }
            (vec![], false)
        }
        (Expect::Ok(_) | Expect::Pipelined(_), None) => unreachable!(),
    };
    if let Err(e) = h.victim().await {
        errors.push(e);
    }
    expected.push(Exp::victim());
    if let Err(e) = check_backend(&h.backend, &expected, incomplete_ok).await {
        errors.push(e);
    }
    if let Some(check) = c.raw_check {
        if let Err(e) = check(&h.backend.conns()) {
            errors.push(e);
        }
    }
    // One refusal counts once; a forwarded request not at all.
    let want = match status {
        Some(400) => Some(1.0),
        Some(200) => Some(0.0),
        _ => None,
    };
    if let Some(want) = want {
        let after = h.metric(REQUESTS_METRIC).await;
        if after - before != want {
            errors.push(format!(
                "{REQUESTS_METRIC} (sum over reasons) went {before} -> {after}, want +{want} for a {}",
                status.unwrap()
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n  "))
    }
}

/// A body of exactly `total` bytes that is itself a whole request, with a
/// `Content-Length` of its own, to `/SMUGGLED`.
fn smuggled_body(total: usize) -> Vec<u8> {
    let head = |n: usize| {
        format!("GET /SMUGGLED HTTP/1.1\r\nHost: internal\r\nX-Real-IP: 6.6.6.6\r\nContent-Length: {n}\r\n\r\n")
    };
    let mut n = total - head(0).len();
    while head(n).len() + n != total {
        n = total - head(n).len();
    }
    let mut body = head(n).into_bytes();
    body.resize(total, b'A');
    body
}

/// `body` as one chunk and the last chunk.
fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n0\r\n\r\n");
    out
}

fn cat(head: &str, body: &[u8]) -> Vec<u8> {
    let mut out = head.as_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

#[tokio::test]
async fn connection_never_removes_framing_fields_or_host() {
    let big = smuggled_body(70_000);
    let small = smuggled_body(100);
    assert_eq!((big.len(), small.len()), (70_000, 100));
    let with_length = |version: &str, connection: &str, body: &[u8]| {
        cat(
            &format!(
                "POST /upload HTTP/{version}\r\nHost: public\r\nConnection: {connection}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            ),
            body,
        )
    };
    let with_chunks = |connection: &str, body: &[u8]| {
        cat(
            &format!(
                "POST /upload HTTP/1.1\r\nHost: public\r\nConnection: {connection}\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            &chunked(body),
        )
    };
    let upload = |body: &[u8]| Exp::post("/upload", body).host("public");
    run_cases(
        PLAIN,
        vec![
            ok(
                "Connection: content-length, 70000-byte body",
                with_length("1.1", "content-length", &big),
                upload(&big).length(),
            ),
            ok(
                "Connection: content-length, 100-byte body",
                with_length("1.1", "content-length", &small),
                upload(&small).length(),
            ),
            ok(
                "Connection: keep-alive, Content-Length (list, mixed case)",
                with_length("1.1", "keep-alive, Content-Length", &small),
                upload(&small).length(),
            ),
            ok(
                "Connection: close, content-length",
                with_length("1.1", "close, content-length", &small),
                upload(&small).length(),
            ),
            ok(
                "Connection: transfer-encoding, chunked 100 bytes",
                with_chunks("transfer-encoding", &small),
                upload(&small),
            ),
            ok(
                "Connection: transfer-encoding, chunked 70000 bytes",
                with_chunks("transfer-encoding", &big),
                upload(&big),
            ),
            ok("Connection: host", with_length("1.1", "host", &small), upload(&small).length()),
            pipelined(
                "Connection: content-length, then a pipelined GET",
                with_length("1.1", "content-length", &small),
                upload(&small).length(),
                Exp::get("/second").host("public"),
            ),
            pipelined(
                "Connection: transfer-encoding, then a pipelined GET",
                with_chunks("transfer-encoding", &small),
                upload(&small),
                Exp::get("/second").host("public"),
            ),
            ok(
                "Connection: content-length, transfer-encoding, host on a chunked body",
                with_chunks("content-length, transfer-encoding, host", &small),
                upload(&small),
            ),
            ok(
                "HTTP/1.0, Connection: content-length",
                with_length("1.0", "content-length", &small),
                upload(&small).length(),
            ),
            ok(
                "HTTP/1.0, Connection: keep-alive, content-length",
                with_length("1.0", "keep-alive, content-length", &small),
                upload(&small).length(),
            ),
            ok(
                "HTTP/1.0, Connection: content-length, 70000-byte body",
                with_length("1.0", "content-length", &big),
                upload(&big).length(),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn host_is_required_once_and_absolute_form_wins() {
    run_cases(
        PLAIN,
        vec![
            refused("HTTP/1.1 GET without Host", "GET /nohost HTTP/1.1\r\n\r\n"),
            refused("HTTP/1.1 POST without Host", "POST /nohost HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"),
            refused("two Host fields", "GET /twohosts HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            refused("two identical Host fields", "GET /twohosts HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"),
            refused("Host list", "GET /hostlist HTTP/1.1\r\nHost: a, b\r\n\r\n"),
            refused("Host with a space", "GET /hostspace HTTP/1.1\r\nHost: a b\r\n\r\n"),
            ok("HTTP/1.0 without Host", "GET /old HTTP/1.0\r\n\r\n", Exp::get("/old")),
            ok(
                "HTTP/1.0 POST without Host",
                "POST /old HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello",
                Exp::post("/old", b"hello").length(),
            ),
            ok(
                "absolute-form replaces Host",
                "GET http://a.example/p HTTP/1.1\r\nHost: b.example\r\n\r\n",
                Exp::get("/p").host("a.example"),
            ),
            ok(
                "absolute-form with port and query",
                "GET http://a.example:8080/p?q=1 HTTP/1.1\r\nHost: b.example\r\n\r\n",
                Exp::get("/p?q=1").host("a.example:8080"),
            ),
            pipelined(
                "absolute-form, then an origin-form GET with its own Host",
                "GET http://a.example/p HTTP/1.1\r\nHost: b.example\r\n\r\n",
                Exp::get("/p").host("a.example"),
                Exp::get("/q").host("b.example"),
            ),
            ok(
                "absolute-form POST",
                "POST http://a.example/p HTTP/1.1\r\nHost: b.example\r\nContent-Length: 5\r\n\r\nhello",
                Exp::post("/p", b"hello").host("a.example").length(),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn content_length_with_transfer_encoding_and_unknown_codings_are_refused() {
    let te = |value: &str| cat(&format!("POST /te HTTP/1.1\r\nHost: h\r\n{value}\r\n\r\n"), b"5\r\nhello\r\n0\r\n\r\n");
    let hello = || Exp::post("/te", b"hello");
    run_cases(
        PLAIN,
        vec![
            refused(
                "CL.TE",
                "POST /clte HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
            ),
            refused(
                "TE.CL",
                "POST /tecl HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n\
                 2c\r\nGET /SMUGGLED HTTP/1.1\r\nHost: internal\r\n\r\n\r\n0\r\n\r\n",
            ),
            refused(
                "CL.TE in HTTP/1.0",
                "POST /clte HTTP/1.0\r\nHost: h\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
            ),
            refused("Transfer-Encoding: chunked, chunked", te("Transfer-Encoding: chunked, chunked")),
            refused("Transfer-Encoding: xchunked", te("Transfer-Encoding: xchunked")),
            refused("Transfer-Encoding: gzip, chunked", te("Transfer-Encoding: gzip, chunked")),
            refused("Transfer-Encoding: chunked, identity", te("Transfer-Encoding: chunked, identity")),
            refused("Transfer-Encoding: identity", te("Transfer-Encoding: identity")),
            refused("Transfer-Encoding: \"chunked\"", te("Transfer-Encoding: \"chunked\"")),
            refused("Transfer-Encoding empty", te("Transfer-Encoding:")),
            refused("two Transfer-Encoding fields", te("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked")),
            refused(
                "Transfer-Encoding in HTTP/1.0",
                "POST /te HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            ),
            refused("Transfer-Encoding : chunked (space before colon)", te("Transfer-Encoding : chunked")),
            refused("Transfer-Encoding with a vertical tab", te("Transfer-Encoding:\x0bchunked")),
            ok("Transfer-Encoding:\\tchunked", te("Transfer-Encoding:\tchunked"), hello()),
            ok("Transfer-Encoding with trailing whitespace", te("Transfer-Encoding:  chunked \t"), hello()),
            ok("Transfer-Encoding: CHUNKED", te("Transfer-Encoding: CHUNKED"), hello()),
        ],
    )
    .await;
}

#[tokio::test]
async fn content_length_values_are_strict() {
    let cl = |fields: &str| cat(&format!("POST /cl HTTP/1.1\r\nHost: h\r\n{fields}\r\n\r\n"), b"hello");
    let hello = || Exp::post("/cl", b"hello").length();
    run_cases(
        PLAIN,
        vec![
            // A list is refused (as hyper refuses it, so both parsers agree);
            // two equal fields are one length.
            refused("Content-Length: 5, 5", cl("Content-Length: 5, 5")),
            ok("two Content-Length: 5 fields", cl("Content-Length: 5\r\nContent-Length: 5"), hello()),
            ok("Content-Length: 005", cl("Content-Length: 005"), hello()),
            pipelined(
                "two Content-Length: 5 fields, then a pipelined GET",
                cl("Content-Length: 5\r\nContent-Length: 5"),
                hello(),
                Exp::get("/second"),
            ),
            refused("Content-Length: 5, 6", cl("Content-Length: 5, 6")),
            refused("Content-Length: 5 and Content-Length: 6", cl("Content-Length: 5\r\nContent-Length: 6")),
            refused("Content-Length: +5", cl("Content-Length: +5")),
            refused("Content-Length: -1", cl("Content-Length: -1")),
            refused("Content-Length: 0x5", cl("Content-Length: 0x5")),
            refused("Content-Length: 5 5", cl("Content-Length:  5 5")),
            refused("Content-Length: 20 digits", cl("Content-Length: 99999999999999999999")),
            refused("Content-Length empty", cl("Content-Length:")),
            refused("Content-Length: 5,", cl("Content-Length: 5,")),
        ],
    )
    .await;
}

fn no_chunk_extension(conns: &[ConnLog]) -> Result<(), String> {
    match conns.iter().position(|c| c.bytes.windows(4).any(|w| w == b";x=y")) {
        Some(i) => Err(format!("the chunk extension reached server connection {i}: not re-framed")),
        None => Ok(()),
    }
}

#[tokio::test]
async fn chunked_bodies_are_decoded_strictly_and_reframed() {
    let chunks =
        |body: &str| cat("POST /chunk HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", body.as_bytes());
    let hello = || Exp::post("/chunk", b"hello");
    let mut extension = ok("chunk extension 5;x=y", chunks("5;x=y\r\nhello\r\n0\r\n\r\n"), hello());
    extension.raw_check = Some(no_chunk_extension);
    run_cases(
        PLAIN,
        vec![
            ok("chunk size 0005", chunks("0005\r\nhello\r\n0\r\n\r\n"), hello()),
            extension,
            pipelined(
                "chunk extension, then a pipelined GET",
                chunks("5;x=y\r\nhello\r\n0\r\n\r\n"),
                hello(),
                Exp::get("/second"),
            ),
            ok("two chunks and a trailer", chunks("2\r\nhe\r\n3\r\nllo\r\n0\r\nX-Trailer: 1\r\n\r\n"), hello()),
            body_refused("chunk size overflow", chunks("fffffffffffffffffff\r\nhello\r\n0\r\n\r\n")),
            body_refused("negative chunk size", chunks("-5\r\nhello\r\n0\r\n\r\n")),
            body_refused("0x chunk size", chunks("0x5\r\nhello\r\n0\r\n\r\n")),
            body_refused("no CRLF after chunk data", chunks("5\r\nhelloXX0\r\n\r\n")),
            body_refused("chunk longer than its size", chunks("3\r\nhello\r\n0\r\n\r\n")),
            body_refused("bare LF after the chunk size", chunks("5\nhello\r\n0\r\n\r\n")),
            body_refused("bare LF after the last chunk size", chunks("5\r\nhello\r\n0\n\r\n")),
            body_refused(
                "smuggled request in a chunk with a bad size",
                chunks("5\r\nhello\r\nzz\r\nGET /SMUGGLED HTTP/1.1\r\nHost: internal\r\n\r\n0\r\n\r\n"),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn header_syntax_is_strict() {
    let get = |fields: &str| format!("GET /h HTTP/1.1\r\nHost: h\r\n{fields}\r\n\r\n");
    run_cases(
        PLAIN,
        vec![
            refused("obs-fold", get("X-A: 1\r\n  folded")),
            refused(
                "obs-fold on Transfer-Encoding",
                "POST /h HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding:\r\n chunked\r\n\r\nhello",
            ),
            refused("NUL in a value", get("X-A: a\0b")),
            refused("bare CR in a value", get("X-A: a\rb")),
            refused("space in a name", get("X A: 1")),
            refused("parenthesis in a name", get("X(A): 1")),
            refused("space before the colon", get("X-A : 1")),
            refused("empty name", get(": 1")),
            refused("bare CR ending the request line", "GET /h HTTP/1.1\rHost: h\r\n\r\n"),
            case("bare LF line endings", "GET /lf HTTP/1.1\nHost: h\n\n", Expect::Either(Exp::get("/lf"))),
            case(
                "bare LF ending one field line",
                "GET /lf HTTP/1.1\r\nHost: h\nX-B: 1\r\n\r\n",
                Expect::Either(Exp::get("/lf")),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn field_names_with_underscores_never_reach_the_server() {
    run_cases(
        PLAIN,
        vec![
            ok(
                "Transfer_Encoding: chunked beside Content-Length",
                "POST /us HTTP/1.1\r\nHost: h\r\nTransfer_Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello",
                Exp::post("/us", b"hello").length(),
            ),
            ok(
                "Content_Length: 10 beside Content-Length: 5",
                "POST /us HTTP/1.1\r\nHost: h\r\nContent_Length: 10\r\nContent-Length: 5\r\n\r\nhello",
                Exp::post("/us", b"hello").length(),
            ),
            pipelined(
                "GET with Transfer_Encoding: chunked, then a pipelined GET",
                "GET /us HTTP/1.1\r\nHost: h\r\nTransfer_Encoding: chunked\r\n\r\n",
                Exp::get("/us"),
                Exp::get("/second"),
            ),
            ok(
                "X_Real_IP on a GET",
                "GET /us HTTP/1.1\r\nHost: h\r\nX_Real_IP: 6.6.6.6\r\nX_Forwarded_For: 6.6.6.6\r\n\r\n",
                Exp::get("/us"),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn routes_match_the_normalised_path() {
    const AUTH: &str = "[[routes]]\nname = \"auth\"\npath_prefix = \"/api/auth/\"\n\
                        respond = { status = 403, body = \"auth route\" }\n";
    let setup = Setup { pool: POOL, extra: AUTH, tls: false };
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n");
    let auth = |path: &str| case(format!("{path} is the auth route"), get(path), Expect::Status(403, "auth route"));
    let bad = |path: &str| case(format!("{path} is refused"), get(path), Expect::Status(400, "400 Bad Request"));
    let fwd = |path: &str, to: &str| ok(format!("{path} is forwarded as {to}"), get(path), Exp::get(to));
    run_cases(
        setup,
        vec![
            auth("/api/auth/login"),
            auth("/api/%61uth/login"),
            auth("/api//auth/login"),
            auth("/api/./auth/login"),
            auth("/api/x/../auth/login"),
            auth("/api/x/%2e%2e/auth/login"),
            auth("/api/%61uth/login?next=/x"),
            bad("/a%2Fb"),
            bad("/a%2fb"),
            bad("/a%00"),
            bad("/../x"),
            bad("/%2e%2e/x"),
            fwd("/x/y?a=%2F", "/x/y?a=%2F"),
            fwd("/a%20b", "/a%20b"),
            fwd("/x?p=/../a", "/x?p=/../a"),
            fwd("/x//y?a=%2F", "/x/y?a=%2F"),
            fwd("/x/./y/../z", "/x/z"),
            fwd("/x/%7Ey", "/x/~y"),
        ],
    )
    .await;
}

// ---------------------------------------------------------------------------
// Timers: a slow client is the client's fault (decision 14)

const TIMERS_POOL: &str = "keepalive = 64\nretries = 0\nmax_fails = 1\nread_timeout = \"300ms\"";
const TIMERS_LIMITS: &str = "[limits]\nbody_timeout = \"2s\"";

/// After a slow or stalled upload, an ordinary GET on a new connection is
/// served: the server was not marked down.
async fn after_get(h: &Harness) -> Result<(), String> {
    match h.exchange(b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n", false).await.1 {
        Ok(r) if r.status == 200 && r.body == b"target=/after" => Ok(()),
        a => Err(format!("the GET after it got {}", show(&a))),
    }
}

#[tokio::test]
async fn a_pause_in_a_client_body_is_not_a_server_timeout() {
    let mut failures = Vec::new();
    // Kept in memory (2 bytes) and streamed (100000 bytes).
    for total in [2usize, 100_000] {
        let _alone = ALONE.lock().await;
        let h = Harness::start(RawBackend::start().await, TIMERS_POOL, TIMERS_LIMITS, false).await;
        let mut errors = Vec::new();
        let mut c = h.connect().await;
        let head = format!("POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: {total}\r\n\r\n");
        let mut body = vec![b'a'; total - 1];
        c.send(&cat(&head, &body)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        c.send(b"b").await.unwrap();
        body.push(b'b');
        match c.response(false, WAIT).await {
            Ok(r) if r.status == 200 && r.body == b"target=/upload" => {}
            a => errors.push(format!("the upload got {}, want 200 from the server", show(&a))),
        }
        if let Err(e) = after_get(&h).await {
            errors.push(e);
        }
        if let Err(e) = check_backend(&h.backend, &[Exp::post("/upload", &body), Exp::get("/after")], false).await {
            errors.push(e);
        }
        h.stop().await;
        if !errors.is_empty() {
            failures.push(format!("[{total}-byte body, 700 ms pause]\n  {}", errors.join("\n  ")));
        }
    }
    report(failures);
}

#[tokio::test]
async fn a_stalled_client_body_gets_408_and_the_server_stays_up() {
    let mut failures = Vec::new();
    for (total, sent) in [(2usize, 1usize), (100_000, 70_000)] {
        let _alone = ALONE.lock().await;
        let h = Harness::start(RawBackend::start().await, TIMERS_POOL, TIMERS_LIMITS, false).await;
        let mut errors = Vec::new();
        let mut c = h.connect().await;
        let head = format!("POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: {total}\r\n\r\n");
        c.send(&cat(&head, &vec![b'a'; sent])).await.unwrap();
        let start = Instant::now();
        let answer = c.response(false, Duration::from_secs(5)).await;
        let elapsed = start.elapsed();
        match &answer {
            Ok(r) if r.status == 408 => {
                if elapsed < Duration::from_millis(1500) {
                    errors.push(format!("408 after {elapsed:?}, before body_timeout (2s)"));
                }
            }
            a => errors.push(format!("the stalled upload got {} after {elapsed:?}, want 408", show(a))),
        }
        if let Err(e) = after_get(&h).await {
            errors.push(e);
        }
        // The stalled request may have reached the server in part, on a
        // connection the node then closed; never whole.
        if let Err(e) = check_backend(&h.backend, &[Exp::get("/after")], true).await {
            errors.push(e);
        }
        h.stop().await;
        if !errors.is_empty() {
            failures.push(format!("[{total}-byte body stalled after {sent}]\n  {}", errors.join("\n  ")));
        }
    }
    report(failures);
}

// ---------------------------------------------------------------------------
// Response side: a hostile server

struct RespCase {
    name: &'static str,
    /// The client's request (its target gets `actions`).
    request: &'static [u8],
    actions: Vec<Action>,
    /// Judges the client's answer.
    expect: fn(&Answer) -> Result<(), String>,
    /// The server connection must not be reused (and must be closed).
    not_reused: bool,
    /// Counted in sysmanage_malformed_responses_total.
    malformed: bool,
    /// Pause between the client's answer and the victim's request.
    victim_after: Duration,
}

fn resp_case(name: &'static str, request: &'static [u8], actions: Vec<Action>) -> RespCase {
    RespCase {
        name,
        request,
        actions,
        expect: |_| Ok(()),
        not_reused: false,
        malformed: false,
        victim_after: Duration::ZERO,
    }
}

fn expect_502(a: &Answer) -> Result<(), String> {
    match a {
        Ok(r) if r.status == 502 => Ok(()),
        a => Err(format!("the client got {}, want 502", show(a))),
    }
}

fn request_target(request: &[u8]) -> String {
    let line = String::from_utf8_lossy(request).lines().next().unwrap().to_string();
    line.split(' ').nth(1).unwrap().to_string()
}

async fn run_resp_cases(tls: bool, cases: Vec<RespCase>) {
    let mut failures = Vec::new();
    for c in cases {
        let _alone = ALONE.lock().await;
        let target: &'static str = Box::leak(request_target(c.request).into_boxed_str());
        let backend = RawBackend::with_script(answer(target, c.actions.clone())).await;
        let h = Harness::start(backend, POOL, "", tls).await;
        let result = run_resp_case(&h, &c, target).await;
        h.stop().await;
        if let Err(e) = result {
            let tls = if tls { " (TLS)" } else { "" };
            failures.push(format!("[{}]{tls}\n  {e}", c.name));
        }
    }
    report(failures);
}

async fn run_resp_case(h: &Harness, c: &RespCase, target: &str) -> Result<(), String> {
    let before = h.metric(RESPONSES_METRIC).await;
    let head = c.request.starts_with(b"HEAD ");
    let (_client, answer) = h.exchange(c.request, head).await;
    let mut errors = Vec::new();
    if let Err(e) = (c.expect)(&answer) {
        errors.push(e);
    }
    tokio::time::sleep(c.victim_after).await;
    if let Err(e) = h.victim().await {
        errors.push(e);
    }
    let method = if head { "HEAD" } else { "GET" };
    if let Err(e) = check_backend(&h.backend, &[Exp::new(method, target, b""), Exp::victim()], false).await {
        errors.push(e);
    }
    let seen = h.backend.seen();
    if c.not_reused {
        let conn_of = |t: &str| seen.iter().find(|s| s.req.target == t).map(|s| s.conn);
        if let (Some(first), Some(victim)) = (conn_of(target), conn_of("/victim")) {
            if first == victim {
                errors.push(format!("the victim's request was sent on the same server connection ({first})"));
            }
            let closed = async {
                let start = Instant::now();
                while !h.backend.conns()[first].eof {
                    if start.elapsed() > Duration::from_secs(2) {
                        return false;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                true
            };
            if !closed.await {
                errors.push(format!("server connection {first} was left open after the broken answer"));
            }
        }
    }
    if c.malformed {
        let after = h.metric(RESPONSES_METRIC).await;
        if after - before != 1.0 {
            errors.push(format!("{RESPONSES_METRIC} (sum over reasons) went {before} -> {after}, want +1"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n  "))
    }
}

fn extra_bytes_case() -> RespCase {
    let mut c = resp_case(
        "bytes after a complete body",
        b"GET /extra HTTP/1.1\r\nHost: c\r\n\r\n",
        vec![Action::Write(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\npoison!"
                .to_vec(),
        )],
    );
    c.expect = |a| match a {
        Ok(r) if r.status == 200 && r.body == b"ok" => Ok(()),
        a => Err(format!("the client got {}, want 200 \"ok\"", show(a))),
    };
    c.not_reused = true;
    c
}

#[tokio::test]
async fn hostile_response_framing_never_poisons_the_pool() {
    let mut cl_te = resp_case(
        "Content-Length and Transfer-Encoding in one response",
        b"GET /clte HTTP/1.1\r\nHost: c\r\n\r\n",
        vec![Action::Write(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                .to_vec(),
        )],
    );
    cl_te.expect = |a| match a {
        Ok(r) if r.status == 200 && r.body == b"hello" => Ok(()),
        a => Err(format!("the client got {}, want 200 \"hello\" (the chunked body)", show(a))),
    };
    cl_te.not_reused = true;

    let mut cl_cl = resp_case(
        "Content-Length: 5 and Content-Length: 6",
        b"GET /clcl HTTP/1.1\r\nHost: c\r\n\r\n",
        vec![Action::Write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec())],
    );
    cl_cl.expect = expect_502;
    cl_cl.not_reused = true;
    cl_cl.malformed = true;

    let mut bad_chunk = resp_case(
        "bad chunk size first",
        b"GET /badchunk HTTP/1.1\r\nHost: c\r\n\r\n",
        vec![Action::Write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec())],
    );
    // 502, or the head and then a close before the last chunk: never a
    // complete-looking 200, never a connection left hanging.
    bad_chunk.expect = |a| match a {
        Ok(r) if r.status == 502 => Ok(()),
        Err(ReadErr::Closed(_)) => Ok(()),
        a => Err(format!("the client got {}, want 502 or an incomplete answer and a close", show(a))),
    };
    bad_chunk.not_reused = true;
    bad_chunk.malformed = true;

    let mut bad_chunk_later = resp_case(
        "bad chunk size after a good chunk",
        b"GET /badchunk2 HTTP/1.1\r\nHost: c\r\n\r\n",
        vec![Action::Write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n-1\r\nHTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\npoison!"
                .to_vec(),
        )],
    );
    bad_chunk_later.expect = bad_chunk.expect;
    bad_chunk_later.not_reused = true;

    run_resp_cases(false, vec![cl_te, cl_cl, bad_chunk, bad_chunk_later, extra_bytes_case()]).await;
}

/// `head` now, then `late` 300 ms later on the same connection.
fn late(head: &[u8], late: &[u8]) -> Vec<Action> {
    vec![Action::Write(head.to_vec()), Action::Sleep(Duration::from_millis(300)), Action::Write(late.to_vec())]
}

#[tokio::test]
async fn late_bytes_after_a_bodiless_response_are_not_the_next_answer() {
    // 78 bytes that are a whole response of their own.
    let poison = b"HTTP/1.1 200 OK\r\nContent-Length: 39\r\n\r\npoison!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!";
    assert_eq!(poison.len(), 78);
    let mut head = resp_case(
        "HEAD answered with Content-Length: 78, then 78 bytes",
        b"HEAD /h HTTP/1.1\r\nHost: c\r\n\r\n",
        late(b"HTTP/1.1 200 OK\r\nContent-Length: 78\r\n\r\n", poison),
    );
    head.expect = |a| match a {
        Ok(r) if r.status == 200 && r.body.is_empty() => Ok(()),
        a => Err(format!("the HEAD got {}, want 200 without a body", show(a))),
    };
    let mut no_content = resp_case(
        "204 with Content-Length: 10, then 10 bytes",
        b"GET /n204 HTTP/1.1\r\nHost: c\r\n\r\n",
        late(b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n", b"poisonpois"),
    );
    no_content.expect = |a| match a {
        Ok(r) if r.status == 204 && r.body.is_empty() => Ok(()),
        a => Err(format!("the GET got {}, want 204", show(a))),
    };
    let mut not_modified = resp_case(
        "304 with Content-Length: 10, then 10 bytes",
        b"GET /n304 HTTP/1.1\r\nHost: c\r\n\r\n",
        late(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", b"poisonpois"),
    );
    not_modified.expect = |a| match a {
        Ok(r) if r.status == 304 && r.body.is_empty() => Ok(()),
        a => Err(format!("the GET got {}, want 304", show(a))),
    };
    let mut cases = vec![head, no_content, not_modified];
    for c in &mut cases {
        c.victim_after = Duration::from_millis(100);
    }
    run_resp_cases(false, cases).await;
}

#[tokio::test]
async fn interim_and_switching_responses_are_bounded() {
    let interims = |n: usize| {
        let mut out = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(n);
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        vec![Action::Write(out)]
    };
    let mut flood = resp_case("50 interim answers", b"GET /flood HTTP/1.1\r\nHost: c\r\n\r\n", interims(50));
    flood.expect = expect_502;
    flood.not_reused = true;
    flood.malformed = true;
    let mut few = resp_case("3 interim answers", b"GET /few HTTP/1.1\r\nHost: c\r\n\r\n", interims(3));
    few.expect = |a| match a {
        Ok(r) if r.status == 200 && r.body == b"ok" => Ok(()),
        a => Err(format!("the client got {}, want 200 \"ok\"", show(a))),
    };
    let mut switching = resp_case(
        "101 to a request without Upgrade",
        b"GET /switch HTTP/1.1\r\nHost: c\r\n\r\n",
        vec![Action::Write(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\npoison!"
                .to_vec(),
        )],
    );
    switching.expect = expect_502;
    switching.not_reused = true;
    switching.malformed = true;
    run_resp_cases(false, vec![flood, few, switching]).await;
}

// ---------------------------------------------------------------------------
// HTTP/2 clients (prior knowledge on the plain listener), frames by hand so
// that the forbidden fields can be sent at all.

struct H2 {
    s: TcpStream,
    buf: Vec<u8>,
}

#[derive(Debug, PartialEq)]
enum H2Outcome {
    Status(u16),
    Reset(u32),
    GoAway(u32),
    Closed,
    Timeout,
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK string (no Huffman) with a 7-bit length prefix.
fn hpack_string(out: &mut Vec<u8>, s: &[u8]) {
    let mut n = s.len();
    if n < 127 {
        out.push(n as u8);
    } else {
        out.push(127);
        n -= 127;
        while n >= 128 {
            out.push((n % 128) as u8 | 0x80);
            n /= 128;
        }
        out.push(n as u8);
    }
    out.extend_from_slice(s);
}

/// The status of a response header block: indexed or literal `:status`
/// from the static table, plain or Huffman-coded digits.
fn h2_status(block: &[u8]) -> Option<u16> {
    let mut i = 0;
    while block.get(i)? & 0xe0 == 0x20 {
        i += 1; // a dynamic table size update (small)
    }
    let b = block[i];
    if b & 0x80 != 0 {
        return [200, 204, 206, 304, 400, 404, 500].get(((b & 0x7f) as usize).checked_sub(8)?).copied();
    }
    let index = if b & 0xc0 == 0x40 { b & 0x3f } else { b & 0x0f };
    if !(8..=14).contains(&index) {
        return None;
    }
    let v = *block.get(i + 1)?;
    let raw = block.get(i + 2..i + 2 + (v & 0x7f) as usize)?;
    let text = if v & 0x80 == 0 { String::from_utf8(raw.to_vec()).ok()? } else { huffman_digits(raw)? };
    text.parse().ok()
}

/// Decodes Huffman-coded digits (RFC 7541 Appendix B: '0'-'2' are 5-bit
/// codes 0-2, '3'-'9' are 6-bit codes 0x19-0x1f), padding of 1 bits.
fn huffman_digits(raw: &[u8]) -> Option<String> {
    let (mut out, mut acc, mut len) = (String::new(), 0u32, 0u32);
    for byte in raw {
        for shift in (0..8).rev() {
            acc = (acc << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            if len == 5 && acc <= 2 {
                out.push((b'0' + acc as u8) as char);
                (acc, len) = (0, 0);
            } else if len == 6 && (0x19..=0x1f).contains(&acc) {
                out.push((b'3' + (acc - 0x19) as u8) as char);
                (acc, len) = (0, 0);
            } else if len > 7 {
                return None;
            }
        }
    }
    (acc == (1 << len) - 1).then_some(out)
}

impl H2 {
    async fn connect(addr: std::net::SocketAddr) -> H2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(4, 0, 0, &[]));
        s.write_all(&hello).await.unwrap();
        H2 { s, buf: Vec::new() }
    }

    /// Stream 1: these fields (`:method`, `:path`... included), then
    /// `body` as one DATA frame if given.
    async fn request(&mut self, fields: &[(&str, &[u8])], body: Option<&[u8]>) {
        let mut block = Vec::new();
        for (name, value) in fields {
            block.push(0); // literal, not indexed, new name
            hpack_string(&mut block, name.as_bytes());
            hpack_string(&mut block, value);
        }
        let end_stream = if body.is_none() { 0x1 } else { 0 };
        let mut out = frame(1, 0x4 | end_stream, 1, &block);
        if let Some(body) = body {
            let pieces: Vec<&[u8]> = if body.is_empty() { vec![body] } else { body.chunks(16_384).collect() };
            for (i, piece) in pieces.iter().enumerate() {
                out.extend(frame(0, if i + 1 == pieces.len() { 0x1 } else { 0 }, 1, piece));
            }
        }
        let _ = self.s.write_all(&out).await;
    }

    /// What the node answers on stream 1.
    async fn outcome(&mut self) -> H2Outcome {
        let deadline = Instant::now() + WAIT;
        let mut goaway = None;
        loop {
            while self.buf.len() >= 9 {
                let len = ((self.buf[0] as usize) << 16) | ((self.buf[1] as usize) << 8) | self.buf[2] as usize;
                if self.buf.len() < 9 + len {
                    break;
                }
                let (kind, flags) = (self.buf[3], self.buf[4]);
                let stream = u32::from_be_bytes(self.buf[5..9].try_into().unwrap()) & 0x7fff_ffff;
                let payload: Vec<u8> = self.buf[9..9 + len].to_vec();
                self.buf.drain(..9 + len);
                match kind {
                    4 if flags & 1 == 0 => {
                        let _ = self.s.write_all(&frame(4, 1, 0, &[])).await;
                    }
                    6 if flags & 1 == 0 => {
                        let _ = self.s.write_all(&frame(6, 1, 0, &payload)).await;
                    }
                    1 if stream == 1 => {
                        let mut block = payload.as_slice();
                        if flags & 0x8 != 0 {
                            let pad = block[0] as usize;
                            block = &block[1..block.len() - pad];
                        }
                        if flags & 0x20 != 0 {
                            block = &block[5..];
                        }
                        match h2_status(block) {
                            Some(s) if s < 200 => {}
                            Some(s) => return H2Outcome::Status(s),
                            None => return H2Outcome::Status(0),
                        }
                    }
                    3 if stream == 1 => return H2Outcome::Reset(u32::from_be_bytes(payload[..4].try_into().unwrap())),
                    7 => goaway = Some(u32::from_be_bytes(payload[4..8].try_into().unwrap())),
                    _ => {}
                }
            }
            let mut chunk = [0u8; 16384];
            match tokio::time::timeout_at(deadline, self.s.read(&mut chunk)).await {
                Err(_) => return H2Outcome::Timeout,
                Ok(Ok(0)) | Ok(Err(_)) => return goaway.map_or(H2Outcome::Closed, H2Outcome::GoAway),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// One HTTP/2 request on stream 1: `fields` after the pseudo-fields (path
/// `/h2`), then `body` as DATA; refused, or accepted and forwarded as
/// `expected`.
struct H2Case<'a> {
    name: &'static str,
    method: &'static str,
    fields: &'a [(&'static str, &'static [u8])],
    body: Option<&'a [u8]>,
    accepted: bool,
    expected: Vec<Exp>,
}

impl<'a> H2Case<'a> {
    fn refused(
        name: &'static str,
        method: &'static str,
        fields: &'a [(&'static str, &'static [u8])],
        body: Option<&'a [u8]>,
    ) -> Self {
        H2Case { name, method, fields, body, accepted: false, expected: vec![] }
    }
}

#[tokio::test]
async fn http2_requests_cannot_smuggle_framing_to_the_server() {
    let refused = |o: &H2Outcome| !matches!(o, H2Outcome::Status(200..=399) | H2Outcome::Timeout);
    let short = [b's'; 60_000];
    let cases = vec![
        H2Case::refused("transfer-encoding field", "GET", &[("transfer-encoding", b"chunked")], None),
        H2Case::refused(
            "transfer-encoding field on a POST",
            "POST",
            &[("transfer-encoding", b"chunked")],
            Some(b"5\r\nhello\r\n0\r\n\r\n"),
        ),
        H2Case::refused("connection field", "GET", &[("connection", b"keep-alive")], None),
        H2Case::refused("keep-alive field", "GET", &[("keep-alive", b"timeout=5")], None),
        H2Case::refused("CRLF in a value", "GET", &[("x-a", b"1\r\ntransfer-encoding: chunked")], None),
        H2Case::refused(
            "content-length: 10 with 5 bytes of DATA",
            "POST",
            &[("content-length", b"10")],
            Some(b"hello"),
        ),
        H2Case::refused(
            "content-length: 5 with 10 bytes of DATA",
            "POST",
            &[("content-length", b"5")],
            Some(b"helloworld"),
        ),
        H2Case::refused(
            "content-length: 100000 with 60000 bytes of DATA (streamed to the server)",
            "POST",
            &[("content-length", b"100000")],
            Some(&short),
        ),
        H2Case {
            name: "POST without content-length",
            method: "POST",
            fields: &[],
            body: Some(b"hello world"),
            accepted: true,
            expected: vec![Exp::post("/h2", b"hello world")],
        },
    ];
    let mut failures = Vec::new();
    for H2Case { name, method, fields, body, accepted, expected } in cases {
        let _alone = ALONE.lock().await;
        let mut all: Vec<(&str, &[u8])> =
            vec![(":method", method.as_bytes()), (":scheme", b"http"), (":path", b"/h2"), (":authority", b"h")];
        all.extend_from_slice(fields);
        // A refused request with a body may have reached the server in
        // part, on a connection the node then closed.
        let incomplete_ok = !accepted && body.is_some();
        let h = Harness::start(RawBackend::start().await, POOL, "", false).await;
        let mut errors = Vec::new();
        let mut c = H2::connect(h.node.addr("http").unwrap()).await;
        c.request(&all, body).await;
        let outcome = c.outcome().await;
        if accepted && outcome != H2Outcome::Status(200) {
            errors.push(format!("the client got {outcome:?}, want 200"));
        }
        if !accepted && !refused(&outcome) {
            errors.push(format!("the client got {outcome:?}, want a refusal (RST_STREAM, GOAWAY or 4xx/5xx)"));
        }
        drop(c);
        if let Err(e) = h.victim().await {
            errors.push(e);
        }
        let mut expected = expected;
        expected.push(Exp::victim());
        if let Err(e) = check_backend(&h.backend, &expected, incomplete_ok).await {
            errors.push(e);
        }
        h.stop().await;
        if !errors.is_empty() {
            failures.push(format!("[h2: {name}]\n  {}", errors.join("\n  ")));
        }
    }

    // An ordinary POST through hyper's HTTP/2 client: one framing field.
    let _alone = ALONE.lock().await;
    let h = Harness::start(RawBackend::start().await, POOL, "", false).await;
    let addr = h.node.addr("http").unwrap();
    let req = Request::post(format!("http://{addr}/h2hyper")).body(Full::new(Bytes::from(vec![b'z'; 300]))).unwrap();
    let resp = tokio::time::timeout(WAIT, h2_client().request(req)).await.expect("h2 answer in time").expect("h2");
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let mut errors = Vec::new();
    if status != 200 || body != "target=/h2hyper" {
        errors.push(format!("the client got {status} {body:?}"));
    }
    if let Err(e) = check_backend(&h.backend, &[Exp::post("/h2hyper", &[b'z'; 300])], false).await {
        errors.push(e);
    }
    h.stop().await;
    if !errors.is_empty() {
        failures.push(format!("[h2: ordinary POST]\n  {}", errors.join("\n  ")));
    }
    report(failures);
}

// ---------------------------------------------------------------------------
// TLS listener: a sample of the same cases

#[tokio::test]
async fn tls_listener_applies_the_same_rules() {
    let big = smuggled_body(70_000);
    let small = smuggled_body(100);
    let smuggle = |body: &[u8]| {
        cat(
            &format!(
                "POST /upload HTTP/1.1\r\nHost: public\r\nConnection: content-length\r\nContent-Length: {}\r\n\r\n",
                body.len()
            ),
            body,
        )
    };
    run_cases(
        TLS,
        vec![
            ok(
                "Connection: content-length, 100-byte body",
                smuggle(&small),
                Exp::post("/upload", &small).host("public").length(),
            ),
            ok(
                "Connection: content-length, 70000-byte body",
                smuggle(&big),
                Exp::post("/upload", &big).host("public").length(),
            ),
            refused("HTTP/1.1 GET without Host", "GET /nohost HTTP/1.1\r\n\r\n"),
            refused(
                "CL.TE",
                "POST /clte HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
            ),
        ],
    )
    .await;
    run_resp_cases(true, vec![extra_bytes_case()]).await;
}
