//! The real-CPU oracle path: record fresh fixtures natively right now (the
//! kernel's rseq active), then replay them through the emulator.

mod replay_support;

use replay_support::{bin, clock_seed, not_ok, replay_json, text};
use serde_json::Value;
use std::collections::BTreeSet;

#[test]
fn fresh_native_recordings_replay_exactly() {
    let d = std::env::temp_dir().join(format!("rseq-emu-record-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let seed = clock_seed();
    let o = bin()
        .args([
            "record",
            "--count",
            "6",
            "--seed",
            &seed.to_string(),
            "--out",
        ])
        .arg(&d)
        .output()
        .expect("run rseq-emu record");
    let out = text(&o);
    assert!(o.status.success(), "record (seed {seed}) failed: {out}");
    assert!(out.contains("66 fixtures written"), "{out}");

    let (j, o) = replay_json(&[&d]);
    let bad = not_ok(&j);
    assert!(bad.is_empty(), "seed {seed}: {}", bad.join("\n"));
    assert!(o.status.success());
    assert_eq!(j["total"], 66);

    // The recordings cover all three outcomes.
    let mut outcomes = BTreeSet::new();
    for e in std::fs::read_dir(&d).expect("out dir") {
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(e.expect("entry").path()).expect("read"))
                .expect("json");
        outcomes.insert(v["expect"]["outcome"].as_str().unwrap_or("").to_string());
    }
    assert_eq!(
        outcomes.into_iter().collect::<Vec<_>>(),
        ["aborted", "committed", "exited"]
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn the_same_seed_generates_the_same_sequences() {
    let base = std::env::temp_dir().join(format!("rseq-emu-record-seed-{}", std::process::id()));
    let mut codes = Vec::new();
    for k in 0..2 {
        let d = base.join(k.to_string());
        let o = bin()
            .args([
                "record",
                "--count",
                "2",
                "--seed",
                "42",
                "--pattern",
                "memcpy",
                "--cpu",
                "0",
                "--out",
            ])
            .arg(&d)
            .output()
            .expect("run rseq-emu record");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: Value = serde_json::from_str(
            &std::fs::read_to_string(d.join("memcpy-002.json")).expect("fixture"),
        )
        .expect("json");
        // fs_base and the rseq area move with ASLR; everything else is fixed.
        let mut regs = v["expect"]["regs"].clone();
        regs.as_object_mut().expect("regs").remove("fs_base");
        let mut entry = v["entry"]["regs"].clone();
        entry.as_object_mut().expect("regs").remove("fs_base");
        codes.push((
            v["code"].clone(),
            entry,
            v["memory"][0].clone(),
            regs,
            v["expect"]["memory"][0].clone(),
        ));
    }
    assert!(
        codes[0] == codes[1],
        "seed 42 generated two different cases"
    );
    let _ = std::fs::remove_dir_all(&base);
}

/// Bad arguments are one clear error each, before anything is written.
#[test]
fn bad_record_arguments_are_clear_errors() {
    let d = replay_support::tmpdir("record-args");
    let out = d.join("out");
    for (args, want) in [
        (&["--pattern", "nosuch"][..], "unknown pattern \"nosuch\""),
        (
            &["--arch", "aarch64", "--pattern", "movw16"],
            "unknown aarch64 pattern \"movw16\"",
        ),
        (&["--arch", "mips"], "--arch \"mips\": x86_64 or aarch64"),
        (
            &["--cpu", "99"],
            "--cpu 99: the recorder supports CPUs 0..15",
        ),
        (&["--arch", "aarch64", "--cpu", "1"], "--cpu: x86_64 only"),
    ] {
        let o = bin()
            .arg("record")
            .args(args)
            .arg("--out")
            .arg(&out)
            .output()
            .expect("run rseq-emu record");
        let t = text(&o);
        assert!(!o.status.success(), "{args:?}: {t}");
        assert!(t.contains(want), "{args:?}: {t}");
        assert!(!t.contains("panicked"), "{args:?}: {t}");
        let written = std::fs::read_dir(&out).map(|r| r.count()).unwrap_or(0);
        assert_eq!(written, 0, "{args:?}: wrote fixtures");
    }
    let _ = std::fs::remove_dir_all(&d);
}
