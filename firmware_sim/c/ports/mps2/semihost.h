/* Arm semihosting (BKPT 0xAB on M-profile), as QEMU serves it with
 * -semihosting-config enable=on,target=native: the host file that stands for the flash, the
 * command line (-append) and the exit status. */
#ifndef MK_SEMIHOST_H
#define MK_SEMIHOST_H

#include <stdint.h>

enum {
    SYS_OPEN = 0x01, SYS_CLOSE = 0x02, SYS_WRITE0 = 0x04, SYS_WRITE = 0x05, SYS_READ = 0x06,
    SYS_SEEK = 0x0A, SYS_FLEN = 0x0C, SYS_GET_CMDLINE = 0x15, SYS_EXIT_EXTENDED = 0x20
};
enum { SH_MODE_RB = 1, SH_MODE_RPLUSB = 3 }; /* "rb", "r+b" */

int32_t mk_semihost(uint32_t op, void *arg);

/* Write a NUL-terminated text to the host's standard error (QEMU's semihosting console). */
void mk_semihost_print(const char *text);
/* End QEMU with this exit status. */
void mk_semihost_exit(uint32_t status) __attribute__((noreturn));

#endif
