//! Decoding with iced-x86 into the cached form the executor runs.

use iced_x86::{Decoder, DecoderOptions, FlowControl, Formatter, GasFormatter, Instruction};
use rseq_emu_core::{Arch, ArchKind, DecodedInsn, Flow, Memory, Stop};

use crate::state::X86State;

/// The x86_64 architecture.
#[derive(Debug)]
pub enum X86_64 {}

/// A pre-decoded x86_64 instruction.
#[derive(Clone, Debug)]
pub struct Op {
    /// The decoded instruction.
    pub insn: Instruction,
}

/// Disassemble `insn` in AT&T syntax.
pub fn format(insn: &Instruction) -> String {
    let mut f = GasFormatter::new();
    f.options_mut().set_first_operand_char_index(0);
    let mut s = String::new();
    f.format(insn, &mut s);
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

impl Arch for X86_64 {
    const KIND: ArchKind = ArchKind::X86_64;
    const HAS_EXECUTOR: bool = false;
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
        DecodedInsn {
            ip,
            len: insn.len() as u8,
            text: format(&insn),
            op: Err("the x86_64 executor is not built yet".into()),
            flow: flow(&insn),
        }
    }

    fn execute<M: Memory + ?Sized>(_: &Op, _: &mut X86State, _: &mut M) -> Result<(), Stop> {
        Err(Stop::Unsupported(
            "the x86_64 executor is not built yet".into(),
        ))
    }
}
