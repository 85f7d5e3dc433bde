//! Reading PEM certificate chains and private keys from files, with errors
//! that say which file and what is wrong with it: missing, unreadable, not
//! PEM, DER instead of PEM, the key and the certificate swapped, an
//! encrypted key. Called by the certificate store, the upstream CA loader
//! and the self-signed reuse check.

use std::path::Path;
use std::sync::Arc;

use rustls::sign::SigningKey;
use rustls_pki_types::pem::{self, PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};

use super::error::{FileRole, TlsError};

/// Reads every certificate from a PEM file, the server's own first. Each
/// one must parse as X.509.
pub fn load_cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    load_certs(FileRole::Certificate, path)
}

/// Reads the first private key (PKCS#8, PKCS#1 RSA or SEC1 EC) from a PEM
/// file.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(FileRole::PrivateKey, path)?;
    // Legacy encrypted PEM ("Proc-Type: 4,ENCRYPTED") would otherwise show
    // up as a base64 error, and PKCS#8 "ENCRYPTED PRIVATE KEY" as no key.
    if contains(&bytes, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") || contains(&bytes, b"Proc-Type: 4,ENCRYPTED") {
        return Err(TlsError::EncryptedKey { path: path.to_owned() });
    }
    let sections = sections(FileRole::PrivateKey, path, &bytes)?;
    let key = sections.iter().find_map(|(kind, der)| match kind {
        SectionKind::PrivateKey => Some(PrivateKeyDer::from(PrivatePkcs8KeyDer::from(der.clone()))),
        SectionKind::RsaPrivateKey => Some(PrivateKeyDer::from(PrivatePkcs1KeyDer::from(der.clone()))),
        SectionKind::EcPrivateKey => Some(PrivateKeyDer::from(PrivateSec1KeyDer::from(der.clone()))),
        _ => None,
    });
    match key {
        Some(key) => Ok(key),
        None if sections.iter().any(|(kind, _)| *kind == SectionKind::Certificate) => {
            Err(TlsError::CertInKeyFile { path: path.to_owned() })
        }
        None => Err(TlsError::NoPrivateKey { path: path.to_owned(), found: describe(&bytes, &sections, "pkey") }),
    }
}

/// Reads a private key and turns it into a rustls signing key.
pub(crate) fn load_signing_key(path: &Path) -> Result<Arc<dyn SigningKey>, TlsError> {
    let key = load_private_key(path)?;
    super::shared_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::UnsupportedKey { path: path.to_owned(), detail: e.to_string() })
}

pub(crate) fn load_certs(role: FileRole, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(role, path)?;
    let sections = sections(role, path, &bytes)?;
    let certs: Vec<CertificateDer<'static>> = sections
        .iter()
        .filter(|(kind, _)| *kind == SectionKind::Certificate)
        .map(|(_, der)| CertificateDer::from(der.clone()))
        .collect();
    if certs.is_empty() {
        let holds_key = sections.iter().any(|(k, _)| {
            matches!(k, SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey)
        });
        if holds_key && role == FileRole::Certificate {
            return Err(TlsError::KeyInCertFile { path: path.to_owned() });
        }
        return Err(TlsError::NoCertificate {
            role,
            path: path.to_owned(),
            found: describe(&bytes, &sections, "x509"),
        });
    }
    for (i, der) in certs.iter().enumerate() {
        if let Err(e) = x509_parser::parse_x509_certificate(der) {
            return Err(TlsError::InvalidCertificate {
                role,
                path: path.to_owned(),
                index: i + 1,
                detail: e.to_string(),
            });
        }
    }
    Ok(certs)
}

fn read(role: FileRole, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => TlsError::NotFound { role, path: path.to_owned() },
        _ => TlsError::Unreadable { role, path: path.to_owned(), source },
    })
}

/// All PEM sections of known kinds; sections of other kinds are skipped.
fn sections(role: FileRole, path: &Path, bytes: &[u8]) -> Result<Vec<(SectionKind, Vec<u8>)>, TlsError> {
    <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes).collect::<Result<Vec<_>, _>>().map_err(|e| TlsError::BadPem {
        role,
        path: path.to_owned(),
        detail: pem_error(e),
    })
}

fn pem_error(e: pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { end_marker } => {
            format!("no \"-----END {}-----\" line", String::from_utf8_lossy(&end_marker))
        }
        pem::Error::IllegalSectionStart { line } => {
            format!("malformed line {:?}", String::from_utf8_lossy(&line))
        }
        pem::Error::Base64Decode(detail) => format!("bad base64 ({detail})"),
        other => other.to_string(),
    }
}

/// What a file holds when it lacks what was asked for. `openssl_cmd` is the
/// openssl subcommand that converts DER of the wanted kind to PEM.
fn describe(bytes: &[u8], sections: &[(SectionKind, Vec<u8>)], openssl_cmd: &str) -> String {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return "the file is empty".to_owned();
    }
    if !sections.is_empty() {
        let mut kinds: Vec<&str> = sections.iter().map(|(k, _)| kind_name(*k)).collect();
        kinds.dedup();
        return format!("it holds: {}", kinds.join(", "));
    }
    if let Some(label) = first_pem_label(bytes) {
        return format!("it holds PEM of type {label:?}");
    }
    // DER starts with a SEQUENCE tag; PEM text never does.
    if bytes.first() == Some(&0x30) {
        return format!(
            "it looks like binary DER; convert it with `openssl {openssl_cmd} -inform der -in FILE -out FILE.pem`"
        );
    }
    "it is not PEM: no -----BEGIN line".to_owned()
}

fn kind_name(kind: SectionKind) -> &'static str {
    match kind {
        SectionKind::Certificate => "a certificate",
        SectionKind::PublicKey => "a public key",
        SectionKind::RsaPrivateKey | SectionKind::PrivateKey | SectionKind::EcPrivateKey => "a private key",
        SectionKind::Crl => "a certificate revocation list",
        SectionKind::Csr => "a certificate signing request",
        _ => "another PEM object",
    }
}

fn first_pem_label(bytes: &[u8]) -> Option<String> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    let start = bytes.windows(BEGIN.len()).position(|w| w == BEGIN)? + BEGIN.len();
    let rest = &bytes[start..];
    let end = rest.windows(5).position(|w| w == b"-----")?;
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn pair(dir: &tempfile::TempDir) -> (std::path::PathBuf, std::path::PathBuf) {
        let (cert, key) = crate::tls::generate_self_signed(&["a.test".to_owned()]).unwrap();
        (write(dir, "a.crt", cert.as_bytes()), write(dir, "a.key", key.as_bytes()))
    }

    #[test]
    fn loads_generated_pair() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair(&dir);
        assert_eq!(load_cert_chain(&cert).unwrap().len(), 1);
        assert!(matches!(load_private_key(&key).unwrap(), PrivateKeyDer::Pkcs8(_)));
        load_signing_key(&key).unwrap();
    }

    #[test]
    fn missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope.crt");
        let e = load_cert_chain(&p).unwrap_err();
        assert_eq!(e.to_string(), format!("certificate file {}: not found", p.display()));
        let e = load_private_key(&p).unwrap_err();
        assert_eq!(e.to_string(), format!("private key file {}: not found", p.display()));
    }

    #[test]
    fn directory_is_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let e = load_cert_chain(dir.path()).unwrap_err();
        assert!(matches!(e, TlsError::Unreadable { .. }), "{e}");
        assert!(e.to_string().starts_with(&format!("certificate file {}: cannot read: ", dir.path().display())));
    }

    #[test]
    fn garbage_empty_der_and_broken_pem() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "g.crt", b"hello, this is not a certificate\n");
        assert_eq!(
            load_cert_chain(&p).unwrap_err().to_string(),
            format!("certificate file {}: no PEM certificate in it (it is not PEM: no -----BEGIN line)", p.display())
        );
        let p = write(&dir, "e.crt", b"\n");
        assert_eq!(
            load_cert_chain(&p).unwrap_err().to_string(),
            format!("certificate file {}: no PEM certificate in it (the file is empty)", p.display())
        );
        let p = write(&dir, "d.crt", &[0x30, 0x82, 0x01, 0x0a, 0x02]);
        assert_eq!(
            load_cert_chain(&p).unwrap_err().to_string(),
            format!(
                "certificate file {}: no PEM certificate in it (it looks like binary DER; convert it with \
                 `openssl x509 -inform der -in FILE -out FILE.pem`)",
                p.display()
            )
        );
        let p = write(&dir, "b.crt", b"-----BEGIN CERTIFICATE-----\nMIIB\n");
        assert_eq!(
            load_cert_chain(&p).unwrap_err().to_string(),
            format!("certificate file {}: invalid PEM: no \"-----END CERTIFICATE-----\" line", p.display())
        );
        let p = write(&dir, "x.crt", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        let e = load_cert_chain(&p).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("certificate file {}: certificate #1 is not valid X.509: ", p.display())),
            "{e}"
        );
    }

    #[test]
    fn swapped_cert_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair(&dir);
        assert_eq!(
            load_cert_chain(&key).unwrap_err().to_string(),
            format!(
                "certificate file {}: holds a private key, not a certificate (are `cert` and `key` swapped?)",
                key.display()
            )
        );
        assert_eq!(
            load_private_key(&cert).unwrap_err().to_string(),
            format!(
                "private key file {}: holds a certificate, not a private key (are `cert` and `key` swapped?)",
                cert.display()
            )
        );
    }

    #[test]
    fn encrypted_and_unknown_pem_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            "enc.key",
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        );
        assert!(matches!(load_private_key(&p).unwrap_err(), TlsError::EncryptedKey { .. }));
        let p =
            write(&dir, "pub.key", b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n");
        assert_eq!(
            load_private_key(&p).unwrap_err().to_string(),
            format!(
                "private key file {}: no PEM private key in it (it holds PEM of type \"OPENSSH PRIVATE KEY\")",
                p.display()
            )
        );
    }

    #[test]
    fn corrupt_key_is_unsupported() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "bad.key", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
        let e = load_signing_key(&p).unwrap_err();
        assert!(matches!(e, TlsError::UnsupportedKey { .. }), "{e}");
        assert!(e
            .to_string()
            .starts_with(&format!("private key file {}: unsupported or corrupt private key: ", p.display())));
    }

    #[test]
    fn ca_file_role_in_messages() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "ca.pem", b"");
        assert_eq!(
            load_certs(FileRole::Ca, &p).unwrap_err().to_string(),
            format!("CA file {}: no PEM certificate in it (the file is empty)", p.display())
        );
    }
}
