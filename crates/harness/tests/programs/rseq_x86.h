/* Shared pieces of the x86_64 rseq test programs: the thread's rseq area
 * (glibc's registration) and the asm text around a critical section, in
 * librseq's layout (written for these tests, not copied). The section must
 * define local labels 1 (start_ip) and 2 (post_commit_ip); 3 (the
 * descriptor) and 4 (abort_ip) are defined here. */
#ifndef RSEQ_X86_H
#define RSEQ_X86_H

#include <stdio.h>
#include <stdlib.h>
#include <sys/rseq.h>

/* The calling thread's struct rseq, registered by glibc. */
static inline struct rseq *rseq_area(void) {
    return (struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
}

/* Exit with status 3 and a message when glibc did not register rseq. */
static inline void require_rseq(const char *prog) {
    if (__rseq_size == 0) {
        fprintf(stderr, "%s: glibc did not register rseq\n", prog);
        exit(3);
    }
}

/* The descriptor {0, 0, 1f, 2f - 1f, 4f} at local label 3, listed in
 * __rseq_cs_ptr_array. */
#define RSEQ_TEST_DESCRIPTOR                       \
    ".pushsection __rseq_cs, \"aw\"\n\t"            \
    ".balign 32\n\t"                               \
    "3: .long 0, 0\n\t"                            \
    ".quad 1f, 2f - 1f, 4f\n\t"                    \
    ".popsection\n\t"                              \
    ".pushsection __rseq_cs_ptr_array, \"aw\"\n\t" \
    ".quad 3b\n\t"                                 \
    ".popsection\n\t"

/* Arm the section: rseq->rseq_cs = &descriptor (the area in operand [rs]). */
#define RSEQ_TEST_ARM           \
    "leaq 3b(%%rip), %%rax\n\t" \
    "movq %%rax, 8(%[rs])\n\t"

/* abort_ip (local label 4) after the signature (ud1 form), out of line;
 * it jumps to the C label `abort`. */
#define RSEQ_TEST_ABORT                             \
    ".pushsection .text.rseq_abort, \"ax\"\n\t"     \
    ".byte 0x0f, 0xb9, 0x3d\n\t"                    \
    ".long 0x53053053\n\t"                          \
    "4: jmp %l[abort]\n\t"                          \
    ".popsection\n\t"

#endif
