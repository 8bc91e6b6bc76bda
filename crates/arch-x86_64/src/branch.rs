//! Control flow: jcc, jmp (direct and indirect), call, ret, and condition
//! codes shared with cmovcc/setcc.

use rseq_emu_core::{Memory, Stop};

use crate::decode::{Kind, Op};
use crate::exec::read;
use crate::flags::{CF, OF, PF, SF, ZF};
use crate::state::X86State;

/// Evaluate condition code `cc` (encoding order, `o`=0 … `g`=15).
#[inline]
pub fn cond(cc: u8, f: u64) -> bool {
    let cf = f & CF != 0;
    let zf = f & ZF != 0;
    let sf = f & SF != 0;
    let of = f & OF != 0;
    let pf = f & PF != 0;
    let r = match cc >> 1 {
        0 => of,
        1 => cf,
        2 => zf,
        3 => cf || zf,
        4 => sf,
        5 => pf,
        6 => sf != of,
        _ => zf || sf != of,
    };
    r ^ (cc & 1 != 0)
}

/// jcc, jmp, jmp indirect.
#[inline]
pub fn jump<M: Memory + ?Sized>(op: &Op, st: &mut X86State, mem: &mut M) -> Result<(), Stop> {
    st.rip = match op.kind {
        Kind::Jcc => {
            if cond(op.cond, st.rflags) {
                op.target
            } else {
                op.next_ip
            }
        }
        Kind::Jmp => op.target,
        _ => read(&op.dst, st, mem)?,
    };
    Ok(())
}

/// call (direct or indirect): the target is read first, then the return
/// address is stored, then rsp and rip change.
#[inline]
pub fn call<M: Memory + ?Sized>(op: &Op, st: &mut X86State, mem: &mut M) -> Result<(), Stop> {
    let target = if op.kind == Kind::Call {
        op.target
    } else {
        read(&op.dst, st, mem)?
    };
    let sp = st.gpr[crate::reg::RSP].wrapping_sub(8);
    mem.write_u64(sp, op.next_ip)?;
    st.gpr[crate::reg::RSP] = sp;
    st.rip = target;
    Ok(())
}

/// ret / ret imm16.
#[inline]
pub fn ret<M: Memory + ?Sized>(op: &Op, st: &mut X86State, mem: &mut M) -> Result<(), Stop> {
    let sp = st.gpr[crate::reg::RSP];
    let target = mem.read_u64(sp)?;
    st.gpr[crate::reg::RSP] = sp.wrapping_add(u64::from(op.stack));
    st.rip = target;
    Ok(())
}
