/* Cortex-M4 platform for qemu-system-arm -machine mps2-an386: vector table, reset, Arm semihosting for the
 * image and the text output, SysTick instruction counting, and a stack that faults when it overflows.
 *
 * The program's stack (PSP) sits at the bottom of RAM, under an MPU region that forbids every access, so
 * an overflow faults at once instead of overwriting data; exceptions run on a small handler stack (MSP)
 * at the top of RAM, so the fault handler can still report. Both stacks are painted at reset and their
 * high-water marks are measured, not estimated. No heap and no stdio. */
#include <stdint.h>
#include <string.h>

#include "platform_cortex_m.h"

#ifndef SYSTICK_RELOAD
#define SYSTICK_RELOAD 0xFFFFFFu /* ticks per SysTick interrupt, minus one (the verification run uses a small value) */
#endif
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define RAM_ORIGIN 0x20000000u

enum { SYS_OPEN = 0x01, SYS_CLOSE = 0x02, SYS_WRITE0 = 0x04, SYS_READ = 0x06, SYS_EXIT = 0x18 };
enum { ADP_APPLICATION_EXIT = 0x20026, ADP_RUNTIME_ERROR = 0x20023 };

static int semihost(int op, void *arg) {
    register int r0 __asm__("r0") = op;
    register void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static volatile uint32_t systick_wraps;
static uint32_t ticks_at_start;
static int input_handle = -1;

void Reset_Handler(void);
void SysTick_Handler(void) { systick_wraps++; }

static void print_hex(const char *name, uint32_t value) {
    char buf[32];
    int i = 0;
    while (*name) buf[i++] = *name++;
    for (int shift = 28; shift >= 0; shift -= 4) buf[i++] = "0123456789abcdef"[(value >> shift) & 15];
    buf[i++] = '\n';
    buf[i] = 0;
    semihost(SYS_WRITE0, buf);
}

static void fault(void) {
    const uint32_t cfsr = SCB_CFSR;
    if (stack_overflowed(cfsr)) {
        semihost(SYS_WRITE0, (void *)"error: stack overflow\n");
    } else {
        uint32_t psp;
        __asm__ volatile("mrs %0, psp" : "=r"(psp));
        semihost(SYS_WRITE0, (void *)"error: processor fault\n");
        print_hex("cfsr 0x", cfsr);
        print_hex("mmfar 0x", *(volatile uint32_t *)0xE000ED34u);
        print_hex("bfar 0x", *(volatile uint32_t *)0xE000ED38u);
        if (psp >= (uint32_t)&_stack_bottom && psp + 32 <= (uint32_t)&_stack_top) print_hex("pc 0x", ((uint32_t *)psp)[6]);
    }
    semihost(SYS_EXIT, (void *)ADP_RUNTIME_ERROR);
    for (;;) {}
}

__attribute__((section(".isr_vector"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))&_msp_top, Reset_Handler, fault, fault, fault, fault, fault, 0, 0, 0, 0, fault, fault, 0, fault,
    SysTick_Handler,
};

void Reset_Handler(void) {
    for (uint32_t *src = &_sidata, *dst = &_sdata; dst < &_edata;) *dst++ = *src++;
    for (uint32_t *dst = &_sbss; dst < &_ebss;) *dst++ = 0;
    uint32_t msp;
    __asm__ volatile("mov %0, sp" : "=r"(msp));
    paint(&_msp_bottom, (uint32_t *)(msp - 16));
    paint(&_stack_bottom, &_stack_top);
    enable_fpu_and_stack_guard();
    /* thread mode on the program's stack (PSP); exceptions keep the handler stack (MSP) */
    run_on_program_stack();
}

/* Ticks since SysTick started: the counter runs RELOAD, ..., 1, 0, RELOAD, ... and the interrupt (one
 * more wrap) comes as it reaches 0, so 0 is the last tick of the wrap just counted. */
uint32_t platform_ticks(void) {
    uint32_t wraps, value;
    do {
        wraps = systick_wraps;
        value = SYST_CVR;
    } while (wraps != systick_wraps);
    return value == 0 ? wraps * (SYSTICK_RELOAD + 1u) - 1u : wraps * (SYSTICK_RELOAD + 1u) + (SYSTICK_RELOAD - value);
}

void platform_init(void) {
    SYST_RVR = SYSTICK_RELOAD;
    SYST_CVR = 0;
    SYST_CSR = 7u; /* processor clock, interrupt on wrap, enabled */
    while (SYST_CVR == 0) {} /* the first tick loads RELOAD */
    ticks_at_start = platform_ticks();
}

int platform_open_input(int argc, char **argv) {
    (void)argc;
    (void)argv;
    static const char name[] = "input.raw";
    uint32_t args[3] = {(uint32_t)name, 1 /* "rb" */, sizeof(name) - 1};
    input_handle = semihost(SYS_OPEN, args);
    return input_handle >= 0;
}

int platform_read(void *buf, size_t n) {
    uint32_t args[3] = {(uint32_t)input_handle, (uint32_t)buf, (uint32_t)n};
    return semihost(SYS_READ, args) == 0 ? 0 : -1; /* returns the count NOT read */
}

void platform_close_input(void) {
    uint32_t args[1] = {(uint32_t)input_handle};
    semihost(SYS_CLOSE, args);
}

void platform_print(const char *text) { semihost(SYS_WRITE0, (void *)text); }

void platform_report(void) {
    const uint32_t ticks = platform_ticks() - ticks_at_start;
    print_number("static_ram_bytes", (uint32_t)&_ram_end - (uint32_t)&_stack_top);
    print_number("handler_stack_bytes", stack_used(&_msp_bottom, &_msp_top));
    print_number("stack_bytes", stack_used(&_stack_bottom, &_stack_top));
    print_number("stack_region_bytes", (uint32_t)&_stack_top - (uint32_t)&_stack_bottom);
    print_number("systick_ticks", ticks);
    print_number("systick_reload", SYSTICK_RELOAD);
}

void platform_exit(int code) {
    semihost(SYS_EXIT, (void *)(code == 0 ? ADP_APPLICATION_EXIT : ADP_RUNTIME_ERROR));
    for (;;) {}
}
