// SPDX-License-Identifier: MIT
/*
 * Graph normalisation: imported ONNX form -> the NQ_OP_* vocabulary of
 * format/nq_ops.h.  Passes, in order:
 *
 *  1. drop nodes whose value is known (shape arithmetic, Identity/Reshape of
 *     constants) and Identity;
 *  2. lower weight layers: Conv/Gemm/MatMul take their (constant) weight and
 *     bias into the node as weight[oc][k], bias[oc] (Gemm alpha/beta/transB
 *     applied; MatMul becomes Gemm);
 *  3. merge a zero Pad into the AveragePool/Conv it feeds (PyTorch's
 *     AvgPool2d export), a -inf Pad into MaxPool;
 *  4. fold BatchNormalization into the preceding Conv/Gemm when it is that
 *     layer's only reader; a standalone BatchNormalization becomes a
 *     depthwise 1x1 Conv (4-D) or a diagonal Gemm (2-D);
 *  5. Clip bounds into attributes, then fuse Relu/Clip into the preceding
 *     Conv/Gemm/Add when it is that op's only reader;
 *  6. Reshape keeps only its data input (target = output dims), Softmax
 *     loses the opset < 13 2-D coercion where it makes no difference;
 *  7. remove unreferenced tensors, re-infer shapes.
 *
 * A rewired op produces the tensor of the op it absorbed, so tensor names of
 * graph outputs survive.
 */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "graph.h"
#include "nq_error.h"

#define DEAD (-1)

static __thread char lbl[160];

static const char *label(const struct nq_node *n)
{
	return nq_node_label(n, lbl, sizeof(lbl));
}

static int is_output(const struct nq_graph *g, int t)
{
	return !!(g->tensors[t].flags & NQ_TF_OUTPUT);
}

static void refresh_producers(struct nq_graph *g)
{
	for (int t = 0; t < g->n_tensors; t++)
		g->tensors[t].producer = -1;
	for (int i = 0; i < g->n_nodes; i++)
		g->tensors[g->nodes[i].output].producer = i;
}

/* Remove nodes marked DEAD, keeping order. */
static void sweep(struct nq_graph *g)
{
	int j = 0;

	for (int i = 0; i < g->n_nodes; i++) {
		struct nq_node *n = &g->nodes[i];

		if (n->op == DEAD) {
			free(n->name);
			free(n->op_type);
			free(n->inputs);
			free(n->weight);
			free(n->bias);
			continue;
		}
		g->nodes[j++] = *n;
	}
	g->n_nodes = j;
	refresh_producers(g);
}

static void replace_uses(struct nq_graph *g, int from, int to)
{
	for (int i = 0; i < g->n_nodes; i++)
		for (int j = 0; j < g->nodes[i].n_inputs; j++)
			if (g->nodes[i].inputs[j] == from)
				g->nodes[i].inputs[j] = to;
}

/*
 * If tensor x is produced by a node that nobody else reads it from, let that
 * node produce `to` instead and return the node; else NULL.
 */
static struct nq_node *sole_producer(struct nq_graph *g, int x)
{
	int p = g->tensors[x].producer;

	if (p < 0 || is_output(g, x) || nq_graph_consumers(g, x) != 1 || g->nodes[p].op == DEAD)
		return NULL;
	return &g->nodes[p];
}

static void absorb(struct nq_graph *g, struct nq_node *p, struct nq_node *n)
{
	p->output = n->output;
	n->op = DEAD;
	refresh_producers(g);
}

static const struct nq_tensor *const_float(struct nq_graph *g, struct nq_node *n, int i,
					   const char *what, int *err)
{
	const struct nq_tensor *t;

	*err = 0;
	if (i >= n->n_inputs || n->inputs[i] < 0)
		return NULL;
	t = &g->tensors[n->inputs[i]];
	if (!(t->flags & NQ_TF_CONST) || t->dtype != NQ_ELEM_FLOAT)
		*err = nq_fail(-EOPNOTSUPP, "%s: %s %s '%s' is not a constant; it cannot be normalised",
			       label(n), n->op_type, what, t->name);
	return t;
}

static int pass_drop(struct nq_graph *g)
{
	for (int i = 0; i < g->n_nodes; i++) {
		struct nq_node *n = &g->nodes[i], *p;
		int x;

		if (g->tensors[n->output].flags & NQ_TF_CONST) {
			n->op = DEAD;
			continue;
		}
		if (n->op != NQ_GOP_IDENTITY)
			continue;
		x = n->inputs[0];
		if (!is_output(g, n->output)) {
			replace_uses(g, n->output, x);
			n->op = DEAD;
		} else if ((p = sole_producer(g, x))) {
			absorb(g, p, n);
		} else {
			n->op = NQ_OP_RESHAPE;	/* a copy that keeps the output's name */
			n->n_inputs = 1;
		}
	}
	sweep(g);
	return 0;
}

static int lower_conv(struct nq_graph *g, struct nq_node *n)
{
	const struct nq_tensor *w, *b;
	size_t nw;
	int err;

	w = const_float(g, n, 1, "weight", &err);
	if (err)
		return err;
	b = const_float(g, n, 2, "bias", &err);
	if (err)
		return err;
	nw = nq_tensor_numel(w);
	n->oc = (int)w->dims[0];
	n->k = (int)(nw / (size_t)w->dims[0]);
	n->cin_per_group = (int)w->dims[1];
	n->weight = malloc(nw * sizeof(float));
	n->bias = calloc((size_t)n->oc, sizeof(float));
	if (!n->weight || !n->bias)
		return nq_fail(-ENOMEM, "out of memory");
	memcpy(n->weight, w->data, nw * sizeof(float));
	if (b)
		memcpy(n->bias, b->data, (size_t)n->oc * sizeof(float));
	n->n_inputs = 1;
	return 0;
}

static int lower_gemm(struct nq_graph *g, struct nq_node *n)
{
	const struct nq_tensor *bt, *ct;
	int is_mm = n->op == NQ_GOP_MATMUL, tb, K, N, err;
	float alpha = 1.0f, beta = 1.0f;

	if (!is_mm && n->attrs.i[NQ_A_TRANS_A])
		return nq_fail(-EOPNOTSUPP, "%s: Gemm attribute transA=1 cannot be normalised", label(n));
	bt = const_float(g, n, 1, "B", &err);
	if (err)
		return err;
	ct = is_mm ? NULL : const_float(g, n, 2, "C", &err);
	if (err)
		return err;
	tb = !is_mm && n->attrs.i[NQ_A_TRANS_B];
	if (!is_mm) {
		alpha = n->attrs.f[NQ_F_ALPHA];
		beta = n->attrs.f[NQ_F_BETA];
	}
	K = (int)bt->dims[tb ? 1 : 0];
	N = (int)bt->dims[tb ? 0 : 1];
	if (ct && ct->rank == 2 && ct->dims[0] != 1)
		return nq_fail(-EOPNOTSUPP, "%s: Gemm bias C of shape [%lld,%lld] varies per row; only a per-column bias can be normalised",
			       label(n), (long long)ct->dims[0], (long long)ct->dims[1]);
	n->oc = N;
	n->k = n->cin_per_group = K;
	n->weight = malloc((size_t)N * K * sizeof(float));
	n->bias = calloc((size_t)N, sizeof(float));
	if (!n->weight || !n->bias)
		return nq_fail(-ENOMEM, "out of memory");
	for (int o = 0; o < N; o++)
		for (int k = 0; k < K; k++)
			n->weight[(size_t)o * K + k] =
				alpha * (tb ? bt->data[(size_t)o * K + k] : bt->data[(size_t)k * N + o]);
	if (ct) {
		size_t nc = nq_tensor_numel(ct);

		for (int o = 0; o < N; o++)
			n->bias[o] = beta * ct->data[nc == 1 ? 0 : o];
	}
	n->op = NQ_OP_GEMM;
	n->n_inputs = 1;
	memset(&n->attrs, 0, sizeof(n->attrs));
	return 0;
}

static int pass_weights(struct nq_graph *g)
{
	for (int i = 0; i < g->n_nodes; i++) {
		struct nq_node *n = &g->nodes[i];
		int err = 0;

		if (n->weight)
			continue;
		if (n->op == NQ_OP_CONV)
			err = lower_conv(g, n);
		else if (n->op == NQ_OP_GEMM || n->op == NQ_GOP_MATMUL)
			err = lower_gemm(g, n);
		if (err)
			return err;
	}
	return 0;
}

static int pass_pad(struct nq_graph *g)
{
	for (int i = 0; i < g->n_nodes; i++) {
		struct nq_node *p = &g->nodes[i], *c = NULL;
		struct nq_attrs *a;
		float v;

		if (p->op != NQ_GOP_PAD)
			continue;
		v = p->attrs.f[NQ_F_PAD_VALUE];
		if (!is_output(g, p->output) && nq_graph_consumers(g, p->output) == 1)
			for (int j = i + 1; j < g->n_nodes && !c; j++)
				if (g->nodes[j].n_inputs && g->nodes[j].inputs[0] == p->output)
					c = &g->nodes[j];
		if (!c)
			goto unsupported;
		a = &c->attrs;
		if (c->op == NQ_OP_AVGPOOL && v == 0.0f) {
			int had = a->i[NQ_A_PAD_T] | a->i[NQ_A_PAD_L] | a->i[NQ_A_PAD_B] | a->i[NQ_A_PAD_R];

			if (had && !a->i[NQ_A_COUNT_INCLUDE_PAD])
				goto unsupported;
			a->i[NQ_A_COUNT_INCLUDE_PAD] = 1;
		} else if (!(c->op == NQ_OP_CONV && v == 0.0f) &&
			   !(c->op == NQ_OP_MAXPOOL && v <= -FLT_MAX)) {
			goto unsupported;
		}
		a->i[NQ_A_PAD_T] += p->attrs.i[NQ_A_PAD_T];
		a->i[NQ_A_PAD_L] += p->attrs.i[NQ_A_PAD_L];
		a->i[NQ_A_PAD_B] += p->attrs.i[NQ_A_PAD_B];
		a->i[NQ_A_PAD_R] += p->attrs.i[NQ_A_PAD_R];
		c->inputs[0] = p->inputs[0];
		p->op = DEAD;
		continue;
unsupported:
		return nq_fail(-EOPNOTSUPP,
			       "%s: Pad (value %g) that does not feed an AveragePool or Conv alone cannot be normalised",
			       label(p), v);
	}
	sweep(g);
	return 0;
}

static int pass_batchnorm(struct nq_graph *g)
{
	for (int i = 0; i < g->n_nodes; i++) {
		struct nq_node *n = &g->nodes[i], *p;
		const struct nq_tensor *sc, *b, *mean, *var, *x;
		float *s;
		int C, err = 0;

		if (n->op != NQ_GOP_BATCHNORM)
			continue;
		sc = const_float(g, n, 1, "scale", &err);
		if (!err)
			b = const_float(g, n, 2, "B", &err);
		if (!err)
			mean = const_float(g, n, 3, "mean", &err);
		if (!err)
			var = const_float(g, n, 4, "var", &err);
		if (err)
			return err;
		x = &g->tensors[n->inputs[0]];
		C = (int)x->dims[1];
		s = malloc((size_t)C * sizeof(float));
		if (!s)
			return nq_fail(-ENOMEM, "out of memory");
		for (int c = 0; c < C; c++)
			s[c] = sc->data[c] / sqrtf(var->data[c] + n->attrs.f[NQ_F_BN_EPSILON]);

		p = sole_producer(g, n->inputs[0]);
		if (p && (p->op == NQ_OP_CONV || p->op == NQ_OP_GEMM) && p->weight &&
		    !p->attrs.i[NQ_A_ACT]) {
			for (int c = 0; c < C; c++) {
				for (int k = 0; k < p->k; k++)
					p->weight[(size_t)c * p->k + k] *= s[c];
				p->bias[c] = (p->bias[c] - mean->data[c]) * s[c] + b->data[c];
			}
			absorb(g, p, n);
			free(s);
			continue;
		}
		/* standalone: y = x * s + (B - mean * s), per channel */
		if (x->rank != 4 && x->rank != 2) {
			free(s);
			return nq_fail(-EOPNOTSUPP, "%s: BatchNormalization on a rank-%d input without a preceding Conv/Gemm cannot be normalised",
				       label(n), x->rank);
		}
		n->oc = C;
		n->bias = malloc((size_t)C * sizeof(float));
		if (x->rank == 4) {
			n->op = NQ_OP_CONV;
			n->k = n->cin_per_group = 1;
			n->weight = s;
			s = NULL;
			memset(&n->attrs, 0, sizeof(n->attrs));
			n->attrs.i[NQ_A_KH] = n->attrs.i[NQ_A_KW] = 1;
			n->attrs.i[NQ_A_STRIDE_H] = n->attrs.i[NQ_A_STRIDE_W] = 1;
			n->attrs.i[NQ_A_DIL_H] = n->attrs.i[NQ_A_DIL_W] = 1;
			n->attrs.i[NQ_A_GROUPS] = C;
		} else {
			n->op = NQ_OP_GEMM;
			n->k = n->cin_per_group = C;
			n->weight = calloc((size_t)C * C, sizeof(float));
			if (n->weight)
				for (int c = 0; c < C; c++)
					n->weight[(size_t)c * C + c] = s[c];
			memset(&n->attrs, 0, sizeof(n->attrs));
		}
		if (!n->weight || !n->bias) {
			free(s);
			return nq_fail(-ENOMEM, "out of memory");
		}
		for (int c = 0; c < C; c++)
			n->bias[c] = b->data[c] - mean->data[c] * (n->op == NQ_OP_CONV ? n->weight[c] :
								    n->weight[(size_t)c * C + c]);
		n->n_inputs = 1;
		free(s);
	}
	sweep(g);
	return 0;
}

static int pass_activation(struct nq_graph *g)
{
	for (int i = 0; i < g->n_nodes; i++) {
		struct nq_node *n = &g->nodes[i], *p;
		int act, err;

		if (n->op == NQ_OP_CLIP) {
			for (int j = 1; j <= 2; j++) {
				const struct nq_tensor *t = const_float(g, n, j, j == 1 ? "min" : "max", &err);

				if (err)
					return err;
				if (t)
					n->attrs.f[j == 1 ? NQ_F_CLIP_MIN : NQ_F_CLIP_MAX] = t->data[0];
			}
			n->n_inputs = 1;
			if (n->attrs.f[NQ_F_CLIP_MIN] > n->attrs.f[NQ_F_CLIP_MAX])
				return nq_fail(-EOPNOTSUPP, "%s: Clip with min > max cannot be normalised",
					       label(n));
		}
		if (n->op != NQ_OP_RELU && n->op != NQ_OP_CLIP)
			continue;
		act = n->op == NQ_OP_RELU ? NQ_ACT_RELU : NQ_ACT_CLIP;
		if (act == NQ_ACT_CLIP && n->attrs.f[NQ_F_CLIP_MIN] == 0.0f &&
		    n->attrs.f[NQ_F_CLIP_MAX] >= FLT_MAX)
			act = NQ_ACT_RELU;
		p = sole_producer(g, n->inputs[0]);
		if (!p || p->attrs.i[NQ_A_ACT] ||
		    !(p->op == NQ_OP_ADD || ((p->op == NQ_OP_CONV || p->op == NQ_OP_GEMM) && p->weight)))
			continue;
		p->attrs.i[NQ_A_ACT] = act;
		if (act == NQ_ACT_CLIP) {
			p->attrs.f[NQ_F_CLIP_MIN] = n->attrs.f[NQ_F_CLIP_MIN];
			p->attrs.f[NQ_F_CLIP_MAX] = n->attrs.f[NQ_F_CLIP_MAX];
		}
		absorb(g, p, n);
	}
	sweep(g);
	return 0;
}

static int pass_finish(struct nq_graph *g)
{
	for (int i = 0; i < g->n_nodes; i++) {
		struct nq_node *n = &g->nodes[i];

		if (n->op == NQ_OP_RESHAPE) {
			n->n_inputs = 1;
			n->attrs.i[1] = 0;	/* allowzero: resolved into the dims */
		}
		if (n->op == NQ_OP_SOFTMAX && n->attrs.i[NQ_A_SOFTMAX_2D]) {
			const struct nq_tensor *x = &g->tensors[n->inputs[0]];
			int64_t rest = 1;

			for (int d = n->attrs.i[NQ_A_AXIS] + 1; d < x->rank; d++)
				rest *= x->dims[d];
			if (rest != 1)
				return nq_fail(-EOPNOTSUPP, "%s: Softmax (opset < 13) over several axes cannot be normalised",
					       label(n));
			n->attrs.i[NQ_A_SOFTMAX_2D] = 0;
		}
		if (n->op <= NQ_OP_INVALID || n->op >= NQ_OP_COUNT || n->op == NQ_OP_QUANTIZE ||
		    n->op == NQ_OP_DEQUANTIZE)
			return nq_fail(-EOPNOTSUPP, "%s: %s cannot be expressed after normalisation",
				       label(n), n->op_type);
		for (int j = 0; j < n->n_inputs; j++)
			if (n->inputs[j] < 0)
				return nq_fail(-EINVAL, "%s: %s has an omitted input after normalisation",
					       label(n), n->op_type);
	}
	return 0;
}

/* Drop tensors no node, input or output refers to; renumber the rest. */
static int pass_compact(struct nq_graph *g)
{
	int *map = malloc((size_t)g->n_tensors * sizeof(int)), j = 0;

	if (!map)
		return nq_fail(-ENOMEM, "out of memory");
	for (int t = 0; t < g->n_tensors; t++)
		map[t] = -1;
	for (int i = 0; i < g->n_inputs; i++)
		map[g->inputs[i]] = 0;
	for (int i = 0; i < g->n_outputs; i++)
		map[g->outputs[i]] = 0;
	for (int i = 0; i < g->n_nodes; i++) {
		map[g->nodes[i].output] = 0;
		for (int k = 0; k < g->nodes[i].n_inputs; k++)
			map[g->nodes[i].inputs[k]] = 0;
	}
	for (int t = 0; t < g->n_tensors; t++) {
		if (map[t] < 0) {
			free(g->tensors[t].name);
			free(g->tensors[t].data);
			free(g->tensors[t].i64);
			continue;
		}
		map[t] = j;
		g->tensors[j++] = g->tensors[t];
	}
	g->n_tensors = j;
	for (int i = 0; i < g->n_inputs; i++)
		g->inputs[i] = map[g->inputs[i]];
	for (int i = 0; i < g->n_outputs; i++)
		g->outputs[i] = map[g->outputs[i]];
	for (int i = 0; i < g->n_nodes; i++) {
		g->nodes[i].output = map[g->nodes[i].output];
		for (int k = 0; k < g->nodes[i].n_inputs; k++)
			g->nodes[i].inputs[k] = map[g->nodes[i].inputs[k]];
	}
	free(map);
	refresh_producers(g);
	return 0;
}

int nq_graph_normalise(struct nq_graph *g)
{
	int (*const passes[])(struct nq_graph *) = {
		pass_drop, pass_weights, pass_pad, pass_batchnorm, pass_activation, pass_finish,
		pass_compact,
	};
	int err;

	if (g->normalised)
		return 0;
	refresh_producers(g);
	for (size_t i = 0; i < sizeof(passes) / sizeof(passes[0]); i++) {
		err = passes[i](g);
		if (err)
			return err;
	}
	g->normalised = 1;
	return nq_graph_infer_shapes(g);
}
