/* The package loader: the checks and the words of export/contract/package.py, in its
 * order.
 *
 * Each refusal below is written as the Python f-string it reproduces (a format of
 * mk_text_format), so that the two can be read side by side; tests/test_firmware_package.py
 * feeds both the same mutated packages and compares the texts. Scales are float32 values: the
 * loader keeps their bits and does no floating-point arithmetic (the firmware needs no
 * floating-point unit or library).
 */
#include "package.h"
#include "requantize.h"

#include <string.h>

#include "crc32.h"
#include "frame.h"
#include "sha256.h"

#define INT32_MAX_ 2147483647
#define HASHED_FROM 0x2Cu
#define CRC_BYTES 4u
#define DIM_MAX 65535u
#define ONE 0x3F800000u /* 1.0f */

static uint32_t align4(uint32_t n) { return (n + 3u) & ~3u; }
static uint64_t align4_64(uint64_t n) { return (n + 3u) & ~(uint64_t)3u; }
static int32_t le_i32(const uint8_t *p) { return (int32_t)mk_le32(p); }

/* "layer 3 " before what a check names, or nothing for a field of the package itself */
static void where(mk_text *t, int layer, const char *after)
{
    if (layer >= 0) {
        mk_text_format(t, T_LAYER_AFTER, (uint32_t)layer, after);
    }
}

/* _check_dim: f"{what} = {value}: must be a whole number in [1, 65535]" (`what` written) */
static int check_dim(mk_text *t, uint64_t value)
{
    return value >= 1 && value <= DIM_MAX
               ? 0
               : mk_text_refuse(t, T_WHOLE_NUMBER_1_65535, value);
}

static int layer_dim(mk_text *t, uint32_t i, const char *name, uint32_t value)
{
    if (value >= 1 && value <= DIM_MAX) {
        return 0;
    }
    mk_text_format(t, T_LAYER_NAME, i, name);
    return check_dim(t, value);
}

/* _check_scale: f"{what} is {kind}: must be a positive finite float32" */
static int check_scale(mk_text *t, uint32_t bits, int layer, const char *what)
{
    const uint32_t magnitude = bits & 0x7FFFFFFFu;
    if (bits >= 1u && bits < 0x7F800000u) {
        return 0;
    }
    where(t, layer, " ");
    return mk_text_refuse(t, T_POSITIVE_FINITE_FLOAT32, what,
                          magnitude > 0x7F800000u    ? "NaN"
                          : magnitude == 0x7F800000u ? "infinite"
                          : magnitude == 0           ? "zero"
                                                     : "negative");
}

/* _check_ints: f"{what} holds {bad}; allowed range [{lo}, {hi}]" (bad: the least value if
 * it is below lo, else the greatest) */
static int check_range(mk_text *t, int layer, const char *what, int32_t min, int32_t max,
                       int32_t lo, int32_t hi)
{
    if (min >= lo && max <= hi) {
        return 0;
    }
    where(t, layer, " ");
    return mk_text_refuse(t, T_HOLDS_ALLOWED_RANGE, what, min < lo ? min : max,
                          lo, hi);
}

static int check_acc_bound(mk_text *t, uint32_t i, uint64_t max_abs)
{
    return max_abs <= (uint64_t)INT32_MAX_
               ? 0
               : mk_text_refuse(t, T_LAYER_WORST_CASE_ACCUMULATOR,
                                i, max_abs);
}

/* ------------------------------------------------------------------ header */

static int unpack_header(const uint8_t *data, uint32_t n, mk_text *t)
{
    static const uint8_t magic[4] = {'M', '1', 'W', 'P'};
    uint32_t head = n < 4u ? n : 4u;
    if (memcmp(data, magic, head) != 0) { /* short or not, another kind of file says so first */
        return mk_text_refuse(t, T_NOT_WEIGHT_PACKAGE_MAGIC,
                              data, head);
    }
    if (n < MK_HEADER_BYTES) {
        return mk_text_refuse(t, T_PACKAGE_TRUNCATED_BYTES_HEADER, n);
    }
    if (mk_le16(data + 4) != 1u && mk_le16(data + 4) != 2u) {
        return mk_text_refuse(t, T_PACKAGE_FORMAT_VERSION_NOT,
                              (uint32_t)mk_le16(data + 4));
    }
    if (mk_le16(data + 6) != MK_HEADER_BYTES) {
        return mk_text_refuse(t, T_HEADER_SIZE_FORMAT_VERSION,
                              (uint32_t)mk_le16(data + 6), (uint32_t)mk_le16(data + 4));
    }
    return 0;
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

/* Python's UTF-8 decoder: 0 if valid, else the reason it gives for the first error. */
static const char *utf8_problem(const uint8_t *s, uint32_t n)
{
    uint32_t i = 0;
    while (i < n) {
        unsigned c = s[i], need, k;
        unsigned lo = 0x80u, hi = 0xBFu; /* allowed range of the second byte */
        if (c < 0x80u) {
            i++;
            continue;
        }
        if (c < 0xC2u || c > 0xF4u) {
            return mk_text_reason(T_INVALID_START_BYTE);
        }
        need = c < 0xE0u ? 2u : c < 0xF0u ? 3u : 4u;
        if (c == 0xE0u) lo = 0xA0u;
        if (c == 0xEDu) hi = 0x9Fu;
        if (c == 0xF0u) lo = 0x90u;
        if (c == 0xF4u) hi = 0x8Fu;
        for (k = 1; k < need; k++) {
            unsigned b;
            if (i + k >= n) {
                return mk_text_reason(T_UNEXPECTED_END_OF_DATA);
            }
            b = s[i + k];
            if (k == 1 ? (b < lo || b > hi) : (b & 0xC0u) != 0x80u) {
                return mk_text_reason(T_INVALID_CONTINUATION_BYTE);
            }
        }
        i += need;
    }
    return 0;
}

/* _decode_names over data[:limit]: the payload start in *end, or -1 */
static int decode_names(const uint8_t *data, uint32_t limit, uint32_t start, uint32_t count,
                        uint32_t *end, mk_text *t)
{
    uint32_t pos = start, k, stop;
    for (k = 0; k < count; k++) {
        uint32_t len;
        const char *problem;
        if (pos >= limit) {
            return mk_text_refuse(t, T_CLASS_NAME_RUNS_PAST, k);
        }
        len = data[pos];
        if (pos + 1u + len > limit) {
            return mk_text_refuse(t, T_CLASS_NAME_BYTES_RUNS,
                                  k, len);
        }
        if ((problem = utf8_problem(data + pos + 1, len)) != 0) {
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

typedef struct {
    const uint8_t *blob;
    uint32_t size, pos;
    int layer; /* -1: the codebook */
} reader;

static void reader_where(mk_text *t, const reader *r)
{
    if (r->layer < 0) {
        mk_text_format(t, T_CODEBOOK);
    } else {
        where(t, r->layer, "");
    }
}

/* _Reader.take: the next array of `count` items of `itemsize` bytes and its zero padding */
static const uint8_t *take(reader *r, unsigned itemsize, uint64_t count, mk_text *t)
{
    uint64_t n = count * itemsize, end = r->pos + align4_64(n), i;
    const uint8_t *p = r->blob + r->pos;
    if (end > r->size) {
        reader_where(t, r);
        mk_text_format(t, T_DATA_SIZE_TOO_SMALL, r->size);
        return 0;
    }
    for (i = r->pos + n; i < end; i++) {
        if (r->blob[i]) {
            reader_where(t, r);
            mk_text_format(t, T_PADDING_BYTES_AFTER_ARRAY);
            return 0;
        }
    }
    r->pos = (uint32_t)end;
    return p;
}

static int reader_done(reader *r, mk_text *t)
{
    if (r->pos == r->size) {
        return 0;
    }
    reader_where(t, r);
    return mk_text_refuse(t, T_DATA_SIZE_ITS_ARRAYS, r->size, r->pos);
}

/* _decode_layer: the table entry and the arrays of layer i */
static int decode_layer(mk_layer *L, const uint8_t *entry, const uint8_t *blob, uint32_t size,
                        uint32_t i, uint32_t *s_in, uint32_t *s_out, mk_text *t)
{
    const uint32_t code = entry[0], flags = entry[1], reserved = mk_le16(entry + 22);
    int8_t want_min, want_max, want_zp;
    reader r;
    r.blob = blob;
    r.size = size;
    r.pos = 0;
    r.layer = (int)i;
    L->type = (uint8_t)code;
    L->relu = (uint8_t)(flags & 1u);
    L->zp_in = (int8_t)entry[2];
    L->zp_out = (int8_t)entry[3];
    L->n_in = mk_le32(entry + 4);
    L->n_out = mk_le32(entry + 8);
    *s_in = mk_le32(entry + 12);
    *s_out = mk_le32(entry + 16);
    L->act_min = (int8_t)entry[20];
    L->act_max = (int8_t)entry[21];
    if (reserved) {
        return mk_text_refuse(t, T_LAYER_RESERVED_FIELD_0, i, reserved);
    }
    if (code < MK_LAYER_DENSE || code > MK_LAYER_STEP) {
        return mk_text_refuse(t, T_LAYER_LAYER_TYPE_UNKNOWN,
                              i, code);
    }
    if ((flags & ~1u) || (flags && code != MK_LAYER_DENSE)) {
        return mk_text_refuse(t, T_LAYER_FLAGS_0X_NOT, i, flags,
                              code);
    }
    if (layer_dim(t, i, "n_in", L->n_in) || layer_dim(t, i, "n_out", L->n_out)) {
        return -1;
    }
    if (code == MK_LAYER_DENSE) {
        uint32_t m = L->n_out;
        if (!(L->weights = (const int8_t *)take(&r, 1, (uint64_t)m * L->n_in, t)) ||
            !(L->bias = take(&r, 4, m, t)) || !(L->multiplier = take(&r, 4, m, t)) ||
            !(L->shift = take(&r, 4, m, t)) || !take(&r, 4, m, t)) {
            return -1;
        }
    } else if (code == MK_LAYER_THRESHOLD) {
        if (L->n_out != L->n_in) {
            return mk_text_refuse(t, T_LAYER_THRESHOLD_LAYER_HAS, i, L->n_in, L->n_out);
        }
        if (!(L->threshold = take(&r, 2, L->n_in, t))) {
            return -1;
        }
    } else {
        if (!(L->row_ptr = take(&r, 4, (uint64_t)L->n_out + 1u, t)) ||
            !(L->threshold = take(&r, 4, L->n_out, t))) {
            return -1;
        }
        L->nnz = mk_le32(L->row_ptr + 4u * L->n_out);
        if (!(L->cols = take(&r, 2, L->nnz, t)) ||
            !(L->values = (const int8_t *)take(&r, 1, L->nnz, t))) {
            return -1;
        }
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
    } else {
        if (*s_out != ONE) {
            return mk_text_refuse(t, T_LAYER_OUTPUT_SCALE_THRESHOLD, i);
        }
        want_zp = 0;
        want_min = 0;
        want_max = 1;
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
    int n = 0;
    for (; v; v >>= 1) {
        n++;
    }
    return n;
}

/* export.contract.package.scales_encoded, in integers: with r = s_in * w / s_out = (Y / c) *
 * 2^er (Y = a * b from the float32 mantissas), multiplier * 2^(shift - 31) is r within
 * 2^-28 * r iff |X * 2^E - Y| <= 2^-28 * Y with X = multiplier * c and E = shift - 31 - er.
 * Where the bit lengths of the two sides differ by more than one the answer is no; elsewhere
 * both fit 64 bits and the bound compares exactly (|D| <= Y * 2^-28 iff |D| <= floor of it,
 * D being whole). A zero multiplier needs r < 2^-31, i.e. Y * 2^(er + 31) < c. */
int mk_scales_encoded(int32_t multiplier, int32_t shift, uint32_t s_in, uint32_t w,
                      uint32_t s_out)
{
    uint64_t a, b, c, x, y, d;
    int ea, eb, ec, er, e;
    decompose(s_in, &a, &ea);
    decompose(w, &b, &eb);
    decompose(s_out, &c, &ec);
    y = a * b;
    er = ea + eb - ec;
    if (multiplier == 0) {
        e = er + 31;
        if (e >= 0) {
            return bit_length(y) + e <= 24 && (y << e) < c; /* c < 2^24 */
        }
        return -e >= 64 || (y >> -e) < c;
    }
    x = (uint64_t)multiplier * c;
    e = shift - 31 - er;
    if (e >= 0) {
        if (bit_length(x) + e > bit_length(y) + 1) {
            return 0;
        }
        x <<= e;
        d = x > y ? x - y : y - x;
        return d <= y >> 28;
    }
    if (bit_length(y) - e > bit_length(x) + 1) {
        return 0;
    }
    y <<= -e;
    d = x > y ? x - y : y - x;
    return d <= y >> 28;
}

static int check_dense(const mk_layer *L, uint32_t i, uint32_t s_in, uint32_t s_out,
                       mk_text *t)
{
    const uint32_t m = L->n_out, n = L->n_in;
    const uint8_t *ws = L->shift + 4u * m;
    int32_t wmin = 0, wmax = 0, mmin = INT32_MAX_, mmax = 0, smin = 0, smax = 0;
    uint64_t worst = 0;
    uint32_t o, k;
    for (k = 0; k < m * n; k++) {
        if (L->weights[k] < wmin) wmin = L->weights[k];
        if (L->weights[k] > wmax) wmax = L->weights[k];
    }
    for (o = 0; o < m; o++) {
        int32_t mult = le_i32(L->multiplier + 4u * o), sh = le_i32(L->shift + 4u * o);
        if (mult < mmin) mmin = mult;
        if (mult > mmax) mmax = mult;
        if (o == 0 || sh < smin) smin = sh;
        if (o == 0 || sh > smax) smax = sh;
    }
    if (check_range(t, (int)i, "weights", wmin, wmax, -127, 127) ||
        check_range(t, (int)i, "multiplier", mmin, mmax, 0, INT32_MAX_) ||
        check_range(t, (int)i, "shift", smin, smax, -31, 30)) {
        return -1;
    }
    for (o = 0; o < m; o++) {
        int32_t mult = le_i32(L->multiplier + 4u * o);
        if (mult != 0 && mult < (1 << 30)) {
            return mk_text_refuse(t, T_LAYER_MULTIPLIER_0_OR, i, o, mult);
        }
    }
    for (o = 0; o < m; o++) {
        int32_t sh = le_i32(L->shift + 4u * o);
        if (le_i32(L->multiplier + 4u * o) == 0 && sh != 0) {
            return mk_text_refuse(t, T_LAYER_SHIFT_0_WHERE,
                                  i, o, sh);
        }
    }
    for (o = 0; o < m; o++) {
        const uint32_t bits = mk_le32(ws + 4u * o);
        if (bits < 1u || bits >= 0x7F800000u) { /* not positive and finite */
            return mk_text_refuse(t, T_LAYER_WEIGHT_SCALE_HOLDS, i);
        }
    }
    if (check_scale(t, s_in, (int)i, "input_scale") ||
        check_scale(t, s_out, (int)i, "output_scale")) {
        return -1;
    }
    for (o = 0; o < m; o++) { /* the multiplier and shift encode the scales within 2^-28 */
        int32_t mult = le_i32(L->multiplier + 4u * o), sh = le_i32(L->shift + 4u * o);
        if (!mk_scales_encoded(mult, sh, s_in, mk_le32(ws + 4u * o), s_out)) {
            return mk_text_refuse(t, T_LAYER_MULTIPLIER_SHIFT_DO,
                                  i, o, o, mult, sh);
        }
    }
    for (o = 0; o < m; o++) {
        int64_t bias = le_i32(L->bias + 4u * o);
        uint64_t sum = 0;
        const int8_t *row = L->weights + (uint64_t)o * n;
        for (k = 0; k < n; k++) {
            sum += (uint64_t)(row[k] < 0 ? -row[k] : row[k]);
        }
        sum = (uint64_t)(bias < 0 ? -bias : bias) + 255u * sum;
        if (sum > worst) {
            worst = sum;
        }
    }
    return check_acc_bound(t, i, worst);
}

static int check_threshold(const mk_layer *L, uint32_t i, uint32_t s_in, mk_text *t)
{
    int32_t lo = 0, hi = 0;
    uint32_t k;
    for (k = 0; k < L->n_in; k++) {
        int16_t v = (int16_t)mk_le16(L->threshold + 2u * k);
        if (k == 0 || v < lo) lo = v;
        if (k == 0 || v > hi) hi = v;
    }
    if (check_range(t, (int)i, "threshold", lo, hi, -128, 128)) {
        return -1;
    }
    return check_scale(t, s_in, (int)i, "input_scale");
}

static int check_step(const mk_layer *L, uint32_t i, uint32_t s_in, mk_text *t)
{
    const uint32_t m = L->n_out;
    uint32_t j, k;
    int32_t lo = 0, hi = 0;
    uint64_t worst = 0;
    uint32_t bad = mk_le32(L->row_ptr) != 0 ? 0 : m + 1u; /* the first bad entry, if any */
    for (j = 0; j < m && bad > m; j++) {
        bad = mk_le32(L->row_ptr + 4u * (j + 1u)) < mk_le32(L->row_ptr + 4u * j) ? j + 1u : bad;
    }
    if (bad <= m) {
        return mk_text_refuse(t, T_LAYER_ROW_PTR_START, i, bad, mk_le32(L->row_ptr + 4u * bad));
    }
    for (k = 0; k < L->nnz; k++) {
        int32_t c = mk_le16(L->cols + 2u * k);
        if (k == 0 || c < lo) lo = c;
        if (k == 0 || c > hi) hi = c;
    }
    if (check_range(t, (int)i, "cols", lo, hi, 0, (int32_t)L->n_in - 1)) {
        return -1;
    }
    lo = hi = 0;
    for (k = 0; k < L->nnz; k++) {
        if (k == 0 || L->values[k] < lo) lo = L->values[k];
        if (k == 0 || L->values[k] > hi) hi = L->values[k];
    }
    if (check_range(t, (int)i, "values", lo, hi, -127, 127)) {
        return -1;
    }
    for (k = 0; k < L->nnz; k++) {
        if (L->values[k] == 0) {
            return mk_text_refuse(t, T_LAYER_VALUES_0_STORE, i, k);
        }
    }
    for (j = 0; j < m; j++) {
        uint32_t a = mk_le32(L->row_ptr + 4u * j), b = mk_le32(L->row_ptr + 4u * (j + 1u));
        uint64_t sum = 0;
        for (k = a; k < b; k++) {
            if (k > a && mk_le16(L->cols + 2u * k) <= mk_le16(L->cols + 2u * (k - 1u))) {
                return mk_text_refuse(t, T_LAYER_ROW_INPUT_INDICES, i, j);
            }
            sum += (uint64_t)(L->values[k] < 0 ? -L->values[k] : L->values[k]);
        }
        if (sum > worst) {
            worst = sum;
        }
    }
    if (check_scale(t, s_in, (int)i, "input_scale")) {
        return -1;
    }
    return check_acc_bound(t, i, 255u * worst);
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

static int check_classes(const mk_model *m, const uint8_t *names, mk_text *t, uint8_t *scratch,
                         uint32_t scratch_bytes)
{
    uint32_t k, pos = 0;
    if (m->n_classes == 0) {
        mk_text_format(t, T_NUMBER_CLASSES_0);
        return check_dim(t, 0);
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
                   : mk_text_refuse(t, T_CLASS_NAMES_OUTPUTS_ARGMAX,
                                    (uint32_t)m->n_classes, m->n_outputs);
    }
    {
        uint32_t n = (uint32_t)m->n_classes * m->n_outputs;
        int32_t lo = 0, hi = 0;
        for (k = 0; k < n; k++) {
            if (k == 0 || m->codebook[k] < lo) lo = m->codebook[k];
            if (k == 0 || m->codebook[k] > hi) hi = m->codebook[k];
        }
        if (check_range(t, -1, "codebook", lo, hi, -1, 1)) {
            return -1;
        }
        for (k = 0; k < n; k++) {
            if (m->codebook[k] == 0) {
                return mk_text_refuse(t, T_CODEBOOK_ENTRIES_1_OR);
            }
        }
    }
    return 0;
}

uint64_t mk_arena_bytes(uint32_t n_inputs, const mk_layer *layers, unsigned n_layers)
{
    uint64_t even = n_inputs, odd = 0;
    unsigned i;
    for (i = 0; i < n_layers; i++) {
        uint64_t w = layers[i].n_out;
        if (i % 2u == 0) {
            odd = w > odd ? w : odd;
        } else {
            even = w > even ? w : even;
        }
    }
    return align4_64(even) + align4_64(odd);
}

/* ------------------------------------------------------------------ decode_package */

/* "(20, 20)", "(400,)": a tuple of ints as Python prints it */
static void shape_tuple(mk_text *t, const uint32_t *dims, uint32_t rank)
{
    uint32_t k;
    for (k = 0; k < rank; k++) {
        mk_text_printf(t, k ? ", %u" : "(%u", dims[k]);
    }
    mk_text_str(t, rank == 1 ? ",)" : ")");
}

int mk_package_load(mk_model *m, const uint8_t *data, uint32_t n, mk_text *t, uint8_t *scratch,
                    uint32_t scratch_bytes)
{
    uint32_t s_in[MK_MAX_LAYERS], s_out[MK_MAX_LAYERS], scale; /* float32 bits */
    uint8_t digest[32];
    uint32_t total, crc, calc, payload_start = 0, payload_size, payload_len, table_end, offset;
    uint32_t dims[3], rank, source, k, i;
    uint64_t n_inputs, width;
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
    crc = mk_le32(data + total - CRC_BYTES);
    calc = mk_crc32(0, data, total - CRC_BYTES);
    if (calc != crc) {
        return mk_text_refuse(t, T_CRC_32_MISMATCH_STORED, crc, calc);
    }
    mk_sha256(data + HASHED_FROM, total - CRC_BYTES - HASHED_FROM, digest);
    if (memcmp(digest, data + 0x0C, 32) != 0) {
        return mk_text_refuse(t, T_MODEL_ID_DOES_NOT);
    }
    /* version 2's rounding byte (0x3D) was reserved in version 1 */
    if (mk_le16(data + 4) == 1u && (data[0x3D] | data[0x3E] | data[0x3F])) {
        return mk_text_refuse(t, T_HEADER_RESERVED_BYTES_ZERO, data + 0x3D,
                              (uint32_t)3);
    }
    if (data[0x3D] > MK_ROUND_DOUBLE) {
        return mk_text_refuse(t, T_ROUNDING_CODE_UNKNOWN_0,
                              (uint32_t)data[0x3D]);
    }
    if (data[0x3E] | data[0x3F]) {
        return mk_text_refuse(t, T_HEADER_RESERVED_BYTES_ZERO, data + 0x3E,
                              (uint32_t)2);
    }
    source = data[0x2C];
    m->head = data[0x2D];
    m->n_layers = data[0x2E];
    rank = data[0x2F];
    if (source >= 2u) {
        return mk_text_refuse(t, T_SOURCE_CODE_UNKNOWN_0, source);
    }
    if (m->head > MK_HEAD_CODEBOOK) {
        return mk_text_refuse(t, T_HEAD_CODE_UNKNOWN_0,
                              (uint32_t)m->head);
    }
    if (m->n_layers < 1u || m->n_layers > MK_MAX_LAYERS) {
        return mk_text_refuse(t, T_LAYERS_ALLOWED_1_16, (uint32_t)m->n_layers);
    }
    for (k = 0; k < 3; k++) {
        dims[k] = mk_le16(data + 0x30 + 2u * k);
    }
    {
        int bad = rank < 1u || rank > 3u;
        for (k = 0; k < 3 && !bad; k++) {
            bad = k < rank ? dims[k] == 0 : dims[k] != 0;
        }
        if (bad) {
            mk_text_format(t, T_INPUT_RANK_WITH_DIMENSIONS, rank);
            shape_tuple(t, dims, 3);
            return mk_text_refuse(t, T_RANK_1_3_UNUSED);
        }
    }
    table_end = MK_HEADER_BYTES + MK_LAYER_ENTRY_BYTES * m->n_layers;
    if (table_end > total - CRC_BYTES) {
        return mk_text_refuse(t, T_LAYER_TABLE_ENTRIES_RUNS,
                              (uint32_t)m->n_layers);
    }
    m->n_classes = mk_le16(data + 0x36);
    if (decode_names(data, total - CRC_BYTES, table_end, m->n_classes, &payload_start, t)) {
        return -1;
    }
    payload_size = mk_le32(data + 0x4C);
    if ((uint64_t)payload_start + payload_size != total - CRC_BYTES) {
        return mk_text_refuse(t, T_PAYLOAD_SIZE_DOES_NOT, payload_size, payload_start,
                              total - CRC_BYTES);
    }
    payload = data + payload_start;
    payload_len = payload_size;
    offset = 0;
    for (i = 0; i < m->n_layers; i++) {
        const uint8_t *entry = data + MK_HEADER_BYTES + MK_LAYER_ENTRY_BYTES * i;
        uint32_t start = mk_le32(entry + 24), size = mk_le32(entry + 28);
        if (start != offset || size % 4u || (uint64_t)start + size > payload_len) {
            return mk_text_refuse(t, T_LAYER_DATA_OFFSET_SIZE,
                                  i, start, size, offset, payload_len);
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
        r.size = payload_len - offset;
        r.pos = 0;
        r.layer = -1;
        m->codebook = (const int8_t *)take(&r, 1, (uint64_t)m->n_classes * m->n_outputs, t);
        if (!m->codebook || reader_done(&r, t)) {
            return -1;
        }
    } else if (offset != payload_len) {
        return mk_text_refuse(t, T_UNUSED_BYTES_END_PAYLOAD,
                              payload_len - offset);
    }

    /* validate_package */
    n_inputs = 1;
    for (k = 0; k < rank; k++) {
        n_inputs *= dims[k];
    }
    if (n_inputs > DIM_MAX) {
        mk_text_format(t, T_INPUT_SIZE_PRODUCT_INPUT, n_inputs);
        shape_tuple(t, dims, rank);
        mk_text_format(t, T_CLOSE);
        return check_dim(t, n_inputs);
    }
    scale = mk_le32(data + 0x38);
    if (check_scale(t, scale, -1, "input_scale")) {
        return -1;
    }
    m->input_zero_point = (int8_t)data[0x3C];
    width = n_inputs;
    zp = m->input_zero_point;
    for (i = 0; i < m->n_layers; i++) {
        const mk_layer *L = &m->layers[i];
        int bad = L->type == MK_LAYER_DENSE ? check_dense(L, i, s_in[i], s_out[i], t)
                  : L->type == MK_LAYER_THRESHOLD ? check_threshold(L, i, s_in[i], t)
                                                  : check_step(L, i, s_in[i], t);
        if (bad) {
            return -1;
        }
        if (L->n_in != width) {
            return mk_text_refuse(t, T_LAYER_TAKES_INPUTS_BUT, i, L->n_in,
                                  width);
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
    {
        static const char *const names[3] = {"n_inputs", "n_outputs", "ram_bytes"};
        uint64_t derived[3];
        uint32_t stored[3];
        derived[0] = n_inputs;
        derived[1] = m->n_outputs;
        derived[2] = mk_arena_bytes((uint32_t)n_inputs, m->layers, m->n_layers);
        stored[0] = mk_le32(data + 0x40);
        stored[1] = mk_le32(data + 0x44);
        stored[2] = mk_le32(data + 0x48);
        for (k = 0; k < 3; k++) {
            if (stored[k] != derived[k]) {
                return mk_text_refuse(t, T_HEADER_BUT_LAYER_TABLE, names[k],
                                      stored[k], derived[k]);
            }
        }
    }
    m->image = data;
    m->size = total;
    m->model_id = data + 0x0C;
    m->n_inputs = (uint32_t)n_inputs;
    m->ram_bytes = (uint32_t)mk_arena_bytes(m->n_inputs, m->layers, m->n_layers);
    return 0;
}
