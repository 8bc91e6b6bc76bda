//! Generators of real-world rseq critical sections (written in the style
//! of librseq, the kernel selftests and tcmalloc, not copied from them),
//! each varied by a seeded PRNG: registers, operand sizes, data, which
//! path is taken.
//!
//! Data layout inside [`DATA`] (0x800 bytes):
//! * 0x000..0x200: 64 eight-byte slots (per-cpu words, list heads/nodes, scratch)
//! * 0x200..0x280 / 0x280..0x300: copy source / destination buffers
//! * 0x300..0x400: per-cpu counters, 16 bytes per cpu (cpu < 16)
//! * 0x400..0x500: tcmalloc-style per-cpu slab headers, 16 bytes per cpu
//!   (`u16 current, u16 end, u16 begin`)
//! * 0x500..0x800: slab slots (96 pointers)

use super::asm::{alu::*, cc, Asm, Label, Mem, Rm};
use super::native::{build, Built, NativeRegs, DATA, DATA_LEN, STACK_TOP};
use rseq_emu_core::abi::area;

/// The shared seeded PRNG ([`rseq_emu_core::rng::Rng`]) with the
/// pickers the generators use.
pub struct Rng(rseq_emu_core::rng::Rng);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Rng(rseq_emu_core::rng::Rng::new(seed))
    }
    /// Next 64 bits.
    pub fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in 0..n.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }
    /// True with probability p/100.
    pub fn pct(&mut self, p: u64) -> bool {
        self.0.pct(p)
    }
    /// An interesting value: boundaries half the time.
    pub fn value(&mut self) -> u64 {
        const EDGE: [u64; 10] = [
            0,
            1,
            0x7f,
            0x80,
            0xff,
            0x7fff,
            0xffff_ffff,
            0x7fff_ffff_ffff_ffff,
            0x8000_0000_0000_0000,
            u64::MAX,
        ];
        match self.below(4) {
            0 => EDGE[self.below(10) as usize],
            1 => self.below(1000),
            _ => self.next(),
        }
    }
    /// `n` distinct registers other than rsp.
    pub fn regs(&mut self, n: usize) -> Vec<u8> {
        let mut pool: Vec<u8> = (0..16).filter(|&r| r != 4).collect();
        let mut out = Vec::new();
        for _ in 0..n {
            let i = self.below(pool.len() as u64) as usize;
            out.push(pool.remove(i));
        }
        out
    }
    /// Pick one of the items.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
    /// `n` distinct 8-byte slot addresses in 0x000..0x200.
    pub fn slots(&mut self, n: usize) -> Vec<u64> {
        let mut pool: Vec<u64> = (0..64).collect();
        (0..n)
            .map(|_| {
                let i = self.below(pool.len() as u64) as usize;
                DATA + 8 * pool.remove(i)
            })
            .collect()
    }
}

/// What the generators know about the machine.
pub struct Env {
    /// The CPU the recording is pinned to (< 16).
    pub cpu: u32,
    /// `__rseq_offset`.
    pub rseq_off: i64,
}

/// One generated case, ready to run natively.
pub struct Gen {
    /// Pattern name (file name prefix).
    pub pattern: &'static str,
    /// What the case exercises.
    pub comment: String,
    /// The code page.
    pub built: Built,
    /// Registers at start_ip.
    pub entry: NativeRegs,
    /// Initial data buffers.
    pub data: Vec<u8>,
    /// RFLAGS bits the SDM leaves undefined at the exits of this case.
    pub ignore_flags: u64,
}

/// The patterns, by name.
pub const PATTERNS: &[&str] = &[
    "cmpstore",
    "addv",
    "cmp2store",
    "trystore",
    "memcpy",
    "movw16",
    "flags",
    "cpuid",
    "nocommit",
    "earlyexit",
    "cpuabort",
];

struct Ctx<'a> {
    rng: &'a mut Rng,
    env: &'a Env,
    regs: NativeRegs,
    data: Vec<u8>,
    /// The cpu compare the section starts with, if any (to abort_ip).
    leading_check: Option<CpuCheck>,
}

/// librseq's cpu compare, `cmp %cpu, %fs:cpu_id; jne abort`: the register
/// holding the expected cpu, and the one holding `__rseq_offset` for the
/// `%fs:4(%reg)` form (`None`: the `%fs:disp32` form).
#[derive(Clone, Copy)]
struct CpuCheck {
    cpu: u8,
    off: Option<u8>,
}

impl CpuCheck {
    fn emit(self, a: &mut Asm, env: &Env, abort: Label) {
        match self.off {
            Some(r) => a.alu_to(CMP, 4, Rm::M(Mem::fs_b(r, area::CPU_ID as i32)), self.cpu),
            None => a.alu_to(
                CMP,
                4,
                Rm::M(Mem::fs_abs((env.rseq_off + area::CPU_ID as i64) as i32)),
                self.cpu,
            ),
        }
        a.jcc(cc::NE, abort);
    }
}

/// librseq's "the word moved, leave": `cmp %expect, mem; jne exit`.
fn cmp_or_exit(a: &mut Asm, size: u8, expect: u8, mem: Mem, exit: Label) {
    a.alu_from(CMP, size, expect, Rm::M(mem));
    a.jcc(cc::NE, exit);
}

impl Ctx<'_> {
    fn new<'a>(rng: &'a mut Rng, env: &'a Env) -> Ctx<'a> {
        let mut regs = NativeRegs::default();
        for r in regs.gpr.iter_mut() {
            *r = rng.value();
        }
        regs.gpr[4] = STACK_TOP;
        // Random status flags; IF and the always-one bit as user space sees them.
        let st = [1u64, 4, 0x10, 0x40, 0x80, 0x800];
        regs.rflags = 0x202;
        for f in st {
            if rng.pct(50) {
                regs.rflags |= f;
            }
        }
        let data = (0..DATA_LEN).map(|_| rng.next() as u8).collect();
        Ctx {
            rng,
            env,
            regs,
            data,
            leading_check: None,
        }
    }
    fn put(&mut self, addr: u64, size: usize, v: u64) {
        let o = (addr - DATA) as usize;
        self.data[o..o + size].copy_from_slice(&v.to_le_bytes()[..size]);
    }
    /// The cpu value an entry register holds: the real one, or another.
    fn cpu_value(&mut self, mismatch: bool) -> u64 {
        let c = u64::from(self.env.cpu);
        if mismatch {
            c + 1 + self.rng.below(6)
        } else {
            c
        }
    }
    fn size(&mut self) -> u8 {
        self.rng.pick(&[8, 8, 4])
    }
    /// A cpu compare: `cpu` holds the real cpu (or another one when
    /// `mismatch`), and 40% of the time `offr` holds `__rseq_offset` for
    /// the register form.
    fn cpu_check(&mut self, cpu: u8, offr: u8, mismatch: bool) -> CpuCheck {
        self.regs.gpr[cpu as usize] = self.cpu_value(mismatch);
        let off = if self.rng.pct(40) {
            self.regs.gpr[offr as usize] = self.env.rseq_off as u64;
            Some(offr)
        } else {
            None
        };
        CpuCheck { cpu, off }
    }
    /// [`Ctx::cpu_check`], emitted by [`Ctx::finish`] as the section's
    /// first instructions.
    fn start_with_cpu_check(&mut self, cpu: u8, offr: u8, mismatch: bool) -> CpuCheck {
        let check = self.cpu_check(cpu, offr, mismatch);
        self.leading_check = Some(check);
        check
    }
    fn finish(
        self,
        pattern: &'static str,
        comment: String,
        n_other: usize,
        body: impl FnOnce(&mut Asm, &[Label]),
        ignore_flags: u64,
    ) -> Result<Gen, String> {
        let (env, check) = (self.env, self.leading_check);
        let built = build(self.env.rseq_off, n_other, |a, e| {
            if let Some(check) = check {
                check.emit(a, env, e[1]);
            }
            body(a, e)
        })?;
        Ok(Gen {
            pattern,
            comment,
            built,
            entry: self.regs,
            data: self.data,
            ignore_flags,
        })
    }
}

/// Generate case `i` of `pattern`.
pub fn generate(pattern: &str, rng: &mut Rng, env: &Env) -> Result<Gen, String> {
    match pattern {
        "cmpstore" => cmpstore(rng, env, false),
        "addv" => addv(rng, env, false),
        "cmp2store" => cmp2store(rng, env, false),
        "trystore" => trystore(rng, env, false),
        "memcpy" => memcpy(rng, env, false),
        "movw16" => movw16(rng, env),
        "flags" => flags(rng, env),
        "cpuid" => cpuid(rng, env),
        "nocommit" => nocommit(rng, env),
        "earlyexit" => earlyexit(rng, env),
        "cpuabort" => {
            let mut g = match rng.below(5) {
                0 => cmpstore(rng, env, true),
                1 => addv(rng, env, true),
                2 => cmp2store(rng, env, true),
                3 => trystore(rng, env, true),
                _ => memcpy(rng, env, true),
            }?;
            g.pattern = "cpuabort";
            Ok(g)
        }
        p => Err(format!(
            "unknown pattern {p:?} (known: {})",
            PATTERNS.join(", ")
        )),
    }
}

/// Compare-and-store (librseq's cmpeqv_storev).
fn cmpstore(rng: &mut Rng, env: &Env, mismatch: bool) -> Result<Gen, String> {
    let mut c = Ctx::new(rng, env);
    let r = c.rng.regs(5);
    let (v, expect, newv, cpu, offr) = (r[0], r[1], r[2], r[3], r[4]);
    let size = c.size();
    let slot = c.rng.slots(1)[0];
    let equal = c.rng.pct(70);
    let want = c.rng.value();
    c.regs.gpr[v as usize] = slot;
    c.regs.gpr[expect as usize] = want;
    let d = 1 + c.rng.below(255);
    c.put(slot, 8, if equal { want } else { want ^ d });
    let use_off = c.start_with_cpu_check(cpu, offr, mismatch).off.is_some();
    let comment = format!(
        "compare-and-store: cmp cpu (%fs {} form); cmp{} %expect,(%v); jne ne; mov %newv,(%v) commit; values {}",
        if use_off { "register" } else { "absolute" },
        size * 8,
        if equal { "equal" } else { "different" }
    );
    c.finish(
        "cmpstore",
        comment,
        1,
        |a, e| {
            cmp_or_exit(a, size, expect, Mem::b(v, 0), e[2]);
            a.mov_to(size, Rm::M(Mem::b(v, 0)), newv);
        },
        0,
    )
}

/// Per-cpu counter: cpu read with %fs, `add %inc,(%base,%cpu,8)` commit.
fn addv(rng: &mut Rng, env: &Env, mismatch: bool) -> Result<Gen, String> {
    let mut c = Ctx::new(rng, env);
    let r = c.rng.regs(5);
    let (base, idx, inc, cpu, offr) = (r[0], r[1], r[2], r[3], r[4]);
    let size = c.size();
    let check = mismatch || c.rng.pct(40);
    if check {
        c.start_with_cpu_check(cpu, offr, mismatch);
    }
    let fs_form = c.rng.pct(50);
    if fs_form {
        c.regs.gpr[offr as usize] = c.env.rseq_off as u64;
    }
    c.regs.gpr[base as usize] = DATA + 0x300;
    let incv = c.rng.value();
    c.regs.gpr[inc as usize] = incv;
    let cpu_disp = (env.rseq_off + area::CPU_ID as i64) as i32;
    let comment = format!(
        "add-to-memory commit: mov %fs:cpu_id ({} form),%idx; add{} %inc,(%base,%idx,16){}",
        if fs_form {
            "%fs:4(%reg)"
        } else {
            "absolute disp32"
        },
        size * 8,
        if check {
            "; preceded by a cpu compare"
        } else {
            ""
        }
    );
    c.finish(
        "addv",
        comment,
        0,
        |a, _| {
            if fs_form {
                a.mov_from(4, idx, Rm::M(Mem::fs_b(offr, area::CPU_ID as i32)));
            } else {
                a.mov_from(4, idx, Rm::M(Mem::fs_abs(cpu_disp)));
            }
            a.shl_imm(4, Rm::R(idx), 1);
            a.alu_to(ADD, size, Rm::M(Mem::bi(base, idx, 8, 0)), inc);
        },
        0,
    )
}

/// Two compares then a store (librseq's cmpeqv_cmpeqv_storev).
fn cmp2store(rng: &mut Rng, env: &Env, mismatch: bool) -> Result<Gen, String> {
    let mut c = Ctx::new(rng, env);
    let r = c.rng.regs(7);
    let (v, e1, v2, e2, newv, cpu, offr) = (r[0], r[1], r[2], r[3], r[4], r[5], r[6]);
    let size = c.size();
    let s = c.rng.slots(2);
    let (eq1, eq2) = (c.rng.pct(75), c.rng.pct(75));
    for (slot, reg, eq) in [(s[0], v, eq1), (s[1], v2, eq2)] {
        c.regs.gpr[reg as usize] = slot;
        let w = c.rng.value();
        let d = 1 + c.rng.below(9);
        c.put(slot, 8, if eq { w } else { w.wrapping_add(d) });
        let ereg = if reg == v { e1 } else { e2 };
        c.regs.gpr[ereg as usize] = w;
    }
    c.start_with_cpu_check(cpu, offr, mismatch);
    let comment = format!(
        "two compares then store: cmp cpu; cmp{sz} %e1,(%v); jne ne1; cmp{sz} %e2,(%v2); jne ne2; mov %newv,(%v); first {eq1}, second {eq2}",
        sz = size * 8
    );
    c.finish(
        "cmp2store",
        comment,
        2,
        |a, e| {
            cmp_or_exit(a, size, e1, Mem::b(v, 0), e[2]);
            a.alu_to(CMP, size, Rm::M(Mem::b(v2, 0)), e2);
            a.jcc(cc::NE, e[3]);
            a.mov_to(size, Rm::M(Mem::b(v, 0)), newv);
        },
        0,
    )
}

/// Try-store then store (librseq's cmpeqv_trystorev_storev).
fn trystore(rng: &mut Rng, env: &Env, mismatch: bool) -> Result<Gen, String> {
    let mut c = Ctx::new(rng, env);
    let r = c.rng.regs(7);
    let (v, expect, v2, newv2, newv, cpu, offr) = (r[0], r[1], r[2], r[3], r[4], r[5], r[6]);
    let size = c.size();
    let s = c.rng.slots(2);
    let eq = c.rng.pct(75);
    let w = c.rng.value();
    c.regs.gpr[v as usize] = s[0];
    c.regs.gpr[v2 as usize] = s[1];
    c.regs.gpr[expect as usize] = w;
    c.put(s[0], 8, if eq { w } else { !w });
    c.start_with_cpu_check(cpu, offr, mismatch);
    let comment = format!(
        "try-store then store: cmp cpu; cmp %expect,(%v); jne ne; mov{sz} %newv2,(%v2); mov{sz} %newv,(%v) commit; equal {eq}",
        sz = size * 8
    );
    c.finish(
        "trystore",
        comment,
        1,
        |a, e| {
            cmp_or_exit(a, 8, expect, Mem::b(v, 0), e[2]);
            a.mov_to(size, Rm::M(Mem::b(v2, 0)), newv2);
            a.mov_to(size, Rm::M(Mem::b(v, 0)), newv);
        },
        0,
    )
}

/// Save the copy registers to scratch (what the abort teardown restores),
/// cpu check, compare, byte-copy loop, commit.
fn memcpy(rng: &mut Rng, env: &Env, mismatch: bool) -> Result<Gen, String> {
    let mut c = Ctx::new(rng, env);
    let r = c.rng.regs(10);
    let (v, expect, newv, src, dst, len, tmp, cpu, offr, scr) =
        (r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9]);
    let s = c.rng.slots(4);
    let eq = c.rng.pct(80);
    let w = c.rng.value();
    let n = if c.rng.pct(15) {
        0
    } else {
        1 + c.rng.below(48)
    };
    let so = c.rng.below(0x80 - n.max(1));
    let dof = c.rng.below(0x80 - n.max(1));
    c.regs.gpr[v as usize] = s[0];
    c.regs.gpr[expect as usize] = w;
    c.put(s[0], 8, if eq { w } else { w ^ 0x100 });
    c.regs.gpr[src as usize] = DATA + 0x200 + so;
    c.regs.gpr[dst as usize] = DATA + 0x280 + dof;
    c.regs.gpr[len as usize] = n;
    // Three consecutive scratch words: the first of the four slots, rounded.
    let scratch = DATA + 0x1c0;
    c.regs.gpr[scr as usize] = scratch;
    // Not a leading check: the saves come first.
    let check = c.cpu_check(cpu, offr, mismatch);
    let comment = format!(
        "byte-copy loop then commit: save src/dst/len to scratch (abort teardown input); cmp cpu; cmp %expect,(%v); copy {n} bytes; mov %newv,(%v); equal {eq}{}",
        if mismatch { "; cpu mismatch: aborts after the saves" } else { "" }
    );
    c.finish(
        "memcpy",
        comment,
        1,
        |a, e| {
            a.mov_to(8, Rm::M(Mem::b(scr, 0)), src);
            a.mov_to(8, Rm::M(Mem::b(scr, 8)), dst);
            a.mov_to(8, Rm::M(Mem::b(scr, 16)), len);
            check.emit(a, env, e[1]);
            cmp_or_exit(a, 8, expect, Mem::b(v, 0), e[2]);
            a.alu_imm(CMP, 8, Rm::R(len), 0);
            let done = a.label();
            a.jcc(cc::E, done);
            let top = a.label();
            a.bind(top);
            a.mov_from(1, tmp, Rm::M(Mem::b(src, 0)));
            a.mov_to(1, Rm::M(Mem::b(dst, 0)), tmp);
            a.inc(8, Rm::R(src));
            a.inc(8, Rm::R(dst));
            a.dec(8, Rm::R(len));
            a.jcc(cc::NE, top);
            a.bind(done);
            a.mov_to(8, Rm::M(Mem::b(v, 0)), newv);
        },
        0,
    )
}

/// tcmalloc-style per-cpu slab push/pop with a 16-bit `movw` commit.
fn movw16(rng: &mut Rng, env: &Env) -> Result<Gen, String> {
    let mut c = Ctx::new(rng, env);
    let r = c.rng.regs(5);
    let (hdrs, slabs, idx, cur, item) = (r[0], r[1], r[2], r[3], r[4]);
    let push = c.rng.pct(50);
    let begin = c.rng.below(8);
    let end = begin + 4 + c.rng.below(12);
    let current = match c.rng.below(4) {
        0 => begin,
        1 => end,
        _ => begin + c.rng.below(end - begin + 1),
    };
    let h = DATA + 0x400 + 16 * u64::from(env.cpu);
    c.put(h, 2, current);
    c.put(h + 2, 2, end);
    c.put(h + 4, 2, begin);
    c.regs.gpr[hdrs as usize] = DATA + 0x400;
    c.regs.gpr[slabs as usize] = DATA + 0x500;
    let cpu_disp = (env.rseq_off + area::CPU_ID as i64) as i32;
    let comment = format!(
        "tcmalloc-style {}: cpu from %fs absolute, shl, movzwq current, cmpw bound, {}, movw commit; begin {begin} current {current} end {end}",
        if push { "push" } else { "pop" },
        if push { "store item" } else { "load item" }
    );
    c.finish(
        "movw16",
        comment,
        1,
        |a, e| {
            a.mov_from(4, idx, Rm::M(Mem::fs_abs(cpu_disp)));
            a.shl_imm(8, Rm::R(idx), 4);
            a.alu_to(ADD, 8, Rm::R(idx), hdrs);
            a.movzx(8, 2, cur, Rm::M(Mem::b(idx, 0)));
            if push {
                a.alu_from(CMP, 2, cur, Rm::M(Mem::b(idx, 2)));
                a.jcc(cc::AE, e[2]);
                a.mov_to(8, Rm::M(Mem::bi(slabs, cur, 8, 0)), item);
                a.lea(8, cur, Mem::b(cur, 1));
            } else {
                a.alu_from(CMP, 2, cur, Rm::M(Mem::b(idx, 4)));
                a.jcc(cc::BE, e[2]);
                a.mov_from(8, item, Rm::M(Mem::bi(slabs, cur, 8, -8)));
                a.lea(8, cur, Mem::b(cur, -1));
            }
            a.mov_to(2, Rm::M(Mem::b(idx, 0)), cur);
        },
        0,
    )
}

/// Flags set in the section and live at the exit.
fn flags(rng: &mut Rng, env: &Env) -> Result<Gen, String> {
    let mut c = Ctx::new(rng, env);
    let r = c.rng.regs(3);
    let (v, t, x) = (r[0], r[1], r[2]);
    let size = c.rng.pick(&[1u8, 2, 4, 8]);
    let op = c.rng.pick(&[CMP, CMP, SUB, ADD, ADC, SBB, 100, 101]);
    let s = c.rng.slots(1);
    c.regs.gpr[v as usize] = s[0];
    let a_val = c.rng.value();
    c.put(s[0], 8, a_val);
    let xv = match c.rng.below(3) {
        0 => a_val,
        1 => a_val.wrapping_add(c.rng.below(3)).wrapping_sub(1),
        _ => c.rng.value(),
    };
    c.regs.gpr[x as usize] = xv;
    let (name, ignore) = match op {
        100 => ("test", rseq_emu_x86_64::flags::AF),
        101 => ("inc", 0),
        CMP => ("cmp", 0),
        SUB => ("sub", 0),
        ADD => ("add", 0),
        ADC => ("adc", 0),
        _ => ("sbb", 0),
    };
    let comment = format!(
        "flags consumed after the section: mov (%v),%t; {name}{} %x,%t; mov %t,(%v) commit; rflags at the exit recorded",
        size * 8
    );
    c.finish(
        "flags",
        comment,
        0,
        |a, _e| {
            a.mov_from(size.max(4), t, Rm::M(Mem::b(v, 0)));
            match op {
                100 => a.test(size, Rm::R(t), x),
                101 => a.inc(size, Rm::R(t)),
                _ => a.alu_to(op, size, Rm::R(t), x),
            }
            a.mov_to(size.max(4), Rm::M(Mem::b(v, 0)), t);
        },
        ignore,
    )
}

/// The cpu number read through %fs in both addressing forms and stored.
fn cpuid(rng: &mut Rng, env: &Env) -> Result<Gen, String> {
    let mut c = Ctx::new(rng, env);
    let r = c.rng.regs(4);
    let (dst, offr, v, d2) = (r[0], r[1], r[2], r[3]);
    let form = c.rng.below(4);
    let field = c.rng.pick(&[area::CPU_ID, area::CPU_ID_START]);
    c.regs.gpr[offr as usize] = env.rseq_off as u64;
    let slot = c.rng.slots(1)[0];
    c.regs.gpr[v as usize] = slot;
    let abs = (env.rseq_off + field as i64) as i32;
    let comment = format!(
        "cpu number through %fs: form {form} ({}), field {}",
        [
            "mov %fs:disp32,%r32",
            "mov %fs:off(%reg),%r32",
            "movzwl %fs:disp32,%r32",
            "cmp %fs:off(%reg),%r32 + setcc"
        ][form as usize],
        if field == area::CPU_ID {
            "cpu_id"
        } else {
            "cpu_id_start"
        }
    );
    c.finish(
        "cpuid",
        comment,
        0,
        |a, _e| {
            match form {
                0 => a.mov_from(4, dst, Rm::M(Mem::fs_abs(abs))),
                1 => a.mov_from(4, dst, Rm::M(Mem::fs_b(offr, field as i32))),
                2 => a.movzx(4, 2, dst, Rm::M(Mem::fs_abs(abs))),
                _ => {
                    a.alu_from(CMP, 4, dst, Rm::M(Mem::fs_b(offr, field as i32)));
                    a.setcc(cc::E, Rm::R(d2));
                    a.setcc(cc::B, Rm::M(Mem::b(v, 4)));
                }
            }
            a.mov_to(4, Rm::M(Mem::b(v, 0)), dst);
        },
        0,
    )
}

/// Leave straight to post_commit_ip without a commit store.
fn nocommit(rng: &mut Rng, env: &Env) -> Result<Gen, String> {
    let mut c = Ctx::new(rng, env);
    let r = c.rng.regs(5);
    let (base, idx, out, expect, newv) = (r[0], r[1], r[2], r[3], r[4]);
    let cpu_disp = (env.rseq_off + area::CPU_ID as i64) as i32;
    c.regs.gpr[base as usize] = DATA + 0x300;
    let slot = DATA + 0x300 + 16 * u64::from(env.cpu);
    let w = c.rng.value();
    let eq = c.rng.pct(50);
    c.put(slot, 8, w);
    c.regs.gpr[expect as usize] = if eq { w } else { w.wrapping_mul(3) | 1 };
    let uncond = c.rng.pct(30);
    let comment = format!(
        "exit straight to post_commit_ip: read the per-cpu word; {}",
        if uncond {
            "jmp post_commit (no store at all)".to_string()
        } else {
            format!("cmp; je post_commit (taken: {eq}); else store")
        }
    );
    c.finish(
        "nocommit",
        comment,
        0,
        |a, e| {
            a.mov_from(4, idx, Rm::M(Mem::fs_abs(cpu_disp)));
            a.shl_imm(4, Rm::R(idx), 4);
            a.mov_from(8, out, Rm::M(Mem::bi(base, idx, 1, 0)));
            if uncond {
                a.jmp(e[0]);
                // Dead code after the jump, as compilers leave it.
                a.mov_to(8, Rm::M(Mem::bi(base, idx, 1, 0)), newv);
            } else {
                a.alu_to(CMP, 8, Rm::R(out), expect);
                a.jcc(cc::E, e[0]);
                a.mov_to(8, Rm::M(Mem::bi(base, idx, 1, 0)), newv);
            }
        },
        if uncond {
            rseq_emu_x86_64::flags::AF | rseq_emu_x86_64::flags::OF
        } else {
            0
        },
    )
}

/// A per-cpu list pop leaving early to other labels (empty list, bad tag).
fn earlyexit(rng: &mut Rng, env: &Env) -> Result<Gen, String> {
    let mut c = Ctx::new(rng, env);
    let r = c.rng.regs(5);
    let (head, node, next, tag, cpu) = (r[0], r[1], r[2], r[3], r[4]);
    // The node's tag word (node + 8) must not be the head slot: the tag
    // would overwrite the head and the native run would chase a tag value
    // as a pointer.
    let s = loop {
        let s = c.rng.slots(3);
        if s[1] + 8 != s[0] {
            break s;
        }
    };
    let case = c.rng.below(3);
    c.regs.gpr[head as usize] = s[0];
    let n1 = s[1];
    c.put(s[0], 8, if case == 0 { 0 } else { n1 });
    c.put(n1, 8, s[2]);
    let tagv = c.rng.below(1 << 16);
    c.regs.gpr[tag as usize] = if case == 1 { tagv ^ 1 } else { tagv };
    c.put(n1 + 8, 8, tagv);
    c.regs.gpr[cpu as usize] = u64::from(env.cpu);
    c.leading_check = Some(CpuCheck { cpu, off: None });
    let use_test = c.rng.pct(50);
    let comment = format!(
        "list pop with early exits: head {}; tag {}; null check with {}",
        if case == 0 {
            "empty -> exit label 1"
        } else {
            "non-empty"
        },
        if case == 1 {
            "differs -> exit label 2"
        } else {
            "matches"
        },
        if use_test {
            "test (AF undefined)"
        } else {
            "cmp $0"
        }
    );
    c.finish(
        "earlyexit",
        comment,
        2,
        |a, e| {
            a.mov_from(8, node, Rm::M(Mem::b(head, 0)));
            if use_test {
                a.test(8, Rm::R(node), node);
            } else {
                a.alu_imm(CMP, 8, Rm::R(node), 0);
            }
            a.jcc(cc::E, e[2]);
            cmp_or_exit(a, 8, tag, Mem::b(node, 8), e[3]);
            a.mov_from(8, next, Rm::M(Mem::b(node, 0)));
            a.mov_to(8, Rm::M(Mem::b(head, 0)), next);
        },
        if use_test {
            rseq_emu_x86_64::flags::AF
        } else {
            0
        },
    )
}
