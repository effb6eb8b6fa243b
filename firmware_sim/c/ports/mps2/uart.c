/* The receive ring. The interrupt handler stores each byte; when the ring is full (the main
 * loop fell behind a host that sent more than its window) or the UART itself lost a byte, the
 * handler remembers where the gap is and drops everything until the main loop has reached the
 * gap, then until the next frame delimiter (00), which it stores: the frame the gap fell into
 * is dropped whole and counted as a receive error (mk_rx_overrun), frames before it are
 * handled, and the host sends again what was lost. Nothing waits on anything: an overrun costs
 * frames, never a hang. */
#include "uart.h"

#include "cmsdk.h"
#include "config.h"

#define RING_BYTES (MK_RX_WINDOW * (MK_COBS_MAX(MK_MAX_PAYLOAD + MK_FRAME_OVERHEAD) + 1u))

static uint8_t ring[RING_BYTES] __attribute__((section(".ring")));
static uint32_t capacity = RING_BYTES;
/* Positions of the next byte to store and to take, counted modulo twice the capacity: the
 * ring is empty when they are equal and full when they are `capacity` apart. */
static volatile uint32_t head, tail;
static volatile int dropping;         /* in a gap: dropping bytes */
static volatile int gap_pending;      /* a gap the main loop has not reached yet */
static volatile uint32_t gap_at;      /* ... after this many stored bytes */
static volatile uint32_t overruns;

static uint32_t used(uint32_t from, uint32_t to)
{
    return to >= from ? to - from : to + 2u * capacity - from;
}

static uint32_t advance(uint32_t at, uint32_t n)
{
    at += n;
    return at >= 2u * capacity ? at - 2u * capacity : at;
}

static uint32_t slot(uint32_t at) { return at >= capacity ? at - capacity : at; }

static void lose(void)
{
    if (!dropping) {
        dropping = 1;
        gap_pending = 1;
        gap_at = head;
        overruns++;
    }
}

void mk_uart_rx_irq(void)
{
    UART_INTSTATUS = UART_INT_RX;
    /* the UART's own buffer was overwritten: found here, as the byte that sat in it raised
     * this interrupt (pending, or again after this handler if it came while it ran) */
    if (UART_STATE & UART_STATE_RXOVERRUN) {
        UART_STATE = UART_STATE_RXOVERRUN;
        lose();
    }
    while (UART_STATE & UART_STATE_RXFULL) {
        const uint8_t byte = (uint8_t)UART_DATA;
        const int full = used(tail, head) >= capacity;
        if (dropping && (gap_pending || byte != 0 || full)) {
            continue;
        }
        if (full) {
            lose();
            continue;
        }
        dropping = 0;
        ring[slot(head)] = byte;
        head = advance(head, 1);
    }
}

void mk_uart_init(uint32_t bytes)
{
    capacity = bytes && bytes < RING_BYTES ? bytes : RING_BYTES;
    UART_BAUDDIV = MK_CLOCK_MPS2_HZ / 115200u;
    UART_CTRL = UART_CTRL_TX_EN | UART_CTRL_RX_EN | UART_CTRL_RX_INTEN;
    NVIC_ISER0 = 1u << IRQ_UART0_RX;
}

uint32_t mk_uart_ring_bytes(void) { return RING_BYTES; }
uint32_t mk_uart_overruns(void) { return overruns; }

uint32_t mk_uart_received(const uint8_t **bytes, int *overrun)
{
    uint32_t end = head, at = tail, n;
    *overrun = 0;
    if (gap_pending) {
        end = gap_at;
        if (at == end) {
            gap_pending = 0; /* the handler may store again from the next delimiter */
            *overrun = 1;
            return 0;
        }
    }
    n = used(at, end);
    if (n > capacity - slot(at)) { /* up to the end of the ring; the rest next time */
        n = capacity - slot(at);
    }
    *bytes = ring + slot(at);
    return n;
}

void mk_uart_consumed(uint32_t n)
{
    tail = advance(tail, n);
}

void mk_uart_idle(void)
{
    mk_irq_disable();
    if (head == tail && !gap_pending) {
        mk_wait_for_interrupt(); /* an interrupt wakes it even while they are held */
    }
    mk_irq_enable();
}

void mk_uart_send(const uint8_t *data, uint32_t n)
{
    while (n--) {
        while (UART_STATE & UART_STATE_TXFULL) {
        }
        UART_DATA = *data++;
    }
}
