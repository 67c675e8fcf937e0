/* The RNNPool row kernel (the FastGRNN cells are in rt_fastgrnn.c).
 *
 * Work shared between patches is done once: W1 x once per pixel and patch row, each column's sweep and
 * its RNN2 projection once per patch row (horizontally overlapping patches share them), and, with
 * cache_rows, each row's sweep once per frame (vertically overlapping patches share it through row_cache).
 * The results equal the per-patch definition of rnnpool.deploy.int8_reference bit for bit. */
#include "rnnpool_rt.h"
#include "rt_arith.h"
#include "rt_kernels.h"

static inline int mod(int v, int m) { return ((v % m) + m) % m; }

/* The output affine of a zero state: RNNPool's zero padding (pad_mode 0). */
static void zero_state_pixel(const rt_rnnpool *p, int8_t *dst) {
    const int channels = 4 * p->rnn2->hidden;
    for (int ch = 0; ch < channels; ++ch) dst[ch] = (int8_t)rt_clamp(rt_rq64(p->out_bias[ch], p->out_shift) + p->out_zp, -128, 127);
}

static void output_pixel(const rt_rnnpool *p, const int16_t *states, int8_t *dst) {
    const int channels = 4 * p->rnn2->hidden, h2 = p->rnn2->hidden;
    for (int ch = 0; ch < channels; ++ch) {
        const int64_t v = (int64_t)states[(ch / h2) * p->rnn2->udim + ch % h2] * p->out_mult[ch] + p->out_bias[ch];
        dst[ch] = (int8_t)rt_clamp(rt_rq64(v, p->out_shift) + p->out_zp, -128, 127);
    }
}

void rt_rnnpool_row(const rt_rnnpool *p, rt_rnnpool_state *st, const rt_ring *in, int oy, int8_t *out) {
    const rt_fastgrnn *c1 = p->rnn1, *c2 = p->rnn2;
    const int r = p->r, c = p->c, h1 = c1->hidden, ud1 = c1->udim, h2 = c2->hidden, ud2 = c2->udim;
    const int y0 = oy * p->sr - p->pr, channels = 4 * h2;
    const int shared = r - p->sr; /* rows shared with the next patch row */
    const int32_t *steps[RT_MAX_PATCH];
    int16_t finals[4 * RT_MAX_HIDDEN];
    int16_t *tmp = st->state; /* the sweeps' second state buffer */
    int wx_next = -p->pc;
    for (int ox = 0; ox < p->w_out; ++ox) {
        const int x0 = ox * p->sc - p->pc;
        /* project the patch's new columns and sweep each once (the next patch may share it) */
        for (int x = x0 > wx_next ? x0 : wx_next; x < x0 + c; ++x) {
            int32_t *col = st->wx + (size_t)mod(x, c) * r * h1;
            for (int i = 0; i < r; ++i) {
                const int y = y0 + i;
                int32_t *a = col + (size_t)i * h1;
                if (x < 0 || x >= p->w_in || y < 0 || y >= p->h_in) {
                    for (int j = 0; j < h1; ++j) a[j] = c1->w_rows[j * RT_W_ROW_WORDS(c1->wdim) + RT_W_BIAS(c1->wdim)];
                } else {
                    rt_fastgrnn_project_pixel(c1, rt_ring_row(in, y) + (size_t)x * p->cin, a, st->unpacked);
                }
                steps[i] = a;
            }
            int16_t *sum = st->col_sums + (size_t)mod(x, c) * ud1;
            rt_fastgrnn_run(c1, steps, r, sum, tmp);
            rt_fastgrnn_project_state(c2, sum, st->wx2 + (size_t)(r + mod(x, c)) * h2); /* RNN2's input, shared too */
        }
        if (x0 + c > wx_next) wx_next = x0 + c;
        /* row sweeps: from the cache where the previous patch row computed them */
        for (int i = 0; i < r; ++i) {
            const int y = y0 + i;
            int16_t *sum = st->row_sums + (size_t)i * ud1;
            int16_t *cached = p->cache_rows ? st->row_cache + ((size_t)mod(y, shared) * p->w_out + ox) * ud1 : NULL;
            if (cached && y <= st->cached_through) {
                memcpy(sum, cached, (size_t)ud1 * sizeof(int16_t));
                continue;
            }
            for (int j = 0; j < c; ++j) steps[j] = st->wx + ((size_t)mod(x0 + j, c) * r + i) * h1;
            rt_fastgrnn_run(c1, steps, c, sum, tmp);
            if (cached && i >= p->sr) memcpy(cached, sum, (size_t)ud1 * sizeof(int16_t));
        }
        /* RNN2 over the row summaries and the column summaries, forward and reversed */
        for (int i = 0; i < r; ++i) rt_fastgrnn_project_state(c2, st->row_sums + (size_t)i * ud1, st->wx2 + (size_t)i * h2);
        for (int d = 0; d < 4; ++d) {
            const int len = d < 2 ? r : c;
            for (int t = 0; t < len; ++t) {
                const int i = d % 2 ? len - 1 - t : t; /* the i-th row or column of the patch */
                steps[t] = st->wx2 + (size_t)(d < 2 ? i : r + mod(x0 + i, c)) * h2;
            }
            rt_fastgrnn_run(c2, steps, len, finals + (size_t)d * ud2, tmp);
        }
        output_pixel(p, finals, out + (size_t)ox * channels);
    }
    if (p->cache_rows) st->cached_through = y0 + r - 1;
    int8_t *pad = out + (size_t)p->w_out * channels;
    for (int i = 0; i < p->pad_right; ++i, pad += channels) {
        if (p->pad_mode == 1) {
            memcpy(pad, pad - channels, (size_t)channels);
        } else {
            zero_state_pixel(p, pad);
        }
    }
}

void rt_rnnpool_pad_row(const rt_rnnpool *p, int8_t *out) {
    const int channels = 4 * p->rnn2->hidden;
    for (int i = 0; i < p->w_out + p->pad_right; ++i) zero_state_pixel(p, out + (size_t)i * channels);
}
