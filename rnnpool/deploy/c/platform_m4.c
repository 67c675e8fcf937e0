/* Cortex-M4 platform for qemu-system-arm -machine mps2-an386: vector table, reset, Arm semihosting for the
 * image and the text output, SysTick instruction counting, and a stack that faults when it overflows.
 *
 * The program's stack (PSP) sits at the bottom of RAM, under an MPU region that forbids every access, so
 * an overflow faults at once instead of overwriting data; exceptions run on a small handler stack (MSP)
 * at the top of RAM, so the fault handler can still report. Both stacks are painted at reset and their
 * high-water marks are measured, not estimated. No heap and no stdio. */
#include <stdint.h>
#include <string.h>

#include "platform.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _stack_bottom, _stack_top, _msp_bottom, _msp_top, _ram_end;
extern int main(int argc, char **argv);

#ifndef SYSTICK_RELOAD
#define SYSTICK_RELOAD 0xFFFFFFu /* ticks per SysTick interrupt, minus one (the verification run uses a small value) */
#endif
#define STACK_PAINT 0xDEADBEEFu
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SCB_SHCSR (*(volatile uint32_t *)0xE000ED24u)
#define SCB_CFSR (*(volatile uint32_t *)0xE000ED28u)
#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)
#define MPU_CTRL (*(volatile uint32_t *)0xE000ED94u)
#define MPU_RNR (*(volatile uint32_t *)0xE000ED98u)
#define MPU_RBAR (*(volatile uint32_t *)0xE000ED9Cu)
#define MPU_RASR (*(volatile uint32_t *)0xE000EDA0u)
#define RAM_ORIGIN 0x20000000u
#define GUARD_BYTES 4096u /* larger than any one frame, so no push can jump over it */

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
    /* MMFSR bit 4 (MSTKERR) or BFSR bit 12 (STKERR): the exception frame could not be pushed because the
     * program's stack overflowed into the guard */
    const uint32_t cfsr = SCB_CFSR;
    if ((cfsr & 0x10u) || (cfsr & 0x1000u)) {
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

static void paint(uint32_t *from, uint32_t *to) {
    for (volatile uint32_t *p = from; p < to; ++p) *p = STACK_PAINT;
}

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

void Reset_Handler(void) {
    for (uint32_t *src = &_sidata, *dst = &_sdata; dst < &_edata;) *dst++ = *src++;
    for (uint32_t *dst = &_sbss; dst < &_ebss;) *dst++ = 0;
    uint32_t msp;
    __asm__ volatile("mov %0, sp" : "=r"(msp));
    paint(&_msp_bottom, (uint32_t *)(msp - 16));
    paint(&_stack_bottom, &_stack_top);
    SCB_CPACR |= 0xFu << 20;                          /* the FPU (CP10, CP11) */
    SCB_SHCSR |= (1u << 16) | (1u << 17) | (1u << 18); /* MemManage, BusFault, UsageFault handlers */
    MPU_RNR = 0;                                      /* the guard: no access to the 4 KiB under the stack */
    MPU_RBAR = (uint32_t)&_stack_bottom - GUARD_BYTES;
    MPU_RASR = (11u << 1) | 1u;                       /* SIZE = 2^(11+1) bytes, AP = no access, enabled */
    MPU_CTRL = 5u;                                    /* enabled, default map for everything else */
    __asm__ volatile("dsb\n isb" ::: "memory");
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
static uint32_t used(const uint32_t *bottom, const uint32_t *top) {
    const uint32_t *p = bottom;
    while (p < top && *p == STACK_PAINT) ++p;
    return (uint32_t)top - (uint32_t)p;
}

void platform_report(void) {
    const uint32_t ticks = platform_ticks() - ticks_at_start;
    print_number("static_ram_bytes", (uint32_t)&_ram_end - (uint32_t)&_stack_top);
    print_number("handler_stack_bytes", used(&_msp_bottom, &_msp_top));
    print_number("stack_bytes", used(&_stack_bottom, &_stack_top));
    print_number("stack_region_bytes", (uint32_t)&_stack_top - (uint32_t)&_stack_bottom);
    print_number("systick_ticks", ticks);
    print_number("systick_reload", SYSTICK_RELOAD);
}

void platform_exit(int code) {
    semihost(SYS_EXIT, (void *)(code == 0 ? ADP_APPLICATION_EXIT : ADP_RUNTIME_ERROR));
    for (;;) {}
}
