//! Entry point: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

/// With the `mimalloc` feature, mimalloc replaces glibc's allocator. It is
/// off by default: on this workload it held more memory per idle connection
/// (41 KiB against glibc's 22 KiB, BENCHMARKS.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = sysmanage_node::cli::Cli::parse();
    sysmanage_node::app::main(cli)
}
