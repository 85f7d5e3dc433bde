//! Cipher-suite names (nginx/OpenSSL and IANA) → rustls suites. The table
//! is in the module doc of [`crate::tls`]; this file is its implementation.
//! Called by the server config builder and by config validation.

use rustls::crypto::aws_lc_rs::cipher_suite as cs;
use rustls::SupportedCipherSuite;

use super::error::{TlsError, TlsWarning};

/// The names listed in errors: what an nginx user would write.
const NGINX_NAMES: &[&str] = &[
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_AES_256_GCM_SHA384",
    "TLS_AES_128_GCM_SHA256",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// OpenSSL cipher-string keywords: a cipher *expression*, not a suite.
const OPENSSL_KEYWORDS: &[&str] = &[
    "ALL",
    "DEFAULT",
    "COMPLEMENTOFALL",
    "COMPLEMENTOFDEFAULT",
    "HIGH",
    "MEDIUM",
    "LOW",
    "EXPORT",
    "ANULL",
    "ENULL",
    "NULL",
    "SECLEVEL",
];

/// Parses suite names. Each entry may hold one name or several separated by
/// `:` (an nginx `ssl_ciphers` value), `,` or spaces. Duplicates collapse;
/// order is kept. `DHE-RSA-*` names map to their ECDHE twin with a warning.
pub fn parse_cipher_suites<S: AsRef<str>>(
    names: &[S],
) -> Result<(Vec<SupportedCipherSuite>, Vec<TlsWarning>), TlsError> {
    let mut suites: Vec<SupportedCipherSuite> = Vec::new();
    let mut warnings = Vec::new();
    let words = names.iter().flat_map(|n| n.as_ref().split([':', ',', ' ', '\t'])).filter(|w| !w.is_empty());
    for word in words {
        let (suite, substituted) = lookup(word)?;
        if substituted {
            warnings.push(TlsWarning::CipherSubstituted { requested: word.to_owned(), used: suite_name(suite) });
        }
        if !suites.iter().any(|s| s.suite() == suite.suite()) {
            suites.push(suite);
        }
    }
    Ok((suites, warnings))
}

/// The rustls name of a suite, e.g. `TLS13_AES_128_GCM_SHA256`.
pub(crate) fn suite_name(suite: SupportedCipherSuite) -> &'static str {
    suite.suite().as_str().unwrap_or("an unnamed suite")
}

/// One name → (suite, whether it stands in for a suite rustls lacks).
fn lookup(name: &str) -> Result<(SupportedCipherSuite, bool), TlsError> {
    let upper = name.to_ascii_uppercase();
    let found = match upper.as_str() {
        "TLS_AES_256_GCM_SHA384" | "TLS13_AES_256_GCM_SHA384" => (cs::TLS13_AES_256_GCM_SHA384, false),
        "TLS_AES_128_GCM_SHA256" | "TLS13_AES_128_GCM_SHA256" => (cs::TLS13_AES_128_GCM_SHA256, false),
        "TLS_CHACHA20_POLY1305_SHA256" | "TLS13_CHACHA20_POLY1305_SHA256" => {
            (cs::TLS13_CHACHA20_POLY1305_SHA256, false)
        }
        "ECDHE-ECDSA-AES256-GCM-SHA384" | "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => {
            (cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, false)
        }
        "ECDHE-ECDSA-AES128-GCM-SHA256" | "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => {
            (cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, false)
        }
        "ECDHE-ECDSA-CHACHA20-POLY1305" | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
            (cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, false)
        }
        "ECDHE-RSA-AES256-GCM-SHA384" | "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => {
            (cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, false)
        }
        "ECDHE-RSA-AES128-GCM-SHA256" | "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => {
            (cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, false)
        }
        "ECDHE-RSA-CHACHA20-POLY1305" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
            (cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256, false)
        }
        "DHE-RSA-AES256-GCM-SHA384" => (cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, true),
        "DHE-RSA-AES128-GCM-SHA256" => (cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, true),
        "DHE-RSA-CHACHA20-POLY1305" => (cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256, true),
        _ => return Err(TlsError::UnsupportedCipherSuite { name: name.to_owned(), reason: reason(&upper) }),
    };
    Ok(found)
}

fn reason(upper: &str) -> String {
    let bare = upper.trim_start_matches(['!', '+', '-', '@']);
    let keyword = bare.split('=').next().unwrap_or(bare);
    if bare.len() != upper.len() || OPENSSL_KEYWORDS.contains(&keyword) {
        return "OpenSSL cipher-string keywords are not supported: list suite names, \
                or leave `ciphers` empty for the defaults"
            .to_owned();
    }
    format!(
        "not available: rustls implements only AEAD suites with forward secrecy (no CBC, static RSA, \
         3DES, RC4 or PSK); use one of {}",
        NGINX_NAMES.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<&'static str> {
        parse_cipher_suites(list).unwrap().0.into_iter().map(suite_name).collect()
    }

    #[test]
    fn nginx_and_iana_names() {
        assert_eq!(
            names(&["ECDHE-RSA-AES256-GCM-SHA384", "ecdhe-rsa-aes128-gcm-sha256", "ECDHE-RSA-CHACHA20-POLY1305"]),
            [
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"
            ]
        );
        assert_eq!(
            names(&["ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305"]),
            [
                "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
            ]
        );
        assert_eq!(
            names(&["TLS13_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384"]),
            ["TLS13_AES_128_GCM_SHA256", "TLS13_AES_256_GCM_SHA384"]
        );
        assert_eq!(names(&["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]), ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]);
        assert_eq!(names(&["TLS_CHACHA20_POLY1305_SHA256"]), ["TLS13_CHACHA20_POLY1305_SHA256"]);
        assert!(names(&[]).is_empty());
    }

    #[test]
    fn every_listed_name_parses() {
        assert_eq!(names(NGINX_NAMES).len(), NGINX_NAMES.len());
    }

    #[test]
    fn dhe_maps_to_ecdhe_with_warning() {
        let (suites, warnings) =
            parse_cipher_suites(&["DHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384"]).unwrap();
        assert_eq!(
            suites.iter().map(|s| suite_name(*s)).collect::<Vec<_>>(),
            ["TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"]
        );
        assert_eq!(warnings.len(), 1);
        assert_eq!(
            warnings[0].to_string(),
            "cipher suite \"DHE-RSA-AES256-GCM-SHA384\": rustls has no finite-field DHE; using \
             TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 instead"
        );
    }

    #[test]
    fn unknown_names_and_keywords() {
        let e = parse_cipher_suites(&["ECDHE-RSA-AES128-GCM-SHA256", "AES256-SHA"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cipher suite \"AES256-SHA\": not available: rustls implements only AEAD suites with forward \
             secrecy (no CBC, static RSA, 3DES, RC4 or PSK); use one of ECDHE-ECDSA-AES256-GCM-SHA384, \
             ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-ECDSA-CHACHA20-POLY1305, ECDHE-RSA-AES256-GCM-SHA384, \
             ECDHE-RSA-AES128-GCM-SHA256, ECDHE-RSA-CHACHA20-POLY1305, TLS_AES_256_GCM_SHA384, \
             TLS_AES_128_GCM_SHA256, TLS_CHACHA20_POLY1305_SHA256"
        );
        let e = parse_cipher_suites(&["NOT-A-SUITE"]).unwrap_err();
        assert!(matches!(&e, TlsError::UnsupportedCipherSuite { name, .. } if name == "NOT-A-SUITE"));
        let keyword = "cipher suite \"HIGH\": OpenSSL cipher-string keywords are not supported: list suite \
                       names, or leave `ciphers` empty for the defaults";
        assert_eq!(parse_cipher_suites(&["HIGH:!aNULL:!MD5"]).unwrap_err().to_string(), keyword);
        assert!(parse_cipher_suites(&["!aNULL"]).unwrap_err().to_string().contains("OpenSSL cipher-string keywords"));
    }
}
