//! `rseq-emu stress`: per-CPU counters and per-CPU linked lists (the
//! librseq `basic_percpu_ops` pattern) on 4× more threads than CPUs, under a
//! signal storm aimed at the workers, mixing three kinds of thread on the
//! same per-CPU data:
//!
//! * `native`: the real inline-asm rseq sequences on glibc's registration,
//!   retrying natively on every abort (what an application does without
//!   the engine);
//! * `auto`: the same sequences with the runtime's abort stub as the abort
//!   handler; when the `auto` policy engages (`--threshold` consecutive
//!   aborts, or the runtime's abort-streak and hot-descriptor rules) the
//!   engine emulates the very same instruction bytes with the x86_64
//!   executor and commits natively on the CPU the thread runs on;
//! * `always`: every operation emulated by the engine (the `always` mode).
//!
//! At the end: the counters are exact (per mode, see [`WEIGHTS`]) and every
//! list node is found exactly once, in a list or in a thread's pool.

use rseq_emu_core::RseqCs;
use rseq_emu_runtime::engine::{self, Answer, Why};
use rseq_emu_runtime::section::{self, Section};
use rseq_emu_runtime::{abort, policy, registration};
use rseq_emu_x86_64::{reg, X86State};
use std::error::Error;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Arguments of `rseq-emu stress`.
#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Stop after this many seconds (default 2, or 3600 with --ops).
    #[arg(long)]
    seconds: Option<u64>,
    /// Stop once this many operations (counter adds, pushes, pops) completed.
    #[arg(long)]
    ops: Option<u64>,
    /// Microseconds between rounds of the signal storm (0 = no storm).
    #[arg(long, default_value_t = 100)]
    signal_us: u64,
    /// Consecutive native aborts before an `auto` thread calls the engine
    /// (default: the runtime's policy default).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    threshold: Option<u32>,
}

// ---------------------------------------------------------------------------
// Native sequences shared by the stress and livelock workloads.

/// Return value of a native sequence whose abort handler ran.
pub(crate) const RET_ABORT: u64 = 1;

/// How a sequence run (native or emulated) left the critical section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Reached `post_commit_ip`: committed; `rax` at that point.
    Post(u64),
    /// Left by another exit (a failed comparison, an empty list); `rax`.
    Other(u64),
    /// The abort handler ran (kernel abort or the sequence's cpu check).
    Abort,
}

/// A native sequence as the engine knows it: its descriptor (the
/// `__rseq_cs` entry the assembler emitted), validated, decoded and
/// analysed by the runtime (`section::lookup`, cached).
pub(crate) struct Seq {
    /// The descriptor the kernel sees.
    pub(crate) cs: RseqCs,
    section: Arc<Section>,
}

impl Seq {
    /// The section of the descriptor at `desc` (no abort teardown).
    ///
    /// # Safety
    /// `desc` points at 32 readable bytes.
    pub(crate) unsafe fn from_descriptor(desc: *const u8) -> Result<Seq, String> {
        // The descriptor's abort_ip is where the (empty) teardown starts.
        // SAFETY: the caller's contract.
        let cs = RseqCs::from_bytes(unsafe { &*(desc as *const [u8; 32]) });
        let section = section::lookup(desc as u64, (cs.abort_ip, cs.abort_ip))
            .map_err(|e| format!("sequence at {:#x}: {e}", cs.start_ip))?;
        Ok(Seq { cs, section })
    }

    /// The section of the native function at `f` (a `percpu_seq!`
    /// function): the descriptor of this binary's `__rseq_cs` whose
    /// start_ip is the first at or after `f` (the function's only section
    /// starts after a two-instruction prologue).
    fn of_native(f: *const ()) -> Result<Seq, String> {
        let f = f as u64;
        let read = |d: u64| {
            // SAFETY: `linked_descriptors` lists 32-byte descriptors of
            // this binary's `__rseq_cs` section.
            RseqCs::from_bytes(unsafe { &*(d as *const [u8; 32]) })
        };
        let (start, desc) = section::linked_descriptors()
            .into_iter()
            .map(|d| (read(d).start_ip, d))
            .filter(|&(start, _)| start >= f)
            .min()
            .ok_or_else(|| format!("no rseq descriptor after {f:#x}"))?;
        if start - f > 64 {
            return Err(format!("no rseq section at the start of {f:#x}"));
        }
        // SAFETY: `desc` is one of the descriptors read above.
        unsafe { Seq::from_descriptor(desc as *const u8) }
    }

    /// Complete the sequence through the engine (the `always` mode): the
    /// runtime emulates the section's own instructions from the entry
    /// registers `regs` against its logged view of this process and
    /// commits natively on the CPU the thread runs on. The exit is
    /// classified as a native run would be; `None` = the engine answered
    /// native retry for another reason than the sequence's own abort.
    pub(crate) fn emulate(&self, regs: &[(usize, u64)]) -> Option<(Exit, u32)> {
        let probe = 0u8;
        let mut st = X86State {
            rip: self.cs.start_ip,
            rflags: rseq_emu_x86_64::flags::RESERVED1,
            fs_base: rseq_emu_runtime::arch::thread_pointer() as u64,
            ..X86State::default()
        };
        // A stack pointer in this frame (the sections never use the stack).
        st.gpr[reg::RSP] = std::hint::black_box(&probe) as *const u8 as u64 & !15;
        for &(r, v) in regs {
            st.gpr[r] = v;
        }
        match engine::emulate_section(&self.section, &st) {
            Answer::Resume { ip, state, rounds } => {
                let rax = state.gpr[reg::RAX];
                let post = self.cs.post_commit_ip().unwrap_or(0);
                Some((
                    if ip == post {
                        Exit::Post(rax)
                    } else {
                        Exit::Other(rax)
                    },
                    rounds,
                ))
            }
            Answer::Retry(Why::SequenceAbort) => Some((Exit::Abort, 1)),
            Answer::Retry(_) => None,
        }
    }
}

// The stress sequences, librseq style (x86_64, AT&T): each writes its
// descriptor to the rseq area's `rseq_cs`, checks the CPU inside the section
// and commits with its last instruction. Arguments in fixed registers, the
// same for the native run and for the engine's entry state (`always`):
// rdi = the rseq area, esi = the cpu, then rdx, rcx, r8; result in rax.
//
// Each sequence is written once, as the body after the CPU check, and
// `percpu_seq!` builds its two functions, which differ only in the abort
// handler:
// * native (`native` and, emulated, `always` threads): the signature glibc
//   registered, then the abort label; returns RET_ABORT, the caller retries;
// * auto: `rseq_emu_asm_define_abort!`, the runtime's stub. On an abort the
//   engine either resumes at the exit the emulation reached (post_commit_ip
//   or another exit of the body) with the emulated registers, or answers
//   native retry (RET_ABORT).
//
// The body's labels: `2:` = post_commit_ip, `6f` = the end (other exits
// jump there with rax set), `4f` = the abort handler. Labels 1, 3, 5 are
// the macro's. `livelock` uses the same macro.

/// The asm statement of one sequence. `[$abort]`: the
/// abort handler, which defines `4:` after the signature and ends up at
/// `5:`; `[$clob]`: the scratch registers; `$reg = $val`: the inputs
/// (clobbered).
macro_rules! seq_asm {
    ([$($abort:tt)*] [$($body:literal),* $(,)?] [$($clob:tt),*] $($reg:tt = $val:expr),*) => {{
        let r: u64;
        // SAFETY: an rseq critical section on the calling thread's
        // registered area (rdi); its other inputs are the caller's contract.
        unsafe {
            std::arch::asm!(
                rseq_emu_runtime::rseq_emu_asm_define_cs!("3", "1f", "2f", "4f"),
                "lea 3b(%rip), %rax",
                "mov %rax, 8(%rdi)",
                "1:",
                "cmp 4(%rdi), %esi",
                "jne 4f",
                $($body,)*
                "jmp 6f",
                $($abort)*
                "5:",
                "mov $1, %eax",
                "6:",
                $(inout($reg) $val => _,)*
                out("rax") r,
                $(out($clob) _,)*
                options(att_syntax),
            );
        }
        r
    }};
}

pub(crate) use seq_asm;

/// A sequence's native and `auto` functions (see above).
macro_rules! percpu_seq {
    (
        $(#[$doc:meta])*
        $vis:vis fn $native:ident / $auto:ident,
        ($($arg:ident: $ty:ty => $reg:tt),*)
        clobbers($($clob:tt),*)
        $body:tt
    ) => {
        $(#[$doc])*
        /// Native abort handler: returns RET_ABORT.
        ///
        /// # Safety
        /// `area` is the calling thread's rseq registration; the pointers
        /// are live and, for nodes, owned by the caller until the commit.
        #[inline(never)]
        $vis unsafe fn $native(area: *mut u8, cpu: u32, $($arg: $ty),*) -> u64 {
            $crate::stress::seq_asm!(
                [".long 0x53053053", "4:",]
                $body
                [$($clob),*]
                "rdi" = area, "rsi" = u64::from(cpu) $(, $reg = $arg)*
            )
        }

        $(#[$doc])*
        /// The runtime's abort handler: the engine, or RET_ABORT.
        ///
        /// # Safety
        /// As for the native function.
        #[inline(never)]
        unsafe fn $auto(area: *mut u8, cpu: u32, $($arg: $ty),*) -> u64 {
            $crate::stress::seq_asm!(
                [rseq_emu_runtime::rseq_emu_asm_define_abort!("4", "", "5f"),]
                $body
                [$($clob),*]
                "rdi" = area, "rsi" = u64::from(cpu) $(, $reg = $arg)*
            )
        }
    };
}

pub(crate) use percpu_seq;

percpu_seq! {
    /// `*v += count` on `cpu`: 0 or RET_ABORT.
    fn native_addv / auto_addv,
    (v: *const AtomicU64 => "rdx", count: u64 => "rcx")
    clobbers()
    [
        "add %rcx, (%rdx)",
        "2:",
        "xor %eax, %eax",
    ]
}

percpu_seq! {
    /// `if (*head == expect) *head = node` on `cpu`: 0, 2 (`*head !=
    /// expect`) or RET_ABORT.
    pub(crate) fn native_push / auto_push,
    (head: *const AtomicU64 => "rdx", expect: u64 => "rcx", node: u64 => "r8")
    clobbers()
    [
        "cmp %rcx, (%rdx)",
        "jne 7f",
        "mov %r8, (%rdx)",
        "2:",
        "xor %eax, %eax",
        "jmp 6f",
        "7:",
        "mov $2, %eax",
    ]
}

percpu_seq! {
    /// Pop the first node of `head`'s list on `cpu`: the node, 0 (empty)
    /// or RET_ABORT.
    fn native_pop / auto_pop,
    (head: *const AtomicU64 => "rdx")
    clobbers("r9")
    [
        "mov (%rdx), %rax",
        "test %rax, %rax",
        "jz 6f",
        "mov (%rax), %r9",
        "mov %r9, (%rdx)",
        "2:",
    ]
}

/// The stress sequences as the engine knows them.
pub(crate) struct Seqs {
    addv: Seq,
    /// The compare-and-store (also the bench's sequence).
    pub(crate) push: Seq,
    pop: Seq,
}

/// The stress sequences, looked up once.
pub(crate) fn seqs() -> Result<&'static Seqs, String> {
    static S: OnceLock<Result<Seqs, String>> = OnceLock::new();
    S.get_or_init(|| {
        Ok(Seqs {
            addv: Seq::of_native(native_addv as *const ())?,
            push: Seq::of_native(native_push as *const ())?,
            pop: Seq::of_native(native_pop as *const ())?,
        })
    })
    .as_ref()
    .map_err(|e| e.clone())
}

// ---------------------------------------------------------------------------
// The workload.

/// Thread kinds, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Native sequences, native retry on abort.
    Native,
    /// The sequences with the runtime's abort stub (policy `auto`).
    Auto,
    /// Every operation through the engine.
    Always,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Native, Mode::Auto, Mode::Always];
    fn name(self) -> &'static str {
        match self {
            Mode::Native => "native",
            Mode::Auto => "auto",
            Mode::Always => "always",
        }
    }
}

/// Counter increment per mode: the counters are shared by all modes, and
/// each mode adds its own weight, so the lost (or extra) updates of each
/// mode can be read back from the difference (exact while each mode's
/// error stays below 2^20; u64 wrapping arithmetic).
const WEIGHTS: [u64; 3] = [1, 1 << 21, 1 << 42];

/// Split `expected - actual` (wrapping) into per-mode signed differences.
fn per_mode_diff(diff: u64) -> [i64; 3] {
    let mut out = [0i64; 3];
    let mut d = diff;
    for (m, o) in out.iter_mut().enumerate() {
        let bits = if m < 2 { 21 } else { 22 };
        let mask = (1u64 << bits) - 1;
        let mut f = (d & mask) as i64;
        if f >= 1 << (bits - 1) {
            f -= 1 << bits;
        }
        *o = f;
        d = d.wrapping_sub(f as u64) >> bits;
    }
    out
}

/// Per-thread (and per-mode) tallies.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Stats {
    /// Sequence runs: native runs plus engine calls.
    pub(crate) attempts: u64,
    /// Native runs that ended in the abort handler, plus engine commit
    /// rounds that were retried.
    pub(crate) aborts: u64,
    /// Operations completed (counter adds, pushes, pops).
    pub(crate) completions: u64,
    /// Operations whose completing run was the engine's.
    pub(crate) emulated: u64,
    /// Engine calls that refused or exhausted (fell back to native retry).
    pub(crate) refused: u64,
    /// Counter adds completed.
    pub(crate) adds: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.attempts += o.attempts;
        self.aborts += o.aborts;
        self.completions += o.completions;
        self.emulated += o.emulated;
        self.refused += o.refused;
        self.adds += o.adds;
    }
}

/// One CPU's data, on its own cache line.
#[repr(C, align(64))]
struct Slot {
    count: AtomicU64,
    head: AtomicU64,
}

/// A list node; `next` first (offset 0, what the pop sequence loads).
#[repr(C)]
struct Node {
    next: AtomicU64,
    id: u64,
}

const NODES_PER_THREAD: usize = 64;

/// A worker's state.
struct Worker {
    mode: Mode,
    area: *mut u8,
    stats: Stats,
    /// Whether the last run that left the section was the engine's
    /// (`always` threads; the stub's completions are counted globally).
    last_emulated: bool,
}

impl Worker {
    /// Run one sequence to a non-abort exit. `native` runs the native code
    /// for a CPU (the plain sequence for `native` threads, the one with the
    /// engine's abort handler for `auto` threads); `always` threads
    /// emulate `seq` from the entry registers `regs` gives.
    fn run(
        &mut self,
        seq: &Seq,
        native: impl Fn(*mut u8, u32) -> Exit,
        regs: impl Fn(*mut u8, u32) -> Vec<(usize, u64)>,
    ) -> Exit {
        let mut emulate = self.mode == Mode::Always;
        loop {
            let cpu = registration::current_cpu().unwrap_or(0);
            self.stats.attempts += 1;
            if emulate {
                match seq.emulate(&regs(self.area, cpu)) {
                    Some((Exit::Abort, rounds)) => self.stats.aborts += u64::from(rounds),
                    Some((e, rounds)) => {
                        self.stats.aborts += u64::from(rounds - 1);
                        self.last_emulated = true;
                        return e;
                    }
                    None => {
                        // The engine answered native retry: one native run.
                        self.stats.refused += 1;
                        emulate = false;
                    }
                }
                continue;
            }
            match native(self.area, cpu) {
                Exit::Abort => {
                    self.stats.aborts += 1;
                    emulate = self.mode == Mode::Always;
                }
                e => {
                    self.last_emulated = false;
                    return e;
                }
            }
        }
    }

    fn addv(&mut self, s: &Seqs, slots: &[Slot], count: u64) -> Result<(), String> {
        let slot = |cpu: u32| -> *const AtomicU64 { &slots[cpu as usize].count };
        let auto = self.mode == Mode::Auto;
        let e = self.run(
            &s.addv,
            |area, cpu| {
                let f = if auto { auto_addv } else { native_addv };
                // SAFETY: `area` is this thread's registration; the slot
                // is a live AtomicU64.
                let r = unsafe { f(area, cpu, slot(cpu), count) };
                if r == 0 {
                    Exit::Post(0)
                } else {
                    Exit::Abort
                }
            },
            |area, cpu| {
                vec![
                    (reg::RDI, area as u64),
                    (reg::RSI, u64::from(cpu)),
                    (reg::RDX, slot(cpu) as u64),
                    (reg::RCX, count),
                ]
            },
        );
        match e {
            Exit::Post(_) => Ok(()),
            e => Err(format!("addv left by {e:?}")),
        }
    }

    fn push(&mut self, s: &Seqs, slots: &[Slot], node: &Node) -> Result<(), String> {
        let n = node as *const Node as u64;
        let auto = self.mode == Mode::Auto;
        loop {
            let e = self.run(
                &s.push,
                |area, cpu| {
                    let head = &slots[cpu as usize].head;
                    let expect = head.load(Ordering::Relaxed);
                    node.next.store(expect, Ordering::Relaxed);
                    let f = if auto { auto_push } else { native_push };
                    // SAFETY: as for addv; `node` is owned by this thread
                    // until the commit publishes it.
                    let r = unsafe { f(area, cpu, head, expect, n) };
                    match r {
                        0 => Exit::Post(0),
                        2 => Exit::Other(2),
                        _ => Exit::Abort,
                    }
                },
                |area, cpu| {
                    let head = &slots[cpu as usize].head;
                    let expect = head.load(Ordering::Relaxed);
                    node.next.store(expect, Ordering::Relaxed);
                    vec![
                        (reg::RDI, area as u64),
                        (reg::RSI, u64::from(cpu)),
                        (reg::RDX, head as *const AtomicU64 as u64),
                        (reg::RCX, expect),
                        (reg::R8, n),
                    ]
                },
            );
            match e {
                Exit::Post(_) => return Ok(()),
                Exit::Other(_) => continue,
                Exit::Abort => return Err("push left by abort".into()),
            }
        }
    }

    fn pop(&mut self, s: &Seqs, slots: &[Slot]) -> Result<u64, String> {
        let auto = self.mode == Mode::Auto;
        let e = self.run(
            &s.pop,
            |area, cpu| {
                let head = &slots[cpu as usize].head;
                let f = if auto { auto_pop } else { native_pop };
                // SAFETY: as for addv; the lists hold only live nodes.
                let r = unsafe { f(area, cpu, head) };
                match r {
                    RET_ABORT => Exit::Abort,
                    0 => Exit::Other(0),
                    n => Exit::Post(n),
                }
            },
            |area, cpu| {
                vec![
                    (reg::RDI, area as u64),
                    (reg::RSI, u64::from(cpu)),
                    (
                        reg::RDX,
                        &slots[cpu as usize].head as *const AtomicU64 as u64,
                    ),
                ]
            },
        );
        match e {
            Exit::Post(n) => Ok(n),
            Exit::Other(_) => Ok(0),
            Exit::Abort => Err("pop left by abort".into()),
        }
    }
}

extern "C" fn on_signal(_: libc::c_int) {}

fn tid() -> libc::pid_t {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as libc::pid_t }
}

/// Install `handler` (SA_RESTART, nothing blocked) for `sig`. The
/// workloads never uninstall it: a signal still pending when a storm
/// stops finds it in place.
pub(crate) fn install_handler(
    sig: libc::c_int,
    handler: extern "C" fn(libc::c_int),
) -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction with a valid handler and an empty mask.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Number of CPU ids the kernel may report (size of the per-CPU arrays).
pub(crate) fn cpu_ids() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    n.max(1) as usize
}

/// Per-mode result of a stress run.
#[derive(Debug)]
struct ModeReport {
    mode: Mode,
    threads: usize,
    stats: Stats,
    lost_updates: i64,
}

/// Run the stress workload.
pub fn run(a: Args) -> Result<ExitCode, Box<dyn Error>> {
    if a.seconds == Some(0) {
        return Err("--seconds must be at least 1".into());
    }
    if a.ops == Some(0) {
        return Err("--ops must be at least 1".into());
    }
    let seqs = seqs()?;
    let ncpu = std::thread::available_parallelism()?.get();
    let nids = cpu_ids();
    let nthreads = 4 * ncpu;
    if let Some(t) = a.threshold {
        policy::set_threshold(t);
    }
    policy::set_mode(policy::Mode::Auto);
    install_handler(libc::SIGUSR1, on_signal)?;
    let slots: Arc<Vec<Slot>> = Arc::new(
        (0..nids)
            .map(|_| Slot {
                count: AtomicU64::new(0),
                head: AtomicU64::new(0),
            })
            .collect(),
    );
    let nodes: Arc<Vec<Node>> = Arc::new(
        (0..nthreads * NODES_PER_THREAD)
            .map(|i| Node {
                next: AtomicU64::new(0),
                id: i as u64,
            })
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let total_ops = Arc::new(AtomicU64::new(0));
    let tids = Arc::new((0..nthreads).map(|_| AtomicU64::new(0)).collect::<Vec<_>>());
    let mut handles = Vec::new();
    let stub0 = abort::stats();
    let start = Instant::now();
    for t in 0..nthreads {
        let mode = Mode::ALL[t % 3];
        let (slots, nodes, stop, total_ops, tids) = (
            slots.clone(),
            nodes.clone(),
            stop.clone(),
            total_ops.clone(),
            tids.clone(),
        );
        handles.push(std::thread::spawn(
            move || -> Result<(Mode, Stats, Vec<u64>), String> {
                tids[t].store(tid() as u64, Ordering::Relaxed);
                let area = registration::area().map_err(|e| e.to_string())?;
                let mut w = Worker {
                    mode,
                    area: area.cast(),
                    stats: Stats::default(),
                    last_emulated: false,
                };
                let mut pool: Vec<u64> = (0..NODES_PER_THREAD)
                    .map(|i| &nodes[t * NODES_PER_THREAD + i] as *const Node as u64)
                    .collect();
                let node_at = |p: u64| -> &Node {
                    let i = (p - nodes.as_ptr() as u64) as usize / std::mem::size_of::<Node>();
                    &nodes[i]
                };
                let mut i = t as u64;
                let mut pending = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    match i % 3 {
                        1 if !pool.is_empty() => {
                            let n = pool.pop().unwrap_or_default();
                            w.push(seqs, &slots, node_at(n))?;
                        }
                        2 => {
                            let n = w.pop(seqs, &slots)?;
                            if n != 0 {
                                pool.push(n);
                            }
                        }
                        _ => {
                            w.addv(seqs, &slots, WEIGHTS[mode as usize])?;
                            w.stats.adds += 1;
                        }
                    }
                    w.stats.completions += 1;
                    w.stats.emulated += u64::from(w.last_emulated);
                    pending += 1;
                    if pending == 256 {
                        total_ops.fetch_add(pending, Ordering::Relaxed);
                        pending = 0;
                    }
                }
                total_ops.fetch_add(pending, Ordering::Relaxed);
                Ok((mode, w.stats, pool))
            },
        ));
    }
    // The storm: SIGUSR1 to every worker, every `signal_us`.
    let limit = Duration::from_secs(a.seconds.unwrap_or(if a.ops.is_some() { 3600 } else { 2 }));
    let mut signals = 0u64;
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    loop {
        if start.elapsed() >= limit
            || a.ops
                .is_some_and(|n| total_ops.load(Ordering::Relaxed) >= n)
        {
            break;
        }
        if handles.iter().any(|h| h.is_finished()) {
            break; // a worker failed; its error is reported below
        }
        if a.signal_us > 0 {
            for t in tids.iter() {
                let t = t.load(Ordering::Relaxed) as libc::pid_t;
                if t != 0 {
                    // SAFETY: tgkill to a thread of this process (its
                    // handler is installed; the workers are joined only
                    // after the storm stops, so the tid is still theirs).
                    let r = unsafe { libc::syscall(libc::SYS_tgkill, pid, t, libc::SIGUSR1) };
                    signals += u64::from(r == 0);
                }
            }
            std::thread::sleep(Duration::from_micros(a.signal_us));
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut per_mode: Vec<ModeReport> = Mode::ALL
        .iter()
        .map(|&mode| ModeReport {
            mode,
            threads: 0,
            stats: Stats::default(),
            lost_updates: 0,
        })
        .collect();
    let mut pools = Vec::new();
    let mut errors = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok((mode, s, pool))) => {
                let r = &mut per_mode[mode as usize];
                r.threads += 1;
                r.stats.add(&s);
                pools.push(pool);
            }
            Ok(Err(e)) => errors.push(e),
            Err(_) => errors.push("worker panicked".into()),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    // The stub's completions (only `auto` threads use it): each was an
    // abort too, which the worker never saw.
    let stub = abort::stats();
    let stub_emulated = stub.emulated - stub0.emulated;
    let auto = &mut per_mode[Mode::Auto as usize].stats;
    auto.aborts += stub_emulated;
    auto.emulated += stub_emulated;
    if !errors.is_empty() {
        return Err(format!("stress workers failed: {}", errors.join("; ")).into());
    }
    let adds: Vec<(Mode, u64)> = per_mode.iter().map(|r| (r.mode, r.stats.adds)).collect();
    let diff = counter_diff(&adds, &slots);
    for r in per_mode.iter_mut() {
        r.lost_updates = diff[r.mode as usize];
    }
    let heads: Vec<u64> = slots
        .iter()
        .map(|s| s.head.load(Ordering::Relaxed))
        .collect();
    let NodeCheck {
        lost,
        duplicated: dup,
        stray,
    } = check_nodes(&nodes, &heads, &pools);
    let refused: u64 = per_mode.iter().map(|r| r.stats.refused).sum();
    let total: u64 = per_mode.iter().map(|r| r.stats.completions).sum();
    let counters_exact = diff == [0, 0, 0];
    let ok = counters_exact && lost == 0 && dup == 0 && stray == 0;
    if a.json {
        let modes: Vec<_> = per_mode
            .iter()
            .map(|r| {
                let s = &r.stats;
                serde_json::json!({
                    "mode": r.mode.name(), "threads": r.threads, "attempts": s.attempts,
                    "aborts": s.aborts, "completions": s.completions,
                    "ops_per_s": s.completions as f64 / secs,
                    "fraction_emulated": frac(s.emulated, s.completions),
                    "emulated": s.emulated, "engine_refused": s.refused,
                    "counter_adds": s.adds, "lost_updates": r.lost_updates,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "threads": nthreads, "cpus": ncpu, "seconds": secs, "signals": signals,
                "threshold": policy::threshold(), "operations": total,
                "ops_per_s": total as f64 / secs, "modes": modes,
                "counters_exact": counters_exact, "nodes": nodes.len(),
                "nodes_lost": lost, "nodes_duplicated": dup, "stray_pointers": stray,
                "engine_refused": refused, "ok": ok,
            })
        );
    } else {
        println!(
            "{nthreads} threads on {ncpu} cpus, {secs:.2} s, {signals} signals, {total} operations ({:.0}/s), auto threshold {}",
            total as f64 / secs,
            policy::threshold()
        );
        println!(
            "{:<7} {:>7} {:>12} {:>10} {:>12} {:>12} {:>10} {:>6}",
            "mode", "threads", "attempts", "aborts", "completions", "ops/s", "emulated", "lost"
        );
        for r in &per_mode {
            let s = &r.stats;
            println!(
                "{:<7} {:>7} {:>12} {:>10} {:>12} {:>12.0} {:>9.4}% {:>6}",
                r.mode.name(),
                r.threads,
                s.attempts,
                s.aborts,
                s.completions,
                s.completions as f64 / secs,
                100.0 * frac(s.emulated, s.completions),
                r.lost_updates
            );
        }
        println!(
            "counters {}; list nodes {}: lost {lost}, duplicated {dup}, stray {stray}; engine refusals {refused}: {}",
            if counters_exact { "exact" } else { "WRONG" },
            nodes.len(),
            if ok { "OK" } else { "FAIL" }
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Per-mode lost updates (expected minus actual, per [`WEIGHTS`]) of the
/// per-CPU counters in `slots`, given the adds each mode completed.
fn counter_diff(adds: &[(Mode, u64)], slots: &[Slot]) -> [i64; 3] {
    let expected = adds.iter().fold(0u64, |acc, &(m, n)| {
        acc.wrapping_add(n.wrapping_mul(WEIGHTS[m as usize]))
    });
    let actual = slots.iter().fold(0u64, |acc, s| {
        acc.wrapping_add(s.count.load(Ordering::Relaxed))
    });
    per_mode_diff(expected.wrapping_sub(actual))
}

/// What the end-of-run walk found: nodes in no list and no pool, nodes
/// found more than once, and pointers that are no node of the array.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct NodeCheck {
    lost: usize,
    duplicated: usize,
    stray: u64,
}

/// Walk every list (`heads`, through `next`) and every pool: each node of
/// `nodes` must be found exactly once. A walk stops at a stray pointer and
/// after `nodes.len()` steps (a cycle shows up as duplicates).
fn check_nodes(nodes: &[Node], heads: &[u64], pools: &[Vec<u64>]) -> NodeCheck {
    let base = nodes.as_ptr() as u64;
    let size = std::mem::size_of::<Node>() as u64;
    let index = |p: u64| -> Option<usize> {
        let off = p.checked_sub(base)?;
        (off.is_multiple_of(size) && off / size < nodes.len() as u64)
            .then_some((off / size) as usize)
    };
    let mut seen = vec![0u32; nodes.len()];
    let mut stray = 0u64;
    let mut mark = |p: u64| -> Option<usize> {
        let i = index(p);
        match i {
            Some(i) => seen[i] += 1,
            None => stray += 1,
        }
        i
    };
    for &head in heads {
        let mut p = head;
        let mut steps = 0;
        while p != 0 && steps <= nodes.len() {
            let Some(i) = mark(p) else { break };
            p = nodes[i].next.load(Ordering::Relaxed);
            steps += 1;
        }
    }
    for &p in pools.iter().flatten() {
        mark(p);
    }
    // A node whose id changed was overwritten by someone.
    stray += nodes
        .iter()
        .enumerate()
        .filter(|&(i, n)| n.id != i as u64)
        .count() as u64;
    NodeCheck {
        lost: seen.iter().filter(|&&c| c == 0).count(),
        duplicated: seen.iter().filter(|&&c| c > 1).count(),
        stray,
    }
}

/// `a / b`, 0 when `b` is 0.
pub(crate) fn frac(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<Node> {
        (0..n)
            .map(|i| Node {
                next: AtomicU64::new(0),
                id: i as u64,
            })
            .collect()
    }

    fn addr(nodes: &[Node], i: usize) -> u64 {
        &nodes[i] as *const Node as u64
    }

    /// Nodes 0 -> 1 -> 2 in one list, 3 in a pool: a correct state.
    fn linked() -> Vec<Node> {
        let v = nodes(4);
        v[0].next.store(addr(&v, 1), Ordering::Relaxed);
        v[1].next.store(addr(&v, 2), Ordering::Relaxed);
        v
    }

    #[test]
    fn node_check_passes_a_correct_state_and_fails_corrupted_ones() {
        let v = linked();
        let ok = check_nodes(&v, &[addr(&v, 0), 0], &[vec![addr(&v, 3)]]);
        assert_eq!(ok, NodeCheck::default());
        // A node lost: the pool forgot node 3.
        let c = check_nodes(&v, &[addr(&v, 0)], &[vec![]]);
        assert_eq!(c.lost, 1, "{c:?}");
        // A node in a list and in a pool.
        let c = check_nodes(&v, &[addr(&v, 0)], &[vec![addr(&v, 3), addr(&v, 1)]]);
        assert_eq!(c.duplicated, 1, "{c:?}");
        // A cycle 2 -> 0: bounded walk, duplicates.
        v[2].next.store(addr(&v, 0), Ordering::Relaxed);
        let c = check_nodes(&v, &[addr(&v, 0)], &[vec![addr(&v, 3)]]);
        assert!(c.duplicated > 0, "{c:?}");
        // A stray pointer (inside a node, not at its start) ends the walk.
        v[2].next.store(addr(&v, 1) + 8, Ordering::Relaxed);
        let c = check_nodes(&v, &[addr(&v, 0)], &[vec![addr(&v, 3)]]);
        assert_eq!(c.stray, 1, "{c:?}");
        // An overwritten node.
        let mut w = linked();
        w[3].id = 7;
        let c = check_nodes(&w, &[addr(&w, 0)], &[vec![addr(&w, 3)]]);
        assert_eq!(c.stray, 1, "{c:?}");
    }

    #[test]
    fn counter_check_finds_lost_and_extra_updates_per_mode() {
        let slots: Vec<Slot> = (0..2)
            .map(|_| Slot {
                count: AtomicU64::new(0),
                head: AtomicU64::new(0),
            })
            .collect();
        let adds = [(Mode::Native, 3), (Mode::Auto, 2), (Mode::Always, 1)];
        // Exact: every add landed on some CPU's counter.
        slots[0]
            .count
            .store(2 * WEIGHTS[0] + WEIGHTS[1], Ordering::Relaxed);
        slots[1]
            .count
            .store(WEIGHTS[0] + WEIGHTS[1] + WEIGHTS[2], Ordering::Relaxed);
        assert_eq!(counter_diff(&adds, &slots), [0, 0, 0]);
        // One auto add lost, one always add applied twice.
        slots[1]
            .count
            .store(WEIGHTS[0] + 2 * WEIGHTS[2], Ordering::Relaxed);
        assert_eq!(counter_diff(&adds, &slots), [0, 1, -1]);
    }

    #[test]
    fn per_mode_diff_roundtrip() {
        for lost in [[0i64, 0, 0], [1, 0, 0], [0, 3, 0], [0, 0, 5], [-2, 7, -1]] {
            let d = lost.iter().zip(WEIGHTS).fold(0u64, |acc, (&l, w)| {
                acc.wrapping_add((l as u64).wrapping_mul(w))
            });
            assert_eq!(per_mode_diff(d), lost);
        }
    }

    #[test]
    fn sequences_decode_and_are_emulable() {
        let s = seqs().unwrap();
        let fns = [
            native_addv as *const () as u64,
            native_push as *const () as u64,
            native_pop as *const () as u64,
        ];
        for (q, f) in [&s.addv, &s.push, &s.pop].into_iter().zip(fns) {
            assert!(q.cs.contains(q.cs.start_ip));
            assert!(!q.cs.contains(q.cs.abort_ip));
            // Each native function's own section, found from its address.
            assert!((f..f + 64).contains(&q.cs.start_ip), "{f:#x}: {:?}", q.cs);
        }
    }
}
