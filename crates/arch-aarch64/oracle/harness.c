/*
 * rseq-emu aarch64 oracle harness: runs under qemu-aarch64 (user mode) as one
 * long-lived process. The Rust side (src/oracle.rs) streams cases over stdin
 * and reads results from stdout; the protocol is described there.
 *
 * Entry and exit both go through the signal machinery, so no harness
 * register survives into the case and no case register is lost:
 *   - enter: the harness executes `brk #0x100`; the SIGTRAP handler copies
 *     the harness's own context aside, writes the case state (x0..x30, sp,
 *     pc, NZCV, v0..v31) into the signal frame, sets tpidr_el0 with msr and
 *     returns: rt_sigreturn installs the whole case state at once.
 *   - exit: the block ends on a `brk` (the code page is filled with them) or
 *     faults; the handler (on its own alternate stack) reads tpidr_el0,
 *     restores the harness's, copies the frame into the result and puts the
 *     harness context back (pc past its `brk #0x100`).
 * The handler touches only globals and never thread-local storage: the case's
 * tpidr_el0 is live when it starts.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#define MAGIC_CASE 0x41363443u /* "C46A" */
#define MAGIC_RESULT 0x52363441u /* "A46R" */
#define MAX_REGIONS 16
#define MAX_BYTES (8u << 20)
#define PAGE 4096ul

struct a64_state {
    uint64_t x[31];
    uint64_t sp;
    uint64_t pc;
    uint64_t nzcv;
    uint64_t tpidr_el0;
    uint64_t pad;
    __uint128_t v[32];
};

struct region {
    uint64_t addr, len;
    uint32_t prot, pad;
    uint8_t *bytes; /* into payload */
};

enum { PHASE_IDLE, PHASE_ENTER, PHASE_RUNNING };

static volatile int phase;
static struct a64_state in_state, out_state;
static mcontext_t host_mc;
static uint64_t host_tpidr;
static uint32_t out_signo, out_code;
static uint64_t out_addr;
static uint8_t payload[MAX_BYTES];
static struct region regions[MAX_REGIONS];
static uint32_t nregions;
static uint8_t altstack[1 << 16] __attribute__((aligned(16)));

static struct fpsimd_context *fpsimd_of(mcontext_t *mc) {
    uint8_t *p = (uint8_t *)mc->__reserved;
    uint8_t *end = p + sizeof(mc->__reserved);
    while (p + sizeof(struct _aarch64_ctx) <= end) {
        struct _aarch64_ctx *h = (struct _aarch64_ctx *)p;
        if (h->magic == FPSIMD_MAGIC)
            return (struct fpsimd_context *)p;
        if (h->magic == 0 || h->size == 0)
            break;
        p += h->size;
    }
    return 0;
}

static void on_signal(int sig, siginfo_t *si, void *ucv) {
    uint64_t case_tpidr;
    __asm__ volatile("mrs %0, tpidr_el0" : "=r"(case_tpidr));
    ucontext_t *uc = ucv;
    mcontext_t *mc = &uc->uc_mcontext;
    if (phase == PHASE_ENTER && sig == SIGTRAP) {
        host_tpidr = case_tpidr;
        memcpy(&host_mc, mc, sizeof(host_mc));
        for (int i = 0; i < 31; i++)
            mc->regs[i] = in_state.x[i];
        mc->sp = in_state.sp;
        mc->pc = in_state.pc;
        mc->pstate = (mc->pstate & 0x0ffffffful) | (in_state.nzcv & 0xf0000000ul);
        struct fpsimd_context *f = fpsimd_of(mc);
        if (f)
            for (int i = 0; i < 32; i++)
                f->vregs[i] = in_state.v[i];
        __asm__ volatile("msr tpidr_el0, %0" ::"r"(in_state.tpidr_el0));
        phase = PHASE_RUNNING;
        return;
    }
    if (phase != PHASE_RUNNING)
        _exit(120 + sig % 8); /* a fault in the harness itself */
    __asm__ volatile("msr tpidr_el0, %0" ::"r"(host_tpidr));
    for (int i = 0; i < 31; i++)
        out_state.x[i] = mc->regs[i];
    out_state.sp = mc->sp;
    out_state.pc = mc->pc;
    out_state.nzcv = mc->pstate & 0xf0000000ul;
    out_state.tpidr_el0 = case_tpidr;
    struct fpsimd_context *f = fpsimd_of(mc);
    for (int i = 0; i < 32; i++)
        out_state.v[i] = f ? f->vregs[i] : 0;
    out_signo = (uint32_t)sig;
    out_code = (uint32_t)si->si_code;
    out_addr = (uint64_t)si->si_addr;
    memcpy(mc, &host_mc, sizeof(host_mc));
    mc->pc += 4; /* past the harness's brk #0x100 */
    phase = PHASE_IDLE;
}

static int read_full(void *buf, size_t n) {
    uint8_t *p = buf;
    while (n) {
        ssize_t r = read(0, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static uint8_t outbuf[MAX_BYTES + 4096];
static size_t outlen;

static void put(const void *p, size_t n) {
    memcpy(outbuf + outlen, p, n);
    outlen += n;
}

static void flush_out(void) {
    uint8_t *p = outbuf;
    while (outlen) {
        ssize_t r = write(1, p, outlen);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            _exit(3);
        p += r;
        outlen -= (size_t)r;
    }
}

/* Status 1: the case could not be set up; the message follows. */
static void setup_error(const char *what, uint64_t addr, int err) {
    uint32_t m = MAGIC_RESULT, status = 1;
    char msg[256];
    static const char hexd[] = "0123456789abcdef";
    size_t n = 0;
    for (const char *s = what; *s && n < 150; s++)
        msg[n++] = *s;
    msg[n++] = ' ';
    msg[n++] = '0';
    msg[n++] = 'x';
    for (int i = 60; i >= 0; i -= 4)
        msg[n++] = hexd[(addr >> i) & 15];
    msg[n++] = ':';
    msg[n++] = ' ';
    const char *es = strerror(err);
    for (; *es && n < 250; es++)
        msg[n++] = *es;
    uint32_t len = (uint32_t)n;
    put(&m, 4);
    put(&status, 4);
    put(&len, 4);
    put(msg, n);
    flush_out();
}

static void unmap_all(void) {
    for (uint32_t i = 0; i < nregions; i++) {
        uint64_t lo = regions[i].addr & ~(PAGE - 1);
        uint64_t hi = (regions[i].addr + regions[i].len + PAGE - 1) & ~(PAGE - 1);
        munmap((void *)lo, hi - lo);
    }
    nregions = 0;
}

static int prot_of(uint32_t p) {
    return (p & 1 ? PROT_READ : 0) | (p & 2 ? PROT_WRITE : 0) | (p & 4 ? PROT_EXEC : 0);
}

int main(void) {
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof(altstack), .ss_flags = 0};
    sigaltstack(&ss, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigfillset(&sa.sa_mask);
    int sigs[] = {SIGTRAP, SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGALRM, SIGSYS};
    for (unsigned i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaction(sigs[i], &sa, 0);
    for (;;) {
        uint32_t hdr[2];
        if (read_full(hdr, 8))
            return 0; /* end of input */
        if (hdr[0] != MAGIC_CASE || hdr[1] > MAX_REGIONS)
            return 2;
        uint32_t n = hdr[1];
        size_t used = 0;
        int bad = 0;
        struct region rs[MAX_REGIONS];
        for (uint32_t i = 0; i < n; i++) {
            uint64_t h[3];
            if (read_full(h, 24))
                return 2;
            rs[i].addr = h[0];
            rs[i].len = h[1];
            rs[i].prot = (uint32_t)h[2];
            if (rs[i].len > MAX_BYTES - used)
                return 2;
            rs[i].bytes = payload + used;
            if (read_full(rs[i].bytes, rs[i].len))
                return 2;
            used += rs[i].len;
        }
        if (read_full(&in_state, sizeof(in_state)))
            return 2;
        int same = n == nregions;
        for (uint32_t i = 0; i < n && same; i++)
            same = rs[i].addr == regions[i].addr && rs[i].len == regions[i].len &&
                   rs[i].prot == regions[i].prot;
        if (same) {
            /* The same layout as the previous case: refill in place. */
            for (uint32_t i = 0; i < n && !bad; i++) {
                uint8_t *at = (uint8_t *)rs[i].addr;
                if (rs[i].prot & 2) {
                    memcpy(at, rs[i].bytes, rs[i].len);
                    continue;
                }
                if (!memcmp(at, rs[i].bytes, rs[i].len))
                    continue;
                uint64_t lo = rs[i].addr & ~(PAGE - 1);
                uint64_t hi = (rs[i].addr + rs[i].len + PAGE - 1) & ~(PAGE - 1);
                if (mprotect((void *)lo, hi - lo, PROT_READ | PROT_WRITE) ||
                    (memcpy(at, rs[i].bytes, rs[i].len), 0) ||
                    mprotect((void *)lo, hi - lo, prot_of(rs[i].prot))) {
                    setup_error("mprotect", lo, errno);
                    bad = 1;
                }
                if (rs[i].prot & 4)
                    __builtin___clear_cache((char *)lo, (char *)hi);
            }
        } else {
            unmap_all();
        }
        for (uint32_t i = 0; i < n && !bad && !same; i++) {
            uint64_t lo = rs[i].addr & ~(PAGE - 1);
            uint64_t hi = (rs[i].addr + rs[i].len + PAGE - 1) & ~(PAGE - 1);
            void *p = mmap((void *)lo, hi - lo, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
            if (p == MAP_FAILED || p != (void *)lo) {
                int e = p == MAP_FAILED ? errno : EEXIST;
                if (p != MAP_FAILED)
                    munmap(p, hi - lo);
                setup_error("mmap", lo, e);
                bad = 1;
                break;
            }
            regions[nregions++] = rs[i];
            memcpy((void *)rs[i].addr, rs[i].bytes, rs[i].len);
            if (rs[i].prot & 4)
                __builtin___clear_cache((char *)lo, (char *)hi);
            if (mprotect((void *)lo, hi - lo, prot_of(rs[i].prot))) {
                setup_error("mprotect", lo, errno);
                bad = 1;
            }
        }
        if (bad)
            unmap_all();
        if (bad)
            continue;
        alarm(2);
        phase = PHASE_ENTER;
        __asm__ volatile("brk #0x100" ::: "memory");
        alarm(0);
        uint32_t m = MAGIC_RESULT, status = 0;
        put(&m, 4);
        put(&status, 4);
        put(&out_signo, 4);
        put(&out_code, 4);
        put(&out_addr, 8);
        put(&out_state, sizeof(out_state));
        for (uint32_t i = 0; i < nregions; i++) {
            if (regions[i].prot & 2)
                put((void *)regions[i].addr, regions[i].len);
        }
        flush_out();
    }
}
