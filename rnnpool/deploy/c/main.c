/* Runs the generated model on one image fed row by row, as a camera delivers it, and prints each head's
 * output checksums and the detections:
 *   head <i> <fnv1a of conf> <fnv1a of loc>
 *   det <x1*100> <y1*100> <x2*100> <y2*100> <key> <anchor>
 *   done <number of detections>
 * followed by the platform's measurements. */
#include "model.h"
#include "platform.h"

static rt_detection candidate_items[MODEL_MAX_CANDIDATES];

static char *append_text(char *dst, const char *text) {
    while (*text) *dst++ = *text++;
    return dst;
}

static char *append_int(char *dst, int64_t value) {
    char digits[24];
    int n = 0;
    uint64_t v = value < 0 ? (uint64_t)(-value) : (uint64_t)value;
    if (value < 0) *dst++ = '-';
    do { digits[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (n) *dst++ = digits[--n];
    return dst;
}

static char *append_hex(char *dst, uint32_t value) {
    for (int shift = 28; shift >= 0; shift -= 4) *dst++ = "0123456789abcdef"[(value >> shift) & 15];
    return dst;
}

int main(int argc, char **argv) {
    char line[160];
    platform_init();
    if (!platform_open_input(argc, argv)) {
        platform_print("error: cannot open the input image\n");
        return 2;
    }
    rt_candidates candidates = {candidate_items, 0, MODEL_MAX_CANDIDATES};
    uint32_t hashes[2 * MODEL_NUM_HEADS];
    model_reset(&candidates, hashes);
    for (int y = 0; y < MODEL_INPUT_HEIGHT; ++y) {
        int8_t *row = model_input_row(y);
        if (platform_read(row, MODEL_INPUT_ROW_BYTES) != 0) {
            platform_print("error: the input image is shorter than the model's input\n");
            return 3;
        }
        for (int i = 0; i < MODEL_INPUT_ROW_BYTES; ++i) row[i] = (int8_t)((int)(uint8_t)row[i] - 128);
        model_push_row(y);
    }
    platform_close_input();
    model_finish();
    for (int h = 0; h < MODEL_NUM_HEADS; ++h) {
        char *p = append_text(line, "head ");
        p = append_int(p, h);
        p = append_text(p, " ");
        p = append_hex(p, hashes[2 * h]);
        p = append_text(p, " ");
        p = append_hex(p, hashes[2 * h + 1]);
        p = append_text(p, "\n");
        *p = 0;
        platform_print(line);
    }
    const int kept = rt_nms(&candidates, MODEL_NMS_THRESHOLD, MODEL_MAX_DETECTIONS);
    for (int i = 0; i < kept; ++i) {
        const rt_detection *d = &candidates.items[i];
        char *p = append_text(line, "det");
        for (int k = 0; k < 4; ++k) {
            p = append_text(p, " ");
            p = append_int(p, (int64_t)(d->box[k] * 100.0f));
        }
        p = append_text(p, " ");
        p = append_int(p, d->key);
        p = append_text(p, " ");
        p = append_int(p, d->anchor);
        p = append_text(p, "\n");
        *p = 0;
        platform_print(line);
    }
    char *p = append_text(line, "done ");
    p = append_int(p, kept);
    p = append_text(p, "\n");
    *p = 0;
    platform_print(line);
    platform_report();
    return 0;
}
