/* The firmware's message handler and its state machine (docs/PROTOCOL.md), the same as the
 * simulator's firmware_sim/device.py: every request frame gets one reply frame with the same
 * bytes the simulator would send.
 *
 * State, as on the simulated part:
 *   in flash (survives a power cycle): both slots, the commit log;
 *   in RAM (lost on RESET or power loss): the upload in progress -- target slot, size, CRC,
 *   image id, bytes received in order and up to MK_MAX_AHEAD ranges beyond them, the pages it
 *   erased, the package header -- and the loaded model.
 */
#ifndef MK_DEVICE_H
#define MK_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "frame.h"
#include "hal.h"
#include "package.h"
#include "store.h"

enum {
    MK_HELLO = 0x01, MK_BEGIN = 0x02, MK_DATA = 0x03, MK_COMMIT = 0x04, MK_ABORT = 0x05,
    MK_READ = 0x06, MK_INFER = 0x07, MK_STATUS = 0x08, MK_RESET = 0x09, MK_ROLLBACK = 0x0A,
    MK_INFO = 0x81, MK_ACK = 0x82, MK_NAK = 0x83, MK_READ_DATA = 0x86, MK_RESULT = 0x87,
    MK_STATUS_REPLY = 0x88
};

#define MK_ROLLBACK_CHECK 0x01u /* ROLLBACK flag: check only, change nothing */

enum {
    MK_ERR_UNKNOWN_TYPE = 1, MK_ERR_BAD_PAYLOAD, MK_ERR_BUSY, MK_ERR_NO_UPLOAD, MK_ERR_OFFSET,
    MK_ERR_TOO_LARGE_FLASH, MK_ERR_TOO_LARGE_RAM, MK_ERR_BAD_SLOT, MK_ERR_INCOMPLETE,
    MK_ERR_CRC_MISMATCH, MK_ERR_BAD_PACKAGE, MK_ERR_NO_MODEL, MK_ERR_BAD_INPUT, MK_ERR_RANGE,
    MK_ERR_FLASH
};

/* Largest reply payload: READ_DATA and RESULT up to max_payload; NAK 11 + MK_TEXT_MAX. */
#define MK_REPLY_MAX (MK_MAX_PAYLOAD > 256u ? MK_MAX_PAYLOAD : 256u)
#define MK_NAME_MAX 64u

typedef struct {
    uint32_t max_payload;   /* 64 .. MK_MAX_PAYLOAD */
    uint32_t ram_bytes;     /* the arena reported in INFO, at most MK_ARENA_BYTES */
    uint32_t protocol_version;
    char name[MK_NAME_MAX + 1];
    /* A port that can count what an inference costs sets this (else 0: RESULT carries the
     * cycle model's estimate, or 0 in a build without it: MK_CYCLE_MODEL): called with 1 just before the inference and with 0 just after,
     * it returns the count between the two calls (cycles or instructions, as the port says). */
    uint32_t (*measure)(int start);
} mk_device_config;

typedef struct {
    int active;
    uint8_t slot;
    uint32_t size, crc32, ram_bytes;
    uint8_t image_id[32];
    uint8_t id_len;               /* 0 or 32 */
    uint32_t received;            /* bytes received in order */
    uint32_t n_ahead;
    uint32_t ahead[MK_MAX_AHEAD][2]; /* [start, end) past `received`, sorted, apart */
    uint8_t erased[(MK_MAX_SLOT_PAGES + 7u) / 8u];
    uint8_t head[MK_HEADER_BYTES];
    int header_checked;
} mk_upload;

/* Called with each encoded reply (COBS and its 00 delimiter): `type` is the reply's type. The
 * bytes are valid until the next call into the device. */
typedef void (*mk_emit)(void *ctx, uint8_t type, const uint8_t *wire, size_t n);

typedef struct {
    mk_device_config config;
    mk_flash *flash;
    mk_store store;
    mk_rx rx;
    /* the active model */
    int has_active;
    mk_record active;             /* if none: slot 0xFF, size and CRC 0 */
    uint8_t active_sha256[32];
    int has_package;              /* the active image decoded */
    int runnable;
    mk_model model;
    uint32_t cycles;              /* the cycle model's estimate for d->model (MK_CYCLE_MODEL) */
    char load_error[MK_TEXT_MAX + 1]; /* why the active image does not run ("" if it does) */
    mk_upload upload;
    mk_model candidate;           /* an image being checked at COMMIT */
    uint8_t rx_buf[MK_COBS_MAX(MK_MAX_PAYLOAD + MK_FRAME_OVERHEAD)];
    uint8_t tx[MK_COBS_MAX(MK_REPLY_MAX + MK_FRAME_OVERHEAD) + 1u];
} mk_device;

/* The activation arena (static, MK_ARENA_BYTES, 4-byte aligned). */
extern int8_t *const mk_arena;

/* Power on: check the configuration, find the active model in flash, load it. 0, or what is
 * wrong with the configuration or the flash geometry. */
const char *mk_device_init(mk_device *d, const mk_device_config *config, mk_flash *flash);
/* Reset: forget the upload, boot from flash again (the frame counters are kept). */
void mk_device_boot(mk_device *d);
/* Forget a partial frame (a new host connected). */
void mk_device_new_session(mk_device *d);
/* Bytes were lost before the next received byte (a receive overrun): the frame they belonged
 * to is dropped at its delimiter and counted as a receive error. */
void mk_device_rx_overrun(mk_device *d);
/* Received bytes: each frame they complete is handled and its reply passed to `emit`. */
void mk_device_receive(mk_device *d, const uint8_t *data, size_t n, mk_emit emit, void *ctx);
/* Handle one frame and encode its reply into d->tx; returns the reply's wire length. */
size_t mk_device_handle(mk_device *d, const mk_frame *frame, uint8_t *reply_type);

/* A NAK BUSY reply to a frame, encoded into `out` (at least 128 bytes): a second host on a
 * TCP port that is serving one. */
size_t mk_busy_reply(const mk_frame *frame, uint8_t *out);

#endif
