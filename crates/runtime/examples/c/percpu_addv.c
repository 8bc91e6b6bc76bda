/* percpu_addv, the API sketched in the 2017 cpu_opv discussion: a static
 * inline that tries the rseq add and falls back — here to the rseq-emu
 * engine instead of the cpu_opv system call:
 *
 *   static inline int percpu_addv(intptr_t *v, intptr_t count, int cpu)
 *   {
 *           if (likely(!rseq_addv(v, count, cpu)))
 *                   return 0;
 *           return cpu_op_addv(v, count, cpu);    <- rseq_emu_percpu_addv
 *   }
 *
 * The rseq add's abort handler is RSEQ_EMU_ASM_DEFINE_ABORT, so an aborted
 * add is first offered to the engine (emulate + commit on this CPU); a
 * native retry (e.g. the thread migrated: cpu mismatch) returns -1 and the
 * fallback completes the add on `cpu` from wherever the thread runs.
 *
 * 4 threads per CPU, PER_THREAD adds each (every 64th one for another
 * CPU), a signal storm at the workers.
 * Prints "total=<n> expected=<n> aborts=<n> emulated=<n>"; exits 0 only
 * when the total is exact. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "rseq_emu.h"

extern const ptrdiff_t __rseq_offset; /* glibc 2.35+ */
extern const unsigned int __rseq_size;

#define MAXCPU 256
#define PER_THREAD 100000
static intptr_t counters[MAXCPU * 8]; /* one cache line per cpu */
static int ncpu;
static int finished;

static inline int rseq_current_cpu(void)
{
	int cpu;
	__asm__ __volatile__("movl %%fs:4(%[off]), %[cpu]"
			     : [cpu] "=r" (cpu) : [off] "r" (__rseq_offset));
	return cpu;
}

/* 0: added natively (or completed by the engine at the abort); -1: aborted
 * and the engine asked for a native retry. */
static inline int rseq_addv(intptr_t *v, intptr_t count, int cpu)
{
	__asm__ __volatile__ goto(
		".pushsection __rseq_cs, \"aw\"\n\t"
		".balign 32\n\t"
		"3:\n\t"
		".long 0, 0\n\t"
		".quad 1f, 2f - 1f, 4f\n\t"
		".popsection\n\t"
		"leaq 3b(%%rip), %%rax\n\t"
		"movq %%rax, %%fs:8(%[off])\n\t"
		"1:\n\t"
		"cmpl %[cpu], %%fs:4(%[off])\n\t"
		"jnz 4f\n\t"
		"addq %[count], %[v]\n\t"
		"2:\n\t"
		RSEQ_EMU_ASM_DEFINE_ABORT(4, "", abort)
		: /* no outputs */
		: [off] "r" (__rseq_offset), [cpu] "r" (cpu),
		  [count] "er" (count), [v] "m" (*v)
		: "memory", "cc", "rax"
		: abort);
	return 0;
abort:
	return -1;
}

static inline int percpu_addv(intptr_t *v, intptr_t count, int cpu)
{
	if (__builtin_expect(!rseq_addv(v, count, cpu), 1))
		return 0;
	return rseq_emu_percpu_addv(v, count, cpu);
}

static void on_signal(int sig) { (void)sig; }

static void *worker(void *arg)
{
	(void)arg;
	for (int i = 0; i < PER_THREAD; i++) {
		int cpu = rseq_current_cpu();
		/* Every 64th add is for the next CPU (a per-CPU buffer of
		 * another CPU, as a tracer's ring buffer needs): the rseq add
		 * fails its cpu check, the engine sees the abort and leaves it
		 * to the fallback, which completes it on that CPU. */
		if ((i & 63) == 63)
			cpu = (cpu + 1) % ncpu;
		if (percpu_addv(&counters[cpu * 8], 1, cpu) != 0) {
			__atomic_add_fetch(&finished, 1, __ATOMIC_SEQ_CST);
			return (void *)1;
		}
	}
	__atomic_add_fetch(&finished, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static pthread_t th[4 * MAXCPU];
static int nthreads;

static void *storm(void *arg)
{
	(void)arg;
	/* Exited workers are not joined before this thread ends, so
	 * pthread_kill stays valid. */
	while (__atomic_load_n(&finished, __ATOMIC_SEQ_CST) < nthreads) {
		for (int t = 0; t < nthreads; t++)
			pthread_kill(th[t], SIGUSR1);
		usleep(100);
	}
	return NULL;
}

int main(void)
{
	if (__rseq_size == 0) {
		fprintf(stderr, "glibc did not register rseq\n");
		return 2;
	}
	if (rseq_emu_init_from_env() != 0) {
		fprintf(stderr, "bad RSEQ_EMU_MODE / RSEQ_EMU_THRESHOLD\n");
		return 2;
	}
	signal(SIGUSR1, on_signal);
	ncpu = (int)sysconf(_SC_NPROCESSORS_CONF);
	if (ncpu > MAXCPU)
		ncpu = MAXCPU;
	nthreads = 4 * ncpu;
	for (long t = 0; t < nthreads; t++)
		pthread_create(&th[t], NULL, worker, NULL);
	pthread_t st;
	pthread_create(&st, NULL, storm, NULL);
	pthread_join(st, NULL);
	int bad = 0;
	for (int t = 0; t < nthreads; t++) {
		void *r;
		pthread_join(th[t], &r);
		bad |= r != NULL;
	}
	intptr_t total = 0;
	for (int c = 0; c < ncpu; c++)
		total += counters[c * 8];
	struct rseq_emu_stats s;
	rseq_emu_get_stats(&s);
	printf("total=%ld expected=%ld aborts=%lu emulated=%lu\n", (long)total,
	       (long)nthreads * PER_THREAD, (unsigned long)s.aborts,
	       (unsigned long)s.emulated);
	return bad || total != (intptr_t)nthreads * PER_THREAD;
}
