//! Shared helpers for the harness integration tests: building the test ELF
//! files from their sources with the real toolchains, and reading the
//! linker's symbol table with nm (the oracle for addresses).
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Directory with the test sources.
pub fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/elf")
}

/// Where built test binaries go.
pub fn out_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("elves");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The C compiler for an architecture.
pub fn cc(arch: &str) -> &'static str {
    match arch {
        "x86_64" => "gcc",
        "aarch64" => "aarch64-linux-gnu-gcc",
        _ => panic!("no compiler for {arch}"),
    }
}

/// nm for an architecture.
pub fn nm(arch: &str) -> &'static str {
    match arch {
        "x86_64" => "nm",
        "aarch64" => "aarch64-linux-gnu-nm",
        _ => panic!("no nm for {arch}"),
    }
}

/// The link variants every test source is built in.
pub const VARIANTS: [(&str, &[&str]); 3] = [
    ("nopie", &["-no-pie"]),
    ("pie", &["-pie", "-fPIE"]),
    ("so", &["-shared", "-fPIC"]),
];

/// Compile `src` (in tests/elf) for `arch` with `flags` into `name`.
pub fn build(arch: &str, src: &str, name: &str, flags: &[&str]) -> PathBuf {
    let out = out_dir().join(name);
    let compiler = cc(arch);
    let status = Command::new(compiler)
        .args(["-O1", "-o"])
        .arg(&out)
        .args(flags)
        .arg(src_dir().join(src))
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run {compiler} ({e}): run the README's test command, which installs gcc-aarch64-linux-gnu and libc6-dev-arm64-cross")
        });
    assert!(status.success(), "{compiler} failed on {src} {flags:?}");
    out
}

/// Every symbol's address, from nm.
pub fn symbols(arch: &str, file: &Path) -> HashMap<String, u64> {
    let out = Command::new(nm(arch))
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e})", nm(arch)));
    assert!(out.status.success(), "nm failed on {}", file.display());
    let mut m = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() == 3 {
            if let Ok(a) = u64::from_str_radix(f[0], 16) {
                m.insert(f[2].to_string(), a);
            }
        }
    }
    m
}

/// Run the `rseq-emu` binary.
pub fn rseq_emu(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rseq-emu"))
        .args(args)
        .output()
        .expect("run rseq-emu")
}

/// `0x…` as u64.
pub fn parse_hex(v: &serde_json::Value) -> u64 {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("not a hex string: {v}"));
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
}
