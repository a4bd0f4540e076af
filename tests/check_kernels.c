// SPDX-License-Identifier: MIT
/*
 * Every SIMD kernel table against the scalar oracle (kernels/scalar.c), byte
 * for byte, on random shapes: odd channel counts and tails, k = 9/27/odd,
 * groups, depthwise, strides, pads, dilation, every level of 1-, 2- and
 * 3-level chains with exact and compact residuals (3- and 5-bit), extreme
 * zero points, biases and multipliers.  A table this CPU cannot run is
 * skipped with the reason.  Also the thread pool, the CPU-count rules, and
 * that splitting a layer across any number of threads gives the same bytes.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "kernels/kernels.h"
#include "kernels/pack.h"
#include "nq_error.h"
#include "nq_format.h"
#include "nq_test.h"
#include "requant.h"
#include "threadpool.h"

/* ---- the tables under test ---- */

struct isa_case {
	const char *name;
	const struct nq_kernels *k;	/* NULL: not in this build */
	bool (*usable)(void);
};

static const struct isa_case isas[] = {
#if defined(__x86_64__)
	{ "avx512", &nq_kernels_avx512, nq_cpu_avx512_usable },
	{ "avx2", &nq_kernels_avx2, nq_cpu_avx2_usable },
#else
	{ "avx512", NULL, NULL },
	{ "avx2", NULL, NULL },
#endif
#if defined(__aarch64__)
	{ "neon", &nq_kernels_neon, NULL },
#else
	{ "neon", NULL, NULL },
#endif
};
#define NISAS (int)(sizeof(isas) / sizeof(isas[0]))

/* The table of loop index i, or NULL after recording a skip. */
#define TABLE_OR_SKIP(i)                                                                  \
	({                                                                                \
		const struct isa_case *c_ = &isas[(i) % NISAS];                           \
		test_layout = (i) / NISAS ? NQ_PLANE_PANEL16X4 : NQ_PLANE_ROWS;           \
		if (!c_->k)                                                               \
			NQ_SKIP("%s: not built for this architecture%s", c_->name,      \
				!strcmp(c_->name, "neon") ?                               \
				" (tests/integration/kernels-arm64.sh runs it under qemu)" : ""); \
		if (c_->usable && !c_->usable())                                          \
			NQ_SKIP("%s: this CPU lacks the instructions", c_->name);        \
		c_->k;                                                                    \
	})

/* ---- deterministic randomness ---- */

static uint64_t rng = 0x2545f4914f6cdd1dull;

static uint32_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 16);
}

static int rr(int lo, int hi)	/* [lo, hi] */
{
	return lo + (int)(rnd() % (uint32_t)(hi - lo + 1));
}

static void *xalloc(size_t n)
{
	void *p = aligned_alloc(64, (n + 63) & ~(size_t)63);

	ck_assert_ptr_nonnull(p);
	return p;
}

/* ---- a random nested layer ---- */

struct layer {
	uint32_t oc, k, levels;
	uint8_t bits[4];
	uint8_t *plane[4];
	struct nq_weights wt;
	int32_t *bias;
	struct nq_rq *rq;
};

/* Level chains: bits per level, and residual mode 0 exact, 1 compact signed,
 * 2 compact unsigned. */
static const struct chain {
	int n;
	uint8_t bits[4];
	int mode;
} chains[] = {
	{ 1, { 8 }, 0 }, { 1, { 5 }, 0 },
	{ 2, { 6, 8 }, 0 },	/* residual 3-bit signed */
	{ 2, { 4, 8 }, 0 },	/* residual 5-bit signed */
	{ 2, { 6, 8 }, 1 }, { 2, { 4, 8 }, 2 }, { 2, { 7, 8 }, 0 },
	{ 3, { 4, 6, 8 }, 0 }, { 3, { 2, 5, 8 }, 2 }, { 3, { 3, 4, 7 }, 1 },
};
#define NCHAINS (int)(sizeof(chains) / sizeof(chains[0]))

static void rand_rq(struct nq_rq *rq)
{
	switch (rr(0, 9)) {
	case 0:
		rq->m = INT32_MAX, rq->s = 1;
		break;
	case 1:
		rq->m = 0, rq->s = 31;
		break;
	case 2:
		rq->m = (int32_t)(rnd() | 0x40000000u) & INT32_MAX, rq->s = 62;
		break;
	case 3:
	case 4:		/* near 1: one unit of the accumulator shows */
		nq_rq_derive((double)rr(300, 1500) / 1000.0, rq);
		break;
	default:
		nq_rq_derive((double)rr(1, 100000) * 1e-6 * (rr(0, 3) ? 1 : 100), rq);
	}
}

/*
 * A random layer of oc x k weights whose planes are in `layout`
 * (NQ_PLANE_ROWS or NQ_PLANE_PANEL16X4).  ROWS: rows padded to 8 bytes plus
 * a random extra, as a file might.  PANEL16X4: half the time the padding
 * (channels past oc, weights past k) holds random values instead of zeros,
 * which readers must ignore.
 */
static void make_layer_in(struct layer *L, uint32_t oc, uint32_t k, int chain, uint32_t layout)
{
	const struct chain *ch = &chains[chain];
	const bool panel = layout == NQ_PLANE_PANEL16X4;
	const uint32_t ocp = panel ? nq_round_up(oc, 16) : oc, kpad = panel ? nq_round_up(k, 4) : k;
	const bool junk = panel && rr(0, 1);
	int8_t *q = malloc(kpad), *vals[4];
	uint32_t stride[4];

	memset(L, 0, sizeof(*L));
	L->oc = oc;
	L->k = k;
	L->levels = ch->n;
	for (int l = 0; l < ch->n; l++) {
		unsigned int pb = l == 0 ? ch->bits[0] :
				  ch->mode == 0 ? ch->bits[l] - ch->bits[l - 1] + 1 :
				  ch->mode == 1 ? ch->bits[l] - ch->bits[l - 1] :
				  ch->bits[l] - ch->bits[l - 1];
		size_t size;

		if (pb < 1)
			pb = 1;
		L->bits[l] = ch->bits[l];
		stride[l] = (uint32_t)((nq_packed_bytes(k, pb) + 7) & ~7ull) + (uint32_t)rr(0, 2) * 8;
		size = panel ? nq_panel_plane_bytes(oc, k, pb) : (size_t)stride[l] * oc;
		L->plane[l] = calloc(1, size + 8);
		L->wt.plane[l] = (struct nq_plane_view){
			.data = L->plane[l], .row_stride = panel ? 0 : stride[l], .rows = oc, .k = k,
			.bits = pb, .is_signed = l == 0 || ch->mode != 2, .layout = layout,
		};
		L->wt.level_bits[l] = ch->bits[l];
		vals[l] = calloc((size_t)ocp * kpad, 1);
	}
	for (uint32_t c = 0; c < ocp; c++) {
		int extreme = rr(0, 7);

		for (int l = 0; l < ch->n; l++) {
			const struct nq_plane_view *p = &L->wt.plane[l];
			int8_t *r = vals[l] + (size_t)c * kpad;
			int lo, hi;

			ck_assert_int_eq(nq_bits_range(p->bits, p->is_signed, &lo, &hi), 0);
			for (uint32_t j = 0; j < kpad; j++) {
				int qlo = -(1 << (ch->bits[l] - 1)), qhi = -qlo - 1, v;

				if (c >= oc || j >= k) {
					r[j] = (int8_t)(junk ? rr(lo, hi) : 0);
					continue;
				}
				if (l == 0) {
					v = extreme == 0 ? lo : extreme == 1 ? hi : rr(lo, hi);
					q[j] = (int8_t)v;
					r[j] = (int8_t)v;
					continue;
				}
				v = rr(lo, hi);
				int base = q[j] * (1 << (ch->bits[l] - ch->bits[l - 1]));
				if (base + v < qlo || base + v > qhi)
					v = base + lo >= qlo && base + lo <= qhi ? lo :
					    base + hi >= qlo && base + hi <= qhi ? hi : 0;
				if (v < lo || v > hi)	/* 0 outside an unsigned/compact range */
					v = lo;
				r[j] = (int8_t)v;
				q[j] = (int8_t)(base + v);
			}
			/* The padded matrix packs into the same panel positions
			 * (same quads per channel), padding included. */
			ck_assert_int_eq(nq_plane_pack_row(L->plane[l], layout, stride[l], kpad, c, r,
							   p->bits, p->is_signed), 0);
		}
	}
	for (int l = 0; l < ch->n; l++)
		free(vals[l]);
	L->bias = malloc(sizeof(int32_t) * oc);
	L->rq = malloc(sizeof(struct nq_rq) * oc);
	for (uint32_t c = 0; c < oc; c++) {
		int32_t limit = (int32_t)(2147483647ll - (int64_t)k * 255 * 128);

		L->bias[c] = rr(0, 9) == 0 ? (rr(0, 1) ? limit : -limit) : rr(-100000, 100000);
		rand_rq(&L->rq[c]);
	}
	free(q);
}

/* Layout under test: loop tests run _i over NISAS tables x 2 layouts. */
static uint32_t test_layout = NQ_PLANE_ROWS;

/* Panel order only where files may have it: groups == 1. */
static void make_layer(struct layer *L, uint32_t oc, uint32_t k, int chain, uint32_t groups)
{
	make_layer_in(L, oc, k, chain, groups == 1 ? test_layout : NQ_PLANE_ROWS);
}

/* Values of channel c of plane l, and replacing them (either layout). */
static void get_row(const struct layer *L, int l, uint32_t c, int8_t *v)
{
	ck_assert_int_eq(nq_plane_unpack(&L->wt.plane[l], c, 0, L->k, v), 0);
}

static void set_row(struct layer *L, int l, uint32_t c, const int8_t *v)
{
	const struct nq_plane_view *p = &L->wt.plane[l];
	int8_t *all;

	if (p->layout == NQ_PLANE_ROWS) {
		ck_assert_int_eq(nq_plane_pack_row(L->plane[l], p->layout, p->row_stride, L->k, c, v,
						   p->bits, p->is_signed), 0);
		return;
	}
	/* Panel fields are ORed in: repack the whole plane. */
	all = malloc((size_t)L->oc * L->k);
	for (uint32_t r = 0; r < L->oc; r++)
		get_row(L, l, r, all + (size_t)r * L->k);
	memcpy(all + (size_t)c * L->k, v, L->k);
	memset(L->plane[l], 0, nq_panel_plane_bytes(L->oc, L->k, p->bits));
	for (uint32_t r = 0; r < L->oc; r++)
		ck_assert_int_eq(nq_plane_pack_row(L->plane[l], p->layout, 0, L->k, r,
						   all + (size_t)r * L->k, p->bits, p->is_signed), 0);
	free(all);
}

static void free_layer(struct layer *L)
{
	for (uint32_t l = 0; l < L->levels; l++)
		free(L->plane[l]);
	free(L->bias);
	free(L->rq);
}

/* ---- running a conv on two tables ---- */

struct conv_case {
	uint32_t n, h, w, c, oc, groups, kh, kw, sh, sw, pt, pl, pb, pr, dh, dw;
};

static uint32_t out_dim(uint32_t in, uint32_t k, uint32_t s, uint32_t p0, uint32_t p1, uint32_t d)
{
	int64_t span = (int64_t)(k - 1) * d + 1, padded = (int64_t)in + p0 + p1;

	return padded < span ? 0 : (uint32_t)((padded - span) / s + 1);
}

static void fill_args(struct nq_conv_args *a, const struct conv_case *cc, const struct layer *L,
		      uint32_t level)
{
	memset(a, 0, sizeof(*a));
	a->wt = L->wt;
	a->wt.level = level;
	a->oc = cc->oc;
	a->groups = cc->groups;
	a->cin_per_group = cc->c / cc->groups;
	a->kh = cc->kh;
	a->kw = cc->kw;
	a->k = cc->kh * cc->kw * a->cin_per_group;
	a->stride_h = cc->sh, a->stride_w = cc->sw;
	a->pad_t = cc->pt, a->pad_l = cc->pl;
	a->dil_h = cc->dh, a->dil_w = cc->dw;
	a->in = (struct nq_nhwc){ cc->n, cc->h, cc->w, cc->c };
	a->out = (struct nq_nhwc){ cc->n, out_dim(cc->h, cc->kh, cc->sh, cc->pt, cc->pb, cc->dh),
				   out_dim(cc->w, cc->kw, cc->sw, cc->pl, cc->pr, cc->dw), cc->oc };
	a->bias32 = L->bias;
	a->rq = L->rq;
	switch (rr(0, 5)) {
	case 0:
		a->zx = 0;
		break;
	case 1:
		a->zx = 255;
		break;
	default:
		a->zx = rr(0, 255);
	}
	switch (rr(0, 3)) {
	case 0:			/* s8 output */
		a->zy = rr(-128, 127), a->lo = -128, a->hi = 127;
		break;
	case 1:			/* fused ReLU */
		a->zy = rr(0, 255), a->lo = a->zy, a->hi = 255;
		break;
	case 2:			/* Clip, possibly empty (lo > hi) */
		a->zy = rr(0, 255), a->lo = rr(0, 255), a->hi = rr(0, 255);
		break;
	default:
		a->zy = rr(0, 255), a->lo = 0, a->hi = 255;
	}
}

static void fill_input(uint8_t *x, size_t n)
{
	int mode = rr(0, 7);

	for (size_t i = 0; i < n; i++)
		x[i] = mode == 0 ? 255 : mode == 1 ? 0 : (uint8_t)rnd();
}

enum which { CONV, CONV_DW, GEMM };

static int run_conv(const struct nq_kernels *k, enum which w, const struct nq_conv_args *a0,
		    const uint8_t *in, uint8_t *out)
{
	struct nq_conv_args a = *a0;
	int8_t *tile = xalloc(k->tile_bytes(a.k, a.oc));
	int err;

	a.tile = tile;
	err = w == CONV ? k->conv(&a, in, out) : w == CONV_DW ? k->conv_dw(&a, in, out) :
	      k->gemm(&a, in, out);
	free(tile);
	return err;
}

static void describe(char *buf, size_t n, const struct conv_case *cc, const struct layer *L,
		     int chain, uint32_t level, const struct nq_conv_args *a)
{
	snprintf(buf, n, "in %ux%ux%ux%u oc %u groups %u k %ux%u stride %u,%u pad %u,%u,%u,%u "
		 "dil %u,%u chain %d level %u/%u zx %d zy %d [%d,%d] planes %s",
		 cc->n, cc->h, cc->w, cc->c, cc->oc, cc->groups, cc->kh, cc->kw, cc->sh, cc->sw,
		 cc->pt, cc->pl, cc->pb, cc->pr, cc->dh, cc->dw, chain, level, L->levels,
		 a->zx, a->zy, a->lo, a->hi, nq_plane_layout_name(L->wt.plane[0].layout));
}

/* Run one case at every level on the table and the oracle; compare bytes. */
static void compare_case(const struct nq_kernels *k, enum which w, const struct conv_case *cc,
			 int chain)
{
	struct layer L;
	struct nq_conv_args a;
	uint32_t cpg = cc->c / cc->groups, K = cc->kh * cc->kw * cpg;
	size_t in_bytes = (size_t)cc->n * cc->h * cc->w * cc->c;
	uint8_t *in = xalloc(in_bytes + 1);
	char what[320];

	make_layer(&L, cc->oc, K, chain, cc->groups);
	fill_input(in, in_bytes);
	for (uint32_t level = 0; level < L.levels; level++) {
		size_t out_bytes;
		uint8_t *o1, *o2;

		fill_args(&a, cc, &L, level);
		out_bytes = (size_t)a.out.n * a.out.h * a.out.w * a.out.c;
		o1 = xalloc(out_bytes + 1);
		o2 = xalloc(out_bytes + 1);
		memset(o1, 0xa5, out_bytes + 1);
		memset(o2, 0xa5, out_bytes + 1);
		ck_assert_int_eq(run_conv(&nq_kernels_scalar, w, &a, in, o1), 0);
		ck_assert_int_eq(run_conv(k, w, &a, in, o2), 0);
		if (memcmp(o1, o2, out_bytes + 1)) {
			size_t i = 0;

			while (o1[i] == o2[i])
				i++;
			describe(what, sizeof(what), cc, &L, chain, level, &a);
			ck_abort_msg("%s differs from scalar at byte %zu (%u vs %u): %s", k->name, i,
				     o2[i], o1[i], what);
		}
		free(o1);
		free(o2);
	}
	free(in);
	free_layer(&L);
}

static void random_case(struct conv_case *cc, bool depthwise)
{
	uint32_t g = depthwise ? 0 : (rr(0, 4) == 0 ? (uint32_t)rr(2, 4) : 1);
	uint32_t cpg = depthwise ? 1 : (uint32_t)rr(1, 3) == 1 ? (uint32_t)rr(1, 80) : (uint32_t)rr(1, 12) * 4;
	static const uint32_t ks[] = { 1, 1, 3, 3, 3, 5, 7, 2 };

	cc->n = (uint32_t)rr(1, 2);
	cc->kh = ks[rr(0, 7)];
	cc->kw = rr(0, 3) ? cc->kh : ks[rr(0, 7)];
	cc->sh = (uint32_t)rr(1, 3);
	cc->sw = rr(0, 1) ? cc->sh : (uint32_t)rr(1, 2);
	cc->dh = rr(0, 4) ? 1 : 2;
	cc->dw = rr(0, 4) ? cc->dh : (uint32_t)rr(1, 2);
	cc->pt = (uint32_t)rr(0, 3), cc->pb = (uint32_t)rr(0, 3);
	cc->pl = (uint32_t)rr(0, 3), cc->pr = (uint32_t)rr(0, 3);
	cc->h = (uint32_t)rr(1, 14);
	cc->w = (uint32_t)rr(1, 14);
	if (depthwise) {
		cc->c = (uint32_t)rr(1, 80);
		cc->groups = cc->c;
		cc->oc = cc->c;
	} else {
		cc->groups = g;
		cc->c = g * cpg;
		cc->oc = g * (uint32_t)rr(1, 70);
	}
	/* Keep at least one output position. */
	while (out_dim(cc->h, cc->kh, cc->sh, cc->pt, cc->pb, cc->dh) == 0)
		cc->h++;
	while (out_dim(cc->w, cc->kw, cc->sw, cc->pl, cc->pr, cc->dw) == 0)
		cc->w++;
}

START_TEST(conv_matches_scalar_on_random_shapes)
{
	const struct nq_kernels *k = TABLE_OR_SKIP(_i);
	struct conv_case cc;

	for (int t = 0; t < 150; t++) {
		random_case(&cc, false);
		compare_case(k, CONV, &cc, rr(0, NCHAINS - 1));
	}
}
END_TEST

START_TEST(conv_matches_scalar_on_resnet_like_shapes)
{
	const struct nq_kernels *k = TABLE_OR_SKIP(_i);
	static const struct conv_case shapes[] = {
		/* stem: k = 147, stride 2, pad 3 */
		{ 1, 20, 20, 3, 64, 1, 7, 7, 2, 2, 3, 3, 3, 3, 1, 1 },
		/* 3x3 pad 1, k = 576 / 1152 */
		{ 1, 9, 9, 64, 64, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1 },
		{ 1, 7, 7, 128, 128, 1, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1 },
		/* pointwise, oc tail, k = 256 / 64 / 100 */
		{ 1, 7, 5, 256, 200, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1 },
		{ 1, 13, 3, 64, 256, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1 },
		{ 2, 5, 5, 100, 17, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1 },
		/* downsample 1x1 stride 2 */
		{ 1, 9, 9, 64, 128, 1, 1, 1, 2, 2, 0, 0, 0, 0, 1, 1 },
		/* k = 27: 3x3 over 3 channels; k = 9: 3x3 over 1 channel */
		{ 1, 11, 11, 3, 16, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1 },
		{ 1, 11, 11, 1, 8, 1, 3, 3, 1, 1, 0, 0, 0, 0, 1, 1 },
	};

	for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++)
		for (int chain = 0; chain < NCHAINS; chain += 3)
			compare_case(k, CONV, &shapes[s], chain);
}
END_TEST

START_TEST(depthwise_matches_scalar)
{
	const struct nq_kernels *k = TABLE_OR_SKIP(_i);
	struct conv_case cc;

	for (int t = 0; t < 120; t++) {
		random_case(&cc, true);
		compare_case(k, CONV_DW, &cc, rr(0, NCHAINS - 1));
	}
}
END_TEST

START_TEST(gemm_matches_scalar)
{
	const struct nq_kernels *k = TABLE_OR_SKIP(_i);

	for (int t = 0; t < 60; t++) {
		uint32_t K = t < 3 ? (uint32_t[]){ 512, 2048, 9 }[t] : (uint32_t)rr(1, 700);
		struct conv_case cc = { (uint32_t)rr(1, 3), 1, 1, K, (uint32_t)rr(1, 150), 1, 1, 1,
					1, 1, 0, 0, 0, 0, 1, 1 };

		compare_case(k, GEMM, &cc, rr(0, NCHAINS - 1));
	}
}
END_TEST

/*
 * The same weights stored in both layouts give the same bytes on every
 * table, the oracle included (the oracle's panel reader is checked against
 * its row reader, not only against itself): odd oc and k.
 */
START_TEST(both_layouts_give_the_same_bytes)
{
	const struct nq_kernels *k = TABLE_OR_SKIP(_i);

	for (int t = 0; t < 40; t++) {
		struct conv_case cc;
		struct layer R, P;
		struct nq_conv_args a;
		uint8_t *in, *o[3];
		size_t ib, ob;
		int8_t *v;

		random_case(&cc, false);
		cc.groups = 1;
		cc.c = t % 3 ? (uint32_t)rr(1, 90) : (uint32_t)rr(1, 12) * 4;
		cc.oc = (uint32_t)rr(1, 90) | 1;
		make_layer_in(&R, cc.oc, cc.kh * cc.kw * cc.c, rr(0, NCHAINS - 1), NQ_PLANE_ROWS);
		P = R;
		v = malloc(R.k);
		for (uint32_t l = 0; l < R.levels; l++) {
			const struct nq_plane_view *rp = &R.wt.plane[l];
			size_t size = nq_panel_plane_bytes(R.oc, R.k, rp->bits);

			P.plane[l] = calloc(1, size);
			P.wt.plane[l].data = P.plane[l];
			P.wt.plane[l].layout = NQ_PLANE_PANEL16X4;
			P.wt.plane[l].row_stride = 0;
			P.wt.plane[l].size = size;
			for (uint32_t c = 0; c < R.oc; c++) {
				get_row(&R, (int)l, c, v);
				ck_assert_int_eq(nq_plane_pack_row(P.plane[l], NQ_PLANE_PANEL16X4, 0, R.k,
								   c, v, rp->bits, rp->is_signed), 0);
			}
		}
		free(v);
		ib = (size_t)cc.n * cc.h * cc.w * cc.c;
		in = xalloc(ib + 1);
		fill_input(in, ib);
		for (uint32_t level = 0; level < R.levels; level++) {
			fill_args(&a, &cc, &R, level);
			ob = (size_t)a.out.n * a.out.h * a.out.w * a.out.c;
			for (int i = 0; i < 3; i++) {
				o[i] = xalloc(ob + 1);
				memset(o[i], 0x5a, ob + 1);
			}
			ck_assert_int_eq(run_conv(&nq_kernels_scalar, CONV, &a, in, o[0]), 0);
			a.wt = P.wt;
			a.wt.level = level;
			ck_assert_int_eq(run_conv(&nq_kernels_scalar, CONV, &a, in, o[1]), 0);
			ck_assert_int_eq(run_conv(k, CONV, &a, in, o[2]), 0);
			ck_assert_msg(!memcmp(o[0], o[1], ob + 1), "scalar: panel differs from rows (oc %u k %u)",
				      cc.oc, R.k);
			ck_assert_msg(!memcmp(o[0], o[2], ob + 1), "%s: panel differs from rows (oc %u k %u)",
				      k->name, cc.oc, R.k);
			for (int i = 0; i < 3; i++)
				free(o[i]);
		}
		free(in);
		for (uint32_t l = 0; l < R.levels; l++)
			free(P.plane[l]);
		free_layer(&R);
	}
}
END_TEST

/*
 * The generic unpacker (the fallback of every SIMD table) against the
 * oracle's row reader, both layouts, any row range (also ranges that do not
 * start a 16-channel group), odd oc and k, kp padding zeroed, row sums.
 */
START_TEST(generic_unpacker_reads_both_layouts)
{
	for (int t = 0; t < 60; t++) {
		const uint32_t oc = (uint32_t)rr(1, 50), k = (uint32_t)rr(1, 700);
		const uint32_t kp = nq_round_up(k, 16) + (uint32_t)rr(0, 1) * 16;
		const uint32_t row0 = (uint32_t)rr(0, (int)oc - 1), n = (uint32_t)rr(1, (int)(oc - row0));
		struct layer L;
		int8_t *got = malloc((size_t)n * kp), *want = malloc(k);
		int32_t sums[50];

		make_layer_in(&L, oc, k, rr(0, NCHAINS - 1),
			      t % 2 ? NQ_PLANE_PANEL16X4 : NQ_PLANE_ROWS);
		L.wt.level = (uint32_t)rr(0, (int)L.levels - 1);
		memset(got, 0x55, (size_t)n * kp);
		ck_assert_int_eq(nq_unpack_rows(&L.wt, row0, n, k, kp, got, sums), 0);
		for (uint32_t r = 0; r < n; r++) {
			int32_t sum = 0;

			ck_assert_int_eq(nq_weights_row(&L.wt, row0 + r, 0, k, want), 0);
			ck_assert_mem_eq(got + (size_t)r * kp, want, k);
			for (uint32_t i = 0; i < k; i++)
				sum += want[i];
			ck_assert_int_eq(sums[r], sum);
			for (uint32_t i = k; i < kp; i++)
				ck_assert_int_eq(got[(size_t)r * kp + i], 0);
		}
		free(got);
		free(want);
		free_layer(&L);
	}
	/* Panel planes straight into a kernel panel (the AVX-512 path
	 * without VBMI), against the rows above rearranged by hand. */
	for (int t = 0; t < 60; t++) {
		const uint32_t oc = (uint32_t)rr(1, 90), k = (uint32_t)rr(1, 300);
		const uint32_t kq = nq_round_up(k, 4), quads = kq / 4;
		const uint32_t c0 = 16 * (uint32_t)rr(0, (int)(oc - 1) / 16);
		const uint32_t nc = (uint32_t)rr(1, (int)(oc - c0 < 64 ? oc - c0 : 64));
		const uint32_t w = nq_round_up(nc, 16) + (uint32_t)rr(0, 1) * 16;
		struct layer L;
		int8_t *rows = malloc((size_t)nc * kq), *panel = malloc((size_t)quads * w * 4);
		int32_t sums[64], psums[80];

		make_layer_in(&L, oc, k, rr(0, NCHAINS - 1), NQ_PLANE_PANEL16X4);
		L.wt.level = (uint32_t)rr(0, (int)L.levels - 1);
		ck_assert_int_eq(nq_unpack_rows(&L.wt, c0, nc, k, kq, rows, sums), 0);
		memset(panel, 0x55, (size_t)quads * w * 4);
		ck_assert(nq_unpack_panel(&L.wt, c0, nc, k, panel, w, psums));
		for (uint32_t c = 0; c < nq_round_up(nc, 16); c++) {
			ck_assert_int_eq(psums[c], c < nc ? sums[c] : 0);
			for (uint32_t j = 0; j < kq; j++)
				ck_assert_int_eq(panel[((size_t)(j / 4) * w + c) * 4 + j % 4],
						 c < nc ? rows[(size_t)c * kq + j] : 0);
		}
		ck_assert(!nq_unpack_panel(&L.wt, c0 + 1, nc - 1 ? nc - 1 : 1, k, panel, w, psums) ||
			  c0 + 1 >= oc);
		free(rows);
		free(panel);
		free_layer(&L);
	}
}
END_TEST

/* A composed value outside the level's range: both report -ERANGE. */
START_TEST(corrupt_plane_is_an_error_on_every_table)
{
	const struct nq_kernels *k = TABLE_OR_SKIP(_i);
	struct conv_case cc = { 1, 4, 4, 16, 20, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1 };
	struct layer L;
	struct nq_conv_args a;
	uint8_t in[256], out[512];

	make_layer(&L, cc.oc, 9 * 16, 2, 1);	/* 6|8 exact: 6-bit q0, 3-bit r */
	/* Row 7, weight 5: q0 = -32 and r = -4 compose to -132. */
	{
		int8_t q0[144], r[144];

		get_row(&L, 0, 7, q0);
		get_row(&L, 1, 7, r);
		q0[5] = -32;
		r[5] = -4;
		set_row(&L, 0, 7, q0);
		set_row(&L, 1, 7, r);
	}
	memset(in, 7, sizeof(in));
	fill_args(&a, &cc, &L, 1);
	ck_assert_int_eq(run_conv(&nq_kernels_scalar, CONV, &a, in, out), -ERANGE);
	ck_assert_int_eq(run_conv(k, CONV, &a, in, out), -ERANGE);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "outside"));
	/* Level 0 alone is fine. */
	fill_args(&a, &cc, &L, 0);
	ck_assert_int_eq(run_conv(k, CONV, &a, in, out), 0);
	free_layer(&L);

	/* Inside int8 but outside a 4-bit level: 3|4|7, q0 = -4, r1 = -1. */
	make_layer(&L, cc.oc, 9 * 16, 9, 1);
	{
		int8_t q0[144], r[144];

		get_row(&L, 0, 3, q0);
		get_row(&L, 1, 3, r);
		q0[2] = -4;
		r[2] = -1;
		set_row(&L, 0, 3, q0);
		set_row(&L, 1, 3, r);
	}
	fill_args(&a, &cc, &L, 1);
	ck_assert_int_eq(run_conv(&nq_kernels_scalar, CONV, &a, in, out), -ERANGE);
	ck_assert_int_eq(run_conv(k, CONV, &a, in, out), -ERANGE);
	fill_args(&a, &cc, &L, 0);
	ck_assert_int_eq(run_conv(k, CONV, &a, in, out), 0);
	free_layer(&L);
}
END_TEST

/*
 * Every (q0, r) pair of the two-level chains the vector decoders special-
 * case, each in turn at one weight of an otherwise valid layer (row and lane
 * moving, the second 64-value chunk partial): same return code as the
 * oracle, and the same bytes when valid.
 */
START_TEST(every_plane_pair_composes_as_scalar)
{
	const struct nq_kernels *k = TABLE_OR_SKIP(_i);
	static const int chain_ids[] = { 2, 3, 4, 5, 6 };
	struct conv_case cc = { 1, 1, 1, 70, 20, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1 };
	uint8_t in[70], o1[20], o2[20];
	int8_t q0[70], r[70];

	for (size_t ci = 0; ci < sizeof(chain_ids) / sizeof(chain_ids[0]); ci++) {
		struct layer L;
		const struct nq_plane_view *p0, *p1;
		int lo0, hi0, lo1, hi1, idx = 0, bad = 0;

		make_layer(&L, cc.oc, 70, chain_ids[ci], 1);
		p0 = &L.wt.plane[0];
		p1 = &L.wt.plane[1];
		ck_assert_int_eq(nq_bits_range(p0->bits, p0->is_signed, &lo0, &hi0), 0);
		ck_assert_int_eq(nq_bits_range(p1->bits, p1->is_signed, &lo1, &hi1), 0);
		for (int a0 = lo0; a0 <= hi0; a0++)
		for (int a1 = lo1; a1 <= hi1; a1++, idx++) {
			uint32_t row = (uint32_t)idx % cc.oc, lane = (uint32_t)(idx * 7) % 70;
			struct nq_conv_args a;
			int8_t keep0, keep1;
			int e1, e2;

			get_row(&L, 0, row, q0);
			get_row(&L, 1, row, r);
			keep0 = q0[lane];
			keep1 = r[lane];
			q0[lane] = (int8_t)a0;
			r[lane] = (int8_t)a1;
			set_row(&L, 0, row, q0);
			set_row(&L, 1, row, r);
			fill_input(in, sizeof(in));
			fill_args(&a, &cc, &L, 1);
			memset(o1, 0, sizeof(o1));
			memset(o2, 0, sizeof(o2));
			e1 = run_conv(&nq_kernels_scalar, GEMM, &a, in, o1);
			e2 = run_conv(k, GEMM, &a, in, o2);
			ck_assert_msg(e1 == e2, "%s (%s): chain %d q0 %d r %d: %d vs oracle %d", k->name,
				      nq_plane_layout_name(test_layout), chain_ids[ci], a0, a1, e2, e1);
			if (!e1)
				ck_assert_mem_eq(o1, o2, sizeof(o1));
			bad += e1 != 0;
			q0[lane] = keep0;
			r[lane] = keep1;
			set_row(&L, 0, row, q0);
			set_row(&L, 1, row, r);
		}
		/* Below -128 exactly when q0 is the lowest and a signed r < 0. */
		ck_assert_int_eq(bad, p1->is_signed ? 1 << (p1->bits - 1) : 0);
		free_layer(&L);
	}
}
END_TEST

/* ---- element-wise and pools ---- */

/*
 * ADD constants: derived from random scales (the capped multipliers of a
 * tiny output scale one time in five), or, one time in seven, a negative
 * multiplier (no scale gives one; the AVX-512 kernel then takes vpmulld),
 * or the largest ones the int32 bound allows.
 */
static void rand_add_rq(struct nq_add_rq *rq, int t)
{
	nq_add_derive((float)rr(1, 1000) / 997.0f, (float)rr(1, 1000) / 991.0f,
		      (float)rr(1, 1000) / (t % 5 ? 983.0f : 1e6f), rq);
	if (t % 7 == 3) {
		rq->k1 = -rr(0, 4000000);
		rq->k2 = rr(0, 4000000);
		rq->shift = rr(0, 16);
	} else if (t % 11 == 4) {
		rq->k1 = rq->k2 = 4210752;	/* (k1 + k2) * 255 <= 2^31 - 1 */
		rq->shift = 0;
	}
}

START_TEST(add_and_eltwise_match_scalar)
{
	const struct nq_kernels *k = TABLE_OR_SKIP(_i);

	for (int t = 0; t < 200; t++) {
		size_t n = (size_t)rr(1, 300);
		uint8_t x1[300], x2[300], o1[301], o2[301];
		struct nq_add_args ad;
		struct nq_eltwise_args el;

		fill_input(x1, n);
		fill_input(x2, n);
		rand_add_rq(&ad.rq, t);
		ad.z1 = rr(0, 255), ad.z2 = rr(0, 255), ad.z3 = rr(-128, 255);
		ad.lo = rr(0, 1) ? 0 : rr(-128, 200);
		ad.hi = rr(0, 1) ? 255 : rr(0, 255);
		memset(o1, 0x5a, sizeof(o1));
		memset(o2, 0x5a, sizeof(o2));
		nq_kernels_scalar.add(&ad, x1, x2, o1, n);
		k->add(&ad, x1, x2, o2, n);
		ck_assert_msg(!memcmp(o1, o2, n + 1), "%s add differs (n %zu, k %d/%d >> %d)",
			      k->name, n, ad.rq.k1, ad.rq.k2, ad.rq.shift);

		rand_rq(&el.rq);
		el.zx = rr(0, 255), el.zy = rr(-128, 255), el.lo = rr(-128, 100), el.hi = rr(0, 255);
		el.in_signed = rr(0, 1), el.out_signed = rr(0, 1);
		nq_kernels_scalar.eltwise(&el, x1, o1, n);
		k->eltwise(&el, x1, o2, n);
		ck_assert_msg(!memcmp(o1, o2, n + 1), "%s eltwise differs (n %zu)", k->name, n);
	}
}
END_TEST

START_TEST(pools_match_scalar)
{
	const struct nq_kernels *k = TABLE_OR_SKIP(_i);

	for (int t = 0; t < 150; t++) {
		struct nq_pool_args p;
		struct nq_gap_args g;
		struct nq_rq avg[64];
		uint32_t n = (uint32_t)rr(1, 2), h = (uint32_t)rr(1, 12), w = (uint32_t)rr(1, 12);
		uint32_t c = (uint32_t)rr(1, 150);
		uint8_t *in, *o1, *o2;
		size_t ib, ob;

		memset(&p, 0, sizeof(p));
		p.kh = (uint32_t)rr(1, 4), p.kw = (uint32_t)rr(1, 4);
		p.stride_h = (uint32_t)rr(1, 3), p.stride_w = (uint32_t)rr(1, 3);
		p.pad_t = (uint32_t)rr(0, p.kh - 1), p.pad_b = (uint32_t)rr(0, p.kh - 1);
		p.pad_l = (uint32_t)rr(0, p.kw - 1), p.pad_r = (uint32_t)rr(0, p.kw - 1);
		p.dil_h = p.dil_w = 1;
		while (out_dim(h, p.kh, p.stride_h, p.pad_t, p.pad_b, 1) == 0)
			h++;
		while (out_dim(w, p.kw, p.stride_w, p.pad_l, p.pad_r, 1) == 0)
			w++;
		p.in = (struct nq_nhwc){ n, h, w, c };
		p.out = (struct nq_nhwc){ n, out_dim(h, p.kh, p.stride_h, p.pad_t, p.pad_b, 1),
					  out_dim(w, p.kw, p.stride_w, p.pad_l, p.pad_r, 1), c };
		p.zx = rr(0, 255), p.zy = rr(0, 255), p.lo = rr(0, 100), p.hi = rr(150, 255);
		rand_rq(&p.rq_max);
		if (t % 3 == 0)
			nq_rq_derive(1.0, &p.rq_max);
		for (uint32_t i = 0; i <= p.kh * p.kw; i++)
			nq_rq_derive(i ? 0.9 / i : 1.0, &avg[i]);
		p.rq_avg = avg;
		p.count_include_pad = rr(0, 1);
		ib = (size_t)n * h * w * c;
		ob = (size_t)p.out.n * p.out.h * p.out.w * c;
		in = xalloc(ib);
		o1 = xalloc(ob + 1);
		o2 = xalloc(ob + 1);
		fill_input(in, ib);
		memset(o1, 0x33, ob + 1);
		memset(o2, 0x33, ob + 1);
		nq_kernels_scalar.maxpool(&p, in, o1);
		k->maxpool(&p, in, o2);
		ck_assert_msg(!memcmp(o1, o2, ob + 1), "%s maxpool differs (%ux%ux%u k %ux%u)",
			      k->name, h, w, c, p.kh, p.kw);
		nq_kernels_scalar.avgpool(&p, in, o1);
		k->avgpool(&p, in, o2);
		ck_assert_msg(!memcmp(o1, o2, ob + 1), "%s avgpool differs", k->name);

		g.in = p.in;
		g.zx = p.zx, g.zy = p.zy;
		nq_rq_derive(1.0 / (h * w) * (t % 4 ? 1.0 : 3.7), &g.rq);
		nq_kernels_scalar.gap(&g, in, o1);
		k->gap(&g, in, o2);
		ck_assert_msg(!memcmp(o1, o2, (size_t)n * c), "%s gap differs (%ux%ux%u)", k->name,
			      h, w, c);
		free(in);
		free(o1);
		free(o2);
	}
}
END_TEST

START_TEST(quantize_matches_scalar)
{
	const struct nq_kernels *k = TABLE_OR_SKIP(_i);

	for (int t = 0; t < 50; t++) {
		struct nq_quant_args q = { (uint32_t)rr(1, 2), (uint32_t)rr(1, 5), (uint32_t)rr(1, 70),
					   rr(0, 1), nq_quant_inv((float)rr(1, 100) / 1000.0f),
					   rr(0, 255), 0, 255 };
		size_t n = (size_t)q.n * q.c * q.hw;
		float *x = malloc(n * sizeof(float));
		uint8_t *o1 = malloc(n), *o2 = malloc(n);

		for (size_t i = 0; i < n; i++)
			x[i] = (float)((int)rnd() % 20000) / 1000.0f - 10.0f + (i % 7 == 0 ? 0.0005f : 0);
		if (t % 3 == 0) {	/* exact halves: round half to even */
			q.inv = 2.0f;
			for (size_t i = 0; i < n; i++)
				x[i] = (float)((int)(rnd() % 800) - 400) * 0.25f;
		}
		if (n > 3)
			x[1] = 0.0f / 0.0f, x[2] = 1e30f, x[3] = -1e30f;
		nq_kernels_scalar.quantize(&q, x, o1);
		k->quantize(&q, x, o2);
		ck_assert_msg(!memcmp(o1, o2, n), "%s quantize differs", k->name);
		free(x);
		free(o1);
		free(o2);
	}
}
END_TEST

/* ---- splitting across threads ---- */

struct split_job {
	const struct nq_kernels *k;
	const struct nq_conv_args *a;
	const uint8_t *in;
	uint8_t *out;
	int8_t *tiles[8];
	int err[8];
};

static void split_part(void *arg, unsigned int part, unsigned int nparts)
{
	struct split_job *j = arg;
	bool dw = j->a->groups == j->a->oc && j->a->cin_per_group == 1;

	j->err[part] = nq_conv_part(j->k, dw, false, j->a, j->tiles[part], part, nparts, j->in,
				    j->out);
}

START_TEST(any_thread_count_gives_the_same_bytes)
{
	const struct nq_kernels *tables[4] = { &nq_kernels_scalar };
	int nt = 1;

	for (int i = 0; i < NISAS; i++)
		if (isas[i].k && (!isas[i].usable || isas[i].usable()))
			tables[nt++] = isas[i].k;
	for (int t = 0; t < 40; t++) {
		struct conv_case cc;
		struct layer L;
		struct nq_conv_args a;
		uint8_t *in, *ref = NULL;
		size_t ib, ob;

		test_layout = t % 2 ? NQ_PLANE_PANEL16X4 : NQ_PLANE_ROWS;
		random_case(&cc, t % 4 == 3);
		if (t % 4 == 0)
			cc.oc = (uint32_t)rr(17, 130) * cc.groups;
		if (t % 4 == 1) {	/* many positions: split by rows */
			cc.h = (uint32_t)rr(16, 40);
			cc.w = (uint32_t)rr(16, 40);
		}
		make_layer(&L, cc.oc, cc.kh * cc.kw * (cc.c / cc.groups), rr(0, NCHAINS - 1),
			   cc.groups);
		fill_args(&a, &cc, &L, L.levels - 1);
		ib = (size_t)cc.n * cc.h * cc.w * cc.c;
		ob = (size_t)a.out.n * a.out.h * a.out.w * a.out.c;
		in = xalloc(ib);
		fill_input(in, ib);
		for (int ti = 0; ti < nt; ti++)
			for (unsigned int threads = 1; threads <= 5; threads++) {
				struct nq_pool *pool;
				struct split_job j = { tables[ti], &a, in, xalloc(ob + 1) };

				memset(j.out, 0xc3, ob + 1);
				for (unsigned int p = 0; p < threads; p++)
					j.tiles[p] = xalloc(tables[ti]->tile_bytes(a.k, a.oc));
				ck_assert_int_eq(nq_pool_create(threads, &pool), 0);
				nq_pool_run(pool, split_part, &j);
				nq_pool_destroy(pool);
				for (unsigned int p = 0; p < threads; p++) {
					ck_assert_int_eq(j.err[p], 0);
					free(j.tiles[p]);
				}
				if (!ref)
					ref = j.out;
				else {
					if (memcmp(ref, j.out, ob + 1)) {
						char what[320];

						describe(what, sizeof(what), &cc, &L, -1, a.wt.level, &a);
						ck_abort_msg("%s with %u threads differs from scalar, 1 thread: %s",
							     tables[ti]->name, threads, what);
					}
					free(j.out);
				}
			}
		free(ref);
		free(in);
		free_layer(&L);
	}
}
END_TEST

/* ---- the pool itself ---- */

struct count_job {
	_Atomic unsigned int hits[NQ_MAX_THREADS];
	_Atomic unsigned int nparts_seen;
};

static void count_part(void *arg, unsigned int part, unsigned int nparts)
{
	struct count_job *j = arg;

	atomic_fetch_add(&j->hits[part], 1);
	atomic_store(&j->nparts_seen, nparts);
}

/* Any number of parts, run in any order, writes the same bytes. */
START_TEST(any_split_gives_the_same_bytes)
{
	const struct nq_kernels *k = TABLE_OR_SKIP(_i);

	for (int t = 0; t < 30; t++) {
		struct conv_case cc;
		struct layer L;
		struct nq_conv_args a;
		uint8_t *in, *ref, *o;
		size_t ib, ob;
		bool dw = t % 5 == 4;
		int8_t *tile;

		random_case(&cc, dw);
		if (t % 3 == 0) {
			cc.h = (uint32_t)rr(16, 40);
			cc.w = (uint32_t)rr(16, 40);
			/* Several channel blocks: positions x channels. */
			if (cc.groups == 1 && t % 2 == 0)
				cc.oc = (uint32_t)rr(65, 200);
		}
		make_layer(&L, cc.oc, cc.kh * cc.kw * (cc.c / cc.groups), rr(0, NCHAINS - 1),
			   cc.groups);
		fill_args(&a, &cc, &L, L.levels - 1);
		ib = (size_t)cc.n * cc.h * cc.w * cc.c;
		ob = (size_t)a.out.n * a.out.h * a.out.w * a.out.c;
		in = xalloc(ib);
		ref = xalloc(ob + 1);
		o = xalloc(ob + 1);
		tile = xalloc(k->tile_bytes(a.k, a.oc));
		fill_input(in, ib);
		memset(ref, 0x3c, ob + 1);
		ck_assert_int_eq(nq_conv_part(&nq_kernels_scalar, dw, false, &a, tile, 0, 1, in, ref), 0);
		for (unsigned int threads = 2; threads <= 4; threads++) {
			unsigned int n = nq_conv_nparts(k, dw, &a, threads);

			ck_assert_uint_ge(n, 1);
			memset(o, 0x3c, ob + 1);
			for (unsigned int p = n; p-- > 0;)	/* backwards: order must not matter */
				ck_assert_int_eq(nq_conv_part(k, dw, false, &a, tile, p, n, in, o), 0);
			ck_assert_msg(!memcmp(ref, o, ob + 1), "%s split in %u parts differs", k->name, n);
		}
		free(tile);
		free(in);
		free(ref);
		free(o);
		free_layer(&L);
	}
}
END_TEST

/*
 * A residual ADD fused into the conv epilogue (nq_conv_args.add) writes what
 * the oracle's conv then the oracle's add write, whole or split in parts
 * (channel ranges move `res` with `out`), on odd channel counts and tails,
 * the im2col, im2col-free (taps) and pointwise paths, and GEMM; the
 * residual input stays untouched.
 */
START_TEST(fused_add_epilogue_matches_conv_then_add)
{
	const struct nq_kernels *k = _i < NISAS ? TABLE_OR_SKIP(_i) : &nq_kernels_scalar;

	for (int t = 0; t < 80; t++) {
		const bool gemm = t % 8 == 7;
		struct conv_case cc;
		struct layer L;
		struct nq_conv_args a;
		struct nq_add_args ad;
		uint8_t *in, *res, *res0, *u, *want, *o;
		size_t ib, ob;
		int8_t *tile;

		test_layout = t / 2 % 2 ? NQ_PLANE_PANEL16X4 : NQ_PLANE_ROWS;
		random_case(&cc, false);
		if (t % 4 == 1) {	/* taps path: 16+ channels in steps of 4 */
			cc.groups = 1;
			cc.c = 4 * (uint32_t)rr(4, 12);
			cc.kh = cc.kw = 3;
		}
		if (t % 4 == 2) {	/* pointwise, read in place */
			cc.groups = 1;
			cc.c = 4 * (uint32_t)rr(1, 20);
			cc.kh = cc.kw = cc.sh = cc.sw = cc.dh = cc.dw = 1;
			cc.pt = cc.pb = cc.pl = cc.pr = 0;
		}
		if (t % 3 == 0) {	/* many positions: split by rows x channel blocks */
			cc.h = (uint32_t)rr(16, 30);
			cc.w = (uint32_t)rr(16, 30);
		}
		if (cc.groups == 1 && t % 2)
			cc.oc = (uint32_t)rr(1, 150);
		if (gemm)
			cc = (struct conv_case){ (uint32_t)rr(1, 3), 1, 1, (uint32_t)rr(1, 300),
						 (uint32_t)rr(1, 150), 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1 };
		while (out_dim(cc.h, cc.kh, cc.sh, cc.pt, cc.pb, cc.dh) == 0)
			cc.h++;
		while (out_dim(cc.w, cc.kw, cc.sw, cc.pl, cc.pr, cc.dw) == 0)
			cc.w++;
		make_layer(&L, cc.oc, cc.kh * cc.kw * (cc.c / cc.groups), rr(0, NCHAINS - 1),
			   cc.groups);
		fill_args(&a, &cc, &L, (uint32_t)rr(0, (int)L.levels - 1));
		if (a.lo < 0) {		/* the ADD reads u8: no s8 conv output */
			a.zy = rr(0, 255), a.lo = 0, a.hi = 255;
		}
		rand_add_rq(&ad.rq, t);
		ad.z1 = rr(0, 255), ad.z2 = rr(0, 255), ad.z3 = rr(0, 255);
		ad.lo = rr(0, 1) ? 0 : ad.z3;
		ad.hi = rr(0, 2) ? 255 : rr(ad.lo, 255);
		ib = (size_t)cc.n * cc.h * cc.w * cc.c;
		ob = (size_t)a.out.n * a.out.h * a.out.w * a.out.c;
		in = xalloc(ib);
		res = xalloc(ob);
		res0 = xalloc(ob);
		u = xalloc(ob);
		want = xalloc(ob + 1);
		o = xalloc(ob + 1);
		tile = xalloc(k->tile_bytes(a.k, a.oc) > a.k ? k->tile_bytes(a.k, a.oc) : a.k);
		fill_input(in, ib);
		fill_input(res, ob);
		memcpy(res0, res, ob);

		/* The oracle unfused: conv, then add. */
		ck_assert_int_eq(nq_conv_part(&nq_kernels_scalar, false, gemm, &a, tile, 0, 1, in, u), 0);
		memset(want, 0x6b, ob + 1);
		nq_kernels_scalar.add(&ad, u, res, want, ob);

		a.add = &ad;
		a.res = res;
		for (unsigned int threads = 1; threads <= 4; threads++) {
			unsigned int n = threads == 1 ? 1 : nq_conv_nparts(k, false, &a, threads);

			memset(o, 0x6b, ob + 1);
			for (unsigned int p = n; p-- > 0;)
				ck_assert_int_eq(nq_conv_part(k, false, gemm, &a, tile, p, n, in, o), 0);
			if (memcmp(want, o, ob + 1)) {
				char what[320];
				size_t i = 0;

				while (want[i] == o[i])
					i++;
				describe(what, sizeof(what), &cc, &L, -1, a.wt.level, &a);
				ck_abort_msg("%s%s fused add in %u parts: byte %zu is %u, conv then add %u "
					     "(add k %d/%d >> %d, z %d %d %d, [%d,%d]): %s", k->name,
					     gemm ? " gemm" : "", n, i, o[i], want[i], ad.rq.k1, ad.rq.k2,
					     ad.rq.shift, ad.z1, ad.z2, ad.z3, ad.lo, ad.hi, what);
			}
			ck_assert(!memcmp(res, res0, ob));
		}
		free(tile);
		free(in);
		free(res);
		free(res0);
		free(u);
		free(want);
		free(o);
		free_layer(&L);
	}
}
END_TEST

START_TEST(pool_runs_every_part_once_per_dispatch)
{
	for (unsigned int threads = 1; threads <= 6; threads++) {
		struct nq_pool *pool;
		static struct count_job j;

		memset(&j, 0, sizeof(j));
		ck_assert_int_eq(nq_pool_create(threads, &pool), 0);
		ck_assert_uint_eq(nq_pool_threads(pool), threads);
		for (int r = 0; r < 500; r++)
			nq_pool_run(pool, count_part, &j);
		for (unsigned int p = 0; p < NQ_MAX_THREADS; p++)
			ck_assert_uint_eq(atomic_load(&j.hits[p]), p < threads ? 500 : 0);
		ck_assert_uint_eq(atomic_load(&j.nparts_seen), threads);
		nq_pool_destroy(pool);
	}
	ck_assert_int_eq(nq_pool_create(0, &(struct nq_pool *){ NULL }), -EINVAL);
}
END_TEST

/* The ids of this process's threads now, so that threads which are not the
 * pool's (qemu-user's own helper threads, say) can be told apart later. */
static int thread_ids(pid_t *ids, int max)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)) && n < max)
		if (e->d_name[0] != '.')
			ids[n++] = atoi(e->d_name);
	closedir(d);
	return n;
}

/* Cpus_allowed_list of every thread of this process not in before[], joined:
 * the pool's workers when before[] was taken just ahead of nq_pool_create(). */
static int workers_allowed(const pid_t *before, int nbefore, char *out, size_t size)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int n = 0;

	out[0] = 0;
	if (!d)
		return -1;
	while ((e = readdir(d))) {
		char path[300], line[256];
		bool old = false;
		FILE *f;

		if (e->d_name[0] == '.')
			continue;
		for (int i = 0; i < nbefore; i++)
			old |= atoi(e->d_name) == before[i];
		if (old)
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/status", e->d_name);
		f = fopen(path, "re");
		if (!f)
			continue;
		while (fgets(line, sizeof(line), f))
			if (!strncmp(line, "Cpus_allowed_list:", 18)) {
				strncat(out, line + 18, size - strlen(out) - 1);
				n++;
			}
		fclose(f);
	}
	closedir(d);
	return n;
}

START_TEST(wake_keeps_workers_off_the_callers_cpu)
{
	cpu_set_t all, one;
	struct nq_pool *pool;
	static struct count_job j;
	char lists[1024], want[64];
	pid_t before[64];
	int first = -1, nbefore;

	ck_assert_int_eq(sched_getaffinity(0, sizeof(all), &all), 0);
	for (int c = 0; c < CPU_SETSIZE && first < 0; c++)
		if (CPU_ISSET(c, &all))
			first = c;
	if (CPU_COUNT(&all) != 2)
		NQ_SKIP("needs exactly 2 CPUs to predict the workers' set (this process may use %d)",
			CPU_COUNT(&all));
	memset(&j, 0, sizeof(j));
	nbefore = thread_ids(before, 64);
	ck_assert(nbefore > 0);
	ck_assert_int_eq(nq_pool_create(2, &pool), 0);
	/* Pin the caller only, after the pool took the process's set. */
	CPU_ZERO(&one);
	CPU_SET(first, &one);
	ck_assert_int_eq(sched_setaffinity(0, sizeof(one), &one), 0);
	ck_assert_int_eq(sched_getcpu(), first);
	nq_pool_wake(pool);
	ck_assert_int_eq(workers_allowed(before, nbefore, lists, sizeof(lists)), 1);
	for (int c = 0; c < CPU_SETSIZE; c++)
		if (CPU_ISSET(c, &all) && c != first)
			snprintf(want, sizeof(want), "\t%d\n", c);
	ck_assert_str_eq(lists, want);
	/* A dispatch after the workers went to sleep still runs every part. */
	usleep(5000);
	for (int r = 0; r < 50; r++) {
		nq_pool_wake(pool);
		nq_pool_run(pool, count_part, &j);
	}
	ck_assert_uint_eq(atomic_load(&j.hits[0]), 50);
	ck_assert_uint_eq(atomic_load(&j.hits[1]), 50);
	nq_pool_destroy(pool);
	ck_assert_int_eq(sched_setaffinity(0, sizeof(all), &all), 0);
}
END_TEST

/* Which thread ran each part, and how often. */
struct who_job {
	_Atomic unsigned int hits[NQ_MAX_THREADS];
	_Atomic pid_t by[NQ_MAX_THREADS];
};

static void who_part(void *arg, unsigned int part, unsigned int nparts)
{
	struct who_job *j = arg;

	(void)nparts;
	atomic_fetch_add(&j->hits[part], 1);
	atomic_store(&j->by[part], gettid());
}

/* A SIGUSR1 handler that keeps its thread away from the pool until released:
 * what a worker looks like to the pool while the scheduler does not run it. */
static _Atomic int parked, released;

static void park(int sig)
{
	(void)sig;
	atomic_store(&parked, 1);
	while (!atomic_load(&released))
		nanosleep(&(struct timespec){ 0, 1000000 }, NULL);
}

struct dispatches {
	struct nq_pool *pool;
	struct who_job *j;
	int n;
	pid_t tid;		/* the dispatching thread */
};

static void *dispatch_n(void *arg)
{
	struct dispatches *d = arg;

	d->tid = gettid();
	for (int r = 0; r < d->n; r++)
		nq_pool_run(d->pool, who_part, d->j);
	return NULL;
}

/* The scheduler state letter of thread `tid` of this process ('S': asleep). */
static char thread_state(pid_t tid)
{
	char path[64], buf[256], *rp;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)tid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	rp = strrchr(buf, ')');
	return rp && rp[1] == ' ' ? rp[2] : 0;
}

START_TEST(a_worker_that_does_not_run_does_not_hold_up_a_dispatch)
{
	struct dispatches d;
	struct timespec deadline;
	pthread_t t;
	int err;
	struct sigaction sa = { .sa_handler = park }, old;
	static struct who_job j;
	struct nq_pool *pool;
	pid_t before[64], after[64], worker = 0;
	int nbefore, nafter;

	memset(&j, 0, sizeof(j));
	atomic_store(&parked, 0);
	atomic_store(&released, 0);
	nbefore = thread_ids(before, 64);
	ck_assert_int_eq(nq_pool_create(2, &pool), 0);
	nq_pool_run(pool, who_part, &j);
	nafter = thread_ids(after, 64);
	for (int i = 0; i < nafter; i++) {
		bool old_thread = false;

		for (int k = 0; k < nbefore; k++)
			old_thread |= after[i] == before[k];
		if (!old_thread)
			worker = after[i];
	}
	ck_assert_int_eq(nafter, nbefore + 1);
	ck_assert_int_ne(worker, 0);
	/* Park the worker once it sleeps (it spins 0.2 ms after a dispatch),
	 * in its condition wait, which holds no lock the dispatch needs. */
	ck_assert_int_eq(sigaction(SIGUSR1, &sa, &old), 0);
	for (int i = 0; i < 5000 && thread_state(worker) != 'S'; i++)
		usleep(1000);
	ck_assert_msg(thread_state(worker) == 'S', "the worker did not go to sleep in 5 s (state %c)",
		      thread_state(worker));
	ck_assert_int_eq(syscall(SYS_tgkill, getpid(), worker, SIGUSR1), 0);
	for (int i = 0; i < 5000 && !atomic_load(&parked); i++)
		usleep(1000);
	ck_assert_msg(atomic_load(&parked), "the worker did not take the signal in 5 s");

	/* With the worker away, every dispatch still completes: the caller
	 * runs the worker's part itself.  (Before, it waited for the worker:
	 * the dispatching thread is given 5 s, then the worker is let go so
	 * that the failure is reported instead of hanging.) */
	d = (struct dispatches){ pool, &j, 20, 0 };
	ck_assert_int_eq(pthread_create(&t, NULL, dispatch_n, &d), 0);
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 5;
	err = pthread_timedjoin_np(t, NULL, &deadline);
	atomic_store(&released, 1);
	if (err)
		pthread_join(t, NULL);
	ck_assert_msg(!err, "20 dispatches did not finish in 5 s while the worker was away");
	ck_assert_uint_eq(atomic_load(&j.hits[0]), 21);
	ck_assert_uint_eq(atomic_load(&j.hits[1]), 21);
	ck_assert_int_eq(atomic_load(&j.by[1]), d.tid);

	/* Back, the worker finds its parts taken and runs none twice. */
	usleep(20000);
	for (int r = 0; r < 200; r++)
		nq_pool_run(pool, who_part, &j);
	ck_assert_uint_eq(atomic_load(&j.hits[0]), 221);
	ck_assert_uint_eq(atomic_load(&j.hits[1]), 221);
	nq_pool_destroy(pool);
	ck_assert_int_eq(sigaction(SIGUSR1, &old, NULL), 0);
}
END_TEST

START_TEST(thread_count_follows_quota_env_and_api)
{
	unsigned int n, cpus = nq_cpus_usable();

	ck_assert_uint_eq(nq_cgroup_quota_cpus_v2("max 100000\n"), 0);
	ck_assert_uint_eq(nq_cgroup_quota_cpus_v2("150000 100000\n"), 2);
	ck_assert_uint_eq(nq_cgroup_quota_cpus_v2("100000 100000"), 1);
	ck_assert_uint_eq(nq_cgroup_quota_cpus_v2("50000 100000"), 1);
	ck_assert_uint_eq(nq_cgroup_quota_cpus_v1("-1\n", "100000\n"), 0);
	ck_assert_uint_eq(nq_cgroup_quota_cpus_v1("300000\n", "100000\n"), 3);
	ck_assert_uint_eq(nq_cgroup_quota_cpus_v1("250000", "100000"), 3);
	ck_assert_uint_ge(cpus, 1);

	unsetenv("NQ_THREADS");
	ck_assert_int_eq(nq_threads_choose(0, &n), 0);
	ck_assert_uint_eq(n, cpus);
	ck_assert_int_eq(nq_threads_choose(3, &n), 0);
	ck_assert_uint_eq(n, 3);
	setenv("NQ_THREADS", "5", 1);
	ck_assert_int_eq(nq_threads_choose(0, &n), 0);
	ck_assert_uint_eq(n, 5);
	ck_assert_int_eq(nq_threads_choose(2, &n), 0);	/* the API wins */
	ck_assert_uint_eq(n, 2);
	setenv("NQ_THREADS", "lots", 1);
	ck_assert_int_eq(nq_threads_choose(0, &n), -EINVAL);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "NQ_THREADS"));
	unsetenv("NQ_THREADS");
}
END_TEST

START_TEST(isa_selection_honours_nq_isa)
{
	const struct nq_kernels *k;

	unsetenv("NQ_ISA");
	ck_assert_int_eq(nq_kernels_select(&k), 0);
#if defined(__x86_64__)
	if (nq_cpu_avx512_usable())
		ck_assert_str_eq(k->name, "avx512");
	else if (nq_cpu_avx2_usable())
		ck_assert_str_eq(k->name, "avx2");
	setenv("NQ_ISA", "neon", 1);
	ck_assert_int_eq(nq_kernels_select(&k), -ENOTSUP);
#elif defined(__aarch64__)
	ck_assert_str_eq(k->name, "neon");
	setenv("NQ_ISA", "avx2", 1);
	ck_assert_int_eq(nq_kernels_select(&k), -ENOTSUP);
#endif
	setenv("NQ_ISA", "scalar", 1);
	ck_assert_int_eq(nq_kernels_select(&k), 0);
	ck_assert_str_eq(k->name, "scalar");
	setenv("NQ_ISA", "mmx", 1);
	ck_assert_int_eq(nq_kernels_select(&k), -EINVAL);
	unsetenv("NQ_ISA");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("kernels");
	TCase *tc = tcase_create("kernels");

	tcase_set_timeout(tc, 600);
	tcase_add_loop_test(tc, conv_matches_scalar_on_random_shapes, 0, 2 * NISAS);
	tcase_add_loop_test(tc, conv_matches_scalar_on_resnet_like_shapes, 0, 2 * NISAS);
	tcase_add_loop_test(tc, depthwise_matches_scalar, 0, NISAS);
	tcase_add_loop_test(tc, gemm_matches_scalar, 0, 2 * NISAS);
	tcase_add_loop_test(tc, both_layouts_give_the_same_bytes, 0, NISAS);
	tcase_add_test(tc, generic_unpacker_reads_both_layouts);
	tcase_add_loop_test(tc, corrupt_plane_is_an_error_on_every_table, 0, 2 * NISAS);
	tcase_add_loop_test(tc, every_plane_pair_composes_as_scalar, 0, 2 * NISAS);
	tcase_add_loop_test(tc, add_and_eltwise_match_scalar, 0, NISAS);
	tcase_add_loop_test(tc, pools_match_scalar, 0, NISAS);
	tcase_add_loop_test(tc, quantize_matches_scalar, 0, NISAS);
	tcase_add_test(tc, any_thread_count_gives_the_same_bytes);
	tcase_add_loop_test(tc, any_split_gives_the_same_bytes, 0, 2 * NISAS);
	/* _i == NISAS: the oracle's own fused epilogue. */
	tcase_add_loop_test(tc, fused_add_epilogue_matches_conv_then_add, 0, NISAS + 1);
	tcase_add_test(tc, pool_runs_every_part_once_per_dispatch);
	tcase_add_test(tc, wake_keeps_workers_off_the_callers_cpu);
	tcase_add_test(tc, a_worker_that_does_not_run_does_not_hold_up_a_dispatch);
	tcase_add_test(tc, thread_count_follows_quota_env_and_api);
	tcase_add_test(tc, isa_selection_honours_nq_isa);
	suite_add_tcase(s, tc);
	return nq_test_run(s);
}
