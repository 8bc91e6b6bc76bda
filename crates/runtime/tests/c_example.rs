//! Builds crates/runtime/examples/c/percpu_addv.c against include/rseq_emu.h
//! and the staticlib, runs it in `auto` and `always` mode under its signal
//! storm, and checks that the total is exactly threads × adds.

mod common;

use std::path::PathBuf;
use std::process::Command;

#[test]
fn c_percpu_addv_example_is_exact() {
    let krate = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let (root, target) = common::root_and_target();
    common::cargo_build(&root, &["--lib"]);
    let lib = target.join("debug/librseq_emu_runtime.a");
    assert!(lib.exists(), "missing {}", lib.display());
    let exe = target.join("debug/percpu_addv_c");
    let out = Command::new("gcc")
        .arg("-O2")
        .arg("-I")
        .arg(krate.join("include"))
        .arg(krate.join("examples/c/percpu_addv.c"))
        .arg(&lib)
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&exe)
        .output()
        .expect("gcc is required for this test (apt-get install gcc)");
    assert!(
        out.status.success(),
        "gcc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    common::check_percpu_addv(&exe);
}
