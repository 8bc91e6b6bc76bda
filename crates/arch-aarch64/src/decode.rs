//! Decoding: the raw 32-bit word's encoding fields (the ARM ARM's encoding
//! classes) decide what is supported and build the cached [`Kind`];
//! yaxpeax-arm supplies the disassembly text and a second opinion (a word
//! it cannot decode is refused even if the field decoder accepts it).
//!
//! Decoding never trusts yaxpeax-arm's operands: it accepts some reserved
//! encodings, rewrites `uxtw`/`uxtx` extended adds to `lsl`, and returns
//! `Ok` with `Opcode::Invalid` for about 2% of all words.

use rseq_emu_core::{Arch, ArchKind, DecodedInsn, Flow, Memory, Stop};
use yaxpeax_arch::{Decoder, U8Reader};
use yaxpeax_arm::armv8::a64::{InstDecoder, Opcode};

use crate::op::*;
use crate::state::A64State;

/// The aarch64 architecture.
#[derive(Debug)]
pub enum Aarch64 {}

type Decoded = Result<Kind, String>;

#[inline]
fn bits(w: u32, hi: u32, lo: u32) -> u32 {
    (w >> lo) & ((1u32 << (hi - lo + 1)) - 1)
}

#[inline]
fn bit(w: u32, b: u32) -> bool {
    (w >> b) & 1 == 1
}

/// Sign-extend the low `n` bits of `v`.
#[inline]
fn sext(v: u32, n: u32) -> i64 {
    (i64::from(v) << (64 - n)) >> (64 - n)
}

/// Register field where 31 is the zero register.
#[inline]
fn zr(r: u32) -> u8 {
    r as u8
}

/// Register field where 31 is the stack pointer.
#[inline]
fn sp(r: u32) -> u8 {
    if r == 31 {
        SP
    } else {
        r as u8
    }
}

fn no(reason: &str) -> Decoded {
    Err(reason.to_string())
}

const UNALLOCATED: &str = "unallocated or reserved encoding";

const MISALIGNED: &str =
    "instruction address not a multiple of 4: hardware raises a PC alignment fault";

/// Decode a raw instruction word at `pc` into a [`Kind`], or the reason it
/// is not emulated.
pub fn decode_word(w: u32, pc: u64) -> Decoded {
    match bits(w, 28, 25) {
        0b0000 => {
            if w >> 16 == 0 {
                no("udf: permanently undefined, raises SIGILL")
            } else if bit(w, 31) {
                no("SME instruction: outside the emulated subset")
            } else {
                no(UNALLOCATED)
            }
        }
        0b0001 | 0b0011 => no(UNALLOCATED),
        0b0010 => no("SVE instruction: outside the emulated subset"),
        0b1000 | 0b1001 => dp_imm(w, pc),
        0b1010 | 0b1011 => branch_sys(w, pc),
        0b0101 | 0b1101 => dp_reg(w),
        0b0111 | 0b1111 => no("SIMD&FP data processing: FP/SIMD arithmetic is outside the emulated subset (only SIMD&FP loads and stores are emulated)"),
        _ => load_store(w, pc),
    }
}

/// The bitmask immediate DecodeBitMasks returns, as `(wmask, tmask)`
/// truncated to `m` bits; `None` for a reserved combination.
pub fn decode_bit_masks(
    n: u32,
    imms: u32,
    immr: u32,
    immediate: bool,
    m: u32,
) -> Option<(u64, u64)> {
    let combined = (n << 6) | (!imms & 0x3f);
    if combined == 0 {
        return None;
    }
    let len = 31 - combined.leading_zeros();
    if len < 1 {
        return None;
    }
    let esize = 1u32 << len;
    if esize > m {
        return None;
    }
    let levels = esize - 1;
    if immediate && (imms & levels) == levels {
        return None;
    }
    let s = imms & levels;
    let r = immr & levels;
    let d = s.wrapping_sub(r) & levels;
    let ones = |k: u32| if k >= 64 { u64::MAX } else { (1u64 << k) - 1 };
    let emask = ones(esize);
    let welem = ones(s + 1);
    let telem = ones(d + 1);
    let welem = if r == 0 {
        welem
    } else {
        ((welem >> r) | (welem << (esize - r))) & emask
    };
    let replicate = |mut x: u64| {
        let mut w = esize;
        while w < m {
            x |= x << w;
            w *= 2;
        }
        x & ones(m)
    };
    Some((replicate(welem), replicate(telem)))
}

fn dp_imm(w: u32, pc: u64) -> Decoded {
    let sf = bit(w, 31);
    let rd = bits(w, 4, 0);
    let rn = bits(w, 9, 5);
    match bits(w, 25, 23) {
        0b000 | 0b001 => {
            let imm = sext((bits(w, 23, 5) << 2) | bits(w, 30, 29), 21);
            let value = if bit(w, 31) {
                (pc & !0xfff).wrapping_add((imm << 12) as u64)
            } else {
                pc.wrapping_add(imm as u64)
            };
            Ok(Kind::Adr { rd: zr(rd), value })
        }
        0b010 => {
            let s = bit(w, 29);
            let imm = u64::from(bits(w, 21, 10)) << if bit(w, 22) { 12 } else { 0 };
            Ok(Kind::AddSubImm {
                sf,
                sub: bit(w, 30),
                s,
                rd: if s { zr(rd) } else { sp(rd) },
                rn: sp(rn),
                imm,
            })
        }
        0b011 => {
            no("add/sub immediate with tags or min/max immediate: outside the emulated subset")
        }
        0b100 => {
            let n = bits(w, 22, 22);
            if !sf && n == 1 {
                return no("reserved logical immediate (N=1 in a 32-bit form)");
            }
            let Some((imm, _)) = decode_bit_masks(
                n,
                bits(w, 15, 10),
                bits(w, 21, 16),
                true,
                if sf { 64 } else { 32 },
            ) else {
                return no("reserved logical immediate (all-ones element or no element size)");
            };
            let op = match bits(w, 30, 29) {
                0 => LogicOp::And,
                1 => LogicOp::Orr,
                2 => LogicOp::Eor,
                _ => LogicOp::Ands,
            };
            Ok(Kind::LogicImm {
                sf,
                op,
                rd: if op == LogicOp::Ands { zr(rd) } else { sp(rd) },
                rn: zr(rn),
                imm,
            })
        }
        0b101 => {
            let opc = bits(w, 30, 29);
            let hw = bits(w, 22, 21);
            if opc == 1 || (!sf && hw >= 2) {
                return no(UNALLOCATED);
            }
            Ok(Kind::MovWide {
                sf,
                opc: opc as u8,
                rd: zr(rd),
                imm16: bits(w, 20, 5) as u16,
                pos: (hw * 16) as u8,
            })
        }
        0b110 => {
            let opc = bits(w, 30, 29);
            let n = bits(w, 22, 22);
            let immr = bits(w, 21, 16);
            let imms = bits(w, 15, 10);
            if opc == 3 || (sf && n == 0) || (!sf && (n == 1 || immr >= 32 || imms >= 32)) {
                return no(
                    "unallocated bitfield encoding (N, immr or imms out of range for the size)",
                );
            }
            let Some((wmask, tmask)) =
                decode_bit_masks(n, imms, immr, false, if sf { 64 } else { 32 })
            else {
                return no(UNALLOCATED);
            };
            let op = match opc {
                0 => BfmOp::Sbfm,
                1 => BfmOp::Bfm,
                _ => BfmOp::Ubfm,
            };
            Ok(Kind::Bitfield {
                sf,
                op,
                rd: zr(rd),
                rn: zr(rn),
                r: immr as u8,
                s_bit: imms as u8,
                wmask,
                tmask,
            })
        }
        _ => {
            let n = bit(w, 22);
            let imms = bits(w, 15, 10);
            if bits(w, 30, 29) != 0 || bit(w, 21) || n != sf || (!sf && imms >= 32) {
                return no("unallocated extract encoding");
            }
            Ok(Kind::Extr {
                sf,
                rd: zr(rd),
                rn: zr(rn),
                rm: zr(bits(w, 20, 16)),
                lsb: imms as u8,
            })
        }
    }
}

fn shift_of(v: u32) -> Shift {
    match v & 3 {
        0 => Shift::Lsl,
        1 => Shift::Lsr,
        2 => Shift::Asr,
        _ => Shift::Ror,
    }
}

fn dp_reg(w: u32) -> Decoded {
    let sf = bit(w, 31);
    let rd = bits(w, 4, 0);
    let rn = bits(w, 9, 5);
    let rm = bits(w, 20, 16);
    if !bit(w, 28) {
        let imm6 = bits(w, 15, 10);
        if !bit(w, 24) {
            // Logical (shifted register).
            if !sf && imm6 >= 32 {
                return no(
                    "reserved: 32-bit shifted-register form with a shift amount of 32 or more",
                );
            }
            let op = match bits(w, 30, 29) {
                0 => LogicOp::And,
                1 => LogicOp::Orr,
                2 => LogicOp::Eor,
                _ => LogicOp::Ands,
            };
            return Ok(Kind::LogicShift {
                sf,
                op,
                invert: bit(w, 21),
                rd: zr(rd),
                rn: zr(rn),
                rm: zr(rm),
                shift: shift_of(bits(w, 23, 22)),
                amount: imm6 as u8,
            });
        }
        if !bit(w, 21) {
            let shift = bits(w, 23, 22);
            if shift == 3 {
                return no("reserved: add/sub shifted register with shift type ror");
            }
            if !sf && imm6 >= 32 {
                return no(
                    "reserved: 32-bit shifted-register form with a shift amount of 32 or more",
                );
            }
            return Ok(Kind::AddSubShift {
                sf,
                sub: bit(w, 30),
                s: bit(w, 29),
                rd: zr(rd),
                rn: zr(rn),
                rm: zr(rm),
                shift: shift_of(shift),
                amount: imm6 as u8,
            });
        }
        let imm3 = bits(w, 12, 10);
        if bits(w, 23, 22) != 0 || imm3 > 4 {
            return no("reserved add/sub extended-register encoding (opt != 0 or shift > 4)");
        }
        let s = bit(w, 29);
        return Ok(Kind::AddSubExt {
            sf,
            sub: bit(w, 30),
            s,
            rd: if s { zr(rd) } else { sp(rd) },
            rn: sp(rn),
            rm: zr(rm),
            ext: Extend::from_option(bits(w, 15, 13)),
            shift: imm3 as u8,
        });
    }
    if bits(w, 28, 24) == 0b11011 {
        return dp3(w);
    }
    match bits(w, 24, 21) {
        0b0000 => {
            if bits(w, 15, 10) != 0 {
                return no("rmif/setf/addpt-class instruction: outside the emulated subset");
            }
            Ok(Kind::AddSubCarry {
                sf,
                sub: bit(w, 30),
                s: bit(w, 29),
                rd: zr(rd),
                rn: zr(rn),
                rm: zr(rm),
            })
        }
        0b0010 => {
            if !bit(w, 29) || bit(w, 10) || bit(w, 4) {
                return no(UNALLOCATED);
            }
            Ok(Kind::CondCmp {
                sf,
                sub: bit(w, 30),
                cond: bits(w, 15, 12) as u8,
                nzcv: bits(w, 3, 0) as u8,
                rn: zr(rn),
                rm: rm as u8,
                imm: bit(w, 11),
            })
        }
        0b0100 => {
            if bit(w, 29) || bit(w, 11) {
                return no(UNALLOCATED);
            }
            let op = match (bit(w, 30), bit(w, 10)) {
                (false, false) => CselOp::Csel,
                (false, true) => CselOp::Csinc,
                (true, false) => CselOp::Csinv,
                (true, true) => CselOp::Csneg,
            };
            Ok(Kind::CondSel {
                sf,
                op,
                cond: bits(w, 15, 12) as u8,
                rd: zr(rd),
                rn: zr(rn),
                rm: zr(rm),
            })
        }
        0b0110 => {
            if bit(w, 29) {
                return no(UNALLOCATED);
            }
            let opcode = bits(w, 15, 10);
            if bit(w, 30) {
                if rm != 0 {
                    return no(
                        "pointer-authentication data processing: outside the emulated subset",
                    );
                }
                let op = match (opcode, sf) {
                    (0, _) => Unary::Rbit,
                    (1, _) => Unary::Rev16,
                    (2, false) => Unary::Rev,
                    (2, true) => Unary::Rev32,
                    (3, true) => Unary::Rev,
                    (4, _) => Unary::Clz,
                    (5, _) => Unary::Cls,
                    _ => return no("one-source data processing outside the emulated subset (ctz/cnt/abs or unallocated)"),
                };
                return Ok(Kind::Unary {
                    sf,
                    op,
                    rd: zr(rd),
                    rn: zr(rn),
                });
            }
            match opcode {
                2 | 3 => Ok(Kind::Div {
                    sf,
                    signed: opcode == 3,
                    rd: zr(rd),
                    rn: zr(rn),
                    rm: zr(rm),
                }),
                8..=11 => Ok(Kind::ShiftVar {
                    sf,
                    shift: shift_of(opcode),
                    rd: zr(rd),
                    rn: zr(rn),
                    rm: zr(rm),
                }),
                _ => no("two-source data processing outside the emulated subset (crc32, pointer authentication, min/max, tags)"),
            }
        }
        _ => no("data processing (register) outside the emulated subset"),
    }
}

fn dp3(w: u32) -> Decoded {
    let sf = bit(w, 31);
    let rd = zr(bits(w, 4, 0));
    let rn = zr(bits(w, 9, 5));
    let ra = zr(bits(w, 14, 10));
    let rm = zr(bits(w, 20, 16));
    let o0 = bit(w, 15);
    if bits(w, 30, 29) != 0 {
        return no(UNALLOCATED);
    }
    match (bits(w, 23, 21), sf) {
        (0, _) => Ok(Kind::MulAdd {
            sf,
            sub: o0,
            rd,
            rn,
            rm,
            ra,
        }),
        (1, true) | (5, true) => Ok(Kind::MulLong {
            signed: bits(w, 23, 21) == 1,
            sub: o0,
            rd,
            rn,
            rm,
            ra,
        }),
        (2, true) | (6, true) if !o0 => {
            if ra != 31 {
                return no(
                    "smulh/umulh with Ra != 31: should-be-one field, CONSTRAINED UNPREDICTABLE",
                );
            }
            Ok(Kind::MulHigh {
                signed: bits(w, 23, 21) == 2,
                rd,
                rn,
                rm,
            })
        }
        _ => no(UNALLOCATED),
    }
}

fn branch_sys(w: u32, pc: u64) -> Decoded {
    let rel = |imm: i64| pc.wrapping_add((imm << 2) as u64);
    if w & 0x7c00_0000 == 0x1400_0000 {
        return Ok(Kind::Branch {
            target: rel(sext(bits(w, 25, 0), 26)),
            link: bit(w, 31),
        });
    }
    if w & 0x7e00_0000 == 0x3400_0000 {
        return Ok(Kind::CompareBranch {
            sf: bit(w, 31),
            nz: bit(w, 24),
            rt: zr(bits(w, 4, 0)),
            target: rel(sext(bits(w, 23, 5), 19)),
        });
    }
    if w & 0x7e00_0000 == 0x3600_0000 {
        return Ok(Kind::TestBranch {
            nz: bit(w, 24),
            bit: ((bits(w, 31, 31) << 5) | bits(w, 23, 19)) as u8,
            rt: zr(bits(w, 4, 0)),
            target: rel(sext(bits(w, 18, 5), 14)),
        });
    }
    if w & 0xff00_0010 == 0x5400_0000 {
        return Ok(Kind::BranchCond {
            cond: bits(w, 3, 0) as u8,
            target: rel(sext(bits(w, 23, 5), 19)),
        });
    }
    if w & 0xff00_0000 == 0xd400_0000 {
        return no("exception generation (svc/hvc/smc/brk/hlt): leaves the section to the kernel or a debugger");
    }
    if w & 0xfe00_0000 == 0xd600_0000 {
        let rn = zr(bits(w, 9, 5));
        return match w & 0xffff_fc1f {
            0xd61f_0000 | 0xd65f_0000 => Ok(Kind::BranchReg { rn, link: false }),
            0xd63f_0000 => Ok(Kind::BranchReg { rn, link: true }),
            _ => no("branch to register with pointer authentication or eret/drps: outside the emulated subset"),
        };
    }
    if w & 0xffc0_0000 == 0xd500_0000 {
        return system(w);
    }
    no("branch encoding outside the emulated subset (bc.cond, compare-and-branch or unallocated)")
}

fn system(w: u32) -> Decoded {
    let rt = zr(bits(w, 4, 0));
    if w & 0xffff_f01f == 0xd503_201f {
        return match bits(w, 11, 5) {
            0 | 1 | 0b001_0100 | 0b010_0000 | 0b010_0010 | 0b010_0100 | 0b010_0110 => Ok(Kind::Nop),
            _ => no("hint with an architectural effect or outside the subset (pointer authentication, wfe/wfi, sev, …); only nop, yield, csdb and bti are emulated"),
        };
    }
    if w & 0xffff_f01f == 0xd503_301f {
        return match bits(w, 7, 5) {
            0b100..=0b110 => Ok(Kind::Nop),
            _ => no("barrier-class instruction outside dmb/dsb/isb (clrex, sb, dsb nXS, tstart…)"),
        };
    }
    match w & 0xffff_ffe0 {
        0xd53b_d040 => Ok(Kind::MrsTpidr { rt }),
        0xd53b_4200 => Ok(Kind::MrsNzcv { rt }),
        0xd51b_4200 => Ok(Kind::MsrNzcv { rt }),
        _ => no("system register or system instruction other than mrs tpidr_el0, mrs/msr nzcv, hints and barriers"),
    }
}

/// What a single-register load/store encoding (size, V, opc) does:
/// `Ok(None)` is a prefetch.
fn ldst_op(size: u32, v: bool, opc: u32) -> Result<Option<(MemOp, u8)>, String> {
    let s = size as u8;
    if v {
        return match (size, opc) {
            (0, 2) => Ok(Some((MemOp::StoreV, 4))),
            (0, 3) => Ok(Some((MemOp::LoadV, 4))),
            (_, 0) => Ok(Some((MemOp::StoreV, s))),
            (_, 1) => Ok(Some((MemOp::LoadV, s))),
            _ => Err(UNALLOCATED.into()),
        };
    }
    match (size, opc) {
        (_, 0) => Ok(Some((MemOp::Store, s))),
        (_, 1) => Ok(Some((MemOp::Load, s))),
        (3, 2) => Ok(None),
        (0..=2, 2) => Ok(Some((MemOp::LoadSigned64, s))),
        (0 | 1, 3) => Ok(Some((MemOp::LoadSigned32, s))),
        _ => Err(UNALLOCATED.into()),
    }
}

const WB_OVERLAP: &str =
    "writeback with the base register equal to the data register: CONSTRAINED UNPREDICTABLE";

fn load_store(w: u32, pc: u64) -> Decoded {
    let rt = bits(w, 4, 0);
    let rn = bits(w, 9, 5);
    let size = bits(w, 31, 30);
    let v = bit(w, 26);
    // Exclusive / ordered / compare-and-swap.
    if w & 0x3f00_0000 == 0x0800_0000 {
        if bit(w, 23) && !bit(w, 21) && bit(w, 15) {
            if bits(w, 20, 16) != 31 || bits(w, 14, 10) != 31 {
                return no("ldar/stlr with Rs or Rt2 not 31: should-be-one field, CONSTRAINED UNPREDICTABLE");
            }
            let load = bit(w, 22);
            return Ok(Kind::Mem {
                op: Access::new(if load { MemOp::Load } else { MemOp::Store }, size as u8),
                size: size as u8,
                rt: zr(rt),
                rn: sp(rn),
                addr: Addr::Ordered,
            });
        }
        if bit(w, 23) && !bit(w, 21) {
            return no("ldlar/stllr (LORegion ordering): outside the emulated subset");
        }
        if bit(w, 23) {
            return no("compare-and-swap (cas/casp): an atomic whose cross-CPU semantics the per-CPU commit cannot give");
        }
        return no("exclusive load/store (ldxr/stxr/ldaxr/stlxr/ldxp/stxp): needs the exclusive monitor, cross-CPU semantics the per-CPU commit cannot give");
    }
    // Load register (literal).
    if w & 0x3b00_0000 == 0x1800_0000 {
        let opc = bits(w, 31, 30);
        let (op, size) = match (v, opc) {
            (false, 0) => (MemOp::Load, 2),
            (false, 1) => (MemOp::Load, 3),
            (false, 2) => (MemOp::LoadSigned64, 2),
            (false, _) => return Ok(Kind::Nop),
            (true, 0) => (MemOp::LoadV, 2),
            (true, 1) => (MemOp::LoadV, 3),
            (true, 2) => (MemOp::LoadV, 4),
            (true, _) => return no(UNALLOCATED),
        };
        let target = pc.wrapping_add((sext(bits(w, 23, 5), 19) << 2) as u64);
        return Ok(Kind::Mem {
            op: Access::new(op, size),
            size,
            rt: zr(rt),
            rn: SP,
            addr: Addr::Literal(target),
        });
    }
    // Load/store pair.
    if w & 0x3800_0000 == 0x2800_0000 {
        return pair(w);
    }
    if w & 0x3800_0000 != 0x3800_0000 {
        return no("load/store class outside the emulated subset (SIMD structure loads, memory tagging, RCpc unscaled, memcpy/memset…)");
    }
    let opc = bits(w, 23, 22);
    let kind = |op: Option<(MemOp, u8)>, addr: Addr| match op {
        None => Ok(Kind::Nop),
        Some((op, size)) => Ok(Kind::Mem {
            op: Access::new(op, size),
            size,
            rt: zr(rt),
            rn: sp(rn),
            addr,
        }),
    };
    if bit(w, 24) {
        let op = ldst_op(size, v, opc)?;
        let scale = op.map_or(3, |(_, s)| s);
        return kind(op, Addr::Offset(i64::from(bits(w, 21, 10)) << scale));
    }
    if !bit(w, 21) {
        let imm = sext(bits(w, 20, 12), 9);
        let addr = match bits(w, 11, 10) {
            0 => Addr::Offset(imm),
            1 => Addr::Post(imm),
            3 => Addr::Pre(imm),
            _ => return no("unprivileged load/store (ldtr/sttr): outside the emulated subset"),
        };
        let op = ldst_op(size, v, opc)?;
        if op.is_none() && addr != Addr::Offset(imm) {
            return no(UNALLOCATED);
        }
        if !v && !matches!(addr, Addr::Offset(_)) && rn == rt && rn != 31 {
            return no(WB_OVERLAP);
        }
        return kind(op, addr);
    }
    match bits(w, 11, 10) {
        0b10 => {
            let option = bits(w, 15, 13);
            if option & 2 == 0 {
                return no("reserved register-offset extend option");
            }
            let op = ldst_op(size, v, opc)?;
            let scale = op.map_or(3, |(_, s)| s);
            kind(
                op,
                Addr::Reg {
                    rm: zr(bits(w, 20, 16)),
                    ext: Extend::from_option(option),
                    shift: if bit(w, 12) { scale } else { 0 },
                },
            )
        }
        0b00 => {
            if w & 0x3fff_fc00 == 0x38bf_c000 {
                return Ok(Kind::Mem {
                    op: Access::new(MemOp::Load, size as u8),
                    size: size as u8,
                    rt: zr(rt),
                    rn: sp(rn),
                    addr: Addr::Ordered,
                });
            }
            no("LSE atomic memory operation (ld<op>/st<op>/swp/ldapr variants): cross-CPU semantics the per-CPU commit cannot give")
        }
        _ => no("pointer-authenticated load (ldraa/ldrab): outside the emulated subset"),
    }
}

fn pair(w: u32) -> Decoded {
    let opc = bits(w, 31, 30);
    let v = bit(w, 26);
    let load = bit(w, 22);
    let idx = bits(w, 24, 23);
    let rt = bits(w, 4, 0);
    let rn = bits(w, 9, 5);
    let rt2 = bits(w, 14, 10);
    let (op, size) = match (v, opc, load) {
        (false, 0, false) => (PairOp::Store, 2),
        (false, 0, true) => (PairOp::Load, 2),
        (false, 1, true) if idx != 0 => (PairOp::LoadSw, 2),
        (false, 1, false) => return no("stgp (memory tagging): outside the emulated subset"),
        (false, 2, false) => (PairOp::Store, 3),
        (false, 2, true) => (PairOp::Load, 3),
        (true, 0..=2, false) => (PairOp::StoreV, 2 + opc as u8),
        (true, 0..=2, true) => (PairOp::LoadV, 2 + opc as u8),
        _ => return no(
            "load/store pair encoding outside the emulated subset (unallocated or ldiapp/stilp)",
        ),
    };
    let mode = match idx {
        0 | 2 => PairMode::Offset,
        1 => PairMode::Post,
        _ => PairMode::Pre,
    };
    if load && rt == rt2 {
        return no("load pair with Rt == Rt2: CONSTRAINED UNPREDICTABLE");
    }
    if !v && mode != PairMode::Offset && (rt == rn || rt2 == rn) && rn != 31 {
        return no(WB_OVERLAP);
    }
    Ok(Kind::Pair {
        op,
        size,
        rt: zr(rt),
        rt2: zr(rt2),
        rn: sp(rn),
        offset: sext(bits(w, 21, 15), 7) << size,
        mode,
    })
}

/// Control flow of any word, from its encoding fields.
fn flow(w: u32, pc: u64) -> Flow {
    let rel = |imm: i64| pc.wrapping_add((imm << 2) as u64);
    let go = |falls_through: bool, t: u64| Flow {
        falls_through,
        targets: vec![t],
        indirect: false,
    };
    if w & 0x7c00_0000 == 0x1400_0000 {
        return go(bit(w, 31), rel(sext(bits(w, 25, 0), 26)));
    }
    if w & 0x7e00_0000 == 0x3400_0000 || w & 0xff00_0000 == 0x5400_0000 {
        return go(true, rel(sext(bits(w, 23, 5), 19)));
    }
    if w & 0x7e00_0000 == 0x3600_0000 {
        return go(true, rel(sext(bits(w, 18, 5), 14)));
    }
    let straight = Flow {
        falls_through: true,
        targets: vec![],
        indirect: false,
    };
    if w & 0xfe00_0000 == 0xd600_0000 {
        return match bits(w, 24, 21) {
            0b0001 | 0b1001 => straight,
            _ => Flow {
                falls_through: false,
                targets: vec![],
                indirect: true,
            },
        };
    }
    // brk, hlt and udf do not fall through.
    if w & 0xffe0_001f == 0xd420_0000 || w & 0xffe0_001f == 0xd440_0000 || w >> 16 == 0 {
        return Flow::default();
    }
    straight
}

impl Aarch64 {
    /// Decode one instruction into a cached [`Op`] or the reason it is
    /// refused (the same as [`Arch::decode`]'s `op`).
    ///
    /// ```
    /// use rseq_emu_aarch64::Aarch64;
    /// // add x0, x1, #1
    /// assert!(Aarch64::decode_op(0x9100_0420, 0x1000).is_ok());
    /// // stxr w2, x1, [x0]
    /// assert!(Aarch64::decode_op(0xc802_7c01, 0x1000).is_err());
    /// ```
    pub fn decode_op(word: u32, pc: u64) -> Result<Op, String> {
        if pc & 3 != 0 {
            return Err(MISALIGNED.into());
        }
        let kind = decode_word(word, pc)?;
        if !yaxpeax_accepts(word) {
            return Err(
                "yaxpeax-arm does not decode this word: refused rather than trusted".into(),
            );
        }
        Ok(Op { word, pc, kind })
    }
}

fn yaxpeax(word: u32) -> Option<yaxpeax_arm::armv8::a64::Instruction> {
    let b = word.to_le_bytes();
    let mut reader = U8Reader::new(&b);
    match InstDecoder::default().decode(&mut reader) {
        Ok(insn) if insn.opcode != Opcode::Invalid => Some(insn),
        _ => None,
    }
}

fn yaxpeax_accepts(word: u32) -> bool {
    yaxpeax(word).is_some()
}

impl Arch for Aarch64 {
    const KIND: ArchKind = ArchKind::Aarch64;
    const HAS_EXECUTOR: bool = true;
    type State = A64State;
    type Op = Op;

    fn decode(bytes: &[u8], ip: u64) -> DecodedInsn<Op> {
        let Some(w) = bytes.get(..4) else {
            return DecodedInsn {
                ip,
                len: 4,
                text: "(truncated)".into(),
                op: Err("fewer than 4 bytes of code".into()),
                flow: Flow::default(),
            };
        };
        let word = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        let Some(insn) = yaxpeax(word) else {
            let reason = match decode_word(word, ip) {
                Err(r) => r,
                Ok(_) => {
                    "yaxpeax-arm does not decode this word: refused rather than trusted".into()
                }
            };
            return DecodedInsn {
                ip,
                len: 4,
                text: format!(".word 0x{word:08x}"),
                op: Err(reason),
                flow: Flow::default(),
            };
        };
        let op = if ip & 3 != 0 {
            Err(MISALIGNED.into())
        } else {
            decode_word(word, ip).map(|kind| Op { word, pc: ip, kind })
        };
        DecodedInsn {
            ip,
            len: 4,
            text: insn.to_string(),
            op,
            flow: flow(word, ip),
        }
    }

    #[inline]
    fn execute<M: Memory + ?Sized>(op: &Op, st: &mut A64State, mem: &mut M) -> Result<(), Stop> {
        crate::exec::execute(op, st, mem)
    }
}
