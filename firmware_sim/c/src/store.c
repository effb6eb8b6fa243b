#include "store.h"

#include <string.h>

#include "config.h"
#include "crc32.h"
#include "frame.h"
#include "sha256.h"
#include "text.h"

#define RECORD_MAGIC 0x5243314Du /* "M1CR" */
#define RECORD_PAGES 2u

const char *mk_store_init(mk_store *s, mk_flash *flash)
{
    const uint32_t page = flash->page_bytes;
    if (page < MK_RECORD_BYTES || (page & (page - 1u))) {
        return mk_text_reason(T_PAGE_SIZE_POWER_OF_TWO);
    }
    if (flash->size % page || flash->size / page < 4u) {
        return mk_text_reason(T_FLASH_SIZE_MULTIPLE_PAGES);
    }
    s->flash = flash;
    s->n_pages = flash->size / page;
    s->slot_pages = (s->n_pages - RECORD_PAGES) / 2u;
    s->slot_bytes = s->slot_pages * page;
    s->per_page = page / MK_RECORD_BYTES;
    if (s->slot_pages > MK_MAX_SLOT_PAGES) {
        return mk_text_reason(T_SLOT_MORE_PAGES_THAN_BUILD);
    }
    if (2u * s->per_page > MK_MAX_RECORDS) {
        return mk_text_reason(T_RECORDS_MORE_THAN_BUILD);
    }
    return 0;
}

static uint32_t slot_page(const mk_store *s, unsigned slot, uint32_t index)
{
    return RECORD_PAGES + slot * s->slot_pages + index;
}

const uint8_t *mk_store_slot(const mk_store *s, unsigned slot)
{
    return s->flash->map + slot_page(s, slot, 0) * s->flash->page_bytes;
}

const char *mk_store_erase(mk_store *s, unsigned slot, uint32_t index)
{
    return s->flash->erase(s->flash->ctx, slot_page(s, slot, index));
}

const char *mk_store_write(mk_store *s, unsigned slot, uint32_t offset, const uint8_t *data,
                           uint32_t n)
{
    const uint32_t address = slot_page(s, slot, 0) * s->flash->page_bytes + offset;
    return s->flash->write(s->flash->ctx, address, data, n);
}

static const uint8_t *entry(const mk_store *s, uint32_t e) /* e: page * per_page + index */
{
    return s->flash->map + e * MK_RECORD_BYTES;
}

static int unpack(const uint8_t *raw, mk_record *r)
{
    if (mk_le32(raw) != RECORD_MAGIC || mk_le32(raw + 28) != mk_crc32(0, raw, 28) || raw[8] >= 2u) {
        return 0;
    }
    r->seq = mk_le32(raw + 4);
    r->slot = raw[8];
    r->size = mk_le32(raw + 12);
    r->crc32 = mk_le32(raw + 16);
    memcpy(r->id, raw + 20, MK_ID_BYTES);
    return 1;
}

/* CommitRecord.names: the slot holds the image this record committed (its SHA-256 in digest).
 * A record of the earlier layout (an all-zero id) names an image by size and CRC alone, and
 * only as the newest record. */
static int names_image(const mk_store *s, const mk_record *r, int newest, uint8_t digest[32])
{
    const uint8_t *image = mk_store_slot(s, r->slot);
    const int legacy = (mk_le32(r->id) | mk_le32(r->id + 4)) == 0;
    if ((legacy && !newest) || mk_crc32(0, image, r->size) != r->crc32) {
        return 0;
    }
    mk_sha256(image, r->size, digest);
    return legacy || memcmp(digest, r->id, MK_ID_BYTES) == 0;
}

/* Records are taken in the order of ModelStore.records: newest first, records of one seq in
 * the order of the log. A record's order is its seq above its entry's place counted down, so
 * that the larger order comes first (never 0). */
static uint32_t entry_of(uint64_t order) { return 0xFFFFFFFFu - (uint32_t)order; }

/* The order of the valid record that comes after the one of order `after` (0: the first), the
 * record in *out; 0 if there is none. */
static uint64_t next_record(const mk_store *s, uint64_t after, mk_record *out)
{
    const uint32_t n = 2u * s->per_page;
    uint64_t best = 0;
    uint32_t e;
    for (e = 0; e < n; e++) {
        if (unpack(entry(s, e), out)) {
            const uint64_t order = (uint64_t)out->seq << 32 | (0xFFFFFFFFu - e);
            if ((after == 0 || order < after) && order > best) {
                best = order;
            }
        }
    }
    return best && unpack(entry(s, entry_of(best)), out) ? best : 0;
}

/* The newest valid record (of `slot`, or of either if `slot` < 0) whose image still matches
 * it: ModelStore.active_image and ModelStore.committed_image. */
static int find_record(const mk_store *s, int slot, mk_record *out, uint8_t sha256[32])
{
    uint64_t order = 0;
    uint32_t k;
    for (k = 0; (order = next_record(s, order, out)) != 0; k++) {
        if ((slot < 0 || out->slot == (unsigned)slot) && out->size <= s->slot_bytes &&
            names_image(s, out, slot < 0 && k == 0, sha256)) {
            return 1;
        }
    }
    return 0;
}

int mk_store_active(const mk_store *s, mk_record *out, uint8_t sha256[32])
{
    return find_record(s, -1, out, sha256);
}

int mk_store_committed(const mk_store *s, unsigned slot, mk_record *out, uint8_t sha256[32])
{
    return find_record(s, (int)slot, out, sha256);
}

const char *mk_store_commit(mk_store *s, unsigned slot, uint32_t size, uint32_t crc32,
                            const uint8_t id[MK_ID_BYTES], mk_record *out)
{
    mk_record r;
    const uint64_t newest = next_record(s, 0, &r);
    uint32_t page = newest ? entry_of(newest) / s->per_page : 0u, index;
    const uint8_t *records = entry(s, page * s->per_page);
    uint32_t used = s->per_page * MK_RECORD_BYTES; /* the page's bytes up to its last not erased */
    uint8_t raw[MK_RECORD_BYTES];
    const char *why;
    while (used && records[used - 1u] == 0xFFu) {
        used--;
    }
    index = (used + MK_RECORD_BYTES - 1u) / MK_RECORD_BYTES; /* after the last used entry */
    if (index >= s->per_page) { /* full: continue on the other page, erased first */
        page = 1u - page;
        if ((why = s->flash->erase(s->flash->ctx, page)) != 0) {
            return why;
        }
        index = 0;
    }
    mk_put32(raw, RECORD_MAGIC);
    mk_put32(raw + 4, newest ? r.seq + 1u : 1u);
    raw[8] = (uint8_t)slot;
    raw[9] = raw[10] = raw[11] = 0;
    mk_put32(raw + 12, size);
    mk_put32(raw + 16, crc32);
    memcpy(raw + 20, id, MK_ID_BYTES);
    mk_put32(raw + 28, mk_crc32(0, raw, 28));
    unpack(raw, out); /* the record as it will read back */
    return s->flash->write(s->flash->ctx, (page * s->per_page + index) * MK_RECORD_BYTES, raw,
                           MK_RECORD_BYTES);
}
