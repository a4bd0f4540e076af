/* SPDX-License-Identifier: MIT */
/*
 * The operator vocabulary shared by the converter, the .nq format and the
 * runtime.  It is the graph *after* normalisation: BatchNorm folded, ReLU/Clip
 * fused into the producing Conv/Gemm/Add where possible, Identity dropped,
 * constant shapes folded.  Numeric values are part of the file format
 * (format/SPEC.md): append, never renumber.
 *
 * Every node carries 12 int32 and 4 float attribute slots; which slot means
 * what is fixed per op by the NQ_A_* indices below.  Unused slots are zero.
 */
#ifndef NQ_OPS_H
#define NQ_OPS_H

#include <stdint.h>

enum nq_op {
	NQ_OP_INVALID = 0,
	NQ_OP_QUANTIZE = 1,	  /* f32 model input -> u8 (tensor scale/zero point) */
	NQ_OP_DEQUANTIZE = 2,	  /* u8/s32 -> f32 (graph outputs) */
	NQ_OP_CONV = 3,		  /* weight layer; fused activation */
	NQ_OP_GEMM = 4,		  /* weight layer (Gemm and 2-D MatMul); fused act */
	NQ_OP_ADD = 5,		  /* elementwise, same shape; fused activation */
	NQ_OP_MAXPOOL = 6,
	NQ_OP_AVGPOOL = 7,
	NQ_OP_GLOBALAVGPOOL = 8,
	NQ_OP_FLATTEN = 9,
	NQ_OP_RESHAPE = 10,	  /* target shape = output tensor's dims */
	NQ_OP_CONCAT = 11,
	NQ_OP_SOFTMAX = 12,	  /* f32 in, f32 out */
	NQ_OP_RELU = 13,	  /* standalone (not fusable) */
	NQ_OP_CLIP = 14,	  /* standalone (not fusable) */
	NQ_OP_COUNT
};

/* Fused activation (NQ_A_ACT) */
enum nq_act {
	NQ_ACT_NONE = 0,
	NQ_ACT_RELU = 1,
	NQ_ACT_CLIP = 2,	/* clamp to [NQ_F_CLIP_MIN, NQ_F_CLIP_MAX] (real values) */
};

#define NQ_ATTR_INTS 12
#define NQ_ATTR_FLOATS 4

struct nq_attrs {
	int32_t i[NQ_ATTR_INTS];
	float f[NQ_ATTR_FLOATS];
};

/* Conv, MaxPool, AvgPool: the window.  Pads are ONNX's (begin then end). */
enum {
	NQ_A_KH = 0,
	NQ_A_KW = 1,
	NQ_A_STRIDE_H = 2,
	NQ_A_STRIDE_W = 3,
	NQ_A_PAD_T = 4,
	NQ_A_PAD_L = 5,
	NQ_A_PAD_B = 6,
	NQ_A_PAD_R = 7,
	NQ_A_DIL_H = 8,
	NQ_A_DIL_W = 9,
	NQ_A_GROUPS = 10,	/* Conv only */
	NQ_A_ACT = 11,		/* Conv, Gemm, Add: enum nq_act */
};
/* AvgPool: NQ_A_GROUPS slot reused as count_include_pad (0/1);
 * MaxPool/AvgPool: NQ_A_DIL_* as in ONNX (1 when absent). */
#define NQ_A_COUNT_INCLUDE_PAD NQ_A_GROUPS
/* Flatten, Concat, Softmax: the axis (after NCHW normalisation, >= 0). */
#define NQ_A_AXIS 0

enum {
	NQ_F_CLIP_MIN = 0,	/* fused or standalone Clip bounds, real units */
	NQ_F_CLIP_MAX = 1,
};

#endif
