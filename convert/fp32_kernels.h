/* SPDX-License-Identifier: MIT */
/*
 * FP32 kernels of the reference executor (internal to convert/).  Each works
 * on a range of samples [n0, n1) of its output so the executor can split a
 * batch across threads.  Layouts are row-major; 4-D tensors are NCHW.
 */
#ifndef NQ_FP32_KERNELS_H
#define NQ_FP32_KERNELS_H

#include <stddef.h>

#include "nq_ops.h"

struct k_conv {
	int C, H, W;			/* input */
	int OC, OH, OW;			/* output */
	int groups, kh, kw, sh, sw, pt, pl, dh, dw;
	const float *weight;		/* [OC][C/groups][kh][kw] */
	const float *bias;		/* [OC] or NULL */
	int act;			/* enum nq_act */
	float lo, hi;			/* NQ_ACT_CLIP bounds */
};

/* y[n] for n in [n0, n1).  Returns 0 or -ENOMEM (im2col scratch). */
int k_conv2d(const struct k_conv *p, const float *x, float *y, int n0, int n1);

/*
 * C[M][N] = A[M][K] . B[K][N] (overwrite), rows [m0, m1).  lda, ldb, ldc are
 * row strides.  The 4x16 register tile is the loop gcc vectorises at -O2.
 */
void k_sgemm(int m0, int m1, int N, int K, const float *A, int lda, const float *B, int ldb,
	     float *C, int ldc);

/* Apply a fused activation to n values in place. */
void k_act(float *y, size_t n, int act, float lo, float hi);

struct k_pool {
	int C, H, W, OH, OW;
	int kh, kw, sh, sw, pt, pl, pb, pr, dh, dw;
	int count_include_pad;
};
void k_maxpool(const struct k_pool *p, const float *x, float *y, int n0, int n1);
void k_avgpool(const struct k_pool *p, const float *x, float *y, int n0, int n1);

/* Softmax over rows of len values, inner-strided (inner = 1: contiguous). */
void k_softmax(const float *x, float *y, size_t outer0, size_t outer1, size_t len, size_t inner);

#endif
