/* The int8 inference engine: a loaded package (package.h) run on one input at a time through
 * the two ping-pong buffers of the static activation arena (docs/PACKAGE.md, "RAM").
 *
 * Three paths for dense layers give the same bits (tests/test_firmware_engine.py checks each
 * against export/contract/golden.py, on the host and under QEMU):
 *   - the reference (engine.c): plain C99 loops, one multiply-accumulate at a time, defined
 *     for any C99 compiler (no right shift of a negative number);
 *   - the portable path (engine_portable.c): C99, two output rows at a time sharing each
 *     input, four inputs an iteration -- the path of a core without the DSP extension
 *     (Cortex-M0+, M3);
 *   - the DSP path (engine_dsp.c): two output rows and eight inputs an iteration with
 *     SXTB16 / SXTAB16 / SMLAD, the CMSIS-NN way. With __ARM_FEATURE_DSP (Cortex-M4, M7, M33)
 *     these are the instructions; elsewhere dsp.h emulates them in portable C, so the same
 *     code is tested on the host.
 * Threshold and step layers have one path.
 */
#ifndef MK_ENGINE_H
#define MK_ENGINE_H

#include <stdint.h>
#include <string.h>

#include "frame.h"
#include "package.h"
#include "requantize.h"

enum { MK_PATH_REFERENCE = 0, MK_PATH_PORTABLE = 1, MK_PATH_DSP = 2 };

/* The path a device runs: the DSP one where the instructions exist (a build may choose). */
#ifndef MK_ENGINE_PATH
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#define MK_ENGINE_PATH MK_PATH_DSP
#else
#define MK_ENGINE_PATH MK_PATH_PORTABLE
#endif
#endif

/* 1: mk_engine_run always takes MK_ENGINE_PATH, so that an image links only that path's
 * kernels (the test library keeps all three, 0). */
#ifndef MK_ENGINE_ONE_PATH
#define MK_ENGINE_ONE_PATH 0
#endif

/* Run model `m` on `x` (m->n_inputs values, read in place) in `arena` (m->ram_bytes, 4-byte
 * aligned) with the dense layers of `path`; returns the m->n_outputs outputs, in the arena. */
const int8_t *mk_engine_run(const mk_model *m, const int8_t *x, int8_t *arena, int path);

/* The class of outputs `y`: argmax (lowest index on ties) or the Mark I codebook rule on
 * y - zero point (export.contract.golden.decide). */
uint32_t mk_decide(const mk_model *m, const int8_t *y);

/* The cycle estimate of one inference (firmware_sim.engine.CortexM4Cost, cortex-m4-80mhz). */
uint64_t mk_cycle_estimate(const mk_model *m);
#define MK_CLOCK_HZ 80000000u

/* Layer kernels. */
void mk_dense_reference(const mk_layer *L, const int8_t *x, int8_t *y);
void mk_dense_portable(const mk_layer *L, const int8_t *x, int8_t *y);
void mk_dense_dsp(const mk_layer *L, const int8_t *x, int8_t *y);
void mk_threshold(const mk_layer *L, const int8_t *x, int8_t *y);
void mk_step(const mk_layer *L, const int8_t *x, int8_t *y);

/* The reference requantization of output channel o of a dense layer (the layer's rounding
 * mode; no right shifts of negative numbers). */
int32_t mk_requantize_layer(const mk_layer *L, int32_t acc, uint32_t o);

/* An int32 of the package (little-endian, 4-byte aligned in the image). */
static inline int32_t mk_load_i32(const uint8_t *p)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
#else
    return (int32_t)mk_le32(p);
#endif
}

/* Output channel o of a dense layer from its accumulator, as the fast paths compute it:
 * CMSIS-NN's single rounding on the 64-bit product -- shifted right (arithmetically, checked in
 * config.h) to one bit below the result, then rounded on that bit -- with the zero point added
 * and the result clamped in 64 bits (the same as saturating to int32 first: the clamp range lies
 * well inside int32). A scale below 1 (shift < -1) needs only the product's high word. */
static inline int8_t mk_dense_output(const mk_layer *L, int32_t acc, uint32_t o)
{
    const int32_t mult = mk_load_i32(L->multiplier + 4u * o);
    const int32_t shift = mk_load_i32(L->shift + 4u * o);
    int64_t v;
    if (L->rounding == MK_ROUND_SINGLE) {
        const int64_t product = (int64_t)acc * mult;
        if (shift < -1) { /* 30 - shift >= 32 */
            const int32_t high = (int32_t)(product >> 32);
            const int32_t r = (high >> (-2 - shift)) + 1;
            v = (int64_t)(r >> 1) + L->zp_out;
        } else {
            v = (((product >> (30 - shift)) + 1) >> 1) + L->zp_out;
        }
    } else {
        v = (int64_t)mk_requantize_double(acc, mult, shift) + L->zp_out;
    }
    return (int8_t)(v < L->act_min ? L->act_min : v > L->act_max ? L->act_max : v);
}

#endif
