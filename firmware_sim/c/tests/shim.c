/* The firmware's portable code as a shared library for the Python tests (ctypes): the engine,
 * the loader, the formatting, the frames, and a whole device on an in-memory flash, so that
 * tests/test_firmware_*.py compare them with export/contract/golden.py,
 * export/contract/package.py and the simulator byte for byte. Not part of any firmware image. */
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include "device.h"
#include "engine.h"
#include "host_flash.h"
#include "package.h"
#include "text.h"

uint32_t mk_hal_millis(void) { return 0; }

/* A copy of a package, 4-byte aligned as a flash slot is. */
static uint8_t *aligned_copy(const uint8_t *data, uint32_t n)
{
    uint8_t *p = malloc(n ? n : 1u);
    if (p) {
        memcpy(p, data, n);
    }
    return p;
}

static uint32_t finish(mk_text *t, uint32_t *len)
{
    *len = mk_text_finish(t);
    return *len;
}

/* mk_package_load: 0 and [n_inputs, n_outputs, ram_bytes, n_layers, head, n_classes] in
 * info, or -1 and the refusal in why. */
int fw_package_load(const uint8_t *data, uint32_t n, char *why, uint32_t cap, uint32_t *why_len,
                    uint32_t *info)
{
    static mk_model m;
    static uint8_t scratch[4096];
    uint8_t *copy = aligned_copy(data, n);
    mk_text t;
    int rc;
    mk_text_init(&t, why, cap);
    rc = mk_package_load(&m, copy, n, &t, scratch, sizeof scratch);
    finish(&t, why_len);
    if (rc == 0) {
        info[0] = m.n_inputs;
        info[1] = m.n_outputs;
        info[2] = m.ram_bytes;
        info[3] = m.n_layers;
        info[4] = m.head;
        info[5] = m.n_classes;
    }
    free(copy);
    return rc;
}

int fw_package_peek(const uint8_t *data, uint32_t n, char *why, uint32_t cap, uint32_t *why_len,
                    uint32_t *info)
{
    mk_header h;
    mk_text t;
    int rc;
    mk_text_init(&t, why, cap);
    rc = mk_package_peek(data, n, &h, &t);
    finish(&t, why_len);
    if (rc == 0) {
        info[0] = h.total_size;
        info[1] = h.n_inputs;
        info[2] = h.n_outputs;
        info[3] = h.ram_bytes;
    }
    return rc;
}

/* Run `count` inputs through a package: outputs to y (count x n_outputs), classes to classes.
 * `path` picks the dense kernels (MK_PATH_*); `rounding` sets every dense layer's
 * requantization mode (-1: the package's own).
 * 0, or -1 if the package does not load. */
int fw_run(const uint8_t *data, uint32_t n, const int8_t *x, uint32_t count, int8_t *y,
           uint32_t *classes, int path, int rounding, uint64_t *cycles)
{
    static mk_model m;
    static union { int8_t b[1u << 20]; uint32_t align; } arena;
    uint8_t *copy = aligned_copy(data, n);
    char why[MK_TEXT_MAX];
    mk_text t;
    uint32_t k, i;
    mk_text_init(&t, why, sizeof why);
    if (mk_package_load(&m, copy, n, &t, 0, 0) || m.ram_bytes > sizeof arena.b) {
        free(copy);
        return -1;
    }
    for (i = 0; i < m.n_layers && rounding >= 0; i++) {
        m.layers[i].rounding = (uint8_t)rounding;
    }
    for (k = 0; k < count; k++) {
        const int8_t *out = mk_engine_run(&m, x + (size_t)k * m.n_inputs, arena.b, path);
        memcpy(y + (size_t)k * m.n_outputs, out, m.n_outputs);
        classes[k] = mk_decide(&m, out);
    }
    *cycles = mk_cycle_estimate(&m);
    free(copy);
    return 0;
}

/* mk_text_printf's conversions on some values: "%u %d %U %x %8x %h %s%%" of
 * (small, (int32_t)small, big, small, small, the 8 bytes of big, "end"). */
uint32_t fw_text_format(char *out, uint32_t cap, uint64_t big, uint32_t small)
{
    uint8_t bytes[8];
    uint32_t len;
    mk_text t;
    memcpy(bytes, &big, sizeof bytes);
    mk_text_init(&t, out, cap);
    mk_text_printf(&t, "%u %d %U %x %8x %h %s%%", small, (int32_t)small, big, small, small,
                   bytes, (uint32_t)8, "end");
    return finish(&t, &len);
}

/* The catalog's text `id` as the firmware expands it from the packed texts (out: at least
 * MK_TEXT_LONGEST + 1 bytes); its length. fw_text_count: how many texts there are. */
uint32_t fw_text_catalog(uint32_t id, char *out) { return mk_text_expand(id, out); }
uint32_t fw_text_count(void) { return MK_TEXT_COUNT; }

uint32_t fw_text_max(void) { return MK_TEXT_MAX; }
uint32_t fw_max_ahead(void) { return MK_MAX_AHEAD; }

/* ------------------------------------------------------------------ a device in memory */

typedef struct {
    host_flash flash;
    mk_device device;
    uint8_t *out;
    uint32_t out_len, out_cap;
    int powered;
} fw_device;

static jmp_buf power_cut_jump;

static void power_cut(void *ctx, const char *kind, uint32_t done)
{
    (void)ctx;
    (void)kind;
    (void)done;
    longjmp(power_cut_jump, 1);
}

/* A device on a blank in-memory flash; 0 if the configuration is refused (why in `why`). */
fw_device *fw_device_new(uint32_t flash_bytes, uint32_t page_bytes, uint32_t ram_bytes,
                         uint32_t max_payload, const char *name, int64_t endurance,
                         uint32_t protocol_version, char *why, uint32_t cap)
{
    fw_device *d = calloc(1, sizeof *d);
    mk_device_config config;
    const char *problem;
    memset(&config, 0, sizeof config);
    config.max_payload = max_payload;
    config.ram_bytes = ram_bytes;
    config.protocol_version = protocol_version;
    strncpy(config.name, name, MK_NAME_MAX);
    problem = host_flash_open(&d->flash, flash_bytes, page_bytes, 0, endurance);
    if (!problem) {
        problem = mk_device_init(&d->device, &config, &d->flash.flash.hal);
    }
    d->flash.flash.power_cut = power_cut;
    d->powered = 1;
    if (problem) {
        strncpy(why, problem, cap - 1u);
        why[cap - 1u] = 0;
        host_flash_close(&d->flash);
        free(d);
        return 0;
    }
    return d;
}

void fw_device_free(fw_device *d)
{
    host_flash_close(&d->flash);
    free(d->out);
    free(d);
}

static void collect(void *ctx, uint8_t type, const uint8_t *wire, size_t n)
{
    fw_device *d = ctx;
    (void)type;
    if (d->out_len + n > d->out_cap) {
        d->out_cap = (uint32_t)(2u * (d->out_len + n));
        d->out = realloc(d->out, d->out_cap);
    }
    memcpy(d->out + d->out_len, wire, n);
    d->out_len += (uint32_t)n;
}

/* Feed received bytes; the encoded replies are in *out (valid until the next call). Their
 * length, or -1 if the power was cut (fw_device_cut) while handling them: the device is off
 * until fw_device_power_cycle. */
int64_t fw_device_receive(fw_device *d, const uint8_t *data, uint32_t n, const uint8_t **out)
{
    d->out_len = 0;
    *out = d->out;
    if (!d->powered) {
        return -1;
    }
    if (setjmp(power_cut_jump)) {
        d->powered = 0;
        return -1;
    }
    mk_device_receive(&d->device, data, n, collect, d);
    *out = d->out;
    return d->out_len;
}

/* Cut the power `keep` bytes into flash operation `op` (counted from power-on; -1: never). */
void fw_device_cut(fw_device *d, int64_t op, uint32_t keep)
{
    d->flash.flash.cut_op = op;
    d->flash.flash.cut_keep = keep;
}

/* Power off and on: RAM forgotten, flash kept (the operation count restarts, no cut set). */
void fw_device_power_cycle(fw_device *d)
{
    mk_device_config config = d->device.config;
    d->flash.flash.ops = 0;
    d->flash.flash.cut_op = -1;
    d->powered = 1;
    mk_device_init(&d->device, &config, &d->flash.flash.hal);
}

void fw_device_new_session(fw_device *d) { mk_device_new_session(&d->device); }

/* The flash: contents and erase counts (for comparing with the simulator's). */
const uint8_t *fw_device_flash(fw_device *d, uint32_t *size)
{
    *size = d->flash.flash.hal.size;
    return d->flash.flash.mem;
}

const uint32_t *fw_device_erases(fw_device *d, uint32_t *pages)
{
    *pages = d->flash.flash.n_pages;
    return d->flash.flash.erases;
}
uint64_t fw_device_flash_ops(fw_device *d) { return d->flash.flash.ops; }
/* Overwrite the flash (contents and erase counts) and boot from it. */
void fw_device_load_flash(fw_device *d, const uint8_t *mem, const uint32_t *erases)
{
    memcpy(d->flash.flash.mem, mem, d->flash.flash.hal.size);
    memcpy(d->flash.flash.erases, erases, 4u * d->flash.flash.n_pages);
    fw_device_power_cycle(d);
}
