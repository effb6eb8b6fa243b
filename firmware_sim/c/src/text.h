/* Bounded text in the simulator's words: the NAK messages of the firmware are the Python
 * simulator's, character for character. They hold integers, hex and fixed words only
 * (docs/PACKAGE.md, "Refusals"), so no printf and no floating point is needed.
 *
 * A text holds at most its capacity; what does not fit is cut at a character boundary
 * (mk_text_finish), as docs/PROTOCOL.md cuts NAK messages.
 */
#ifndef MK_TEXT_H
#define MK_TEXT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *buf;
    uint32_t cap;
    uint32_t len;
    int full;          /* something did not fit */
} mk_text;

void mk_text_init(mk_text *t, char *buf, uint32_t cap);
void mk_text_mem(mk_text *t, const void *s, size_t n);
void mk_text_str(mk_text *t, const char *s);
void mk_text_uint(mk_text *t, uint64_t v);
/* `digits` lowercase hex digits at least (no prefix): f"{v:08x}" is mk_text_hex(t, v, 8). */
void mk_text_hex(mk_text *t, uint32_t v, unsigned digits);
/* bytes.hex() */
void mk_text_hexbytes(mk_text *t, const uint8_t *p, size_t n);
/* Append text from a format and its values, as printf would but with only these conversions
 * (the values must have exactly these types):
 *   %u uint32_t   %d int32_t   %U uint64_t   %s const char *
 *   %x uint32_t in hex (%8x: at least 8 digits)   %h const uint8_t *, uint32_t n: bytes in hex
 *   %t mk_text_id: a text of the catalog (one without conversions)   %% a percent sign */
void mk_text_printf(mk_text *t, const char *format, ...);
void mk_text_vprintf(mk_text *t, const char *format, va_list args);

/* The catalog (texts.def): every text the firmware sends, by id (an unsigned, not the enum:
 * it is the last named parameter of the variadic functions below, and an enum may be
 * narrower than an int). */
enum {
#define MK_TEXT(id, text) id,
#define MK_NAK_TEXT(id, code, text) id,
#define MK_TEST_TEXT(id, text) id,
#include "texts.def"
#undef MK_TEXT
#undef MK_NAK_TEXT
#undef MK_TEST_TEXT
    MK_TEXT_COUNT
};
typedef unsigned mk_text_id;

/* mk_text_printf with the catalog's text `id` as the format; -1, the value of a refusal. */
int mk_text_format(mk_text *t, mk_text_id id, ...);
void mk_text_vformat(mk_text *t, mk_text_id id, va_list args);
/* A refusal: its text (mk_text_format), and -1 to return (one function: the image holds it
 * once). */
#define mk_text_refuse mk_text_format
/* The catalog's text `id` into `out` (MK_TEXT_LONGEST + 1 bytes, NUL-terminated; the texts
 * before it are expanded there too, on the way); its length. */
uint32_t mk_text_expand(mk_text_id id, char *out);
/* The catalog's text `id` as a string, in a buffer of its own that the next call overwrites:
 * the reason a function that refuses returns as `const char *` (one at a time). */
const char *mk_text_reason(mk_text_id id);
/* Cut an incomplete UTF-8 character off the end of a text that did not fit; its length. */
uint32_t mk_text_finish(mk_text *t);

#endif
