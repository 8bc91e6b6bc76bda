/* rseq_gdb: a few per-CPU updates in one restartable sequence whose
 * arming point, first instruction and commit point carry global labels
 * (rseq_gdb_arm, rseq_gdb_start, rseq_gdb_mid, rseq_gdb_post) so a debugger can stop
 * there. The gdb test compares the state at rseq_gdb_post after a native
 * run with the state rseq-step leaves. Uses glibc's rseq registration. */
#include <stdio.h>
#include "rseq_x86.h"

#define SLOTS 4096
long slots[SLOTS]; /* per-CPU counters */
long aux[SLOTS];   /* per-CPU derived values */
int aborts;        /* kernel aborts seen (in memory, for the debugger) */

__attribute__((noinline)) static int update(struct rseq *rs, long inc) {
    __asm__ __volatile__ goto(
        RSEQ_TEST_DESCRIPTOR
        ".globl rseq_gdb_arm\n"
        "rseq_gdb_arm:\n\t"
        RSEQ_TEST_ARM
        ".globl rseq_gdb_start\n"
        "rseq_gdb_start:\n"
        "1:\n\t"
        "movl 4(%[rs]), %%eax\n\t"
        "movq (%[base], %%rax, 8), %%rcx\n\t"
        ".globl rseq_gdb_mid\n"
        "rseq_gdb_mid:\n\t"
        "leaq 1(%%rcx, %[inc], 2), %%rdx\n\t"
        "addq %[inc], %%rcx\n\t"
        "cmpq $100, %%rcx\n\t"
        "jb 5f\n\t"
        "subq $7, %%rdx\n"
        "5:\n\t"
        "xorq %%rcx, %%rdx\n\t"
        "movq %%rdx, (%[aux], %%rax, 8)\n\t"
        "movq %%rcx, (%[base], %%rax, 8)\n\t"
        "2:\n\t"
        ".globl rseq_gdb_post\n"
        "rseq_gdb_post:\n\t"
        "nop\n\t"
        RSEQ_TEST_ABORT
        :
        : [rs] "r"(rs), [base] "r"(slots), [aux] "r"(aux), [inc] "r"(inc)
        : "rax", "rcx", "rdx", "memory", "cc"
        : abort);
    return 0;
abort:
    return 1;
}

int main(void) {
    require_rseq("rseq_gdb");
    struct rseq *rs = rseq_area();
    for (long i = 1; i <= 3; i++)
        while (update(rs, 40 * i))
            aborts++;
    long total = 0;
    for (long s = 0; s < SLOTS; s++)
        total += slots[s];
    printf("total=%ld aborts=%d\n", total, aborts);
    return total == 240 ? 0 : 1;
}
