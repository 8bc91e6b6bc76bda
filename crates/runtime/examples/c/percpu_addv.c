/* percpu_addv (the 2017 rseq discussion's API) falling back to the rseq-emu
 * engine. Prints "total=<n>" and exits 0 when every per-CPU sum is exact. */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
#include "rseq_emu.h"

#define MAXCPU 256
#define PER_THREAD 2000
static intptr_t counters[MAXCPU];
static int ncpu;

static inline int percpu_addv(intptr_t *base, intptr_t count, int cpu)
{
	/* A native rseq add would go here; on abort it falls back to the
	 * engine, which completes the add on `cpu`. */
	return rseq_emu_percpu_addv(&base[cpu], count, cpu);
}

static void *worker(void *arg)
{
	long t = (long)arg;
	for (int i = 0; i < PER_THREAD; i++)
		if (percpu_addv(counters, 1, (int)((t + i) % ncpu)) != 0)
			return (void *)1;
	return NULL;
}

int main(void)
{
	ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (ncpu > MAXCPU)
		ncpu = MAXCPU;
	int nthreads = 4 * ncpu;
	pthread_t th[4 * MAXCPU];
	for (long t = 0; t < nthreads; t++)
		pthread_create(&th[t], NULL, worker, (void *)t);
	int bad = 0;
	for (int t = 0; t < nthreads; t++) {
		void *r;
		pthread_join(th[t], &r);
		bad |= r != NULL;
	}
	intptr_t total = 0;
	for (int c = 0; c < ncpu; c++)
		total += counters[c];
	printf("total=%ld expected=%ld\n", (long)total, (long)nthreads * PER_THREAD);
	return bad || total != (intptr_t)nthreads * PER_THREAD;
}
