//! What an architecture provides, and the architecture-neutral run loop.
//!
//! As in yaxpeax-arch, an architecture is a bundle of types ([`Arch`]): its
//! register state and its cached, pre-decoded operation. A critical section
//! is decoded once into a [`Program`]; [`Program::run`] then executes the
//! cached operations from `start_ip` until the instruction pointer leaves
//! `[start_ip, post_commit_ip)`, and never calls the decoder again.

use crate::abi::ArchKind;
use crate::memory::{MemFault, Memory};
use thiserror::Error;

/// Register state of an architecture, as far as the run loop needs it.
pub trait ArchState: Clone + std::fmt::Debug {
    /// The instruction pointer (`rip` / `pc`).
    fn ip(&self) -> u64;
    /// Set the instruction pointer.
    fn set_ip(&mut self, ip: u64);
}

/// Control flow of one decoded instruction, used to find every reachable
/// instruction of a section (never to execute it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    /// Execution may continue at the next instruction.
    pub falls_through: bool,
    /// Direct branch targets.
    pub targets: Vec<u64>,
    /// The instruction branches to a computed address (ret, `jmp *%rax`, `br x1`).
    pub indirect: bool,
}

/// One instruction as the decoder left it: its text for people, its flow,
/// and either the cached operation the executor runs or the reason it won't.
#[derive(Clone, Debug)]
pub struct DecodedInsn<Op> {
    /// Address of the first byte.
    pub ip: u64,
    /// Length in bytes (at least 1, also for undecodable bytes).
    pub len: u8,
    /// Disassembly (AT&T syntax on x86_64).
    pub text: String,
    /// The cached operation, or why the instruction is not emulated.
    pub op: Result<Op, String>,
    /// Control flow.
    pub flow: Flow,
}

/// Why executing one cached operation stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The executor cannot reproduce this case exactly (it never guesses).
    Unsupported(String),
    /// A memory access faulted; the state is unchanged.
    Fault(MemFault),
}

impl From<MemFault> for Stop {
    fn from(f: MemFault) -> Self {
        Stop::Fault(f)
    }
}

/// An instruction-set architecture: a decoder into cached operations and an
/// executor of them.
pub trait Arch: 'static {
    /// Which architecture this is.
    const KIND: ArchKind;
    /// Whether [`Arch::execute`] exists yet (scan verdicts are `null` otherwise).
    const HAS_EXECUTOR: bool;
    /// The register state.
    type State: ArchState;
    /// A pre-decoded instruction, ready to execute.
    type Op: Clone + std::fmt::Debug + Send + Sync;

    /// Decode the instruction at `ip` whose bytes start `bytes`. Never panics;
    /// undecodable bytes give an instruction with `op: Err(reason)`.
    fn decode(bytes: &[u8], ip: u64) -> DecodedInsn<Self::Op>;

    /// Execute one cached operation: update `state` (including the
    /// instruction pointer) and `mem`. On `Err`, `state` and `mem` are exactly
    /// as before the instruction.
    fn execute<M: Memory + ?Sized>(
        op: &Self::Op,
        state: &mut Self::State,
        mem: &mut M,
    ) -> Result<(), Stop>;
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The instruction pointer reached `post_commit_ip`.
    Committed,
    /// The instruction pointer left the section anywhere else (`abort_ip` included).
    Exited {
        /// Where it went.
        ip: u64,
    },
    /// An instruction the executor will not emulate; the state is at `ip`.
    Unsupported {
        /// The instruction's address.
        ip: u64,
        /// Its disassembly.
        insn: String,
        /// Why it is not emulated.
        reason: String,
    },
    /// A memory access faulted; the state is at `ip`, before the instruction.
    Fault {
        /// The faulting instruction.
        ip: u64,
        /// The faulting access.
        fault: MemFault,
    },
    /// The instruction budget ran out (a loop that does not end).
    BudgetExceeded {
        /// Where execution stood.
        ip: u64,
    },
}

impl Outcome {
    /// Whether the section ran to an exit (committed or exited).
    pub fn is_exit(&self) -> bool {
        matches!(self, Outcome::Committed | Outcome::Exited { .. })
    }
}

/// The result of [`Program::run`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunResult {
    /// How the run ended.
    pub outcome: Outcome,
    /// Instructions executed.
    pub steps: u64,
}

/// Why a section could not be decoded at all.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ProgramError {
    /// The code bytes handed over do not cover the section.
    #[error("code bytes [0x{code_start:x}, 0x{code_end:x}) do not cover the section [0x{start_ip:x}, 0x{post_commit_ip:x})")]
    CodeMissing {
        /// First code byte given.
        code_start: u64,
        /// One past the last code byte given.
        code_end: u64,
        /// Section start.
        start_ip: u64,
        /// Section end.
        post_commit_ip: u64,
    },
    /// The section is empty or reversed.
    #[error("the section [0x{start_ip:x}, 0x{post_commit_ip:x}) is empty")]
    Empty {
        /// Section start.
        start_ip: u64,
        /// Section end.
        post_commit_ip: u64,
    },
    /// The section is larger than [`MAX_SECTION_LEN`].
    #[error("the section is {0} bytes long, more than the {max} bytes rseq-emu decodes", max = MAX_SECTION_LEN)]
    TooLong(u64),
}

/// Largest section decoded (1 MiB).
pub const MAX_SECTION_LEN: u64 = 1 << 20;

/// A critical section decoded once: every instruction from a linear sweep
/// of `[start_ip, post_commit_ip)` plus every direct branch target inside
/// it, indexed by offset for O(1) dispatch.
#[derive(Clone, Debug)]
pub struct Program<A: Arch + ?Sized> {
    start_ip: u64,
    post_commit_ip: u64,
    /// Cached operations (hot); parallel to `insns`.
    ops: Vec<Option<A::Op>>,
    insns: Vec<DecodedInsn<A::Op>>,
    /// offset from start_ip -> index into `insns` + 1 (0: not an instruction start).
    index: Vec<u32>,
    reachable: Vec<bool>,
    /// Per instruction, its likely successors: `(ip, index)` for the
    /// fall-through and the first direct target, with [`NO_SUCC`] when that
    /// address is not an instruction of the section. The run loop follows
    /// these when the new ip matches, so the next index does not depend on
    /// the ip the executor just wrote (a predicted compare instead of a
    /// load chain through `index`).
    succ: Vec<[(u64, u32); 2]>,
}

/// "Not an instruction of the section" in [`Program`]'s successor table.
const NO_SUCC: u32 = u32::MAX;

/// An address inside the section that no decoded instruction starts at.
const NOT_BOUNDARY: usize = usize::MAX;

/// An address outside the section.
const OUTSIDE: usize = usize::MAX - 1;

impl<A: Arch + ?Sized> Program<A> {
    /// Decode the section `[start_ip, post_commit_ip)`. `code` holds the bytes
    /// from `code_base` on; it must cover the section and may extend past it
    /// (an instruction may end after `post_commit_ip`).
    pub fn decode(
        code: &[u8],
        code_base: u64,
        start_ip: u64,
        post_commit_ip: u64,
    ) -> Result<Self, ProgramError> {
        if post_commit_ip <= start_ip {
            return Err(ProgramError::Empty {
                start_ip,
                post_commit_ip,
            });
        }
        let len = post_commit_ip - start_ip;
        if len > MAX_SECTION_LEN {
            return Err(ProgramError::TooLong(len));
        }
        let code_end = code_base.saturating_add(code.len() as u64);
        if start_ip < code_base || post_commit_ip > code_end {
            return Err(ProgramError::CodeMissing {
                code_start: code_base,
                code_end,
                start_ip,
                post_commit_ip,
            });
        }
        // About one instruction per 4 bytes; growing these vectors copies
        // every decoded instruction again.
        let guess = (len as usize / 4 + 4).min(4096);
        let mut p = Program {
            start_ip,
            post_commit_ip,
            ops: Vec::with_capacity(guess),
            insns: Vec::with_capacity(guess),
            index: vec![0; len as usize],
            reachable: Vec::new(),
            succ: Vec::new(),
        };
        let bytes_at = |ip: u64| &code[(ip - code_base) as usize..];
        // Linear sweep, then every direct target that is not yet a boundary.
        let mut pending = vec![start_ip];
        while let Some(mut ip) = pending.pop() {
            while ip < post_commit_ip && p.index[(ip - start_ip) as usize] == 0 {
                let d = A::decode(bytes_at(ip), ip);
                let next = ip + u64::from(d.len.max(1));
                for &t in &d.flow.targets {
                    if t >= start_ip && t < post_commit_ip && p.index[(t - start_ip) as usize] == 0
                    {
                        pending.push(t);
                    }
                }
                p.index[(ip - start_ip) as usize] = p.insns.len() as u32 + 1;
                p.ops.push(d.op.as_ref().ok().cloned());
                p.insns.push(d);
                ip = next;
            }
        }
        p.mark_reachable();
        p.succ = p
            .insns
            .iter()
            .map(|d| {
                let succ = |ip: u64| {
                    let i = p.index_of(ip).map_or(NO_SUCC, |i| i as u32);
                    (ip, i)
                };
                let fall = d.ip + u64::from(d.len.max(1));
                [
                    succ(fall),
                    succ(d.flow.targets.first().copied().unwrap_or(fall)),
                ]
            })
            .collect();
        Ok(p)
    }

    fn mark_reachable(&mut self) {
        self.reachable = vec![false; self.insns.len()];
        let mut work = vec![self.start_ip];
        while let Some(ip) = work.pop() {
            let Some(i) = self.index_of(ip) else { continue };
            if self.reachable[i] {
                continue;
            }
            self.reachable[i] = true;
            let d = &self.insns[i];
            if d.flow.falls_through {
                work.push(d.ip + u64::from(d.len.max(1)));
            }
            work.extend(d.flow.targets.iter().copied());
        }
    }

    #[inline]
    fn index_of(&self, ip: u64) -> Option<usize> {
        let off = ip.wrapping_sub(self.start_ip);
        match self.index.get(off as usize) {
            Some(&n) if n != 0 && off < self.index.len() as u64 => Some(n as usize - 1),
            _ => None,
        }
    }

    /// First instruction of the section.
    pub fn start_ip(&self) -> u64 {
        self.start_ip
    }

    /// The commit point.
    pub fn post_commit_ip(&self) -> u64 {
        self.post_commit_ip
    }

    /// Every decoded instruction, in decoding order (sorted by address).
    pub fn insns(&self) -> Vec<&DecodedInsn<A::Op>> {
        let mut v: Vec<_> = self.insns.iter().collect();
        v.sort_by_key(|d| d.ip);
        v
    }

    /// The instruction starting at `ip`, if any.
    pub fn insn_at(&self, ip: u64) -> Option<&DecodedInsn<A::Op>> {
        self.index_of(ip).map(|i| &self.insns[i])
    }

    /// Whether the instruction at `ip` is reachable from `start_ip` by direct flow.
    pub fn is_reachable(&self, ip: u64) -> bool {
        self.index_of(ip).is_some_and(|i| self.reachable[i])
    }

    /// The reachable instructions the executor will not run.
    pub fn unsupported(&self) -> Vec<&DecodedInsn<A::Op>> {
        let mut v: Vec<_> = self
            .insns
            .iter()
            .zip(&self.reachable)
            .filter(|(d, &r)| r && d.op.is_err())
            .map(|(d, _)| d)
            .collect();
        v.sort_by_key(|d| d.ip);
        v
    }

    /// Whether every reachable instruction can be emulated.
    pub fn is_emulable(&self) -> bool {
        A::HAS_EXECUTOR && self.unsupported().is_empty()
    }

    /// Run from the state's instruction pointer until it leaves the section,
    /// an instruction cannot be emulated, an access faults, or `budget`
    /// instructions have run.
    pub fn run<M: Memory + ?Sized>(
        &self,
        state: &mut A::State,
        mem: &mut M,
        budget: u64,
    ) -> RunResult {
        let mut steps = 0u64;
        let mut i = self.locate(state.ip());
        if i == OUTSIDE {
            return self.left(state.ip(), steps);
        }
        loop {
            if steps >= budget {
                return RunResult {
                    outcome: Outcome::BudgetExceeded { ip: state.ip() },
                    steps,
                };
            }
            if i == NOT_BOUNDARY {
                return RunResult {
                    outcome: Outcome::Unsupported {
                        ip: state.ip(),
                        insn: "(no instruction starts here)".into(),
                        reason: "control reached an address inside the section that is not an instruction boundary found by decoding".into(),
                    },
                    steps,
                };
            }
            let stop = match &self.ops[i] {
                Some(op) => A::execute(op, state, mem).err(),
                None => Some(Stop::Unsupported(
                    self.insns[i].op.clone().err().unwrap_or_default(),
                )),
            };
            if let Some(stop) = stop {
                return RunResult {
                    outcome: self.stopped(i, stop),
                    steps,
                };
            }
            steps += 1;
            let ip = state.ip();
            let [fall, target] = self.succ[i];
            let next = if ip == fall.0 {
                fall.1
            } else if ip == target.0 {
                target.1
            } else {
                NO_SUCC
            };
            i = if next != NO_SUCC {
                next as usize
            } else {
                let i = self.locate(ip);
                if i == OUTSIDE {
                    return self.left(ip, steps);
                }
                i
            };
        }
    }

    /// The instruction at `ip`: its index, [`NOT_BOUNDARY`] inside the
    /// section but not at an instruction start, [`OUTSIDE`] outside it.
    #[inline]
    fn locate(&self, ip: u64) -> usize {
        let off = ip.wrapping_sub(self.start_ip);
        match self.index.get(off as usize) {
            _ if off >= self.index.len() as u64 => OUTSIDE,
            Some(&n) if n != 0 => n as usize - 1,
            _ => NOT_BOUNDARY,
        }
    }

    /// The result of leaving the section for `ip` after `steps` instructions.
    #[inline]
    fn left(&self, ip: u64, steps: u64) -> RunResult {
        let outcome = if ip == self.post_commit_ip {
            Outcome::Committed
        } else {
            Outcome::Exited { ip }
        };
        RunResult { outcome, steps }
    }

    /// The outcome of instruction `i` stopping with `stop`.
    #[cold]
    fn stopped(&self, i: usize, stop: Stop) -> Outcome {
        let ip = self.insns[i].ip;
        match stop {
            Stop::Unsupported(reason) => Outcome::Unsupported {
                ip,
                insn: self.insns[i].text.clone(),
                reason,
            },
            Stop::Fault(fault) => Outcome::Fault { ip, fault },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::SparseMemory;

    /// A toy ISA to pin down the run loop: `00` nop, `20 d` jmp rel8,
    /// `21 d` if acc != 0 { acc -= 1; jmp rel8 }, `30` jmp *acc,
    /// `40` acc = byte at acc (may fault), `ff` not emulated.
    #[derive(Debug)]
    enum Toy {}

    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    struct ToyState {
        ip: u64,
        acc: u64,
    }

    impl ArchState for ToyState {
        fn ip(&self) -> u64 {
            self.ip
        }
        fn set_ip(&mut self, ip: u64) {
            self.ip = ip;
        }
    }

    impl Arch for Toy {
        const KIND: ArchKind = ArchKind::X86_64;
        const HAS_EXECUTOR: bool = true;
        type State = ToyState;
        type Op = (u8, u64, u64);

        fn decode(bytes: &[u8], ip: u64) -> DecodedInsn<Self::Op> {
            let b = bytes.first().copied().unwrap_or(0xff);
            let len: u8 = if matches!(b, 0x20 | 0x21) { 2 } else { 1 };
            let d = bytes.get(1).copied().unwrap_or(0) as i8;
            let next = ip + u64::from(len);
            let target = next.wrapping_add(d as u64);
            let flow = match b {
                0x20 => Flow {
                    falls_through: false,
                    targets: vec![target],
                    indirect: false,
                },
                0x21 => Flow {
                    falls_through: true,
                    targets: vec![target],
                    indirect: false,
                },
                0x30 => Flow {
                    falls_through: false,
                    targets: vec![],
                    indirect: true,
                },
                _ => Flow {
                    falls_through: true,
                    targets: vec![],
                    indirect: false,
                },
            };
            DecodedInsn {
                ip,
                len,
                text: format!("toy {b:02x}"),
                op: if matches!(b, 0x00 | 0x20 | 0x21 | 0x30 | 0x40) {
                    Ok((b, next, target))
                } else {
                    Err("toy: not emulated".into())
                },
                flow,
            }
        }

        fn execute<M: Memory + ?Sized>(
            &(b, next, target): &Self::Op,
            st: &mut ToyState,
            mem: &mut M,
        ) -> Result<(), Stop> {
            st.ip = match b {
                0x20 => target,
                0x21 if st.acc != 0 => {
                    st.acc -= 1;
                    target
                }
                0x30 => st.acc,
                0x40 => {
                    st.acc = u64::from(mem.read_u8(st.acc)?);
                    next
                }
                _ => next,
            };
            Ok(())
        }
    }

    const BASE: u64 = 0x1000;

    fn run(code: &[u8], acc: u64, budget: u64) -> (RunResult, ToyState) {
        let p = Program::<Toy>::decode(code, BASE, BASE, BASE + code.len() as u64).unwrap();
        let mut st = ToyState { ip: BASE, acc };
        let mut mem = SparseMemory::new();
        mem.map(0x10, vec![7; 4], true).unwrap();
        let r = p.run(&mut st, &mut mem, budget);
        (r, st)
    }

    /// Run with budget 1 over and over (what a single-stepper does).
    fn single_step(code: &[u8], acc: u64) -> (Outcome, u64, ToyState) {
        let p = Program::<Toy>::decode(code, BASE, BASE, BASE + code.len() as u64).unwrap();
        let mut st = ToyState { ip: BASE, acc };
        let mut mem = SparseMemory::new();
        mem.map(0x10, vec![7; 4], true).unwrap();
        let mut steps = 0;
        for _ in 0..1000 {
            let r = p.run(&mut st, &mut mem, 1);
            steps += r.steps;
            if !matches!(r.outcome, Outcome::BudgetExceeded { .. }) {
                return (r.outcome, steps, st);
            }
        }
        panic!("no end");
    }

    fn outcome(code: &[u8], acc: u64, budget: u64) -> (Outcome, u64) {
        let (r, _) = run(code, acc, budget);
        (r.outcome, r.steps)
    }

    #[test]
    fn straight_line_and_loops_commit() {
        assert_eq!(outcome(&[0, 0, 0], 0, 100), (Outcome::Committed, 3));
        // 21 fe: a self-loop taken acc times, then the fall-through commits.
        assert_eq!(outcome(&[0x21, 0xfe], 5, 100), (Outcome::Committed, 6));
        let (r, st) = run(&[0, 0x21, 0xfe, 0], 3, 100);
        assert_eq!((r.outcome, r.steps, st.acc), (Outcome::Committed, 6, 0));
    }

    #[test]
    fn budget_counts_executed_instructions_and_an_exit_wins_at_the_limit() {
        assert_eq!(
            outcome(&[0x21, 0xfe], 100, 10),
            (Outcome::BudgetExceeded { ip: BASE }, 10)
        );
        assert_eq!(outcome(&[0x21, 0xfe], 5, 6), (Outcome::Committed, 6));
        assert_eq!(
            outcome(&[0x21, 0xfe], 5, 5),
            (Outcome::BudgetExceeded { ip: BASE }, 5)
        );
        assert_eq!(
            outcome(&[0, 0], 0, 0),
            (Outcome::BudgetExceeded { ip: BASE }, 0)
        );
    }

    #[test]
    fn exits_unsupported_faults_and_non_boundaries() {
        // jmp *acc out of the section, to the commit point, back to the start.
        assert_eq!(
            outcome(&[0x30, 0], 0x9999, 10),
            (Outcome::Exited { ip: 0x9999 }, 1)
        );
        assert_eq!(outcome(&[0x30, 0], BASE + 2, 10), (Outcome::Committed, 1));
        // A jump before the section is an exit too.
        assert_eq!(
            outcome(&[0x20, 0xf0], 0, 10),
            (Outcome::Exited { ip: BASE + 2 - 16 }, 1)
        );
        // Not emulated: the state stays at the instruction.
        let (r, st) = run(&[0, 0xff, 0], 0, 10);
        assert_eq!(r.steps, 1);
        assert_eq!(st.ip, BASE + 1);
        assert!(matches!(
            r.outcome,
            Outcome::Unsupported { ip, ref insn, ref reason }
                if ip == BASE + 1 && insn == "toy ff" && reason == "toy: not emulated"
        ));
        // A fault: the state stays at the instruction.
        let (r, st) = run(&[0, 0x40, 0], 0x20, 10);
        assert!(
            matches!(r.outcome, Outcome::Fault { ip, fault } if ip == BASE + 1 && fault.addr == 0x20)
        );
        assert_eq!((r.steps, st.ip, st.acc), (1, BASE + 1, 0x20));
        // The load works on mapped memory.
        let (r, st) = run(&[0x40], 0x10, 10);
        assert_eq!((r.outcome, st.acc), (Outcome::Committed, 7));
        // Into the middle of `20 00`: not an instruction boundary.
        let (r, _) = run(&[0x30, 0x20, 0x00], BASE + 2, 10);
        assert_eq!(r.steps, 1);
        assert!(
            matches!(r.outcome, Outcome::Unsupported { ip, .. } if ip == BASE + 2),
            "{:?}",
            r.outcome
        );
        // Starting outside, or on a non-boundary.
        let p = Program::<Toy>::decode(&[0x20, 0, 0], BASE, BASE, BASE + 3).unwrap();
        let mut mem = SparseMemory::new();
        let mut st = ToyState {
            ip: BASE + 3,
            acc: 0,
        };
        assert_eq!(p.run(&mut st, &mut mem, 5).outcome, Outcome::Committed);
        let mut st = ToyState {
            ip: BASE + 1,
            acc: 0,
        };
        assert!(matches!(
            p.run(&mut st, &mut mem, 5).outcome,
            Outcome::Unsupported { .. }
        ));
    }

    #[test]
    fn single_stepping_ends_like_one_run() {
        let cases: &[(&[u8], u64)] = &[
            (&[0x21, 0xfe], 7),
            (&[0, 0x21, 0xfd, 0x30], 3),
            (&[0x30, 0x20, 0x00], BASE + 2),
            (&[0, 0x40, 0], 0x20),
            (&[0, 0x40, 0], 0x11),
            (&[0, 0xff], 0),
        ];
        for &(code, acc) in cases {
            let (r, st) = run(code, acc, 1000);
            assert_eq!(
                single_step(code, acc),
                (r.outcome, r.steps, st),
                "{code:02x?} acc {acc:#x}"
            );
        }
    }
}
