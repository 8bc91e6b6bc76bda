//! Engine speed, side by side in one run (release build:
//! `cargo run --release -p rseq-emu-runtime --example bench [iters]`):
//!
//! * native: a librseq-style compare-and-store critical section called
//!   directly (`bench_cas` below);
//! * getpid: a bare system call, the floor of any cpu_opv-style syscall;
//! * engine: what the abort stub does for that section — look the section
//!   up (cached decode), emulate it on `Logged<LiveMemory>` from the entry
//!   registers, commit natively on this CPU (signals blocked);
//! * engine + migration: the same compare-and-store completed for the other
//!   CPU (pin there, commit, restore the affinity).
//!
//! Prints one line per path in ns/op.

#[cfg(target_arch = "x86_64")]
mod imp {
    use rseq_emu_core::Memory;
    use rseq_emu_runtime::engine::{self, complete, Answer, Completion};
    use rseq_emu_runtime::{arch, registration, section};
    use rseq_emu_x86_64::reg;
    use std::time::Instant;

    // rdi = rseq area, esi = cpu, rdx = v, rcx = expect, r8 = newv.
    // Returns 0 stored, 1 compare failed, 2 aborted.
    std::arch::global_asm!(
        r#"
        .pushsection __rseq_cs, "aw"
        .balign 32
        .globl bench_cs
    bench_cs:
        .long 0, 0
        .quad 1f, 2f - 1f, 4f
        .popsection
        .text
        .globl bench_cas
        .type bench_cas, @function
    bench_cas:
        lea bench_cs(%rip), %rax
        mov %rax, 8(%rdi)
    1:
        cmp 4(%rdi), %esi
        jne 4f
        cmp (%rdx), %rcx
        jne 5f
        mov %r8, (%rdx)
    2:
        xor %eax, %eax
        ret
    5:
        mov $1, %eax
        ret
        .long 0x53053053
    4:
        mov $2, %eax
        ret
        .size bench_cas, . - bench_cas
    "#,
        options(att_syntax)
    );

    extern "C" {
        static bench_cs: [u64; 4];
        fn bench_cas(area: *mut u8, cpu: u32, v: *mut u64, expect: u64, newv: u64) -> u32;
    }

    fn ns_per(iters: u64, mut f: impl FnMut()) -> f64 {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        t.elapsed().as_nanos() as f64 / iters as f64
    }

    pub fn main() {
        let iters: u64 = std::env::args()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(200_000);
        let area = registration::area().expect("rseq area");
        let mut slot = 0u64;
        let v = &mut slot as *mut u64;
        let native = ns_per(iters, || loop {
            let cpu = registration::current_cpu().unwrap_or(0);
            // SAFETY: `v` is live; `area` is this thread's.
            let cur = unsafe { v.read_volatile() };
            // SAFETY: as above.
            if unsafe { bench_cas(area.cast(), cpu, v, cur, cur + 1) } == 0 {
                break;
            }
        });
        let getpid = ns_per(iters, || {
            // SAFETY: no preconditions.
            unsafe { libc::syscall(libc::SYS_getpid) };
        });
        let desc = &raw const bench_cs as u64;
        // SAFETY: bench_cs is a static descriptor.
        let abort_ip = unsafe { bench_cs[3] };
        let mut fails = 0u64;
        let engine = ns_per(iters, || {
            let sec = section::lookup(desc, (abort_ip, abort_ip)).expect("emulable");
            let cpu = registration::current_cpu().unwrap_or(0);
            // SAFETY: `v` is live.
            let cur = unsafe { v.read_volatile() };
            let mut st = arch::State::default();
            st.gpr[reg::RDI] = area as u64;
            st.gpr[reg::RSI] = u64::from(cpu);
            st.gpr[reg::RDX] = v as u64;
            st.gpr[reg::RCX] = cur;
            st.gpr[reg::R8] = cur + 1;
            st.gpr[reg::RSP] = &cur as *const u64 as u64;
            st.fs_base = arch::thread_pointer() as u64;
            match engine::emulate_section(&sec, &st) {
                Answer::Resume { .. } => {}
                Answer::Retry(_) => fails += 1,
            }
        });
        let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        let mig_iters = (iters / 100).max(1);
        let mut migrated = 0u64;
        let addr = v as u64;
        let migration = ns_per(mig_iters, || {
            let cpu = (registration::current_cpu().unwrap_or(0) + 1) % ncpu;
            if let Ok(Completion::Done { migrated: true, .. }) = complete(cpu, |m| {
                let x = m.read_u64(addr).ok()?;
                m.write_u64(addr, x + 1).ok()
            }) {
                migrated += 1;
            }
        });
        println!("native rseq compare-and-store     {native:10.1} ns/op");
        println!("bare syscall (getpid)             {getpid:10.1} ns/op");
        println!(
            "engine emulate+commit (no migr.)  {engine:10.1} ns/op  ({:.1}x getpid, {fails} native retries)",
            engine / getpid
        );
        println!("engine with a migration           {migration:10.1} ns/op  ({migrated}/{mig_iters} migrated)");
        println!("slot={slot} (every path added 1 per op)");
    }
}

#[cfg(target_arch = "x86_64")]
fn main() {
    imp::main()
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    eprintln!("bench: x86_64 only");
}
