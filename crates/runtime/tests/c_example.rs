//! Builds crates/runtime/examples/c/percpu_addv.c against include/rseq_emu.h and the
//! staticlib, runs it, and checks its exact total.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn c_percpu_addv_example_is_exact() {
    let krate = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = krate.join("../..");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    let st = Command::new(env!("CARGO"))
        .args(["build", "-p", "rseq-emu-runtime", "--lib"])
        .current_dir(&root)
        .status()
        .expect("run cargo");
    assert!(st.success(), "building the staticlib failed");
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
    let run = Command::new(&exe).output().expect("run the example");
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "example failed: {text}");
    let total: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(
        total[0].strip_prefix("total="),
        total[1].strip_prefix("expected=")
    );
}
