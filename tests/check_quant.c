// SPDX-License-Identifier: MIT
/*
 * Weight quantization, nesting and activation calibration (convert/quant.h,
 * convert/calib.h) on synthetic but realistic data, seeded.
 *
 * NQ_QUANT_REPORT=1 prints the weight-error tables (methods x chains x levels)
 * while the report test runs; NQ_QUANT_BENCH=1 enables the ResNet-18-sized
 * adaround timing.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "calib.h"
#include "nq_error.h"
#include "nq_test.h"
#include "quant.h"

/* ---- deterministic data ---- */

static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static double rng_unif(uint64_t *s)	/* (0, 1) */
{
	return ((double)(rng_next(s) >> 11) + 0.5) / 9007199254740992.0;
}

static double rng_gauss(uint64_t *s)
{
	double u = rng_unif(s), v = rng_unif(s);

	return sqrt(-2 * log(u)) * cos(2 * M_PI * v);
}

static double rng_laplace(uint64_t *s)
{
	double u = rng_unif(s) - 0.5;

	return u < 0 ? log(1 + 2 * u) : -log(1 - 2 * u);
}

enum dist { GAUSS, LAPLACE_OUTLIERS };
static const char *const dist_name[] = { "gauss", "laplace+outliers" };

/* Rows with per-channel spread (as after BN folding); outliers: 0.2% at 6-10 sigma. */
static float *make_weights(enum dist d, uint32_t oc, uint32_t k, uint64_t seed)
{
	float *w = malloc(sizeof(*w) * oc * k);
	uint64_t s = seed;
	uint32_t c, i;

	ck_assert_ptr_nonnull(w);
	for (c = 0; c < oc; c++) {
		double sigma = 0.02 * exp(0.5 * rng_gauss(&s));

		for (i = 0; i < k; i++) {
			double v = d == GAUSS ? rng_gauss(&s) : rng_laplace(&s) / sqrt(2.0);

			if (d == LAPLACE_OUTLIERS && rng_unif(&s) < 0.002)
				v = (v < 0 ? -1 : 1) * (6 + 4 * rng_unif(&s));
			w[(size_t)c * k + i] = (float)(sigma * v);
		}
	}
	return w;
}

/*
 * Calibration patches shaped like post-ReLU im2col rows: the `kernel`
 * positions of one input channel share a component, and a global factor
 * correlates everything (so the output error is not just weight MSE).
 */
static float *make_patches(size_t rows, uint32_t k, uint32_t kernel, uint64_t seed)
{
	float *x = malloc(sizeof(*x) * rows * k);
	uint64_t s = seed;
	size_t r;
	uint32_t i;

	ck_assert_ptr_nonnull(x);
	for (r = 0; r < rows; r++) {
		double glob = rng_gauss(&s), ch = 0;

		for (i = 0; i < k; i++) {
			double v;

			if (i % kernel == 0)
				ch = rng_gauss(&s);
			v = 0.6 * glob + 0.8 * ch + 0.5 * rng_gauss(&s) + 0.3;
			x[r * k + i] = v > 0 ? (float)v : 0.0f;
		}
	}
	return x;
}

/*
 * Post-ReLU patches from a random rank-r mixing plus noise: strongly
 * correlated inputs whose structure has nothing to do with kernels (real
 * activations are low rank; SQuant's kernel/channel model does not see it).
 */
static float *make_lowrank_patches(size_t rows, uint32_t k, const float *mix, uint32_t r,
				   uint64_t seed)
{
	float *x = malloc(sizeof(*x) * rows * k), z[64];
	uint64_t s = seed;
	size_t i;
	uint32_t a, j;

	ck_assert_ptr_nonnull(x);
	ck_assert_uint_le(r, 64);
	for (i = 0; i < rows; i++) {
		for (a = 0; a < r; a++)
			z[a] = (float)rng_gauss(&s);
		for (j = 0; j < k; j++) {
			double v = 0.3 * rng_gauss(&s);

			for (a = 0; a < r; a++)
				v += z[a] * mix[a * k + j];
			x[i * k + j] = v > 0 ? (float)v : 0.0f;
		}
	}
	return x;
}

struct qlayer {
	struct nq_wshape sh;
	float *w;
	float *scale;
	int8_t *q;
};

static void qlayer_make(struct qlayer *L, const float *w, uint32_t oc, uint32_t k,
			uint32_t kernel, unsigned bits, enum nq_wscale ws,
			const unsigned *levels, unsigned nl)
{
	struct nq_quant_opts qo;
	int err;

	L->sh = (struct nq_wshape){ .oc = oc, .k = k, .kernel = kernel, .groups = 1 };
	L->w = (float *)w;
	L->scale = malloc(sizeof(float) * oc);
	L->q = malloc((size_t)oc * k);
	ck_assert_ptr_nonnull(L->scale);
	ck_assert_ptr_nonnull(L->q);
	nq_quant_opts_init(&qo);
	qo.bits = bits;
	qo.scale = ws;
	if (levels) {
		memcpy(qo.levels, levels, sizeof(*levels) * nl);
		qo.nlevels = nl;
	}
	err = nq_quant_scale(w, &L->sh, &qo, L->scale);
	ck_assert_msg(err == 0, "%s", nq_last_error());
	err = nq_quant_round(w, &L->sh, L->scale, NULL, &qo, L->q);
	ck_assert_msg(err == 0, "%s", nq_last_error());
}

static void qlayer_free(struct qlayer *L)
{
	free(L->scale);
	free(L->q);
}

static void nest_opts(struct nq_nest_opts *o, const unsigned *lv, unsigned nl,
		      enum nq_round r, enum nq_nest_target t, enum nq_residual res)
{
	nq_nest_opts_init(o);
	memcpy(o->levels, lv, sizeof(*lv) * nl);
	o->nlevels = nl;
	o->round.method = r;
	o->target = t;
	o->residual = res;
}

static const unsigned chain68[] = { 6, 8 }, chain48[] = { 4, 8 }, chain468[] = { 4, 6, 8 };
static const struct {
	const unsigned *lv;
	unsigned n;
	const char *name;
} chains[] = {
	{ chain68, 2, "8|6" },
	{ chain48, 2, "8|4" },
	{ chain468, 3, "8|6|4" },
};

/* Every structural promise of a nesting result. */
static void check_structure_top(const struct nq_nested *n, const int8_t *q, enum nq_residual res,
				int top_exact)
{
	size_t cnt = (size_t)n->oc * n->k, i;
	unsigned lv;

	if (top_exact)
		ck_assert_int_eq(memcmp(n->q[n->nlevels - 1], q, cnt), 0);
	for (i = 0; i < cnt; i++)
		ck_assert_int_eq(n->plane[0][i], n->q[0][i]);
	ck_assert_uint_eq(n->plane_bits[0], n->levels[0]);
	for (lv = 0; lv < n->nlevels; lv++) {
		int32_t qhi = (1 << (n->levels[lv] - 1)) - 1, qlo = -(1 << (n->levels[lv] - 1));

		for (i = 0; i < cnt; i++) {
			ck_assert_int_ge(n->q[lv][i], qlo);
			ck_assert_int_le(n->q[lv][i], qhi);
		}
		if (lv == 0)
			continue;
		unsigned l = n->levels[lv] - n->levels[lv - 1];
		int32_t rlo = res == NQ_RESIDUAL_EXACT ? -((1 << l) - 1) : -(1 << (l - 1));
		int32_t rhi = res == NQ_RESIDUAL_EXACT ? (1 << l) - 1 : (1 << (l - 1)) - 1;

		ck_assert_uint_eq(n->plane_bits[lv], res == NQ_RESIDUAL_EXACT ? l + 1 : l);
		for (i = 0; i < cnt; i++) {
			ck_assert_int_eq(n->q[lv][i], n->q[lv - 1][i] * (1 << l) + n->plane[lv][i]);
			ck_assert_int_ge(n->plane[lv][i], rlo);
			ck_assert_int_le(n->plane[lv][i], rhi);
		}
	}
}

static void check_structure(const struct nq_nested *n, const int8_t *q, enum nq_residual res)
{
	check_structure_top(n, q, res, res == NQ_RESIDUAL_EXACT);
}

/* A layer whose integers cover every INT8 value, including both extremes. */
static void extreme_layer(struct qlayer *L, uint64_t seed)
{
	uint32_t oc = 8, k = 288, c, i;
	float *w = make_weights(GAUSS, oc, k, seed);

	for (c = 0; c < oc; c++) {
		w[c * k] = 0.5f;	/* positive absmax: q = +127 */
		w[c * k + 1] = -0.5f;	/* q = -127 */
		for (i = 2; i < 257; i++)	/* every value in between */
			w[c * k + i] = 0.5f * (float)((int)i - 129 + (int)c % 3) / 127.0f;
	}
	qlayer_make(L, w, oc, k, 9, 8, NQ_WSCALE_ABSMAX, NULL, 0);
}

START_TEST(exact_mode_top_level_equals_int8_model)
{
	static const enum nq_round methods[] = { NQ_ROUND_NEAREST, NQ_ROUND_TRUNCATE,
						 NQ_ROUND_SQUANT, NQ_ROUND_ADAROUND };
	struct qlayer L;
	struct nq_gram g;
	float *x;
	unsigned ci, mi, ti;
	int err;

	extreme_layer(&L, 11);
	/* Both extremes really are in the INT8 integers. */
	ck_assert_int_eq(L.q[0], 127);
	ck_assert_int_eq(L.q[1], -127);
	x = make_patches(256, L.sh.k, 9, 5);
	err = nq_gram_build(x, 256, L.sh.k, 0, 1, 0.01f, 1, &g);
	ck_assert_msg(err == 0, "%s", nq_last_error());

	for (ci = 0; ci < 3; ci++)
		for (mi = 0; mi < 4; mi++)
			for (ti = 0; ti < 2; ti++) {
				struct nq_nest_opts o;
				struct nq_nested n;

				if (methods[mi] == NQ_ROUND_ADAROUND && ti == NQ_TARGET_INT)
					continue;
				nest_opts(&o, chains[ci].lv, chains[ci].n, methods[mi], ti,
					  NQ_RESIDUAL_EXACT);
				ck_assert_int_eq(nq_nested_alloc(&n, L.sh.oc, L.sh.k, &o), 0);
				err = nq_nest(L.w, &L.sh, L.q, L.scale, &g, &o, &n);
				ck_assert_msg(err == 0, "%s %s: %s", chains[ci].name,
					      nq_round_name(methods[mi]), nq_last_error());
				check_structure(&n, L.q, NQ_RESIDUAL_EXACT);
				nq_nested_free(&n);
			}
	nq_gram_free(&g);
	free(x);
	free(L.w);
	qlayer_free(&L);
}
END_TEST

START_TEST(compact_mode_residual_has_exactly_l_bits)
{
	struct qlayer L;
	unsigned ci, mi;
	int err;

	extreme_layer(&L, 12);
	for (ci = 0; ci < 3; ci++)
		for (mi = 0; mi < 3; mi++) {
			struct nq_nest_opts o;
			struct nq_nested n;

			nest_opts(&o, chains[ci].lv, chains[ci].n, (enum nq_round)mi, NQ_TARGET_INT,
				  NQ_RESIDUAL_COMPACT);
			ck_assert_int_eq(nq_nested_alloc(&n, L.sh.oc, L.sh.k, &o), 0);
			err = nq_nest(L.w, &L.sh, L.q, L.scale, NULL, &o, &n);
			ck_assert_msg(err == 0, "%s", nq_last_error());
			check_structure(&n, L.q, NQ_RESIDUAL_COMPACT);
			nq_nested_free(&n);
		}
	free(L.w);
	qlayer_free(&L);
}
END_TEST

/*
 * What compact costs at the top level.  An l-bit residual can only undo a
 * rounding to nearest, so with nearest and a scale that keeps the INT4 grid
 * unclipped, the top level must stay (almost) the INT8 model; SQuant's flips
 * cost real INT8 accuracy.
 */
START_TEST(compact_mode_cost_at_the_top_level)
{
	float *w = make_weights(GAUSS, 64, 576, 14);
	struct qlayer L;
	struct nq_nest_opts o;
	struct nq_nested n;
	struct nq_werr ex, cn, cs;
	unsigned ci;

	/* Nearest on the integers + unclipped grid: compact is lossless. */
	for (ci = 0; ci < 3; ci++) {
		qlayer_make(&L, w, 64, 576, 9, 8, NQ_WSCALE_NEST, chains[ci].lv, chains[ci].n);
		nest_opts(&o, chains[ci].lv, chains[ci].n, NQ_ROUND_NEAREST, NQ_TARGET_INT,
			  NQ_RESIDUAL_COMPACT);
		ck_assert_int_eq(nq_nested_alloc(&n, 64, 576, &o), 0);
		ck_assert_int_eq(nq_nest(w, &L.sh, L.q, L.scale, NULL, &o, &n), 0);
		check_structure_top(&n, L.q, NQ_RESIDUAL_COMPACT, 1);	/* top == INT8 model */
		nq_nested_free(&n);
		qlayer_free(&L);
	}
	/* SQuant's flips cannot be undone in l bits. */
	qlayer_make(&L, w, 64, 576, 9, 8, NQ_WSCALE_NEST, chain48, 2);
	nq_weight_error(w, &L.sh, L.q, L.scale, &ex);
	nest_opts(&o, chain48, 2, NQ_ROUND_NEAREST, NQ_TARGET_FLOAT, NQ_RESIDUAL_COMPACT);
	ck_assert_int_eq(nq_nested_alloc(&n, 64, 576, &o), 0);
	ck_assert_int_eq(nq_nest(w, &L.sh, L.q, L.scale, NULL, &o, &n), 0);
	nq_weight_error(w, &L.sh, n.q[1], n.scale[1], &cn);
	o.round.method = NQ_ROUND_SQUANT;
	ck_assert_int_eq(nq_nest(w, &L.sh, L.q, L.scale, NULL, &o, &n), 0);
	nq_weight_error(w, &L.sh, n.q[1], n.scale[1], &cs);
	ck_assert_msg(cn.mse <= 1.5 * ex.mse, "compact/nearest top %g vs exact %g", cn.mse, ex.mse);
	ck_assert_msg(cs.mse > 1.5 * ex.mse, "compact/squant top %g vs exact %g", cs.mse, ex.mse);
	if (getenv("NQ_QUANT_REPORT"))
		printf("compact 8|4 (nest scale): INT8 SQNR exact %.1f dB, compact+nearest/float %.1f dB, "
		       "compact+squant/float %.1f dB\n", ex.sqnr_db, cn.sqnr_db, cs.sqnr_db);
	nq_nested_free(&n);
	qlayer_free(&L);
	free(w);
}
END_TEST

START_TEST(truncate_is_arithmetic_shift_and_nearest_is_rounding)
{
	struct qlayer L;
	struct nq_nest_opts o;
	struct nq_nested n;
	size_t i, cnt;

	extreme_layer(&L, 13);
	cnt = (size_t)L.sh.oc * L.sh.k;
	nest_opts(&o, chain48, 2, NQ_ROUND_TRUNCATE, NQ_TARGET_INT, NQ_RESIDUAL_EXACT);
	ck_assert_int_eq(nq_nested_alloc(&n, L.sh.oc, L.sh.k, &o), 0);
	ck_assert_int_eq(nq_nest(L.w, &L.sh, L.q, L.scale, NULL, &o, &n), 0);
	for (i = 0; i < cnt; i++) {
		ck_assert_int_eq(n.q[0][i], (int)floor(L.q[i] / 16.0));
		ck_assert_int_ge(n.plane[1][i], 0);	/* truncation: residual >= 0 */
	}
	o.round.method = NQ_ROUND_NEAREST;
	ck_assert_int_eq(nq_nest(L.w, &L.sh, L.q, L.scale, NULL, &o, &n), 0);
	for (i = 0; i < cnt; i++) {
		double r = round(L.q[i] / 16.0);	/* C round(): halfway away from 0 */

		ck_assert_int_eq(n.q[0][i], r > 7 ? 7 : (int)r);
	}
	/* Scale default: s_k = s_n * 2^(n - b_k). */
	for (i = 0; i < L.sh.oc; i++)
		ck_assert_float_eq(n.scale[0][i], L.scale[i] * 16);
	nq_nested_free(&n);
	free(L.w);
	qlayer_free(&L);
}
END_TEST

/* Summed rounding errors of SQuant per kernel and per channel. */
static void squant_sums(const float *t, const int32_t *q, uint32_t oc, uint32_t k,
			uint32_t kernel, double *kmax, double *cmax)
{
	uint32_t c, i;

	*kmax = *cmax = 0;
	for (c = 0; c < oc; c++) {
		double cs = 0, ks = 0;

		for (i = 0; i < k; i++) {
			double e = q[c * k + i] - (double)t[c * k + i];

			cs += e;
			ks += e;
			if ((i + 1) % kernel == 0) {
				if (fabs(ks) > *kmax)
					*kmax = fabs(ks);
				ks = 0;
			}
		}
		if (fabs(cs) > *cmax)
			*cmax = fabs(cs);
	}
}

START_TEST(squant_flip_bounds_the_summed_errors)
{
	uint32_t oc = 32, k = 64 * 9, i;
	size_t cnt = (size_t)oc * k;
	float *t = malloc(sizeof(*t) * cnt);
	int32_t *lo = malloc(sizeof(*lo) * cnt), *q = malloc(sizeof(*q) * cnt);
	int32_t *qn = malloc(sizeof(*qn) * cnt);
	uint8_t *up = malloc(cnt);
	struct nq_wshape sh = { .oc = oc, .k = k, .kernel = 9, .groups = 1 };
	struct nq_round_params p = { .method = NQ_ROUND_SQUANT, .squant_kernel = 1 };
	struct nq_bracket br = { .t = t, .lo = lo, .up = up };
	uint64_t s = 21;
	double kmax, cmax, nk, nc;

	for (i = 0; i < cnt; i++) {
		t[i] = (float)(6 * rng_gauss(&s));
		lo[i] = (int32_t)floorf(t[i]);
		up[i] = t[i] > (float)lo[i];
	}
	/* Nearest alone leaves large sums (the thing SQuant fixes). */
	p.method = NQ_ROUND_NEAREST;
	ck_assert_int_eq(nq_round_bracket(&p, &sh, &br, NULL, qn), 0);
	squant_sums(t, qn, oc, k, 9, &nk, &nc);
	ck_assert_msg(nc > 2.0, "nearest channel sum %g unexpectedly small", nc);

	/* SQuant-K: every kernel's sum within 0.5. */
	p.method = NQ_ROUND_SQUANT;
	p.squant_kernel = 1;
	p.squant_channel = 0;
	ck_assert_int_eq(nq_round_bracket(&p, &sh, &br, NULL, q), 0);
	squant_sums(t, q, oc, k, 9, &kmax, &cmax);
	ck_assert_msg(kmax <= 0.5 + 1e-5, "kernel stage: max |sum e| %g", kmax);

	/* SQuant-K+C: channel within 0.5, kernel within 1, every element within 1. */
	p.squant_channel = 1;
	ck_assert_int_eq(nq_round_bracket(&p, &sh, &br, NULL, q), 0);
	squant_sums(t, q, oc, k, 9, &kmax, &cmax);
	ck_assert_msg(cmax <= 0.5 + 1e-4, "channel stage: max |sum e| %g", cmax);
	ck_assert_msg(kmax <= 1.0 + 1e-5, "after channel stage: kernel |sum e| %g", kmax);
	for (i = 0; i < cnt; i++)
		ck_assert(q[i] == lo[i] || (up[i] && q[i] == lo[i] + 1));

	/* Fully connected rows (kernel 1): the channel stage alone. */
	sh.kernel = 1;
	ck_assert_int_eq(nq_round_bracket(&p, &sh, &br, NULL, q), 0);
	squant_sums(t, q, oc, k, 1, &kmax, &cmax);
	ck_assert_msg(cmax <= 0.5 + 1e-4, "fc channel: max |sum e| %g", cmax);

	free(t);
	free(lo);
	free(q);
	free(qn);
	free(up);
}
END_TEST

static double level_mse(const struct qlayer *L, const unsigned *lv, unsigned nl, unsigned level,
			enum nq_round r, enum nq_nest_target t)
{
	struct nq_nest_opts o;
	struct nq_nested n;
	struct nq_werr e;

	nest_opts(&o, lv, nl, r, t, NQ_RESIDUAL_EXACT);
	ck_assert_int_eq(nq_nested_alloc(&n, L->sh.oc, L->sh.k, &o), 0);
	ck_assert_msg(nq_nest(L->w, &L->sh, L->q, L->scale, NULL, &o, &n) == 0, "%s", nq_last_error());
	nq_weight_error(L->w, &L->sh, n.q[level], n.scale[level], &e);
	nq_nested_free(&n);
	return e.mse;
}

START_TEST(truncation_is_at_least_twice_worse)
{
	float *w = make_weights(GAUSS, 64, 576, 31);
	struct qlayer L;
	unsigned ci;

	qlayer_make(&L, w, 64, 576, 9, 8, NQ_WSCALE_ABSMAX, NULL, 0);
	for (ci = 0; ci < 3; ci++) {
		double tr = level_mse(&L, chains[ci].lv, chains[ci].n, 0, NQ_ROUND_TRUNCATE, NQ_TARGET_INT);
		double ne = level_mse(&L, chains[ci].lv, chains[ci].n, 0, NQ_ROUND_NEAREST, NQ_TARGET_INT);
		double sq = level_mse(&L, chains[ci].lv, chains[ci].n, 0, NQ_ROUND_SQUANT, NQ_TARGET_INT);

		ck_assert_msg(tr >= 2 * ne, "%s: truncate %g vs nearest %g", chains[ci].name, tr, ne);
		ck_assert_msg(tr >= 2 * sq, "%s: truncate %g vs squant %g", chains[ci].name, tr, sq);
		/* SQuant trades a little weight MSE for the summed-error constraints. */
		ck_assert_msg(sq <= 1.6 * ne, "%s: squant %g vs nearest %g", chains[ci].name, sq, ne);
	}
	qlayer_free(&L);
	free(w);
}
END_TEST

START_TEST(gram_matches_naive_sum_and_streams)
{
	static const uint32_t ks[] = { 1, 13, 37, 70 };
	unsigned t;

	for (t = 0; t < 4; t++) {
		uint32_t k = ks[t], a, b;
		size_t rows = 1500, r;
		float *x = make_patches(rows, k, 1, 200 + t);
		struct nq_gram g1, g2;

		ck_assert_int_eq(nq_gram_build(x, rows, k, 0, 1, 0.0f, 2, &g1), 0);
		ck_assert_int_eq(nq_gram_init(&g2, k), 0);
		ck_assert_int_eq(nq_gram_add(&g2, x, 333, 1), 0);
		ck_assert_int_eq(nq_gram_add(&g2, x + 333 * k, rows - 333, 2), 0);
		ck_assert_int_eq(nq_gram_finish(&g2, 0.0f), 0);
		ck_assert_uint_eq(g1.rows, rows);
		ck_assert_uint_eq(g2.rows, rows);
		for (a = 0; a < k; a++)
			for (b = 0; b < k; b++) {
				double ref = 0;

				for (r = 0; r < rows; r++)
					ref += (double)x[r * k + a] * x[r * k + b];
				ck_assert_msg(fabs(g1.h[a * k + b] - ref) <= 1e-4 * fabs(ref) + 1e-3,
					      "k %u H[%u][%u] %g vs %g", k, a, b, g1.h[a * k + b], ref);
				ck_assert_msg(fabs(g2.h[a * k + b] - ref) <= 1e-4 * fabs(ref) + 1e-3,
					      "streamed k %u H[%u][%u] %g vs %g", k, a, b, g2.h[a * k + b], ref);
			}
		nq_gram_free(&g1);
		nq_gram_free(&g2);
		/* Sampling: exactly max_rows rows, and damping lifts the diagonal. */
		ck_assert_int_eq(nq_gram_build(x, rows, k, 100, 7, 0.5f, 1, &g1), 0);
		ck_assert_uint_eq(g1.rows, 100);
		nq_gram_free(&g1);
		free(x);
	}
}
END_TEST

START_TEST(adaround_output_error_not_above_nearest)
{
	uint32_t oc = 32, k = 16 * 9;
	size_t rows = 1024;
	float *w = make_weights(GAUSS, oc, k, 41);
	float *x = make_patches(rows, k, 9, 42);
	struct qlayer L;
	struct nq_gram g;
	struct nq_nest_opts o;
	struct nq_nested n;
	double en, ea, ep, sig;
	int err;

	qlayer_make(&L, w, oc, k, 9, 8, NQ_WSCALE_ABSMAX, NULL, 0);
	err = nq_gram_build(x, rows, k, 0, 3, 0.0f, 2, &g);
	ck_assert_msg(err == 0, "%s", nq_last_error());
	ck_assert_uint_eq(g.rows, rows);

	nest_opts(&o, chain48, 2, NQ_ROUND_NEAREST, NQ_TARGET_FLOAT, NQ_RESIDUAL_EXACT);
	ck_assert_int_eq(nq_nested_alloc(&n, oc, k, &o), 0);
	ck_assert_int_eq(nq_nest(w, &L.sh, L.q, L.scale, &g, &o, &n), 0);
	ck_assert_int_eq(nq_output_error(x, rows, w, &L.sh, n.q[0], n.scale[0], &en, &sig), 0);
	o.round.method = NQ_ROUND_SQUANT;
	ck_assert_int_eq(nq_nest(w, &L.sh, L.q, L.scale, &g, &o, &n), 0);
	ck_assert_int_eq(nq_output_error(x, rows, w, &L.sh, n.q[0], n.scale[0], &ep, &sig), 0);
	o.round.method = NQ_ROUND_ADAROUND;
	o.round.threads = 2;
	ck_assert_int_eq(nq_nest(w, &L.sh, L.q, L.scale, &g, &o, &n), 0);
	check_structure(&n, L.q, NQ_RESIDUAL_EXACT);
	ck_assert_int_eq(nq_output_error(x, rows, w, &L.sh, n.q[0], n.scale[0], &ea, &sig), 0);
	ck_assert_msg(ea <= en, "adaround %g vs nearest %g", ea, en);
	/* On correlated inputs it should be clearly better, not just equal. */
	ck_assert_msg(ea < 0.8 * en, "adaround %g vs nearest %g: no real gain", ea, en);
	if (getenv("NQ_QUANT_REPORT"))
		printf("output MSE 8|4 part-bit (oc %u, k %u, %zu rows): nearest %.4g  squant %.4g  "
		       "adaround %.4g  (signal %.4g)\n", oc, k, rows, en, ep, ea, sig);

	/* Standalone INT4 through the same rounding core. */
	{
		struct nq_quant_opts qo;
		float *s4 = malloc(sizeof(float) * oc);
		int8_t *q4 = malloc((size_t)oc * k);
		double e4n, e4a;

		nq_quant_opts_init(&qo);
		qo.bits = 4;
		ck_assert_int_eq(nq_quant_scale(w, &L.sh, &qo, s4), 0);
		ck_assert_int_eq(nq_quant_round(w, &L.sh, s4, &g, &qo, q4), 0);
		nq_output_error(x, rows, w, &L.sh, q4, s4, &e4n, &sig);
		qo.round.method = NQ_ROUND_ADAROUND;
		ck_assert_int_eq(nq_quant_round(w, &L.sh, s4, &g, &qo, q4), 0);
		nq_output_error(x, rows, w, &L.sh, q4, s4, &e4a, &sig);
		ck_assert_msg(e4a <= e4n, "INT4 adaround %g vs nearest %g", e4a, e4n);
		free(s4);
		free(q4);
	}
	nq_nested_free(&n);
	nq_gram_free(&g);
	qlayer_free(&L);
	free(w);
	free(x);
}
END_TEST

START_TEST(adaround_wins_on_held_out_low_rank_inputs)
{
	uint32_t oc = 64, k = 32 * 9, r = 16, i;
	size_t rows = 2048, held = 1024;
	uint64_t s = 3;
	float *mix = malloc(sizeof(float) * r * k);
	float *w = make_weights(GAUSS, oc, k, 7), *x, *xh;
	struct qlayer L;
	struct nq_gram g;
	struct nq_nest_opts o;
	struct nq_nested n;
	double es, ea, sig;

	for (i = 0; i < r * k; i++)
		mix[i] = (float)(rng_gauss(&s) / sqrt(r));
	x = make_lowrank_patches(rows, k, mix, r, 5);
	xh = make_lowrank_patches(held, k, mix, r, 99);
	qlayer_make(&L, w, oc, k, 9, 8, NQ_WSCALE_ABSMAX, NULL, 0);
	ck_assert_int_eq(nq_gram_build(x, rows, k, 0, 1, 0.1f, 2, &g), 0);
	nest_opts(&o, chain48, 2, NQ_ROUND_SQUANT, NQ_TARGET_FLOAT, NQ_RESIDUAL_EXACT);
	o.round.threads = 2;
	ck_assert_int_eq(nq_nested_alloc(&n, oc, k, &o), 0);
	ck_assert_int_eq(nq_nest(w, &L.sh, L.q, L.scale, &g, &o, &n), 0);
	nq_output_error(xh, held, w, &L.sh, n.q[0], n.scale[0], &es, &sig);
	o.round.method = NQ_ROUND_ADAROUND;
	ck_assert_int_eq(nq_nest(w, &L.sh, L.q, L.scale, &g, &o, &n), 0);
	nq_output_error(xh, held, w, &L.sh, n.q[0], n.scale[0], &ea, &sig);
	/* Measured 0.33x; the data-driven method must generalise, not just fit. */
	ck_assert_msg(ea < 0.6 * es, "held-out adaround %g vs squant %g", ea, es);
	if (getenv("NQ_QUANT_REPORT"))
		printf("low-rank inputs, 8|4 part-bit, held-out output MSE: squant %.4g adaround %.4g\n",
		       es, ea);
	nq_nested_free(&n);
	nq_gram_free(&g);
	qlayer_free(&L);
	free(mix);
	free(w);
	free(x);
	free(xh);
}
END_TEST

START_TEST(mse_scale_not_worse_than_absmax)
{
	static const unsigned bits[] = { 4, 6, 8 };
	unsigned d, b;

	for (d = 0; d < 2; d++) {
		float *w = make_weights((enum dist)d, 64, 576, 51 + d);

		for (b = 0; b < 3; b++) {
			struct qlayer La, Lm;
			struct nq_werr ea, em;

			qlayer_make(&La, w, 64, 576, 9, bits[b], NQ_WSCALE_ABSMAX, NULL, 0);
			qlayer_make(&Lm, w, 64, 576, 9, bits[b], NQ_WSCALE_MSE, NULL, 0);
			nq_weight_error(w, &La.sh, La.q, La.scale, &ea);
			nq_weight_error(w, &Lm.sh, Lm.q, Lm.scale, &em);
			ck_assert_msg(em.mse <= ea.mse, "%s INT%u: mse %g > absmax %g", dist_name[d],
				      bits[b], em.mse, ea.mse);
			/* With outliers at 4 bits clipping must pay off clearly. */
			if (d == LAPLACE_OUTLIERS && bits[b] == 4)
				ck_assert_msg(em.mse < 0.8 * ea.mse, "INT4 outliers: mse %g absmax %g",
					      em.mse, ea.mse);
			qlayer_free(&La);
			qlayer_free(&Lm);
		}
		free(w);
	}
}
END_TEST

START_TEST(nest_scale_removes_the_112_of_127_clipping)
{
	uint32_t oc = 64, k = 576, c, i;
	float *w = make_weights(GAUSS, oc, k, 61);
	struct qlayer La, Ln;
	struct nq_nest_opts o;
	struct nq_nested n;
	struct nq_werr e;

	/* Make each channel's largest magnitude positive, as the remark assumes. */
	for (c = 0; c < oc; c++) {
		float *row = w + (size_t)c * k, amax = 0;
		uint32_t imax = 0;

		for (i = 0; i < k; i++)
			if (fabsf(row[i]) > amax) {
				amax = fabsf(row[i]);
				imax = i;
			}
		row[imax] = amax;
	}
	qlayer_make(&La, w, oc, k, 9, 8, NQ_WSCALE_ABSMAX, NULL, 0);
	qlayer_make(&Ln, w, oc, k, 9, 8, NQ_WSCALE_NEST, chain48, 2);
	nest_opts(&o, chain48, 2, NQ_ROUND_NEAREST, NQ_TARGET_INT, NQ_RESIDUAL_EXACT);
	ck_assert_int_eq(nq_nested_alloc(&n, oc, k, &o), 0);

	ck_assert_int_eq(nq_nest(w, &La.sh, La.q, La.scale, NULL, &o, &n), 0);
	nq_weight_error(w, &La.sh, n.q[0], n.scale[0], &e);
	/* 127/16 = 7.94 steps wanted, 7 available: -0.9375 on every channel. */
	ck_assert_msg(fabs(e.clip_mean + 0.9375) < 1e-3, "absmax clip %g", e.clip_mean);

	ck_assert_int_eq(nq_nest(w, &Ln.sh, Ln.q, Ln.scale, NULL, &o, &n), 0);
	nq_weight_error(w, &Ln.sh, n.q[0], n.scale[0], &e);
	ck_assert_msg(fabs(e.clip_mean) < 0.05, "nest-aware clip %g", e.clip_mean);
	for (c = 0; c < oc; c++) {
		int qmax = -128;

		for (i = 0; i < k; i++)
			if (Ln.q[c * k + i] > qmax)
				qmax = Ln.q[c * k + i];
		ck_assert_int_eq(qmax, 112);	/* the top of the INT4 grid, exactly */
	}
	nq_nested_free(&n);
	qlayer_free(&La);
	qlayer_free(&Ln);
	free(w);
}
END_TEST

START_TEST(level_scale_refit_never_increases_error)
{
	float *w = make_weights(LAPLACE_OUTLIERS, 64, 576, 71);
	struct qlayer L;
	unsigned ci, lv;

	qlayer_make(&L, w, 64, 576, 9, 8, NQ_WSCALE_ABSMAX, NULL, 0);
	for (ci = 0; ci < 3; ci++) {
		struct nq_nest_opts o;
		struct nq_nested a, b;

		nest_opts(&o, chains[ci].lv, chains[ci].n, NQ_ROUND_SQUANT, NQ_TARGET_INT,
			  NQ_RESIDUAL_EXACT);
		ck_assert_int_eq(nq_nested_alloc(&a, 64, 576, &o), 0);
		ck_assert_int_eq(nq_nested_alloc(&b, 64, 576, &o), 0);
		ck_assert_int_eq(nq_nest(w, &L.sh, L.q, L.scale, NULL, &o, &a), 0);
		o.lscale = NQ_LSCALE_REFIT;
		ck_assert_int_eq(nq_nest(w, &L.sh, L.q, L.scale, NULL, &o, &b), 0);
		for (lv = 0; lv < o.nlevels; lv++) {
			struct nq_werr ea, eb;

			ck_assert_int_eq(memcmp(a.q[lv], b.q[lv], 64 * 576), 0);
			nq_weight_error(w, &L.sh, a.q[lv], a.scale[lv], &ea);
			nq_weight_error(w, &L.sh, b.q[lv], b.scale[lv], &eb);
			ck_assert(eb.mse <= ea.mse * (1 + 1e-9));
		}
		/* The top level keeps the INT-n scale in exact mode. */
		ck_assert_int_eq(memcmp(b.scale[o.nlevels - 1], L.scale, 64 * sizeof(float)), 0);
		nq_nested_free(&a);
		nq_nested_free(&b);
	}
	qlayer_free(&L);
	free(w);
}
END_TEST

/* ---- activation observers ---- */

static struct nq_act_qparams observe(enum nq_calib_method m, const float *x, size_t n,
				     size_t batch)
{
	struct nq_observer *o;
	struct nq_act_qparams qp;
	size_t i;

	ck_assert_int_eq(nq_observer_new(m, 99.99, &o), 0);
	for (i = 0; i < n; i += batch)
		ck_assert_int_eq(nq_observer_observe(o, x + i, n - i < batch ? n - i : batch), 0);
	ck_assert_msg(nq_observer_finalize(o, &qp) == 0, "%s", nq_last_error());
	nq_observer_free(o);
	return qp;
}

START_TEST(observers_on_uniform_data)
{
	size_t n = 1 << 20, i;
	float *x = malloc(sizeof(*x) * n);
	uint64_t s = 81;
	struct nq_act_qparams a, b;

	for (i = 0; i < n; i++)
		x[i] = (float)rng_unif(&s);
	a = observe(NQ_CALIB_MINMAX, x, n, n);
	ck_assert_int_eq(a.zero_point, 0);
	ck_assert_msg(fabs(a.scale * 255 - 1) < 1e-4, "minmax scale %g", a.scale);
	a = observe(NQ_CALIB_PERCENTILE, x, n, 4096);
	ck_assert_int_eq(a.zero_point, 0);
	ck_assert_msg(fabs(a.scale * 255 - 1) < 0.005, "percentile scale %g", a.scale);
	a = observe(NQ_CALIB_MSE, x, n, 4096);
	ck_assert_int_eq(a.zero_point, 0);
	/* Uniform data: clipping never pays, the range stays near [0, 1]. */
	ck_assert_msg(fabs(a.scale * 255 - 1) < 0.02, "mse scale %g", a.scale);

	/* Streaming: batch boundaries do not change the answer. */
	a = observe(NQ_CALIB_MSE, x, n, n);
	b = observe(NQ_CALIB_MSE, x, n, 1000);
	ck_assert(a.scale == b.scale && a.zero_point == b.zero_point);

	/* An outlier: minmax follows it, percentile clips it. */
	x[12345] = 1000.0f;
	a = observe(NQ_CALIB_MINMAX, x, n, 65536);
	ck_assert_msg(fabs(a.scale - 1000.0f / 255) < 1e-3, "minmax outlier scale %g", a.scale);
	a = observe(NQ_CALIB_PERCENTILE, x, n, 65536);
	ck_assert_msg(fabs(a.scale * 255 - 1) < 0.005, "percentile outlier scale %g", a.scale);
	/* MSE weighs the outlier's clipping error (1000 - h)^2 against the
	 * rounding noise n h^2 / (12 * 255^2) of everything else: optimum at
	 * h = 1000 / (1 + n / (12 * 255^2)) = 426.7 for n = 2^20. */
	a = observe(NQ_CALIB_MSE, x, n, 65536);
	ck_assert_msg(fabs(a.hi - 426.7) < 3, "mse outlier range hi %g", a.hi);
	free(x);
}
END_TEST

START_TEST(observers_on_signed_gaussian)
{
	size_t n = 1 << 20, i;
	float *x = malloc(sizeof(*x) * n);
	uint64_t s = 91;
	struct nq_act_qparams mm, ms;
	double emm = 0, ems = 0;

	for (i = 0; i < n; i++)
		x[i] = (float)rng_gauss(&s);
	mm = observe(NQ_CALIB_MINMAX, x, n, 8192);
	ck_assert_int_ge(mm.zero_point, 120);
	ck_assert_int_le(mm.zero_point, 136);
	ms = observe(NQ_CALIB_MSE, x, n, 8192);
	ck_assert(ms.hi < mm.hi && ms.hi > 2.5);
	ck_assert(ms.lo > mm.lo && ms.lo < -2.5);
	/* The MSE range must really have a lower quantization error. */
	for (i = 0; i < n; i++) {
		double d1 = x[i] - nq_act_dequantize(nq_act_quantize(x[i], &mm), &mm);
		double d2 = x[i] - nq_act_dequantize(nq_act_quantize(x[i], &ms), &ms);

		emm += d1 * d1;
		ems += d2 * d2;
	}
	ck_assert_msg(ems < emm, "mse observer error %g vs minmax %g", ems, emm);
	free(x);
}
END_TEST

START_TEST(activation_quantization_definition)
{
	struct nq_act_qparams qp;

	/* After ReLU: zero point exactly 0. */
	ck_assert_int_eq(nq_act_qparams_from_range(0.0f, 6.0f, &qp), 0);
	ck_assert_int_eq(qp.zero_point, 0);
	ck_assert_float_eq(qp.scale, 6.0f / 255);
	ck_assert_uint_eq(nq_act_quantize(0.0f, &qp), 0);
	ck_assert_uint_eq(nq_act_quantize(-1.0f, &qp), 0);
	ck_assert_uint_eq(nq_act_quantize(100.0f, &qp), 255);
	ck_assert_uint_eq(nq_act_quantize(0.5f * qp.scale, &qp), 1);	/* half away */
	ck_assert_uint_eq(nq_act_quantize(2.5f * qp.scale, &qp), 3);
	/* Signed range: 0.0 is exact. */
	ck_assert_int_eq(nq_act_qparams_from_range(-1.0f, 3.0f, &qp), 0);
	ck_assert_int_eq(qp.zero_point, 64);	/* round(1 / (4/255)) = round(63.75) */
	ck_assert_float_eq(nq_act_dequantize(nq_act_quantize(0.0f, &qp), &qp), 0.0f);
	/* A range not containing 0 is widened to contain it. */
	ck_assert_int_eq(nq_act_qparams_from_range(2.0f, 4.0f, &qp), 0);
	ck_assert_float_eq(qp.lo, 0.0f);
	ck_assert_int_eq(nq_act_qparams_from_range(1.0f, 0.0f, &qp), -EINVAL);
}
END_TEST

START_TEST(bad_arguments_are_rejected_with_a_message)
{
	unsigned lv[NQ_MAX_LEVELS], nl;
	struct nq_nest_opts o;
	struct nq_nested n;
	struct nq_wshape sh = { .oc = 2, .k = 9, .kernel = 2, .groups = 1 };
	float w[18] = { 0 }, s[2] = { 1, 1 };
	int8_t q[18] = { 0 };
	struct nq_observer *ob;
	struct nq_act_qparams qp;
	float bad = NAN;

	ck_assert_int_eq(nq_levels_parse("8,6", lv, &nl), 0);
	ck_assert_uint_eq(nl, 2);
	ck_assert_uint_eq(lv[0], 6);
	ck_assert_uint_eq(lv[1], 8);
	ck_assert_int_eq(nq_levels_parse("8,6,4", lv, &nl), 0);
	ck_assert(nl == 3 && lv[0] == 4 && lv[2] == 8);
	ck_assert_int_eq(nq_levels_parse("8,8", lv, &nl), -EINVAL);
	ck_assert_int_eq(nq_levels_parse("9", lv, &nl), -EINVAL);
	ck_assert_int_eq(nq_levels_parse("8,x", lv, &nl), -EINVAL);
	ck_assert_int_eq(nq_levels_parse("", lv, &nl), -EINVAL);

	nest_opts(&o, chain68, 2, NQ_ROUND_NEAREST, NQ_TARGET_INT, NQ_RESIDUAL_EXACT);
	ck_assert_int_eq(nq_nested_alloc(&n, 2, 9, &o), 0);
	/* kernel 2 does not divide k 9 */
	ck_assert_int_eq(nq_nest(w, &sh, q, s, NULL, &o, &n), -EINVAL);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "kernel"));
	sh.kernel = 9;
	q[3] = -128;	/* outside symmetric... but inside INT8 two's complement: allowed */
	ck_assert_int_eq(nq_nest(w, &sh, q, s, NULL, &o, &n), 0);
	s[1] = 0;
	ck_assert_int_eq(nq_nest(w, &sh, q, s, NULL, &o, &n), -EINVAL);
	s[1] = 1;
	o.round.method = NQ_ROUND_ADAROUND;
	o.target = NQ_TARGET_FLOAT;
	ck_assert_int_eq(nq_nest(w, &sh, q, s, NULL, &o, &n), -EINVAL);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "calibration"));
	nq_nested_free(&n);

	/* Levels 6 -> 4 with INT6 input out of range. */
	nest_opts(&o, (const unsigned[]){ 4, 6 }, 2, NQ_ROUND_NEAREST, NQ_TARGET_INT,
		  NQ_RESIDUAL_EXACT);
	ck_assert_int_eq(nq_nested_alloc(&n, 2, 9, &o), 0);
	q[3] = 40;
	ck_assert_int_eq(nq_nest(w, &sh, q, s, NULL, &o, &n), -ERANGE);
	nq_nested_free(&n);

	ck_assert_int_eq(nq_observer_new(NQ_CALIB_PERCENTILE, 30, &ob), -EINVAL);
	ck_assert_int_eq(nq_observer_new(NQ_CALIB_MINMAX, 0, &ob), 0);
	ck_assert_int_eq(nq_observer_finalize(ob, &qp), -ENODATA);
	ck_assert_int_eq(nq_observer_observe(ob, &bad, 1), -EINVAL);
	nq_observer_free(ob);
}
END_TEST

/* ---- the measured table ---- */

static void report_chain(const struct qlayer *L, int print, double *worst_ratio)
{
	static const struct {
		enum nq_round r;
		enum nq_nest_target t;
		const char *name;
	} m[] = {
		{ NQ_ROUND_TRUNCATE, NQ_TARGET_INT, "truncate" },
		{ NQ_ROUND_NEAREST, NQ_TARGET_INT, "nearest/int" },
		{ NQ_ROUND_NEAREST, NQ_TARGET_FLOAT, "nearest/float" },
		{ NQ_ROUND_SQUANT, NQ_TARGET_INT, "squant/int" },
		{ NQ_ROUND_SQUANT, NQ_TARGET_FLOAT, "squant/float" },
	};
	unsigned ci, mi, lv;

	for (ci = 0; ci < 3; ci++) {
		double ref[NQ_MAX_LEVELS];

		/* Reference: standalone INT-b, absmax, nearest, from the floats. */
		for (lv = 0; lv < chains[ci].n; lv++) {
			struct qlayer S;
			struct nq_werr e;

			qlayer_make(&S, L->w, L->sh.oc, L->sh.k, L->sh.kernel, chains[ci].lv[lv],
				    NQ_WSCALE_ABSMAX, NULL, 0);
			nq_weight_error(L->w, &S.sh, S.q, S.scale, &e);
			ref[lv] = e.mse;
			qlayer_free(&S);
		}
		for (mi = 0; mi < sizeof(m) / sizeof(*m); mi++) {
			struct nq_nest_opts o;
			struct nq_nested n;

			nest_opts(&o, chains[ci].lv, chains[ci].n, m[mi].r, m[mi].t, NQ_RESIDUAL_EXACT);
			ck_assert_int_eq(nq_nested_alloc(&n, L->sh.oc, L->sh.k, &o), 0);
			ck_assert_int_eq(nq_nest(L->w, &L->sh, L->q, L->scale, NULL, &o, &n), 0);
			if (print)
				printf("  %-6s %-14s", chains[ci].name, m[mi].name);
			for (lv = chains[ci].n; lv-- > 0;) {
				struct nq_werr e;

				nq_weight_error(L->w, &L->sh, n.q[lv], n.scale[lv], &e);
				if (print)
					printf("  INT%u %6.3fx %5.1fdB", chains[ci].lv[lv], e.mse / ref[lv],
					       e.sqnr_db);
				if (m[mi].r != NQ_ROUND_TRUNCATE && e.mse / ref[lv] > *worst_ratio)
					*worst_ratio = e.mse / ref[lv];
			}
			if (print)
				printf("\n");
			nq_nested_free(&n);
		}
	}
}

static void report_scales(const float *w, uint32_t oc, uint32_t k, int print)
{
	static const enum nq_wscale sc[] = { NQ_WSCALE_ABSMAX, NQ_WSCALE_MSE, NQ_WSCALE_NEST,
					     NQ_WSCALE_NEST_MSE };
	unsigned ci, si, refit, res;

	for (ci = 0; ci < 3; ci++)
		for (si = 0; si < 4; si++)
			for (refit = 0; refit < 2; refit++)
				for (res = 0; res < 2; res++) {
					struct qlayer L;
					struct nq_nest_opts o;
					struct nq_nested n;
					unsigned lv;

					if (res && refit)
						continue;
					qlayer_make(&L, w, oc, k, 9, 8, sc[si], chains[ci].lv, chains[ci].n);
					nest_opts(&o, chains[ci].lv, chains[ci].n, NQ_ROUND_SQUANT,
						  NQ_TARGET_INT, res ? NQ_RESIDUAL_COMPACT : NQ_RESIDUAL_EXACT);
					o.lscale = refit ? NQ_LSCALE_REFIT : NQ_LSCALE_SHIFT;
					ck_assert_int_eq(nq_nested_alloc(&n, oc, k, &o), 0);
					ck_assert_int_eq(nq_nest(w, &L.sh, L.q, L.scale, NULL, &o, &n), 0);
					if (print)
						printf("  %-6s %-8s %-6s %-7s", chains[ci].name,
						       nq_wscale_name(sc[si]), refit ? "refit" : "shift",
						       res ? "compact" : "exact");
					for (lv = chains[ci].n; lv-- > 0;) {
						struct nq_werr e;

						nq_weight_error(w, &L.sh, n.q[lv], n.scale[lv], &e);
						if (print)
							printf("  INT%u %5.1fdB clip %+5.2f", chains[ci].lv[lv],
							       e.sqnr_db, e.clip_mean);
					}
					if (print)
						printf("\n");
					nq_nested_free(&n);
					qlayer_free(&L);
				}
}

START_TEST(report_weight_error_table)
{
	int print = getenv("NQ_QUANT_REPORT") != NULL;
	unsigned d;

	for (d = 0; d < 2; d++) {
		float *w = make_weights((enum dist)d, 64, 576, 101 + d);
		struct qlayer L;
		double worst = 0;

		qlayer_make(&L, w, 64, 576, 9, 8, NQ_WSCALE_ABSMAX, NULL, 0);
		if (print)
			printf("weight MSE relative to standalone INT-b (absmax, nearest); %s, 64x576, "
			       "INT8 absmax:\n", dist_name[d]);
		report_chain(&L, print, &worst);
		/* No nested non-truncating level may be more than 2x a dedicated model. */
		ck_assert_msg(worst < 2.0, "%s: nested level at %.2fx standalone", dist_name[d], worst);
		if (print) {
			printf("scale options (squant/int), SQNR per level and mean clip at channel max (steps):\n");
			report_scales(w, 64, 576, print);
		}
		qlayer_free(&L);
		free(w);
	}
}
END_TEST

static double secs(clockid_t id, const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(id, &t1);
	return (t1.tv_sec - t0->tv_sec) + (t1.tv_nsec - t0->tv_nsec) * 1e-9;
}

/* ResNet-18's largest conv (layer4, 512 x 512*3*3): how long adaround takes. */
START_TEST(bench_adaround_resnet18_layer)
{
	uint32_t oc = 512, k = 512 * 9;
	size_t rows = 1024, held = 256;
	float *w, *x, *xh;
	struct qlayer L;
	struct nq_gram g;
	struct nq_nest_opts o;
	struct nq_nested n;
	struct timespec w0, c0;
	double gram_wall, gram_cpu, sq_wall, sq_cpu, ada_wall, ada_cpu;
	double en, ea, enh, eah, sig;

	if (!getenv("NQ_QUANT_BENCH"))
		NQ_SKIP("benchmark (ResNet-18 layer4 conv, 512x4608, adaround): set NQ_QUANT_BENCH=1");
	w = make_weights(GAUSS, oc, k, 111);
	x = make_patches(rows, k, 9, 112);
	xh = make_patches(held, k, 9, 113);
	qlayer_make(&L, w, oc, k, 9, 8, NQ_WSCALE_ABSMAX, NULL, 0);

	clock_gettime(CLOCK_MONOTONIC, &w0);
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
	ck_assert_int_eq(nq_gram_build(x, rows, k, 1024, 1, 0.01f, 2, &g), 0);
	gram_wall = secs(CLOCK_MONOTONIC, &w0);
	gram_cpu = secs(CLOCK_PROCESS_CPUTIME_ID, &c0);

	nest_opts(&o, chain48, 2, NQ_ROUND_SQUANT, NQ_TARGET_FLOAT, NQ_RESIDUAL_EXACT);
	ck_assert_int_eq(nq_nested_alloc(&n, oc, k, &o), 0);
	clock_gettime(CLOCK_MONOTONIC, &w0);
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
	ck_assert_int_eq(nq_nest(w, &L.sh, L.q, L.scale, &g, &o, &n), 0);
	sq_wall = secs(CLOCK_MONOTONIC, &w0);
	sq_cpu = secs(CLOCK_PROCESS_CPUTIME_ID, &c0);
	nq_output_error(x, 256, w, &L.sh, n.q[0], n.scale[0], &en, &sig);
	nq_output_error(xh, held, w, &L.sh, n.q[0], n.scale[0], &enh, &sig);

	o.round.method = NQ_ROUND_ADAROUND;
	o.round.threads = 2;
	clock_gettime(CLOCK_MONOTONIC, &w0);
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
	ck_assert_int_eq(nq_nest(w, &L.sh, L.q, L.scale, &g, &o, &n), 0);
	ada_wall = secs(CLOCK_MONOTONIC, &w0);
	ada_cpu = secs(CLOCK_PROCESS_CPUTIME_ID, &c0);
	nq_output_error(x, 256, w, &L.sh, n.q[0], n.scale[0], &ea, &sig);
	nq_output_error(xh, held, w, &L.sh, n.q[0], n.scale[0], &eah, &sig);

	printf("512x4608 8|4, %zu calibration rows: gram %.2f s wall / %.2f s cpu; squant nest "
	       "%.2f / %.2f s; adaround nest %.2f / %.2f s (2 threads)\n"
	       "  part-bit output MSE: calibration rows squant %.4g adaround %.4g; held-out rows "
	       "squant %.4g adaround %.4g (signal %.4g)\n",
	       rows, gram_wall, gram_cpu, sq_wall, sq_cpu, ada_wall, ada_cpu, en, ea, enh, eah, sig);
	ck_assert(ea <= en);
	nq_nested_free(&n);
	nq_gram_free(&g);
	qlayer_free(&L);
	free(w);
	free(x);
	free(xh);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("quant");
	TCase *tc = tcase_create("quant");

	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, exact_mode_top_level_equals_int8_model);
	tcase_add_test(tc, compact_mode_residual_has_exactly_l_bits);
	tcase_add_test(tc, compact_mode_cost_at_the_top_level);
	tcase_add_test(tc, truncate_is_arithmetic_shift_and_nearest_is_rounding);
	tcase_add_test(tc, squant_flip_bounds_the_summed_errors);
	tcase_add_test(tc, truncation_is_at_least_twice_worse);
	tcase_add_test(tc, gram_matches_naive_sum_and_streams);
	tcase_add_test(tc, adaround_output_error_not_above_nearest);
	tcase_add_test(tc, adaround_wins_on_held_out_low_rank_inputs);
	tcase_add_test(tc, mse_scale_not_worse_than_absmax);
	tcase_add_test(tc, nest_scale_removes_the_112_of_127_clipping);
	tcase_add_test(tc, level_scale_refit_never_increases_error);
	tcase_add_test(tc, observers_on_uniform_data);
	tcase_add_test(tc, observers_on_signed_gaussian);
	tcase_add_test(tc, activation_quantization_definition);
	tcase_add_test(tc, bad_arguments_are_rejected_with_a_message);
	tcase_add_test(tc, report_weight_error_table);
	tcase_add_test(tc, bench_adaround_resnet18_layer);
	suite_add_tcase(s, tc);
	return nq_test_run(s);
}
