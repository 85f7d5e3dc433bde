//! Active health checks over the request path's own connection code: a
//! check connects through a [`ServerPool`] built from the pool's settings
//! (TLS with its certificate checks and `server_name`, the PROXY header,
//! the connect timeout) and speaks HTTP/1.1 with [`super::h1client`] and
//! the `wire` parser, so a check sees the server the way a request does
//! (HAProxy's `check-ssl` and `check-send-proxy`, on by default with the
//! pool's settings). A check with `tls = false` connects in plain text.
//!
//! Each check has its own connection pool of one kept-alive connection, so
//! checks never take or spoil a request's connection.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::Method;
use http_body_util::{BodyExt, Limited};

use super::h1client::{read_head, write_request, SendError, ServerBody};
use super::pool::{pool_options, upstream_tls, ServerPool};
use crate::config::{CheckConfig, CheckKind, PoolConfig};
use crate::health::active::Probe;
use crate::proxy::body::UpstreamBody;
use crate::proxy::wire::response::HeadError;

/// Largest check response body read when looking for `expect_body`.
const BODY_LIMIT: usize = 64 * 1024;

/// The probe of one check of server `addr` in pool `p`.
pub struct CheckProbe {
    conns: Arc<ServerPool>,
    addr: SocketAddr,
}

impl CheckProbe {
    pub fn for_check(p: &PoolConfig, addr: SocketAddr, check: &CheckConfig) -> Arc<dyn Probe> {
        let tls = match check.tls {
            Some(false) => None,
            _ => upstream_tls(p, addr),
        };
        let mut opts = pool_options(p);
        opts.keepalive = opts.keepalive.min(1);
        Arc::new(CheckProbe { conns: ServerPool::new(addr, opts, tls), addr })
    }
}

impl Probe for CheckProbe {
    fn probe<'a>(&'a self, check: &'a CheckConfig) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            match &check.kind {
                CheckKind::Tcp => match tokio::time::timeout(check.timeout, self.conns.connect_own()).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("connect timed out after {:?}", check.timeout)),
                },
                CheckKind::Http { .. } => match tokio::time::timeout(check.timeout, self.http(check)).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("no answer within {:?}", check.timeout)),
                },
            }
        })
    }
}

impl CheckProbe {
    async fn http(&self, check: &CheckConfig) -> Result<(), String> {
        let CheckKind::Http { method, path, host, status_lo, status_hi, body } = &check.kind else {
            return Err("not an HTTP check".into());
        };
        let head = request_head(method, path, host.as_deref(), self.addr);
        // A kept-alive connection the server closed in the meantime fails
        // before any answer: that is no verdict on the server, so one fresh
        // connection is tried.
        let (status, resp) = match self.conns.take_idle(Instant::now()) {
            Some(io) => match self.exchange(io, &head, method).await {
                Err(Attempt::Stale) => self.fresh(&head, method).await?,
                other => other.map_err(Attempt::into_reason)?,
            },
            None => self.fresh(&head, method).await?,
        };
        let bytes = Limited::new(resp, BODY_LIMIT).collect().await.map(|c| c.to_bytes());
        if !(*status_lo..=*status_hi).contains(&status) {
            return Err(format!("status {status}, expected {status_lo}-{status_hi}"));
        }
        if let Some(needle) = body {
            let text = bytes.map_err(|e| format!("reading body: {e}"))?;
            if !contains(&text, needle.as_bytes()) {
                return Err(format!("body does not contain {needle:?}"));
            }
        }
        Ok(())
    }

    async fn fresh(&self, head: &Bytes, method: &Method) -> Result<(u16, ServerBody), String> {
        let io = self.conns.connect_own().await.map_err(|e| e.to_string())?;
        self.exchange(io, head, method).await.map_err(Attempt::into_reason)
    }

    /// Sends the request on `io` and reads the answer's head; the body is
    /// read by the caller, and the connection goes back to the pool at its end.
    async fn exchange(
        &self,
        mut io: super::server_io::ServerIo,
        head: &Bytes,
        method: &Method,
    ) -> Result<(u16, ServerBody), Attempt> {
        let mut buf = BytesMut::new();
        match write_request(&mut io, head, &mut UpstreamBody::Empty, false, &mut buf).await {
            Ok(()) => {}
            Err(SendError::Io { .. }) => return Err(Attempt::Stale),
            Err(SendError::Body(e)) => return Err(Attempt::Failed(format!("request: {e}"))),
        }
        let resp = match read_head(&mut io, &mut buf, method == Method::HEAD).await {
            Ok(h) => h,
            Err(HeadError::Closed) => return Err(Attempt::Stale),
            Err(e) => return Err(Attempt::Failed(format!("response: {e}"))),
        };
        let status = resp.parts.status.as_u16();
        Ok((status, ServerBody::new(io, self.conns.clone(), &resp, buf, std::time::Duration::from_secs(3600))))
    }
}

/// How one attempt on a connection ended, when it gave no answer.
enum Attempt {
    /// The connection was closed before any answer (a stale kept-alive one).
    Stale,
    Failed(String),
}

impl Attempt {
    fn into_reason(self) -> String {
        match self {
            Attempt::Stale => "request: the server closed the connection before answering".into(),
            Attempt::Failed(r) => r,
        }
    }
}

/// The check's request head. Method, path and host were validated with the
/// config (a token, a URL path, a header value: no CR, LF or space).
fn request_head(method: &Method, path: &str, host: Option<&str>, addr: SocketAddr) -> Bytes {
    let host = host.map_or_else(|| addr.to_string(), str::to_string);
    Bytes::from(format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\nuser-agent: sysmanage-node-health-check\r\n\r\n"))
}

fn contains(hay: &Bytes, needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_head_is_one_plain_http11_request() {
        let addr: SocketAddr = "10.0.0.5:8080".parse().unwrap();
        assert_eq!(
            request_head(&Method::GET, "/api/health?x=1", None, addr),
            "GET /api/health?x=1 HTTP/1.1\r\nhost: 10.0.0.5:8080\r\nuser-agent: sysmanage-node-health-check\r\n\r\n"
        );
        assert!(request_head(&Method::HEAD, "/", Some("sysmanage.local"), addr)
            .starts_with(b"HEAD / HTTP/1.1\r\nhost: sysmanage.local\r\n"));
    }

    #[test]
    fn body_search() {
        assert!(contains(&Bytes::from_static(b"status: healthy"), b"healthy"));
        assert!(!contains(&Bytes::from_static(b"status: sick"), b"healthy"));
        assert!(contains(&Bytes::new(), b""));
    }
}
