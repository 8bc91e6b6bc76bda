//! Specialised forms of the most frequent operations, chosen at decode
//! time so that executing them matches on nothing but the form itself: no
//! operand-kind matches, no size branches (the operand width is folded into
//! three precomputed masks), flags computed branch-free.
//!
//! Every form has the same semantics as the generic handler of its `Kind`
//! (the oracle test compares both with the CPU, since the random cases run
//! through whichever path decoding picks); everything not covered here
//! (high-byte registers, shifts, bit tests, stack, …) stays `Generic`.

use rseq_emu_core::{Memory, Stop};

use crate::decode::{Kind, MemRef, Op, Opnd};
use crate::eflags::{mask, parity, sext};
use crate::exec::{ea, ea_noseg, load, store};
use crate::flags::{AF, CF, STATUS, ZF};
use crate::state::X86State;

/// An operand width as three masks: write a register as
/// `(old & keep) | (v & mask)` (32-bit writes zero-extend: `keep` is 0;
/// 8/16-bit writes merge: `keep` is `!mask`), `sign` is the top bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Width {
    mask: u64,
    keep: u64,
    sign: u64,
    size: u8,
}

impl Width {
    fn new(size: u8) -> Width {
        let mask = mask(size);
        Width {
            mask,
            keep: if size < 4 { !mask } else { 0 },
            sign: 1 << (u32::from(size) * 8 - 1),
            size,
        }
    }
}

/// An ALU operation as parameters of one branch-free computation.
///
/// Arithmetic: `a + (b ^ inv) + cin` with `cin = k ^ (CF & use_cf)`, then
/// CF and AF flipped by `flip` for subtraction (the borrow is the inverted
/// carry): add `inv=0,k=0`; adc `use_cf`; sub/cmp `inv=mask,k=1,flip`; sbb
/// `inv=mask,k=1,use_cf,flip`. Logic: `(a&b&and) | ((a|b)&or) | ((a^b)&xor)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alu {
    /// add adc sub sbb cmp.
    Arith {
        /// `mask` for sub/sbb/cmp, else 0.
        inv: u64,
        /// Constant carry-in (1 for sub/sbb/cmp).
        k: u64,
        /// 1 when CF feeds the carry (adc, sbb).
        use_cf: u64,
        /// `CF | AF` for sub/sbb/cmp, else 0.
        flip: u64,
        /// Whether the result is written (not for cmp).
        write: bool,
    },
    /// and or xor test.
    Logic {
        /// All ones for and/test.
        and: u64,
        /// All ones for or.
        or: u64,
        /// All ones for xor.
        xor: u64,
        /// Whether the result is written (not for test).
        write: bool,
    },
}

impl Alu {
    fn of(kind: Kind, mask: u64) -> Option<Alu> {
        let arith = |inv, k, use_cf, write| Alu::Arith {
            inv,
            k,
            use_cf,
            flip: if inv != 0 { CF | AF } else { 0 },
            write,
        };
        let logic = |and, or, xor, write| Alu::Logic {
            and,
            or,
            xor,
            write,
        };
        Some(match kind {
            Kind::Add => arith(0, 0, 0, true),
            Kind::Adc => arith(0, 0, 1, true),
            Kind::Sub => arith(mask, 1, 0, true),
            Kind::Sbb => arith(mask, 1, 1, true),
            Kind::Cmp => arith(mask, 1, 0, false),
            Kind::And => logic(!0, 0, 0, true),
            Kind::Or => logic(0, !0, 0, true),
            Kind::Xor => logic(0, 0, !0, true),
            Kind::Test => logic(!0, 0, 0, false),
            _ => return None,
        })
    }

    fn writes(self) -> bool {
        match self {
            Alu::Arith { write, .. } | Alu::Logic { write, .. } => write,
        }
    }
}

/// How a load into a register extends its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ext {
    /// mov / movzx.
    Zero,
    /// movsx / movsxd.
    Sign,
}

/// A specialised form (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fast {
    /// Run the generic handler of the operation's `Kind`.
    Generic,
    /// No architectural effect.
    Nop,
    /// jcc with its condition code.
    Jcc(u8),
    /// Direct jmp.
    Jmp,
    /// Register to register move.
    MovRR { d: u8, s: u8, w: Width },
    /// Immediate (already masked) to register.
    MovRI { d: u8, v: u64, w: Width },
    /// Load of `size` bytes into a register (mov, movzx, movsx).
    Load {
        d: u8,
        m: MemRef,
        size: u8,
        ext: Ext,
        w: Width,
    },
    /// Register to memory.
    Store { s: u8, m: MemRef, size: u8 },
    /// Immediate to memory.
    StoreI { v: u64, m: MemRef, size: u8 },
    /// lea.
    Lea { d: u8, m: MemRef, w: Width },
    /// ALU register, register.
    AluRR { op: Alu, d: u8, s: u8, w: Width },
    /// ALU register, immediate (already masked).
    AluRI { op: Alu, d: u8, v: u64, w: Width },
    /// ALU register, memory.
    AluRM { op: Alu, d: u8, m: MemRef, w: Width },
    /// ALU memory, register (read-modify-write unless cmp/test).
    AluMR { op: Alu, m: MemRef, s: u8, w: Width },
    /// ALU memory, immediate (already masked).
    AluMI {
        op: Alu,
        m: MemRef,
        v: u64,
        w: Width,
    },
    /// inc/dec of a register.
    IncDecR { dec: bool, d: u8, w: Width },
    /// inc/dec of memory.
    IncDecM { dec: bool, m: MemRef, w: Width },
}

/// A low register operand (not ah/ch/dh/bh): its index.
fn low(o: &Opnd) -> Option<u8> {
    match *o {
        Opnd::Reg {
            idx, high: false, ..
        } => Some(idx),
        _ => None,
    }
}

/// Pick the specialised form of `op`.
pub fn select(op: &Op) -> Fast {
    let w = Width::new(op.size.clamp(1, 8));
    if let Some(alu) = Alu::of(op.kind, w.mask) {
        return match (op.dst, op.src) {
            (Opnd::Reg { .. }, Opnd::Reg { .. }) => match (low(&op.dst), low(&op.src)) {
                (Some(d), Some(s)) => Fast::AluRR { op: alu, d, s, w },
                _ => Fast::Generic,
            },
            (Opnd::Reg { .. }, Opnd::Imm(v)) => match low(&op.dst) {
                Some(d) => Fast::AluRI {
                    op: alu,
                    d,
                    v: v & w.mask,
                    w,
                },
                None => Fast::Generic,
            },
            (Opnd::Reg { .. }, Opnd::Mem { m, .. }) => match low(&op.dst) {
                Some(d) => Fast::AluRM { op: alu, d, m, w },
                None => Fast::Generic,
            },
            (Opnd::Mem { m, .. }, Opnd::Reg { .. }) => match low(&op.src) {
                Some(s) => Fast::AluMR { op: alu, m, s, w },
                None => Fast::Generic,
            },
            (Opnd::Mem { m, .. }, Opnd::Imm(v)) => Fast::AluMI {
                op: alu,
                m,
                v: v & w.mask,
                w,
            },
            _ => Fast::Generic,
        };
    }
    match (op.kind, op.dst, op.src) {
        (Kind::Nop, _, _) => Fast::Nop,
        (Kind::Jcc, _, _) => Fast::Jcc(op.cond),
        (Kind::Jmp, _, _) => Fast::Jmp,
        (Kind::Mov, Opnd::Reg { .. }, Opnd::Reg { .. }) => match (low(&op.dst), low(&op.src)) {
            (Some(d), Some(s)) => Fast::MovRR { d, s, w },
            _ => Fast::Generic,
        },
        (Kind::Mov, Opnd::Reg { .. }, Opnd::Imm(v)) => match low(&op.dst) {
            Some(d) => Fast::MovRI {
                d,
                v: v & w.mask,
                w,
            },
            None => Fast::Generic,
        },
        (Kind::Mov | Kind::Movzx | Kind::Movsx, Opnd::Reg { .. }, Opnd::Mem { m, size }) => {
            match low(&op.dst) {
                Some(d) => Fast::Load {
                    d,
                    m,
                    size,
                    ext: if op.kind == Kind::Movsx {
                        Ext::Sign
                    } else {
                        Ext::Zero
                    },
                    w,
                },
                None => Fast::Generic,
            }
        }
        (Kind::Mov, Opnd::Mem { m, size }, Opnd::Reg { .. }) => match low(&op.src) {
            Some(s) => Fast::Store { s, m, size },
            None => Fast::Generic,
        },
        (Kind::Mov, Opnd::Mem { m, size }, Opnd::Imm(v)) => Fast::StoreI {
            v: v & w.mask,
            m,
            size,
        },
        (Kind::Lea, Opnd::Reg { .. }, Opnd::Mem { m, .. }) => match low(&op.dst) {
            Some(d) => Fast::Lea { d, m, w },
            None => Fast::Generic,
        },
        (Kind::Inc | Kind::Dec, Opnd::Reg { .. }, _) => match low(&op.dst) {
            Some(d) => Fast::IncDecR {
                dec: op.kind == Kind::Dec,
                d,
                w,
            },
            None => Fast::Generic,
        },
        (Kind::Inc | Kind::Dec, Opnd::Mem { m, .. }, _) => Fast::IncDecM {
            dec: op.kind == Kind::Dec,
            m,
            w,
        },
        _ => Fast::Generic,
    }
}

/// Write `v` to register `d` with the width's rules.
#[inline(always)]
fn put(st: &mut X86State, d: u8, v: u64, w: Width) {
    let r = &mut st.gpr[d as usize];
    *r = (*r & w.keep) | (v & w.mask);
}

/// PF ZF SF of a masked result.
#[inline(always)]
fn szp(r: u64, w: Width) -> u64 {
    parity(r) | (u64::from(r == 0) * ZF) | (u64::from(r & w.sign != 0) << 7)
}

/// The six flags of an add or subtract of `a` and `b` giving `r`, from
/// its carry (borrow) and overflow vectors, whose sign bits are CF and OF.
#[inline(always)]
fn arith_flags(a: u64, b: u64, r: u64, carry: u64, of: u64, w: Width) -> u64 {
    szp(r, w)
        | u64::from(carry & w.sign != 0)
        | ((a ^ b ^ r) & AF)
        | (u64::from(of & w.sign != 0) << 11)
}

/// `a + b + c` (operands masked): result and all six flags, branch-free.
#[inline(always)]
fn add(a: u64, b: u64, c: u64, w: Width) -> (u64, u64) {
    let r = a.wrapping_add(b).wrapping_add(c) & w.mask;
    let carry = (a & b) | ((a | b) & !r);
    let of = (a ^ r) & (b ^ r);
    (r, arith_flags(a, b, r, carry, of, w))
}

/// `a - b - c` (operands masked): result and all six flags, branch-free.
#[inline(always)]
fn sub(a: u64, b: u64, c: u64, w: Width) -> (u64, u64) {
    let r = a.wrapping_sub(b).wrapping_sub(c) & w.mask;
    let borrow = (!a & b) | ((!a | b) & r);
    let of = (a ^ b) & (a ^ r);
    (r, arith_flags(a, b, r, borrow, of, w))
}

/// One ALU operation on masked operands: result and flags, branch-free.
#[inline(always)]
fn alu(op: Alu, a: u64, b: u64, rflags: u64, w: Width) -> (u64, u64) {
    match op {
        Alu::Arith {
            inv,
            k,
            use_cf,
            flip,
            ..
        } => {
            let (r, f) = add(a, b ^ inv, k ^ (rflags & use_cf), w);
            (r, f ^ flip)
        }
        Alu::Logic { and, or, xor, .. } => {
            let r = (a & b & and) | ((a | b) & or) | ((a ^ b) & xor);
            (r, szp(r, w))
        }
    }
}

#[inline(always)]
fn set_status(st: &mut X86State, f: u64) {
    st.rflags = (st.rflags & !STATUS) | f;
}

#[inline(always)]
fn inc_dec(a: u64, dec: bool, w: Width) -> (u64, u64) {
    let (r, f) = if dec {
        sub(a, 1, 0, w)
    } else {
        add(a, 1, 0, w)
    };
    (r, f & !CF)
}

/// `op` on register `d` and the masked operand `b`: result to `d` (unless
/// `op` only compares), flags to rflags.
#[inline(always)]
fn alu_reg(st: &mut X86State, op: Alu, d: u8, b: u64, w: Width) {
    let a = st.gpr[d as usize] & w.mask;
    let (r, f) = alu(op, a, b, st.rflags, w);
    if op.writes() {
        put(st, d, r, w);
    }
    set_status(st, f);
}

/// `op` on memory at `m` and the masked operand `b`: load, then the store
/// (unless `op` only compares), then the flags, so a fault changes nothing.
#[inline(always)]
fn alu_mem<M: Memory + ?Sized>(
    st: &mut X86State,
    mem: &mut M,
    op: Alu,
    m: &MemRef,
    b: u64,
    w: Width,
) -> Result<(), Stop> {
    let addr = ea(m, st)?;
    let a = load(mem, addr, w.size)?;
    let (r, f) = alu(op, a, b, st.rflags, w);
    if op.writes() {
        store(mem, addr, w.size, r)?;
    }
    set_status(st, f);
    Ok(())
}

/// Execute a specialised form (anything but [`Fast::Generic`]); sets rip.
/// Loads come first, then at most one store, then register and flag
/// writes, so a fault changes nothing.
#[inline(always)]
pub fn execute<M: Memory + ?Sized>(
    f: &Fast,
    op: &Op,
    st: &mut X86State,
    mem: &mut M,
) -> Result<(), Stop> {
    let mut next = op.next_ip;
    match *f {
        Fast::Generic | Fast::Nop => {}
        Fast::Jcc(cc) => {
            if crate::branch::cond(cc, st.rflags) {
                next = op.target;
            }
        }
        Fast::Jmp => next = op.target,
        Fast::MovRR { d, s, w } => {
            let v = st.gpr[s as usize];
            put(st, d, v, w);
        }
        Fast::MovRI { d, v, w } => put(st, d, v, w),
        Fast::Load { d, m, size, ext, w } => {
            let mut v = load(mem, ea(&m, st)?, size)?;
            if ext == Ext::Sign {
                v = sext(v, size) as u64;
            }
            put(st, d, v, w);
        }
        Fast::Store { s, m, size } => store(mem, ea(&m, st)?, size, st.gpr[s as usize])?,
        Fast::StoreI { v, m, size } => store(mem, ea(&m, st)?, size, v)?,
        Fast::Lea { d, m, w } => {
            let a = ea_noseg(&m, st);
            put(st, d, a, w);
        }
        Fast::AluRR { op, d, s, w } => {
            let b = st.gpr[s as usize] & w.mask;
            alu_reg(st, op, d, b, w);
        }
        Fast::AluRI { op, d, v, w } => alu_reg(st, op, d, v, w),
        Fast::AluRM { op, d, m, w } => {
            let b = load(mem, ea(&m, st)?, w.size)?;
            alu_reg(st, op, d, b, w);
        }
        Fast::AluMR { op, m, s, w } => {
            let b = st.gpr[s as usize] & w.mask;
            alu_mem(st, mem, op, &m, b, w)?;
        }
        Fast::AluMI { op, m, v, w } => alu_mem(st, mem, op, &m, v, w)?,
        Fast::IncDecR { dec, d, w } => {
            let (r, f) = inc_dec(st.gpr[d as usize] & w.mask, dec, w);
            put(st, d, r, w);
            st.rflags = (st.rflags & (!STATUS | CF)) | f;
        }
        Fast::IncDecM { dec, m, w } => {
            let addr = ea(&m, st)?;
            let a = load(mem, addr, w.size)?;
            let (r, f) = inc_dec(a, dec, w);
            store(mem, addr, w.size, r)?;
            st.rflags = (st.rflags & (!STATUS | CF)) | f;
        }
    }
    st.rip = next;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eflags;

    const VALS: [u64; 18] = [
        0,
        1,
        2,
        0x0f,
        0x10,
        0x7f,
        0x80,
        0xff,
        0x7fff,
        0x8000,
        0xffff,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_ffff,
        0x7fff_ffff_ffff_ffff,
        0x8000_0000_0000_0000,
        u64::MAX,
        0x1234_5678_9abc_def0,
    ];

    /// The branch-free flag formulas agree with the width-generic ones
    /// (which the oracle checks against the CPU) on boundary values, for
    /// every ALU operation and carry-in.
    #[test]
    fn alu_matches_the_generic_formulas() {
        let kinds = [
            Kind::Add,
            Kind::Adc,
            Kind::Sub,
            Kind::Sbb,
            Kind::Cmp,
            Kind::And,
            Kind::Or,
            Kind::Xor,
            Kind::Test,
        ];
        for size in [1u8, 2, 4, 8] {
            let w = Width::new(size);
            for &a in &VALS {
                for &b in &VALS {
                    let (a, b) = (a & w.mask, b & w.mask);
                    for c in [0, 1] {
                        assert_eq!(add(a, b, c, w), eflags::add(a, b, c, size));
                        assert_eq!(sub(a, b, c, w), eflags::sub(a, b, c, size));
                        for kind in kinds {
                            let op = Alu::of(kind, w.mask).unwrap();
                            let want = match kind {
                                Kind::Add => eflags::add(a, b, 0, size),
                                Kind::Adc => eflags::add(a, b, c, size),
                                Kind::Sub | Kind::Cmp => eflags::sub(a, b, 0, size),
                                Kind::Sbb => eflags::sub(a, b, c, size),
                                Kind::And | Kind::Test => (a & b, eflags::logic(a & b, size)),
                                Kind::Or => (a | b, eflags::logic(a | b, size)),
                                _ => (a ^ b, eflags::logic(a ^ b, size)),
                            };
                            assert_eq!(
                                alu(op, a, b, c | 0x202, w),
                                want,
                                "{kind:?} {a:#x} {b:#x} cf={c} /{size}"
                            );
                            assert_eq!(op.writes(), !matches!(kind, Kind::Cmp | Kind::Test));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn high_byte_registers_stay_generic() {
        use rseq_emu_core::Arch;
        // add %ah,%bl ; mov %ah,%bl ; add %esi,%eax
        let op = crate::X86_64::decode(&[0x00, 0xe3], 0).op.unwrap();
        assert_eq!(select(&op), Fast::Generic);
        let op = crate::X86_64::decode(&[0x88, 0xe3], 0).op.unwrap();
        assert_eq!(select(&op), Fast::Generic);
        let op = crate::X86_64::decode(&[0x01, 0xf0], 0).op.unwrap();
        assert!(matches!(
            select(&op),
            Fast::AluRR {
                op: Alu::Arith {
                    inv: 0,
                    k: 0,
                    use_cf: 0,
                    write: true,
                    ..
                },
                d: 0,
                s: 6,
                ..
            }
        ));
    }
}
