// SPDX-License-Identifier: MIT
/*
 * FP32 reference executor: walks the nodes in order, keeps one buffer per
 * live tensor (freed after its last reader), splits each op over the batch
 * across worker threads, and shows every produced tensor to the observer.
 */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "fp32_exec.h"
#include "fp32_kernels.h"
#include "nq_error.h"

#define MAX_THREADS 16

struct run {
	const struct nq_graph *g;
	int batch;
	int64_t (*dims)[NQ_MAX_RANK];	/* run-time dims per tensor */
	float **buf;			/* value per tensor (NULL = not live) */
	float *scratch;			/* per-node prepared operand (see prep) */
	float *scratch2;
};

static int is_batched(const struct nq_graph *g, int t)
{
	return !(g->tensors[t].flags & NQ_TF_CONST);
}

int nq_fp32_batchable(const struct nq_graph *g)
{
	for (int t = 0; t < g->n_tensors; t++) {
		const struct nq_tensor *x = &g->tensors[t];

		if (!is_batched(g, t))
			continue;
		if (x->rank < 1 || x->dims[0] != g->batch || g->batch != 1)
			return 0;
	}
	for (int i = 0; i < g->n_nodes; i++) {
		const struct nq_node *n = &g->nodes[i];
		const struct nq_attrs *a = &n->attrs;

		if (g->tensors[n->output].flags & NQ_TF_CONST)
			continue;
		switch (n->op) {
		case NQ_OP_CONCAT:
		case NQ_OP_SOFTMAX:
		case NQ_OP_FLATTEN:
			if (a->i[NQ_A_AXIS] == 0)
				return 0;
			break;
		case NQ_OP_GEMM:
			if (!n->weight && (a->i[NQ_A_TRANS_A] || n->inputs[1] < 0 ||
					   is_batched(g, n->inputs[1]) ||
					   (n->n_inputs > 2 && n->inputs[2] >= 0 &&
					    is_batched(g, n->inputs[2]))))
				return 0;
			break;
		case NQ_GOP_MATMUL:
			if (is_batched(g, n->inputs[1]))
				return 0;
			break;
		case NQ_OP_CONV:
		case NQ_GOP_BATCHNORM:
			for (int j = 1; j < n->n_inputs; j++)
				if (n->inputs[j] >= 0 && is_batched(g, n->inputs[j]))
					return 0;
			break;
		case NQ_OP_ADD:
			if (!is_batched(g, n->inputs[0]) || !is_batched(g, n->inputs[1]))
				return 0;
			break;
		case NQ_OP_CLIP:
			for (int j = 1; j < n->n_inputs; j++)
				if (n->inputs[j] >= 0 && is_batched(g, n->inputs[j]))
					return 0;
			break;
		default:
			break;
		}
	}
	return 1;
}

size_t nq_fp32_numel(const struct nq_graph *g, int t, int batch)
{
	const struct nq_tensor *x = &g->tensors[t];
	size_t n = nq_tensor_numel(x);

	/* As nq_fp32_run(): at the declared batch every tensor keeps its dims. */
	if (batch != g->batch && is_batched(g, t) && x->rank && x->dims[0])
		n = n / (size_t)x->dims[0] * (size_t)batch;
	return n;
}

static size_t rt_numel(const struct run *r, int t)
{
	size_t n = 1;

	for (int i = 0; i < r->g->tensors[t].rank; i++)
		n *= (size_t)r->dims[t][i];
	return n;
}

/* Elements per index of dim 0 ("one sample") of tensor t. */
static size_t rt_stride0(const struct run *r, int t)
{
	return r->dims[t][0] ? rt_numel(r, t) / (size_t)r->dims[t][0] : 0;
}

static const float *val(const struct run *r, const struct nq_node *n, int i)
{
	if (i >= n->n_inputs || n->inputs[i] < 0)
		return NULL;
	return r->buf[n->inputs[i]];
}

/* Ops whose slices along dim 0 are independent: run split over threads. */
static int splittable(const struct run *r, const struct nq_node *n)
{
	switch (n->op) {
	case NQ_OP_CONV:
	case NQ_OP_GEMM:
	case NQ_GOP_MATMUL:
	case NQ_GOP_BATCHNORM:
	case NQ_OP_RELU:
	case NQ_OP_CLIP:
	case NQ_OP_ADD:
	case NQ_OP_MAXPOOL:
	case NQ_OP_AVGPOOL:
	case NQ_OP_GLOBALAVGPOOL:
	case NQ_GOP_PAD:
		return 1;
	case NQ_OP_SOFTMAX:
		return n->attrs.i[NQ_A_AXIS] > 0;
	default:
		(void)r;
		return 0;
	}
}

/*
 * Work done once per node before the split: Gemm operands in the layout
 * the kernel wants.  scratch = B as [K][N] (alpha applied), scratch2 = A as
 * [M][K] when transposed.
 */
static int prep(struct run *r, const struct nq_node *n)
{
	const struct nq_graph *g = r->g;
	int K, N;

	r->scratch = r->scratch2 = NULL;
	if (n->op != NQ_OP_GEMM && n->op != NQ_GOP_MATMUL)
		return 0;
	N = (int)r->dims[n->output][1];
	if (n->weight) {	/* normalised: weight[N][K] */
		K = n->k;
		r->scratch = malloc((size_t)K * N * sizeof(float));
		if (!r->scratch)
			return -ENOMEM;
		for (int o = 0; o < N; o++)
			for (int k = 0; k < K; k++)
				r->scratch[(size_t)k * N + o] = n->weight[(size_t)o * K + k];
		return 0;
	} else {
		const float *b = val(r, n, 1), *a = val(r, n, 0);
		int ta = n->op == NQ_OP_GEMM && n->attrs.i[NQ_A_TRANS_A];
		int tb = n->op == NQ_OP_GEMM && n->attrs.i[NQ_A_TRANS_B];
		float alpha = n->op == NQ_OP_GEMM ? n->attrs.f[NQ_F_ALPHA] : 1.0f;
		int M = (int)r->dims[n->output][0];
		const int64_t *bd = r->dims[n->inputs[1]];

		K = (int)(tb ? bd[1] : bd[0]);
		r->scratch = malloc((size_t)K * N * sizeof(float));
		if (!r->scratch)
			return -ENOMEM;
		for (int k = 0; k < K; k++)
			for (int j = 0; j < N; j++)
				r->scratch[(size_t)k * N + j] =
					alpha * (tb ? b[(size_t)j * K + k] : b[(size_t)k * N + j]);
		if (ta) {
			r->scratch2 = malloc((size_t)M * K * sizeof(float));
			if (!r->scratch2)
				return -ENOMEM;
			for (int m = 0; m < M; m++)
				for (int k = 0; k < K; k++)
					r->scratch2[(size_t)m * K + k] = a[(size_t)k * M + m];
		}
	}
	(void)g;
	return 0;
}

static int exec_gemm(const struct run *r, const struct nq_node *n, float *y, int m0, int m1)
{
	const int64_t *od = r->dims[n->output];
	int N = (int)od[1], K;
	const float *a = r->scratch2 ? r->scratch2 : val(r, n, 0);

	K = n->weight ? n->k : (int)(rt_numel(r, n->inputs[0]) / (size_t)od[0]);
	k_sgemm(m0, m1, N, K, a, K, r->scratch, N, y, N);
	if (n->weight) {
		for (int m = m0; m < m1; m++) {
			float *row = y + (size_t)m * N;

			for (int j = 0; j < N; j++)
				row[j] += n->bias[j];
			k_act(row, (size_t)N, n->attrs.i[NQ_A_ACT], n->attrs.f[NQ_F_CLIP_MIN],
			      n->attrs.f[NQ_F_CLIP_MAX]);
		}
	} else if (n->op == NQ_OP_GEMM && val(r, n, 2)) {
		const float *c = val(r, n, 2);
		const struct nq_tensor *ct = &r->g->tensors[n->inputs[2]];
		const int64_t *cd = r->dims[n->inputs[2]];
		float beta = n->attrs.f[NQ_F_BETA];
		int cr = ct->rank == 2 ? (int)cd[0] : 1;
		int cc = ct->rank == 2 ? (int)cd[1] : ct->rank == 1 ? (int)cd[0] : 1;

		for (int m = m0; m < m1; m++)
			for (int j = 0; j < N; j++)
				y[(size_t)m * N + j] += beta * c[(size_t)(cr > 1 ? m : 0) * cc + (cc > 1 ? j : 0)];
	}
	return 0;
}

static int exec_conv(const struct run *r, const struct nq_node *n, float *y, int n0, int n1)
{
	const struct nq_attrs *a = &n->attrs;
	const int64_t *xd = r->dims[n->inputs[0]], *od = r->dims[n->output];
	struct k_conv p = {
		.C = (int)xd[1], .H = (int)xd[2], .W = (int)xd[3],
		.OC = (int)od[1], .OH = (int)od[2], .OW = (int)od[3],
		.groups = a->i[NQ_A_GROUPS], .kh = a->i[NQ_A_KH], .kw = a->i[NQ_A_KW],
		.sh = a->i[NQ_A_STRIDE_H], .sw = a->i[NQ_A_STRIDE_W],
		.pt = a->i[NQ_A_PAD_T], .pl = a->i[NQ_A_PAD_L],
		.dh = a->i[NQ_A_DIL_H], .dw = a->i[NQ_A_DIL_W],
		.weight = n->weight ? n->weight : val(r, n, 1),
		.bias = n->weight ? n->bias : val(r, n, 2),
		.act = a->i[NQ_A_ACT], .lo = a->f[NQ_F_CLIP_MIN], .hi = a->f[NQ_F_CLIP_MAX],
	};

	return k_conv2d(&p, val(r, n, 0), y, n0, n1);
}

static void exec_pool(const struct run *r, const struct nq_node *n, float *y, int n0, int n1)
{
	const struct nq_attrs *a = &n->attrs;
	const int64_t *xd = r->dims[n->inputs[0]], *od = r->dims[n->output];
	struct k_pool p = {
		.C = (int)xd[1], .H = (int)xd[2], .W = (int)xd[3], .OH = (int)od[2], .OW = (int)od[3],
		.kh = a->i[NQ_A_KH], .kw = a->i[NQ_A_KW],
		.sh = a->i[NQ_A_STRIDE_H], .sw = a->i[NQ_A_STRIDE_W],
		.pt = a->i[NQ_A_PAD_T], .pl = a->i[NQ_A_PAD_L],
		.pb = a->i[NQ_A_PAD_B], .pr = a->i[NQ_A_PAD_R],
		.dh = a->i[NQ_A_DIL_H], .dw = a->i[NQ_A_DIL_W],
		.count_include_pad = a->i[NQ_A_COUNT_INCLUDE_PAD],
	};

	if (n->op == NQ_OP_MAXPOOL) {
		k_maxpool(&p, val(r, n, 0), y, n0, n1);
	} else if (n->op == NQ_OP_AVGPOOL) {
		k_avgpool(&p, val(r, n, 0), y, n0, n1);
	} else {
		const float *x = val(r, n, 0);
		size_t hw = (size_t)p.H * p.W;

		for (size_t nc = (size_t)n0 * p.C; nc < (size_t)n1 * p.C; nc++) {
			float s = 0.0f;

			for (size_t i = 0; i < hw; i++)
				s += x[nc * hw + i];
			y[nc] = s / (float)hw;
		}
	}
}

static void exec_batchnorm(const struct run *r, const struct nq_node *n, float *y, int n0, int n1)
{
	const int64_t *xd = r->dims[n->inputs[0]];
	const float *x = val(r, n, 0), *sc = val(r, n, 1), *b = val(r, n, 2);
	const float *mean = val(r, n, 3), *var = val(r, n, 4);
	int C = (int)xd[1];
	size_t inner = rt_stride0(r, n->inputs[0]) / (size_t)C;

	for (int s = n0; s < n1; s++)
		for (int c = 0; c < C; c++) {
			float k = sc[c] / sqrtf(var[c] + n->attrs.f[NQ_F_BN_EPSILON]);
			float o = b[c] - mean[c] * k;
			size_t base = ((size_t)s * C + c) * inner;

			for (size_t i = 0; i < inner; i++)
				y[base + i] = x[base + i] * k + o;
		}
}

static void exec_pad(const struct run *r, const struct nq_node *n, float *y, int n0, int n1)
{
	const struct nq_attrs *a = &n->attrs;
	const int64_t *xd = r->dims[n->inputs[0]], *od = r->dims[n->output];
	const float *x = val(r, n, 0);
	int H = (int)xd[2], W = (int)xd[3], OH = (int)od[2], OW = (int)od[3];
	float v = a->f[NQ_F_PAD_VALUE];

	for (size_t nc = (size_t)n0 * xd[1]; nc < (size_t)n1 * xd[1]; nc++)
		for (int oy = 0; oy < OH; oy++)
			for (int ox = 0; ox < OW; ox++) {
				int iy = oy - a->i[NQ_A_PAD_T], ix = ox - a->i[NQ_A_PAD_L];

				y[(nc * OH + oy) * OW + ox] = iy >= 0 && iy < H && ix >= 0 && ix < W ?
					x[(nc * H + iy) * W + ix] : v;
			}
}

static void softmax_geometry(const struct run *r, const struct nq_node *n, size_t *outer,
			     size_t *len, size_t *inner)
{
	const struct nq_tensor *t = &r->g->tensors[n->inputs[0]];
	const int64_t *d = r->dims[n->inputs[0]];
	int axis = n->attrs.i[NQ_A_AXIS];

	*outer = *len = *inner = 1;
	for (int i = 0; i < t->rank; i++) {
		if (i < axis)
			*outer *= (size_t)d[i];
		else if (i == axis || n->attrs.i[NQ_A_SOFTMAX_2D])
			*len *= (size_t)d[i];
		else
			*inner *= (size_t)d[i];
	}
}

/* Compute output samples [n0, n1) of node n. */
static int exec_range(const struct run *r, const struct nq_node *n, int n0, int n1)
{
	float *y = r->buf[n->output];
	size_t st = rt_stride0(r, n->output);

	switch (n->op) {
	case NQ_OP_CONV:
		return exec_conv(r, n, y, n0, n1);
	case NQ_OP_GEMM:
	case NQ_GOP_MATMUL:
		return exec_gemm(r, n, y, n0, n1);
	case NQ_GOP_BATCHNORM:
		exec_batchnorm(r, n, y, n0, n1);
		return 0;
	case NQ_OP_MAXPOOL:
	case NQ_OP_AVGPOOL:
	case NQ_OP_GLOBALAVGPOOL:
		exec_pool(r, n, y, n0, n1);
		return 0;
	case NQ_GOP_PAD:
		exec_pad(r, n, y, n0, n1);
		return 0;
	case NQ_OP_RELU:
	case NQ_OP_CLIP: {
		const float *x = val(r, n, 0);
		float lo = n->attrs.f[NQ_F_CLIP_MIN], hi = n->attrs.f[NQ_F_CLIP_MAX];
		size_t b = (size_t)n0 * st, e = (size_t)n1 * st;

		if (n->op == NQ_OP_CLIP && val(r, n, 1))
			lo = val(r, n, 1)[0];
		if (n->op == NQ_OP_CLIP && val(r, n, 2))
			hi = val(r, n, 2)[0];
		memcpy(y + b, x + b, (e - b) * sizeof(float));
		k_act(y + b, e - b, n->op == NQ_OP_RELU ? NQ_ACT_RELU : NQ_ACT_CLIP, lo, hi);
		return 0;
	}
	case NQ_OP_ADD: {
		const float *a = val(r, n, 0), *b = val(r, n, 1);

		for (size_t i = (size_t)n0 * st; i < (size_t)n1 * st; i++)
			y[i] = a[i] + b[i];
		k_act(y + (size_t)n0 * st, (size_t)(n1 - n0) * st, n->attrs.i[NQ_A_ACT],
		      n->attrs.f[NQ_F_CLIP_MIN], n->attrs.f[NQ_F_CLIP_MAX]);
		return 0;
	}
	case NQ_OP_SOFTMAX: {
		size_t outer, len, inner, per;

		softmax_geometry(r, n, &outer, &len, &inner);
		per = outer / (size_t)r->dims[n->output][0];
		if (n->attrs.i[NQ_A_AXIS] == 0)
			k_softmax(val(r, n, 0), y, 0, outer, len, inner);
		else
			k_softmax(val(r, n, 0), y, (size_t)n0 * per, (size_t)n1 * per, len, inner);
		return 0;
	}
	case NQ_OP_FLATTEN:
	case NQ_OP_RESHAPE:
	case NQ_GOP_IDENTITY:
		memcpy(y, val(r, n, 0), rt_numel(r, n->output) * sizeof(float));
		return 0;
	case NQ_OP_CONCAT: {
		int axis = n->attrs.i[NQ_A_AXIS];
		const int64_t *od = r->dims[n->output];
		size_t outer = 1, inner = 1, off = 0;

		for (int i = 0; i < axis; i++)
			outer *= (size_t)od[i];
		for (int i = axis + 1; i < r->g->tensors[n->output].rank; i++)
			inner *= (size_t)od[i];
		for (int j = 0; j < n->n_inputs; j++) {
			size_t chunk = (size_t)r->dims[n->inputs[j]][axis] * inner;
			const float *x = val(r, n, j);

			for (size_t o = 0; o < outer; o++)
				memcpy(y + o * (size_t)od[axis] * inner + off, x + o * chunk,
				       chunk * sizeof(float));
			off += chunk;
		}
		return 0;
	}
	default:
		return nq_fail(-EOPNOTSUPP, "node %d '%s': %s cannot be executed", n->index, n->name,
			       n->op_type);
	}
}

struct job {
	const struct run *r;
	const struct nq_node *n;
	int n0, n1, err;
};

static void *job_main(void *arg)
{
	struct job *j = arg;

	j->err = exec_range(j->r, j->n, j->n0, j->n1);
	return NULL;
}

static int exec_node(struct run *r, const struct nq_node *n, int threads)
{
	int n0 = (int)r->dims[n->output][0];
	struct job jobs[MAX_THREADS];
	pthread_t tid[MAX_THREADS];
	int nt = threads, err = 0, started = 0;

	if (!splittable(r, n) || nt > n0)
		nt = splittable(r, n) ? n0 : 1;
	if (nt < 1)
		nt = 1;
	for (int i = 0; i < nt; i++) {
		jobs[i] = (struct job){ .r = r, .n = n, .n0 = (int)((long)n0 * i / nt),
					.n1 = (int)((long)n0 * (i + 1) / nt) };
	}
	for (int i = 1; i < nt; i++) {
		if (pthread_create(&tid[i], NULL, job_main, &jobs[i])) {
			jobs[i].err = 1;	/* run it below on this thread */
			continue;
		}
		started |= 1 << i;
	}
	job_main(&jobs[0]);
	for (int i = 1; i < nt; i++) {
		if (started & (1 << i))
			pthread_join(tid[i], NULL);
		else
			job_main(&jobs[i]);
	}
	for (int i = 0; i < nt; i++)
		if (jobs[i].err && !err)
			err = jobs[i].err;
	return err;
}

static int observe(const struct run *r, const struct nq_fp32_opts *o, int t)
{
	struct nq_fp32_view v = { .tensor = t, .rank = r->g->tensors[t].rank, .data = r->buf[t] };

	if (!o || !o->observe)
		return 0;
	memcpy(v.dims, r->dims[t], sizeof(v.dims));
	v.numel = rt_numel(r, t);
	return o->observe(o->arg, r->g, &v);
}

int nq_fp32_run(const struct nq_graph *g, int batch, const float *const *inputs,
		float *const *outputs, const struct nq_fp32_opts *opts)
{
	struct run r = { .g = g, .batch = batch };
	int *last = NULL, threads = opts && opts->threads > 1 ? opts->threads : 1;
	int err = 0;

	if (threads > MAX_THREADS)
		threads = MAX_THREADS;
	if (batch < 1 || (batch != g->batch && !nq_fp32_batchable(g)))
		return nq_fail(-EINVAL, "the graph runs only at batch %d (asked for %d)", g->batch, batch);
	r.dims = calloc((size_t)g->n_tensors, sizeof(*r.dims));
	r.buf = calloc((size_t)g->n_tensors, sizeof(*r.buf));
	last = calloc((size_t)g->n_tensors, sizeof(int));
	if (!r.dims || !r.buf || !last) {
		err = nq_fail(-ENOMEM, "out of memory");
		goto out;
	}
	for (int t = 0; t < g->n_tensors; t++) {
		const struct nq_tensor *x = &g->tensors[t];

		memcpy(r.dims[t], x->dims, sizeof(r.dims[t]));
		if (is_batched(g, t) && x->rank)
			r.dims[t][0] = batch == g->batch ? x->dims[0] : batch;
		if (x->flags & NQ_TF_CONST)
			r.buf[t] = x->data;	/* NULL for int64 constants: never read */
		last[t] = -1;
	}
	for (int i = 0; i < g->n_nodes; i++)
		for (int j = 0; j < g->nodes[i].n_inputs; j++)
			if (g->nodes[i].inputs[j] >= 0)
				last[g->nodes[i].inputs[j]] = i;
	for (int i = 0; i < g->n_inputs; i++) {
		r.buf[g->inputs[i]] = (float *)inputs[i];
		err = observe(&r, opts, g->inputs[i]);
		if (err)
			goto out;
	}

	for (int i = 0; i < g->n_nodes; i++) {
		const struct nq_node *n = &g->nodes[i];
		int t = n->output;

		if (g->tensors[t].flags & NQ_TF_CONST)
			continue;
		r.buf[t] = malloc(rt_numel(&r, t) * sizeof(float));
		if (!r.buf[t]) {
			err = nq_fail(-ENOMEM, "out of memory for tensor '%s'", g->tensors[t].name);
			goto out;
		}
		err = prep(&r, n);
		if (!err)
			err = exec_node(&r, n, threads);
		free(r.scratch);
		free(r.scratch2);
		if (err) {
			if (err == -ENOMEM || err == 1)
				err = nq_fail(-ENOMEM, "out of memory running node %d '%s'", n->index,
					      n->name);
			goto out;
		}
		err = observe(&r, opts, t);
		if (err)
			goto out;
		/* free inputs whose last reader this was */
		for (int j = 0; j < n->n_inputs; j++) {
			int in = n->inputs[j];

			if (in >= 0 && last[in] == i && !(g->tensors[in].flags &
							  (NQ_TF_CONST | NQ_TF_INPUT | NQ_TF_OUTPUT))) {
				free(r.buf[in]);
				r.buf[in] = NULL;
			}
		}
	}
	for (int i = 0; i < g->n_outputs; i++)
		memcpy(outputs[i], r.buf[g->outputs[i]], rt_numel(&r, g->outputs[i]) * sizeof(float));
out:
	if (r.buf)
		for (int t = 0; t < g->n_tensors; t++)
			if (!(g->tensors[t].flags & (NQ_TF_CONST | NQ_TF_INPUT)))
				free(r.buf[t]);
	free(r.buf);
	free(r.dims);
	free(last);
	return err;
}
