//! Builds and runs the Rust percpu_addv example (crates/runtime/examples/
//! percpu_addv.rs) in `auto` and `always` mode; the total must be exactly
//! threads × adds.

use std::path::PathBuf;
use std::process::Command;

fn field(text: &str, name: &str) -> u64 {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name}= in {text:?}"))
}

#[test]
fn rust_percpu_addv_example_is_exact() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    let st = Command::new(env!("CARGO"))
        .args([
            "build",
            "-p",
            "rseq-emu-runtime",
            "--example",
            "percpu_addv",
        ])
        .current_dir(&root)
        .status()
        .expect("run cargo");
    assert!(st.success(), "building the example failed");
    let exe = target.join("debug/examples/percpu_addv");
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
        assert!(field(&text, "aborts") > 0, "{text}");
        eprintln!("{mode}: {text}");
    }
}
