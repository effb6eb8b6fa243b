/* The package loader: the checks and the words of export/contract/package.py, in its
 * order.
 *
 * Each refusal is a text of the catalog (texts.def) with the values its Python f-string
 * names; tests/test_firmware_package.py feeds both the same mutated packages and compares the
 * texts. A refusal about one layer starts with "layer N" (where), written once by the shared
 * checks. The fixed fields of the header and of a layer entry are checked from two tables, one
 * row per rule of docs/PACKAGE.md; the arrays of a layer are read by one reader and their
 * value ranges checked by one function. Scales are float32 values: the loader keeps their bits
 * and does no floating-point arithmetic (the firmware needs no floating-point unit or
 * library).
 */
#include "package.h"
#include "requantize.h"

#include <stddef.h>
#include <string.h>

#include "crc32.h"
#include "frame.h"
#include "sha256.h"

#define INT32_MAX_ 2147483647
#define HASHED_FROM 0x2Cu
#define CRC_BYTES 4u
#define DIM_MAX 65535u
#define ONE 0x3F800000u /* 1.0f */

/* a text id is kept in a byte in the tables below */
typedef char mk_text_ids_fit_a_byte[MK_TEXT_COUNT <= 256 ? 1 : -1];

static uint32_t align4(uint32_t n) { return (n + 3u) & ~3u; }

/* the little-endian unsigned integer of `width` bytes (1 .. 4) at p */
static uint32_t field(const uint8_t *p, unsigned width)
{
    uint32_t v = 0;
    while (width--) {
        v = v << 8 | p[width];
    }
    return v;
}

/* "layer 3" before what a check names, or nothing for a field of the package itself (-1) */
static void where(mk_text *t, int layer)
{
    if (layer >= 0) {
        mk_text_format(t, T_LAYER, (uint32_t)layer);
    }
}

/* ------------------------------------------------------------------ fixed fields */

/* One rule of docs/PACKAGE.md on a fixed field: the field (offset, bytes) must lie in
 * [lo, hi], or the refusal `text` names its value and `extra` (the format version for the
 * header, the layer type for a layer entry), or its bytes in hex (HEX) */
typedef struct {
    uint8_t at, width, text, how;
    uint16_t lo, hi;
} rule;

enum {
    PLAIN,
    HEX,          /* the text names the field's bytes in hex */
    VERSION_1,    /* HEX, checked in format version 1 only */
    DENSE_FLAGS   /* hi is 1 for a dense layer, else 0 */
};

static const rule header_rules[] = {
    /* _unpack_header (peek_header too) */
    {0x04, 2, T_PACKAGE_FORMAT_VERSION_NOT, PLAIN, 1, 2},      /* format_version: 1 or 2 */
    {0x06, 2, T_HEADER_SIZE_FORMAT_VERSION, PLAIN, 80, 80},    /* header_size: 80 */
#define HEADER_PEEKED 2u
    /* decode_package, after the size, the CRC and the model id */
    {0x3D, 3, T_HEADER_RESERVED_BYTES_ZERO, VERSION_1, 0, 0},  /* version 1: 0x3D .. 0x3F zero */
    {0x3D, 1, T_ROUNDING_CODE_UNKNOWN_0, PLAIN, 0, 1},         /* rounding: 0 single, 1 double */
    {0x3E, 2, T_HEADER_RESERVED_BYTES_ZERO, HEX, 0, 0},        /* reserved: zero */
    {0x2C, 1, T_SOURCE_CODE_UNKNOWN_0, PLAIN, 0, 1},           /* source: 0 mlp, 1 Mark I */
    {0x2D, 1, T_HEAD_CODE_UNKNOWN_0, PLAIN, 0, 1},             /* head: 0 argmax, 1 codebook */
    {0x2E, 1, T_LAYERS_ALLOWED_1_16, PLAIN, 1, MK_MAX_LAYERS}, /* n_layers: 1 .. 16 */
};

static const rule entry_rules[] = { /* _decode_layer: a layer table entry */
    {22, 2, T_RESERVED_FIELD_0, PLAIN, 0, 0},           /* reserved: 0 */
    {0, 1, T_LAYER_TYPE_UNKNOWN, PLAIN, 1, 3},          /* type: 1 dense, 2 threshold, 3 step */
    {1, 1, T_FLAGS_0X_NOT, DENSE_FLAGS, 0, 1},          /* flags: bit 0 (ReLU), dense only */
    {4, 4, T_N_IN_WHOLE_NUMBER, PLAIN, 1, DIM_MAX},     /* n_in: 1 .. 65535 */
    {8, 4, T_N_OUT_WHOLE_NUMBER, PLAIN, 1, DIM_MAX},    /* n_out: 1 .. 65535 */
};

static int check_fields(mk_text *t, const uint8_t *base, const rule *r, const rule *end,
                        int layer, uint32_t extra)
{
    for (; r < end; r++) {
        const uint32_t value = field(base + r->at, r->width);
        const uint32_t hi = r->how == DENSE_FLAGS ? extra == MK_LAYER_DENSE : r->hi;
        if ((r->how == VERSION_1 && extra != 1u) || (value >= r->lo && value <= hi)) {
            continue;
        }
        where(t, layer);
        return r->how == HEX || r->how == VERSION_1
                   ? mk_text_refuse(t, r->text, base + r->at, (uint32_t)r->width)
                   : mk_text_refuse(t, r->text, value, extra);
    }
    return 0;
}

/* _check_scale: f"{what} is {kind}: must be a positive finite float32" */
static int check_scale(mk_text *t, uint32_t bits, int layer, mk_text_id what)
{
    const uint32_t magnitude = bits & 0x7FFFFFFFu;
    if (bits >= 1u && bits < 0x7F800000u) {
        return 0;
    }
    where(t, layer);
    return mk_text_refuse(t, T_POSITIVE_FINITE_FLOAT32, what,
                          magnitude > 0x7F800000u    ? T_NAN
                          : magnitude == 0x7F800000u ? T_INFINITE
                          : magnitude == 0           ? T_ZERO
                                                     : T_NEGATIVE);
}

/* ------------------------------------------------------------------ header */

static int unpack_header(const uint8_t *data, uint32_t n, mk_text *t)
{
    static const uint8_t magic[4] = {'M', '1', 'W', 'P'};
    uint32_t head = n < 4u ? n : 4u;
    if (memcmp(data, magic, head) != 0) { /* short or not, another kind of file says so first */
        return mk_text_refuse(t, T_NOT_WEIGHT_PACKAGE_MAGIC, data, head);
    }
    if (n < MK_HEADER_BYTES) {
        return mk_text_refuse(t, T_PACKAGE_TRUNCATED_BYTES_HEADER, n);
    }
    return check_fields(t, data, header_rules, header_rules + HEADER_PEEKED, -1,
                        mk_le16(data + 4));
}

int mk_package_peek(const uint8_t *data, uint32_t n, mk_header *h, mk_text *why)
{
    if (unpack_header(data, n > MK_HEADER_BYTES ? MK_HEADER_BYTES : n, why)) {
        return -1;
    }
    h->total_size = mk_le32(data + 8);
    h->n_inputs = mk_le32(data + 0x40);
    h->n_outputs = mk_le32(data + 0x44);
    h->ram_bytes = mk_le32(data + 0x48);
    return 0;
}

/* ------------------------------------------------------------------ class names */

/* Python's UTF-8 decoder: MK_TEXT_COUNT if valid, else the reason it gives for the first
 * error (a text) */
static mk_text_id utf8_problem(const uint8_t *s, uint32_t n)
{
    unsigned more = 0, lo = 0, hi = 0; /* continuation bytes still due, the next one's range */
    uint32_t i;
    for (i = 0; i < n; i++) {
        const unsigned c = s[i];
        if (more) {
            if (c < lo || c > hi) {
                return T_INVALID_CONTINUATION_BYTE;
            }
            more--;
            lo = 0x80u;
            hi = 0xBFu;
        } else if (c >= 0x80u) {
            if (c < 0xC2u || c > 0xF4u) {
                return T_INVALID_START_BYTE;
            }
            more = 1u + (c >= 0xE0u) + (c >= 0xF0u);
            lo = c == 0xE0u ? 0xA0u : c == 0xF0u ? 0x90u : 0x80u;
            hi = c == 0xEDu ? 0x9Fu : c == 0xF4u ? 0x8Fu : 0xBFu;
        }
    }
    return more ? T_UNEXPECTED_END_OF_DATA : MK_TEXT_COUNT;
}

/* _decode_names over data[:limit]: the payload start in *end, or -1 */
static int decode_names(const uint8_t *data, uint32_t limit, uint32_t start, uint32_t count,
                        uint32_t *end, mk_text *t)
{
    uint32_t pos = start, k, stop;
    for (k = 0; k < count; k++) {
        uint32_t len;
        mk_text_id problem;
        if (pos >= limit) {
            return mk_text_refuse(t, T_CLASS_NAME_RUNS_PAST, k);
        }
        len = data[pos];
        if (pos + 1u + len > limit) {
            return mk_text_refuse(t, T_CLASS_NAME_BYTES_RUNS, k, len);
        }
        if ((problem = utf8_problem(data + pos + 1, len)) != MK_TEXT_COUNT) {
            return mk_text_refuse(t, T_CLASS_NAME_NOT_VALID, k, problem);
        }
        pos += 1u + len;
    }
    *end = start + align4(pos - start);
    for (stop = *end < limit ? *end : limit; pos < stop; pos++) {
        if (data[pos]) {
            return mk_text_refuse(t, T_PADDING_AFTER_CLASS_NAMES);
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ layers */

/* _Reader: one layer's data (layer -1: the codebook), its arrays taken in turn */
typedef struct {
    const uint8_t *blob;
    uint32_t size, pos;
    int layer;
} reader;

static void reader_where(mk_text *t, const reader *r)
{
    if (r->layer < 0) {
        mk_text_format(t, T_CODEBOOK);
    }
    where(t, r->layer);
}

/* _Reader.take: the next array of `count` items of `itemsize` bytes and its zero padding */
static const uint8_t *take(reader *r, unsigned itemsize, uint32_t count, mk_text *t)
{
    const uint32_t room = r->size - r->pos; /* (a layer's data is below 2^32 - 80 bytes) */
    const uint32_t n = count * itemsize, end = r->pos + align4(n);
    const uint8_t *p = r->blob + r->pos;
    mk_text_id why = T_DATA_SIZE_TOO_SMALL;
    uint32_t i;
    if (count <= room / itemsize && align4(n) <= room) { /* pos + align4(n) <= size */
        for (i = r->pos + n; i < end && !r->blob[i]; i++) {
        }
        if (i == end) {
            r->pos = end;
            return p;
        }
        why = T_PADDING_BYTES_AFTER_ARRAY;
    }
    reader_where(t, r);
    mk_text_format(t, why, r->size);
    return 0;
}

/* _Reader.done */
static int reader_done(reader *r, mk_text *t)
{
    if (r->pos == r->size) {
        return 0;
    }
    reader_where(t, r);
    return mk_text_refuse(t, T_DATA_SIZE_ITS_ARRAYS, r->size, r->pos);
}

/* The arrays of each layer type, in their order (_decode_layer's takes): the kind of their
 * items (below), how many (M .. NNZ), the mk_layer field that points at them (NONE: none),
 * and the value range that _check_dense, _check_threshold or _check_step checks with
 * _check_ints (what: the array's name; 0: no range check) */
enum { M, N, M_N, M_1, NNZ }; /* n_out, n_in, n_out * n_in, n_out + 1, row_ptr[n_out] */
enum { I8 = 1, I16 = 2, I32 = 4, U16 = 2 | 8 }; /* an item: its bytes, and 8 if unsigned */
enum { NONE = 0xFF, HI_INT32 = -1, HI_LAST_INPUT = -2 }; /* hi: INT32_MAX, n_in - 1 */
typedef struct {
    uint8_t kind, count, field, what;
    int16_t lo, hi;
} array_rule;

#define AT(f) offsetof(mk_layer, f)
static const array_rule layer_arrays[] = {
    /* dense (from 0) */
    {I8, M_N, AT(weights), T_LAYER_WEIGHTS, -127, 127},          /* weights: [-127, 127] */
    {I32, M, AT(bias), 0, 0, 0},                                 /* bias */
    {I32, M, AT(multiplier), T_LAYER_MULTIPLIER, 0, HI_INT32},   /* multiplier: >= 0 */
    {I32, M, AT(shift), T_LAYER_SHIFT, -31, 30},                 /* shift: [-31, 30] */
    {I32, M, NONE, 0, 0, 0},                                     /* weight_scale (after shift) */
    /* threshold (from 5) */
    {I16, N, AT(threshold), T_LAYER_THRESHOLD, -128, 128},       /* threshold: [-128, 128] */
    /* step (from 6) */
    {I32, M_1, AT(row_ptr), 0, 0, 0},                     /* row_ptr: checked on its own first */
    {I32, M, AT(threshold), 0, 0, 0},                            /* threshold */
    {U16, NNZ, AT(cols), T_LAYER_COLS, 0, HI_LAST_INPUT},        /* cols: [0, n_in - 1] */
    {I8, NNZ, AT(values), T_LAYER_VALUES, -127, 127},            /* values: [-127, 127] */
};
#undef AT
/* the codebook (n_classes * n_outputs items; _check_classes): -1 or 1, [-1, 1] checked first */
static const array_rule codebook_items = {I8, M_N, NONE, T_CODEBOOK, -1, 1};
/* where the arrays of layer type k start in layer_arrays, and (k + 1) where they end */
static const uint8_t arrays_from[4] = {0, 5, 6, 10};

/* the number of items of an array of layer L (NNZ: once its row_ptr is read) */
static uint32_t items_of(const array_rule *a, const mk_layer *L)
{
    const uint32_t m = L->n_out, n = L->n_in;
    return a->count == M     ? m
           : a->count == N   ? n
           : a->count == M_N ? m * n
           : a->count == M_1 ? m + 1u
                             : mk_le32(L->row_ptr + 4u * m);
}

/* _decode_layer: the table entry and the arrays of layer i */
static int decode_layer(mk_layer *L, const uint8_t *entry, const uint8_t *blob, uint32_t size,
                        uint32_t i, uint32_t *s_in, uint32_t *s_out, mk_text *t)
{
    const uint32_t code = entry[0], n = mk_le32(entry + 4), m = mk_le32(entry + 8);
    int8_t want_min = 0, want_max = 1, want_zp = 0; /* threshold and step */
    const array_rule *a;
    reader r;
    r.blob = blob;
    r.size = size;
    r.pos = 0;
    r.layer = (int)i;
    if (check_fields(t, entry, entry_rules, entry_rules + sizeof entry_rules / sizeof *entry_rules,
                     (int)i, code)) {
        return -1;
    }
    if (code == MK_LAYER_THRESHOLD && m != n) {
        return mk_text_refuse(t, T_LAYER_THRESHOLD_LAYER_HAS, i, n, m);
    }
    L->type = (uint8_t)code;
    L->n_in = n;
    L->n_out = m;
    for (a = layer_arrays + arrays_from[code - 1u]; a < layer_arrays + arrays_from[code]; a++) {
        const uint8_t *array = take(&r, a->kind & 7u, items_of(a, L), t);
        if (!array) {
            return -1;
        }
        if (a->field != NONE) {
            memcpy((uint8_t *)L + a->field, &array, sizeof array);
        }
    }
    L->relu = entry[1];
    L->zp_in = (int8_t)entry[2];
    L->zp_out = (int8_t)entry[3];
    *s_in = mk_le32(entry + 12);
    *s_out = mk_le32(entry + 16);
    L->act_min = (int8_t)entry[20];
    L->act_max = (int8_t)entry[21];
    if (code == MK_LAYER_STEP) {
        L->nnz = mk_le32(L->row_ptr + 4u * m);
    }
    if (reader_done(&r, t)) {
        return -1;
    }
    if (code == MK_LAYER_DENSE) {
        if ((*s_out & 0x7FFFFFFFu) > 0x7F800000u) { /* scales are checked later; here NaN */
            return mk_text_refuse(t, T_LAYER_OUTPUT_SCALE_NAN, i);
        }
        want_zp = L->zp_out;
        want_min = L->relu ? L->zp_out : -128;
        want_max = 127;
    } else if (*s_out != ONE) {
        return mk_text_refuse(t, T_LAYER_OUTPUT_SCALE_THRESHOLD, i);
    }
    if (L->zp_out != want_zp || L->act_min != want_min || L->act_max != want_max) {
        return mk_text_refuse(t, T_LAYER_OUTPUT_QUANTIZATION_ZERO,
                              i, (int32_t)L->zp_out, (int32_t)L->act_min, (int32_t)L->act_max);
    }
    return 0;
}

/* ------------------------------------------------------------------ value checks */

/* A positive finite float32 as m * 2^e (m < 2^24). */
static void decompose(uint32_t bits, uint64_t *m, int *e)
{
    const uint32_t exponent = bits >> 23 & 0xFFu, fraction = bits & 0x7FFFFFu;
    *m = exponent ? fraction | 0x800000u : fraction;
    *e = exponent ? (int)exponent - 150 : -149;
}

static int bit_length(uint64_t v)
{
    return v ? 64 - __builtin_clzll(v) : 0;
}

/* x * 2^e and y on one scale, if their bit lengths differ by at most one (then neither
 * exceeds 64 bits here): 0; else the difference, x * 2^e's minus y's */
static int same_scale(uint64_t *x, uint64_t *y, int e)
{
    const int diff = bit_length(*x) + e - bit_length(*y);
    if (diff > 1 || diff < -1) {
        return diff;
    }
    if (e >= 0) {
        *x <<= e;
    } else {
        *y <<= -e;
    }
    return 0;
}

/* export.contract.package.scales_encoded, in integers: with r = s_in * w / s_out = (Y / c) *
 * 2^er (Y = a * b from the float32 mantissas), multiplier * 2^(shift - 31) is r within
 * 2^-28 * r iff |X * 2^E - Y| <= 2^-28 * Y with X = multiplier * c and E = shift - 31 - er.
 * Where the bit lengths of the two sides differ by more than one the answer is no (the
 * smaller is below half the larger); elsewhere both fit 64 bits and the bound compares
 * exactly (|D| <= Y * 2^-28 iff |D| <= floor of it, D being whole). A zero multiplier needs
 * r < 2^-31, i.e. Y * 2^(er + 31) < c: sure where Y * 2^(er + 31) has fewer bits than c by
 * more than one, impossible where it has more by more than one, else compared exactly. */
int mk_scales_encoded(int32_t multiplier, int32_t shift, uint32_t s_in, uint32_t w,
                      uint32_t s_out)
{
    uint64_t a, b, c, x, y, d;
    int ea, eb, ec, er, diff;
    decompose(s_in, &a, &ea);
    decompose(w, &b, &eb);
    decompose(s_out, &c, &ec);
    y = a * b;
    er = ea + eb - ec;
    if (multiplier == 0) {
        diff = same_scale(&y, &c, er + 31);
        return diff ? diff < 0 : y < c;
    }
    x = (uint64_t)multiplier * c;
    if (same_scale(&x, &y, shift - 31 - er)) {
        return 0;
    }
    d = x > y ? x - y : y - x;
    return d <= y >> 28;
}

/* item k of an array of `kind` */
static int32_t item(const uint8_t *p, uint32_t k, unsigned kind)
{
    return kind == I8    ? (int8_t)p[k]
           : kind == I16 ? (int16_t)mk_le16(p + 2u * k)
           : kind == U16 ? (int32_t)mk_le16(p + 2u * k)
                         : (int32_t)mk_le32(p + 4u * k);
}

/* _check_ints on `count` items of `array` by rule `a` (n_in: the layer's inputs, where the
 * range ends at n_in - 1): f"{what} holds {bad}; allowed range [{lo}, {hi}]" (bad: the least
 * value if it is below lo, else the greatest; every range holds 0, where the search starts) */
static int check_items(mk_text *t, int layer, const array_rule *a, const void *array,
                       uint32_t count, uint32_t n_in)
{
    const mk_text_id what = a->what;
    const int32_t lo = a->lo, hi = a->hi == HI_INT32        ? INT32_MAX_
                                   : a->hi == HI_LAST_INPUT ? (int32_t)n_in - 1
                                                            : a->hi;
    int32_t least = 0, most = 0;
    uint32_t k;
    for (k = 0; k < count; k++) {
        const int32_t v = item((const uint8_t *)array, k, a->kind);
        least = v < least ? v : least;
        most = v > most ? v : most;
    }
    if (least >= lo && most <= hi) {
        return 0;
    }
    where(t, layer);
    return mk_text_refuse(t, T_HOLDS_ALLOWED_RANGE, what, least < lo ? least : most, lo, hi);
}

/* the first zero of `count` int8 values, or count */
static uint32_t first_zero(const int8_t *v, uint32_t count)
{
    uint32_t k = 0;
    while (k < count && v[k]) {
        k++;
    }
    return k;
}

/* What the per-channel pass `pass` of a dense layer refuses (_check_dense), in its order; each
 * text takes the channel, the value it names (pass 3: the channel again), the multiplier and
 * the shift, and uses the first of them it needs */
static const uint8_t dense_refusals[4] = {
    T_MULTIPLIER_0_OR,        /* multiplier: 0 or in [2^30, 2^31 - 1] */
    T_SHIFT_0_WHERE,          /* shift: 0 where the multiplier is 0 */
    T_WEIGHT_SCALE_HOLDS,     /* weight_scale: positive, finite */
    T_MULTIPLIER_SHIFT_DO,    /* multiplier and shift encode the scales within 2^-28 */
};

/* _check_dense, _check_threshold or _check_step: the value ranges and consistency rules of
 * layer i's arrays, in the simulator's order */
static int check_layer(const mk_layer *L, uint32_t i, uint32_t s_in, uint32_t s_out, mk_text *t)
{
    const int layer = (int)i, dense = L->type == MK_LAYER_DENSE;
    const uint32_t m = L->n_out, n = L->n_in;
    const array_rule *a;
    uint32_t j, k, pass;
    uint32_t worst = 0;
    for (j = 0; j <= m && L->type == MK_LAYER_STEP; j++) { /* row_ptr: from 0, never decreasing */
        const uint32_t v = mk_le32(L->row_ptr + 4u * j);
        if (j == 0 ? v != 0 : v < mk_le32(L->row_ptr + 4u * j - 4u)) {
            return mk_text_refuse(t, T_LAYER_ROW_PTR_START, i, j, v);
        }
    }
    for (a = layer_arrays + arrays_from[L->type - 1u]; a < layer_arrays + arrays_from[L->type];
         a++) { /* the value ranges, in the order of the arrays */
        const uint8_t *array;
        if (!a->what) {
            continue;
        }
        memcpy(&array, (const uint8_t *)L + a->field, sizeof array);
        if (check_items(t, layer, a, array, items_of(a, L), n)) {
            return -1;
        }
    }
    if (dense) {
        const uint8_t *weight_scale = L->shift + 4u * m;
        for (pass = 0; pass < 4; pass++) {
            if (pass == 3 && (check_scale(t, s_in, layer, T_LAYER_INPUT_SCALE) ||
                              check_scale(t, s_out, layer, T_LAYER_OUTPUT_SCALE))) {
                return -1;
            }
            for (j = 0; j < m; j++) {
                const int32_t mult = (int32_t)mk_le32(L->multiplier + 4u * j);
                const int32_t sh = (int32_t)mk_le32(L->shift + 4u * j);
                const uint32_t ws = mk_le32(weight_scale + 4u * j);
                if (pass == 0   ? mult != 0 && mult < (1 << 30)
                    : pass == 1 ? mult == 0 && sh != 0
                    : pass == 2 ? ws < 1u || ws >= 0x7F800000u /* not positive and finite */
                                : !mk_scales_encoded(mult, sh, s_in, ws, s_out)) {
                    where(t, layer);
                    return mk_text_refuse(t, dense_refusals[pass], j,
                                          pass == 1 ? sh : pass == 3 ? (int32_t)j : mult, mult,
                                          sh);
                }
            }
        }
    } else if (L->type == MK_LAYER_STEP && (k = first_zero(L->values, L->nnz)) < L->nnz) {
        return mk_text_refuse(t, T_LAYER_VALUES_0_STORE, i, k);
    }
    /* the worst-case accumulator of each output: |bias| + 255 * sum |w| (dense), 255 * sum |v|
     * over the row's connections, whose inputs strictly increase (step). A row has at most
     * 65535 values of at most 127 (a step row too, while its inputs increase), so the sums
     * stay below 2^23, 255 times one below 2^31, and |bias| (at most 2^31) more below 2^32 */
    for (j = 0; j < m && L->type != MK_LAYER_THRESHOLD; j++) {
        const uint32_t start = dense ? j * n : mk_le32(L->row_ptr + 4u * j);
        const uint32_t stop = dense ? start + n : mk_le32(L->row_ptr + 4u * j + 4u);
        const int8_t *v = dense ? L->weights : L->values;
        uint32_t sum = 0;
        for (k = start; k < stop; k++) {
            if (!dense && k > start && mk_le16(L->cols + 2u * k) <= mk_le16(L->cols + 2u * k - 2u)) {
                return mk_text_refuse(t, T_LAYER_ROW_INPUT_INDICES, i, j);
            }
            sum += (uint32_t)(v[k] < 0 ? -v[k] : v[k]);
        }
        sum *= 255u;
        if (dense) {
            const uint32_t bias = mk_le32(L->bias + 4u * j);
            sum += bias >> 31 ? 0u - bias : bias;
        }
        worst = sum > worst ? sum : worst;
    }
    if (check_scale(t, s_in, layer, T_LAYER_INPUT_SCALE)) { /* (dense: passed above) */
        return -1;
    }
    return worst <= (uint32_t)INT32_MAX_
               ? 0
               : mk_text_refuse(t, T_LAYER_WORST_CASE_ACCUMULATOR, i, worst);
}

/* ------------------------------------------------------------------ class names again */

static uint32_t fnv1a(const uint8_t *p, uint32_t n)
{
    uint32_t h = 2166136261u;
    while (n--) {
        h = (h ^ *p++) * 16777619u;
    }
    return h;
}

/* The first class name that repeats an earlier one (and which: *earlier), or 0 if none; a bit
 * per hash in `scratch` keeps this near linear */
static uint32_t names_repeat(const uint8_t *names, uint32_t count, uint8_t *scratch,
                             uint32_t bytes, uint32_t *earlier)
{
    uint32_t k, pos = 0, bits = scratch ? bytes * 8u : 0u;
    if (bits) {
        memset(scratch, 0, bytes);
    }
    for (k = 0; k < count; k++) {
        const uint8_t *name = names + pos + 1;
        uint32_t len = names[pos], h = bits ? fnv1a(name, len) % bits : 0;
        if (!bits || (scratch[h / 8u] >> (h % 8u) & 1u)) {
            uint32_t j, q = 0;
            for (j = 0; j < k; j++) { /* a hash seen before: compare with the earlier names */
                if (names[q] == len && memcmp(names + q + 1, name, len) == 0) {
                    *earlier = j;
                    return k;
                }
                q += 1u + names[q];
            }
        }
        if (bits) {
            scratch[h / 8u] |= (uint8_t)(1u << (h % 8u));
        }
        pos += 1u + len;
    }
    return 0;
}

/* _check_classes */
static int check_classes(const mk_model *m, const uint8_t *names, mk_text *t, uint8_t *scratch,
                         uint32_t scratch_bytes)
{
    const uint32_t n = (uint32_t)m->n_classes * m->n_outputs;
    uint32_t k, pos = 0;
    if (m->n_classes == 0) {
        return mk_text_refuse(t, T_NUMBER_CLASSES_0);
    }
    for (k = 0; k < m->n_classes; k++) {
        if (names[pos] == 0) {
            return mk_text_refuse(t, T_CLASS_NAME_NON_EMPTY, k);
        }
        pos += 1u + names[pos];
    }
    if ((k = names_repeat(names, m->n_classes, scratch, scratch_bytes, &pos)) != 0) {
        return mk_text_refuse(t, T_CLASS_NAME_REPEATS_CLASS, k, pos);
    }
    if (m->head == MK_HEAD_ARGMAX) {
        return m->n_classes == m->n_outputs
                   ? 0
                   : mk_text_refuse(t, T_CLASS_NAMES_OUTPUTS_ARGMAX, (uint32_t)m->n_classes,
                                    m->n_outputs);
    }
    if (check_items(t, -1, &codebook_items, m->codebook, n, 0)) {
        return -1;
    }
    return first_zero(m->codebook, n) < n ? mk_text_refuse(t, T_CODEBOOK_ENTRIES_1_OR) : 0;
}

uint32_t mk_arena_bytes(uint32_t n_inputs, const mk_layer *layers, unsigned n_layers)
{
    /* the largest vector each of the two buffers holds: the one layer i reads, the other */
    uint32_t in = n_inputs, out = 0, swap;
    unsigned i;
    for (i = 0; i < n_layers; i++) {
        out = layers[i].n_out > out ? layers[i].n_out : out;
        swap = in; /* layer i + 1 reads what layer i wrote */
        in = out;
        out = swap;
    }
    return align4(in) + align4(out);
}

/* ------------------------------------------------------------------ decode_package */

int mk_package_load(mk_model *m, const uint8_t *data, uint32_t n, mk_text *t, uint8_t *scratch,
                    uint32_t scratch_bytes)
{
    uint32_t s_in[MK_MAX_LAYERS], s_out[MK_MAX_LAYERS], scale; /* float32 bits */
    uint8_t digest[32];
    uint32_t total, crc, calc, payload_start = 0, payload_size, table_end, offset = 0;
    uint32_t dims[3], rank, k, i, bad, width, derived[3];
    uint64_t n_inputs;
    const uint8_t *payload;
    int8_t zp;

    if (unpack_header(data, n, t)) {
        return -1;
    }
    total = mk_le32(data + 8);
    if (n < total) {
        return mk_text_refuse(t, T_PACKAGE_TRUNCATED_HEADER_SAYS, total, n);
    }
    if (n > total) {
        return mk_text_refuse(t, T_TRAILING_BYTES_AFTER_BYTE, n - total, total);
    }
    if (total < MK_HEADER_BYTES + CRC_BYTES) {
        return mk_text_refuse(t, T_TOTAL_SIZE_SMALLER_THAN, total);
    }
    total -= CRC_BYTES; /* from here: where the CRC starts */
    crc = mk_le32(data + total);
    calc = mk_crc32(0, data, total);
    if (calc != crc) {
        return mk_text_refuse(t, T_CRC_32_MISMATCH_STORED, crc, calc);
    }
    mk_sha256(data + HASHED_FROM, total - HASHED_FROM, digest);
    if (memcmp(digest, data + 0x0C, 32) != 0) {
        return mk_text_refuse(t, T_MODEL_ID_DOES_NOT);
    }
    if (check_fields(t, data, header_rules + HEADER_PEEKED,
                     header_rules + sizeof header_rules / sizeof *header_rules, -1,
                     mk_le16(data + 4))) {
        return -1;
    }
    m->head = data[0x2D];
    m->n_layers = data[0x2E];
    rank = data[0x2F];
    bad = rank < 1u || rank > 3u;
    for (k = 0; k < 3; k++) { /* rank 1 .. 3, its dimensions nonzero, the others 0 */
        dims[k] = mk_le16(data + 0x30 + 2u * k);
        bad |= (k < rank) != (dims[k] != 0);
    }
    if (bad) {
        return mk_text_refuse(t, T_INPUT_RANK_WITH_DIMENSIONS, rank, dims[0], dims[1], dims[2]);
    }
    n_inputs = (uint64_t)dims[0] * (dims[1] ? dims[1] : 1u) * (dims[2] ? dims[2] : 1u);
    table_end = MK_HEADER_BYTES + MK_LAYER_ENTRY_BYTES * m->n_layers;
    if (table_end > total) {
        return mk_text_refuse(t, T_LAYER_TABLE_ENTRIES_RUNS, (uint32_t)m->n_layers);
    }
    m->n_classes = mk_le16(data + 0x36);
    if (decode_names(data, total, table_end, m->n_classes, &payload_start, t)) {
        return -1;
    }
    payload_size = mk_le32(data + 0x4C);
    if (payload_start > total || payload_size != total - payload_start) {
        return mk_text_refuse(t, T_PAYLOAD_SIZE_DOES_NOT, payload_size, payload_start, total);
    }
    payload = data + payload_start;
    for (i = 0; i < m->n_layers; i++) {
        const uint8_t *entry = data + MK_HEADER_BYTES + MK_LAYER_ENTRY_BYTES * i;
        uint32_t start = mk_le32(entry + 24), size = mk_le32(entry + 28);
        if (start != offset || size % 4u || size > payload_size - start) { /* start <= payload */
            return mk_text_refuse(t, T_LAYER_DATA_OFFSET_SIZE, i, start, size, offset,
                                  payload_size);
        }
        memset(&m->layers[i], 0, sizeof m->layers[i]);
        m->layers[i].rounding = data[0x3D]; /* the package's, for every dense layer */
        if (decode_layer(&m->layers[i], entry, payload + start, size, i, &s_in[i], &s_out[i], t)) {
            return -1;
        }
        offset += size;
    }
    m->n_outputs = m->layers[m->n_layers - 1].n_out;
    m->codebook = 0;
    if (m->head == MK_HEAD_CODEBOOK) {
        reader r;
        r.blob = payload + offset;
        r.size = payload_size - offset;
        r.pos = 0;
        r.layer = -1;
        m->codebook = (const int8_t *)take(&r, 1, (uint32_t)m->n_classes * m->n_outputs, t);
        if (!m->codebook || reader_done(&r, t)) {
            return -1;
        }
    } else if (offset != payload_size) {
        return mk_text_refuse(t, T_UNUSED_BYTES_END_PAYLOAD, payload_size - offset);
    }

    /* validate_package */
    if (n_inputs > DIM_MAX) { /* of rank 2 or 3 (one u16 dimension is no more) */
        mk_text_format(t, T_INPUT_SIZE_PRODUCT, n_inputs, dims[0], dims[1]);
        if (rank == 3) {
            mk_text_format(t, T_COMMA_DIMENSION, dims[2]);
        }
        return mk_text_refuse(t, T_INPUT_SIZE_WHOLE_NUMBER, n_inputs);
    }
    scale = mk_le32(data + 0x38);
    if (check_scale(t, scale, -1, T_INPUT_SCALE)) {
        return -1;
    }
    m->input_zero_point = (int8_t)data[0x3C];
    width = (uint32_t)n_inputs;
    zp = m->input_zero_point;
    for (i = 0; i < m->n_layers; i++) {
        const mk_layer *L = &m->layers[i];
        if (check_layer(L, i, s_in[i], s_out[i], t)) {
            return -1;
        }
        if (L->n_in != width) {
            return mk_text_refuse(t, T_LAYER_TAKES_INPUTS_BUT, i, L->n_in, width);
        }
        if (s_in[i] != scale || L->zp_in != zp) {
            return mk_text_refuse(t, T_LAYER_INPUT_QUANTIZATION_SCALE,
                                  i, s_in[i], (int32_t)L->zp_in, scale, (int32_t)zp);
        }
        width = L->n_out;
        scale = L->type == MK_LAYER_DENSE ? s_out[i] : ONE;
        zp = L->type == MK_LAYER_DENSE ? L->zp_out : 0;
    }
    if (check_classes(m, data + table_end, t, scratch, scratch_bytes)) {
        return -1;
    }
    derived[0] = (uint32_t)n_inputs;
    derived[1] = m->n_outputs;
    derived[2] = mk_arena_bytes(derived[0], m->layers, m->n_layers);
    for (k = 0; k < 3; k++) { /* n_inputs, n_outputs, ram_bytes: as the table gives them */
        if (mk_le32(data + 0x40 + 4u * k) != derived[k]) {
            return mk_text_refuse(t, T_HEADER_BUT_LAYER_TABLE, T_N_INPUTS + k,
                                  mk_le32(data + 0x40 + 4u * k), derived[k]);
        }
    }
    m->image = data;
    m->size = total + CRC_BYTES;
    m->model_id = data + 0x0C;
    m->n_inputs = derived[0];
    m->ram_bytes = derived[2];
    return 0;
}
