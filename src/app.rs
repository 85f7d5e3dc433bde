//! The command line's dispatcher: `run` and `join` start the node
//! ([`crate::runtime`]); every other command is a tool that runs once
//! (`check-config`, `init`, `cert`, `demo`) or talks to a running node
//! (`top`, `ctl`, `health`).

use std::path::Path;
use std::process::ExitCode;

use crate::cli::{CertAction, Cli, Command, DEFAULT_CONFIG_PATH};
use crate::config;
use crate::proxy;

pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run { config } => exit_on_error(crate::runtime::run(config.as_deref(), None)),
        Command::CheckConfig { file } => check_config(file.as_deref().unwrap_or(Path::new(DEFAULT_CONFIG_PATH))),
        Command::Join { peer, config } => exit_on_error(crate::runtime::run(config.as_deref(), Some(&peer))),
        Command::Top { admin, token_file } => crate::tui::run(&admin, token_file.as_deref()),
        Command::Health { url, retries, timeout } => block_on(crate::ctl::run_health(&url, retries, timeout)),
        Command::Ctl { admin, token_file, json, action } => {
            block_on(crate::ctl::run_ctl(&admin, token_file.as_deref(), json, action))
        }
        Command::Upgrade { config, timeout } => {
            crate::upgrade::request(config.as_deref().unwrap_or(Path::new(DEFAULT_CONFIG_PATH)), timeout)
        }
        Command::Init { dir, force } => init(dir.as_deref(), force),
        Command::Cert { action: CertAction::SelfSigned { hosts, out } } => {
            match crate::tls::write_self_signed(&hosts, &out) {
                Ok((cert, key)) => {
                    println!("wrote {} and {}", cert.display(), key.display());
                    println!(
                        "use them in a listener: tls = {{ cert = \"{}\", key = \"{}\" }}",
                        cert.display(),
                        key.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("sysmanage-node cert: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo { no_tui, duration } => {
            exit_on_error(crate::demo::run(crate::demo::DemoOptions { no_tui, duration }))
        }
    }
}

/// Runs a client command on a small single-threaded runtime.
fn block_on(f: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(f),
        Err(e) => {
            eprintln!("sysmanage-node: cannot start the async runtime: {e}");
            ExitCode::from(2)
        }
    }
}

/// `sysmanage-node init`: exit 0 when everything was written, 1 otherwise.
fn init(dir: Option<&Path>, force: bool) -> ExitCode {
    let layout = match dir {
        Some(d) => {
            // Absolute paths in the config, so it works from any directory.
            let d = std::path::absolute(d).unwrap_or_else(|_| d.to_path_buf());
            crate::init::Layout::in_dir(&d)
        }
        None => crate::init::Layout::system(),
    };
    match crate::init::init(&layout, force) {
        Ok(report) => {
            print!("{}", crate::init::next_steps(&report));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sysmanage-node init: {e}");
            ExitCode::FAILURE
        }
    }
}

fn exit_on_error(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sysmanage-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: &Path) -> ExitCode {
    match config::load_file(path) {
        Ok(cfg) => {
            // Certificates are loaded too, as `run` would.
            let mut failed = false;
            for (listener, result) in proxy::inbound::listener::check_tls(&cfg) {
                match result {
                    Ok(warnings) => {
                        for w in warnings {
                            eprintln!("{}: listener {listener}: TLS warning: {w}", cfg.source);
                        }
                    }
                    Err(e) => {
                        eprintln!("{}: listener {listener}: TLS: {e}", cfg.source);
                        failed = true;
                    }
                }
            }
            if failed {
                return ExitCode::FAILURE;
            }
            print!("{}", cfg.summary());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: {} error(s)", path.display(), errors.0.len());
            ExitCode::FAILURE
        }
    }
}
