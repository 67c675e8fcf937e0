/* Integer arithmetic shared by every rnnpool kernel: fixed-point requantization, saturation and the
 * Cortex-M4 DSP instructions (SXTB16, SXTAB16, SMLAD, SMLABB, SMLATT, SMULWB, SMULWT, SMMLAR). On a core
 * with the DSP extension (__ARM_FEATURE_DSP) they are the ACLE intrinsics of arm_acle.h (or one inline
 * instruction where it lacks them); elsewhere (the host build) they are plain C with the same results bit
 * for bit, so one kernel source serves both. */
#ifndef RT_ARITH_H
#define RT_ARITH_H

#include <stdint.h>
#include <string.h>

/* The signed halves of a word of two int16. */
static inline int32_t rt_lo16(uint32_t x) { return (int16_t)(x & 0xFFFFu); }
static inline int32_t rt_hi16(uint32_t x) { return (int16_t)(x >> 16); }

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#include <arm_acle.h>
#define RT_SXTB16(x) ((uint32_t)__sxtb16((int32_t)(x)))
#define RT_SXTAB16(a, x) ((uint32_t)__sxtab16((int32_t)(a), (int32_t)(x)))
#define RT_SMLAD(x, y, acc) __smlad((int32_t)(x), (int32_t)(y), (acc))
#define RT_SMLABB(x, y, acc) __smlabb((int32_t)(x), (int32_t)(y), (acc))
#define RT_SMLATT(x, y, acc) __smlatt((int32_t)(x), (int32_t)(y), (acc))
/* (a * the low / high signed half of x) >> 16, from the 48-bit product (not in this arm_acle.h) */
static inline int32_t rt_smulwb(int32_t a, uint32_t x) {
    int32_t r;
    __asm__("smulwb %0, %1, %2" : "=r"(r) : "r"(a), "r"(x));
    return r;
}
static inline int32_t rt_smulwt(int32_t a, uint32_t x) {
    int32_t r;
    __asm__("smulwt %0, %1, %2" : "=r"(r) : "r"(a), "r"(x));
    return r;
}
#define RT_SMULWB(a, x) rt_smulwb((a), (x))
#define RT_SMULWT(a, x) rt_smulwt((a), (x))
/* clamp to the signed range of `bits` bits (SSAT) */
#define RT_SSAT(v, bits) __ssat((v), (bits))
#else
static inline uint32_t rt_pack16(int32_t lo, int32_t hi) { return ((uint32_t)hi << 16) | ((uint32_t)lo & 0xFFFFu); }
/* bytes 0 and 2, sign-extended to halfwords */
static inline uint32_t rt_sxtb16(uint32_t x) { return rt_pack16((int8_t)(x & 0xFFu), (int8_t)((x >> 16) & 0xFFu)); }
static inline uint32_t rt_sxtab16(uint32_t a, uint32_t x) {
    return rt_pack16(rt_lo16(a) + (int8_t)(x & 0xFFu), rt_hi16(a) + (int8_t)((x >> 16) & 0xFFu));
}
static inline int32_t rt_smlad(uint32_t x, uint32_t y, int32_t acc) {
    return (int32_t)((uint32_t)acc + (uint32_t)(rt_lo16(x) * rt_lo16(y)) + (uint32_t)(rt_hi16(x) * rt_hi16(y)));
}
#define RT_SXTB16(x) rt_sxtb16(x)
#define RT_SXTAB16(a, x) rt_sxtab16((a), (x))
#define RT_SMLAD(x, y, acc) rt_smlad((x), (y), (acc))
#define RT_SMLABB(x, y, acc) ((acc) + rt_lo16(x) * rt_lo16(y))
#define RT_SMLATT(x, y, acc) ((acc) + rt_hi16(x) * rt_hi16(y))
#define RT_SMULWB(a, x) ((int32_t)(((int64_t)(a) * rt_lo16(x)) >> 16))
#define RT_SMULWT(a, x) ((int32_t)(((int64_t)(a) * rt_hi16(x)) >> 16))
#define RT_SSAT(v, bits) rt_ssat((v), (bits))
static inline int32_t rt_ssat(int32_t v, int bits) {
    const int32_t hi = (1 << (bits - 1)) - 1;
    return v < -hi - 1 ? -hi - 1 : (v > hi ? hi : v);
}
#endif
/* SXTB16 of the word rotated right by 8 (bytes 1 and 3): one instruction on the M4. */
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
static inline uint32_t rt_sxtb16_ror8(uint32_t x) {
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
static inline uint32_t rt_sxtab16_ror8(uint32_t a, uint32_t x) {
    uint32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(x));
    return r;
}
#define RT_SXTB16_ROR8(x) rt_sxtb16_ror8(x)
#define RT_SXTAB16_ROR8(a, x) rt_sxtab16_ror8((a), (x))
#else
#define RT_SXTB16_ROR8(x) RT_SXTB16(RT_ROR8(x))
#define RT_SXTAB16_ROR8(a, x) RT_SXTAB16((a), RT_ROR8(x))
#endif
/* rotate right by 8: with SXTB16 it picks bytes 1 and 3 */
#define RT_ROR8(x) (((uint32_t)(x) >> 8) | ((uint32_t)(x) << 24))

/* A 32-bit word from any address (Cortex-M4 loads unaligned words; memcpy compiles to one LDR). */
static inline uint32_t rt_load32(const void *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Two int16 (lo, hi) as one word: the operand of SMLAD. */
static inline uint32_t rt_pair(int32_t lo, int32_t hi) { return ((uint32_t)hi << 16) | ((uint32_t)lo & 0xFFFFu); }

/* requantize(v, m, s) = (v * m + 2^(s-1)) >> s, exactly as rnnpool.deploy.fixedpoint.requantize.
 * For s > 32 it is ((v * m) >> (s - 1) + 1) >> 1 (the same value), which needs only the high word of
 * the 64-bit product: SMULL, two shifts and an add on the M4. */
static inline int32_t rt_rq(int32_t v, int32_t m, int32_t s) {
    if (s > 32) {
        const int32_t high = (int32_t)(((int64_t)v * m) >> 32);
        return ((high >> (s - 33)) + 1) >> 1;
    }
    return (int32_t)(((int64_t)v * m + ((int64_t)1 << (s - 1))) >> s);
}

/* rt_rq in the form of rt_chan: s = 33 + rsh - lsh (v << lsh must fit 32 bits). */
static inline int32_t rt_rq_chan(int32_t v, int32_t mult, int32_t rsh, int32_t lsh) {
    return ((((int32_t)(((int64_t)(v << lsh) * mult) >> 32)) >> rsh) + 1) >> 1;
}

/* zp + rt_rq(v, m, 32): the rounded high word of v * m, plus zp (SMMLAR on the M4: exact, as zp << 32
 * adds nothing below the high word). */
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
static inline int32_t rt_rq_high(int32_t v, int32_t m, int32_t zp) {
    int32_t r;
    __asm__("smmlar %0, %1, %2, %3" : "=r"(r) : "r"(v), "r"(m), "r"(zp));
    return r;
}
#else
static inline int32_t rt_rq_high(int32_t v, int32_t m, int32_t zp) {
    return (int32_t)(((int64_t)v * m + ((int64_t)zp << 32) + ((int64_t)1 << 31)) >> 32);
}
#endif

/* The same with a 64-bit value and multiplier (RNNPool output affine, residual adds). */
static inline int32_t rt_rq64(int64_t v, int32_t s) { return (int32_t)((v + ((int64_t)1 << (s - 1))) >> s); }

static inline int32_t rt_clamp(int32_t v, int32_t lo, int32_t hi) { return v < lo ? lo : (v > hi ? hi : v); }

#endif
