//! With the `oracle` feature: build the aarch64 oracle harness
//! (`oracle/harness.c`) with aarch64-linux-gnu-gcc as a static program for
//! qemu-aarch64. A missing cross compiler does not fail the build; the
//! oracle then refuses to start with the compiler's error (see
//! `QemuOracle::spawn`), so a test that needs it fails with that message.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=oracle/harness.c");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RSEQ_EMU_AARCH64_CC");
    if std::env::var_os("CARGO_FEATURE_ORACLE").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR set by cargo"));
    let exe = out.join("rseq-emu-a64-harness");
    let cc =
        std::env::var("RSEQ_EMU_AARCH64_CC").unwrap_or_else(|_| "aarch64-linux-gnu-gcc".into());
    let result = Command::new(&cc)
        .args([
            "-static",
            "-O2",
            "-fno-stack-protector",
            "-Wall",
            "-Wextra",
            "-Werror",
            // Far above the case window and the small addresses random
            // register values hit: a stray access of a case cannot land in
            // the harness.
            "-Wl,-Ttext-segment=0x300000000000",
            "-o",
        ])
        .arg(&exe)
        .arg("oracle/harness.c")
        .output();
    let error = match result {
        Ok(o) if o.status.success() => String::new(),
        Ok(o) => format!(
            "{cc} failed to build oracle/harness.c: {}",
            String::from_utf8_lossy(&o.stderr).replace('\n', " ")
        ),
        Err(e) => format!(
            "cannot run {cc} ({e}); install gcc-aarch64-linux-gnu and libc6-dev-arm64-cross"
        ),
    };
    if !error.is_empty() {
        println!("cargo:warning={error}");
    }
    println!("cargo:rustc-env=RSEQ_EMU_A64_HARNESS={}", exe.display());
    println!("cargo:rustc-env=RSEQ_EMU_A64_HARNESS_ERROR={error}");
}
