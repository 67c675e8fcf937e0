/* Detection outputs: head rows become candidates ranked by an integer logit; boxes decoded in float32;
 * greedy NMS. Also the FNV-1a checksum the program prints of every output. */
#include <math.h>
#include <string.h>

#include "rnnpool_rt.h"

uint32_t rt_fnv1a(uint32_t hash, const int8_t *data, size_t n) {
    for (size_t i = 0; i < n; ++i) hash = (hash ^ (uint8_t)data[i]) * 16777619u;
    return hash;
}

static int ranks_before(const rt_detection *a, int32_t key, int32_t anchor) {
    return a->key > key || (a->key == key && a->anchor < anchor);
}

void rt_head_row(const rt_head *h, int y, const int8_t *conf, const int8_t *loc, rt_candidates *cands) {
    for (int x = 0; x < h->width; ++x) {
        const int32_t key = ((int32_t)conf[2 * x + 1] - conf[2 * x]) * h->key_mult;
        if (key <= h->threshold) continue;
        const int32_t anchor = h->anchor_offset + y * h->width + x;
        int pos = cands->count;
        while (pos > 0 && !ranks_before(&cands->items[pos - 1], key, anchor)) --pos;
        if (pos >= cands->capacity) continue;
        const int last = cands->count < cands->capacity ? cands->count : cands->capacity - 1;
        memmove(&cands->items[pos + 1], &cands->items[pos], (size_t)(last - pos) * sizeof(rt_detection));
        if (cands->count < cands->capacity) cands->count++;
        rt_detection *d = &cands->items[pos];
        const int8_t *l = loc + 4 * x;
        float v[4];
        for (int i = 0; i < 4; ++i) v[i] = (float)(l[i] - h->zp_loc) * h->scale_loc;
        const float cx = ((float)x + 0.5f) * h->stride + v[0] * 0.1f * h->size;
        const float cy = ((float)y + 0.5f) * h->stride + v[1] * 0.1f * h->size;
        const float bw = h->size * expf(v[2] * 0.2f);
        const float bh = h->size * expf(v[3] * 0.2f);
        d->key = key;
        d->anchor = anchor;
        d->box[0] = cx - bw / 2;
        d->box[1] = cy - bh / 2;
        d->box[2] = cx + bw / 2;
        d->box[3] = cy + bh / 2;
    }
}

static float iou(const float *a, const float *b) {
    const float w = fmaxf(0.0f, fminf(a[2], b[2]) - fmaxf(a[0], b[0]));
    const float h = fmaxf(0.0f, fminf(a[3], b[3]) - fmaxf(a[1], b[1]));
    const float inter = w * h;
    const float uni = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    return uni > 0 ? inter / uni : 0.0f;
}

int rt_nms(rt_candidates *cands, float iou_threshold, int max_detections) {
    int kept = 0;
    for (int i = 0; i < cands->count && kept < max_detections; ++i) {
        int keep = 1;
        for (int j = 0; j < kept && keep; ++j)
            if (iou(cands->items[i].box, cands->items[j].box) > iou_threshold) keep = 0;
        if (keep) cands->items[kept++] = cands->items[i];
    }
    return kept;
}
