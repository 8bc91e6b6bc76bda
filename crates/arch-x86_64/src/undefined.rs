//! The flags the Intel SDM leaves undefined after an instruction. Tests and
//! replay mask exactly these bits and nothing else (see docs/x86_64.md).

use crate::bits::count_mask;
use crate::decode::{Kind, Op};
use crate::exec::read;
use crate::flags::{AF, CF, OF, PF, SF, ZF};
use crate::state::X86State;

/// The RFLAGS bits whose value after `op` is architecturally undefined,
/// given the state *before* it runs (shift counts in `%cl` matter).
///
/// ```
/// use rseq_emu_core::Arch;
/// use rseq_emu_x86_64::{flags, undefined_flags, X86State, X86_64};
/// // and %esi,%eax: AF is undefined
/// let op = X86_64::decode(&[0x21, 0xf0], 0).op.unwrap();
/// assert_eq!(undefined_flags(&op, &X86State::default()), flags::AF);
/// // add %esi,%eax: everything defined
/// let op = X86_64::decode(&[0x01, 0xf0], 0).op.unwrap();
/// assert_eq!(undefined_flags(&op, &X86State::default()), 0);
/// ```
pub fn undefined_flags(op: &Op, before: &X86State) -> u64 {
    match op.kind {
        Kind::And | Kind::Or | Kind::Xor | Kind::Test => AF,
        Kind::Imul => SF | ZF | AF | PF,
        Kind::Bt | Kind::Bts | Kind::Btr | Kind::Btc => OF | SF | AF | PF,
        Kind::Shl | Kind::Shr | Kind::Sar | Kind::Rol | Kind::Ror => {
            // Registers and immediates only: never faults.
            let mut none = rseq_emu_core::SparseMemory::new();
            let count = read(&op.src, before, &mut none).unwrap_or(0) & count_mask(op.size);
            match (op.kind, count) {
                (_, 0) => 0,
                (Kind::Rol | Kind::Ror, 1) => 0,
                (Kind::Rol | Kind::Ror, _) => OF,
                (_, 1) => AF,
                (Kind::Shl | Kind::Shr, c) if c >= u64::from(op.size) * 8 => CF | OF | AF,
                _ => OF | AF,
            }
        }
        _ => 0,
    }
}
