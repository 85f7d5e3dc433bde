//! An independent, strict HTTP/1.1 parser (RFC 9112), written by hand for
//! the smuggling tests: it judges the bytes the node writes to servers (and
//! to clients) without sharing any code with the node, httparse or hyper.
//!
//! Strict means: CRLF line endings only, no obs-fold, no CR, LF, NUL or other
//! control bytes in values, token names with the colon right after them,
//! origin-form `HTTP/1.1` request lines, and body framing that leaves no
//! doubt: at most one `Content-Length` (digits only) or one
//! `Transfer-Encoding` (exactly `chunked`), never both.
#![allow(dead_code)]

/// How a message's body was delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body and no framing field.
    None,
    Length,
    Chunked,
    /// A response read until the connection closed.
    Close,
}

pub type Fields = Vec<(String, Vec<u8>)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRequest {
    pub method: String,
    pub target: String,
    /// Names lower-cased, values without surrounding whitespace, in order.
    pub headers: Fields,
    pub body: Vec<u8>,
    pub framing: Framing,
    pub trailers: Fields,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedResponse {
    pub version: String,
    pub status: u16,
    pub headers: Fields,
    pub body: Vec<u8>,
    pub framing: Framing,
}

/// Values of every field named `name` (lower case).
pub fn values<'a>(fields: &'a Fields, name: &str) -> Vec<&'a [u8]> {
    fields.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_slice()).collect()
}

/// Field lookups of a parsed request or response.
pub trait HeaderFields {
    fn fields(&self) -> &Fields;

    fn values(&self, name: &str) -> Vec<&[u8]> {
        values(self.fields(), name)
    }

    /// The value of the only field `name`, as text.
    fn one(&self, name: &str) -> Option<String> {
        match self.values(name).as_slice() {
            [v] => Some(String::from_utf8_lossy(v).into_owned()),
            _ => None,
        }
    }
}

impl HeaderFields for ParsedRequest {
    fn fields(&self) -> &Fields {
        &self.headers
    }
}

impl HeaderFields for ParsedResponse {
    fn fields(&self) -> &Fields {
        &self.headers
    }
}

impl ParsedResponse {
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A whole message and the bytes it took, or "need more bytes".
#[derive(Debug)]
pub enum Parsed<T> {
    Done(T, usize),
    Partial,
}

/// What follows the complete requests of a byte stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Tail {
    Empty,
    /// The start of a request that never completed: this many bytes.
    Incomplete(usize),
    Invalid(String),
}

/// Splits a connection's whole byte stream into requests; anything left
/// over or ambiguous is an error.
pub fn parse_all(bytes: &[u8]) -> Result<Vec<ParsedRequest>, String> {
    match parse_prefix(bytes) {
        (reqs, Tail::Empty) => Ok(reqs),
        (reqs, Tail::Incomplete(n)) => {
            Err(format!("{} complete request(s), then {n} bytes of an incomplete one", reqs.len()))
        }
        (reqs, Tail::Invalid(e)) => Err(format!("{} complete request(s), then: {e}", reqs.len())),
    }
}

/// The complete requests at the start of `bytes`, and what follows them.
pub fn parse_prefix(bytes: &[u8]) -> (Vec<ParsedRequest>, Tail) {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        match parse_request(&bytes[pos..]) {
            Ok(Parsed::Done(r, n)) => {
                out.push(r);
                pos += n;
            }
            Ok(Parsed::Partial) => return (out, Tail::Incomplete(bytes.len() - pos)),
            Err(e) => return (out, Tail::Invalid(format!("at byte {pos}: {e}"))),
        }
    }
    (out, Tail::Empty)
}

pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The line starting at `pos`: (end of its content, start of the next line).
fn line(buf: &[u8], pos: usize) -> Result<Option<(usize, usize)>, String> {
    let Some(lf) = buf[pos..].iter().position(|&b| b == b'\n').map(|i| pos + i) else {
        // A CR not at the very end can only be a bare CR.
        let rest = &buf[pos..];
        if rest.len() > 1 && rest[..rest.len() - 1].contains(&b'\r') {
            return Err("bare CR".into());
        }
        return Ok(None);
    };
    if lf == pos || buf[lf - 1] != b'\r' {
        return Err(format!("bare LF in {:?}", String::from_utf8_lossy(&buf[pos..lf])));
    }
    if buf[pos..lf - 1].contains(&b'\r') {
        return Err("bare CR".into());
    }
    Ok(Some((lf - 1, lf + 1)))
}

/// Header (or trailer) fields from `pos` through the empty line.
fn fields(buf: &[u8], mut pos: usize) -> Result<Option<(Fields, usize)>, String> {
    let mut out = Vec::new();
    loop {
        let Some((end, next)) = line(buf, pos)? else { return Ok(None) };
        let l = &buf[pos..end];
        if l.is_empty() {
            return Ok(Some((out, next)));
        }
        if l[0] == b' ' || l[0] == b'\t' {
            return Err(format!("obs-fold line {:?}", String::from_utf8_lossy(l)));
        }
        let colon = l.iter().position(|&b| b == b':').ok_or_else(|| format!("no colon: {:?}", lossy(l)))?;
        let name = &l[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(format!("invalid field name {:?}", lossy(name)));
        }
        let value = trim_ows(&l[colon + 1..]);
        if let Some(b) = value.iter().find(|&&b| !(b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80))
        {
            return Err(format!("byte {b:#04x} in the value of {:?}", lossy(name)));
        }
        out.push((String::from_utf8_lossy(name).to_ascii_lowercase(), value.to_vec()));
        pos = next;
    }
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The framing the fields announce, and the length for `Length`.
fn framing(headers: &Fields) -> Result<(Framing, u64), String> {
    let cl = values(headers, "content-length");
    let te = values(headers, "transfer-encoding");
    match (cl.as_slice(), te.as_slice()) {
        ([], []) => Ok((Framing::None, 0)),
        ([_, ..], [_, ..]) => Err("both Content-Length and Transfer-Encoding".into()),
        ([v], []) => {
            if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
                return Err(format!("Content-Length {:?}", lossy(v)));
            }
            Ok((Framing::Length, lossy(v).parse().unwrap()))
        }
        ([], [v]) if v.eq_ignore_ascii_case(b"chunked") => Ok((Framing::Chunked, 0)),
        ([], [v]) => Err(format!("Transfer-Encoding {:?}", lossy(v))),
        _ => Err(format!("{} Content-Length and {} Transfer-Encoding fields", cl.len(), te.len())),
    }
}

/// A chunked body from `pos`: data, trailers and the end.
fn chunked(buf: &[u8], mut pos: usize) -> Result<Option<(Vec<u8>, Fields, usize)>, String> {
    let mut data = Vec::new();
    loop {
        let Some((end, next)) = line(buf, pos)? else { return Ok(None) };
        let l = &buf[pos..end];
        let (size, ext) = match l.iter().position(|&b| b == b';') {
            Some(i) => (&l[..i], Some(&l[i + 1..])),
            None => (l, None),
        };
        if size.is_empty() || size.len() > 10 || !size.iter().all(u8::is_ascii_hexdigit) {
            return Err(format!("chunk size line {:?}", lossy(l)));
        }
        if let Some(ext) = ext {
            if ext.is_empty() || !ext.iter().all(|&b| b == b'\t' || (0x20..=0x7e).contains(&b)) {
                return Err(format!("chunk extension {:?}", lossy(ext)));
            }
        }
        let size = usize::from_str_radix(&lossy(size), 16).unwrap();
        if size == 0 {
            let Some((trailers, next)) = fields(buf, next)? else { return Ok(None) };
            return Ok(Some((data, trailers, next)));
        }
        if buf.len() < next + size + 2 {
            // Wrong bytes where the CRLF after the data must be are wrong
            // whatever comes later.
            if buf.len() > next + size && buf[next + size] != b'\r' {
                return Err("no CRLF after chunk data".into());
            }
            return Ok(None);
        }
        data.extend_from_slice(&buf[next..next + size]);
        if &buf[next + size..next + size + 2] != b"\r\n" {
            return Err("no CRLF after chunk data".into());
        }
        pos = next + size + 2;
    }
}

/// The body from `pos` as `framing` says, and the end of the message.
fn body(buf: &[u8], pos: usize, framing: Framing, len: u64) -> Result<Option<(Vec<u8>, Fields, usize)>, String> {
    match framing {
        Framing::None => Ok(Some((Vec::new(), Vec::new(), pos))),
        Framing::Length => {
            let end = pos + len as usize;
            Ok((buf.len() >= end).then(|| (buf[pos..end].to_vec(), Vec::new(), end)))
        }
        Framing::Chunked => chunked(buf, pos),
        Framing::Close => unreachable!(),
    }
}

/// One request from the start of `buf`.
pub fn parse_request(buf: &[u8]) -> Result<Parsed<ParsedRequest>, String> {
    let Some((end, next)) = line(buf, 0)? else { return Ok(Parsed::Partial) };
    let l = &buf[..end];
    let parts: Vec<&[u8]> = l.split(|&b| b == b' ').collect();
    let [method, target, version] = parts.as_slice() else {
        return Err(format!("request line {:?}", lossy(l)));
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(format!("method {:?}", lossy(method)));
    }
    if !target.starts_with(b"/") || !target.iter().all(|b| (0x21..=0x7e).contains(b)) || target.contains(&b'#') {
        return Err(format!("request target {:?} (origin-form only)", lossy(target)));
    }
    if *version != b"HTTP/1.1" {
        return Err(format!("version {:?}", lossy(version)));
    }
    let Some((headers, next)) = fields(buf, next)? else { return Ok(Parsed::Partial) };
    let (framing, len) = framing(&headers)?;
    let Some((body, trailers, end)) = body(buf, next, framing, len)? else { return Ok(Parsed::Partial) };
    let req = ParsedRequest { method: lossy(method), target: lossy(target), headers, body, framing, trailers };
    Ok(Parsed::Done(req, end))
}

/// One response from the start of `buf` (interim ones included: the caller
/// skips 1xx). `eof`: the connection closed after `buf`, which ends a body
/// delimited by the close.
pub fn parse_response(buf: &[u8], head_request: bool, eof: bool) -> Result<Parsed<ParsedResponse>, String> {
    let Some((end, next)) = line(buf, 0)? else { return Ok(Parsed::Partial) };
    let l = &buf[..end];
    let mut parts = l.splitn(3, |&b| b == b' ');
    let (version, code, reason) = (parts.next().unwrap_or_default(), parts.next(), parts.next());
    if version != b"HTTP/1.1" && version != b"HTTP/1.0" {
        return Err(format!("status line {:?}", lossy(l)));
    }
    let status = match code {
        Some(c) if c.len() == 3 && c.iter().all(u8::is_ascii_digit) => lossy(c).parse::<u16>().unwrap(),
        _ => return Err(format!("status line {:?}", lossy(l))),
    };
    let Some(reason) = reason else { return Err(format!("status line without SP after the code: {:?}", lossy(l))) };
    if reason.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(format!("reason phrase {:?}", lossy(reason)));
    }
    let Some((headers, next)) = fields(buf, next)? else { return Ok(Parsed::Partial) };
    let (mut framing, len) = framing(&headers)?;
    if head_request || status < 200 || status == 204 || status == 304 {
        framing = Framing::None;
    } else if framing == Framing::None {
        framing = Framing::Close;
    }
    let (body, end) = if framing == Framing::Close {
        if !eof {
            return Ok(Parsed::Partial);
        }
        (buf[next..].to_vec(), buf.len())
    } else {
        let Some((body, _, end)) = body(buf, next, framing, len)? else { return Ok(Parsed::Partial) };
        (body, end)
    };
    Ok(Parsed::Done(ParsedResponse { version: lossy(version), status, headers, body, framing }, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_is_strict() {
        let ok = b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\n\r\n\
GET /b HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi";
        let reqs = parse_all(ok).unwrap();
        assert_eq!(reqs.len(), 2);
        assert_eq!((reqs[0].body.as_slice(), reqs[0].framing), (&b"hello"[..], Framing::Chunked));
        assert_eq!((reqs[1].target.as_str(), reqs[1].body.as_slice()), ("/b", &b"hi"[..]));
        for bad in [
            &b"GET / HTTP/1.1\nHost: h\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: h\r\n  fold\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\rx\r\n\r\n",
            b"GET / HTTP/1.1\r\nX A: h\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
            b"GET / HTTP/1.0\r\nHost: h\r\n\r\n",
            b"GET http://a/ HTTP/1.1\r\nHost: h\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\nx",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        ] {
            assert!(parse_all(bad).is_err(), "{:?}", lossy(bad));
        }
        let partial = b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc";
        assert_eq!(parse_prefix(partial).1, Tail::Incomplete(partial.len()));
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let Parsed::Done(r, n) = parse_response(resp, false, false).unwrap() else { panic!() };
        assert_eq!((r.status, r.body.as_slice(), n), (200, &b"ok"[..], resp.len()));
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", false, false).is_err()
        );
    }
}
