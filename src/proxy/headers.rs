//! Header rewriting between client and server: the `X-Forwarded-*` family
//! and the seed's security headers (hop-by-hop removal is `wire::fields`).

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue};

pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_FRAME_OPTIONS: HeaderName = HeaderName::from_static("x-frame-options");
pub static X_CONTENT_TYPE_OPTIONS: HeaderName = HeaderName::from_static("x-content-type-options");
pub static X_XSS_PROTECTION: HeaderName = HeaderName::from_static("x-xss-protection");

/// Sets `X-Real-IP` to the client, `X-Forwarded-For`, `X-Forwarded-Proto`
/// and `X-Forwarded-Host`. When the peer is a trusted proxy its
/// `X-Forwarded-For` chain is kept and the peer appended (nginx's
/// `$proxy_add_x_forwarded_for`); otherwise a chain the client wrote itself
/// is not passed on: `X-Forwarded-For` is just the client.
pub fn forwarded(
    headers: &HeaderMap,
    client: IpAddr,
    peer: IpAddr,
    trusted_peer: bool,
    proto: &'static str,
    host: Option<&HeaderValue>,
) -> Forwarded {
    let mut ip = [0u8; 48];
    let n = format_ip(client, &mut ip).len();
    let chain = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if trusted_peer && !prev.trim().is_empty() => Some(format!("{prev}, {peer}")),
        _ => None,
    };
    Forwarded { ip, ip_len: n, chain, proto, host: host.cloned() }
}

/// The forwarding headers of one request, written straight into the
/// server's request head (no map insertions): they replace any of the same
/// names the client sent.
pub struct Forwarded {
    ip: [u8; 48],
    ip_len: usize,
    /// The trusted proxy's chain with its peer appended.
    chain: Option<String>,
    proto: &'static str,
    host: Option<HeaderValue>,
}

impl Forwarded {
    /// Whether `name` is one of the headers this replaces.
    pub fn replaces(name: &HeaderName) -> bool {
        name == X_FORWARDED_FOR || name == X_REAL_IP || name == X_FORWARDED_PROTO || name == X_FORWARDED_HOST
    }

    /// The header lines, each ending in CRLF.
    pub fn write(&self, out: &mut Vec<u8>) {
        let ip = &self.ip[..self.ip_len];
        let line = |out: &mut Vec<u8>, name: &HeaderName, value: &[u8]| {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        };
        line(out, &X_FORWARDED_FOR, self.chain.as_deref().map_or(ip, str::as_bytes));
        line(out, &X_REAL_IP, ip);
        line(out, &X_FORWARDED_PROTO, self.proto.as_bytes());
        if let Some(h) = &self.host {
            line(out, &X_FORWARDED_HOST, h.as_bytes());
        }
    }

    /// Upper bound of [`Forwarded::write`]'s length.
    pub fn len_hint(&self) -> usize {
        100 + 2 * self.ip_len + self.chain.as_ref().map_or(0, String::len) + self.host.as_ref().map_or(0, |h| h.len())
    }
}

/// Formats an IP without allocating (IPv4 by hand: `Display` costs a
/// formatter call per octet, on every request).
fn format_ip(ip: IpAddr, buf: &mut [u8; 48]) -> &str {
    use std::io::Write;
    let n = match ip {
        IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            n
        }
        IpAddr::V6(_) => {
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            let _ = write!(cursor, "{ip}");
            cursor.position() as usize
        }
    };
    std::str::from_utf8(&buf[..n]).unwrap_or("unknown")
}

/// The security headers added to every response, precomputed once per
/// config.
#[derive(Debug, Clone)]
pub struct SecurityHeaders {
    enabled: bool,
    frame_options: HeaderValue,
}

impl SecurityHeaders {
    pub fn new(enabled: bool, frame_options: &str) -> Self {
        SecurityHeaders {
            enabled,
            frame_options: HeaderValue::from_str(frame_options).unwrap_or(HeaderValue::from_static("DENY")),
        }
    }

    /// Sets the headers unless the server already chose its own.
    pub fn apply(&self, headers: &mut HeaderMap) {
        if !self.enabled {
            return;
        }
        // One hash per field: a server's own value is kept.
        headers.entry(&X_FRAME_OPTIONS).or_insert_with(|| self.frame_options.clone());
        headers.entry(&X_CONTENT_TYPE_OPTIONS).or_insert_with(|| HeaderValue::from_static("nosniff"));
        headers.entry(&X_XSS_PROTECTION).or_insert_with(|| HeaderValue::from_static("1; mode=block"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_format_as_display_does() {
        for ip in ["0.0.0.0", "1.2.3.4", "10.20.30.40", "100.200.250.255", "192.168.0.1", "::1", "2001:db8::7"] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut buf = [0u8; 48];
            assert_eq!(format_ip(ip, &mut buf), ip.to_string());
        }
    }

    fn written(f: &Forwarded) -> String {
        let mut out = Vec::new();
        f.write(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn forwarded_for_appends_only_behind_a_trusted_proxy() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.5"));
        let host = HeaderValue::from_static("example.com");
        let (client, proxy) = ("203.0.113.5".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let f = forwarded(&h, client, proxy, true, "https", Some(&host));
        assert_eq!(
            written(&f),
            "x-forwarded-for: 203.0.113.5, 10.0.0.2\r\nx-real-ip: 203.0.113.5\r\n\
             x-forwarded-proto: https\r\nx-forwarded-host: example.com\r\n"
        );

        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        let peer = "192.0.2.7".parse().unwrap();
        let f = forwarded(&h, peer, peer, false, "http", None);
        assert_eq!(
            written(&f),
            "x-forwarded-for: 192.0.2.7\r\nx-real-ip: 192.0.2.7\r\nx-forwarded-proto: http\r\n",
            "a spoofed chain is not passed on"
        );
        assert!(Forwarded::replaces(&X_REAL_IP) && !Forwarded::replaces(&http::header::HOST));
    }
}
