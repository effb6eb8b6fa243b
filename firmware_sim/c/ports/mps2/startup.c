/* Reset and the vector table of the MPS2 port: copy the initial data, zero the rest, run
 * main; a fault ends QEMU with exit status 70 and a word on standard error (an undefined
 * instruction, e.g. SMLAD on the Cortex-M3, is one). */
#include <stdint.h>
#include <string.h>

#include "semihost.h"
#include "text.h"

extern uint32_t _data_start[], _data_end[], _data_load[], _bss_start[], _bss_end[], _stack_top[];
int main(void);
void mk_reset(void);
void mk_uart_rx_irq(void);
void mk_systick_irq(void);
void mk_timer0_irq(void);

/* A word on standard error, then the end with exit status 70. */
static void stop(mk_text_id text) __attribute__((noreturn));
static void stop(mk_text_id text)
{
    mk_semihost_print(mk_text_reason(text));
    mk_semihost_exit(70);
}

static void fault(void) { stop(T_PROCESSOR_FAULT); }

static void unexpected(void) { stop(T_UNEXPECTED_INTERRUPT); }

void mk_reset(void)
{
    memcpy(_data_start, _data_load, (size_t)((char *)_data_end - (char *)_data_start));
    memset(_bss_start, 0, (size_t)((char *)_bss_end - (char *)_bss_start));
    mk_semihost_exit((uint32_t)main());
}

typedef void (*vector)(void);

/* The table ends at the last interrupt the image enables: UART0 RX (0), and in the test images
 * timer 0 (8: the erase time). The others stay disabled in the NVIC and are never taken. */
__attribute__((section(".vectors"), used)) static const vector vectors[16 + (MK_TEST_HOOKS ? 9 : 1)] = {
    (vector)(uintptr_t)_stack_top, mk_reset, unexpected /* NMI */, fault, fault, fault, fault,
    0, 0, 0, 0, unexpected /* SVCall */, unexpected, 0, unexpected /* PendSV */, mk_systick_irq,
    /* external interrupts from 0 */
    mk_uart_rx_irq,
#if MK_TEST_HOOKS
    unexpected, unexpected, unexpected, unexpected, unexpected, unexpected, unexpected,
    mk_timer0_irq,
#endif
};
