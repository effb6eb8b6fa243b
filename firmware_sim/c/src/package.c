/* The package loader: the checks and the words of export/contract/package.py, in its
 * order.
 *
 * Each refusal below quotes the Python f-string it reproduces, so that the two can be read
 * side by side; tests/test_firmware_package.py feeds both the same mutated packages and
 * compares the texts.
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

static uint32_t align4(uint32_t n) { return (n + 3u) & ~3u; }
static uint64_t align4_64(uint64_t n) { return (n + 3u) & ~(uint64_t)3u; }
static int32_t le_i32(const uint8_t *p) { return (int32_t)mk_le32(p); }
static float le_f32(const uint8_t *p)
{
    uint32_t bits = mk_le32(p);
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static int fail(mk_text *t, const char *s)
{
    mk_text_str(t, s);
    return -1;
}

static int is_finite_positive(double v) { return v > 0.0 && v - v == 0.0; }

/* "layer 3" */
static void where(mk_text *t, unsigned i)
{
    mk_text_str(t, "layer ");
    mk_text_uint(t, i);
}

/* _check_dim(value, what): f"{what} = {value!r}: must be a whole number in [1, 65535]" */
static int check_dim(mk_text *t, uint64_t value)
{
    if (value >= 1 && value <= DIM_MAX) {
        return 0;
    }
    mk_text_str(t, " = ");
    mk_text_uint(t, value);
    return fail(t, ": must be a whole number in [1, 65535]");
}

static int layer_dim(mk_text *t, unsigned i, const char *name, uint64_t value)
{
    if (value >= 1 && value <= DIM_MAX) {
        return 0;
    }
    where(t, i);
    mk_text_str(t, name);
    return check_dim(t, value);
}

/* _check_scale: f"{what} = {value!r}: must be a positive finite float32" */
static int check_scale(mk_text *t, float value, int layer, const char *what)
{
    if (is_finite_positive(value)) {
        return 0;
    }
    if (layer >= 0) {
        where(t, (unsigned)layer);
        mk_text_str(t, " ");
    }
    mk_text_str(t, what);
    mk_text_str(t, " = ");
    mk_text_py_float(t, value);
    return fail(t, ": must be a positive finite float32");
}

/* _check_ints: f"{what} holds {bad}; allowed range [{lo}, {hi}]" (bad: the least value if
 * it is below lo, else the greatest) */
static int check_range(mk_text *t, int layer, const char *what, int64_t min, int64_t max,
                       int64_t lo, int64_t hi)
{
    if (min >= lo && max <= hi) {
        return 0;
    }
    if (layer >= 0) {
        where(t, (unsigned)layer);
        mk_text_str(t, " ");
    }
    mk_text_str(t, what);
    mk_text_str(t, " holds ");
    mk_text_int(t, min < lo ? min : max);
    mk_text_str(t, "; allowed range [");
    mk_text_int(t, lo);
    mk_text_str(t, ", ");
    mk_text_int(t, hi);
    return fail(t, "]");
}

static int check_acc_bound(mk_text *t, unsigned i, uint64_t max_abs)
{
    if (max_abs <= (uint64_t)INT32_MAX_) {
        return 0;
    }
    where(t, i);
    mk_text_str(t, ": worst-case accumulator ");
    mk_text_uint(t, max_abs);
    return fail(t, " exceeds int32 (2147483647); the device accumulates in int32");
}

/* ------------------------------------------------------------------ header */

static int unpack_header(const uint8_t *data, uint32_t n, mk_text *t)
{
    static const uint8_t magic[4] = {'M', '1', 'W', 'P'};
    uint32_t head = n < 4u ? n : 4u;
    if (memcmp(data, magic, head) != 0) { /* short or not, another kind of file says so first */
        mk_text_str(t, "not a weight package: magic ");
        mk_text_py_bytes(t, data, head);
        return fail(t, ", expected b'M1WP'");
    }
    if (n < MK_HEADER_BYTES) {
        mk_text_str(t, "package truncated: ");
        mk_text_uint(t, n);
        return fail(t, " bytes, the header alone is 80");
    }
    if (mk_le16(data + 4) != 1u && mk_le16(data + 4) != 2u) {
        mk_text_str(t, "package format version ");
        mk_text_uint(t, mk_le16(data + 4));
        return fail(t, " is not supported (this reads 1 and 2)");
    }
    if (mk_le16(data + 6) != MK_HEADER_BYTES) {
        mk_text_str(t, "header size ");
        mk_text_uint(t, mk_le16(data + 6));
        mk_text_str(t, ": format version ");
        mk_text_uint(t, mk_le16(data + 4));
        return fail(t, " has 80");
    }
    return 0;
}

int mk_package_peek(const uint8_t *data, uint32_t n, mk_header *h, mk_text *why)
{
    if (n > MK_HEADER_BYTES) {
        n = MK_HEADER_BYTES;
    }
    if (unpack_header(data, n, why)) {
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
            return "invalid start byte";
        }
        need = c < 0xE0u ? 2u : c < 0xF0u ? 3u : 4u;
        if (c == 0xE0u) lo = 0xA0u;
        if (c == 0xEDu) hi = 0x9Fu;
        if (c == 0xF0u) lo = 0x90u;
        if (c == 0xF4u) hi = 0x8Fu;
        for (k = 1; k < need; k++) {
            unsigned b;
            if (i + k >= n) {
                return "unexpected end of data";
            }
            b = s[i + k];
            if (k == 1 ? (b < lo || b > hi) : (b & 0xC0u) != 0x80u) {
                return "invalid continuation byte";
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
            mk_text_str(t, "class name ");
            mk_text_uint(t, k);
            return fail(t, " runs past the end of the package");
        }
        len = data[pos];
        if (pos + 1u + len > limit) {
            mk_text_str(t, "class name ");
            mk_text_uint(t, k);
            mk_text_str(t, " (");
            mk_text_uint(t, len);
            return fail(t, " bytes) runs past the end of the package");
        }
        problem = utf8_problem(data + pos + 1, len);
        if (problem) {
            mk_text_str(t, "class name ");
            mk_text_uint(t, k);
            mk_text_str(t, " is not valid UTF-8 (");
            mk_text_str(t, problem);
            return fail(t, ")");
        }
        pos += 1u + len;
    }
    *end = start + align4(pos - start);
    for (stop = *end < limit ? *end : limit; pos < stop; pos++) {
        if (data[pos]) {
            return fail(t, "padding after the class names is not zero");
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
        mk_text_str(t, "codebook");
    } else {
        where(t, (unsigned)r->layer);
    }
}

/* _Reader.take: the next array of `count` items of `itemsize` bytes and its zero padding */
static const uint8_t *take(reader *r, unsigned itemsize, uint64_t count, mk_text *t)
{
    uint64_t n = count * itemsize, end = r->pos + align4_64(n), i;
    const uint8_t *p = r->blob + r->pos;
    if (end > r->size) {
        reader_where(t, r);
        mk_text_str(t, ": data size ");
        mk_text_uint(t, r->size);
        fail(t, " is too small for its arrays");
        return 0;
    }
    for (i = r->pos + n; i < end; i++) {
        if (r->blob[i]) {
            reader_where(t, r);
            fail(t, ": padding bytes after an array are not zero");
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
    mk_text_str(t, ": data size ");
    mk_text_uint(t, r->size);
    mk_text_str(t, ", its arrays use ");
    mk_text_uint(t, r->pos);
    return -1;
}

/* _decode_layer: the table entry and the arrays of layer i */
static int decode_layer(mk_layer *L, const uint8_t *entry, const uint8_t *blob, uint32_t size,
                        unsigned i, float *s_in, float *s_out, mk_text *t)
{
    unsigned code = entry[0], flags = entry[1], reserved = mk_le16(entry + 22);
    int8_t want_min, want_max, want_zp;
    int scale_ok;
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
    *s_in = le_f32(entry + 12);
    *s_out = le_f32(entry + 16);
    L->act_min = (int8_t)entry[20];
    L->act_max = (int8_t)entry[21];
    if (reserved) {
        where(t, i);
        mk_text_str(t, ": reserved field is ");
        mk_text_uint(t, reserved);
        return fail(t, ", must be 0");
    }
    if (code < MK_LAYER_DENSE || code > MK_LAYER_STEP) {
        where(t, i);
        mk_text_str(t, ": layer type ");
        mk_text_uint(t, code);
        return fail(t, " unknown (1 dense, 2 threshold, 3 step)");
    }
    if ((flags & ~1u) || (flags && code != MK_LAYER_DENSE)) {
        where(t, i);
        mk_text_str(t, ": flags 0x");
        mk_text_hex(t, flags, 2);
        mk_text_str(t, " not allowed for layer type ");
        mk_text_uint(t, code);
        return -1;
    }
    if (layer_dim(t, i, " n_in", L->n_in) || layer_dim(t, i, " n_out", L->n_out)) {
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
            where(t, i);
            mk_text_str(t, ": a threshold layer has as many outputs as inputs; got ");
            mk_text_uint(t, L->n_in);
            mk_text_str(t, " -> ");
            mk_text_uint(t, L->n_out);
            return -1;
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
        scale_ok = *s_out == *s_out; /* the scale is checked later; only NaN differs here */
        want_zp = L->zp_out;
        want_min = L->relu ? L->zp_out : -128;
        want_max = 127;
    } else {
        scale_ok = *s_out == 1.0f;
        want_zp = 0;
        want_min = 0;
        want_max = 1;
    }
    if (!scale_ok || L->zp_out != want_zp || L->act_min != want_min || L->act_max != want_max) {
        where(t, i);
        mk_text_str(t, ": output quantization (scale ");
        mk_text_py_float(t, *s_out);
        mk_text_str(t, ", zero point ");
        mk_text_int(t, L->zp_out);
        mk_text_str(t, ", range [");
        mk_text_int(t, L->act_min);
        mk_text_str(t, ", ");
        mk_text_int(t, L->act_max);
        return fail(t, "]) is inconsistent with its type and flags");
    }
    return 0;
}

/* ------------------------------------------------------------------ value checks */

/* the power of two 2^k for -1022 <= k <= 1023, exactly */
static double pow2(int k)
{
    uint64_t bits = (uint64_t)(k + 1023) << 52;
    double v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

static int check_dense(const mk_layer *L, unsigned i, float s_in, float s_out, mk_text *t)
{
    const uint32_t m = L->n_out, n = L->n_in;
    const uint8_t *ws = L->shift + 4u * m;
    int64_t wmin = 0, wmax = 0, mmin = INT32_MAX_, mmax = 0, smin = 0, smax = 0;
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
            where(t, i);
            mk_text_str(t, " multiplier[");
            mk_text_uint(t, o);
            mk_text_str(t, "] = ");
            mk_text_int(t, mult);
            return fail(t, ": must be 0 or in [2^30, 2^31-1]");
        }
    }
    for (o = 0; o < m; o++) {
        int32_t sh = le_i32(L->shift + 4u * o);
        if (le_i32(L->multiplier + 4u * o) == 0 && sh != 0) {
            where(t, i);
            mk_text_str(t, " shift[");
            mk_text_uint(t, o);
            mk_text_str(t, "] = ");
            mk_text_int(t, sh);
            return fail(t, ": must be 0 where the multiplier is 0");
        }
    }
    for (o = 0; o < m; o++) {
        if (!is_finite_positive(le_f32(ws + 4u * o))) {
            where(t, i);
            return fail(t, " weight_scale holds a value that is not positive and finite");
        }
    }
    if (check_scale(t, s_in, (int)i, "input_scale") ||
        check_scale(t, s_out, (int)i, "output_scale")) {
        return -1;
    }
    for (o = 0; o < m; o++) { /* the multiplier and shift encode the scales within 2^-28 */
        int32_t mult = le_i32(L->multiplier + 4u * o), sh = le_i32(L->shift + 4u * o);
        double real = (double)s_in * (double)le_f32(ws + 4u * o);
        double approx = (double)mult * pow2(sh - 31), off;
        int bad;
        real = real / (double)s_out;
        off = approx / real - 1.0;
        if (off < 0) {
            off = -off;
        }
        bad = mult == 0 ? real >= pow2(-31) : !(off <= pow2(-28));
        if (bad) {
            where(t, i);
            mk_text_str(t, " multiplier[");
            mk_text_uint(t, o);
            mk_text_str(t, "]/shift[");
            mk_text_uint(t, o);
            mk_text_str(t, "] = ");
            mk_text_int(t, mult);
            mk_text_str(t, "/");
            mk_text_int(t, sh);
            mk_text_str(t, " encode ");
            mk_text_py_g(t, approx, 9);
            mk_text_str(t, " but the scales give ");
            mk_text_py_g(t, real, 9);
            return -1;
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

static int check_threshold(const mk_layer *L, unsigned i, float s_in, mk_text *t)
{
    int64_t lo = 0, hi = 0;
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

/* f"{ptr[:8]}": numpy's str of an int64 array: right-aligned to the widest, wrapped at 75 */
static void numpy_row(mk_text *t, const uint8_t *ptr, uint32_t count)
{
    char words[8][11];
    unsigned lens[8], width = 0, k, line = 1; /* "[" stands for the hanging indent */
    if (count > 8) {
        count = 8;
    }
    for (k = 0; k < count; k++) {
        mk_text w;
        mk_text_init(&w, words[k], sizeof words[k]);
        mk_text_uint(&w, mk_le32(ptr + 4u * k));
        lens[k] = w.len;
        width = w.len > width ? w.len : width;
    }
    mk_text_str(t, "[");
    for (k = 0; k < count; k++) {
        unsigned pad;
        line += k ? 1u : 0u; /* the separator */
        if (line + width > 74u && line > 1u) {
            mk_text_str(t, "\n "); /* the separator is stripped from the end of a line */
            line = 1;
        } else if (k) {
            mk_text_str(t, " ");
        }
        for (pad = lens[k]; pad < width; pad++) {
            mk_text_str(t, " ");
        }
        mk_text_mem(t, words[k], lens[k]);
        line += width;
    }
    mk_text_str(t, "]");
}

static int check_step(const mk_layer *L, unsigned i, float s_in, mk_text *t)
{
    const uint32_t m = L->n_out;
    uint32_t j, k;
    int64_t lo = 0, hi = 0;
    uint64_t worst = 0;
    int bad = mk_le32(L->row_ptr) != 0;
    for (j = 0; j < m && !bad; j++) {
        bad = mk_le32(L->row_ptr + 4u * (j + 1u)) < mk_le32(L->row_ptr + 4u * j);
    }
    if (bad) {
        where(t, i);
        mk_text_str(t, " row_ptr must start at 0 and never decrease; got ");
        numpy_row(t, L->row_ptr, m + 1u);
        return fail(t, "...");
    }
    for (k = 0; k < L->nnz; k++) {
        int64_t c = mk_le16(L->cols + 2u * k);
        if (k == 0 || c < lo) lo = c;
        if (k == 0 || c > hi) hi = c;
    }
    if (check_range(t, (int)i, "cols", lo, hi, 0, (int64_t)L->n_in - 1)) {
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
            where(t, i);
            mk_text_str(t, " values[");
            mk_text_uint(t, k);
            return fail(t, "] is 0: store only connections");
        }
    }
    for (j = 0; j < m; j++) {
        uint32_t a = mk_le32(L->row_ptr + 4u * j), b = mk_le32(L->row_ptr + 4u * (j + 1u));
        uint64_t sum = 0;
        for (k = a; k < b; k++) {
            if (k > a && mk_le16(L->cols + 2u * k) <= mk_le16(L->cols + 2u * (k - 1u))) {
                where(t, i);
                mk_text_str(t, " row ");
                mk_text_uint(t, j);
                return fail(t, ": input indices must be strictly increasing");
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

/* 1 if two class names are the same; a bit per hash in `scratch` keeps this near linear */
static int names_repeat(const uint8_t *names, uint32_t count, uint8_t *scratch, uint32_t bytes)
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
                    return 1;
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
        mk_text_str(t, "number of classes 0");
        return check_dim(t, 0);
    }
    for (k = 0; k < m->n_classes; k++) {
        if (names[pos] == 0) {
            mk_text_str(t, "class ");
            mk_text_uint(t, k);
            return fail(t, " name '': must be a non-empty string");
        }
        pos += 1u + names[pos];
    }
    if (names_repeat(names, m->n_classes, scratch, scratch_bytes)) {
        mk_text_str(t, "class names repeat: [");
        for (k = 0, pos = 0; k < m->n_classes && !t->full; k++) {
            if (k) {
                mk_text_str(t, ", ");
            }
            mk_text_py_str(t, names + pos + 1, names[pos]);
            pos += 1u + names[pos];
        }
        return fail(t, "]");
    }
    if (m->head == MK_HEAD_ARGMAX) {
        if (m->n_classes != m->n_outputs) {
            mk_text_uint(t, m->n_classes);
            mk_text_str(t, " class names for ");
            mk_text_uint(t, m->n_outputs);
            return fail(t, " outputs (argmax head)");
        }
        return 0;
    }
    {
        uint32_t n = (uint32_t)m->n_classes * m->n_outputs;
        int64_t lo = 0, hi = 0;
        for (k = 0; k < n; k++) {
            if (k == 0 || m->codebook[k] < lo) lo = m->codebook[k];
            if (k == 0 || m->codebook[k] > hi) hi = m->codebook[k];
        }
        if (check_range(t, -1, "codebook", lo, hi, -1, 1)) {
            return -1;
        }
        for (k = 0; k < n; k++) {
            if (m->codebook[k] == 0) {
                return fail(t, "codebook entries must be -1 or +1; found 0");
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

/* "input_shape (20, 20)" as Python prints the tuple */
static void shape_tuple(mk_text *t, const uint32_t *dims, unsigned rank)
{
    unsigned k;
    mk_text_str(t, "(");
    for (k = 0; k < rank; k++) {
        if (k) {
            mk_text_str(t, ", ");
        }
        mk_text_uint(t, dims[k]);
    }
    mk_text_str(t, rank == 1 ? ",)" : ")");
}

int mk_package_load(mk_model *m, const uint8_t *data, uint32_t n, mk_text *t, uint8_t *scratch,
                    uint32_t scratch_bytes)
{
    float s_in[MK_MAX_LAYERS], s_out[MK_MAX_LAYERS], in_scale;
    uint8_t digest[32];
    uint32_t total, crc, calc, payload_start = 0, payload_size, payload_len, table_end, offset;
    uint32_t dims[3], rank, source, k;
    uint64_t n_inputs, width;
    const uint8_t *payload;
    unsigned i;
    int8_t zp;
    float scale;

    if (unpack_header(data, n, t)) {
        return -1;
    }
    total = mk_le32(data + 8);
    if (n < total) {
        mk_text_str(t, "package truncated: header says ");
        mk_text_uint(t, total);
        mk_text_str(t, " bytes, got ");
        mk_text_uint(t, n);
        return -1;
    }
    if (n > total) {
        mk_text_uint(t, n - total);
        mk_text_str(t, " trailing bytes after the ");
        mk_text_uint(t, total);
        return fail(t, "-byte package");
    }
    if (total < MK_HEADER_BYTES + CRC_BYTES) {
        mk_text_str(t, "total size ");
        mk_text_uint(t, total);
        return fail(t, " is smaller than header and CRC");
    }
    crc = mk_le32(data + total - CRC_BYTES);
    calc = mk_crc32(0, data, total - CRC_BYTES);
    if (calc != crc) {
        mk_text_str(t, "CRC-32 mismatch: stored 0x");
        mk_text_hex(t, crc, 8);
        mk_text_str(t, ", computed 0x");
        mk_text_hex(t, calc, 8);
        return -1;
    }
    mk_sha256(data + HASHED_FROM, total - CRC_BYTES - HASHED_FROM, digest);
    if (memcmp(digest, data + 0x0C, 32) != 0) {
        return fail(t, "model id does not match the SHA-256 of the package content");
    }
    /* version 2's rounding byte (0x3D) was reserved in version 1 */
    if (mk_le16(data + 4) == 1u && (data[0x3D] | data[0x3E] | data[0x3F])) {
        mk_text_str(t, "header reserved bytes are ");
        mk_text_hexbytes(t, data + 0x3D, 3);
        return fail(t, ", must be zero");
    }
    if (data[0x3D] > MK_ROUND_DOUBLE) {
        mk_text_str(t, "rounding code ");
        mk_text_uint(t, data[0x3D]);
        return fail(t, " unknown (0 single, 1 double)");
    }
    if (data[0x3E] | data[0x3F]) {
        mk_text_str(t, "header reserved bytes are ");
        mk_text_hexbytes(t, data + 0x3E, 2);
        return fail(t, ", must be zero");
    }
    source = data[0x2C];
    m->head = data[0x2D];
    m->n_layers = data[0x2E];
    rank = data[0x2F];
    if (source >= 2u) {
        mk_text_str(t, "source code ");
        mk_text_uint(t, source);
        return fail(t, " unknown (0 mlp, 1 markI)");
    }
    if (m->head > MK_HEAD_CODEBOOK) {
        mk_text_str(t, "head code ");
        mk_text_uint(t, m->head);
        return fail(t, " unknown (0 argmax, 1 codebook)");
    }
    if (m->n_layers < 1u || m->n_layers > MK_MAX_LAYERS) {
        mk_text_uint(t, m->n_layers);
        return fail(t, " layers: allowed 1 to 16");
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
            mk_text_str(t, "input rank ");
            mk_text_uint(t, rank);
            mk_text_str(t, " with dimensions ");
            shape_tuple(t, dims, 3);
            return fail(t, ": rank 1-3, unused dims 0");
        }
    }
    table_end = MK_HEADER_BYTES + MK_LAYER_ENTRY_BYTES * m->n_layers;
    if (table_end > total - CRC_BYTES) {
        mk_text_str(t, "layer table of ");
        mk_text_uint(t, m->n_layers);
        return fail(t, " entries runs past the end of the package");
    }
    m->n_classes = mk_le16(data + 0x36);
    if (decode_names(data, total - CRC_BYTES, table_end, m->n_classes, &payload_start, t)) {
        return -1;
    }
    payload_size = mk_le32(data + 0x4C);
    if ((uint64_t)payload_start + payload_size != total - CRC_BYTES) {
        mk_text_str(t, "payload size ");
        mk_text_uint(t, payload_size);
        mk_text_str(t, " does not fill the package: payload starts at ");
        mk_text_uint(t, payload_start);
        mk_text_str(t, ", CRC at ");
        mk_text_uint(t, total - CRC_BYTES);
        return -1;
    }
    payload = data + payload_start;
    payload_len = payload_size;
    offset = 0;
    for (i = 0; i < m->n_layers; i++) {
        const uint8_t *entry = data + MK_HEADER_BYTES + MK_LAYER_ENTRY_BYTES * i;
        uint32_t start = mk_le32(entry + 24), size = mk_le32(entry + 28);
        if (start != offset || size % 4u || (uint64_t)start + size > payload_len) {
            where(t, i);
            mk_text_str(t, ": data at offset ");
            mk_text_uint(t, start);
            mk_text_str(t, ", size ");
            mk_text_uint(t, size);
            mk_text_str(t, "; expected offset ");
            mk_text_uint(t, offset);
            mk_text_str(t, ", a multiple of 4, within the ");
            mk_text_uint(t, payload_len);
            return fail(t, "-byte payload");
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
        mk_text_uint(t, payload_len - offset);
        return fail(t, " unused bytes at the end of the payload");
    }

    /* validate_package */
    n_inputs = 1;
    for (k = 0; k < rank; k++) {
        n_inputs *= dims[k];
    }
    if (n_inputs > DIM_MAX) {
        mk_text_str(t, "input size ");
        mk_text_uint(t, n_inputs);
        mk_text_str(t, " (product of input_shape ");
        shape_tuple(t, dims, rank);
        mk_text_str(t, ")");
        return check_dim(t, n_inputs);
    }
    in_scale = le_f32(data + 0x38);
    if (check_scale(t, in_scale, -1, "input_scale")) {
        return -1;
    }
    m->input_zero_point = (int8_t)data[0x3C];
    width = n_inputs;
    scale = in_scale;
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
            where(t, i);
            mk_text_str(t, " takes ");
            mk_text_uint(t, L->n_in);
            mk_text_str(t, " inputs but receives ");
            mk_text_uint(t, width);
            return -1;
        }
        if (s_in[i] != scale || L->zp_in != zp) {
            where(t, i);
            mk_text_str(t, " input quantization (");
            mk_text_py_float(t, s_in[i]);
            mk_text_str(t, ", ");
            mk_text_int(t, L->zp_in);
            mk_text_str(t, ") differs from what it receives (");
            mk_text_py_float(t, scale);
            mk_text_str(t, ", ");
            mk_text_int(t, zp);
            return fail(t, ")");
        }
        width = L->n_out;
        scale = L->type == MK_LAYER_DENSE ? s_out[i] : 1.0f;
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
                mk_text_str(t, "header ");
                mk_text_str(t, names[k]);
                mk_text_str(t, " = ");
                mk_text_uint(t, stored[k]);
                mk_text_str(t, ", but the layer table gives ");
                mk_text_uint(t, derived[k]);
                return -1;
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
