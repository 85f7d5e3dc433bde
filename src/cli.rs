//! Command-line definitions (clap). The contract is in DESIGN.md §5.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "sysmanage-node", version, about = "One-binary load balancer for SysManage", propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a node (the embedded default config without -c).
    ///
    /// Runs until SIGTERM or SIGINT (then drains), reloads on SIGHUP. Without
    /// -c it uses the configuration embedded in the binary: one listener on
    /// 127.0.0.1:8000, a pool "api" with one server at 127.0.0.1:8080, a
    /// /health route answered by the node, a WebSocket route for
    /// /api/agent/connect, everything else proxied to the pool, and the admin
    /// API on 127.0.0.1:9100. If the configuration is invalid, every error is
    /// printed with file, line, column and key, and the node does not start.
    Run {
        /// Config file (e.g. /etc/sysmanage-node/node.toml); without it, the
        /// default config embedded in the binary.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Start a node and join the cluster through PEER (host:port).
    Join {
        /// A member of the cluster, host:port of its cluster listener.
        peer: String,
        /// Config file, as for run.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Validate a config file, print a summary, exit 0 (valid) or 1.
    ///
    /// Prints a summary of listeners, pools, servers and routes to standard
    /// output; on error, every error to standard error followed by a count.
    /// Relative static_dir, token_file and certificate paths are resolved
    /// against the folder of FILE and must exist.
    CheckConfig {
        /// Defaults to /etc/sysmanage-node/node.toml.
        file: Option<PathBuf>,
    },
    /// Live terminal dashboard over a node's admin API.
    ///
    /// Polled once a second: panes Overview, Backends, Cluster, Sessions and
    /// Events (keys 1 to 5). Keys: arrows or j/k select, d drain, m
    /// maintenance, e enable, w set weight, r reload (each asks for
    /// confirmation and needs the admin token), / filter (on Sessions: look a
    /// key up), ? help, q quit. Needs a terminal of at least 80x24; an
    /// unreachable node is reported and retried.
    Top {
        /// The node's admin API.
        #[arg(long, value_name = "URL", default_value = DEFAULT_ADMIN_URL)]
        admin: String,
        /// File holding the admin token, for drain, maintenance, enable,
        /// weight and reload (default: /etc/sysmanage-node/admin.token if readable).
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
    },
    /// Check a node's health: exit 0 healthy, 1 degraded, 2 unhealthy or unreachable, 3 draining.
    Health {
        /// The detailed health endpoint.
        #[arg(long, default_value = "http://127.0.0.1:9100/api/health/detailed")]
        url: String,
        /// Further attempts, one second apart, when the node cannot be reached.
        #[arg(long, default_value_t = 2)]
        retries: u32,
        /// Seconds to wait for each attempt.
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
    },
    /// Operate a running node through its admin API.
    Ctl {
        /// The node's admin API.
        #[arg(long, global = true, default_value = DEFAULT_ADMIN_URL)]
        admin: String,
        /// File holding the admin token, needed for write actions (default
        /// /etc/sysmanage-node/admin.token when it exists).
        #[arg(long, global = true, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// Print the API's JSON instead of a table.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        action: CtlAction,
    },
    /// Upgrade a running node in place to the binary now installed.
    ///
    /// Sends SIGUSR2 to the node named by data_dir's PID file and waits for
    /// the outcome. The node starts the binary at the path it was started
    /// from, with the same arguments, and hands it its listening sockets,
    /// session store and cluster place; once the new process accepts, the
    /// old one stops accepting, finishes its requests, keeps its WebSocket
    /// tunnels up to limits.upgrade_drain_timeout, then closes the rest
    /// spread over limits.shed_over, and exits. No connection is refused.
    /// If the new process cannot start (a config it rejects, say), it exits
    /// and the old one keeps serving. Exit status: 0 the new process
    /// serves, 1 the upgrade failed (the node serves as before), 3 no
    /// running node was found.
    Upgrade {
        /// The running node's config file (for data_dir); default
        /// /etc/sysmanage-node/node.toml.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// How long to wait for the new process to serve.
        #[arg(long, value_name = "DURATION", default_value = "90s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Write a config, cluster secret, admin token and certificate.
    ///
    /// Writes node.toml (every key documented inline), admin.token and
    /// cluster.key (mode 0600, random) and tls/server.crt and tls/server.key
    /// (self-signed), then prints what to do next.
    Init {
        /// Directory to write into (default /etc/sysmanage-node); data_dir
        /// becomes DIR/data, so this works without root.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Replace files that already exist.
        #[arg(long)]
        force: bool,
    },
    /// Certificate tools.
    Cert {
        #[command(subcommand)]
        action: CertAction,
    },
    /// Three nodes and sample backends on loopback, then `top`.
    ///
    /// Starts three sample backends that answer like SysManage, three nodes
    /// in front of them and light traffic including agents that hold
    /// WebSockets, all on 127.0.0.1 with files in a temporary directory that
    /// is removed at exit. Ctrl-C stops everything.
    Demo {
        /// Print a summary every few seconds instead of the dashboard (for
        /// scripts and CI).
        #[arg(long)]
        no_tui: bool,
        /// Stop by itself after this many seconds (default: run until Ctrl-C).
        #[arg(long, value_name = "SECONDS")]
        duration: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertAction {
    /// Write a self-signed certificate (server.crt) and key (server.key, mode 0600).
    ///
    /// ECDSA P-256, valid for 365 days (from an hour ago, for clock skew),
    /// for every H given: host names and IP addresses become subjectAltNames,
    /// the first is also the common name. If either file exists, nothing is
    /// written. On success it prints the tls line to put in a listener.
    SelfSigned {
        /// Host names or IP addresses the certificate is for (repeatable).
        #[arg(long = "host", value_name = "H", required = true)]
        hosts: Vec<String>,
        /// Directory to write into (created if missing; existing files are not overwritten).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum CtlAction {
    /// Node, totals, pools and recent events.
    Status,
    /// Servers of every pool with state, weight, load and checks.
    Backends,
    /// Cluster members: state, address, generation, last heard, load, version.
    Members,
    /// Sticky sessions: counts per server, or one key's record.
    Sessions {
        /// Show the record of this key.
        #[arg(long)]
        key: Option<String>,
    },
    /// Send no new requests to a server, except those of sticky sessions
    /// pinned to it; open requests and tunnels finish.
    Drain { pool: String, server: String },
    /// Send no requests at all to a server and close its WebSocket tunnels
    /// (agents reconnect elsewhere); its weight ramps up over slow_start when
    /// it is enabled again.
    Maintenance { pool: String, server: String },
    /// Put a drained or maintained server back.
    Enable { pool: String, server: String },
    /// Set a server's weight (1..256) until the next reload.
    Weight { pool: String, server: String, weight: u32 },
    /// Re-read and apply the config file; print warnings for changes that
    /// need a restart.
    Reload,
    /// Drain the whole node before upgrading it: health answers 503
    /// draining, clients are told to close their connections, and WebSocket
    /// tunnels close spread over the window so that agents reconnect
    /// through the other nodes.
    DrainNode {
        /// Shed the tunnels over this window, e.g. 90s (default: the
        /// config's limits.shed_over, 3m).
        #[arg(long, value_name = "DURATION")]
        over: Option<String>,
    },
    /// End draining: health answers healthy again, and tunnels not shed yet
    /// stay open.
    UndrainNode,
}

pub const DEFAULT_CONFIG_PATH: &str = "/etc/sysmanage-node/node.toml";
pub const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:9100";
pub const DEFAULT_TOKEN_FILE: &str = "/etc/sysmanage-node/admin.token";
