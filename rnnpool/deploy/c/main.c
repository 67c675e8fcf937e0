/* Runs the generated model on one image fed row by row, as a camera delivers it, and prints:
 *   head <i> <fnv1a of scores> <fnv1a of offsets>     (detectors)
 *   det <x1*100> <y1*100> <x2*100> <y2*100> <key> <anchor>
 *   logits <fnv1a> <v0> <v1> ...                      (classifiers)
 *   layer <i> <ticks>                                  (where the platform counts instructions)
 *   map <name> <fnv1a of the map, row by row>           (built with MODEL_TRACE)
 *   done <detections or classes>
 * followed by the platform's measurements. */
#include "model.h"
#include "platform.h"

#if MODEL_NUM_HEADS > 0
static rt_detection candidate_items[MODEL_MAX_CANDIDATES];
#endif

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

static void print_line(char *line, char *end) {
    *end++ = '\n';
    *end = 0;
    platform_print(line);
}

int main(int argc, char **argv) {
    char line[160];
    platform_init();
    if (!platform_open_input(argc, argv)) {
        platform_print("error: cannot open the input image\n");
        return 2;
    }
#if MODEL_NUM_HEADS > 0
    rt_candidates candidates = {candidate_items, 0, MODEL_MAX_CANDIDATES};
#else
    rt_candidates candidates = {NULL, 0, 0};
#endif
    uint32_t hashes[MODEL_NUM_OUTPUTS];
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
    if (!model_finish()) {
        platform_print("error: a layer did not produce all its rows\n");
        return 4;
    }
    int count = 0;
#if MODEL_NUM_HEADS > 0
    for (int h = 0; h < MODEL_NUM_HEADS; ++h) {
        char *p = append_text(line, "head ");
        p = append_int(p, h);
        p = append_text(p, " ");
        p = append_hex(p, hashes[2 * h]);
        p = append_text(p, " ");
        p = append_hex(p, hashes[2 * h + 1]);
        print_line(line, p);
    }
    count = rt_nms(&candidates, MODEL_NMS_THRESHOLD, MODEL_MAX_DETECTIONS);
    for (int i = 0; i < count; ++i) {
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
        print_line(line, p);
    }
#else
    {
        const int8_t *logits = model_logits();
        char *p = append_text(line, "logits ");
        p = append_hex(p, rt_fnv1a(RT_FNV_INIT, logits, MODEL_NUM_CLASSES));
        print_line(line, p);
        for (int c = 0; c < MODEL_NUM_CLASSES; ++c) {
            p = append_text(line, "class ");
            p = append_int(p, c);
            p = append_text(p, " ");
            p = append_int(p, logits[c]);
            print_line(line, p);
        }
        count = MODEL_NUM_CLASSES;
    }
#endif
    if (platform_ticks() != 0) {
        for (int i = 0; i < MODEL_NUM_LAYERS; ++i) {
            char *p = append_text(line, "layer ");
            p = append_int(p, i);
            p = append_text(p, " ");
            p = append_int(p, model_ticks[i]);
            print_line(line, p);
        }
    }
#ifdef MODEL_TRACE
    for (int i = 0; i < model_num_maps; ++i) {
        char *p = append_text(line, "map ");
        p = append_text(p, model_map_names[i]);
        p = append_text(p, " ");
        p = append_hex(p, model_map_hashes[i]);
        print_line(line, p);
    }
#endif
    char *p = append_text(line, "done ");
    p = append_int(p, count);
    print_line(line, p);
    platform_report();
    return 0;
}
