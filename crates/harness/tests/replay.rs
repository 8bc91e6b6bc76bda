//! `rseq-emu replay` end to end: the bundled fixtures match, malformed
//! fixtures give clear errors, altered expectations are reported field by field.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rseq-emu"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rseq-emu-replay-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn replay(args: &[&Path], json: bool) -> Output {
    let mut c = bin();
    c.arg("replay");
    if json {
        c.arg("--json");
    }
    c.args(args).output().expect("run rseq-emu")
}

/// A bundled fixture to mutate.
fn sample(name: &str) -> Value {
    let p = repo().join("fixtures/x86_64").join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).expect("bundled fixture")).expect("json")
}

#[test]
fn every_bundled_fixture_matches() {
    let mut dirs = vec![repo().join("fixtures/x86_64")];
    let a64 = repo().join("fixtures/aarch64");
    if a64.is_dir() {
        dirs.push(a64);
    }
    let refs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    let o = replay(&refs, true);
    let out = text(&o);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    let total = v["total"].as_u64().expect("total");
    let bad: Vec<String> = v["fixtures"]
        .as_array()
        .expect("fixtures")
        .iter()
        .filter(|f| f["ok"] != true)
        .map(|f| f.to_string())
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {total} fixtures differ:\n{}",
        bad.len(),
        bad.join("\n")
    );
    assert!(o.status.success(), "{out}");
    let x86 = std::fs::read_dir(repo().join("fixtures/x86_64"))
        .expect("fixtures/x86_64")
        .count();
    assert!(x86 >= 200, "only {x86} x86_64 fixtures");
    assert_eq!(v["passed"].as_u64(), Some(total));
}

/// Write `v` as a fixture, replay it, expect a malformed-fixture error
/// naming the file and `field`.
fn expect_error(tag: &str, v: &Value, field: &str) {
    let d = tmpdir(tag);
    let p = d.join(format!("{tag}.json"));
    std::fs::write(&p, serde_json::to_string_pretty(v).expect("ser")).expect("write");
    let o = replay(&[&p], false);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{tag}: exit status: {out}");
    assert!(!out.contains("panicked"), "{tag}: {out}");
    assert!(out.contains("ERROR"), "{tag}: {out}");
    assert!(
        out.contains(&format!("{tag}.json")),
        "{tag}: file not named: {out}"
    );
    assert!(out.contains(field), "{tag}: field {field} not named: {out}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn malformed_fixtures_are_clear_errors() {
    let base = sample("cmpstore-001.json");

    let mut v = base.clone();
    v["memory"][0]["bytes"] = Value::String("zz".repeat(8));
    expect_error("bad-hex", &v, "memory[0].bytes");

    let mut v = base.clone();
    v["entry"]["regs"]["rax"] = Value::String("12".into());
    expect_error("bad-reg-hex", &v, "entry.regs.rax");

    let mut v = base.clone();
    v.as_object_mut().expect("object").remove("expect");
    expect_error("missing-expect", &v, "expect");

    let mut v = base.clone();
    v["entry"]["regs"]
        .as_object_mut()
        .expect("regs")
        .remove("r13");
    expect_error("missing-reg", &v, "entry.regs.r13");

    let mut v = base.clone();
    v["arch"] = Value::String("mips".into());
    expect_error("wrong-arch", &v, "arch");

    let mut v = base.clone();
    v["arch"] = Value::String("aarch64".into());
    expect_error(
        "other-arch",
        &v,
        "entry.regs.fs_base: unknown register for aarch64",
    );

    let mut v = base.clone();
    let data = v["memory"][0].clone();
    let mut dup = data.clone();
    let a = u64::from_str_radix(
        data["address"]
            .as_str()
            .expect("addr")
            .trim_start_matches("0x"),
        16,
    )
    .expect("hex");
    dup["address"] = Value::String(format!("0x{:x}", a + 0x10));
    v["memory"].as_array_mut().expect("memory").push(dup);
    expect_error("overlap", &v, "memory[3]");

    let mut v = base.clone();
    let code = v["code"]["bytes"].as_str().expect("code").to_string();
    v["code"]["bytes"] = Value::String(code[..8].into());
    expect_error("short-code", &v, "code: [0x");

    let mut v = base.clone();
    v["typo"] = Value::Bool(true);
    expect_error("unknown-key", &v, "typo");

    let mut v = base.clone();
    v["expect"]["outcome"] = Value::String("aborted".into());
    expect_error("contradiction", &v, "expect.outcome");

    let d = tmpdir("not-json");
    let p = d.join("not-json.json");
    std::fs::write(&p, "{ not json").expect("write");
    let o = replay(&[&p], false);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("not-json.json"), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn an_altered_expectation_is_a_mismatch_naming_the_field() {
    let mut v = sample("addv-001.json");
    let rax = v["expect"]["regs"]["rax"]
        .as_str()
        .expect("rax")
        .to_string();
    let n = u64::from_str_radix(rax.trim_start_matches("0x"), 16).expect("hex");
    v["expect"]["regs"]["rax"] = Value::String(format!("0x{:x}", n ^ 0x10));
    let mem = v["expect"]["memory"][0]["bytes"]
        .as_str()
        .expect("bytes")
        .to_string();
    let flipped = if mem.starts_with('0') { "1" } else { "0" };
    v["expect"]["memory"][0]["bytes"] = Value::String(format!("{flipped}{}", &mem[1..]));
    let d = tmpdir("altered");
    let p = d.join("altered.json");
    std::fs::write(&p, serde_json::to_string(&v).expect("ser")).expect("write");

    let o = replay(&[&p], false);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains(&format!("regs.rax: expected 0x{:x} got 0x{n:x}", n ^ 0x10)),
        "{out}"
    );
    assert!(out.contains("memory[0x60000000]: expected"), "{out}");

    let o = replay(&[&p], true);
    let j: Value = serde_json::from_slice(&o.stdout).expect("json report");
    let mm = j["fixtures"][0]["mismatches"]
        .as_array()
        .expect("mismatches");
    let fields: Vec<&str> = mm.iter().filter_map(|m| m["field"].as_str()).collect();
    assert_eq!(fields, ["regs.rax", "memory[0x60000000]"], "{j}");
    assert_eq!(j["mismatched"], 1);
    assert_eq!(o.status.code(), Some(1));
    let _ = std::fs::remove_dir_all(&d);
}

/// The `elf` form of `code`: the bundled cmpstore-001 rebuilt as an ELF file
/// (code at its link address, the descriptor in .data) replays the same.
#[test]
fn an_elf_referenced_fixture_replays() {
    let mut v = sample("cmpstore-001.json");
    let code = v["code"]["bytes"].as_str().expect("code").to_string();
    let bytes: Vec<String> = (0..code.len() / 2)
        .map(|i| format!("0x{}", &code[2 * i..2 * i + 2]))
        .collect();
    let d = &v["descriptor"];
    let asm = format!(
        ".text\n.globl _start\n_start:\n.byte {}\n.data\n.balign 32\n.long 0,0\n.quad {},{},{}\n",
        bytes.join(","),
        d["start_ip"].as_str().expect("start"),
        d["post_commit_offset"].as_str().expect("off"),
        d["abort_ip"].as_str().expect("abort")
    );
    let desc = d["address"].as_str().expect("address").to_string();
    let text_addr = v["code"]["address"].as_str().expect("address").to_string();
    let dir = tmpdir("elf");
    std::fs::write(dir.join("seq.s"), asm).expect("write");
    let o = Command::new("gcc")
        .args(["-nostdlib", "-static", "-no-pie", "-Wl,--build-id=none"])
        .arg(format!("-Wl,-Ttext={text_addr}"))
        .arg(format!("-Wl,-Tdata={desc}"))
        .args(["-o", "seq.elf", "seq.s"])
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| panic!("this test needs gcc: {e}"));
    assert!(o.status.success(), "gcc: {}", text(&o));
    let obj = v.as_object_mut().expect("object");
    obj.remove("code");
    obj.remove("descriptor");
    obj.insert(
        "elf".into(),
        serde_json::json!({ "path": "seq.elf", "descriptor": desc }),
    );
    let p = dir.join("elf.json");
    std::fs::write(&p, serde_json::to_string(&v).expect("ser")).expect("write");
    let o = replay(&[&p], false);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("1 fixtures: 1 match"), "{}", text(&o));

    // A descriptor address outside the ELF file is a clear error.
    v["elf"]["descriptor"] = Value::String("0x12345000".into());
    std::fs::write(&p, serde_json::to_string(&v).expect("ser")).expect("write");
    let o = replay(&[&p], false);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("elf.descriptor"), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&dir);
}
