//! Decoding with iced-x86 into the compact cached form the executor runs.
//!
//! Every operand is resolved once here (register index and size, memory
//! operand with its segment, RIP-relative displacement made absolute,
//! sign-extended immediates, branch targets), so [`crate::X86_64`]'s
//! `execute` never touches iced-x86's decoder or formatter.

use iced_x86::{
    ConditionCode, Decoder, DecoderOptions, FlowControl, Formatter, GasFormatter, Instruction,
    Mnemonic, OpKind, Register,
};
use rseq_emu_core::{Arch, ArchKind, DecodedInsn, Flow, Memory, Stop};

use crate::exec;
use crate::fast::{self, Fast};
use crate::state::X86State;

/// The x86_64 architecture.
#[derive(Debug)]
pub enum X86_64 {}

/// The operation class of a pre-decoded instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `mov` (all forms, movabs).
    Mov,
    /// `movzx`.
    Movzx,
    /// `movsx` / `movsxd`.
    Movsx,
    /// `lea`.
    Lea,
    /// `add`.
    Add,
    /// `adc`.
    Adc,
    /// `sub`.
    Sub,
    /// `sbb`.
    Sbb,
    /// `cmp`.
    Cmp,
    /// `and`.
    And,
    /// `or`.
    Or,
    /// `xor`.
    Xor,
    /// `test`.
    Test,
    /// `inc`.
    Inc,
    /// `dec`.
    Dec,
    /// `neg`.
    Neg,
    /// `not`.
    Not,
    /// `shl` / `sal`.
    Shl,
    /// `shr`.
    Shr,
    /// `sar`.
    Sar,
    /// `rol`.
    Rol,
    /// `ror`.
    Ror,
    /// `bt`.
    Bt,
    /// `bts`.
    Bts,
    /// `btr`.
    Btr,
    /// `btc`.
    Btc,
    /// `clc`.
    Clc,
    /// `stc`.
    Stc,
    /// `cmc`.
    Cmc,
    /// `cmovcc`.
    Cmov,
    /// `setcc`.
    Set,
    /// `jcc`.
    Jcc,
    /// Direct `jmp`.
    Jmp,
    /// Indirect `jmp` through a register or memory.
    JmpInd,
    /// Direct `call`.
    Call,
    /// Indirect `call`.
    CallInd,
    /// `ret` (with an optional immediate).
    Ret,
    /// `xchg reg, reg`.
    Xchg,
    /// `bswap`.
    Bswap,
    /// `imul` with 2 or 3 operands.
    Imul,
    /// No architectural effect (nop, endbr64, pause, prefetch*, fences).
    Nop,
    /// `push`.
    Push,
    /// `pop`.
    Pop,
}

/// A segment override that changes the address (FS and GS have bases in
/// 64-bit mode; the others are flat).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seg {
    /// No base added.
    None,
    /// `%fs:` adds `fs_base`.
    Fs,
    /// `%gs:` adds `gs_base`.
    Gs,
}

/// "No register" in [`MemRef::base`] / [`MemRef::index`].
pub const NO_REG: u8 = 0xff;

/// A resolved memory operand: `seg:disp(base, index, scale)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemRef {
    /// Segment whose base is added.
    pub seg: Seg,
    /// Base register index or [`NO_REG`] (RIP-relative is folded into `disp`).
    pub base: u8,
    /// Index register index or [`NO_REG`].
    pub index: u8,
    /// Scale (1, 2, 4, 8).
    pub scale: u8,
    /// Displacement, sign-extended; absolute for RIP-relative operands.
    pub disp: u64,
}

/// A resolved operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opnd {
    /// Absent.
    None,
    /// A general-purpose register.
    Reg {
        /// Index in encoding order (see [`crate::reg`]).
        idx: u8,
        /// Size in bytes (1, 2, 4, 8).
        size: u8,
        /// `ah`/`ch`/`dh`/`bh` (bits 8..16 of `idx`).
        high: bool,
    },
    /// Memory.
    Mem {
        /// The address.
        m: MemRef,
        /// Access size in bytes.
        size: u8,
    },
    /// An immediate, already sign-extended as the encoding specifies.
    Imm(u64),
}

/// A pre-decoded x86_64 instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// The operation.
    pub kind: Kind,
    /// Operation size in bytes (the destination's size).
    pub size: u8,
    /// Condition code in encoding order (`o`=0 … `g`=15) for jcc/cmovcc/setcc.
    pub cond: u8,
    /// First operand (the destination for most operations).
    pub dst: Opnd,
    /// Second operand.
    pub src: Opnd,
    /// Third operand (the immediate of 3-operand `imul`).
    pub src2: Opnd,
    /// Address of the next instruction.
    pub next_ip: u64,
    /// Direct branch target (jcc/jmp/call), else 0.
    pub target: u64,
    /// Stack pointer adjustment for push/pop/ret (bytes, positive).
    pub stack: u32,
    /// The specialised form the executor runs (chosen from the fields above).
    pub(crate) fast: Fast,
}

/// Disassemble `insn` in AT&T syntax.
pub fn format(insn: &Instruction) -> String {
    thread_local! {
        // Building a formatter costs as much as formatting: keep one.
        static GAS: std::cell::RefCell<GasFormatter> = std::cell::RefCell::new({
            let mut f = GasFormatter::new();
            f.options_mut().set_first_operand_char_index(0);
            f
        });
    }
    let mut s = String::with_capacity(32);
    GAS.with(|f| f.borrow_mut().format(insn, &mut s));
    s
}

fn flow(insn: &Instruction) -> Flow {
    let target = || vec![insn.near_branch_target()];
    match insn.flow_control() {
        FlowControl::Next | FlowControl::Call | FlowControl::IndirectCall => Flow {
            falls_through: true,
            targets: if insn.flow_control() == FlowControl::Call {
                target()
            } else {
                vec![]
            },
            indirect: false,
        },
        FlowControl::UnconditionalBranch => Flow {
            falls_through: false,
            targets: target(),
            indirect: false,
        },
        FlowControl::ConditionalBranch => Flow {
            falls_through: true,
            targets: target(),
            indirect: false,
        },
        FlowControl::IndirectBranch | FlowControl::Return => Flow {
            falls_through: false,
            targets: vec![],
            indirect: true,
        },
        FlowControl::Interrupt | FlowControl::XbeginXabortXend | FlowControl::Exception => Flow {
            falls_through: false,
            targets: vec![],
            indirect: false,
        },
    }
}

fn gpr(r: Register) -> Result<Opnd, String> {
    if !r.is_gpr() {
        return Err(format!(
            "register operand {r:?} is not a general-purpose register"
        ));
    }
    let idx = (r.full_register() as u32 - Register::RAX as u32) as u8;
    let high = matches!(r, Register::AH | Register::CH | Register::DH | Register::BH);
    Ok(Opnd::Reg {
        idx,
        size: r.size() as u8,
        high,
    })
}

fn addr_reg(r: Register) -> Result<u8, String> {
    if r == Register::None {
        return Ok(NO_REG);
    }
    if !r.is_gpr64() {
        return Err(format!(
            "address register {r:?} is not a 64-bit general-purpose register (32-bit address size is not emulated)"
        ));
    }
    Ok((r as u32 - Register::RAX as u32) as u8)
}

fn mem(insn: &Instruction) -> Result<Opnd, String> {
    let seg = match insn.memory_segment() {
        Register::FS => Seg::Fs,
        Register::GS => Seg::Gs,
        _ => Seg::None,
    };
    let base = insn.memory_base();
    let (base, disp) = if base == Register::RIP {
        (NO_REG, insn.memory_displacement64())
    } else {
        (addr_reg(base)?, insn.memory_displacement64())
    };
    let index = addr_reg(insn.memory_index())?;
    Ok(Opnd::Mem {
        m: MemRef {
            seg,
            base,
            index,
            scale: insn.memory_index_scale() as u8,
            disp,
        },
        size: insn.memory_size().size() as u8,
    })
}

fn operand(insn: &Instruction, i: u32) -> Result<Opnd, String> {
    if i >= insn.op_count() {
        return Ok(Opnd::None);
    }
    match insn.op_kind(i) {
        OpKind::Register => gpr(insn.op_register(i)),
        OpKind::Memory => mem(insn),
        OpKind::Immediate8
        | OpKind::Immediate8_2nd
        | OpKind::Immediate16
        | OpKind::Immediate32
        | OpKind::Immediate64
        | OpKind::Immediate8to16
        | OpKind::Immediate8to32
        | OpKind::Immediate8to64
        | OpKind::Immediate32to64 => Ok(Opnd::Imm(insn.immediate(i))),
        OpKind::NearBranch64 => Ok(Opnd::None),
        k => Err(format!("operand kind {k:?} is not emulated")),
    }
}

fn opnd_size(o: &Opnd) -> u8 {
    match *o {
        Opnd::Reg { size, .. } | Opnd::Mem { size, .. } => size,
        _ => 0,
    }
}

fn cond(cc: ConditionCode) -> u8 {
    match cc {
        ConditionCode::o => 0,
        ConditionCode::no => 1,
        ConditionCode::b => 2,
        ConditionCode::ae => 3,
        ConditionCode::e => 4,
        ConditionCode::ne => 5,
        ConditionCode::be => 6,
        ConditionCode::a => 7,
        ConditionCode::s => 8,
        ConditionCode::ns => 9,
        ConditionCode::p => 10,
        ConditionCode::np => 11,
        ConditionCode::l => 12,
        ConditionCode::ge => 13,
        ConditionCode::le => 14,
        ConditionCode::g => 15,
        ConditionCode::None => 0,
    }
}

/// Build the cached operation for `insn`, or say why it is not emulated.
pub fn lower(insn: &Instruction) -> Result<Op, String> {
    use Mnemonic as M;
    if insn.has_lock_prefix() {
        return Err("lock-prefixed instructions are atomic across CPUs; a per-CPU commit cannot reproduce that".into());
    }
    let m = insn.mnemonic();
    let kind = match m {
        M::Mov => Kind::Mov,
        M::Movzx => Kind::Movzx,
        M::Movsx | M::Movsxd => Kind::Movsx,
        M::Lea => Kind::Lea,
        M::Add => Kind::Add,
        M::Adc => Kind::Adc,
        M::Sub => Kind::Sub,
        M::Sbb => Kind::Sbb,
        M::Cmp => Kind::Cmp,
        M::And => Kind::And,
        M::Or => Kind::Or,
        M::Xor => Kind::Xor,
        M::Test => Kind::Test,
        M::Inc => Kind::Inc,
        M::Dec => Kind::Dec,
        M::Neg => Kind::Neg,
        M::Not => Kind::Not,
        M::Shl | M::Sal => Kind::Shl,
        M::Shr => Kind::Shr,
        M::Sar => Kind::Sar,
        M::Rol => Kind::Rol,
        M::Ror => Kind::Ror,
        M::Bt => Kind::Bt,
        M::Bts => Kind::Bts,
        M::Btr => Kind::Btr,
        M::Btc => Kind::Btc,
        M::Clc => Kind::Clc,
        M::Stc => Kind::Stc,
        M::Cmc => Kind::Cmc,
        M::Jmp => Kind::Jmp,
        M::Call => Kind::Call,
        M::Ret => Kind::Ret,
        M::Xchg => Kind::Xchg,
        M::Bswap => Kind::Bswap,
        M::Imul if insn.op_count() >= 2 => Kind::Imul,
        M::Nop
        | M::Endbr64
        | M::Pause
        | M::Lfence
        | M::Sfence
        | M::Mfence
        | M::Prefetch
        | M::Prefetchw
        | M::Prefetchwt1
        | M::Prefetchnta
        | M::Prefetcht0
        | M::Prefetcht1
        | M::Prefetcht2 => Kind::Nop,
        M::Push => Kind::Push,
        M::Pop => Kind::Pop,
        _ if insn.is_jcc_short_or_near() => Kind::Jcc,
        M::Cmovo
        | M::Cmovno
        | M::Cmovb
        | M::Cmovae
        | M::Cmove
        | M::Cmovne
        | M::Cmovbe
        | M::Cmova
        | M::Cmovs
        | M::Cmovns
        | M::Cmovp
        | M::Cmovnp
        | M::Cmovl
        | M::Cmovge
        | M::Cmovle
        | M::Cmovg => Kind::Cmov,
        M::Seto
        | M::Setno
        | M::Setb
        | M::Setae
        | M::Sete
        | M::Setne
        | M::Setbe
        | M::Seta
        | M::Sets
        | M::Setns
        | M::Setp
        | M::Setnp
        | M::Setl
        | M::Setge
        | M::Setle
        | M::Setg => Kind::Set,
        _ => return Err(unsupported_reason(insn)),
    };
    let mut op = Op {
        kind,
        size: 0,
        cond: cond(insn.condition_code()),
        dst: Opnd::None,
        src: Opnd::None,
        src2: Opnd::None,
        next_ip: insn.next_ip(),
        target: 0,
        stack: 0,
        fast: Fast::Generic,
    };
    if kind == Kind::Nop {
        op.fast = Fast::Nop;
        return Ok(op);
    }
    op.dst = operand(insn, 0)?;
    op.src = operand(insn, 1)?;
    op.src2 = operand(insn, 2)?;
    op.size = opnd_size(&op.dst);
    match kind {
        Kind::Jmp | Kind::Call if insn.op_kind(0) != OpKind::NearBranch64 => {
            if insn.op_kind(0) == OpKind::Memory || insn.op_kind(0) == OpKind::Register {
                op.kind = if kind == Kind::Jmp {
                    Kind::JmpInd
                } else {
                    Kind::CallInd
                };
                if op.size != 8 {
                    return Err("indirect branch with a non-64-bit operand is not emulated".into());
                }
            } else {
                return Err("far branches are not emulated".into());
            }
        }
        Kind::Jmp | Kind::Call | Kind::Jcc => {
            if insn.op_kind(0) != OpKind::NearBranch64 {
                return Err("branch with a non-64-bit target is not emulated".into());
            }
            op.target = insn.near_branch_target();
        }
        Kind::Xchg
            if (matches!(op.dst, Opnd::Mem { .. }) || matches!(op.src, Opnd::Mem { .. })) =>
        {
            return Err(
                "xchg with memory is implicitly locked; a per-CPU commit cannot reproduce that"
                    .into(),
            );
        }
        Kind::Bswap if op.size != 4 && op.size != 8 => {
            return Err("bswap of a 16-bit register is undefined".into());
        }
        Kind::Push | Kind::Pop | Kind::Ret => {
            let inc = insn.stack_pointer_increment();
            let want = match kind {
                Kind::Push => inc < 0,
                _ => inc > 0,
            };
            if !want || (kind != Kind::Ret && inc.unsigned_abs() != 8 && inc.unsigned_abs() != 2) {
                return Err("unusual stack adjustment is not emulated".into());
            }
            if kind == Kind::Ret && insn.op_count() == 0 && inc != 8 {
                return Err("16-bit ret is not emulated".into());
            }
            op.stack = inc.unsigned_abs();
            if kind == Kind::Ret {
                if insn.op_count() == 1 && inc != 8 + i32::from(insn.immediate16()) {
                    return Err("16-bit ret is not emulated".into());
                }
                op.size = 8;
            } else {
                op.size = op.stack as u8;
            }
        }
        _ => {}
    }
    if matches!(op.kind, Kind::Call | Kind::CallInd) && insn.stack_pointer_increment() != -8 {
        return Err("16-bit call is not emulated".into());
    }
    if op.kind == Kind::Jcc && insn.mnemonic() != Mnemonic::Jmp && !insn.is_jcc_short_or_near() {
        return Err("not a plain jcc".into());
    }
    op.fast = fast::select(&op);
    Ok(op)
}

fn unsupported_reason(insn: &Instruction) -> String {
    use Mnemonic as M;
    match insn.mnemonic() {
        M::Syscall | M::Sysenter | M::Int | M::Int1 | M::Int3 | M::Into => {
            "system calls and software interrupts leave the section's control".into()
        }
        M::Rdtsc | M::Rdtscp | M::Rdpid | M::Cpuid => {
            "the result depends on the CPU and time; it cannot be reproduced".into()
        }
        _ if insn.has_rep_prefix() || insn.has_repne_prefix() => {
            "rep string instructions are not emulated".into()
        }
        _ if insn.flow_control() == FlowControl::Exception => "the instruction traps".into(),
        _ => format!("{:?} is outside the emulated subset", insn.mnemonic()),
    }
}

/// The prefix bytes (legacy and REX) before the opcode, in order.
fn prefixes(bytes: &[u8]) -> impl Iterator<Item = u8> + '_ {
    bytes.iter().copied().take_while(|b| {
        matches!(
            b,
            0x40..=0x4f
                | 0x26
                | 0x2e
                | 0x36
                | 0x3e
                | 0x64
                | 0x65
                | 0x66
                | 0x67
                | 0xf0
                | 0xf2
                | 0xf3
        )
    })
}

/// Whether the legacy prefixes hold FS or GS together with a different
/// segment prefix (vendors disagree on which one wins in 64-bit mode).
fn segment_prefix_conflict(bytes: &[u8]) -> bool {
    let mut seen: Option<u8> = None;
    let mut fsgs = false;
    let mut conflict = false;
    for b in prefixes(bytes) {
        if matches!(b, 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65) {
            conflict |= seen.is_some_and(|s| s != b);
            fsgs |= b == 0x64 || b == 0x65;
            seen = Some(b);
        }
    }
    conflict && fsgs
}

/// Whether the last prefix before the opcode is a REX prefix with the B bit.
fn rex_b_before_opcode(bytes: &[u8]) -> bool {
    prefixes(bytes)
        .last()
        .is_some_and(|b| (0x40..=0x4f).contains(&b) && b & 1 != 0)
}

/// Whether legacy prefix byte `p` precedes the opcode.
fn has_prefix(bytes: &[u8], p: u8) -> bool {
    prefixes(bytes).any(|b| b == p)
}

impl Arch for X86_64 {
    const KIND: ArchKind = ArchKind::X86_64;
    const HAS_EXECUTOR: bool = true;
    type State = X86State;
    type Op = Op;

    fn decode(bytes: &[u8], ip: u64) -> DecodedInsn<Op> {
        let mut d = Decoder::with_ip(64, bytes, ip, DecoderOptions::NONE);
        let insn = d.decode();
        if insn.is_invalid() {
            return DecodedInsn {
                ip,
                len: 1,
                text: format!("(bad) {:?}", d.last_error()),
                op: Err(format!("not a valid instruction: {:?}", d.last_error())),
                flow: Flow::default(),
            };
        }
        let raw = &bytes[..insn.len().min(bytes.len())];
        let op = if segment_prefix_conflict(raw) {
            Err("an FS/GS prefix mixed with another segment prefix: CPUs differ on which one applies".into())
        } else if insn.flow_control() != FlowControl::Next && has_prefix(raw, 0x66) {
            Err("operand-size prefix on a branch: Intel ignores it, AMD truncates the target to 16 bits".into())
        } else if insn.mnemonic() == iced_x86::Mnemonic::Pause && rex_b_before_opcode(raw) {
            Err("f3 REX.B 90: decoded as pause, but with REX.B the 0x90 opcode is xchg %r8,%rax; CPUs differ".into())
        } else {
            lower(&insn)
        };
        DecodedInsn {
            ip,
            len: insn.len() as u8,
            text: format(&insn),
            op,
            flow: flow(&insn),
        }
    }

    #[inline]
    fn execute<M: Memory + ?Sized>(op: &Op, state: &mut X86State, mem: &mut M) -> Result<(), Stop> {
        exec::execute(op, state, mem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(bytes: &[u8]) -> DecodedInsn<Op> {
        X86_64::decode(bytes, 0x1000)
    }

    #[test]
    fn rip_relative_is_absolute() {
        // mov 0x10(%rip),%rax
        let d = dec(&[0x48, 0x8b, 0x05, 0x10, 0, 0, 0]);
        let op = d.op.unwrap();
        assert_eq!(
            op.src,
            Opnd::Mem {
                m: MemRef {
                    seg: Seg::None,
                    base: NO_REG,
                    index: NO_REG,
                    scale: 1,
                    disp: 0x1017
                },
                size: 8
            }
        );
    }

    #[test]
    fn fs_absolute_disp32() {
        // mov %fs:0xffffffffffffffe4,%eax
        let d = dec(&[0x64, 0x8b, 0x04, 0x25, 0xe4, 0xff, 0xff, 0xff]);
        let op = d.op.unwrap();
        match op.src {
            Opnd::Mem { m, size: 4 } => {
                assert_eq!(m.seg, Seg::Fs);
                assert_eq!(m.disp, 0xffff_ffff_ffff_ffe4);
                assert_eq!(m.base, NO_REG);
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn refuses_lock_syscall_xchg_mem() {
        assert!(dec(&[0xf0, 0x48, 0x01, 0x37])
            .op
            .unwrap_err()
            .contains("lock"));
        assert!(dec(&[0x0f, 0x05]).op.is_err());
        assert!(dec(&[0x48, 0x87, 0x07]).op.unwrap_err().contains("xchg"));
        assert!(dec(&[0x0f, 0x31]).op.is_err());
        assert!(dec(&[0xf3, 0xa4]).op.is_err());
    }

    #[test]
    fn mixed_segment_prefixes_are_refused() {
        // es fs mov (%rax),%eax
        assert!(dec(&[0x26, 0x64, 0x8b, 0x00]).op.is_err());
        assert!(dec(&[0x64, 0x26, 0x8b, 0x00]).op.is_err());
        // fs fs is fine
        assert!(dec(&[0x64, 0x64, 0x8b, 0x00]).op.is_ok());
    }

    #[test]
    fn operand_size_prefix_on_branches_is_refused() {
        assert!(dec(&[0x66, 0xc3]).op.is_err());
        assert!(dec(&[0x66, 0x66, 0xc3]).op.is_err());
        assert!(dec(&[0x66, 0xeb, 0x00]).op.is_err());
        // a REX byte before 0x66 is ignored, the 0x66 still counts
        assert!(dec(&[0x44, 0x66, 0x44, 0xe9, 0, 0, 0, 0]).op.is_err());
        assert!(dec(&[0xc3]).op.is_ok());
    }

    #[test]
    fn high_byte_register() {
        // mov %ah,%bl
        let op = dec(&[0x88, 0xe3]).op.unwrap();
        assert_eq!(
            op.src,
            Opnd::Reg {
                idx: 0,
                size: 1,
                high: true
            }
        );
        assert_eq!(
            op.dst,
            Opnd::Reg {
                idx: 3,
                size: 1,
                high: false
            }
        );
    }
}
