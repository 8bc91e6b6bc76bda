//! The dispatch: one `match` on the operation class, operand access helpers
//! shared by every class. Every handler performs all loads first, then at
//! most one store, then register writes, so a fault leaves the state and
//! memory untouched.

use rseq_emu_core::{MemFault, Memory, Stop};

use crate::decode::{Kind, MemRef, Op, Opnd, Seg, NO_REG};
use crate::eflags::mask;
use crate::fast::{self, Fast};
use crate::state::X86State;
use crate::{alu, bits, branch, mov, stack};

/// Linear address of `m` (segment base included).
#[inline]
pub fn ea(m: &MemRef, st: &X86State) -> Result<u64, Stop> {
    linear(m.seg, ea_noseg(m, st), st)
}

/// Whether `v` is a canonical 48-bit address (bits 63..47 all equal).
#[inline]
pub fn canonical(v: u64) -> bool {
    matches!((v as i64) >> 47, 0 | -1)
}

/// The linear address of offset `off` in segment `seg`. An FS/GS-relative
/// offset that is not canonical is refused: this CPU (AMD EPYC) faults on
/// it even when base + offset wraps to a canonical address (the
/// `x86_oracle` fuzz target found `movabs %al,%fs:0xe3000000a2a2`), and the
/// SDM only describes a canonical check of the sum, so CPUs may differ.
#[inline]
pub fn linear(seg: Seg, off: u64, st: &X86State) -> Result<u64, Stop> {
    let base = match seg {
        Seg::None => return Ok(off),
        Seg::Fs => st.fs_base,
        Seg::Gs => st.gs_base,
    };
    if !canonical(off) {
        return Err(non_canonical_segment_offset(off));
    }
    Ok(off.wrapping_add(base))
}

#[cold]
#[inline(never)]
fn non_canonical_segment_offset(off: u64) -> Stop {
    Stop::Unsupported(format!(
        "FS/GS-relative access with the non-canonical offset 0x{off:x}: this CPU faults even when base + offset is canonical; CPUs may differ"
    ))
}

/// Effective address without the segment base (what `lea` computes).
#[inline]
pub fn ea_noseg(m: &MemRef, st: &X86State) -> u64 {
    let mut a = m.disp;
    if m.base != NO_REG {
        a = a.wrapping_add(st.gpr[m.base as usize]);
    }
    if m.index != NO_REG {
        a = a.wrapping_add(st.gpr[m.index as usize].wrapping_mul(u64::from(m.scale)));
    }
    a
}

/// Read a register operand (zero-extended).
#[inline]
pub fn read_reg(st: &X86State, idx: u8, size: u8, high: bool) -> u64 {
    let v = st.gpr[idx as usize];
    if high {
        (v >> 8) & 0xff
    } else {
        v & mask(size)
    }
}

/// Write a register operand with the x86_64 rules: 32-bit writes
/// zero-extend, 8/16-bit writes merge, high-byte registers hit bits 8..16.
#[inline]
pub fn write_reg(st: &mut X86State, idx: u8, size: u8, high: bool, v: u64) {
    let r = &mut st.gpr[idx as usize];
    *r = match (size, high) {
        (_, true) => (*r & !0xff00) | ((v & 0xff) << 8),
        (8, _) => v,
        (4, _) => v & 0xffff_ffff,
        (s, _) => (*r & !mask(s)) | (v & mask(s)),
    };
}

/// Load `size` bytes zero-extended, with a fixed-size access per size
/// (lets the backend's copy be inlined).
#[inline(always)]
pub fn load<M: Memory + ?Sized>(mem: &mut M, a: u64, size: u8) -> Result<u64, MemFault> {
    Ok(match size {
        1 => u64::from(mem.read_u8(a)?),
        2 => u64::from(mem.read_u16(a)?),
        4 => u64::from(mem.read_u32(a)?),
        _ => mem.read_u64(a)?,
    })
}

/// Store the low `size` bytes of `v`.
#[inline(always)]
pub fn store<M: Memory + ?Sized>(mem: &mut M, a: u64, size: u8, v: u64) -> Result<(), MemFault> {
    match size {
        1 => mem.write_u8(a, v as u8),
        2 => mem.write_u16(a, v as u16),
        4 => mem.write_u32(a, v as u32),
        _ => mem.write_u64(a, v),
    }
}

/// Read an operand value (zero-extended to 64 bits).
#[inline]
pub fn read<M: Memory + ?Sized>(o: &Opnd, st: &X86State, mem: &mut M) -> Result<u64, Stop> {
    match *o {
        Opnd::Reg { idx, size, high } => Ok(read_reg(st, idx, size, high)),
        Opnd::Mem { m, size } => Ok(load(mem, ea(&m, st)?, size)?),
        Opnd::Imm(v) => Ok(v),
        Opnd::None => Ok(0),
    }
}

/// Where a result goes, resolved before any store happens.
#[derive(Clone, Copy)]
pub enum Dest {
    /// A register.
    Reg(u8, u8, bool),
    /// Memory at an address.
    Mem(u64, u8),
    /// Nowhere (cmp/test).
    None,
}

/// Resolve the destination operand.
#[inline]
pub fn dest(o: &Opnd, st: &X86State) -> Result<Dest, Stop> {
    Ok(match *o {
        Opnd::Reg { idx, size, high } => Dest::Reg(idx, size, high),
        Opnd::Mem { m, size } => Dest::Mem(ea(&m, st)?, size),
        _ => Dest::None,
    })
}

/// Read the value at a resolved destination.
#[inline]
pub fn read_dest<M: Memory + ?Sized>(d: Dest, st: &X86State, mem: &mut M) -> Result<u64, MemFault> {
    match d {
        Dest::Reg(i, s, h) => Ok(read_reg(st, i, s, h)),
        Dest::Mem(a, s) => load(mem, a, s),
        Dest::None => Ok(0),
    }
}

/// Store to a resolved destination. A memory store is the only step that
/// may fault, so callers make it before touching registers.
#[inline]
pub fn write_dest<M: Memory + ?Sized>(
    d: Dest,
    st: &mut X86State,
    mem: &mut M,
    v: u64,
) -> Result<(), MemFault> {
    match d {
        Dest::Reg(i, s, h) => write_reg(st, i, s, h, v),
        Dest::Mem(a, s) => store(mem, a, s, v)?,
        Dest::None => {}
    }
    Ok(())
}

/// Execute one cached operation: its specialised form if it has one,
/// else the generic handler of its kind.
#[inline(always)]
pub fn execute<M: Memory + ?Sized>(op: &Op, st: &mut X86State, mem: &mut M) -> Result<(), Stop> {
    match op.fast {
        Fast::Generic => generic(op, st, mem),
        ref f => fast::execute(f, op, st, mem),
    }
}

/// The generic handlers, one per operation class.
#[inline(never)]
pub fn generic<M: Memory + ?Sized>(op: &Op, st: &mut X86State, mem: &mut M) -> Result<(), Stop> {
    match op.kind {
        Kind::Mov => mov::mov(op, st, mem)?,
        Kind::Movzx => mov::movzx(op, st, mem)?,
        Kind::Movsx => mov::movsx(op, st, mem)?,
        Kind::Lea => mov::lea(op, st),
        Kind::Xchg => mov::xchg(op, st),
        Kind::Bswap => mov::bswap(op, st),
        Kind::Cmov => mov::cmov(op, st, mem)?,
        Kind::Set => mov::set(op, st, mem)?,
        Kind::Add
        | Kind::Adc
        | Kind::Sub
        | Kind::Sbb
        | Kind::Cmp
        | Kind::And
        | Kind::Or
        | Kind::Xor
        | Kind::Test => alu::binary(op, st, mem)?,
        Kind::Inc | Kind::Dec | Kind::Neg | Kind::Not => alu::unary(op, st, mem)?,
        Kind::Imul => alu::imul(op, st, mem)?,
        Kind::Shl | Kind::Shr | Kind::Sar | Kind::Rol | Kind::Ror => bits::shift(op, st, mem)?,
        Kind::Bt | Kind::Bts | Kind::Btr | Kind::Btc => bits::bt(op, st, mem)?,
        Kind::Clc | Kind::Stc | Kind::Cmc => alu::carry(op, st),
        Kind::Nop => {}
        Kind::Jcc | Kind::Jmp | Kind::JmpInd => return branch::jump(op, st, mem),
        Kind::Call | Kind::CallInd => return branch::call(op, st, mem),
        Kind::Ret => return branch::ret(op, st, mem),
        Kind::Push => stack::push(op, st, mem)?,
        Kind::Pop => stack::pop(op, st, mem)?,
    }
    st.rip = op.next_ip;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::{reg, X86State, X86_64};
    use rseq_emu_core::{Arch, Memory, SparseMemory, Stop};

    fn run(bytes: &[u8], st: &mut X86State, mem: &mut SparseMemory) -> Result<(), Stop> {
        let op = X86_64::decode(bytes, st.rip).op.expect("supported");
        X86_64::execute(&op, st, mem)
    }

    fn mem() -> SparseMemory {
        let mut m = SparseMemory::new();
        m.map(0x1000, vec![0; 64], true).unwrap();
        m.map(0x2000, vec![9; 64], false).unwrap();
        m
    }

    #[test]
    fn faulting_push_leaves_rsp() {
        let mut m = mem();
        let mut st = X86State::default();
        st.gpr[reg::RSP] = 0x2010; // read-only stack
        let before = st;
        assert!(matches!(run(&[0x50], &mut st, &mut m), Err(Stop::Fault(_))));
        assert_eq!(st, before);
        // call too
        assert!(matches!(
            run(&[0xe8, 0, 0, 0, 0], &mut st, &mut m),
            Err(Stop::Fault(_))
        ));
        assert_eq!(st, before);
    }

    #[test]
    fn faulting_rmw_leaves_flags_and_memory() {
        let mut m = mem();
        let mut st = X86State {
            rflags: 0x2,
            ..X86State::default()
        };
        st.gpr[reg::RDI] = 0x2000;
        st.gpr[reg::RSI] = 1;
        let before = st;
        // add %rsi,(%rdi) on read-only memory
        assert!(matches!(
            run(&[0x48, 0x01, 0x37], &mut st, &mut m),
            Err(Stop::Fault(_))
        ));
        assert_eq!(st, before);
        assert_eq!(m.read_u64(0x2000).unwrap(), 0x0909_0909_0909_0909);
        // on writable memory it commits
        st.gpr[reg::RDI] = 0x1000;
        run(&[0x48, 0x01, 0x37], &mut st, &mut m).unwrap();
        assert_eq!(m.read_u64(0x1000).unwrap(), 1);
        assert_eq!(st.rip, 3);
    }

    #[test]
    fn ret_imm16_adds_the_full_immediate() {
        let mut m = mem();
        let mut st = X86State::default();
        st.gpr[reg::RSP] = 0x1000;
        m.write_u64(0x1000, 0x4242).unwrap();
        // ret $0xffff (found by the x86_oracle fuzz target)
        run(&[0xc2, 0xff, 0xff], &mut st, &mut m).unwrap();
        assert_eq!(st.gpr[reg::RSP], 0x1000 + 8 + 0xffff);
        assert_eq!(st.rip, 0x4242);
    }

    #[test]
    fn non_canonical_fs_gs_offsets_are_refused() {
        let mut m = mem();
        // base + offset lands on 0x1000 after wrapping, but the offset is
        // not canonical (the CPU faults): refused, nothing changes.
        let off = 0x0000_e300_0000_a2a2u64;
        let mut st = X86State {
            fs_base: 0x1000u64.wrapping_sub(off),
            gs_base: 0x1000u64.wrapping_sub(0x8000_0000_0000),
            ..X86State::default()
        };
        st.gpr[reg::RAX] = 0x42;
        st.gpr[reg::RBX] = 0x8000_0000_0000;
        let before = st;
        let mut movabs = vec![0x64, 0xa2]; // movabs %al,%fs:off
        movabs.extend(off.to_le_bytes());
        for code in [&movabs[..], &[0x65, 0x88, 0x03], &[0x65, 0x00, 0x03]] {
            // ... and mov %al,%gs:(%rbx), add %al,%gs:(%rbx)
            let r = run(code, &mut st, &mut m);
            assert!(
                matches!(&r, Err(Stop::Unsupported(why)) if why.contains("non-canonical")),
                "{code:02x?}: {r:?}"
            );
            assert_eq!(st, before);
        }
        assert_eq!(m.read_u8(0x1000).unwrap(), 0);
        // A canonical offset whose sum wraps is ordinary TLS addressing:
        // mov %fs:0xffffffffffffffe4,%eax with fs_base just above the data.
        st.fs_base = 0x1000 + 28;
        m.write_u32(0x1000, 7).unwrap();
        run(
            &[0x64, 0x8b, 0x04, 0x25, 0xe4, 0xff, 0xff, 0xff],
            &mut st,
            &mut m,
        )
        .unwrap();
        assert_eq!(st.gpr[reg::RAX], 7);
        // Without a segment the same offsets are plain addresses (the CPU
        // only checks the sum): mov %al,(%rbx,%rcx) reaches 0x1000.
        st.gpr[reg::RCX] = 0x1000u64.wrapping_sub(0x8000_0000_0000);
        run(&[0x88, 0x04, 0x0b], &mut st, &mut m).unwrap();
        assert_eq!(m.read_u8(0x1000).unwrap(), 7);
    }

    #[test]
    fn eight_bit_shift_past_width_is_refused() {
        let mut m = mem();
        let mut st = X86State::default();
        st.gpr[reg::RCX] = 9;
        let before = st;
        // shl %cl,%al
        assert!(matches!(
            run(&[0xd2, 0xe0], &mut st, &mut m),
            Err(Stop::Unsupported(_))
        ));
        assert_eq!(st, before);
    }
}
