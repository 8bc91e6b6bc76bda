//! Decoding with yaxpeax-arm into the cached form the executor runs.

use rseq_emu_core::{Arch, ArchKind, DecodedInsn, Flow, Memory, Stop};
use yaxpeax_arch::{Decoder, U8Reader};
use yaxpeax_arm::armv8::a64::{InstDecoder, Instruction, Opcode, Operand};

use crate::state::A64State;

/// The aarch64 architecture.
#[derive(Debug)]
pub enum Aarch64 {}

/// A pre-decoded aarch64 instruction.
#[derive(Clone, Debug)]
pub struct Op {
    /// The decoded instruction.
    pub insn: Instruction,
    /// Its address.
    pub pc: u64,
}

fn pc_rel(insn: &Instruction, pc: u64) -> Option<u64> {
    insn.operands.iter().find_map(|o| match o {
        Operand::PCOffset(off) => Some(pc.wrapping_add(*off as u64)),
        _ => None,
    })
}

fn flow(insn: &Instruction, pc: u64) -> Flow {
    use Opcode::*;
    let t = pc_rel(insn, pc).map(|t| vec![t]).unwrap_or_default();
    match insn.opcode {
        B => Flow {
            falls_through: false,
            targets: t,
            indirect: false,
        },
        BL => Flow {
            falls_through: true,
            targets: t,
            indirect: false,
        },
        Bcc(_) | CBZ | CBNZ | TBZ | TBNZ => Flow {
            falls_through: true,
            targets: t,
            indirect: false,
        },
        BR | RET | BRAA | BRAAZ | BRAB | BRABZ | RETAA | RETAB | ERET => Flow {
            falls_through: false,
            targets: vec![],
            indirect: true,
        },
        BLR | BLRAA | BLRAAZ | BLRAB | BLRABZ => Flow {
            falls_through: true,
            targets: vec![],
            indirect: false,
        },
        BRK | UDF | HLT => Flow::default(),
        _ => Flow {
            falls_through: true,
            targets: vec![],
            indirect: false,
        },
    }
}

impl Arch for Aarch64 {
    const KIND: ArchKind = ArchKind::Aarch64;
    const HAS_EXECUTOR: bool = false;
    type State = A64State;
    type Op = Op;

    fn decode(bytes: &[u8], ip: u64) -> DecodedInsn<Op> {
        let word = bytes.get(..4);
        let bad = |text: String, reason: String| DecodedInsn {
            ip,
            len: 4,
            text,
            op: Err(reason),
            flow: Flow::default(),
        };
        let Some(w) = word else {
            return bad("(truncated)".into(), "fewer than 4 bytes of code".into());
        };
        let raw = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        let mut reader = U8Reader::new(w);
        match InstDecoder::default().decode(&mut reader) {
            Ok(insn) if insn.opcode != Opcode::Invalid => DecodedInsn {
                ip,
                len: 4,
                text: insn.to_string(),
                flow: flow(&insn, ip),
                op: Err("the aarch64 executor is not built yet".into()),
            },
            Ok(_) => bad(format!(".word 0x{raw:08x}"), "undefined encoding".into()),
            Err(e) => bad(
                format!(".word 0x{raw:08x}"),
                format!("undefined encoding: {e}"),
            ),
        }
    }

    fn execute<M: Memory + ?Sized>(_: &Op, _: &mut A64State, _: &mut M) -> Result<(), Stop> {
        Err(Stop::Unsupported(
            "the aarch64 executor is not built yet".into(),
        ))
    }
}
