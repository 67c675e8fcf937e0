/* Per-pixel ops: the heads' L2Norm and the classifier's global average pooling (a running sum over rows,
 * so the last map is never whole). */
#include <math.h>

#include "rnnpool_rt.h"
#include "rt_arith.h"

void rt_l2norm_pixel(const rt_l2norm *p, const int8_t *in, int8_t *out) {
    const int channels = p->channels, zp = p->in_zp;
    int32_t sum = 0;
    for (int c = 0; c < channels; ++c) sum += (in[c] - zp) * (in[c] - zp);
    /* IEEE-754 single precision: the same bits in C and in NumPy's float32 */
    const int32_t inv = sum > 0 ? (int32_t)(RT_L2NORM_ONE / sqrtf((float)sum)) : 0;
    for (int c = 0; c < channels; ++c) out[c] = (int8_t)rt_clamp(((in[c] - zp) * inv + (1 << 21)) >> 22, -127, 127);
}

/* The same pixel normalised straight into unpacked int16 pairs (SXTB16 order), as a convolution reads it.
 * No clamp is needed here: |d_c| <= sqrt(sum d^2), so |d_c * inv| <= 127 * 2^22 (float32's rounding of inv
 * adds under 2^7) and the rounded value lies in [-127, 127]. rt_l2norm_pixel keeps the clamp as the
 * specification; the kernel tests check both against the reference. (d * inv + 2^21) >> 22 is computed
 * as ((d * inv) >> 16 + 32) >> 6, the same value, so SMULWB/SMULWT serve on the M4. */
void rt_l2norm_unpacked(const rt_l2norm *p, const int8_t *in, uint32_t *out) {
    const int channels = p->channels;
    const uint32_t neg_zp = rt_pair(-p->in_zp, -p->in_zp);
    int32_t sum = 0;
    for (int c = 0; c < channels; c += 4) {
        const uint32_t word = rt_load32(in + c);
        const uint32_t d02 = RT_SXTAB16(neg_zp, word), d13 = RT_SXTAB16_ROR8(neg_zp, word);
        out[c / 2] = d02;
        out[c / 2 + 1] = d13;
        sum = RT_SMLAD(d02, d02, RT_SMLAD(d13, d13, sum));
    }
    const int32_t inv = sum > 0 ? (int32_t)(RT_L2NORM_ONE / sqrtf((float)sum)) : 0;
    for (int i = 0; i < channels / 2; ++i) {
        const uint32_t d = out[i];
        out[i] = rt_pair((RT_SMULWB(inv, d) + 32) >> 6, (RT_SMULWT(inv, d) + 32) >> 6);
    }
}

void rt_l2norm_row(const rt_l2norm *p, const int8_t *in, int w, int8_t *out) {
    for (int x = 0; x < w; ++x) rt_l2norm_pixel(p, in + (size_t)x * p->channels, out + (size_t)x * p->channels);
}

void rt_avgpool_add_row(const rt_avgpool *p, const int8_t *row, int w, int32_t *sums) {
    for (int x = 0; x < w; ++x, row += p->channels)
        for (int c = 0; c < p->channels; ++c) sums[c] += row[c];
}

void rt_avgpool_finish(const rt_avgpool *p, const int32_t *sums, int8_t *out) {
    for (int c = 0; c < p->channels; ++c)
        out[c] = (int8_t)rt_clamp(p->out_zp + rt_rq(sums[c] - p->count * p->in_zp, p->mult, p->shift), -128, 127);
}
