/* The host port's flash: the memory of a NOR flash mirrored to a state file in the
 * simulator's format (firmware_sim/flash.py: "M1FLASH1", size, page size, an erase count per
 * page, the contents), written operation by operation, so that the simulator and the
 * firmware boot each other's flash. A power cut can be set inside any operation. */
#ifndef MK_HOST_FLASH_H
#define MK_HOST_FLASH_H

#include <stdint.h>

#include "hal.h"

typedef struct {
    mk_flash hal;
    uint8_t *mem;
    uint32_t *erases;
    uint32_t n_pages;
    int fd;                 /* the state file, or -1 */
    int64_t endurance;      /* erases a page is rated for (-1: unlimited); past it bit 7 stays 1 */
    uint64_t ops;           /* erases and writes since power-on */
    int64_t cut_op;         /* the operation the power is cut in (-1: never) */
    uint32_t cut_keep;      /* ... after this many of its bytes */
    char error[160];
    /* What a power cut does once the cut operation's bytes are in: the host port exits
     * (status 3); the test library jumps back to the test. */
    void (*power_cut)(void *ctx, const char *kind, uint32_t done);
    void *power_cut_ctx;
} host_flash;

/* Open (or create) the flash; `path` may be 0 (in memory). 0, or why not (one line). */
const char *host_flash_open(host_flash *f, uint32_t size, uint32_t page_bytes, const char *path,
                            int64_t endurance);
void host_flash_close(host_flash *f);

#endif
