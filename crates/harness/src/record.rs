//! `rseq-emu record`: run x86_64 sequences natively under the kernel's rseq
//! and write what the CPU did as fixtures.

use clap::Args as ClapArgs;
use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `rseq-emu record`.
#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
}

/// Run `rseq-emu record`.
pub fn run(_args: Args) -> Result<ExitCode, Box<dyn Error>> {
    Err("not implemented yet".into())
}
