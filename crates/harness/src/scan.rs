//! `rseq-emu scan` (being written).

use std::process::ExitCode;

/// Arguments of `rseq-emu scan`.
#[derive(clap::Args)]
pub struct Args {
    /// Print JSON instead of diagnostics.
    #[arg(long)]
    json: bool,
    /// ELF files to scan.
    #[arg(required = true)]
    files: Vec<std::path::PathBuf>,
}

/// Run the scan.
pub fn run(_a: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    Err("scan is not implemented yet".into())
}
