//! The rustls `ServerConfig` for a TLS listener: protocol versions, cipher
//! suites, ALPN and the certificate store as resolver. Built when listeners
//! are (re)configured; the store inside swaps certificates on its own, so a
//! certificate reload needs no new config.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::version::{TLS12, TLS13};
use rustls::{ServerConfig, SupportedCipherSuite, SupportedProtocolVersion};

use super::error::{TlsError, TlsWarning};
use super::store::CertStore;
use super::suites::parse_cipher_suites;

/// What a TLS listener offers by ALPN: HTTP/2 first, then HTTP/1.1.
pub const DEFAULT_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// The per-listener TLS knobs, as written in the config.
#[derive(Debug, Clone)]
pub struct ServerTlsOptions {
    /// `"TLSv1.2"`, `"TLSv1.3"` (nginx's `ssl_protocols` names); empty means both.
    pub protocols: Vec<String>,
    /// Suite names, see the table in [`crate::tls`]; empty means rustls's defaults.
    pub ciphers: Vec<String>,
    /// ALPN protocols in preference order.
    pub alpn: Vec<Vec<u8>>,
}

impl Default for ServerTlsOptions {
    fn default() -> Self {
        ServerTlsOptions {
            protocols: Vec::new(),
            ciphers: Vec::new(),
            alpn: DEFAULT_ALPN.iter().map(|p| p.to_vec()).collect(),
        }
    }
}

/// Parses `protocols`; empty means TLS 1.2 and 1.3.
pub fn parse_protocols<S: AsRef<str>>(names: &[S]) -> Result<Vec<&'static SupportedProtocolVersion>, TlsError> {
    if names.is_empty() {
        return Ok(vec![&TLS13, &TLS12]);
    }
    let mut versions: Vec<&'static SupportedProtocolVersion> = Vec::new();
    for name in names {
        let v = match name.as_ref().to_ascii_lowercase().as_str() {
            "tlsv1.2" | "tls1.2" | "tls12" => &TLS12,
            "tlsv1.3" | "tls1.3" | "tls13" => &TLS13,
            _ => return Err(TlsError::UnsupportedProtocol { name: name.as_ref().to_owned() }),
        };
        if !versions.contains(&v) {
            versions.push(v);
        }
    }
    Ok(versions)
}

/// Builds the server config over `store`. Warnings (e.g. a `DHE-*` name
/// served by ECDHE) are returned for the caller to log.
pub fn server_config(
    store: Arc<CertStore>,
    opts: &ServerTlsOptions,
) -> Result<(Arc<ServerConfig>, Vec<TlsWarning>), TlsError> {
    let versions = parse_protocols(&opts.protocols)?;
    let (listed, warnings) = parse_cipher_suites(&opts.ciphers)?;
    let provider = CryptoProvider { cipher_suites: effective_suites(listed, &versions)?, ..super::provider() };
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&versions)
        .map_err(|source| TlsError::Rustls { context: "TLS server config", source })?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = opts.alpn.clone();
    // Agents reconnect often; stateless tickets let TLS 1.2 and 1.3 resume
    // without a shared session cache. Keys live in this process only.
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
        .map_err(|source| TlsError::Rustls { context: "TLS session tickets", source })?;
    // One TLS 1.3 ticket per handshake (rustls sends two by default, on
    // resumptions too; OpenSSL, hence nginx and HAProxy, sends one on a
    // resumption). An agent keeps one connection, and each resumption
    // brings it a fresh ticket, so one is all it uses; the second cost a
    // ticket encryption here and a ticket to parse and store in the client
    // on every handshake (BENCHMARKS.md, TLS).
    config.send_tls13_tickets = 1;
    Ok((Arc::new(config), warnings))
}

/// The listed suites, completed as nginx does: no TLS 1.3 suite listed means
/// TLS 1.3's defaults. A listed set with nothing for enabled TLS 1.2 is an
/// error rather than a silently disabled protocol.
fn effective_suites(
    listed: Vec<SupportedCipherSuite>,
    versions: &[&'static SupportedProtocolVersion],
) -> Result<Vec<SupportedCipherSuite>, TlsError> {
    let defaults = super::provider().cipher_suites;
    if listed.is_empty() {
        return Ok(defaults);
    }
    let has = |v: &SupportedProtocolVersion, list: &[SupportedCipherSuite]| list.iter().any(|s| s.version() == v);
    let mut suites = listed;
    if !has(&TLS13, &suites) {
        suites.extend(defaults.iter().filter(|s| s.version() == &TLS13));
    }
    if versions.contains(&&TLS12) && !has(&TLS12, &suites) {
        return Err(TlsError::NoSuiteForVersion { version: "TLSv1.2" });
    }
    Ok(suites)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols() {
        assert_eq!(parse_protocols::<&str>(&[]).unwrap().len(), 2);
        assert_eq!(parse_protocols(&["TLSv1.3"]).unwrap(), [&TLS13]);
        assert_eq!(parse_protocols(&["TLSv1.2", "tlsv1.2"]).unwrap(), [&TLS12]);
        assert_eq!(
            parse_protocols(&["TLSv1.2", "TLSv1.1"]).unwrap_err().to_string(),
            "TLS protocol \"TLSv1.1\" is not supported: use \"TLSv1.2\" and/or \"TLSv1.3\""
        );
        assert!(parse_protocols(&["SSLv3"]).is_err());
    }

    #[test]
    fn tls13_defaults_added_when_only_tls12_listed() {
        let (listed, _) = parse_cipher_suites(&["ECDHE-RSA-AES128-GCM-SHA256"]).unwrap();
        let suites = effective_suites(listed, &[&TLS13, &TLS12]).unwrap();
        assert_eq!(suites.len(), 4);
        assert_eq!(suites.iter().filter(|s| s.version() == &TLS13).count(), 3);
    }

    #[test]
    fn tls13_only_list_with_tls12_enabled_is_an_error() {
        let (listed, _) = parse_cipher_suites(&["TLS_AES_128_GCM_SHA256"]).unwrap();
        assert_eq!(
            effective_suites(listed.clone(), &[&TLS13, &TLS12]).unwrap_err().to_string(),
            "TLSv1.2 is enabled but none of the configured cipher suites is a TLSv1.2 suite: add one, or \
             remove TLSv1.2 from `protocols`"
        );
        assert_eq!(effective_suites(listed, &[&TLS13]).unwrap().len(), 1);
    }
}
