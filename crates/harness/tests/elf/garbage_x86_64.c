/*
 * A pointer array holding one good descriptor pointer and garbage: a
 * pointer outside every segment and a pointer into the middle of .text.
 */
__asm__(
	".pushsection __rseq_cs, \"aw\"\n"
	".balign 32\n"
	"seq1_desc:\n"
	".long 0, 0\n"
	".quad seq1_start, seq1_post - seq1_start, seq1_abort\n"
	".popsection\n"
	".pushsection __rseq_cs_ptr_array, \"aw\"\n"
	".quad seq1_desc\n"
	".quad 0xdeadbeef00\n"
	".quad seq1_start\n"
	".popsection\n"
	".text\n"
	"seq1_start:\n"
	"	movq %rsi, (%rdi)\n"
	"seq1_post:\n"
	"	ret\n"
	".byte 0x0f, 0xb9, 0x3d\n.long 0x53053053\n"
	"seq1_abort:\n"
	"	ret\n"
);

int main(void) { return 0; }
