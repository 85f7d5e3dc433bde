//! The cluster secret: reading `[cluster] secret_file`, checking it, and
//! making a new one for `sysmanage-node init`.
//!
//! Every node of a cluster holds the same secret; the gossip transport
//! derives its datagram key from it ([`super::transport::ClusterKey`]) and the
//! catch-up endpoint authenticates with it. This module only reads and writes
//! files: it never logs the secret and its `Debug` output is redacted.
//!
//! # What a valid secret is
//!
//! The secret is the file's bytes with leading and trailing ASCII whitespace
//! removed (so a trailing newline from an editor does not change the key).
//! Those bytes are used as they are, without hex decoding, as the input key
//! material of HKDF, so any format works as long as every node has the same
//! bytes. The rules:
//!
//! - at least [`MIN_SECRET_LEN`] (32) bytes: 32 hex characters (128 bits, the
//!   floor) or 32 arbitrary bytes; `init` writes 64 hex characters (256 bits);
//! - at most [`MAX_SECRET_LEN`] bytes: a larger file is almost certainly the
//!   wrong file;
//! - at least [`MIN_DISTINCT_BYTES`] distinct byte values, which rejects
//!   placeholders such as 32 × `0` or `changeme` repeated. (A random 32-hex
//!   secret fails this with probability below 10⁻⁷.)
//!
//! A file that group or others may read is accepted with a warning: the
//! secret is as good as public on that host.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use thiserror::Error;
use tracing::warn;

/// Fewest bytes a secret may have after trimming.
pub const MIN_SECRET_LEN: usize = 32;
/// Most bytes a secret file may have (before trimming).
pub const MAX_SECRET_LEN: usize = 4096;
/// Fewest distinct byte values a secret must contain.
pub const MIN_DISTINCT_BYTES: usize = 8;
/// Length of [`generate_secret`]'s output: 32 random bytes as hex.
pub const GENERATED_SECRET_HEX_LEN: usize = 64;

#[derive(Debug, Error)]
pub enum SecretError {
    #[error("cannot read cluster secret file {path}: {source}; create one with `sysmanage-node init`")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write cluster secret file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cluster secret file {path} already exists; pass --force to replace it (every node must then get the new secret)")]
    Exists { path: PathBuf },
    #[error("cluster secret{} is empty; put at least {MIN_SECRET_LEN} random bytes in it (`sysmanage-node init` writes one)", at(.path))]
    Empty { path: Option<PathBuf> },
    #[error("cluster secret{} is too short: {len} bytes after trimming whitespace, at least {MIN_SECRET_LEN} are required (e.g. 64 hex characters from `sysmanage-node init`)", at(.path))]
    TooShort { path: Option<PathBuf>, len: usize },
    #[error("cluster secret{} is too long: {len} bytes, at most {MAX_SECRET_LEN}; is this the right file?", at(.path))]
    TooLong { path: Option<PathBuf>, len: usize },
    #[error("cluster secret{} looks like a placeholder: only {distinct} distinct byte values, at least {MIN_DISTINCT_BYTES} are required; generate one with `sysmanage-node init`", at(.path))]
    LowEntropy { path: Option<PathBuf>, distinct: usize },
    #[error("the system random number generator failed: {0}")]
    Random(String),
}

fn at(path: &Option<PathBuf>) -> String {
    path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default()
}

/// The validated secret bytes. Cloning is cheap enough (a few dozen bytes);
/// `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret(Vec<u8>);

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterSecret({} bytes, redacted)", self.0.len())
    }
}

impl ClusterSecret {
    /// Validates raw secret bytes (whitespace around them is trimmed) by the
    /// rules in the module documentation.
    pub fn from_bytes(raw: &[u8]) -> Result<Self, SecretError> {
        Self::check(raw, None)
    }

    fn check(raw: &[u8], path: Option<&Path>) -> Result<Self, SecretError> {
        let path = || path.map(Path::to_path_buf);
        if raw.len() > MAX_SECRET_LEN {
            return Err(SecretError::TooLong { path: path(), len: raw.len() });
        }
        let trimmed = raw.trim_ascii();
        if trimmed.is_empty() {
            return Err(SecretError::Empty { path: path() });
        }
        if trimmed.len() < MIN_SECRET_LEN {
            return Err(SecretError::TooShort { path: path(), len: trimmed.len() });
        }
        let mut seen = [false; 256];
        for &b in trimmed {
            seen[usize::from(b)] = true;
        }
        let distinct = seen.iter().filter(|s| **s).count();
        if distinct < MIN_DISTINCT_BYTES {
            return Err(SecretError::LowEntropy { path: path(), distinct });
        }
        Ok(ClusterSecret(trimmed.to_vec()))
    }

    /// The bytes keys are derived from.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Reads and validates the secret file. Warns (once per call) when group or
/// others may read it.
pub fn load_secret(path: &Path) -> Result<ClusterSecret, SecretError> {
    let read_err = |source| SecretError::Read { path: path.to_path_buf(), source };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if meta.len() > MAX_SECRET_LEN as u64 {
        return Err(SecretError::TooLong { path: Some(path.to_path_buf()), len: meta.len() as usize });
    }
    if let Some(mode) = file_mode(&meta) {
        if mode_exposes_secret(mode) {
            warn!(
                path = %path.display(),
                mode = format_args!("{:o}", mode & 0o777),
                "cluster secret file is readable by group or others; run `chmod 600 {}`",
                path.display()
            );
        }
    }
    let raw = std::fs::read(path).map_err(read_err)?;
    ClusterSecret::check(&raw, Some(path))
}

#[cfg(unix)]
fn file_mode(meta: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    Some(meta.permissions().mode())
}

#[cfg(not(unix))]
fn file_mode(_meta: &std::fs::Metadata) -> Option<u32> {
    None
}

/// Whether a Unix file mode lets group or others read (or write) the file.
pub fn mode_exposes_secret(mode: u32) -> bool {
    mode & 0o077 != 0
}

/// A new secret: 32 bytes from the operating system's CSPRNG, as 64
/// lowercase hex characters.
pub fn generate_secret() -> Result<String, SecretError> {
    let mut bytes = [0u8; GENERATED_SECRET_HEX_LEN / 2];
    getrandom::fill(&mut bytes).map_err(|e| SecretError::Random(e.to_string()))?;
    let mut out = String::with_capacity(GENERATED_SECRET_HEX_LEN);
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    Ok(out)
}

/// Writes `secret` (plus a newline) to `path` with mode 0600, refusing to
/// replace an existing file unless `force`. The file is created with the
/// final mode, so the secret is never readable by others, not even briefly.
pub fn write_secret_file(path: &Path, secret: &str, force: bool) -> Result<(), SecretError> {
    let write_err = |source| SecretError::Write { path: path.to_path_buf(), source };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            SecretError::Exists { path: path.to_path_buf() }
        } else {
            write_err(e)
        }
    })?;
    #[cfg(unix)]
    if force {
        // An existing file keeps its old mode when truncated: tighten it.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(write_err)?;
    }
    file.write_all(secret.as_bytes()).and_then(|()| file.write_all(b"\n")).map_err(write_err)?;
    file.sync_all().map_err(write_err)
}

/// Constant-time comparison (length aside), so that a token (the admin
/// API's bearer token, the catch-up endpoint's secret) cannot be guessed
/// byte by byte from response times.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn constant_time_compare() {
        assert!(super::ct_eq(b"secret", b"secret"));
        assert!(!super::ct_eq(b"secret", b"secreT"));
        assert!(!super::ct_eq(b"secret", b"secret2"));
    }

    use super::*;

    #[test]
    fn generated_secret_is_64_hex_and_valid() {
        let s = generate_secret().unwrap();
        assert_eq!(s.len(), GENERATED_SECRET_HEX_LEN);
        assert!(s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        ClusterSecret::from_bytes(s.as_bytes()).unwrap();
        assert_ne!(s, generate_secret().unwrap());
    }

    #[test]
    fn minimum_is_32_bytes_after_trimming() {
        let ok = "0123456789abcdef0123456789abcdef";
        assert_eq!(ok.len(), 32);
        let s = ClusterSecret::from_bytes(format!("  {ok}\n").as_bytes()).unwrap();
        assert_eq!(s.as_bytes(), ok.as_bytes());
        assert!(matches!(
            ClusterSecret::from_bytes(format!("{}\n", &ok[..31]).as_bytes()),
            Err(SecretError::TooShort { len: 31, .. })
        ));
        // 32 raw (binary) bytes are accepted too.
        let raw: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(37).wrapping_add(128)).collect();
        ClusterSecret::from_bytes(&raw).unwrap();
    }

    #[test]
    fn empty_placeholder_and_huge_are_rejected() {
        assert!(matches!(ClusterSecret::from_bytes(b""), Err(SecretError::Empty { .. })));
        assert!(matches!(ClusterSecret::from_bytes(b" \n\t\n"), Err(SecretError::Empty { .. })));
        assert!(matches!(ClusterSecret::from_bytes(&[b'0'; 64]), Err(SecretError::LowEntropy { distinct: 1, .. })));
        assert!(matches!(
            ClusterSecret::from_bytes(b"changemechangemechangemechangeme"),
            Err(SecretError::LowEntropy { .. })
        ));
        assert!(matches!(ClusterSecret::from_bytes(&[b'a'; 5000]), Err(SecretError::TooLong { .. })));
    }

    #[test]
    fn debug_is_redacted() {
        let s = ClusterSecret::from_bytes(b"0123456789abcdef0123456789abcdef").unwrap();
        let d = format!("{s:?}");
        assert!(!d.contains("0123"), "{d}");
    }

    #[test]
    fn mode_check() {
        assert!(!mode_exposes_secret(0o100600));
        assert!(!mode_exposes_secret(0o400));
        assert!(mode_exposes_secret(0o640));
        assert!(mode_exposes_secret(0o604));
        assert!(mode_exposes_secret(0o644));
    }

    #[cfg(unix)]
    #[test]
    fn write_then_load_with_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        let secret = generate_secret().unwrap();
        write_secret_file(&path, &secret, false).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_secret(&path).unwrap().as_bytes(), secret.as_bytes());
        assert!(matches!(write_secret_file(&path, &secret, false), Err(SecretError::Exists { .. })));

        // --force replaces the content and tightens a loose mode.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let other = generate_secret().unwrap();
        write_secret_file(&path, &other, true).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load_secret(&path).unwrap().as_bytes(), other.as_bytes());
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.key");
        let e = load_secret(&missing).unwrap_err().to_string();
        assert!(e.contains("nope.key") && e.contains("init"), "{e}");
        let short = dir.path().join("short.key");
        std::fs::write(&short, "abc\n").unwrap();
        let e = load_secret(&short).unwrap_err().to_string();
        assert!(e.contains("short.key") && e.contains("too short"), "{e}");
    }
}
