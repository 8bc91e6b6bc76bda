//! The dispatch: one `match` on the cached [`Kind`], register access by
//! intent (31 resolved at decode time), condition evaluation.
//!
//! Every handler does all memory reads, then at most one memory write (a
//! pair is one write of both halves), then register writes; a fault
//! therefore leaves the state and memory untouched.

use rseq_emu_core::{Memory, Stop};

use crate::op::{Kind, Op, SP};
use crate::state::A64State;
use crate::{alu, branch, mem};

/// Read a general register operand: 0..=30 x, 31 zero, 32 sp.
#[inline(always)]
pub fn get(st: &A64State, r: u8) -> u64 {
    if r < 31 {
        st.x[r as usize]
    } else if r == SP {
        st.sp
    } else {
        0
    }
}

/// Write a general register operand: 0..=30 x, 31 discarded, 32 sp.
#[inline(always)]
pub fn set(st: &mut A64State, r: u8, v: u64) {
    if r < 31 {
        st.x[r as usize] = v;
    } else if r == SP {
        st.sp = v;
    }
}

/// Truncate to the operation size (32-bit results zero-extend).
#[inline(always)]
pub fn trunc(sf: bool, v: u64) -> u64 {
    if sf {
        v
    } else {
        v & 0xffff_ffff
    }
}

/// ConditionHolds() on NZCV in bits 31..28 and a raw 4-bit condition.
#[inline(always)]
pub fn cond_holds(nzcv: u32, cond: u8) -> bool {
    let n = nzcv >> 31 & 1 == 1;
    let z = nzcv >> 30 & 1 == 1;
    let c = nzcv >> 29 & 1 == 1;
    let v = nzcv >> 28 & 1 == 1;
    let r = match cond >> 1 {
        0 => z,
        1 => c,
        2 => n,
        3 => v,
        4 => c && !z,
        5 => n == v,
        6 => n == v && !z,
        _ => true,
    };
    if cond & 1 == 1 && cond != 0xf {
        !r
    } else {
        r
    }
}

/// Execute one cached operation, setting the new pc on success.
#[inline]
pub fn execute<M: Memory + ?Sized>(op: &Op, st: &mut A64State, m: &mut M) -> Result<(), Stop> {
    let next = op.pc.wrapping_add(4);
    match op.kind {
        Kind::BranchReg { rn, .. } => {
            branch::register_target_ok(get(st, rn))?;
            st.pc = branch::target(&op.kind, st, next);
            return Ok(());
        }
        Kind::Branch { .. }
        | Kind::BranchCond { .. }
        | Kind::CompareBranch { .. }
        | Kind::TestBranch { .. } => {
            st.pc = branch::target(&op.kind, st, next);
            return Ok(());
        }
        Kind::Mem { .. } => mem::single(&op.kind, st, m)?,
        Kind::Pair { .. } => mem::pair(&op.kind, st, m)?,
        Kind::Nop => {}
        Kind::MrsTpidr { rt } => set(st, rt, st.tpidr_el0),
        Kind::MrsNzcv { rt } => set(st, rt, u64::from(st.nzcv)),
        Kind::MsrNzcv { rt } => st.nzcv = (get(st, rt) as u32) & 0xf000_0000,
        _ => alu::execute(&op.kind, st),
    }
    st.pc = next;
    Ok(())
}
