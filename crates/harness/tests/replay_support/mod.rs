//! Helpers shared by the recorder and replay integration tests
//! (tests/record.rs, tests/record_aarch64.rs, tests/replay.rs): running the
//! `rseq-emu` binary, reading its JSON report, scratch folders.
#![allow(dead_code)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `rseq-emu` binary under test.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rseq-emu"))
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh, empty scratch folder for this test process.
pub fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rseq-emu-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// stdout then stderr of a finished command.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A seed that changes from run to run (reported by the tests that use it).
pub fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.as_secs())
        .unwrap_or(7)
}

/// `rseq-emu replay [--json] PATHS...`.
pub fn replay(paths: &[&Path], json: bool) -> Output {
    let mut c = bin();
    c.arg("replay");
    if json {
        c.arg("--json");
    }
    c.args(paths).output().expect("run rseq-emu replay")
}

/// `rseq-emu replay --json PATHS...`: the report (panics with the output
/// if it is not JSON) and the process output.
pub fn replay_json(paths: &[&Path]) -> (Value, Output) {
    let o = replay(paths, true);
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("replay --json printed no report ({e}): {}", text(&o)));
    (v, o)
}

/// Every fixture of a `replay --json` report that did not match, as JSON text.
pub fn not_ok(report: &Value) -> Vec<String> {
    report["fixtures"]
        .as_array()
        .expect("fixtures")
        .iter()
        .filter(|f| f["ok"] != true)
        .map(|f| f.to_string())
        .collect()
}

/// Every file of a folder: name -> contents.
pub fn files(d: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(d)
        .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
        .map(|e| {
            let p = e.expect("entry").path();
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read_to_string(&p).expect("read"))
        })
        .collect()
}
