#include "text.h"

#include <stdarg.h>
#include <string.h>

#include "texts_packed.h"

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

/* v / 10 in place and v % 10, with 32-bit divisions only (a 32-bit part has no 64-bit
 * divide instruction, and the library routine is large): long division by 16-bit digits. */
static unsigned divide_by_10(uint64_t *v)
{
    const uint32_t high = (uint32_t)(*v >> 32), low = (uint32_t)*v;
    const uint32_t mid = (high % 10u) << 16 | low >> 16;
    const uint32_t bottom = (mid % 10u) << 16 | (low & 0xFFFFu);
    *v = (uint64_t)(high / 10u) << 32 | (mid / 10u) << 16 | bottom / 10u;
    return bottom % 10u;
}

void mk_text_uint(mk_text *t, uint64_t v)
{
    char digits[20];
    unsigned n = 0;
    do {
        digits[sizeof digits - 1 - n++] = (char)('0' + divide_by_10(&v));
    } while (v);
    mk_text_mem(t, digits + sizeof digits - n, n);
}

void mk_text_hex(mk_text *t, uint32_t v, unsigned digits)
{
    char out[8];
    unsigned n = 0;
    do {
        const unsigned digit = v & 0xFu;
        out[7 - n++] = (char)(digit < 10u ? '0' + digit : 'a' - 10u + digit);
        v >>= 4;
    } while (v || n < digits);
    mk_text_mem(t, out + 8 - n, n);
}

void mk_text_hexbytes(mk_text *t, const uint8_t *p, size_t n)
{
    size_t i;
    for (i = 0; i < n && !t->full; i++) {
        mk_text_hex(t, p[i], 2);
    }
}

void mk_text_vprintf(mk_text *t, const char *format, va_list args)
{
    const char *f;
    for (f = format; *f; f++) {
        unsigned width = 0;
        if (*f != '%') {
            mk_text_mem(t, f, 1);
            continue;
        }
        if (f[1] >= '1' && f[1] <= '9') {
            width = (unsigned)(*++f - '0');
        }
        switch (*++f) {
        case 'd': {
            const int32_t v = va_arg(args, int32_t);
            if (v < 0) {
                put(t, '-');
            }
            mk_text_uint(t, v < 0 ? 0u - (uint32_t)v : (uint32_t)v);
            break;
        }
        case 'u': mk_text_uint(t, va_arg(args, uint32_t)); break;
        case 'U': mk_text_uint(t, va_arg(args, uint64_t)); break;
        case 'x': mk_text_hex(t, va_arg(args, uint32_t), width); break;
        case 's':
        case 't': { /* a string, or a text of the catalog */
            char text[MK_TEXT_LONGEST + 1];
            const char *s = text;
            if (*f == 's') {
                s = va_arg(args, const char *);
            } else {
                mk_text_expand(va_arg(args, mk_text_id), text);
            }
            mk_text_str(t, s);
            break;
        }
        case 'h': {
            const uint8_t *p = va_arg(args, const uint8_t *);
            mk_text_hexbytes(t, p, va_arg(args, uint32_t));
            break;
        }
        default: mk_text_mem(t, f, 1); /* %% */
        }
    }
}

void mk_text_printf(mk_text *t, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    mk_text_vprintf(t, format, args);
    va_end(args);
}

/* The code at `code` in the packed texts (texts_packed.h) expanded at *out; the next code. A
 * code that stands for others (tools/pack_texts.py: is_code, slot, INLINE) stands for the two
 * codes of its entry (a pair) or for codes of the packed texts themselves (a phrase). */
static const uint8_t *expand(const uint8_t *code, char **out)
{
    const unsigned c = *code++, slot = (c + 0x80u) & 0xFFu;
    const uint8_t *entry = code, *codes;
    unsigned n = 2;
    if (c < 0x80u && (c >= 0x20u || c == '\n' || c == 0)) { /* a character */
        *(*out)++ = (char)c;
        return code;
    }
    if (c == MK_TEXT_INLINE) { /* a phrase, its entry here */
        code += 2;
    } else {
        entry = mk_text_codes[slot];
    }
    codes = entry;
    if (c == MK_TEXT_INLINE || slot >= MK_TEXT_PAIRS) {
        codes = mk_text_packed + (entry[0] | (entry[1] & 0x0Fu) << 8);
        n = (entry[1] >> 4) + 1u;
    }
    while (n--) {
        codes = expand(codes, out);
    }
    return code;
}

uint32_t mk_text_expand(mk_text_id id, char *out)
{
    const uint8_t *p = mk_text_packed;
    char *end;
    do { /* the texts before it (each into `out` too), then it: each ends with its NUL */
        end = out;
        do {
            p = expand(p, &end);
        } while (end[-1]);
    } while (id--);
    return (uint32_t)(end - 1 - out);
}

const char *mk_text_reason(mk_text_id id)
{
    static char reason[MK_TEXT_LONGEST + 1];
    mk_text_expand(id, reason);
    return reason;
}

void mk_text_vformat(mk_text *t, mk_text_id id, va_list args)
{
    char format[MK_TEXT_LONGEST + 1];
    mk_text_expand(id, format);
    mk_text_vprintf(t, format, args);
}

int mk_text_format(mk_text *t, mk_text_id id, ...)
{
    va_list args;
    va_start(args, id);
    mk_text_vformat(t, id, args);
    va_end(args);
    return -1;
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
