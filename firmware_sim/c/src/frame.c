#include "frame.h"

#include <string.h>

#include "crc32.h"

void mk_rx_init(mk_rx *rx, uint8_t *buf, uint32_t max_payload)
{
    rx->buf = buf;
    rx->cap = MK_COBS_MAX(max_payload + MK_FRAME_OVERHEAD);
    rx->len = 0;
    rx->overflow = 0;
    rx->frames = 0;
    rx->errors = 0;
}

void mk_rx_reset(mk_rx *rx)
{
    rx->len = 0;
    rx->overflow = 0;
}

void mk_rx_overrun(mk_rx *rx)
{
    rx->overflow = 1;
    rx->len = 0;
}

long mk_cobs_decode(uint8_t *data, size_t n)
{
    size_t i = 0, out = 0;
    while (i < n) {
        unsigned code = data[i];
        size_t end = i + code;
        if (code == 0 || end > n) {
            return -1;
        }
        memmove(data + out, data + i + 1, code - 1u);
        out += code - 1u;
        i = end;
        if (code != 255u && i < n) {
            data[out++] = 0;
        }
    }
    return (long)out;
}

static int decode_chunk(mk_rx *rx, mk_frame *frame)
{
    long n = mk_cobs_decode(rx->buf, rx->len);
    uint32_t body;
    if (n < (long)MK_FRAME_OVERHEAD) {
        return 0;
    }
    body = (uint32_t)n - 4u;
    if (mk_crc32(0, rx->buf, body) != mk_le32(rx->buf + body)) {
        return 0;
    }
    if (mk_le16(rx->buf + 3) != body - 5u) {
        return 0;
    }
    frame->type = rx->buf[0];
    frame->seq = mk_le16(rx->buf + 1);
    frame->length = (uint16_t)(body - 5u);
    frame->payload = rx->buf + 5;
    return 1;
}

int mk_rx_byte(mk_rx *rx, uint8_t byte, mk_frame *frame)
{
    int ok = 0;
    if (byte != 0) {
        if (!rx->overflow) {
            if (rx->len < rx->cap) {
                rx->buf[rx->len++] = byte;
            } else {
                rx->overflow = 1;
                rx->len = 0;
            }
        }
        return 0;
    }
    if (rx->overflow) {
        rx->errors++;
    } else if (rx->len) {
        ok = decode_chunk(rx, frame);
        if (ok) {
            rx->frames++;
        } else {
            rx->errors++;
        }
    }
    mk_rx_reset(rx);
    return ok;
}

size_t mk_cobs_encode(uint8_t *buf, const uint8_t *in, size_t n)
{
    size_t start = 0, w = 0;
    for (;;) {
        size_t limit = n < start + 254u ? n : start + 254u, end = start;
        int zero;
        while (end < limit && in[end] != 0) {
            end++;
        }
        zero = end < limit;
        /* the block moves left, never over bytes still to read: w + 1 + (end - start) is at
         * most (in - buf) + end, as each earlier block of 254 bytes without a zero added one
         * byte and in - buf >= MK_COBS_SHIFT(n) */
        memmove(buf + w + 1, in + start, end - start);
        buf[w] = (uint8_t)(end - start + 1u);
        w += end - start + 1u;
        if (zero) {
            start = end + 1u; /* the zero ends this block */
        } else if (end == n) {
            break;
        } else {
            start = end; /* 254 bytes without a zero: no zero consumed */
        }
    }
    buf[w++] = 0;
    return w;
}
