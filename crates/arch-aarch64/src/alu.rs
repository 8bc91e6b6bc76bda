//! Integer data processing, written after the ARM ARM pseudo-code
//! (AddWithCarry, ShiftReg, ExtendReg, DecodeBitMasks users, …).

use crate::exec::{cond_holds, get, set, trunc};
use crate::op::{BfmOp, CselOp, Extend, Kind, LogicOp, Shift, Unary};
use crate::state::A64State;

/// AddWithCarry(x, y, carry) at the operation size: the truncated result
/// and NZCV in bits 31..28.
#[inline(always)]
pub fn add_with_carry(sf: bool, x: u64, y: u64, carry: bool) -> (u64, u32) {
    let c = u64::from(carry);
    if sf {
        let (r1, c1) = x.overflowing_add(y);
        let (r, c2) = r1.overflowing_add(c);
        let v = ((x ^ r) & (y ^ r)) >> 63;
        (r, nz64(r) | (u32::from(c1 | c2) << 29) | ((v as u32) << 28))
    } else {
        let (x, y) = (x & 0xffff_ffff, y & 0xffff_ffff);
        let sum = x + y + c;
        let r = sum & 0xffff_ffff;
        let v = ((x ^ r) & (y ^ r)) >> 31 & 1;
        (
            r,
            nz32(r) | (((sum >> 32) as u32) << 29) | ((v as u32) << 28),
        )
    }
}

#[inline(always)]
fn nz64(r: u64) -> u32 {
    (((r >> 63) as u32) << 31) | (u32::from(r == 0) << 30)
}

#[inline(always)]
fn nz32(r: u64) -> u32 {
    ((((r >> 31) & 1) as u32) << 31) | (u32::from(r & 0xffff_ffff == 0) << 30)
}

/// N and Z of a result of the operation size, C and V clear.
#[inline(always)]
fn nz(sf: bool, r: u64) -> u32 {
    if sf {
        nz64(r)
    } else {
        nz32(r)
    }
}

/// ShiftReg(): shift a value of the operation size by `amount` (< size).
#[inline(always)]
pub fn shift(sf: bool, v: u64, kind: Shift, amount: u32) -> u64 {
    if sf {
        match kind {
            Shift::Lsl => v << amount,
            Shift::Lsr => v >> amount,
            Shift::Asr => ((v as i64) >> amount) as u64,
            Shift::Ror => v.rotate_right(amount),
        }
    } else {
        let w = v as u32;
        u64::from(match kind {
            Shift::Lsl => w << amount,
            Shift::Lsr => w >> amount,
            Shift::Asr => ((w as i32) >> amount) as u32,
            Shift::Ror => w.rotate_right(amount),
        })
    }
}

/// ExtendReg() without the final truncation (callers truncate).
#[inline(always)]
pub fn extend(v: u64, ext: Extend, shift: u8) -> u64 {
    let e = match ext {
        Extend::Uxtb => v & 0xff,
        Extend::Uxth => v & 0xffff,
        Extend::Uxtw => v & 0xffff_ffff,
        Extend::Uxtx | Extend::Sxtx => v,
        Extend::Sxtb => v as i8 as i64 as u64,
        Extend::Sxth => v as i16 as i64 as u64,
        Extend::Sxtw => v as i32 as i64 as u64,
    };
    e << shift
}

/// The second AddWithCarry operand and carry-in of an add or a subtract.
#[inline(always)]
fn operand(sub: bool, y: u64) -> (u64, bool) {
    if sub {
        (!y, true)
    } else {
        (y, false)
    }
}

#[inline(always)]
fn add_sub(st: &mut A64State, sf: bool, s: bool, rd: u8, x: u64, (y, c): (u64, bool)) {
    if s {
        let (r, flags) = add_with_carry(sf, x, y, c);
        st.nzcv = flags;
        set(st, rd, r);
    } else {
        set(
            st,
            rd,
            trunc(sf, x.wrapping_add(y).wrapping_add(u64::from(c))),
        );
    }
}

/// Execute a data-processing [`Kind`]; other kinds are not passed here.
#[inline(always)]
pub fn execute(k: &Kind, st: &mut A64State) {
    match *k {
        Kind::AddSubImm {
            sf,
            sub,
            s,
            rd,
            rn,
            imm,
        } => {
            let x = get(st, rn);
            add_sub(st, sf, s, rd, x, operand(sub, imm));
        }
        Kind::AddSubShift {
            sf,
            sub,
            s,
            rd,
            rn,
            rm,
            shift: sh,
            amount,
        } => {
            let x = get(st, rn);
            let y = shift(sf, get(st, rm), sh, u32::from(amount));
            add_sub(st, sf, s, rd, x, operand(sub, y));
        }
        Kind::AddSubExt {
            sf,
            sub,
            s,
            rd,
            rn,
            rm,
            ext,
            shift: sh,
        } => {
            let x = get(st, rn);
            let y = trunc(sf, extend(get(st, rm), ext, sh));
            add_sub(st, sf, s, rd, x, operand(sub, y));
        }
        Kind::AddSubCarry {
            sf,
            sub,
            s,
            rd,
            rn,
            rm,
        } => {
            let x = get(st, rn);
            let y = get(st, rm);
            let c = st.nzcv >> 29 & 1 == 1;
            add_sub(st, sf, s, rd, x, (if sub { !y } else { y }, c));
        }
        Kind::LogicImm {
            sf,
            op,
            rd,
            rn,
            imm,
        } => {
            let x = get(st, rn);
            logic(st, sf, op, rd, x, imm);
        }
        Kind::LogicShift {
            sf,
            op,
            invert,
            rd,
            rn,
            rm,
            shift: sh,
            amount,
        } => {
            let x = get(st, rn);
            let mut y = shift(sf, get(st, rm), sh, u32::from(amount));
            if invert {
                y = !y;
            }
            logic(st, sf, op, rd, x, y);
        }
        Kind::MovWide {
            sf,
            opc,
            rd,
            imm16,
            pos,
        } => {
            let imm = u64::from(imm16) << pos;
            let r = match opc {
                0 => !imm,
                2 => imm,
                _ => (get(st, rd) & !(0xffffu64 << pos)) | imm,
            };
            set(st, rd, trunc(sf, r));
        }
        Kind::Bitfield {
            sf,
            op,
            rd,
            rn,
            r,
            s_bit,
            wmask,
            tmask,
        } => {
            let src = get(st, rn);
            let rot = shift(sf, src, Shift::Ror, u32::from(r));
            let bot = rot & wmask;
            let res = match op {
                BfmOp::Ubfm => bot & tmask,
                BfmOp::Sbfm => {
                    let top = if src >> s_bit & 1 == 1 { u64::MAX } else { 0 };
                    (top & !tmask) | (bot & tmask)
                }
                BfmOp::Bfm => {
                    let dst = get(st, rd);
                    let bot = (dst & !wmask) | (rot & wmask);
                    (dst & !tmask) | (bot & tmask)
                }
            };
            set(st, rd, trunc(sf, res));
        }
        Kind::Extr {
            sf,
            rd,
            rn,
            rm,
            lsb,
        } => {
            let hi = get(st, rn);
            let lo = get(st, rm);
            let r = if sf {
                if lsb == 0 {
                    lo
                } else {
                    (lo >> lsb) | (hi << (64 - lsb))
                }
            } else {
                let c = ((hi & 0xffff_ffff) << 32) | (lo & 0xffff_ffff);
                (c >> lsb) & 0xffff_ffff
            };
            set(st, rd, r);
        }
        Kind::ShiftVar {
            sf,
            shift: sh,
            rd,
            rn,
            rm,
        } => {
            let amount = (get(st, rm) % if sf { 64 } else { 32 }) as u32;
            let r = shift(sf, get(st, rn), sh, amount);
            set(st, rd, r);
        }
        Kind::Div {
            sf,
            signed,
            rd,
            rn,
            rm,
        } => {
            let (n, m) = (get(st, rn), get(st, rm));
            let r = match (sf, signed) {
                (true, false) => n.checked_div(m).unwrap_or(0),
                (true, true) => {
                    if m == 0 {
                        0
                    } else {
                        (n as i64).wrapping_div(m as i64) as u64
                    }
                }
                (false, false) => u64::from((n as u32).checked_div(m as u32).unwrap_or(0)),
                (false, true) => {
                    if m as u32 == 0 {
                        0
                    } else {
                        u64::from((n as i32).wrapping_div(m as i32) as u32)
                    }
                }
            };
            set(st, rd, r);
        }
        Kind::MulAdd {
            sf,
            sub,
            rd,
            rn,
            rm,
            ra,
        } => {
            let p = get(st, rn).wrapping_mul(get(st, rm));
            let a = get(st, ra);
            let r = if sub {
                a.wrapping_sub(p)
            } else {
                a.wrapping_add(p)
            };
            set(st, rd, trunc(sf, r));
        }
        Kind::MulLong {
            signed,
            sub,
            rd,
            rn,
            rm,
            ra,
        } => {
            let (n, m) = (get(st, rn), get(st, rm));
            let p = if signed {
                (i64::from(n as i32) * i64::from(m as i32)) as u64
            } else {
                (n & 0xffff_ffff) * (m & 0xffff_ffff)
            };
            let a = get(st, ra);
            let r = if sub {
                a.wrapping_sub(p)
            } else {
                a.wrapping_add(p)
            };
            set(st, rd, r);
        }
        Kind::MulHigh { signed, rd, rn, rm } => {
            let (n, m) = (get(st, rn), get(st, rm));
            let r = if signed {
                ((i128::from(n as i64) * i128::from(m as i64)) >> 64) as u64
            } else {
                ((u128::from(n) * u128::from(m)) >> 64) as u64
            };
            set(st, rd, r);
        }
        Kind::Unary { sf, op, rd, rn } => {
            let v = get(st, rn);
            let r = if sf {
                match op {
                    Unary::Rbit => v.reverse_bits(),
                    Unary::Rev16 => {
                        ((v >> 8) & 0x00ff_00ff_00ff_00ff) | ((v & 0x00ff_00ff_00ff_00ff) << 8)
                    }
                    Unary::Rev32 => {
                        let s = v.swap_bytes();
                        s.rotate_left(32)
                    }
                    Unary::Rev => v.swap_bytes(),
                    Unary::Clz => u64::from(v.leading_zeros()),
                    Unary::Cls => u64::from((v ^ ((v as i64 >> 1) as u64)).leading_zeros() - 1),
                }
            } else {
                let w = v as u32;
                u64::from(match op {
                    Unary::Rbit => w.reverse_bits(),
                    Unary::Rev16 => ((w >> 8) & 0x00ff_00ff) | ((w & 0x00ff_00ff) << 8),
                    Unary::Rev32 | Unary::Rev => w.swap_bytes(),
                    Unary::Clz => w.leading_zeros(),
                    Unary::Cls => (w ^ ((w as i32 >> 1) as u32)).leading_zeros() - 1,
                })
            };
            set(st, rd, r);
        }
        Kind::CondSel {
            sf,
            op,
            cond,
            rd,
            rn,
            rm,
        } => {
            let r = if cond_holds(st.nzcv, cond) {
                get(st, rn)
            } else {
                let m = get(st, rm);
                match op {
                    CselOp::Csel => m,
                    CselOp::Csinc => m.wrapping_add(1),
                    CselOp::Csinv => !m,
                    CselOp::Csneg => m.wrapping_neg(),
                }
            };
            set(st, rd, trunc(sf, r));
        }
        Kind::CondCmp {
            sf,
            sub,
            cond,
            nzcv,
            rn,
            rm,
            imm,
        } => {
            if cond_holds(st.nzcv, cond) {
                let x = get(st, rn);
                let y = if imm { u64::from(rm) } else { get(st, rm) };
                let (y, c) = operand(sub, y);
                st.nzcv = add_with_carry(sf, x, y, c).1;
            } else {
                st.nzcv = u32::from(nzcv) << 28;
            }
        }
        Kind::Adr { rd, value } => set(st, rd, value),
        _ => {}
    }
}

#[inline(always)]
fn logic(st: &mut A64State, sf: bool, op: LogicOp, rd: u8, x: u64, y: u64) {
    let r = trunc(
        sf,
        match op {
            LogicOp::And | LogicOp::Ands => x & y,
            LogicOp::Orr => x | y,
            LogicOp::Eor => x ^ y,
        },
    );
    if op == LogicOp::Ands {
        st.nzcv = nz(sf, r);
    }
    set(st, rd, r);
}
