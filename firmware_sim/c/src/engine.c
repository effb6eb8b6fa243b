#include "engine.h"

#include "frame.h"
#include "requantize.h"

static uint32_t align4(uint32_t n) { return (n + 3u) & ~3u; }

/* The reference requantization of output channel o (the layer's rounding mode). */
int32_t mk_requantize_layer(const mk_layer *L, int32_t acc, uint32_t o)
{
    int32_t mult = (int32_t)mk_le32(L->multiplier + 4u * o);
    int32_t shift = (int32_t)mk_le32(L->shift + 4u * o);
    return L->rounding == MK_ROUND_DOUBLE ? mk_requantize_double(acc, mult, shift)
                                          : mk_requantize_single(acc, mult, shift);
}

void mk_dense_reference(const mk_layer *L, const int8_t *x, int8_t *y)
{
    const uint32_t n = L->n_in;
    uint32_t o, i;
    for (o = 0; o < L->n_out; o++) {
        const int8_t *w = L->weights + o * n;
        int32_t acc = (int32_t)mk_le32(L->bias + 4u * o);
        for (i = 0; i < n; i++) { /* |acc| stays below 2^31: the loader checked the bound */
            acc += w[i] * (x[i] - L->zp_in);
        }
        y[o] = mk_clamp_output(mk_requantize_layer(L, acc, o), L->zp_out, L->act_min, L->act_max);
    }
}

const int8_t *mk_engine_run(const mk_model *m, const int8_t *x, int8_t *arena, int path)
{
    uint32_t even = m->n_inputs, i;
    const int8_t *src = x;
    int8_t *dst, *other = arena, *swap;
    void (*dense)(const mk_layer *, const int8_t *, int8_t *);
#if MK_ENGINE_ONE_PATH /* a firmware image links only the path it runs */
    (void)path;
    path = MK_ENGINE_PATH;
#endif
    dense = path == MK_PATH_DSP ? mk_dense_dsp
            : path == MK_PATH_PORTABLE ? mk_dense_portable : mk_dense_reference;
    /* the arena's first buffer holds the input and the outputs of layers 1, 3, ...; the first
     * layer reads the input where it is (it is not copied in); each layer writes the buffer
     * its input is not in */
    for (i = 1; i < m->n_layers; i += 2) {
        even = m->layers[i].n_out > even ? m->layers[i].n_out : even;
    }
    dst = arena + align4(even);
    for (i = 0; i < m->n_layers; i++) {
        const mk_layer *L = &m->layers[i];
        if (L->type == MK_LAYER_DENSE) {
            dense(L, src, dst);
        } else if (L->type == MK_LAYER_THRESHOLD) {
            mk_threshold(L, src, dst);
        } else {
            mk_step(L, src, dst);
        }
        swap = dst; /* the next layer reads what this one wrote */
        dst = other;
        other = swap;
        src = other;
    }
    return src;
}

uint32_t mk_decide(const mk_model *m, const int8_t *y)
{
    const int32_t zp = m->layers[m->n_layers - 1].zp_out;
    uint32_t best = 0, k, u;
    if (!m->codebook) {
        for (k = 1; k < m->n_outputs; k++) {
            if (y[k] > y[best]) {
                best = k;
            }
        }
        return best;
    }
    {
        int64_t best_agree = 0, best_score = 0;
        for (k = 0; k < m->n_classes; k++) {
            const int8_t *code = m->codebook + k * m->n_outputs;
            int64_t agree = 0, score = 0;
            for (u = 0; u < m->n_outputs; u++) {
                int32_t r = y[u] - zp;
                agree += (r > 0 ? 1 : -1) * code[u];
                score += (int64_t)r * code[u];
            }
            if (k == 0 || agree > best_agree || (agree == best_agree && score > best_score)) {
                best = k;
                best_agree = agree;
                best_score = score;
            }
        }
    }
    return best;
}

uint64_t mk_cycle_estimate(const mk_model *m)
{
    /* firmware_sim/engine.py, CortexM4Cost() */
    enum { INFERENCE = 229, LAYER = 0, DENSE_QUAD = 6, DENSE_TAIL = 11, DENSE_ROW = 60,
           THRESHOLD = 12, STEP_ROW = 26, STEP_CONNECTION = 7 };
    uint64_t cycles = INFERENCE;
    unsigned i;
    for (i = 0; i < m->n_layers; i++) {
        const mk_layer *L = &m->layers[i];
        cycles += LAYER;
        if (L->type == MK_LAYER_DENSE) {
            cycles += (uint64_t)L->n_out *
                      (DENSE_ROW + (L->n_in / 4u) * DENSE_QUAD + (L->n_in % 4u) * DENSE_TAIL);
        } else if (L->type == MK_LAYER_THRESHOLD) {
            cycles += (uint64_t)L->n_in * THRESHOLD;
        } else {
            cycles += (uint64_t)L->n_out * STEP_ROW + (uint64_t)L->nnz * STEP_CONNECTION;
        }
    }
    return cycles;
}
