//! Integer arithmetic and logic: add adc sub sbb cmp and or xor test,
//! inc dec neg not, imul (2/3 operands), clc stc cmc.

use rseq_emu_core::{Memory, Stop};

use crate::decode::{Kind, Op};
use crate::eflags::{self, mask, merge, sext};
use crate::exec::{dest, read, read_dest, write_dest};
use crate::flags::{CF, OF, STATUS};
use crate::state::X86State;

/// The two-operand ALU group. Reads both operands, computes, stores (if the
/// operation writes), then updates flags.
#[inline]
pub fn binary<M: Memory + ?Sized>(op: &Op, st: &mut X86State, mem: &mut M) -> Result<(), Stop> {
    let s = op.size;
    let d = dest(&op.dst, st)?;
    let a = read_dest(d, st, mem)?;
    let b = read(&op.src, st, mem)? & mask(s);
    let cf = st.rflags & CF;
    let (res, f) = match op.kind {
        Kind::Add => eflags::add(a, b, 0, s),
        Kind::Adc => eflags::add(a, b, cf, s),
        Kind::Sub | Kind::Cmp => eflags::sub(a, b, 0, s),
        Kind::Sbb => eflags::sub(a, b, cf, s),
        Kind::And | Kind::Test => {
            let r = a & b;
            (r, eflags::logic(r, s))
        }
        Kind::Or => {
            let r = a | b;
            (r, eflags::logic(r, s))
        }
        _ => {
            let r = a ^ b;
            (r, eflags::logic(r, s))
        }
    };
    if !matches!(op.kind, Kind::Cmp | Kind::Test) {
        write_dest(d, st, mem, res)?;
    }
    st.rflags = merge(st.rflags, f, STATUS);
    Ok(())
}

/// inc, dec, neg, not.
#[inline]
pub fn unary<M: Memory + ?Sized>(op: &Op, st: &mut X86State, mem: &mut M) -> Result<(), Stop> {
    let s = op.size;
    let d = dest(&op.dst, st)?;
    let a = read_dest(d, st, mem)?;
    let (res, f, which) = match op.kind {
        Kind::Inc => {
            let (r, f) = eflags::add(a, 1, 0, s);
            (r, f, STATUS & !CF)
        }
        Kind::Dec => {
            let (r, f) = eflags::sub(a, 1, 0, s);
            (r, f, STATUS & !CF)
        }
        Kind::Neg => {
            let (r, f) = eflags::sub(0, a, 0, s);
            (r, f, STATUS)
        }
        _ => (!a & mask(s), 0, 0),
    };
    write_dest(d, st, mem, res)?;
    st.rflags = merge(st.rflags, f, which);
    Ok(())
}

/// `imul` with 2 or 3 operands: truncated product; CF = OF = the signed
/// product does not fit. SF ZF AF PF are undefined (see `undefined_flags`).
#[inline]
pub fn imul<M: Memory + ?Sized>(op: &Op, st: &mut X86State, mem: &mut M) -> Result<(), Stop> {
    let s = op.size;
    let (a, b) = if matches!(op.src2, crate::decode::Opnd::Imm(_)) {
        (read(&op.src, st, mem)?, read(&op.src2, st, mem)?)
    } else {
        (read(&op.dst, st, mem)?, read(&op.src, st, mem)?)
    };
    let full = i128::from(sext(a, s)) * i128::from(sext(b, s));
    let res = full as u64 & mask(s);
    let fits = i128::from(sext(res, s)) == full;
    let d = dest(&op.dst, st)?;
    write_dest(d, st, mem, res)?;
    // This CPU computes SF ZF PF from the result and clears AF; those flags
    // are architecturally undefined, so only CF and OF are promised.
    let mut f = eflags::szp(res, s);
    if !fits {
        f |= CF | OF;
    }
    st.rflags = merge(st.rflags, f, STATUS);
    Ok(())
}

/// clc, stc, cmc.
#[inline]
pub fn carry(op: &Op, st: &mut X86State) {
    st.rflags = match op.kind {
        Kind::Clc => st.rflags & !CF,
        Kind::Stc => st.rflags | CF,
        _ => st.rflags ^ CF,
    };
}
