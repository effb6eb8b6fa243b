/* The Mark I's layers: threshold (the A-units' thresholds on the S-units) and step (the
 * R-units' sparse weighted sums), apart from engine.c so that they are compiled for speed. */
#include "engine.h"

#include "frame.h"

void mk_threshold(const mk_layer *L, const int8_t *x, int8_t *y)
{
    uint32_t i;
    for (i = 0; i < L->n_in; i++) {
        y[i] = (int8_t)(x[i] >= (int16_t)mk_le16(L->threshold + 2u * i));
    }
}

void mk_step(const mk_layer *L, const int8_t *x, int8_t *y)
{
    uint32_t j, k = mk_le32(L->row_ptr);
    for (j = 0; j < L->n_out; j++) {
        const uint32_t end = mk_le32(L->row_ptr + 4u * (j + 1u));
        int32_t acc = 0;
        for (; k < end; k++) {
            acc += L->values[k] * (x[mk_le16(L->cols + 2u * k)] - L->zp_in);
        }
        y[j] = (int8_t)(acc >= (int32_t)mk_le32(L->threshold + 4u * j));
    }
}
