//! `sysmanage-node init [--dir DIR] [--force]`: writes a commented
//! `node.toml`, an admin token, a cluster secret and a self-signed
//! certificate, then says what to do next.
//!
//! Called by `app`. Writes files only under the chosen directory (and
//! creates `DIR/data` when `--dir` is given); never starts anything. Secrets
//! come from the operating system's CSPRNG (`getrandom`), are written with
//! mode 0600 from the start and are never printed.
//!
//! Without `--dir` the files go to `/etc/sysmanage-node` and the config
//! points `data_dir` at `/var/lib/sysmanage-node` (the packages create it).
//! With `--dir DIR`, `data_dir` is `DIR/data`, so that `init` and `run` work
//! for an unprivileged user in a scratch directory.
//!
//! Run as root where the `sysmanage-node` system user exists (after the
//! package is installed), the secrets and the data directory are given to
//! that user, because the service runs as it and must read them.

use std::path::{Path, PathBuf};

/// The template of the written `node.toml`; `@NAME@`-style placeholders are
/// replaced by TOML strings. Lines `#key = ...` are optional settings.
pub const CONFIG_TEMPLATE: &str = include_str!("../assets/init.toml");
/// Where `init` writes without `--dir`.
pub const SYSTEM_DIR: &str = "/etc/sysmanage-node";
/// `data_dir` without `--dir`.
pub const SYSTEM_DATA_DIR: &str = "/var/lib/sysmanage-node";
/// The system user the packages create and the systemd unit runs as.
pub const SERVICE_USER: &str = "sysmanage-node";
/// Bytes of randomness in the admin token and the cluster secret (written
/// as hex: 64 characters).
const SECRET_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{}: already exists; use --force to replace it, or --dir to write elsewhere", path.display())]
    Exists { path: PathBuf },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot get random bytes from the operating system: {0}")]
    Random(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// The files `init` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub admin_token: PathBuf,
    pub cluster_key: PathBuf,
    pub tls_dir: PathBuf,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub data_dir: PathBuf,
}

impl Layout {
    fn new(dir: &Path, data_dir: PathBuf) -> Layout {
        let tls_dir = dir.join("tls");
        Layout {
            dir: dir.to_path_buf(),
            config: dir.join("node.toml"),
            admin_token: dir.join("admin.token"),
            cluster_key: dir.join("cluster.key"),
            tls_cert: tls_dir.join("server.crt"),
            tls_key: tls_dir.join("server.key"),
            tls_dir,
            data_dir,
        }
    }

    /// `--dir DIR`: everything in `DIR`, the data in `DIR/data`.
    pub fn in_dir(dir: &Path) -> Layout {
        Layout::new(dir, dir.join("data"))
    }

    /// No `--dir`: `/etc/sysmanage-node` and `/var/lib/sysmanage-node`.
    pub fn system() -> Layout {
        Layout::new(Path::new(SYSTEM_DIR), PathBuf::from(SYSTEM_DATA_DIR))
    }

    /// Every file written, in the order they are written.
    pub fn files(&self) -> [&Path; 5] {
        [&self.admin_token, &self.cluster_key, &self.tls_key, &self.tls_cert, &self.config]
    }
}

/// What `init` did.
#[derive(Debug)]
pub struct InitReport {
    pub layout: Layout,
    pub node_name: String,
    /// Files handed to the service user (run as root with the user present).
    pub chowned_to: Option<String>,
}

/// The `node.toml` text for `layout`.
pub fn render_config(layout: &Layout, node_name: &str) -> String {
    let quote = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
    CONFIG_TEMPLATE
        .replace("@CONFIG@", &layout.config.display().to_string())
        .replace("@CLUSTER_KEY@", &quote(&layout.cluster_key))
        .replace("@ADVERTISE@", &toml::Value::String(format!("{}:7946", outbound_ip())).to_string())
        .replace("@NAME@", &toml::Value::String(node_name.to_string()).to_string())
        .replace("@DATA_DIR@", &quote(&layout.data_dir))
        .replace("@TOKEN_FILE@", &quote(&layout.admin_token))
        .replace("@CERT@", &quote(&layout.tls_cert))
        .replace("@KEY@", &quote(&layout.tls_key))
}

/// The address this host reaches other hosts from (the source address of
/// its default route), for `[cluster] advertise`; loopback without a route.
/// Connecting a UDP socket sends nothing.
fn outbound_ip() -> std::net::IpAddr {
    let probe = || -> std::io::Result<std::net::IpAddr> {
        let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
        s.connect("192.0.2.1:7946")?;
        Ok(s.local_addr()?.ip())
    };
    probe().ok().filter(|ip| !ip.is_unspecified()).unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]))
}

/// Writes the files of `layout`. Refuses, before writing anything, when one
/// exists and `force` is off.
pub fn init(layout: &Layout, force: bool) -> Result<InitReport, InitError> {
    for path in layout.files() {
        if path.exists() && !force {
            return Err(InitError::Exists { path: path.to_path_buf() });
        }
    }
    let node_name = crate::config::hostname();
    create_dir(&layout.dir)?;
    write_new(&layout.admin_token, format!("{}\n", random_hex()?).as_bytes(), 0o600, force)?;
    write_new(&layout.cluster_key, format!("{}\n", random_hex()?).as_bytes(), 0o600, force)?;
    if force {
        remove_if_present(&layout.tls_key)?;
        remove_if_present(&layout.tls_cert)?;
    }
    let hosts = vec![node_name.clone(), "localhost".to_string(), "127.0.0.1".to_string()];
    crate::tls::write_self_signed(&hosts, &layout.tls_dir)?;
    write_new(&layout.config, render_config(layout, &node_name).as_bytes(), 0o644, force)?;
    let data_dir_is_ours = layout.data_dir.starts_with(&layout.dir);
    if data_dir_is_ours {
        create_dir(&layout.data_dir)?;
    }
    let chowned_to = hand_to_service_user(layout, data_dir_is_ours)?;
    Ok(InitReport { layout: layout.clone(), node_name, chowned_to })
}

/// What to do next, for the terminal.
pub fn next_steps(report: &InitReport) -> String {
    let l = &report.layout;
    let config = l.config.display();
    let system = l.dir == Path::new(SYSTEM_DIR);
    let mut s = String::new();
    s.push_str(&format!("wrote {config} (node \"{}\")\n", report.node_name));
    s.push_str(&format!("wrote {} (admin API token, mode 0600)\n", l.admin_token.display()));
    s.push_str(&format!("wrote {} (cluster secret, mode 0600)\n", l.cluster_key.display()));
    s.push_str(&format!("wrote {} and {} (self-signed certificate)\n", l.tls_cert.display(), l.tls_key.display()));
    if l.data_dir.starts_with(&l.dir) {
        s.push_str(&format!("created {} (data_dir)\n", l.data_dir.display()));
    }
    if let Some(user) = &report.chowned_to {
        s.push_str(&format!("gave the secrets and the data directory to the user {user}\n"));
    }
    s.push_str("\nNext steps:\n");
    s.push_str(&format!("  1. Put your SysManage servers' addresses in the [[pools.servers]] entries of {config}.\n"));
    s.push_str(&format!("  2. Check it:  sysmanage-node check-config {config}\n"));
    if system {
        s.push_str("  3. Start it:  systemctl enable --now sysmanage-node   (or: systemctl reload sysmanage-node)\n");
    } else {
        s.push_str(&format!(
            "  3. Start it:  sysmanage-node run -c {config}\n     \
             (it listens on ports 80 and 443: run it as root, with CAP_NET_BIND_SERVICE, or change the binds)\n"
        ));
    }
    s.push_str(&format!(
        "  4. Watch it:  sysmanage-node ctl backends; write actions: sysmanage-node ctl --token-file {} ...\n",
        l.admin_token.display()
    ));
    s.push_str(&format!("  5. Replace {} with a certificate from your CA when you have one.\n", l.tls_cert.display()));
    s.push_str(&format!(
        "\nTo cluster several nodes: copy {} (the cluster secret) to every node, check \
         [cluster] advertise in {config}, then on every other node run\n  \
         sysmanage-node join <this node's advertise address> -c <its node.toml>\n",
        l.cluster_key.display()
    ));
    s
}

/// 32 random bytes as 64 lower-case hex characters.
pub fn random_hex() -> Result<String, InitError> {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| InitError::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn create_dir(dir: &Path) -> Result<(), InitError> {
    std::fs::create_dir_all(dir).map_err(|source| InitError::Write { path: dir.to_path_buf(), source })
}

fn remove_if_present(path: &Path) -> Result<(), InitError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(InitError::Write { path: path.to_path_buf(), source: e })
        }
        _ => Ok(()),
    }
}

/// Creates `path` with `mode` from the start (a secret is never readable by
/// others, not even briefly); with `replace`, an existing file is removed
/// first rather than truncated, so its old mode does not carry over.
fn write_new(path: &Path, contents: &[u8], mode: u32, replace: bool) -> Result<(), InitError> {
    if replace {
        remove_if_present(path)?;
    }
    crate::model::create_private_file(path, contents, mode).map_err(|source| match source.kind() {
        std::io::ErrorKind::AlreadyExists => InitError::Exists { path: path.to_path_buf() },
        _ => InitError::Write { path: path.to_path_buf(), source },
    })
}

/// As root, with the service user present: chown the secrets (and the data
/// directory `init` created) to it, so the service can read them.
#[cfg(unix)]
fn hand_to_service_user(layout: &Layout, data_dir: bool) -> Result<Option<String>, InitError> {
    use std::os::unix::fs::MetadataExt;
    let written_by_root = std::fs::metadata(&layout.config).map(|m| m.uid() == 0).unwrap_or(false);
    if !written_by_root {
        return Ok(None);
    }
    let Some((uid, gid)) = system_user(SERVICE_USER) else { return Ok(None) };
    let mut paths = vec![&layout.admin_token, &layout.cluster_key, &layout.tls_key];
    if data_dir {
        paths.push(&layout.data_dir);
    }
    for path in paths {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|source| InitError::Write { path: path.clone(), source })?;
    }
    Ok(Some(SERVICE_USER.to_string()))
}

#[cfg(not(unix))]
fn hand_to_service_user(_: &Layout, _: bool) -> Result<Option<String>, InitError> {
    Ok(None)
}

/// uid and gid of `name` from `/etc/passwd` (system users are local).
fn system_user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then_some(())?;
        let _password = fields.next()?;
        Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_hex_is_64_hex_chars_and_differs() {
        let a = random_hex().unwrap();
        let b = random_hex().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }

    #[test]
    fn rendered_config_quotes_paths() {
        let layout = Layout::in_dir(Path::new("/tmp/a \"b\""));
        let text = render_config(&layout, "lb1");
        let value: toml::Value = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(value["admin"]["token_file"].as_str(), Some("/tmp/a \"b\"/admin.token"));
        assert_eq!(value["node"]["data_dir"].as_str(), Some("/tmp/a \"b\"/data"));
        assert_eq!(value["listeners"][1]["tls"]["key"].as_str(), Some("/tmp/a \"b\"/tls/server.key"));
        assert!(!text.contains('@'), "a placeholder is left");
        assert_eq!(value["cluster"]["secret_file"].as_str(), Some("/tmp/a \"b\"/cluster.key"));
        let advertise = value["cluster"]["advertise"].as_str().unwrap();
        assert!(advertise.parse::<std::net::SocketAddr>().is_ok(), "{advertise}");
    }

    #[test]
    fn system_layout_uses_etc_and_var_lib() {
        let l = Layout::system();
        assert_eq!(l.config, Path::new("/etc/sysmanage-node/node.toml"));
        assert_eq!(l.data_dir, Path::new("/var/lib/sysmanage-node"));
        assert_eq!(l.tls_key, Path::new("/etc/sysmanage-node/tls/server.key"));
    }
}
