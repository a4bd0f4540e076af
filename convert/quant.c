// SPDX-License-Identifier: MIT
/*
 * Per-output-channel symmetric weight quantization: scale choice, rounding
 * of the INT-n integers, and the error figures the converter prints.
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "nq_error.h"
#include "quant.h"

/* Clip-ratio grids of the MSE searches (fractions of max|w| / qmax). */
#define MSE_ALPHA_MIN 0.30
#define NEST_ALPHA_MAX 1.25
#define ALPHA_STEP 0.01

void nq_quant_opts_init(struct nq_quant_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->bits = 8;
	o->scale = NQ_WSCALE_ABSMAX;
	o->round.method = NQ_ROUND_NEAREST;
	o->round.squant_kernel = 1;
	o->round.squant_channel = 1;
	o->nlevels = 1;
	o->levels[0] = 8;
}

void nq_nest_opts_init(struct nq_nest_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->nlevels = 2;
	o->levels[0] = 6;
	o->levels[1] = 8;
	o->round.method = NQ_ROUND_SQUANT;
	o->round.squant_kernel = 1;
	o->round.squant_channel = 1;
	o->residual = NQ_RESIDUAL_EXACT;
	o->lscale = NQ_LSCALE_SHIFT;
	o->target = NQ_TARGET_FLOAT;
}

int nq_levels_parse(const char *s, unsigned levels[NQ_MAX_LEVELS], unsigned *nlevels)
{
	unsigned v[NQ_MAX_LEVELS], n = 0, i, j;
	const char *p = s;

	if (!s || !levels || !nlevels)
		return nq_fail(-EINVAL, "levels: missing argument");
	for (;;) {
		char *end;
		long b = strtol(p, &end, 10);

		if (end == p || b < NQ_QUANT_MIN_BITS || b > NQ_QUANT_MAX_BITS)
			return nq_fail(-EINVAL, "levels '%s': each level is %d..%d bits",
				       s, NQ_QUANT_MIN_BITS, NQ_QUANT_MAX_BITS);
		if (n == NQ_MAX_LEVELS)
			return nq_fail(-EINVAL, "levels '%s': at most %d levels", s, NQ_MAX_LEVELS);
		v[n++] = (unsigned)b;
		if (*end == '\0')
			break;
		if (*end != ',')
			return nq_fail(-EINVAL, "levels '%s': expected ',' at '%s'", s, end);
		p = end + 1;
	}
	for (i = 1; i < n; i++) {
		unsigned x = v[i];

		for (j = i; j > 0 && v[j - 1] > x; j--)
			v[j] = v[j - 1];
		v[j] = x;
	}
	for (i = 1; i < n; i++)
		if (v[i] == v[i - 1])
			return nq_fail(-EINVAL, "levels '%s': %u bits given twice", s, v[i]);
	memcpy(levels, v, sizeof(*v) * n);
	*nlevels = n;
	return 0;
}

static const char *const round_names[] = {
	[NQ_ROUND_NEAREST] = "nearest",
	[NQ_ROUND_TRUNCATE] = "truncate",
	[NQ_ROUND_SQUANT] = "squant",
	[NQ_ROUND_ADAROUND] = "adaround",
};

static const char *const wscale_names[] = {
	[NQ_WSCALE_ABSMAX] = "absmax",
	[NQ_WSCALE_MSE] = "mse",
	[NQ_WSCALE_NEST] = "nest",
	[NQ_WSCALE_NEST_MSE] = "nest-mse",
};

const char *nq_round_name(enum nq_round r)
{
	return (unsigned)r < sizeof(round_names) / sizeof(*round_names) ? round_names[r] : "?";
}

int nq_round_parse(const char *s, enum nq_round *r)
{
	unsigned i;

	for (i = 0; s && i < sizeof(round_names) / sizeof(*round_names); i++)
		if (!strcmp(s, round_names[i])) {
			*r = (enum nq_round)i;
			return 0;
		}
	return nq_fail(-EINVAL, "rounding '%s': expected nearest, truncate, squant or adaround",
		       s ? s : "");
}

const char *nq_wscale_name(enum nq_wscale s)
{
	return (unsigned)s < sizeof(wscale_names) / sizeof(*wscale_names) ? wscale_names[s] : "?";
}

int nq_wscale_parse(const char *s, enum nq_wscale *out)
{
	unsigned i;

	if (s && !strcmp(s, "minmax")) {
		*out = NQ_WSCALE_ABSMAX;
		return 0;
	}
	for (i = 0; s && i < sizeof(wscale_names) / sizeof(*wscale_names); i++)
		if (!strcmp(s, wscale_names[i])) {
			*out = (enum nq_wscale)i;
			return 0;
		}
	return nq_fail(-EINVAL, "weight scale '%s': expected absmax, mse, nest or nest-mse",
		       s ? s : "");
}

static int check_shape(const struct nq_wshape *sh)
{
	if (!sh || !sh->oc || !sh->k)
		return nq_fail(-EINVAL, "weight shape: oc and k must be > 0");
	if (!sh->kernel || sh->k % sh->kernel)
		return nq_fail(-EINVAL, "weight shape: kernel %u does not divide k %u",
			       sh->kernel, sh->k);
	if (!sh->groups || sh->oc % sh->groups)
		return nq_fail(-EINVAL, "weight shape: groups %u does not divide oc %u",
			       sh->groups, sh->oc);
	return 0;
}

static int check_bits(unsigned bits)
{
	if (bits < NQ_QUANT_MIN_BITS || bits > NQ_QUANT_MAX_BITS)
		return nq_fail(-EINVAL, "weight bits %u outside %d..%d", bits,
			       NQ_QUANT_MIN_BITS, NQ_QUANT_MAX_BITS);
	return 0;
}

static int32_t qmax_of(unsigned bits)
{
	return (1 << (bits - 1)) - 1;
}

/* Squared error of nearest INT-n rounding of one row at scale s. */
static double row_sse(const float *w, uint32_t k, float s, int32_t qmax)
{
	double sse = 0;
	uint32_t i;

	for (i = 0; i < k; i++) {
		float v = nq_round_half_away(w[i] / s);
		double d;

		if (v > qmax)
			v = (float)qmax;
		if (v < -qmax)
			v = (float)-qmax;
		d = (double)w[i] - (double)s * v;
		sse += d * d;
	}
	return sse;
}

/*
 * Per-level squared errors of one row at full-bit scale s, with nearest
 * nesting on the integers (the cheap stand-in for the real rounding used
 * inside the nesting-aware scale search).
 */
static void row_nest_sse(const float *w, uint32_t k, float s, const unsigned *lv, unsigned nl,
			 double *sse)
{
	unsigned n = lv[nl - 1], j;
	int32_t qmax = qmax_of(n);
	uint32_t i;

	for (j = 0; j < nl; j++)
		sse[j] = 0;
	for (i = 0; i < k; i++) {
		float v = nq_round_half_away(w[i] / s);
		int32_t q;

		q = v > qmax ? qmax : v < -qmax ? -qmax : (int32_t)v;
		for (j = nl; j-- > 0;) {
			double d;

			if (j < nl - 1) {
				unsigned l = lv[j + 1] - lv[j];
				int32_t hi = (1 << (lv[j] - 1)) - 1;
				int32_t r = (int32_t)nq_round_half_away(ldexpf((float)q, -(int)l));

				q = r > hi ? hi : r;
			}
			d = (double)w[i] - ldexp((double)s, (int)(n - lv[j])) * q;
			sse[j] += d * d;
		}
	}
}

static float scale_nest(const float *w, uint32_t k, unsigned n, unsigned b0)
{
	float pos = 0, neg = 0, sp, sn;
	uint32_t i;

	for (i = 0; i < k; i++) {
		if (w[i] > pos)
			pos = w[i];
		if (-w[i] > neg)
			neg = -w[i];
	}
	/* The lowest level's positive end is (2^(b0-1)-1) 2^L; its negative end
	 * -2^(b0-1) 2^L lies at or beyond -(2^(n-1)-1), so only INT-n limits it. */
	sp = pos / (float)(qmax_of(b0) << (n - b0));
	sn = neg / (float)qmax_of(n);
	return sp > sn ? sp : sn;
}

int nq_quant_scale(const float *w, const struct nq_wshape *sh, const struct nq_quant_opts *o,
		   float *scale)
{
	unsigned n, b0, nl = 1;
	unsigned lv[NQ_MAX_LEVELS];
	uint32_t c, i;
	int err;

	if (!w || !o || !scale)
		return nq_fail(-EINVAL, "quant scale: missing argument");
	err = check_shape(sh);
	if (!err)
		err = check_bits(o->bits);
	if (err)
		return err;
	n = o->bits;
	lv[0] = n;
	if (o->scale == NQ_WSCALE_NEST || o->scale == NQ_WSCALE_NEST_MSE) {
		if (o->nlevels < 1 || o->nlevels > NQ_MAX_LEVELS || o->levels[o->nlevels - 1] != n)
			return nq_fail(-EINVAL, "quant scale: nesting-aware scale needs levels ending at %u bits",
				       n);
		for (i = 0; i < o->nlevels; i++) {
			if (check_bits(o->levels[i]))
				return -EINVAL;
			if (i && o->levels[i] <= o->levels[i - 1])
				return nq_fail(-EINVAL, "quant scale: levels must ascend");
			lv[i] = o->levels[i];
		}
		nl = o->nlevels;
	}
	b0 = lv[0];

	for (c = 0; c < sh->oc; c++) {
		const float *row = w + (size_t)c * sh->k;
		float amax = 0, s;

		for (i = 0; i < sh->k; i++) {
			if (!isfinite(row[i]))
				return nq_fail(-EINVAL, "quant scale: weight [%u][%u] is not finite", c, i);
			if (fabsf(row[i]) > amax)
				amax = fabsf(row[i]);
		}
		if (amax == 0) {
			scale[c] = 1.0f;
			continue;
		}
		s = amax / (float)qmax_of(n);

		switch (o->scale) {
		case NQ_WSCALE_ABSMAX:
			break;
		case NQ_WSCALE_MSE: {
			double best = row_sse(row, sh->k, s, qmax_of(n));
			float best_s = s;
			double a;

			for (a = 1.0 - ALPHA_STEP; a >= MSE_ALPHA_MIN - 1e-9; a -= ALPHA_STEP) {
				float cand = (float)(a * s);
				double e = row_sse(row, sh->k, cand, qmax_of(n));

				if (e < best) {
					best = e;
					best_s = cand;
				}
			}
			s = best_s;
			break;
		}
		case NQ_WSCALE_NEST:
			if (nl > 1)
				s = scale_nest(row, sh->k, n, b0);
			break;
		case NQ_WSCALE_NEST_MSE: {
			double ref[NQ_MAX_LEVELS], cur[NQ_MAX_LEVELS], best = 0;
			float best_s = s;
			double a;
			unsigned j;
			bool first = true;

			row_nest_sse(row, sh->k, s, lv, nl, ref);
			for (a = MSE_ALPHA_MIN; a <= NEST_ALPHA_MAX + 1e-9; a += ALPHA_STEP) {
				float cand = (float)(a * s);
				double obj = 0;

				row_nest_sse(row, sh->k, cand, lv, nl, cur);
				for (j = 0; j < nl; j++)
					obj += cur[j] / (ref[j] + 1e-30);
				if (first || obj < best) {
					best = obj;
					best_s = cand;
					first = false;
				}
			}
			s = best_s;
			break;
		}
		default:
			return nq_fail(-EINVAL, "quant scale: unknown method %d", (int)o->scale);
		}
		scale[c] = s;
	}
	return 0;
}

int nq_quant_round(const float *w, const struct nq_wshape *sh, const float *scale,
		   const struct nq_gram *gram, const struct nq_quant_opts *o, int8_t *q)
{
	size_t cnt, i;
	int32_t qmax, *lo = NULL, *out = NULL;
	uint8_t *up = NULL;
	float *t = NULL;
	struct nq_bracket br;
	uint32_t c;
	int err;

	if (!w || !scale || !o || !q)
		return nq_fail(-EINVAL, "quant round: missing argument");
	err = check_shape(sh);
	if (!err)
		err = check_bits(o->bits);
	if (err)
		return err;
	qmax = qmax_of(o->bits);
	cnt = (size_t)sh->oc * sh->k;
	t = malloc(cnt * sizeof(*t));
	lo = malloc(cnt * sizeof(*lo));
	out = malloc(cnt * sizeof(*out));
	up = malloc(cnt);
	if (!t || !lo || !out || !up) {
		err = nq_fail(-ENOMEM, "quant round: out of memory for %zu weights", cnt);
		goto out_free;
	}
	for (c = 0; c < sh->oc; c++) {
		if (!(scale[c] > 0) || !isfinite(scale[c])) {
			err = nq_fail(-EINVAL, "quant round: scale of channel %u is %g", c, scale[c]);
			goto out_free;
		}
		for (i = (size_t)c * sh->k; i < (size_t)(c + 1) * sh->k; i++) {
			float v = w[i] / scale[c], f = floorf(v);
			int32_t l = f < (float)-qmax ? -qmax : f > (float)qmax ? qmax : (int32_t)f;

			t[i] = v;
			lo[i] = l;
			up[i] = v > (float)l && l + 1 <= qmax;
		}
	}
	br = (struct nq_bracket){ .t = t, .lo = lo, .up = up };
	err = nq_round_bracket(&o->round, sh, &br, gram, out);
	if (err)
		goto out_free;
	for (i = 0; i < cnt; i++)
		q[i] = (int8_t)out[i];
out_free:
	free(t);
	free(lo);
	free(out);
	free(up);
	return err;
}

int nq_quant_layer(const float *w, const struct nq_wshape *sh, const struct nq_gram *gram,
		   const struct nq_quant_opts *qo, const struct nq_nest_opts *no,
		   struct nq_nested *out)
{
	struct nq_quant_opts o;
	float *scale = NULL;
	int8_t *q = NULL;
	int err;

	if (!w || !qo || !no || !out)
		return nq_fail(-EINVAL, "quant layer: missing argument");
	err = check_shape(sh);
	if (err)
		return err;
	if (no->nlevels < 1 || no->nlevels > NQ_MAX_LEVELS || no->levels[no->nlevels - 1] != qo->bits)
		return nq_fail(-EINVAL, "quant layer: top level must be the %u-bit model", qo->bits);
	o = *qo;
	o.nlevels = no->nlevels;
	memcpy(o.levels, no->levels, sizeof(o.levels));
	scale = malloc(sizeof(*scale) * sh->oc);
	q = malloc((size_t)sh->oc * sh->k);
	if (!scale || !q) {
		err = nq_fail(-ENOMEM, "quant layer: out of memory for %u x %u", sh->oc, sh->k);
		goto out_free;
	}
	err = nq_quant_scale(w, sh, &o, scale);
	if (!err)
		err = nq_quant_round(w, sh, scale, gram, &o, q);
	if (!err)
		err = nq_nest(w, sh, q, scale, gram, no, out);
out_free:
	free(scale);
	free(q);
	return err;
}

int nq_weight_error(const float *w, const struct nq_wshape *sh, const int8_t *q,
		    const float *scale, struct nq_werr *e)
{
	double sse = 0, sig = 0, clip = 0;
	uint32_t c, i, nclip = 0;
	int err;

	if (!w || !q || !scale || !e)
		return nq_fail(-EINVAL, "weight error: missing argument");
	err = check_shape(sh);
	if (err)
		return err;
	memset(e, 0, sizeof(*e));
	for (c = 0; c < sh->oc; c++) {
		const float *row = w + (size_t)c * sh->k;
		const int8_t *qr = q + (size_t)c * sh->k;
		uint32_t imax = 0;

		for (i = 0; i < sh->k; i++) {
			double d = (double)row[i] - (double)scale[c] * qr[i];

			sse += d * d;
			sig += (double)row[i] * row[i];
			if (fabs(d) > e->max_abs)
				e->max_abs = fabs(d);
			if (row[i] > row[imax])
				imax = i;
		}
		if (row[imax] > 0) {
			clip += ((double)scale[c] * qr[imax] - row[imax]) / scale[c];
			nclip++;
		}
	}
	e->mse = sse / ((double)sh->oc * sh->k);
	e->sqnr_db = sse > 0 ? 10 * log10(sig / sse) : INFINITY;
	e->clip_mean = nclip ? clip / nclip : 0;
	return 0;
}

int nq_output_error(const float *x, size_t rows, const float *w, const struct nq_wshape *sh,
		    const int8_t *q, const float *scale, double *err_out, double *signal)
{
	double err = 0, sig = 0;
	float *dq;
	size_t r, i;
	uint32_t c;
	int e;

	if (!x || !rows || !w || !q || !scale || !err_out || !signal)
		return nq_fail(-EINVAL, "output error: missing argument");
	e = check_shape(sh);
	if (e)
		return e;
	if (sh->groups != 1)
		return nq_fail(-EINVAL, "output error: grouped layers are not supported");
	dq = malloc(sizeof(*dq) * sh->k);
	if (!dq)
		return nq_fail(-ENOMEM, "output error: out of memory");
	for (c = 0; c < sh->oc; c++) {
		const float *row = w + (size_t)c * sh->k;

		for (i = 0; i < sh->k; i++)
			dq[i] = row[i] - scale[c] * q[(size_t)c * sh->k + i];
		for (r = 0; r < rows; r++) {
			const float *xr = x + r * sh->k;
			double y = 0, d = 0;

			for (i = 0; i < sh->k; i++) {
				y += (double)xr[i] * row[i];
				d += (double)xr[i] * dq[i];
			}
			err += d * d;
			sig += y * y;
		}
	}
	free(dq);
	*err_out = err / ((double)rows * sh->oc);
	*signal = sig / ((double)rows * sh->oc);
	return 0;
}
