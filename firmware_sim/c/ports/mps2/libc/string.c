/* memcpy, memmove, memset, memcmp, strlen: word at a time where both ends allow it. */
#include <stdint.h>
#include <string.h>

#define ALIGNED(p, q) ((((uintptr_t)(p) | (uintptr_t)(q)) & 3u) == 0)

void *memmove(void *dst, const void *src, size_t n)
{
    unsigned char *d = dst;
    const unsigned char *s = src;
    if (d == s || n == 0) {
        return dst;
    }
    if (d < s || d >= s + n) { /* forwards */
        if (ALIGNED(d, s)) {
            for (; n >= 4; n -= 4, d += 4, s += 4) {
                *(uint32_t *)(void *)d = *(const uint32_t *)(const void *)s;
            }
        }
        while (n--) {
            *d++ = *s++;
        }
    } else { /* backwards, the ranges overlap */
        while (n--) {
            d[n] = s[n];
        }
    }
    return dst;
}

void *memcpy(void *dst, const void *src, size_t n)
{
    return memmove(dst, src, n);
}

void *memset(void *dst, int c, size_t n)
{
    unsigned char *d = dst;
    const uint32_t word = (uint32_t)(unsigned char)c * 0x01010101u;
    while (n && ((uintptr_t)d & 3u)) {
        *d++ = (unsigned char)c;
        n--;
    }
    for (; n >= 4; n -= 4, d += 4) {
        *(uint32_t *)(void *)d = word;
    }
    while (n--) {
        *d++ = (unsigned char)c;
    }
    return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *p = a, *q = b;
    for (; n; n--, p++, q++) {
        if (*p != *q) {
            return *p < *q ? -1 : 1;
        }
    }
    return 0;
}

size_t strlen(const char *s)
{
    const char *p = s;
    while (*p) {
        p++;
    }
    return (size_t)(p - s);
}

