/* Bounded text in the simulator's words: the NAK messages of the firmware are the Python
 * simulator's, character for character, so the values in them are formatted as Python
 * formats them (str of an int, repr of bytes, str and float, format(x, '.9g'), a numpy
 * array's str). No printf: the formatting is exact integer arithmetic, also on a part
 * without a floating-point unit.
 *
 * A text holds at most its capacity; what does not fit is cut at a character boundary
 * (mk_text_finish), as docs/PROTOCOL.md cuts NAK messages.
 */
#ifndef MK_TEXT_H
#define MK_TEXT_H

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
void mk_text_int(mk_text *t, int64_t v);
void mk_text_uint(mk_text *t, uint64_t v);
/* `digits` lowercase hex digits at least (no prefix): f"{v:08x}" is mk_text_hex(t, v, 8). */
void mk_text_hex(mk_text *t, uint32_t v, unsigned digits);
/* bytes.hex() */
void mk_text_hexbytes(mk_text *t, const uint8_t *p, size_t n);
/* repr(bytes) */
void mk_text_py_bytes(mk_text *t, const uint8_t *p, size_t n);
/* repr(str) of valid UTF-8 */
void mk_text_py_str(mk_text *t, const uint8_t *utf8, size_t n);
/* repr(float) == str(float): the shortest digits that read back as `v` */
void mk_text_py_float(mk_text *t, double v);
/* format(v, f".{precision}g"), 1 <= precision <= 17 */
void mk_text_py_g(mk_text *t, double v, int precision);
/* Cut an incomplete UTF-8 character off the end of a text that did not fit; its length. */
uint32_t mk_text_finish(mk_text *t);

/* Python's str.isprintable() of one code point (Unicode tables of Python 3.11). */
int mk_unicode_printable(uint32_t cp);

#endif
