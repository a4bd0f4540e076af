// SPDX-License-Identifier: MIT
/*
 * Rounding methods and integer nesting (DESIGN.md §1).
 *
 * Every rounding problem here has the same shape: each element chooses
 * between two neighbouring integers lo and lo + 1 (the bracket), given a
 * real-valued target t in grid units.  When nesting, the bracket of level k
 * is {floor(q_{k+1} / 2^l), ceil(q_{k+1} / 2^l)}; staying inside it is what
 * keeps the exact-mode residual within [-(2^l-1), 2^l-1].  When quantizing
 * from floats, the bracket is {floor(w/s), floor(w/s) + 1} clamped to the
 * range.  Nearest, truncation, SQuant and AdaRound only differ in how they
 * pick inside the bracket.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "nq_error.h"
#include "quant.h"

#define DEFAULT_PASSES 4
#define MAX_THREADS 64

/* ---- a tiny parallel-for: threads share nothing but a channel counter ---- */

struct par {
	void (*fn)(void *arg, uint32_t item);
	void *arg;
	uint32_t items;
	uint32_t next;		/* atomically incremented */
};

static void *par_worker(void *p_)
{
	struct par *p = p_;
	uint32_t i;

	while ((i = __atomic_fetch_add(&p->next, 1, __ATOMIC_RELAXED)) < p->items)
		p->fn(p->arg, i);
	return NULL;
}

/* Run fn(arg, i) for i < items on up to `threads` threads (the caller is one). */
static void parallel_for(unsigned threads, uint32_t items, void (*fn)(void *, uint32_t),
			 void *arg)
{
	struct par p = { .fn = fn, .arg = arg, .items = items, .next = 0 };
	pthread_t tid[MAX_THREADS];
	unsigned n = 0, i;

	if (threads > MAX_THREADS)
		threads = MAX_THREADS;
	if (threads > items)
		threads = items;
	/* A thread that fails to start just leaves its share to the others. */
	for (i = 1; i < threads; i++)
		if (pthread_create(&tid[n], NULL, par_worker, &p) == 0)
			n++;
	par_worker(&p);
	for (i = 0; i < n; i++)
		pthread_join(tid[i], NULL);
}

/* ---- nearest ---- */

/*
 * Halfway cases go away from zero (as nq_round_half_away), or towards +inf
 * with ties_up: compact mode needs that, because q - 2^l floor(q / 2^l + 1/2)
 * always lies in the l-bit range [-2^(l-1), 2^(l-1)-1].
 */
static void nearest_row_ties(const float *t, const int32_t *lo, const uint8_t *up, uint32_t k,
			     bool ties_up, int32_t *q)
{
	uint32_t i;

	for (i = 0; i < k; i++) {
		float d = t[i] - (float)lo[i];

		q[i] = lo[i] + (up[i] && (d > 0.5f || (d == 0.5f && (ties_up || t[i] > 0))));
	}
}

static void nearest_row(const float *t, const int32_t *lo, const uint8_t *up, uint32_t k,
			int32_t *q)
{
	nearest_row_ties(t, lo, up, k, false, q);
}

/* ---- SQuant ----
 *
 * SQuant (Guo et al., ICLR 2022) approximates the Hessian by its diagonal
 * blocks and turns the rounding objective into constraints on summed
 * rounding errors: starting from nearest, inside each kernel it flips the
 * elements whose rounding error is largest until |sum e| <= 0.5
 * (SQuant-K), then does the same over the whole output channel using one
 * candidate per kernel (SQuant-C), which leaves |sum e| <= 1 per kernel and
 * <= 0.5 per channel.  e = q - t throughout.
 *
 * The candidate a kernel offers to the channel stage is the flip that moves
 * its own residual sum across zero at the smallest cost: after an overshoot
 * (the sum changed sign) it is undoing the last flip; otherwise the next
 * flip in the same direction.
 */

struct squant_ws {
	float *e;
	int8_t *mark;		/* +1: may flip up in the channel stage, -1: down */
	uint32_t *cand;
};

static bool can_flip(const int32_t *q, const float *e, const int32_t *lo, const uint8_t *up,
		     uint32_t i, int dir)
{
	if (dir > 0)
		return q[i] == lo[i] && up[i] && e[i] < 0;
	return q[i] == lo[i] + 1 && e[i] > 0;
}

/* Order candidates by |e| descending, ties by index (deterministic).
 * qsort has no context argument, hence the thread-local. */
static _Thread_local const float *sort_err;

static int cmp_cand(const void *a_, const void *b_)
{
	uint32_t a = *(const uint32_t *)a_, b = *(const uint32_t *)b_;
	float ea = fabsf(sort_err[a]), eb = fabsf(sort_err[b]);

	if (ea != eb)
		return ea > eb ? -1 : 1;
	return a < b ? -1 : (a > b);
}

static void sort_cands(uint32_t *c, uint32_t n, const float *e)
{
	uint32_t i, j;

	sort_err = e;
	if (n > 16) {
		qsort(c, n, sizeof(*c), cmp_cand);
		return;
	}
	for (i = 1; i < n; i++) {
		uint32_t v = c[i];

		for (j = i; j > 0 && cmp_cand(&(uint32_t){ c[j - 1] }, &v) > 0; j--)
			c[j] = c[j - 1];
		c[j] = v;
	}
}

/* Flips needed to bring |sum| to <= 0.5: round(|sum|), halfway away from 0. */
static uint32_t flips_for(double sum)
{
	return (uint32_t)floor(fabs(sum) + 0.5);
}

static void squant_kernel_stage(const int32_t *lo, const uint8_t *up, uint32_t base,
				uint32_t g, int32_t *q, struct squant_ws *ws)
{
	float *e = ws->e;
	uint32_t *cand = ws->cand;
	uint32_t i, n = 0, need, f;
	double sum = 0;
	int dir;

	for (i = base; i < base + g; i++)
		sum += e[i];
	if (sum == 0)
		return;
	dir = sum < 0 ? 1 : -1;
	for (i = base; i < base + g; i++)
		if (can_flip(q, e, lo, up, i, dir))
			cand[n++] = i;
	sort_cands(cand, n, e);
	need = flips_for(sum);
	f = need < n ? need : n;
	for (i = 0; i < f; i++) {
		q[cand[i]] += dir;
		e[cand[i]] += (float)dir;
	}
	if (f > 0 && (double)f >= fabs(sum))
		ws->mark[cand[f - 1]] = (int8_t)-dir;	/* overshoot: offer the undo */
	else if (f < n)
		ws->mark[cand[f]] = (int8_t)dir;	/* offer the next flip */
}

static void squant_channel_stage(const int32_t *lo, const uint8_t *up, uint32_t k,
				 int32_t *q, struct squant_ws *ws)
{
	float *e = ws->e;
	uint32_t *cand = ws->cand;
	uint32_t i, n = 0, need, f;
	double sum = 0;
	int dir;

	for (i = 0; i < k; i++)
		sum += e[i];
	if (sum == 0)
		return;
	dir = sum < 0 ? 1 : -1;
	for (i = 0; i < k; i++)
		if (ws->mark[i] == dir && can_flip(q, e, lo, up, i, dir))
			cand[n++] = i;
	sort_cands(cand, n, e);
	need = flips_for(sum);
	f = need < n ? need : n;
	for (i = 0; i < f; i++) {
		q[cand[i]] += dir;
		e[cand[i]] += (float)dir;
	}
}

static void squant_row(const float *t, const int32_t *lo, const uint8_t *up, uint32_t k,
		       uint32_t kernel, bool kstage, bool cstage, int32_t *q,
		       struct squant_ws *ws)
{
	uint32_t i;

	nearest_row(t, lo, up, k, q);
	for (i = 0; i < k; i++)
		ws->e[i] = (float)q[i] - t[i];
	memset(ws->mark, 0, k);
	if (kstage && kernel > 1) {
		for (i = 0; i + kernel <= k; i += kernel)
			squant_kernel_stage(lo, up, i, kernel, q, ws);
	} else {
		/* No kernel stage: every element is a channel-stage candidate. */
		for (i = 0; i < k; i++)
			ws->mark[i] = ws->e[i] < 0 ? 1 : (ws->e[i] > 0 ? -1 : 0);
	}
	if (cstage)
		squant_channel_stage(lo, up, k, q, ws);
}

/* ---- AdaRound-style descent on the output error ----
 *
 * For one output channel with d = t - q (grid units) the output error on the
 * calibration rows is d^T H d (times s^2).  Moving q_j by sigma = +-1 changes
 * it by -2 sigma (H d)_j + H_jj.  We start from whichever of nearest and
 * SQuant has the lower output error, then repeatedly take the single move
 * with the largest gain (best improvement, so cheap flips go first, as in
 * SQuant) until no move gains or the budget of passes * k moves is spent.
 * Each step is exact, so the result is never worse than nearest or SQuant
 * on the rows in H.  This is AdaRound's objective (Nagel et al., 2020)
 * solved by discrete descent instead of the continuous relaxation: no
 * learning rate, no annealing, deterministic.
 */

struct ada_job {
	const struct nq_wshape *sh;
	const struct nq_bracket *b;
	const struct nq_gram *gram;
	const struct nq_round_params *p;
	unsigned passes;
	int32_t *q;
	int err;
};

#define ADA_BLOCK 16	/* channels sharing one pass over H */

typedef float v4f __attribute__((vector_size(16)));

static inline v4f load4(const float *p)
{
	v4f v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static float dot(const float *a, const float *b, uint32_t k)
{
	v4f s0 = { 0 }, s1 = { 0 };
	uint32_t m;
	float r;

	for (m = 0; m + 8 <= k; m += 8) {
		s0 += load4(a + m) * load4(b + m);
		s1 += load4(a + m + 4) * load4(b + m + 4);
	}
	s0 += s1;
	r = (s0[0] + s0[1]) + (s0[2] + s0[3]);
	for (; m < k; m++)
		r += a[m] * b[m];
	return r;
}

static void axpy(float a, const float *x, float *y, uint32_t k)
{
	uint32_t m;

	for (m = 0; m + 4 <= k; m += 4) {
		v4f v = load4(y + m) + a * load4(x + m);

		memcpy(y + m, &v, sizeof(v));
	}
	for (; m < k; m++)
		y[m] += a * x[m];
}

/* Descent for one channel whose gradient g = H d is already known. */
static void ada_descend(const struct ada_job *j, uint32_t c, const float *h, float *d, float *g,
			struct squant_ws *ws, uint32_t *diff, int32_t *qs)
{
	uint32_t k = j->sh->k, i, m, nd = 0;
	const float *t = j->b->t + (size_t)c * k;
	const int32_t *lo = j->b->lo + (size_t)c * k;
	const uint8_t *up = j->b->up + (size_t)c * k;
	int32_t *q = j->q + (size_t)c * k;
	size_t moves, budget = (size_t)j->passes * k;
	double gain = 0;

	/* Switch to the SQuant start if it is better: with delta = q - qs,
	 * error(qs) - error(q) = 2 delta.g + delta^T H delta (delta sparse). */
	squant_row(t, lo, up, k, j->sh->kernel, j->p->squant_kernel, j->p->squant_channel, qs, ws);
	for (i = 0; i < k; i++)
		if (qs[i] != q[i])
			diff[nd++] = i;
	for (i = 0; i < nd; i++) {
		uint32_t a = diff[i];
		const float *hr = h + (size_t)a * k;
		double row = 0;

		for (m = 0; m < nd; m++)
			row += (double)hr[diff[m]] * (q[diff[m]] - qs[diff[m]]);
		gain += (q[a] - qs[a]) * (2.0 * g[a] + row);
	}
	if (gain < 0) {
		for (i = 0; i < nd; i++) {
			uint32_t a = diff[i];
			float da = (float)(q[a] - qs[a]);

			axpy(da, h + (size_t)a * k, g, k);
			d[a] += da;
			q[a] = qs[a];
		}
	}

	for (moves = 0; moves < budget; moves++) {
		float best = 0, sigma = 0;
		uint32_t bj = 0;

		for (i = 0; i < k; i++) {
			float sg, delta;

			if (!up[i])
				continue;
			sg = q[i] == lo[i] ? 1.0f : -1.0f;
			delta = -2.0f * sg * g[i] + h[(size_t)i * k + i];
			if (delta < best) {
				best = delta;
				bj = i;
				sigma = sg;
			}
		}
		/* Relative threshold: float drift in g must not make a zero-gain
		 * move look profitable and cycle. */
		if (!(best < -1e-6f * h[(size_t)bj * k + bj]))
			break;
		q[bj] += (int32_t)sigma;
		d[bj] -= sigma;
		axpy(-sigma, h + (size_t)bj * k, g, k);
	}
}

/*
 * One item = up to ADA_BLOCK channels of one group: G = H D is computed with
 * one pass over H for the whole block (H is k*k floats, far beyond cache
 * for big layers; streaming it once per channel would dominate the time).
 */
static void ada_block(void *arg, uint32_t item)
{
	struct ada_job *j = arg;
	uint32_t k = j->sh->k, per_group = j->sh->oc / j->sh->groups;
	uint32_t blocks_per_group = (per_group + ADA_BLOCK - 1) / ADA_BLOCK;
	uint32_t grp = item / blocks_per_group;
	uint32_t c0 = grp * per_group + (item % blocks_per_group) * ADA_BLOCK;
	uint32_t nb = grp * per_group + per_group - c0, b, i;
	const float *h = j->gram[grp].h;
	struct squant_ws ws;
	float *d, *g;
	uint32_t *diff;
	int32_t *qs;

	if (nb > ADA_BLOCK)
		nb = ADA_BLOCK;
	for (b = 0; b < nb; b++) {
		size_t off = (size_t)(c0 + b) * k;

		nearest_row(j->b->t + off, j->b->lo + off, j->b->up + off, k, j->q + off);
	}
	d = malloc((size_t)k * (2 * ADA_BLOCK * sizeof(float) + sizeof(float) +
				2 * sizeof(uint32_t) + sizeof(int32_t) + 1));
	if (!d) {
		__atomic_store_n(&j->err, -ENOMEM, __ATOMIC_RELAXED);
		return;		/* these channels keep nearest */
	}
	g = d + (size_t)ADA_BLOCK * k;
	ws.e = g + (size_t)ADA_BLOCK * k;
	ws.cand = (uint32_t *)(ws.e + k);
	diff = ws.cand + k;
	qs = (int32_t *)(diff + k);
	ws.mark = (int8_t *)(qs + k);

	for (b = 0; b < nb; b++) {
		size_t off = (size_t)(c0 + b) * k;

		for (i = 0; i < k; i++)
			d[(size_t)b * k + i] = j->b->t[off + i] - (float)j->q[off + i];
	}
	for (i = 0; i < k; i++) {
		const float *hr = h + (size_t)i * k;

		for (b = 0; b < nb; b++)
			g[(size_t)b * k + i] = dot(hr, d + (size_t)b * k, k);
	}
	for (b = 0; b < nb; b++)
		ada_descend(j, c0 + b, h, d + (size_t)b * k, g + (size_t)b * k, &ws, diff, qs);
	free(d);
}

/* ---- the common entry ---- */

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
	if ((uint64_t)sh->oc * sh->k > SIZE_MAX / sizeof(float) / 4)
		return nq_fail(-EOVERFLOW, "weight shape: %u x %u too large", sh->oc, sh->k);
	return 0;
}

int nq_round_bracket(const struct nq_round_params *p, const struct nq_wshape *sh,
		     const struct nq_bracket *b, const struct nq_gram *gram, int32_t *q)
{
	size_t c, k;
	int err;

	if (!p || !b || !b->t || !b->lo || !b->up || !q)
		return nq_fail(-EINVAL, "round: missing argument");
	err = check_shape(sh);
	if (err)
		return err;
	k = sh->k;

	switch (p->method) {
	case NQ_ROUND_NEAREST:
		for (c = 0; c < sh->oc; c++)
			nearest_row_ties(b->t + c * k, b->lo + c * k, b->up + c * k, sh->k,
					 p->ties_up, q + c * k);
		return 0;
	case NQ_ROUND_TRUNCATE:
		memcpy(q, b->lo, sizeof(*q) * sh->oc * k);
		return 0;
	case NQ_ROUND_SQUANT: {
		struct squant_ws ws;

		ws.e = malloc(k * (sizeof(float) + sizeof(uint32_t) + 1));
		if (!ws.e)
			return nq_fail(-ENOMEM, "squant: out of memory for %zu elements", k);
		ws.cand = (uint32_t *)(ws.e + k);
		ws.mark = (int8_t *)(ws.cand + k);
		for (c = 0; c < sh->oc; c++)
			squant_row(b->t + c * k, b->lo + c * k, b->up + c * k, sh->k, sh->kernel,
				   p->squant_kernel, p->squant_channel, q + c * k, &ws);
		free(ws.e);
		return 0;
	}
	case NQ_ROUND_ADAROUND: {
		struct ada_job job = {
			.sh = sh, .b = b, .gram = gram, .q = q, .p = p,
			.passes = p->adaround_passes ? p->adaround_passes : DEFAULT_PASSES,
		};
		uint32_t g;

		if (!gram)
			return nq_fail(-EINVAL, "adaround needs calibration data (a gram matrix)");
		for (g = 0; g < sh->groups; g++)
			if (gram[g].k != sh->k || !gram[g].h)
				return nq_fail(-EINVAL, "adaround: gram %u is %u wide, weights have k %u",
					       g, gram[g].k, sh->k);
		parallel_for(p->threads ? p->threads : 1,
			     sh->groups * ((sh->oc / sh->groups + ADA_BLOCK - 1) / ADA_BLOCK),
			     ada_block, &job);
		if (job.err)
			return nq_fail(job.err, "adaround: out of memory");
		return 0;
	}
	}
	return nq_fail(-EINVAL, "round: unknown method %d", (int)p->method);
}

/* ---- gram matrix of the calibration patches ---- */

static uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

#define GB 32			/* gram tile edge */
#define GM 512			/* rows per accumulation chunk */

struct gram_job {
	const float *xt;	/* [k][mpad] transposed sample, zero padded */
	size_t mpad;
	uint32_t k;
	float *h;
};

/* H[i][j] += x_i . x_j for one 32x32 tile, 4x4 register blocks vectorised over rows. */
static void gram_tile(const struct gram_job *j, uint32_t i0, uint32_t j0, size_t m0, size_t m1)
{
	uint32_t i1 = i0 + GB < j->k ? i0 + GB : j->k;
	uint32_t j1 = j0 + GB < j->k ? j0 + GB : j->k;
	uint32_t i, jj, a, b;
	size_t m;

	for (i = i0; i < i1; i += 4) {
		for (jj = j0; jj < j1; jj += 4) {
			v4f acc[4][4];
			const float *xa[4], *xb[4];
			uint32_t na = i1 - i < 4 ? i1 - i : 4;
			uint32_t nb = j1 - jj < 4 ? j1 - jj : 4;

			if (jj + 3 < i)
				continue;	/* strictly below the diagonal */
			memset(acc, 0, sizeof(acc));
			for (a = 0; a < 4; a++) {
				xa[a] = j->xt + (size_t)(i + (a < na ? a : 0)) * j->mpad;
				xb[a] = j->xt + (size_t)(jj + (a < nb ? a : 0)) * j->mpad;
			}
			for (m = m0; m < m1; m += 4) {
				v4f va[4], vb[4];

				for (a = 0; a < 4; a++) {
					va[a] = load4(xa[a] + m);
					vb[a] = load4(xb[a] + m);
				}
				for (a = 0; a < 4; a++)
					for (b = 0; b < 4; b++)
						acc[a][b] += va[a] * vb[b];
			}
			for (a = 0; a < na; a++)
				for (b = 0; b < nb; b++) {
					v4f v = acc[a][b];

					j->h[(size_t)(i + a) * j->k + jj + b] +=
						(v[0] + v[1]) + (v[2] + v[3]);
				}
		}
	}
}

/* One item = one row of tiles (i0 fixed), every chunk of rows. */
static void gram_row(void *arg, uint32_t item)
{
	const struct gram_job *j = arg;
	uint32_t i0 = item * GB, j0;
	size_t m0;

	for (m0 = 0; m0 < j->mpad; m0 += GM) {
		size_t m1 = m0 + GM < j->mpad ? m0 + GM : j->mpad;

		for (j0 = i0; j0 < j->k; j0 += GB)
			gram_tile(j, i0, j0, m0, m1);
	}
}

#define GCHUNK 1024		/* rows transposed and accumulated at a time */

int nq_gram_init(struct nq_gram *g, uint32_t k)
{
	if (!g || !k)
		return nq_fail(-EINVAL, "gram: need k > 0");
	memset(g, 0, sizeof(*g));
	if ((uint64_t)k * k > SIZE_MAX / sizeof(float) ||
	    (uint64_t)k * GCHUNK > SIZE_MAX / sizeof(float))
		return nq_fail(-EOVERFLOW, "gram: k %u too large", k);
	g->h = calloc((size_t)k * k, sizeof(*g->h));
	if (!g->h)
		return nq_fail(-ENOMEM, "gram: out of memory for k = %u", k);
	g->k = k;
	return 0;
}

/*
 * Accumulate the upper triangle of X^T X for rows given by index (pick) or
 * consecutively, GCHUNK rows at a time through a transposed, zero-padded
 * copy (so the tiles read contiguous rows).
 */
static int gram_accumulate(struct nq_gram *g, const float *x, size_t rows, const uint32_t *pick,
			   unsigned threads)
{
	uint32_t k = g->k;
	float *xt;
	size_t r0, r, i;

	xt = malloc(sizeof(*xt) * (size_t)k * GCHUNK);
	if (!xt)
		return nq_fail(-ENOMEM, "gram: out of memory for k = %u", k);
	for (r0 = 0; r0 < rows; r0 += GCHUNK) {
		size_t m = rows - r0 < GCHUNK ? rows - r0 : GCHUNK;
		size_t mpad = (m + 3) & ~(size_t)3;
		struct gram_job job = { .xt = xt, .mpad = mpad, .k = k, .h = g->h };

		for (r = 0; r < m; r++) {
			const float *row = x + (size_t)(pick ? pick[r0 + r] : r0 + r) * k;

			for (i = 0; i < k; i++)
				xt[i * mpad + r] = row[i];
		}
		for (r = m; r < mpad; r++)
			for (i = 0; i < k; i++)
				xt[i * mpad + r] = 0;
		parallel_for(threads ? threads : 1, (k + GB - 1) / GB, gram_row, &job);
	}
	free(xt);
	g->rows += rows;
	return 0;
}

int nq_gram_add(struct nq_gram *g, const float *x, size_t rows, unsigned threads)
{
	if (!g || !g->h || (!x && rows))
		return nq_fail(-EINVAL, "gram add: not initialised or missing rows");
	return gram_accumulate(g, x, rows, NULL, threads);
}

int nq_gram_finish(struct nq_gram *g, float damp)
{
	double diag = 0;
	uint32_t a, b, k;

	if (!g || !g->h)
		return nq_fail(-EINVAL, "gram finish: not initialised");
	if (!g->rows)
		return nq_fail(-ENODATA, "gram finish: no rows were added");
	k = g->k;
	for (a = 0; a < k; a++)
		for (b = 0; b < a; b++)
			g->h[(size_t)a * k + b] = g->h[(size_t)b * k + a];
	if (damp > 0) {
		for (a = 0; a < k; a++)
			diag += g->h[(size_t)a * k + a];
		diag = diag / k * damp;
		if (diag == 0)
			diag = damp;
		for (a = 0; a < k; a++)
			g->h[(size_t)a * k + a] += (float)diag;
	}
	return 0;
}

int nq_gram_build(const float *x, size_t rows, uint32_t k, size_t max_rows,
		  uint64_t seed, float damp, unsigned threads, struct nq_gram *g)
{
	size_t m = rows, r;
	uint32_t *pick = NULL;
	int err;

	if (!g || !x || !rows || !k)
		return nq_fail(-EINVAL, "gram: need x with rows > 0 and k > 0");
	if (rows > UINT32_MAX)
		return nq_fail(-EOVERFLOW, "gram: %zu rows is too many", rows);
	if (max_rows && m > max_rows)
		m = max_rows;
	err = nq_gram_init(g, k);
	if (err)
		return err;
	if (m < rows) {
		/* Partial Fisher-Yates: the first m entries are a uniform sample. */
		pick = malloc(sizeof(*pick) * rows);
		if (!pick) {
			nq_gram_free(g);
			return nq_fail(-ENOMEM, "gram: out of memory sampling %zu rows", rows);
		}
		for (r = 0; r < rows; r++)
			pick[r] = (uint32_t)r;
		for (r = 0; r < m; r++) {
			size_t s = r + splitmix64(&seed) % (rows - r);
			uint32_t tmp = pick[r];

			pick[r] = pick[s];
			pick[s] = tmp;
		}
	}
	err = gram_accumulate(g, x, m, pick, threads);
	free(pick);
	if (!err)
		err = nq_gram_finish(g, damp);
	if (err)
		nq_gram_free(g);
	return err;
}

void nq_gram_free(struct nq_gram *g)
{
	if (!g)
		return;
	free(g->h);
	g->h = NULL;
	g->k = 0;
}

/* ---- nesting ---- */

static int check_levels(const unsigned *lv, unsigned n)
{
	unsigned i;

	if (n < 1 || n > NQ_MAX_LEVELS)
		return nq_fail(-EINVAL, "levels: %u levels, need 1..%d", n, NQ_MAX_LEVELS);
	for (i = 0; i < n; i++) {
		if (lv[i] < NQ_QUANT_MIN_BITS || lv[i] > NQ_QUANT_MAX_BITS)
			return nq_fail(-EINVAL, "levels: %u bits outside %d..%d", lv[i],
				       NQ_QUANT_MIN_BITS, NQ_QUANT_MAX_BITS);
		if (i && lv[i] <= lv[i - 1])
			return nq_fail(-EINVAL, "levels: must be strictly ascending (%u after %u)",
				       lv[i], lv[i - 1]);
	}
	return 0;
}

int nq_nested_alloc(struct nq_nested *n, uint32_t oc, uint32_t k, const struct nq_nest_opts *o)
{
	size_t cnt = (size_t)oc * k;
	unsigned i;
	int err;

	if (!n || !o)
		return nq_fail(-EINVAL, "nested alloc: missing argument");
	memset(n, 0, sizeof(*n));
	err = check_levels(o->levels, o->nlevels);
	if (err)
		return err;
	if (!oc || !k || cnt / k != oc)
		return nq_fail(-EINVAL, "nested alloc: bad shape %u x %u", oc, k);
	n->oc = oc;
	n->k = k;
	n->nlevels = o->nlevels;
	for (i = 0; i < o->nlevels; i++) {
		n->levels[i] = o->levels[i];
		n->q[i] = malloc(cnt);
		n->plane[i] = malloc(cnt);
		n->scale[i] = malloc(sizeof(float) * oc);
		if (!n->q[i] || !n->plane[i] || !n->scale[i]) {
			nq_nested_free(n);
			return nq_fail(-ENOMEM, "nested alloc: out of memory for %u x %u", oc, k);
		}
	}
	return 0;
}

void nq_nested_free(struct nq_nested *n)
{
	unsigned i;

	if (!n)
		return;
	for (i = 0; i < NQ_MAX_LEVELS; i++) {
		free(n->q[i]);
		free(n->plane[i]);
		free(n->scale[i]);
		n->q[i] = n->plane[i] = NULL;
		n->scale[i] = NULL;
	}
}

/* floor(v / 2^l) without relying on the sign behaviour of >> */
static int32_t floor_shift(int32_t v, unsigned l)
{
	return v >= 0 ? v >> l : -(int32_t)(((uint32_t)-v + (1u << l) - 1) >> l);
}

/* Least-squares scale for fixed integers; keeps `dflt` when undefined. */
static float refit_scale(const float *w, const int8_t *q, uint32_t k, float dflt)
{
	double wq = 0, qq = 0;
	uint32_t i;

	for (i = 0; i < k; i++) {
		wq += (double)w[i] * q[i];
		qq += (double)q[i] * q[i];
	}
	if (qq == 0 || !(wq > 0))
		return dflt;
	return (float)(wq / qq);
}

int nq_nest(const float *w, const struct nq_wshape *sh, const int8_t *q, const float *scale,
	    const struct nq_gram *gram, const struct nq_nest_opts *o, struct nq_nested *out)
{
	unsigned nl, n, lv;
	size_t cnt, i, c;
	float *t = NULL;
	int32_t *lo = NULL, *qk = NULL;
	uint8_t *up = NULL;
	struct nq_round_params rp;
	bool need_w;
	int err;

	if (!sh || !q || !scale || !o || !out)
		return nq_fail(-EINVAL, "nest: missing argument");
	err = check_shape(sh);
	if (!err)
		err = check_levels(o->levels, o->nlevels);
	if (err)
		return err;
	nl = o->nlevels;
	n = o->levels[nl - 1];
	if (out->oc != sh->oc || out->k != sh->k || out->nlevels != nl)
		return nq_fail(-EINVAL, "nest: output allocated for %u x %u, %u levels; need %u x %u, %u",
			       out->oc, out->k, out->nlevels, sh->oc, sh->k, nl);
	for (lv = 0; lv < nl; lv++)
		if (out->levels[lv] != o->levels[lv])
			return nq_fail(-EINVAL, "nest: output allocated for other levels");
	need_w = o->target == NQ_TARGET_FLOAT || o->residual == NQ_RESIDUAL_COMPACT ||
		 o->lscale == NQ_LSCALE_REFIT || o->round.method == NQ_ROUND_ADAROUND;
	if (need_w && !w)
		return nq_fail(-EINVAL, "nest: this method needs the float weights");
	if (o->round.method == NQ_ROUND_ADAROUND && o->target != NQ_TARGET_FLOAT)
		return nq_fail(-EINVAL, "nest: adaround minimises the float output error; use target float");

	cnt = (size_t)sh->oc * sh->k;
	for (c = 0; c < sh->oc; c++)
		if (!(scale[c] > 0) || !isfinite(scale[c]))
			return nq_fail(-EINVAL, "nest: scale of channel %zu is %g", c, scale[c]);
	for (i = 0; i < cnt; i++)
		if (q[i] < -(1 << (n - 1)) || q[i] > (1 << (n - 1)) - 1)
			return nq_fail(-ERANGE, "nest: q[%zu] = %d outside INT%u", i, q[i], n);

	memcpy(out->q[nl - 1], q, cnt);
	for (c = 0; c < sh->oc; c++)
		out->scale[nl - 1][c] = scale[c];

	if (nl > 1) {
		t = malloc(cnt * sizeof(*t));
		lo = malloc(cnt * sizeof(*lo));
		qk = malloc(cnt * sizeof(*qk));
		up = malloc(cnt);
		if (!t || !lo || !qk || !up) {
			err = nq_fail(-ENOMEM, "nest: out of memory for %zu weights", cnt);
			goto out_free;
		}
	}

	/* Top-down: each level is a rounding of the one above, inside its bracket. */
	rp = o->round;
	if (o->residual == NQ_RESIDUAL_COMPACT)
		rp.ties_up = 1;
	for (lv = nl - 1; lv-- > 0;) {
		unsigned l = o->levels[lv + 1] - o->levels[lv];
		int32_t hi = (1 << (o->levels[lv] - 1)) - 1;
		int32_t lmin = -(1 << (o->levels[lv] - 1));
		const int8_t *above = out->q[lv + 1];
		struct nq_bracket br = { .t = t, .lo = lo, .up = up };

		for (c = 0; c < sh->oc; c++) {
			float sk = ldexpf(scale[c], (int)(n - o->levels[lv]));

			out->scale[lv][c] = sk;
			for (i = c * sh->k; i < (c + 1) * sh->k; i++) {
				int32_t a = above[i];

				lo[i] = floor_shift(a, l);
				/* Cannot happen for ranges as declared; stay safe anyway. */
				if (lo[i] < lmin)
					lo[i] = lmin;
				if (lo[i] > hi)
					lo[i] = hi;
				up[i] = (a & ((1 << l) - 1)) != 0 && lo[i] + 1 <= hi;
				t[i] = o->target == NQ_TARGET_FLOAT ? w[i] / sk : ldexpf((float)a, -(int)l);
			}
		}
		err = nq_round_bracket(&rp, sh, &br, gram, qk);
		if (err)
			goto out_free;
		for (i = 0; i < cnt; i++)
			out->q[lv][i] = (int8_t)qk[i];
	}

	/*
	 * Compact: bottom-up, keep each level's integer where an l-bit residual
	 * on the (possibly re-derived) level below still reaches it; otherwise
	 * take the residual that best approximates the float weight.
	 */
	if (o->residual == NQ_RESIDUAL_COMPACT) {
		for (lv = 1; lv < nl; lv++) {
			unsigned l = o->levels[lv] - o->levels[lv - 1];
			int32_t hi = (1 << (o->levels[lv] - 1)) - 1;
			int32_t lmin = -(1 << (o->levels[lv] - 1));

			for (c = 0; c < sh->oc; c++) {
				float sk = out->scale[lv][c];

				for (i = c * sh->k; i < (c + 1) * sh->k; i++) {
					int32_t base = (int32_t)out->q[lv - 1][i] * (1 << l);
					int32_t rmin = -(1 << (l - 1)), rmax = (1 << (l - 1)) - 1;
					int32_t r = out->q[lv][i] - base;
					float want;

					if (rmin < lmin - base)
						rmin = lmin - base;
					if (rmax > hi - base)
						rmax = hi - base;
					if (r >= rmin && r <= rmax)
						continue;	/* the exact value still fits */
					want = nq_round_half_away(w[i] / sk - (float)base);
					r = want < (float)rmin ? rmin :
					    want > (float)rmax ? rmax : (int32_t)want;
					out->q[lv][i] = (int8_t)(base + r);
				}
			}
		}
	}

	/* Planes and the bits each needs. */
	memcpy(out->plane[0], out->q[0], cnt);
	out->plane_bits[0] = o->levels[0];
	for (lv = 1; lv < nl; lv++) {
		unsigned l = o->levels[lv] - o->levels[lv - 1];

		for (i = 0; i < cnt; i++)
			out->plane[lv][i] = (int8_t)(out->q[lv][i] - out->q[lv - 1][i] * (1 << l));
		out->plane_bits[lv] = o->residual == NQ_RESIDUAL_EXACT ? l + 1 : l;
	}

	if (o->lscale == NQ_LSCALE_REFIT) {
		unsigned top = o->residual == NQ_RESIDUAL_EXACT ? nl - 1 : nl;

		for (lv = 0; lv < top; lv++)
			for (c = 0; c < sh->oc; c++)
				out->scale[lv][c] = refit_scale(w + c * sh->k, out->q[lv] + c * sh->k,
								sh->k, out->scale[lv][c]);
	}
	err = 0;
out_free:
	free(t);
	free(lo);
	free(qk);
	free(up);
	return err;
}
