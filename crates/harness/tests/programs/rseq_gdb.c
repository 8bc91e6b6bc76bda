/* rseq_gdb: a few per-CPU updates in one restartable sequence whose
 * arming point, first instruction and commit point carry global labels
 * (rseq_gdb_arm, rseq_gdb_start, rseq_gdb_mid, rseq_gdb_post) so a debugger can stop
 * there. The gdb test compares the state at rseq_gdb_post after a native
 * run with the state rseq-step leaves. Uses glibc's rseq registration. */
#include <stdio.h>
#include <sys/rseq.h>

#define SLOTS 4096
long slots[SLOTS]; /* per-CPU counters */
long aux[SLOTS];   /* per-CPU derived values */

__attribute__((noinline)) static int update(struct rseq *rs, long inc) {
    __asm__ __volatile__ goto(
        ".pushsection __rseq_cs, \"aw\"\n\t"
        ".balign 32\n\t"
        "3: .long 0, 0\n\t"
        ".quad 1f, 2f - 1f, 4f\n\t"
        ".popsection\n\t"
        ".pushsection __rseq_cs_ptr_array, \"aw\"\n\t"
        ".quad 3b\n\t"
        ".popsection\n\t"
        ".globl rseq_gdb_arm\n"
        "rseq_gdb_arm:\n\t"
        "leaq 3b(%%rip), %%rax\n\t"
        "movq %%rax, 8(%[rs])\n\t"
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
        ".pushsection .text.rseq_abort, \"ax\"\n\t"
        ".byte 0x0f, 0xb9, 0x3d\n\t"
        ".long 0x53053053\n\t"
        "4: jmp %l[abort]\n\t"
        ".popsection\n\t"
        :
        : [rs] "r"(rs), [base] "r"(slots), [aux] "r"(aux), [inc] "r"(inc)
        : "rax", "rcx", "rdx", "memory", "cc"
        : abort);
    return 0;
abort:
    return 1;
}

int main(void) {
    struct rseq *rs = (struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
    if (__rseq_size == 0) {
        fprintf(stderr, "rseq_gdb: glibc did not register rseq\n");
        return 3;
    }
    int aborts = 0;
    for (long i = 1; i <= 3; i++)
        while (update(rs, 40 * i))
            aborts++;
    long total = 0;
    for (long s = 0; s < SLOTS; s++)
        total += slots[s];
    printf("total=%ld aborts=%d\n", total, aborts);
    return total == 240 ? 0 : 1;
}
