//! `rseq-emu`: find, check, emulate, record and replay restartable sequences.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod bench;
mod fixture;
mod gdbserve;
mod livelock;
mod record;
mod replay;
mod scan;
mod singlestep;
mod stress;

/// Keep Linux restartable sequences making progress by emulating them.
#[derive(Parser)]
#[command(name = "rseq-emu", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Find and check every rseq critical section in ELF files.
    Scan(scan::Args),
    /// Single-step a program under ptrace, completing rseq critical sections by emulation.
    Singlestep(singlestep::Args),
    /// Serve a debugger (the gdb extension) over stdio: emulate the current critical section.
    GdbServe(gdbserve::Args),
    /// Per-CPU counters and lists: native, auto and always-emulated threads under a signal storm.
    Stress(stress::Args),
    /// A long critical section under a timer-signal storm, with and without the engine.
    Livelock(livelock::Args),
    /// Native sequence vs syscall vs engine, side by side.
    Bench(bench::Args),
    /// Replay fixtures through the emulator and compare with the recorded machine.
    Replay(replay::Args),
    /// Record x86_64 fixtures by running sequences natively under the kernel's rseq.
    Record(record::Args),
}

fn main() -> ExitCode {
    // SAFETY: restoring the default SIGPIPE disposition before any thread
    // exists; `rseq-emu scan ... | head` then ends quietly like other tools.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Scan(a) => scan::run(a),
        Cmd::Singlestep(a) => singlestep::run(a),
        Cmd::GdbServe(a) => gdbserve::run(a),
        Cmd::Stress(a) => stress::run(a),
        Cmd::Livelock(a) => livelock::run(a),
        Cmd::Bench(a) => bench::run(a),
        Cmd::Replay(a) => replay::run(a),
        Cmd::Record(a) => record::run(a),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rseq-emu: error: {e}");
            ExitCode::from(2)
        }
    }
}
