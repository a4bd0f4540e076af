// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for the ONNX importer.
 *
 * Each input is decoded as a ModelProto and imported (nq_onnx_load_buffer(),
 * which also infers every shape).  What loads is then normalised, since
 * BatchNorm folding, Pad merging and the weight-layer rewrite read the
 * constants the file declared, and, when its activations are small, run
 * through the FP32 reference executor on zeros: a shape that inference
 * accepted but a kernel cannot honour shows up as an out-of-bounds access
 * under AddressSanitizer.
 *
 * Random bytes rarely survive protobuf decoding and almost never make a graph
 * that passes shape inference, so a custom mutator also edits the decoded
 * model: attribute values, graph input dims, constant values (the shapes
 * Reshape reads), op types, which tensor a node reads, the node order, the
 * opset; then re-encodes it.  Half the time it leaves the bytes to
 * libFuzzer's own mutations, which reach the decoder's error paths.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fp32_exec.h"
#include "graph.h"
#include "onnx.pb-c.h"
#include "onnx_import.h"

size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);

/* Run the executor only when every activation together stays this small. */
#define MAX_RUN_FLOATS (1u << 18)
/* ... and a bound on the work of all its nodes stays below this. */
#define MAX_RUN_WORK ((size_t)1 << 24)

static void run_small(const struct nq_graph *g)
{
	float **in = NULL, **out = NULL;
	size_t total = 0;

	if (g->n_inputs <= 0 || g->n_outputs <= 0 || g->batch < 1 || g->batch > 4)
		return;
	for (int t = 0; t < g->n_tensors; t++) {
		size_t n = nq_fp32_numel(g, t, g->batch);

		if (n > MAX_RUN_FLOATS || (total += n) > MAX_RUN_FLOATS)
			return;
	}
	/*
	 * Work, too: a Conv whose weight is an activation, or a pool with a
	 * kernel as wide as its input, is small in memory and still costs
	 * out x K.  numel(output) x numel(largest input) bounds every op's
	 * multiply-adds and im2col scratch.
	 */
	total = 0;
	for (int i = 0; i < g->n_nodes; i++) {
		const struct nq_node *n = &g->nodes[i];
		size_t big = 1, out = nq_fp32_numel(g, n->output, g->batch);

		for (int j = 0; j < n->n_inputs; j++)
			if (n->inputs[j] >= 0 && nq_fp32_numel(g, n->inputs[j], g->batch) > big)
				big = nq_fp32_numel(g, n->inputs[j], g->batch);
		if ((total += out * big) > MAX_RUN_WORK)
			return;
	}
	in = calloc((size_t)g->n_inputs, sizeof(*in));
	out = calloc((size_t)g->n_outputs, sizeof(*out));
	if (!in || !out)
		goto out;
	for (int i = 0; i < g->n_inputs; i++)
		if (!(in[i] = calloc(nq_fp32_numel(g, g->inputs[i], g->batch) + 1, sizeof(float))))
			goto out;
	for (int i = 0; i < g->n_outputs; i++)
		if (!(out[i] = calloc(nq_fp32_numel(g, g->outputs[i], g->batch) + 1, sizeof(float))))
			goto out;
	nq_fp32_run(g, g->batch, (const float *const *)in, out, NULL);
out:
	for (int i = 0; in && i < g->n_inputs; i++)
		free(in[i]);
	for (int i = 0; out && i < g->n_outputs; i++)
		free(out[i]);
	free(in);
	free(out);
}

/* ---- the structure-aware mutator ------------------------------------- */

static const int64_t interesting[] = {
	0, 1, 2, 3, 4, 5, 7, 8, -1, -2, -3, 16, 255, 256, 4096, 65535,
	INT32_MAX, INT32_MIN, (int64_t)1 << 31, (int64_t)1 << 32, INT64_MAX, INT64_MIN,
};

static const char *const op_types[] = {
	"Conv", "Gemm", "MatMul", "BatchNormalization", "Relu", "Clip", "Add", "MaxPool",
	"AveragePool", "GlobalAveragePool", "Flatten", "Reshape", "Identity", "Softmax",
	"Concat", "Constant", "Shape", "Gather", "Unsqueeze", "Cast", "Pad",
};

static uint64_t rng;

static uint32_t rnd(uint32_t n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return n ? (uint32_t)(rng % n) : 0;
}

static int64_t new_int(int64_t old)
{
	switch (rnd(3)) {
	case 0:
		return interesting[rnd(sizeof(interesting) / sizeof(interesting[0]))];
	case 1:
		return (int64_t)((uint64_t)old + rnd(5) - 2);
	default:
		return (int64_t)(rng >> 1) % 64 - 8;
	}
}

/* Pointer and count fields changed in the decoded message, put back before
 * protobuf-c frees it (it frees every string it allocated, once). */
struct undo {
	void **ptr;
	void *old_ptr;
	size_t *cnt;
	size_t old_cnt;
};

#define MAX_UNDO 8

static void set_ptr(struct undo *u, int *nu, void **slot, void *v)
{
	if (*nu >= MAX_UNDO)
		return;
	u[*nu] = (struct undo){ .ptr = slot, .old_ptr = *slot };
	(*nu)++;
	*slot = v;
}

static void set_cnt(struct undo *u, int *nu, size_t *slot, size_t v)
{
	if (*nu >= MAX_UNDO)
		return;
	u[*nu] = (struct undo){ .cnt = slot, .old_cnt = *slot };
	(*nu)++;
	*slot = v;
}

/* Any tensor name the graph mentions: initializer, input or node output. */
static char *some_name(const Onnx__GraphProto *g)
{
	size_t total = g->n_initializer + g->n_input;

	for (size_t i = 0; i < g->n_node; i++)
		total += g->node[i]->n_output;
	if (!total)
		return NULL;
	total = rnd((uint32_t)total);
	if (total < g->n_initializer)
		return g->initializer[total]->name;
	total -= g->n_initializer;
	if (total < g->n_input)
		return g->input[total]->name;
	total -= g->n_input;
	for (size_t i = 0; i < g->n_node; i++) {
		if (total < g->node[i]->n_output)
			return g->node[i]->output[total];
		total -= g->node[i]->n_output;
	}
	return NULL;
}

static void mutate_model(Onnx__ModelProto *m, struct undo *u, int *nu)
{
	Onnx__GraphProto *g = m->graph;
	Onnx__NodeProto *n;

	if (!g)
		return;
	n = g->n_node ? g->node[rnd((uint32_t)g->n_node)] : NULL;
	switch (rnd(9)) {
	case 0:		/* an attribute's value */
	case 1:
		if (n && n->n_attribute) {
			Onnx__AttributeProto *a = n->attribute[rnd((uint32_t)n->n_attribute)];

			if (a->n_ints)
				a->ints[rnd((uint32_t)a->n_ints)] = new_int(a->ints[0]);
			else if (a->has_i)
				a->i = new_int(a->i);
			else if (a->has_f)
				a->f = (float)new_int(1) / (float)(1 + rnd(4));
			else if (a->n_floats)
				a->floats[rnd((uint32_t)a->n_floats)] = (float)new_int(0);
			else if (a->t && a->t->n_int64_data)
				a->t->int64_data[rnd((uint32_t)a->t->n_int64_data)] = new_int(0);
		}
		break;
	case 2:		/* a graph input's declared dims */
		if (g->n_input) {
			Onnx__ValueInfoProto *v = g->input[rnd((uint32_t)g->n_input)];
			Onnx__TensorShapeProto *sh = v->type && v->type->value_case ==
				ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE && v->type->tensor_type ?
				v->type->tensor_type->shape : NULL;

			if (sh && sh->n_dim) {
				Onnx__TensorShapeProto__Dimension *d = sh->dim[rnd((uint32_t)sh->n_dim)];

				if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE)
					d->dim_value = new_int(d->dim_value);
				else if (rnd(2))
					set_cnt(u, nu, &sh->n_dim, sh->n_dim - 1);
			}
		}
		break;
	case 3:		/* a constant's values (Reshape shapes, Pad pads, ...) */
		if (g->n_initializer) {
			Onnx__TensorProto *t = g->initializer[rnd((uint32_t)g->n_initializer)];

			if (t->n_int64_data)
				t->int64_data[rnd((uint32_t)t->n_int64_data)] = new_int(0);
			else if (t->n_float_data)
				t->float_data[rnd((uint32_t)t->n_float_data)] = (float)new_int(0);
			else if (t->has_raw_data && t->raw_data.len >= 8 && t->data_type ==
				 ONNX__TENSOR_PROTO__DATA_TYPE__INT64) {
				int64_t v = new_int(0);

				memcpy(t->raw_data.data + 8 * rnd((uint32_t)(t->raw_data.len / 8)), &v, 8);
			}
		}
		break;
	case 4:		/* the op */
		if (n)
			set_ptr(u, nu, (void **)&n->op_type,
				(void *)op_types[rnd(sizeof(op_types) / sizeof(op_types[0]))]);
		break;
	case 5:		/* which tensor an input reads */
		if (n && n->n_input) {
			char *name = some_name(g);

			if (name)
				set_ptr(u, nu, (void **)&n->input[rnd((uint32_t)n->n_input)], name);
		}
		break;
	case 6:		/* drop the last input or attribute */
		if (n && n->n_input && rnd(2))
			set_cnt(u, nu, &n->n_input, n->n_input - 1);
		else if (n && n->n_attribute)
			set_cnt(u, nu, &n->n_attribute, n->n_attribute - 1);
		break;
	case 7:		/* node order */
		if (g->n_node > 1) {
			size_t i = rnd((uint32_t)g->n_node), j = rnd((uint32_t)g->n_node);
			Onnx__NodeProto *t = g->node[i];

			g->node[i] = g->node[j];
			g->node[j] = t;
		}
		break;
	default:	/* the opset */
		if (m->n_opset_import && m->opset_import[0]->has_version)
			m->opset_import[0]->version = new_int(m->opset_import[0]->version) & 31;
	}
}

size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed)
{
	struct undo u[MAX_UNDO];
	Onnx__ModelProto *m;
	uint8_t *out;
	size_t len = 0;
	int nu = 0;

	rng = (uint64_t)seed * 0x9e3779b97f4a7c15ull + 1;
	if (rnd(2) || !(m = onnx__model_proto__unpack(NULL, size, data)))
		return LLVMFuzzerMutate(data, size, max_size);
	for (uint32_t k = 1 + rnd(3); k--;)
		mutate_model(m, u, &nu);
	/* packed aside: the decoded message must not alias what it is packed over */
	len = onnx__model_proto__get_packed_size(m);
	out = len <= max_size ? malloc(len ? len : 1) : NULL;
	if (out)
		onnx__model_proto__pack(m, out);
	while (nu--) {
		if (u[nu].ptr)
			*u[nu].ptr = u[nu].old_ptr;
		else
			*u[nu].cnt = u[nu].old_cnt;
	}
	onnx__model_proto__free_unpacked(m, NULL);
	if (!out)
		return LLVMFuzzerMutate(data, size, max_size);
	memcpy(data, out, len);
	free(out);
	return len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct nq_graph g;

	if (nq_onnx_load_buffer(data, size, &g) == 0) {
		run_small(&g);
		if (nq_graph_normalise(&g) == 0)
			run_small(&g);
	}
	nq_graph_free(&g);
	return 0;
}
