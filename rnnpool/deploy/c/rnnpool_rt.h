/* rnnpool int8 runtime: the kernels the generated model calls. Portable C99, no malloc.
 *
 * Tensors are int8, channels last (H, W, C). Requantization is
 *   rt_rq(v, m, s) = (v * m + 2^(s-1)) >> s   in 64-bit arithmetic,
 * exactly as rnnpool.deploy.fixedpoint.requantize; the Python int8 reference is the ground truth.
 */
#ifndef RNNPOOL_RT_H
#define RNNPOOL_RT_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int16_t cin, cout, k, stride, pad, groups, maxout;
    int32_t in_zp, out_zp, act_min, act_max;
    const int8_t *w;      /* dense: [cout][k][k][cin]; depthwise: [c][k][k] */
    const int32_t *bias;  /* [cout] */
    const int32_t *mult;  /* [cout] */
    const int32_t *shift; /* [cout] */
} rt_conv;

typedef struct {
    int32_t a_zp, b_zp, out_zp, mult_a, mult_b, shift;
} rt_add;

typedef struct {
    const rt_conv *expand; /* NULL when the block has no expansion */
    const rt_conv *dw;
    const rt_conv *project;
    const rt_add *add;     /* NULL without residual */
    int16_t h_in, w_in, h_out, w_out, hidden;
} rt_mbconv_block;

typedef struct {
    int16_t hidden, input;
    int32_t in_zp;
    const int8_t *w;  /* [hidden][input] */
    const int32_t *w_mult, *w_shift;
    const int8_t *u;  /* [hidden][hidden] */
    const int32_t *u_mult, *u_shift;
    const int32_t *bias_gate, *bias_update; /* Q12 */
    int32_t zeta, nu;                       /* Q14 */
    const int16_t *lut_gate, *lut_update;   /* Q14 tables over Q12 inputs */
} rt_fastgrnn;

typedef struct {
    int16_t r, c, sr, sc, cin, w_in, w_out, pad_right;
    const rt_fastgrnn *rnn1, *rnn2;
    const int64_t *out_mult, *out_bias; /* [4 h2] */
    int32_t out_shift, out_zp;
} rt_rnnpool;

/* Scratch the RNNPool kernel needs (int32 words) for one patch. */
#define RT_RNNPOOL_SCRATCH_WORDS(r, c, h1, h2) \
    ((r) * (c) * (h1) + ((r) + (c)) * (h1) + ((r) + (c)) * (h2) + 2 * ((h1) > (h2) ? (h1) : (h2)))

/* One output row of a convolution. rows[dy] is input row (oy*stride - pad + dy), NULL where that row is
 * padding; each row is w_in pixels of cin channels. Writes w_out pixels of (cout - maxout + 1) channels. */
void rt_conv_row(const rt_conv *p, const int8_t *const *rows, int w_in, int w_out, int8_t *out);

/* A whole convolution, (h_in, w_in) -> (h_out, w_out). */
void rt_conv_layer(const rt_conv *p, const int8_t *in, int h_in, int w_in, int8_t *out, int h_out, int w_out);

/* A 3x3, stride-1, pad-1 depthwise convolution computed in place; scratch holds 2 rows (2 * w * c bytes). */
void rt_depthwise_inplace(const rt_conv *p, int8_t *data, int h, int w, int8_t *scratch);

/* MobileNetV2 block row by row: only k expanded rows and one depthwise row live; scratch holds
 * k * w_in * hidden bytes (none without expansion) + w_out * hidden. */
void rt_mbconv(const rt_mbconv_block *p, const int8_t *in, int8_t *out, int8_t *scratch);

/* One output row of RNNPool from p->r input rows (each w_in pixels of cin channels); the row gets
 * pad_right padding pixels at its end. scratch: RT_RNNPOOL_SCRATCH_WORDS words. */
void rt_rnnpool_row(const rt_rnnpool *p, const int8_t *const *rows, int8_t *out, int32_t *scratch);
/* A padding row (w_out + pad_right pixels of the affine of 0). */
void rt_rnnpool_pad_row(const rt_rnnpool *p, int8_t *out);

/* 32-bit FNV-1a, continued over n more bytes. */
uint32_t rt_fnv1a(uint32_t hash, const int8_t *data, size_t n);

#define RT_FNV_INIT 2166136261u

/* Detections: candidates ranked by Q16 logit (ties: lower anchor index), boxes decoded, greedy NMS. */
typedef struct {
    int32_t key;
    int32_t anchor;
    float box[4];
} rt_detection;

typedef struct {
    int32_t key_mult, threshold, zp_loc;
    float scale_loc, stride, size;
    int32_t anchor_offset, width;
} rt_head;

typedef struct {
    rt_detection *items;
    int count, capacity;
} rt_candidates;

/* Offer one row of a head's outputs (conf: width x 2, loc: width x 4) to the candidate list. */
void rt_head_row(const rt_head *h, int y, const int8_t *conf, const int8_t *loc, rt_candidates *cands);
/* Greedy NMS over the candidates (sorted by rt_head_row); returns how many detections it kept in place. */
int rt_nms(rt_candidates *cands, float iou_threshold, int max_detections);

#endif
