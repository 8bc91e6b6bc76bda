//! Data movement: mov, movzx, movsx(d), lea, xchg, bswap, cmovcc, setcc.

use rseq_emu_core::{Memory, Stop};

use crate::branch::cond;
use crate::decode::{Op, Opnd};
use crate::eflags::{mask, sext};
use crate::exec::{dest, ea_noseg, read, read_reg, write_dest, write_reg};
use crate::state::X86State;

/// `mov`.
#[inline]
pub fn mov<M: Memory + ?Sized>(op: &Op, st: &mut X86State, mem: &mut M) -> Result<(), Stop> {
    let v = read(&op.src, st, mem)?;
    let d = dest(&op.dst, st)?;
    write_dest(d, st, mem, v & mask(op.size))?;
    Ok(())
}

fn src_size(o: &Opnd) -> u8 {
    match *o {
        Opnd::Reg { size, .. } | Opnd::Mem { size, .. } => size,
        _ => 8,
    }
}

/// `movzx`.
#[inline]
pub fn movzx<M: Memory + ?Sized>(op: &Op, st: &mut X86State, mem: &mut M) -> Result<(), Stop> {
    let v = read(&op.src, st, mem)?;
    let d = dest(&op.dst, st)?;
    write_dest(d, st, mem, v)?;
    Ok(())
}

/// `movsx` / `movsxd`.
#[inline]
pub fn movsx<M: Memory + ?Sized>(op: &Op, st: &mut X86State, mem: &mut M) -> Result<(), Stop> {
    let v = read(&op.src, st, mem)?;
    let v = sext(v, src_size(&op.src)) as u64 & mask(op.size);
    let d = dest(&op.dst, st)?;
    write_dest(d, st, mem, v)?;
    Ok(())
}

/// `lea` (no segment base, truncated to the destination size).
#[inline]
pub fn lea(op: &Op, st: &mut X86State) {
    if let (Opnd::Mem { m, .. }, Opnd::Reg { idx, size, high }) = (op.src, op.dst) {
        let a = ea_noseg(&m, st);
        write_reg(st, idx, size, high, a);
    }
}

/// `xchg reg, reg`.
#[inline]
pub fn xchg(op: &Op, st: &mut X86State) {
    if let (
        Opnd::Reg {
            idx: i1,
            size: s1,
            high: h1,
        },
        Opnd::Reg {
            idx: i2,
            size: s2,
            high: h2,
        },
    ) = (op.dst, op.src)
    {
        let a = read_reg(st, i1, s1, h1);
        let b = read_reg(st, i2, s2, h2);
        write_reg(st, i1, s1, h1, b);
        write_reg(st, i2, s2, h2, a);
    }
}

/// `bswap` (32 or 64 bits).
#[inline]
pub fn bswap(op: &Op, st: &mut X86State) {
    if let Opnd::Reg { idx, size, high } = op.dst {
        let v = read_reg(st, idx, size, high);
        let r = if size == 8 {
            v.swap_bytes()
        } else {
            u64::from((v as u32).swap_bytes())
        };
        write_reg(st, idx, size, high, r);
    }
}

/// `cmovcc`: the source is always read (it may fault even when the
/// condition is false) and a 32-bit destination is always zero-extended.
#[inline]
pub fn cmov<M: Memory + ?Sized>(op: &Op, st: &mut X86State, mem: &mut M) -> Result<(), Stop> {
    let v = read(&op.src, st, mem)?;
    if let Opnd::Reg { idx, size, high } = op.dst {
        let cur = read_reg(st, idx, size, high);
        let out = if cond(op.cond, st.rflags) { v } else { cur };
        write_reg(st, idx, size, high, out);
    }
    Ok(())
}

/// `setcc`.
#[inline]
pub fn set<M: Memory + ?Sized>(op: &Op, st: &mut X86State, mem: &mut M) -> Result<(), Stop> {
    let v = u64::from(cond(op.cond, st.rflags));
    let d = dest(&op.dst, st)?;
    write_dest(d, st, mem, v)?;
    Ok(())
}
