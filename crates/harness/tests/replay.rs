//! `rseq-emu replay` end to end: the bundled fixtures match, malformed
//! fixtures give clear errors, altered expectations are reported field by field.

mod replay_support;

use replay_support::{not_ok, replay, replay_json, repo, text};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn tmpdir(tag: &str) -> PathBuf {
    replay_support::tmpdir(&format!("replay-{tag}"))
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
    let (v, o) = replay_json(&refs);
    let out = text(&o);
    let total = v["total"].as_u64().expect("total");
    let bad = not_ok(&v);
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
    // One line: `ERROR <file>: <field>: <what is wrong>`.
    let line = out
        .lines()
        .find(|l| l.starts_with("ERROR "))
        .unwrap_or_else(|| panic!("{tag}: no ERROR line: {out}"));
    assert!(
        line.contains(&format!("{tag}.json: ")),
        "{tag}: file not named: {out}"
    );
    assert!(
        line.contains(field),
        "{tag}: field {field} not named: {out}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// `v` with the value at JSON pointer `at` set to `value` (a new key is
/// added to its object, `/-` appends to an array), or removed when `value`
/// is `None`.
fn edit(v: &Value, at: &str, value: Option<Value>) -> Value {
    let mut v = v.clone();
    let (parent, key) = at.rsplit_once('/').expect("pointer");
    let p = v
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("{at}: no such value"));
    match (p, value) {
        (Value::Object(o), Some(x)) => {
            o.insert(key.into(), x);
        }
        (Value::Object(o), None) => {
            o.remove(key).unwrap_or_else(|| panic!("{at}: no such key"));
        }
        (Value::Array(a), Some(x)) if key == "-" => a.push(x),
        (Value::Array(a), Some(x)) => a[key.parse::<usize>().expect("index")] = x,
        (p, x) => panic!("{at}: cannot set {x:?} in {p}"),
    }
    v
}

#[test]
fn malformed_fixtures_are_clear_errors() {
    let base = sample("cmpstore-001.json");
    let bytes = |s: &str| Some(Value::from(s));
    let code = base["code"]["bytes"].as_str().expect("code");
    let data = base["memory"][0]["address"].as_str().expect("addr");
    let data = u64::from_str_radix(data.trim_start_matches("0x"), 16).expect("hex");
    // A fourth region 0x10 bytes into the first.
    let mut overlap = base["memory"][0].clone();
    overlap["address"] = Value::String(format!("0x{:x}", data + 0x10));
    // (file tag, JSON pointer, new value or None to remove, what the one
    // ERROR line must say after the file name).
    let cases: Vec<(&str, &str, Option<Value>, &str)> = vec![
        (
            "bad-hex",
            "/memory/0/bytes",
            bytes(&"zz".repeat(8)),
            "memory[0].bytes",
        ),
        (
            "bad-reg-hex",
            "/entry/regs/rax",
            bytes("12"),
            "entry.regs.rax",
        ),
        ("missing-expect", "/expect", None, "expect"),
        ("missing-reg", "/entry/regs/r13", None, "entry.regs.r13"),
        ("wrong-arch", "/arch", bytes("mips"), "arch"),
        (
            "other-arch",
            "/arch",
            bytes("aarch64"),
            "entry.regs.fs_base: unknown register for aarch64",
        ),
        ("overlap", "/memory/-", Some(overlap), "memory[3]"),
        ("short-code", "/code/bytes", bytes(&code[..8]), "code: [0x"),
        ("unknown-key", "/typo", Some(Value::Bool(true)), "typo"),
        (
            "contradiction",
            "/expect/outcome",
            bytes("aborted"),
            "expect.outcome",
        ),
        // Type errors name the field by its JSON path.
        (
            "wrong-type",
            "/memory/0/writable",
            bytes("yes"),
            "memory[0].writable: invalid fixture JSON: ",
        ),
        (
            "negative-cpu",
            "/cpu",
            Some(Value::from(-1)),
            "json: cpu: invalid fixture JSON: ",
        ),
        (
            "number-reg",
            "/entry/regs/rax",
            Some(Value::from(5)),
            "entry.regs.rax: invalid fixture JSON: ",
        ),
        (
            "missing-nested",
            "/descriptor/abort_ip",
            None,
            "descriptor.abort_ip: invalid fixture JSON: missing field",
        ),
        (
            "unknown-nested",
            "/expect/memory/1/extra",
            Some(Value::from(1)),
            "expect.memory[1].extra: invalid fixture JSON: unknown field",
        ),
        (
            "wrong-version",
            "/version",
            Some(Value::from(2)),
            "version: is 2, this rseq-emu reads version 1",
        ),
        (
            "wrong-format",
            "/format",
            bytes("rseq-emu-fixtures"),
            "format: is",
        ),
        (
            "odd-hex",
            "/code/bytes",
            bytes("4889c"),
            "code.bytes: byte string has an odd number",
        ),
        (
            "area-outside",
            "/rseq_area",
            bytes("0x7f3a"),
            "rseq_area: 0x7f3a",
        ),
        // Addresses at the top of the address space: a clear error, no
        // arithmetic overflow.
        (
            "code-wraps",
            "/code/address",
            bytes("0xfffffffffffffffe"),
            "code",
        ),
        (
            "area-wraps",
            "/rseq_area",
            bytes("0xfffffffffffffff0"),
            "rseq_area: 0xfffffffffffffff0",
        ),
        (
            "region-wraps",
            "/memory/0/address",
            bytes("0xfffffffffffffff0"),
            "memory[0]",
        ),
    ];
    for (tag, at, value, field) in cases {
        expect_error(tag, &edit(&base, at, value), field);
    }

    let d = tmpdir("not-json");
    let p = d.join("not-json.json");
    std::fs::write(&p, "{ not json").expect("write");
    let o = replay(&[&p], false);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let line = text(&o)
        .lines()
        .find(|l| l.starts_with("ERROR "))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no ERROR line: {}", text(&o)));
    assert!(
        line.contains("not-json.json: invalid fixture JSON: "),
        "{line}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// Deterministic corruptions of one fixture: every leaf replaced by hostile
/// values, every key removed, every array emptied, the text truncated and
/// bytes overwritten. Returns (tag, file contents).
fn corruptions(name: &str, v: &Value) -> Vec<(String, String)> {
    const STRINGS: [&str; 10] = [
        "",
        "0x",
        "0x0",
        "0xfffffffffffffff0",
        "0xffffffffffffffff",
        "0x100000000000000000000000000000000",
        "zz",
        "0xzz",
        "\u{e4}\u{e4}",
        "x86_64",
    ];
    fn walk(v: &Value, path: &mut Vec<Value>, out: &mut Vec<(Vec<Value>, Option<Value>)>) {
        let hostile: Vec<Value> = match v {
            Value::String(_) => STRINGS.iter().map(|s| Value::from(*s)).collect(),
            Value::Number(_) => vec![
                Value::from(0),
                Value::from(2),
                Value::from(u64::from(u32::MAX)),
                Value::from(-1),
                Value::from(1e30),
                Value::Null,
            ],
            Value::Bool(b) => vec![Value::Bool(!b), Value::from("true")],
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    path.push(Value::from(i));
                    walk(x, path, out);
                    path.pop();
                }
                vec![Value::Array(vec![]), Value::Null]
            }
            Value::Object(o) => {
                // Every register goes through the same parser: a few suffice
                // (the first three and the flags).
                let is_regs = path.last() == Some(&Value::from("regs"));
                let some = |(i, (k, _)): &(usize, (&String, &Value))| {
                    !is_regs || *i < 3 || ["rflags", "nzcv"].contains(&k.as_str())
                };
                for (_, (k, x)) in o.iter().enumerate().filter(some) {
                    path.push(Value::from(k.as_str()));
                    out.push((path.clone(), None));
                    walk(x, path, out);
                    path.pop();
                }
                vec![Value::Object(Default::default()), Value::from(7)]
            }
            Value::Null => vec![Value::from(0)],
        };
        out.extend(hostile.into_iter().map(|h| (path.clone(), Some(h))));
    }
    let mut edits = Vec::new();
    walk(v, &mut Vec::new(), &mut edits);
    let mut out = Vec::new();
    for (i, (path, with)) in edits.into_iter().enumerate() {
        let mut c = v.clone();
        let (last, parents) = match path.split_last() {
            Some(x) => x,
            None => continue,
        };
        let mut at = &mut c;
        for k in parents {
            at = match k {
                Value::String(k) => &mut at[k.as_str()],
                _ => &mut at[k.as_u64().expect("index") as usize],
            };
        }
        match (last, with) {
            (Value::String(k), None) => {
                at.as_object_mut().expect("object").remove(k);
            }
            (Value::String(k), Some(w)) => at[k.as_str()] = w,
            (_, Some(w)) => at[last.as_u64().expect("index") as usize] = w,
            (_, None) => continue,
        }
        out.push((format!("{name}-e{i}"), c.to_string()));
    }
    let textual = serde_json::to_string_pretty(v).expect("ser");
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for i in 0..40 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let at = (state % textual.len() as u64) as usize;
        let cut = textual.floor_char_boundary(at);
        out.push((format!("{name}-t{i}"), textual[..cut].to_string()));
        let mut b = textual.clone().into_bytes();
        const JUNK: &[u8] = b"{}[],:\"0xz-9 ";
        b[at] = JUNK[i % JUNK.len()];
        out.push((
            format!("{name}-b{i}"),
            String::from_utf8_lossy(&b).into_owned(),
        ));
    }
    out
}

/// The fixture parser and replay never panic on corrupted variants of the
/// bundled fixtures: every file gets a verdict, and every malformed one a
/// one-line error that starts with its path.
#[test]
fn corrupted_fixtures_never_panic() {
    let d = tmpdir("corrupt");
    let mut n = 0;
    for (arch, name) in [("x86_64", "cmpstore-001"), ("aarch64", "cmpstore-001")] {
        let p = repo()
            .join("fixtures")
            .join(arch)
            .join(format!("{name}.json"));
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).expect("bundled fixture"))
            .expect("json");
        for (tag, body) in corruptions(&format!("{arch}-{name}"), &v) {
            std::fs::write(d.join(format!("{tag}.json")), body).expect("write");
            n += 1;
        }
    }
    let o = replay(&[&d], true);
    let out = String::from_utf8_lossy(&o.stderr);
    assert!(!out.contains("panicked"), "{out}");
    assert_eq!(o.status.code(), Some(1), "{out}");
    let j: Value = serde_json::from_slice(&o.stdout).expect("json report");
    assert_eq!(j["total"], n);
    let fixtures = j["fixtures"].as_array().expect("fixtures");
    let mut malformed = 0;
    for f in fixtures {
        let path = f["path"].as_str().expect("path");
        if let Some(e) = f["error"].as_str() {
            malformed += 1;
            assert!(!e.contains('\n'), "{path}: multi-line error {e:?}");
            assert!(e.starts_with(&format!("{path}: ")), "{path}: {e}");
        }
    }
    assert_eq!(j["malformed"], malformed);
    assert!(
        malformed * 2 > n,
        "only {malformed} of {n} variants rejected"
    );
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

    // So is one at the top of the address space (no overflow).
    v["elf"]["descriptor"] = Value::String("0xfffffffffffffff0".into());
    std::fs::write(&p, serde_json::to_string(&v).expect("ser")).expect("write");
    let o = replay(&[&p], false);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("elf.json: elf.descriptor: 0xfffffffffffffff0 is not inside a loaded segment"),
        "{out}"
    );

    // And an ELF file cut short (its segments beyond the end of the file).
    let elf = std::fs::read(dir.join("seq.elf")).expect("elf");
    std::fs::write(dir.join("seq.elf"), &elf[..0x100]).expect("write");
    v["elf"]["descriptor"] = Value::String(desc.clone());
    std::fs::write(&p, serde_json::to_string(&v).expect("ser")).expect("write");
    let o = replay(&[&p], false);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("elf.json: elf."), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&dir);
}
