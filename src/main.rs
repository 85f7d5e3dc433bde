//! Entry point: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: faster small allocations than glibc on the request path, and it
/// returns freed pages to the OS, so memory held by connections that closed
/// or went idle does not stay resident (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = sysmanage_node::cli::Cli::parse();
    sysmanage_node::app::main(cli)
}
