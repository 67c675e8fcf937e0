/* What the generated program needs from the machine it runs on: input, text output, exit, and (on the
 * microcontroller) measurements. platform_host.c uses stdio; platform_m4.c uses Arm semihosting and
 * counts instructions with SysTick. */
#ifndef RNNPOOL_PLATFORM_H
#define RNNPOOL_PLATFORM_H

#include <stddef.h>
#include <stdint.h>

void platform_init(void);
/* Open the image (argv[1] on the host, "input.raw" in the emulator's working directory); 0 on failure. */
int platform_open_input(int argc, char **argv);
/* Read exactly n bytes of the image into buf (as a camera delivers a row); 0 on success. */
int platform_read(void *buf, size_t n);
void platform_close_input(void);
void platform_print(const char *text);
/* Print measurements (static RAM, stack high-water mark, ticks) as "name value" lines, if any. */
void platform_report(void);
void platform_exit(int code);
/* A free-running count of instruction ticks (wraps; differences are exact), or 0 where none is kept. */
uint32_t platform_ticks(void);

/* Per-layer instruction counting around each kernel call (RT_PROFILE: defined by the M4 build). */
#ifdef RT_PROFILE
#define RT_TIC() const uint32_t rt_tic = platform_ticks()
#define RT_TOC(layer) (model_ticks[(layer)] += platform_ticks() - rt_tic)
#else
#define RT_TIC() ((void)0)
#define RT_TOC(layer) ((void)0)
#endif

#endif
