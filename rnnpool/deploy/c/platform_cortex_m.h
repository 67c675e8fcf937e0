/* What the two Cortex-M4 platforms (QEMU's mps2-an386 and the STM32F439 board) share: the system
 * registers, and a program stack that faults when it overflows.
 *
 * The program's stack (PSP) sits at the bottom of RAM, under an MPU region that forbids every access, so an
 * overflow faults at once instead of overwriting data; exceptions run on a small handler stack (MSP). Both
 * are painted at reset, so their high-water marks can be measured. Included once, by the platform file. */
#ifndef RNNPOOL_PLATFORM_CORTEX_M_H
#define RNNPOOL_PLATFORM_CORTEX_M_H

#include <stdint.h>

#include "platform.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _stack_bottom, _stack_top, _msp_bottom, _msp_top, _ram_end;
extern int main(int argc, char **argv);

#define SCB_SHCSR (*(volatile uint32_t *)0xE000ED24u)
#define SCB_CFSR (*(volatile uint32_t *)0xE000ED28u)
#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)
#define MPU_CTRL (*(volatile uint32_t *)0xE000ED94u)
#define MPU_RNR (*(volatile uint32_t *)0xE000ED98u)
#define MPU_RBAR (*(volatile uint32_t *)0xE000ED9Cu)
#define MPU_RASR (*(volatile uint32_t *)0xE000EDA0u)
#define STACK_PAINT 0xDEADBEEFu
#define GUARD_BYTES 4096u /* larger than any one frame, so no push can jump over it */

static void paint(uint32_t *from, uint32_t *to) {
    for (volatile uint32_t *p = from; p < to; ++p) *p = STACK_PAINT;
}

/* The FPU on; MemManage, BusFault and UsageFault handlers on; the guard region under the program's stack. */
static void enable_fpu_and_stack_guard(void) {
    SCB_CPACR |= 0xFu << 20;                           /* the FPU (CP10, CP11) */
    SCB_SHCSR |= (1u << 16) | (1u << 17) | (1u << 18); /* MemManage, BusFault, UsageFault handlers */
    MPU_RNR = 0;                                       /* the guard: no access to the 4 KiB under the stack */
    MPU_RBAR = (uint32_t)&_stack_bottom - GUARD_BYTES;
    MPU_RASR = (11u << 1) | 1u;                        /* SIZE = 2^(11+1) bytes, AP = no access, enabled */
    MPU_CTRL = 5u;                                     /* enabled, default map for everything else */
    __asm__ volatile("dsb\n isb" ::: "memory");
}

/* "name value\n" through platform_print. */
static void print_number(const char *name, uint64_t value) {
    char buf[64];
    char digits[24];
    int n = 0, i = 0;
    do { digits[n++] = (char)('0' + value % 10); value /= 10; } while (value);
    while (*name) buf[i++] = *name++;
    buf[i++] = ' ';
    while (n) buf[i++] = digits[--n];
    buf[i++] = '\n';
    buf[i] = 0;
    platform_print(buf);
}

/* Bytes of [bottom, top) a stack has used: from the first word whose paint was overwritten. */
static uint32_t stack_used(const uint32_t *bottom, const uint32_t *top) {
    const uint32_t *p = bottom;
    while (p < top && *p == STACK_PAINT) ++p;
    return (uint32_t)top - (uint32_t)p;
}

/* MMFSR bit 4 (MSTKERR) or BFSR bit 12 (STKERR): an exception frame could not be pushed because the
 * program's stack overflowed into the guard. */
static int stack_overflowed(uint32_t cfsr) { return (cfsr & 0x10u) || (cfsr & 0x1000u); }

/* The program runs in thread mode on its own stack (PSP), exceptions on the handler stack (MSP). The switch
 * happens in a function without a frame, so no local variable is left behind on the old stack. */
__attribute__((used, noinline)) void program_main(void) { platform_exit(main(0, 0)); }

__attribute__((naked, noreturn)) static void run_on_program_stack(void) {
    __asm__ volatile("ldr r0, =_stack_top\n\t"
                     "msr psp, r0\n\t"
                     "movs r0, #2\n\t"
                     "msr control, r0\n\t"
                     "isb\n\t"
                     "bl program_main\n\t"
                     "b .\n\t"
                     ".ltorg\n\t");
}

#endif
