/* rseq-emu runtime: C API. Link with the static library built by
 * `cargo build -p rseq-emu-runtime` (librseq_emu_runtime.a) and
 * -lpthread -ldl -lm. */
#ifndef RSEQ_EMU_H
#define RSEQ_EMU_H

#include <stdint.h>

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

#ifdef __cplusplus
}
#endif

#endif /* RSEQ_EMU_H */
