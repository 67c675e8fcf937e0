/* Fused FastGRNN recurrence for RNNPool on CPUs: all the steps of many sequences in one call, forward and
 * backward, threaded with OpenMP. Built on first use by rnnpool.nn.fused (the system C compiler, -O3
 * -march=native) and called through ctypes; the eager PyTorch path is the reference it is tested against.
 *
 * float32 cells of up to 64 hidden units take the vector path below: the state is ceil(H / 8) vectors of 8
 * floats (GCC vector extensions: AVX on x86, pairs of NEON registers on ARM), U h is H broadcast
 * multiply-adds of U's padded columns, and exp is vexp (Cephes-style range reduction and polynomial, about
 * 1 ulp). float64, and float32 cells wider than 64, run the scalar template of fastgrnn_scan.h (float64
 * with libm's exp, so it is as exact as the eager path).
 *
 * Inference (fastgrnn_infer_*) runs the same forward bodies and then an epilogue that writes each final state, or
 * its projection by the next RNN's W, wherever the caller points it; rnnpool_project_f32 makes RNNPool's input
 * projection from the NCHW map. Together they let a layer's inference run without any copy in between.
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { ACT_SIGMOID = 0, ACT_TANH = 1, ACT_QSIGMOID = 2, ACT_QTANH = 3, ACT_RELU = 4, ACT_IDENTITY = 5 };
#define MAX_HIDDEN 1024

int rnnpool_kernel_version(void) { return 5; }

static inline __attribute__((always_inline)) float exp_f32(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    const float n = floorf(x * 1.44269504088896341f + 0.5f);
    const float r = x - n * 0.693359375f + n * 2.12194440e-4f; /* x - n ln 2, ln 2 in two parts */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { int32_t i; float f; } scale;
    scale.i = ((int32_t)n + 127) << 23; /* 2^n */
    return p * scale.f;
}

#define REAL float
#define SUFFIX f32
#define EXP exp_f32
#include "fastgrnn_scan.h"
#undef REAL
#undef SUFFIX
#undef EXP

#define REAL double
#define SUFFIX f64
#define EXP exp
#include "fastgrnn_scan.h"
#undef REAL
#undef SUFFIX
#undef EXP

/* ---- the float32 vector path ---- */

#define LANES 8
#define MAX_VECTORS 8 /* H <= 64 */
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef float v8f_unaligned __attribute__((vector_size(32), aligned(4)));

static inline __attribute__((always_inline)) v8f vsplat(float x) { return (v8f){x, x, x, x, x, x, x, x}; }
static inline __attribute__((always_inline)) v8f vselect(v8i mask, v8f a, v8f b) {
    return (v8f)(((v8i)a & mask) | ((v8i)b & ~mask));
}
#if defined(__AVX__)
#include <immintrin.h>
static inline __attribute__((always_inline)) v8f vmin(v8f a, v8f b) { return (v8f)_mm256_min_ps((__m256)a, (__m256)b); }
static inline __attribute__((always_inline)) v8f vmax(v8f a, v8f b) { return (v8f)_mm256_max_ps((__m256)a, (__m256)b); }
#else
static inline __attribute__((always_inline)) v8f vmin(v8f a, v8f b) { return vselect(a < b, a, b); }
static inline __attribute__((always_inline)) v8f vmax(v8f a, v8f b) { return vselect(a > b, a, b); }
#endif

static inline __attribute__((always_inline)) v8f vexp(v8f x) {
    x = vmax(vmin(x, vsplat(88.0f)), vsplat(-87.0f));
    const v8f magic = vsplat(12582912.0f); /* 1.5 * 2^23: adding it rounds to an integer */
    const v8f shifted = x * vsplat(1.44269504088896341f) + magic;
    const v8f n = shifted - magic;
    const v8f r = x - n * vsplat(0.693359375f) + n * vsplat(2.12194440e-4f);
    v8f p = vsplat(1.9875691500e-4f);
    p = p * r + vsplat(1.3981999507e-3f);
    p = p * r + vsplat(8.3334519073e-3f);
    p = p * r + vsplat(4.1665795894e-2f);
    p = p * r + vsplat(1.6666665459e-1f);
    p = p * r + vsplat(5.0000001201e-1f);
    p = p * r * r + r + vsplat(1.0f);
    const v8i integer = (v8i)shifted - (v8i)magic; /* n, from the low bits of the shifted float */
    return p * (v8f)((integer + 127) << 23);
}

#if defined(__AVX__)
/* 1 / d from the 12-bit estimate and one Newton step (about 1 ulp: a division costs several times more) */
static inline __attribute__((always_inline)) v8f vrecip(v8f d) {
    const v8f r = (v8f)_mm256_rcp_ps((__m256)d);
    return r * (vsplat(2.0f) - d * r);
}
#else
static inline __attribute__((always_inline)) v8f vrecip(v8f d) { return vsplat(1.0f) / d; }
#endif

static inline __attribute__((always_inline)) v8f vsigmoid(v8f x) { return vrecip(vsplat(1.0f) + vexp(-x)); }

static inline __attribute__((always_inline)) v8f vact(v8f x, int kind) {
    switch (kind) {
    case ACT_SIGMOID: return vsigmoid(x);
    case ACT_TANH: return vsplat(2.0f) * vsigmoid(vsplat(2.0f) * x) - vsplat(1.0f);
    case ACT_QSIGMOID: return vmax(vmin((x + vsplat(1.0f)) * vsplat(0.5f), vsplat(1.0f)), vsplat(0.0f));
    case ACT_QTANH: return vmax(vmin(x, vsplat(1.0f)), vsplat(-1.0f));
    case ACT_RELU: return vmax(x, vsplat(0.0f));
    default: return x;
    }
}

/* as act_grad in fastgrnn_scan.h: d act / d x from the output y (clamp passes the gradient strictly inside its
 * interval, relu above 0) */
static inline __attribute__((always_inline)) v8f vact_grad(v8f y, int kind) {
    const v8f zero = vsplat(0.0f), one = vsplat(1.0f);
    switch (kind) {
    case ACT_SIGMOID: return y * (one - y);
    case ACT_TANH: return one - y * y;
    case ACT_QSIGMOID: return vselect((y > zero) & (y < one), vsplat(0.5f), zero);
    case ACT_QTANH: return vselect((y > -one) & (y < one), one, zero);
    case ACT_RELU: return vselect(y > zero, one, zero);
    default: return one;
    }
}

/* h' = (zeta (1 - z) + nu) c + z h (as next_state in fastgrnn_scan.h) */
static inline __attribute__((always_inline)) v8f vnext_state(v8f z, v8f c, v8f h, v8f zeta, v8f nu) {
    return (zeta * (vsplat(1.0f) - z) + nu) * c + z * h;
}

/* z = gate(pre) and c = update(pre + bias). The sigmoid/tanh cell needs one exp, not two: with e = exp(-pre),
 * z = 1 / (1 + e) and tanh(pre + b) = 2 / (1 + e^2 exp(-2 b)) - 1 (eb = exp(-2 b), per unit); the sum is
 * capped at 1e30 where e^2 overflows (tanh is -1 there to float precision). */
static inline __attribute__((always_inline)) void gate_update(v8f pre, v8f bias, v8f eb, v8f *z, v8f *c, int gate, int update) {
    if (gate == ACT_SIGMOID && update == ACT_TANH) {
        const v8f one = vsplat(1.0f), e = vexp(-pre);
        *z = vrecip(one + e);
        *c = vsplat(2.0f) * vrecip(vmin(one + e * e * eb, vsplat(1e30f))) - one;
    } else {
        *z = vact(pre, gate);
        *c = vact(pre + bias, update);
    }
}

static inline __attribute__((always_inline)) void load_step(const float *x, int64_t sg, int H, float *buffer) {
    if (sg == 1) {
        memcpy(buffer, x, sizeof(float) * H);
    } else {
        for (int g = 0; g < H; g++) buffer[g] = x[g * sg];
    }
}

/* x + offset as NV vectors: read straight from the grid when whole vectors lie there (H a multiple of 8,
 * unit stride), else through the zero-tailed buffer xb. */
static inline __attribute__((always_inline)) void load_input(const scan_args_f32 *a, const float *x, float *xb, v8f *pre,
                                                             const int H, const int NV) {
    if (H % LANES == 0 && a->sg == 1) {
        for (int k = 0; k < NV; k++) pre[k] = *(const v8f_unaligned *)(x + LANES * k) + *(const v8f_unaligned *)(a->offset + LANES * k);
    } else {
        load_step(x, a->sg, H, xb);
        for (int k = 0; k < NV; k++) pre[k] = *(const v8f *)(xb + LANES * k) + *(const v8f_unaligned *)(a->offset + LANES * k);
    }
}

/* The forward saves each step's pre-activation for the backward, which replays z and c from it (an exp a vector)
 * but needs no U h. Measured on a 2-core AVX2 EPYC, forward + backward at batch 8, against saving the states (and
 * recomputing U h and the exps): 1.05-1.15x for 4-16 units, 1.0-1.1x for 48. Saving z and c instead (2 H floats,
 * no exp in the backward) made the backward kernel 1.5-1.8x faster alone but the whole no faster: twice the bytes
 * written and read again, and the page faults of larger fresh tensors, cost what the exps did. */

/* a step's NV vectors (H floats kept) into dst, and back (zero past H) */
static inline __attribute__((always_inline)) void store_floats(float *dst, const v8f *v, const int H, const int NV) {
    if (H % LANES == 0) {
        for (int k = 0; k < NV; k++) *(v8f_unaligned *)(dst + LANES * k) = v[k];
    } else {
        float buffer[LANES * MAX_VECTORS] __attribute__((aligned(32)));
        for (int k = 0; k < NV; k++) *(v8f *)(buffer + LANES * k) = v[k];
        memcpy(dst, buffer, sizeof(float) * H);
    }
}

static inline __attribute__((always_inline)) void load_floats(const float *src, v8f *v, const int H, const int NV) {
    if (H % LANES == 0) {
        for (int k = 0; k < NV; k++) v[k] = *(const v8f_unaligned *)(src + LANES * k);
    } else {
        float buffer[LANES * MAX_VECTORS] __attribute__((aligned(32)));
        memcpy(buffer, src, sizeof(float) * H);
        for (int i = H; i < LANES * NV; i++) buffer[i] = 0.0f;
        for (int k = 0; k < NV; k++) v[k] = *(const v8f *)(buffer + LANES * k);
    }
}

/* pre += U h for G sequences at once (each column of U loaded once for all of them); hs[g]: the states */
static inline __attribute__((always_inline)) void add_recurrent(const scan_args_f32 *a, float (*hs)[LANES * MAX_VECTORS],
                                                                v8f (*pre)[MAX_VECTORS], const int G, const int H, const int NV) {
    for (int j = 0; j < H; j++) {
        const float *col = a->ut + (int64_t)j * a->width;
        v8f u[MAX_VECTORS];
        for (int k = 0; k < NV; k++) u[k] = *(const v8f_unaligned *)(col + LANES * k);
        for (int g = 0; g < G; g++) {
            const v8f hj = vsplat(hs[g][j]);
            for (int k = 0; k < NV; k++) pre[g][k] += u[k] * hj;
        }
    }
}

/* G sequences from s0 on, interleaved so that their independent steps overlap (the step is a chain of
 * dependent latencies: exp, divide, the next step's broadcast); their final states into out (G, H), and with
 * saved every step's pre-activation. */
static inline __attribute__((always_inline)) void forward_group(const scan_args_f32 *a, int64_t s0, walk_f32 *walk, float *out,
                                                                float *saved, const v8f *bias, const v8f *eb, const int G,
                                                                const int H, const int NV, int gate, int update) {
    float hs[G][LANES * MAX_VECTORS] __attribute__((aligned(32)));
    float xb[LANES * MAX_VECTORS] __attribute__((aligned(32)));
    v8f pre[G][MAX_VECTORS];
    const float *x[G];
    const v8f zeta = vsplat(a->zeta), nu = vsplat(a->nu);
    memset(xb, 0, sizeof(xb));
    for (int g = 0; g < G; g++) {
        x[g] = walk_next_f32(walk);
        for (int k = 0; k < NV; k++) *(v8f *)(hs[g] + LANES * k) = vsplat(0.0f);
    }
    for (int64_t t = 0; t < a->T; t++) {
        for (int g = 0; g < G; g++) load_input(a, x[g] + t * a->st, xb, pre[g], H, NV);
        add_recurrent(a, hs, pre, G, H, NV);
        for (int g = 0; g < G; g++) {
            if (saved) store_floats(saved + ((s0 + g) * a->T + t) * H, pre[g], H, NV);
            for (int k = 0; k < NV; k++) {
                v8f z, c;
                gate_update(pre[g][k], bias[k], eb[k], &z, &c, gate, update);
                v8f *h = (v8f *)(hs[g] + LANES * k);
                *h = vnext_state(z, c, *h, zeta, nu);
            }
        }
    }
    for (int g = 0; g < G; g++) memcpy(out + g * H, hs[g], sizeof(float) * H);
}

/* Sequences interleaved: about as many as the 16 vector registers hold the pre-activations of, and two where
 * that measured faster despite spills (forward: 5-6 vectors, 10% on an AVX2 EPYC; backward: 5-8 vectors, whose
 * longer dependency chains gain 15-20%); eight for one-vector (8-unit) cells, 5-7% faster than four both ways
 * (Zen 3; six or eight for two-vector cells measured no faster). */
#define GROUP_FORWARD(NV) ((NV) == 1 ? 8 : ((NV) <= 2 ? 4 : ((NV) <= 6 ? 2 : 1)))
#define GROUP_BACKWARD(NV) ((NV) == 1 ? 8 : ((NV) <= 2 ? 4 : 2))

static inline __attribute__((always_inline)) void vector_forward(const scan_args_f32 *a, int64_t begin, int64_t end, float *out,
                                                                 float *saved, const int H, const int NV, int gate, int update) {
    v8f bias[MAX_VECTORS], eb[MAX_VECTORS];
    for (int k = 0; k < NV; k++) {
        bias[k] = *(const v8f_unaligned *)(a->bias_diff + LANES * k);
        eb[k] = vexp(vsplat(-2.0f) * bias[k]);
    }
    walk_f32 walk = walk_start_f32(a, begin);
    int64_t s = begin;
    for (; s + GROUP_FORWARD(NV) <= end; s += GROUP_FORWARD(NV))
        forward_group(a, s, &walk, out + (s - begin) * H, saved, bias, eb, GROUP_FORWARD(NV), H, NV, gate, update);
    for (; s < end; s++) forward_group(a, s, &walk, out + (s - begin) * H, saved, bias, eb, 1, H, NV, gate, update);
}

/* ---- the float32 forward of narrow cells: lanes across sequences ----
 * Cells of up to NARROW_MAX units fill few lanes of a vector over their units (and their inputs take the
 * buffered load). Here lane l of every vector holds sequence s0 + l: unit i of the 8 states is the vector h[i],
 * U h is H x H multiply-adds of broadcast U entries, and the gates run on full vectors; each step's inputs are
 * gathered lane by lane. Measured on an AVX2 EPYC (one thread, ns per step): forward H = 2: 21 -> 5, 4: 25 -> 7,
 * 7: 26 -> 15; backward (narrow_backward) 2: 44 -> 11, 4: 50 -> 25, 7: 59 -> 59; at 8 the vector path is
 * faster (forward 16 against 21). */
#define NARROW_MAX 7

/* The cell's constants broadcast to every lane: U[i][j], offset, bias_diff and exp(-2 bias_diff) per unit. */
static inline __attribute__((always_inline)) void narrow_constants(const scan_args_f32 *a, const int H, v8f (*u)[NARROW_MAX],
                                                                   v8f *offset, v8f *bias, v8f *eb) {
    for (int i = 0; i < H; i++) {
        for (int j = 0; j < H; j++) u[i][j] = vsplat(a->u[(int64_t)i * a->width + j]);
        offset[i] = vsplat(a->offset[i]);
        bias[i] = vsplat(a->bias_diff[i]);
        eb[i] = vexp(vsplat(-2.0f) * bias[i]);
    }
}

/* The n <= LANES sequences from s0 on, one per lane: their first steps x; idle lanes of the last vector repeat
 * lane 0 (their results are not written). */
static inline __attribute__((always_inline)) int narrow_lanes(walk_f32 *walk, int64_t s0, int64_t end, const float **x) {
    const int n = end - s0 < LANES ? (int)(end - s0) : LANES;
    x[0] = walk_next_f32(walk);
    for (int l = 1; l < LANES; l++) x[l] = l < n ? walk_next_f32(walk) : x[0];
    return n;
}

static inline __attribute__((always_inline)) void narrow_forward(const scan_args_f32 *a, int64_t begin, int64_t end, float *out,
                                                                 float *saved, const int H, int gate, int update) {
    v8f u[NARROW_MAX][NARROW_MAX], offset[NARROW_MAX], bias[NARROW_MAX], eb[NARROW_MAX];
    const v8f zeta = vsplat(a->zeta), nu = vsplat(a->nu);
    narrow_constants(a, H, u, offset, bias, eb);
    walk_f32 walk = walk_start_f32(a, begin);
    for (int64_t s0 = begin; s0 < end; s0 += LANES) {
        const float *x[LANES];
        const int n = narrow_lanes(&walk, s0, end, x);
        v8f h[NARROW_MAX];
        for (int i = 0; i < NARROW_MAX; i++) h[i] = vsplat(0.0f);
        for (int64_t t = 0; t < a->T; t++) {
            v8f pre[NARROW_MAX];
            for (int i = 0; i < H; i++) {
                const int64_t at = t * a->st + i * a->sg;
                pre[i] = (v8f){x[0][at], x[1][at], x[2][at], x[3][at], x[4][at], x[5][at], x[6][at], x[7][at]} + offset[i];
                for (int j = 0; j < H; j++) pre[i] += u[i][j] * h[j];
            }
            if (saved) {
                for (int i = 0; i < H; i++) {
                    const v8f p = pre[i];
                    for (int l = 0; l < n; l++) saved[((s0 + l) * a->T + t) * H + i] = p[l];
                }
            }
            for (int i = 0; i < H; i++) {
                v8f z, c;
                gate_update(pre[i], bias[i], eb[i], &z, &c, gate, update);
                h[i] = vnext_state(z, c, h[i], zeta, nu);
            }
        }
        for (int l = 0; l < n; l++)
            for (int i = 0; i < H; i++) out[(s0 - begin + l) * H + i] = h[i][l];
    }
}

/* The backward of narrow cells, lanes across sequences as in narrow_forward: each block of 8 sequences first
 * replays its steps from their saved pre-activations into scratch (T x 3 H vectors: the state before the step, z,
 * c), then runs back through them: d pre into grad_wx; d U, d bias_diff, d offset, d zeta, d nu summed per lane
 * and added into part at the end. */
static inline __attribute__((always_inline)) void narrow_backward(const scan_args_f32 *a, int64_t begin, int64_t end,
                                                                  const float *saved, const float *grad_out, float *grad_wx,
                                                                  v8f *scratch, float *part, const int H, int gate, int update) {
    v8f u[NARROW_MAX][NARROW_MAX], du[NARROW_MAX][NARROW_MAX], offset[NARROW_MAX], bias[NARROW_MAX], eb[NARROW_MAX];
    v8f dbias[NARROW_MAX], doffset[NARROW_MAX], dzeta = vsplat(0.0f), dnu = vsplat(0.0f);
    const v8f zeta = vsplat(a->zeta), nu = vsplat(a->nu), one = vsplat(1.0f);
    const int64_t W = a->width, S = a->N * a->L * a->M, T = a->T;
    narrow_constants(a, H, u, offset, bias, eb);
    for (int i = 0; i < H; i++) {
        for (int j = 0; j < H; j++) du[i][j] = vsplat(0.0f);
        dbias[i] = doffset[i] = vsplat(0.0f);
    }
    for (int64_t s0 = begin; s0 < end; s0 += LANES) {
        const int n = end - s0 < LANES ? (int)(end - s0) : LANES;
        int64_t at[LANES]; /* lane l's saved steps; idle lanes repeat lane 0 (their d h is 0: nothing flows) */
        for (int l = 0; l < LANES; l++) at[l] = (l < n ? s0 + l : s0) * T * H;
        v8f h[NARROW_MAX];
        for (int i = 0; i < H; i++) h[i] = vsplat(0.0f);
        for (int64_t t = 0; t < T; t++) {
            v8f *step = scratch + t * 3 * H;
            for (int i = 0; i < H; i++) {
                const float *ps = saved + t * H + i;
                const v8f pre = {ps[at[0]], ps[at[1]], ps[at[2]], ps[at[3]], ps[at[4]], ps[at[5]], ps[at[6]], ps[at[7]]};
                v8f z, c;
                gate_update(pre, bias[i], eb[i], &z, &c, gate, update);
                step[i] = h[i];
                step[H + i] = z;
                step[2 * H + i] = c;
                h[i] = vnext_state(z, c, h[i], zeta, nu);
            }
        }
        v8f dh[NARROW_MAX];
        for (int i = 0; i < NARROW_MAX; i++) dh[i] = vsplat(0.0f);
        for (int i = 0; i < H; i++)
            for (int l = 0; l < n; l++) dh[i][l] = grad_out[(s0 + l) * H + i];
        for (int64_t t = T - 1; t >= 0; t--) {
            const v8f *step = scratch + t * 3 * H, *hs = step, *z = step + H, *c = step + 2 * H;
            v8f dpre[NARROW_MAX];
            for (int i = 0; i < H; i++) {
                const v8f dc = dh[i] * (zeta * (one - z[i]) + nu) * vact_grad(c[i], update);
                dpre[i] = dc + dh[i] * (hs[i] - zeta * c[i]) * vact_grad(z[i], gate);
                dbias[i] += dc;
                doffset[i] += dpre[i];
                dzeta += dh[i] * (one - z[i]) * c[i];
                dnu += dh[i] * c[i];
                for (int l = 0; l < n; l++) grad_wx[(t * S + s0 + l) * H + i] = dpre[i][l];
            }
            for (int j = 0; j < H; j++) { /* d h_prev = d h z + U^T d pre; d U += d pre h^T */
                v8f next = dh[j] * z[j];
                for (int i = 0; i < H; i++) {
                    next += u[i][j] * dpre[i];
                    du[i][j] += dpre[i] * hs[j];
                }
                dh[j] = next;
            }
        }
    }
    for (int i = 0; i < H; i++) {
        for (int l = 0; l < LANES; l++) {
            for (int j = 0; j < H; j++) part[(int64_t)i * W + j] += du[i][j][l];
            part[H * W + i] += dbias[i][l];
            part[H * W + W + i] += doffset[i][l];
        }
    }
    for (int l = 0; l < LANES; l++) {
        part[H * W + 2 * W] += dzeta[l];
        part[H * W + 2 * W + 1] += dnu[l];
    }
}

/* The backward of G sequences from s0 on, interleaved like forward_group: their steps replayed from the saved
 * pre-activations into scratch (per sequence and step three rows of 8 NV floats: the state before the step, z, c),
 * then back through the steps: d pre into grad_wx; d U accumulated into du (each row loaded once for the group);
 * d bias_diff, d offset, d zeta, d nu into vector sums. */
static inline __attribute__((always_inline)) void backward_group(const scan_args_f32 *a, int64_t s0, const float *saved,
                                                                 const float *grad_out, float *grad_wx, float *scratch, float *du,
                                                                 const v8f *bias, const v8f *eb, v8f *dbias, v8f *doffset, v8f *dzeta,
                                                                 v8f *dnu, const int G, const int H, const int NV, int gate, int update) {
    float dps[G][LANES * MAX_VECTORS] __attribute__((aligned(32)));
    v8f dh[G][MAX_VECTORS];
    const int64_t S = a->N * a->L * a->M, T = a->T, HW = LANES * NV;
    const v8f zeta = vsplat(a->zeta), nu = vsplat(a->nu), one = vsplat(1.0f);
    {
        v8f h[G][MAX_VECTORS];
        for (int g = 0; g < G; g++)
            for (int k = 0; k < NV; k++) h[g][k] = vsplat(0.0f);
        for (int64_t t = 0; t < T; t++) {
            for (int g = 0; g < G; g++) {
                float *row = scratch + (g * T + t) * 3 * HW;
                v8f pre[MAX_VECTORS];
                load_floats(saved + ((s0 + g) * T + t) * H, pre, H, NV);
                for (int k = 0; k < NV; k++) {
                    v8f z, c;
                    gate_update(pre[k], bias[k], eb[k], &z, &c, gate, update);
                    *(v8f *)(row + LANES * k) = h[g][k];
                    *(v8f *)(row + HW + LANES * k) = z;
                    *(v8f *)(row + 2 * HW + LANES * k) = c;
                    h[g][k] = vnext_state(z, c, h[g][k], zeta, nu);
                }
            }
        }
    }
    memset(dps, 0, sizeof(dps)); /* lanes past H stay 0 */
    for (int g = 0; g < G; g++) {
        memcpy(dps[g], grad_out + (s0 + g) * H, sizeof(float) * H);
        for (int k = 0; k < NV; k++) dh[g][k] = *(const v8f *)(dps[g] + LANES * k);
    }
    for (int64_t t = T - 1; t >= 0; t--) {
        for (int g = 0; g < G; g++) {
            const float *row = scratch + (g * T + t) * 3 * HW;
            const v8f *z = (const v8f *)(row + HW), *c = (const v8f *)(row + 2 * HW);
            for (int k = 0; k < NV; k++) {
                const v8f h = *(const v8f *)(row + LANES * k);
                const v8f dc = dh[g][k] * (zeta * (one - z[k]) + nu) * vact_grad(c[k], update);
                const v8f dz = dh[g][k] * (h - zeta * c[k]) * vact_grad(z[k], gate);
                dbias[k] += dc;
                doffset[k] += dc + dz;
                *dzeta += dh[g][k] * (one - z[k]) * c[k];
                *dnu += dh[g][k] * c[k];
                dh[g][k] *= z[k]; /* the part of d h_prev through z h; U^T d pre is added below */
                *(v8f *)(dps[g] + LANES * k) = dc + dz;
            }
            memcpy(grad_wx + (t * S + s0 + g) * H, dps[g], sizeof(float) * H);
        }
        for (int i = 0; i < H; i++) { /* d h_prev += U^T d pre; d U += d pre h^T */
            const float *row = a->u + (int64_t)i * a->width;
            float *du_row = du + (int64_t)i * a->width;
            v8f u[MAX_VECTORS], acc[MAX_VECTORS];
            for (int k = 0; k < NV; k++) {
                u[k] = *(const v8f_unaligned *)(row + LANES * k);
                acc[k] = *(const v8f_unaligned *)(du_row + LANES * k);
            }
            for (int g = 0; g < G; g++) {
                const v8f di = vsplat(dps[g][i]);
                const float *hs = scratch + (g * T + t) * 3 * HW;
                for (int k = 0; k < NV; k++) {
                    dh[g][k] += u[k] * di;
                    acc[k] += di * *(const v8f *)(hs + LANES * k);
                }
            }
            for (int k = 0; k < NV; k++) *(v8f_unaligned *)(du_row + LANES * k) = acc[k];
        }
    }
}

static inline __attribute__((always_inline)) void vector_backward(const scan_args_f32 *a, int64_t begin, int64_t end,
                                                                  const float *saved, const float *grad_out, float *grad_wx,
                                                                  float *scratch, float *part, const int H, const int NV, int gate,
                                                                  int update) {
    v8f bias[MAX_VECTORS], eb[MAX_VECTORS], dbias[MAX_VECTORS], doffset[MAX_VECTORS], dzeta = vsplat(0.0f), dnu = vsplat(0.0f);
    const int64_t W = a->width;
    for (int k = 0; k < NV; k++) {
        bias[k] = *(const v8f_unaligned *)(a->bias_diff + LANES * k);
        eb[k] = vexp(vsplat(-2.0f) * bias[k]);
        dbias[k] = doffset[k] = vsplat(0.0f);
    }
    int64_t s = begin;
    for (; s + GROUP_BACKWARD(NV) <= end; s += GROUP_BACKWARD(NV))
        backward_group(a, s, saved, grad_out, grad_wx, scratch, part, bias, eb, dbias, doffset, &dzeta, &dnu, GROUP_BACKWARD(NV), H,
                       NV, gate, update);
    for (; s < end; s++)
        backward_group(a, s, saved, grad_out, grad_wx, scratch, part, bias, eb, dbias, doffset, &dzeta, &dnu, 1, H, NV, gate, update);
    for (int k = 0; k < NV; k++) {
        *(v8f_unaligned *)(part + H * W + LANES * k) += dbias[k];
        *(v8f_unaligned *)(part + H * W + W + LANES * k) += doffset[k];
    }
    float zsum = 0.0f, nsum = 0.0f;
    for (int l = 0; l < LANES; l++) {
        zsum += dzeta[l];
        nsum += dnu[l];
    }
    part[H * W + 2 * W] += zsum;
    part[H * W + 2 * W + 1] += nsum;
}

/* Constant H (and so constant loop bounds and copy sizes) for the common widths, constant NV for the rest. */
#define VECTOR_CASES(CALL)                      \
    switch (H) {                                \
    case 8: CALL(8, 1); break;                  \
    case 16: CALL(16, 2); break;                \
    case 32: CALL(32, 4); break;                \
    case 48: CALL(48, 6); break;                \
    case 64: CALL(64, 8); break;                \
    default:                                    \
        switch (NV) {                           \
        case 1: CALL(H, 1); break;              \
        case 2: CALL(H, 2); break;              \
        case 3: CALL(H, 3); break;              \
        case 4: CALL(H, 4); break;              \
        case 5: CALL(H, 5); break;              \
        case 6: CALL(H, 6); break;              \
        case 7: CALL(H, 7); break;              \
        default: CALL(H, 8); break;             \
        }                                       \
    }

/* Cells of up to NARROW_MAX units take the lanes-across-sequences bodies (constant H: their unit loops unroll and
 * the vectors stay in registers), the others the vector ones. */
#define WIDTH_CASES(NARROW, VECTOR)             \
    switch (H) {                                \
    case 1: NARROW(1); break;                   \
    case 2: NARROW(2); break;                   \
    case 3: NARROW(3); break;                   \
    case 4: NARROW(4); break;                   \
    case 5: NARROW(5); break;                   \
    case 6: NARROW(6); break;                   \
    case 7: NARROW(7); break;                   \
    default: VECTOR_CASES(VECTOR)               \
    }

/* The padded width W a float32 / float64 cell of H hidden units needs (see scan_args.width). */
int fastgrnn_width_f32(int H) { return H <= LANES * MAX_VECTORS ? (H + LANES - 1) / LANES * LANES : H; }
int fastgrnn_width_f64(int H) { return H; }

/* saved: (S, T, H), every step's pre-activation, for the backward (NULL: not kept) */
int fastgrnn_forward_f32(const scan_args_f32 *a, int H, int gate, int update, float *out, float *saved, int threads) {
    if (H <= 0 || H > MAX_HIDDEN || a->width != fastgrnn_width_f32(H)) return 1;
    if (H > LANES * MAX_VECTORS) return scalar_forward_f32(a, H, gate, update, out, saved, threads);
    const int64_t S = a->N * a->L * a->M;
    const int NV = (H + LANES - 1) / LANES;
#pragma omp parallel num_threads(threads)
    {
        int64_t b, e;
        split_f32(S, &b, &e);
#define NARROW(HS) narrow_forward(a, b, e, out + b * H, saved, HS, gate, update)
#define FORWARD(HS, V) vector_forward(a, b, e, out + b * H, saved, HS, V, gate, update)
        WIDTH_CASES(NARROW, FORWARD)
#undef FORWARD
#undef NARROW
    }
    return 0;
}

/* saved: the forward's; grad_wx: d pre of every step (T, S, H); parts: (threads, H W + 2 W + 2), zeroed: each
 * thread's sums of d U (H x W), d bias_diff, d offset, d zeta and d nu. Returns 2 where a thread's scratch (a few
 * KiB per step) cannot be allocated. */
int fastgrnn_backward_f32(const scan_args_f32 *a, int H, int gate, int update, const float *saved, const float *grad_out,
                          float *grad_wx, float *parts, int threads) {
    if (H <= 0 || H > MAX_HIDDEN || a->width != fastgrnn_width_f32(H)) return 1;
    if (H > LANES * MAX_VECTORS) return scalar_backward_f32(a, H, gate, update, saved, grad_out, grad_wx, parts, threads);
    const int64_t S = a->N * a->L * a->M;
    const int NV = (H + LANES - 1) / LANES;
    /* per thread: narrow cells keep T x 3 H vectors, the others G x T x 3 rows of 8 NV floats */
    const size_t scratch_floats = (size_t)(a->T + 1) * 3 * (H <= NARROW_MAX ? H * LANES : GROUP_BACKWARD(NV) * LANES * NV);
    int failed = 0;
#pragma omp parallel num_threads(threads)
    {
        int64_t b, e;
        split_f32(S, &b, &e);
        float *p = parts + (int64_t)omp_get_thread_num() * (H * a->width + 2 * a->width + 2);
        void *memory = NULL;
        float *scratch = posix_memalign(&memory, 32, sizeof(float) * scratch_floats) == 0 ? (float *)memory : NULL;
        if (!scratch) {
#pragma omp atomic write
            failed = 2;
        } else {
#define NARROW(HS) narrow_backward(a, b, e, saved, grad_out, grad_wx, (v8f *)scratch, p, HS, gate, update)
#define BACKWARD(HS, V) vector_backward(a, b, e, saved, grad_out, grad_wx, scratch, p, HS, V, gate, update)
            WIDTH_CASES(NARROW, BACKWARD)
#undef BACKWARD
#undef NARROW
        }
        free(scratch);
    }
    return failed;
}

/* ---- RNNPool's input projection for inference ----
 * out (N, Hin + 2 pr, Win + 2 pc, G), channels-last with zero borders, = W x at every pixel of x (N, C, Hin, Win),
 * contiguous: the layout the scans read, made in one pass from the NCHW map (a BLAS product needs the map
 * transposed first and its output padded after, and is slow for so few output channels). wt: W transposed and
 * padded, (C, 8 NVG) with zeros past G. Vectorised over the output channels, P pixels at a time so each row of wt
 * is loaded once for all of them. */
static inline __attribute__((always_inline)) void store_pixel(float *dst, const v8f *acc, const int64_t G, const int NVG) {
    if (G == LANES * NVG) {
        for (int k = 0; k < NVG; k++) *(v8f_unaligned *)(dst + LANES * k) = acc[k];
    } else {
        float buffer[LANES * MAX_VECTORS] __attribute__((aligned(32)));
        for (int k = 0; k < NVG; k++) *(v8f *)(buffer + LANES * k) = acc[k];
        memcpy(dst, buffer, sizeof(float) * G);
    }
}

/* out[p * G + g] = sum_c x[p * sp + c * plane] wt[c][g] for p < count (wt: (C, 8 NVG), zeros past G) */
static inline __attribute__((always_inline)) void project_row(const float *x, int64_t sp, int64_t plane, int64_t C, int64_t count,
                                                              const float *wt, int64_t G, float *dst, const int NVG, const int P) {
    int64_t p = 0;
    for (; p + P <= count; p += P) {
        v8f acc[P * NVG];
#pragma GCC unroll 16
        for (int i = 0; i < P * NVG; i++) acc[i] = vsplat(0.0f);
        for (int64_t c = 0; c < C; c++) {
            const float *xc = x + c * plane + p * sp, *wc = wt + c * LANES * NVG;
#pragma GCC unroll 16
            for (int i = 0; i < P * NVG; i++) acc[i] += *(const v8f_unaligned *)(wc + LANES * (i % NVG)) * vsplat(xc[(i / NVG) * sp]);
        }
#pragma GCC unroll 4
        for (int q = 0; q < P; q++) store_pixel(dst + (p + q) * G, acc + q * NVG, G, NVG);
    }
    for (; p < count; p++) {
        v8f acc[NVG];
#pragma GCC unroll 8
        for (int k = 0; k < NVG; k++) acc[k] = vsplat(0.0f);
        for (int64_t c = 0; c < C; c++) {
            const v8f xv = vsplat(x[c * plane + p * sp]);
#pragma GCC unroll 8
            for (int k = 0; k < NVG; k++) acc[k] += *(const v8f_unaligned *)(wt + c * LANES * NVG + LANES * k) * xv;
        }
        store_pixel(dst + p * G, acc, G, NVG);
    }
}

/* project_row for G <= 64: as many pixels at a time as keep about a dozen accumulators */
static void project_rows(const float *x, int64_t sp, int64_t plane, int64_t C, int64_t count, const float *wt, int64_t G, float *dst) {
#define PROJECT(V, P) project_row(x, sp, plane, C, count, wt, G, dst, V, P)
    switch ((G + LANES - 1) / LANES) {
    case 1: PROJECT(1, 8); break;
    case 2: PROJECT(2, 4); break;
    case 3: PROJECT(3, 4); break;
    case 4: PROJECT(4, 3); break;
    case 5: PROJECT(5, 2); break;
    case 6: PROJECT(6, 2); break;
    case 7: PROJECT(7, 1); break;
    default: PROJECT(8, 1); break;
    }
#undef PROJECT
}

int rnnpool_project_f32(const float *x, int64_t N, int64_t C, int64_t Hin, int64_t Win, const float *wt, int64_t G, float *out,
                        int64_t pr, int64_t pc, int threads) {
    if (G <= 0 || G > LANES * MAX_VECTORS || C <= 0 || pr < 0 || pc < 0) return 1;
    const int64_t Hp = Hin + 2 * pr, Wp = Win + 2 * pc, plane = Hin * Win;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t row = 0; row < N * Hp; row++) {
        const int64_t n = row / Hp, y = row % Hp - pr;
        float *dst = out + row * Wp * G;
        if (y < 0 || y >= Hin) {
            memset(dst, 0, sizeof(float) * Wp * G);
            continue;
        }
        memset(dst, 0, sizeof(float) * pc * G);
        memset(dst + (pc + Win) * G, 0, sizeof(float) * pc * G);
        project_rows(x + n * C * plane + y * Win, 1, plane, C, Win, wt, G, dst + pc * G);
    }
    return 0;
}

/* count inference scans of one cell (no states saved) in one parallel region (RNNPool's two sweeps of RNN1, its
 * four of RNN2: one call each, for the overhead of a call matters at batch 1): for scan i the forward bodies write
 * the final states into finals (scratch of the largest scan's S x H, shared by the scans one after the other), and
 * each thread then passes its own sequences through the epilogue e[i] (see epilogue_f32 in fastgrnn_scan.h).
 * (Blocks of sequences through a small buffer in cache measured 30% slower for 48 units.) */
/* This thread's part of one inference scan (a function of its own: inlined into the loop over the scans, the
 * 48-unit forward ran 40% slower) */
static __attribute__((noinline)) void infer_part(const scan_args_f32 *a, int H, int gate, int update, const epilogue_f32 *e,
                                                 float *finals) {
    const int64_t S = a->N * a->L * a->M;
    const int NV = (H + LANES - 1) / LANES;
    /* a projection into a contiguous (S, O) destination: vectorised like the input projection (P transposed
     * padded to whole vectors, ps = 8 NVO) */
    const int dense_projection = e->proj && e->O <= LANES * MAX_VECTORS && e->ps == (e->O + LANES - 1) / LANES * LANES && e->oo == 1
                                 && e->om == e->O && e->ol == a->M * e->O && (a->N == 1 || e->on == a->L * a->M * e->O);
    int64_t b, end;
    split_f32(S, &b, &end);
#define NARROW(HS) narrow_forward(a, b, end, finals + b * H, NULL, HS, gate, update)
#define FORWARD(HS, V) vector_forward(a, b, end, finals + b * H, NULL, HS, V, gate, update)
    WIDTH_CASES(NARROW, FORWARD)
#undef FORWARD
#undef NARROW
    if (dense_projection)
        project_rows(finals + b * H, H, 1, H, end - b, e->proj, e->O, e->out + b * e->O);
    else
        write_finals_f32(a, e, b, end, finals + b * H, H);
}

int fastgrnn_infer_f32(const scan_args_f32 *a, int count, int H, int gate, int update, const epilogue_f32 *e, float *finals,
                       int threads) {
    for (int i = 0; i < count; i++)
        if (H <= 0 || H > MAX_HIDDEN || a[i].width != fastgrnn_width_f32(H) || (e[i].proj && (e[i].O <= 0 || e[i].O > MAX_HIDDEN)))
            return 1;
    if (H > LANES * MAX_VECTORS) return scalar_infer_f32(a, count, H, gate, update, e, finals, threads);
#pragma omp parallel num_threads(threads)
    for (int i = 0; i < count; i++) {
        if (i > 0) {
#pragma omp barrier
        } /* (the scans share finals: each thread's part of scan i may overlap another's part of scan i - 1) */
        infer_part(&a[i], H, gate, update, &e[i], finals);
    }
    return 0;
}

int fastgrnn_infer_f64(const scan_args_f64 *a, int count, int H, int gate, int update, const epilogue_f64 *e, double *finals,
                       int threads) {
    for (int i = 0; i < count; i++)
        if (a[i].width != H) return 1;
    return scalar_infer_f64(a, count, H, gate, update, e, finals, threads);
}

int fastgrnn_forward_f64(const scan_args_f64 *a, int H, int gate, int update, double *out, double *saved, int threads) {
    if (a->width != H) return 1;
    return scalar_forward_f64(a, H, gate, update, out, saved, threads);
}

int fastgrnn_backward_f64(const scan_args_f64 *a, int H, int gate, int update, const double *saved, const double *grad_out,
                          double *grad_wx, double *parts, int threads) {
    if (a->width != H) return 1;
    return scalar_backward_f64(a, H, gate, update, saved, grad_out, grad_wx, parts, threads);
}
