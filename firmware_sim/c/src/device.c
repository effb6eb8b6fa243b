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
    uint8_t *payload;   /* the reply payload, in d->tx */
    uint32_t length;
    uint8_t type;
} reply;

static void ack(reply *r, uint8_t of, uint32_t a, uint32_t b)
{
    r->type = MK_ACK;
    r->payload[0] = of;
    mk_put32(r->payload + 1, a);
    mk_put32(r->payload + 5, b);
    r->length = 9;
}

/* A NAK with its text from the catalog (mk_text_format) and its values. */
static void nak(reply *r, const mk_frame *f, uint8_t code, uint32_t a, uint32_t b,
                mk_text_id text, ...)
{
    mk_text t;
    va_list args;
    r->type = MK_NAK;
    r->payload[0] = f->type;
    r->payload[1] = code;
    mk_put32(r->payload + 2, a);
    mk_put32(r->payload + 6, b);
    mk_text_init(&t, (char *)r->payload + 10, MK_TEXT_MAX);
    va_start(args, text);
    mk_text_vformat(&t, text, args);
    va_end(args);
    r->length = 10u + mk_text_finish(&t);
}

static const char *type_name(uint8_t type)
{
    switch (type) {
    case MK_HELLO: return "HELLO";
    case MK_BEGIN: return "BEGIN";
    case MK_DATA: return "DATA";
    case MK_COMMIT: return "COMMIT";
    case MK_ABORT: return "ABORT";
    case MK_READ: return "READ";
    case MK_INFER: return "INFER";
    case MK_STATUS: return "STATUS";
    case MK_ROLLBACK: return "ROLLBACK";
    default: return "RESET";
    }
}

/* Payload.unpack: f"{TYPE.name} payload of {n} bytes; expected {size}[ or more]" */
static int bad_length(reply *r, const mk_frame *f, uint32_t size, int tail)
{
    if (tail ? f->length >= size : f->length == size) {
        return 0;
    }
    nak(r, f, MK_ERR_BAD_PAYLOAD, f->length, 0, T_PAYLOAD_BYTES_EXPECTED,
        type_name(f->type), (uint32_t)f->length, size, tail ? " or more" : "");
    return 1;
}

/* check_image_id */
static int bad_image_id(reply *r, const mk_frame *f, uint32_t id_len)
{
    if (id_len == 0 || id_len == 32) {
        return 0;
    }
    nak(r, f, MK_ERR_BAD_PAYLOAD, f->length, 0, T_IMAGE_ID_BYTES_EXPECTED,
        type_name(f->type), id_len);
    return 1;
}

static int bad_empty(reply *r, const mk_frame *f)
{
    if (f->length == 0) {
        return 0;
    }
    nak(r, f, MK_ERR_BAD_PAYLOAD, f->length, 0, T_TAKES_NO_PAYLOAD_GOT,
        type_name(f->type), (uint32_t)f->length);
    return 1;
}

static void flash_failed(reply *r, const mk_frame *f, const char *why)
{
    r->d->upload.active = 0;
    nak(r, f, MK_ERR_FLASH, 0, 0, T_FLASH, why);
}

static uint32_t frame_room(const mk_device *d) /* int8 values one INFER or RESULT carries */
{
    return d->config.max_payload - 4u;
}

/* ------------------------------------------------------------------ loading a model */

/* Device._load: 0 runnable; 1 decoded but does not fit (why in t); -1 not a package */
static int load(mk_device *d, mk_model *m, const uint8_t *image, uint32_t size, mk_text *t)
{
    if (mk_package_load(m, image, size, t, (uint8_t *)mk_arena, d->config.ram_bytes)) {
        return -1;
    }
    if (m->ram_bytes > d->config.ram_bytes) {
        mk_text_format(t, T_MODEL_NEEDS_RAM, m->ram_bytes, d->config.ram_bytes);
        return 1;
    }
    if (m->n_inputs > frame_room(d) || m->n_outputs > frame_room(d)) {
        mk_text_format(t, T_MODEL_INPUTS_OUTPUTS_FRAME, m->n_inputs, m->n_outputs, frame_room(d));
        return 1;
    }
    return 0;
}

static void set_model(mk_device *d, const mk_model *m, int outcome, const mk_text *t)
{
    if (m != &d->model) {
        d->model = *m;
    }
    d->has_package = outcome >= 0;
    d->runnable = outcome == 0;
    {
        const uint32_t len = outcome == 0 ? 0 : t->len;
        memcpy(d->load_error, t->buf, len);
        d->load_error[len] = 0;
    }
    if (d->runnable) {
        uint64_t cycles = mk_cycle_estimate(m);
        d->cycles = cycles > MAX_CYCLES ? MAX_CYCLES : (uint32_t)cycles;
    }
}

void mk_device_boot(mk_device *d)
{
    d->upload.active = 0;
    d->has_active = mk_store_active(&d->store, &d->active, d->active_sha256);
    d->has_package = d->runnable = 0;
    d->load_error[0] = 0;
    if (d->has_active) {
        const uint8_t *image = mk_store_slot(&d->store, d->active.slot);
        char why[MK_TEXT_MAX];
        mk_text t;
        int outcome;
        mk_text_init(&t, why, MK_TEXT_MAX);
        outcome = load(d, &d->model, image, d->active.size, &t);
        mk_text_finish(&t);
        set_model(d, &d->model, outcome, &t);
    }
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

/* Upload.missing: the first part of [start, end) not yet written, from `pos` on; 0 if none */
static int next_gap(const mk_upload *u, uint64_t *pos, uint64_t end, uint64_t *gap_end)
{
    uint32_t k;
    if (*pos < u->received) {
        *pos = u->received;
    }
    for (k = 0; k < u->n_ahead; k++) {
        if (*pos >= end || u->ahead[k][0] >= end) {
            break;
        }
        if (u->ahead[k][0] > *pos) {
            *gap_end = u->ahead[k][0];
            return 1;
        }
        if (u->ahead[k][1] > *pos) {
            *pos = u->ahead[k][1];
        }
    }
    if (*pos < end) {
        *gap_end = end;
        return 1;
    }
    return 0;
}

/* Upload.with_range: (received, ranges ahead) once [start, end) is written; the number of
 * ranges ahead is returned, and they are written to `out` (room for MK_MAX_AHEAD + 1). */
static uint32_t with_range(const mk_upload *u, uint32_t start, uint32_t end, uint32_t *received,
                           uint32_t out[][2])
{
    uint32_t n = 0, k, i = 0, inserted = 0;
    uint32_t r = u->received;
    while (i < u->n_ahead || !inserted) { /* sorted merge of the new range into the table */
        uint32_t a, b;
        if (!inserted && (i == u->n_ahead || start < u->ahead[i][0] ||
                          (start == u->ahead[i][0] && end <= u->ahead[i][1]))) {
            a = start;
            b = end;
            inserted = 1;
        } else {
            a = u->ahead[i][0];
            b = u->ahead[i][1];
            i++;
        }
        if (n && a <= out[n - 1][1]) {
            if (b > out[n - 1][1]) {
                out[n - 1][1] = b;
            }
        } else {
            out[n][0] = a;
            out[n][1] = b;
            n++;
        }
    }
    k = 0;
    while (k < n && out[k][0] <= r) {
        if (out[k][1] > r) {
            r = out[k][1];
        }
        k++;
    }
    if (k) {
        memmove(out, out + k, (n - k) * sizeof out[0]);
        n -= k;
    }
    *received = r;
    return n;
}

static uint32_t durable(const mk_upload *u)
{
    uint32_t total = u->received, k;
    for (k = 0; k < u->n_ahead; k++) {
        total += u->ahead[k][1] - u->ahead[k][0];
    }
    return total;
}

/* ------------------------------------------------------------------ messages */

static void hello(reply *r, const mk_frame *f)
{
    mk_device *d = r->d;
    uint32_t n = (uint32_t)strlen(d->config.name);
    if (bad_length(r, f, 2, 0)) {
        return;
    }
    r->type = MK_INFO;
    mk_put16(r->payload, d->config.protocol_version);
    mk_put16(r->payload + 2, d->config.max_payload);
    mk_put32(r->payload + 4, d->flash->size);
    mk_put32(r->payload + 8, d->flash->page_bytes);
    mk_put32(r->payload + 12, d->store.slot_bytes);
    mk_put32(r->payload + 16, d->config.ram_bytes);
    mk_put32(r->payload + 20, MK_CLOCK_HZ);
    memcpy(r->payload + 24, d->config.name, n);
    r->length = 24u + n;
}

static void begin(reply *r, const mk_frame *f)
{
    mk_device *d = r->d;
    mk_upload *u = &d->upload;
    uint32_t size, crc, ram, id_len, slot, active;
    const uint8_t *id;
    if (bad_length(r, f, 13, 1)) {
        return;
    }
    size = mk_le32(f->payload);
    crc = mk_le32(f->payload + 4);
    ram = mk_le32(f->payload + 8);
    slot = f->payload[12];
    id = f->payload + 13;
    id_len = f->length - 13u;
    active = d->has_active ? d->active.slot : 0xFFu;
    if (size == 0) {
        nak(r, f, MK_ERR_BAD_PAYLOAD, f->length, 0, T_BEGIN_SIZE_0_IMAGE);
        return;
    }
    if (bad_image_id(r, f, id_len)) {
        return;
    }
    if (size > d->store.slot_bytes) {
        nak(r, f, MK_ERR_TOO_LARGE_FLASH, size, d->store.slot_bytes, T_MODEL_BYTES_DOES_NOT, size,
            d->store.slot_bytes);
        return;
    }
    if (ram > d->config.ram_bytes) {
        nak(r, f, MK_ERR_TOO_LARGE_RAM, ram, d->config.ram_bytes, T_MODEL_NEEDS_RAM, ram,
            d->config.ram_bytes);
        return;
    }
    if (slot == 0xFFu) {
        slot = active != 0 ? 0 : 1;
    }
    if (slot > 1u || slot == active) {
        nak(r, f, MK_ERR_BAD_SLOT, slot, active,
            slot == active ? T_SLOT_HOLDS_RUNNING_MODEL : T_SLOT_DOES_NOT_EXIST, slot);
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
    ack(r, f->type, u->received, slot);
}

/* Device._header_problem: 1 if the header, complete now, refuses the upload (NAK written) */
static int header_problem(reply *r, const mk_frame *f)
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
        nak(r, f, MK_ERR_BAD_PACKAGE, 0, 0, T_NOT_WEIGHT_PACKAGE, words);
    } else if (h.total_size != u->size) {
        nak(r, f, MK_ERR_BAD_PACKAGE, h.total_size, u->size, T_PACKAGE_HEADER_SAYS_BYTES,
            h.total_size, u->size);
    } else if (h.ram_bytes > d->config.ram_bytes) {
        nak(r, f, MK_ERR_TOO_LARGE_RAM, h.ram_bytes, d->config.ram_bytes, T_MODEL_NEEDS_RAM,
            h.ram_bytes, d->config.ram_bytes);
    } else if ((widest = h.n_inputs > h.n_outputs ? h.n_inputs : h.n_outputs) > room) {
        nak(r, f, MK_ERR_BAD_PACKAGE, widest, room, T_MODEL_INPUTS_OUTPUTS_FRAME, h.n_inputs,
            h.n_outputs, room);
    } else {
        return 0;
    }
    u->active = 0;
    return 1;
}

static void data(reply *r, const mk_frame *f)
{
    mk_device *d = r->d;
    mk_upload *u = &d->upload;
    const uint32_t page = d->flash->page_bytes;
    uint32_t offset, n, tmp[MK_MAX_AHEAD + 1u][2], received;
    uint64_t end, pos, gap_end;
    if (bad_length(r, f, 4, 1)) {
        return;
    }
    offset = mk_le32(f->payload);
    n = f->length - 4u;
    if (!u->active) {
        nak(r, f, MK_ERR_NO_UPLOAD, 0, 0, T_NO_UPLOAD_PROGRESS_SEND);
        return;
    }
    end = (uint64_t)offset + n;
    if (n == 0 || end > u->size) {
        nak(r, f, MK_ERR_BAD_PAYLOAD, f->length, 0, T_DATA_BYTES_NON_EMPTY, n, offset,
            u->size);
        return;
    }
    pos = offset;
    if (next_gap(u, &pos, end, &gap_end) &&
        with_range(u, offset, (uint32_t)end, &received, tmp) > MK_MAX_AHEAD) {
        nak(r, f, MK_ERR_OFFSET, u->received, offset, T_EXPECTED_OFFSET_GOT_ALREADY, u->received,
            offset, u->n_ahead);
        return;
    }
    pos = offset;
    /* only bytes not yet written: flash is written once */
    while (next_gap(u, &pos, end, &gap_end)) {
        const uint32_t start = (uint32_t)pos, stop = (uint32_t)gap_end;
        uint32_t at = start;
        while (at < stop) { /* page by page */
            const uint32_t index = at / page;
            const uint32_t cut = stop < (index + 1u) * page ? stop : (index + 1u) * page;
            const uint8_t *piece = f->payload + 4 + (at - offset);
            const char *why;
            if (!(u->erased[index / 8u] >> (index % 8u) & 1u)) { /* the first write into it */
                if ((why = mk_store_erase(&d->store, u->slot, index)) != 0) {
                    flash_failed(r, f, why);
                    return;
                }
                u->erased[index / 8u] |= (uint8_t)(1u << (index % 8u));
            }
            if ((why = mk_store_write(&d->store, u->slot, at, piece, cut - at)) != 0) {
                flash_failed(r, f, why);
                return;
            }
            if (at < MK_HEADER_BYTES) {
                const uint32_t last = cut < MK_HEADER_BYTES ? cut : MK_HEADER_BYTES;
                memcpy(u->head + at, piece, last - at);
            }
            at = cut;
        }
        u->n_ahead = with_range(u, start, stop, &received, tmp);
        u->received = received;
        memcpy(u->ahead, tmp, u->n_ahead * sizeof tmp[0]);
        pos = stop;
    }
    if (header_problem(r, f)) {
        return;
    }
    ack(r, f->type, u->received, durable(u));
}

/* Device._unrunnable: 1 (NAK written) if load() found no package or one that cannot run here;
 * `words` is why, in load()'s words. */
static int unrunnable(reply *r, const mk_frame *f, int outcome, const char *words)
{
    mk_device *d = r->d;
    if (outcome < 0) {
        nak(r, f, MK_ERR_BAD_PACKAGE, 0, 0, T_NOT_WEIGHT_PACKAGE, words);
        return 1;
    }
    if (outcome > 0) {
        const uint32_t need = d->candidate.ram_bytes;
        nak(r, f, need > d->config.ram_bytes ? MK_ERR_TOO_LARGE_RAM : MK_ERR_BAD_PACKAGE,
            need, d->config.ram_bytes, T_STR, words);
        return 1;
    }
    return 0;
}

/* Append the commit record that makes `slot` (its image checked and loaded into d->candidate)
 * active, and run the candidate: 0, or 1 with a FLASH NAK written. */
static int activate(reply *r, const mk_frame *f, unsigned slot, uint32_t size, uint32_t crc,
                    const uint8_t sha[32], const mk_text *why_text)
{
    mk_device *d = r->d;
    mk_record rec;
    const char *why;
    if ((why = mk_store_commit(&d->store, slot, size, crc, sha, &rec)) != 0) {
        flash_failed(r, f, why);
        return 1;
    }
    d->has_active = 1;
    d->active = rec;
    memcpy(d->active_sha256, sha, 32);
    set_model(d, &d->candidate, 0, why_text);
    return 0;
}

static void commit(reply *r, const mk_frame *f)
{
    mk_device *d = r->d;
    mk_upload *u = &d->upload;
    uint32_t size, crc, id_len, calc;
    const uint8_t *id, *image;
    uint8_t sha[32];
    int outcome;
    if (bad_length(r, f, 8, 1)) {
        return;
    }
    size = mk_le32(f->payload);
    crc = mk_le32(f->payload + 4);
    id = f->payload + 8;
    id_len = f->length - 8u;
    if (bad_image_id(r, f, id_len)) {
        return;
    }
    if (!u->active || (id_len && (u->id_len != id_len || memcmp(u->image_id, id, id_len) != 0))) {
        if (id_len && d->has_active && memcmp(id, d->active_sha256, 32) == 0 &&
            d->active.size == size && d->active.crc32 == crc) {
            ack(r, f->type, d->active.slot, d->active.crc32); /* a repeat: its ACK was lost */
            return;
        }
        /* "image " + digest.hex()[:16], or unnamed */
        nak(r, f, MK_ERR_NO_UPLOAD, 0, 0, T_NO_UPLOAD_PROGRESS_COMMIT,
            id_len ? "image " : "the image (unnamed)", id, id_len ? 8u : 0u);
        return;
    }
    if (size != u->size || crc != u->crc32) {
        nak(r, f, MK_ERR_CRC_MISMATCH, crc, u->crc32, T_COMMIT_NAMES_BYTES_CRC, size, crc,
            u->size, u->crc32);
        return;
    }
    if (u->received < u->size) {
        nak(r, f, MK_ERR_INCOMPLETE, u->received, u->size, T_ONLY_BYTES_RECEIVED,
            u->received, u->size);
        return;
    }
    u->active = 0;
    image = mk_store_slot(&d->store, u->slot);
    calc = mk_crc32(0, image, u->size);
    if (calc != u->crc32) {
        nak(r, f, MK_ERR_CRC_MISMATCH, calc, u->crc32, T_IMAGE_FLASH_HAS_CRC, calc, u->crc32);
        return;
    }
    mk_sha256(image, u->size, sha);
    if (u->id_len && memcmp(sha, u->image_id, 32) != 0) {
        nak(r, f, MK_ERR_CRC_MISMATCH, mk_le32(sha), mk_le32(u->image_id), T_IMAGE_FLASH_HAS_SHA,
            sha, (uint32_t)8, u->image_id, (uint32_t)8);
        return;
    }
    {
        char words[MK_TEXT_MAX + 1];
        mk_text why_text;
        mk_text_init(&why_text, words, MK_TEXT_MAX);
        outcome = load(d, &d->candidate, image, u->size, &why_text);
        words[mk_text_finish(&why_text)] = 0;
        if (unrunnable(r, f, outcome, words)) {
            return;
        }
        if (activate(r, f, u->slot, u->size, u->crc32, sha, &why_text)) {
            return;
        }
    }
    ack(r, f->type, u->slot, u->crc32);
}

static void rollback(reply *r, const mk_frame *f)
{
    mk_device *d = r->d;
    uint32_t slot, flags, active;
    uint8_t sha[32];
    mk_record found;
    if (bad_length(r, f, 2, 0)) {
        return;
    }
    slot = f->payload[0];
    flags = f->payload[1];
    active = d->has_active ? d->active.slot : 0xFFu;
    if (flags & ~MK_ROLLBACK_CHECK) {
        nak(r, f, MK_ERR_BAD_PAYLOAD, f->length, 0, T_ROLLBACK_FLAGS_0X_ONLY, flags);
        return;
    }
    if (slot > 1u) {
        nak(r, f, MK_ERR_BAD_SLOT, slot, active, T_SLOT_DOES_NOT_EXIST, slot);
        return;
    }
    if (slot == active) { /* running already (or a repeat) */
        ack(r, f->type, d->active.slot, d->active.crc32);
        return;
    }
    if (!mk_store_committed(&d->store, slot, &found, sha)) {
        nak(r, f, MK_ERR_NO_MODEL, slot, active, T_HOLDS_NO_COMMITTED_MODEL,
            slot ? "slot B" : "slot A");
        return;
    }
    {
        char words[MK_TEXT_MAX + 1];
        mk_text why_text;
        int outcome;
        mk_text_init(&why_text, words, MK_TEXT_MAX);
        outcome = load(d, &d->candidate, mk_store_slot(&d->store, slot), found.size, &why_text);
        words[mk_text_finish(&why_text)] = 0;
        if (unrunnable(r, f, outcome, words)) {
            return;
        }
        if (!(flags & MK_ROLLBACK_CHECK)) {
            d->upload.active = 0; /* it was writing this slot */
            if (activate(r, f, slot, found.size, found.crc32, sha, &why_text)) {
                return;
            }
        }
    }
    ack(r, f->type, slot, found.crc32);
}

static void abort_upload(reply *r, const mk_frame *f)
{
    if (bad_empty(r, f)) {
        return;
    }
    r->d->upload.active = 0;
    ack(r, f->type, 0, 0);
}

static void read_slot(reply *r, const mk_frame *f)
{
    mk_device *d = r->d;
    uint32_t slot, offset, length, limit, room = d->config.max_payload - 4u;
    uint64_t end;
    if (bad_length(r, f, 7, 0)) {
        return;
    }
    slot = f->payload[0];
    offset = mk_le32(f->payload + 1);
    length = mk_le16(f->payload + 5);
    if (slot == 0xFFu) {
        if (!d->has_active) {
            nak(r, f, MK_ERR_NO_MODEL, 0, 0, T_NO_ACTIVE_MODEL_READ);
            return;
        }
        slot = d->active.slot;
        limit = d->active.size;
    } else if (slot > 1u) {
        nak(r, f, MK_ERR_BAD_SLOT, slot, 0, T_SLOT_DOES_NOT_EXIST_READ, slot);
        return;
    } else if (d->upload.active && d->upload.slot == slot) {
        limit = d->upload.received; /* only what this upload has written */
    } else {
        limit = d->store.slot_bytes;
    }
    if (length > room) {
        nak(r, f, MK_ERR_BAD_PAYLOAD, f->length, 0, T_READ_BYTES_ONE_REPLY,
            length, room);
        return;
    }
    end = (uint64_t)offset + length;
    if (end > limit) {
        nak(r, f, MK_ERR_RANGE, end > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)end, limit,
            T_READ_PAST_READABLE_BYTES, offset, length, limit);
        return;
    }
    r->type = MK_READ_DATA;
    mk_put32(r->payload, offset);
    memcpy(r->payload + 4, mk_store_slot(&d->store, slot) + offset, length);
    r->length = 4u + length;
}

static void infer(reply *r, const mk_frame *f)
{
    mk_device *d = r->d;
    const int8_t *y;
    if (!d->runnable) {
        nak(r, f, MK_ERR_NO_MODEL, 0, 0, T_NO_RUNNABLE_MODEL,
            d->load_error[0] ? d->load_error : "no model has been committed");
        return;
    }
    if (f->length != d->model.n_inputs) {
        nak(r, f, MK_ERR_BAD_INPUT, f->length, d->model.n_inputs, T_INPUT_BYTES_MODEL_TAKES,
            (uint32_t)f->length, d->model.n_inputs);
        return;
    }
    if (d->config.measure) {
        uint32_t spent;
        d->config.measure(1);
        y = mk_engine_run(&d->model, (const int8_t *)f->payload, mk_arena, MK_ENGINE_PATH);
        spent = d->config.measure(0);
        mk_put32(r->payload, spent);
    } else {
        y = mk_engine_run(&d->model, (const int8_t *)f->payload, mk_arena, MK_ENGINE_PATH);
        mk_put32(r->payload, d->cycles);
    }
    r->type = MK_RESULT;
    memcpy(r->payload + 4, y, d->model.n_outputs);
    r->length = 4u + d->model.n_outputs;
}

static void status(reply *r, const mk_frame *f)
{
    mk_device *d = r->d;
    const mk_upload *u = &d->upload;
    uint32_t page, worst = 0, total = 0;
    uint8_t *p = r->payload;
    if (bad_empty(r, f)) {
        return;
    }
    for (page = 0; page < d->store.n_pages; page++) {
        uint32_t c = d->flash->erase_count(d->flash->ctx, page);
        worst = c > worst ? c : worst;
        total += c;
    }
    r->type = MK_STATUS_REPLY;
    p[0] = d->has_active ? d->active.slot : 0xFFu;
    mk_put32(p + 1, d->has_active ? d->active.size : 0);
    mk_put32(p + 5, d->has_active ? d->active.crc32 : 0);
    mk_put16(p + 9, d->runnable ? d->model.n_inputs : 0);
    mk_put16(p + 11, d->runnable ? d->model.n_outputs : 0);
    p[13] = (uint8_t)d->runnable;
    p[14] = u->active ? u->slot : 0xFFu;
    mk_put32(p + 15, u->active ? u->size : 0);
    mk_put32(p + 19, u->active ? u->crc32 : 0);
    mk_put32(p + 23, u->active ? u->received : 0);
    mk_put32(p + 27, u->active ? durable(u) : 0);
    mk_put32(p + 31, worst);
    mk_put32(p + 35, total);
    mk_put32(p + 39, d->rx.frames);
    mk_put32(p + 43, d->rx.errors);
    r->length = 47;
    if (d->has_package) {
        memcpy(p + 47, d->model.model_id, 32);
        r->length += 32;
    }
}

static void reset(reply *r, const mk_frame *f)
{
    if (bad_empty(r, f)) {
        return;
    }
    mk_device_boot(r->d);
    ack(r, f->type, 0, 0);
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
    reply r;
    uint8_t *raw = d->tx + RAW_AT;
    r.d = d;
    r.payload = raw + 5;
    r.length = 0;
    r.type = 0;
    switch (f->type) {
    case MK_HELLO: hello(&r, f); break;
    case MK_BEGIN: begin(&r, f); break;
    case MK_DATA: data(&r, f); break;
    case MK_COMMIT: commit(&r, f); break;
    case MK_ABORT: abort_upload(&r, f); break;
    case MK_READ: read_slot(&r, f); break;
    case MK_INFER: infer(&r, f); break;
    case MK_STATUS: status(&r, f); break;
    case MK_RESET: reset(&r, f); break;
    case MK_ROLLBACK: rollback(&r, f); break;
    default:
        nak(&r, f, MK_ERR_UNKNOWN_TYPE, f->type, 0, T_FRAME_TYPE_0X_NOT,
            (uint32_t)f->type);
    }
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
    /* the text and a NUL, which the CRC then covers */
    const uint32_t n = mk_text_expand(T_DEVICE_SERVING_ANOTHER_HOST, (char *)p + 10);
    p[0] = f->type;
    p[1] = MK_ERR_BUSY;
    mk_put32(p + 2, 0);
    mk_put32(p + 6, 0);
    return encode(out, raw, MK_NAK, f->seq, 10u + n);
}
