//! The entry-register check: the abort stub hands the engine the registers
//! as they are *after* an abort (and after the sequence's teardown), not as
//! they were when the sequence started. Emulating from those registers is
//! only right when every register byte (and flag) the section reads before
//! writing it on some path from `start_ip` is one the section never
//! modifies — or one the teardown writes back in full before the stub saves
//! it.
//!
//! The analysis works on bytes of registers (`movb (%rsi),%al` reads no byte
//! of `%rax`, so the upper bytes that pass through unchanged are not a
//! read) and on individual flags. It is a forward must-be-written dataflow
//! over the reachable instructions of the decoded section: a read of a byte
//! that is not written on *every* path to it is an entry read. An indirect
//! branch makes every read an entry read (its targets are unknown).
//!
//! Teardown convention (docs/runtime.md): the teardown passed to the abort
//! macro is the code that undoes the section's register changes before a
//! native retry (librseq's memcpy sequence restores `src`, `dst`, `len`
//! there). A register byte the teardown writes unconditionally, on its
//! straight-line path, counts as restored; its value is the one the native
//! retry relies on.

use iced_x86::{Decoder, DecoderOptions, FlowControl, InstructionInfoFactory, OpAccess, Register};
use rseq_emu_core::Program;
use rseq_emu_x86_64::X86_64;

/// Register bytes (one mask per GPR, encoding order) plus flags (iced's
/// `RflagsBits`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RegSet {
    /// Bit `i` of `gpr[r]` = byte `i` of register `r`.
    pub gpr: [u8; 16],
    /// iced `RflagsBits`.
    pub flags: u32,
}

impl RegSet {
    const ALL: RegSet = RegSet {
        gpr: [0xff; 16],
        flags: u32::MAX,
    };
    fn union(self, o: RegSet) -> RegSet {
        let mut r = self;
        for i in 0..16 {
            r.gpr[i] |= o.gpr[i];
        }
        r.flags |= o.flags;
        r
    }
    fn inter(self, o: RegSet) -> RegSet {
        let mut r = self;
        for i in 0..16 {
            r.gpr[i] &= o.gpr[i];
        }
        r.flags &= o.flags;
        r
    }
    fn minus(self, o: RegSet) -> RegSet {
        let mut r = self;
        for i in 0..16 {
            r.gpr[i] &= !o.gpr[i];
        }
        r.flags &= !o.flags;
        r
    }
    /// Whether nothing is in the set.
    pub fn is_empty(&self) -> bool {
        self.gpr.iter().all(|&b| b == 0) && self.flags == 0
    }
    /// Human-readable list, e.g. `rsi, rdx, flags 0x10`.
    pub fn describe(&self) -> String {
        let mut v: Vec<String> = (0..16)
            .filter(|&i| self.gpr[i] != 0)
            .map(|i| {
                let name = rseq_emu_x86_64::reg::NAMES[i];
                if self.gpr[i] == 0xff {
                    name.to_string()
                } else {
                    format!("{name}[bytes 0x{:02x}]", self.gpr[i])
                }
            })
            .collect();
        if self.flags != 0 {
            v.push(format!("rflags (iced bits 0x{:x})", self.flags));
        }
        v.join(", ")
    }
}

/// What one instruction reads, must write and may write.
#[derive(Clone, Copy, Debug, Default)]
struct Effect {
    read: RegSet,
    must: RegSet,
    may: RegSet,
}

fn masks(r: Register) -> Option<(usize, u8, u8)> {
    if r.is_gpr64() {
        return Some((r.number(), 0xff, 0xff));
    }
    let full = r.full_register();
    if !full.is_gpr64() {
        return None;
    }
    let i = full.number();
    if r.is_gpr32() {
        // A 32-bit write zero-extends.
        Some((i, 0x0f, 0xff))
    } else if r.is_gpr16() {
        Some((i, 0x03, 0x03))
    } else if matches!(r, Register::AH | Register::CH | Register::DH | Register::BH) {
        Some((i, 0x02, 0x02))
    } else {
        Some((i, 0x01, 0x01))
    }
}

fn effect(f: &mut InstructionInfoFactory, insn: &iced_x86::Instruction) -> Effect {
    let mut e = Effect::default();
    for u in f.info(insn).used_registers() {
        let Some((i, rd, wr)) = masks(u.register()) else {
            continue;
        };
        match u.access() {
            OpAccess::Read | OpAccess::CondRead => e.read.gpr[i] |= rd,
            OpAccess::Write => {
                e.must.gpr[i] |= wr;
                e.may.gpr[i] |= wr;
            }
            OpAccess::CondWrite => e.may.gpr[i] |= wr,
            OpAccess::ReadWrite => {
                e.read.gpr[i] |= rd;
                e.must.gpr[i] |= wr;
                e.may.gpr[i] |= wr;
            }
            OpAccess::ReadCondWrite => {
                e.read.gpr[i] |= rd;
                e.may.gpr[i] |= wr;
            }
            _ => {}
        }
    }
    // The flags the executor models: the status flags and DF.
    const MODELLED: u32 = 0x7f;
    e.read.flags = insn.rflags_read() & MODELLED;
    e.must.flags = insn.rflags_modified() & MODELLED;
    e.may.flags = insn.rflags_modified() & MODELLED;
    if count_may_be_zero(insn) {
        // A shift or rotate by a zero count leaves every flag unchanged:
        // its flag writes are conditional.
        e.must.flags = 0;
    }
    e
}

/// A shift or rotate whose count is `%cl` or an immediate that masks to 0.
fn count_may_be_zero(insn: &iced_x86::Instruction) -> bool {
    use iced_x86::{Mnemonic as M, OpKind};
    if !matches!(
        insn.mnemonic(),
        M::Shl | M::Sal | M::Shr | M::Sar | M::Rol | M::Ror | M::Rcl | M::Rcr | M::Shld | M::Shrd
    ) {
        return false;
    }
    let last = insn.op_count().saturating_sub(1);
    match insn.op_kind(last) {
        OpKind::Register => insn.op_register(last) == Register::CL,
        OpKind::Immediate8 => {
            let mask = if insn.op0_register().size() == 8 || insn.memory_size().size() == 8 {
                0x3f
            } else {
                0x1f
            };
            insn.immediate8() & mask == 0
        }
        _ => false,
    }
}

fn decode_at(code: &[u8], base: u64, ip: u64) -> Option<iced_x86::Instruction> {
    let off = ip.checked_sub(base)? as usize;
    let bytes = code.get(off..)?;
    let mut d = Decoder::with_ip(64, bytes, ip, DecoderOptions::NONE);
    let i = d.decode();
    (!i.is_invalid()).then_some(i)
}

/// The register bytes a straight-line teardown writes in full: instructions
/// from its start until the first control transfer (or its end).
pub fn teardown_restores(code: &[u8], base: u64) -> RegSet {
    let mut f = InstructionInfoFactory::new();
    let mut d = Decoder::with_ip(64, code, base, DecoderOptions::NONE);
    let mut set = RegSet::default();
    while d.can_decode() {
        let i = d.decode();
        if i.is_invalid() || i.flow_control() != FlowControl::Next {
            break;
        }
        set = set.union(effect(&mut f, &i).must);
    }
    set
}

/// Result of [`entry_conflicts`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryCheck {
    /// Read on entry (before being written on some path).
    pub entry_reads: RegSet,
    /// Written somewhere in the section.
    pub modified: RegSet,
    /// Entry reads that are modified and not restored by the teardown:
    /// emulating from the abort-time registers would be wrong.
    pub conflicts: RegSet,
}

/// Analyse the decoded section (`code` from `code_base` covers it) against
/// the registers the teardown restores.
pub fn entry_conflicts(
    program: &Program<X86_64>,
    code: &[u8],
    code_base: u64,
    restored: RegSet,
) -> EntryCheck {
    let mut f = InstructionInfoFactory::new();
    let insns = program.insns();
    let mut ips = Vec::new();
    let mut eff = Vec::new();
    let mut succ: Vec<Vec<u64>> = Vec::new();
    let mut indirect = false;
    for d in insns.iter().filter(|d| program.is_reachable(d.ip)) {
        let mut e = match decode_at(code, code_base, d.ip) {
            Some(i) => effect(&mut f, &i),
            None => Effect::default(),
        };
        if d.op.is_err() {
            // The executor stops at this instruction (native retry), so its
            // reads never feed an emulated result; its writes still count:
            // the native run before the abort may have executed it.
            e.read = RegSet::default();
        }
        let mut s = Vec::new();
        if d.flow.falls_through {
            s.push(d.ip + u64::from(d.len.max(1)));
        }
        s.extend(d.flow.targets.iter().copied());
        indirect |= d.flow.indirect && d.op.is_ok();
        ips.push(d.ip);
        eff.push(e);
        succ.push(s);
    }
    let idx = |ip: u64| ips.binary_search(&ip).ok();
    // must-written on entry to each instruction; top = ALL.
    let mut inn = vec![RegSet::ALL; ips.len()];
    if let Some(s) = idx(program.start_ip()) {
        inn[s] = RegSet::default();
    }
    if indirect {
        inn.iter_mut().for_each(|x| *x = RegSet::default());
    } else {
        let mut work: Vec<usize> = (0..ips.len()).collect();
        while let Some(i) = work.pop() {
            let out = inn[i].union(eff[i].must);
            for &t in &succ[i] {
                if let Some(j) = idx(t) {
                    let n = inn[j].inter(out);
                    if n != inn[j] {
                        inn[j] = n;
                        work.push(j);
                    }
                }
            }
        }
    }
    let mut entry_reads = RegSet::default();
    let mut modified = RegSet::default();
    for i in 0..ips.len() {
        entry_reads = entry_reads.union(eff[i].read.minus(inn[i]));
        modified = modified.union(eff[i].may);
    }
    let conflicts = entry_reads.inter(modified).minus(restored);
    EntryCheck {
        entry_reads,
        modified,
        conflicts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(code: &[u8], restored: RegSet) -> EntryCheck {
        let base = 0x1000;
        let p = Program::<X86_64>::decode(code, base, base, base + code.len() as u64).unwrap();
        entry_conflicts(&p, code, base, restored)
    }

    #[test]
    fn read_then_modified_conflicts() {
        // add %rsi,%rdi ; mov %rdi,(%rdx)  — rdi read on entry and modified.
        let c = check(&[0x48, 0x01, 0xf7, 0x48, 0x89, 0x3a], RegSet::default());
        assert_eq!(c.conflicts.gpr[7], 0xff, "{}", c.conflicts.describe());
        assert_eq!(c.conflicts.gpr[6], 0);
    }

    #[test]
    fn written_before_read_and_partial_bytes_are_fine() {
        // movb (%rsi),%al ; movb %al,(%rdi) ; mov $1,%ecx ; add %rcx,%rcx
        let c = check(
            &[
                0x8a, 0x06, 0x88, 0x07, 0xb9, 0x01, 0, 0, 0, 0x48, 0x01, 0xc9,
            ],
            RegSet::default(),
        );
        assert!(c.conflicts.is_empty(), "{}", c.conflicts.describe());
        assert_eq!(c.modified.gpr[0], 0x01);
    }

    #[test]
    fn teardown_restore_clears_conflict() {
        // inc %rsi ; movb %al,(%rsi) with teardown mov -8(%rsp),%rsi
        let code = [0x48, 0xff, 0xc6, 0x88, 0x06];
        assert!(!check(&code, RegSet::default()).conflicts.is_empty());
        let restored = teardown_restores(&[0x48, 0x8b, 0x74, 0x24, 0xf8], 0x2000);
        assert_eq!(restored.gpr[6], 0xff);
        assert!(check(&code, restored).conflicts.is_empty());
    }

    /// `shl %cl,%rdx` leaves the flags alone when %cl is 0, so the `jc`
    /// after it may read CF as it was on entry, and the `add` modifies CF:
    /// a conflict. With a constant count of 1 the shift writes CF first.
    #[test]
    fn a_shift_by_cl_does_not_surely_write_the_flags() {
        // shl %cl,%rdx ; jc +3 ; add %rax,%rax ; nop
        let by_cl = [0x48, 0xd3, 0xe2, 0x72, 0x03, 0x48, 0x01, 0xc0, 0x90];
        let c = check(&by_cl, RegSet::default());
        assert_ne!(c.conflicts.flags, 0, "{}", c.conflicts.describe());
        // shl $1,%rdx ; jc +3 ; add %rax,%rax ; nop
        let by_one = [0x48, 0xd1, 0xe2, 0x72, 0x03, 0x48, 0x01, 0xc0, 0x90];
        assert_eq!(check(&by_one, RegSet::default()).conflicts.flags, 0);
    }

    #[test]
    fn a_path_that_skips_the_write_exposes_the_read() {
        // test %rdx,%rdx ; jz +3 ; mov $0,%cl(b1 00) nop ; add %cl,(%rdi); inc %rcx
        // jz skips the write of cl, so the read of cl is an entry read.
        let code = [
            0x48, 0x85, 0xd2, 0x74, 0x02, 0xb1, 0x00, 0x00, 0x0f, 0x48, 0xff, 0xc1,
        ];
        let c = check(&code, RegSet::default());
        assert_eq!(
            c.conflicts.gpr[1] & 0x01,
            0x01,
            "{}",
            c.conflicts.describe()
        );
    }
}
