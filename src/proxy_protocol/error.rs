//! Why a PROXY protocol header was refused. Every variant means the
//! connection cannot be trusted to say who the client is, so the caller
//! closes it; none of them may be retried on the same connection.
//!
//! Bytes received from the client appear in messages escaped
//! (`escape_ascii`) and cut short, so a hostile header cannot forge log lines.

use std::time::Duration;

/// At most this many received bytes are quoted in a message.
const QUOTE_MAX: usize = 48;

#[derive(Debug, thiserror::Error)]
pub enum ProxyProtocolError {
    /// The first bytes are neither `PROXY ` nor the v2 signature: the client
    /// (or the load balancer in front) is not configured to send the header.
    #[error(
        "not a PROXY protocol header: the connection starts with \"{start}\", expected \"PROXY \" (v1) \
         or the v2 signature; check that the sender has PROXY protocol enabled"
    )]
    NotProxy { start: String },

    #[error("bad PROXY v1 header: {field}: {detail}")]
    BadV1 { field: &'static str, detail: String },

    /// `TCP4` with an IPv6 address or `TCP6` with an IPv4 address.
    #[error("bad PROXY v1 header: {field} \"{address}\" is not an {expected} address as {protocol} requires")]
    FamilyMismatch { protocol: &'static str, field: &'static str, address: String, expected: &'static str },

    #[error("bad PROXY v1 header: {field} \"{value}\" is not a port (decimal 0-65535 without leading zeros)")]
    BadPort { field: &'static str, value: String },

    #[error("PROXY v1 header longer than {limit} bytes: no CRLF within the first {limit} bytes")]
    V1TooLong { limit: usize },

    #[error("PROXY v2 header has version {version}, expected 2")]
    V2Version { version: u8 },

    #[error("PROXY v2 header has command {command:#x}, expected 0x0 (LOCAL) or 0x1 (PROXY)")]
    V2Command { command: u8 },

    /// A family/protocol byte the spec does not define (it requires
    /// receivers to reject those).
    #[error("PROXY v2 header has undefined address family/protocol byte {byte:#04x}")]
    V2Family { byte: u8 },

    #[error("PROXY v2 header announces {len} bytes after the fixed part, more than the limit of {limit}")]
    V2TooLong { len: u16, limit: u16 },

    #[error(
        "PROXY v2 header announces {len} bytes after the fixed part, too short for {family} addresses ({need} bytes)"
    )]
    V2TooShort { len: u16, family: &'static str, need: u16 },

    #[error("no complete PROXY protocol header within {after:?}")]
    Timeout { after: Duration },

    #[error("reading the PROXY protocol header: {source}")]
    Io { source: std::io::Error },

    #[error("connection closed after {received} bytes, before the PROXY protocol header was complete")]
    Closed { received: usize },
}

impl ProxyProtocolError {
    /// Short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyProtocolError::NotProxy { .. } => "not_proxy",
            ProxyProtocolError::BadV1 { .. } => "bad_v1",
            ProxyProtocolError::FamilyMismatch { .. } => "family_mismatch",
            ProxyProtocolError::BadPort { .. } => "bad_port",
            ProxyProtocolError::V1TooLong { .. } => "v1_too_long",
            ProxyProtocolError::V2Version { .. } => "v2_version",
            ProxyProtocolError::V2Command { .. } => "v2_command",
            ProxyProtocolError::V2Family { .. } => "v2_family",
            ProxyProtocolError::V2TooLong { .. } => "v2_too_long",
            ProxyProtocolError::V2TooShort { .. } => "v2_too_short",
            ProxyProtocolError::Timeout { .. } => "timeout",
            ProxyProtocolError::Io { .. } => "io",
            ProxyProtocolError::Closed { .. } => "closed",
        }
    }
}

/// Received bytes as printable ASCII for a message, cut at [`QUOTE_MAX`].
pub(super) fn quote(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(QUOTE_MAX)];
    let mut text = shown.escape_ascii().to_string();
    if shown.len() < bytes.len() {
        text.push_str("...");
    }
    text
}
