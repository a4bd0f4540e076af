/* SPDX-License-Identifier: MIT */
/*
 * FP32 reference executor for the graph IR (graph.h), imported or
 * normalised form.  Tensors are float, row-major, NCHW for 4-D activations.
 * It is the accuracy reference of the converter and the source of the
 * calibration statistics: an observer sees every tensor the run produces.
 *
 * Batch: a graph is declared with a batch g->batch (dims[0] of its first
 * input).  nq_fp32_run() accepts any batch >= 1 when the graph is batchable
 * (nq_fp32_batchable(): every activation keeps dims[0] as its batch and no
 * op mixes samples), otherwise only batch == g->batch.  At run time every
 * non-constant tensor has dims[0] = batch (constants keep their dims).
 *
 * Threads: up to opts->threads worker threads split each op over the batch
 * (samples, or rows for Gemm); results do not depend on the thread count.
 */
#ifndef NQ_FP32_EXEC_H
#define NQ_FP32_EXEC_H

#include <stddef.h>
#include <stdint.h>

#include "graph.h"

/* A tensor as produced during a run; data is valid only during the call. */
struct nq_fp32_view {
	int tensor;			/* id in g->tensors */
	int rank;
	int64_t dims[NQ_MAX_RANK];	/* run-time dims (dims[0] = batch) */
	size_t numel;
	const float *data;
};

/*
 * Called once for each graph input (in order) and then once for the output
 * of every executed node, in node order, from the calling thread.  Return 0
 * to go on; a negative errno stops the run and nq_fp32_run() returns it.
 */
typedef int (*nq_fp32_observer)(void *arg, const struct nq_graph *g,
				const struct nq_fp32_view *t);

struct nq_fp32_opts {
	int threads;			/* 0 or 1: calling thread only; max 16 */
	nq_fp32_observer observe;	/* optional */
	void *arg;
};

/* 1 if the graph runs at any batch size, else 0 (see above). */
int nq_fp32_batchable(const struct nq_graph *g);

/* Elements of tensor t at the given run-time batch. */
size_t nq_fp32_numel(const struct nq_graph *g, int t, int batch);

/*
 * Run g on `batch` samples.  inputs[i] holds graph input g->inputs[i],
 * outputs[i] receives graph output g->outputs[i]; sizes per
 * nq_fp32_numel().  opts may be NULL.  Returns 0 or a negative errno
 * (-EINVAL for a batch the graph cannot run, -ENOMEM, or the observer's).
 * The graph is not modified; concurrent runs on one graph are fine.
 */
int nq_fp32_run(const struct nq_graph *g, int batch, const float *const *inputs,
		float *const *outputs, const struct nq_fp32_opts *opts);

#endif
