/* The parts of the MPS2 (AN385 Cortex-M3, AN386 Cortex-M4) the port uses: the Cortex-M system
 * registers (SysTick, NVIC, SCB) and the CMSDK APB UART0 and timer 0 (Arm CMSDK TRM, DDI0479;
 * QEMU's hw/arm/mps2.c, hw/char/cmsdk-apb-uart.c). */
#ifndef MK_CMSDK_H
#define MK_CMSDK_H

#include <stdint.h>

#define MK_REG(address) (*(volatile uint32_t *)(address))

/* SysTick: 24-bit down counter on the processor clock (25 MHz on MPS2). */
#define SYST_CSR MK_REG(0xE000E010u)
#define SYST_RVR MK_REG(0xE000E014u)
#define SYST_CVR MK_REG(0xE000E018u)
#define SYST_CSR_ENABLE 1u
#define SYST_CSR_TICKINT 2u
#define SYST_CSR_CLKSOURCE 4u
#define SYST_RELOAD 0xFFFFFFu

#define SCB_ICSR MK_REG(0xE000ED04u)
#define SCB_ICSR_PENDSTSET (1u << 26)
#define NVIC_ISER0 MK_REG(0xE000E100u)

/* CMSDK APB UART0 (RX interrupt 0). */
#define UART0_BASE 0x40004000u
#define UART_DATA MK_REG(UART0_BASE + 0x00u)
#define UART_STATE MK_REG(UART0_BASE + 0x04u)
#define UART_CTRL MK_REG(UART0_BASE + 0x08u)
#define UART_INTSTATUS MK_REG(UART0_BASE + 0x0Cu) /* write 1s to clear */
#define UART_BAUDDIV MK_REG(UART0_BASE + 0x10u)
#define UART_STATE_TXFULL 1u
#define UART_STATE_RXFULL 2u
#define UART_STATE_RXOVERRUN 8u
#define UART_CTRL_TX_EN 1u
#define UART_CTRL_RX_EN 2u
#define UART_CTRL_RX_INTEN 8u
#define UART_INT_RX 2u
#define IRQ_UART0_RX 0u

/* CMSDK APB timer 0: 32-bit down counter on the 25 MHz peripheral clock, interrupt 8. */
#define TIMER0_BASE 0x40000000u
#define TIMER0_CTRL MK_REG(TIMER0_BASE + 0x00u)
#define TIMER0_VALUE MK_REG(TIMER0_BASE + 0x04u)
#define TIMER0_RELOAD MK_REG(TIMER0_BASE + 0x08u)
#define TIMER0_INTCLEAR MK_REG(TIMER0_BASE + 0x0Cu)
#define TIMER_CTRL_EN 1u
#define TIMER_CTRL_INTEN 8u
#define IRQ_TIMER0 8u

#define MK_CLOCK_MPS2_HZ 25000000u

static inline void mk_irq_disable(void) { __asm__ volatile("cpsid i" ::: "memory"); }
static inline void mk_irq_enable(void) { __asm__ volatile("cpsie i" ::: "memory"); }
static inline void mk_wait_for_interrupt(void) { __asm__ volatile("wfi" ::: "memory"); }

#endif
