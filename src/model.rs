//! Plain types shared by every module: balancing algorithms and retry
//! conditions. No behaviour beyond parsing and naming lives here.

use std::fmt;

/// How a pool picks a server for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Smooth weighted round robin, as nginx does it.
    RoundRobin,
    /// Fewest in-flight requests relative to weight.
    LeastConn,
    /// Rendezvous hash of the client IP.
    SourceHash,
    /// Power of two random choices on in-flight requests.
    RandomTwo,
    /// First available server in configured order.
    Primary,
}

impl Balance {
    pub const NAMES: &'static str = "round_robin, least_conn, source_hash, random_two, primary";

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "round_robin" => Balance::RoundRobin,
            "least_conn" => Balance::LeastConn,
            "source_hash" => Balance::SourceHash,
            "random_two" => Balance::RandomTwo,
            "primary" => Balance::Primary,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::LeastConn => "least_conn",
            Balance::SourceHash => "source_hash",
            Balance::RandomTwo => "random_two",
            Balance::Primary => "primary",
        }
    }
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which upstream outcomes make a request try another server (nginx's
/// `proxy_next_upstream`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryOn {
    /// Connection refused, reset, or closed before a response.
    pub error: bool,
    /// Connect or read timeout.
    pub timeout: bool,
    /// The upstream answered with something that is not HTTP.
    pub invalid_response: bool,
    /// Response statuses that count as failures and are retried.
    pub statuses: Vec<u16>,
}

impl RetryOn {
    pub const NAMES: &'static str =
        "error, timeout, invalid_response, http_500, http_502, http_503, http_504, http_429, http_403, http_404";

    /// Adds one condition by name; `false` if the name is unknown.
    pub fn add(&mut self, name: &str) -> bool {
        match name {
            "error" => self.error = true,
            "timeout" => self.timeout = true,
            "invalid_response" | "invalid_header" => self.invalid_response = true,
            "http_500" | "http_502" | "http_503" | "http_504" | "http_429" | "http_403" | "http_404" => {
                let code: u16 = name[5..].parse().unwrap_or(0);
                if !self.statuses.contains(&code) {
                    self.statuses.push(code);
                }
            }
            _ => return false,
        }
        true
    }

    pub fn status(&self, code: u16) -> bool {
        self.statuses.contains(&code)
    }
}

/// An error and its sources, joined with ": " (for logs and messages).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// Creates `path` (failing with `AlreadyExists` if it exists) with `mode`
/// from the start, so a secret is never readable by others, not even
/// briefly; writes `contents` and syncs.
pub fn create_private_file(path: &std::path::Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}
