/* The host port's flash: ports/common/flash_file.c on memory from malloc, kept in a state file
 * through POSIX pread/pwrite. The state file is locked (flock) while the port runs, so that one
 * device at a time owns it. */
#ifndef MK_HOST_FLASH_H
#define MK_HOST_FLASH_H

#include <stdint.h>

#include "flash_file.h"

typedef struct {
    mk_flash_file flash;    /* flash.hal is the device's flash */
    mk_file_io io;
    int fd;                 /* the state file, or -1 */
    char error[512];
} host_flash;

/* Open (or create) the flash; `path` may be 0 (in memory). A power cut stops the program with
 * exit status 3 unless flash.power_cut is set again. 0, or why not (one line). */
const char *host_flash_open(host_flash *f, uint32_t size, uint32_t page_bytes, const char *path,
                            int64_t endurance);
void host_flash_close(host_flash *f);

#endif
