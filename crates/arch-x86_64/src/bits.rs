//! Shifts, rotates and bit tests: shl shr sar rol ror (by imm, cl, 1) and
//! bt bts btr btc (register and immediate offsets, bit-string addressing
//! for a memory operand with a register offset).

use rseq_emu_core::{Memory, Stop};

use crate::decode::{Kind, Op, Opnd};
use crate::eflags::{mask, merge, msb, sext, szp};
use crate::exec::{dest, ea_noseg, linear, read, read_dest, write_dest, Dest};
use crate::flags::{CF, OF, STATUS};
use crate::state::X86State;

/// The count mask the CPU applies (5 bits, 6 for 64-bit operands).
#[inline]
pub fn count_mask(size: u8) -> u64 {
    if size == 8 {
        0x3f
    } else {
        0x1f
    }
}

/// shl/shr/sar/rol/ror.
#[inline]
pub fn shift<M: Memory + ?Sized>(op: &Op, st: &mut X86State, mem: &mut M) -> Result<(), Stop> {
    let s = op.size;
    let bits = u64::from(s) * 8;
    let d = dest(&op.dst, st)?;
    let count = read(&op.src, st, mem)? & count_mask(s);
    let a = read_dest(d, st, mem)?;
    if count == 0 {
        if matches!(d, Dest::Mem(..)) {
            return Err(Stop::Unsupported(
                "shift/rotate of memory by 0: whether the CPU writes the operand back is not verified".into(),
            ));
        }
        // A 32-bit register destination is still zero-extended.
        write_dest(d, st, mem, a)?;
        return Ok(());
    }
    let m = mask(s);
    let (res, f, which) = match op.kind {
        Kind::Shl | Kind::Shr if count >= bits => {
            return Err(Stop::Unsupported(
                "shl/shr by a count >= the operand width leaves CF undefined".into(),
            ))
        }
        Kind::Shl => {
            let res = (a << count) & m;
            let cf = (a >> (bits - count)) & 1;
            let of = u64::from(res & msb(s) != 0) ^ cf;
            (res, szp(res, s) | (cf * CF) | (of * OF), STATUS)
        }
        Kind::Shr => {
            let res = a >> count;
            let cf = (a >> (count - 1)) & 1;
            let of = u64::from(a & msb(s) != 0);
            (res, szp(res, s) | (cf * CF) | (of * OF), STATUS)
        }
        Kind::Sar => {
            let v = sext(a, s);
            let res = (v >> count.min(63)) as u64 & m;
            let cf = ((v >> (count - 1).min(63)) & 1) as u64;
            (res, szp(res, s) | (cf * CF), STATUS)
        }
        Kind::Rol => {
            let t = count % bits;
            let res = if t == 0 {
                a
            } else {
                ((a << t) | (a >> (bits - t))) & m
            };
            let cf = res & 1;
            let of = u64::from(res & msb(s) != 0) ^ cf;
            (res, (cf * CF) | (of * OF), CF | OF)
        }
        _ => {
            let t = count % bits;
            let res = if t == 0 {
                a
            } else {
                ((a >> t) | (a << (bits - t))) & m
            };
            let cf = u64::from(res & msb(s) != 0);
            let of = cf ^ u64::from(res & (msb(s) >> 1) != 0);
            (res, (cf * CF) | (of * OF), CF | OF)
        }
    };
    write_dest(d, st, mem, res)?;
    st.rflags = merge(st.rflags, f, which);
    Ok(())
}

/// bt/bts/btr/btc. Only CF is defined afterwards; ZF is unchanged and
/// OF SF AF PF are left as they were (undefined architecturally).
#[inline]
pub fn bt<M: Memory + ?Sized>(op: &Op, st: &mut X86State, mem: &mut M) -> Result<(), Stop> {
    let s = op.size;
    let bits = u64::from(s) * 8;
    let off = read(&op.src, st, mem)?;
    let d = match (op.dst, op.src) {
        (Opnd::Mem { m, size }, Opnd::Reg { .. }) => {
            // Bit-string addressing: the signed offset selects an
            // operand-sized word relative to the effective address.
            let o = sext(off, s);
            let word = o >> bits.trailing_zeros();
            let off = ea_noseg(&m, st).wrapping_add((word as u64).wrapping_mul(u64::from(s)));
            let addr = linear(m.seg, off, st)?;
            Dest::Mem(addr, size)
        }
        _ => dest(&op.dst, st)?,
    };
    let bit = off & (bits - 1);
    let a = read_dest(d, st, mem)?;
    let cf = (a >> bit) & 1;
    let res = match op.kind {
        Kind::Bts => a | (1 << bit),
        Kind::Btr => a & !(1 << bit),
        Kind::Btc => a ^ (1 << bit),
        _ => a,
    };
    if op.kind != Kind::Bt {
        write_dest(d, st, mem, res)?;
    }
    st.rflags = merge(st.rflags, cf * CF, CF);
    Ok(())
}
