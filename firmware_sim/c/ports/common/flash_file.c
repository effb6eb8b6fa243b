#include "flash_file.h"

#include <stdarg.h>
#include <string.h>

#include "frame.h"
#include "text.h"

static const uint8_t FILE_MAGIC[8] = {'M', '1', 'F', 'L', 'A', 'S', 'H', '1'};

uint64_t mk_flash_file_bytes(uint32_t size, uint32_t page_bytes)
{
    return MK_FLASH_FILE_HEADER + 4ull * (size / page_bytes) + size;
}

/* A refusal from the catalog (mk_text_format), in f->error. */
static const char *refuse(mk_flash_file *f, mk_text_id text, ...)
{
    mk_text t;
    va_list args;
    mk_text_init(&t, f->error, sizeof f->error - 1u);
    va_start(args, text);
    mk_text_vformat(&t, text, args);
    va_end(args);
    f->error[mk_text_finish(&t)] = 0;
    return f->error;
}

/* What an operation did is written to the state file: the page's erase count and its bytes. */
static void persist(mk_flash_file *f, uint32_t address, uint32_t length, uint32_t page)
{
    uint8_t count[4];
    const char *why;
    if (!f->file) {
        return;
    }
    mk_put32(count, f->erases[page]);
    why = f->file->write(f->file->ctx, MK_FLASH_FILE_HEADER + 4u * page, count, 4);
    if (!why && length) {
        why = f->file->write(f->file->ctx, MK_FLASH_FILE_HEADER + 4u * f->n_pages + address,
                             f->mem + address, length);
    }
    if (why) {
        f->io_failed(f->power_cut_ctx, why);
    }
}

#if MK_TEST_HOOKS
/* Bytes of this operation to do before the power goes, or -1 (all of them, power stays). */
static int64_t cut_point(mk_flash_file *f, uint32_t length)
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
    mk_flash_file *f = ctx;
    const uint32_t bytes = f->hal.page_bytes, address = page * bytes;
    int64_t keep;
    uint32_t done;
    if (page >= f->n_pages) {
        return refuse(f, T_PAGE_DOES_NOT_EXIST, page, f->n_pages - 1u);
    }
    keep = cut_point(f, bytes);
    done = keep < 0 ? bytes : (uint32_t)keep;
    f->erases[page]++;
    memset(f->mem + address, 0xFF, done);
    persist(f, address, done, page);
    if (keep >= 0) {
        f->power_cut(f->power_cut_ctx, "erase", done);
    }
    return 0;
}

static const char *write_(void *ctx, uint32_t address, const uint8_t *data, uint32_t n)
{
    mk_flash_file *f = ctx;
    const uint32_t page = address / f->hal.page_bytes;
    uint32_t i, done;
    int64_t keep;
    if ((uint64_t)address + n > f->hal.size) {
        return refuse(f, T_RANGE_0X_OUTSIDE_FLASH, address, n, f->hal.size);
    }
    if (n && (address + n - 1u) / f->hal.page_bytes != page) {
        return refuse(f, T_WRITE_BYTES_0X_CROSSES, n, address, page);
    }
    for (i = 0; i < n; i++) {
        if (f->mem[address + i] != 0xFF) {
            return refuse(f, T_WRITE_0X_BYTE_NOT, address + i, page);
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
        f->power_cut(f->power_cut_ctx, "write", done);
    }
    return 0;
}
#else
/* The operations as a NOR flash does them (the portable code keeps to the HAL's rules). */
static const char *erase(void *ctx, uint32_t page)
{
    mk_flash_file *f = ctx;
    const uint32_t bytes = f->hal.page_bytes, address = page * bytes;
    f->erases[page]++;
    memset(f->mem + address, 0xFF, bytes);
    persist(f, address, bytes, page);
    return 0;
}

static const char *write_(void *ctx, uint32_t address, const uint8_t *data, uint32_t n)
{
    mk_flash_file *f = ctx;
    memcpy(f->mem + address, data, n);
    persist(f, address, n, address / f->hal.page_bytes);
    return 0;
}
#endif

static uint32_t erase_count(void *ctx, uint32_t page)
{
    return ((mk_flash_file *)ctx)->erases[page];
}

const char *mk_flash_file_init(mk_flash_file *f, uint8_t *mem, uint32_t *erases, uint32_t size,
                               uint32_t page_bytes, int64_t endurance)
{
    memset(f, 0, sizeof *f);
#if MK_TEST_HOOKS
    f->cut_op = -1;
    f->endurance = endurance;
#else
    (void)endurance;
#endif
    if (page_bytes < 32u || (page_bytes & (page_bytes - 1u))) {
        return mk_text_reason(T_PAGE_SIZE_POWER_OF_TWO);
    }
    if (size % page_bytes || size / page_bytes < 4u) {
        return mk_text_reason(T_FLASH_SIZE_MULTIPLE_PAGES);
    }
    f->n_pages = size / page_bytes;
    f->mem = mem;
    f->erases = erases;
    memset(mem, 0xFF, size);
    memset(erases, 0, 4u * f->n_pages);
    f->hal.size = size;
    f->hal.page_bytes = page_bytes;
    f->hal.map = mem;
    f->hal.erase = erase;
    f->hal.write = write_;
    f->hal.erase_count = erase_count;
    f->hal.ctx = f;
    return 0;
}

static const char *create(mk_flash_file *f)
{
    uint8_t head[MK_FLASH_FILE_HEADER];
    const mk_file_io *io = f->file;
    const char *why;
    uint32_t k;
    memcpy(head, FILE_MAGIC, 8);
    mk_put32(head + 8, f->hal.size);
    mk_put32(head + 12, f->hal.page_bytes);
    if ((why = io->write(io->ctx, 0, head, MK_FLASH_FILE_HEADER)) != 0) {
        return why;
    }
    for (k = 0; k < f->n_pages && !why; k++) {
        why = io->write(io->ctx, MK_FLASH_FILE_HEADER + 4u * k, (const uint8_t *)"\0\0\0", 4);
    }
    return why ? why : io->write(io->ctx, MK_FLASH_FILE_HEADER + 4u * f->n_pages, f->mem,
                                 f->hal.size);
}

const char *mk_flash_file_attach(mk_flash_file *f, const mk_file_io *file, const char *path,
                                 int create_it)
{
    uint8_t head[MK_FLASH_FILE_HEADER];
    const uint64_t want = mk_flash_file_bytes(f->hal.size, f->hal.page_bytes);
    uint64_t have;
    const char *why;
    uint32_t k;
    f->file = file;
    if (create_it) {
        return create(f);
    }
    have = file->length(file->ctx);
    if (have < MK_FLASH_FILE_HEADER || file->read(file->ctx, 0, head, MK_FLASH_FILE_HEADER) ||
        memcmp(head, FILE_MAGIC, 8) != 0) {
        return refuse(f, T_NOT_MARK1_KIT_FLASH, path);
    }
    if (mk_le32(head + 8) != f->hal.size || mk_le32(head + 12) != f->hal.page_bytes) {
        return refuse(f, T_HOLDS_FLASH_BYTES_BYTE,
                      path, mk_le32(head + 8), mk_le32(head + 12), f->hal.size,
                      f->hal.page_bytes);
    }
    if (have != want) {
        return refuse(f, T_BYTES_EXPECTED_TRUNCATED_OR, path, have, want);
    }
    if ((why = file->read(file->ctx, MK_FLASH_FILE_HEADER, (uint8_t *)f->erases,
                          4u * f->n_pages)) != 0 ||
        (why = file->read(file->ctx, MK_FLASH_FILE_HEADER + 4u * f->n_pages, f->mem,
                          f->hal.size)) != 0) {
        return refuse(f, T_CANNOT_READ, path, why);
    }
    for (k = 0; k < f->n_pages; k++) { /* the counts are little-endian in the file */
        f->erases[k] = mk_le32((const uint8_t *)&f->erases[k]);
    }
    return 0;
}
