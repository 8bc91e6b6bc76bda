/*
 * Restartable sequences for the scanner tests (x86_64), written in the
 * patterns of librseq and the kernel selftests. Every interesting address
 * carries a symbol so the test can take the expected values from the
 * linker's symbol table (nm) rather than from the scanner.
 *
 * seq1: cpu check, compare-and-store, early exit (the descriptor names global
 *       aliases: in a shared object its words are R_X86_64_64 against symbols)
 * seq2: add-to-memory commit, `nopl` signature, local labels (RELATIVE)
 * seq3: byte-copy loop, signature as data after an unconditional jump
 * seq4: wrong signature                    -> invalid
 * seq5: abort_ip inside the section        -> invalid
 * seq6: version 1                          -> invalid
 * seq7: deprecated NO_RESTART flag         -> invalid
 * seq8: a lock-prefixed instruction        -> valid, not emulable
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

#define UD1_SIG ".byte 0x0f, 0xb9, 0x3d\n.long 0x53053053\n"
#define NOPL_SIG ".byte 0x0f, 0x1f, 0x05\n.long 0x53053053\n"

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
	".type seq1_func, @function\n"
	"seq1_func:\n"
	"	leaq seq1_desc(%rip), %rax\n"
	"	movq %rax, 8(%rdi)\n"
	"seq1_start:\n"
	"g_seq1_start:\n"
	"	cmpl %esi, 4(%rdi)\n"
	"	jnz seq1_abort\n"
	"	cmpq %rdx, (%rcx)\n"
	"	jnz seq1_exit\n"
	"	movq %r8, (%rcx)\n"
	"seq1_post:\n"
	"	xorl %eax, %eax\n"
	"	ret\n"
	"seq1_exit:\n"
	"g_seq1_exit:\n"
	"	movl $1, %eax\n"
	"	ret\n"
	UD1_SIG
	"seq1_abort:\n"
	"g_seq1_abort:\n"
	"	movl $-1, %eax\n"
	"	ret\n"

	DESC(2, 0, 0, seq2_start, seq2_post, seq2_abort)
	".text\n"
	"seq2_func:\n"
	"	leaq seq2_desc(%rip), %rax\n"
	"	movq %rax, 8(%rdi)\n"
	"seq2_start:\n"
	"	movl 4(%rdi), %eax\n"
	"	cmpl %eax, %esi\n"
	"	jnz seq2_abort\n"
	"	addq %rdx, (%rcx,%rax,8)\n"
	"seq2_post:\n"
	"	ret\n"
	NOPL_SIG
	"seq2_abort:\n"
	"	ret\n"

	DESC(3, 0, 0, seq3_start, seq3_post, seq3_abort)
	".text\n"
	"seq3_func:\n"
	"seq3_start:\n"
	"	testq %rdx, %rdx\n"
	"	jz seq3_commit\n"
	"seq3_loop:\n"
	"	movb (%rsi), %al\n"
	"	movb %al, (%rdi)\n"
	"	incq %rsi\n"
	"	incq %rdi\n"
	"	decq %rdx\n"
	"	jnz seq3_loop\n"
	"seq3_commit:\n"
	"	movq %rcx, (%r8)\n"
	"seq3_post:\n"
	"	ret\n"
	"	jmp seq3_after\n"
	".long 0x53053053\n"
	"seq3_abort:\n"
	"	ret\n"
	"seq3_after:\n"
	"	ret\n"

	DESC(4, 0, 0, seq4_start, seq4_post, seq4_abort)
	".text\n"
	"seq4_start:\n"
	"	movq %rsi, (%rdi)\n"
	"seq4_post:\n"
	"	ret\n"
	".byte 0x0f, 0xb9, 0x3d\n.long 0x12345678\n"
	"seq4_abort:\n"
	"	ret\n"

	DESC(5, 0, 0, seq5_start, seq5_post, seq5_abort)
	".text\n"
	"seq5_start:\n"
	"	movq %rsi, (%rdi)\n"
	"	jmp seq5_skip\n"
	UD1_SIG
	"seq5_abort:\n"
	"	nop\n"
	"seq5_skip:\n"
	"	movq %rsi, 8(%rdi)\n"
	"seq5_post:\n"
	"	ret\n"

	DESC(6, 1, 0, seq6_start, seq6_post, seq6_abort)
	".text\n"
	"seq6_start:\n"
	"	movq %rsi, (%rdi)\n"
	"seq6_post:\n"
	"	ret\n"
	UD1_SIG
	"seq6_abort:\n"
	"	ret\n"

	DESC(7, 0, 1, seq7_start, seq7_post, seq7_abort)
	".text\n"
	"seq7_start:\n"
	"	movq %rsi, (%rdi)\n"
	"seq7_post:\n"
	"	ret\n"
	UD1_SIG
	"seq7_abort:\n"
	"	ret\n"

	DESC(8, 0, 0, seq8_start, seq8_post, seq8_abort)
	".text\n"
	"seq8_start:\n"
	"	cmpl %esi, 4(%rdi)\n"
	"	jnz seq8_abort\n"
	"seq8_lock:\n"
	"	lock addq %rdx, (%rcx)\n"
	"	movq %rdx, 8(%rcx)\n"
	"seq8_post:\n"
	"	ret\n"
	UD1_SIG
	"seq8_abort:\n"
	"	ret\n"
);

/* Keep the file linkable as an executable. */
int main(void) { return 0; }
