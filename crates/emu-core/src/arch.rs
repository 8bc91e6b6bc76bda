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
}

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
        let mut p = Program {
            start_ip,
            post_commit_ip,
            ops: Vec::new(),
            insns: Vec::new(),
            index: vec![0; len as usize],
            reachable: Vec::new(),
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
        let len = self.index.len() as u64;
        loop {
            let ip = state.ip();
            let off = ip.wrapping_sub(self.start_ip);
            if off >= len {
                let outcome = if ip == self.post_commit_ip {
                    Outcome::Committed
                } else {
                    Outcome::Exited { ip }
                };
                return RunResult { outcome, steps };
            }
            if steps >= budget {
                return RunResult {
                    outcome: Outcome::BudgetExceeded { ip },
                    steps,
                };
            }
            let n = self.index[off as usize];
            if n == 0 {
                return RunResult {
                    outcome: Outcome::Unsupported {
                        ip,
                        insn: "(no instruction starts here)".into(),
                        reason: "control reached an address inside the section that is not an instruction boundary found by decoding".into(),
                    },
                    steps,
                };
            }
            let i = n as usize - 1;
            let stop = match &self.ops[i] {
                Some(op) => match A::execute(op, state, mem) {
                    Ok(()) => {
                        steps += 1;
                        continue;
                    }
                    Err(s) => s,
                },
                None => Stop::Unsupported(self.insns[i].op.clone().err().unwrap_or_default()),
            };
            let outcome = match stop {
                Stop::Unsupported(reason) => Outcome::Unsupported {
                    ip,
                    insn: self.insns[i].text.clone(),
                    reason,
                },
                Stop::Fault(fault) => Outcome::Fault { ip, fault },
            };
            return RunResult { outcome, steps };
        }
    }
}
