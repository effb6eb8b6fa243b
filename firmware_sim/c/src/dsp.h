/* The DSP-extension instructions the fast path uses, as ACLE intrinsics on a part that has
 * them (__ARM_FEATURE_DSP), and as portable C with the same results everywhere else:
 *   SXTB16 x        -> halfwords (int8)x[0], (int8)x[2]
 *   SXTAB16 a, x    -> halfwords a.lo + (int8)x[0], a.hi + (int8)x[2] (each mod 2^16)
 *   SMLAD a, b, acc -> acc + a.lo * b.lo + a.hi * b.hi (mod 2^32)
 *   ROR x, 8
 * and the forms of SXTB16 / SXTAB16 that rotate their operand by 8 first (bytes 1 and 3), one
 * instruction each (ACLE has no intrinsic for them, hence the inline assembly).
 */
#ifndef MK_DSP_H
#define MK_DSP_H

#include <stdint.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the fast path loads four int8 values as one little-endian word"
#endif

/* Four int8 values as one word (an unaligned LDR on Cortex-M3/M4). */
static inline uint32_t mk_load4(const int8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#include <arm_acle.h>
#define MK_DSP_NATIVE 1
static inline uint32_t mk_sxtb16(uint32_t x) { return (uint32_t)__sxtb16((int32_t)x); }
static inline uint32_t mk_sxtab16(uint32_t a, uint32_t x)
{
    return (uint32_t)__sxtab16((int32_t)a, (int32_t)x);
}
static inline int32_t mk_smlad(uint32_t a, uint32_t b, int32_t acc)
{
    return __smlad((int32_t)a, (int32_t)b, acc);
}
static inline uint32_t mk_sxtb16_ror8(uint32_t x)
{
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
static inline uint32_t mk_sxtab16_ror8(uint32_t a, uint32_t x)
{
    uint32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(x));
    return r;
}
#else
#define MK_DSP_NATIVE 0
static inline int32_t mk_lane(uint32_t v, unsigned half) /* a signed halfword */
{
    uint32_t h = (v >> (16u * half)) & 0xFFFFu;
    return h < 0x8000u ? (int32_t)h : (int32_t)h - 0x10000;
}
static inline uint32_t mk_byte_ext(uint32_t v, unsigned byte) /* a sign-extended byte, as bits */
{
    uint32_t b = (v >> (8u * byte)) & 0xFFu;
    return b < 0x80u ? b : b | 0xFF00u;
}
static inline uint32_t mk_sxtb16(uint32_t x) { return mk_byte_ext(x, 0) | mk_byte_ext(x, 2) << 16; }
static inline uint32_t mk_sxtab16(uint32_t a, uint32_t x)
{
    uint32_t lo = (a + mk_byte_ext(x, 0)) & 0xFFFFu;
    uint32_t hi = ((a >> 16) + mk_byte_ext(x, 2)) & 0xFFFFu;
    return lo | hi << 16;
}
static inline int32_t mk_smlad(uint32_t a, uint32_t b, int32_t acc)
{
    uint32_t sum = (uint32_t)acc + (uint32_t)(mk_lane(a, 0) * mk_lane(b, 0)) +
                   (uint32_t)(mk_lane(a, 1) * mk_lane(b, 1));
    return sum <= 0x7FFFFFFFu ? (int32_t)sum : -(int32_t)(~sum) - 1;
}
#endif

/* ROR #8 (compilers emit the one instruction for this form) */
static inline uint32_t mk_ror8(uint32_t x) { return x >> 8 | x << 24; }

#if !MK_DSP_NATIVE
static inline uint32_t mk_sxtb16_ror8(uint32_t x) { return mk_sxtb16(mk_ror8(x)); }
static inline uint32_t mk_sxtab16_ror8(uint32_t a, uint32_t x)
{
    return mk_sxtab16(a, mk_ror8(x));
}
#endif

#endif
