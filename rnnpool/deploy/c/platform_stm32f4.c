/* STM32F439 (NUCLEO-F439ZI) platform: 168 MHz from the 16 MHz HSI through the PLL, text over USART3
 * (PD8/PD9, the ST-LINK virtual COM port, 115200 baud), cycles from the DWT counter. The image is the one
 * built into flash (input_image.c: the camera of this demonstration), read a row at a time. The program's
 * stack sits at the bottom of SRAM under an MPU guard, as on the emulated M4. */
#include <stdint.h>
#include <string.h>

#include "platform.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _stack_bottom, _stack_top, _msp_bottom, _msp_top, _ram_end;
extern uint32_t _siccm, _sccm, _eccm;
extern const uint8_t input_image[];
extern const uint32_t input_image_bytes;
extern int main(int argc, char **argv);

#define REG(addr) (*(volatile uint32_t *)(addr))
#define RCC_CR REG(0x40023800u)
#define RCC_PLLCFGR REG(0x40023804u)
#define RCC_CFGR REG(0x40023808u)
#define RCC_AHB1ENR REG(0x40023830u)
#define RCC_AHB1ENR_CCM (1u << 20)
#define RCC_APB1ENR REG(0x40023840u)
#define FLASH_ACR REG(0x40023C00u)
#define GPIOD_MODER REG(0x40020C00u)
#define GPIOD_AFRH REG(0x40020C24u)
#define USART3_SR REG(0x40004800u)
#define USART3_DR REG(0x40004804u)
#define USART3_BRR REG(0x40004808u)
#define USART3_CR1 REG(0x4000480Cu)
#define DEMCR REG(0xE000EDFCu)
#define DWT_CTRL REG(0xE0001000u)
#define DWT_CYCCNT REG(0xE0001004u)
#define SCB_SHCSR REG(0xE000ED24u)
#define SCB_CFSR REG(0xE000ED28u)
#define SCB_CPACR REG(0xE000ED88u)
#define MPU_CTRL REG(0xE000ED94u)
#define MPU_RNR REG(0xE000ED98u)
#define MPU_RBAR REG(0xE000ED9Cu)
#define MPU_RASR REG(0xE000EDA0u)
#define STACK_PAINT 0xDEADBEEFu

static uint32_t read_offset, cycles_at_start;

void Reset_Handler(void);
static void fault(void);

__attribute__((section(".isr_vector"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))&_msp_top, Reset_Handler, fault, fault, fault, fault, fault, 0, 0, 0, 0, fault, fault, 0, fault, fault,
};

static void clocks_168mhz(void) {
    FLASH_ACR = (1u << 8) | (1u << 9) | (1u << 10) | 5u; /* prefetch, caches, 5 wait states */
    /* PLL from HSI (16 MHz): /M=16, xN=336, /P=2 -> 168 MHz; /Q=7 -> 48 MHz */
    RCC_PLLCFGR = 16u | (336u << 6) | (0u << 16) | (0u << 22) | (7u << 24);
    RCC_CR |= 1u << 24;
    while (!(RCC_CR & (1u << 25))) {}
    RCC_CFGR = (5u << 10) | (4u << 13) | 2u; /* APB1 /4 (42 MHz), APB2 /2 (84 MHz), SYSCLK = PLL */
    while ((RCC_CFGR & (3u << 2)) != (2u << 2)) {}
}

static void usart3_init(void) {
    RCC_AHB1ENR |= 1u << 3; /* GPIOD */
    RCC_APB1ENR |= 1u << 18; /* USART3 */
    GPIOD_MODER = (GPIOD_MODER & ~(0xFu << 16)) | (0xAu << 16); /* PD8, PD9: alternate function */
    GPIOD_AFRH = (GPIOD_AFRH & ~0xFFu) | 0x77u;                 /* AF7: USART3 */
    USART3_BRR = 42000000u / 115200u;
    USART3_CR1 = (1u << 13) | (1u << 3); /* enabled, transmitter on */
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
    RCC_AHB1ENR |= RCC_AHB1ENR_CCM;
    for (uint32_t *src = &_siccm, *dst = &_sccm; dst < &_eccm;) *dst++ = *src++;
    for (volatile uint32_t *p = &_stack_bottom; p < &_stack_top; ++p) *p = STACK_PAINT;
    SCB_CPACR |= 0xFu << 20;
    SCB_SHCSR |= (1u << 16) | (1u << 17) | (1u << 18);
    MPU_RNR = 0; /* the guard: no access to the 4 KiB under the stack (larger than any one frame) */
    MPU_RBAR = (uint32_t)&_stack_bottom - 4096u;
    MPU_RASR = (11u << 1) | 1u;
    MPU_CTRL = 5u;
    __asm__ volatile("dsb\n isb" ::: "memory");
    clocks_168mhz();
    usart3_init();
    run_on_program_stack();
}

void platform_print(const char *text) {
    for (; *text; ++text) {
        if (*text == '\n') {
            while (!(USART3_SR & (1u << 7))) {}
            USART3_DR = '\r';
        }
        while (!(USART3_SR & (1u << 7))) {}
        USART3_DR = (uint8_t)*text;
    }
}

static void fault(void) {
    const uint32_t cfsr = SCB_CFSR;
    platform_print((cfsr & 0x10u) || (cfsr & 0x1000u) ? "error: stack overflow\n" : "error: processor fault\n");
    for (;;) {}
}

uint32_t platform_ticks(void) { return DWT_CYCCNT; }

void platform_init(void) {
    DEMCR |= 1u << 24;
    DWT_CYCCNT = 0;
    DWT_CTRL |= 1u;
    cycles_at_start = DWT_CYCCNT;
}

int platform_open_input(int argc, char **argv) {
    (void)argc;
    (void)argv;
    read_offset = 0;
    return 1;
}

int platform_read(void *buf, size_t n) {
    if (read_offset + n > input_image_bytes) return -1;
    memcpy(buf, input_image + read_offset, n);
    read_offset += (uint32_t)n;
    return 0;
}

void platform_close_input(void) {}

static void print_number(const char *name, uint32_t value) {
    char buf[48], digits[12];
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
    const uint32_t *p = &_stack_bottom;
    while (p < &_stack_top && *p == STACK_PAINT) ++p;
    print_number("static_ram_bytes", (uint32_t)&_ram_end - (uint32_t)&_stack_top);
    print_number("stack_bytes", (uint32_t)&_stack_top - (uint32_t)p);
    print_number("cycles", DWT_CYCCNT - cycles_at_start);
}

void platform_exit(int code) {
    platform_print(code == 0 ? "exit 0\n" : "exit 1\n");
    for (;;) {}
}
