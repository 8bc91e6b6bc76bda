//! `rseq-emu gdb-serve` (being written).

use std::process::ExitCode;

/// Arguments of `rseq-emu gdb-serve`.
#[derive(clap::Args)]
pub struct Args {}

/// Serve.
pub fn run(_a: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    Err("gdb-serve is not implemented yet".into())
}
