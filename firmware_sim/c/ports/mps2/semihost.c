#include "semihost.h"

int32_t mk_semihost(uint32_t op, void *arg)
{
    register uint32_t r0 __asm__("r0") = op;
    register void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return (int32_t)r0;
}

void mk_semihost_print(const char *text)
{
    mk_semihost(SYS_WRITE0, (void *)text);
}

void mk_semihost_exit(uint32_t status)
{
    uint32_t block[2] = {0x20026u, status}; /* ADP_Stopped_ApplicationExit, exit status */
    for (;;) {
        mk_semihost(SYS_EXIT_EXTENDED, block);
    }
}
