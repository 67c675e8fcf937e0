/* Building blocks the row kernels share (internal to the runtime). */
#ifndef RT_KERNELS_H
#define RT_KERNELS_H

#include "rnnpool_rt.h"

/* (x - zp) of kdim int8 (a multiple of 4) as int16 pairs in SXTB16 order: (x0, x2), (x1, x3), ... */
void rt_unpack(const int8_t *x, int kdim, int32_t zp, uint32_t *out);
/* The same for one pixel of cin channels, padded with zp to kdim. */
void rt_unpack_pixel(const int8_t *x, int cin, int kdim, int32_t zp, uint32_t *out);
/* out_n = requantized (bias + W x_n) for one or two (x1 may be NULL) unpacked inputs. */
void rt_dot_requant(const rt_conv *p, const uint32_t *x0, const uint32_t *x1, int8_t *out0, int8_t *out1);
/* One depthwise output pixel; taps[t] is the input pixel of tap t or NULL (padding). */
void rt_depthwise_pixel(const rt_conv *p, const int8_t *const *taps, int8_t *out);

/* An L2-normalised pixel (cin a multiple of 4) as unpacked int16 pairs (SXTB16 order). */
void rt_l2norm_unpacked(const rt_l2norm *p, const int8_t *in, uint32_t *out);

#endif
