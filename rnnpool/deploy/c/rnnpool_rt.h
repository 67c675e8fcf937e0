/* rnnpool int8 runtime: the row kernels a generated model calls. C99, no malloc, caller-provided memory.
 *
 * Tensors are int8, channels last (H, W, C), and move through the network a row at a time: each map lives
 * in a ring of a few rows (rt_ring), so no feature map is ever whole. Requantization is
 *   rt_rq(v, m, s) = (v * m + 2^(s-1)) >> s
 * exactly as rnnpool.deploy.fixedpoint.requantize; the NumPy int8 reference is the ground truth.
 *
 * The limits below are the runtime's only fixed sizes; rnnpool.deploy.codegen reads them from this file. */
#ifndef RNNPOOL_RT_H
#define RNNPOOL_RT_H

#include <stddef.h>
#include <stdint.h>

#define RT_MAX_KERNEL 7     /* convolution kernel rows/columns */
#define RT_MAX_PATCH 16     /* RNNPool patch rows/columns */
#define RT_MAX_HIDDEN 64    /* FastGRNN hidden units */
#define RT_PACK 4           /* weight rows are padded to this many int8 (one word: SXTB16 unpacks it) */
#define RT_LUT_SIZE 2048    /* sigmoid/tanh tables: Q14 values over Q12 inputs in [-8, 8), steps of 1/128 */
#define RT_MAX_NORM_CHANNELS 256 /* channels of an L2Norm applied as a convolution gathers its inputs */

/* Word alignment for constant arrays the kernels read a word at a time (GCC and Clang). */
#define RT_ALIGNED __attribute__((aligned(4)))

/* A compile-time check in C99: the build fails (negative array size) where cond is false. */
#define RT_STATIC_ASSERT(name, cond) typedef char rt_static_assert_##name[(cond) ? 1 : -1]

/* A feature map held as a ring of `rows` rows of `row_bytes`: row y lives at base + (y % rows) * row_bytes. */
typedef struct {
    int8_t *base;
    int32_t row_bytes;
    int16_t rows;
} rt_ring;

static inline int8_t *rt_ring_row(const rt_ring *r, int y) { return r->base + (size_t)(y % r->rows) * (size_t)r->row_bytes; }

/* Convolution (+ folded BN, + ReLU/ReLU6 as [act_min, act_max]); dense (any k) or depthwise. Output
 * channel o: clamp(out_zp + rq(bias + sum w (x - in_zp), mult, s)) with rt_rq's rounding, computed as
 * ((((v << lsh) * mult) >> 32 >> rsh) + 1) >> 1 (s = 33 + rsh - lsh, one of rsh / lsh 0): SMULL and shifts;
 * or, where every channel's s is 32 (RT_RQ_HIGH_WORD), as the rounded high word of v * mult plus out_zp:
 * one SMMLAR. */
typedef struct {
    int32_t bias, mult, rsh, lsh;
} rt_chan;

/* rt_conv.rq_form: what the requantization of a conv's channels needs */
#define RT_RQ_SHIFT_LEFT 0  /* some channel shifts left (lsh > 0) */
#define RT_RQ_SHIFT_RIGHT 1 /* every channel shifts right only (lsh == 0) */
#define RT_RQ_HIGH_WORD 2   /* every channel's s is 32: the rounded high word */

typedef struct {
    int16_t cin, cout, k, stride, pad, depthwise, maxout;
    int16_t kdim;          /* dense: k*k*cin padded to RT_PACK (one weight row); depthwise: cin padded to RT_PACK */
    int16_t columns;       /* dense: gathers by columns, weights stored (dx, dy, c) with c padded to RT_PACK */
    int16_t wide;          /* dense: weights stored as int16 [cout][kdim], each four columns (0, 2, 1, 3) */
    int16_t rq_form;       /* RT_RQ_SHIFT_LEFT, RT_RQ_SHIFT_RIGHT or RT_RQ_HIGH_WORD */
    int32_t in_zp, out_zp, act_min, act_max;
    const void *w;         /* dense: int8 (or wide: int16) [cout][kdim], taps (dy, dx, ci) in order; depthwise: int16
                            * [kdim / 4][k*k][4], per four channels and tap the pairs (c, c + 2), (c + 1, c + 3) */
    const rt_chan *chan;   /* [cout] */
    const int8_t *pad_values; /* [cin] what padding reads (dense only); NULL: the input zero point */
} rt_conv;

/* Residual add: out = zo + rq((a - za) * ma + (b - zb) * mb, 1, shift), exact in 32 bits (|ma|, |mb| < 2^21). */
typedef struct {
    int32_t a_zp, b_zp, out_zp, mult_a, mult_b, shift;
} rt_add;

/* MobileNetV2 block: [1x1 expand] -> k x k depthwise (stride s) -> 1x1 project [+ input]. */
typedef struct {
    const rt_conv *expand; /* NULL when the block has no expansion */
    const rt_conv *dw;
    const rt_conv *project;
    const rt_add *add;     /* NULL without residual */
    int16_t h_in, w_in, w_out, hidden;
} rt_mbconv;

/* A block's working memory: k-1 expanded rows, a few expanded pixels waiting to be written back over the
 * oldest row, one depthwise output pixel and the unpacked input of the pointwise kernels. With recompute,
 * the block keeps no expanded row between output rows: each output row expands its k input rows again
 * into slot[0..k-1], which then lie in the shared scratch (3x the expansion work, no RAM of its own). */
typedef struct {
    int8_t *slot[RT_MAX_KERNEL];
    int8_t *fifo;          /* RT_FIFO_PIXELS(k) pixels of hidden bytes */
    int8_t *dw_out;        /* two pixels of hidden bytes */
    int32_t *unpacked;     /* 2 * kdim int16 of the expand or project input */
    int expanded;          /* input rows [0, expanded) have been expanded */
    int recompute;
} rt_mbconv_state;

/* Pixels of the rolling row's FIFO: k + 1 rounded up to even, so a pair of pixels never wraps. */
#define RT_FIFO_PIXELS(k) (((k) + 2) / 2 * 2)

/* FastGRNN: a = ((W (x - zx)) << lsh + rnd) >> rsh + b_z (Q12, once per input; W per row a power of two);
 * per step p = a + (U h + 2^(u_shift - 1)) >> u_shift (U likewise); z = gate(p), c = update(p + b_h - b_z)
 * by table; h' = (((zeta (1 - z)) >> 14 + nu) c + z h) >> 14 (rounded; h in Q14).
 * Each unit's constants lie together (one pointer serves a whole row):
 *   w_rows: [hidden][wdim / 2 words of W as int16 pairs, lsh, rsh, rnd, b_z]
 *   u_rows: [hidden][udim / 2 words of U as int16 pairs, 2^(u_shift - 1), u_shift, b_h - b_z]
 * W and U are stored widened to int16 (flash is cheap, the steps are not): each word pairs with one word
 * of the data, one SMLAD per two multiply-adds. For int8 pixels (unpacked by SXTB16 into the pairs
 * (0, 2) and (1, 3) of each four) W's columns are stored (0, 2, 1, 3); for Q14 states, in order. */
#define RT_W_ROW_WORDS(wdim) ((wdim) / 2 + 4)
#define RT_W_BIAS(wdim) ((wdim) / 2 + 3) /* index of b_z in a W row */
#define RT_U_ROW_WORDS(udim) ((udim) / 2 + 3)
typedef struct {
    int16_t hidden, input, wdim, udim; /* wdim/udim: W/U rows padded to RT_PACK */
    int32_t in_zp;                     /* input zero point (int8 pixels); 0 for Q14 states */
    const int32_t *w_rows, *u_rows;
    int32_t zeta, nu;                  /* Q14 */
    const int16_t *lut;                /* gate table, then update table (RT_LUT_SIZE each) */
} rt_fastgrnn;

/* RNNPool layer: patch r x c, stride (sr, sc), input zero padding (pr, pc); w_out x h_out valid outputs of
 * 4 * h2 channels: out = zo + rq(h * out_mult + out_bias, 1, out_shift), then pad_right extra pixels
 * (pad_mode 0: the affine of a zero state; 1: a copy of the row's last pixel). */
typedef struct {
    int16_t r, c, sr, sc, pr, pc, cin, h_in, w_in, w_out, pad_right, pad_mode, cache_rows;
    const rt_fastgrnn *rnn1, *rnn2;
    const int64_t *out_mult, *out_bias;
    int32_t out_shift, out_zp;
} rt_rnnpool;

/* RNNPool working memory; cache_rows keeps the row summaries shared with the next patch row. */
typedef struct {
    int16_t *row_cache;    /* [r - sr][w_out][h1] (unused without cache_rows) */
    int32_t *wx;           /* [c][r][h1]: W1 x + b_z of the patch's columns, a ring over columns */
    int16_t *col_sums;     /* [c][h1] ring of column summaries */
    int16_t *row_sums;     /* [r][h1] */
    int32_t *wx2;          /* [r + c][h2]: W2 of the patch's row summaries, then a ring over columns of W2 of theirs */
    int16_t *state;        /* 2 * max(h1, h2) */
    int32_t *unpacked;     /* 2 * max(wdim1, wdim2) int16 */
    int cached_through;    /* the row summaries of input rows <= this are in row_cache (RT_NONE: none) */
} rt_rnnpool_state;
#define RT_NONE (-(1 << 30))


/* One output row of a convolution (any k, stride, dense or depthwise). rows[dy] is input row
 * (oy*stride - pad + dy), NULL where that row is padding; each row is w_in pixels of cin channels. Writes
 * w_out pixels of (cout - maxout + 1) channels. scratch: RT_CONV_SCRATCH_BYTES(kdim) (dense and 1x1). */
void rt_conv_row(const rt_conv *p, const int8_t *const *rows, int w_in, int w_out, int8_t *out, void *scratch);
#define RT_CONV_SCRATCH_BYTES(kdim) ((size_t)(kdim) * 5)
/* A column-gathering conv's scratch: k + stride unpacked columns (k pixels of `channels` int16 each: cin
 * padded to whole RT_PACK words), stored twice. */
#define RT_COLUMN_RING_BYTES(k, stride, channels) ((size_t)2 * ((k) + (stride)) * (k) * (channels) * 2)

struct rt_l2norm_s;
/* n dense convolutions with the same input, kernel, stride and padding: one gathering of each output
 * pixel's inputs serves all of them; with norm (else NULL) each input pixel is L2-normalised as it is
 * gathered (the convs then read the normalised map's quantization). outs[i] gets convs[i]'s row. */
void rt_conv_group_row(const rt_conv *const *convs, int n, const struct rt_l2norm_s *norm, const int8_t *const *rows,
                       int w_in, int w_out, int8_t *const *outs, void *scratch);

/* 1x1 convolution of n pixels (n >= 1) of cin channels: out gets n pixels of cout channels. unpacked:
 * 2 * kdim int16. */
void rt_pointwise(const rt_conv *p, const int8_t *in, int n, int8_t *out, int32_t *unpacked);

/* Expand, as soon as they arrive, the input rows that output row oy reads whole (all but its last):
 * then the input ring need not keep them. `available`: input rows present. */
void rt_mbconv_prefetch(const rt_mbconv *p, rt_mbconv_state *st, const rt_ring *in, int available, int oy);
/* Output row oy of a MobileNetV2 block from its input ring (rows up to oy*stride - pad + k - 1 present). */
void rt_mbconv_row(const rt_mbconv *p, rt_mbconv_state *st, const rt_ring *in, int oy, int8_t *out);

/* Output row oy of RNNPool (valid rows only) from its input ring; the row gets pad_right extra pixels. */
void rt_rnnpool_row(const rt_rnnpool *p, rt_rnnpool_state *st, const rt_ring *in, int oy, int8_t *out);
/* A padding row of RNNPool's zero-state affine (pad_mode 0). */
void rt_rnnpool_pad_row(const rt_rnnpool *p, int8_t *out);
/* Final Q14 state of a FastGRNN over n steps whose inputs a are at steps[t] (hidden int32 each). */
void rt_fastgrnn_run(const rt_fastgrnn *cell, const int32_t *const *steps, int n, int16_t *h, int16_t *scratch);
/* a = rq(W (x - zx)) + b_z of one input vector (int8 if cell->in_zp is used for pixels, else Q14 int16). */
void rt_fastgrnn_project_pixel(const rt_fastgrnn *cell, const int8_t *x, int32_t *a, int32_t *unpacked);
void rt_fastgrnn_project_state(const rt_fastgrnn *cell, const int16_t *x, int32_t *a);

/* L2Norm of each pixel, x / ||x|| with scale 1/127: with d = x - zx, out_c = clamp((d_c * inv + 2^21) >> 22,
 * -127, 127) where inv = (int32)(127 * 2^22 / sqrtf(sum d^2)) in float32 (0 for an all-zero pixel). */
#define RT_L2NORM_ONE 532676608.0f /* 127 * 2^22 */
typedef struct rt_l2norm_s {
    int16_t channels;
    int32_t in_zp;
} rt_l2norm;
void rt_l2norm_pixel(const rt_l2norm *p, const int8_t *in, int8_t *out);
void rt_l2norm_row(const rt_l2norm *p, const int8_t *in, int w, int8_t *out);

/* Classifier tail: a running int32 sum over rows (global average pool), then int8 pooled values. */
typedef struct {
    int16_t channels;
    int32_t count, in_zp, out_zp, mult, shift;
} rt_avgpool;
void rt_avgpool_add_row(const rt_avgpool *p, const int8_t *row, int w, int32_t *sums);
void rt_avgpool_finish(const rt_avgpool *p, const int32_t *sums, int8_t *out);

/* 32-bit FNV-1a, continued over n more bytes. */
uint32_t rt_fnv1a(uint32_t hash, const int8_t *data, size_t n);
#define RT_FNV_INIT 2166136261u

/* Detections: candidates ranked by an integer logit (ties: lower anchor index), boxes decoded, greedy NMS.
 * key = (score_face - score_background) * key_mult: the logit in units of 2^-key_bits, the same for every head. */
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
