/* SPDX-License-Identifier: MIT */
/*
 * Weight quantization and integer nesting (DESIGN.md §1) on plain float arrays.
 *
 * A layer's weights are float[oc][k], row-major, one row per output channel.
 * For a convolution k = (ic / groups) * kh * kw and the row is laid out
 * [ic][kh][kw], so every `kernel` = kh * kw consecutive elements form one
 * kernel (the unit of SQuant's first flip stage); kernel = 1 for Gemm/MatMul.
 *
 * Conventions used throughout:
 *  - Full-bit model: per-output-channel symmetric INT-n, n = 2..8,
 *    q = clamp(round_half_away(w / s), -(2^(n-1)-1), 2^(n-1)-1), w ≈ s * q.
 *  - Nesting for levels b_0 < ... < b_{N-1} = n: integers q_k at every level,
 *    q_k = q_{k-1} * 2^l_k + r_k with l_k = b_k - b_{k-1}; level k's integers
 *    lie in the two's complement range [-2^(b_k-1), 2^(b_k-1)-1] (INT4 [-8,7],
 *    INT6 [-32,31]).  Dequantized weight at level k: s_k[c] * q_k[c][i].
 *    With the INT8 scale s = absmax/127 the positive end of the INT4 grid is
 *    7 * 16 = 112, i.e. 112/127 of the channel's range: the clipping DESIGN.md
 *    measures.  The negative end (-8 * 16 = -128) is not clipped.
 *  - Planes: plane 0 holds q_0 (b_0 bits); plane k > 0 holds r_k.
 *    Residual mode `exact`: r_k in [-(2^l-1), 2^l-1] (l+1 bits signed) and
 *    the top level equals the INT-n model bit for bit.  Mode `compact`:
 *    r_k in [-2^(l-1), 2^(l-1)-1] (exactly l bits); an upper-level integer
 *    the l-bit residual cannot reach is re-derived from the float weights.  With nearest rounding (ties up) and a scale
 *    that keeps the lowest grid unclipped (NQ_WSCALE_NEST), compact is still
 *    bit-exact to the INT-n model: q - 2^l floor(q/2^l + 1/2) has l bits.
 *
 * All functions return 0 or a negative errno, with the reason in
 * nq_last_error().  None prints, allocates more than it says, or keeps state.
 * Results are deterministic (row sampling uses the seed given).
 */
#ifndef NQ_QUANT_H
#define NQ_QUANT_H

#include <stddef.h>
#include <stdint.h>

#define NQ_QUANT_MIN_BITS 2
#define NQ_QUANT_MAX_BITS 8
#define NQ_MAX_LEVELS 4

/* How the full-bit scale of each output channel is chosen. */
enum nq_wscale {
	NQ_WSCALE_ABSMAX = 0,	/* s = max|w| / (2^(n-1)-1) */
	NQ_WSCALE_MSE,		/* grid over clip ratios, min ||w - s q||^2 at INT-n */
	NQ_WSCALE_NEST,		/* largest s that keeps the lowest level's grid
				   unclipped: max(maxpos / ((2^(b0-1)-1) 2^L),
				   maxneg / (2^(n-1)-1)), L = n - b0 */
	NQ_WSCALE_NEST_MSE,	/* grid over s, min sum_k MSE_k / MSE_k(absmax)
				   over all levels (nearest nesting inside) */
};

/* How the higher part (or the INT-n integers themselves) is rounded. */
enum nq_round {
	NQ_ROUND_NEAREST = 0,	/* round half away from zero, clamped */
	NQ_ROUND_TRUNCATE,	/* floor: q >> l (arithmetic) when nesting */
	NQ_ROUND_SQUANT,	/* SQuant flip rounding: per kernel, then per channel */
	NQ_ROUND_ADAROUND,	/* up/down minimising ||X (w - s q)^T||^2 on
				   calibration patches (start: the better of
				   nearest and squant, then best-gain moves) */
};

enum nq_residual {
	NQ_RESIDUAL_EXACT = 0,	/* l+1-bit residual, top level == INT-n model */
	NQ_RESIDUAL_COMPACT,	/* l-bit residual, upper levels re-derived */
};

/* Scale of the lower levels. */
enum nq_level_scale {
	NQ_LSCALE_SHIFT = 0,	/* s_k = s_n * 2^(n - b_k) */
	NQ_LSCALE_REFIT,	/* s_k = <w, q_k> / <q_k, q_k> per channel (all
				   levels except the top in exact mode) */
};

/* What the higher part approximates when it is rounded. */
enum nq_nest_target {
	NQ_TARGET_FLOAT = 0,	/* w / s_k: the float weights on level k's grid
				   (default; avoids double rounding) */
	NQ_TARGET_INT,		/* q_{k+1} / 2^l, as the paper's reference code */
};

/* Shape of one layer's weight matrix. */
struct nq_wshape {
	uint32_t oc;		/* output channels (rows) */
	uint32_t k;		/* elements per row */
	uint32_t kernel;	/* elements per kernel (kh*kw), divides k; 1 = fc */
	uint32_t groups;	/* conv groups: rows c use gram[c / (oc/groups)] */
};

/*
 * Gram matrix H = X^T X of a layer's input patches (X: float[rows][k], the
 * im2col rows of one conv group), for data-driven rounding: the output error
 * of channel c is (w_c - ŵ_c)^T H (w_c - ŵ_c).  h is float[k][k], full
 * symmetric.  Build with nq_gram_build (one array, optional sampling) or
 * nq_gram_init + nq_gram_add (streaming batches) + nq_gram_finish; release
 * with nq_gram_free.  Cost: rows * k^2 / 2 multiply-adds.
 *
 * Use many more rows than k: with rows < k, H is rank deficient and the
 * rounding fits the sample (measured: k = 1152, 256 rows: held-out output
 * error 1.2x SQuant's; 4096 rows: equal).  Damping adds damp * mean(diag H)
 * to the diagonal (towards plain weight MSE); 0.1 is a good default.
 */
struct nq_gram {
	uint32_t k;
	uint64_t rows;		/* rows of X accumulated */
	float *h;
};

/* Rounding method and its knobs (shared by quantization and nesting). */
struct nq_round_params {
	enum nq_round method;
	unsigned squant_kernel;		/* SQuant stages; both on by default */
	unsigned squant_channel;
	unsigned adaround_passes;	/* move budget, in multiples of k; 0 = 4 */
	unsigned threads;		/* adaround worker threads, 0/1 = caller only */
	unsigned ties_up;		/* nearest: halfway rounds up, not away from 0
					   (nq_nest sets it in compact mode) */
};

struct nq_quant_opts {
	unsigned bits;			/* full-bit width n (2..8) */
	enum nq_wscale scale;
	struct nq_round_params round;	/* rounding of the INT-n integers */
	/* Levels for NQ_WSCALE_NEST/_NEST_MSE (ascending, last == bits). */
	unsigned nlevels;
	unsigned levels[NQ_MAX_LEVELS];
};

struct nq_nest_opts {
	unsigned nlevels;		/* 1..NQ_MAX_LEVELS */
	unsigned levels[NQ_MAX_LEVELS];	/* strictly ascending, last = n */
	struct nq_round_params round;	/* rounding of each higher part */
	enum nq_residual residual;
	enum nq_level_scale lscale;
	enum nq_nest_target target;
};

/* Nested integers, planes and scales of one layer (see nq_nested_alloc). */
struct nq_nested {
	uint32_t oc, k;
	unsigned nlevels;
	unsigned levels[NQ_MAX_LEVELS];
	int8_t *q[NQ_MAX_LEVELS];	/* [oc*k] composed integers of level k */
	int8_t *plane[NQ_MAX_LEVELS];	/* [oc*k] plane 0 = q_0, plane k = r_k */
	float *scale[NQ_MAX_LEVELS];	/* [oc] dequantization scale of level k */
	unsigned plane_bits[NQ_MAX_LEVELS]; /* signed bits each plane needs */
};

/* Weight error of one level (against the float weights). */
struct nq_werr {
	double mse;		/* mean (w - s q)^2 over all elements */
	double sqnr_db;		/* 10 log10(sum w^2 / sum (w - s q)^2) */
	double max_abs;		/* max |w - s q| */
	double clip_mean;	/* mean over channels of (s*q - w) at the channel's
				   largest positive weight, in units of s (the
				   112/127 effect shows as a negative number) */
};

/*
 * Defaults.  Quantization: INT8, absmax, nearest.  Nesting: levels 6,8,
 * squant (both stages), exact residual, shifted scales, float target.
 */
void nq_quant_opts_init(struct nq_quant_opts *o);
void nq_nest_opts_init(struct nq_nest_opts *o);

/* Parse "8,6", "6,8", "8,6,4", "6" into ascending levels; 0 or -EINVAL. */
int nq_levels_parse(const char *s, unsigned levels[NQ_MAX_LEVELS], unsigned *nlevels);

/* Names for options ("nearest", "squant", ...) and the reverse lookup. */
const char *nq_round_name(enum nq_round r);
int nq_round_parse(const char *s, enum nq_round *r);
const char *nq_wscale_name(enum nq_wscale s);
int nq_wscale_parse(const char *s, enum nq_wscale *out);

/*
 * Per-channel full-bit scales scale[oc] for o->bits (and o->levels for the
 * nesting-aware methods).  An all-zero row gets scale 1.
 */
int nq_quant_scale(const float *w, const struct nq_wshape *sh,
		   const struct nq_quant_opts *o, float *scale);

/*
 * Integers q[oc*k] of the INT-n model for the given scales, rounded with
 * o->round (adaround needs gram, one per group; otherwise gram may be NULL).
 */
int nq_quant_round(const float *w, const struct nq_wshape *sh, const float *scale,
		   const struct nq_gram *gram, const struct nq_quant_opts *o, int8_t *q);

/*
 * Build the gram matrix of x[rows][k], using at most max_rows rows (0 = all)
 * sampled without replacement with the seed.  Optional damping adds
 * damp * mean(diag H) to the diagonal (regularises towards weight MSE when
 * rows < k).  Uses up to `threads` threads (0/1 = caller's thread only).
 */
int nq_gram_build(const float *x, size_t rows, uint32_t k, size_t max_rows,
		  uint64_t seed, float damp, unsigned threads, struct nq_gram *g);
int nq_gram_init(struct nq_gram *g, uint32_t k);
int nq_gram_add(struct nq_gram *g, const float *x, size_t rows, unsigned threads);
int nq_gram_finish(struct nq_gram *g, float damp);
void nq_gram_free(struct nq_gram *g);

/* Allocate / free the output arrays for oc x k and the levels in o. */
int nq_nested_alloc(struct nq_nested *n, uint32_t oc, uint32_t k,
		    const struct nq_nest_opts *o);
void nq_nested_free(struct nq_nested *n);

/*
 * Nest the INT-n integers q (n = o->levels[nlevels-1]) with full-bit scales
 * `scale` into out (allocated with nq_nested_alloc for the same opts).
 * w (the float weights) is needed for target=float, compact mode, level
 * scale refit and adaround; gram (one per group) only for adaround.
 */
int nq_nest(const float *w, const struct nq_wshape *sh, const int8_t *q,
	    const float *scale, const struct nq_gram *gram,
	    const struct nq_nest_opts *o, struct nq_nested *out);

/*
 * The rounding core shared by quantization and nesting.  For every element
 * choose q[i] in {lo[i], lo[i] + 1}; lo[i] + 1 only where up[i] != 0.
 * t[i] is the real-valued target in grid units; the choice minimises the
 * method's objective (nearest: |q - t|; squant: summed errors per kernel and
 * channel; adaround: (t - q)^T H (t - q) per channel, H from gram with the
 * output error weighted by scale^2, so the scale does not enter).
 */
struct nq_bracket {
	const float *t;
	const int32_t *lo;
	const uint8_t *up;
};

int nq_round_bracket(const struct nq_round_params *p, const struct nq_wshape *sh,
		     const struct nq_bracket *b, const struct nq_gram *gram, int32_t *q);

/*
 * The whole weight path of one layer in one call: full-bit scales (qo->scale;
 * the nesting-aware methods take their levels from no), INT-n integers
 * (qo->round), then nesting (no) into out, which must have been allocated
 * with nq_nested_alloc(out, sh->oc, sh->k, no).  qo->bits must equal the top
 * level.  gram: one per group, only for adaround.
 */
int nq_quant_layer(const float *w, const struct nq_wshape *sh, const struct nq_gram *gram,
		   const struct nq_quant_opts *qo, const struct nq_nest_opts *no,
		   struct nq_nested *out);

/* Weight error of s[c] * q[c][i] against w (whole matrix). */
int nq_weight_error(const float *w, const struct nq_wshape *sh, const int8_t *q,
		    const float *scale, struct nq_werr *e);

/*
 * Output error: mean over rows and channels of (x (w - s q)^T)^2 for the
 * first `rows` rows of x[rows][k] (groups = 1 only), and the signal power
 * mean (x w^T)^2 for a relative figure.
 */
int nq_output_error(const float *x, size_t rows, const float *w,
		    const struct nq_wshape *sh, const int8_t *q, const float *scale,
		    double *err, double *signal);

/* Round half away from zero, the rounding used for weights and activations. */
static inline float nq_round_half_away(float v)
{
	return __builtin_roundf(v);	/* C roundf: halfway cases away from 0 */
}

#endif
