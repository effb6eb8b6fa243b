/* Requantization: an int32 accumulator times a Q31 multiplier and a power of two, rounded to
 * int32 (docs/PACKAGE.md, "Arithmetic"). Two rounding modes:
 *
 *   single (the package format today; export/contract/golden.py): n = 31 - shift,
 *       v = floor((acc * multiplier + 2^(n-1)) / 2^n), saturated to int32 -- the exact 64-bit
 *       product rounded once, ties toward +infinity (TFLite with TFLITE_SINGLE_ROUNDING,
 *       CMSIS-NN with CMSIS_NN_USE_SINGLE_ROUNDING);
 *   double (TFLite Micro's reference kernels, gemmlowp): acc shifted left by max(shift, 0)
 *       (wrapping), SaturatingRoundingDoublingHighMul by the multiplier, then
 *       RoundingDivideByPOT by max(-shift, 0).
 *
 * The package records its mode (format version 2's `rounding` byte; version 1 rounds once);
 * the loader sets every layer's `rounding` field from it, which selects the function. Both are
 * written without right shifts of negative numbers.
 */
#ifndef MK_REQUANTIZE_H
#define MK_REQUANTIZE_H

#include <stdint.h>

enum { MK_ROUND_SINGLE = 0, MK_ROUND_DOUBLE = 1 };

/* acc * multiplier * 2^(shift - 31), rounded once; shift in [-31, 30], multiplier in [0, 2^31). */
int32_t mk_requantize_single(int32_t acc, int32_t multiplier, int32_t shift);
/* The same with TFLite's two roundings. */
int32_t mk_requantize_double(int32_t acc, int32_t multiplier, int32_t shift);
/* gemmlowp's SaturatingRoundingDoublingHighMul and RoundingDivideByPOT (exponent 0..31). */
int32_t mk_saturating_rounding_doubling_high_mul(int32_t a, int32_t b);
int32_t mk_rounding_divide_by_pot(int32_t x, int exponent);

/* An int8 output: the scaled accumulator plus the zero point, clamped to [lo, hi]. */
static inline int8_t mk_clamp_output(int32_t v, int32_t zero_point, int32_t lo, int32_t hi)
{
    int64_t y = (int64_t)v + zero_point;
    return (int8_t)(y < lo ? lo : y > hi ? hi : y);
}

#endif
