/* SPDX-License-Identifier: MIT */
/*
 * The converter's FP32 graph IR.
 *
 * A graph is a list of tensors and a list of nodes in topological order
 * (every node input is a constant, a graph input, or the output of an
 * earlier node).  Everything is referred to by index; indices stay valid
 * until a pass that says it renumbers (nq_graph_normalise()).
 *
 * Two forms share these structures:
 *
 *  - Imported (g->normalised == 0): what nq_onnx_load() returns.  Node ops
 *    are the ONNX operators we accept, numbered with the NQ_OP_* value of the
 *    op they become when there is one, and NQ_GOP_* otherwise.  Weight layers
 *    take their weights and biases as input tensors, attributes keep their
 *    ONNX meaning (Gemm transA/transB/alpha/beta, Clip min/max as inputs,
 *    ...), see "attribute slots" below.  Shapes of all tensors are inferred
 *    and int64 shape arithmetic (Shape, Gather, Unsqueeze, Concat of shapes,
 *    Constant) is already evaluated into constant tensors.
 *
 *  - Normalised (g->normalised == 1): after nq_graph_normalise().  Only
 *    NQ_OP_* ops from format/nq_ops.h, with the attribute slots defined
 *    there.  CONV and GEMM have exactly one input (the activation) and carry
 *    their weight and bias in the node: weight float[oc][k], bias float[oc].
 *    BatchNorm folded, Relu/Clip fused (NQ_A_ACT), Identity and shape
 *    arithmetic gone, Pad merged into the following AveragePool/Conv.
 *    Unreferenced tensors are removed.
 *
 * Shapes: activations have rank 1..4 and dims[0] is the batch.  A graph
 * input whose first dimension is symbolic is imported with dims[0] = 1 and
 * g->batch_symbolic set.  Constants (initializers) may have any rank up to
 * NQ_MAX_RANK.
 */
#ifndef NQ_GRAPH_H
#define NQ_GRAPH_H

#include <stddef.h>
#include <stdint.h>

#include "nq_ops.h"

#define NQ_MAX_RANK 8
#define NQ_MAX_ACT_RANK 4

/* Element types (ONNX TensorProto.DataType values). */
enum nq_elem_type {
	NQ_ELEM_FLOAT = 1,
	NQ_ELEM_INT64 = 7,
};

/* Import-only ops, removed by nq_graph_normalise().  Numbered past NQ_OP_*. */
enum nq_gop {
	NQ_GOP_BATCHNORM = 64,	/* X, scale, B, mean, var;  f[0] = epsilon */
	NQ_GOP_MATMUL,		/* A[M][K], B[K][N] (2-D only) */
	NQ_GOP_IDENTITY,
	NQ_GOP_PAD,		/* data[, pads[, value]]; see slots below */
	NQ_GOP_SHAPE,		/* shape arithmetic: evaluated at import */
	NQ_GOP_GATHER,
	NQ_GOP_UNSQUEEZE,
	NQ_GOP_CONSTANT,	/* folded into a constant tensor at import */
	NQ_GOP_CAST,		/* of constants only (to FLOAT or INT64): i[0] = to */
	NQ_GOP_END
};

/*
 * Attribute slots of the imported form (struct nq_attrs in nq_ops.h).  Ops
 * not listed use the nq_ops.h slots unchanged.
 *  CONV      inputs X, W[oc][cin/g][kh][kw], optional B[oc]; window slots as
 *            nq_ops.h; NQ_A_ACT = NONE.
 *  GEMM      inputs A, B, optional C (unidirectional broadcast to [M][N]);
 *            i[NQ_A_TRANS_A], i[NQ_A_TRANS_B], f[NQ_F_ALPHA], f[NQ_F_BETA].
 *  CLIP      inputs X, optional min, optional max (scalars, may be
 *            computed); without an input the bound is f[NQ_F_CLIP_MIN/MAX]
 *            (from the opset-6 attributes, or -/+FLT_MAX).
 *  SOFTMAX   i[NQ_A_AXIS] >= 0; i[NQ_A_SOFTMAX_2D] = 1 for opset < 13,
 *            where the input is coerced to 2-D [prod(:axis)][prod(axis:)].
 *  RESHAPE   inputs data, shape (constant int64); output dims are the result.
 *  AVGPOOL/MAXPOOL/CONV  pads already include ceil_mode and auto_pad.
 *  PAD       i[NQ_A_PAD_T/L/B/R] spatial pads of a 4-D input, f[0] = value.
 *  GATHER    i[0] = axis.  UNSQUEEZE  i[0] = count, i[1..] = axes.
 *  SHAPE     i[0] = start, i[1] = end (already clamped).
 * Normalised GEMM leaves the import-only slots zero.
 */
#define NQ_A_TRANS_A 0
#define NQ_A_TRANS_B 1
#define NQ_F_ALPHA 2
#define NQ_F_BETA 3
#define NQ_A_SOFTMAX_2D 1
#define NQ_F_BN_EPSILON 0
#define NQ_F_PAD_VALUE 0

/* Tensor flags */
#define NQ_TF_INPUT 0x1		/* graph input (fed at run time) */
#define NQ_TF_OUTPUT 0x2	/* graph output */
#define NQ_TF_CONST 0x4		/* value known: data (float) or i64 (int64) */

struct nq_tensor {
	char *name;
	int dtype;			/* enum nq_elem_type */
	int rank;			/* 0 = scalar */
	int64_t dims[NQ_MAX_RANK];
	float *data;			/* NQ_ELEM_FLOAT constant value, owned */
	int64_t *i64;			/* NQ_ELEM_INT64 constant value, owned */
	int producer;			/* node index, -1 for inputs/constants */
	unsigned flags;			/* NQ_TF_* */
};

struct nq_node {
	int op;				/* enum nq_op or enum nq_gop */
	char *name;			/* ONNX node name ("" when the file has none) */
	char *op_type;			/* ONNX op type, for messages */
	int index;			/* position in the ONNX file's node list */
	int n_inputs;
	int *inputs;			/* tensor ids; -1 = optional input omitted */
	int output;			/* tensor id (every accepted op has one) */
	struct nq_attrs attrs;

	/*
	 * Weight layers of the normalised form (CONV, GEMM), owned:
	 *   CONV  weight[oc][k], k = cin_per_group * kh * kw, ONNX OIHW order
	 *         within a row (cin, then kh, then kw);
	 *   GEMM  weight[oc][k], y = x . weight^T + bias (k = input features).
	 * Use nq_node_weight_ohwi() for rows in the file format's OHWI order.
	 */
	float *weight;
	float *bias;
	int oc, k;
	int cin_per_group;		/* CONV: input channels per group; GEMM: k */

	/* Import only: resolved into pads by nq_graph_infer_shapes(). */
	int auto_pad;			/* enum nq_auto_pad */
	int ceil_mode;
};

enum nq_auto_pad {
	NQ_AUTO_PAD_NOTSET = 0,
	NQ_AUTO_PAD_VALID,
	NQ_AUTO_PAD_SAME_UPPER,
	NQ_AUTO_PAD_SAME_LOWER,
};

struct nq_graph {
	struct nq_tensor *tensors;
	int n_tensors, cap_tensors;
	struct nq_node *nodes;
	int n_nodes, cap_nodes;
	int *inputs;			/* graph inputs fed at run time, in file order */
	int n_inputs;
	int *outputs;			/* graph outputs, in file order */
	int n_outputs;
	int opset;			/* default-domain opset of the model */
	int batch;			/* declared dims[0] of the first input */
	int batch_symbolic;		/* the file left dims[0] symbolic */
	int normalised;
};

/* Lifetime.  nq_graph_free() frees everything the graph owns; NULL is fine. */
void nq_graph_init(struct nq_graph *g);
void nq_graph_free(struct nq_graph *g);

/*
 * Add a tensor (name copied; dims/rank from the arguments, no data) or a node
 * (name/op_type copied, inputs copied).  Return the new index or -errno.
 */
int nq_graph_add_tensor(struct nq_graph *g, const char *name, int dtype, int rank,
			const int64_t *dims);
int nq_graph_add_node(struct nq_graph *g, int op, const char *name, const char *op_type,
		      const int *inputs, int n_inputs, int output);

/* Tensor id by name, or -1. */
int nq_graph_find(const struct nq_graph *g, const char *name);

/* Number of elements (product of dims; 1 for a scalar).  Shapes are
 * validated at import so this cannot overflow for a loaded graph. */
size_t nq_tensor_numel(const struct nq_tensor *t);

/* Human-readable op name ("Conv", "BatchNormalization", ...). */
const char *nq_op_name(int op);

/* "node 12 'Conv_3'" style prefix for messages; buf of at least 160 bytes. */
const char *nq_node_label(const struct nq_node *n, char *buf, size_t len);

/*
 * Infer the shape of every non-constant tensor from the graph inputs, check
 * every node's operands, and evaluate int64 shape arithmetic into constants.
 * Errors name the node.  Called by nq_onnx_load() and nq_graph_normalise().
 * Returns 0 or -errno (-EOPNOTSUPP for valid ONNX we do not support,
 * -EINVAL for an inconsistent graph).
 */
int nq_graph_infer_shapes(struct nq_graph *g);

/*
 * Normalise in place (see the top of this file).  On failure the graph is
 * left in a valid but unspecified state and must only be freed.
 * Returns 0 or -errno with nq_last_error() naming the node.
 */
int nq_graph_normalise(struct nq_graph *g);

/*
 * Copy a normalised CONV/GEMM node's weight to out[oc][kh][kw][cin_per_group]
 * (OHWI, the .nq file's row order).  For GEMM this is a plain copy.
 * out must hold oc * k floats.  Returns 0 or -EINVAL.
 */
int nq_node_weight_ohwi(const struct nq_node *n, float *out);

/* Number of nodes that read tensor t, and whether it is a graph output. */
int nq_graph_consumers(const struct nq_graph *g, int t);

#endif
