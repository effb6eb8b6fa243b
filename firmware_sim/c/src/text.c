#include "text.h"

#include <string.h>

static const char hexdigits[] = "0123456789abcdef";

void mk_text_init(mk_text *t, char *buf, uint32_t cap)
{
    t->buf = buf;
    t->cap = cap;
    t->len = 0;
    t->full = 0;
}

void mk_text_mem(mk_text *t, const void *s, size_t n)
{
    size_t room = t->cap - t->len;
    if (n > room) {
        n = room;
        t->full = 1;
    }
    memcpy(t->buf + t->len, s, n);
    t->len += (uint32_t)n;
}

void mk_text_str(mk_text *t, const char *s)
{
    mk_text_mem(t, s, strlen(s));
}

static void put(mk_text *t, char c)
{
    mk_text_mem(t, &c, 1);
}

void mk_text_uint(mk_text *t, uint64_t v)
{
    char digits[20];
    unsigned n = 0;
    do {
        digits[sizeof digits - 1 - n++] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v);
    mk_text_mem(t, digits + sizeof digits - n, n);
}

void mk_text_int(mk_text *t, int64_t v)
{
    if (v < 0) {
        put(t, '-');
        mk_text_uint(t, (uint64_t)0 - (uint64_t)v);
    } else {
        mk_text_uint(t, (uint64_t)v);
    }
}

void mk_text_hex(mk_text *t, uint32_t v, unsigned digits)
{
    char out[8];
    unsigned n = 0;
    do {
        out[7 - n++] = hexdigits[v & 0xFu];
        v >>= 4;
    } while (v || n < digits);
    mk_text_mem(t, out + 8 - n, n);
}

void mk_text_hexbytes(mk_text *t, const uint8_t *p, size_t n)
{
    size_t i;
    for (i = 0; i < n && !t->full; i++) {
        char pair[2] = {hexdigits[p[i] >> 4], hexdigits[p[i] & 0xFu]};
        mk_text_mem(t, pair, 2);
    }
}

static void escape_x(mk_text *t, unsigned c)
{
    char e[4] = {'\\', 'x', hexdigits[(c >> 4) & 0xFu], hexdigits[c & 0xFu]};
    mk_text_mem(t, e, 4);
}

/* The quote Python's repr picks: ' unless the text holds ' and no ". */
static char quote_for(const uint8_t *p, size_t n)
{
    int single = memchr(p, '\'', n) != NULL, dbl = memchr(p, '"', n) != NULL;
    return single && !dbl ? '"' : '\'';
}

/* \t \n \r, a backslash or the quote escaped; 1 if `c` was one of them. */
static int escape_common(mk_text *t, unsigned c, char quote)
{
    char e[2] = {'\\', 0};
    switch (c) {
    case '\t': e[1] = 't'; break;
    case '\n': e[1] = 'n'; break;
    case '\r': e[1] = 'r'; break;
    case '\\': e[1] = '\\'; break;
    default:
        if (c != (unsigned char)quote) {
            return 0;
        }
        e[1] = quote;
    }
    mk_text_mem(t, e, 2);
    return 1;
}

void mk_text_py_bytes(mk_text *t, const uint8_t *p, size_t n)
{
    char quote = quote_for(p, n);
    size_t i;
    put(t, 'b');
    put(t, quote);
    for (i = 0; i < n && !t->full; i++) {
        unsigned c = p[i];
        if (escape_common(t, c, quote)) {
            continue;
        }
        if (c < 0x20u || c >= 0x7Fu) {
            escape_x(t, c);
        } else {
            put(t, (char)c);
        }
    }
    put(t, quote);
}

/* The code point at p (valid UTF-8); its length in *len. */
static uint32_t utf8_at(const uint8_t *p, unsigned *len)
{
    if (p[0] < 0x80u) {
        *len = 1;
        return p[0];
    }
    if (p[0] < 0xE0u) {
        *len = 2;
        return (uint32_t)(p[0] & 0x1Fu) << 6 | (p[1] & 0x3Fu);
    }
    if (p[0] < 0xF0u) {
        *len = 3;
        return (uint32_t)(p[0] & 0x0Fu) << 12 | (uint32_t)(p[1] & 0x3Fu) << 6 | (p[2] & 0x3Fu);
    }
    *len = 4;
    return (uint32_t)(p[0] & 0x07u) << 18 | (uint32_t)(p[1] & 0x3Fu) << 12 |
           (uint32_t)(p[2] & 0x3Fu) << 6 | (p[3] & 0x3Fu);
}

void mk_text_py_str(mk_text *t, const uint8_t *p, size_t n)
{
    char quote = quote_for(p, n);
    size_t i = 0;
    put(t, quote);
    while (i < n && !t->full) {
        unsigned len;
        uint32_t cp = utf8_at(p + i, &len);
        if (escape_common(t, cp, quote)) {
            /* done */
        } else if (cp < 0x20u || cp == 0x7Fu) {
            escape_x(t, cp);
        } else if (cp < 0x7Fu || mk_unicode_printable(cp)) {
            mk_text_mem(t, p + i, len);
        } else if (cp <= 0xFFu) {
            escape_x(t, cp);
        } else {
            int wide = cp > 0xFFFFu;
            put(t, '\\');
            put(t, wide ? 'U' : 'u');
            mk_text_hex(t, cp, wide ? 8 : 4);
        }
        i += len;
    }
    put(t, quote);
}

uint32_t mk_text_finish(mk_text *t)
{
    if (t->full && t->len) {
        /* drop a multi-byte character whose end was cut off */
        uint32_t start = t->len - 1, need;
        unsigned char lead;
        while (start > 0 && ((unsigned char)t->buf[start] & 0xC0u) == 0x80u && t->len - start < 4) {
            start--;
        }
        lead = (unsigned char)t->buf[start];
        need = lead < 0x80u ? 1 : lead < 0xE0u ? 2 : lead < 0xF0u ? 3 : 4;
        if (t->len - start < need) {
            t->len = start;
        }
    }
    return t->len;
}

/* ------------------------------------------------------------------ exact decimal digits
 *
 * A finite double is f * 2^e exactly. Its digits are found with big integers (r/s is the
 * value, m+ and m- the distances to the neighbouring doubles, all scaled alike): Steele &
 * White / Burger & Dybvig's free-format algorithm for the shortest digits that read back as
 * the same double (what Python's repr prints), and plain long division with round-half-even
 * for a fixed number of digits (what format(x, '.9g') prints). */

#define BN_WORDS 40 /* 1280 bits: 2^1076 and 10^17 times the largest double fit */

typedef struct {
    uint32_t w[BN_WORDS];
    unsigned n; /* words in use; w[n-1] != 0 unless n == 0 */
} bignum;

static void bn_set(bignum *a, uint64_t v)
{
    a->w[0] = (uint32_t)v;
    a->w[1] = (uint32_t)(v >> 32);
    a->n = a->w[1] ? 2 : a->w[0] ? 1 : 0;
}

static void bn_mul(bignum *a, uint32_t m)
{
    uint64_t carry = 0;
    unsigned i;
    for (i = 0; i < a->n; i++) {
        carry += (uint64_t)a->w[i] * m;
        a->w[i] = (uint32_t)carry;
        carry >>= 32;
    }
    if (carry && a->n < BN_WORDS) {
        a->w[a->n++] = (uint32_t)carry;
    }
}

static void bn_pow10(bignum *a, unsigned k)
{
    static const uint32_t small[10] = {1u, 10u, 100u, 1000u, 10000u, 100000u, 1000000u,
                                       10000000u, 100000000u, 1000000000u};
    while (k >= 9) {
        bn_mul(a, small[9]);
        k -= 9;
    }
    bn_mul(a, small[k]);
}

static void bn_shl(bignum *a, unsigned bits)
{
    unsigned words = bits / 32u, rest = bits % 32u, i;
    if (a->n == 0) {
        return;
    }
    if (rest) {
        uint32_t carry = 0;
        for (i = 0; i < a->n; i++) {
            uint32_t v = a->w[i];
            a->w[i] = v << rest | carry;
            carry = v >> (32u - rest);
        }
        if (carry && a->n < BN_WORDS) {
            a->w[a->n++] = carry;
        }
    }
    if (words) {
        if (a->n + words > BN_WORDS) {
            words = BN_WORDS - a->n;
        }
        for (i = a->n; i-- > 0;) {
            a->w[i + words] = a->w[i];
        }
        for (i = 0; i < words; i++) {
            a->w[i] = 0;
        }
        a->n += words;
    }
}

static int bn_cmp(const bignum *a, const bignum *b)
{
    unsigned i;
    if (a->n != b->n) {
        return a->n < b->n ? -1 : 1;
    }
    for (i = a->n; i-- > 0;) {
        if (a->w[i] != b->w[i]) {
            return a->w[i] < b->w[i] ? -1 : 1;
        }
    }
    return 0;
}

static void bn_add(bignum *out, const bignum *a, const bignum *b)
{
    const bignum *longer = a->n >= b->n ? a : b, *shorter = a->n >= b->n ? b : a;
    uint64_t carry = 0;
    unsigned i;
    for (i = 0; i < longer->n; i++) {
        carry += (uint64_t)longer->w[i] + (i < shorter->n ? shorter->w[i] : 0u);
        out->w[i] = (uint32_t)carry;
        carry >>= 32;
    }
    out->n = longer->n;
    if (carry && out->n < BN_WORDS) {
        out->w[out->n++] = (uint32_t)carry;
    }
}

static void bn_sub(bignum *a, const bignum *b) /* a -= b, with a >= b */
{
    int64_t borrow = 0;
    unsigned i;
    for (i = 0; i < a->n; i++) {
        int64_t v = (int64_t)a->w[i] - (i < b->n ? b->w[i] : 0u) - borrow;
        borrow = v < 0;
        a->w[i] = (uint32_t)(v + (borrow ? INT64_C(0x100000000) : 0));
    }
    while (a->n && a->w[a->n - 1] == 0) {
        a->n--;
    }
}

/* floor(r / s) for r < 10 s, and r becomes r mod s. */
static int bn_digit(bignum *r, const bignum *s)
{
    int d = 0;
    while (bn_cmp(r, s) >= 0) {
        bn_sub(r, s);
        d++;
    }
    return d;
}

/* f, e with |v| = f * 2^e (v finite, nonzero) */
static void decompose(double v, uint64_t *f, int *e, int *unequal)
{
    uint64_t bits;
    int biased;
    memcpy(&bits, &v, sizeof bits);
    biased = (int)((bits >> 52) & 0x7FFu);
    *f = bits & ((UINT64_C(1) << 52) - 1u);
    if (biased == 0) {
        *e = -1074;
    } else {
        *f |= UINT64_C(1) << 52;
        *e = biased - 1075;
    }
    /* the next double down is half as far when v is a power of two above the smallest normal */
    *unequal = biased > 1 && *f == UINT64_C(1) << 52;
}

/* A first guess of the decimal exponent: floor(log10(2) * (bits of v - 1)). */
static int guess_k(uint64_t f, int e)
{
    int bits = e, k;
    int64_t t;
    while (f) {
        bits++;
        f >>= 1;
    }
    t = (int64_t)(bits - 1) * 78913; /* log10(2) ~ 78913 / 2^18 */
    k = (int)(t >= 0 ? t / 262144 : -((-t + 262143) / 262144));
    return k;
}

static void scale(bignum *r, bignum *s, bignum *mp, bignum *mm, int k)
{
    if (k >= 0) {
        bn_pow10(s, (unsigned)k);
    } else {
        bn_pow10(r, (unsigned)-k);
        if (mp) {
            bn_pow10(mp, (unsigned)-k);
            bn_pow10(mm, (unsigned)-k);
        }
    }
}

/* Shortest digits of v > 0 that read back as v; value = 0.DIGITS * 10^decpt. */
static unsigned digits_shortest(double v, char *out, int *decpt)
{
    bignum r, s, mp, mm, t;
    uint64_t f;
    int e, unequal, even, k, c;
    unsigned n = 0;
    decompose(v, &f, &e, &unequal);
    even = (f & 1u) == 0;
    if (e >= 0) {
        bn_set(&r, f);
        bn_shl(&r, (unsigned)(e + 1 + unequal));
        bn_set(&s, unequal ? 4u : 2u);
        bn_set(&mp, 1);
        bn_shl(&mp, (unsigned)(e + unequal));
        bn_set(&mm, 1);
        bn_shl(&mm, (unsigned)e);
    } else {
        bn_set(&r, f << (1 + unequal));
        bn_set(&s, 1);
        bn_shl(&s, (unsigned)(1 - e + unequal));
        bn_set(&mp, unequal ? 2u : 1u);
        bn_set(&mm, 1);
    }
    k = guess_k(f, e);
    scale(&r, &s, &mp, &mm, k);
    for (;;) { /* the high end of the interval must lie below 10^k */
        bn_add(&t, &r, &mp);
        c = bn_cmp(&t, &s);
        if (!(even ? c >= 0 : c > 0)) {
            break;
        }
        bn_mul(&s, 10);
        k++;
    }
    for (;;) { /* ... and not below 10^(k-1) */
        bn_add(&t, &r, &mp);
        bn_mul(&t, 10);
        c = bn_cmp(&t, &s);
        if (!(even ? c < 0 : c <= 0)) {
            break;
        }
        bn_mul(&r, 10);
        bn_mul(&mp, 10);
        bn_mul(&mm, 10);
        k--;
    }
    *decpt = k;
    for (;;) {
        int d, low, high;
        bn_mul(&r, 10);
        bn_mul(&mp, 10);
        bn_mul(&mm, 10);
        d = bn_digit(&r, &s);
        c = bn_cmp(&r, &mm);
        low = even ? c <= 0 : c < 0;
        bn_add(&t, &r, &mp);
        c = bn_cmp(&t, &s);
        high = even ? c >= 0 : c > 0;
        if (!low && !high) {
            out[n++] = (char)('0' + d);
            continue;
        }
        if (low && high) { /* both ends reachable: the nearer digit, ties to even */
            bn_add(&t, &r, &r);
            c = bn_cmp(&t, &s);
            if (c > 0 || (c == 0 && (d & 1))) {
                d++;
            }
        } else if (high) {
            d++;
        }
        out[n++] = (char)('0' + d);
        return n;
    }
}

/* `ndig` digits of v > 0, rounded half to even on the exact value; value = 0.DIGITS * 10^decpt. */
static void digits_fixed(double v, unsigned ndig, char *out, int *decpt)
{
    bignum r, s, t;
    uint64_t f;
    int e, unequal, k;
    unsigned i;
    decompose(v, &f, &e, &unequal);
    bn_set(&r, f);
    bn_set(&s, 1);
    if (e >= 0) {
        bn_shl(&r, (unsigned)e);
    } else {
        bn_shl(&s, (unsigned)-e);
    }
    k = guess_k(f, e);
    scale(&r, &s, NULL, NULL, k);
    while (bn_cmp(&r, &s) >= 0) {
        bn_mul(&s, 10);
        k++;
    }
    for (;;) {
        t = r;
        bn_mul(&t, 10);
        if (bn_cmp(&t, &s) >= 0) {
            break;
        }
        r = t;
        k--;
    }
    for (i = 0; i < ndig; i++) {
        bn_mul(&r, 10);
        out[i] = (char)('0' + bn_digit(&r, &s));
    }
    bn_add(&t, &r, &r);
    {
        int c = bn_cmp(&t, &s);
        if (c > 0 || (c == 0 && ((out[ndig - 1] - '0') & 1))) {
            i = ndig;
            while (i > 0 && out[i - 1] == '9') {
                out[--i] = '0';
            }
            if (i == 0) {
                out[0] = '1';
                k++;
            } else {
                out[i - 1]++;
            }
        }
    }
    *decpt = k;
}

/* Python's exponent: e, a sign and at least two digits. */
static void put_exponent(mk_text *t, int exp)
{
    put(t, 'e');
    put(t, exp < 0 ? '-' : '+');
    if (exp < 0) {
        exp = -exp;
    }
    if (exp < 10) {
        put(t, '0');
    }
    mk_text_uint(t, (uint64_t)exp);
}

/* Digits laid out as Python's format_float_short does; `dot0` adds ".0" to whole numbers. */
static void put_digits(mk_text *t, const char *d, unsigned n, int decpt, int use_exp, int dot0)
{
    if (use_exp) {
        put(t, d[0]);
        if (n > 1) {
            put(t, '.');
            mk_text_mem(t, d + 1, n - 1);
        }
        put_exponent(t, decpt - 1);
    } else if (decpt <= 0) {
        put(t, '0');
        put(t, '.');
        for (; decpt < 0; decpt++) {
            put(t, '0');
        }
        mk_text_mem(t, d, n);
    } else if ((unsigned)decpt >= n) {
        mk_text_mem(t, d, n);
        for (; (unsigned)decpt > n; decpt--) {
            put(t, '0');
        }
        if (dot0) {
            mk_text_str(t, ".0");
        }
    } else {
        mk_text_mem(t, d, (unsigned)decpt);
        put(t, '.');
        mk_text_mem(t, d + decpt, n - (unsigned)decpt);
    }
}

/* nan, inf, zero and the sign; 1 if nothing is left to print. */
static int special(mk_text *t, double *v, int zero_dot0)
{
    uint64_t bits;
    memcpy(&bits, v, sizeof bits);
    if (((bits >> 52) & 0x7FFu) == 0x7FFu && (bits & ((UINT64_C(1) << 52) - 1u))) {
        mk_text_str(t, "nan");
        return 1;
    }
    if (bits >> 63) {
        put(t, '-');
        bits &= ~(UINT64_C(1) << 63);
        memcpy(v, &bits, sizeof bits);
    }
    if (((bits >> 52) & 0x7FFu) == 0x7FFu) {
        mk_text_str(t, "inf");
        return 1;
    }
    if (bits == 0) {
        mk_text_str(t, zero_dot0 ? "0.0" : "0");
        return 1;
    }
    return 0;
}

void mk_text_py_float(mk_text *t, double v)
{
    char d[20];
    int decpt;
    unsigned n;
    if (special(t, &v, 1)) {
        return;
    }
    n = digits_shortest(v, d, &decpt);
    put_digits(t, d, n, decpt, decpt <= -4 || decpt > 16, 1);
}

void mk_text_py_g(mk_text *t, double v, int precision)
{
    char d[20];
    int decpt;
    unsigned n = (unsigned)precision;
    if (special(t, &v, 0)) {
        return;
    }
    digits_fixed(v, n, d, &decpt);
    while (n > 1 && d[n - 1] == '0') {
        n--;
    }
    put_digits(t, d, n, decpt, decpt <= -4 || decpt > precision, 0);
}
