/* The hardware abstraction layer: what a port provides to the portable firmware.
 *
 * Porting the firmware to a board means writing these functions (see README.md):
 *   - flash: a memory-mapped view for reads, page erase, program, erase counts;
 *   - time: a millisecond clock (idle timeout);
 * plus, in the port's main loop, feeding received UART bytes to mk_device_receive() and
 * sending the replies it emits. A power cut is the port's business: the host port's flash
 * stops in the middle of an operation and exits (--cut-after); the portable code only
 * guarantees that what it writes leaves the old or the new model bootable at every point.
 */
#ifndef MK_HAL_H
#define MK_HAL_H

#include <stddef.h>
#include <stdint.h>

typedef struct mk_flash {
    uint32_t size;          /* bytes of flash set aside for models (records and both slots) */
    uint32_t page_bytes;    /* erase page, a power of two >= 32 */
    const uint8_t *map;     /* the flash contents, readable in place (memory-mapped) */
    /* Erase page `page` (every byte 0xFF); 0 on success, else a short reason. */
    const char *(*erase)(void *ctx, uint32_t page);
    /* Program `n` bytes at `address` (within one page, over erased bytes); 0 or a reason. */
    const char *(*write)(void *ctx, uint32_t address, const uint8_t *data, uint32_t n);
    /* Erases of `page` since the flash was new (0 where the part does not count them). */
    uint32_t (*erase_count)(void *ctx, uint32_t page);
    void *ctx;
} mk_flash;

/* Milliseconds since an arbitrary start, wrapping. */
uint32_t mk_hal_millis(void);

#endif
