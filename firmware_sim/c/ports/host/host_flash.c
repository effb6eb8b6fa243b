#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE
#include "host_flash.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* The power goes: what the operation did so far is in the file; the part stops. */
static void power_cut(void *ctx, const char *kind, uint32_t done)
{
    host_flash *f = ctx;
    fprintf(stderr, "mark1 device: power cut after %u bytes of flash operation %llu (%s)\n",
            done, (unsigned long long)f->flash.ops - 1u, kind);
    fflush(stderr);
    _exit(3);
}

static void io_failed(void *ctx, const char *why)
{
    (void)ctx;
    fprintf(stderr, "mark1 device: error: cannot write the state file: %s\n", why);
    _exit(1);
}

static const char *file_read(void *ctx, uint32_t offset, uint8_t *data, uint32_t n)
{
    host_flash *f = ctx;
    return pread(f->fd, data, n, (off_t)offset) == (ssize_t)n ? 0 : strerror(errno ? errno : EIO);
}

static const char *file_write(void *ctx, uint32_t offset, const uint8_t *data, uint32_t n)
{
    host_flash *f = ctx;
    return pwrite(f->fd, data, n, (off_t)offset) == (ssize_t)n ? 0 : strerror(errno ? errno : EIO);
}

static uint64_t file_length(void *ctx)
{
    struct stat st;
    return fstat(((host_flash *)ctx)->fd, &st) == 0 ? (uint64_t)st.st_size : 0u;
}

static const char *refuse(host_flash *f, const char *path, const char *what)
{
    snprintf(f->error, sizeof f->error, "flash state '%s'%s", path, what);
    return f->error;
}

/* Open the state file read-write (created if missing) and take its exclusive lock, with the
 * words of firmware_sim.flash.open_locked. */
static const char *open_locked(host_flash *f, const char *path, int *created)
{
    struct stat st;
    if (!*path) {
        return "flash state path is empty; give a file name";
    }
    f->fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    *created = f->fd >= 0;
    if (f->fd < 0 && errno != EEXIST) {
        snprintf(f->error, sizeof f->error, "flash state '%s': cannot create it (%s)", path,
                 strerror(errno));
        return f->error;
    }
    if (f->fd < 0) {
        if (stat(path, &st) != 0) {
            snprintf(f->error, sizeof f->error, "flash state '%s': cannot open it (%s)", path,
                     strerror(errno));
            return f->error;
        }
        if (S_ISDIR(st.st_mode)) {
            return refuse(f, path, " is a folder; give a file name");
        }
        if (!S_ISREG(st.st_mode)) {
            return refuse(f, path, " is not a regular file (a device, pipe or socket); give a "
                                   "file name");
        }
        if ((f->fd = open(path, O_RDWR | O_CLOEXEC)) < 0) {
            snprintf(f->error, sizeof f->error, "flash state '%s': cannot open it (%s)", path,
                     strerror(errno));
            return f->error;
        }
    }
    if (flock(f->fd, LOCK_EX | LOCK_NB) != 0) {
        close(f->fd);
        f->fd = -1;
        if (*created) {
            unlink(path);
        }
        return refuse(f, path, " is in use by another device (it holds the file's lock); stop "
                               "that device or give another --state");
    }
    return 0;
}

const char *host_flash_open(host_flash *f, uint32_t size, uint32_t page_bytes, const char *path,
                            int64_t endurance)
{
    uint8_t *mem;
    uint32_t *erases;
    const char *why;
    int created = 0;
    memset(f, 0, sizeof *f);
    f->fd = -1;
    mem = malloc(size ? size : 1u); /* the port's RAM mirror of the flash, sized at start-up */
    erases = calloc(page_bytes && size / page_bytes ? size / page_bytes : 1u, sizeof *erases);
    if (!mem || !erases) {
        return "out of memory for the flash";
    }
    if ((why = mk_flash_file_init(&f->flash, mem, erases, size, page_bytes, endurance)) != 0) {
        return why;
    }
    f->flash.power_cut = power_cut;
    f->flash.io_failed = io_failed;
    f->flash.power_cut_ctx = f;
    if (!path) {
        return 0;
    }
    if ((why = open_locked(f, path, &created)) != 0) {
        return why;
    }
    f->io.read = file_read;
    f->io.write = file_write;
    f->io.length = file_length;
    f->io.ctx = f;
    why = mk_flash_file_attach(&f->flash, &f->io, path, created);
    if (why && created) {
        unlink(path);
    }
    return why;
}

void host_flash_close(host_flash *f)
{
    if (f->fd >= 0) {
        close(f->fd);
        f->fd = -1;
    }
    free(f->flash.mem);
    free(f->flash.erases);
    f->flash.mem = 0;
    f->flash.erases = 0;
}
