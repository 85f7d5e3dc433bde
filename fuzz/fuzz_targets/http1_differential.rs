//! Differential libFuzzer target: the fast path's request head parser
//! (`sysmanage_node::proxy::wire::request::parse`) against hyper 1's HTTP/1
//! server, which parses every head the fast path hands over and every later
//! request of the connections it serves. Run with `bench/fuzz_http1.sh`.
//!
//! The same bytes (at most 8 KiB) go to `wire::request::parse` and, over a
//! `tokio::io::duplex` followed by end of stream, to a hyper
//! `http1::Builder` connection built as `listener::http1_builder` builds it.
//! Its service records the first request (method, URI, version, header
//! fields, and whether hyper delimits the body by a length) without reading
//! the body, and answers 200. Each input is bounded by a 1 s timeout.
//!
//! Invariants:
//! - `Parsed::Request(r)`: hyper produced a request too, equal to `r`
//!   (method, URI, version, every header field in order, name and value
//!   bytes);
//! - `Parsed::Partial`: hyper produced no request (the head is not complete
//!   and the stream ends);
//! - `Parsed::Malformed(fault)`: hyper refused it (no request), except for
//!   the documented differences below, where the node is deliberately
//!   stricter than hyper and hyper must at least read the body as chunked,
//!   never as length-delimited;
//! - `Parsed::Hyper`: nothing (hyper decides).
//!
//! Allowed differences (hyper takes the head, the node answers 400):
//! - `LengthAndEncoding`: `Content-Length` with a `Transfer-Encoding` whose
//!   last coding is `chunked`. hyper reads the body as chunked, drops the
//!   length field and closes the connection after the response (RFC 9112
//!   §6.3 item 3 allows either); the node refuses (§6.1: "ought to" be
//!   handled as an error).
//! - `TransferEncoding`: a `Transfer-Encoding` that is not exactly
//!   `chunked` but ends in `chunked` (`gzip, chunked`, `chunked, chunked`,
//!   two fields whose last is `chunked`). hyper reads chunked; the node
//!   takes only a single bare `chunked`, as no coding but chunked can be
//!   decoded on the way.
//! - `ContentLength` after a chunked `Transfer-Encoding`: hyper skips
//!   every `Content-Length` that follows a `Transfer-Encoding` without
//!   reading it, so `Transfer-Encoding: chunked` then `Content-Length: x`
//!   is chunked to hyper; the node finds the bad length first and refuses.
//! - `ContentLength`: a value hyper reads as the same one number but the
//!   node finds too long: more than 19 digits (leading zeros, or a number
//!   of 20 digits below hyper's limit). hyper reads a length; the node,
//!   which caps lengths at 19 digits, refuses. Both read it as a length, so
//!   nothing is smuggled; the node is only stricter.
//!
//! `HTTP1_DIFF_STRICT=1` turns the allowed differences into failures too.
//!
//! Runtime: one current-thread runtime for the whole run (a `static`): it
//! measured about 1.3× faster than one runtime per input (30 000 runs from
//! the seeds: 7.0 s against 9.3 s); `HTTP1_DIFF_RUNTIME=per-input` selects
//! the other for comparison.

#![no_main]

use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;
use sysmanage_node::proxy::wire::request::{self, Parsed};
use sysmanage_node::proxy::wire::RequestFault;
use tokio::io::AsyncWriteExt;
use tokio::runtime::Runtime;

const MAX_INPUT: usize = 8 * 1024;
const MAX_HEAD: usize = 8192;

/// What hyper made of the first request.
#[derive(Debug)]
struct Seen {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    /// `Some(n)`: hyper delimits the body by a length of n bytes.
    exact: Option<u64>,
}

fn new_runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a tokio runtime")
}

fn per_input() -> bool {
    static PER_INPUT: OnceLock<bool> = OnceLock::new();
    *PER_INPUT.get_or_init(|| std::env::var("HTTP1_DIFF_RUNTIME").is_ok_and(|v| v == "per-input"))
}

/// `HTTP1_DIFF_STRICT=1`: no allowed difference (to list them all).
fn strict() -> bool {
    static STRICT: OnceLock<bool> = OnceLock::new();
    *STRICT.get_or_init(|| std::env::var("HTTP1_DIFF_STRICT").is_ok_and(|v| v == "1"))
}

fn shared_runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(new_runtime)
}

/// Serves `data` to a hyper HTTP/1 connection, then ends the stream.
async fn serve(data: &[u8]) -> Option<Seen> {
    let seen: Arc<Mutex<Option<Seen>>> = Arc::default();
    let record = seen.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        let mut slot = record.lock().unwrap();
        if slot.is_none() {
            *slot = Some(Seen {
                method: req.method().clone(),
                uri: req.uri().clone(),
                version: req.version(),
                headers: req.headers().clone(),
                exact: req.body().size_hint().exact(),
            });
        }
        async { Ok::<_, Infallible>(Response::new(String::new())) }
    });
    let (mut client, server) = tokio::io::duplex(MAX_INPUT * 64);
    // As `listener::http1_builder` (no timer: no header timeout here).
    let mut b = http1::Builder::new();
    b.keep_alive(true).max_buf_size(MAX_HEAD).header_read_timeout(None).writev(false);
    let conn = b.serve_connection(TokioIo::new(server), svc);
    client.write_all(data).await.expect("the duplex takes the input");
    client.shutdown().await.expect("end of stream");
    let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
    drop(client);
    let s = seen.lock().unwrap().take();
    s
}

fn hyper_sees(data: &[u8]) -> Option<Seen> {
    if per_input() {
        new_runtime().block_on(serve(data))
    } else {
        shared_runtime().block_on(serve(data))
    }
}

fn show(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

/// The `Transfer-Encoding` values of the head, as hyper kept them.
fn last_coding_is_chunked(h: &HeaderMap) -> bool {
    h.get_all(http::header::TRANSFER_ENCODING).iter().last().is_some_and(|v| {
        let last = v.as_bytes().rsplit(|&b| b == b',').next().unwrap_or_default();
        last.trim_ascii().eq_ignore_ascii_case(b"chunked")
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_INPUT {
        return;
    }
    let fast = request::parse(data, MAX_HEAD);
    if matches!(fast, Parsed::Hyper) {
        // hyper decides alone: nothing to compare. (Still served, so that
        // hyper itself is exercised on these bytes.)
        let _ = hyper_sees(data);
        return;
    }
    let seen = hyper_sees(data);
    match fast {
        Parsed::Request(r) => {
            let Some(h) = seen else {
                panic!("the fast path took a request hyper refused: {:?}", show(data));
            };
            assert_eq!(r.method(), h.method, "method of {:?}", show(data));
            assert_eq!(r.uri(), &h.uri, "URI of {:?}", show(data));
            assert_eq!(r.uri().to_string(), h.uri.to_string(), "URI of {:?}", show(data));
            assert_eq!(r.version(), h.version, "version of {:?}", show(data));
            let fields = |m: &HeaderMap| -> Vec<(String, Vec<u8>)> {
                m.iter().map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec())).collect()
            };
            assert_eq!(fields(r.headers()), fields(&h.headers), "header fields of {:?}", show(data));
            assert_eq!(h.exact, Some(0), "hyper reads a body the fast path does not: {:?}", show(data));
        }
        Parsed::Partial => {
            if let Some(h) = seen {
                panic!("hyper took {h:?} from an incomplete head: {:?}", show(data));
            }
        }
        Parsed::Malformed(fault) => {
            let Some(h) = seen else { return };
            if strict() {
                panic!("hyper took {h:?}, refused by the node as {fault:?} (strict): {:?}", show(data));
            }
            // hyper reads the body as chunked and keeps no length.
            let chunked = h.exact.is_none()
                && last_coding_is_chunked(&h.headers)
                && !h.headers.contains_key(http::header::CONTENT_LENGTH);
            match fault {
                RequestFault::LengthAndEncoding | RequestFault::TransferEncoding => {
                    assert!(
                        chunked,
                        "hyper took {h:?}, refused by the node as {fault:?}, and does not read it as chunked: {:?}",
                        show(data)
                    );
                }
                // A `Content-Length` after a chunked `Transfer-Encoding` is
                // not even read by hyper (the node checks it, and refuses
                // either way).
                RequestFault::ContentLength if chunked => {}
                RequestFault::ContentLength => {
                    // Same meaning, the node is only stricter: hyper must
                    // read the length the digits say, and the node must
                    // have refused it for its length (more than 19 digits).
                    let values: Vec<&[u8]> =
                        h.headers.get_all(http::header::CONTENT_LENGTH).iter().map(|v| v.as_bytes()).collect();
                    let Some(n) = h.exact else {
                        panic!("hyper took {h:?}, refused by the node as {fault:?}, without a length: {:?}", show(data))
                    };
                    assert!(
                        values.len() == 1
                            && values[0].trim_ascii().len() > 19
                            && values[0].trim_ascii().iter().all(u8::is_ascii_digit)
                            && values[0].trim_ascii().iter().fold(0u128, |a, d| a * 10 + u128::from(d - b'0'))
                                == u128::from(n),
                        "hyper took {h:?}, refused by the node as {fault:?}: {:?}",
                        show(data)
                    );
                }
                _ => panic!("hyper took {h:?}, refused by the node as {fault:?}: {:?}", show(data)),
            }
        }
        Parsed::Hyper => unreachable!(),
    }
});
