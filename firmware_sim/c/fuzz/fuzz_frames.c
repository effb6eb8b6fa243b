/* libFuzzer target: arbitrary bytes into the device -- the frame decoder and the message
 * handler -- of a part that has a model committed (fuzz/seed_package.h: the 3 -> 2 dense
 * package of docs/PACKAGE.md; fuzz_package runs the other layer kinds), under AddressSanitizer
 * and UndefinedBehaviorSanitizer. Every reply must be a well-formed frame (COBS, CRC, length,
 * a reply type) and, after each input, the device still answers HELLO with INFO.
 * (tests/test_firmware_device.py feeds fuzzed frames to this device and to the simulator and
 * compares the replies byte for byte; this target looks for memory errors and undefined
 * behaviour, a million inputs at a time.)
 *
 * Each input starts from the same state: the flash as it was after the commit, the device
 * as it booted from it. Build: make fuzz; run: build/fuzz/fuzz_frames
 * (tests/test_firmware_fuzz.py). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crc32.h"
#include "device.h"
#include "host_flash.h"
#include "seed_package.h"

#define FLASH_BYTES 16384u
#define PAGE_BYTES 512u

static host_flash flash;
static mk_device device;
static mk_device_config config;
static uint8_t snapshot[FLASH_BYTES];
static uint32_t snapshot_erases[FLASH_BYTES / PAGE_BYTES];
static mk_device booted; /* the device just after its boot from that flash */
static unsigned replies;
static uint8_t last_type;
static uint16_t last_seq;

uint32_t mk_hal_millis(void) { return 0; }

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_frames: %s\n", what);
        abort();
    }
}

/* every reply: one COBS chunk, its delimiter, a frame with a good CRC and length */
static void check_reply(void *ctx, uint8_t type, const uint8_t *wire, size_t n)
{
    static uint8_t copy[MK_COBS_MAX(MK_REPLY_MAX + MK_FRAME_OVERHEAD) + 1u];
    long len;
    (void)ctx;
    check(n >= 2 && n <= sizeof copy && wire[n - 1] == 0, "a reply is not one delimited chunk");
    check(memchr(wire, 0, n - 1) == NULL, "a zero byte inside a reply");
    memcpy(copy, wire, n - 1);
    len = mk_cobs_decode(copy, n - 1);
    check(len >= (long)MK_FRAME_OVERHEAD, "a reply that is not COBS or too short");
    check(mk_le32(copy + len - 4) == mk_crc32(0, copy, (size_t)len - 4u), "a reply's CRC");
    check(mk_le16(copy + 3) == (uint32_t)len - 9u, "a reply's length field");
    check(copy[0] == type && (type == MK_INFO || type == MK_ACK || type == MK_NAK ||
                              type == MK_READ_DATA || type == MK_RESULT || type == MK_STATUS_REPLY),
          "a reply of a type that is not a reply");
    if (type == MK_NAK) {
        check(len - 9 - 10 <= (long)MK_TEXT_MAX, "a NAK text longer than the limit");
    }
    replies++;
    last_type = type;
    last_seq = mk_le16(copy + 1);
}

static void send(uint8_t type, uint16_t seq, const uint8_t *payload, uint32_t n)
{
    static uint8_t buf[2 + MK_COBS_MAX(600u + MK_FRAME_OVERHEAD) + 1u];
    uint8_t *raw = buf + 2 + MK_COBS_SHIFT(n + MK_FRAME_OVERHEAD);
    size_t len;
    raw[0] = type;
    mk_put16(raw + 1, seq);
    mk_put16(raw + 3, n);
    memcpy(raw + 5, payload, n);
    mk_put32(raw + 5 + n, mk_crc32(0, raw, 5u + n));
    buf[0] = 0; /* end any partial frame first */
    len = mk_cobs_encode(buf + 1, raw, n + MK_FRAME_OVERHEAD);
    mk_device_receive(&device, buf, len + 1u, check_reply, 0);
}

static void setup(void)
{
    uint8_t begin[13];
    uint32_t crc = mk_crc32(0, seed_package, sizeof seed_package), at;
    config.max_payload = 512;
    config.ram_bytes = 4096;
    config.protocol_version = MK_PROTOCOL_VERSION;
    strcpy(config.name, "fuzz part");
    check(host_flash_open(&flash, FLASH_BYTES, PAGE_BYTES, 0, 10000) == 0, "flash");
    check(mk_device_init(&device, &config, &flash.flash.hal) == 0, "device");
    mk_put32(begin, sizeof seed_package);
    mk_put32(begin + 4, crc);
    mk_put32(begin + 8, 0);
    begin[12] = 0xFF;
    send(MK_BEGIN, 1, begin, sizeof begin);
    for (at = 0; at < sizeof seed_package; at += 500u) {
        uint8_t data[504];
        uint32_t n = sizeof seed_package - at < 500u ? sizeof seed_package - at : 500u;
        mk_put32(data, at);
        memcpy(data + 4, seed_package + at, n);
        send(MK_DATA, 2, data, n + 4u);
    }
    send(MK_COMMIT, 3, begin, 8);
    check(device.runnable, "the seed package is not running");
    memcpy(snapshot, flash.flash.mem, FLASH_BYTES);
    memcpy(snapshot_erases, flash.flash.erases, sizeof snapshot_erases);
    check(mk_device_init(&device, &config, &flash.flash.hal) == 0, "reboot");
    booted = device; /* its pointers lead into the flash and into itself, both in place */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    const uint8_t hello[2] = {MK_PROTOCOL_VERSION, 0};
    if (!ready) {
        setup();
        ready = 1;
    }
    memcpy(flash.flash.mem, snapshot, FLASH_BYTES);
    memcpy(flash.flash.erases, snapshot_erases, sizeof snapshot_erases);
    flash.flash.ops = 0;
    device = booted;
    mk_device_receive(&device, data, size, check_reply, 0);
    replies = 0;
    send(MK_HELLO, 0xBEEF, hello, 2); /* (the input may end in a frame this delimiter ends) */
    check(replies >= 1 && last_type == MK_INFO && last_seq == 0xBEEF,
          "the device no longer answers HELLO");
    return 0;
}
