/* Integer FastGRNN (see rnnpool_rt.h): input projections once per input, then the recurrent steps. */
#include "rnnpool_rt.h"
#include "rt_arith.h"
#include "rt_kernels.h"

#define STATE_BITS 14
#define HALF (1 << (STATE_BITS - 1))

#define RT_H 8
#include "rt_fastgrnn_steps.inc"
#undef RT_H
#define RT_H 16
#include "rt_fastgrnn_steps.inc"
#undef RT_H

/* a_j = ((w_j . x) << lsh_j + rnd_j) >> rsh_j + b_z_j for x as `words` words of int16 pairs (W's rows are
 * stored in the same pairs: one SMLAD per word). Inlined once per common width; x and a never overlap
 * (restrict), so x stays in registers across the units. */
static inline __attribute__((always_inline)) void project_words(const rt_fastgrnn *cell, const uint32_t *restrict x,
                                                                int32_t *restrict a, const int words) {
    const int32_t *row = cell->w_rows;
    for (int j = 0; j < cell->hidden; ++j, row += words + 4) {
        int32_t acc = 0;
        for (int i = 0; i < words; ++i) acc = RT_SMLAD(x[i], (uint32_t)row[i], acc);
        a[j] = (((acc << row[words]) + row[words + 2]) >> row[words + 1]) + row[words + 3];
    }
}

static void project(const rt_fastgrnn *cell, const uint32_t *restrict x, int32_t *restrict a) {
    const int words = cell->wdim / 2; /* even: wdim is whole RT_PACK */
    switch (words) {
        case 2: project_words(cell, x, a, 2); return; /* RNN1 on up to 4 channels */
        case 4: project_words(cell, x, a, 4); return; /* RNN2 on 8 units */
        case 8: project_words(cell, x, a, 8); return; /* RNN2 on 16 units */
        default: break;
    }
    const int32_t *row = cell->w_rows;
    for (int j = 0; j < cell->hidden; ++j, row += words + 4) {
        int32_t acc = 0, acc2 = 0;
        for (int i = 0; i < words; i += 2) {
            acc = RT_SMLAD(x[i], (uint32_t)row[i], acc);
            acc2 = RT_SMLAD(x[i + 1], (uint32_t)row[i + 1], acc2);
        }
        acc += acc2;
        a[j] = (((acc << row[words]) + row[words + 2]) >> row[words + 1]) + row[words + 3];
    }
}

void rt_fastgrnn_project_pixel(const rt_fastgrnn *cell, const int8_t *x, int32_t *a, int32_t *unpacked) {
    rt_unpack_pixel(x, cell->input, cell->wdim, cell->in_zp, (uint32_t *)unpacked);
    project(cell, (const uint32_t *)unpacked, a);
}

void rt_fastgrnn_project_state(const rt_fastgrnn *cell, const int16_t *x, int32_t *a) {
    /* natural int16 pairs of x against W's columns stored in order; copied as words (no aliasing) */
    uint32_t pairs[RT_MAX_HIDDEN / 2];
    memcpy(pairs, x, (size_t)cell->wdim * sizeof(int16_t));
    project(cell, pairs, a);
}

void rt_fastgrnn_run(const rt_fastgrnn *cell, const int32_t *const *steps, int n, int16_t *h, int16_t *scratch) {
    const int hidden = cell->hidden, udim = cell->udim, words = udim / 2;
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
            for (int i = 0; i < words; ++i) acc = RT_SMLAD(rt_load32(cur + 2 * i), (uint32_t)row[i], acc);
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
