//! Request-path normalisation for route matching.
//!
//! The proxy's request service calls [`normalize`] on the path (query already
//! split off at '?') before route matching, so that a route such as
//! `path_prefix = "/api/auth/"` sees the same path the server will act on and
//! cannot be bypassed with `/api/%61uth/login`, `/api//auth/login` or
//! `/api/./auth/login`. The rules follow nginx's `$uri`:
//!
//! - the path must start with '/', and raw bytes must be visible ASCII;
//! - percent-escapes of unreserved characters are decoded and every other
//!   escape is kept with upper-case hex digits (RFC 3986 §6.2.2.1, §6.2.2.2);
//!   encoded '/' and '\', and encoded control characters, are refused because
//!   a server may decode them and then see a different path;
//! - decoding happens before dot-segment removal, so `%2e%2e` is a `..`;
//! - repeated slashes are merged (nginx's `merge_slashes on`);
//! - dot segments are removed (RFC 3986 §5.2.4, §6.2.2.3), but a `..` that
//!   would climb above the root is refused rather than clamped;
//! - a trailing slash is kept, and a trailing `.` or `..` leaves one.
//!
//! Refusing is safer than guessing: each [`PathError`] becomes a 400.

use std::borrow::Cow;
use std::fmt;

/// Why a path cannot be normalised safely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not an origin-form path (does not start with '/'), or a byte that is not allowed in a path.
    Invalid,
    /// A '%' not followed by two hex digits.
    BadEscape,
    /// An encoded '/' (%2F) or '\' (%5C): the server might split on it after decoding.
    EncodedSlash,
    /// An encoded NUL (%00) or other control character (%00-%1F, %7F).
    EncodedControl,
    /// A `..` segment that would climb above the root.
    AboveRoot,
}

impl PathError {
    /// A short `snake_case` label, stable enough to be a metric label.
    pub fn reason(self) -> &'static str {
        match self {
            PathError::Invalid => "invalid",
            PathError::BadEscape => "bad_escape",
            PathError::EncodedSlash => "encoded_slash",
            PathError::EncodedControl => "encoded_control",
            PathError::AboveRoot => "above_root",
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::Invalid => "not a valid origin-form path",
            PathError::BadEscape => "a '%' not followed by two hex digits in the path",
            PathError::EncodedSlash => "an encoded '/' (%2F) or '\\' (%5C) in the path",
            PathError::EncodedControl => "an encoded control character in the path",
            PathError::AboveRoot => "a '..' segment above the root of the path",
        })
    }
}

impl std::error::Error for PathError {}

/// The normalised form of `path` (the path only, no query: the caller splits at '?').
///
/// Borrowed when nothing changes, which is the common case: one pass decides
/// whether any rewriting is needed before anything is allocated.
///
/// # Errors
///
/// A [`PathError`] when the path cannot be normalised without guessing; the
/// caller should answer 400 rather than route it.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    let rest = path.strip_prefix('/').ok_or(PathError::Invalid)?;
    if is_normal(rest.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    // `out` holds "/seg/seg" without a trailing slash; the slash is decided at the end.
    let mut out = String::with_capacity(path.len());
    let mut trailing_slash = false;
    // Only a raw '/' separates segments: an encoded one is refused while decoding.
    for raw in rest.split('/') {
        let mark = out.len();
        out.push('/');
        decode_into(raw, &mut out)?;
        match &out[mark + 1..] {
            "" | "." => out.truncate(mark),
            ".." => {
                out.truncate(mark);
                if out.is_empty() {
                    return Err(PathError::AboveRoot);
                }
                let parent = out.rfind('/').unwrap_or(0);
                out.truncate(parent);
            }
            _ => {
                trailing_slash = false;
                continue;
            }
        }
        // An empty, `.` or `..` last segment still names a directory: keep its slash.
        trailing_slash = true;
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// True when `rest` (the path after its leading '/') is already normal: no
/// escape, no empty segment before the last, no `.` or `..` segment, and only
/// allowed bytes. Anything else goes to the slow path, which also reports errors.
fn is_normal(rest: &[u8]) -> bool {
    let mut start = 0;
    for (i, &b) in rest.iter().enumerate() {
        if b == b'/' {
            if matches!(&rest[start..i], b"" | b"." | b"..") {
                return false;
            }
            start = i + 1;
        } else if b == b'%' || !is_path_byte(b) {
            return false;
        }
    }
    !matches!(&rest[start..], b"." | b"..")
}

/// Appends one raw segment to `out`, resolving its percent-escapes.
fn decode_into(raw: &str, out: &mut String) -> Result<(), PathError> {
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            if !is_path_byte(b) {
                return Err(PathError::Invalid);
            }
            out.push(char::from(b));
            continue;
        }
        let (Some(hi), Some(lo)) = (bytes.next(), bytes.next()) else {
            return Err(PathError::BadEscape);
        };
        let (Some(h), Some(l)) = (hex_value(hi), hex_value(lo)) else {
            return Err(PathError::BadEscape);
        };
        let decoded = h << 4 | l;
        match decoded {
            b'/' | b'\\' => return Err(PathError::EncodedSlash),
            0x00..=0x1F | 0x7F => return Err(PathError::EncodedControl),
            _ if is_unreserved(decoded) => out.push(char::from(decoded)),
            _ => {
                out.push('%');
                out.push(char::from(hi.to_ascii_uppercase()));
                out.push(char::from(lo.to_ascii_uppercase()));
            }
        }
    }
    Ok(())
}

/// Visible ASCII: the http crate already enforces this, but the check is cheap.
fn is_path_byte(b: u8) -> bool {
    (0x21..0x7F).contains(&b)
}

/// RFC 3986 §2.3: escapes of these mean the same as the character itself.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(path: &str) -> String {
        match normalize(path) {
            Ok(p) => p.into_owned(),
            Err(e) => panic!("{path:?}: unexpected {e:?}"),
        }
    }

    fn err(path: &str) -> PathError {
        match normalize(path) {
            Ok(p) => panic!("{path:?}: expected an error, got {p:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn unchanged_paths_are_borrowed() {
        for path in
            ["/", "/api/", "/api/auth/login", "/.hidden", "/a./b", "/a..b/", "/a/...", "/~u/x-y_z", "/a:b@c!$&'()*+,;="]
        {
            assert!(matches!(normalize(path), Ok(Cow::Borrowed(p)) if p == path), "{path:?}");
        }
    }

    #[test]
    fn bypass_attempts_are_normalised() {
        assert_eq!(ok("/api/%61uth/login"), "/api/auth/login");
        assert_eq!(ok("/api//auth/login"), "/api/auth/login");
        assert_eq!(ok("/api/./auth/login"), "/api/auth/login");
        assert_eq!(ok("/api/x/../auth/login"), "/api/auth/login");
        assert_eq!(ok("/api/x/%2e%2E/auth/login"), "/api/auth/login");
    }

    #[test]
    fn dot_segments() {
        assert_eq!(ok("/a/b/.."), "/a/");
        assert_eq!(ok("/a/."), "/a/");
        assert_eq!(ok("/a/.."), "/");
        assert_eq!(ok("/a/b/../../c"), "/c");
        assert_eq!(ok("/a%2e/b"), "/a./b");
        assert_eq!(ok("/.hidden"), "/.hidden");
        assert_eq!(err("/.."), PathError::AboveRoot);
        assert_eq!(err("/../x"), PathError::AboveRoot);
        assert_eq!(err("/%2e%2e/etc"), PathError::AboveRoot);
        assert_eq!(err("/a/%2e%2e/%2e%2e/x"), PathError::AboveRoot);
    }

    #[test]
    fn slashes() {
        assert_eq!(ok("/"), "/");
        assert_eq!(ok("///"), "/");
        assert_eq!(ok("/api/"), "/api/");
        assert_eq!(ok("/a//"), "/a/");
        assert_eq!(ok("//a"), "/a");
    }

    #[test]
    fn escapes() {
        assert_eq!(ok("/a%3fb"), "/a%3Fb");
        assert_eq!(ok("/caf%C3%A9"), "/caf%C3%A9");
        assert_eq!(ok("/caf%c3%a9"), "/caf%C3%A9");
        assert_eq!(ok("/%7e%2D%5f%41%30"), "/~-_A0");
        assert_eq!(ok("/a%20b%25"), "/a%20b%25");
        assert_eq!(err("/a/%2F"), PathError::EncodedSlash);
        assert_eq!(err("/a%2fb"), PathError::EncodedSlash);
        assert_eq!(err("/a%5cb"), PathError::EncodedSlash);
        assert_eq!(err("/a%5Cb"), PathError::EncodedSlash);
        assert_eq!(err("/a%00"), PathError::EncodedControl);
        assert_eq!(err("/a%0a"), PathError::EncodedControl);
        assert_eq!(err("/a%7F"), PathError::EncodedControl);
        assert_eq!(err("/a%zz"), PathError::BadEscape);
        assert_eq!(err("/a%4"), PathError::BadEscape);
        assert_eq!(err("/a%"), PathError::BadEscape);
        assert_eq!(err("/a%+1"), PathError::BadEscape);
    }

    #[test]
    fn invalid_paths() {
        for path in ["relative", "", "*", "/a b", "/a\tb", "/a\u{7f}", "/caf\u{e9}"] {
            assert_eq!(normalize(path), Err(PathError::Invalid), "{path:?}");
        }
    }

    #[test]
    fn reasons_and_messages() {
        let all = [
            PathError::Invalid,
            PathError::BadEscape,
            PathError::EncodedSlash,
            PathError::EncodedControl,
            PathError::AboveRoot,
        ];
        let reasons: Vec<_> = all.iter().map(|e| e.reason()).collect();
        assert_eq!(reasons, ["invalid", "bad_escape", "encoded_slash", "encoded_control", "above_root"]);
        assert!(all.iter().all(|e| !e.to_string().is_empty()));
    }

    #[test]
    fn idempotent() {
        for path in [
            "/",
            "///",
            "/api/%61uth/login",
            "/a/b/..",
            "/a/./b/",
            "/a%2e/b",
            "/a%3fb",
            "/caf%c3%a9",
            "/x/%2E%2e/y",
            "/a/%2e",
            "//a//b//",
        ] {
            let once = ok(path);
            assert_eq!(ok(&once), once, "{path:?}");
        }
    }

    /// Deterministic xorshift64, so a failure reproduces without a crate.
    struct XorShift(u64);

    impl XorShift {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    #[test]
    fn random_paths_normalise_to_fixed_points() {
        const ALPHABET: [char; 12] = ['/', '.', '%', '2', 'e', 'E', 'f', 'F', 'a', '5', 'c', '0'];
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut oks = 0;
        for _ in 0..20_000 {
            // Mostly origin-form, so that most inputs reach the interesting rules.
            let mut path = String::from(if rng.below(8) == 0 { "" } else { "/" });
            for _ in 0..rng.below(16) {
                path.push(ALPHABET[rng.below(ALPHABET.len())]);
            }
            let Ok(out) = normalize(&path) else { continue };
            oks += 1;
            assert!(out.starts_with('/'), "{path:?} -> {out:?}");
            for bad in ["//", "/./", "/../"] {
                assert!(!out.contains(bad), "{path:?} -> {out:?}");
            }
            assert!(!out.ends_with("/.") && !out.ends_with("/.."), "{path:?} -> {out:?}");
            let bytes = out.as_bytes();
            for (i, _) in out.match_indices('%') {
                let lower = |j: usize| bytes.get(j).is_some_and(|b| matches!(b, b'a'..=b'f'));
                assert!(!lower(i + 1) && !lower(i + 2), "{path:?} -> {out:?}");
            }
            assert_eq!(normalize(&out).as_deref(), Ok(&*out), "{path:?} -> {out:?}");
        }
        assert!(oks > 2_000, "only {oks} random paths normalised");
    }
}
