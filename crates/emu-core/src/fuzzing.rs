//! Support shared by the architecture crates' fuzz bodies (their
//! `fuzzing` modules, run by the cargo-fuzz targets and over fixed seed
//! corpora in ordinary tests). Not part of the emulator's API.

use crate::arch::{Arch, Outcome, Program};
use crate::memory::Memory;

/// Run `prog` from `state` one instruction at a time, at most `max_steps`
/// instructions, and check the executor's contract at every step:
///
/// * a step that neither stops nor leaves the section counts exactly one
///   instruction;
/// * a [`Outcome::Fault`] or [`Outcome::Unsupported`] stop leaves `state`
///   and the `watch_len` bytes of `mem` at `watch` exactly as they were.
///
/// Returns at the first stop or exit. Panics (the fuzzer's finding) when
/// the contract is broken.
pub fn step_checked<A: Arch, M: Memory>(
    prog: &Program<A>,
    state: &mut A::State,
    mem: &mut M,
    watch: u64,
    watch_len: usize,
    max_steps: usize,
) where
    A::State: PartialEq,
{
    let snapshot = |mem: &mut M| {
        let mut bytes = vec![0u8; watch_len];
        let _ = mem.read(watch, &mut bytes);
        bytes
    };
    for _ in 0..max_steps {
        let before = state.clone();
        let snap = snapshot(mem);
        let r = prog.run(state, mem, 1);
        match r.outcome {
            Outcome::BudgetExceeded { .. } => {
                assert_eq!(r.steps, 1, "a budget of one ran {} steps", r.steps);
            }
            Outcome::Fault { .. } | Outcome::Unsupported { .. } => {
                assert_eq!(*state, before, "state changed by a stopped instruction");
                assert_eq!(
                    snapshot(mem),
                    snap,
                    "memory changed by a stopped instruction"
                );
                return;
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::ArchKind;
    use crate::arch::{ArchState, DecodedInsn, Flow, Stop};
    use crate::memory::{MemFault, SparseMemory};

    /// `00` nop; `01` stores 1 at 0x1000, then faults anyway (breaks the
    /// contract); `02` bumps `acc`, then faults (breaks it too); `03`
    /// faults cleanly.
    #[derive(Debug)]
    enum Sloppy {}

    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    struct St {
        ip: u64,
        acc: u64,
    }

    impl ArchState for St {
        fn ip(&self) -> u64 {
            self.ip
        }
        fn set_ip(&mut self, ip: u64) {
            self.ip = ip;
        }
    }

    impl Arch for Sloppy {
        const KIND: ArchKind = ArchKind::X86_64;
        const HAS_EXECUTOR: bool = true;
        type State = St;
        type Op = u8;

        fn decode(bytes: &[u8], ip: u64) -> DecodedInsn<u8> {
            DecodedInsn {
                ip,
                len: 1,
                text: String::new(),
                op: Ok(bytes[0]),
                flow: Flow {
                    falls_through: true,
                    targets: vec![],
                    indirect: false,
                },
            }
        }

        fn execute<M: Memory + ?Sized>(op: &u8, st: &mut St, mem: &mut M) -> Result<(), Stop> {
            let fault = Stop::Fault(MemFault {
                addr: 0,
                size: 1,
                kind: crate::memory::AccessKind::Read,
            });
            match op {
                0 => {
                    st.ip += 1;
                    Ok(())
                }
                1 => {
                    mem.write_u8(0x1000, 1)?;
                    Err(fault)
                }
                2 => {
                    st.acc += 1;
                    Err(fault)
                }
                _ => Err(fault),
            }
        }
    }

    fn run(code: &[u8]) {
        let prog = Program::<Sloppy>::decode(code, 0x40, 0x40, 0x40 + code.len() as u64).unwrap();
        let mut mem = SparseMemory::new();
        mem.map(0x1000, vec![0; 16], true).unwrap();
        let mut st = St { ip: 0x40, acc: 0 };
        step_checked(&prog, &mut st, &mut mem, 0x1000, 16, 10);
    }

    #[test]
    fn a_clean_fault_passes() {
        run(&[0, 0, 3]);
        run(&[0, 0, 0]);
    }

    #[test]
    #[should_panic(expected = "memory changed by a stopped instruction")]
    fn a_write_before_a_fault_is_caught() {
        run(&[0, 1]);
    }

    #[test]
    #[should_panic(expected = "state changed by a stopped instruction")]
    fn a_state_change_before_a_fault_is_caught() {
        run(&[0, 2]);
    }
}
