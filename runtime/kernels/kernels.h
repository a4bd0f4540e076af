/* SPDX-License-Identifier: MIT */
/*
 * The kernel table: one struct of function pointers per ISA, chosen once at
 * model load by nq_kernels_select() (cpuid/hwcaps, or $NQ_ISA).
 *
 * kernels/scalar.c is the oracle: it is the executable form of
 * format/SPEC.md "Execution semantics (normative)".  Every other table must
 * give byte-identical outputs for every argument the executor can pass; a
 * SIMD file may leave an entry pointing at the scalar function.
 *
 * Data layout of activations (decided here, documented in SPEC.md): a rank-4
 * u8/s8 tensor is stored NHWC (channels fastest); every other tensor (f32,
 * rank < 4) in logical row-major (NCHW) order.  Weights are read in place
 * from the mapped planes (OHWI rows for CONV, input order for GEMM).
 *
 * Kernels never allocate; the scratch they need is passed in and sized by
 * the model at load (see the `tile` fields).  They return 0, or -ERANGE when
 * a weight plane turns out to be corrupt (composed value out of range).
 */
#ifndef NQ_KERNELS_H
#define NQ_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nq_format.h"
#include "requant.h"

/* Where a layer's weights are, for one level; views into the mapping. */
struct nq_weights {
	const struct nq_file *file;
	uint32_t layer;
	uint32_t level;			/* compose planes 0..level */
	struct nq_plane_view plane[NQ_FORMAT_MAX_LEVELS];	/* 0..level valid */
	uint8_t level_bits[NQ_FORMAT_MAX_LEVELS];		/* b_0..b_level */
};

/* Shape of a 4-D activation as stored: N, H, W, C (NHWC). */
struct nq_nhwc {
	uint32_t n, h, w, c;
};

struct nq_add_args;

/* CONV (any groups) and GEMM (kh = kw = 1, in/out h = w = 1). */
struct nq_conv_args {
	struct nq_weights wt;
	uint32_t oc, k, groups, kh, kw, cin_per_group;
	uint32_t stride_h, stride_w, pad_t, pad_l, dil_h, dil_w;
	struct nq_nhwc in, out;
	int32_t zx, zy, lo, hi;		/* lo/hi: activation range (storage range included) */
	const int32_t *bias32;		/* [oc] for this level */
	const struct nq_rq *rq;		/* [oc] for this level */
	int8_t *tile;			/* scratch, >= k bytes (scalar); SIMD kernels
					   get nq_kernels.tile_bytes(k, oc) */
	/*
	 * A residual ADD fused into the epilogue (NULL: none).  The conv's
	 * 8-bit output u is computed exactly as without it, then not stored:
	 * out gets nq_add_one(add, u, r) instead, r being the byte of `res`
	 * at the same offset as the output byte (res has out's layout).  The
	 * conv output is always x1 of `add` (model.c swaps the terms when
	 * it was the ADD's second input).  conv and gemm honour it; conv_dw
	 * tables may hand such a layer to the oracle.
	 */
	const struct nq_add_args *add;
	const uint8_t *res;
};

/* ADD: n elements, same layout on all three tensors. */
struct nq_add_args {
	struct nq_add_rq rq;
	int32_t z1, z2, z3, lo, hi;
};

/*
 * One element of ADD (requant.h nq_add_apply on two u8 codes): the scalar
 * form every table's standalone add tail and fused epilogue use.
 */
static inline uint8_t nq_add_one(const struct nq_add_args *a, uint8_t x1, uint8_t x2)
{
	return (uint8_t)nq_add_apply((int32_t)x1 - a->z1, (int32_t)x2 - a->z2, &a->rq, a->z3,
				     a->lo, a->hi);
}

/* MAXPOOL / AVGPOOL. */
struct nq_pool_args {
	uint32_t kh, kw, stride_h, stride_w, pad_t, pad_l, pad_b, pad_r, dil_h, dil_w;
	struct nq_nhwc in, out;
	int32_t zx, zy, lo, hi;
	struct nq_rq rq_max;		/* MAXPOOL: M = sx / sy */
	const struct nq_rq *rq_avg;	/* AVGPOOL: [kh*kw + 1], entry n: M = sx / (sy n) */
	int count_include_pad;
};

/* GLOBALAVGPOOL: NHWC in, [N, C] out. */
struct nq_gap_args {
	struct nq_nhwc in;
	int32_t zx, zy;
	struct nq_rq rq;		/* M = sx / (sy * H * W) */
};

/* y = clamp(zy + rq(u - zx), lo, hi) elementwise (RELU, CLIP, requantising copies). */
struct nq_eltwise_args {
	struct nq_rq rq;
	int32_t zx, zy, lo, hi;
	int in_signed, out_signed;	/* s8 storage instead of u8 */
};

/* QUANTIZE: f32 logical NCHW [n][c][hw] -> 8-bit, NHWC when nhwc. */
struct nq_quant_args {
	uint32_t n, c, hw;
	int nhwc;
	float inv;
	int32_t z, qmin, qmax;
};

struct nq_kernels {
	const char *name;		/* "scalar", "avx2", "avx512", "neon" */
	int (*conv)(const struct nq_conv_args *a, const uint8_t *in, uint8_t *out);
	int (*conv_dw)(const struct nq_conv_args *a, const uint8_t *in, uint8_t *out);
	int (*gemm)(const struct nq_conv_args *a, const uint8_t *in, uint8_t *out);
	void (*add)(const struct nq_add_args *a, const uint8_t *x1, const uint8_t *x2,
		    uint8_t *out, size_t n);
	void (*maxpool)(const struct nq_pool_args *a, const uint8_t *in, uint8_t *out);
	void (*avgpool)(const struct nq_pool_args *a, const uint8_t *in, uint8_t *out);
	void (*gap)(const struct nq_gap_args *a, const uint8_t *in, uint8_t *out);
	void (*eltwise)(const struct nq_eltwise_args *a, const uint8_t *in, uint8_t *out,
			size_t n);
	void (*quantize)(const struct nq_quant_args *a, const float *in, uint8_t *out);
	/* Scratch bytes conv/gemm need for a layer of k weights per row, oc rows. */
	size_t (*tile_bytes)(uint32_t k, uint32_t oc);
	/*
	 * Optional (NULL: not provided).  CONV/GEMM restricted to output
	 * positions [p0, p1) (flattened n, oh, ow), for splitting layers
	 * with many positions and few channels across threads
	 * (kernels/pack.h nq_conv_part).
	 */
	int (*conv_rows)(const struct nq_conv_args *a, uint64_t p0, uint64_t p1,
			 const uint8_t *in, uint8_t *out);
};

extern const struct nq_kernels nq_kernels_scalar;

/*
 * The oracle's entries by name, for SIMD tables that have no faster version
 * of an op yet: point the table entry here rather than wrapping it.
 */
int nq_scalar_conv(const struct nq_conv_args *a, const uint8_t *in, uint8_t *out);
void nq_scalar_maxpool(const struct nq_pool_args *a, const uint8_t *in, uint8_t *out);
void nq_scalar_avgpool(const struct nq_pool_args *a, const uint8_t *in, uint8_t *out);
void nq_scalar_gap(const struct nq_gap_args *a, const uint8_t *in, uint8_t *out);
void nq_scalar_eltwise(const struct nq_eltwise_args *a, const uint8_t *in, uint8_t *out, size_t n);
void nq_scalar_quantize(const struct nq_quant_args *a, const float *in, uint8_t *out);
/* SIMD tables (kernels.mk builds the ones for the target architecture) and
 * their cpuid checks (kernels/cpu.c, baseline flags). */
extern const struct nq_kernels nq_kernels_avx2, nq_kernels_avx512, nq_kernels_neon;
bool nq_cpu_avx2_usable(void);
bool nq_cpu_avx512_usable(void);

/*
 * The table to use: $NQ_ISA (scalar|avx2|avx512|neon) when set, else the
 * best one this build has and this CPU supports.  -ENOTSUP (with a message
 * naming the ISA and why) when $NQ_ISA asks for one this build or CPU lacks:
 * never a silent fallback.
 */
int nq_kernels_select(const struct nq_kernels **out);

/* Composed weights of one row at wt's level (the scalar path's unpacker). */
int nq_weights_row(const struct nq_weights *wt, uint32_t row, uint32_t start, uint32_t n,
		   int8_t *out);

#endif
