// SPDX-License-Identifier: MIT
/*
 * The FP32 graph IR: construction, lookup, naming helpers.  Shape inference
 * lives in shape.c, the passes in normalise.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph.h"
#include "nq_error.h"

void nq_graph_init(struct nq_graph *g)
{
	memset(g, 0, sizeof(*g));
	g->batch = 1;
}

static void node_release(struct nq_node *n)
{
	free(n->name);
	free(n->op_type);
	free(n->inputs);
	free(n->weight);
	free(n->bias);
}

void nq_graph_free(struct nq_graph *g)
{
	if (!g)
		return;
	for (int i = 0; i < g->n_tensors; i++) {
		free(g->tensors[i].name);
		free(g->tensors[i].data);
		free(g->tensors[i].i64);
	}
	for (int i = 0; i < g->n_nodes; i++)
		node_release(&g->nodes[i]);
	free(g->tensors);
	free(g->nodes);
	free(g->inputs);
	free(g->outputs);
	nq_graph_init(g);
}

static int grow(void **arr, int *cap, int need, size_t elem)
{
	void *p;
	int ncap;

	if (need <= *cap)
		return 0;
	if (need > (1 << 24))
		return nq_fail(-E2BIG, "graph has more than %d tensors or nodes", 1 << 24);
	ncap = *cap ? *cap * 2 : 64;
	while (ncap < need)
		ncap *= 2;
	p = realloc(*arr, (size_t)ncap * elem);
	if (!p)
		return nq_fail(-ENOMEM, "out of memory growing the graph");
	memset((char *)p + (size_t)*cap * elem, 0, (size_t)(ncap - *cap) * elem);
	*arr = p;
	*cap = ncap;
	return 0;
}

int nq_graph_add_tensor(struct nq_graph *g, const char *name, int dtype, int rank,
			const int64_t *dims)
{
	struct nq_tensor *t;
	int err;

	if (rank < 0 || rank > NQ_MAX_RANK)
		return nq_fail(-EOPNOTSUPP, "tensor '%s': rank %d exceeds %d", name, rank, NQ_MAX_RANK);
	err = grow((void **)&g->tensors, &g->cap_tensors, g->n_tensors + 1, sizeof(*t));
	if (err)
		return err;
	t = &g->tensors[g->n_tensors];
	memset(t, 0, sizeof(*t));
	t->name = strdup(name ? name : "");
	if (!t->name)
		return nq_fail(-ENOMEM, "out of memory");
	t->dtype = dtype;
	t->rank = rank;
	if (rank && dims)
		memcpy(t->dims, dims, (size_t)rank * sizeof(dims[0]));
	t->producer = -1;
	return g->n_tensors++;
}

int nq_graph_add_node(struct nq_graph *g, int op, const char *name, const char *op_type,
		      const int *inputs, int n_inputs, int output)
{
	struct nq_node *n;
	int err;

	err = grow((void **)&g->nodes, &g->cap_nodes, g->n_nodes + 1, sizeof(*n));
	if (err)
		return err;
	n = &g->nodes[g->n_nodes];
	memset(n, 0, sizeof(*n));
	n->op = op;
	n->index = g->n_nodes;
	n->output = output;
	n->name = strdup(name ? name : "");
	n->op_type = strdup(op_type ? op_type : nq_op_name(op));
	n->inputs = calloc(n_inputs ? (size_t)n_inputs : 1, sizeof(int));
	if (!n->name || !n->op_type || !n->inputs) {
		node_release(n);
		return nq_fail(-ENOMEM, "out of memory");
	}
	if (n_inputs)
		memcpy(n->inputs, inputs, (size_t)n_inputs * sizeof(int));
	n->n_inputs = n_inputs;
	return g->n_nodes++;
}

int nq_graph_find(const struct nq_graph *g, const char *name)
{
	/* Linear: graphs are small and this runs only while importing. */
	for (int i = g->n_tensors - 1; i >= 0; i--)
		if (!strcmp(g->tensors[i].name, name))
			return i;
	return -1;
}

size_t nq_tensor_numel(const struct nq_tensor *t)
{
	size_t n = 1;

	for (int i = 0; i < t->rank; i++)
		n *= (size_t)t->dims[i];
	return n;
}

const char *nq_op_name(int op)
{
	switch (op) {
	case NQ_OP_QUANTIZE: return "Quantize";
	case NQ_OP_DEQUANTIZE: return "Dequantize";
	case NQ_OP_CONV: return "Conv";
	case NQ_OP_GEMM: return "Gemm";
	case NQ_OP_ADD: return "Add";
	case NQ_OP_MAXPOOL: return "MaxPool";
	case NQ_OP_AVGPOOL: return "AveragePool";
	case NQ_OP_GLOBALAVGPOOL: return "GlobalAveragePool";
	case NQ_OP_FLATTEN: return "Flatten";
	case NQ_OP_RESHAPE: return "Reshape";
	case NQ_OP_CONCAT: return "Concat";
	case NQ_OP_SOFTMAX: return "Softmax";
	case NQ_OP_RELU: return "Relu";
	case NQ_OP_CLIP: return "Clip";
	case NQ_GOP_BATCHNORM: return "BatchNormalization";
	case NQ_GOP_MATMUL: return "MatMul";
	case NQ_GOP_IDENTITY: return "Identity";
	case NQ_GOP_PAD: return "Pad";
	case NQ_GOP_SHAPE: return "Shape";
	case NQ_GOP_GATHER: return "Gather";
	case NQ_GOP_UNSQUEEZE: return "Unsqueeze";
	case NQ_GOP_CONSTANT: return "Constant";
	case NQ_GOP_CAST: return "Cast";
	default: return "?";
	}
}

const char *nq_node_label(const struct nq_node *n, char *buf, size_t len)
{
	snprintf(buf, len, "node %d '%s'", n->index, n->name ? n->name : "");
	return buf;
}

int nq_graph_consumers(const struct nq_graph *g, int t)
{
	int count = 0;

	for (int i = 0; i < g->n_nodes; i++)
		for (int j = 0; j < g->nodes[i].n_inputs; j++)
			if (g->nodes[i].inputs[j] == t)
				count++;
	return count;
}

int nq_node_weight_ohwi(const struct nq_node *n, float *out)
{
	int cg, kh, kw;

	if (!n->weight || (n->op != NQ_OP_CONV && n->op != NQ_OP_GEMM))
		return nq_fail(-EINVAL, "node %d: not a normalised weight layer", n->index);
	if (n->op == NQ_OP_GEMM) {
		memcpy(out, n->weight, (size_t)n->oc * n->k * sizeof(float));
		return 0;
	}
	cg = n->cin_per_group;
	kh = n->attrs.i[NQ_A_KH];
	kw = n->attrs.i[NQ_A_KW];
	if ((long)cg * kh * kw != n->k)
		return nq_fail(-EINVAL, "node %d: weight row of %d != %d*%d*%d", n->index, n->k,
			       cg, kh, kw);
	for (int o = 0; o < n->oc; o++) {
		const float *src = n->weight + (size_t)o * n->k;
		float *dst = out + (size_t)o * n->k;

		for (int c = 0; c < cg; c++)
			for (int y = 0; y < kh; y++)
				for (int x = 0; x < kw; x++)
					dst[(y * kw + x) * cg + c] = src[(c * kh + y) * kw + x];
	}
	return 0;
}
