//! In-place upgrades: a running node hands its listening sockets, its
//! session store and its place in the cluster to a new process started from
//! the binary now installed, then finishes its own connections and exits.
//! No listening socket is ever closed, so no client is refused.
//!
//! The choice, against the anchors: nginx's `USR2` re-executes the binary
//! with the sockets inherited through an environment variable, and the
//! operator then stops the old master by hand; HAProxy's master-worker mode
//! passes listeners over a Unix socket (`expose-fd listeners`, `-x`) and
//! the old workers finish with `-sf`; Envoy's hot restart pairs the two
//! processes over a Unix socket and shared memory; Sozu's `upgrade` command
//! does it in one step. This node takes the one-step route with HAProxy's
//! mechanism: `sysmanage-node upgrade` (or `SIGUSR2` sent to the node)
//! makes the running node start the binary at the path it was started from,
//! with the same arguments; the new process connects to a Unix socket in
//! `data_dir` (only the child the node started is answered, checked with
//! `SO_PEERCRED`) and receives every socket with `SCM_RIGHTS`: the
//! listeners, the admin API's, and the cluster's UDP (gossip) and TCP
//! (catch-up) sockets. Sockets come as file descriptors over the socket,
//! not inherited by number, so that no unsafe code takes ownership of an
//! inherited descriptor.
//!
//! The hand-over, in order ([`predecessor`] is the old side, [`successor`]
//! the new):
//! 1. The old node sends the sockets. The new process loads and checks its
//!    configuration, loads certificates and binds any new listener; an error
//!    is sent back, the new process exits, and the old one never stopped
//!    serving (`upgrade` prints the error).
//! 2. The new process asks for the session store: the old one commits what
//!    is queued and closes the file (redb holds an exclusive lock), and from
//!    then on forwards every session record it writes over the socket; the
//!    new process opens the file and applies the forwarded records.
//! 3. In a cluster, the new process asks for the cluster: the old one stops
//!    gossip without announcing a leave, and the new one starts it on the
//!    same sockets as a new generation of the same node. Peers list the
//!    older generation no more once the newer one is live (no false
//!    `dead`).
//! 4. The new process accepts (in a cluster, once it knows the cluster's
//!    state, as any start) and says it is ready. The old one stops
//!    accepting and tells systemd the new main PID. It finishes its
//!    requests, tells keep-alive clients to close, keeps its WebSocket
//!    tunnels until they close or `limits.upgrade_drain_timeout` passes,
//!    then closes the rest spread over `limits.shed_over`, and exits.
//!
//! The outcome is written to `data_dir/upgrade.status` for `upgrade`.

pub mod notify;
pub mod predecessor;
pub mod successor;
pub mod wire;

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The environment variable that tells a process it was started by an
/// upgrade: the path of the old node's hand-over socket.
pub const SOCKET_ENV: &str = "SYSMANAGE_NODE_UPGRADE_SOCKET";

/// What one handed-over socket is, with the address the config gives it:
/// the new process takes a socket only for the same role and address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Role {
    /// A proxy listener, by name.
    Listener { name: String, bind: SocketAddr },
    /// The admin API.
    Admin { bind: SocketAddr },
    /// The cluster's gossip (UDP).
    Gossip { bind: SocketAddr },
    /// The cluster's catch-up API (TCP, same port).
    ClusterApi { bind: SocketAddr },
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Listener { name, bind } => write!(f, "listener {name} ({bind})"),
            Role::Admin { bind } => write!(f, "admin API ({bind})"),
            Role::Gossip { bind } => write!(f, "cluster gossip ({bind}/udp)"),
            Role::ClusterApi { bind } => write!(f, "cluster API ({bind}/tcp)"),
        }
    }
}

/// A socket a node can hand over: its own copy of the descriptor, kept for
/// the life of the process.
#[derive(Debug)]
pub struct Handed {
    pub role: Role,
    pub fd: OwnedFd,
}

impl Handed {
    /// A copy of `socket`'s descriptor.
    pub fn of(role: Role, socket: &impl AsFd) -> std::io::Result<Handed> {
        Ok(Handed { role, fd: socket.as_fd().try_clone_to_owned()? })
    }
}

/// Sockets received from the old node, taken one by one as the new process
/// binds. What is not taken (a listener removed from the config) is closed
/// when this is dropped; the old node keeps serving on it until it retires.
#[derive(Debug, Default)]
pub struct Inherited {
    sockets: Vec<Handed>,
}

impl Inherited {
    pub fn new(sockets: Vec<Handed>) -> Inherited {
        Inherited { sockets }
    }

    /// The socket for `role`, if the old node had one.
    pub fn take(&mut self, role: &Role) -> Option<OwnedFd> {
        let i = self.sockets.iter().position(|h| &h.role == role)?;
        Some(self.sockets.swap_remove(i).fd)
    }

    /// A listening TCP socket for `role`, set non-blocking for tokio.
    pub fn take_tcp(&mut self, role: &Role) -> std::io::Result<Option<std::net::TcpListener>> {
        let Some(fd) = self.take(role) else { return Ok(None) };
        let l = std::net::TcpListener::from(fd);
        l.set_nonblocking(true)?;
        tracing::info!("{role}: socket taken over from the previous process");
        Ok(Some(l))
    }

    /// A bound UDP socket for `role` (blocking mode is left to the user).
    pub fn take_udp(&mut self, role: &Role) -> Option<std::net::UdpSocket> {
        let fd = self.take(role)?;
        tracing::info!("{role}: socket taken over from the previous process");
        Some(std::net::UdpSocket::from(fd))
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// The roles not taken.
    pub fn roles(&self) -> Vec<Role> {
        self.sockets.iter().map(|h| h.role.clone()).collect()
    }
}

/// Where a running node writes its PID (`upgrade` finds the node by it).
pub fn pid_file(data_dir: &Path) -> PathBuf {
    data_dir.join("running.pid")
}

/// The hand-over socket's path.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("upgrade.sock")
}

/// Where the old node writes how its last upgrade went.
pub fn status_file(data_dir: &Path) -> PathBuf {
    data_dir.join("upgrade.status")
}

/// Writes this process's PID to `data_dir`'s PID file.
pub fn write_pid_file(data_dir: &Path) {
    let file = pid_file(data_dir);
    if let Err(e) =
        std::fs::create_dir_all(data_dir).and_then(|()| write_atomic(&file, &format!("{}\n", std::process::id())))
    {
        tracing::warn!(file = %file.display(), "cannot write the PID file (`sysmanage-node upgrade` needs it): {e}");
    }
}

/// Removes the PID file if it still names this process.
pub fn remove_pid_file(data_dir: &Path) {
    let file = pid_file(data_dir);
    if read_pid(&file).ok() == Some(std::process::id()) {
        let _ = std::fs::remove_file(&file);
    }
}

pub fn read_pid(file: &Path) -> std::io::Result<u32> {
    let text = std::fs::read_to_string(file)?;
    text.trim().parse().map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: not a PID: {:?}", file.display(), text.trim()),
        )
    })
}

/// How an upgrade went, as the old node saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The node that was asked to upgrade.
    pub old_pid: u32,
    pub new_pid: Option<u32>,
    /// `started`, `ready` (the new process serves) or `failed`.
    pub state: String,
    /// Why it failed, or the new version.
    pub message: String,
    /// When this was written, Unix milliseconds.
    pub at_ms: u64,
}

pub fn write_status(data_dir: &Path, status: &Status) {
    let file = status_file(data_dir);
    let text = serde_json::to_string(status).unwrap_or_default();
    if let Err(e) = write_atomic(&file, &(text + "\n")) {
        tracing::warn!(file = %file.display(), "cannot write the upgrade status: {e}");
    }
}

pub fn read_status(data_dir: &Path) -> Option<Status> {
    let text = std::fs::read_to_string(status_file(data_dir)).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_atomic(file: &Path, text: &str) -> std::io::Result<()> {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, file)
}

/// `sysmanage-node upgrade`: signals the node that runs with `config`'s
/// data_dir and waits for the outcome in its status file.
pub fn request(config: &Path, timeout: std::time::Duration) -> std::process::ExitCode {
    use std::process::ExitCode;
    let cfg = match crate::config::load_file(config) {
        Ok(cfg) => cfg,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("sysmanage-node upgrade: {} does not load; the running node was not touched", config.display());
            return ExitCode::FAILURE;
        }
    };
    let data_dir = &cfg.node.data_dir;
    let file = pid_file(data_dir);
    let pid = match read_pid(&file) {
        Ok(pid) => pid,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("sysmanage-node upgrade: no running node: {} does not exist", file.display());
            return ExitCode::from(3);
        }
        Err(e) => {
            eprintln!("sysmanage-node upgrade: cannot read {}: {e}", file.display());
            return ExitCode::from(3);
        }
    };
    let alive = |pid: u32| Path::new(&format!("/proc/{pid}")).exists();
    let Some(target) = rustix::process::Pid::from_raw(pid as i32).filter(|_| alive(pid)) else {
        eprintln!("sysmanage-node upgrade: no running node: process {pid} (from {}) is gone", file.display());
        return ExitCode::from(3);
    };
    let asked_at = crate::sessions::unix_now_ms();
    if let Err(e) = rustix::process::kill_process(target, rustix::process::Signal::USR2) {
        eprintln!("sysmanage-node upgrade: cannot signal process {pid}: {e} (run as the node's user or root)");
        return ExitCode::FAILURE;
    }
    println!(
        "asked node {pid} to upgrade in place; waiting for the new process (at most {})",
        humantime::format_duration(timeout)
    );
    let start = std::time::Instant::now();
    while start.elapsed() < timeout {
        std::thread::sleep(std::time::Duration::from_millis(100));
        if let Some(s) = read_status(data_dir).filter(|s| s.old_pid == pid && s.at_ms >= asked_at) {
            match s.state.as_str() {
                "ready" => {
                    println!(
                        "upgraded: process {} (version {}) serves; process {pid} finishes its connections and exits",
                        s.new_pid.unwrap_or(0),
                        s.message
                    );
                    return ExitCode::SUCCESS;
                }
                "failed" => {
                    eprintln!("sysmanage-node upgrade: failed: {}", s.message);
                    eprintln!("process {pid} keeps serving as before");
                    return ExitCode::FAILURE;
                }
                _ => {}
            }
        }
        if !alive(pid) {
            eprintln!("sysmanage-node upgrade: process {pid} exited without reporting an outcome");
            return ExitCode::FAILURE;
        }
    }
    eprintln!(
        "sysmanage-node upgrade: no outcome within {}; see the node's log (journalctl -u sysmanage-node)",
        humantime::format_duration(timeout)
    );
    ExitCode::FAILURE
}

/// Errors of an upgrade, as the old node reports them.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("an upgrade is already in progress")]
    InProgress,
    #[error("cannot start {binary}: {error}")]
    Spawn { binary: String, error: std::io::Error },
    #[error("hand-over socket {path}: {error}")]
    Socket { path: String, error: std::io::Error },
    #[error("the new process failed: {0}")]
    Failed(String),
    #[error("the new process exited before it was ready ({0}); its log says why")]
    Exited(String),
    #[error("the new process was not ready within {0:?}; it was stopped")]
    Timeout(std::time::Duration),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inherited_sockets_are_taken_by_role_and_address_only() {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let bind: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let role = Role::Listener { name: "http".into(), bind };
        let mut inherited = Inherited::new(vec![Handed::of(role.clone(), &a).unwrap()]);
        // Same name, other address; other name, same address: not taken.
        assert!(inherited
            .take(&Role::Listener { name: "http".into(), bind: "127.0.0.1:1".parse().unwrap() })
            .is_none());
        assert!(inherited.take(&Role::Listener { name: "https".into(), bind }).is_none());
        assert!(inherited.take(&Role::Admin { bind }).is_none());
        let l = inherited.take_tcp(&role).unwrap().expect("taken");
        assert_eq!(l.local_addr().unwrap(), a.local_addr().unwrap());
        assert!(inherited.is_empty());
        assert!(inherited.take(&role).is_none(), "a socket is taken once");
    }

    #[test]
    fn the_pid_file_is_removed_only_by_its_own_process() {
        let dir = tempfile::tempdir().unwrap();
        write_pid_file(dir.path());
        assert_eq!(read_pid(&pid_file(dir.path())).unwrap(), std::process::id());
        std::fs::write(pid_file(dir.path()), "1\n").unwrap();
        remove_pid_file(dir.path());
        assert_eq!(read_pid(&pid_file(dir.path())).unwrap(), 1, "another process's PID file stays");
        write_pid_file(dir.path());
        remove_pid_file(dir.path());
        assert!(!pid_file(dir.path()).exists());
        std::fs::write(pid_file(dir.path()), "nope").unwrap();
        let e = read_pid(&pid_file(dir.path())).unwrap_err();
        assert!(e.to_string().contains("not a PID: \"nope\""), "{e}");
    }

    #[test]
    fn roles_read_back_as_written() {
        let roles = vec![
            Role::Listener { name: "https".into(), bind: "0.0.0.0:443".parse().unwrap() },
            Role::Admin { bind: "127.0.0.1:9100".parse().unwrap() },
            Role::Gossip { bind: "10.0.0.1:7946".parse().unwrap() },
            Role::ClusterApi { bind: "10.0.0.1:7946".parse().unwrap() },
        ];
        let text = serde_json::to_string(&roles).unwrap();
        assert_eq!(serde_json::from_str::<Vec<Role>>(&text).unwrap(), roles);
        assert!(text.contains(r#"{"kind":"listener","name":"https","bind":"0.0.0.0:443"}"#), "{text}");
    }
}
