/* Cortex-M4 platform for qemu-system-arm -machine mps2-an386: vector table, reset, Arm semihosting for
 * the image and the text output, SysTick cycle counting, and stack painting so that the stack's
 * high-water mark is measured, not estimated. No heap and no stdio. */
#include <stdint.h>
#include <string.h>

#include "platform.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _stack_bottom, _stack_top;
extern int main(int argc, char **argv);

#define STACK_PAINT 0xDEADBEEFu
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)
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
static int input_handle = -1;

void Reset_Handler(void);
void SysTick_Handler(void) { systick_wraps++; }
static void fault(void) {
    semihost(SYS_WRITE0, (void *)"error: processor fault\n");
    semihost(SYS_EXIT, (void *)ADP_RUNTIME_ERROR);
    for (;;) {}
}

__attribute__((section(".isr_vector"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))&_stack_top, Reset_Handler, fault, fault, fault, fault, fault, 0, 0, 0, 0, fault, fault, 0, fault,
    SysTick_Handler,
};

void Reset_Handler(void) {
    for (uint32_t *src = &_sidata, *dst = &_sdata; dst < &_edata;) *dst++ = *src++;
    for (uint32_t *dst = &_sbss; dst < &_ebss;) *dst++ = 0;
    uint32_t sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (volatile uint32_t *p = &_stack_bottom; (uint32_t)p < sp - 64; ++p) *p = STACK_PAINT;
    SCB_CPACR |= 0xFu << 20; /* the FPU (CP10, CP11) */
    __asm__ volatile("dsb\n isb" ::: "memory");
    platform_exit(main(0, 0));
}

void platform_init(void) {
    SYST_RVR = 0xFFFFFFu;
    SYST_CVR = 0;
    SYST_CSR = 7u; /* processor clock, interrupt on wrap, enabled */
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
    char buf[48];
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

void platform_report(void) {
    uint32_t wraps, value;
    do { wraps = systick_wraps; value = SYST_CVR; } while (wraps != systick_wraps);
    const uint64_t ticks = (uint64_t)wraps * 0x1000000u + (0xFFFFFFu - value);
    const uint32_t *p = &_stack_bottom;
    while (p < &_stack_top && *p == STACK_PAINT) ++p;
    print_number("static_ram_bytes", (uint32_t)&_ebss - RAM_ORIGIN);
    print_number("stack_bytes", (uint32_t)&_stack_top - (uint32_t)p);
    print_number("stack_region_bytes", (uint32_t)&_stack_top - (uint32_t)&_stack_bottom);
    print_number("systick_ticks", ticks);
}

void platform_exit(int code) {
    semihost(SYS_EXIT, (void *)(code == 0 ? ADP_APPLICATION_EXIT : ADP_RUNTIME_ERROR));
    for (;;) {}
}
