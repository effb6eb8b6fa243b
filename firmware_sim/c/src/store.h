/* The A/B model store on a flash (docs/PROTOCOL.md, "Flash layout"), the same layout as
 * firmware_sim/flash.py's ModelStore, so that either can boot what the other wrote:
 *
 *   pages 0, 1         the commit log: 32-byte records, appended
 *   2 .. 1 + S         slot A (S = (pages - 2) / 2)
 *   2 + S .. 1 + 2S    slot B
 *
 * A record: magic "M1CR", seq, slot, 3 zero bytes, image size, image CRC-32, the first 8 bytes
 * of the image's SHA-256, and the CRC-32 of those 28 bytes. At boot the newest valid record
 * whose image still matches its size, CRC and id names the active model (a record with an
 * all-zero id, from the earlier layout, only as the newest one).
 */
#ifndef MK_STORE_H
#define MK_STORE_H

#include <stdint.h>

#include "hal.h"

#define MK_RECORD_BYTES 32u
#define MK_ID_BYTES 8u

typedef struct {
    uint32_t seq;
    uint8_t slot;
    uint32_t size, crc32;
    uint8_t id[MK_ID_BYTES];
} mk_record;

typedef struct {
    mk_flash *flash;
    uint32_t n_pages, slot_pages, slot_bytes, per_page;
} mk_store;

/* 0, or why the geometry cannot hold the store (the words of flash.check_geometry). */
const char *mk_store_init(mk_store *s, mk_flash *flash);
/* The first byte of a slot, in the flash's memory map. */
const uint8_t *mk_store_slot(const mk_store *s, unsigned slot);
/* Erase page `index` of `slot`; 0 or the flash's reason. */
const char *mk_store_erase(mk_store *s, unsigned slot, uint32_t index);
/* Program `n` bytes at `offset` of `slot` (within one page, over erased bytes). */
const char *mk_store_write(mk_store *s, unsigned slot, uint32_t offset, const uint8_t *data,
                           uint32_t n);
/* The record of the active image (boot) and the image's SHA-256, 1 if there is one (if not,
 * *out and sha256 hold no record: here and below). */
int mk_store_active(const mk_store *s, mk_record *out, uint8_t sha256[32]);
/* The newest record naming `slot` whose image the slot still holds, and the image's SHA-256;
 * 1 if there is one (records of the earlier layout do not count): what ROLLBACK may return to. */
int mk_store_committed(const mk_store *s, unsigned slot, mk_record *out, uint8_t sha256[32]);
/* Append a record making `slot` active (its image is already there); 0 or the flash's reason. */
const char *mk_store_commit(mk_store *s, unsigned slot, uint32_t size, uint32_t crc32,
                            const uint8_t id[MK_ID_BYTES], mk_record *out);

#endif
