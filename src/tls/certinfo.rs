//! What the store needs to know from a server certificate that rustls does
//! not expose: the DNS names it is for (SNI) and its validity period
//! (warnings). Parsed with x509-parser; called when certificates load.

use std::path::Path;

use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;

use super::error::{FileRole, TlsError, TlsWarning};

/// A certificate expiring within this many days gets a warning.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

/// The parts of a leaf certificate the store uses.
#[derive(Debug, Clone)]
pub(crate) struct LeafInfo {
    /// DNS subjectAltNames, or the subject CN when there is no SAN
    /// extension at all (old certificates). Lowercase, as written.
    pub dns_names: Vec<String>,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

pub(crate) fn leaf_info(path: &Path, der: &[u8]) -> Result<LeafInfo, TlsError> {
    let invalid = |detail: String| TlsError::InvalidCertificate {
        role: FileRole::Certificate,
        path: path.to_owned(),
        index: 1,
        detail,
    };
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| invalid(e.to_string()))?;
    let san = cert.subject_alternative_name().map_err(|e| invalid(format!("subjectAltName: {e}")))?;
    let dns_names = match san {
        Some(ext) => ext
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(name) => Some(name.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        None => {
            cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).map(str::to_ascii_lowercase).collect()
        }
    };
    let validity = cert.validity();
    Ok(LeafInfo { dns_names, not_before: validity.not_before.timestamp(), not_after: validity.not_after.timestamp() })
}

/// Expired, not yet valid, or expiring soon, as of `now` (Unix seconds).
pub(crate) fn validity_warnings(path: &Path, info: &LeafInfo, now: i64) -> Option<TlsWarning> {
    let path = path.to_owned();
    if info.not_after < now {
        Some(TlsWarning::Expired { path, not_after: format_time(info.not_after) })
    } else if info.not_before > now {
        Some(TlsWarning::NotYetValid { path, not_before: format_time(info.not_before) })
    } else if info.not_after - now < EXPIRY_WARNING_DAYS * 86_400 {
        let days = (info.not_after - now) / 86_400;
        Some(TlsWarning::ExpiresSoon { path, not_after: format_time(info.not_after), days })
    } else {
        None
    }
}

pub(crate) fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// `2025-03-01 12:00:00 UTC`.
pub(crate) fn format_time(unix: i64) -> String {
    match OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("{unix} (Unix time)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(not_before: i64, not_after: i64) -> LeafInfo {
        LeafInfo { dns_names: vec![], not_before, not_after }
    }

    #[test]
    fn warnings_by_date() {
        let p = Path::new("/x.crt");
        let now = 1_700_000_000;
        assert_eq!(validity_warnings(p, &info(now - 10, now + 100 * 86_400), now), None);
        assert_eq!(
            validity_warnings(p, &info(0, now - 1), now).map(|w| w.to_string()).as_deref(),
            Some("certificate /x.crt expired on 2023-11-14 22:13:19 UTC; clients will refuse it")
        );
        assert_eq!(
            validity_warnings(p, &info(now + 60, now + 400 * 86_400), now).map(|w| w.to_string()).as_deref(),
            Some("certificate /x.crt is not valid before 2023-11-14 22:14:20 UTC; check this host's clock")
        );
        assert_eq!(
            validity_warnings(p, &info(0, now + 3 * 86_400 + 5), now).map(|w| w.to_string()).as_deref(),
            Some("certificate /x.crt expires in 3 day(s), on 2023-11-17 22:13:25 UTC")
        );
    }

    #[test]
    fn names_from_generated_cert() {
        let (cert, _) = crate::tls::generate_self_signed(&[
            "A.Example.com".to_owned(),
            "*.b.test".to_owned(),
            "10.0.0.1".to_owned(),
        ])
        .unwrap();
        let der = der_of(&cert);
        let info = leaf_info(Path::new("/x.crt"), &der).unwrap();
        assert_eq!(info.dns_names, ["a.example.com", "*.b.test"]);
        let now = now_unix();
        assert!(info.not_before <= now && info.not_after > now + 360 * 86_400);
    }

    fn der_of(pem: &str) -> Vec<u8> {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().to_vec()
    }
}
