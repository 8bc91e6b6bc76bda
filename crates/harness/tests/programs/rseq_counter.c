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
#include <sys/rseq.h>

#define SLOTS 4096 /* per-CPU slots */
static long counts[SLOTS];
static long ops = 10000;
static long aborts_total;

static inline struct rseq *rseq_area(void) {
    return (struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
}

/* One increment of this CPU's counter by `inc`. Returns 0 on commit, 1 on abort. */
static int percpu_add(struct rseq *rs, long inc) {
    __asm__ __volatile__ goto(
        ".pushsection __rseq_cs, \"aw\"\n\t"
        ".balign 32\n\t"
        "3: .long 0, 0\n\t"
        ".quad 1f, 2f - 1f, 4f\n\t"
        ".popsection\n\t"
        ".pushsection __rseq_cs_ptr_array, \"aw\"\n\t"
        ".quad 3b\n\t"
        ".popsection\n\t"
        "leaq 3b(%%rip), %%rax\n\t"
        "movq %%rax, 8(%[rs])\n\t"
        "1:\n\t"
        "movl 4(%[rs]), %%eax\n\t"             /* cpu_id */
        "movq (%[base], %%rax, 8), %%rcx\n\t"
        "addq %[inc], %%rcx\n\t"
        "movq %%rcx, (%[base], %%rax, 8)\n\t"  /* commit */
        "2:\n\t"
        ".pushsection .text.rseq_abort, \"ax\"\n\t"
        ".byte 0x0f, 0xb9, 0x3d\n\t"        /* ud1 <sig>(%rip), %edi */
        ".long 0x53053053\n\t"
        "4: jmp %l[abort]\n\t"
        ".popsection\n\t"
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
    if (__rseq_size == 0) {
        fprintf(stderr, "rseq_counter: glibc did not register rseq\n");
        return 3;
    }
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
