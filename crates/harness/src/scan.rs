//! `rseq-emu scan`: find and check every restartable sequence in ELF files.

use rseq_emu_harness::elf::{scan_file, FileReport, Options, Sequence};
use serde_json::{json, Value};
use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `rseq-emu scan`.
#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON document instead of diagnostics.
    #[arg(long)]
    json: bool,
    /// The registered signature (default: 0x53053053 on x86_64, 0xd428bc00 on aarch64).
    #[arg(long, value_parser = parse_hex_u32)]
    signature: Option<u32>,
    /// ELF files (executables, PIE executables, shared objects).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

fn parse_hex_u32(s: &str) -> Result<u32, String> {
    let t = s.trim_start_matches("0x").trim_start_matches("0X");
    u32::from_str_radix(t, 16).map_err(|e| format!("`{s}` is not a 32-bit hex value: {e}"))
}

fn hex(v: u64) -> String {
    format!("0x{v:x}")
}

/// The JSON form of one sequence (the contract of issue 2, plus extra fields).
pub fn sequence_json(s: &Sequence) -> Value {
    let cs = s.cs;
    let unsupported: Vec<Value> = s
        .listing
        .iter()
        .filter(|i| i.reachable)
        .filter_map(|i| {
            i.unsupported
                .as_ref()
                .map(|r| json!({"ip": hex(i.ip), "insn": i.text, "reason": r}))
        })
        .collect();
    json!({
        "descriptor": hex(s.descriptor),
        "source": s.source.section(),
        "version": cs.map(|c| c.version),
        "flags": cs.map(|c| c.flags),
        "start_ip": cs.map(|c| hex(c.start_ip)),
        "post_commit_ip": cs.and_then(|c| c.post_commit_ip()).map(hex),
        "post_commit_offset": cs.map(|c| hex(c.post_commit_offset)),
        "abort_ip": cs.map(|c| hex(c.abort_ip)),
        "signature": s.signature.map(|w| format!("0x{w:08x}")),
        "signature_form": s.signature_form,
        "valid": s.valid(),
        "kernel": match &s.kernel { Ok(()) => "accepts".to_string(), Err(e) => format!("SIGSEGV: {e}") },
        "problems": s.problems.iter().map(|p| p.message.clone()).collect::<Vec<_>>(),
        "emulable": s.emulable,
        "unsupported": unsupported,
        "exit_points": s.exit_points.iter().map(|&e| hex(e)).collect::<Vec<_>>(),
        "instructions": s.listing.iter().map(|i| json!({
            "ip": hex(i.ip),
            "bytes": i.bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "insn": i.text,
            "reachable": i.reachable,
        })).collect::<Vec<_>>(),
    })
}

/// The JSON form of one file.
pub fn file_json(r: &FileReport) -> Value {
    json!({
        "path": r.path,
        "arch": r.arch.name(),
        "elf_type": r.elf_type,
        "problems": r.problems,
        "sequences": r.sequences.iter().map(sequence_json).collect::<Vec<_>>(),
    })
}

fn print_human(r: &FileReport) {
    println!(
        "{}: {} ELF {}, {} restartable sequence{}",
        r.path,
        r.arch,
        r.elf_type,
        r.sequences.len(),
        if r.sequences.len() == 1 { "" } else { "s" }
    );
    for p in &r.problems {
        println!("{}: warning: {p}", r.path);
    }
    for s in &r.sequences {
        println!();
        let head = match s.cs {
            Some(cs) => format!(
                "descriptor 0x{:x} ({}): [0x{:x}, 0x{:x}) abort 0x{:x}",
                s.descriptor,
                s.source.section(),
                cs.start_ip,
                cs.start_ip.wrapping_add(cs.post_commit_offset),
                cs.abort_ip
            ),
            None => format!("descriptor 0x{:x} ({})", s.descriptor, s.source.section()),
        };
        let level = if s.valid() { "note" } else { "error" };
        println!("{}: {level}: {head}", r.path);
        if let (Some(w), Some(f)) = (s.signature, s.signature_form) {
            println!("  = signature 0x{w:08x} ({f})");
        }
        for i in &s.listing {
            let bytes: String = i.bytes.iter().map(|b| format!("{b:02x}")).collect();
            let mark = match (&i.unsupported, i.reachable) {
                (Some(r), true) => format!("   <-- not emulated: {r}"),
                (_, false) => "   (unreachable)".to_string(),
                _ => String::new(),
            };
            println!("  {:>12x}:  {bytes:<24} {}{mark}", i.ip, i.text);
        }
        if let Some(cs) = s.cs {
            if let Some(post) = cs.post_commit_ip() {
                println!("  {post:>12x}:  <post_commit_ip>");
            }
        }
        for e in &s.exit_points {
            println!("  = exit point 0x{e:x}");
        }
        for p in &s.problems {
            let lvl = if p.fatal { "error" } else { "warning" };
            println!("  = {lvl}: {}", p.message);
        }
        match s.emulable {
            Some(true) => println!("  = emulable: every reachable instruction is in the subset"),
            Some(false) => {
                println!("  = not emulable: the engine falls back to plain rseq for this section")
            }
            None => println!("  = emulable: unknown (no {} executor)", r.arch),
        }
    }
}

/// Run `rseq-emu scan`.
pub fn run(a: Args) -> Result<ExitCode, Box<dyn Error>> {
    let opts = Options {
        signature: a.signature,
    };
    let mut reports = Vec::new();
    for f in &a.files {
        let r = scan_file(f, &opts)?;
        if !a.json {
            print_human(&r);
            println!();
        }
        reports.push(r);
    }
    if a.json {
        let doc = json!({"files": reports.iter().map(file_json).collect::<Vec<_>>()});
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    Ok(ExitCode::SUCCESS)
}
