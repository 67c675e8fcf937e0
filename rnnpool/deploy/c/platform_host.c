/* Host (gcc) platform: stdio, nothing measured. */
#include <stdio.h>
#include <stdlib.h>

#include "platform.h"

static FILE *input;

void platform_init(void) {}

int platform_open_input(int argc, char **argv) {
    if (argc < 2) return 0;
    input = fopen(argv[1], "rb");
    return input != NULL;
}

int platform_read(void *buf, size_t n) { return fread(buf, 1, n, input) == n ? 0 : -1; }

void platform_close_input(void) { fclose(input); }

void platform_print(const char *text) { fputs(text, stdout); }

void platform_report(void) {}

uint32_t platform_ticks(void) { return 0; }

void platform_exit(int code) {
    fflush(stdout);
    exit(code);
}
