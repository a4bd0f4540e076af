/* SPDX-License-Identifier: MIT */
/*
 * Internal to the converter pipeline (pipeline.c, calibrate.c, write_nq.c):
 * the state of one conversion and the helpers its stages share.
 */
#ifndef NQ_PIPELINE_INT_H
#define NQ_PIPELINE_INT_H

#include <stdint.h>
#include <time.h>

#include "convert.h"
#include "graph.h"

#define CALIB_BATCH 32
#define DEFAULT_CALIB_COUNT 512
#define DEFAULT_ADAROUND_ROWS 4096
#define GRAM_DAMP 0.1f

/* How a graph tensor is stored in the file. */
enum tkind {
	TK_NONE = 0,	/* not in the file (constants) */
	TK_U8,		/* quantized activation */
	TK_F32,		/* SOFTMAX output */
};

struct wlayer {
	int node;
	struct nq_wshape sh;
	unsigned kh, kw, cpg;
	struct nq_gram *gram;		/* [groups], adaround only */
	struct nq_nested nest;
	int file_layer;
};

struct conv {
	const struct nq_convert_opts *o;
	struct nq_graph g;
	struct timespec t0;
	unsigned nlevels;
	unsigned levels[NQ_MAX_LEVELS];

	enum tkind *kind;		/* [n_tensors] */
	int *alias;			/* [n_tensors]: tensor whose qparams it shares, or -1 */
	struct nq_observer **obs;	/* [n_tensors] */
	struct nq_act_qparams *qp;	/* [n_tensors] */
	int *layer_of;			/* [n_nodes]: index into wl, or -1 */
	struct wlayer *wl;
	int nwl;
	int **feeds;			/* [n_tensors]: wl indices reading it, -1 ended */

	/* calibration sampling for adaround */
	uint64_t rng;
	unsigned rows_per_batch;
	float *rowbuf;
	size_t rowbuf_cap;
	unsigned batches, batches_done;
};

double cv_since(const struct timespec *t0);
/* -EINTR (with a message) once *o->cancel is set, else 0. */
int cv_cancelled(const struct conv *cv);
void cv_progress(const struct conv *cv, const char *stage, unsigned done, unsigned total,
		 const char *item);
/* The rounding of the full-bit integers (see nq_convert_opts). */
enum nq_round cv_full_rounding(const struct nq_convert_opts *o);
const char *cv_layer_name(const struct conv *cv, const struct wlayer *l);

/* Activation ranges (and adaround's gram matrices) from the FP32 executor. */
int cv_calibrate(struct conv *cv, const char *src, struct nq_convert_report *rep);
/* The integer graph, layers and planes into dst, atomically. */
int cv_write_file(struct conv *cv, const char *src, const char *dst,
		  const struct nq_convert_report *rep);

#endif
