//! The processes of the soak, on loopback: three sample backends (this
//! program re-run as `soak backend NAME ADDR`, so that a backend can be
//! killed with SIGKILL and restarted on its address) and three nodes
//! (`sysmanage-node run`) at 127.0.0.2-4, joined in one cluster, each with a
//! plain and a TLS listener. Every process is started here and stopped by
//! its own PID.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const SECRET: &str = "5e3f1c9a7be2d54f08a6c1e9b27d3f5a8c0b4e6d2f1a9c8b7e5d3c2b1a0f9e8d";
pub const ADMIN_TOKEN: &str = "soak-admin-token";

pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    child: Mutex<Option<Child>>,
}

pub struct Node {
    pub name: String,
    pub ip: IpAddr,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    pub gossip: SocketAddr,
    pub dir: PathBuf,
    pub config: PathBuf,
    child: Mutex<Option<Child>>,
}

pub struct Lab {
    pub dir: PathBuf,
    pub bin: PathBuf,
    pub backends: Vec<Backend>,
    pub nodes: Vec<Node>,
    pub fault_file: PathBuf,
    /// The api pool's weights, per backend, as the configs say now.
    pub weights: Mutex<Vec<u32>>,
}

/// A port free on `ip` for TCP and UDP alike (gossip uses both).
fn free_port(ip: IpAddr) -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind((ip, 0)).expect("bind a loopback port");
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind((ip, port)).is_ok() {
            return port;
        }
    }
}

impl Lab {
    pub fn new(dir: &Path, bin: &Path) -> Lab {
        std::fs::create_dir_all(dir).unwrap();
        let secret = dir.join("cluster.key");
        write_private(&secret, &format!("{SECRET}\n"));
        write_private(&dir.join("admin.token"), &format!("{ADMIN_TOKEN}\n"));
        let fault_file = dir.join("faults");
        std::fs::write(&fault_file, "").unwrap();
        let lo = IpAddr::from([127, 0, 0, 1]);
        let backends = (1..=3)
            .map(|i| Backend {
                name: format!("s{i}"),
                addr: SocketAddr::new(lo, free_port(lo)),
                child: Mutex::new(None),
            })
            .collect();
        let nodes: Vec<Node> = (1..=3u8)
            .map(|i| {
                let ip = IpAddr::from([127, 0, 0, i + 1]);
                let name = format!("n{i}");
                let ndir = dir.join(&name);
                std::fs::create_dir_all(ndir.join("tls")).unwrap();
                Node {
                    http: SocketAddr::new(ip, free_port(ip)),
                    https: SocketAddr::new(ip, free_port(ip)),
                    admin: SocketAddr::new(ip, free_port(ip)),
                    gossip: SocketAddr::new(ip, free_port(ip)),
                    config: ndir.join("node.toml"),
                    dir: ndir,
                    name,
                    ip,
                    child: Mutex::new(None),
                }
            })
            .collect();
        Lab {
            dir: dir.to_path_buf(),
            bin: bin.to_path_buf(),
            backends,
            nodes,
            fault_file,
            weights: Mutex::new(vec![1; 3]),
        }
    }

    // ---- backends ----

    pub fn start_backend(&self, i: usize) {
        let b = &self.backends[i];
        let exe = std::env::current_exe().expect("the soak's own path");
        let log = std::fs::File::create(self.dir.join(format!("{}.log", b.name))).unwrap();
        let child = Command::new(exe)
            .args(["backend", &b.name, &b.addr.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("a backend starts");
        *b.child.lock().unwrap() = Some(child);
    }

    /// SIGKILL, and reaped.
    pub fn kill_backend(&self, i: usize) {
        if let Some(mut c) = self.backends[i].child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until the backend accepts connections (a restarted one may
    /// need its port back).
    pub async fn backend_ready(&self, i: usize) -> bool {
        wait_connect(self.backends[i].addr, Duration::from_secs(10)).await
    }

    // ---- nodes ----

    pub fn write_configs(&self) {
        let weights = self.weights.lock().unwrap().clone();
        for (i, n) in self.nodes.iter().enumerate() {
            let seeds: Vec<String> = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, o)| format!("\"{}\"", o.gossip))
                .collect();
            let servers = |with_weights: bool| -> String {
                let items: Vec<String> = self
                    .backends
                    .iter()
                    .zip(&weights)
                    .map(|(b, w)| {
                        let weight = if with_weights { format!(", weight = {w}") } else { String::new() };
                        format!("{{ name = \"{}\", addr = \"{}\"{weight} }}", b.name, b.addr)
                    })
                    .collect();
                format!("servers = [{}]", items.join(", "))
            };
            let checks =
                "checks = [{ path = \"/api/health\", interval = \"1s\", timeout = \"500ms\", fall = 2, rise = 2 }]";
            let toml = format!(
                r#"# Written by the soak (examples/soak): the recommended SysManage setup
# (init.toml) on loopback, three nodes in one cluster.
[node]
name = "{name}"
data_dir = "{data}"

[log]
level = "info"
access_log = false

[admin]
listen = "{admin}"
token_file = "{token}"

[cluster]
listen = "{gossip}"
seeds = [{seeds}]
secret_file = "{secret}"

[[listeners]]
name = "http"
bind = "{http}"

[[listeners]]
name = "https"
bind = "{https}"
tls = {{ cert = "{cert}", key = "{key}" }}

[[pools]]
name = "api"
balance = "primary"
{checks}
{api_servers}

[[pools]]
name = "agents"
balance = "primary"
affinity = {{ key = "query:token", extract = "sysmanage-token:hostname" }}
{checks}
{agent_servers}

[[routes]]
name = "agent-ws"
path = "/api/agent/connect"
websocket = true
pool = "agents"

[[routes]]
name = "default"
path_prefix = "/"
pool = "api"
"#,
                name = n.name,
                data = n.dir.join("data").display(),
                admin = n.admin,
                token = self.dir.join("admin.token").display(),
                gossip = n.gossip,
                seeds = seeds.join(", "),
                secret = self.dir.join("cluster.key").display(),
                http = n.http,
                https = n.https,
                cert = n.cert().display(),
                key = n.key().display(),
                api_servers = servers(true),
                agent_servers = servers(false),
            );
            std::fs::write(&n.config, toml).unwrap();
        }
    }

    pub fn start_node(&self, i: usize) {
        let n = &self.nodes[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(n.log()).unwrap();
        let child = Command::new(&self.bin)
            .args(["run", "-c"])
            .arg(&n.config)
            .env("SYSMANAGE_NODE_FAULT_FILE", &self.fault_file)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("sysmanage-node starts");
        *n.child.lock().unwrap() = Some(child);
    }

    pub fn kill_node(&self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then SIGKILL after 15 s.
    pub fn stop_node(&self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.lock().unwrap().take() {
            signal(c.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn node_pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.lock().unwrap().as_ref().map(Child::id)
    }

    pub fn signal_node(&self, i: usize, sig: &str) {
        if let Some(pid) = self.node_pid(i) {
            signal(pid, sig);
        }
    }

    /// Waits until the node's admin API answers its health.
    pub async fn node_ready(&self, i: usize) -> bool {
        let admin = self.nodes[i].admin;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if crate::agents::http_get(admin, "/api/health", Duration::from_secs(1)).await.is_ok_and(|(s, _)| s == 200)
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    pub fn stop_all(&self) {
        for i in 0..self.nodes.len() {
            self.stop_node(i);
        }
        for i in 0..self.backends.len() {
            self.kill_backend(i);
        }
    }
}

impl Node {
    pub fn cert(&self) -> PathBuf {
        self.dir.join("tls/server.crt")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.join("tls/server.key")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    /// A new self-signed certificate for this node's address, written over
    /// the listener's files (key, then certificate, each by rename); its PEM.
    pub fn rotate_cert(&self) -> String {
        let ck = rcgen::generate_simple_self_signed(vec![self.ip.to_string()]).expect("a certificate");
        let (cert, key) = (ck.cert.pem(), ck.signing_key.serialize_pem());
        let tmp = self.dir.join("tls/new");
        write_private(&tmp, &key);
        std::fs::rename(&tmp, self.key()).unwrap();
        std::fs::write(&tmp, &cert).unwrap();
        std::fs::rename(&tmp, self.cert()).unwrap();
        cert
    }
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status();
}

pub async fn wait_connect(addr: SocketAddr, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Resident memory (KiB) and open descriptors of a process.
pub fn resources(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((rss, fds))
}
