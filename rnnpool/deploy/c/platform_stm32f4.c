/* STM32F439 (NUCLEO-F439ZI) platform: 168 MHz from the 16 MHz HSI through the PLL, text over USART3
 * (PD8/PD9, the ST-LINK virtual COM port, 115200 baud), cycles from the DWT counter. The image is the one
 * built into flash (input_image.c: the camera of this demonstration), read a row at a time. The program's
 * stack sits at the bottom of SRAM under an MPU guard, as on the emulated M4. */
#include <stdint.h>
#include <string.h>

#include "platform_cortex_m.h"

extern uint32_t _siccm, _sccm, _eccm;
extern const uint8_t input_image[];
extern const uint32_t input_image_bytes;

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

void Reset_Handler(void) {
    for (uint32_t *src = &_sidata, *dst = &_sdata; dst < &_edata;) *dst++ = *src++;
    for (uint32_t *dst = &_sbss; dst < &_ebss;) *dst++ = 0;
    RCC_AHB1ENR |= RCC_AHB1ENR_CCM;
    for (uint32_t *src = &_siccm, *dst = &_sccm; dst < &_eccm;) *dst++ = *src++;
    paint(&_stack_bottom, &_stack_top);
    enable_fpu_and_stack_guard();
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
    platform_print(stack_overflowed(cfsr) ? "error: stack overflow\n" : "error: processor fault\n");
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

void platform_report(void) {
    print_number("static_ram_bytes", (uint32_t)&_ram_end - (uint32_t)&_stack_top);
    print_number("stack_bytes", stack_used(&_stack_bottom, &_stack_top));
    print_number("cycles", DWT_CYCCNT - cycles_at_start);
}

void platform_exit(int code) {
    platform_print(code == 0 ? "exit 0\n" : "exit 1\n");
    for (;;) {}
}
