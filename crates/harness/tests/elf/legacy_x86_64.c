/*
 * Descriptors only in the legacy __rseq_table section (no pointer array),
 * and a __rseq_cs-only variant is built from the same file with
 * -DSECTION=__rseq_cs. Symbols name every address for the test's oracle.
 */
#ifndef SECTION
#define SECTION __rseq_table
#endif
#define STR2(x) #x
#define STR(x) STR2(x)

__asm__(
	".pushsection " STR(SECTION) ", \"aw\"\n"
	".balign 32\n"
	"seq1_desc:\n"
	".long 0, 0\n"
	".quad seq1_start, seq1_post - seq1_start, seq1_abort\n"
	".balign 32\n"
	"seq2_desc:\n"
	".long 0, 0\n"
	".quad seq2_start, seq2_post - seq2_start, seq2_abort\n"
	".popsection\n"
	".text\n"
	"seq1_start:\n"
	"	movl 4(%rdi), %eax\n"
	"	cmpl %eax, %esi\n"
	"	jnz seq1_abort\n"
	"	movw %dx, (%rcx)\n"
	"seq1_post:\n"
	"	ret\n"
	".byte 0x0f, 0xb9, 0x3d\n.long 0x53053053\n"
	"seq1_abort:\n"
	"	ret\n"
	"seq2_start:\n"
	"	incq (%rdi)\n"
	"seq2_post:\n"
	"	ret\n"
	".byte 0x0f, 0xb9, 0x3d\n.long 0x53053053\n"
	"seq2_abort:\n"
	"	ret\n"
);

int main(void) { return 0; }
