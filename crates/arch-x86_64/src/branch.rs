//! Control flow: jcc, jmp (direct and indirect), call, ret, and condition
//! codes shared with cmovcc/setcc.

use rseq_emu_core::{Memory, Stop};

use crate::decode::{Kind, Op};
use crate::exec::read;
use crate::flags::{CF, OF, PF, SF, ZF};
use crate::state::X86State;

/// Evaluate condition code `cc` (encoding order, `o`=0 … `g`=15),
/// branch-free: the eight base conditions (o b e be s p l le) as the bits
/// of one byte, the odd codes negate.
#[inline(always)]
pub fn cond(cc: u8, f: u64) -> bool {
    let bit = |flag: u64| u32::from(f & flag != 0);
    let (cf, zf, sf, of, pf) = (bit(CF), bit(ZF), bit(SF), bit(OF), bit(PF));
    let lt = sf ^ of;
    let base =
        of | cf << 1 | zf << 2 | (cf | zf) << 3 | sf << 4 | pf << 5 | lt << 6 | (zf | lt) << 7;
    ((base >> (cc >> 1)) ^ u32::from(cc)) & 1 != 0
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

#[cfg(test)]
mod tests {
    use super::cond;
    use crate::flags::{CF, OF, PF, SF, ZF};

    /// Against the SDM's table, over every combination of the five flags.
    #[test]
    fn every_condition_over_every_flag_combination() {
        for bits in 0..32u64 {
            let has = |i: u64| bits & (1 << i) != 0;
            let (cf, zf, sf, of, pf) = (has(0), has(1), has(2), has(3), has(4));
            let f = [(cf, CF), (zf, ZF), (sf, SF), (of, OF), (pf, PF)]
                .iter()
                .fold(0x202, |acc, &(on, flag)| if on { acc | flag } else { acc });
            let want = [
                of,
                !of,
                cf,
                !cf,
                zf,
                !zf,
                cf || zf,
                !(cf || zf),
                sf,
                !sf,
                pf,
                !pf,
                sf != of,
                sf == of,
                zf || sf != of,
                !zf && sf == of,
            ];
            for (cc, w) in want.iter().enumerate() {
                assert_eq!(cond(cc as u8, f), *w, "cc {cc} flags {f:#x}");
            }
        }
    }
}
