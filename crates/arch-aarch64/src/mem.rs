//! Loads and stores. Each instruction makes one memory access (a pair
//! reads or writes both halves in one all-or-nothing access), before any
//! register is written, so a fault changes nothing.

use rseq_emu_core::{MemFault, Memory, Stop};

use crate::alu::extend;
use crate::exec::{get, set};
use crate::op::{Access, Addr, Kind, PairMode, PairOp, SP};
use crate::state::A64State;

#[inline(always)]
fn load<M: Memory + ?Sized>(m: &mut M, a: u64, size: u8) -> Result<u128, MemFault> {
    Ok(match size {
        0 => u128::from(m.read_u8(a)?),
        1 => u128::from(m.read_u16(a)?),
        2 => u128::from(m.read_u32(a)?),
        3 => u128::from(m.read_u64(a)?),
        _ => m.read_u128(a)?,
    })
}

#[inline(always)]
fn store<M: Memory + ?Sized>(m: &mut M, a: u64, size: u8, v: u128) -> Result<(), MemFault> {
    match size {
        0 => m.write_u8(a, v as u8),
        1 => m.write_u16(a, v as u16),
        2 => m.write_u32(a, v as u32),
        3 => m.write_u64(a, v as u64),
        _ => m.write_u128(a, v),
    }
}

/// The checks hardware makes before the access that the memory backend
/// cannot (SP alignment: Linux sets SCTLR_EL1.SA0), and the address the
/// access really uses: Linux runs EL0 with TCR_EL1.TBI0 = 1, so for an
/// address with bit 55 clear the top byte is ignored (a tag). An address
/// with bit 55 set and a non-zero top byte depends on TBI1 (a kernel
/// configuration choice) and is refused.
#[inline(always)]
fn check(st: &A64State, rn: u8, a: u64) -> Result<u64, Stop> {
    if rn == SP && st.sp & 0xf != 0 {
        return Err(Stop::Unsupported(
            "sp-based access with sp not 16-byte aligned: hardware raises an SP alignment fault (SCTLR_EL1.SA0)".into(),
        ));
    }
    if a >> 56 == 0 {
        Ok(a)
    } else if a >> 55 & 1 == 0 {
        Ok(a & 0x00ff_ffff_ffff_ffff)
    } else {
        Err(Stop::Unsupported(
            "address with bit 55 set and a non-zero top byte: whether the tag is ignored depends on TCR_EL1.TBI1".into(),
        ))
    }
}

/// Execute a [`Kind::Mem`].
#[inline(always)]
pub fn single<M: Memory + ?Sized>(k: &Kind, st: &mut A64State, m: &mut M) -> Result<(), Stop> {
    let Kind::Mem {
        op,
        size,
        rt,
        rn,
        addr,
    } = *k
    else {
        return Ok(());
    };
    let (a, wb) = match addr {
        Addr::Offset(i) => (get(st, rn).wrapping_add(i as u64), None),
        Addr::Reg { rm, ext, shift } => (
            get(st, rn).wrapping_add(extend(get(st, rm), ext, shift)),
            None,
        ),
        Addr::Pre(i) => {
            let a = get(st, rn).wrapping_add(i as u64);
            (a, Some(a))
        }
        Addr::Post(i) => {
            let b = get(st, rn);
            (b, Some(b.wrapping_add(i as u64)))
        }
        Addr::Literal(t) => (t, None),
        Addr::Ordered => {
            let a = get(st, rn);
            if a & ((1u64 << size) - 1) != 0 {
                return Err(Stop::Unsupported(
                    "unaligned load-acquire/store-release: hardware raises an alignment fault"
                        .into(),
                ));
            }
            (a, None)
        }
    };
    let a = check(st, if let Addr::Literal(_) = addr { 0 } else { rn }, a)?;
    let r = rt as usize;
    match op {
        Access::StoreB => m.write_u8(a, get(st, rt) as u8)?,
        Access::StoreH => m.write_u16(a, get(st, rt) as u16)?,
        Access::StoreW => m.write_u32(a, get(st, rt) as u32)?,
        Access::StoreX => m.write_u64(a, get(st, rt))?,
        Access::LoadB => set(st, rt, u64::from(m.read_u8(a)?)),
        Access::LoadH => set(st, rt, u64::from(m.read_u16(a)?)),
        Access::LoadW => set(st, rt, u64::from(m.read_u32(a)?)),
        Access::LoadX => set(st, rt, m.read_u64(a)?),
        Access::LoadSB32 => set(st, rt, u64::from(m.read_u8(a)? as i8 as i32 as u32)),
        Access::LoadSH32 => set(st, rt, u64::from(m.read_u16(a)? as i16 as i32 as u32)),
        Access::LoadSB64 => set(st, rt, m.read_u8(a)? as i8 as i64 as u64),
        Access::LoadSH64 => set(st, rt, m.read_u16(a)? as i16 as i64 as u64),
        Access::LoadSW64 => set(st, rt, m.read_u32(a)? as i32 as i64 as u64),
        Access::StoreQ => m.write_u128(a, st.v[r])?,
        Access::LoadQ => st.v[r] = m.read_u128(a)?,
        Access::StoreV => store(m, a, size, st.v[r])?,
        Access::LoadV => st.v[r] = load(m, a, size)?,
    }
    if let Some(w) = wb {
        set(st, rn, w);
    }
    Ok(())
}

/// Execute a [`Kind::Pair`].
#[inline(always)]
pub fn pair<M: Memory + ?Sized>(k: &Kind, st: &mut A64State, m: &mut M) -> Result<(), Stop> {
    let Kind::Pair {
        op,
        size,
        rt,
        rt2,
        rn,
        offset,
        mode,
    } = *k
    else {
        return Ok(());
    };
    let base = get(st, rn);
    let moved = base.wrapping_add(offset as u64);
    let a = check(st, rn, if mode == PairMode::Post { base } else { moved })?;
    let n = 1usize << size;
    let mut buf = [0u8; 32];
    match op {
        PairOp::Store => {
            buf[..8].copy_from_slice(&get(st, rt).to_le_bytes());
            buf[n..n + 8].copy_from_slice(&get(st, rt2).to_le_bytes());
            m.write(a, &buf[..2 * n])?;
        }
        PairOp::StoreV => {
            buf[..16].copy_from_slice(&st.v[rt as usize].to_le_bytes());
            buf[n..n + 16].copy_from_slice(&st.v[rt2 as usize].to_le_bytes());
            m.write(a, &buf[..2 * n])?;
        }
        PairOp::Load | PairOp::LoadSw | PairOp::LoadV => {
            m.read(a, &mut buf[..2 * n])?;
            let mut lo = [0u8; 16];
            let mut hi = [0u8; 16];
            lo[..n].copy_from_slice(&buf[..n]);
            hi[..n].copy_from_slice(&buf[n..2 * n]);
            let (lo, hi) = (u128::from_le_bytes(lo), u128::from_le_bytes(hi));
            match op {
                PairOp::LoadV => {
                    st.v[rt as usize] = lo;
                    st.v[rt2 as usize] = hi;
                }
                PairOp::LoadSw => {
                    set(st, rt, lo as u32 as i32 as i64 as u64);
                    set(st, rt2, hi as u32 as i32 as i64 as u64);
                }
                _ => {
                    set(st, rt, lo as u64);
                    set(st, rt2, hi as u64);
                }
            }
        }
    }
    if mode != PairMode::Offset {
        set(st, rn, moved);
    }
    Ok(())
}
