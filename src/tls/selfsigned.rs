//! Self-signed certificates (rcgen, ECDSA P-256): for a node started with
//! TLS but no certificate (kept in `data_dir` and reused), and for
//! `sysmanage-node cert self-signed --host H... --out DIR` / `init`.
//!
//! Private keys are written mode 0600 and never logged.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256};
use time::OffsetDateTime;

use super::certinfo::{format_time, now_unix};
use super::error::TlsError;
use super::store::CertSource;

/// Validity of a generated certificate.
pub const SELF_SIGNED_DAYS: u64 = 365;
/// File names under `data_dir/tls/` for the node's own certificate.
pub const SELF_SIGNED_CERT_FILE: &str = "self-signed.crt";
pub const SELF_SIGNED_KEY_FILE: &str = "self-signed.key";
/// File names `cert self-signed --out DIR` writes (as in the example config).
const OUT_CERT_FILE: &str = "server.crt";
const OUT_KEY_FILE: &str = "server.key";

/// A new certificate and key, PEM, for `hosts` (DNS names and IP addresses
/// become subjectAltNames; `localhost` when empty), valid from an hour ago
/// (clock skew) for [`SELF_SIGNED_DAYS`].
pub fn generate_self_signed(hosts: &[String]) -> Result<(String, String), TlsError> {
    let now = SystemTime::now();
    let not_after = now + Duration::from_secs(SELF_SIGNED_DAYS * 86_400);
    generate_self_signed_with_validity(hosts, now - Duration::from_secs(3600), not_after)
}

/// As [`generate_self_signed`], with an explicit validity period (tests use
/// it for expired and not-yet-valid certificates).
pub fn generate_self_signed_with_validity(
    hosts: &[String],
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<(String, String), TlsError> {
    let hosts: Vec<String> = match hosts.is_empty() {
        true => vec!["localhost".to_owned()],
        false => hosts.iter().map(|h| h.trim().to_owned()).collect(),
    };
    let fail = |e: rcgen::Error| TlsError::Generate { hosts: hosts.clone(), detail: e.to_string() };
    let mut params = CertificateParams::new(hosts.clone()).map_err(fail)?;
    params.distinguished_name.push(DnType::CommonName, hosts[0].as_str());
    params.distinguished_name.push(DnType::OrganizationName, "sysmanage-node self-signed");
    params.not_before = OffsetDateTime::from(not_before);
    params.not_after = OffsetDateTime::from(not_after);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(fail)?;
    let cert = params.self_signed(&key).map_err(fail)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The node's own certificate in `data_dir/tls/`: generated on first start,
/// reused afterwards while it loads and has not expired (otherwise it is
/// replaced, with a log line). Delete the files to regenerate for new hosts.
pub fn ensure_self_signed(data_dir: &Path, hosts: &[String]) -> Result<(PathBuf, PathBuf), TlsError> {
    let dir = data_dir.join("tls");
    let cert = dir.join(SELF_SIGNED_CERT_FILE);
    let key = dir.join(SELF_SIGNED_KEY_FILE);
    if cert.exists() || key.exists() {
        match reusable(&cert, &key) {
            Ok(()) => return Ok((cert, key)),
            Err(why) => tracing::warn!(cert = %cert.display(), "replacing the self-signed certificate: {why}"),
        }
    }
    std::fs::create_dir_all(&dir).map_err(|source| TlsError::Write { path: dir.clone(), source })?;
    let (cert_pem, key_pem) = generate_self_signed(hosts)?;
    // Key first: a crash in between leaves a key without a certificate,
    // which the next start replaces, never a certificate without its key.
    replace_file(&key, key_pem.as_bytes(), 0o600)?;
    replace_file(&cert, cert_pem.as_bytes(), 0o644)?;
    tracing::info!(cert = %cert.display(), ?hosts, "generated a self-signed TLS certificate");
    Ok((cert, key))
}

/// Writes `server.crt` and `server.key` (0600) into `out_dir`, creating it;
/// refuses to overwrite either file.
pub fn write_self_signed(hosts: &[String], out_dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert = out_dir.join(OUT_CERT_FILE);
    let key = out_dir.join(OUT_KEY_FILE);
    for path in [&cert, &key] {
        if path.exists() {
            return Err(TlsError::AlreadyExists { path: path.clone() });
        }
    }
    std::fs::create_dir_all(out_dir).map_err(|source| TlsError::Write { path: out_dir.to_owned(), source })?;
    let (cert_pem, key_pem) = generate_self_signed(hosts)?;
    create_new(&key, key_pem.as_bytes(), 0o600)?;
    create_new(&cert, cert_pem.as_bytes(), 0o644)?;
    Ok((cert, key))
}

/// Why an existing pair cannot be reused, if it cannot.
fn reusable(cert: &Path, key: &Path) -> Result<(), String> {
    let loaded = super::store::certified_key(&CertSource::new(cert, key)).map_err(|e| e.to_string())?;
    // Renew a day early rather than serve an expired certificate tomorrow.
    if loaded.info.not_after < now_unix() + 86_400 {
        return Err(format!("it expires on {}", format_time(loaded.info.not_after)));
    }
    Ok(())
}

/// Write to a temporary file and rename over `path`, so readers never see
/// a half-written file.
fn replace_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    // Left over from a crash: ours to remove (create_new refuses otherwise).
    let _ = std::fs::remove_file(&tmp);
    create_new(&tmp, contents, mode)?;
    std::fs::rename(&tmp, path).map_err(|source| TlsError::Write { path: path.to_owned(), source })
}

/// Creates `path` (failing if it exists) with `mode` from the start, so a
/// key is never readable by others, not even briefly.
fn create_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    crate::model::create_private_file(path, contents, mode).map_err(|source| match source.kind() {
        std::io::ErrorKind::AlreadyExists => TlsError::AlreadyExists { path: path.to_owned() },
        _ => TlsError::Write { path: path.to_owned(), source },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn ensure_generates_once_then_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = vec!["lb1.example.com".to_owned(), "127.0.0.1".to_owned()];
        let (cert, key) = ensure_self_signed(dir.path(), &hosts).unwrap();
        assert_eq!(cert, dir.path().join("tls/self-signed.crt"));
        assert_eq!(key, dir.path().join("tls/self-signed.key"));
        #[cfg(unix)]
        assert_eq!(mode(&key), 0o600);
        let first = std::fs::read(&cert).unwrap();
        let again = ensure_self_signed(dir.path(), &hosts).unwrap();
        assert_eq!(again, (cert.clone(), key.clone()));
        assert_eq!(std::fs::read(&cert).unwrap(), first, "reused, not regenerated");
    }

    #[test]
    fn ensure_replaces_expired_or_broken() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = ensure_self_signed(dir.path(), &[]).unwrap();
        let first = std::fs::read(&cert).unwrap();
        let day = Duration::from_secs(86_400);
        let now = SystemTime::now();
        let (old_cert, old_key) = generate_self_signed_with_validity(&[], now - 30 * day, now - day).unwrap();
        std::fs::write(&cert, old_cert).unwrap();
        std::fs::write(&key, old_key).unwrap();
        ensure_self_signed(dir.path(), &[]).unwrap();
        let renewed = std::fs::read(&cert).unwrap();
        assert_ne!(renewed, first);
        assert!(reusable(&cert, &key).is_ok());

        std::fs::remove_file(&key).unwrap();
        ensure_self_signed(dir.path(), &[]).unwrap();
        assert!(reusable(&cert, &key).is_ok());
        #[cfg(unix)]
        assert_eq!(mode(&key), 0o600);
    }

    #[test]
    fn write_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let (cert, key) = write_self_signed(&["node.test".to_owned()], &out).unwrap();
        assert_eq!((cert.clone(), key.clone()), (out.join("server.crt"), out.join("server.key")));
        #[cfg(unix)]
        assert_eq!(mode(&key), 0o600);
        assert_eq!(
            write_self_signed(&["node.test".to_owned()], &out).unwrap_err().to_string(),
            format!("{}: already exists; remove it first or write elsewhere", cert.display())
        );
    }

    #[test]
    fn invalid_host_is_a_clear_error() {
        let e = generate_self_signed(&["bad host ü".to_owned()]).unwrap_err();
        assert!(e.to_string().starts_with("generating a self-signed certificate for [\"bad host ü\"]: "), "{e}");
    }
}
