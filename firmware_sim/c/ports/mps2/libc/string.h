/* The five string functions the firmware uses, for a build without a C library
 * (-ffreestanding -nostdlib): the MPS2 port needs nothing else from one. */
#ifndef MK_STRING_H
#define MK_STRING_H

#include <stddef.h>

void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);

#endif
