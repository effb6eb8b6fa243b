/* The message handlers of firmware_sim/device.py, in C. Each refusal quotes the simulator's
 * words; the order of the checks is the simulator's. */
#include "device.h"

#include <stdarg.h>
#include <string.h>

#include "crc32.h"
#include "engine.h"
#include "sha256.h"
#include "text.h"

static union {
    int8_t bytes[MK_ARENA_BYTES];
    uint32_t align;
} arena MK_ARENA_PLACE;
int8_t *const mk_arena = arena.bytes;

#define RAW_AT MK_COBS_SHIFT(MK_REPLY_MAX + MK_FRAME_OVERHEAD)
#define MAX_CYCLES 0xFFFFFFFFu

/* ------------------------------------------------------------------ replies */

typedef struct {
    mk_device *d;
    const mk_frame *f;  /* the request */
    uint8_t *payload;   /* the reply payload, in d->tx */
    uint32_t length;
    uint8_t type;
} reply;

/* ACK and NAK begin alike: the request's type, (a NAK:) the error code, then `a` and `b`. */
static uint8_t *answer(reply *r, uint8_t type, uint8_t code, uint32_t a, uint32_t b)
{
    uint8_t *p = r->payload;
    r->type = type;
    *p++ = r->f->type;
    if (code) {
        *p++ = code;
    }
    mk_put32(p, a);
    mk_put32(p + 4, b);
    r->length = (uint32_t)(p + 8 - r->payload);
    return p + 8;
}

static void ack(reply *r, uint32_t a, uint32_t b)
{
    answer(r, MK_ACK, 0, a, b);
}

/* The error code of each NAK text (texts.def: MK_NAK_TEXT, first in the catalog) */
static const uint8_t nak_codes[] = {
#define MK_TEXT(id, text)
#define MK_NAK_TEXT(id, code, text) [id] = code,
#define MK_TEST_TEXT(id, text)
#include "texts.def"
#undef MK_TEXT
#undef MK_NAK_TEXT
#undef MK_TEST_TEXT
};

/* A NAK: the error code of its text, `a` and `b`, then the text from the catalog
 * (mk_text_format) with its values */
static void nak(reply *r, mk_text_id text, uint32_t a, uint32_t b, ...)
{
    mk_text t;
    va_list args;
    mk_text_init(&t, (char *)answer(r, MK_NAK, nak_codes[text], a, b), MK_TEXT_MAX);
    va_start(args, b);
    mk_text_vformat(&t, text, args);
    va_end(args);
    r->length += mk_text_finish(&t);
}

/* The name of a request's type, a text (texts.def: in the order of the types) */
static mk_text_id request_name(const mk_frame *f)
{
    return T_NAME_HELLO + f->type - MK_HELLO;
}

/* check_image_id: 1 (NAK written) unless the image id is none or a SHA-256 */
static int bad_image_id(reply *r, uint32_t id_len)
{
    if (id_len == 0 || id_len == 32) {
        return 0;
    }
    nak(r, T_IMAGE_ID_BYTES_EXPECTED, r->f->length, 0, request_name(r->f), id_len);
    return 1;
}

/* 1 (NAK TOO_LARGE_RAM written) if a model needing `need` bytes of RAM does not fit the arena */
static int too_large_for_ram(reply *r, uint32_t need)
{
    const uint32_t have = r->d->config.ram_bytes;
    if (need <= have) {
        return 0;
    }
    nak(r, T_MODEL_NEEDS_RAM, need, have, need, have);
    return 1;
}

static void flash_failed(reply *r, const char *why)
{
    r->d->upload.active = 0;
    nak(r, T_FLASH, 0, 0, why);
}

static uint32_t frame_room(const mk_device *d) /* int8 values one INFER or RESULT carries */
{
    return d->config.max_payload - 4u;
}

/* ------------------------------------------------------------------ loading a model */

/* Device._load, of the image in `slot`: 0 runnable; 1 decoded but does not fit; -1 not a
 * package. Why not, in `why` (MK_TEXT_MAX + 1 bytes, NUL-terminated). */
static int load(mk_device *d, mk_model *m, unsigned slot, uint32_t size, char *why)
{
    const uint32_t ram = d->config.ram_bytes, room = frame_room(d);
    mk_text t;
    int outcome = 0;
    mk_text_init(&t, why, MK_TEXT_MAX);
    if (mk_package_load(m, mk_store_slot(&d->store, slot), size, &t, (uint8_t *)mk_arena, ram)) {
        outcome = -1;
    } else if (m->ram_bytes > ram) {
        mk_text_format(&t, T_MODEL_NEEDS_RAM, m->ram_bytes, ram);
        outcome = 1;
    } else if (m->n_inputs > room || m->n_outputs > room) {
        mk_text_format(&t, T_MODEL_INPUTS_OUTPUTS_FRAME, m->n_inputs, m->n_outputs, room);
        outcome = 1;
    }
    why[mk_text_finish(&t)] = 0;
    return outcome;
}

/* d->model, as load() left it with `outcome`, is the active image's: whether it decoded, whether
 * it runs, and its cycle estimate (load() wrote why it does not run, or "", in d->load_error) */
static void use_model(mk_device *d, int outcome)
{
    d->has_package = outcome >= 0;
    d->runnable = outcome == 0;
#if MK_CYCLE_MODEL
    if (d->runnable) {
        uint64_t cycles = mk_cycle_estimate(&d->model);
        d->cycles = cycles > MAX_CYCLES ? MAX_CYCLES : (uint32_t)cycles;
    }
#endif
}

void mk_device_boot(mk_device *d)
{
    d->upload.active = 0;
    d->has_active = mk_store_active(&d->store, &d->active, d->active_sha256);
    if (!d->has_active) { /* STATUS: slot 0xFF, size and CRC 0 */
        memset(&d->active, 0, sizeof d->active);
        d->active.slot = 0xFFu;
    }
    d->load_error[0] = 0;
    use_model(d, d->has_active ? load(d, &d->model, d->active.slot, d->active.size, d->load_error)
                               : -1);
}

const char *mk_device_init(mk_device *d, const mk_device_config *config, mk_flash *flash)
{
    const char *why;
    if (config->max_payload < 64u || config->max_payload > MK_MAX_PAYLOAD) {
        return mk_text_reason(T_MAX_PAYLOAD_OUTSIDE_BUILD);
    }
    if (config->ram_bytes == 0 || config->ram_bytes > MK_ARENA_BYTES) {
        return mk_text_reason(T_ARENA_LARGER_THAN_BUILD);
    }
    memset(d, 0, sizeof *d);
    d->config = *config;
    d->flash = flash;
    if ((why = mk_store_init(&d->store, flash)) != 0) {
        return why;
    }
    mk_rx_init(&d->rx, d->rx_buf, config->max_payload);
    mk_device_boot(d);
    return 0;
}

void mk_device_new_session(mk_device *d)
{
    mk_rx_reset(&d->rx);
}

void mk_device_rx_overrun(mk_device *d)
{
    mk_rx_overrun(&d->rx);
}

/* ------------------------------------------------------------------ the upload's ranges */

/* Whether the upload has written byte `at` (Upload.written), and in *stop where that changes,
 * or `end` if sooner */
static int written(const mk_upload *u, uint32_t at, uint32_t end, uint32_t *stop)
{
    uint32_t k, start = 0, until = u->received; /* [0, received), then the ranges ahead */
    for (k = 0; at >= until && k < u->n_ahead; k++) {
        start = u->ahead[k][0];
        until = u->ahead[k][1];
    }
    if (at >= until) { /* past every range: not written up to `end` */
        start = until = end;
    }
    *stop = at >= start ? until : start; /* the end of the range `at` is in, or of its gap */
    *stop = *stop < end ? *stop : end;
    return at >= start;
}

/* Upload.written once [start, end) is added: the ranges in `out` (room for MK_MAX_AHEAD + 2),
 * [0, received) first, then those ahead, sorted and apart; returns how many are ahead */
static uint32_t with_range(const mk_upload *u, uint32_t start, uint32_t end, uint32_t out[][2])
{
    uint32_t k = u->n_ahead + 1u, n = 0;
    out[0][0] = 0;
    out[0][1] = u->received;
    memcpy(out + 1, u->ahead, u->n_ahead * sizeof out[0]);
    for (; out[k - 1][0] > start; k--) { /* the new range, by its start (out[0] starts at 0) */
        memcpy(out[k], out[k - 1], sizeof out[0]);
    }
    out[k][0] = start;
    out[k][1] = end;
    for (k = 1; k <= u->n_ahead + 1u; k++) { /* ranges that overlap or touch become one */
        if (out[k][0] <= out[n][1]) {
            out[n][1] = out[k][1] > out[n][1] ? out[k][1] : out[n][1];
        } else {
            n++;
            memcpy(out[n], out[k], sizeof out[0]);
        }
    }
    return n;
}

/* Upload.durable: the bytes of the upload in flash (out of line: DATA and STATUS use it) */
MK_NOINLINE static uint32_t durable(const mk_upload *u)
{
    uint32_t total = u->received, k;
    for (k = 0; k < u->n_ahead; k++) {
        total += u->ahead[k][1] - u->ahead[k][0];
    }
    return total;
}

/* ------------------------------------------------------------------ messages */

/* Each handler runs once the dispatch (below) has checked the payload's length. */

static void hello(reply *r)
{
    mk_device *d = r->d;
    uint8_t *p = r->payload;
    const uint32_t n = (uint32_t)strlen(d->config.name);
    r->type = MK_INFO;
    mk_put16(p, d->config.protocol_version);
    mk_put16(p + 2, d->config.max_payload);
    mk_put32(p + 4, d->flash->size);
    mk_put32(p + 8, d->flash->page_bytes);
    mk_put32(p + 12, d->store.slot_bytes);
    mk_put32(p + 16, d->config.ram_bytes);
    mk_put32(p + 20, MK_CLOCK_HZ);
    memcpy(p + 24, d->config.name, n);
    r->length = 24u + n;
}

static void begin(reply *r)
{
    mk_device *d = r->d;
    mk_upload *u = &d->upload;
    const uint8_t *p = r->f->payload, *id = p + 13;
    const uint32_t size = mk_le32(p), crc = mk_le32(p + 4), ram = mk_le32(p + 8);
    const uint32_t id_len = r->f->length - 13u, active = d->active.slot;
    uint32_t slot = p[12];
    if (size == 0) {
        nak(r, T_BEGIN_SIZE_0_IMAGE, r->f->length, 0);
        return;
    }
    if (bad_image_id(r, id_len)) {
        return;
    }
    if (size > d->store.slot_bytes) {
        nak(r, T_MODEL_BYTES_DOES_NOT, size, d->store.slot_bytes, size, d->store.slot_bytes);
        return;
    }
    if (too_large_for_ram(r, ram)) {
        return;
    }
    if (slot == 0xFFu) {
        slot = active != 0 ? 0 : 1;
    }
    if (slot > 1u || slot == active) {
        nak(r, slot == active ? T_SLOT_HOLDS_RUNNING_MODEL : T_SLOT_DOES_NOT_EXIST,
            slot, active, slot);
        return;
    }
    if (!u->active || u->slot != slot || u->size != size || u->crc32 != crc ||
        u->ram_bytes != ram || u->id_len != id_len || memcmp(u->image_id, id, id_len) != 0) {
        memset(u, 0, sizeof *u);
        u->active = 1;
        u->slot = (uint8_t)slot;
        u->size = size;
        u->crc32 = crc;
        u->ram_bytes = ram;
        u->id_len = (uint8_t)id_len;
        memcpy(u->image_id, id, id_len);
    }
    ack(r, u->received, slot);
}

/* Device._header_problem: 1 if the header, complete now, refuses the upload (NAK written) */
static int header_problem(reply *r)
{
    mk_device *d = r->d;
    mk_upload *u = &d->upload;
    mk_header h;
    mk_text why;
    char words[MK_TEXT_MAX + 1];
    uint32_t room = frame_room(d), widest;
    if (u->received < MK_HEADER_BYTES || u->header_checked) {
        return 0;
    }
    u->header_checked = 1;
    mk_text_init(&why, words, MK_TEXT_MAX);
    if (mk_package_peek(u->head, MK_HEADER_BYTES, &h, &why)) {
        words[mk_text_finish(&why)] = 0;
        nak(r, T_NOT_WEIGHT_PACKAGE, 0, 0, words);
    } else if (h.total_size != u->size) {
        nak(r, T_PACKAGE_HEADER_SAYS_BYTES, h.total_size, u->size, h.total_size, u->size);
    } else if (too_large_for_ram(r, h.ram_bytes)) {
        /* (its NAK is written) */
    } else if ((widest = h.n_inputs > h.n_outputs ? h.n_inputs : h.n_outputs) > room) {
        nak(r, T_MODEL_INPUTS_OUTPUTS_FRAME, widest, room, h.n_inputs, h.n_outputs, room);
    } else {
        return 0;
    }
    u->active = 0;
    return 1;
}

static void data(reply *r)
{
    mk_device *d = r->d;
    mk_upload *u = &d->upload;
    const uint32_t page = d->flash->page_bytes, offset = mk_le32(r->f->payload);
    const uint32_t n = r->f->length - 4u, end = offset + n; /* (no wrap once checked) */
    uint32_t ranges[MK_MAX_AHEAD + 2u][2], n_ahead, at, cut;
    if (!u->active) {
        nak(r, T_NO_UPLOAD_PROGRESS_SEND, 0, 0);
        return;
    }
    if (n == 0 || n > u->size || offset > u->size - n) { /* offset + n > size */
        nak(r, T_DATA_BYTES_NON_EMPTY, r->f->length, 0, n, offset, u->size);
        return;
    }
    /* the ranges once these bytes are in: refused if they would be too many (bytes already
     * written add none, so a frame sent twice is never refused) */
    n_ahead = with_range(u, offset, end, ranges);
    if (n_ahead > MK_MAX_AHEAD) {
        nak(r, T_EXPECTED_OFFSET_GOT_ALREADY, u->received, offset, u->received, offset, u->n_ahead);
        return;
    }
    /* only bytes not yet written, page by page: flash is written once. (A flash that fails
     * drops the upload, ranges and all.) */
    for (at = offset; at < end; at = cut) {
        const uint32_t index = at / page, page_end = (index + 1u) * page;
        const uint8_t *piece = r->f->payload + 4 + (at - offset);
        uint8_t *erased = &u->erased[index / 8u];
        const uint8_t bit = (uint8_t)(1u << (index % 8u));
        const char *why = 0;
        if (written(u, at, end < page_end ? end : page_end, &cut)) {
            continue;
        }
        if (!(*erased & bit)) { /* the first write into it */
            why = mk_store_erase(&d->store, u->slot, index);
            *erased |= bit;
        }
        if (why || (why = mk_store_write(&d->store, u->slot, at, piece, cut - at)) != 0) {
            flash_failed(r, why);
            return;
        }
        if (at < MK_HEADER_BYTES) {
            const uint32_t last = cut < MK_HEADER_BYTES ? cut : MK_HEADER_BYTES;
            memcpy(u->head + at, piece, last - at);
        }
    }
    u->received = ranges[0][1];
    u->n_ahead = n_ahead;
    memcpy(u->ahead, ranges + 1, n_ahead * sizeof ranges[0]);
    if (header_problem(r)) {
        return;
    }
    ack(r, u->received, durable(u));
}

/* The image of `slot` (size, CRC-32 and SHA-256 checked) becomes the active model: it is
 * loaded as the candidate (NAK if it cannot run here: Device._unrunnable), and unless
 * `check_only` the upload is dropped, the commit record that makes it active appended (NAK
 * FLASH if the flash refuses) and the candidate run. ACK: the slot and the image's CRC. */
static void switch_to(reply *r, unsigned slot, uint32_t size, uint32_t crc, const uint8_t sha[32],
                      int check_only)
{
    mk_device *d = r->d;
    char words[MK_TEXT_MAX + 1];
    const int outcome = load(d, &d->candidate, slot, size, words);
    mk_record rec;
    const char *fault;
    if (outcome < 0) {
        nak(r, T_NOT_WEIGHT_PACKAGE, 0, 0, words);
        return;
    }
    if (outcome > 0) {
        const uint32_t need = d->candidate.ram_bytes;
        nak(r, need > d->config.ram_bytes ? T_WORDS_RAM : T_WORDS, need, d->config.ram_bytes,
            words);
        return;
    }
    if (!check_only) {
        d->upload.active = 0; /* it was writing this slot, or is committed now */
        if ((fault = mk_store_commit(&d->store, slot, size, crc, sha, &rec)) != 0) {
            flash_failed(r, fault);
            return;
        }
        d->has_active = 1;
        d->active = rec;
        memcpy(d->active_sha256, sha, 32);
        d->model = d->candidate;
        d->load_error[0] = 0;
        use_model(d, 0);
    }
    ack(r, slot, crc);
}

static void commit(reply *r)
{
    mk_device *d = r->d;
    mk_upload *u = &d->upload;
    const uint8_t *p = r->f->payload, *id = p + 8, *image;
    const uint32_t size = mk_le32(p), crc = mk_le32(p + 4), id_len = r->f->length - 8u;
    uint32_t calc;
    uint8_t sha[32];
    if (bad_image_id(r, id_len)) {
        return;
    }
    if (!u->active || (id_len && (u->id_len != id_len || memcmp(u->image_id, id, id_len) != 0))) {
        if (id_len && d->has_active && memcmp(id, d->active_sha256, 32) == 0 &&
            d->active.size == size && d->active.crc32 == crc) {
            ack(r, d->active.slot, d->active.crc32); /* a repeat: its ACK was lost */
            return;
        }
        /* "image " + digest.hex()[:16], or unnamed */
        nak(r, T_NO_UPLOAD_PROGRESS_COMMIT, 0, 0, id_len ? T_IMAGE_NAMED : T_IMAGE_UNNAMED, id,
            id_len ? 8u : 0u);
        return;
    }
    if (size != u->size || crc != u->crc32) {
        nak(r, T_COMMIT_NAMES_BYTES_CRC, crc, u->crc32, size, crc, u->size, u->crc32);
        return;
    }
    if (u->received < u->size) {
        nak(r, T_ONLY_BYTES_RECEIVED, u->received, u->size, u->received, u->size);
        return;
    }
    u->active = 0; /* (from here size and crc are the upload's) */
    image = mk_store_slot(&d->store, u->slot);
    calc = mk_crc32(0, image, size);
    if (calc != crc) {
        nak(r, T_IMAGE_FLASH_HAS_CRC, calc, u->crc32, calc, u->crc32);
        return;
    }
    mk_sha256(image, size, sha);
    if (u->id_len && memcmp(sha, u->image_id, 32) != 0) {
        nak(r, T_IMAGE_FLASH_HAS_SHA, mk_le32(sha), mk_le32(u->image_id), sha,
            (uint32_t)8, u->image_id, (uint32_t)8);
        return;
    }
    switch_to(r, u->slot, size, crc, sha, 0);
}

static void rollback(reply *r)
{
    mk_device *d = r->d;
    const uint32_t slot = r->f->payload[0], flags = r->f->payload[1];
    const uint32_t active = d->active.slot;
    uint8_t sha[32];
    mk_record found;
    if (flags & ~MK_ROLLBACK_CHECK) {
        nak(r, T_ROLLBACK_FLAGS_0X_ONLY, r->f->length, 0, flags);
        return;
    }
    if (slot > 1u) {
        nak(r, T_SLOT_DOES_NOT_EXIST, slot, active, slot);
        return;
    }
    if (slot == active) { /* running already (or a repeat) */
        ack(r, d->active.slot, d->active.crc32);
        return;
    }
    if (!mk_store_committed(&d->store, slot, &found, sha)) {
        nak(r, T_HOLDS_NO_COMMITTED_MODEL, slot, active, T_SLOT_A + slot);
        return;
    }
    switch_to(r, slot, found.size, found.crc32, sha, flags & MK_ROLLBACK_CHECK);
}

static void abort_upload(reply *r)
{
    r->d->upload.active = 0;
    ack(r, 0, 0);
}

static void read_slot(reply *r)
{
    mk_device *d = r->d;
    const uint8_t *p = r->f->payload;
    const uint32_t offset = mk_le32(p + 1), length = mk_le16(p + 5), room = frame_room(d);
    uint32_t slot = p[0], limit;
    if (slot == 0xFFu) {
        if (!d->has_active) {
            nak(r, T_NO_ACTIVE_MODEL_READ, 0, 0);
            return;
        }
        slot = d->active.slot;
        limit = d->active.size;
    } else if (slot > 1u) {
        nak(r, T_SLOT_DOES_NOT_EXIST_READ, slot, 0, slot);
        return;
    } else if (d->upload.active && d->upload.slot == slot) {
        limit = d->upload.received; /* only what this upload has written */
    } else {
        limit = d->store.slot_bytes;
    }
    if (length > room) {
        nak(r, T_READ_BYTES_ONE_REPLY, r->f->length, 0, length, room);
        return;
    }
    if (offset > limit || length > limit - offset) { /* offset + length > limit */
        nak(r, T_READ_PAST_READABLE_BYTES,
            offset > 0xFFFFFFFFu - length ? 0xFFFFFFFFu : offset + length, limit, offset, length,
            limit);
        return;
    }
    r->type = MK_READ_DATA;
    mk_put32(r->payload, offset);
    memcpy(r->payload + 4, mk_store_slot(&d->store, slot) + offset, length);
    r->length = 4u + length;
}

static void infer(reply *r)
{
    mk_device *d = r->d;
    const uint32_t n = r->f->length;
    uint32_t spent = d->cycles;
    const int8_t *y;
    if (!d->runnable) {
        nak(r, d->load_error[0] ? T_NO_RUNNABLE_MODEL : T_NO_MODEL_COMMITTED, 0, 0, d->load_error);
        return;
    }
    if (n != d->model.n_inputs) {
        nak(r, T_INPUT_BYTES_MODEL_TAKES, n, d->model.n_inputs, n, d->model.n_inputs);
        return;
    }
    if (d->config.measure) {
        d->config.measure(1);
    }
    y = mk_engine_run(&d->model, (const int8_t *)r->f->payload, mk_arena, MK_ENGINE_PATH);
    if (d->config.measure) {
        spent = d->config.measure(0);
    }
    r->type = MK_RESULT;
    mk_put32(r->payload, spent);
    memcpy(r->payload + 4, y, d->model.n_outputs);
    r->length = 4u + d->model.n_outputs;
}

static void status(reply *r)
{
    mk_device *d = r->d;
    const mk_upload *u = &d->upload;
    uint32_t page, worst = 0, total = 0;
    uint8_t *p = r->payload;
    for (page = 0; page < d->store.n_pages; page++) {
        uint32_t c = d->flash->erase_count(d->flash->ctx, page);
        worst = c > worst ? c : worst;
        total += c;
    }
    r->type = MK_STATUS_REPLY;
    r->length = 47;
    memset(p, 0, 47); /* no runnable model, no upload: their fields 0 */
    p[0] = (uint8_t)d->active.slot;
    mk_put32(p + 1, d->active.size);
    mk_put32(p + 5, d->active.crc32);
    if (d->runnable) {
        mk_put16(p + 9, d->model.n_inputs);
        mk_put16(p + 11, d->model.n_outputs);
        p[13] = 1;
    }
    p[14] = 0xFFu;
    if (u->active) {
        p[14] = u->slot;
        mk_put32(p + 15, u->size);
        mk_put32(p + 19, u->crc32);
        mk_put32(p + 23, u->received);
        mk_put32(p + 27, durable(u));
    }
    mk_put32(p + 31, worst);
    mk_put32(p + 35, total);
    mk_put32(p + 39, d->rx.frames);
    mk_put32(p + 43, d->rx.errors);
    if (d->has_package) {
        memcpy(p + 47, d->model.model_id, 32);
        r->length += 32;
    }
}

static void reset(reply *r)
{
    mk_device_boot(r->d);
    ack(r, 0, 0);
}

/* ------------------------------------------------------------------ dispatch */

/* How a request's payload length is checked before its handler runs, as the simulator's
 * Payload.unpack and Device._no_payload do (NAK BAD_PAYLOAD, `a` = the length; its text is
 * T_PAYLOAD_BYTES_EXPECTED + the rule, texts.def). */
enum {
    EXACTLY,   /* "{NAME} payload of {n} bytes; expected {length}" */
    AT_LEAST,  /* "... expected {length} or more" */
    NO_PAYLOAD /* "{NAME} takes no payload; got {n} bytes" */
};

typedef struct {
    uint8_t rule, length;
    void (*handle)(reply *r);
} message;

/* One row per request of docs/PROTOCOL.md ("Messages"), by type (its name: request_name). */
static const message messages[MK_ROLLBACK] = {
    /* HELLO u16 version: answered with INFO whatever the version ("Handshake") */
    [MK_HELLO - 1] = {EXACTLY, 2, hello},
    /* BEGIN u32 size, u32 crc32, u32 ram_bytes, u8 slot, then an image id ("Upload" 1) */
    [MK_BEGIN - 1] = {AT_LEAST, 13, begin},
    /* DATA u32 offset, then at least one image byte ("Upload" 2: selective repeat) */
    [MK_DATA - 1] = {AT_LEAST, 4, data},
    /* COMMIT u32 size, u32 crc32, then an image id ("Upload" 4) */
    [MK_COMMIT - 1] = {AT_LEAST, 8, commit},
    /* ABORT: no payload; drops the upload in progress */
    [MK_ABORT - 1] = {NO_PAYLOAD, 0, abort_upload},
    /* READ u8 slot, u32 offset, u16 length ("Upload" 3: read-back) */
    [MK_READ - 1] = {EXACTLY, 7, read_slot},
    /* INFER: the input vector, any length here; the model checks it (BAD_INPUT) */
    [MK_INFER - 1] = {AT_LEAST, 0, infer},
    /* STATUS: no payload ("Status") */
    [MK_STATUS - 1] = {NO_PAYLOAD, 0, status},
    /* RESET: no payload; the upload is lost, the device boots from flash again */
    [MK_RESET - 1] = {NO_PAYLOAD, 0, reset},
    /* ROLLBACK u8 slot, u8 flags ("Rollback") */
    [MK_ROLLBACK - 1] = {EXACTLY, 2, rollback},
};

/* Device.handle: a type that is no request gets UNKNOWN_TYPE; a payload of the wrong length,
 * BAD_PAYLOAD; anything else is the handler's. */
static void dispatch(reply *r)
{
    const mk_frame *f = r->f;
    const uint32_t n = f->length;
    const message *m;
    if ((uint32_t)f->type - 1u >= MK_ROLLBACK) {
        nak(r, T_FRAME_TYPE_0X_NOT, f->type, 0, (uint32_t)f->type);
        return;
    }
    m = &messages[f->type - 1u];
    if (m->rule == AT_LEAST ? n < m->length : n != m->length) { /* (NO_PAYLOAD: length 0) */
        nak(r, T_PAYLOAD_BYTES_EXPECTED + m->rule, n, 0, request_name(f), n, (uint32_t)m->length);
        return;
    }
    m->handle(r);
}

/* ------------------------------------------------------------------ frames */

static size_t encode(uint8_t *out, uint8_t *raw, uint8_t type, uint16_t seq, uint32_t length)
{
    raw[0] = type;
    mk_put16(raw + 1, seq);
    mk_put16(raw + 3, length);
    mk_put32(raw + 5 + length, mk_crc32(0, raw, 5u + length));
    return mk_cobs_encode(out, raw, 9u + length);
}

size_t mk_device_handle(mk_device *d, const mk_frame *f, uint8_t *reply_type)
{
    uint8_t *raw = d->tx + RAW_AT;
    reply r;
    r.d = d;
    r.f = f;
    r.payload = raw + 5;
    r.length = 0;
    r.type = 0;
    dispatch(&r);
    *reply_type = r.type;
    return encode(d->tx, raw, r.type, f->seq, r.length);
}

void mk_device_receive(mk_device *d, const uint8_t *bytes, size_t n, mk_emit emit, void *ctx)
{
    size_t i;
    for (i = 0; i < n; i++) {
        mk_frame f;
        if (mk_rx_byte(&d->rx, bytes[i], &f)) {
            uint8_t type;
            size_t len = mk_device_handle(d, &f, &type);
            emit(ctx, type, d->tx, len);
        }
    }
}

size_t mk_busy_reply(const mk_frame *f, uint8_t *out)
{
    uint8_t *raw = out + MK_COBS_SHIFT(9u + 10u + 100u); /* the text is under 100 bytes */
    uint8_t *p = raw + 5;
    const char *text = mk_text_reason(T_DEVICE_SERVING_ANOTHER_HOST);
    const uint32_t n = (uint32_t)strlen(text);
    memcpy(p + 10, text, n);
    p[0] = f->type;
    p[1] = MK_ERR_BUSY;
    mk_put32(p + 2, 0);
    mk_put32(p + 6, 0);
    return encode(out, raw, MK_NAK, f->seq, 10u + n);
}
