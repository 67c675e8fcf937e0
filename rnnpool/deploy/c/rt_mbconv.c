/* MobileNetV2 block, one output row at a time, holding k - 1 expanded rows instead of k.
 *
 * Output row oy reads expanded rows top .. top + k - 1 (top = oy * stride - pad). All but the last are
 * in the k - 1 slots; the last ("rolling") row is expanded pixel by pixel as the output row advances, into
 * a FIFO of k + 1 pixels, and each of its pixels is written over the top row's slot once no output pixel
 * of this row reads that column of the top row any more. The top row is dead after this output row, and
 * the rolling row takes its slot for the next rows. Each expanded pixel is computed once. */
#include "rnnpool_rt.h"
#include "rt_arith.h"
#include "rt_kernels.h"

/* In 32 bits: the code generator checks that 255 (|mult_a| + |mult_b|) + 2^(shift - 1) fits. */
static void residual_add(const rt_add *a, const int8_t *res, int8_t *out, int n) {
    const int32_t za = a->a_zp, zb = a->b_zp, ma = a->mult_a, mb = a->mult_b, zo = a->out_zp, shift = a->shift;
    const int32_t half = 1 << (shift - 1);
    for (int i = 0; i < n; ++i) {
        const int32_t v = (out[i] - za) * ma + (res[i] - zb) * mb + half;
        out[i] = (int8_t)RT_SSAT(zo + (v >> shift), 8);
    }
}

void rt_mbconv_prefetch(const rt_mbconv *p, rt_mbconv_state *st, const rt_ring *in, int available, int oy) {
    const rt_conv *dw = p->dw;
    if (st->recompute) return;
    const int k = dw->k, top = oy * dw->stride - dw->pad;
    const int last = top + k - 1 < p->h_in - 1 ? top + k - 1 : p->h_in - 1;
    const int end = available < last ? available : last;
    int e = st->expanded > top ? st->expanded : top;
    if (e < 0) e = 0;
    for (; e < end; ++e) {
        rt_pointwise(p->expand, rt_ring_row(in, e), p->w_in, st->slot[e % (k - 1)], st->unpacked);
        st->expanded = e + 1;
    }
}

void rt_mbconv_row(const rt_mbconv *p, rt_mbconv_state *st, const rt_ring *in, int oy, int8_t *out) {
    const rt_conv *dw = p->dw;
    const int k = dw->k, s = dw->stride, pad = dw->pad, hid = p->hidden, w_in = p->w_in;
    const int cout = p->project->cout, fifo_n = RT_FIFO_PIXELS(k);
    const int top = oy * s - pad;
    const int last = top + k - 1 < p->h_in - 1 ? top + k - 1 : p->h_in - 1;
    const int8_t *rows[RT_MAX_KERNEL];
    const int8_t *taps[RT_MAX_KERNEL * RT_MAX_KERNEL];
    int rolling = -1, written = 0, computed = 0;
    int8_t *roll_slot = NULL;
    const int8_t *roll_src = NULL;
    const rt_conv *ex = p->expand;
    if (ex && st->recompute) { /* expand every input row of this output row into the scratch rows */
        for (int dy = 0; dy < k; ++dy) {
            const int e = top + dy;
            rows[dy] = NULL;
            if (e >= 0 && e <= last) {
                rt_pointwise(ex, rt_ring_row(in, e), w_in, st->slot[dy], st->unpacked);
                rows[dy] = st->slot[dy];
            }
        }
    } else if (ex) {
        int e = st->expanded > top ? st->expanded : top;
        if (e < 0) e = 0;
        for (; e < last; ++e) rt_pointwise(ex, rt_ring_row(in, e), w_in, st->slot[e % (k - 1)], st->unpacked);
        if (last >= 0 && last >= st->expanded) {
            rolling = last;
            roll_slot = st->slot[last % (k - 1)];
            roll_src = rt_ring_row(in, last);
        }
    }
    for (int dy = 0; dy < k && !(ex && st->recompute); ++dy) {
        const int e = top + dy;
        if (e < 0 || e > last || (rolling >= 0 && e == rolling)) {
            rows[dy] = NULL;
        } else {
            rows[dy] = ex ? st->slot[e % (k - 1)] : rt_ring_row(in, e);
        }
    }
    for (int ox = 0; ox < p->w_out; ++ox) {
        const int x0 = ox * s - pad;
        if (rolling >= 0) {
            const int need = x0 + k - 1 < w_in - 1 ? x0 + k - 1 : w_in - 1;
            for (; written < x0 && written < computed; ++written)
                memcpy(roll_slot + (size_t)written * hid, st->fifo + (size_t)(written % fifo_n) * hid, (size_t)hid);
            for (; computed <= need; computed += 2)
                rt_pointwise(ex, roll_src + (size_t)computed * ex->cin, computed + 1 < w_in ? 2 : 1,
                             st->fifo + (size_t)(computed % fifo_n) * hid, st->unpacked);
        }
        for (int dy = 0; dy < k; ++dy) {
            const int e = top + dy;
            for (int dx = 0; dx < k; ++dx) {
                const int c = x0 + dx;
                const int8_t *tap = NULL;
                if (c >= 0 && c < w_in) {
                    if (rolling >= 0 && e == rolling) {
                        tap = st->fifo + (size_t)(c % fifo_n) * hid;
                    } else if (rows[dy]) {
                        tap = rows[dy] + (size_t)c * hid;
                    }
                }
                taps[dy * k + dx] = tap;
            }
        }
        rt_depthwise_pixel(dw, taps, st->dw_out + (size_t)(ox & 1) * hid);
        if ((ox & 1) || ox == p->w_out - 1) {
            const int n = (ox & 1) ? 2 : 1, first = ox - n + 1;
            int8_t *dst = out + (size_t)first * cout;
            rt_pointwise(p->project, st->dw_out, n, dst, st->unpacked);
            if (p->add) residual_add(p->add, rt_ring_row(in, oy) + (size_t)first * cout, dst, n * cout);
        }
    }
    if (rolling >= 0) {
        while (written < w_in) {
            if (written >= computed) {
                rt_pointwise(ex, roll_src + (size_t)computed * ex->cin, computed + 1 < w_in ? 2 : 1,
                             st->fifo + (size_t)(computed % fifo_n) * hid, st->unpacked);
                computed += 2;
            }
            memcpy(roll_slot + (size_t)written * hid, st->fifo + (size_t)(written % fifo_n) * hid, (size_t)hid);
            ++written;
        }
        st->expanded = rolling + 1;
    }
}
