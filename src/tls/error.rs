//! What can go wrong loading TLS material or building a TLS config, and the
//! problems that are worth a warning but must not stop the node (an expired
//! certificate still lets operators in to replace it).
//!
//! Every message names the file and says what to do, e.g.
//! `certificate file /etc/sysmanage-node/tls/server.crt: not found`.

use std::fmt;
use std::path::PathBuf;

/// Which file a message is about, in the operator's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRole {
    Certificate,
    PrivateKey,
    Ca,
}

impl fmt::Display for FileRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileRole::Certificate => "certificate file",
            FileRole::PrivateKey => "private key file",
            FileRole::Ca => "CA file",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{role} {}: not found", path.display())]
    NotFound { role: FileRole, path: PathBuf },

    #[error("{role} {}: cannot read: {source}", path.display())]
    Unreadable { role: FileRole, path: PathBuf, source: std::io::Error },

    #[error("{role} {}: invalid PEM: {detail}", path.display())]
    BadPem { role: FileRole, path: PathBuf, detail: String },

    /// `found` says what the file holds instead (empty, DER, other PEM).
    #[error("{role} {}: no PEM certificate in it ({found})", path.display())]
    NoCertificate { role: FileRole, path: PathBuf, found: String },

    #[error(
        "certificate file {}: holds a private key, not a certificate (are `cert` and `key` swapped?)",
        path.display()
    )]
    KeyInCertFile { path: PathBuf },

    #[error("{role} {}: certificate #{index} is not valid X.509: {detail}", path.display())]
    InvalidCertificate { role: FileRole, path: PathBuf, index: usize, detail: String },

    /// `found` says what the file holds instead (empty, DER, other PEM).
    #[error("private key file {}: no PEM private key in it ({found})", path.display())]
    NoPrivateKey { path: PathBuf, found: String },

    #[error(
        "private key file {}: holds a certificate, not a private key (are `cert` and `key` swapped?)",
        path.display()
    )]
    CertInKeyFile { path: PathBuf },

    #[error(
        "private key file {}: the key is encrypted; sysmanage-node needs it unencrypted \
         (`openssl pkey -in KEY -out KEY.plain`, then keep it mode 0600)",
        path.display()
    )]
    EncryptedKey { path: PathBuf },

    #[error("private key file {}: unsupported or corrupt private key: {detail}", path.display())]
    UnsupportedKey { path: PathBuf, detail: String },

    #[error(
        "private key {} does not match certificate {}: their public keys differ \
         (the server certificate must come first in the certificate file)",
        key.display(),
        cert.display()
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },

    #[error("server name {name:?} for certificate {}: {reason}", cert.display())]
    InvalidName { cert: PathBuf, name: String, reason: &'static str },

    #[error("no certificate configured: a TLS listener needs at least one `cert` and `key`")]
    NoCertificates,

    #[error("cipher suite {name:?}: {reason}")]
    UnsupportedCipherSuite { name: String, reason: String },

    #[error("TLS protocol {name:?} is not supported: use \"TLSv1.2\" and/or \"TLSv1.3\"")]
    UnsupportedProtocol { name: String },

    #[error(
        "{version} is enabled but none of the configured cipher suites is a {version} suite: \
         add one, or remove {version} from `protocols`"
    )]
    NoSuiteForVersion { version: &'static str },

    #[error("upstream TLS: `insecure_skip_verify = true` and `ca_file` together make no sense: keep one")]
    ConflictingVerification,

    #[error("upstream TLS: no trusted root certificates found on this system ({detail}); set `ca_file`")]
    NoPlatformRoots { detail: String },

    #[error("{context}: {source}")]
    Rustls { context: &'static str, source: rustls::Error },

    #[error("generating a self-signed certificate for {hosts:?}: {detail}")]
    Generate { hosts: Vec<String>, detail: String },

    #[error("{}: already exists; remove it first or write elsewhere", path.display())]
    AlreadyExists { path: PathBuf },

    #[error("writing {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
}

/// A problem that is reported (logged, shown by `check-config`) but does not
/// stop the node: a TLS listener with an expired certificate still serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsWarning {
    /// `not_after` in the past: clients that verify will refuse it.
    Expired { path: PathBuf, not_after: String },
    /// `not_before` in the future (wrong clock here or at the CA).
    NotYetValid { path: PathBuf, not_before: String },
    /// Expires within [`EXPIRY_WARNING_DAYS`](crate::tls::EXPIRY_WARNING_DAYS) days.
    ExpiresSoon { path: PathBuf, not_after: String, days: i64 },
    /// Not the default and without names: SNI never selects it.
    NoNames { path: PathBuf },
    /// A cipher name rustls lacks, served by the nearest real suite.
    CipherSubstituted { requested: String, used: &'static str },
}

impl fmt::Display for TlsWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsWarning::Expired { path, not_after } => {
                write!(f, "certificate {} expired on {not_after}; clients will refuse it", path.display())
            }
            TlsWarning::NotYetValid { path, not_before } => {
                write!(f, "certificate {} is not valid before {not_before}; check this host's clock", path.display())
            }
            TlsWarning::ExpiresSoon { path, not_after, days } => {
                write!(f, "certificate {} expires in {days} day(s), on {not_after}", path.display())
            }
            TlsWarning::NoNames { path } => write!(
                f,
                "certificate {} has no DNS names and is not the default: SNI never selects it; \
                 set `names`",
                path.display()
            ),
            TlsWarning::CipherSubstituted { requested, used } => {
                write!(f, "cipher suite {requested:?}: rustls has no finite-field DHE; using {used} instead")
            }
        }
    }
}
