//! Entry point: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = sysmanage_node::cli::Cli::parse();
    sysmanage_node::app::main(cli)
}
