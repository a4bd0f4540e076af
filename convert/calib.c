// SPDX-License-Identifier: MIT
/*
 * Activation observers: min/max, percentile and MSE ranges from a streaming
 * log-spaced histogram (see calib.h for the quantization they feed).
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "calib.h"
#include "nq_error.h"

#define PER_OCTAVE 256
#define EXP_MIN (-31)		/* frexp exponent of the smallest binned magnitude */
#define OCTAVES 64
#define NBINS (PER_OCTAVE * OCTAVES)

struct side {
	uint64_t cnt[NBINS];
	uint64_t total;
};

struct nq_observer {
	enum nq_calib_method method;
	double percentile;
	uint64_t count, zeros;
	float min, max;
	struct side pos, neg;	/* magnitudes of positive / negative values */
};

/* Bin of a magnitude m > 0: octave from the exponent, linear inside it. */
static uint32_t bin_of(float m)
{
	int e;
	float mant = frexpf(m, &e);	/* m = mant * 2^e, mant in [0.5, 1) */
	int j;

	if (e < EXP_MIN)
		return 0;
	if (e >= EXP_MIN + OCTAVES)
		return NBINS - 1;
	j = (int)((mant - 0.5f) * (2 * PER_OCTAVE));
	if (j >= PER_OCTAVE)
		j = PER_OCTAVE - 1;
	return (uint32_t)((e - EXP_MIN) * PER_OCTAVE + j);
}

static double bin_lower(uint32_t b)
{
	int e = (int)(b / PER_OCTAVE) + EXP_MIN;
	double j = b % PER_OCTAVE;

	return ldexp(0.5 + j / (2 * PER_OCTAVE), e);
}

static double bin_upper(uint32_t b)
{
	int e = (int)(b / PER_OCTAVE) + EXP_MIN;
	double j = b % PER_OCTAVE + 1;

	return ldexp(0.5 + j / (2 * PER_OCTAVE), e);
}

int nq_observer_new(enum nq_calib_method m, double percentile, struct nq_observer **out)
{
	struct nq_observer *o;

	if (!out)
		return nq_fail(-EINVAL, "observer: missing argument");
	*out = NULL;
	if ((unsigned)m > NQ_CALIB_MSE)
		return nq_fail(-EINVAL, "observer: unknown method %d", (int)m);
	if (m == NQ_CALIB_PERCENTILE && !(percentile > 50 && percentile <= 100))
		return nq_fail(-EINVAL, "observer: percentile %g outside (50, 100]", percentile);
	o = calloc(1, sizeof(*o));
	if (!o)
		return nq_fail(-ENOMEM, "observer: out of memory");
	o->method = m;
	o->percentile = percentile;
	o->min = INFINITY;
	o->max = -INFINITY;
	*out = o;
	return 0;
}

void nq_observer_free(struct nq_observer *o)
{
	free(o);
}

int nq_observer_observe(struct nq_observer *o, const float *x, size_t n)
{
	size_t i;

	if (!o || (!x && n))
		return nq_fail(-EINVAL, "observer: missing argument");
	for (i = 0; i < n; i++)
		if (!isfinite(x[i]))
			return nq_fail(-EINVAL, "observer: value %zu of the batch is not finite", i);
	for (i = 0; i < n; i++) {
		float v = x[i];

		if (v < o->min)
			o->min = v;
		if (v > o->max)
			o->max = v;
		if (v > 0) {
			o->pos.cnt[bin_of(v)]++;
			o->pos.total++;
		} else if (v < 0) {
			o->neg.cnt[bin_of(-v)]++;
			o->neg.total++;
		} else {
			o->zeros++;
		}
	}
	o->count += n;
	return 0;
}

void nq_observer_stats(const struct nq_observer *o, float *min, float *max, uint64_t *count)
{
	if (min)
		*min = o->count ? o->min : 0;
	if (max)
		*max = o->count ? o->max : 0;
	if (count)
		*count = o->count;
}

int nq_act_qparams_from_range(float lo, float hi, struct nq_act_qparams *qp)
{
	float s, z;

	if (!qp || !isfinite(lo) || !isfinite(hi) || lo > hi)
		return nq_fail(-EINVAL, "activation range [%g, %g] is invalid", lo, hi);
	if (lo > 0)
		lo = 0;
	if (hi < 0)
		hi = 0;
	s = (hi - lo) / 255.0f;
	if (!(s > 0) || !isfinite(s)) {
		/* All zeros: any scale represents them; pick one that maps 1.0 to 255. */
		s = 1.0f / 255.0f;
	}
	z = roundf(-lo / s);
	qp->scale = s;
	qp->zero_point = z < 0 ? 0 : z > 255 ? 255 : (int32_t)z;
	qp->lo = lo;
	qp->hi = hi;
	return 0;
}

/* Clip value of one side leaving at most `tail` values beyond it. */
static double side_quantile(const struct side *sd, double tail, double exact_max)
{
	double above = 0;
	uint32_t b;

	if (!sd->total)
		return 0;
	for (b = NBINS; b-- > 0;) {
		above += (double)sd->cnt[b];
		if (above > tail) {
			double u = bin_upper(b);

			return u < exact_max ? u : exact_max;
		}
	}
	return 0;
}

/*
 * Squared error of clipping one side at c (values beyond c map to c),
 * summed over bins whose centre lies beyond c; from suffix sums.
 */
struct suffix {
	double n[NBINS + 1], s1[NBINS + 1], s2[NBINS + 1];
};

static void suffix_build(const struct side *sd, struct suffix *sf)
{
	uint32_t b;

	sf->n[NBINS] = sf->s1[NBINS] = sf->s2[NBINS] = 0;
	for (b = NBINS; b-- > 0;) {
		double c = 0.5 * (bin_lower(b) + bin_upper(b)), n = (double)sd->cnt[b];

		sf->n[b] = sf->n[b + 1] + n;
		sf->s1[b] = sf->s1[b + 1] + n * c;
		sf->s2[b] = sf->s2[b + 1] + n * c * c;
	}
}

/* First bin with centre > c (bins are sorted, so binary search). */
static uint32_t first_beyond(double c)
{
	uint32_t a = 0, b = NBINS;

	while (a < b) {
		uint32_t m = (a + b) / 2;

		if (0.5 * (bin_lower(m) + bin_upper(m)) > c)
			b = m;
		else
			a = m + 1;
	}
	return a;
}

static double clip_err(const struct suffix *sf, double c, uint64_t *inside_dec)
{
	uint32_t i = first_beyond(c);

	*inside_dec = (uint64_t)sf->n[i];
	return sf->s2[i] - 2 * c * sf->s1[i] + c * c * sf->n[i];
}

/* Total expected error for range [-cn, cp]. */
static double range_err(const struct nq_observer *o, const struct suffix *sp,
			const struct suffix *sn, double cp, double cn)
{
	uint64_t out_p = 0, out_n = 0, inside;
	double e = 0, s = (cp + cn) / 255.0;

	if (o->pos.total)
		e += clip_err(sp, cp, &out_p);
	if (o->neg.total)
		e += clip_err(sn, cn, &out_n);
	/* Exact zeros stay exact; everything else inside rounds uniformly. */
	inside = o->pos.total + o->neg.total - out_p - out_n;
	return e + (double)inside * s * s / 12.0;
}

/* Best clip for one side with the other fixed; candidates are bin edges. */
static double search_side(const struct nq_observer *o, const struct suffix *sp,
			  const struct suffix *sn, double fixed, int positive, double max)
{
	double best = max, best_e;
	uint32_t b, top;

	best_e = positive ? range_err(o, sp, sn, max, fixed) : range_err(o, sp, sn, fixed, max);
	if (!(max > 0))
		return 0;
	top = bin_of((float)max);
	/* Candidates below 1/1024 of the max can never win: noise saturates. */
	for (b = top + 1; b-- > 0 && bin_upper(b) > max / 1024;) {
		double c = bin_upper(b), e;

		if (c > max)
			continue;
		e = positive ? range_err(o, sp, sn, c, fixed) : range_err(o, sp, sn, fixed, c);
		if (e < best_e) {
			best_e = e;
			best = c;
		}
	}
	return best;
}

int nq_observer_finalize(const struct nq_observer *o, struct nq_act_qparams *qp)
{
	double lo, hi, pmax, nmax;

	if (!o || !qp)
		return nq_fail(-EINVAL, "observer: missing argument");
	if (!o->count)
		return nq_fail(-ENODATA, "observer: no values observed");
	pmax = o->max > 0 ? o->max : 0;
	nmax = o->min < 0 ? -o->min : 0;

	switch (o->method) {
	case NQ_CALIB_MINMAX:
		lo = -nmax;
		hi = pmax;
		break;
	case NQ_CALIB_PERCENTILE: {
		double tail = (1.0 - o->percentile / 100.0) * (double)o->count;

		hi = side_quantile(&o->pos, tail, pmax);
		lo = -side_quantile(&o->neg, tail, nmax);
		break;
	}
	case NQ_CALIB_MSE: {
		struct suffix *sp, *sn;
		double cp = pmax, cn = nmax;
		int round;

		sp = malloc(sizeof(*sp));
		sn = malloc(sizeof(*sn));
		if (!sp || !sn) {
			free(sp);
			free(sn);
			return nq_fail(-ENOMEM, "observer: out of memory");
		}
		suffix_build(&o->pos, sp);
		suffix_build(&o->neg, sn);
		/* Alternate one-dimensional searches; two rounds settle it. */
		for (round = 0; round < 2; round++) {
			if (o->pos.total)
				cp = search_side(o, sp, sn, cn, 1, pmax);
			if (o->neg.total)
				cn = search_side(o, sp, sn, cp, 0, nmax);
		}
		free(sp);
		free(sn);
		lo = -cn;
		hi = cp;
		break;
	}
	default:
		return nq_fail(-EINVAL, "observer: unknown method");
	}
	return nq_act_qparams_from_range((float)lo, (float)hi, qp);
}

static const char *const calib_names[] = {
	[NQ_CALIB_MINMAX] = "minmax",
	[NQ_CALIB_PERCENTILE] = "percentile",
	[NQ_CALIB_MSE] = "mse",
};

const char *nq_calib_name(enum nq_calib_method m)
{
	return (unsigned)m <= NQ_CALIB_MSE ? calib_names[m] : "?";
}

int nq_calib_parse(const char *s, enum nq_calib_method *m)
{
	unsigned i;

	for (i = 0; s && i <= NQ_CALIB_MSE; i++)
		if (!strcmp(s, calib_names[i])) {
			*m = (enum nq_calib_method)i;
			return 0;
		}
	return nq_fail(-EINVAL, "activation calibration '%s': expected minmax, percentile or mse",
		       s ? s : "");
}
