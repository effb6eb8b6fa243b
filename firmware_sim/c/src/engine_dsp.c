/* The fast dense kernel: two output rows share each load of four inputs; inputs and weights
 * are widened to halfword pairs with SXTAB16 / SXTB16 (even bytes, then odd bytes rotated
 * into place) and multiplied-accumulated two at a time with SMLAD, as CMSIS-NN's
 * arm_nn_vec_mat_mult_t_s8. The requantization is CMSIS-NN's single-rounding form on the
 * 64-bit product (arithmetic shifts, checked in config.h). */
#include "dsp.h"
#include "engine.h"
#include "frame.h"
#include "requantize.h"

int32_t mk_requantize_layer(const mk_layer *L, int32_t acc, uint32_t o);

static int8_t output(const mk_layer *L, int32_t acc, uint32_t o)
{
    int32_t v;
    if (L->rounding == MK_ROUND_SINGLE) {
        const int32_t mult = (int32_t)mk_le32(L->multiplier + 4u * o);
        const int32_t shift = (int32_t)mk_le32(L->shift + 4u * o);
        int64_t p = ((int64_t)acc * mult) >> (30 - shift); /* one bit below the result kept */
        p = (p + 1) >> 1;                                   /* ... and rounded on it */
        v = p > INT32_MAX ? INT32_MAX : p < INT32_MIN ? INT32_MIN : (int32_t)p;
    } else {
        v = mk_requantize_layer(L, acc, o);
    }
    return mk_clamp_output(v, L->zp_out, L->act_min, L->act_max);
}

void mk_dense_fast(const mk_layer *L, const int8_t *x, int8_t *y)
{
    const uint32_t n = L->n_in, quads = n & ~3u;
    const int32_t offset = -L->zp_in;
    const uint32_t offset2 = ((uint32_t)offset & 0xFFFFu) * 0x10001u; /* in both halfwords */
    uint32_t o = 0, i;
    for (; o + 1u < L->n_out; o += 2u) {
        const int8_t *w0 = L->weights + o * n, *w1 = w0 + n;
        int32_t acc0 = (int32_t)mk_le32(L->bias + 4u * o);
        int32_t acc1 = (int32_t)mk_le32(L->bias + 4u * (o + 1u));
        for (i = 0; i < quads; i += 4u) {
            const uint32_t xv = mk_load4(x + i);
            const uint32_t x_even = mk_sxtab16(offset2, xv);
            const uint32_t x_odd = mk_sxtab16(offset2, mk_ror8(xv));
            const uint32_t a = mk_load4(w0 + i), b = mk_load4(w1 + i);
            acc0 = mk_smlad(mk_sxtb16(a), x_even, acc0);
            acc0 = mk_smlad(mk_sxtb16(mk_ror8(a)), x_odd, acc0);
            acc1 = mk_smlad(mk_sxtb16(b), x_even, acc1);
            acc1 = mk_smlad(mk_sxtb16(mk_ror8(b)), x_odd, acc1);
        }
        for (; i < n; i++) {
            const int32_t xi = x[i] + offset;
            acc0 += w0[i] * xi;
            acc1 += w1[i] * xi;
        }
        y[o] = output(L, acc0, o);
        y[o + 1u] = output(L, acc1, o + 1u);
    }
    if (o < L->n_out) { /* an odd last row */
        const int8_t *w0 = L->weights + o * n;
        int32_t acc0 = (int32_t)mk_le32(L->bias + 4u * o);
        for (i = 0; i < quads; i += 4u) {
            const uint32_t xv = mk_load4(x + i), a = mk_load4(w0 + i);
            acc0 = mk_smlad(mk_sxtb16(a), mk_sxtab16(offset2, xv), acc0);
            acc0 = mk_smlad(mk_sxtb16(mk_ror8(a)), mk_sxtab16(offset2, mk_ror8(xv)), acc0);
        }
        for (; i < n; i++) {
            acc0 += w0[i] * (x[i] + offset);
        }
        y[o] = output(L, acc0, o);
    }
}
