/* The int8 weight package (.m1w, docs/PACKAGE.md), read in place from flash.
 *
 * mk_package_load makes every check of export.contract.package.decode_package, in the same
 * order, and refuses a package with the same text (PackageError's message); mk_package_peek
 * is peek_header. A loaded model points into the image: nothing is copied.
 */
#ifndef MK_PACKAGE_H
#define MK_PACKAGE_H

#include <stdint.h>

#include "config.h"
#include "text.h"

#define MK_HEADER_BYTES 80u
#define MK_LAYER_ENTRY_BYTES 32u

enum { MK_LAYER_DENSE = 1, MK_LAYER_THRESHOLD = 2, MK_LAYER_STEP = 3 };
enum { MK_HEAD_ARGMAX = 0, MK_HEAD_CODEBOOK = 1 };

typedef struct {
    uint8_t type;
    uint8_t relu;
    uint8_t rounding;       /* MK_ROUND_SINGLE or MK_ROUND_DOUBLE: the package's (header 0x3D) */
    int8_t zp_in, zp_out;
    int8_t act_min, act_max;
    uint32_t n_in, n_out;
    /* dense: weights i8 [n_out][n_in], bias i32, multiplier i32, shift i32 (little-endian) */
    const int8_t *weights;
    const uint8_t *bias, *multiplier, *shift;
    /* threshold: i16 [n_in]; step: i32 [n_out] */
    const uint8_t *threshold;
    /* step: row_ptr u32 [n_out + 1], cols u16 [nnz], values i8 [nnz] */
    const uint8_t *row_ptr, *cols;
    const int8_t *values;
    uint32_t nnz;
} mk_layer;

typedef struct {
    const uint8_t *image;
    uint32_t size;
    const uint8_t *model_id;  /* 32 bytes, in the image */
    uint8_t head;
    uint8_t n_layers;
    uint16_t n_classes;
    int8_t input_zero_point;
    uint32_t n_inputs, n_outputs, ram_bytes;
    const int8_t *codebook;   /* [n_classes][n_outputs], or 0 with the argmax head */
    mk_layer layers[MK_MAX_LAYERS];
} mk_model;

typedef struct {
    uint32_t total_size, n_inputs, n_outputs, ram_bytes;
} mk_header;

/* Check `n` bytes of package; 0 and the model in *m, or -1 and the refusal in *why.
 * `scratch` (may be 0) is RAM the check may use to find repeated class names quickly. */
int mk_package_load(mk_model *m, const uint8_t *data, uint32_t n, mk_text *why,
                    uint8_t *scratch, uint32_t scratch_bytes);

/* The first 80 bytes of a package (magic, version, header size checked): peek_header. */
int mk_package_peek(const uint8_t *data, uint32_t n, mk_header *h, mk_text *why);

/* Whether multiplier * 2^(shift - 31) encodes s_in * w / s_out (float32 bits) within 2^-28:
 * export.contract.package.scales_encoded, exactly. */
int mk_scales_encoded(int32_t multiplier, int32_t shift, uint32_t s_in, uint32_t w,
                      uint32_t s_out);

/* RAM of the two ping-pong activation buffers for these widths
 * (export.contract.package.arena_bytes; widths up to 65535, as a package's). */
uint32_t mk_arena_bytes(uint32_t n_inputs, const mk_layer *layers, unsigned n_layers);

#endif
