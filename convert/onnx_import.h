/* SPDX-License-Identifier: MIT */
/*
 * ONNX import: a .onnx file (ModelProto, decoded by protobuf-c code generated
 * at build time from Debian's onnx.proto) into the FP32 graph IR of graph.h.
 *
 * Accepted operators (default domain, the attributes PyTorch exports):
 * Conv (2-D, groups incl. depthwise, strides, pads, dilations, auto_pad),
 * Gemm (transA/transB/alpha/beta), MatMul (2-D), BatchNormalization
 * (inference), Relu, Clip, Add (same shapes), MaxPool / AveragePool (2-D,
 * ceil_mode folded into pads), GlobalAveragePool, Flatten, Reshape, Identity,
 * Softmax, Concat; and, to fold the constant shapes PyTorch computes for
 * Reshape: Constant, Shape, Gather, Unsqueeze, Concat of int64, Cast of constants; Pad
 * (constant mode, spatial only) as PyTorch emits before AveragePool.
 *
 * Everything else fails with -EOPNOTSUPP and nq_last_error() naming the node
 * (index in the file and name), the op type and, where it applies, the
 * attribute and its value:
 *	node 12 'Conv_3': Conv attribute group=0 is out of range
 * A file that is not valid (truncated, inconsistent shapes, data sizes that
 * do not match dims, undefined inputs) fails with -EINVAL.  Nothing in the
 * file is trusted: counts, dims and byte sizes are checked before use.
 */
#ifndef NQ_ONNX_IMPORT_H
#define NQ_ONNX_IMPORT_H

#include <stddef.h>

#include "graph.h"

/*
 * Load an ONNX model into g (initialised here; free with nq_graph_free()
 * whether or not the call succeeded).  On success all tensor shapes are
 * inferred (nq_graph_infer_shapes()) and g is in the imported form.
 * Returns 0 or a negative errno.
 */
int nq_onnx_load(const char *path, struct nq_graph *g);

/*
 * As nq_onnx_load(), but graph inputs whose name matches binds[i].name become
 * constants holding binds[i] (dtype, rank, dims, data or i64 as given).  For
 * inputs a model leaves open but that are constant in use, e.g. the Reshape
 * shape that ONNX's test vectors pass as an input.
 */
int nq_onnx_load_bound(const char *path, struct nq_graph *g, const struct nq_tensor *binds,
		       int n_binds);

/* The same from a buffer already in memory (tests, fuzzers). */
int nq_onnx_load_buffer(const void *buf, size_t len, struct nq_graph *g);

/*
 * Read one serialized TensorProto (the input_N.pb / output_N.pb files of
 * ONNX's test vectors) into t: name, rank, dims and data (float) or i64.
 * The caller frees t->name, t->data and t->i64.  Returns 0 or -errno
 * (-EOPNOTSUPP for element types other than float/double/int32/int64).
 */
int nq_onnx_read_tensor(const char *path, struct nq_tensor *t);

/* 1 if op_type (default domain) is one the importer accepts, else 0. */
int nq_onnx_op_supported(const char *op_type);

#endif
