#include "requantize.h"

/* The int32 with the bits of u (no implementation-defined conversion). */
static int32_t from_bits(uint32_t u)
{
    return u <= 0x7FFFFFFFu ? (int32_t)u : -(int32_t)(~u) - 1;
}

static int32_t saturate(int64_t v)
{
    return v > INT32_MAX ? INT32_MAX : v < INT32_MIN ? INT32_MIN : (int32_t)v;
}

int32_t mk_requantize_single(int32_t acc, int32_t multiplier, int32_t shift)
{
    const unsigned n = (unsigned)(31 - shift); /* 1 .. 62 */
    const int64_t product = (int64_t)acc * multiplier; /* |product| < 2^62 */
    /* floor((product + 2^(n-1)) / 2^n) on the product offset by 2^63 (then never negative):
     * 2^63 is a multiple of 2^n, so the offset comes out again as 2^(63-n). */
    const uint64_t biased = (uint64_t)product + (UINT64_C(1) << 63) + (UINT64_C(1) << (n - 1u));
    return saturate((int64_t)(biased >> n) - (int64_t)(UINT64_C(1) << (63u - n)));
}

int32_t mk_saturating_rounding_doubling_high_mul(int32_t a, int32_t b)
{
    int64_t ab, nudged;
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    ab = (int64_t)a * b;
    nudged = ab + (ab >= 0 ? (INT64_C(1) << 30) : 1 - (INT64_C(1) << 30));
    return (int32_t)(nudged / (INT64_C(1) << 31)); /* C division truncates toward zero */
}

int32_t mk_rounding_divide_by_pot(int32_t x, int exponent)
{
    const uint32_t mask = (uint32_t)((UINT64_C(1) << exponent) - 1u);
    const uint32_t remainder = (uint32_t)x & mask;
    const uint32_t threshold = (mask >> 1) + (x < 0 ? 1u : 0u);
    /* floor(x / 2^exponent), as an arithmetic shift would give, from x offset by 2^31 */
    const uint32_t biased = (uint32_t)x + 0x80000000u;
    const int64_t floor_div =
        (int64_t)(biased >> exponent) - (int64_t)(UINT64_C(1) << (31 - exponent));
    return (int32_t)(floor_div + (remainder > threshold ? 1 : 0));
}

int32_t mk_requantize_double(int32_t acc, int32_t multiplier, int32_t shift)
{
    const int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    const int32_t shifted = from_bits((uint32_t)acc << left); /* wraps, as TFLite's x * 2^left */
    const int32_t high = mk_saturating_rounding_doubling_high_mul(shifted, multiplier);
    return mk_rounding_divide_by_pot(high, right);
}
