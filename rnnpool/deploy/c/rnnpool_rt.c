/* rnnpool int8 runtime kernels; see rnnpool_rt.h. Every integer step mirrors
 * rnnpool/deploy/int8_reference.py so that outputs are bit-exact. */
#include "rnnpool_rt.h"

#include <math.h>
#include <string.h>

#define STATE_BITS 14
#define LUT_SHIFT 5

static inline int32_t rt_rq(int64_t v, int64_t m, int32_t s) {
    return (int32_t)((v * m + ((int64_t)1 << (s - 1))) >> s);
}

static inline int8_t rt_clamp8(int32_t v, int32_t lo, int32_t hi) {
    return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
}

void rt_conv_row(const rt_conv *p, const int8_t *const *rows, int w_in, int w_out, int8_t *out) {
    const int k = p->k, cin = p->cin, cout = p->cout;
    const int out_channels = cout - p->maxout + 1;
    for (int ox = 0; ox < w_out; ++ox) {
        const int x0 = ox * p->stride - p->pad;
        int8_t *dst = out + (size_t)ox * out_channels;
        if (p->groups == 1) {
            int8_t best = -128;
            for (int o = 0; o < cout; ++o) {
                const int8_t *wo = p->w + (size_t)o * k * k * cin;
                int32_t acc = p->bias[o];
                for (int dy = 0; dy < k; ++dy) {
                    const int8_t *row = rows[dy];
                    if (!row) continue;
                    for (int dx = 0; dx < k; ++dx) {
                        const int ix = x0 + dx;
                        if (ix < 0 || ix >= w_in) continue;
                        const int8_t *px = row + (size_t)ix * cin;
                        const int8_t *wk = wo + (size_t)(dy * k + dx) * cin;
                        for (int i = 0; i < cin; ++i) acc += (int32_t)(px[i] - p->in_zp) * wk[i];
                    }
                }
                const int8_t v = rt_clamp8(rt_rq(acc, p->mult[o], p->shift[o]) + p->out_zp, p->act_min, p->act_max);
                if (o < p->maxout) {
                    if (o == 0 || v > best) best = v;
                    if (o == p->maxout - 1) dst[0] = best;
                } else {
                    dst[o - p->maxout + 1] = v;
                }
            }
        } else { /* depthwise: channel c reads input channel c */
            for (int c = 0; c < cout; ++c) {
                const int8_t *wc = p->w + (size_t)c * k * k;
                int32_t acc = p->bias[c];
                for (int dy = 0; dy < k; ++dy) {
                    const int8_t *row = rows[dy];
                    if (!row) continue;
                    for (int dx = 0; dx < k; ++dx) {
                        const int ix = x0 + dx;
                        if (ix < 0 || ix >= w_in) continue;
                        acc += (int32_t)(row[(size_t)ix * cin + c] - p->in_zp) * wc[dy * k + dx];
                    }
                }
                dst[c] = rt_clamp8(rt_rq(acc, p->mult[c], p->shift[c]) + p->out_zp, p->act_min, p->act_max);
            }
        }
    }
}

#define RT_MAX_KERNEL 7

void rt_conv_layer(const rt_conv *p, const int8_t *in, int h_in, int w_in, int8_t *out, int h_out, int w_out) {
    const size_t in_row = (size_t)w_in * p->cin, out_row = (size_t)w_out * (p->cout - p->maxout + 1);
    const int8_t *rows[RT_MAX_KERNEL];
    for (int oy = 0; oy < h_out; ++oy) {
        for (int dy = 0; dy < p->k; ++dy) {
            const int iy = oy * p->stride - p->pad + dy;
            rows[dy] = (iy < 0 || iy >= h_in) ? NULL : in + (size_t)iy * in_row;
        }
        rt_conv_row(p, rows, w_in, w_out, out + (size_t)oy * out_row);
    }
}

void rt_depthwise_inplace(const rt_conv *p, int8_t *data, int h, int w, int8_t *scratch) {
    /* Output row y overwrites input row y; the original rows y-1 and y live in the two scratch rows. */
    const size_t row = (size_t)w * p->cin;
    int8_t *saved[2] = {scratch, scratch + row};
    const int8_t *rows[3];
    for (int y = 0; y < h; ++y) {
        int8_t *current = saved[y & 1];
        memcpy(current, data + (size_t)y * row, row);
        rows[0] = y > 0 ? saved[(y - 1) & 1] : NULL;
        rows[1] = current;
        rows[2] = y + 1 < h ? data + (size_t)(y + 1) * row : NULL;
        rt_conv_row(p, rows, w, w, data + (size_t)y * row);
    }
}

void rt_mbconv(const rt_mbconv_block *p, const int8_t *in, int8_t *out, int8_t *scratch) {
    const rt_conv *dw = p->dw;
    const int k = dw->k;
    const size_t in_row = (size_t)p->w_in * (p->expand ? p->expand->cin : p->hidden);
    const size_t hid_row = (size_t)p->w_in * p->hidden;
    const size_t out_row = (size_t)p->w_out * p->project->cout;
    int8_t *ring = scratch;
    int8_t *dw_row = scratch + (p->expand ? (size_t)k * hid_row : 0);
    int next_expanded = 0;
    const int8_t *rows[RT_MAX_KERNEL];
    for (int oy = 0; oy < p->h_out; ++oy) {
        const int first = oy * dw->stride - dw->pad;
        for (int dy = 0; dy < k; ++dy) {
            const int iy = first + dy;
            if (iy < 0 || iy >= p->h_in) {
                rows[dy] = NULL;
            } else if (p->expand) {
                for (; next_expanded <= iy; ++next_expanded) {
                    const int8_t *src = in + (size_t)next_expanded * in_row;
                    rt_conv_row(p->expand, &src, p->w_in, p->w_in, ring + (size_t)(next_expanded % k) * hid_row);
                }
                rows[dy] = ring + (size_t)(iy % k) * hid_row;
            } else {
                rows[dy] = in + (size_t)iy * in_row;
            }
        }
        rt_conv_row(dw, rows, p->w_in, p->w_out, dw_row);
        int8_t *dst = out + (size_t)oy * out_row;
        const int8_t *src = dw_row;
        rt_conv_row(p->project, &src, p->w_out, p->w_out, dst);
        if (p->add) {
            const rt_add *a = p->add;
            const int8_t *res = in + (size_t)oy * in_row;
            for (size_t i = 0; i < out_row; ++i) {
                const int64_t v = (int64_t)(dst[i] - a->a_zp) * a->mult_a + (int64_t)(res[i] - a->b_zp) * a->mult_b;
                dst[i] = rt_clamp8(rt_rq(v, 1, a->shift) + a->out_zp, -128, 127);
            }
        }
    }
}

static inline int32_t lut(const int16_t *table, int32_t pre) {
    if (pre < -32768) pre = -32768;
    if (pre > 32767) pre = 32767;
    return table[(pre + 32768) >> LUT_SHIFT];
}

/* wx[j] = rq(sum_i W[j][i] (x[i] - zp)) for int8 pixels */
static void project_pixel(const rt_fastgrnn *c, const int8_t *x, int32_t *wx) {
    for (int j = 0; j < c->hidden; ++j) {
        const int8_t *wj = c->w + (size_t)j * c->input;
        int32_t acc = 0;
        for (int i = 0; i < c->input; ++i) acc += (int32_t)(x[i] - c->in_zp) * wj[i];
        wx[j] = rt_rq(acc, c->w_mult[j], c->w_shift[j]);
    }
}

/* the same for Q14 states (zero point 0) */
static void project_state(const rt_fastgrnn *c, const int16_t *x, int32_t *wx) {
    for (int j = 0; j < c->hidden; ++j) {
        const int8_t *wj = c->w + (size_t)j * c->input;
        int32_t acc = 0;
        for (int i = 0; i < c->input; ++i) acc += (int32_t)x[i] * wj[i];
        wx[j] = rt_rq(acc, c->w_mult[j], c->w_shift[j]);
    }
}

static void fastgrnn_step(const rt_fastgrnn *c, const int32_t *wx, int16_t *h, int32_t *pre) {
    const int n = c->hidden;
    for (int j = 0; j < n; ++j) {
        const int8_t *uj = c->u + (size_t)j * n;
        int32_t acc = 0;
        for (int i = 0; i < n; ++i) acc += (int32_t)h[i] * uj[i];
        pre[j] = wx[j] + rt_rq(acc, c->u_mult[j], c->u_shift[j]);
    }
    for (int j = 0; j < n; ++j) {
        const int32_t z = lut(c->lut_gate, pre[j] + c->bias_gate[j]);
        const int32_t cand = lut(c->lut_update, pre[j] + c->bias_update[j]);
        const int32_t coef = ((c->zeta * ((1 << STATE_BITS) - z) + (1 << (STATE_BITS - 1))) >> STATE_BITS) + c->nu;
        int32_t v = (coef * cand + z * h[j] + (1 << (STATE_BITS - 1))) >> STATE_BITS;
        h[j] = (int16_t)(v < -32768 ? -32768 : (v > 32767 ? 32767 : v));
    }
}

/* Final state of a sequence of n projections taken every `step` words. */
static void run_sequence(const rt_fastgrnn *c, const int32_t *wx, int n, int step, int16_t *h, int32_t *pre) {
    for (int j = 0; j < c->hidden; ++j) h[j] = 0;
    for (int t = 0; t < n; ++t) fastgrnn_step(c, wx + (ptrdiff_t)t * step, h, pre);
}

/* Padding pixels of an RNNPool output: the output affine of a zero state. */
static void pad_pixels(const rt_rnnpool *p, int8_t *out, int count) {
    const int channels = 4 * p->rnn2->hidden;
    for (int i = 0; i < count; ++i)
        for (int ch = 0; ch < channels; ++ch)
            out[(size_t)i * channels + ch] = rt_clamp8(rt_rq(p->out_bias[ch], 1, p->out_shift) + p->out_zp, -128, 127);
}

void rt_rnnpool_row(const rt_rnnpool *p, const int8_t *const *rows, int8_t *out, int32_t *scratch) {
    const rt_fastgrnn *c1 = p->rnn1, *c2 = p->rnn2;
    const int r = p->r, c = p->c, h1 = c1->hidden, h2 = c2->hidden, channels = 4 * h2;
    int32_t *wx = scratch;                                 /* [r][c][h1] */
    int16_t *sums = (int16_t *)(wx + (size_t)r * c * h1);  /* rows [r][h1], then columns [c][h1] */
    int32_t *wx2 = (int32_t *)(sums + 2 * (size_t)(r + c) * h1); /* [r + c][h2] (int16 area is over-allocated) */
    int32_t *pre = wx2 + (size_t)(r + c) * h2;
    int16_t *state = (int16_t *)(pre + (h1 > h2 ? h1 : h2));
    for (int ox = 0; ox < p->w_out; ++ox) {
        const int x0 = ox * p->sc;
        for (int i = 0; i < r; ++i)
            for (int j = 0; j < c; ++j) project_pixel(c1, rows[i] + (size_t)(x0 + j) * p->cin, wx + ((size_t)i * c + j) * h1);
        int16_t *row_sums = sums, *col_sums = sums + (size_t)r * h1;
        for (int i = 0; i < r; ++i) run_sequence(c1, wx + (size_t)i * c * h1, c, h1, row_sums + (size_t)i * h1, pre);
        for (int j = 0; j < c; ++j) run_sequence(c1, wx + (size_t)j * h1, r, c * h1, col_sums + (size_t)j * h1, pre);
        for (int i = 0; i < r + c; ++i) project_state(c2, sums + (size_t)i * h1, wx2 + (size_t)i * h2);
        int8_t *dst = out + (size_t)ox * channels;
        for (int d = 0; d < 4; ++d) {
            const int n = d < 2 ? r : c;
            const int32_t *seq = wx2 + (d < 2 ? 0 : (size_t)r * h2);
            if (d % 2 == 0) {
                run_sequence(c2, seq, n, h2, state, pre);
            } else {
                run_sequence(c2, seq + (size_t)(n - 1) * h2, n, -h2, state, pre);
            }
            for (int k = 0; k < h2; ++k) {
                const int ch = d * h2 + k;
                const int64_t v = (int64_t)state[k] * p->out_mult[ch] + p->out_bias[ch];
                dst[ch] = rt_clamp8(rt_rq(v, 1, p->out_shift) + p->out_zp, -128, 127);
            }
        }
    }
    pad_pixels(p, out + (size_t)p->w_out * channels, p->pad_right);
}

void rt_rnnpool_pad_row(const rt_rnnpool *p, int8_t *out) { pad_pixels(p, out, p->w_out + p->pad_right); }

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
