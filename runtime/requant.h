/* SPDX-License-Identifier: MIT */
/*
 * The integer arithmetic of the executor: how real-valued multipliers become
 * fixed-point (m, S) pairs, how an int32 accumulator becomes an 8-bit output,
 * how biases become int32, how Add combines two quantized inputs, and how a
 * float input becomes u8.  format/SPEC.md "Execution semantics (normative)"
 * states the same rules in prose; every kernel (scalar oracle and SIMD) must
 * produce exactly what these functions produce.
 *
 * Everything here is deterministic on any IEEE-754 host: the derivations use
 * double arithmetic once, at load time; the per-element paths (nq_rq_apply,
 * nq_rq_output, nq_add_apply) are pure integer arithmetic.  The only per-
 * element float operations in the whole executor are nq_quantize_one (one
 * f32 multiply, then round-half-even), dequantization ((float)(u - z) * s)
 * and softmax, which is outside the bit-exact contract.
 */
#ifndef NQ_REQUANT_H
#define NQ_REQUANT_H

#include <stdbool.h>
#include <stdint.h>

/*
 * A non-negative real multiplier M as m * 2^-s.
 *
 * Derivation (nq_rq_derive), with f, e from frexp(M) (M = f * 2^e, f in
 * [0.5, 1)):
 *   - M <= 0, NaN:           m = 0, s = 31 (every output is the zero point)
 *   - m = round_half_away(f * 2^31); if m == 2^31 then m = 2^30, e += 1;
 *     s = 31 - e.  Then m is in [2^30, 2^31) and M = m * 2^-s up to a
 *     relative error of 2^-31.
 *   - s > 62 (M < 2^-32): m = (m + 2^(d-1)) >> d with d = s - 62 (m = 0
 *     when d > 31), s = 62.  m is then below 2^30 (possibly 0).
 *   - s < 1 (M >= 2^30, +inf): m = 2^31 - 1, s = 1.  Any non-zero input
 *     saturates an 8-bit output either way, so this is exact in effect.
 * So always 0 <= m < 2^31 and 1 <= s <= 62.
 *
 * Application (nq_rq_apply): ((int64)x * m + 2^(s-1)) >> s, an arithmetic
 * shift, i.e. x * M rounded half toward +infinity.  For |x| <= 2^31 the
 * product and the sum stay below 2^63.  M == 1 derives to m = 2^30, s = 30,
 * which is the identity for every x.
 */
struct nq_rq {
	int32_t m;
	int32_t s;
};

void nq_rq_derive(double M, struct nq_rq *out);

static inline int64_t nq_rq_apply(int32_t x, struct nq_rq rq)
{
	return ((int64_t)x * rq.m + ((int64_t)1 << (rq.s - 1))) >> rq.s;
}

/* z + rq(x), clamped to [lo, hi] (as max then min): the 8-bit result. */
static inline int32_t nq_rq_output(int32_t x, struct nq_rq rq, int32_t z, int32_t lo, int32_t hi)
{
	int64_t v = (int64_t)z + nq_rq_apply(x, rq);

	if (v < lo)
		v = lo;
	if (v > hi)
		v = hi;
	return (int32_t)v;
}

/*
 * Conv/Gemm multiplier for output channel c at level k:
 * M = (double)sx * (double)sw_k[c] / (double)sy.
 */
void nq_rq_conv(float sx, float sw, float sy, struct nq_rq *out);

/*
 * bias32 = clamp(round_half_away((double)bias / ((double)sx * (double)sw)),
 *                -limit, limit);   0 when sx * sw == 0.
 * limit = 2^31 - 1 - k * 255 * 128, so that the accumulator
 * bias32 + sum_j (u_j - zx) * q_j can never leave int32 in any summation
 * order (the loader refuses layers with k * 255 * 128 >= 2^30).
 */
int32_t nq_bias32(float bias, float sx, float sw, uint32_t k);

/* Largest k nq_bias32 accepts: k * 255 * 128 < 2^30. */
#define NQ_MAX_DOT 32896u

/*
 * Output range of a fused or standalone activation on an output with
 * (sy, zy) and storage range [qmin, qmax] (0..255 for u8, -128..127 s8):
 *   NONE: [qmin, qmax]
 *   RELU: [max(qmin, zy), qmax]
 *   CLIP: [max(qmin, q(min)), min(qmax, q(max))] with
 *         q(v) = zy + round_half_away((double)v / (double)sy), evaluated in
 *         double and clamped to [qmin, qmax] first (so +-inf bounds work).
 * When the Clip bounds leave lo > hi, every output is hi (clamp is max then
 * min).  act is enum nq_act; unknown values give -EINVAL.
 */
int nq_act_range(int act, float clip_min, float clip_max, float sy, int32_t zy,
		 int32_t qmin, int32_t qmax, int32_t *lo, int32_t *hi);

/*
 * Add of two 8-bit inputs (s1, z1), (s2, z2) into (s3, z3):
 *   d_i = u_i - z_i  (|d_i| <= 255)
 *   y = z3 + ((d1 * k1 + d2 * k2 + r) >> shift),  r = shift ? 2^(shift-1) : 0
 * in int32 with an arithmetic shift, then the activation clamp.
 * Derivation (nq_add_derive): k_i = round_half_away((double)s_i / (double)s3
 * * 2^shift) with the largest shift in 16, 15, ..., 0 such that
 * (k1 + k2) * 255 + r <= 2^31 - 1; if even shift 0 does not fit, each k_i is
 * capped at 4210752 (= floor((2^31 - 1) / 510)).
 */
struct nq_add_rq {
	int32_t k1, k2;
	int32_t shift;
};

void nq_add_derive(float s1, float s2, float s3, struct nq_add_rq *out);

static inline int32_t nq_add_apply(int32_t d1, int32_t d2, const struct nq_add_rq *a,
				   int32_t z3, int32_t lo, int32_t hi)
{
	int32_t r = a->shift ? (int32_t)1 << (a->shift - 1) : 0;
	int32_t v = z3 + ((d1 * a->k1 + d2 * a->k2 + r) >> a->shift);

	if (v < lo)
		v = lo;
	if (v > hi)
		v = hi;
	return v;
}

/*
 * QUANTIZE one value: inv = 1.0f / s computed once in f32 by the caller
 * (nq_quant_inv); t = x * inv in f32; t is clamped to [-1024, 1024] (NaN
 * becomes -1024, as cvtps2dq's "integer indefinite" would end up at qmin);
 * u = clamp(round_half_even(t) + z, qmin, qmax).
 */
static inline float nq_quant_inv(float s)
{
	return 1.0f / s;
}

int32_t nq_quantize_one(float x, float inv, int32_t z, int32_t qmin, int32_t qmax);

/* DEQUANTIZE one value: (float)(u - z) * s, one f32 rounding. */
static inline float nq_dequantize_one(int32_t u, float s, int32_t z)
{
	return (float)(u - z) * s;
}

#endif
