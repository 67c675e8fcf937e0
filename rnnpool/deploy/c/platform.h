/* What the generated program needs from the machine it runs on: input, text output, exit, and (on the
 * microcontroller) measurements. platform_host.c uses stdio; platform_m4.c uses Arm semihosting. */
#ifndef RNNPOOL_PLATFORM_H
#define RNNPOOL_PLATFORM_H

#include <stddef.h>
#include <stdint.h>

void platform_init(void);
/* Open the image (argv[1] on the host, "input.raw" in the emulator's working directory); 0 on failure. */
int platform_open_input(int argc, char **argv);
/* Read exactly n bytes of the image into buf (as a camera would deliver a band); 0 on success. */
int platform_read(void *buf, size_t n);
void platform_close_input(void);
void platform_print(const char *text);
/* Print measurements (static RAM, stack high-water mark, cycles) as "name value" lines, if any. */
void platform_report(void);
void platform_exit(int code);

#endif
