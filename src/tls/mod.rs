//! TLS: rustls server and upstream (client) configurations, the certificate
//! store that answers SNI and hot-swaps certificates, PEM loading with
//! precise errors, and self-signed certificates (rcgen).
//!
//! Owns everything cryptographic about a connection except the socket:
//! `proxy` runs the handshake on accepted sockets with [`accept`] (a
//! [`TlsServerStream`], see `stream` for why not tokio-rustls's acceptor)
//! and a config from [`server_config`], and upstream connections with [`upstream_config`];
//! `proxy` calls [`install_crypto_provider`] before building configs,
//! `control` calls [`CertStore::reload`] on a reload, `runtime` runs
//! [`spawn_cert_watcher`] (which polls [`CertStore::files_changed`]); `cli`'s `cert self-signed` and `init` call
//! [`write_self_signed`]. This module reads certificate files and writes
//! self-signed ones; it touches no other state and never logs secrets.
//!
//! Crypto comes from aws-lc-rs only (DESIGN.md decision 8): ring is not
//! compiled in, so every config here is built with an explicit provider
//! rather than rustls's crate-feature guess.
//!
//! # Cipher suites
//!
//! `ciphers` takes nginx/OpenSSL names (as in an nginx `ssl_ciphers` line,
//! one per entry or `:`-separated) or IANA names, case-insensitively. An
//! empty list means rustls's defaults (every suite below except the `DHE`
//! rows). As with nginx, if the list names no TLS 1.3 suite, TLS 1.3 keeps
//! its three default suites; a list naming only TLS 1.3 suites while
//! TLS 1.2 is enabled is an error.
//!
//! | Accepted names | rustls suite | TLS |
//! |---|---|---|
//! | `TLS_AES_256_GCM_SHA384`, `TLS13_AES_256_GCM_SHA384` | `TLS13_AES_256_GCM_SHA384` | 1.3 |
//! | `TLS_AES_128_GCM_SHA256`, `TLS13_AES_128_GCM_SHA256` | `TLS13_AES_128_GCM_SHA256` | 1.3 |
//! | `TLS_CHACHA20_POLY1305_SHA256`, `TLS13_CHACHA20_POLY1305_SHA256` | `TLS13_CHACHA20_POLY1305_SHA256` | 1.3 |
//! | `ECDHE-ECDSA-AES256-GCM-SHA384`, `TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384` | `TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384` | 1.2 |
//! | `ECDHE-ECDSA-AES128-GCM-SHA256`, `TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256` | `TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256` | 1.2 |
//! | `ECDHE-ECDSA-CHACHA20-POLY1305`, `TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256` | `TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256` | 1.2 |
//! | `ECDHE-RSA-AES256-GCM-SHA384`, `TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384` | `TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384` | 1.2 |
//! | `ECDHE-RSA-AES128-GCM-SHA256`, `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256` | `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256` | 1.2 |
//! | `ECDHE-RSA-CHACHA20-POLY1305`, `TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256` | `TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256` | 1.2 |
//! | `DHE-RSA-AES256-GCM-SHA384` | `TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384` + warning | 1.2 |
//! | `DHE-RSA-AES128-GCM-SHA256` | `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256` + warning | 1.2 |
//! | `DHE-RSA-CHACHA20-POLY1305` | `TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256` + warning | 1.2 |
//!
//! rustls has no finite-field DHE, so the `DHE-RSA-*` names that nginx
//! configs often carry are served by the ECDHE suite with the same cipher
//! (same RSA certificate, stronger key exchange) and reported as a
//! [`TlsWarning::CipherSubstituted`]. Everything else is rejected with
//! [`TlsError::UnsupportedCipherSuite`]: CBC, static-RSA, 3DES, RC4 and PSK
//! suites, and OpenSSL keywords such as `HIGH` or `!aNULL`.
//!
//! Protocols: `TLSv1.2` and `TLSv1.3` only (both by default); older ones are
//! rejected by name. ALPN offers `h2` then `http/1.1`.

mod certinfo;
mod client;
mod error;
mod pem;
mod selfsigned;
mod server;
mod store;
mod stream;
mod suites;

use std::sync::Arc;

pub use certinfo::EXPIRY_WARNING_DAYS;
pub use client::{load_ca_roots, upstream_config, InsecureSkipVerify, UpstreamTlsOptions};
pub use error::{FileRole, TlsError, TlsWarning};
pub use pem::{load_cert_chain, load_private_key};
pub use selfsigned::{
    ensure_self_signed, generate_self_signed, generate_self_signed_with_validity, write_self_signed,
    SELF_SIGNED_CERT_FILE, SELF_SIGNED_DAYS, SELF_SIGNED_KEY_FILE,
};
pub use server::{parse_protocols, server_config, ServerTlsOptions, DEFAULT_ALPN};
pub use store::{spawn_cert_watcher, CertSource, CertStore};
pub use stream::{accept, TlsServerStream, TlsState};
pub use suites::parse_cipher_suites;

/// Installs aws-lc-rs as the process-wide rustls crypto provider. Call once
/// at start, before any TLS config is built; later calls do nothing.
///
/// The configs built here pass their provider explicitly and do not need
/// this; it is for code that uses rustls's defaults (e.g. a library that
/// calls `ClientConfig::builder()`), which would otherwise panic because
/// no provider is chosen by crate features alone.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed: ours, from an earlier
    // call (ring is not compiled in, so nothing else can have been).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The aws-lc-rs provider with rustls's default suites and key exchanges.
pub(crate) fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// Shared for the resolver and key loading: cheap to clone, built once.
pub(crate) fn shared_provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<rustls::crypto::CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(provider())).clone()
}
