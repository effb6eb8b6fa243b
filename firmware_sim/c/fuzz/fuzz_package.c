/* libFuzzer target: arbitrary bytes into the package loader, under AddressSanitizer and
 * UndefinedBehaviorSanitizer. The first byte chooses whether the rest is "sealed" (its model
 * id and CRC-32 recomputed, as tests/test_fuzz.py's seal does) so that the checks past the
 * CRC and the SHA-256 are reached. A refusal must be a non-empty valid UTF-8 text within the
 * limit; an accepted package must run, and both engine paths must give the same bits and a
 * class within range. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crc32.h"
#include "engine.h"
#include "frame.h"
#include "package.h"
#include "sha256.h"

uint32_t mk_hal_millis(void) { return 0; }

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_package: %s\n", what);
        abort();
    }
}

static int valid_utf8(const uint8_t *s, uint32_t n)
{
    uint32_t i = 0;
    while (i < n) {
        uint32_t need = s[i] < 0x80u   ? 1u
                        : s[i] < 0xC2u ? 0u
                        : s[i] < 0xE0u ? 2u
                        : s[i] < 0xF0u ? 3u
                        : s[i] < 0xF5u ? 4u
                                       : 0u,
                 k;
        if (need == 0 || i + need > n) {
            return 0;
        }
        for (k = 1; k < need; k++) {
            if ((s[i + k] & 0xC0u) != 0x80u) {
                return 0;
            }
        }
        i += need;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static union { uint8_t bytes[1u << 16]; uint32_t align; } image;
    static union { int8_t bytes[1u << 18]; uint32_t align; } arena;
    static int8_t first[1u << 16], input[1u << 16];
    static uint8_t scratch[512];
    static mk_model m;
    char words[MK_TEXT_MAX];
    mk_text why;
    mk_header h;
    uint32_t n, k;
    if (size < 1 || size - 1u > sizeof image.bytes) {
        return 0;
    }
    n = (uint32_t)size - 1u;
    memcpy(image.bytes, data + 1, n);
    if ((data[0] & 1u) && n >= 0x2Cu + 4u) {
        mk_sha256(image.bytes + 0x2C, n - 4u - 0x2Cu, image.bytes + 0x0C);
        mk_put32(image.bytes + n - 4u, mk_crc32(0, image.bytes, n - 4u));
    }
    mk_text_init(&why, words, sizeof words);
    mk_package_peek(image.bytes, n, &h, &why);
    mk_text_init(&why, words, sizeof words);
    if (mk_package_load(&m, image.bytes, n, &why, (data[0] & 2u) ? scratch : 0, sizeof scratch)) {
        uint32_t len = mk_text_finish(&why);
        check(len > 0 && len <= MK_TEXT_MAX, "a refusal without words, or too long");
        check(valid_utf8((const uint8_t *)words, len), "a refusal that is not UTF-8");
        return 0;
    }
    if (m.ram_bytes > sizeof arena.bytes) {
        return 0;
    }
    for (k = 0; k < m.n_inputs; k++) {
        input[k] = (int8_t)(data[k % size] ^ (uint8_t)k);
    }
    memcpy(first, mk_engine_run(&m, input, arena.bytes, MK_PATH_REFERENCE), m.n_outputs);
    check(memcmp(first, mk_engine_run(&m, input, arena.bytes, MK_PATH_PORTABLE), m.n_outputs) == 0,
          "the reference and the portable path differ");
    check(memcmp(first, mk_engine_run(&m, input, arena.bytes, MK_PATH_DSP), m.n_outputs) == 0,
          "the reference and the DSP path differ");
    check(mk_decide(&m, first) < (m.codebook ? m.n_classes : m.n_outputs), "a class out of range");
    return 0;
}
