/* The DSP dense kernel, CMSIS-NN's way (arm_nn_vec_mat_mult_t_s8): several output rows share
 * each load of the inputs. Four int8 inputs (one word) are widened to two halfword pairs with
 * the input offset added -- SXTAB16 for bytes 0 and 2, SXTAB16 ROR #8 for bytes 1 and 3 -- and
 * four weights of a row the same way without the offset (SXTB16); SMLAD then multiplies and
 * accumulates two pairs in one instruction.
 *
 * Four rows at a time, eight inputs an iteration (an odd group of four enters the loop halfway,
 * so that the loop's code is not repeated for it): per 32 multiply-accumulates, 2 input loads
 * and 4 SXTAB16, 8 weight loads, 16 SXTB16 and 16 SMLAD, and the loop's compare and branch --
 * 48 instructions, 1.5 per MAC. Rows left over go two at a time (1.75 per MAC), then one.
 * On a part with the DSP extension the inner loops are written in assembly (the compiler runs
 * out of registers and adds pointer updates it need not); elsewhere the same steps run in C on
 * dsp.h's emulation, which is what the host tests. */
#include "dsp.h"
#include "engine.h"

/* acc + weights . (inputs + offset) for four of each: one word of weights, the inputs widened. */
static inline int32_t quad(int32_t acc, uint32_t w, uint32_t x_even, uint32_t x_odd)
{
    acc = mk_smlad(mk_sxtb16(w), x_even, acc);
    return mk_smlad(mk_sxtb16_ror8(w), x_odd, acc);
}

#if MK_DSP_NATIVE && defined(__GNUC__)
/* One group of four inputs for four rows: rows 0 and 1 at [w0] and [w0 + n], rows 2 and 3 at
 * [w2] and [w2 + n]; the pointers advance by 4. */
#define FOUR_ROWS_QUAD                                                                         \
    "   ldr %[xo], [%[in]], #4\n"                                                             \
    "   sxtab16 %[xe], %[off], %[xo]\n"                                                       \
    "   sxtab16 %[xo], %[off], %[xo], ror #8\n"                                               \
    "   ldr %[w], [%[w0], %[n]]\n"                                                            \
    "   sxtb16 %[t], %[w]\n"                                                                  \
    "   smlad %[a1], %[t], %[xe], %[a1]\n"                                                    \
    "   sxtb16 %[w], %[w], ror #8\n"                                                          \
    "   smlad %[a1], %[w], %[xo], %[a1]\n"                                                    \
    "   ldr %[w], [%[w0]], #4\n"                                                              \
    "   sxtb16 %[t], %[w]\n"                                                                  \
    "   smlad %[a0], %[t], %[xe], %[a0]\n"                                                    \
    "   sxtb16 %[w], %[w], ror #8\n"                                                          \
    "   smlad %[a0], %[w], %[xo], %[a0]\n"                                                    \
    "   ldr %[w], [%[w2], %[n]]\n"                                                            \
    "   sxtb16 %[t], %[w]\n"                                                                  \
    "   smlad %[a3], %[t], %[xe], %[a3]\n"                                                    \
    "   sxtb16 %[w], %[w], ror #8\n"                                                          \
    "   smlad %[a3], %[w], %[xo], %[a3]\n"                                                    \
    "   ldr %[w], [%[w2]], #4\n"                                                              \
    "   sxtb16 %[t], %[w]\n"                                                                  \
    "   smlad %[a2], %[t], %[xe], %[a2]\n"                                                    \
    "   sxtb16 %[w], %[w], ror #8\n"                                                          \
    "   smlad %[a2], %[w], %[xo], %[a2]\n"
#endif

/* Four rows (weights at w0, w0 + n, w0 + 2n, w0 + 3n) over the first `words` groups of four
 * inputs; the pointers end past them. */
static inline void four_rows(int32_t acc[4], const int8_t **in, const int8_t **w0, uint32_t n,
                             uint32_t words, uint32_t offset2)
{
    const int8_t *w2 = *w0 + 2u * n;
#if MK_DSP_NATIVE && defined(__GNUC__)
    const int8_t *end = *in + 4u * words;
    uint32_t xe, xo, w, t;
    /* two groups an iteration; an odd number of groups enters at the second */
    __asm__ volatile("   subs %[t], %[end], %[in]\n"
                     "   beq 3f\n"
                     "   tst %[t], #4\n"
                     "   bne 2f\n"
                     "1:\n" FOUR_ROWS_QUAD
                     "2:\n" FOUR_ROWS_QUAD
                     "   cmp %[in], %[end]\n"
                     "   bne 1b\n"
                     "3:\n"
                     : [a0] "+r"(acc[0]), [a1] "+r"(acc[1]), [a2] "+r"(acc[2]),
                       [a3] "+r"(acc[3]), [in] "+r"(*in), [w0] "+r"(*w0), [w2] "+r"(w2),
                       [xe] "=&r"(xe), [xo] "=&r"(xo), [w] "=&r"(w), [t] "=&r"(t)
                     : [off] "r"(offset2), [n] "r"(n), [end] "r"(end)
                     : "cc", "memory");
#else
    uint32_t k;
    for (k = words; k; k--) {
        const uint32_t xv = mk_load4(*in);
        const uint32_t x_even = mk_sxtab16(offset2, xv), x_odd = mk_sxtab16_ror8(offset2, xv);
        acc[1] = quad(acc[1], mk_load4(*w0 + n), x_even, x_odd);
        acc[0] = quad(acc[0], mk_load4(*w0), x_even, x_odd);
        acc[3] = quad(acc[3], mk_load4(w2 + n), x_even, x_odd);
        acc[2] = quad(acc[2], mk_load4(w2), x_even, x_odd);
        *in += 4;
        *w0 += 4;
        w2 += 4;
    }
#endif
}

/* Two rows (weights at w0 and w0 + n) over `words` groups of four inputs. */
static inline void two_rows(int32_t acc[2], const int8_t **in, const int8_t **w0, uint32_t n,
                            uint32_t words, uint32_t offset2)
{
    uint32_t k;
    for (k = words; k; k--) {
        const uint32_t xv = mk_load4(*in);
        const uint32_t x_even = mk_sxtab16(offset2, xv), x_odd = mk_sxtab16_ror8(offset2, xv);
        acc[0] = quad(acc[0], mk_load4(*w0), x_even, x_odd);
        acc[1] = quad(acc[1], mk_load4(*w0 + n), x_even, x_odd);
        *in += 4;
        *w0 += 4;
    }
}

void mk_dense_dsp(const mk_layer *L, const int8_t *x, int8_t *y)
{
    const uint32_t n = L->n_in, words = n / 4u;
    const int32_t offset = -L->zp_in;
    const uint32_t offset2 = ((uint32_t)offset & 0xFFFFu) * 0x10001u; /* in both halves */
    uint32_t o = 0, r, i;
    for (; o + 4u <= L->n_out; o += 4u) {
        const int8_t *w0 = L->weights + o * n, *in = x;
        int32_t acc[4];
        for (r = 0; r < 4u; r++) {
            acc[r] = mk_load_i32(L->bias + 4u * (o + r));
        }
        four_rows(acc, &in, &w0, n, words, offset2);
        for (i = 4u * words; i < n; i++, w0++) { /* the last n mod 4 inputs */
            const int32_t xi = x[i] + offset;
            for (r = 0; r < 4u; r++) {
                acc[r] += w0[r * n] * xi;
            }
        }
        for (r = 0; r < 4u; r++) {
            y[o + r] = mk_dense_output(L, acc[r], o + r);
        }
    }
    for (; o + 2u <= L->n_out; o += 2u) {
        const int8_t *w0 = L->weights + o * n, *in = x;
        int32_t acc[2];
        acc[0] = mk_load_i32(L->bias + 4u * o);
        acc[1] = mk_load_i32(L->bias + 4u * o + 4u);
        two_rows(acc, &in, &w0, n, words, offset2);
        for (i = 4u * words; i < n; i++, w0++) {
            const int32_t xi = x[i] + offset;
            acc[0] += w0[0] * xi;
            acc[1] += w0[n] * xi;
        }
        y[o] = mk_dense_output(L, acc[0], o);
        y[o + 1u] = mk_dense_output(L, acc[1], o + 1u);
    }
    if (o < L->n_out) { /* an odd last row */
        const int8_t *w0 = L->weights + o * n;
        int32_t acc0 = mk_load_i32(L->bias + 4u * o);
        for (i = 0; i + 4u <= n; i += 4u) {
            const uint32_t xv = mk_load4(x + i);
            acc0 = quad(acc0, mk_load4(w0 + i), mk_sxtab16(offset2, xv),
                        mk_sxtab16_ror8(offset2, xv));
        }
        for (; i < n; i++) {
            acc0 += w0[i] * (x[i] + offset);
        }
        y[o] = mk_dense_output(L, acc0, o);
    }
}
