//! The certificate store: a rustls `ResolvesServerCert` that picks a
//! certificate by SNI from an immutable set held in an `ArcSwap`.
//!
//! The handshake path only loads the current set and looks a name up; no
//! lock, no I/O. [`CertStore::reload`] re-reads every file, builds a new set
//! and swaps it in whole: handshakes that start afterwards get the new
//! certificates, established connections are untouched (their keys are
//! already negotiated). A reload that fails keeps the previous set.
//! A client resuming an earlier session (TLS 1.3 ticket, TLS 1.2 ticket or
//! session id) skips the certificate and keeps the identity it first saw
//! until its ticket expires (6 h), as with nginx.
//!
//! Built by `proxy`'s listeners at start, reloaded by `control` on a
//! reload and by the polling watcher `runtime` starts, and read by rustls
//! through the `ServerConfig`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, SignatureScheme};

use super::certinfo::{leaf_info, now_unix, validity_warnings, LeafInfo};
use super::error::{FileRole, TlsError, TlsWarning};
use super::pem::{load_cert_chain, load_signing_key};

/// One certificate with its key, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSource {
    /// PEM chain, the server certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1; not encrypted).
    pub key: PathBuf,
    /// Server names this certificate answers for (`*.example.com` matches
    /// one label). Empty: the certificate's DNS subjectAltNames (or its CN
    /// when it has none).
    pub names: Vec<String>,
}

impl CertSource {
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        CertSource { cert: cert.into(), key: key.into(), names: Vec::new() }
    }
}

/// Certificates by server name. The first source is the default: served
/// when the client sends no SNI (e.g. connects by IP) or a name no
/// certificate has.
#[derive(Debug)]
pub struct CertStore {
    sources: Vec<CertSource>,
    current: ArcSwap<CertSet>,
    /// File stamps as of the last load attempt, failed or not, so a broken
    /// file is reported once and not on every poll. Held through a reload so
    /// two reloads cannot interleave.
    seen: Mutex<Vec<Stamp>>,
}

/// What a handshake reads: immutable once built.
#[derive(Debug)]
struct CertSet {
    /// Index = source index; 0 is the default.
    keys: Vec<Arc<CertifiedKey>>,
    /// Full name → sources, in configured order.
    exact: HashMap<String, Vec<usize>>,
    /// `*.example.com` stored as `example.com` → sources.
    wildcard: HashMap<String, Vec<usize>>,
}

/// Enough of a file's metadata to see that it changed; `None`: unreadable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp(Option<(SystemTime, u64, u64)>);

impl CertStore {
    /// Loads every source; the first is the default. Fails on the first
    /// unusable file; expiry problems come back as warnings.
    pub fn load(sources: Vec<CertSource>) -> Result<(CertStore, Vec<TlsWarning>), TlsError> {
        let stamps = stamps(&sources);
        let (set, warnings) = CertSet::build(&sources)?;
        let store = CertStore { sources, current: ArcSwap::from_pointee(set), seen: Mutex::new(stamps) };
        Ok((store, warnings))
    }

    /// Re-reads every file and swaps the new set in atomically. On error the
    /// previous certificates stay in use. Blocking file I/O: call it from a
    /// blocking context (`spawn_blocking`) on a runtime.
    pub fn reload(&self) -> Result<Vec<TlsWarning>, TlsError> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        *seen = stamps(&self.sources);
        let (set, warnings) = CertSet::build(&self.sources)?;
        self.current.store(Arc::new(set));
        Ok(warnings)
    }

    /// Whether any certificate or key file changed (modified, replaced,
    /// appeared, vanished) since the last load or reload attempt. Cheap
    /// enough (a `stat` per file) to poll every few seconds.
    pub fn files_changed(&self) -> bool {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        *seen != stamps(&self.sources)
    }

    pub fn sources(&self) -> &[CertSource] {
        &self.sources
    }

    /// The certificate a handshake with this SNI gets (no signature-scheme
    /// preference). For status output and tests.
    pub fn select(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        self.current.load().pick(server_name, None)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().pick(hello.server_name(), Some(hello.signature_schemes())))
    }
}

impl CertSet {
    fn build(sources: &[CertSource]) -> Result<(CertSet, Vec<TlsWarning>), TlsError> {
        if sources.is_empty() {
            return Err(TlsError::NoCertificates);
        }
        let mut set = CertSet { keys: Vec::new(), exact: HashMap::new(), wildcard: HashMap::new() };
        let mut warnings = Vec::new();
        for (index, source) in sources.iter().enumerate() {
            let loaded = certified_key(source)?;
            warnings.extend(loaded.warning);
            let names = if source.names.is_empty() {
                // Names from the certificate: skip forms SNI cannot match
                // (`foo*.example.com`) rather than refuse a CA's certificate.
                loaded.info.dns_names.iter().filter_map(|n| parse_name(n).ok()).collect()
            } else {
                source
                    .names
                    .iter()
                    .map(|n| parse_name(n).map_err(|reason| invalid_name(source, n, reason)))
                    .collect::<Result<Vec<_>, _>>()?
            };
            if names.is_empty() && index > 0 {
                warnings.push(TlsWarning::NoNames { path: source.cert.clone() });
            }
            for name in names {
                let map = if name.wildcard { &mut set.wildcard } else { &mut set.exact };
                let entry = map.entry(name.name).or_default();
                if !entry.contains(&index) {
                    entry.push(index);
                }
            }
            set.keys.push(Arc::new(loaded.key));
        }
        Ok((set, warnings))
    }

    /// Exact name, then `*.` + parent, then the default. Among several
    /// certificates for a name (RSA and ECDSA), the first the client can
    /// verify.
    fn pick(&self, server_name: Option<&str>, schemes: Option<&[SignatureScheme]>) -> Arc<CertifiedKey> {
        let candidates = server_name.and_then(|name| {
            let name = normalize(name);
            self.exact.get(name.as_ref()).or_else(|| {
                let (first, parent) = name.split_once('.')?;
                if first.is_empty() {
                    return None;
                }
                self.wildcard.get(parent)
            })
        });
        let index = match (candidates, schemes) {
            (Some(list), Some(schemes)) if list.len() > 1 => {
                list.iter().copied().find(|&i| self.keys[i].key.choose_scheme(schemes).is_some()).unwrap_or(list[0])
            }
            (Some(list), _) => list[0],
            (None, _) => 0,
        };
        self.keys[index].clone()
    }
}

/// A source's key and chain, checked against each other.
pub(crate) struct Loaded {
    pub key: CertifiedKey,
    pub info: LeafInfo,
    /// Expired, not yet valid or expiring soon.
    pub warning: Option<TlsWarning>,
}

pub(crate) fn certified_key(source: &CertSource) -> Result<Loaded, TlsError> {
    let chain = load_cert_chain(&source.cert)?;
    let info = leaf_info(&source.cert, &chain[0])?;
    let warning = validity_warnings(&source.cert, &info, now_unix());
    let signing_key = load_signing_key(&source.key)?;
    let key = CertifiedKey::new(chain, signing_key);
    match key.keys_match() {
        // Unknown: the key type cannot report its public half; rustls's own
        // `from_der` accepts that too.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::KeyMismatch { cert: source.cert.clone(), key: source.key.clone() })
        }
        Err(e) => {
            return Err(TlsError::InvalidCertificate {
                role: FileRole::Certificate,
                path: source.cert.clone(),
                index: 1,
                detail: e.to_string(),
            })
        }
    }
    Ok(Loaded { key, info, warning })
}

struct Name {
    /// Without the `*.` for wildcards.
    name: String,
    wildcard: bool,
}

fn parse_name(raw: &str) -> Result<Name, &'static str> {
    let lower = normalize(raw.trim()).into_owned();
    let (wildcard, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest.to_owned()),
        None => (false, lower),
    };
    if name.is_empty() {
        return Err("empty name");
    }
    if name.contains('*') {
        return Err("a wildcard must be the whole first label, as in *.example.com");
    }
    if name.starts_with('.') || name.ends_with('.') || name.contains("..") || name.contains(char::is_whitespace) {
        return Err("not a valid DNS name");
    }
    Ok(Name { name, wildcard })
}

fn invalid_name(source: &CertSource, name: &str, reason: &'static str) -> TlsError {
    TlsError::InvalidName { cert: source.cert.clone(), name: name.to_owned(), reason }
}

/// Lowercase without a trailing dot; borrows in the usual case.
fn normalize(name: &str) -> Cow<'_, str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

fn stamps(sources: &[CertSource]) -> Vec<Stamp> {
    sources.iter().flat_map(|s| [stamp(&s.cert), stamp(&s.key)]).collect()
}

fn stamp(path: &Path) -> Stamp {
    // Follows symlinks, so a certbot-style `live/` link moved to a new
    // `archive/` file counts as a change.
    let Ok(meta) = std::fs::metadata(path) else { return Stamp(None) };
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Stamp(meta.modified().ok().map(|m| (m, meta.len(), inode)))
}

/// Polls the store's files every `every` and reloads when they change,
/// logging the outcome. Ends when the store is dropped.
pub fn spawn_cert_watcher(store: &Arc<CertStore>, every: Duration) -> tokio::task::JoinHandle<()> {
    let weak = Arc::downgrade(store);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(store) = weak.upgrade() else { return };
            let outcome = tokio::task::spawn_blocking(move || store.files_changed().then(|| store.reload())).await;
            match outcome {
                Ok(Some(Ok(warnings))) => {
                    tracing::info!("TLS certificate files changed: reloaded");
                    for w in warnings {
                        tracing::warn!("{w}");
                    }
                }
                Ok(Some(Err(e))) => {
                    tracing::error!("TLS certificate reload failed, keeping the previous certificates: {e}")
                }
                Ok(None) => {}
                Err(e) => tracing::error!("TLS certificate watcher: {e}"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, stem: &str, hosts: &[&str]) -> CertSource {
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        let (cert, key) = crate::tls::generate_self_signed(&hosts).unwrap();
        let source = CertSource::new(dir.join(format!("{stem}.crt")), dir.join(format!("{stem}.key")));
        std::fs::write(&source.cert, cert).unwrap();
        std::fs::write(&source.key, key).unwrap();
        source
    }

    /// Write-and-rename, as renewal tools do; also gives a new inode, so the
    /// change shows even within one tick of the coarse file-time clock.
    fn replace(path: &Path, contents: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, contents).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    fn same(a: &Arc<CertifiedKey>, b: &Arc<CertifiedKey>) -> bool {
        a.cert[0] == b.cert[0]
    }

    #[test]
    fn sni_exact_wildcard_and_default() {
        let dir = tempfile::tempdir().unwrap();
        let d = pair(dir.path(), "default", &["default.test"]);
        let a = pair(dir.path(), "a", &["a.test", "*.wild.test"]);
        let mut b = pair(dir.path(), "b", &["ignored.test"]);
        b.names = vec!["B.Test".into(), "*.b.test".into()];
        let (store, warnings) = CertStore::load(vec![d, a, b]).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let def = store.select(None);
        let a = store.select(Some("a.test"));
        let b = store.select(Some("b.test"));
        assert!(!same(&def, &a) && !same(&a, &b) && !same(&def, &b));
        assert!(same(&store.select(Some("default.test")), &def));
        assert!(same(&store.select(Some("x.wild.test")), &a));
        assert!(same(&store.select(Some("X.Wild.Test.")), &a));
        assert!(same(&store.select(Some("wild.test")), &def), "wildcard does not match the bare parent");
        assert!(same(&store.select(Some("y.x.wild.test")), &def), "wildcard matches one label only");
        assert!(same(&store.select(Some("z.b.test")), &b));
        assert!(same(&store.select(Some("ignored.test")), &def), "configured names replace the SANs");
        assert!(same(&store.select(Some("unknown.test")), &def));
    }

    #[test]
    fn invalid_configured_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = pair(dir.path(), "a", &["a.test"]);
        a.names = vec!["foo.*.test".into()];
        let e = CertStore::load(vec![a.clone()]).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "server name \"foo.*.test\" for certificate {}: a wildcard must be the whole first label, as in \
                 *.example.com",
                a.cert.display()
            )
        );
    }

    #[test]
    fn no_names_warning_and_empty_store() {
        let dir = tempfile::tempdir().unwrap();
        let d = pair(dir.path(), "d", &["d.test"]);
        let ip = pair(dir.path(), "ip", &["10.1.2.3"]);
        let (_, warnings) = CertStore::load(vec![d, ip.clone()]).unwrap();
        assert_eq!(warnings, [TlsWarning::NoNames { path: ip.cert }]);
        assert_eq!(
            CertStore::load(vec![]).unwrap_err().to_string(),
            "no certificate configured: a TLS listener needs at least one `cert` and `key`"
        );
    }

    #[test]
    fn key_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let a = pair(dir.path(), "a", &["a.test"]);
        let b = pair(dir.path(), "b", &["b.test"]);
        let mixed = CertSource::new(&a.cert, &b.key);
        assert_eq!(
            CertStore::load(vec![mixed]).unwrap_err().to_string(),
            format!(
                "private key {} does not match certificate {}: their public keys differ (the server certificate \
                 must come first in the certificate file)",
                b.key.display(),
                a.cert.display()
            )
        );
    }

    #[test]
    fn reload_swaps_and_failed_reload_keeps_old() {
        let dir = tempfile::tempdir().unwrap();
        let a = pair(dir.path(), "a", &["a.test"]);
        let (store, _) = CertStore::load(vec![a.clone()]).unwrap();
        let before = store.select(None);
        assert!(!store.files_changed());

        // A half-written renewal: new cert, old key.
        let (cert, key) = crate::tls::generate_self_signed(&["a.test".to_owned()]).unwrap();
        replace(&a.cert, &cert);
        assert!(store.files_changed());
        assert!(matches!(store.reload(), Err(TlsError::KeyMismatch { .. })));
        assert!(same(&store.select(None), &before), "failed reload keeps the old certificate");
        assert!(!store.files_changed(), "a failed attempt is not retried until the files change again");

        replace(&a.key, &key);
        assert!(store.files_changed());
        store.reload().unwrap();
        assert!(!same(&store.select(None), &before));
        assert!(!store.files_changed());

        std::fs::remove_file(&a.key).unwrap();
        assert!(store.files_changed());
    }
}
