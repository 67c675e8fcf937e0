/* The FastGRNN recurrence over many sequences, forward and backward, for one floating-point type, in plain
 * scalar C: the float64 path, and float32 cells wider than the vector path of fastgrnn.c takes.
 *
 * Included by fastgrnn.c once per type with REAL (float or double), SUFFIX (f32 / f64) and EXP (the exp to
 * use) defined. One sequence runs at a time per thread, its state in a small local array (U is passed both
 * as rows and transposed so every inner loop reads contiguously; here the padded width is H itself). Its
 * speed is not the point (float32 cells up to 64 units take the vector path of fastgrnn.c), so the bodies
 * take the hidden size and nonlinearities at run time.
 *
 * A step, from the state h and the projected input x (W x + b_z, read from a strided grid):
 *   pre = x + U h;  z = gate(pre);  c = update(pre + bd)  (bd = b_h - b_z)
 *   h'  = (zs (1 - z) + ns) c + z h                        (zs = sigmoid(zeta), ns = sigmoid(nu))
 *
 * For the backward the forward saves each step's pre-activation, saved[(s * T + t) * H + i]: the backward then
 * needs no U h (H^2 multiply-adds a step); it replays the steps forward from them (z, c and the states, into
 * scratch) and then runs backwards through them.
 */

#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SUFFIX)

static inline __attribute__((always_inline)) REAL FN(sigmoid)(REAL x) { return (REAL)1 / ((REAL)1 + EXP(-x)); }

static inline __attribute__((always_inline)) REAL FN(act)(REAL x, int kind) {
    switch (kind) {
    case ACT_SIGMOID: return FN(sigmoid)(x);
    case ACT_TANH: return (REAL)2 * FN(sigmoid)((REAL)2 * x) - (REAL)1;
    case ACT_QSIGMOID: { REAL y = (x + (REAL)1) * (REAL)0.5; return y < (REAL)0 ? (REAL)0 : (y > (REAL)1 ? (REAL)1 : y); }
    case ACT_QTANH: return x < (REAL)-1 ? (REAL)-1 : (x > (REAL)1 ? (REAL)1 : x);
    case ACT_RELU: return x > (REAL)0 ? x : (REAL)0;
    default: return x;
    }
}

/* d act / d x from the output y alone (the backward keeps z and c from its replay). torch's
 * conventions: clamp passes the gradient only strictly inside its interval, relu only above 0; y is strictly
 * inside the clamp's interval (above 0) exactly where its input is. */
static inline __attribute__((always_inline)) REAL FN(act_grad)(REAL y, int kind) {
    switch (kind) {
    case ACT_SIGMOID: return y * ((REAL)1 - y);
    case ACT_TANH: return (REAL)1 - y * y;
    case ACT_QSIGMOID: return (y > (REAL)0 && y < (REAL)1) ? (REAL)0.5 : (REAL)0;
    case ACT_QTANH: return (y > (REAL)-1 && y < (REAL)1) ? (REAL)1 : (REAL)0;
    case ACT_RELU: return y > (REAL)0 ? (REAL)1 : (REAL)0;
    default: return (REAL)1;
    }
}

/* h' from the gate z, the candidate c and the state h (the forward, and the backward's replay of it) */
static inline __attribute__((always_inline)) REAL FN(next_state)(REAL z, REAL c, REAL h, REAL zeta, REAL nu) {
    return (zeta * ((REAL)1 - z) + nu) * c + z * h;
}

typedef struct {
    const REAL *wx;          /* element (t, s, g) at wx[t * st + base(s) + g * sg] */
    int64_t T, N, L, M;      /* steps; sequences s = (n * L + l) * M + m */
    int64_t st, sn, sl, sm, sg;
    int64_t width;           /* W >= H: the padded length of offset, bias_diff and of every row of u and ut */
    const REAL *offset;      /* (W,) added to every x (b_z), zeros past H */
    const REAL *u;           /* (H, W) row-major, zeros past column H */
    const REAL *ut;          /* U transposed, (H, W) row-major, zeros past column H */
    const REAL *bias_diff;   /* (W,) b_h - b_z, zeros past H */
    REAL zeta, nu;           /* after their sigmoid */
} FN(scan_args);

/* The first element of consecutive sequences s = (n * L + l) * M + m: one division to start, then steps. */
typedef struct {
    const FN(scan_args) *a;
    int64_t n, l, m;
} FN(walk);

static inline FN(walk) FN(walk_start)(const FN(scan_args) *a, int64_t s) {
    FN(walk) w = {a, s / (a->M * a->L), (s / a->M) % a->L, s % a->M};
    return w;
}

static inline __attribute__((always_inline)) const REAL *FN(walk_next)(FN(walk) *w) {
    const FN(scan_args) *a = w->a;
    const REAL *base = a->wx + w->n * a->sn + w->l * a->sl + w->m * a->sm;
    if (++w->m == a->M) {
        w->m = 0;
        if (++w->l == a->L) {
            w->l = 0;
            w->n++;
        }
    }
    return base;
}

/* Forward of sequences [begin, end): final states into out (end - begin, H), sequence begin first; with
 * saved != NULL also every step's pre-activation (see above). */
static inline __attribute__((always_inline)) void FN(forward_body)(const FN(scan_args) *a, int64_t begin, int64_t end,
                                                                  REAL *out, REAL *saved, const int H, const int gate,
                                                                  const int update, const int64_t sg) {
    REAL h[H], pre[H];
    const REAL zeta = a->zeta, nu = a->nu;
    FN(walk) walk = FN(walk_start)(a, begin);
    for (int64_t s = begin; s < end; s++) {
        const REAL *x = FN(walk_next)(&walk);
        for (int i = 0; i < H; i++) h[i] = (REAL)0;
        for (int64_t t = 0; t < a->T; t++, x += a->st) {
            for (int i = 0; i < H; i++) pre[i] = x[i * sg] + a->offset[i];
            for (int j = 0; j < H; j++) {
                const REAL hj = h[j];
                const REAL *col = a->ut + (int64_t)j * a->width;
                for (int i = 0; i < H; i++) pre[i] += col[i] * hj;
            }
            if (saved) memcpy(saved + (s * a->T + t) * H, pre, sizeof(REAL) * H);
            for (int i = 0; i < H; i++) {
                const REAL z = FN(act)(pre[i], gate);
                const REAL c = FN(act)(pre[i] + a->bias_diff[i], update);
                h[i] = FN(next_state)(z, c, h[i], zeta, nu);
            }
        }
        memcpy(out + (s - begin) * H, h, sizeof(REAL) * H);
    }
}

/* Where an inference scan puts its results (fastgrnn_infer): for sequence s = (n * L + l) * M + m, its final
 * state h, or P h with a projection, goes to out[n * on + l * ol + m * om + o * oo] for o < O. That is how
 * RNNPool's first RNN hands its summaries to the second one already through W2, and how the second one writes
 * straight into the layer's (N, 4 h2, H', W') output. */
typedef struct {
    REAL *out;
    int64_t on, ol, om, oo;
    const REAL *proj; /* P transposed, (H, O), rows ps apart; NULL: O = H and the state itself is written */
    int64_t O, ps;
} FN(epilogue);

/* The epilogue of sequences [begin, end), whose final states are finals (end - begin, H). */
static void FN(write_finals)(const FN(scan_args) *a, const FN(epilogue) *e, int64_t begin, int64_t end, const REAL *finals,
                             const int H) {
    REAL y[MAX_HIDDEN];
    int64_t n = begin / (a->M * a->L), l = (begin / a->M) % a->L, m = begin % a->M;
    const int64_t O = e->proj ? e->O : H;
    for (int64_t s = begin; s < end; s++) {
        const REAL *h = finals + (s - begin) * H;
        REAL *dst = e->out + n * e->on + l * e->ol + m * e->om;
        if (e->proj) {
            for (int64_t o = 0; o < O; o++) y[o] = (REAL)0;
            for (int j = 0; j < H; j++) {
                const REAL hj = h[j];
                const REAL *row = e->proj + (int64_t)j * e->ps;
                for (int64_t o = 0; o < O; o++) y[o] += row[o] * hj;
            }
            h = y;
        }
        for (int64_t o = 0; o < O; o++) dst[o * e->oo] = h[o];
        if (++m == a->M) {
            m = 0;
            if (++l == a->L) {
                l = 0;
                n++;
            }
        }
    }
}

/* Backward of sequences [begin, end) from the saved pre-activations: d pre of every step into grad_wx (T, S, H)
 * (= d x), and this thread's sums of d U (H x W), d bias_diff (W), d offset (W), d zeta, d nu into part. Each
 * sequence's steps are first replayed into scratch (T x 3 H: the state before the step, z, c). */
static inline __attribute__((always_inline)) void FN(backward_body)(const FN(scan_args) *a, int64_t begin, int64_t end,
                                                                   const REAL *saved, const REAL *grad_out, REAL *grad_wx,
                                                                   REAL *scratch, REAL *part, const int H, const int gate,
                                                                   const int update) {
    REAL state[H], dh[H], dprev[H], dpre[H];
    const int64_t W = a->width, T = a->T;
    REAL *du = part, *dbias = part + H * W, *doffset = part + H * W + W;
    REAL dzeta = 0, dnu = 0;
    const REAL zeta = a->zeta, nu = a->nu;
    const int64_t S = a->N * a->L * a->M;
    for (int64_t s = begin; s < end; s++) {
        for (int i = 0; i < H; i++) state[i] = (REAL)0;
        for (int64_t t = 0; t < T; t++) {
            const REAL *pre = saved + (s * T + t) * H;
            REAL *step = scratch + t * 3 * H;
            memcpy(step, state, sizeof(REAL) * H);
            for (int i = 0; i < H; i++) {
                const REAL z = FN(act)(pre[i], gate), c = FN(act)(pre[i] + a->bias_diff[i], update);
                step[H + i] = z;
                step[2 * H + i] = c;
                state[i] = FN(next_state)(z, c, state[i], zeta, nu);
            }
        }
        memcpy(dh, grad_out + s * H, sizeof(REAL) * H);
        for (int64_t t = T - 1; t >= 0; t--) {
            const REAL *h = scratch + t * 3 * H, *zs = h + H, *cs = h + 2 * H;
            for (int i = 0; i < H; i++) {
                const REAL z = zs[i], c = cs[i];
                const REAL coef = zeta * ((REAL)1 - z) + nu;
                const REAL dc = dh[i] * coef * FN(act_grad)(c, update);
                const REAL dz = dh[i] * (h[i] - zeta * c) * FN(act_grad)(z, gate);
                dpre[i] = dc + dz;
                dbias[i] += dc;
                doffset[i] += dpre[i];
                dzeta += dh[i] * ((REAL)1 - z) * c;
                dnu += dh[i] * c;
                dprev[i] = dh[i] * z;
            }
            memcpy(grad_wx + (t * S + s) * H, dpre, sizeof(REAL) * H);
            for (int i = 0; i < H; i++) {  /* dh_prev += U^T dpre; dU += dpre h^T */
                const REAL di = dpre[i];
                const REAL *row = a->u + (int64_t)i * W;
                for (int j = 0; j < H; j++) dprev[j] += row[j] * di;
                REAL *du_row = du + (int64_t)i * W;
                for (int j = 0; j < H; j++) du_row[j] += di * h[j];
            }
            memcpy(dh, dprev, sizeof(REAL) * H);
        }
    }
    part[H * W + 2 * W] += dzeta;
    part[H * W + 2 * W + 1] += dnu;
}

/* Split [0, S) over the threads in contiguous blocks. */
static inline void FN(split)(int64_t S, int64_t *begin, int64_t *end) {
    int threads = omp_get_num_threads(), me = omp_get_thread_num();
    int64_t per = S / threads, extra = S % threads;
    *begin = me * per + (me < extra ? me : extra);
    *end = *begin + per + (me < extra ? 1 : 0);
}

static int FN(scalar_forward)(const FN(scan_args) *a, int H, int gate, int update, REAL *out, REAL *saved, int threads) {
    const int64_t S = a->N * a->L * a->M;
    if (H <= 0 || H > MAX_HIDDEN) return 1;
#pragma omp parallel num_threads(threads)
    {
        int64_t b, e;
        FN(split)(S, &b, &e);
        FN(forward_body)(a, b, e, out + b * H, saved, H, gate, update, a->sg);
    }
    return 0;
}

/* parts: (threads, H * W + 2 * W + 2) zeroed by the caller; the caller sums them. */
static int FN(scalar_backward)(const FN(scan_args) *a, int H, int gate, int update, const REAL *saved, const REAL *grad_out,
                               REAL *grad_wx, REAL *parts, int threads) {
    const int64_t S = a->N * a->L * a->M;
    int failed = 0;
    if (H <= 0 || H > MAX_HIDDEN) return 1;
#pragma omp parallel num_threads(threads)
    {
        int64_t b, e;
        FN(split)(S, &b, &e);
        REAL *p = parts + (int64_t)omp_get_thread_num() * (H * a->width + 2 * a->width + 2);
        REAL *scratch = (REAL *)malloc(sizeof(REAL) * (a->T + 1) * 3 * H);
        if (!scratch) {
#pragma omp atomic write
            failed = 2;
        } else {
            FN(backward_body)(a, b, e, saved, grad_out, grad_wx, scratch, p, H, gate, update);
        }
        free(scratch);
    }
    return failed;
}

/* grad_base[the grid's element (t, s, g)] += grad_wx[t, s, g]: the gradient of the tensor the grid is a
 * (possibly overlapping) strided view of. a->wx points into grad_base with the grid's geometry. With
 * by_image, images cover disjoint ranges and are spread over the threads; else one thread adds all. */
int FN(fastgrnn_scatter)(const FN(scan_args) *a, int H, const REAL *grad_wx, int by_image, int threads) {
    const int64_t S = a->N * a->L * a->M, per_image = a->L * a->M;
    REAL *base = (REAL *)a->wx;
#pragma omp parallel for num_threads(by_image ? threads : 1) schedule(static)
    for (int64_t n = 0; n < a->N; n++) {
        for (int64_t l = 0; l < a->L; l++) {
            for (int64_t m = 0; m < a->M; m++) {
                const int64_t s = n * per_image + l * a->M + m;
                REAL *dst = base + n * a->sn + l * a->sl + m * a->sm;
                for (int64_t t = 0; t < a->T; t++) {
                    const REAL *src = grad_wx + (t * S + s) * H;
                    REAL *d = dst + t * a->st;
                    for (int g = 0; g < H; g++) d[g * a->sg] += src[g];
                }
            }
        }
    }
    return 0;
}

/* count inference scans of one cell with the scalar body (no states saved): scan i's final states into finals
 * (scratch of the largest scan's S x H, shared by the scans one after the other), then through its epilogue e[i]. */
static int FN(scalar_infer)(const FN(scan_args) *a, int count, int H, int gate, int update, const FN(epilogue) *e, REAL *finals,
                            int threads) {
    for (int i = 0; i < count; i++)
        if (H <= 0 || H > MAX_HIDDEN || (e[i].proj && (e[i].O <= 0 || e[i].O > MAX_HIDDEN))) return 1;
#pragma omp parallel num_threads(threads)
    for (int i = 0; i < count; i++) {
        if (i > 0) {
#pragma omp barrier
        } /* (the scans share finals) */
        int64_t b, end;
        FN(split)(a[i].N * a[i].L * a[i].M, &b, &end);
        FN(forward_body)(&a[i], b, end, finals + b * H, NULL, H, gate, update, a[i].sg);
        FN(write_finals)(&a[i], &e[i], b, end, finals + b * H, H);
    }
    return 0;
}

#undef FN
#undef CAT
#undef CAT_
