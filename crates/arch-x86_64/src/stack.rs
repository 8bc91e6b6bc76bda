//! push and pop (64-bit and 16-bit operand sizes).

use rseq_emu_core::{Memory, Stop};

use crate::decode::Op;
use crate::exec::{dest, read, write_dest};
use crate::reg::RSP;
use crate::state::X86State;

/// `push`: the source is read with the old rsp (so `push %rsp` pushes the
/// old value), stored below it, and only then rsp moves.
#[inline]
pub fn push<M: Memory + ?Sized>(op: &Op, st: &mut X86State, mem: &mut M) -> Result<(), Stop> {
    let v = read(&op.dst, st, mem)?;
    let n = u64::from(op.stack);
    let sp = st.gpr[RSP].wrapping_sub(n);
    mem.write_sized(sp, n as usize, v)?;
    st.gpr[RSP] = sp;
    Ok(())
}

/// `pop`: the value is loaded, then rsp is incremented, then the
/// destination is written (a memory destination's address is computed with
/// the incremented rsp; `pop %rsp` leaves the loaded value in rsp).
#[inline]
pub fn pop<M: Memory + ?Sized>(op: &Op, st: &mut X86State, mem: &mut M) -> Result<(), Stop> {
    let n = u64::from(op.stack);
    let sp = st.gpr[RSP];
    let v = mem.read_sized(sp, n as usize)?;
    let mut after = *st;
    after.gpr[RSP] = sp.wrapping_add(n);
    let d = dest(&op.dst, &after)?;
    write_dest(d, &mut after, mem, v)?;
    *st = after;
    Ok(())
}
