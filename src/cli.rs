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
    Run {
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Start a node and join the cluster through PEER (host:port).
    Join {
        peer: String,
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Validate a config file, print a summary, exit 0 (valid) or 1.
    CheckConfig {
        /// Defaults to /etc/sysmanage-node/node.toml.
        file: Option<PathBuf>,
    },
    /// Live terminal dashboard.
    Top {
        #[arg(long, value_name = "URL")]
        admin: Option<String>,
    },
    /// Check a node's health: exit 0 healthy, 1 degraded, 2 unhealthy or unreachable.
    Health {
        #[arg(long)]
        url: Option<String>,
        #[arg(long)]
        retries: Option<u32>,
        #[arg(long)]
        timeout: Option<f64>,
    },
    /// Operate a running node through its admin API.
    Ctl {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Write a config, cluster secret, admin token and certificate.
    Init {
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long)]
        force: bool,
    },
    /// Certificate tools.
    Cert {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Three nodes and sample backends on loopback, then `top`.
    Demo,
}

pub const DEFAULT_CONFIG_PATH: &str = "/etc/sysmanage-node/node.toml";
