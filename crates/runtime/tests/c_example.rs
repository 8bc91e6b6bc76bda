//! Builds crates/runtime/examples/c/percpu_addv.c against include/rseq_emu.h
//! and the staticlib, runs it in `auto` and `always` mode under its signal
//! storm, and checks that the total is exactly threads × adds.

use std::path::PathBuf;
use std::process::Command;

fn field(text: &str, name: &str) -> u64 {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name}= in {text:?}"))
}

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
    for mode in ["auto", "always"] {
        let run = Command::new(&exe)
            .env("RSEQ_EMU_MODE", mode)
            .output()
            .expect("run the example");
        let text = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success(),
            "example failed in {mode} mode: {text} {}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert_eq!(field(&text, "total"), field(&text, "expected"), "{text}");
        assert!(field(&text, "expected") > 0);
        assert!(
            field(&text, "aborts") > 0,
            "the cross-CPU adds reach the abort stub: {text}"
        );
        eprintln!("{mode}: {text}");
    }
}
