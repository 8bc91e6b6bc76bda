//! `rseq-emu singlestep`: an instruction-level tracer that keeps rseq
//! critical sections making progress.
//!
//! The command runs under ptrace and every thread is single-stepped. At each
//! stop the thread's live `rseq_cs` pointer is read; when the instruction
//! pointer is inside `[start_ip, post_commit_ip)` of the armed descriptor the
//! rest of the section is emulated from the exact current state and the
//! thread is resumed at the exit. Without this (`--naive`) every single-step
//! trap is a preemption and the kernel moves the thread to `abort_ip`, so a
//! section can never complete: the livelock is counted and shown.
//!
//! Scheduling: one thread executes at a time (the others sit in ptrace
//! stops), so an emulation is atomic for the process with respect to every
//! user-mode instruction. A thread that does not stop within a short time is
//! blocked in a system call; another thread is stepped meanwhile (a single
//! step ends right after the system call, so it still runs no user code).
//! See docs/debugger.md.

use rseq_emu_core::{Outcome, Program, RseqCs};
use rseq_emu_harness::ptrace::{
    decode_section, get_user_regs, live_section, regs_from_state, rseq_configuration,
    set_user_regs, state_from_regs, validate_live, PtraceMemory, RseqConfiguration,
};
use rseq_emu_x86_64::X86_64;
use serde_json::json;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::error::Error;
use std::ffi::CString;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Arguments of `rseq-emu singlestep`.
#[derive(clap::Args)]
pub struct Args {
    /// Step like a plain tracer (no emulation): shows the rseq livelock.
    #[arg(long)]
    naive: bool,
    /// Kill the program after this many seconds.
    #[arg(long, value_name = "S")]
    timeout: Option<f64>,
    /// Print the report as one JSON object on stdout (after the program's output).
    #[arg(long)]
    json: bool,
    /// The command and its arguments.
    #[arg(required = true, last = true)]
    cmd: Vec<String>,
}

/// Instructions one emulation may run before it is abandoned.
const EMULATION_BUDGET: u64 = 100_000;

/// A section decoded once (or why it could not be).
type Decoded = Result<Program<X86_64>, String>;

/// What happened to one descriptor.
#[derive(Default, Debug)]
struct SectionStats {
    start_ip: u64,
    post_commit_ip: u64,
    abort_ip: u64,
    /// Completed by emulation.
    emulated: u64,
    /// Instructions run by the emulator for it.
    emulated_insns: u64,
    /// Emulations that stopped on an unsupported instruction or a fault.
    fallbacks: u64,
    /// Completions by plain stepping (ip reached post_commit_ip).
    stepped_commits: u64,
    /// Kernel aborts seen: between two stops the thread left the section
    /// somewhere its instruction cannot go (the kernel moved it to
    /// `abort_ip`, and the step then ran the instruction there).
    aborts: u64,
    /// Stops with the thread inside the section.
    stops_inside: u64,
    /// Last fallback reason.
    last_fallback: Option<String>,
}

#[derive(Default)]
struct ThreadInfo {
    conf: Option<RseqConfiguration>,
    /// Descriptor address, section and ip of the previous stop when it was
    /// inside a section.
    inside: Option<(u64, RseqCs, u64)>,
}

struct Tracer {
    naive: bool,
    mem: PtraceMemory,
    threads: HashMap<i32, ThreadInfo>,
    programs: HashMap<(u64, [u8; 32]), Rc<Decoded>>,
    sections: BTreeMap<u64, SectionStats>,
    steps: u64,
    invalid_descriptors: u64,
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn ptrace_req(req: libc::c_uint, tid: i32, data: usize) -> Result<(), std::io::Error> {
    // SAFETY: requests used here take an integer `data` (a signal number or
    // option bits) and no pointer.
    let r = unsafe { libc::ptrace(req, tid, 0usize, data) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

fn spawn_traced(cmd: &[String]) -> Result<i32, Box<dyn Error>> {
    let args: Vec<CString> = cmd
        .iter()
        .map(|s| CString::new(s.as_bytes()))
        .collect::<Result<_, _>>()?;
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    // SAFETY: fork in a single-threaded tracer; the child only calls
    // async-signal-safe functions (ptrace, raise, execvp, write, _exit).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork failed: {}", errno()).into());
    }
    if pid == 0 {
        // SAFETY: child side of fork; see above. The argv pointers stay valid
        // (the parent's memory is copied).
        unsafe {
            libc::ptrace(libc::PTRACE_TRACEME, 0, 0usize, 0usize);
            libc::raise(libc::SIGSTOP);
            libc::execvp(argv[0], argv.as_ptr());
            let msg = b"rseq-emu: cannot execute the command\n";
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::_exit(127);
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child; `status` is a valid out pointer.
    unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
    if !libc::WIFSTOPPED(status) {
        return Err("the child did not stop before exec".into());
    }
    let opts = libc::PTRACE_O_TRACECLONE | libc::PTRACE_O_TRACEEXEC | libc::PTRACE_O_EXITKILL;
    ptrace_req(libc::PTRACE_SETOPTIONS, pid, opts as usize)
        .map_err(|e| format!("PTRACE_SETOPTIONS: {e}"))?;
    // Run freely up to the exec; stepping starts in the new program.
    ptrace_req(libc::PTRACE_CONT, pid, 0)?;
    loop {
        // SAFETY: as above.
        unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            return Err(format!("{} did not start", cmd[0]).into());
        }
        if status >> 8 == (libc::SIGTRAP | (libc::PTRACE_EVENT_EXEC << 8)) {
            return Ok(pid);
        }
        let sig = libc::WSTOPSIG(status);
        let pass = if sig == libc::SIGSTOP || sig == libc::SIGTRAP {
            0
        } else {
            sig
        };
        ptrace_req(libc::PTRACE_CONT, pid, pass as usize)?;
    }
}

impl Tracer {
    fn conf(&mut self, tid: i32) -> Option<RseqConfiguration> {
        let t = self.threads.entry(tid).or_default();
        // Until the thread registers, ask at every stop (registration is a
        // system call made early in the thread's life); then keep it.
        if t.conf.is_none() {
            t.conf = rseq_configuration(tid).ok().flatten();
        }
        t.conf
    }

    fn program(&mut self, cs_addr: u64, cs: &RseqCs) -> Rc<Decoded> {
        let mem = &mut self.mem;
        self.programs
            .entry((cs_addr, cs.to_bytes()))
            .or_insert_with(|| Rc::new(decode_section(mem, cs)))
            .clone()
    }

    fn stats(&mut self, cs_addr: u64, cs: &RseqCs) -> &mut SectionStats {
        self.sections
            .entry(cs_addr)
            .or_insert_with(|| SectionStats {
                start_ip: cs.start_ip,
                post_commit_ip: cs.start_ip.wrapping_add(cs.post_commit_offset),
                abort_ip: cs.abort_ip,
                ..Default::default()
            })
    }

    /// Handle a single-step stop of `tid`: account for aborts and commits,
    /// and complete an armed section by emulation.
    fn on_step(&mut self, tid: i32) -> Result<(), Box<dyn Error>> {
        self.steps += 1;
        let Some(conf) = self.conf(tid) else {
            return Ok(());
        };
        let mut regs = get_user_regs(tid)?;
        let ip = regs.rip;
        // What the previous stop was inside: did the section commit, or did
        // the kernel abort it?
        if let Some((cs_addr, cs, prev)) = self.threads.get_mut(&tid).and_then(|t| t.inside.take())
        {
            // Where the instruction at `prev` can send the thread by itself.
            let prog = self.program(cs_addr, &cs);
            let natural = match prog.as_ref().as_ref().ok().and_then(|p| p.insn_at(prev)) {
                Some(d) => {
                    (d.flow.falls_through && ip == prev + u64::from(d.len))
                        || d.flow.targets.contains(&ip)
                        || d.flow.indirect
                }
                None => true,
            };
            let committed = cs.post_commit_ip() == Some(ip);
            let st = self.stats(cs_addr, &cs);
            if committed {
                st.stepped_commits += 1;
            } else if !natural {
                st.aborts += 1;
            }
        }
        let live = match live_section(&mut self.mem, tid, &conf) {
            Ok(Some(l)) => l,
            _ => return Ok(()),
        };
        if !live.cs.contains(ip) {
            return Ok(());
        }
        if validate_live(&mut self.mem, &conf, &live.cs).is_err() {
            // The kernel kills the thread with SIGSEGV on its own; let it.
            self.invalid_descriptors += 1;
            return Ok(());
        }
        self.stats(live.cs_addr, &live.cs).stops_inside += 1;
        if !self.naive {
            let mut mem = self.mem;
            let prog = self.program(live.cs_addr, &live.cs);
            let reason = match &*prog {
                Err(e) => e.clone(),
                Ok(prog) => {
                    let mut state = state_from_regs(&regs);
                    let r = prog.run(&mut state, &mut mem, EMULATION_BUDGET);
                    // Stores went straight to the stopped tracee; the state
                    // is exact after `r.steps` instructions in every case.
                    if r.steps > 0 {
                        regs_from_state(&state, &mut regs);
                        set_user_regs(tid, &regs)?;
                    }
                    let st = self.stats(live.cs_addr, &live.cs);
                    st.emulated_insns += r.steps;
                    match r.outcome {
                        Outcome::Committed | Outcome::Exited { .. } => {
                            st.emulated += 1;
                            return Ok(());
                        }
                        Outcome::Unsupported { ip, insn, reason } => {
                            format!("unsupported at 0x{ip:x} `{insn}`: {reason}")
                        }
                        Outcome::Fault { ip, fault } => format!("fault at 0x{ip:x}: {fault}"),
                        Outcome::BudgetExceeded { ip } => {
                            format!(
                                "budget of {EMULATION_BUDGET} instructions exceeded at 0x{ip:x}"
                            )
                        }
                    }
                }
            };
            let st = self.stats(live.cs_addr, &live.cs);
            st.fallbacks += 1;
            st.last_fallback = Some(reason);
        }
        // Plain stepping from here: remember where we are to see the abort.
        let ip_now = get_user_regs(tid)?.rip;
        if live.cs.contains(ip_now) {
            self.threads.entry(tid).or_default().inside = Some((live.cs_addr, live.cs, ip_now));
        }
        Ok(())
    }
}

/// How the traced program ended.
enum End {
    Exited(i32),
    Signaled(i32),
    TimedOut,
}

/// Run `rseq-emu singlestep`.
pub fn run(a: Args) -> Result<ExitCode, Box<dyn Error>> {
    let started = Instant::now();
    let deadline = a
        .timeout
        .map(|s| started + Duration::from_secs_f64(s.max(0.0)));
    let pid = spawn_traced(&a.cmd)?;
    let mut t = Tracer {
        naive: a.naive,
        mem: PtraceMemory::new(pid),
        threads: HashMap::new(),
        programs: HashMap::new(),
        sections: BTreeMap::new(),
        steps: 0,
        invalid_descriptors: 0,
    };
    t.threads.insert(pid, ThreadInfo::default());
    // Threads in a ptrace stop, waiting for their next step (with the signal
    // to deliver), and threads currently executing a step.
    let mut ready: VecDeque<(i32, i32)> = VecDeque::from([(pid, 0)]);
    let mut running: HashMap<i32, Instant> = HashMap::new();
    let mut end: Option<End> = None;
    let mut live_threads = 1usize;
    let mut max_threads = 1usize;
    let mut idle_since: Option<Instant> = None;
    while live_threads > 0 {
        if end.is_none() && deadline.is_some_and(|d| Instant::now() >= d) {
            // SAFETY: killing our own traced child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            end = Some(End::TimedOut);
            ready.clear();
        }
        // Step one thread when none is executing user code (every running
        // thread has been silent for a while: it is blocked in a syscall).
        let quiet = running
            .values()
            .all(|s| s.elapsed() > Duration::from_millis(5));
        if quiet && !matches!(end, Some(End::TimedOut)) {
            if let Some((tid, sig)) = ready.pop_front() {
                match ptrace_req(libc::PTRACE_SINGLESTEP, tid, sig as usize) {
                    Ok(()) => {
                        running.insert(tid, Instant::now());
                    }
                    Err(_) => {
                        // Gone (killed by another thread's exit_group); its
                        // exit is reported by waitpid.
                    }
                }
            }
        }
        let mut status = 0;
        // Block only when nothing else could be scheduled and no deadline
        // must be watched; otherwise poll, so a thread blocked in a system
        // call never keeps the stopped ones from being stepped.
        let block = ready.is_empty() && deadline.is_none();
        let flags = if block {
            libc::__WALL
        } else {
            libc::__WALL | libc::WNOHANG
        };
        // SAFETY: `status` is a valid out pointer.
        let tid = unsafe { libc::waitpid(-1, &mut status, flags) };
        if tid == 0 {
            let idle = idle_since.get_or_insert_with(Instant::now).elapsed();
            if idle < Duration::from_millis(1) {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
            continue;
        }
        idle_since = None;
        if tid < 0 {
            if errno().raw_os_error() == Some(libc::ECHILD) {
                break;
            }
            continue;
        }
        running.remove(&tid);
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            live_threads = live_threads.saturating_sub(1);
            t.threads.remove(&tid);
            ready.retain(|&(r, _)| r != tid);
            if tid == pid && end.is_none() {
                end = Some(if libc::WIFEXITED(status) {
                    End::Exited(libc::WEXITSTATUS(status))
                } else {
                    End::Signaled(libc::WTERMSIG(status))
                });
            }
            continue;
        }
        if !libc::WIFSTOPPED(status) {
            continue;
        }
        let sig = libc::WSTOPSIG(status);
        let event = status >> 16;
        let mut deliver = 0;
        if sig == libc::SIGTRAP && event == libc::PTRACE_EVENT_CLONE {
            let mut new_tid: libc::c_ulong = 0;
            // SAFETY: GETEVENTMSG writes one unsigned long to the pointer.
            unsafe {
                libc::ptrace(
                    libc::PTRACE_GETEVENTMSG,
                    tid,
                    0usize,
                    &mut new_tid as *mut libc::c_ulong,
                )
            };
            let new_tid = new_tid as i32;
            if let std::collections::hash_map::Entry::Vacant(e) = t.threads.entry(new_tid) {
                e.insert(ThreadInfo::default());
                live_threads += 1;
                max_threads = max_threads.max(live_threads);
            }
        } else if sig == libc::SIGTRAP && event == libc::PTRACE_EVENT_EXEC {
            // A new program image: registrations start over.
            for th in t.threads.values_mut() {
                *th = ThreadInfo::default();
            }
            t.programs.clear();
        } else if sig == libc::SIGTRAP && event == 0 {
            t.on_step(tid)?;
        } else if sig == libc::SIGSTOP && !t.threads.contains_key(&tid) {
            // A new thread's first stop, seen before its parent's clone event.
            t.threads.insert(tid, ThreadInfo::default());
            live_threads += 1;
            max_threads = max_threads.max(live_threads);
        } else if sig == libc::SIGSTOP {
            // The initial stop of a cloned thread (or a group stop): swallow it.
        } else {
            deliver = sig;
        }
        if !matches!(end, Some(End::TimedOut)) {
            ready.push_back((tid, deliver));
        }
    }
    let elapsed = started.elapsed();
    report(&a, &t, end, elapsed, max_threads)
}

fn hex(v: u64) -> String {
    format!("0x{v:x}")
}

fn report(
    a: &Args,
    t: &Tracer,
    end: Option<End>,
    elapsed: Duration,
    max_threads: usize,
) -> Result<ExitCode, Box<dyn Error>> {
    let (status_json, code) = match end {
        Some(End::Exited(c)) => (json!({"exited": c}), c as u8),
        Some(End::Signaled(s)) => (json!({"signaled": s}), 128u8.wrapping_add(s as u8)),
        Some(End::TimedOut) => (json!("timeout"), 124),
        None => (json!(null), 2),
    };
    let sections: Vec<_> = t
        .sections
        .iter()
        .map(|(addr, s)| {
            json!({
                "descriptor": hex(*addr),
                "start_ip": hex(s.start_ip),
                "post_commit_ip": hex(s.post_commit_ip),
                "abort_ip": hex(s.abort_ip),
                "emulated": s.emulated,
                "emulated_instructions": s.emulated_insns,
                "fallbacks": s.fallbacks,
                "last_fallback": s.last_fallback,
                "stepped_commits": s.stepped_commits,
                "aborts": s.aborts,
                "stops_inside": s.stops_inside,
            })
        })
        .collect();
    let emulated: u64 = t.sections.values().map(|s| s.emulated).sum();
    let aborts: u64 = t.sections.values().map(|s| s.aborts).sum();
    let emulated_insns: u64 = t.sections.values().map(|s| s.emulated_insns).sum();
    if a.json {
        let doc = json!({
            "mode": if a.naive { "naive" } else { "emulate" },
            "instructions_stepped": t.steps,
            "instructions_emulated": emulated_insns,
            "sections_emulated": emulated,
            "aborts": aborts,
            "invalid_descriptors": t.invalid_descriptors,
            "threads": max_threads,
            "sections": sections,
            "status": status_json,
            "seconds": elapsed.as_secs_f64(),
        });
        println!("{doc}");
    } else {
        eprintln!(
            "rseq-emu singlestep ({}): {} instructions stepped, {} emulated in {} sections, {} aborts, {} thread(s), {:.2} s, status {}",
            if a.naive { "naive" } else { "emulate" },
            t.steps,
            emulated_insns,
            emulated,
            aborts,
            max_threads,
            elapsed.as_secs_f64(),
            status_json
        );
        for (addr, s) in &t.sections {
            eprintln!(
                "  descriptor 0x{addr:x} [0x{:x}, 0x{:x}) abort 0x{:x}: stops inside {}, emulated {} ({} insns), stepped commits {}, aborts {}, fallbacks {}{}",
                s.start_ip,
                s.post_commit_ip,
                s.abort_ip,
                s.stops_inside,
                s.emulated,
                s.emulated_insns,
                s.stepped_commits,
                s.aborts,
                s.fallbacks,
                s.last_fallback
                    .as_ref()
                    .map(|r| format!(" (last: {r})"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::from(code))
}
