/* rseq-emu runtime: C API. Link with the static library built by
 * `cargo build -p rseq-emu-runtime` (librseq_emu_runtime.a) and
 * -lpthread -ldl -lm.
 *
 * RSEQ_EMU_ASM_DEFINE_ABORT(label, teardown, abort_label) is a drop-in for
 * librseq's RSEQ_ASM_DEFINE_ABORT: same arguments, same placement, and the
 * critical section itself is byte-for-byte unchanged. On an abort it runs
 * `teardown`, then lets the engine decide: a native retry (jump to
 * abort_label, exactly as before) or, once the sequence aborted often
 * enough (policy), emulate it and commit it natively on its CPU, resuming
 * at the exit it reached with the emulated registers and flags.
 *
 * Requirements: x86_64; the descriptor is in the `__rseq_cs` section of the
 * program linking the engine (as librseq emits it) or registered with
 * rseq_emu_register_descriptors(); the teardown restores every register
 * the section reads on entry and modifies (librseq's teardowns do); the
 * numeric label 9999 is defined by the macro. */
#ifndef RSEQ_EMU_H
#define RSEQ_EMU_H

#include <stddef.h>
#include <stdint.h>

#if defined(__x86_64__)
#define RSEQ_EMU_SIG 0x53053053
#define RSEQ_EMU_STR_1(x) #x
#define RSEQ_EMU_STR(x) RSEQ_EMU_STR_1(x)
/* Layout (see crates/runtime/src/arch/x86_64/stub.rs): signature; label
 * (= abort_ip); teardown; lea -128(%rsp),%rsp (red zone skipped, flags
 * untouched); call rseq_emu_abort_stub; nopl <label - .>(%rax) (tells the
 * engine where abort_ip is); lea 128(%rsp),%rsp; jmp abort_label. */
#define RSEQ_EMU_ASM_DEFINE_ABORT(label, teardown, abort_label)            \
	".pushsection __rseq_failure, \"ax\"\n\t"                           \
	".byte 0x0f, 0xb9, 0x3d\n\t"                                         \
	".long " RSEQ_EMU_STR(RSEQ_EMU_SIG) "\n\t"                           \
	RSEQ_EMU_STR(label) ":\n\t"                                          \
	"9999:\n\t"                                                          \
	teardown                                                             \
	".byte 0x48, 0x8d, 0x64, 0x24, 0x80\n\t"                             \
	"call rseq_emu_abort_stub\n\t"                                       \
	".byte 0x0f, 0x1f, 0x80\n\t"                                         \
	".long 9999b - .\n\t"                                                \
	".byte 0x48, 0x8d, 0xa4, 0x24, 0x80, 0x00, 0x00, 0x00\n\t"           \
	"jmp %l[" RSEQ_EMU_STR(abort_label) "]\n\t"                          \
	".popsection\n\t"
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define RSEQ_EMU_MODE_AUTO 0
#define RSEQ_EMU_MODE_ALWAYS 1
#define RSEQ_EMU_MODE_NEVER 2

/* Set the mode (RSEQ_EMU_MODE_*). 0 on success, -1 for a bad value. */
int rseq_emu_set_mode(int mode);
/* Consecutive aborts before `auto` emulates (0 treated as 1). */
void rseq_emu_set_threshold(uint32_t n);
/* Apply RSEQ_EMU_MODE / RSEQ_EMU_THRESHOLD; -1 if invalid (nothing changed). */
int rseq_emu_init_from_env(void);
/* CPU of the calling thread per its rseq area, or -1. */
int rseq_emu_current_cpu(void);
/* Add `count` to *v as a per-CPU operation of `cpu` (migrates there if
 * needed). 0 done, -1 refused (bad pointer / cpu), -2 exhausted. */
int rseq_emu_percpu_addv(intptr_t *v, intptr_t count, int cpu);

/* Make descriptors outside this program's `__rseq_cs` section known (e.g.
 * those of a shared object, or generated code). */
void rseq_emu_register_descriptors(const void *const *descs, size_t n);

/* Counters of the abort-stub path (process-wide). */
struct rseq_emu_stats {
	uint64_t aborts;         /* calls from an abort stub */
	uint64_t emulated;       /* completed by the engine */
	uint64_t native_retries; /* answered with a native retry */
};
void rseq_emu_get_stats(struct rseq_emu_stats *out);

#ifdef __cplusplus
}
#endif

#endif /* RSEQ_EMU_H */
