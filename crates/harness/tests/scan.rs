//! `rseq-emu scan` against ELF files built from our own sources with the real
//! toolchains, in non-PIE, PIE and shared-object form, for both
//! architectures. Expected addresses come from the linker's symbol table
//! (nm), never from the scanner.

mod support;

use serde_json::Value;
use support::*;

fn scan_json(path: &std::path::Path) -> Value {
    let out = rseq_emu(&["scan", "--json", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "scan failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("scan --json prints JSON")
}

fn seq_by_start(file: &Value, start: u64) -> &Value {
    file["sequences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["start_ip"].as_str().map(|_| parse_hex(&s["start_ip"])) == Some(start))
        .unwrap_or_else(|| panic!("no sequence with start_ip 0x{start:x} in {file}"))
}

/// The verdict the kernel must reach for seqN of seqs_*.c.
fn expected_problem(n: u32) -> Option<&'static str> {
    match n {
        4 => Some("signature at abort_ip - 4"),
        5 => Some("lies inside the critical section"),
        6 => Some("version is 1"),
        7 => Some("deprecated RSEQ_CS_FLAG_NO_RESTART"),
        _ => None,
    }
}

fn check_seqs(arch: &str, variant: &str, flags: &[&str]) {
    let src = format!("seqs_{arch}.c");
    let bin = build(arch, &src, &format!("seqs_{arch}_{variant}"), flags);
    let syms = symbols(arch, &bin);
    let doc = scan_json(&bin);
    let file = &doc["files"][0];
    assert_eq!(file["arch"], arch);
    assert_eq!(file["path"], bin.to_str().unwrap());
    let seqs = file["sequences"].as_array().unwrap();
    assert_eq!(seqs.len(), 8, "{variant}: {file}");
    for n in 1..=8u32 {
        let sym = |s: &str| {
            *syms
                .get(&format!("seq{n}_{s}"))
                .unwrap_or_else(|| panic!("nm has no seq{n}_{s}"))
        };
        let s = seq_by_start(file, sym("start"));
        let ctx = format!("{arch} {variant} seq{n}: {s}");
        assert_eq!(parse_hex(&s["descriptor"]), sym("desc"), "{ctx}");
        assert_eq!(parse_hex(&s["post_commit_ip"]), sym("post"), "{ctx}");
        assert_eq!(parse_hex(&s["abort_ip"]), sym("abort"), "{ctx}");
        let problems: Vec<&str> = s["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        match expected_problem(n) {
            None => {
                assert_eq!(s["valid"], true, "{ctx}");
                assert!(problems.is_empty(), "{ctx}");
                let sig = if arch == "x86_64" {
                    "0x53053053"
                } else {
                    "0xd428bc00"
                };
                assert_eq!(s["signature"], sig, "{ctx}");
            }
            Some(reason) => {
                assert_eq!(s["valid"], false, "{ctx}");
                assert!(
                    problems
                        .iter()
                        .any(|p| p.contains(reason) && p.contains("SIGSEGV")),
                    "{ctx}: expected the kernel's reason `{reason}`"
                );
            }
        }
        let exits: Vec<u64> = s["exit_points"]
            .as_array()
            .unwrap()
            .iter()
            .map(parse_hex)
            .collect();
        if n == 1 {
            assert_eq!(exits, vec![sym("exit")], "{ctx}");
        } else {
            assert!(exits.is_empty(), "{ctx}");
        }
        // Every listed instruction lies inside the section, in order, and
        // the listing starts at start_ip.
        let insns = s["instructions"].as_array().unwrap();
        assert_eq!(parse_hex(&insns[0]["ip"]), sym("start"), "{ctx}");
        // Emulability: both architectures have an executor, so the verdict
        // is always there.
        assert!(!s["emulable"].is_null(), "{ctx}: no emulability verdict");
        {
            let unsupported = s["unsupported"].as_array().unwrap();
            if n == 8 {
                assert_eq!(s["emulable"], false, "{ctx}");
                let bad = if arch == "x86_64" {
                    "seq8_lock"
                } else {
                    "seq8_stxr"
                };
                assert!(
                    unsupported.iter().any(|u| parse_hex(&u["ip"]) == syms[bad]),
                    "{ctx}: the {bad} instruction must be reported unsupported"
                );
                if arch == "aarch64" {
                    // Only the exclusive store, and it says why.
                    assert_eq!(unsupported.len(), 1, "{ctx}");
                    let u = &unsupported[0];
                    assert!(u["insn"].as_str().unwrap().starts_with("stxr"), "{ctx}");
                    assert!(u["reason"].as_str().unwrap().contains("exclusive"), "{ctx}");
                }
            } else if n <= 3 {
                assert_eq!(s["emulable"], true, "{ctx}");
                assert!(unsupported.is_empty(), "{ctx}");
            }
        }
    }
    // Signature forms.
    let form =
        |n: u32| seq_by_start(file, syms[&format!("seq{n}_start")])["signature_form"].clone();
    if arch == "x86_64" {
        assert_eq!(form(1), "ud1");
        assert_eq!(form(2), "nopl");
        assert_eq!(form(3), "data");
    } else {
        assert_eq!(form(1), "brk #0x45e0");
        assert_eq!(form(4), "data");
    }
}

#[test]
fn x86_64_nopie_pie_and_shared_object_are_exact() {
    for (variant, flags) in VARIANTS {
        check_seqs("x86_64", variant, flags);
    }
}

#[test]
fn aarch64_nopie_pie_and_shared_object_are_exact() {
    for (variant, flags) in VARIANTS {
        check_seqs("aarch64", variant, flags);
    }
}

#[test]
fn shared_object_uses_symbol_relocations() {
    // The premise of the test above: in the .so, seq1's descriptor words are
    // R_X86_64_64 against symbols and the others R_X86_64_RELATIVE.
    let so = build(
        "x86_64",
        "seqs_x86_64.c",
        "seqs_x86_64_so_relocs",
        &["-shared", "-fPIC"],
    );
    let out = std::process::Command::new("readelf")
        .args(["-rW"])
        .arg(&so)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("R_X86_64_64") && text.contains("g_seq1_start"),
        "{text}"
    );
    assert!(text.contains("R_X86_64_RELATIVE"), "{text}");
}

#[test]
fn legacy_table_and_cs_section_without_pointer_array() {
    for (section, name) in [("__rseq_table", "legacy"), ("__rseq_cs", "csonly")] {
        for (variant, flags) in VARIANTS {
            let mut f: Vec<&str> = flags.to_vec();
            let def = format!("-DSECTION={section}");
            f.push(&def);
            let bin = build(
                "x86_64",
                "legacy_x86_64.c",
                &format!("{name}_{variant}"),
                &f,
            );
            let syms = symbols("x86_64", &bin);
            let doc = scan_json(&bin);
            let file = &doc["files"][0];
            assert_eq!(file["sequences"].as_array().unwrap().len(), 2, "{file}");
            for n in 1..=2 {
                let s = seq_by_start(file, syms[&format!("seq{n}_start")]);
                assert_eq!(s["source"], section);
                assert_eq!(parse_hex(&s["descriptor"]), syms[&format!("seq{n}_desc")]);
                assert_eq!(
                    parse_hex(&s["post_commit_ip"]),
                    syms[&format!("seq{n}_post")]
                );
                assert_eq!(parse_hex(&s["abort_ip"]), syms[&format!("seq{n}_abort")]);
                assert_eq!(s["valid"], true, "{s}");
            }
        }
    }
}

#[test]
fn garbage_pointers_are_reported_not_fatal() {
    for (variant, flags) in VARIANTS {
        let bin = build(
            "x86_64",
            "garbage_x86_64.c",
            &format!("garbage_{variant}"),
            flags,
        );
        let syms = symbols("x86_64", &bin);
        let doc = scan_json(&bin);
        let seqs = doc["files"][0]["sequences"].as_array().unwrap().clone();
        assert_eq!(seqs.len(), 3, "{seqs:?}");
        let good = seqs
            .iter()
            .find(|s| parse_hex(&s["descriptor"]) == syms["seq1_desc"])
            .unwrap();
        assert_eq!(good["valid"], true);
        let outside = seqs
            .iter()
            .find(|s| parse_hex(&s["descriptor"]) == 0xdeadbeef00)
            .unwrap();
        assert_eq!(outside["valid"], false);
        assert!(outside["problems"][0]
            .as_str()
            .unwrap()
            .contains("outside every loaded segment"));
        // A pointer into .text reads instructions as a descriptor: whatever
        // they hold, the verdict must be invalid, with a reason.
        let text = seqs
            .iter()
            .find(|s| parse_hex(&s["descriptor"]) == syms["seq1_start"])
            .unwrap();
        assert_eq!(text["valid"], false, "{text}");
        assert!(!text["problems"].as_array().unwrap().is_empty());
    }
}

#[test]
fn human_output_reads_like_a_diagnostic() {
    let bin = build("x86_64", "seqs_x86_64.c", "seqs_x86_64_human", &["-no-pie"]);
    let out = rseq_emu(&["scan", bin.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("8 restartable sequences"), "{text}");
    assert!(text.contains(": error: descriptor"), "{text}");
    assert!(
        text.contains("the kernel would kill the thread with SIGSEGV"),
        "{text}"
    );
    assert!(text.contains("<post_commit_ip>"), "{text}");
}

fn assert_clean_error(path: &std::path::Path) {
    let out = rseq_emu(&["scan", "--json", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("panicked"),
        "panic on {}: {err}",
        path.display()
    );
    assert_ne!(out.status.code(), Some(101), "{err}");
    if !out.status.success() {
        assert_eq!(err.trim_end().lines().count(), 1, "one-line error: {err}");
        assert!(
            err.contains(path.to_str().unwrap()),
            "the error names the file: {err}"
        );
    } else {
        let _: Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    }
}

#[test]
fn malformed_and_truncated_files_give_one_line_errors() {
    let bin = build(
        "x86_64",
        "seqs_x86_64.c",
        "seqs_x86_64_trunc",
        &["-pie", "-fPIE"],
    );
    let bytes = std::fs::read(&bin).unwrap();
    let dir = out_dir();
    // Headers cut short: must be an error naming the file.
    for len in [0usize, 3, 4, 16, 63] {
        let p = dir.join(format!("trunc_{len}"));
        std::fs::write(&p, &bytes[..len]).unwrap();
        let out = rseq_emu(&["scan", p.to_str().unwrap()]);
        assert!(!out.status.success(), "truncated to {len} bytes must fail");
        assert_clean_error(&p);
    }
    // Cut anywhere else: an error or a report, never a panic.
    for len in [64usize, 100, 500, 4096, bytes.len() / 2, bytes.len() - 1] {
        let p = dir.join(format!("trunc_{len}"));
        std::fs::write(&p, &bytes[..len]).unwrap();
        assert_clean_error(&p);
    }
    let p = dir.join("not_elf.txt");
    std::fs::write(&p, "this is not an ELF file\n").unwrap();
    let out = rseq_emu(&["scan", p.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid ELF file"));
    let missing = dir.join("does_not_exist");
    let out = rseq_emu(&["scan", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn corrupted_files_never_panic() {
    // Seeded byte corruption of a real binary, through the library.
    let bin = build(
        "x86_64",
        "seqs_x86_64.c",
        "seqs_x86_64_corrupt",
        &["-shared", "-fPIC"],
    );
    let bytes = std::fs::read(&bin).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..300 {
        let mut b = bytes.clone();
        for _ in 0..(1 + next() % 8) {
            let i = (next() % b.len() as u64) as usize;
            b[i] = next() as u8;
        }
        rseq_emu_harness::elf::fuzz_scan(&b);
    }
}

#[test]
fn packed_relative_relocations_read_exactly() {
    // ld -z pack-relative-relocs (DT_RELR) keeps the addends in place; every
    // address must still equal nm's, and the file must really use DT_RELR
    // (readelf is the oracle for that), or this test proves nothing.
    let flags = ["-pie", "-fPIE", "-Wl,-z,pack-relative-relocs"];
    check_seqs("x86_64", "pie-relr", &flags);
    let bin = out_dir().join("seqs_x86_64_pie-relr");
    let out = std::process::Command::new("readelf")
        .arg("-d")
        .arg(&bin)
        .output()
        .expect("run readelf");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("(RELR)"),
        "the linker did not emit DT_RELR"
    );
    let doc = scan_json(&bin);
    let problems = doc["files"][0]["problems"].to_string();
    assert!(!problems.contains("RELR"), "{problems}");
}
