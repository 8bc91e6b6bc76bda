//! `rseq-emu gdb-serve`: the emulator side of the gdb extension
//! (tools/gdb/rseq_emu.py), speaking JSON lines over stdin/stdout.
//!
//! The debugger sends one `emulate` request with the thread's registers and
//! rseq area; rseq-emu reads the live `rseq_cs` pointer, the descriptor, the
//! code and every operand through `read` requests answered by the debugger,
//! keeps the section's stores in a buffer, and answers with the final
//! registers, the stores for the debugger to apply, and the instruction
//! trace. The protocol is specified in docs/debugger.md.

use rseq_emu_core::abi::{area, validate, ArchKind, RseqCs};
use rseq_emu_core::memory::{AccessKind, MemFault, Memory};
use rseq_emu_core::Outcome;
use rseq_emu_harness::ptrace::{decode_section, emulate_traced};
use rseq_emu_x86_64::{reg, X86State};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::error::Error;
use std::io::{BufRead, Write};
use std::process::ExitCode;

/// Arguments of `rseq-emu gdb-serve`.
#[derive(clap::Args)]
pub struct Args {
    /// Most instructions one emulation may run.
    #[arg(long, default_value_t = 100_000)]
    budget: u64,
}

/// The protocol version in every `hello`.
pub const PROTOCOL_VERSION: u64 = 1;

/// Register names in the protocol (gdb's names), the emulator's gprs first.
const GPR_NAMES: [&str; 16] = reg::NAMES;

/// A stdio peer: requests go out as JSON lines, answers come back in order.
struct Peer<R, W> {
    input: R,
    output: W,
}

impl<R: BufRead, W: Write> Peer<R, W> {
    fn send(&mut self, v: &Value) -> Result<(), Box<dyn Error>> {
        writeln!(self.output, "{v}")?;
        self.output.flush()?;
        Ok(())
    }

    fn recv(&mut self) -> Result<Option<Value>, Box<dyn Error>> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.input.read_line(&mut line)? == 0 {
                return Ok(None);
            }
            if !line.trim().is_empty() {
                break;
            }
        }
        serde_json::from_str(line.trim())
            .map(Some)
            .map_err(|e| format!("bad JSON from the debugger: {e}: {}", line.trim()).into())
    }
}

/// Memory served by the debugger on demand, with the section's stores kept
/// here until the end (the debugger applies them).
struct DebuggerMemory<'p, R, W> {
    peer: &'p mut Peer<R, W>,
    /// Stores so far, byte by byte (later ones win).
    written: BTreeMap<u64, u8>,
    /// Writable ranges from the debugger's mappings; `None`: not known, any
    /// readable byte is writable.
    writable: Option<Vec<(u64, u64)>>,
    /// A host error in the conversation (reported instead of a fault).
    broken: Option<String>,
    /// Number of read requests.
    reads: u64,
}

impl<R: BufRead, W: Write> DebuggerMemory<'_, R, W> {
    fn fetch(&mut self, addr: u64, len: usize) -> Option<Vec<u8>> {
        if self.broken.is_some() {
            return None;
        }
        self.reads += 1;
        let req = json!({"req": "read", "addr": addr, "len": len});
        let answer = self.peer.send(&req).and_then(|()| self.peer.recv());
        match answer {
            Ok(Some(v)) => {
                if v.get("ok").and_then(Value::as_bool) != Some(true) {
                    return None;
                }
                let bytes = v.get("data").and_then(Value::as_str).and_then(unhex);
                match bytes {
                    Some(b) if b.len() == len => Some(b),
                    _ => {
                        self.broken = Some(format!("bad answer to a read of {len} bytes: {v}"));
                        None
                    }
                }
            }
            Ok(None) => {
                self.broken = Some("the debugger closed the connection".into());
                None
            }
            Err(e) => {
                self.broken = Some(e.to_string());
                None
            }
        }
    }
}

impl<R: BufRead, W: Write> Memory for DebuggerMemory<'_, R, W> {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let fault = MemFault {
            addr,
            size: buf.len(),
            kind: AccessKind::Read,
        };
        if addr.checked_add(buf.len() as u64).is_none() {
            return Err(fault);
        }
        // Only ask when some byte is not our own store.
        let need = (0..buf.len() as u64).any(|i| !self.written.contains_key(&(addr + i)));
        if need {
            let data = self.fetch(addr, buf.len()).ok_or(fault)?;
            buf.copy_from_slice(&data);
        }
        for (i, b) in buf.iter_mut().enumerate() {
            if let Some(&w) = self.written.get(&(addr + i as u64)) {
                *b = w;
            }
        }
        Ok(())
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        let fault = MemFault {
            addr,
            size: data.len(),
            kind: AccessKind::Write,
        };
        let Some(end) = addr.checked_add(data.len() as u64) else {
            return Err(fault);
        };
        match &self.writable {
            Some(ranges) => {
                let covered = ranges.iter().any(|&(s, e)| s <= addr && end <= e);
                if !covered {
                    return Err(fault);
                }
            }
            None => {
                // Without mappings: the bytes must at least be readable.
                let mut probe = vec![0u8; data.len()];
                self.read(addr, &mut probe)?;
            }
        }
        for (i, &b) in data.iter().enumerate() {
            self.written.insert(addr + i as u64, b);
        }
        Ok(())
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() & 1 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn tohex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn num(v: &Value, what: &str) -> Result<u64, String> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| format!("{what}: {n} is not a u64")),
        Value::String(s) => {
            let t = s.trim_start_matches("0x");
            u64::from_str_radix(t, 16).map_err(|e| format!("{what}: `{s}`: {e}"))
        }
        _ => Err(format!("{what}: expected a number, got {v}")),
    }
}

fn field(obj: &Value, key: &str) -> Result<u64, String> {
    num(
        obj.get(key)
            .ok_or_else(|| format!("missing field `{key}`"))?,
        key,
    )
}

fn state_from_json(regs: &Value) -> Result<X86State, String> {
    let mut s = X86State::default();
    for (i, name) in GPR_NAMES.iter().enumerate() {
        s.gpr[i] = field(regs, name)?;
    }
    s.rip = field(regs, "rip")?;
    s.rflags = field(regs, "eflags")?;
    s.fs_base = field(regs, "fs_base")?;
    s.gs_base = field(regs, "gs_base")?;
    Ok(s)
}

fn state_to_json(s: &X86State) -> Value {
    let mut m = Map::new();
    for (i, name) in GPR_NAMES.iter().enumerate() {
        m.insert((*name).into(), json!(s.gpr[i]));
    }
    m.insert("rip".into(), json!(s.rip));
    m.insert("eflags".into(), json!(s.rflags));
    m.insert("fs_base".into(), json!(s.fs_base));
    m.insert("gs_base".into(), json!(s.gs_base));
    Value::Object(m)
}

fn hex(v: u64) -> String {
    format!("0x{v:x}")
}

/// Handle one `emulate` request; returns the answer (an `error` answer for
/// bad requests, never a panic).
fn emulate<R: BufRead, W: Write>(peer: &mut Peer<R, W>, req: &Value, budget: u64) -> Value {
    let fail = |msg: String| json!({"done": true, "status": "error", "error": msg});
    let regs = match req.get("regs").ok_or("missing `regs`".to_string()) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let mut state = match state_from_json(regs) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let (area_addr, signature) = match (field(req, "rseq_area"), req.get("signature")) {
        (Ok(a), Some(s)) => match num(s, "signature") {
            Ok(s) if s <= u64::from(u32::MAX) => (a, s as u32),
            Ok(s) => return fail(format!("signature 0x{s:x} is wider than 32 bits")),
            Err(e) => return fail(e),
        },
        (Ok(a), None) => (a, ArchKind::X86_64.default_signature()),
        (Err(e), _) => return fail(e),
    };
    let writable = req.get("writable").and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(|r| {
                let r = r.as_array()?;
                Some((num(r.first()?, "start").ok()?, num(r.get(1)?, "end").ok()?))
            })
            .collect::<Vec<_>>()
    });
    let mut mem = DebuggerMemory {
        peer,
        written: BTreeMap::new(),
        writable,
        broken: None,
        reads: 0,
    };
    let ptr_addr = area_addr.wrapping_add(area::RSEQ_CS);
    let cs_addr = match mem.read_u64(ptr_addr) {
        Ok(a) => a,
        Err(_) => {
            return fail(mem.broken.take().unwrap_or(format!(
                "the rseq area's rseq_cs field at 0x{ptr_addr:x} is unreadable"
            )))
        }
    };
    if cs_addr == 0 {
        return json!({"done": true, "status": "not-in-section", "reason": "rseq_cs is 0: no critical section is armed"});
    }
    let mut b = [0u8; RseqCs::SIZE];
    if mem.read(cs_addr, &mut b).is_err() {
        return fail(format!("the descriptor at 0x{cs_addr:x} is unreadable"));
    }
    let cs = RseqCs::from_bytes(&b);
    let section = json!({
        "descriptor": hex(cs_addr),
        "start_ip": hex(cs.start_ip),
        "post_commit_ip": cs.post_commit_ip().map(hex),
        "abort_ip": hex(cs.abort_ip),
    });
    if !cs.contains(state.rip) {
        return json!({"done": true, "status": "not-in-section", "section": section,
            "reason": format!("rip 0x{:x} is outside the armed section", state.rip)});
    }
    if let Err(e) = validate(&cs, ArchKind::X86_64, signature, |a| mem.read_u32(a).ok()) {
        return json!({"done": true, "status": "invalid-descriptor", "section": section,
            "reason": format!("the kernel would kill the thread with SIGSEGV: {e}")});
    }
    let program = match decode_section(&mut mem, &cs) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let (outcome, trace) = emulate_traced(&program, &mut state, &mut mem, budget);
    if let Some(e) = mem.broken.take() {
        return fail(e);
    }
    let (status, detail) = match &outcome {
        Outcome::Committed => ("committed", Value::Null),
        Outcome::Exited { ip } => ("exited", json!({"ip": ip})),
        Outcome::Unsupported { ip, insn, reason } => (
            "unsupported",
            json!({"ip": ip, "insn": insn, "reason": reason}),
        ),
        Outcome::Fault { ip, fault } => ("fault", json!({"ip": ip, "fault": fault.to_string()})),
        Outcome::BudgetExceeded { ip } => ("budget-exceeded", json!({"ip": ip})),
    };
    // Coalesce the stores into runs of consecutive bytes.
    let mut writes: Vec<(u64, Vec<u8>)> = Vec::new();
    for (&a, &v) in &mem.written {
        match writes.last_mut() {
            Some((s, d)) if *s + d.len() as u64 == a => d.push(v),
            _ => writes.push((a, vec![v])),
        }
    }
    json!({
        "done": true,
        "status": status,
        "detail": detail,
        "section": section,
        "regs": state_to_json(&state),
        "writes": writes.iter().map(|(a, d)| json!({"addr": a, "data": tohex(d)})).collect::<Vec<_>>(),
        "trace": trace.iter().map(|t| json!({"ip": t.ip, "insn": t.text})).collect::<Vec<_>>(),
        "reads": mem.reads,
    })
}

/// Run `rseq-emu gdb-serve` on stdin/stdout until the debugger closes it.
pub fn run(a: Args) -> Result<ExitCode, Box<dyn Error>> {
    let stdin = std::io::stdin();
    let mut peer = Peer {
        input: stdin.lock(),
        output: std::io::stdout().lock(),
    };
    peer.send(&json!({"hello": "rseq-emu", "protocol": PROTOCOL_VERSION, "arch": "x86_64"}))?;
    while let Some(req) = peer.recv()? {
        let answer = match req.get("req").and_then(Value::as_str) {
            Some("emulate") => emulate(&mut peer, &req, a.budget),
            Some("quit") => break,
            other => json!({"done": true, "status": "error",
                "error": format!("unknown request {other:?} (expected \"emulate\" or \"quit\")")}),
        };
        peer.send(&answer)?;
    }
    Ok(ExitCode::SUCCESS)
}
