/*
 * Restartable sequences for the scanner tests (aarch64), in the patterns of
 * librseq and the kernel selftests. As in seqs_x86_64.c, every interesting
 * address carries a symbol so the expected values come from nm.
 *
 * seq1: cpu check (ldr/cmp/b.ne), compare-and-store, early exit, global
 *       labels (ABS64 against symbols in a shared object)
 * seq2: cpu check (ldr/sub/cbnz), add then str commit, local labels
 * seq3: backwards byte-copy loop then stlr commit
 * seq4: wrong signature                    -> invalid
 * seq5: abort_ip inside the section        -> invalid
 * seq6: version 1                          -> invalid
 * seq7: deprecated NO_RESTART flag         -> invalid
 * seq8: an exclusive store (stxr)          -> valid, not emulable
 */

#define DESC(n, version, flags, start, post, abort)                      \
	".pushsection __rseq_cs, \"aw\"\n"                               \
	".balign 32\n"                                                   \
	"seq" #n "_desc:\n"                                              \
	".long " #version ", " #flags "\n"                               \
	".quad " #start ", " #post " - " #start ", " #abort "\n"         \
	".popsection\n"                                                  \
	".pushsection __rseq_cs_ptr_array, \"aw\"\n"                     \
	".quad seq" #n "_desc\n"                                         \
	".popsection\n"

#define EXIT(start, exit)                                                \
	".pushsection __rseq_exit_point_array, \"aw\"\n"                 \
	".quad " #start ", " #exit "\n"                                  \
	".popsection\n"

#define SIG ".inst 0xd428bc00\n"

__asm__(
	".globl g_seq1_start, g_seq1_abort, g_seq1_exit\n"
	".pushsection __rseq_cs, \"aw\"\n"
	".balign 32\n"
	"seq1_desc:\n"
	".long 0, 0\n"
	".quad g_seq1_start, seq1_post - seq1_start, g_seq1_abort\n"
	".popsection\n"
	".pushsection __rseq_cs_ptr_array, \"aw\"\n"
	".quad seq1_desc\n"
	".popsection\n"
	EXIT(g_seq1_start, g_seq1_exit)
	".text\n"
	".globl seq1_func\n"
	".type seq1_func, %function\n"
	"seq1_func:\n"
	"	adrp x9, seq1_desc\n"
	"	add x9, x9, :lo12:seq1_desc\n"
	"	str x9, [x0, #8]\n"
	"seq1_start:\n"
	"g_seq1_start:\n"
	"	ldr w10, [x0, #4]\n"
	"	cmp w10, w1\n"
	"	b.ne seq1_abort\n"
	"	ldr x11, [x3]\n"
	"	cmp x11, x2\n"
	"	b.ne seq1_exit\n"
	"	str x4, [x3]\n"
	"seq1_post:\n"
	"	mov w0, #0\n"
	"	ret\n"
	"seq1_exit:\n"
	"g_seq1_exit:\n"
	"	mov w0, #1\n"
	"	ret\n"
	SIG
	"seq1_abort:\n"
	"g_seq1_abort:\n"
	"	mov w0, #-1\n"
	"	ret\n"

	DESC(2, 0, 0, seq2_start, seq2_post, seq2_abort)
	".text\n"
	"seq2_func:\n"
	"seq2_start:\n"
	"	ldr w10, [x0, #4]\n"
	"	sub w10, w10, w1\n"
	"	cbnz w10, seq2_abort\n"
	"	ldr x11, [x3, w1, uxtw #3]\n"
	"	add x11, x11, x2\n"
	"	str x11, [x3, w1, uxtw #3]\n"
	"seq2_post:\n"
	"	ret\n"
	SIG
	"seq2_abort:\n"
	"	ret\n"

	DESC(3, 0, 0, seq3_start, seq3_post, seq3_abort)
	".text\n"
	"seq3_func:\n"
	"seq3_start:\n"
	"	cbz x2, seq3_commit\n"
	"seq3_loop:\n"
	"	sub x2, x2, #1\n"
	"	ldrb w9, [x1, x2]\n"
	"	strb w9, [x0, x2]\n"
	"	cbnz x2, seq3_loop\n"
	"seq3_commit:\n"
	"	stlr x4, [x3]\n"
	"seq3_post:\n"
	"	ret\n"
	SIG
	"seq3_abort:\n"
	"	ret\n"

	DESC(4, 0, 0, seq4_start, seq4_post, seq4_abort)
	".text\n"
	"seq4_start:\n"
	"	str x1, [x0]\n"
	"seq4_post:\n"
	"	ret\n"
	".inst 0xd4200000\n"
	"seq4_abort:\n"
	"	ret\n"

	DESC(5, 0, 0, seq5_start, seq5_post, seq5_abort)
	".text\n"
	"seq5_start:\n"
	"	str x1, [x0]\n"
	"	b seq5_skip\n"
	SIG
	"seq5_abort:\n"
	"	nop\n"
	"seq5_skip:\n"
	"	str x1, [x0, #8]\n"
	"seq5_post:\n"
	"	ret\n"

	DESC(6, 1, 0, seq6_start, seq6_post, seq6_abort)
	".text\n"
	"seq6_start:\n"
	"	str x1, [x0]\n"
	"seq6_post:\n"
	"	ret\n"
	SIG
	"seq6_abort:\n"
	"	ret\n"

	DESC(7, 0, 4, seq7_start, seq7_post, seq7_abort)
	".text\n"
	"seq7_start:\n"
	"	str x1, [x0]\n"
	"seq7_post:\n"
	"	ret\n"
	SIG
	"seq7_abort:\n"
	"	ret\n"

	DESC(8, 0, 0, seq8_start, seq8_post, seq8_abort)
	".text\n"
	"seq8_start:\n"
	"	ldr w10, [x0, #4]\n"
	"	cmp w10, w1\n"
	"	b.ne seq8_abort\n"
	"seq8_stxr:\n"
	"	stxr w9, x2, [x3]\n"
	"	str x2, [x3, #8]\n"
	"seq8_post:\n"
	"	ret\n"
	SIG
	"seq8_abort:\n"
	"	ret\n"
);

int main(void) { return 0; }
