/* SPDX-License-Identifier: MIT */
/*
 * Helpers the SIMD kernel tables share (kernels/pack.c, built with the
 * baseline flags so every table may call them): composing weight rows from
 * the planes into int8, and blocked im2col of NHWC activations.
 *
 * GEMM view of a convolution, per group g: A[p][j] (p = output position,
 * flattened over n, oh, ow; j = (ky * kw + kx) * cpg + ci, OHWI order, the
 * same as the weight rows) times W[c][j], then requantisation.  Padded taps
 * read the input zero point zx, so that sum((u - zx) * q) becomes
 * sum(u * q) - zx * sum(q) with one row sum per output channel: exact in
 * int32 (SPEC.md bounds the accumulator).
 */
#ifndef NQ_KERNELS_PACK_H
#define NQ_KERNELS_PACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels.h"

/*
 * One step of the nesting chain (SPEC.md): level l's values lie in the
 * signed range [lo, hi] of level_bits[l] bits, and q_l = q_{l-1} * 2^shift
 * + plane_l (shift 0 at level 0).  Every composer, scalar and SIMD, takes
 * its constants from here.
 */
struct nq_nest_step {
	int lo, hi;
	unsigned int shift;
};

static inline struct nq_nest_step nq_nest_step(const struct nq_weights *wt, uint32_t l)
{
	const int b = wt->level_bits[l];
	/* Widths outside 1..8 are rejected by the callers; no shift by them. */
	const int half = b >= 1 && b <= 8 ? 1 << (b - 1) : 0;

	return (struct nq_nest_step){ -half, half - 1,
				      l ? (unsigned int)(b - wt->level_bits[l - 1]) : 0 };
}

/* k rounded up to a multiple of `m` (a power of two). */
static inline uint32_t nq_round_up(uint32_t k, uint32_t m)
{
	return (k + m - 1) & ~(m - 1);
}

/*
 * Scratch of the kernels that widen to int16 (avx2.c, neon.c), carved out of
 * the tile the model sizes with nq_widen_tile_bytes: NQ_WIDEN_NB composed
 * weight rows, a block of im2col rows (about 64 KiB, so it stays in L2) and
 * the zero-point correction of each weight row.
 */
#define NQ_WIDEN_NB 32			/* weight rows per block */
#define NQ_WIDEN_COLS_BYTES 65536

struct nq_widen_scratch {
	int8_t *rows;		/* NQ_WIDEN_NB * kp */
	uint8_t *cols;		/* rows_per_block * kp */
	int32_t *corr;		/* NQ_WIDEN_NB */
	uint32_t rows_per_block;
};

static inline uint32_t nq_widen_block_rows(uint32_t kp)
{
	uint32_t rb = NQ_WIDEN_COLS_BYTES / kp & ~1u;

	return rb < 2 ? 2 : rb > 256 ? 256 : rb;
}

static inline size_t nq_widen_tile_bytes(uint32_t k, uint32_t oc)
{
	uint32_t kp = nq_round_up(k, 16);

	(void)oc;
	return 64 + (size_t)NQ_WIDEN_NB * kp + (size_t)nq_widen_block_rows(kp) * kp + 64 +
	       NQ_WIDEN_NB * 4 + 64;
}

static inline void nq_widen_scratch_init(struct nq_widen_scratch *s, int8_t *tile, uint32_t kp)
{
	uintptr_t p = ((uintptr_t)tile + 63) & ~(uintptr_t)63;

	s->rows = (int8_t *)p;
	p += (size_t)NQ_WIDEN_NB * kp;
	s->rows_per_block = nq_widen_block_rows(kp);
	s->cols = (uint8_t *)p;
	p += ((size_t)s->rows_per_block * kp + 63) & ~(size_t)63;
	s->corr = (int32_t *)p;
}

/*
 * Composed weights of rows [row0, row0 + n), values [0, k), into dst with a
 * stride of kp bytes; bytes [k, kp) of each row are zeroed.  rowsum (may be
 * NULL) receives sum(q) of each row.  -ERANGE (message from the scalar
 * unpacker) on corrupt planes.
 */
int nq_unpack_rows(const struct nq_weights *wt, uint32_t row0, uint32_t n, uint32_t k,
		   uint32_t kp, int8_t *dst, int32_t *rowsum);

/*
 * Channels [c0, c0 + nc) (c0 a multiple of 16) of PANEL16X4 planes straight
 * into a kernel panel [ceil(k / 4)][w][4] (w >= nc, a multiple of 16, the
 * panel row of channel c0 + r at column r), chunk by chunk with no rows in
 * between; channels nc .. round_up(nc, 16) - 1 and weights past k are
 * zero.  rowsum[r] = sum of channel c0 + r's weights, for r < round_up(nc,
 * 16).  False (nothing reported) when the planes are not panel ordered or
 * not decodable, or a value is out of range: the caller then takes
 * nq_unpack_rows, which lets the oracle name a corrupt value.
 */
bool nq_unpack_panel(const struct nq_weights *wt, uint32_t c0, uint32_t nc, uint32_t k,
		     int8_t *panel, uint32_t w, int32_t *rowsum);

/*
 * im2col of group g for output positions [p0, p0 + np): row i of dst (kp
 * bytes) holds the k = kh * kw * cpg window values of position p0 + i,
 * zx where the window is over padding, then kp - k zero bytes.
 */
void nq_im2col(const struct nq_conv_args *a, const uint8_t *in, uint32_t g, uint64_t p0,
	       uint32_t np, uint32_t kp, uint8_t *dst);

/*
 * True when the SIMD field decoders can compose these planes: a signed plane
 * 0, every plane 1..8 bits (no unsigned 8-bit), each nesting step 1..7 bits
 * and no level over 8 bits.  Anything else takes nq_unpack_rows.
 */
bool nq_planes_decodable(const struct nq_weights *wt);

/* True when every plane 0..level is in the ROWS layout (the SIMD row
 * decoders of avx2.c/neon.c read rows; nq_unpack_rows reads both). */
bool nq_planes_rows(const struct nq_weights *wt);
/* True when every plane 0..level is PANEL16X4. */
bool nq_planes_panel(const struct nq_weights *wt);

/* True when position-row p of group g is a plain NHWC pixel row (1x1 kernel,
 * stride 1, no padding, groups == 1, cpg == in.c): A can be read in place. */
bool nq_conv_is_pointwise(const struct nq_conv_args *a);

/*
 * Part `part` of `nparts` of a CONV/GEMM for the thread pool: a range of
 * output channels on group boundaries (in steps of 16 channels when
 * groups == 1, one SIMD vector of outputs), expressed with the same
 * argument struct so that any kernel table runs it unchanged: *sub gets the
 * channel count, groups and the bias/rq/plane pointers of the range; the
 * part reads `in + *in_off` and writes `out + *out_off` (in.c and out.c
 * stay the row strides; sub->res, a fused ADD's input, is already moved by
 * *out_off).  Parts are disjoint and cover the layer, so the
 * result does not depend on nparts.  False when the part is empty.
 */
bool nq_conv_split(const struct nq_conv_args *a, unsigned int part, unsigned int nparts,
		   struct nq_conv_args *sub, uint64_t *in_off, uint64_t *out_off);

/*
 * Run part `part` of `nparts` of a CONV (conv_dw when depthwise, gemm when
 * gemm) on table k with scratch `tile`.  Layers with many output positions
 * per weight (>= 256) are split by positions when the table has
 * conv_rows, since every part would otherwise redo the same activations
 * (and, with more than 64 output channels, also into blocks of 64 channels,
 * so that a part composes only its block's weights); others by output
 * channels (nq_conv_split), so each part composes only its own weights.
 * Either way the bytes do not depend on nparts.
 */
int nq_conv_part(const struct nq_kernels *k, bool depthwise, bool gemm,
		 const struct nq_conv_args *a, int8_t *tile, unsigned int part,
		 unsigned int nparts, const uint8_t *in, uint8_t *out);

/*
 * How many parts to cut a layer into for `threads` threads.  More parts
 * than threads, claimed one by one by whichever thread is free: on a shared
 * machine a thread that loses its CPU for a time slice then delays only
 * its current part, not half of the layer.  Parts stay at least one panel
 * (64 channels) or 6 positions wide.
 */
unsigned int nq_conv_nparts(const struct nq_kernels *k, bool depthwise,
			    const struct nq_conv_args *a, unsigned int threads);

#endif
