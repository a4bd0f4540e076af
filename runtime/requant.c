// SPDX-License-Identifier: MIT
/*
 * Derivations of the fixed-point constants of the executor (runtime/requant.h
 * has the rules; format/SPEC.md "Execution semantics" the normative prose).
 * Run once per layer and level at load time, never per element.
 */
#include <errno.h>
#include <math.h>

#include "nq_error.h"
#include "nq_ops.h"
#include "requant.h"

/* round half away from zero; C's round() is exactly that. */
static double round_away(double v)
{
	return round(v);
}

void nq_rq_derive(double M, struct nq_rq *out)
{
	int64_t m;
	int e, s;
	double f;

	if (!(M > 0)) {
		out->m = 0;
		out->s = 31;
		return;
	}
	if (isinf(M)) {
		out->m = INT32_MAX;
		out->s = 1;
		return;
	}
	f = frexp(M, &e);
	m = (int64_t)round_away(ldexp(f, 31));
	if (m == (int64_t)1 << 31) {
		m >>= 1;
		e++;
	}
	s = 31 - e;
	if (s < 1) {
		out->m = INT32_MAX;
		out->s = 1;
		return;
	}
	if (s > 62) {
		int d = s - 62;

		m = d > 31 ? 0 : (m + ((int64_t)1 << (d - 1))) >> d;
		s = 62;
	}
	out->m = (int32_t)m;
	out->s = s;
}

void nq_rq_conv(float sx, float sw, float sy, struct nq_rq *out)
{
	nq_rq_derive((double)sx * (double)sw / (double)sy, out);
}

int32_t nq_bias32(float bias, float sx, float sw, uint32_t k)
{
	double d = (double)sx * (double)sw, v, limit;

	if (d == 0 || k > NQ_MAX_DOT)
		return 0;
	limit = 2147483647.0 - (double)k * 255.0 * 128.0;
	v = round_away((double)bias / d);
	if (v > limit)
		v = limit;
	if (v < -limit)
		v = -limit;
	return (int32_t)v;
}

static int32_t quant_bound(double v, float sy, int32_t zy, int32_t qmin, int32_t qmax)
{
	double q = round_away(v / (double)sy);

	/* Clamp in double first: q may be +-inf or far outside int32. */
	q += zy;
	if (!(q >= qmin))
		return qmin;
	if (q > qmax)
		return qmax;
	return (int32_t)q;
}

int nq_act_range(int act, float clip_min, float clip_max, float sy, int32_t zy,
		 int32_t qmin, int32_t qmax, int32_t *lo, int32_t *hi)
{
	int32_t l = qmin, h = qmax, v;

	switch (act) {
	case NQ_ACT_NONE:
		break;
	case NQ_ACT_RELU:
		if (zy > l)
			l = zy;
		break;
	case NQ_ACT_CLIP:
		v = quant_bound(clip_min, sy, zy, qmin, qmax);
		if (v > l)
			l = v;
		v = quant_bound(clip_max, sy, zy, qmin, qmax);
		if (v < h)
			h = v;
		break;
	default:
		return nq_fail(-EINVAL, "unknown fused activation %d", act);
	}
	*lo = l;
	*hi = h;
	return 0;
}

#define ADD_K_CAP 4210752	/* floor((2^31 - 1) / 510) */

void nq_add_derive(float s1, float s2, float s3, struct nq_add_rq *out)
{
	double r1 = (double)s1 / (double)s3, r2 = (double)s2 / (double)s3;

	for (int shift = 16; shift >= 0; shift--) {
		double k1 = round_away(ldexp(r1, shift)), k2 = round_away(ldexp(r2, shift));
		double r = shift ? ldexp(1.0, shift - 1) : 0;

		if ((k1 + k2) * 255.0 + r <= 2147483647.0) {
			out->k1 = (int32_t)k1;
			out->k2 = (int32_t)k2;
			out->shift = shift;
			return;
		}
	}
	out->k1 = r1 >= ADD_K_CAP ? ADD_K_CAP : (int32_t)round_away(r1);
	out->k2 = r2 >= ADD_K_CAP ? ADD_K_CAP : (int32_t)round_away(r2);
	out->shift = 0;
}

int32_t nq_quantize_one(float x, float inv, int32_t z, int32_t qmin, int32_t qmax)
{
	float t = x * inv;
	int32_t v;

	if (!(t >= -1024.0f))
		t = -1024.0f;
	if (t > 1024.0f)
		t = 1024.0f;
	/* nearbyintf rounds half to even in the default rounding mode, which
	 * the library never changes: the same result as cvtps2dq / fcvtns. */
	v = (int32_t)nearbyintf(t) + z;
	if (v < qmin)
		v = qmin;
	if (v > qmax)
		v = qmax;
	return v;
}
