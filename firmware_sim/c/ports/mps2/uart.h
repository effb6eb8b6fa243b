/* UART0 of the MPS2: received bytes go by interrupt into a ring sized for the protocol's
 * window; replies are sent by polling. */
#ifndef MK_UART_H
#define MK_UART_H

#include <stdint.h>

/* Frames of the largest payload the ring holds: the host's window (LinkSettings.window). */
#define MK_RX_WINDOW 4u

/* Start the UART with a ring of `capacity` bytes (at most the static ring; 0 = all of it). */
void mk_uart_init(uint32_t capacity);
/* Bytes of the static ring. */
uint32_t mk_uart_ring_bytes(void);

/* Received bytes up to the next gap left by an overrun: a pointer into the ring and their
 * number (0 if none); *overrun is set when the bytes before a gap have all been taken, and the
 * frame the gap fell into must be dropped (mk_rx_overrun). mk_uart_consumed(n) frees them. */
uint32_t mk_uart_received(const uint8_t **bytes, int *overrun);
void mk_uart_consumed(uint32_t n);
/* Sleep until an interrupt unless bytes are waiting. */
void mk_uart_idle(void);

void mk_uart_send(const uint8_t *data, uint32_t n);

/* The receive interrupt (UART0 RX). */
void mk_uart_rx_irq(void);

/* Overruns since start-up (ring full, or the UART's own). */
uint32_t mk_uart_overruns(void);

#endif
