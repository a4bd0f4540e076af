// SPDX-License-Identifier: MIT
/*
 * The executor against an independent reference.
 *
 * Each test builds a small model with the format writer (random seeded
 * nested weights at levels 4|6|8), runs it through the public API at every
 * level and compares the output bit for bit with a naive reference written
 * here from format/SPEC.md "Execution semantics": logical NCHW loops (the
 * executor stores activations NHWC), weights taken from the test's own
 * integer arrays (not unpacked from the file), rounding by __int128 floor
 * division (not shifts).  Only the load-time constant derivations
 * (nq_rq_derive, nq_bias32, nq_add_derive, nq_act_range) are shared; they
 * are checked against long-double references in check_requant.
 *
 * Output tensors of weight layers are "calibrated" by the reference on its
 * own top-level accumulators, so the outputs use the whole 8-bit range
 * instead of saturating.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "nestquant.h"
#include "nq_error.h"
#include "nq_format.h"
#include "nq_test.h"
#include "requant.h"

#define MAXT 24
#define MAXL 8
#define MAXN 24
#define NLEV 3

static const uint8_t LEVELS[NLEV] = { 4, 6, 8 };

struct tt {
	enum nq_tensor_type dt;
	uint32_t rank, d[4];
	uint32_t N, C, H, W;		/* canonical 4-D */
	uint64_t count;
	float s;
	int32_t z;
	bool calib;			/* params from the reference's accumulators */
	int like;			/* or derived from tensor `like` ... */
	float sfac;			/* ... s = s_like * sfac */
	int zoff;			/* ... z = z_like + zoff (clamped) */
	int32_t *q;
	float *f;
};

struct tl {
	enum nq_layer_kind kind;
	uint32_t oc, k, groups, kh, kw, cpg;
	int8_t *q[NLEV];		/* composed integers per level, [oc][k] */
	int8_t *plane[NLEV];		/* plane contents */
	uint8_t pbits[NLEV];
	float sw[NLEV][256];
	float bias[256];
};

struct tn {
	enum nq_op op;
	uint32_t in[4], nin, out;
	int layer;
	struct nq_attrs a;
};

struct g {
	int nt, nl, nn;
	struct tt t[MAXT];
	struct tl l[MAXL];
	struct tn n[MAXN];
	uint32_t input, output;
	struct nq_disk_preprocess pre;
	bool calibrated;
	char path[512];
};

static uint64_t rng;

static uint64_t next(void)
{
	uint64_t z = (rng += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static double uni(void)
{
	return (double)(next() >> 11) / 9007199254740992.0;
}

/* ---------------------------------------------------------------- */
/* Building.                                                         */

static struct g *g_new(const char *name, uint64_t seed)
{
	struct g *g = calloc(1, sizeof(*g));

	ck_assert_ptr_nonnull(g);
	rng = seed;
	snprintf(g->path, sizeof(g->path), "%s/%s.nq", nq_test_tmpdir(), name);
	g->pre.layout = NQ_LAYOUT_NCHW;
	g->pre.channels = 1;
	g->pre.input_scale = 1.0f;
	g->pre.std[0] = 1.0f;
	return g;
}

static void g_free(struct g *g)
{
	for (int i = 0; i < g->nt; i++) {
		free(g->t[i].q);
		free(g->t[i].f);
	}
	for (int i = 0; i < g->nl; i++)
		for (int k = 0; k < NLEV; k++) {
			free(g->l[i].q[k]);
			free(g->l[i].plane[k]);
		}
	free(g);
}

static int T(struct g *g, enum nq_tensor_type dt, uint32_t rank, uint32_t d0, uint32_t d1,
	     uint32_t d2, uint32_t d3, float s, int32_t z)
{
	struct tt *t = &g->t[g->nt];
	uint32_t pad[4] = { 1, 1, 1, 1 }, d[4] = { d0, d1, d2, d3 };

	ck_assert_int_lt(g->nt, MAXT);
	t->dt = dt;
	t->rank = rank;
	t->count = 1;
	for (uint32_t i = 0; i < rank; i++) {
		t->d[i] = d[i];
		pad[i] = d[i];
		t->count *= d[i];
	}
	t->N = pad[0], t->C = pad[1], t->H = pad[2], t->W = pad[3];
	t->s = s;
	t->z = z;
	t->like = -1;
	t->calib = dt != NQ_TENSOR_F32 && s == 0;
	t->q = calloc(t->count, sizeof(int32_t));
	t->f = calloc(t->count, sizeof(float));
	return g->nt++;
}

/* A tensor whose params follow another's: s = s_like * sfac, z = z_like + zoff. */
static int T_like(struct g *g, int like, uint32_t rank, uint32_t d0, uint32_t d1, uint32_t d2,
		  uint32_t d3, float sfac, int zoff)
{
	int id = T(g, NQ_TENSOR_U8, rank, d0, d1, d2, d3, 1, 0);

	g->t[id].like = like;
	g->t[id].sfac = sfac;
	g->t[id].zoff = zoff;
	return id;
}

static int round_away(double v)
{
	return (int)(v < 0 ? -floor(-v + 0.5) : floor(v + 0.5));
}

static int L(struct g *g, enum nq_layer_kind kind, uint32_t oc, uint32_t cpg, uint32_t groups,
	     uint32_t kh, uint32_t kw)
{
	struct tl *l = &g->l[g->nl];
	uint32_t k = kh * kw * cpg;
	uint64_t n;

	ck_assert_int_lt(g->nl, MAXL);
	ck_assert_int_le(oc, 256);
	*l = (struct tl){ .kind = kind, .oc = oc, .k = k, .groups = groups, .kh = kh, .kw = kw,
			  .cpg = cpg };
	n = (uint64_t)oc * k;
	for (int lv = 0; lv < NLEV; lv++) {
		l->q[lv] = calloc(n, 1);
		l->plane[lv] = calloc(n, 1);
	}
	for (uint64_t i = 0; i < n; i++)
		l->q[NLEV - 1][i] = (int8_t)((int)(next() % 255) - 127);
	/* Nest downwards: q_{k-1} = clamp(round(q_k / 2^d)), r_k = q_k - q_{k-1} 2^d. */
	for (int lv = NLEV - 1; lv > 0; lv--) {
		int d = LEVELS[lv] - LEVELS[lv - 1];
		int lo = -(1 << (LEVELS[lv - 1] - 1)), hi = (1 << (LEVELS[lv - 1] - 1)) - 1;

		for (uint64_t i = 0; i < n; i++) {
			int qh = round_away(l->q[lv][i] / (double)(1 << d));

			qh = qh < lo ? lo : qh > hi ? hi : qh;
			l->q[lv - 1][i] = (int8_t)qh;
			l->plane[lv][i] = (int8_t)(l->q[lv][i] - qh * (1 << d));
		}
		l->pbits[lv] = (uint8_t)(d + 1);
	}
	memcpy(l->plane[0], l->q[0], n);
	l->pbits[0] = LEVELS[0];
	for (uint32_t c = 0; c < oc; c++) {
		float s = (float)(0.002 + 0.01 * uni());

		for (int lv = 0; lv < NLEV; lv++)
			l->sw[lv][c] = s * (float)(1 << (LEVELS[NLEV - 1] - LEVELS[lv]));
		l->bias[c] = (float)(uni() - 0.5);
	}
	return g->nl++;
}

static void N(struct g *g, enum nq_op op, int in0, int in1, int out, int layer,
	      const struct nq_attrs *a)
{
	struct tn *n = &g->n[g->nn++];

	ck_assert_int_le(g->nn, MAXN);
	*n = (struct tn){ .op = op, .nin = 1, .out = (uint32_t)out, .layer = layer };
	n->in[0] = (uint32_t)in0;
	if (in1 >= 0) {
		n->in[1] = (uint32_t)in1;
		n->nin = 2;
	}
	if (a)
		n->a = *a;
}

static struct nq_attrs win(int kh, int kw, int sh, int sw, int pt, int pl, int pb, int pr,
			   int dh, int dw, int groups, int act)
{
	struct nq_attrs a = { 0 };

	a.i[NQ_A_KH] = kh, a.i[NQ_A_KW] = kw;
	a.i[NQ_A_STRIDE_H] = sh, a.i[NQ_A_STRIDE_W] = sw;
	a.i[NQ_A_PAD_T] = pt, a.i[NQ_A_PAD_L] = pl, a.i[NQ_A_PAD_B] = pb, a.i[NQ_A_PAD_R] = pr;
	a.i[NQ_A_DIL_H] = dh, a.i[NQ_A_DIL_W] = dw;
	a.i[NQ_A_GROUPS] = groups;
	a.i[NQ_A_ACT] = act;
	return a;
}

/* ---------------------------------------------------------------- */
/* The reference.                                                    */

static __int128 floor_div(__int128 a, __int128 b)
{
	__int128 q = a / b;

	if (a % b != 0 && a < 0)
		q--;
	return q;
}

static int64_t ref_mul(int64_t x, struct nq_rq rq)
{
	return (int64_t)floor_div((__int128)x * rq.m * 2 + ((__int128)1 << rq.s),
				  (__int128)1 << (rq.s + 1));
}

static int32_t clampi(int64_t v, int32_t lo, int32_t hi)
{
	return (int32_t)(v < lo ? lo : v > hi ? hi : v);
}

static int32_t qmin_of(const struct tt *t)
{
	return t->dt == NQ_TENSOR_S8 ? -128 : 0;
}

static int32_t qmax_of(const struct tt *t)
{
	return t->dt == NQ_TENSOR_S8 ? 127 : 255;
}

static uint64_t at(const struct tt *t, uint64_t n, uint64_t c, uint64_t h, uint64_t w)
{
	return ((n * t->C + c) * t->H + h) * t->W + w;
}

static int32_t ref_rne(float t)
{
	double f = floor((double)t), d = (double)t - f;

	if (d > 0.5 || (d == 0.5 && fmod(f, 2.0) != 0))
		f += 1;
	if (f < -100000)
		f = -100000;
	if (f > 100000)
		f = 100000;
	return (int32_t)f;
}

static void calibrate(struct tt *o, double lo, double hi)
{
	lo = fmin(lo, 0);
	hi = fmax(hi, 0);
	if (o->dt == NQ_TENSOR_S8) {
		o->s = (float)(fmax(-lo, hi) / 127);
		o->z = 0;
	} else {
		o->s = (float)((hi - lo) / 255);
		o->z = o->s > 0 ? clampi(round_away(-lo / o->s), 0, 255) : 0;
	}
	if (!(o->s > 0))
		o->s = 0.01f;
}

static void act(const struct tn *n, const struct tt *o, int a, int32_t *lo, int32_t *hi)
{
	ck_assert_int_eq(nq_act_range(a, n->a.f[NQ_F_CLIP_MIN], n->a.f[NQ_F_CLIP_MAX], o->s, o->z,
				      qmin_of(o), qmax_of(o), lo, hi), 0);
}

static void ref_conv(struct g *g, const struct tn *n, int lv)
{
	const struct tt *I = &g->t[n->in[0]];
	struct tt *O = &g->t[n->out];
	const struct tl *l = &g->l[n->layer];
	const bool gemm = n->op == NQ_OP_GEMM;
	const int32_t *a = n->a.i;
	uint32_t OH = gemm ? 1 : O->H, OW = gemm ? 1 : O->W, OC = l->oc;
	uint32_t NB = gemm ? (uint32_t)(I->count / l->k) : I->N;
	int32_t *acc = calloc((size_t)NB * OC * OH * OW, sizeof(int32_t));
	uint64_t e = 0;
	int32_t lo, hi;

	for (uint32_t b = 0; b < NB; b++)
	for (uint32_t oc = 0; oc < OC; oc++)
	for (uint32_t oh = 0; oh < OH; oh++)
	for (uint32_t ow = 0; ow < OW; ow++, e++) {
		int64_t s = nq_bias32(l->bias[oc], I->s, l->sw[lv][oc], l->k);
		uint32_t grp = oc / (OC / l->groups);

		if (gemm) {
			for (uint32_t j = 0; j < l->k; j++)
				s += (int64_t)(I->q[(uint64_t)b * l->k + j] - I->z) *
				     l->q[lv][(uint64_t)oc * l->k + j];
		} else {
			for (uint32_t ci = 0; ci < l->cpg; ci++)
			for (uint32_t ky = 0; ky < l->kh; ky++)
			for (uint32_t kx = 0; kx < l->kw; kx++) {
				int64_t ih = (int64_t)oh * a[NQ_A_STRIDE_H] - a[NQ_A_PAD_T] + (int64_t)ky * a[NQ_A_DIL_H];
				int64_t iw = (int64_t)ow * a[NQ_A_STRIDE_W] - a[NQ_A_PAD_L] + (int64_t)kx * a[NQ_A_DIL_W];
				int8_t wq = l->q[lv][(uint64_t)oc * l->k + (ky * l->kw + kx) * l->cpg + ci];

				/* padding holds zx: contributes nothing */
				if (ih < 0 || iw < 0 || ih >= I->H || iw >= I->W)
					continue;
				s += (int64_t)(I->q[at(I, b, grp * l->cpg + ci, ih, iw)] - I->z) * wq;
			}
		}
		ck_assert(s >= INT32_MIN && s <= INT32_MAX);
		acc[e] = (int32_t)s;
	}
	if (O->calib && !g->calibrated) {
		double mn = 0, mx = 0;

		e = 0;
		for (uint32_t b = 0; b < NB; b++)
		for (uint32_t oc = 0; oc < OC; oc++)
		for (uint32_t p = 0; p < OH * OW; p++, e++) {
			double r = (double)acc[e] * I->s * l->sw[lv][oc];

			mn = fmin(mn, r);
			mx = fmax(mx, r);
		}
		calibrate(O, mn, mx);
	}
	act(n, O, n->a.i[NQ_A_ACT], &lo, &hi);
	e = 0;
	for (uint32_t b = 0; b < NB; b++)
	for (uint32_t oc = 0; oc < OC; oc++)
	for (uint32_t p = 0; p < OH * OW; p++, e++) {
		struct nq_rq rq;

		nq_rq_conv(I->s, l->sw[lv][oc], O->s, &rq);
		/* output layout: NCHW for conv; [N, OC] for gemm */
		O->q[((uint64_t)b * OC + oc) * OH * OW + p] = clampi(O->z + ref_mul(acc[e], rq), lo, hi);
	}
	free(acc);
}

/* Window positions of output o along one axis inside [lo, hi). */
static uint32_t count_in(int64_t o, int stride, int pad, int dil, int k, int64_t lo, int64_t hi)
{
	uint32_t c = 0;

	for (int i = 0; i < k; i++) {
		int64_t p = o * stride - pad + (int64_t)i * dil;

		c += p >= lo && p < hi;
	}
	return c;
}

static void ref_pool(struct g *g, const struct tn *n)
{
	const struct tt *I = &g->t[n->in[0]];
	struct tt *O = &g->t[n->out];
	const int32_t *a = n->a.i;
	struct nq_rq rq;

	for (uint32_t b = 0; b < O->N; b++)
	for (uint32_t c = 0; c < O->C; c++)
	for (uint32_t oh = 0; oh < O->H; oh++)
	for (uint32_t ow = 0; ow < O->W; ow++) {
		int32_t mx = -1, sum = 0, cnt = 0, y;

		for (int ky = 0; ky < a[NQ_A_KH]; ky++)
		for (int kx = 0; kx < a[NQ_A_KW]; kx++) {
			int64_t ih = (int64_t)oh * a[NQ_A_STRIDE_H] - a[NQ_A_PAD_T] + (int64_t)ky * a[NQ_A_DIL_H];
			int64_t iw = (int64_t)ow * a[NQ_A_STRIDE_W] - a[NQ_A_PAD_L] + (int64_t)kx * a[NQ_A_DIL_W];
			int32_t u;

			if (ih < 0 || iw < 0 || ih >= I->H || iw >= I->W)
				continue;
			u = I->q[at(I, b, c, ih, iw)];
			mx = u > mx ? u : mx;
			sum += u - I->z;
			cnt++;
		}
		if (n->op == NQ_OP_MAXPOOL) {
			nq_rq_derive((double)I->s / O->s, &rq);
			y = mx < 0 ? 0 : clampi(O->z + ref_mul(mx - I->z, rq), 0, 255);
		} else {
			if (a[NQ_A_COUNT_INCLUDE_PAD])
				cnt = (int32_t)(count_in(oh, a[NQ_A_STRIDE_H], a[NQ_A_PAD_T], a[NQ_A_DIL_H],
							 a[NQ_A_KH], -a[NQ_A_PAD_T], (int64_t)I->H + a[NQ_A_PAD_B]) *
						count_in(ow, a[NQ_A_STRIDE_W], a[NQ_A_PAD_L], a[NQ_A_DIL_W],
							 a[NQ_A_KW], -a[NQ_A_PAD_L], (int64_t)I->W + a[NQ_A_PAD_R]));
			if (cnt == 0) {
				y = clampi(O->z, 0, 255);
			} else {
				nq_rq_derive((double)I->s / ((double)O->s * cnt), &rq);
				y = clampi(O->z + ref_mul(sum, rq), 0, 255);
			}
		}
		O->q[at(O, b, c, oh, ow)] = y;
	}
}

static void ref_requant_copy(const struct tt *I, struct tt *O, uint64_t src, uint64_t dst,
			     int32_t lo, int32_t hi)
{
	struct nq_rq rq;

	nq_rq_derive((double)I->s / O->s, &rq);
	O->q[dst] = clampi(O->z + ref_mul(I->q[src] - I->z, rq), lo, hi);
}

static void ref_node(struct g *g, const struct tn *n, int lv)
{
	struct tt *I = &g->t[n->in[0]], *O = &g->t[n->out];
	int32_t lo, hi;

	if (!g->calibrated && O->like >= 0) {
		const struct tt *K = &g->t[O->like];

		O->s = K->s * O->sfac;
		O->z = clampi(K->z + O->zoff, 0, 255);
	}
	switch (n->op) {
	case NQ_OP_QUANTIZE: {
		float inv = 1.0f / O->s;

		for (uint64_t i = 0; i < O->count; i++) {
			float t = I->f[i] * inv;

			O->q[i] = clampi((int64_t)ref_rne(t) + O->z, qmin_of(O), qmax_of(O));
		}
		break;
	}
	case NQ_OP_DEQUANTIZE:
		for (uint64_t i = 0; i < O->count; i++)
			O->f[i] = (float)(I->q[i] - I->z) * I->s;
		break;
	case NQ_OP_CONV:
	case NQ_OP_GEMM:
		ref_conv(g, n, lv);
		break;
	case NQ_OP_ADD: {
		const struct tt *I2 = &g->t[n->in[1]];
		struct nq_add_rq a;

		nq_add_derive(I->s, I2->s, O->s, &a);
		act(n, O, n->a.i[NQ_A_ACT], &lo, &hi);
		for (uint64_t i = 0; i < O->count; i++) {
			int64_t v = (int64_t)(I->q[i] - I->z) * a.k1 + (int64_t)(I2->q[i] - I2->z) * a.k2 +
				    (a.shift ? 1 << (a.shift - 1) : 0);

			O->q[i] = clampi(O->z + (int64_t)floor_div(v, (__int128)1 << a.shift), lo, hi);
		}
		break;
	}
	case NQ_OP_MAXPOOL:
	case NQ_OP_AVGPOOL:
		ref_pool(g, n);
		break;
	case NQ_OP_GLOBALAVGPOOL:
		for (uint32_t b = 0; b < I->N; b++)
			for (uint32_t c = 0; c < I->C; c++) {
				int64_t sum = 0;
				struct nq_rq rq;

				for (uint32_t p = 0; p < I->H * I->W; p++)
					sum += I->q[at(I, b, c, 0, 0) + p] - I->z;
				nq_rq_derive((double)I->s / ((double)O->s * (double)((uint64_t)I->H * I->W)), &rq);
				O->q[(uint64_t)b * I->C + c] = clampi(O->z + ref_mul(sum, rq), 0, 255);
			}
		break;
	case NQ_OP_FLATTEN:
	case NQ_OP_RESHAPE:
		/* logical order is the storage order here */
		for (uint64_t i = 0; i < O->count; i++)
			ref_requant_copy(I, O, i, i, qmin_of(O), qmax_of(O));
		break;
	case NQ_OP_RELU:
	case NQ_OP_CLIP:
		act(n, O, n->op == NQ_OP_RELU ? NQ_ACT_RELU : NQ_ACT_CLIP, &lo, &hi);
		for (uint64_t i = 0; i < O->count; i++)
			ref_requant_copy(I, O, i, i, lo, hi);
		break;
	case NQ_OP_CONCAT: {
		uint32_t axis = (uint32_t)n->a.i[NQ_A_AXIS], off = 0;
		uint64_t inner = 1, outer = 1;

		for (uint32_t d = axis + 1; d < O->rank; d++)
			inner *= O->d[d];
		for (uint32_t d = 0; d < axis; d++)
			outer *= O->d[d];
		for (uint32_t j = 0; j < n->nin; j++) {
			const struct tt *J = &g->t[n->in[j]];

			for (uint64_t o = 0; o < outer; o++)
				for (uint64_t x = 0; x < J->d[axis]; x++)
					for (uint64_t i = 0; i < inner; i++)
						ref_requant_copy(J, O, (o * J->d[axis] + x) * inner + i,
								 (o * O->d[axis] + off + x) * inner + i,
								 0, 255);
			off += J->d[axis];
		}
		break;
	}
	default:
		ck_abort_msg("reference: op %d not modelled", n->op);
	}
}

/* raw: the caller's buffer in g->pre.layout. */
static void ref_run(struct g *g, int lv, const float *raw)
{
	struct tt *X = &g->t[g->input];
	const struct nq_disk_preprocess *p = &g->pre;

	for (uint32_t b = 0; b < X->N; b++)
	for (uint32_t c = 0; c < X->C; c++)
	for (uint32_t h = 0; h < X->H; h++)
	for (uint32_t w = 0; w < X->W; w++) {
		uint64_t dst = at(X, b, c, h, w);
		uint64_t src = p->layout == NQ_LAYOUT_NHWC ?
			       ((((uint64_t)b * X->H + h) * X->W + w) * X->C + c) : dst;
		uint32_t pc = p->channels == 1 ? 0 : c;
		volatile float v = raw[src] * p->input_scale;
		volatile float u = v - p->mean[pc];

		X->f[dst] = u / p->std[pc];
	}
	for (int i = 0; i < g->nn; i++)
		ref_node(g, &g->n[i], lv);
	g->calibrated = true;
}

/* Graph output 0 as the API returns it. */
static void ref_output(const struct g *g, float *out)
{
	const struct tt *O = &g->t[g->output];

	for (uint64_t i = 0; i < O->count; i++)
		out[i] = O->dt == NQ_TENSOR_F32 ? O->f[i] : (float)(O->q[i] - O->z) * O->s;
}

/* ---------------------------------------------------------------- */
/* Writing and running.                                              */

static void g_write(struct g *g)
{
	struct nq_writer *w;
	char name[32];
	int err;

	ck_assert_int_eq(nq_writer_create(g->path, LEVELS, NLEV, NULL, &w), 0);
	ck_assert_int_eq(nq_writer_set_preprocess(w, &g->pre), 0);
	for (int i = 0; i < g->nt; i++) {
		struct tt *t = &g->t[i];
		struct nq_tensor_desc d = { .name = name, .dtype = t->dt, .rank = t->rank,
					    .scale = t->dt == NQ_TENSOR_F32 ? 0 : t->s,
					    .zero_point = t->dt == NQ_TENSOR_F32 ? 0 : t->z };

		snprintf(name, sizeof(name), "t%d", i);
		memcpy(d.dims, t->d, sizeof(d.dims));
		err = nq_writer_add_tensor(w, &d);
		ck_assert_msg(err == i, "tensor %d: %s", i, nq_last_error());
	}
	for (int i = 0; i < g->nl; i++) {
		struct tl *l = &g->l[i];
		float scales[NLEV * 256];
		struct nq_layer_desc d = { .name = name, .kind = l->kind, .oc = l->oc, .k = l->k,
					   .groups = l->groups, .kh = l->kh, .kw = l->kw,
					   .cin_per_group = l->cpg, .scales = scales,
					   .bias = l->bias };

		snprintf(name, sizeof(name), "layer%d", i);
		for (int lv = 0; lv < NLEV; lv++) {
			d.plane_bits[lv] = l->pbits[lv];
			d.plane_signed[lv] = true;
			memcpy(scales + lv * l->oc, l->sw[lv], l->oc * sizeof(float));
		}
		err = nq_writer_add_layer(w, &d);
		ck_assert_msg(err == i, "layer %d: %s", i, nq_last_error());
	}
	for (int i = 0; i < g->nn; i++) {
		struct tn *n = &g->n[i];
		struct nq_node_desc d = { .name = name, .op = n->op, .inputs = n->in,
					  .n_inputs = n->nin, .outputs = &n->out, .n_outputs = 1,
					  .layer = n->layer >= 0 ? (uint32_t)n->layer : NQ_NONE,
					  .attrs = n->a };

		snprintf(name, sizeof(name), "n%d", i);
		err = nq_writer_add_node(w, &d);
		ck_assert_msg(err == i, "node %d: %s", i, nq_last_error());
	}
	ck_assert_int_eq(nq_writer_add_input(w, g->input), 0);
	ck_assert_int_eq(nq_writer_add_output(w, g->output), 0);
	for (int lv = 0; lv < NLEV; lv++)
		for (int i = 0; i < g->nl; i++) {
			struct tl *l = &g->l[i];
			uint32_t stride;
			uint64_t size;
			uint8_t *buf;

			ck_assert_int_eq(nq_writer_plane_layout(w, i, lv, &stride, &size), 0);
			buf = calloc(1, size);
			for (uint32_t c = 0; c < l->oc; c++)
				ck_assert_int_eq(nq_pack_row(l->plane[lv] + (uint64_t)c * l->k, l->k,
							     l->pbits[lv], true, buf + (uint64_t)c * stride), 0);
			ck_assert_int_eq(nq_writer_write_plane(w, i, lv, buf, size), 0);
			free(buf);
		}
	err = nq_writer_finish(w);
	ck_assert_msg(err == 0, "finish: %s", nq_last_error());
}

static float *random_input(const struct g *g, float lo, float hi)
{
	uint64_t n = g->t[g->input].count;
	float *x = malloc(n * sizeof(float));

	for (uint64_t i = 0; i < n; i++)
		x[i] = lo + (hi - lo) * (float)uni();
	return x;
}

static const char *const isa_names[] = { "scalar", "avx2", "avx512", "neon" };

/*
 * Calibrate on `raw`, write the file, then at every level compare the
 * executor with the reference, once per kernel table this build and CPU
 * have ($NQ_ISA; the scalar oracle always).  Returns how many level pairs
 * differ.
 */
static int check_all_levels(struct g *g, const float *raw)
{
	uint64_t no = g->t[g->output].count;
	float *want[NLEV], *got = malloc(no * sizeof(float));
	int differ = 0, ran = 0;

	ref_run(g, NLEV - 1, raw);	/* calibration pass */
	g_write(g);
	for (int lv = 0; lv < NLEV; lv++) {
		want[lv] = malloc(no * sizeof(float));
		ref_run(g, lv, raw);
		ref_output(g, want[lv]);
	}
	for (size_t isa = 0; isa < sizeof(isa_names) / sizeof(isa_names[0]); isa++) {
		struct nq_model *m;
		struct nq_session *s;
		int err;

		setenv("NQ_ISA", isa_names[isa], 1);
		err = nq_model_open(g->path, NULL, &m);
		unsetenv("NQ_ISA");
		if (err == -ENOTSUP && isa > 0)
			continue;	/* not in this build / not on this CPU */
		ck_assert_msg(err == 0, "open (%s): %s", isa_names[isa], nq_last_error());
		ck_assert_str_eq(nq_model_isa(m), isa_names[isa]);
		ck_assert_msg(nq_session_create(m, &s) == 0, "%s", nq_last_error());
		ck_assert_uint_eq(nq_model_output_count(m), no);
		for (int lv = 0; lv < NLEV; lv++) {
			ck_assert_msg(nq_session_run_level(s, lv, raw, got) == 0, "run: %s",
				      nq_last_error());
			for (uint64_t i = 0; i < no; i++)
				ck_assert_msg(!memcmp(&got[i], &want[lv][i], sizeof(float)),
					      "%s (%s kernels) level %d output %llu: executor %.9g, reference %.9g",
					      g->path, isa_names[isa], lv, (unsigned long long)i, got[i],
					      want[lv][i]);
		}
		nq_session_destroy(s);
		nq_model_close(m);
		ran++;
	}
	ck_assert_int_ge(ran, 1);
	for (int a = 0; a < NLEV; a++)
		for (int b = a + 1; b < NLEV; b++)
			differ += memcmp(want[a], want[b], no * sizeof(float)) != 0;
	for (int lv = 0; lv < NLEV; lv++)
		free(want[lv]);
	free(got);
	return differ;
}

/* ---------------------------------------------------------------- */
/* Tests.                                                            */

struct conv_case {
	const char *name;
	uint32_t batch, cin, h, w, oc, groups, kh, kw;
	int sh, sw, pt, pl, pb, pr, dh, dw, act;
	float cmin, cmax;
};

static const struct conv_case conv_cases[] = {
	{ "conv3x3_pad1_relu", 1, 3, 7, 9, 8, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, NQ_ACT_RELU },
	{ "depthwise_s2_asym", 1, 8, 9, 11, 8, 8, 3, 3, 2, 2, 1, 0, 1, 1, 1, 1, NQ_ACT_NONE },
	{ "grouped_dilated_clip", 1, 8, 5, 5, 6, 2, 2, 3, 1, 2, 0, 1, 1, 1, 2, 1, NQ_ACT_CLIP, -0.5f, 1.5f },
	{ "pointwise_s2_batch2", 2, 5, 6, 7, 4, 1, 1, 1, 2, 2, 0, 0, 0, 0, 1, 1, NQ_ACT_NONE },
	{ "conv5x5_dil2_pad4", 1, 5, 8, 6, 3, 1, 5, 5, 1, 1, 4, 4, 4, 4, 2, 2, NQ_ACT_RELU },
	{ "depth_multiplier2", 1, 4, 6, 6, 8, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, NQ_ACT_NONE },
	{ "wide_cin_tail", 1, 37, 4, 5, 9, 1, 3, 2, 1, 1, 1, 0, 1, 1, 1, 1, NQ_ACT_RELU },
};

static uint32_t out_dim(uint32_t in, int k, int s, int p0, int p1, int d)
{
	return (in + p0 + p1 - (uint32_t)(d * (k - 1) + 1)) / s + 1;
}

START_TEST(conv_matches_reference_at_every_level)
{
	const struct conv_case *c = &conv_cases[_i];
	struct g *g = g_new(c->name, 1000 + _i);
	uint32_t oh = out_dim(c->h, c->kh, c->sh, c->pt, c->pb, c->dh);
	uint32_t ow = out_dim(c->w, c->kw, c->sw, c->pl, c->pr, c->dw);
	struct nq_attrs a = win(c->kh, c->kw, c->sh, c->sw, c->pt, c->pl, c->pb, c->pr, c->dh,
				c->dw, c->groups, c->act);
	int x, xq, y, l;
	float *raw;

	a.f[NQ_F_CLIP_MIN] = c->cmin;
	a.f[NQ_F_CLIP_MAX] = c->cmax;
	x = T(g, NQ_TENSOR_F32, 4, c->batch, c->cin, c->h, c->w, 0, 0);
	xq = T(g, NQ_TENSOR_U8, 4, c->batch, c->cin, c->h, c->w, 4.0f / 255, 128);
	y = T(g, NQ_TENSOR_U8, 4, c->batch, c->oc, oh, ow, 0, 0);
	l = L(g, NQ_LAYER_CONV, c->oc, c->cin / c->groups, c->groups, c->kh, c->kw);
	N(g, NQ_OP_QUANTIZE, x, -1, xq, -1, NULL);
	N(g, NQ_OP_CONV, xq, -1, y, l, &a);
	g->input = x;
	g->output = y;
	raw = random_input(g, -2, 2);
	ck_assert_int_gt(check_all_levels(g, raw), 0);
	free(raw);
	g_free(g);
}
END_TEST

/* Quantize -> Conv -> dw Conv -> grouped Conv -> MaxPool (requantising)
 * -> AvgPool -> Add -> Concat -> Flatten (H*W = 6) -> Gemm -> Dequantize. */
static struct g *chain_model(void)
{
	struct g *g = g_new("chain", 77);
	struct nq_attrs a;
	int t[16], l[4];

	t[0] = T(g, NQ_TENSOR_F32, 4, 1, 3, 9, 11, 0, 0);
	t[1] = T(g, NQ_TENSOR_U8, 4, 1, 3, 9, 11, 3.0f / 255, 100);
	t[2] = T(g, NQ_TENSOR_U8, 4, 1, 8, 9, 11, 0, 0);
	t[3] = T(g, NQ_TENSOR_U8, 4, 1, 8, 5, 5, 0, 0);
	t[4] = T(g, NQ_TENSOR_U8, 4, 1, 6, 4, 3, 0, 0);
	t[5] = T_like(g, t[4], 4, 1, 6, 3, 2, 1.3f, 3);		/* maxpool: other params */
	t[6] = T_like(g, t[5], 4, 1, 6, 3, 2, 0.9f, -2);	/* avgpool */
	t[7] = T_like(g, t[5], 4, 1, 6, 3, 2, 1.7f, 10);	/* add */
	t[8] = T_like(g, t[7], 4, 1, 12, 3, 2, 1.1f, 5);	/* concat */
	t[9] = T_like(g, t[8], 2, 1, 72, 0, 0, 1.0f, 0);	/* flatten */
	t[10] = T(g, NQ_TENSOR_U8, 2, 1, 10, 0, 0, 0, 0);
	t[11] = T(g, NQ_TENSOR_F32, 2, 1, 10, 0, 0, 0, 0);
	l[0] = L(g, NQ_LAYER_CONV, 8, 3, 1, 3, 3);
	l[1] = L(g, NQ_LAYER_CONV, 8, 1, 8, 3, 3);
	l[2] = L(g, NQ_LAYER_CONV, 6, 4, 2, 2, 3);
	l[3] = L(g, NQ_LAYER_GEMM, 10, 72, 1, 1, 1);

	N(g, NQ_OP_QUANTIZE, t[0], -1, t[1], -1, NULL);
	a = win(3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, NQ_ACT_RELU);
	N(g, NQ_OP_CONV, t[1], -1, t[2], l[0], &a);
	a = win(3, 3, 2, 2, 1, 0, 1, 1, 1, 1, 8, NQ_ACT_NONE);
	N(g, NQ_OP_CONV, t[2], -1, t[3], l[1], &a);
	a = win(2, 3, 1, 2, 0, 1, 1, 1, 2, 1, 2, NQ_ACT_CLIP);
	a.f[NQ_F_CLIP_MIN] = -0.5f;
	a.f[NQ_F_CLIP_MAX] = 2.0f;
	N(g, NQ_OP_CONV, t[3], -1, t[4], l[2], &a);
	a = win(2, 2, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0);
	N(g, NQ_OP_MAXPOOL, t[4], -1, t[5], -1, &a);
	a = win(3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0);	/* count_include_pad = 0 */
	N(g, NQ_OP_AVGPOOL, t[5], -1, t[6], -1, &a);
	a = win(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, NQ_ACT_RELU);
	N(g, NQ_OP_ADD, t[5], t[6], t[7], -1, &a);
	memset(&a, 0, sizeof(a));
	a.i[NQ_A_AXIS] = 1;
	N(g, NQ_OP_CONCAT, t[7], t[5], t[8], -1, &a);
	g->n[g->nn - 1].nin = 2;
	N(g, NQ_OP_FLATTEN, t[8], -1, t[9], -1, &a);
	memset(&a, 0, sizeof(a));
	N(g, NQ_OP_GEMM, t[9], -1, t[10], l[3], &a);
	N(g, NQ_OP_DEQUANTIZE, t[10], -1, t[11], -1, NULL);
	g->input = t[0];
	g->output = t[11];
	return g;
}

START_TEST(chain_with_pools_add_concat_flatten_gemm)
{
	struct g *g = chain_model();
	float *raw = random_input(g, -1.5f, 1.5f);

	ck_assert_int_gt(check_all_levels(g, raw), 0);
	free(raw);
	g_free(g);
}
END_TEST

/* Batch 2, NHWC caller layout with mean/std: Quantize -> 1x1 Conv -> ReLU
 * (requantising) -> AvgPool (count_include_pad) -> Clip -> GAP -> Reshape
 * -> Gemm (s8 output) -> Dequantize. */
static struct g *edge_model(void)
{
	struct g *g = g_new("edges", 99);
	struct nq_attrs a;
	int t[12], l[2];

	g->pre.layout = NQ_LAYOUT_NHWC;
	g->pre.channels = 4;
	g->pre.input_scale = 1.0f / 255;
	for (int c = 0; c < 4; c++) {
		g->pre.mean[c] = 0.4f + 0.03f * c;
		g->pre.std[c] = 0.2f + 0.02f * c;
	}
	t[0] = T(g, NQ_TENSOR_F32, 4, 2, 4, 6, 6, 0, 0);
	t[1] = T(g, NQ_TENSOR_U8, 4, 2, 4, 6, 6, 6.0f / 255, 110);
	t[2] = T(g, NQ_TENSOR_U8, 4, 2, 5, 6, 6, 0, 0);
	t[3] = T_like(g, t[2], 4, 2, 5, 6, 6, 0.7f, -20);	/* relu */
	t[4] = T_like(g, t[3], 4, 2, 5, 4, 4, 1.2f, 4);		/* avgpool */
	t[5] = T_like(g, t[4], 4, 2, 5, 4, 4, 1.0f, 0);		/* clip */
	t[6] = T_like(g, t[5], 4, 2, 5, 1, 1, 0.6f, 7);		/* gap */
	t[7] = T_like(g, t[6], 2, 2, 5, 0, 0, 1.0f, 0);		/* reshape */
	t[8] = T(g, NQ_TENSOR_S8, 2, 2, 7, 0, 0, 0, 0);
	t[9] = T(g, NQ_TENSOR_F32, 2, 2, 7, 0, 0, 0, 0);
	l[0] = L(g, NQ_LAYER_CONV, 5, 4, 1, 1, 1);
	l[1] = L(g, NQ_LAYER_GEMM, 7, 5, 1, 1, 1);

	N(g, NQ_OP_QUANTIZE, t[0], -1, t[1], -1, NULL);
	a = win(1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, NQ_ACT_NONE);
	N(g, NQ_OP_CONV, t[1], -1, t[2], l[0], &a);
	N(g, NQ_OP_RELU, t[2], -1, t[3], -1, NULL);
	a = win(2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 0);	/* count_include_pad = 1 */
	N(g, NQ_OP_AVGPOOL, t[3], -1, t[4], -1, &a);
	memset(&a, 0, sizeof(a));
	a.f[NQ_F_CLIP_MIN] = 0.1f;
	a.f[NQ_F_CLIP_MAX] = 0.9f;
	N(g, NQ_OP_CLIP, t[4], -1, t[5], -1, &a);
	N(g, NQ_OP_GLOBALAVGPOOL, t[5], -1, t[6], -1, NULL);
	N(g, NQ_OP_RESHAPE, t[6], -1, t[7], -1, NULL);
	memset(&a, 0, sizeof(a));
	N(g, NQ_OP_GEMM, t[7], -1, t[8], l[1], &a);
	N(g, NQ_OP_DEQUANTIZE, t[8], -1, t[9], -1, NULL);
	g->input = t[0];
	g->output = t[9];
	return g;
}

START_TEST(batch_nhwc_preprocess_relu_clip_gap_reshape_s8)
{
	struct g *g = edge_model();
	float *raw = random_input(g, 0, 255);

	for (uint64_t i = 0; i < g->t[g->input].count; i++)
		raw[i] = floorf(raw[i]);
	ck_assert_int_gt(check_all_levels(g, raw), 0);
	free(raw);
	g_free(g);
}
END_TEST

static void check_arena(const struct nq_model *m)
{
	for (uint32_t i = 0; i < m->n_tensors; i++) {
		const struct nq_xtensor *a = &m->t[i];

		if (!a->used)
			continue;
		ck_assert_uint_le(a->offset + a->bytes, m->arena_bytes);
		ck_assert_uint_eq(a->offset % NQ_ARENA_ALIGN, 0);
		for (uint32_t j = i + 1; j < m->n_tensors; j++) {
			const struct nq_xtensor *b = &m->t[j];

			if (!b->used || a->first > b->last || b->first > a->last)
				continue;
			ck_assert_msg(a->offset + a->bytes <= b->offset || b->offset + b->bytes <= a->offset,
				      "tensors %u [%llu,+%llu) and %u [%llu,+%llu) live together and overlap",
				      i, (unsigned long long)a->offset, (unsigned long long)a->bytes, j,
				      (unsigned long long)b->offset, (unsigned long long)b->bytes);
		}
	}
}

START_TEST(arena_never_overlaps_live_tensors)
{
	struct g *g = chain_model();
	float *raw = random_input(g, -1, 1);
	struct nq_model *m;
	uint64_t sum = 0;

	check_all_levels(g, raw);
	ck_assert_int_eq(nq_model_open(g->path, NULL, &m), 0);
	check_arena(m);
	for (uint32_t i = 0; i < m->n_tensors; i++)
		if (m->t[i].used)
			sum += (m->t[i].bytes + NQ_ARENA_ALIGN - 1) & ~(uint64_t)(NQ_ARENA_ALIGN - 1);
	/* a chain reuses memory: the plan must beat one slot per tensor */
	ck_assert_uint_lt(nq_model_arena_bytes(m), sum);
	ck_assert_uint_eq(nq_model_arena_bytes(m), m->arena_bytes);
	nq_model_close(m);
	free(raw);
	g_free(g);

	/* random lifetimes straight through the planner */
	for (int round = 0; round < 50; round++) {
		struct nq_arena_item it[64];
		uint64_t total;
		uint32_t n = 1 + next() % 64;

		for (uint32_t i = 0; i < n; i++) {
			int32_t a = (int32_t)(next() % 40) - 1, b = a + (int32_t)(next() % 10);

			it[i] = (struct nq_arena_item){ .size = next() % 5000, .first = a, .last = b };
		}
		ck_assert_int_eq(nq_arena_plan(it, n, 64, &total), 0);
		for (uint32_t i = 0; i < n; i++) {
			ck_assert_uint_le(it[i].offset + it[i].size, total);
			ck_assert_uint_eq(it[i].offset % 64, 0);
			for (uint32_t j = i + 1; j < n; j++) {
				if (it[i].first > it[j].last || it[j].first > it[i].last)
					continue;
				ck_assert(it[i].offset + it[i].size <= it[j].offset ||
					  it[j].offset + it[j].size <= it[i].offset);
			}
		}
	}
}
END_TEST

/*
 * Residual blocks (model.c plan_fusion): Add(conv, x) and Add(x, conv) fuse
 * into the conv (x1 and x2 of the ADD); in the downsampling block only the
 * later conv can take the ADD; a conv output read twice, and a depthwise
 * conv, are left alone.  20 channels take the AVX-512 im2col-free and
 * pointwise paths, 70 a panel and a tail, 17x19 positions a split by rows.
 */
static struct g *residual_model(void)
{
	struct g *g = g_new("residual", 4242);
	struct nq_attrs a;
	int t[16], l[7];

	t[0] = T(g, NQ_TENSOR_F32, 4, 1, 3, 17, 19, 0, 0);
	t[1] = T(g, NQ_TENSOR_U8, 4, 1, 3, 17, 19, 3.0f / 255, 100);
	t[2] = T(g, NQ_TENSOR_U8, 4, 1, 20, 17, 19, 0, 0);
	t[3] = T(g, NQ_TENSOR_U8, 4, 1, 20, 17, 19, 0, 0);
	t[4] = T_like(g, t[2], 4, 1, 20, 17, 19, 1.5f, 3);	/* Add(conv, x) + ReLU */
	t[5] = T(g, NQ_TENSOR_U8, 4, 1, 20, 17, 19, 0, 0);
	t[6] = T_like(g, t[4], 4, 1, 20, 17, 19, 1.2f, -4);	/* Add(x, conv) */
	t[7] = T(g, NQ_TENSOR_U8, 4, 1, 70, 9, 10, 0, 0);
	t[8] = T(g, NQ_TENSOR_U8, 4, 1, 70, 9, 10, 0, 0);
	t[9] = T_like(g, t[7], 4, 1, 70, 9, 10, 1.3f, 2);	/* Add(conv a, conv b) + ReLU */
	t[10] = T(g, NQ_TENSOR_U8, 4, 1, 70, 9, 10, 0, 0);
	t[11] = T_like(g, t[9], 4, 1, 70, 9, 10, 1.1f, 0);	/* t10 read twice */
	t[12] = T_like(g, t[11], 4, 1, 70, 9, 10, 1.2f, 1);
	t[13] = T(g, NQ_TENSOR_U8, 4, 1, 70, 9, 10, 0, 0);
	t[14] = T_like(g, t[12], 4, 1, 70, 9, 10, 1.0f, -1);	/* after a depthwise conv */
	t[15] = T(g, NQ_TENSOR_F32, 4, 1, 70, 9, 10, 0, 0);
	l[0] = L(g, NQ_LAYER_CONV, 20, 3, 1, 3, 3);
	l[1] = L(g, NQ_LAYER_CONV, 20, 20, 1, 3, 3);
	l[2] = L(g, NQ_LAYER_CONV, 20, 20, 1, 1, 1);
	l[3] = L(g, NQ_LAYER_CONV, 70, 20, 1, 3, 3);
	l[4] = L(g, NQ_LAYER_CONV, 70, 20, 1, 1, 1);
	l[5] = L(g, NQ_LAYER_CONV, 70, 70, 1, 1, 1);
	l[6] = L(g, NQ_LAYER_CONV, 70, 1, 70, 3, 3);

	N(g, NQ_OP_QUANTIZE, t[0], -1, t[1], -1, NULL);
	a = win(3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, NQ_ACT_RELU);
	N(g, NQ_OP_CONV, t[1], -1, t[2], l[0], &a);
	a = win(3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, NQ_ACT_NONE);
	N(g, NQ_OP_CONV, t[2], -1, t[3], l[1], &a);
	a = win(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, NQ_ACT_RELU);
	N(g, NQ_OP_ADD, t[3], t[2], t[4], -1, &a);
	a = win(1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, NQ_ACT_NONE);
	N(g, NQ_OP_CONV, t[4], -1, t[5], l[2], &a);
	N(g, NQ_OP_ADD, t[4], t[5], t[6], -1, NULL);
	a = win(3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, NQ_ACT_RELU);
	N(g, NQ_OP_CONV, t[6], -1, t[7], l[3], &a);
	a = win(1, 1, 2, 2, 0, 0, 0, 0, 1, 1, 1, NQ_ACT_NONE);
	N(g, NQ_OP_CONV, t[6], -1, t[8], l[4], &a);
	a = win(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, NQ_ACT_RELU);
	N(g, NQ_OP_ADD, t[7], t[8], t[9], -1, &a);
	a = win(1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, NQ_ACT_NONE);
	N(g, NQ_OP_CONV, t[9], -1, t[10], l[5], &a);
	N(g, NQ_OP_ADD, t[10], t[9], t[11], -1, NULL);
	N(g, NQ_OP_ADD, t[11], t[10], t[12], -1, NULL);
	a = win(3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 70, NQ_ACT_NONE);
	N(g, NQ_OP_CONV, t[12], -1, t[13], l[6], &a);
	N(g, NQ_OP_ADD, t[13], t[12], t[14], -1, NULL);
	N(g, NQ_OP_DEQUANTIZE, t[14], -1, t[15], -1, NULL);
	g->input = t[0];
	g->output = t[15];
	return g;
}

/* Output of one run of g at level lv on table isa with `threads` threads. */
static int run_isa(const struct g *g, const char *isa, unsigned int flags, unsigned int threads,
		   int lv, const float *raw, float *out, unsigned int *fused)
{
	struct nq_model_opts mo = { .level = -1, .flags = flags };
	struct nq_session_opts so = { .threads = threads };
	struct nq_session *s;
	struct nq_model *m;
	int err;

	setenv("NQ_ISA", isa, 1);
	err = nq_model_open(g->path, &mo, &m);
	unsetenv("NQ_ISA");
	if (err)
		return err;
	*fused = nq_model_fused_adds(m);
	check_arena(m);
	ck_assert_msg(nq_session_create_opts(m, &so, &s) == 0, "%s", nq_last_error());
	ck_assert_msg(nq_session_run_level(s, lv, raw, out) == 0, "run: %s", nq_last_error());
	nq_session_destroy(s);
	nq_model_close(m);
	return 0;
}

START_TEST(residual_adds_fuse_into_convs_bit_exactly)
{
	struct g *g = residual_model();
	float *raw = random_input(g, -2, 2);
	uint64_t no = g->t[g->output].count;
	float *o1 = malloc(no * sizeof(float)), *o2 = malloc(no * sizeof(float));
	unsigned int fused, ran = 0;

	/* Fused (the default) against the reference, every table and level. */
	ck_assert_int_gt(check_all_levels(g, raw), 0);
	/* Fused against unfused, byte for byte, with 1 and 3 threads. */
	for (size_t isa = 0; isa < sizeof(isa_names) / sizeof(isa_names[0]); isa++)
		for (unsigned int threads = 1; threads <= 3; threads += 2)
			for (int lv = 0; lv < NLEV; lv++) {
				int err = run_isa(g, isa_names[isa], 0, threads, lv, raw, o1, &fused);

				if (err == -ENOTSUP && isa > 0)
					break;
				ck_assert_msg(err == 0, "%s: %s", isa_names[isa], nq_last_error());
				ck_assert_uint_eq(fused, 3);
				ck_assert_int_eq(run_isa(g, isa_names[isa], NQ_OPEN_NO_FUSE, threads, lv,
							 raw, o2, &fused), 0);
				ck_assert_uint_eq(fused, 0);
				ck_assert_msg(!memcmp(o1, o2, no * sizeof(float)),
					      "%s, %u threads, level %d: fused output differs from unfused",
					      isa_names[isa], threads, lv);
				ran++;
			}
	ck_assert_uint_ge(ran, NLEV * 2);
	/* $NQ_FUSE=0 turns it off as the flag does. */
	ck_assert_int_eq(run_isa(g, "scalar", 0, 1, NLEV - 1, raw, o1, &fused), 0);
	ck_assert_uint_eq(fused, 3);
	setenv("NQ_FUSE", "0", 1);
	ck_assert_int_eq(run_isa(g, "scalar", 0, 1, NLEV - 1, raw, o2, &fused), 0);
	unsetenv("NQ_FUSE");
	ck_assert_uint_eq(fused, 0);
	ck_assert(!memcmp(o1, o2, no * sizeof(float)));
	free(o1);
	free(o2);
	free(raw);
	g_free(g);
}
END_TEST

START_TEST(levels_api_and_batch_runs)
{
	struct g *g = edge_model();
	float *raw = random_input(g, 0, 255), *o1, *o2;
	struct nq_model *m;
	struct nq_session *s;
	struct nq_model_opts opts = { .level = 1 };
	struct nq_shape sh;
	size_t ni, no;
	int used = -1;

	check_all_levels(g, raw);
	ck_assert_int_eq(nq_model_open(g->path, &opts, &m), 0);
	ck_assert_uint_eq(nq_model_level_count(m), 3);
	ck_assert_int_eq(nq_model_level_bits(m, 0), 4);
	ck_assert_int_eq(nq_model_level_bits(m, 2), 8);
	ck_assert_int_eq(nq_model_level_bits(m, 3), -EINVAL);
	ck_assert_int_eq(nq_model_level_for_bits(m, 6), 1);
	ck_assert_int_eq(nq_model_level_for_bits(m, 5), -ENOENT);
	ck_assert_uint_eq(nq_model_level(m), 1);
	ck_assert_int_eq(nq_model_input_shape(m, &sh), 0);
	ck_assert_uint_eq(sh.rank, 4);
	ck_assert_uint_eq(sh.dims[0], 2);
	ck_assert_uint_eq(sh.dims[1], 4);
	ck_assert_int_eq(nq_model_input_layout(m), NQ_INPUT_NHWC);
	ck_assert_uint_eq(nq_model_input_count(m), 2 * 4 * 6 * 6);
	ck_assert_uint_eq(nq_model_output_count(m), 14);
	ck_assert_ptr_nonnull(nq_model_isa(m));
	ck_assert_uint_lt(nq_model_weight_bytes(m, 0), nq_model_weight_bytes(m, 2));
	ni = nq_model_input_count(m);
	no = nq_model_output_count(m);
	o1 = malloc(3 * no * sizeof(float));
	o2 = malloc(3 * no * sizeof(float));
	ck_assert_int_eq(nq_session_create(m, &s), 0);

	/* the run reports the level it used; set_level switches it */
	ck_assert_int_eq(nq_session_run(s, raw, o1, &used), 0);
	ck_assert_int_eq(used, 1);
	ck_assert_int_eq(nq_session_run_level(s, 1, raw, o2), 0);
	ck_assert_mem_eq(o1, o2, no * sizeof(float));
	ck_assert_int_eq(nq_model_set_level(m, 0), 0);
	ck_assert_int_eq(nq_model_set_level(m, 3), -EINVAL);
	ck_assert_int_eq(nq_session_run(s, raw, o1, &used), 0);
	ck_assert_int_eq(used, 0);
	ck_assert_int_eq(nq_session_run_level(s, 3, raw, o1), -EINVAL);

	/* batch = the same inferences one by one */
	{
		float *in3 = malloc(3 * ni * sizeof(float));

		for (int b = 0; b < 3; b++)
			for (size_t i = 0; i < ni; i++)
				in3[b * ni + i] = raw[(i * 7 + b * 13) % ni];
		ck_assert_int_eq(nq_model_set_level(m, 2), 0);
		ck_assert_int_eq(nq_session_run_batch(s, 3, in3, o1, &used), 0);
		ck_assert_int_eq(used, 2);
		for (int b = 0; b < 3; b++)
			ck_assert_int_eq(nq_session_run_level(s, 2, in3 + b * ni, o2 + b * no), 0);
		ck_assert_mem_eq(o1, o2, 3 * no * sizeof(float));
		free(in3);
	}
	nq_session_destroy(s);
	nq_model_close(m);
	free(o1);
	free(o2);
	free(raw);
	g_free(g);
}
END_TEST

START_TEST(isa_override_is_never_silent)
{
	struct g *g = edge_model();
	float *raw = random_input(g, 0, 255);
	struct nq_model *m = NULL;
#if defined(__x86_64__) || defined(__i386__)
	const char *absent = "neon";	/* never built for x86 */
#else
	const char *absent = "avx512";
#endif

	check_all_levels(g, raw);
	setenv("NQ_ISA", absent, 1);
	ck_assert_int_eq(nq_model_open(g->path, NULL, &m), -ENOTSUP);
	ck_assert_ptr_null(m);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), absent));
	setenv("NQ_ISA", "sse9", 1);
	ck_assert_int_eq(nq_model_open(g->path, NULL, &m), -EINVAL);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "sse9"));
	setenv("NQ_ISA", "scalar", 1);
	ck_assert_int_eq(nq_model_open(g->path, NULL, &m), 0);
	ck_assert_str_eq(nq_model_isa(m), "scalar");
	nq_model_close(m);
	unsetenv("NQ_ISA");
	free(raw);
	g_free(g);
}
END_TEST

START_TEST(unsupported_graph_is_refused_with_the_node_named)
{
	struct g *g = g_new("broadcast_add", 5);
	struct nq_model *m = NULL;
	int x, xq, y, z;

	x = T(g, NQ_TENSOR_F32, 4, 1, 2, 3, 3, 0, 0);
	xq = T(g, NQ_TENSOR_U8, 4, 1, 2, 3, 3, 0.1f, 0);
	y = T(g, NQ_TENSOR_U8, 4, 1, 2, 3, 3, 0.1f, 0);
	z = T(g, NQ_TENSOR_U8, 4, 1, 2, 1, 1, 0.1f, 0);
	N(g, NQ_OP_QUANTIZE, x, -1, xq, -1, NULL);
	N(g, NQ_OP_GLOBALAVGPOOL, xq, -1, z, -1, NULL);
	N(g, NQ_OP_ADD, xq, z, y, -1, NULL);
	g->input = x;
	g->output = y;
	g->calibrated = true;
	g_write(g);
	ck_assert_int_eq(nq_model_open(g->path, NULL, &m), -ENOTSUP);
	ck_assert_ptr_null(m);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "node 2 (n2"));
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "broadcast"));
	g_free(g);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("exec");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, conv_matches_reference_at_every_level, 0,
			    sizeof(conv_cases) / sizeof(conv_cases[0]));
	tcase_add_test(tc, chain_with_pools_add_concat_flatten_gemm);
	tcase_add_test(tc, batch_nhwc_preprocess_relu_clip_gap_reshape_s8);
	tcase_add_test(tc, arena_never_overlaps_live_tensors);
	tcase_add_test(tc, levels_api_and_batch_runs);
	tcase_add_test(tc, residual_adds_fuse_into_convs_bit_exactly);
	tcase_add_test(tc, isa_override_is_never_silent);
	tcase_add_test(tc, unsupported_graph_is_refused_with_the_node_named);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return nq_test_run(suite());
}
