/* rseq_counter: N per-CPU counter increments, each in a restartable
 * sequence (librseq style: the descriptor's address is stored in the
 * thread's rseq area, the commit is the last store, the abort handler
 * retries). Uses glibc's own registration (__rseq_offset + thread pointer).
 *
 * usage: rseq_counter [ops [threads]]   (defaults 10000 1)
 * Prints "total=<sum> expected=<ops*threads> aborts=<n>" and exits 0 only
 * when the per-CPU counters add up exactly. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "rseq_x86.h"

#define SLOTS 4096 /* per-CPU slots */
static long counts[SLOTS];
static long ops = 10000;
static long aborts_total;

/* One increment of this CPU's counter by `inc`. Returns 0 on commit, 1 on abort. */
static int percpu_add(struct rseq *rs, long inc) {
    __asm__ __volatile__ goto(
        RSEQ_TEST_DESCRIPTOR
        RSEQ_TEST_ARM
        "1:\n\t"
        "movl 4(%[rs]), %%eax\n\t"             /* cpu_id */
        "movq (%[base], %%rax, 8), %%rcx\n\t"
        "addq %[inc], %%rcx\n\t"
        "movq %%rcx, (%[base], %%rax, 8)\n\t"  /* commit */
        "2:\n\t"
        RSEQ_TEST_ABORT
        :
        : [rs] "r"(rs), [base] "r"(counts), [inc] "r"(inc)
        : "rax", "rcx", "memory", "cc"
        : abort);
    return 0;
abort:
    return 1;
}

static void *worker(void *arg) {
    (void)arg;
    struct rseq *rs = rseq_area();
    long aborts = 0;
    for (long i = 0; i < ops; i++)
        while (percpu_add(rs, 1))
            aborts++;
    __atomic_fetch_add(&aborts_total, aborts, __ATOMIC_RELAXED);
    return NULL;
}

int main(int argc, char **argv) {
    long threads = 1;
    if (argc > 1)
        ops = atol(argv[1]);
    if (argc > 2)
        threads = atol(argv[2]);
    require_rseq("rseq_counter");
    if (threads <= 1) {
        worker(NULL);
    } else {
        pthread_t t[64];
        if (threads > 64)
            threads = 64;
        for (long i = 0; i < threads; i++)
            if (pthread_create(&t[i], NULL, worker, NULL) != 0)
                return 4;
        for (long i = 0; i < threads; i++)
            pthread_join(t[i], NULL);
    }
    long total = 0;
    for (long s = 0; s < SLOTS; s++)
        total += counts[s];
    printf("total=%ld expected=%ld aborts=%ld\n", total, ops * threads, aborts_total);
    return total == ops * threads ? 0 : 1;
}
