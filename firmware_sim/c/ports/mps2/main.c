/* The MPS2 port (AN385 Cortex-M3, AN386 Cortex-M4) under QEMU: the portable firmware on UART0,
 * its model flash in a host file through semihosting, SysTick counting what each inference
 * costs.
 *
 * QEMU passes the board's options on its command line (-append, read with SYS_GET_CMDLINE) as
 * one word of hex (`options` below: the sizes of the part, its name and the state file's path;
 * in the test images, MK_TEST_HOOKS=1, also the test machinery: another protocol version, wear,
 * a power cut inside a flash operation (exit status 3), an erase time that keeps the processor
 * waiting, a smaller receive ring). firmware_sim/qemu.py writes it; README.md shows how by
 * hand.
 *
 * Measured counts: under `-icount shift=0` QEMU executes one instruction per nanosecond of
 * virtual time, and SysTick counts down at 25 MHz: 40 instructions a tick. Each inference
 * runs with interrupts held off (QEMU's UART holds the bytes that arrive meanwhile; a real
 * part would take them by DMA, which costs no instructions) and RESULT reports the
 * instructions it took: whole ticks from the counter, the part of a tick from spinning on the
 * counter's current value until it moves (measure_raw). Repeated, a count varies by about
 * 0.1 % (tens of instructions in tens of thousands).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cmsdk.h"
#include "device.h"
#include "flash_file.h"
#include "semihost.h"
#include "text.h"
#include "uart.h"

#ifndef MK_MPS2_FLASH_MAX
#define MK_MPS2_FLASH_MAX (4u << 20)
#endif
#define INSTRUCTIONS_PER_TICK (1000000000u / MK_CLOCK_MPS2_HZ)

static uint8_t flash_mem[MK_MPS2_FLASH_MAX] __attribute__((section(".flash_copy")));
static uint32_t flash_erases[MK_MPS2_FLASH_MAX / 32u] __attribute__((section(".flash_copy")));
static mk_flash_file flash;
static mk_device device;

/* ------------------------------------------------------------------ messages, exit */

/* A line on QEMU's standard error, then the end with `status`. */
static void say_and_exit(uint32_t status, mk_text_id text, ...) __attribute__((noreturn));
static void say_and_exit(uint32_t status, mk_text_id text, ...)
{
    char line[400];
    mk_text t;
    va_list args;
    mk_text_init(&t, line, sizeof line - 1u);
    va_start(args, text);
    mk_text_vformat(&t, text, args);
    va_end(args);
    line[mk_text_finish(&t)] = 0;
    mk_semihost_print(line);
    mk_semihost_exit(status);
}

static void fail(uint32_t status, const char *what, const char *why) __attribute__((noreturn));
static void fail(uint32_t status, const char *what, const char *why)
{
    say_and_exit(status, T_DEVICE_ERROR, what, why ? ": " : "", why ? why : "");
}

#if MK_TEST_HOOKS
static void power_cut(void *ctx, const char *kind, uint32_t done)
{
    (void)ctx;
    say_and_exit(3, T_DEVICE_POWER_CUT, done, flash.ops - 1u, kind);
}
#endif

static void io_failed(void *ctx, const char *why)
{
    (void)ctx;
    fail(1, mk_text_reason(T_CANNOT_WRITE_STATE_FILE), why);
}

/* ------------------------------------------------------------------ time */

static volatile uint32_t systick_wraps;

void mk_systick_irq(void);

void mk_systick_irq(void) { systick_wraps = systick_wraps + 1u; }

/* SysTick ticks since start-up (25 MHz). Safe with interrupts held off: a wrap whose interrupt
 * is still pending is counted from the pending bit. */
static uint64_t ticks(void)
{
    for (;;) {
        const uint32_t wraps = systick_wraps, before = SYST_CVR;
        const int pending = (SCB_ICSR & SCB_ICSR_PENDSTSET) != 0;
        const uint32_t after = SYST_CVR;
        if (wraps != systick_wraps) {
            continue; /* the interrupt ran in between */
        }
        return ((uint64_t)wraps + (pending ? 1u : 0u)) * (SYST_RELOAD + 1u) +
               (SYST_RELOAD - (pending ? after : before));
    }
}

uint32_t mk_hal_millis(void)
{
    return (uint32_t)(ticks() / (MK_CLOCK_MPS2_HZ / 1000u));
}

#if MK_TEST_HOOKS
static volatile int timer_fired;

void mk_timer0_irq(void);

void mk_timer0_irq(void)
{
    TIMER0_INTCLEAR = 1;
    TIMER0_CTRL = 0;
    timer_fired = 1;
}

/* Wait `ms` milliseconds with interrupts on (receiving goes on): timer 0 wakes the core. */
static void wait_ms(uint32_t ms)
{
    if (!ms) {
        return;
    }
    timer_fired = 0;
    TIMER0_CTRL = 0;
    TIMER0_RELOAD = ms * (MK_CLOCK_MPS2_HZ / 1000u); /* a zero reload would stop the timer */
    TIMER0_VALUE = ms * (MK_CLOCK_MPS2_HZ / 1000u);
    TIMER0_CTRL = TIMER_CTRL_EN | TIMER_CTRL_INTEN;
    while (!timer_fired) {
        mk_wait_for_interrupt();
    }
}
#endif

/* Spin until the SysTick counter moves on: the spins, 4 instructions each (LDR, ADDS, CMP,
 * BEQ). Called right after a tick it takes 10 spins; the spins tell where in a tick it began. */
static uint32_t to_next_tick(void)
{
    uint32_t spins = 0, seen;
    const uint32_t now = SYST_CVR;
    __asm__ volatile("1: ldr %0, [%2]\n"
                     "   adds %1, %1, #1\n"
                     "   cmp %0, %3\n"
                     "   beq 1b\n"
                     : "=&r"(seen), "+r"(spins)
                     : "r"(&SYST_CVR), "r"(now)
                     : "cc", "memory");
    return spins;
}
#define SPIN_INSTRUCTIONS 4u

static uint32_t began; /* SysTick's counter when the measurement began */
static uint32_t measure_overhead;

/* Instructions between a start and an end: 40 per SysTick tick between the tick the start
 * waited for and the tick the end waits for, less the spins of the end's wait (the start and
 * the end each find their tick within one spin). The ticks are the counter's own difference,
 * modulo its 2^24: an inference of the largest model the flash holds takes far fewer than
 * 2^24 ticks (0.67 s, 671 million instructions). */
static uint32_t measure_raw(int start)
{
    uint32_t spins, spent;
    if (start) {
        mk_irq_disable();
        to_next_tick();
        began = SYST_CVR;
        return 0;
    }
    spins = to_next_tick();
    spent = ((began - SYST_CVR) & SYST_RELOAD) * INSTRUCTIONS_PER_TICK - spins * SPIN_INSTRUCTIONS;
    mk_irq_enable();
    return spent;
}

/* What an inference costs (device.h, mk_device_config.measure): its instructions, the
 * measurement's own cost (found at start-up by measuring nothing) taken off. */
static uint32_t measure(int start)
{
    uint32_t raw = measure_raw(start);
    return start ? 0 : raw > measure_overhead ? raw - measure_overhead : 0;
}

static void calibrate(void)
{
    uint32_t k, total = 0;
    for (k = 0; k < 16; k++) {
        measure_raw(1);
        total += measure_raw(0);
    }
    measure_overhead = (total + 8u) / 16u;
}

/* ------------------------------------------------------------------ the flash */

static int32_t state_handle = -1;

#if MK_TEST_HOOKS
static uint32_t erase_ms;
static const char *(*erase_page)(void *ctx, uint32_t page);

static const char *slow_erase(void *ctx, uint32_t page)
{
    const char *why = erase_page(ctx, page);
    wait_ms(erase_ms);
    return why;
}
#endif

/* Read or write (semihosting call `op`) `n` bytes at `offset` of the state file. */
static const char *file_transfer(uint32_t op, uint32_t offset, const uint8_t *data, uint32_t n,
                                 const char *short_why)
{
    uint32_t block[3] = {(uint32_t)state_handle, offset};
    if (mk_semihost(SYS_SEEK, block) != 0) {
        return "seek failed";
    }
    block[1] = (uint32_t)(uintptr_t)data;
    block[2] = n;
    return mk_semihost(op, block) == 0 ? 0 : short_why;
}

static const char *file_read(void *ctx, uint32_t offset, uint8_t *data, uint32_t n)
{
    (void)ctx;
    return file_transfer(SYS_READ, offset, data, n, "short read");
}

static const char *file_write(void *ctx, uint32_t offset, const uint8_t *data, uint32_t n)
{
    (void)ctx;
    return file_transfer(SYS_WRITE, offset, data, n, "short write");
}

static uint64_t file_length(void *ctx)
{
    uint32_t block[1] = {(uint32_t)state_handle};
    int32_t n = mk_semihost(SYS_FLEN, block);
    (void)ctx;
    return n < 0 ? 0u : (uint64_t)n;
}

static const mk_file_io state_io = {file_read, file_write, file_length, 0};

/* ------------------------------------------------------------------ options */

/* The board's options: QEMU passes them as the last word of its command line (-append, read
 * with SYS_GET_CMDLINE), the bytes of this structure in lowercase hex, two digits a byte: the
 * numbers 32-bit little-endian (the MPS2's order: the hex is copied into the structure as it
 * is), then the name and the state file's path, each ended by a NUL (an empty path: the flash
 * lives in RAM only). firmware_sim/qemu.py (Board.append) writes it; README.md shows it by
 * hand. */
typedef struct {
    uint32_t numbers; /* how many numbers follow: 4, 10 in the test images (a check) */
    uint32_t flash, page, ram, max_payload;
#if MK_TEST_HOOKS
    uint32_t protocol_version, endurance;
    uint32_t cut_op, cut_keep; /* cut_op 0xFFFFFFFF: no power cut */
    uint32_t erase_ms, rx_ring;
#endif
    char texts[MK_NAME_MAX + 1u + 256u]; /* the name, NUL, the path, NUL */
} options;

#define NUMBERS (MK_TEST_HOOKS ? 10u : 4u)
#define OPTIONS_BYTES (offsetof(options, texts) + sizeof o.texts)

static options o;

static void not_options(void) __attribute__((noreturn));
static void not_options(void)
{
    fail(2, mk_text_reason(T_COMMAND_LINE_NOT_OPTIONS), 0);
}

/* The command line: the program's name, then the options in hex (see above). */
static void parse(const char *s)
{
    uint8_t *const out = (uint8_t *)&o;
    const char *hex = s;
    uint32_t n;
    for (; *s; s++) {
        if (*s == ' ') {
            hex = s + 1;
        }
    }
    for (n = 0; hex[2u * n]; n++) {
        unsigned byte = 0, k;
        for (k = 0; k < 2u; k++) {
            const unsigned decimal = (unsigned)(hex[2u * n + k] - '0');
            const unsigned letter = (unsigned)(hex[2u * n + k] - 'a');
            if ((decimal > 9u && letter > 5u) || n + 1u >= OPTIONS_BYTES) { /* a NUL stays */
                not_options();
            }
            byte = byte << 4 | (decimal <= 9u ? decimal : letter + 10u);
        }
        out[n] = (uint8_t)byte;
    }
    if (n < offsetof(options, texts) || o.numbers != NUMBERS || strlen(o.texts) > MK_NAME_MAX ||
        offsetof(options, texts) != 4u * (1u + NUMBERS)) { /* (no padding: never) */
        not_options();
    }
}

/* ------------------------------------------------------------------ main loop */

static void emit(void *ctx, uint8_t type, const uint8_t *wire, size_t n)
{
    (void)ctx;
    (void)type;
    mk_uart_send(wire, (uint32_t)n);
}

int main(void)
{
    const char *why, *state = o.texts;
    mk_device_config config;
    { /* the command line, read into the arena (free until a model runs) */
        char *cmdline = (char *)mk_arena;
        uint32_t block[2] = {(uint32_t)(uintptr_t)cmdline, 4096u};
        if (mk_semihost(SYS_GET_CMDLINE, block) != 0) {
            not_options();
        }
        parse(cmdline);
    }
    state += strlen(state) + 1u;
    if (o.flash > MK_MPS2_FLASH_MAX) {
        fail(2, "flash", mk_text_reason(T_MORE_THAN_FLASH_COPY));
    }
#if MK_TEST_HOOKS
    why = mk_flash_file_init(&flash, flash_mem, flash_erases, o.flash, o.page, o.endurance);
#else
    why = mk_flash_file_init(&flash, flash_mem, flash_erases, o.flash, o.page, -1);
#endif
    if (why) {
        fail(2, why, 0);
    }
#if MK_TEST_HOOKS
    flash.power_cut = power_cut;
#endif
    flash.io_failed = io_failed;
    if (*state) {
        uint32_t open_block[3] = {(uint32_t)(uintptr_t)state, SH_MODE_RPLUSB, 0};
        open_block[2] = (uint32_t)strlen(state);
        state_handle = mk_semihost(SYS_OPEN, open_block);
        if (state_handle < 0) {
            fail(2, mk_text_reason(T_CANNOT_OPEN_STATE_FILE), state);
        }
        if ((why = mk_flash_file_attach(&flash, &state_io, state, 0)) != 0) {
            fail(2, why, 0);
        }
    }
#if MK_TEST_HOOKS
    flash.cut_op = o.cut_op == 0xFFFFFFFFu ? -1 : (int64_t)o.cut_op;
    flash.cut_keep = o.cut_keep;
    erase_ms = o.erase_ms;
    if (erase_ms) {
        erase_page = flash.hal.erase;
        flash.hal.erase = slow_erase;
        NVIC_ISER0 = 1u << IRQ_TIMER0;
    }
#endif

    SYST_RVR = SYST_RELOAD;
    SYST_CVR = 0;
    SYST_CSR = SYST_CSR_ENABLE | SYST_CSR_TICKINT | SYST_CSR_CLKSOURCE;
    calibrate();

    config.max_payload = o.max_payload;
    config.ram_bytes = o.ram;
#if MK_TEST_HOOKS
    config.protocol_version = o.protocol_version;
#else
    config.protocol_version = MK_PROTOCOL_VERSION;
#endif
    memcpy(config.name, o.texts, sizeof config.name); /* NUL-terminated: checked in parse */
    config.measure = measure;
    if ((why = mk_device_init(&device, &config, &flash.hal)) != 0) {
        fail(2, why, 0);
    }
#if MK_TEST_HOOKS
    mk_uart_init(o.rx_ring);
#else
    mk_uart_init(0); /* the ring sized for the window */
#endif
    mk_irq_enable();
    for (;;) {
        const uint8_t *bytes;
        int overrun;
        uint32_t n = mk_uart_received(&bytes, &overrun);
        if (overrun) {
            mk_device_rx_overrun(&device);
        } else if (n) {
            mk_device_receive(&device, bytes, n, emit, 0);
            mk_uart_consumed(n);
        } else {
            mk_uart_idle();
        }
    }
}
