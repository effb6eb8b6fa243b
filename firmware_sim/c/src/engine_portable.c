/* The portable dense kernel (C99, any core): two output rows share each input, four inputs an
 * iteration. */
#include "engine.h"

void mk_dense_portable(const mk_layer *L, const int8_t *x, int8_t *y)
{
    const uint32_t n = L->n_in, quads = n / 4u;
    const int32_t offset = -L->zp_in;
    uint32_t o = 0, i, k;
    for (; o + 1u < L->n_out; o += 2u) {
        const int8_t *w0 = L->weights + o * n, *w1 = w0 + n, *in = x;
        int32_t acc0 = mk_load_i32(L->bias + 4u * o), acc1 = mk_load_i32(L->bias + 4u * o + 4u);
        for (k = quads; k; k--) {
            const int32_t x0 = in[0] + offset, x1 = in[1] + offset;
            const int32_t x2 = in[2] + offset, x3 = in[3] + offset;
            acc0 += w0[0] * x0 + w0[1] * x1 + w0[2] * x2 + w0[3] * x3;
            acc1 += w1[0] * x0 + w1[1] * x1 + w1[2] * x2 + w1[3] * x3;
            in += 4;
            w0 += 4;
            w1 += 4;
        }
        for (i = 4u * quads; i < n; i++) {
            const int32_t xi = x[i] + offset;
            acc0 += *w0++ * xi;
            acc1 += *w1++ * xi;
        }
        y[o] = mk_dense_output(L, acc0, o);
        y[o + 1u] = mk_dense_output(L, acc1, o + 1u);
    }
    if (o < L->n_out) { /* an odd last row */
        const int8_t *w0 = L->weights + o * n;
        int32_t acc0 = mk_load_i32(L->bias + 4u * o);
        for (i = 0; i < n; i++) {
            acc0 += w0[i] * (x[i] + offset);
        }
        y[o] = mk_dense_output(L, acc0, o);
    }
}
