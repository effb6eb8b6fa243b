#define _POSIX_C_SOURCE 200809L
#include "host_flash.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "frame.h"

#define FILE_HEADER 16u
static const char FILE_MAGIC[8] = {'M', '1', 'F', 'L', 'A', 'S', 'H', '1'};

/* The power goes: what the operation did so far is in the file; the part stops. */
static void power_cut(host_flash *f, const char *kind, uint32_t done)
{
    if (f->power_cut) {
        f->power_cut(f->power_cut_ctx, kind, done);
    }
    fprintf(stderr, "mark1 device: power cut after %u bytes of flash operation %llu (%s)\n",
            done, (unsigned long long)f->ops - 1u, kind);
    fflush(stderr);
    _exit(3);
}

static void persist(host_flash *f, uint32_t address, uint32_t length, uint32_t page)
{
    uint8_t count[4];
    if (f->fd < 0) {
        return;
    }
    mk_put32(count, f->erases[page]);
    if (pwrite(f->fd, count, 4, (off_t)(FILE_HEADER + 4u * page)) != 4 ||
        (length && pwrite(f->fd, f->mem + address, length,
                          (off_t)(FILE_HEADER + 4u * f->n_pages + address)) != (ssize_t)length)) {
        fprintf(stderr, "mark1 device: error: cannot write the state file: %s\n", strerror(errno));
        _exit(1);
    }
}

/* Bytes of this operation to do before the power goes, or -1 (all of them, power stays). */
static int64_t cut_point(host_flash *f, uint32_t length)
{
    int64_t keep = -1;
    if (f->cut_op >= 0 && (int64_t)f->ops == f->cut_op) {
        keep = f->cut_keep < length ? f->cut_keep : length;
    }
    f->ops++;
    return keep;
}

static const char *erase(void *ctx, uint32_t page)
{
    host_flash *f = ctx;
    const uint32_t bytes = f->hal.page_bytes, address = page * bytes;
    int64_t keep;
    uint32_t done;
    if (page >= f->n_pages) {
        snprintf(f->error, sizeof f->error, "page %u does not exist (0..%u)", page,
                 f->n_pages - 1u);
        return f->error;
    }
    keep = cut_point(f, bytes);
    done = keep < 0 ? bytes : (uint32_t)keep;
    f->erases[page]++;
    memset(f->mem + address, 0xFF, done);
    persist(f, address, done, page);
    if (keep >= 0) {
        power_cut(f, "erase", done);
    }
    return 0;
}

static const char *write_(void *ctx, uint32_t address, const uint8_t *data, uint32_t n)
{
    host_flash *f = ctx;
    const uint32_t page = address / f->hal.page_bytes;
    uint32_t i, done;
    int64_t keep;
    if ((uint64_t)address + n > f->hal.size) {
        snprintf(f->error, sizeof f->error, "range %#x+%u is outside the flash (0..%#x)",
                 address, n, f->hal.size);
        return f->error;
    }
    if (n && (address + n - 1u) / f->hal.page_bytes != page) {
        snprintf(f->error, sizeof f->error, "write of %u bytes at %#x crosses the end of page %u",
                 n, address, page);
        return f->error;
    }
    for (i = 0; i < n; i++) {
        if (f->mem[address + i] != 0xFF) {
            snprintf(f->error, sizeof f->error, "write at %#x: byte not erased (erase page %u)",
                     address + i, page);
            return f->error;
        }
    }
    keep = cut_point(f, n);
    done = keep < 0 ? n : (uint32_t)keep;
    for (i = 0; i < done; i++) { /* worn cells: the top bit no longer programs */
        int worn = f->endurance >= 0 && (int64_t)f->erases[page] > f->endurance;
        f->mem[address + i] = (uint8_t)(worn ? data[i] | 0x80u : data[i]);
    }
    persist(f, address, done, page);
    if (keep >= 0) {
        power_cut(f, "write", done);
    }
    return 0;
}

static uint32_t erase_count(void *ctx, uint32_t page)
{
    return ((host_flash *)ctx)->erases[page];
}

static const char *load(host_flash *f, const char *path, uint32_t size, uint32_t page_bytes)
{
    uint8_t head[FILE_HEADER];
    struct stat st;
    uint64_t want = FILE_HEADER + 4ull * f->n_pages + size;
    uint32_t k;
    if (fstat(f->fd, &st) != 0 || pread(f->fd, head, FILE_HEADER, 0) != (ssize_t)FILE_HEADER ||
        memcmp(head, FILE_MAGIC, 8) != 0) {
        snprintf(f->error, sizeof f->error, "%s is not a mark1-kit flash state file", path);
        return f->error;
    }
    if (mk_le32(head + 8) != size || mk_le32(head + 12) != page_bytes) {
        snprintf(f->error, sizeof f->error,
                 "%s holds a flash of %u bytes in %u-byte pages, not %u bytes in %u-byte pages; "
                 "use the same sizes or another state file",
                 path, mk_le32(head + 8), mk_le32(head + 12), size, page_bytes);
        return f->error;
    }
    if ((uint64_t)st.st_size != want) {
        snprintf(f->error, sizeof f->error, "%s is %llu bytes, expected %llu: truncated or damaged",
                 path, (unsigned long long)st.st_size, (unsigned long long)want);
        return f->error;
    }
    if (pread(f->fd, f->erases, 4u * f->n_pages, FILE_HEADER) != (ssize_t)(4u * f->n_pages) ||
        pread(f->fd, f->mem, size, FILE_HEADER + 4u * f->n_pages) != (ssize_t)size) {
        snprintf(f->error, sizeof f->error, "%s cannot be read: %s", path, strerror(errno));
        return f->error;
    }
    for (k = 0; k < f->n_pages; k++) { /* the counts are little-endian in the file */
        f->erases[k] = mk_le32((const uint8_t *)&f->erases[k]);
    }
    return 0;
}

const char *host_flash_open(host_flash *f, uint32_t size, uint32_t page_bytes, const char *path,
                            int64_t endurance)
{
    memset(f, 0, sizeof *f);
    f->fd = -1;
    f->cut_op = -1;
    f->endurance = endurance;
    f->n_pages = size / page_bytes;
    f->mem = malloc(size); /* the port's RAM mirror of the flash, sized at start-up */
    f->erases = calloc(f->n_pages ? f->n_pages : 1u, sizeof *f->erases);
    if (!f->mem || !f->erases) {
        return "out of memory for the flash";
    }
    memset(f->mem, 0xFF, size);
    f->hal.size = size;
    f->hal.page_bytes = page_bytes;
    f->hal.map = f->mem;
    f->hal.erase = erase;
    f->hal.write = write_;
    f->hal.erase_count = erase_count;
    f->hal.ctx = f;
    if (path) {
        struct stat st;
        int exists = stat(path, &st) == 0;
        f->fd = open(path, O_RDWR | O_CREAT, 0644);
        if (f->fd < 0) {
            snprintf(f->error, sizeof f->error, "cannot open the state file %s: %s", path,
                     strerror(errno));
            return f->error;
        }
        if (exists) {
            return load(f, path, size, page_bytes);
        }
        {
            uint8_t head[FILE_HEADER];
            uint32_t k;
            memcpy(head, FILE_MAGIC, 8);
            mk_put32(head + 8, size);
            mk_put32(head + 12, page_bytes);
            if (pwrite(f->fd, head, FILE_HEADER, 0) != (ssize_t)FILE_HEADER) {
                return "cannot write the state file";
            }
            for (k = 0; k < f->n_pages; k++) {
                persist(f, 0, 0, k);
            }
            if (pwrite(f->fd, f->mem, size, FILE_HEADER + 4u * f->n_pages) != (ssize_t)size) {
                return "cannot write the state file";
            }
        }
    }
    return 0;
}

void host_flash_close(host_flash *f)
{
    if (f->fd >= 0) {
        close(f->fd);
        f->fd = -1;
    }
}
