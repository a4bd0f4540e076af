/* SPDX-License-Identifier: MIT */
/*
 * Activation range observers for 8-bit per-tensor asymmetric quantization.
 *
 * Definition (the runtime must use exactly this):
 *	u8 = clamp(round_half_away(x / scale) + zero_point, 0, 255)
 *	x' = scale * (u8 - zero_point)
 * The range [lo, hi] an observer picks is first widened to contain 0, then
 *	scale = (hi - lo) / 255,  zero_point = clamp(round_half_away(-lo / scale), 0, 255)
 * so 0.0 is exactly representable.  A tensor that is never negative (the
 * output of a ReLU) gets lo = 0 and therefore zero_point = 0.
 *
 * Observers stream: call nq_observer_observe() once per batch, any number of
 * times, then nq_observer_finalize().  Values go into a log-spaced histogram
 * per sign (256 bins per octave, 2^-31 .. 2^33, exact zeros counted apart),
 * so the result does not depend on how the data is split into batches and a
 * single huge outlier costs no resolution for the rest.
 */
#ifndef NQ_CALIB_H
#define NQ_CALIB_H

#include <stddef.h>
#include <stdint.h>

enum nq_calib_method {
	NQ_CALIB_MINMAX = 0,	/* [min, max] of everything seen */
	NQ_CALIB_PERCENTILE,	/* clip each tail at (100 - p)% of all values */
	NQ_CALIB_MSE,		/* range minimising the expected squared error:
				   clipping error + uniform rounding noise s^2/12 */
};

struct nq_act_qparams {
	float scale;
	int32_t zero_point;	/* 0..255 */
	float lo, hi;		/* the range the scale was derived from */
};

struct nq_observer;

/*
 * New observer; percentile is used by NQ_CALIB_PERCENTILE only (e.g. 99.99,
 * in (50, 100]).  0 or -errno.
 */
int nq_observer_new(enum nq_calib_method m, double percentile, struct nq_observer **out);
void nq_observer_free(struct nq_observer *o);

/* Add n values; -EINVAL (nothing recorded) if any is NaN or infinite. */
int nq_observer_observe(struct nq_observer *o, const float *x, size_t n);

/* Quantization parameters from everything observed; -ENODATA if nothing was. */
int nq_observer_finalize(const struct nq_observer *o, struct nq_act_qparams *qp);

/* Exact extremes and count seen so far. */
void nq_observer_stats(const struct nq_observer *o, float *min, float *max, uint64_t *count);

/* scale / zero_point for a range, as defined above. */
int nq_act_qparams_from_range(float lo, float hi, struct nq_act_qparams *qp);

const char *nq_calib_name(enum nq_calib_method m);
int nq_calib_parse(const char *s, enum nq_calib_method *m);

static inline uint8_t nq_act_quantize(float x, const struct nq_act_qparams *qp)
{
	float v = __builtin_roundf(x / qp->scale) + (float)qp->zero_point;

	return v <= 0.0f ? 0 : v >= 255.0f ? 255 : (uint8_t)v;
}

static inline float nq_act_dequantize(uint8_t u, const struct nq_act_qparams *qp)
{
	return qp->scale * (float)((int32_t)u - qp->zero_point);
}

#endif
