//! `rseq-emu gdb-serve` driven directly over its JSON-lines protocol
//! (docs/debugger.md), with this test playing the debugger: it answers the
//! server's `read` requests from a memory snapshot.

use rseq_emu_core::memory::{Memory, SparseMemory};
use rseq_emu_core::RseqCs;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

const AREA: u64 = 0x7000_0000;
const DESC: u64 = 0x60_0000;
const CODE: u64 = 0x40_1000;

fn regs(rip: u64) -> Value {
    let mut r = serde_json::Map::new();
    for n in [
        "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12",
        "r13", "r14", "r15", "fs_base", "gs_base",
    ] {
        r.insert(n.into(), json!(0));
    }
    r.insert("rip".into(), json!(rip));
    r.insert("eflags".into(), json!(0x202));
    Value::Object(r)
}

/// Start gdb-serve, send `request`, serve reads from `mem`; returns the
/// final answer and the number of reads served.
fn converse(mem: &mut SparseMemory, request: Value) -> (Value, usize) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rseq-emu"))
        .arg("gdb-serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let mut output = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    output.read_line(&mut line).unwrap();
    let hello: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(hello["protocol"], 1);
    writeln!(input, "{request}").unwrap();
    let mut reads = 0;
    let answer = loop {
        line.clear();
        assert!(output.read_line(&mut line).unwrap() > 0, "server hung up");
        let msg: Value = serde_json::from_str(&line).unwrap();
        if msg["req"] == "read" {
            reads += 1;
            let mut buf = vec![0u8; msg["len"].as_u64().unwrap() as usize];
            let reply = match mem.read(msg["addr"].as_u64().unwrap(), &mut buf) {
                Ok(()) => {
                    json!({"ok": true, "data": buf.iter().map(|b| format!("{b:02x}")).collect::<String>()})
                }
                Err(_) => json!({"ok": false}),
            };
            writeln!(input, "{reply}").unwrap();
            continue;
        }
        break msg;
    };
    writeln!(input, "{}", json!({"req": "quit"})).unwrap();
    assert!(child.wait().unwrap().success());
    (answer, reads)
}

fn snapshot(cs: Option<RseqCs>) -> SparseMemory {
    let mut m = SparseMemory::new();
    let mut area = vec![0u8; 32];
    if cs.is_some() {
        area[8..16].copy_from_slice(&DESC.to_le_bytes());
    }
    m.map(AREA, area, true).unwrap();
    if let Some(cs) = cs {
        m.map(DESC, cs.to_bytes().to_vec(), false).unwrap();
    }
    // nops, then the signature and abort_ip.
    let mut code = vec![0x90u8; 0x40];
    code[0x20..0x24].copy_from_slice(&0x5305_3053u32.to_le_bytes());
    m.map(CODE, code, false).unwrap();
    m
}

fn good_cs() -> RseqCs {
    RseqCs {
        version: 0,
        flags: 0,
        start_ip: CODE,
        post_commit_offset: 0x10,
        abort_ip: CODE + 0x24,
    }
}

#[test]
fn no_armed_section_is_reported_after_reading_rseq_cs() {
    let mut m = snapshot(None);
    let (a, reads) = converse(
        &mut m,
        json!({"req": "emulate", "regs": regs(CODE), "rseq_area": AREA}),
    );
    assert_eq!(a["done"], true);
    assert_eq!(a["status"], "not-in-section", "{a}");
    assert_eq!(reads, 1, "only the rseq_cs field is needed");
}

#[test]
fn rip_outside_the_armed_section_is_not_emulated() {
    let mut m = snapshot(Some(good_cs()));
    let (a, _) = converse(
        &mut m,
        json!({"req": "emulate", "regs": regs(CODE + 0x10), "rseq_area": AREA}),
    );
    assert_eq!(a["status"], "not-in-section", "{a}");
    assert_eq!(a["section"]["start_ip"], format!("0x{CODE:x}"));
}

#[test]
fn a_descriptor_the_kernel_refuses_is_reported() {
    // Wrong signature requested: the kernel would kill the thread.
    let mut m = snapshot(Some(good_cs()));
    let (a, _) = converse(
        &mut m,
        json!({"req": "emulate", "regs": regs(CODE), "rseq_area": AREA, "signature": 0x1234}),
    );
    assert_eq!(a["status"], "invalid-descriptor", "{a}");
    assert!(a["reason"].as_str().unwrap().contains("SIGSEGV"), "{a}");
    let mut m = snapshot(Some(RseqCs {
        version: 1,
        ..good_cs()
    }));
    let (a, _) = converse(
        &mut m,
        json!({"req": "emulate", "regs": regs(CODE), "rseq_area": AREA}),
    );
    assert_eq!(a["status"], "invalid-descriptor", "{a}");
}

#[test]
fn an_unreadable_area_and_bad_requests_are_clear_errors() {
    let mut m = SparseMemory::new();
    let (a, _) = converse(
        &mut m,
        json!({"req": "emulate", "regs": regs(CODE), "rseq_area": AREA}),
    );
    assert_eq!(a["status"], "error");
    assert!(a["error"].as_str().unwrap().contains("unreadable"), "{a}");
    let (a, _) = converse(&mut m, json!({"req": "emulate", "rseq_area": AREA}));
    assert_eq!(a["status"], "error");
    assert!(a["error"].as_str().unwrap().contains("regs"), "{a}");
    let (a, _) = converse(&mut m, json!({"req": "frobnicate"}));
    assert_eq!(a["status"], "error");
}
