//! The pre-decoded form the executor runs: the raw word, its address and a
//! compact [`Kind`] built once from the word's encoding fields.
//!
//! Register operands are resolved at decode time: `0..=30` name x0..x30,
//! [`ZR`] is the zero register and [`SP`] the stack pointer, so the
//! executor never asks which meaning register 31 has for an operand.

/// Register number of the zero register (encoding 31 where the ARM ARM
/// reads `X[31]`).
pub const ZR: u8 = 31;
/// Register number of the stack pointer (encoding 31 where the ARM ARM
/// reads `SP[]`).
pub const SP: u8 = 32;

/// A pre-decoded aarch64 instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    /// The raw 32-bit instruction word.
    pub word: u32,
    /// Its address.
    pub pc: u64,
    /// What it does.
    pub kind: Kind,
}

/// Shift applied to a register operand (`shift` field: 00 lsl, 01 lsr,
/// 10 asr, 11 ror).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shift {
    /// Logical shift left.
    Lsl,
    /// Logical shift right.
    Lsr,
    /// Arithmetic shift right.
    Asr,
    /// Rotate right.
    Ror,
}

/// Extension applied to an extended-register operand (`option` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extend {
    /// Zero-extend the low byte.
    Uxtb,
    /// Zero-extend the low halfword.
    Uxth,
    /// Zero-extend the low word.
    Uxtw,
    /// The whole register.
    Uxtx,
    /// Sign-extend the low byte.
    Sxtb,
    /// Sign-extend the low halfword.
    Sxth,
    /// Sign-extend the low word.
    Sxtw,
    /// The whole register (signed).
    Sxtx,
}

impl Extend {
    /// The extension named by a 3-bit `option` field.
    pub fn from_option(option: u32) -> Extend {
        match option & 7 {
            0 => Extend::Uxtb,
            1 => Extend::Uxth,
            2 => Extend::Uxtw,
            3 => Extend::Uxtx,
            4 => Extend::Sxtb,
            5 => Extend::Sxth,
            6 => Extend::Sxtw,
            _ => Extend::Sxtx,
        }
    }
}

/// Logical operation (`opc` field plus the `N` invert bit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogicOp {
    /// `and` / `bic` (inverted).
    And,
    /// `orr` / `orn`.
    Orr,
    /// `eor` / `eon`.
    Eor,
    /// `ands` / `bics`: sets N and Z, clears C and V.
    Ands,
}

/// Bitfield move flavour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BfmOp {
    /// `sbfm` (asr, sbfx, sbfiz, sxtb…).
    Sbfm,
    /// `bfm` (bfi, bfxil).
    Bfm,
    /// `ubfm` (lsl, lsr, ubfx, ubfiz, uxtb…).
    Ubfm,
}

/// One-source bit operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unary {
    /// Reverse the bit order.
    Rbit,
    /// Reverse bytes in each halfword.
    Rev16,
    /// Reverse bytes in each word (64-bit only).
    Rev32,
    /// Reverse all bytes.
    Rev,
    /// Count leading zeros.
    Clz,
    /// Count leading sign bits.
    Cls,
}

/// Conditional select flavour (`op:op2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CselOp {
    /// `csel`: Rm.
    Csel,
    /// `csinc`: Rm + 1.
    Csinc,
    /// `csinv`: NOT Rm.
    Csinv,
    /// `csneg`: -Rm.
    Csneg,
}

/// Where a single-register access finds its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addr {
    /// `[Rn, #imm]` (unsigned scaled and unscaled offsets).
    Offset(i64),
    /// `[Rn, #imm]!`: access at Rn + imm, write it back.
    Pre(i64),
    /// `[Rn], #imm`: access at Rn, write back Rn + imm.
    Post(i64),
    /// `[Rn, Rm, ext #shift]`.
    Reg {
        /// Index register (31 = zero register).
        rm: u8,
        /// Extension of the index.
        ext: Extend,
        /// Left shift after extension.
        shift: u8,
    },
    /// A pc-relative literal at this absolute address (Rn unused).
    Literal(u64),
    /// `[Rn]` of ldar/ldapr/stlr: the address must be aligned to the size.
    Ordered,
}

/// What a single-register access does with the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemOp {
    /// Store the low bytes of a general register.
    Store,
    /// Load, zero-extend into the general register.
    Load,
    /// Load, sign-extend to 32 bits, zero-extend to 64 (ldrsb/ldrsh w).
    LoadSigned32,
    /// Load, sign-extend to 64 bits (ldrsb/ldrsh/ldrsw x).
    LoadSigned64,
    /// Store the low bytes of a SIMD&FP register.
    StoreV,
    /// Load into a SIMD&FP register, zeroing the rest of it.
    LoadV,
}

/// What a pair access does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairOp {
    /// `stp` of general registers.
    Store,
    /// `ldp` of general registers (zero-extended).
    Load,
    /// `ldpsw`: two words, each sign-extended to 64 bits.
    LoadSw,
    /// `stp` of SIMD&FP registers.
    StoreV,
    /// `ldp` of SIMD&FP registers.
    LoadV,
}

/// A single-register access with its size folded in, so the executor
/// dispatches once (built by [`Access::new`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `strb`.
    StoreB,
    /// `strh`.
    StoreH,
    /// `str w`.
    StoreW,
    /// `str x`.
    StoreX,
    /// `ldrb`.
    LoadB,
    /// `ldrh`.
    LoadH,
    /// `ldr w`.
    LoadW,
    /// `ldr x`.
    LoadX,
    /// `ldrsb w`.
    LoadSB32,
    /// `ldrsh w`.
    LoadSH32,
    /// `ldrsb x`.
    LoadSB64,
    /// `ldrsh x`.
    LoadSH64,
    /// `ldrsw`.
    LoadSW64,
    /// `str b/h/s/d` (size in the instruction).
    StoreV,
    /// `ldr b/h/s/d`.
    LoadV,
    /// `str q`.
    StoreQ,
    /// `ldr q`.
    LoadQ,
}

impl Access {
    /// The access `op` of `1 << size` bytes.
    pub fn new(op: MemOp, size: u8) -> Access {
        match (op, size) {
            (MemOp::Store, 0) => Access::StoreB,
            (MemOp::Store, 1) => Access::StoreH,
            (MemOp::Store, 2) => Access::StoreW,
            (MemOp::Store, _) => Access::StoreX,
            (MemOp::Load, 0) => Access::LoadB,
            (MemOp::Load, 1) => Access::LoadH,
            (MemOp::Load, 2) => Access::LoadW,
            (MemOp::Load, _) => Access::LoadX,
            (MemOp::LoadSigned32, 0) => Access::LoadSB32,
            (MemOp::LoadSigned32, _) => Access::LoadSH32,
            (MemOp::LoadSigned64, 0) => Access::LoadSB64,
            (MemOp::LoadSigned64, 1) => Access::LoadSH64,
            (MemOp::LoadSigned64, _) => Access::LoadSW64,
            (MemOp::StoreV, 4) => Access::StoreQ,
            (MemOp::LoadV, 4) => Access::LoadQ,
            (MemOp::StoreV, _) => Access::StoreV,
            (MemOp::LoadV, _) => Access::LoadV,
        }
    }
}

/// Pair addressing mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairMode {
    /// Signed offset, no writeback (also ldnp/stnp).
    Offset,
    /// Pre-index with writeback.
    Pre,
    /// Post-index with writeback.
    Post,
}

/// The pre-decoded operation. `sf` is true for the 64-bit form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// add/sub/adds/subs (cmp, cmn, mov to/from sp) with an immediate.
    AddSubImm {
        /// 64-bit.
        sf: bool,
        /// Subtract.
        sub: bool,
        /// Set flags.
        s: bool,
        /// Destination (SP when not setting flags).
        rd: u8,
        /// First source (SP).
        rn: u8,
        /// The immediate, already shifted.
        imm: u64,
    },
    /// add/sub with a shifted register (no ror).
    AddSubShift {
        /// 64-bit.
        sf: bool,
        /// Subtract.
        sub: bool,
        /// Set flags.
        s: bool,
        /// Destination (ZR).
        rd: u8,
        /// First source (ZR).
        rn: u8,
        /// Second source (ZR).
        rm: u8,
        /// Shift kind (never ror).
        shift: Shift,
        /// Shift amount, below the data size.
        amount: u8,
    },
    /// add/sub with an extended register.
    AddSubExt {
        /// 64-bit.
        sf: bool,
        /// Subtract.
        sub: bool,
        /// Set flags.
        s: bool,
        /// Destination (SP when not setting flags).
        rd: u8,
        /// First source (SP).
        rn: u8,
        /// Second source (ZR).
        rm: u8,
        /// Extension.
        ext: Extend,
        /// Left shift 0..=4.
        shift: u8,
    },
    /// adc/sbc/adcs/sbcs (ngc).
    AddSubCarry {
        /// 64-bit.
        sf: bool,
        /// Subtract.
        sub: bool,
        /// Set flags.
        s: bool,
        /// Destination.
        rd: u8,
        /// First source.
        rn: u8,
        /// Second source.
        rm: u8,
    },
    /// and/orr/eor/ands with a bitmask immediate.
    LogicImm {
        /// 64-bit.
        sf: bool,
        /// Operation.
        op: LogicOp,
        /// Destination (SP unless ands).
        rd: u8,
        /// Source (ZR).
        rn: u8,
        /// The decoded bitmask.
        imm: u64,
    },
    /// and/bic/orr/orn/eor/eon/ands/bics with a shifted register.
    LogicShift {
        /// 64-bit.
        sf: bool,
        /// Operation.
        op: LogicOp,
        /// Invert the shifted operand (bic/orn/eon/bics).
        invert: bool,
        /// Destination.
        rd: u8,
        /// First source.
        rn: u8,
        /// Second source.
        rm: u8,
        /// Shift kind (ror allowed).
        shift: Shift,
        /// Shift amount.
        amount: u8,
    },
    /// movz/movn/movk.
    MovWide {
        /// 64-bit.
        sf: bool,
        /// 0 movn, 2 movz, 3 movk (the `opc` field).
        opc: u8,
        /// Destination (ZR).
        rd: u8,
        /// The 16-bit immediate.
        imm16: u16,
        /// Bit position (hw * 16).
        pos: u8,
    },
    /// sbfm/bfm/ubfm with the masks DecodeBitMasks computes.
    Bitfield {
        /// 64-bit.
        sf: bool,
        /// Flavour.
        op: BfmOp,
        /// Destination.
        rd: u8,
        /// Source.
        rn: u8,
        /// Rotate amount R.
        r: u8,
        /// Source sign bit position S (for sbfm).
        s_bit: u8,
        /// wmask.
        wmask: u64,
        /// tmask.
        tmask: u64,
    },
    /// extr (ror by immediate).
    Extr {
        /// 64-bit.
        sf: bool,
        /// Destination.
        rd: u8,
        /// High half source.
        rn: u8,
        /// Low half source.
        rm: u8,
        /// Least significant bit taken from Rm.
        lsb: u8,
    },
    /// lslv/lsrv/asrv/rorv.
    ShiftVar {
        /// 64-bit.
        sf: bool,
        /// Shift kind.
        shift: Shift,
        /// Destination.
        rd: u8,
        /// Value.
        rn: u8,
        /// Amount (modulo the data size).
        rm: u8,
    },
    /// udiv/sdiv.
    Div {
        /// 64-bit.
        sf: bool,
        /// Signed.
        signed: bool,
        /// Destination.
        rd: u8,
        /// Dividend.
        rn: u8,
        /// Divisor.
        rm: u8,
    },
    /// madd/msub (mul, mneg).
    MulAdd {
        /// 64-bit.
        sf: bool,
        /// msub.
        sub: bool,
        /// Destination.
        rd: u8,
        /// Multiplicand.
        rn: u8,
        /// Multiplier.
        rm: u8,
        /// Addend.
        ra: u8,
    },
    /// smaddl/smsubl/umaddl/umsubl (smull, umull…).
    MulLong {
        /// Signed.
        signed: bool,
        /// Subtract.
        sub: bool,
        /// Destination.
        rd: u8,
        /// W multiplicand.
        rn: u8,
        /// W multiplier.
        rm: u8,
        /// X addend.
        ra: u8,
    },
    /// smulh/umulh.
    MulHigh {
        /// Signed.
        signed: bool,
        /// Destination.
        rd: u8,
        /// Multiplicand.
        rn: u8,
        /// Multiplier.
        rm: u8,
    },
    /// rbit/rev16/rev32/rev/clz/cls.
    Unary {
        /// 64-bit.
        sf: bool,
        /// Operation.
        op: Unary,
        /// Destination.
        rd: u8,
        /// Source.
        rn: u8,
    },
    /// csel/csinc/csinv/csneg.
    CondSel {
        /// 64-bit.
        sf: bool,
        /// Operation.
        op: CselOp,
        /// Raw 4-bit condition.
        cond: u8,
        /// Destination.
        rd: u8,
        /// Taken when the condition holds.
        rn: u8,
        /// Operated on otherwise.
        rm: u8,
    },
    /// ccmp/ccmn with a register or a 5-bit immediate.
    CondCmp {
        /// 64-bit.
        sf: bool,
        /// ccmp (subtract) rather than ccmn.
        sub: bool,
        /// Raw 4-bit condition.
        cond: u8,
        /// Flags (bits 3..0 = NZCV) when the condition fails.
        nzcv: u8,
        /// First operand.
        rn: u8,
        /// Second operand: a register, or the immediate when `imm`.
        rm: u8,
        /// `rm` is a 5-bit immediate.
        imm: bool,
    },
    /// adr/adrp, with the address computed at decode time.
    Adr {
        /// Destination.
        rd: u8,
        /// The address.
        value: u64,
    },
    /// b / bl.
    Branch {
        /// Target.
        target: u64,
        /// bl: x30 = pc + 4.
        link: bool,
    },
    /// b.cond.
    BranchCond {
        /// Raw 4-bit condition.
        cond: u8,
        /// Target.
        target: u64,
    },
    /// cbz/cbnz.
    CompareBranch {
        /// Test the whole X register.
        sf: bool,
        /// Branch when non-zero.
        nz: bool,
        /// Tested register.
        rt: u8,
        /// Target.
        target: u64,
    },
    /// tbz/tbnz.
    TestBranch {
        /// Branch when the bit is set.
        nz: bool,
        /// Bit number.
        bit: u8,
        /// Tested register.
        rt: u8,
        /// Target.
        target: u64,
    },
    /// br/blr/ret.
    BranchReg {
        /// Register holding the target.
        rn: u8,
        /// blr: x30 = pc + 4.
        link: bool,
    },
    /// nop, yield, bti, csdb, dmb, dsb, isb, prfm: no architectural effect here.
    Nop,
    /// `mrs Xt, tpidr_el0`.
    MrsTpidr {
        /// Destination.
        rt: u8,
    },
    /// `mrs Xt, nzcv`.
    MrsNzcv {
        /// Destination.
        rt: u8,
    },
    /// `msr nzcv, Xt`.
    MsrNzcv {
        /// Source.
        rt: u8,
    },
    /// A single-register load or store.
    Mem {
        /// What happens with the data, size included.
        op: Access,
        /// log2 of the access size (0..=4).
        size: u8,
        /// Data register (GPR: 31 = ZR; SIMD: v number).
        rt: u8,
        /// Base register (SP); unused for literals.
        rn: u8,
        /// Addressing.
        addr: Addr,
    },
    /// A pair load or store.
    Pair {
        /// What happens with the data.
        op: PairOp,
        /// log2 of each element's size (2..=4).
        size: u8,
        /// First data register.
        rt: u8,
        /// Second data register.
        rt2: u8,
        /// Base register (SP).
        rn: u8,
        /// Offset, already scaled.
        offset: i64,
        /// Addressing mode.
        mode: PairMode,
    },
}
