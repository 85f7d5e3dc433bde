//! Affinity keys: which part of a request names the client a session belongs
//! to, parsed once from a pool's `affinity` config and applied per request.
//!
//! Called by `config` validation ([`AffinityKey::parse`]) and by `proxy` on
//! requests to pools with affinity ([`AffinityKey::extract`]). Pure: reads
//! the request URI and headers, never the body; the work per request is
//! bounded by [`MAX_VALUE_LEN`] however hostile the input.
//!
//! SysManage agents get a fresh token for every connection attempt, so the
//! token itself is useless as a key; `sysmanage-token:hostname` decodes it
//! and keys on `payload.hostname`, which stays the same across reconnects.

use std::borrow::Cow;
use std::fmt;

use base64::engine::general_purpose::{STANDARD_PAD_INDIFFERENT, URL_SAFE_PAD_INDIFFERENT};
use base64::Engine;
use http::header::{HeaderName, COOKIE};
use http::{HeaderMap, Uri};
use percent_encoding::percent_decode;
use serde_json::Value;

/// Longest value (cookie, query parameter or header, as sent) looked at.
/// A real SysManage token is a few hundred bytes.
pub const MAX_VALUE_LEN: usize = 8 * 1024;
/// Longest key kept: keys are stored, persisted and gossiped.
pub const MAX_KEY_LEN: usize = 1024;
// The error reasons below spell these numbers out.
const _: () = assert!(MAX_VALUE_LEN == 8192 && MAX_KEY_LEN == 1024);

/// A key spec that cannot be used (config error; the caller adds the location).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeySpecError {
    #[error("`{0}`: expected cookie:NAME, query:NAME or header:NAME")]
    Source(String),
    #[error("`{0}`: the name after the colon is empty")]
    EmptyName(String),
    #[error("`{0}`: not a valid HTTP header name")]
    HeaderName(String),
    #[error("`{0}`: expected sysmanage-token:hostname or jwt:CLAIM")]
    Extract(String),
    #[error("`{0}`: only sysmanage-token:hostname is supported; the token's other fields change on every reconnect")]
    TokenField(String),
}

/// Why a request yielded no key. `Missing` is the client's choice (the proxy
/// applies `on_missing`); `Undecodable` is a malformed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the request carries no affinity key")]
    Missing,
    #[error("the affinity key cannot be decoded: {0}")]
    Undecodable(&'static str),
}

/// Where the key's value is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Cookie(String),
    /// A query-string parameter; its value is percent-decoded.
    Query(String),
    Header(HeaderName),
}

/// What is taken from the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extract {
    /// The value itself.
    Whole,
    /// `payload.hostname` of a SysManage connection token.
    SysmanageHostname,
    /// A claim of a JWT's payload (the signature is not checked: the key
    /// only routes, the server still authenticates).
    JwtClaim(String),
}

/// A parsed affinity key spec: source plus extractor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffinityKey {
    pub source: KeySource,
    pub extract: Extract,
}

impl AffinityKey {
    /// Parses `key` (`cookie:NAME`, `query:NAME`, `header:NAME`) and the
    /// optional `extract` (`sysmanage-token:hostname`, `jwt:CLAIM`).
    pub fn parse(key: &str, extract: Option<&str>) -> Result<Self, KeySpecError> {
        let (kind, name) = key.split_once(':').ok_or_else(|| KeySpecError::Source(key.into()))?;
        if name.is_empty() {
            return Err(KeySpecError::EmptyName(key.into()));
        }
        let source = match kind {
            "cookie" => KeySource::Cookie(name.into()),
            "query" => KeySource::Query(name.into()),
            "header" => KeySource::Header(
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| KeySpecError::HeaderName(key.into()))?,
            ),
            _ => return Err(KeySpecError::Source(key.into())),
        };
        let extract = match extract {
            None => Extract::Whole,
            Some(spec) => {
                let (kind, field) = spec.split_once(':').ok_or_else(|| KeySpecError::Extract(spec.into()))?;
                if field.is_empty() {
                    return Err(KeySpecError::EmptyName(spec.into()));
                }
                match kind {
                    "sysmanage-token" if field == "hostname" => Extract::SysmanageHostname,
                    "sysmanage-token" => return Err(KeySpecError::TokenField(spec.into())),
                    "jwt" => Extract::JwtClaim(field.into()),
                    _ => return Err(KeySpecError::Extract(spec.into())),
                }
            }
        };
        Ok(AffinityKey { source, extract })
    }

    /// The key of one request. An empty value counts as missing.
    pub fn extract(&self, uri: &Uri, headers: &HeaderMap) -> Result<String, KeyError> {
        let raw: Cow<'_, [u8]> = match &self.source {
            KeySource::Cookie(name) => Cow::Borrowed(cookie_value(headers, name).ok_or(KeyError::Missing)?),
            KeySource::Header(name) => Cow::Borrowed(headers.get(name).ok_or(KeyError::Missing)?.as_bytes()),
            KeySource::Query(name) => {
                let value = query_value(uri, name).ok_or(KeyError::Missing)?;
                if value.len() > MAX_VALUE_LEN {
                    return Err(KeyError::Undecodable("value longer than 8192 bytes"));
                }
                Cow::Owned(percent_decode(value.as_bytes()).collect())
            }
        };
        let raw = raw.trim_ascii();
        if raw.is_empty() {
            return Err(KeyError::Missing);
        }
        if raw.len() > MAX_VALUE_LEN {
            return Err(KeyError::Undecodable("value longer than 8192 bytes"));
        }
        let key = match &self.extract {
            Extract::Whole => {
                std::str::from_utf8(raw).map_err(|_| KeyError::Undecodable("value is not UTF-8"))?.to_owned()
            }
            Extract::SysmanageHostname => sysmanage_hostname(raw)?,
            Extract::JwtClaim(claim) => jwt_claim(raw, claim)?,
        };
        if key.len() > MAX_KEY_LEN {
            return Err(KeyError::Undecodable("key longer than 1024 bytes"));
        }
        Ok(key)
    }
}

impl fmt::Display for AffinityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            KeySource::Cookie(n) => write!(f, "cookie:{n}")?,
            KeySource::Query(n) => write!(f, "query:{n}")?,
            KeySource::Header(n) => write!(f, "header:{n}")?,
        }
        match &self.extract {
            Extract::Whole => Ok(()),
            Extract::SysmanageHostname => f.write_str(" (sysmanage-token:hostname)"),
            Extract::JwtClaim(c) => write!(f, " (jwt:{c})"),
        }
    }
}

/// The first cookie called `name` across every `Cookie` header
/// (HTTP/2 clients may send one header per cookie). Quotes around the value
/// are removed.
fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers.get_all(COOKIE).iter().flat_map(|h| h.as_bytes().split(|b| *b == b';')).find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|b| *b == b'=')?;
        if pair[..eq].trim_ascii() != name.as_bytes() {
            return None;
        }
        let value = pair[eq + 1..].trim_ascii();
        Some(value.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(value))
    })
}

/// The raw (still percent-encoded) value of the first query parameter whose
/// percent-decoded name is `name`. `+` is left alone: standard base64 tokens
/// are often put into URLs unescaped, and `+` is part of their alphabet.
fn query_value<'a>(uri: &'a Uri, name: &str) -> Option<&'a str> {
    uri.query()?.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        percent_decode(n.as_bytes()).eq(name.bytes()).then_some(v)
    })
}

/// Base64 in either alphabet, padded or not, possibly percent-encoded, with
/// a space read as the `+` that form decoding turned into one.
fn decode_base64(input: &[u8]) -> Result<Vec<u8>, KeyError> {
    let input: Cow<'_, [u8]> =
        if input.contains(&b'%') { Cow::Owned(percent_decode(input).collect()) } else { Cow::Borrowed(input) };
    let url_safe = input.iter().any(|b| matches!(b, b'-' | b'_'));
    let standard = input.iter().any(|b| matches!(b, b'+' | b'/' | b' '));
    if url_safe && standard {
        return Err(KeyError::Undecodable("mixes the standard and URL-safe base64 alphabets"));
    }
    let input: Cow<'_, [u8]> = if input.contains(&b' ') {
        Cow::Owned(input.iter().map(|b| if *b == b' ' { b'+' } else { *b }).collect())
    } else {
        input
    };
    let engine = if url_safe { &URL_SAFE_PAD_INDIFFERENT } else { &STANDARD_PAD_INDIFFERENT };
    engine.decode(&*input).map_err(|_| KeyError::Undecodable("not valid base64"))
}

fn parse_json(bytes: &[u8]) -> Result<Value, KeyError> {
    serde_json::from_slice(bytes).map_err(|_| KeyError::Undecodable("not valid JSON"))
}

/// `payload.hostname` of base64(JSON `{"payload": {...}, "signature": ...}`).
fn sysmanage_hostname(token: &[u8]) -> Result<String, KeyError> {
    let json = parse_json(&decode_base64(token)?)?;
    let payload =
        json.get("payload").filter(|p| p.is_object()).ok_or(KeyError::Undecodable("token has no payload object"))?;
    match payload.get("hostname") {
        Some(Value::String(h)) if !h.is_empty() => Ok(h.clone()),
        Some(Value::String(_)) => Err(KeyError::Undecodable("token hostname is empty")),
        Some(_) => Err(KeyError::Undecodable("token hostname is not a string")),
        None => Err(KeyError::Undecodable("token payload has no hostname")),
    }
}

/// A claim of the JWT's payload (middle segment), as a string or a number.
/// An `Authorization: Bearer` prefix is skipped.
fn jwt_claim(token: &[u8], claim: &str) -> Result<String, KeyError> {
    let token = match token.get(..7) {
        Some(p) if p.eq_ignore_ascii_case(b"bearer ") => token[7..].trim_ascii_start(),
        _ => token,
    };
    let mut parts = token.split(|b| *b == b'.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(KeyError::Undecodable("not a JWT (expected three dot-separated parts)"));
    };
    let json = parse_json(&decode_base64(payload)?)?;
    if !json.is_object() {
        return Err(KeyError::Undecodable("JWT payload is not a JSON object"));
    }
    match json.get(claim) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(KeyError::Undecodable("JWT claim is empty")),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(_) => Err(KeyError::Undecodable("JWT claim is not a string or number")),
        None => Err(KeyError::Undecodable("JWT payload lacks the claim")),
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use http::HeaderValue;

    use super::*;

    fn key(spec: &str, extract: Option<&str>) -> AffinityKey {
        AffinityKey::parse(spec, extract).unwrap()
    }

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    /// A token as SysManage's server builds it: standard base64 of the JSON.
    fn sysmanage_token(payload: &str) -> String {
        STANDARD.encode(format!(r#"{{"payload":{payload},"signature":"abc123"}}"#))
    }

    fn real_token(hostname: &str, connection_id: &str) -> String {
        sysmanage_token(&format!(
            r#"{{"connection_id":"{connection_id}","hostname":"{hostname}","client_ip":"10.0.0.7","timestamp":1700000000,"expires":1700003600}}"#
        ))
    }

    fn jwt(payload: &str) -> String {
        format!("{}.{}.sig", URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256"}"#), URL_SAFE_NO_PAD.encode(payload))
    }

    #[test]
    fn parse_accepts_every_source_and_extractor() {
        assert_eq!(key("cookie:sid", None).source, KeySource::Cookie("sid".into()));
        assert_eq!(key("query:token", None).source, KeySource::Query("token".into()));
        assert_eq!(key("header:X-Agent", None).source, KeySource::Header(HeaderName::from_static("x-agent")));
        assert_eq!(key("query:token", Some("sysmanage-token:hostname")).extract, Extract::SysmanageHostname);
        assert_eq!(key("header:authorization", Some("jwt:sub")).extract, Extract::JwtClaim("sub".into()));
        assert_eq!(
            key("query:token", Some("sysmanage-token:hostname")).to_string(),
            "query:token (sysmanage-token:hostname)"
        );
    }

    #[test]
    fn parse_rejects_bad_specs() {
        let err = |k: &str, e: Option<&str>| AffinityKey::parse(k, e).unwrap_err();
        assert_eq!(err("token", None), KeySpecError::Source("token".into()));
        assert_eq!(err("body:token", None), KeySpecError::Source("body:token".into()));
        assert_eq!(err("cookie:", None), KeySpecError::EmptyName("cookie:".into()));
        assert_eq!(err("header:bad header", None), KeySpecError::HeaderName("header:bad header".into()));
        assert_eq!(err("query:t", Some("xml:foo")), KeySpecError::Extract("xml:foo".into()));
        assert_eq!(err("query:t", Some("jwt")), KeySpecError::Extract("jwt".into()));
        assert_eq!(err("query:t", Some("jwt:")), KeySpecError::EmptyName("jwt:".into()));
        assert_eq!(
            err("query:t", Some("sysmanage-token:connection_id")),
            KeySpecError::TokenField("sysmanage-token:connection_id".into())
        );
    }

    #[test]
    fn cookie_among_several_cookies_and_headers() {
        let k = key("cookie:sid", None);
        let h = headers(&[("cookie", "a=1; b=2"), ("cookie", "theme=dark;sid=abc ; sid=second")]);
        assert_eq!(k.extract(&uri("/"), &h), Ok("abc".into()));
        let quoted = headers(&[("cookie", r#"sid="q v""#)]);
        assert_eq!(k.extract(&uri("/"), &quoted), Ok("q v".into()));
        // A cookie whose name merely contains the wanted one does not match.
        let h = headers(&[("cookie", "xsid=1; sidx=2; novalue")]);
        assert_eq!(k.extract(&uri("/"), &h), Err(KeyError::Missing));
        assert_eq!(k.extract(&uri("/"), &HeaderMap::new()), Err(KeyError::Missing));
        assert_eq!(k.extract(&uri("/"), &headers(&[("cookie", "sid=")])), Err(KeyError::Missing));
    }

    #[test]
    fn query_parameter_is_percent_decoded() {
        let k = key("query:token", None);
        assert_eq!(k.extract(&uri("/c?x=1&token=a%2Fb+c&token=2"), &HeaderMap::new()), Ok("a/b+c".into()));
        assert_eq!(k.extract(&uri("/c?to%6Ben=v"), &HeaderMap::new()), Ok("v".into()));
        assert_eq!(k.extract(&uri("/c?tokens=1&xtoken=2"), &HeaderMap::new()), Err(KeyError::Missing));
        assert_eq!(k.extract(&uri("/c"), &HeaderMap::new()), Err(KeyError::Missing));
        assert_eq!(k.extract(&uri("/c?token"), &HeaderMap::new()), Err(KeyError::Missing));
        assert_eq!(
            k.extract(&uri("/c?token=%FF"), &HeaderMap::new()),
            Err(KeyError::Undecodable("value is not UTF-8"))
        );
    }

    #[test]
    fn header_value() {
        let k = key("header:x-agent-hostname", None);
        assert_eq!(k.extract(&uri("/"), &headers(&[("x-agent-hostname", " host1 ")])), Ok("host1".into()));
        assert_eq!(k.extract(&uri("/"), &HeaderMap::new()), Err(KeyError::Missing));
        assert_eq!(k.extract(&uri("/"), &headers(&[("x-agent-hostname", "")])), Err(KeyError::Missing));
    }

    #[test]
    fn sysmanage_token_keys_on_hostname_across_reconnects() {
        let k = key("query:token", Some("sysmanage-token:hostname"));
        let first = real_token("web1.example.com", "conn-a");
        let second = real_token("web1.example.com", "conn-b");
        assert_ne!(first, second);
        for t in [&first, &second] {
            assert_eq!(
                k.extract(&uri(&format!("/api/agent/connect?token={t}")), &HeaderMap::new()),
                Ok("web1.example.com".into())
            );
        }
    }

    #[test]
    fn sysmanage_token_in_every_base64_spelling() {
        // A hostname whose JSON encodes to bytes that need '+' or '/' in base64.
        let t = real_token("h\u{3ff}?>~x", "c>>>???");
        assert!(t.contains('+') || t.contains('/'), "{t}");
        let k = key("query:token", Some("sysmanage-token:hostname"));
        let url_safe = t.replace('+', "-").replace('/', "_");
        let spellings = [
            t.clone(),                                                     // raw standard, padded
            t.trim_end_matches('=').to_owned(),                            // unpadded
            url_safe.clone(),                                              // URL-safe, padded
            url_safe.trim_end_matches('=').to_owned(),                     // URL-safe, unpadded
            t.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D"), // percent-encoded
            t.replace('+', "%20"),                                         // '+' that became a space
        ];
        for s in spellings {
            assert_eq!(k.extract(&uri(&format!("/c?token={s}")), &HeaderMap::new()), Ok("h\u{3ff}?>~x".into()), "{s}");
        }
        // The same decoding applies to cookies and headers, percent-encoded or not.
        let c = key("cookie:tok", Some("sysmanage-token:hostname"));
        let h = headers(&[("cookie", &format!("tok={}", t.replace('=', "%3D")))]);
        assert_eq!(c.extract(&uri("/"), &h), Ok("h\u{3ff}?>~x".into()));
    }

    #[test]
    fn sysmanage_token_bad_inputs() {
        let k = key("header:x-token", Some("sysmanage-token:hostname"));
        let get = |v: &str| k.extract(&uri("/"), &headers(&[("x-token", v)]));
        assert_eq!(k.extract(&uri("/"), &HeaderMap::new()), Err(KeyError::Missing));
        assert_eq!(get("not*base64!"), Err(KeyError::Undecodable("not valid base64")));
        assert_eq!(get("ab+c_d"), Err(KeyError::Undecodable("mixes the standard and URL-safe base64 alphabets")));
        assert_eq!(get(&STANDARD.encode("{not json")), Err(KeyError::Undecodable("not valid JSON")));
        assert_eq!(get(&STANDARD.encode("[1,2]")), Err(KeyError::Undecodable("token has no payload object")));
        assert_eq!(
            get(&STANDARD.encode(r#"{"payload":"x"}"#)),
            Err(KeyError::Undecodable("token has no payload object"))
        );
        assert_eq!(
            get(&sysmanage_token(r#"{"client_ip":"1.2.3.4"}"#)),
            Err(KeyError::Undecodable("token payload has no hostname"))
        );
        assert_eq!(
            get(&sysmanage_token(r#"{"hostname":42}"#)),
            Err(KeyError::Undecodable("token hostname is not a string"))
        );
        assert_eq!(
            get(&sysmanage_token(r#"{"hostname":null}"#)),
            Err(KeyError::Undecodable("token hostname is not a string"))
        );
        assert_eq!(get(&sysmanage_token(r#"{"hostname":""}"#)), Err(KeyError::Undecodable("token hostname is empty")));
    }

    #[test]
    fn oversized_values_and_keys_are_refused_before_decoding() {
        let k = key("query:token", Some("sysmanage-token:hostname"));
        let huge = "A".repeat(MAX_VALUE_LEN + 1);
        assert_eq!(
            k.extract(&uri(&format!("/c?token={huge}")), &HeaderMap::new()),
            Err(KeyError::Undecodable("value longer than 8192 bytes"))
        );
        let h = key("header:x-token", Some("sysmanage-token:hostname"));
        assert_eq!(
            h.extract(&uri("/"), &headers(&[("x-token", &huge)])),
            Err(KeyError::Undecodable("value longer than 8192 bytes"))
        );
        // Within the value limit, but the key itself is too long to store.
        let long_host = "h".repeat(MAX_KEY_LEN + 1);
        let t = real_token(&long_host, "c");
        assert!(t.len() <= MAX_VALUE_LEN);
        assert_eq!(
            k.extract(&uri(&format!("/c?token={t}")), &HeaderMap::new()),
            Err(KeyError::Undecodable("key longer than 1024 bytes"))
        );
    }

    #[test]
    fn jwt_claim_string_or_number() {
        let k = key("header:authorization", Some("jwt:sub"));
        let get = |v: &str| k.extract(&uri("/"), &headers(&[("authorization", v)]));
        assert_eq!(get(&format!("Bearer {}", jwt(r#"{"sub":"agent-7","exp":1}"#))), Ok("agent-7".into()));
        assert_eq!(get(&jwt(r#"{"sub":12345}"#)), Ok("12345".into()));
        // Padded or standard-alphabet payloads are tolerated.
        let padded = format!("h.{}.s", STANDARD.encode(r#"{"sub":"p"}"#));
        assert_eq!(get(&padded), Ok("p".into()));
        let c = key("cookie:jwt", Some("jwt:tenant"));
        let h = headers(&[("cookie", &format!("jwt={}", jwt(r#"{"tenant":"acme"}"#)))]);
        assert_eq!(c.extract(&uri("/"), &h), Ok("acme".into()));
    }

    #[test]
    fn jwt_bad_inputs() {
        let k = key("header:authorization", Some("jwt:sub"));
        let get = |v: &str| k.extract(&uri("/"), &headers(&[("authorization", v)]));
        let not_jwt = Err(KeyError::Undecodable("not a JWT (expected three dot-separated parts)"));
        assert_eq!(get("abc"), not_jwt);
        assert_eq!(get("a.b"), not_jwt);
        assert_eq!(get("a.b.c.d"), not_jwt);
        assert_eq!(get("a.!!!.c"), Err(KeyError::Undecodable("not valid base64")));
        assert_eq!(
            get(&format!("a.{}.c", URL_SAFE_NO_PAD.encode("nope"))),
            Err(KeyError::Undecodable("not valid JSON"))
        );
        assert_eq!(get(&jwt("[]")), Err(KeyError::Undecodable("JWT payload is not a JSON object")));
        assert_eq!(get(&jwt(r#"{"iss":"x"}"#)), Err(KeyError::Undecodable("JWT payload lacks the claim")));
        assert_eq!(get(&jwt(r#"{"sub":true}"#)), Err(KeyError::Undecodable("JWT claim is not a string or number")));
        assert_eq!(get(&jwt(r#"{"sub":""}"#)), Err(KeyError::Undecodable("JWT claim is empty")));
        assert_eq!(get("Bearer "), not_jwt);
    }
}
