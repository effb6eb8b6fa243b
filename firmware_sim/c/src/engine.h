/* The int8 inference engine: a loaded package (package.h) run on one input at a time through
 * the two ping-pong buffers of the static activation arena (docs/PACKAGE.md, "RAM").
 *
 * Two paths give the same bits (tests/test_firmware_engine.py checks both against
 * export/contract/golden.py):
 *   - the reference path (engine.c): plain C99 loops, one multiply-accumulate at a time,
 *     defined for any C99 compiler (no right shift of a negative number);
 *   - the fast path (engine_dsp.c): dense layers two output rows and four inputs at a time
 *     with SXTB16 / SXTAB16 / SMLAD, the CMSIS-NN way. With __ARM_FEATURE_DSP (Cortex-M4,
 *     M7, M33) these are the instructions; elsewhere dsp.h emulates them in portable C, so
 *     the same code is tested on the host.
 */
#ifndef MK_ENGINE_H
#define MK_ENGINE_H

#include <stdint.h>

#include "package.h"

/* The path the device runs: the fast one where the DSP instructions exist (a build may choose). */
#ifndef MK_ENGINE_FAST
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#define MK_ENGINE_FAST 1
#else
#define MK_ENGINE_FAST 0
#endif
#endif

/* Run model `m` on `x` (m->n_inputs values) in `arena` (m->ram_bytes, 4-byte aligned);
 * returns the m->n_outputs outputs, in the arena. `fast`: the DSP path for dense layers. */
const int8_t *mk_engine_run(const mk_model *m, const int8_t *x, int8_t *arena, int fast);

/* The class of outputs `y`: argmax (lowest index on ties) or the Mark I codebook rule on
 * y - zero point (export.contract.golden.decide). */
uint32_t mk_decide(const mk_model *m, const int8_t *y);

/* The cycle estimate of one inference (firmware_sim.engine.CortexM4Cost, cortex-m4-80mhz). */
uint64_t mk_cycle_estimate(const mk_model *m);
#define MK_CLOCK_HZ 80000000u

/* Layer kernels, reference and fast. */
void mk_dense_reference(const mk_layer *L, const int8_t *x, int8_t *y);
void mk_dense_fast(const mk_layer *L, const int8_t *x, int8_t *y);
void mk_threshold(const mk_layer *L, const int8_t *x, int8_t *y);
void mk_step(const mk_layer *L, const int8_t *x, int8_t *y);

#endif
