/* A NOR flash emulated in RAM and kept in the simulator's state file (firmware_sim/flash.py:
 * "M1FLASH1", size u32, page size u32, an erase count u32 per page, the contents; little-endian),
 * written operation by operation, so that the simulator, the host port and the firmware under
 * QEMU boot each other's flash. A power cut can be set inside any operation, and pages wear out
 * past their endurance (bit 7 no longer programs), as in the simulator.
 *
 * The ports differ only in how they reach the file (mk_file_io): POSIX pread/pwrite on the host,
 * semihosting under QEMU. Without a file the flash lives in RAM only. Not part of a firmware
 * image for a real part, whose flash is the part's own (hal.h).
 *
 * MK_TEST_HOOKS (0 unless the build sets it): 1 adds the test machinery, power cuts and wear,
 * and checks every operation against the HAL's rules (within the flash, one page, over erased
 * bytes), refusing what breaks them. The host port, the test library and the MPS2 test images
 * set it; the MPS2 product images leave it out (a flash that never wears, operations trusted:
 * the portable code is tested against the checks in the other builds).
 */
#ifndef MK_FLASH_FILE_H
#define MK_FLASH_FILE_H

#include <stdint.h>

#include "hal.h"

#ifndef MK_TEST_HOOKS
#define MK_TEST_HOOKS 0
#endif

#define MK_FLASH_FILE_HEADER 16u

/* The state file: read or write `n` bytes at `offset` (0, or a short reason), its length. */
typedef struct {
    const char *(*read)(void *ctx, uint32_t offset, uint8_t *data, uint32_t n);
    const char *(*write)(void *ctx, uint32_t offset, const uint8_t *data, uint32_t n);
    uint64_t (*length)(void *ctx);
    void *ctx;
} mk_file_io;

typedef struct {
    mk_flash hal;
    uint8_t *mem;           /* the contents, hal.size bytes */
    uint32_t *erases;       /* erases of each page */
    uint32_t n_pages;
    const mk_file_io *file; /* the state file, or 0 */
#if MK_TEST_HOOKS
    int64_t endurance;      /* erases a page is rated for (-1: unlimited); past it bit 7 stays 1 */
    uint64_t ops;           /* erases and writes since power-on */
    int64_t cut_op;         /* the operation the power is cut in (-1: never) */
    uint32_t cut_keep;      /* ... after this many of its bytes */
    /* What a power cut does once the cut operation's bytes are in (must not return): the host
     * port and the QEMU firmware stop with exit status 3; the test library jumps back. */
    void (*power_cut)(void *ctx, const char *kind, uint32_t done);
#endif
    void *power_cut_ctx;    /* the context of power_cut and io_failed */
    /* A state file that cannot be written (must not return). */
    void (*io_failed)(void *ctx, const char *why);
    char error[200];
} mk_flash_file;

/* An erased flash of `size` bytes in `page_bytes` pages on `mem` (size bytes) and `erases`
 * (size / page_bytes counts), in RAM only. 0, or why the geometry is refused. `endurance`:
 * with MK_TEST_HOOKS only (without, the flash never wears). */
const char *mk_flash_file_init(mk_flash_file *f, uint8_t *mem, uint32_t *erases, uint32_t size,
                               uint32_t page_bytes, int64_t endurance);

/* Keep the flash in the state file `file`: read it, checked whole (`path` names it in the
 * refusals), or, if `create`, write the erased flash to it. 0, or why not (one line). */
const char *mk_flash_file_attach(mk_flash_file *f, const mk_file_io *file, const char *path,
                                 int create);

/* Bytes of the state file of a flash of `size` bytes in `page_bytes` pages. */
uint64_t mk_flash_file_bytes(uint32_t size, uint32_t page_bytes);

#endif
