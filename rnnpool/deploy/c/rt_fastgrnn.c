/* Integer FastGRNN (see rnnpool_rt.h): input projections once per input, then the recurrent steps. */
#include "rnnpool_rt.h"
#include "rt_arith.h"
#include "rt_kernels.h"

#define STATE_BITS 14
#define HALF (1 << (STATE_BITS - 1))

/* pre_j = a_j + (U_j . h + 2^(k_j - 1)) >> k_j for all units of a cell with 8 (16) hidden units; h as
 * int16 pairs. u_rows: per unit the U words, then 2^(k - 1), k, b_h - b_z (RT_U_ROW_WORDS). */
static void pre_activations_8(const int32_t *row, const int16_t *h, const int32_t *a, int32_t *pre) {
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
    /* the state stays in four registers: 18 instructions per unit */
    uint32_t s0 = rt_load32(h), s1 = rt_load32(h + 2), s2 = rt_load32(h + 4), s3 = rt_load32(h + 6), u0, u1, t;
    int32_t acc, n = 8;
    __asm__ volatile(
        "1:\n\t"
        "ldrd %[u0], %[u1], [%[row]], #8\n\t"
        "ldr %[acc], [%[row]]\n\t"
        "sxtb16 %[t], %[u0]\n\t"
        "smlad %[acc], %[s0], %[t], %[acc]\n\t"
        "sxtb16 %[t], %[u0], ror #8\n\t"
        "smlad %[acc], %[s1], %[t], %[acc]\n\t"
        "sxtb16 %[t], %[u1]\n\t"
        "smlad %[acc], %[s2], %[t], %[acc]\n\t"
        "sxtb16 %[t], %[u1], ror #8\n\t"
        "smlad %[acc], %[s3], %[t], %[acc]\n\t"
        "ldr %[t], [%[row], #4]\n\t"
        "asr %[acc], %[acc], %[t]\n\t"
        "ldr %[t], [%[a]], #4\n\t"
        "add %[acc], %[acc], %[t]\n\t"
        "str %[acc], [%[pre]], #4\n\t"
        "add %[row], %[row], #12\n\t"
        "subs %[n], %[n], #1\n\t"
        "bne 1b\n\t"
        : [row] "+r"(row), [a] "+r"(a), [pre] "+r"(pre), [n] "+r"(n), [u0] "=&r"(u0), [u1] "=&r"(u1), [t] "=&r"(t),
          [acc] "=&r"(acc)
        : [s0] "r"(s0), [s1] "r"(s1), [s2] "r"(s2), [s3] "r"(s3)
        : "cc", "memory");
#else
    for (int j = 0; j < 8; ++j, row += RT_U_ROW_WORDS(8)) {
        int32_t acc = row[2];
        for (int i = 0; i < 2; ++i) {
            const uint32_t w = (uint32_t)row[i];
            acc = RT_SMLAD(rt_load32(h + 4 * i + 2), RT_SXTB16_ROR8(w), RT_SMLAD(rt_load32(h + 4 * i), RT_SXTB16(w), acc));
        }
        pre[j] = a[j] + (acc >> row[3]);
    }
#endif
}

static void pre_activations_16(const int32_t *row, const int16_t *h, const int32_t *a, int32_t *pre) {
    uint32_t s[8];
    memcpy(s, h, sizeof(s));
    for (int j = 0; j < 16; ++j, row += RT_U_ROW_WORDS(16)) {
        int32_t acc = row[4];
        for (int i = 0; i < 4; ++i) {
            const uint32_t w = (uint32_t)row[i];
            acc = RT_SMLAD(s[2 * i + 1], RT_SXTB16_ROR8(w), RT_SMLAD(s[2 * i], RT_SXTB16(w), acc));
        }
        pre[j] = a[j] + (acc >> row[5]);
    }
}

#define RT_H 8
#include "rt_fastgrnn_steps.inc"
#undef RT_H
#define RT_H 16
#include "rt_fastgrnn_steps.inc"
#undef RT_H

/* a_j = ((w_j . x) << lsh_j + rnd_j) >> rsh_j + b_z_j for unpacked input words x (wdim / 2 of them). */
static void project(const rt_fastgrnn *cell, const uint32_t *x, int32_t *a) {
    const int words = cell->wdim / 4, hidden = cell->hidden;
    const int32_t *row = cell->w_rows;
    if (words == 1) { /* up to 4 inputs (RNN1 on a few channels): the input stays in two registers */
        const uint32_t x02 = x[0], x13 = x[1];
        for (int j = 0; j < hidden; ++j, row += RT_W_ROW_WORDS(4)) {
            const uint32_t w = (uint32_t)row[0];
            const int32_t acc = RT_SMLAD(x13, RT_SXTB16_ROR8(w), RT_SMLAD(x02, RT_SXTB16(w), 0));
            a[j] = (((acc << row[1]) + row[3]) >> row[2]) + row[4];
        }
        return;
    }
    for (int j = 0; j < hidden; ++j, row += RT_W_ROW_WORDS(4 * words)) {
        int32_t acc = 0;
        for (int i = 0; i < words; ++i) {
            const uint32_t w = (uint32_t)row[i];
            acc = RT_SMLAD(x[2 * i], RT_SXTB16(w), acc);
            acc = RT_SMLAD(x[2 * i + 1], RT_SXTB16_ROR8(w), acc);
        }
        a[j] = (((acc << row[words]) + row[words + 2]) >> row[words + 1]) + row[words + 3];
    }
}

void rt_fastgrnn_project_pixel(const rt_fastgrnn *cell, const int8_t *x, int32_t *a, int32_t *unpacked) {
    rt_unpack_pixel(x, cell->input, cell->wdim, cell->in_zp, (uint32_t *)unpacked);
    project(cell, (const uint32_t *)unpacked, a);
}

void rt_fastgrnn_project_state(const rt_fastgrnn *cell, const int16_t *x, int32_t *a) {
    /* natural int16 pairs of x against W's columns stored (0, 2, 1, 3); copied as words (no aliasing) */
    uint32_t pairs[RT_MAX_HIDDEN / 2];
    memcpy(pairs, x, (size_t)cell->wdim * sizeof(int16_t));
    project(cell, pairs, a);
}

void rt_fastgrnn_run(const rt_fastgrnn *cell, const int32_t *const *steps, int n, int16_t *h, int16_t *scratch) {
    const int hidden = cell->hidden, udim = cell->udim, words = udim / 4;
    const int plain = cell->zeta == (1 << STATE_BITS) && cell->nu == 0; /* zeta = 1, nu = 0: the paper's models */
    if (plain && hidden == udim && hidden == 8) {
        fastgrnn_run_plain_8(cell, steps, n, h, scratch);
        return;
    }
    if (plain && hidden == udim && hidden == 16) {
        fastgrnn_run_plain_16(cell, steps, n, h, scratch);
        return;
    }
    const int16_t *gate = cell->lut + RT_LUT_SIZE / 2, *update = cell->lut + RT_LUT_SIZE + RT_LUT_SIZE / 2;
    int16_t *cur = h, *next = scratch;
    for (int j = 0; j < udim; ++j) cur[j] = next[j] = 0;
    for (int t = 0; t < n; ++t) {
        const int32_t *a = steps[t], *row = cell->u_rows;
        for (int j = 0; j < hidden; ++j, row += RT_U_ROW_WORDS(udim)) {
            int32_t acc = row[words];
            for (int i = 0; i < words; ++i) {
                const uint32_t w = (uint32_t)row[i];
                acc = RT_SMLAD(rt_load32(cur + 4 * i), RT_SXTB16(w), acc);
                acc = RT_SMLAD(rt_load32(cur + 4 * i + 2), RT_SXTB16_ROR8(w), acc);
            }
            const int32_t pre = a[j] + (acc >> row[words + 1]);
            const int32_t z = gate[RT_SSAT(pre >> 5, 11)];
            const int32_t c = update[RT_SSAT((pre + row[words + 2]) >> 5, 11)];
            if (plain) {
                next[j] = (int16_t)(c + ((z * (cur[j] - c) + HALF) >> STATE_BITS));
            } else {
                const int32_t coef = ((cell->zeta * ((1 << STATE_BITS) - z) + HALF) >> STATE_BITS) + cell->nu;
                next[j] = (int16_t)rt_clamp((coef * c + z * cur[j] + HALF) >> STATE_BITS, -32768, 32767);
            }
        }
        int16_t *swap = cur;
        cur = next;
        next = swap;
    }
    if (cur != h) memcpy(h, cur, (size_t)hidden * sizeof(int16_t));
}
