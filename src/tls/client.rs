//! The rustls `ClientConfig` for TLS to upstream servers: verify against a
//! CA file, or the system's roots, or — only when the operator says
//! `insecure_skip_verify = true` — not at all. Built per pool by `proxy`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::version::{TLS12, TLS13};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::error::{FileRole, TlsError};
use super::pem::load_certs;

/// How to trust upstream servers.
#[derive(Debug, Clone, Default)]
pub struct UpstreamTlsOptions {
    /// PEM file of the CA(s) that sign the servers' certificates. Without
    /// it, the system's roots (`/etc/ssl/certs`, or `SSL_CERT_FILE` /
    /// `SSL_CERT_DIR`) are used.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate. See [`InsecureSkipVerify`].
    pub insecure_skip_verify: bool,
    /// ALPN to offer, e.g. `[b"http/1.1"]`; empty offers none.
    pub alpn: Vec<Vec<u8>>,
}

/// Builds the client config. Connect with the upstream's host name or IP
/// address as the `ServerName`; it is checked against the certificate.
pub fn upstream_config(opts: &UpstreamTlsOptions) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(super::shared_provider())
        .with_protocol_versions(&[&TLS13, &TLS12])
        .map_err(|source| TlsError::Rustls { context: "upstream TLS config", source })?;
    let mut config = match (opts.insecure_skip_verify, &opts.ca_file) {
        (true, Some(_)) => return Err(TlsError::ConflictingVerification),
        (true, None) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(InsecureSkipVerify::new()))
            .with_no_client_auth(),
        (false, Some(path)) => builder.with_root_certificates(load_ca_roots(path)?).with_no_client_auth(),
        (false, None) => builder.with_root_certificates(platform_roots()?).with_no_client_auth(),
    };
    config.alpn_protocols = opts.alpn.clone();
    Ok(Arc::new(config))
}

/// Every certificate in a PEM file, as trust anchors.
pub fn load_ca_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in load_certs(FileRole::Ca, path)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| TlsError::InvalidCertificate {
            role: FileRole::Ca,
            path: path.to_owned(),
            index: i + 1,
            detail: e.to_string(),
        })?;
    }
    Ok(roots)
}

fn platform_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _unparsable) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let detail = match found.errors.is_empty() {
            true => "none found".to_owned(),
            false => found.errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
        };
        return Err(TlsError::NoPlatformRoots { detail });
    }
    Ok(roots)
}

/// **Dangerous**: a verifier that accepts every server certificate —
/// expired, self-signed, issued for another name, issued by anyone. The
/// connection is encrypted but not authenticated: anyone on the path can
/// impersonate the upstream. Used only for `insecure_skip_verify = true`,
/// meant for a backend on loopback or a trusted private link whose
/// certificate cannot be verified. Handshake signatures are still checked,
/// so the server must at least hold the key of the certificate it sends.
#[derive(Debug)]
pub struct InsecureSkipVerify {
    algorithms: WebPkiSupportedAlgorithms,
}

impl InsecureSkipVerify {
    pub fn new() -> Self {
        InsecureSkipVerify { algorithms: super::shared_provider().signature_verification_algorithms }
    }
}

impl Default for InsecureSkipVerify {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerCertVerifier for InsecureSkipVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicting_options() {
        let opts =
            UpstreamTlsOptions { ca_file: Some("/nonexistent.pem".into()), insecure_skip_verify: true, alpn: vec![] };
        assert_eq!(
            upstream_config(&opts).unwrap_err().to_string(),
            "upstream TLS: `insecure_skip_verify = true` and `ca_file` together make no sense: keep one"
        );
    }

    #[test]
    fn ca_file_errors_name_the_file() {
        let opts = UpstreamTlsOptions { ca_file: Some("/nonexistent/ca.pem".into()), ..Default::default() };
        assert_eq!(upstream_config(&opts).unwrap_err().to_string(), "CA file /nonexistent/ca.pem: not found");
    }

    #[test]
    fn ca_file_and_insecure_build() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = crate::tls::generate_self_signed(&["ca.test".to_owned()]).unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, cert).unwrap();
        assert_eq!(load_ca_roots(&ca).unwrap().len(), 1);
        let opts = UpstreamTlsOptions { ca_file: Some(ca), alpn: vec![b"http/1.1".to_vec()], ..Default::default() };
        assert_eq!(upstream_config(&opts).unwrap().alpn_protocols, [b"http/1.1".to_vec()]);
        upstream_config(&UpstreamTlsOptions { insecure_skip_verify: true, ..Default::default() }).unwrap();
    }
}
