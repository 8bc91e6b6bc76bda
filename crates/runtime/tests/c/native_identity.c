/* The same per-CPU add sequence, built twice: with an abort handler
 * written in the pattern of librseq's RSEQ_ASM_DEFINE_ABORT (a signature,
 * the abort label, the teardown, a jump to the C abort label, all in
 * __rseq_failure) and with rseq_emu's RSEQ_EMU_ASM_DEFINE_ABORT. The test
 * (tests/native_identity.rs) compares the object files. */
#include <stdint.h>
#include "rseq_emu.h"

#define PLAIN_STR_1(x) #x
#define PLAIN_STR(x) PLAIN_STR_1(x)
#define PLAIN_ASM_DEFINE_ABORT(label, teardown, abort_label)           \
	".pushsection __rseq_failure, \"ax\"\n\t"                       \
	".byte 0x0f, 0xb9, 0x3d\n\t"                                     \
	".long 0x53053053\n\t"                                           \
	PLAIN_STR(label) ":\n\t"                                         \
	teardown                                                         \
	"jmp %l[" PLAIN_STR(abort_label) "]\n\t"                         \
	".popsection\n\t"

#ifdef USE_EMU
#define DEFINE_ABORT RSEQ_EMU_ASM_DEFINE_ABORT
#else
#define DEFINE_ABORT PLAIN_ASM_DEFINE_ABORT
#endif

/* area: this thread's struct rseq (cpu_id at 4, rseq_cs at 8). Returns 0
 * when the add committed, -1 when aborted. */
int seq_addv(void *area, intptr_t *v, intptr_t count, int cpu)
{
	__asm__ __volatile__ goto(
		".pushsection __rseq_cs, \"aw\"\n\t"
		".balign 32\n\t"
		"3:\n\t"
		".long 0, 0\n\t"
		".quad 1f, 2f - 1f, 4f\n\t"
		".popsection\n\t"
		"leaq 3b(%%rip), %%rax\n\t"
		"movq %%rax, 8(%[area])\n\t"
		"1:\n\t"
		"cmpl %[cpu], 4(%[area])\n\t"
		"jnz 4f\n\t"
		"addq %[count], %[v]\n\t"
		"2:\n\t"
		DEFINE_ABORT(4, "", abort)
		: /* no outputs */
		: [area] "r" (area), [cpu] "r" (cpu), [count] "er" (count),
		  [v] "m" (*v)
		: "memory", "cc", "rax"
		: abort);
	return 0;
abort:
	return -1;
}
