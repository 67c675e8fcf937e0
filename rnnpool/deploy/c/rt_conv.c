/* Convolution kernels: dense (each output pixel's inputs gathered and unpacked, then int8 x int16 dot
 * products), depthwise and 1x1.
 *
 * The dot products read 4 int8 weights at a time: SXTB16 splits a word into its even and odd bytes as two
 * int16 pairs; the inputs are unpacked once the same way (SXTAB16 also subtracts their zero point), and
 * SMLAD multiplies and adds both pairs. Two output channels of two pixels share each load. Weight rows
 * are padded to RT_PACK, so every row is whole words. The most used dense weights may be stored widened
 * to int16 in the same pair order (`wide`, chosen by the code generator within a flash budget): then
 * the weights need no unpacking, a quarter fewer instructions per multiply-add. */
#include "rnnpool_rt.h"
#include "rt_arith.h"
#include "rt_kernels.h"

void rt_unpack(const int8_t *x, int kdim, int32_t zp, uint32_t *out) {
    const uint32_t neg_zp = rt_pair(-zp, -zp);
    for (int i = 0; i < kdim; i += 4) {
        const uint32_t word = rt_load32(x + i);
        *out++ = RT_SXTAB16(neg_zp, word);
        *out++ = RT_SXTAB16_ROR8(neg_zp, word);
    }
}

void rt_unpack_pixel(const int8_t *x, int cin, int kdim, int32_t zp, uint32_t *out) {
    const int whole = cin & ~(RT_PACK - 1);
    rt_unpack(x, whole, zp, out);
    if (whole < kdim) {
        int8_t tail[RT_PACK];
        for (int i = 0; i < RT_PACK; ++i) tail[i] = (int8_t)(whole + i < cin ? x[whole + i] : zp);
        rt_unpack(tail, RT_PACK, zp, out + whole / 2);
    }
}

/* zp + rq(acc) clamped to [lo, hi]. Two facts of a layer make it cheaper: `full`, the range is all of int8
 * (the common case: one SSAT), and its `form` (rt_conv.rq_form): RT_RQ_HIGH_WORD (the common case: one
 * SMMLAR) or RT_RQ_SHIFT_RIGHT needs no left shift. rt_dot_requant and rt_depthwise_pixel pass them as
 * constants to a body inlined once per common case, so neither is tested per value. */
static inline int8_t requant(int32_t acc, const rt_chan *ch, int32_t zp, int32_t lo, int32_t hi, int full, int form) {
    const int32_t v = form == RT_RQ_HIGH_WORD
                          ? rt_rq_high(acc, ch->mult, zp)
                          : zp + rt_rq_chan(acc, ch->mult, ch->rsh, form == RT_RQ_SHIFT_RIGHT ? 0 : ch->lsh);
    return (int8_t)(full ? RT_SSAT(v, 8) : rt_clamp(v, lo, hi));
}

/* Output channels [o, o + 2) of two pixels (x1 may repeat x0): four accumulators, each weight word
 * unpacked once for four products. On the M4 the loop is written out (13 registers, no spills): 19
 * instructions per 16 multiply-adds. */
static inline void dot22(const uint32_t *x0, const uint32_t *x1, const uint32_t *w, int words, int32_t *acc) {
    int32_t a0 = acc[0], a1 = acc[1], b0 = acc[0], b1 = acc[1];
    const uint32_t *wb = w + words;
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
    uint32_t t0, t1, t2, t3;
    int n = words;
    __asm__ volatile(
        "1:\n\t"
        "ldr %[t0], [%[w]], #4\n\t"
        "ldrd %[t2], %[t3], [%[x0]], #8\n\t"
        "sxtb16 %[t1], %[t0], ror #8\n\t"
        "sxtb16 %[t0], %[t0]\n\t"
        "smlad %[a0], %[t2], %[t0], %[a0]\n\t"
        "smlad %[a0], %[t3], %[t1], %[a0]\n\t"
        "ldrd %[t2], %[t3], [%[x1]], #8\n\t"
        "smlad %[b0], %[t2], %[t0], %[b0]\n\t"
        "smlad %[b0], %[t3], %[t1], %[b0]\n\t"
        "ldr %[t0], [%[wb]], #4\n\t"
        "sxtb16 %[t1], %[t0], ror #8\n\t"
        "sxtb16 %[t0], %[t0]\n\t"
        "smlad %[b1], %[t2], %[t0], %[b1]\n\t"
        "smlad %[b1], %[t3], %[t1], %[b1]\n\t"
        "ldrd %[t2], %[t3], [%[x0], #-8]\n\t"
        "smlad %[a1], %[t2], %[t0], %[a1]\n\t"
        "smlad %[a1], %[t3], %[t1], %[a1]\n\t"
        "subs %[n], %[n], #1\n\t"
        "bne 1b\n\t"
        : [a0] "+r"(a0), [a1] "+r"(a1), [b0] "+r"(b0), [b1] "+r"(b1), [x0] "+r"(x0), [x1] "+r"(x1), [w] "+r"(w),
          [wb] "+r"(wb), [n] "+r"(n), [t0] "=&r"(t0), [t1] "=&r"(t1), [t2] "=&r"(t2), [t3] "=&r"(t3)
        :
        : "cc", "memory");
#else
    const uint32_t *end = wb;
    do {
        const uint32_t ua = *w++, ub = *wb++;
        const uint32_t wa02 = RT_SXTB16(ua), wa13 = RT_SXTB16_ROR8(ua), wb02 = RT_SXTB16(ub), wb13 = RT_SXTB16_ROR8(ub);
        a0 = RT_SMLAD(x0[1], wa13, RT_SMLAD(x0[0], wa02, a0));
        a1 = RT_SMLAD(x0[1], wb13, RT_SMLAD(x0[0], wb02, a1));
        b0 = RT_SMLAD(x1[1], wa13, RT_SMLAD(x1[0], wa02, b0));
        b1 = RT_SMLAD(x1[1], wb13, RT_SMLAD(x1[0], wb02, b1));
        x0 += 2;
        x1 += 2;
    } while (w < end);
#endif
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = b0;
    acc[3] = b1;
}

static inline int32_t dot1(const uint32_t *x, const uint32_t *w, int words, int32_t acc) {
    for (int i = 0; i < words; ++i, x += 2) {
        const uint32_t t = w[i];
        acc = RT_SMLAD(x[1], RT_SXTB16_ROR8(t), RT_SMLAD(x[0], RT_SXTB16(t), acc));
    }
    return acc;
}

/* dot22 with int16 weights (`words` words of two per row, each meeting one unpacked input word): 15
 * instructions per 16 multiply-adds on the M4, no unpacking of the weights. */
static inline void dot22_wide(const uint32_t *x0, const uint32_t *x1, const uint32_t *w, int words, int32_t *acc) {
    int32_t a0 = acc[0], a1 = acc[1], b0 = acc[0], b1 = acc[1];
    const uint32_t *wb = w + words;
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
    uint32_t t0, t1, t2, t3;
    int n = words / 2;
    __asm__ volatile(
        "1:\n\t"
        "ldrd %[t0], %[t1], [%[w]], #8\n\t"
        "ldrd %[t2], %[t3], [%[x0]], #8\n\t"
        "smlad %[a0], %[t2], %[t0], %[a0]\n\t"
        "smlad %[a0], %[t3], %[t1], %[a0]\n\t"
        "ldrd %[t2], %[t3], [%[x1]], #8\n\t"
        "smlad %[b0], %[t2], %[t0], %[b0]\n\t"
        "smlad %[b0], %[t3], %[t1], %[b0]\n\t"
        "ldrd %[t0], %[t1], [%[wb]], #8\n\t"
        "smlad %[b1], %[t2], %[t0], %[b1]\n\t"
        "smlad %[b1], %[t3], %[t1], %[b1]\n\t"
        "ldrd %[t2], %[t3], [%[x0], #-8]\n\t"
        "smlad %[a1], %[t2], %[t0], %[a1]\n\t"
        "smlad %[a1], %[t3], %[t1], %[a1]\n\t"
        "subs %[n], %[n], #1\n\t"
        "bne 1b\n\t"
        : [a0] "+r"(a0), [a1] "+r"(a1), [b0] "+r"(b0), [b1] "+r"(b1), [x0] "+r"(x0), [x1] "+r"(x1), [w] "+r"(w),
          [wb] "+r"(wb), [n] "+r"(n), [t0] "=&r"(t0), [t1] "=&r"(t1), [t2] "=&r"(t2), [t3] "=&r"(t3)
        :
        : "cc", "memory");
#else
    for (int i = 0; i < words; ++i) {
        a0 = RT_SMLAD(x0[i], w[i], a0);
        a1 = RT_SMLAD(x0[i], wb[i], a1);
        b0 = RT_SMLAD(x1[i], w[i], b0);
        b1 = RT_SMLAD(x1[i], wb[i], b1);
    }
#endif
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = b0;
    acc[3] = b1;
}

static inline int32_t dot1_wide(const uint32_t *x, const uint32_t *w, int words, int32_t acc) {
    for (int i = 0; i < words; ++i) acc = RT_SMLAD(x[i], w[i], acc);
    return acc;
}

/* One output channel's dot product with either weight layout (`words`: words per weight row). */
static inline int32_t dot_one(const rt_conv *p, const uint32_t *x, const uint32_t *w, int words, int32_t acc) {
    return p->wide ? dot1_wide(x, w, words, acc) : dot1(x, w, words, acc);
}

/* Output channel o's value v: with `maxed` (a constant where inlined), S3FD max-out keeps the maximum of the
 * first `maxout` channels in out[0] (a head's few scores) and moves the rest down. */
static inline __attribute__((always_inline)) void put(int8_t *out, int o, int8_t v, int maxout, const int maxed) {
    if (!maxed) {
        out[o] = v;
    } else if (o >= maxout) {
        out[o - maxout + 1] = v;
    } else if (o == 0 || v > out[0]) {
        out[0] = v;
    }
}

/* Every output channel of one or two pixels, two channels at a time (out1 unused without x1). */
static inline __attribute__((always_inline)) void dot_requant(const rt_conv *p, const uint32_t *x0, const uint32_t *x1,
                                                              int8_t *out0, int8_t *out1, const int full,
                                                              const int form, const int maxed) {
    const int words = p->wide ? p->kdim / 2 : p->kdim / 4, cout = p->cout, maxout = p->maxout;
    const int32_t zp = p->out_zp, lo = p->act_min, hi = p->act_max;
    const uint32_t *w = (const uint32_t *)(const void *)p->w;
    const rt_chan *ch = p->chan;
    const uint32_t *second = x1 ? x1 : x0;
    int o = 0;
    for (; o + 2 <= cout; o += 2, w += 2 * words, ch += 2) {
        int32_t acc[4] = {ch[0].bias, ch[1].bias, 0, 0};
        if (p->wide) {
            dot22_wide(x0, second, w, words, acc);
        } else {
            dot22(x0, second, w, words, acc);
        }
        put(out0, o, requant(acc[0], ch, zp, lo, hi, full, form), maxout, maxed);
        put(out0, o + 1, requant(acc[1], ch + 1, zp, lo, hi, full, form), maxout, maxed);
        if (x1) {
            put(out1, o, requant(acc[2], ch, zp, lo, hi, full, form), maxout, maxed);
            put(out1, o + 1, requant(acc[3], ch + 1, zp, lo, hi, full, form), maxout, maxed);
        }
    }
    if (o < cout) {
        put(out0, o, requant(dot_one(p, x0, w, words, ch->bias), ch, zp, lo, hi, full, form), maxout, maxed);
        if (x1) put(out1, o, requant(dot_one(p, x1, w, words, ch->bias), ch, zp, lo, hi, full, form), maxout, maxed);
    }
}

void rt_dot_requant(const rt_conv *p, const uint32_t *x0, const uint32_t *x1, int8_t *out0, int8_t *out1) {
    const int full = p->act_min == -128 && p->act_max == 127;
    if (p->maxout > 1) { /* a detection head's scores: one instance, the facts tested per value */
        dot_requant(p, x0, x1, out0, out1, full, p->rq_form, 1);
    } else if (full && p->rq_form == RT_RQ_HIGH_WORD) {
        dot_requant(p, x0, x1, out0, out1, 1, RT_RQ_HIGH_WORD, 0);
    } else if (full && p->rq_form == RT_RQ_SHIFT_RIGHT) {
        dot_requant(p, x0, x1, out0, out1, 1, RT_RQ_SHIFT_RIGHT, 0);
    } else { /* a clamped range or left shifts: rare */
        dot_requant(p, x0, x1, out0, out1, full, p->rq_form, 0);
    }
}

void rt_pointwise(const rt_conv *p, const int8_t *in, int n, int8_t *out, int32_t *unpacked) {
    const int cin = p->cin, out_channels = p->cout - p->maxout + 1, kdim = p->kdim;
    uint32_t *u0 = (uint32_t *)unpacked, *u1 = u0 + kdim / 2;
    for (int i = 0; i < n; i += 2) {
        const int pair = i + 1 < n;
        rt_unpack_pixel(in + (size_t)i * cin, cin, kdim, p->in_zp, u0);
        if (pair) rt_unpack_pixel(in + (size_t)(i + 1) * cin, cin, kdim, p->in_zp, u1);
        rt_dot_requant(p, u0, pair ? u1 : NULL, out + (size_t)i * out_channels, out + (size_t)(i + 1) * out_channels);
    }
}

/* One tap of four channels: x's bytes (c, c + 2) and (c + 1, c + 3), less the zero point, times the tap's
 * widened weights (two words, the same pairs): one multiply-add per channel. */
#define RT_DW_TAP(tap, wp)                                                                    \
    do {                                                                                      \
        const uint32_t x_ = rt_load32((tap) + c);                                             \
        const uint32_t x02_ = RT_SXTAB16(neg_zp, x_), x13_ = RT_SXTAB16_ROR8(neg_zp, x_);     \
        const uint32_t w02_ = (wp)[0], w13_ = (wp)[1];                                        \
        a0 = RT_SMLABB(x02_, w02_, a0);                                                       \
        a2 = RT_SMLATT(x02_, w02_, a2);                                                       \
        a1 = RT_SMLABB(x13_, w13_, a1);                                                       \
        a3 = RT_SMLATT(x13_, w13_, a3);                                                       \
    } while (0)

/* Four channels from byte offset c of every tap (none is padding). On the M4 the loop is written out: 11
 * instructions per tap of four multiply-adds (GCC's own allocation of the unrolled taps spills). */
static inline void dw_taps(const int8_t *const *taps, int c, const uint32_t *w, int n, uint32_t neg_zp, int32_t *acc0,
                           int32_t *acc1, int32_t *acc2, int32_t *acc3) {
    int32_t a0 = *acc0, a1 = *acc1, a2 = *acc2, a3 = *acc3;
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
    uint32_t x, x02, w02, w13;
    __asm__ volatile(
        "1:\n\t"
        "ldr %[x], [%[taps]], #4\n\t"
        "ldr %[x], [%[x], %[c]]\n\t"
        "ldrd %[w02], %[w13], [%[w]], #8\n\t"
        "sxtab16 %[x02], %[nzp], %[x]\n\t"
        "sxtab16 %[x], %[nzp], %[x], ror #8\n\t"
        "smlabb %[a0], %[x02], %[w02], %[a0]\n\t"
        "smlatt %[a2], %[x02], %[w02], %[a2]\n\t"
        "smlabb %[a1], %[x], %[w13], %[a1]\n\t"
        "smlatt %[a3], %[x], %[w13], %[a3]\n\t"
        "subs %[n], %[n], #1\n\t"
        "bne 1b\n\t"
        : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [taps] "+r"(taps), [w] "+r"(w), [n] "+r"(n),
          [x] "=&r"(x), [x02] "=&r"(x02), [w02] "=&r"(w02), [w13] "=&r"(w13)
        : [c] "r"(c), [nzp] "r"(neg_zp)
        : "cc", "memory");
#else
    for (int t = 0; t < n; ++t, w += 2) RT_DW_TAP(taps[t], w);
#endif
    *acc0 = a0;
    *acc1 = a1;
    *acc2 = a2;
    *acc3 = a3;
}

static inline __attribute__((always_inline)) void depthwise_pixel(const rt_conv *p, const int8_t *const *taps, int8_t *out,
                                                                  const int full, const int form) {
    const int channels = p->cout, taps_n = p->k * p->k;
    const int32_t zp = p->out_zp, lo = p->act_min, hi = p->act_max;
    const uint32_t neg_zp = rt_pair(-p->in_zp, -p->in_zp);
    const rt_chan *ch = p->chan;
    const uint32_t *w = (const uint32_t *)p->w; /* [channels / 4][taps][2 words] */
    int complete = 1; /* no tap is padding: the loop needs no test */
    for (int t = 0; t < taps_n; ++t) complete &= taps[t] != NULL;
    int c = 0;
    for (; c + 4 <= channels; c += 4, ch += 4, w += 2 * taps_n) {
        int32_t a0 = ch[0].bias, a1 = ch[1].bias, a2 = ch[2].bias, a3 = ch[3].bias;
        if (complete) {
            dw_taps(taps, c, w, taps_n, neg_zp, &a0, &a1, &a2, &a3);
        } else {
            for (int t = 0; t < taps_n; ++t)
                if (taps[t]) RT_DW_TAP(taps[t], w + 2 * t);
        }
        out[c] = requant(a0, ch, zp, lo, hi, full, form);
        out[c + 1] = requant(a1, ch + 1, zp, lo, hi, full, form);
        out[c + 2] = requant(a2, ch + 2, zp, lo, hi, full, form);
        out[c + 3] = requant(a3, ch + 3, zp, lo, hi, full, form);
    }
    /* the last channels (fewer than four): their group's halfwords, lanes stored (0, 2, 1, 3) */
    const int16_t *w16 = (const int16_t *)(const void *)w;
    static const int8_t lane[4] = {0, 2, 1, 3};
    for (; c < channels; ++c, ++ch) {
        int32_t a = ch->bias;
        for (int t = 0; t < taps_n; ++t)
            if (taps[t]) a += (int32_t)(taps[t][c] - p->in_zp) * w16[4 * t + lane[c % 4]];
        out[c] = requant(a, ch, zp, lo, hi, full, form);
    }
}

void rt_depthwise_pixel(const rt_conv *p, const int8_t *const *taps, int8_t *out) {
    const int full = p->act_min == -128 && p->act_max == 127;
    if (full && p->rq_form == RT_RQ_HIGH_WORD) {
        depthwise_pixel(p, taps, out, 1, RT_RQ_HIGH_WORD);
    } else if (full && p->rq_form == RT_RQ_SHIFT_RIGHT) {
        depthwise_pixel(p, taps, out, 1, RT_RQ_SHIFT_RIGHT);
    } else { /* a clamped range or left shifts: rare */
        depthwise_pixel(p, taps, out, full, p->rq_form);
    }
}

/* Unpack the k*k*cin inputs of the output pixel at x0 into kdim int16 (SXTB16 order). Padding reads the
 * pad value (the zero point: 0 after unpacking; or per channel pad_values); with norm, each input pixel
 * is L2-normalised as it is read. Channel counts that are not whole words go through a byte copy (col). */
static void gather(const rt_conv *p, const rt_l2norm *norm, const int8_t *const *rows, int w_in, int x0, int8_t *col,
                   uint32_t *u) {
    const int k = p->k, cin = p->cin;
    if (cin % RT_PACK == 0) {
        const uint32_t neg_zp = rt_pair(-p->in_zp, -p->in_zp);
        const int words = cin / 2;
        for (int dy = 0; dy < k; ++dy) {
            const int8_t *row = rows[dy];
            for (int dx = 0, ix = x0; dx < k; ++dx, ++ix, u += words) {
                if (!row || ix < 0 || ix >= w_in) {
                    if (p->pad_values) {
                        rt_unpack(p->pad_values, cin, p->in_zp, u);
                    } else {
                        for (int i = 0; i < words; ++i) u[i] = 0;
                    }
                } else if (norm) {
                    rt_l2norm_unpacked(norm, row + (size_t)ix * cin, u);
                } else {
                    const int8_t *src = row + (size_t)ix * cin;
                    for (int i = 0; i < words; i += 2, src += 4) {
                        const uint32_t word = rt_load32(src);
                        u[i] = RT_SXTAB16(neg_zp, word);
                        u[i + 1] = RT_SXTAB16_ROR8(neg_zp, word);
                    }
                }
            }
        }
        return;
    }
    int8_t *dst = col;
    int inside = !norm && x0 >= 0 && x0 + k <= w_in; /* no padding: each row's k pixels are one run of bytes */
    for (int dy = 0; dy < k; ++dy) inside &= rows[dy] != NULL;
    if (inside) {
        const int run = k * cin;
        for (int dy = 0; dy < k; ++dy, dst += run) {
            const int8_t *src = rows[dy] + (size_t)x0 * cin;
            for (int i = 0; i < run; ++i) dst[i] = src[i];
        }
    } else {
        for (int dy = 0; dy < k; ++dy)
            for (int dx = 0; dx < k; ++dx, dst += cin) {
            const int ix = x0 + dx;
            const int8_t *src = (!rows[dy] || ix < 0 || ix >= w_in) ? p->pad_values : rows[dy] + (size_t)ix * cin;
                if (norm && src != p->pad_values) {
                    rt_l2norm_pixel(norm, src, dst);
                } else if (src) {
                    for (int i = 0; i < cin; ++i) dst[i] = src[i];
                } else {
                    for (int i = 0; i < cin; ++i) dst[i] = (int8_t)p->in_zp;
                }
            }
    }
    for (int i = k * k * cin; i < p->kdim; ++i) col[i] = (int8_t)p->in_zp; /* the weights there are 0 */
    rt_unpack(col, p->kdim, p->in_zp, u);
}

/* (x - zp) of one pixel's cin channels as int16 pairs (SXTB16 order), padded with zeros to whole words;
 * written to u and to its second copy u2. Inlined with cin a constant where it is hot. */
static inline __attribute__((always_inline)) void unpack_pixel2(const int8_t *src, const int cin, int32_t zp, uint32_t neg_zp,
                                                                uint32_t *u, uint32_t *u2) {
    int i = 0;
    for (int c = 0; c + 4 <= cin; c += 4, i += 2) {
        const uint32_t word = rt_load32(src + c);
        u[i] = u2[i] = RT_SXTAB16(neg_zp, word);
        u[i + 1] = u2[i + 1] = RT_SXTAB16_ROR8(neg_zp, word);
    }
    const int8_t *t = src + (cin & ~(RT_PACK - 1));
    switch (cin & (RT_PACK - 1)) { /* 1 to 3 channels left: the rest of their word unpacks to 0 */
        case 3: {
            const uint32_t bytes02 = (uint32_t)(uint8_t)t[0] | (uint32_t)(uint8_t)t[2] << 16;
            u[i] = u2[i] = RT_SXTAB16(neg_zp, bytes02);
            u[i + 1] = u2[i + 1] = (uint16_t)(t[1] - zp);
            break;
        }
        case 2:
            u[i] = u2[i] = (uint16_t)(t[0] - zp);
            u[i + 1] = u2[i + 1] = (uint16_t)(t[1] - zp);
            break;
        case 1:
            u[i] = u2[i] = (uint16_t)(t[0] - zp);
            u[i + 1] = u2[i + 1] = 0;
            break;
        default:
            break;
    }
}

/* An L2-normalised pixel of channels that are not whole words. Not inlined: its buffer then takes stack only
 * when it runs (the painted stack measures what is written, an interrupt pushes below what is reserved). */
static __attribute__((noinline)) void unpack_normalised(const rt_l2norm *norm, const int8_t *src, int cin, int32_t zp,
                                                        uint32_t neg_zp, uint32_t *u, uint32_t *u2) {
    int8_t normalised[RT_MAX_NORM_CHANNELS];
    rt_l2norm_pixel(norm, src, normalised);
    unpack_pixel2(normalised, cin, zp, neg_zp, u, u2);
}

/* Words of one pixel in a column: cin int16 padded to whole RT_PACK groups. */
static inline int column_pixel_words(int cin) { return (cin + RT_PACK - 1) / RT_PACK * (RT_PACK / 2); }

/* Input column x of the k rows, unpacked ((x - zp) int16 pairs, each pixel's channels padded to whole
 * words; zeros where padding; L2-normalised with norm) into k * padded(cin) / 2 words at u and at its
 * second copy u2. */
static void unpack_column(const rt_conv *p, const rt_l2norm *norm, const int8_t *const *rows, int w_in, int x, uint32_t *u,
                          uint32_t *u2) {
    const int k = p->k, cin = p->cin, words = column_pixel_words(cin);
    const int32_t zp = p->in_zp;
    const uint32_t neg_zp = rt_pair(-zp, -zp);
    const int outside = x < 0 || x >= w_in;
    for (int dy = 0; dy < k; ++dy, u += words, u2 += words) {
        const int8_t *src = outside || !rows[dy] ? NULL : rows[dy] + (size_t)x * cin;
        if (!src) {
            for (int i = 0; i < words; ++i) u[i] = u2[i] = 0;
        } else if (norm && cin % RT_PACK == 0) {
            rt_l2norm_unpacked(norm, src, u);
            for (int i = 0; i < words; ++i) u2[i] = u[i];
        } else if (norm) {
            unpack_normalised(norm, src, cin, zp, neg_zp, u, u2);
        } else {
            unpack_pixel2(src, cin, zp, neg_zp, u, u2);
        }
    }
}

/* Dense conv by columns: each input column is unpacked once into a ring of k + stride columns, stored twice
 * (slot j and slot j + k + stride) so that the k columns an output pixel reads are always contiguous: that
 * is its unpacked input, in the weights' (dx, dy, c) order. Inlined with K and CIN constant for the usual
 * stems and heads (0: read them from the conv), so their columns unpack in straight-line code. */
static inline __attribute__((always_inline)) void columns_row(const rt_conv *const *convs, int n, const rt_l2norm *norm,
                                                              const int8_t *const *rows, int w_in, int w_out,
                                                              int8_t *const *outs, uint32_t *ring, const int K, const int CIN) {
    const rt_conv *p = convs[0];
    const int k = K ? K : p->k, cin = CIN ? CIN : p->cin, s = p->stride, slots = k + s;
    const int words = column_pixel_words(cin), column = k * words; /* words per pixel and per column */
    const int32_t zp = p->in_zp;
    const uint32_t neg_zp = rt_pair(-zp, -zp);
    int whole = 1; /* no row is padding: a column inside the rows unpacks directly */
    for (int dy = 0; dy < k; ++dy) whole &= rows[dy] != NULL;
    int next = -p->pad, next_slot = 0; /* the next column to unpack and its slot: columns -pad, ... from slot 0 */
    int first_slot = 0;                /* the slot of the output pixel's first column */
    for (int ox = 0; ox < w_out; ox += 2) {
        const int pair = ox + 1 < w_out, end = ox * s - p->pad + k + (pair ? s : 0);
        for (; next < end; ++next) {
            uint32_t *dst = ring + (size_t)next_slot * column, *copy = dst + (size_t)slots * column;
            const size_t offset = (size_t)next * cin;
            if (whole && !norm && next >= 0 && next < w_in) {
                for (int dy = 0; dy < k; ++dy) unpack_pixel2(rows[dy] + offset, cin, zp, neg_zp, dst + dy * words, copy + dy * words);
            } else if (whole && norm && cin % RT_PACK == 0 && next >= 0 && next < w_in) {
                for (int dy = 0; dy < k; ++dy) rt_l2norm_unpacked(norm, rows[dy] + offset, dst + dy * words);
                for (int i = 0; i < column; ++i) copy[i] = dst[i];
            } else {
                unpack_column(p, norm, rows, w_in, next, dst, copy);
            }
            if (++next_slot == slots) next_slot = 0;
        }
        const int second_slot = first_slot + s < slots ? first_slot + s : first_slot + s - slots;
        const uint32_t *u0 = ring + (size_t)first_slot * column, *u1 = ring + (size_t)second_slot * column;
        for (int i = 0; i < n; ++i) {
            const int channels = convs[i]->cout - convs[i]->maxout + 1;
            rt_dot_requant(convs[i], u0, pair ? u1 : NULL, outs[i] + (size_t)ox * channels, outs[i] + (size_t)(ox + 1) * channels);
        }
        first_slot += 2 * s;
        while (first_slot >= slots) first_slot -= slots;
    }
}

static void conv_group_row_columns(const rt_conv *const *convs, int n, const rt_l2norm *norm, const int8_t *const *rows,
                                   int w_in, int w_out, int8_t *const *outs, uint32_t *ring) {
    const int k = convs[0]->k, cin = convs[0]->cin;
    if (k == 3 && cin == 3) {
        columns_row(convs, n, norm, rows, w_in, w_out, outs, ring, 3, 3); /* an RGB stem */
    } else if (k == 3 && cin == 4) {
        columns_row(convs, n, norm, rows, w_in, w_out, outs, ring, 3, 4);
    } else {
        columns_row(convs, n, norm, rows, w_in, w_out, outs, ring, 0, 0);
    }
}

void rt_conv_group_row(const rt_conv *const *convs, int n, const rt_l2norm *norm, const int8_t *const *rows, int w_in,
                       int w_out, int8_t *const *outs, void *scratch) {
    const rt_conv *p = convs[0];
    if (p->columns) {
        conv_group_row_columns(convs, n, norm, rows, w_in, w_out, outs, (uint32_t *)scratch);
        return;
    }
    const int kdim = p->kdim;
    uint32_t *u0 = (uint32_t *)scratch, *u1 = u0 + kdim / 2;
    int8_t *col = (int8_t *)(u1 + kdim / 2);
    for (int ox = 0; ox < w_out; ox += 2) {
        const int pair = ox + 1 < w_out;
        gather(p, norm, rows, w_in, ox * p->stride - p->pad, col, u0);
        if (pair) gather(p, norm, rows, w_in, (ox + 1) * p->stride - p->pad, col, u1);
        for (int i = 0; i < n; ++i) {
            const int channels = convs[i]->cout - convs[i]->maxout + 1;
            rt_dot_requant(convs[i], u0, pair ? u1 : NULL, outs[i] + (size_t)ox * channels, outs[i] + (size_t)(ox + 1) * channels);
        }
    }
}

void rt_conv_row(const rt_conv *p, const int8_t *const *rows, int w_in, int w_out, int8_t *out, void *scratch) {
    const int k = p->k, cin = p->cin, out_channels = p->cout - p->maxout + 1;
    if (p->depthwise) {
        const int8_t *taps[RT_MAX_KERNEL * RT_MAX_KERNEL];
        for (int ox = 0; ox < w_out; ++ox) {
            const int x0 = ox * p->stride - p->pad;
            for (int dy = 0; dy < k; ++dy)
                for (int dx = 0; dx < k; ++dx) {
                    const int ix = x0 + dx;
                    taps[dy * k + dx] = (!rows[dy] || ix < 0 || ix >= w_in) ? NULL : rows[dy] + (size_t)ix * cin;
                }
            rt_depthwise_pixel(p, taps, out + (size_t)ox * out_channels);
        }
        return;
    }
    if (k == 1 && p->pad == 0 && p->stride == 1) {
        rt_pointwise(p, rows[0], w_out, out, (int32_t *)scratch);
        return;
    }
    rt_conv_group_row(&p, 1, NULL, rows, w_in, w_out, &out, scratch);
}
