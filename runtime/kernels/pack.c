// SPDX-License-Identifier: MIT
/*
 * Weight-row composition and blocked im2col shared by the SIMD tables
 * (kernels/pack.h).  Plain C: the tables that have a faster unpacker (the
 * AVX-512 VBMI one) use it for the common cases and fall back here.
 */
#include <errno.h>
#include <string.h>

#include "nq_error.h"
#include "pack.h"

/*
 * Values [0, n) of a packed row: eight `bits`-bit fields fill exactly
 * `bits` bytes, so every group of eight starts on a byte and one 64-bit
 * load holds it, except at the end of the packed bytes, where the group is
 * read a byte at a time (the row may end the mapping).
 */
static void decode_row(const uint8_t *row, uint32_t n, unsigned int bits, bool is_signed,
		       int8_t *out)
{
	const uint64_t packed = ((uint64_t)n * bits + 7) / 8;
	const uint32_t mask = (1u << bits) - 1, sign = 1u << (bits - 1);
	const unsigned int ext = 32 - bits;
	uint32_t i = 0;

	for (; i + 8 <= n; i += 8) {
		uint64_t off = (uint64_t)(i / 8) * bits, v = 0;

		if (off + 8 <= packed)
			memcpy(&v, row + off, 8);
		else
			for (unsigned int b = 0; b < bits; b++)
				v |= (uint64_t)row[off + b] << (8 * b);
		for (unsigned int j = 0; j < 8; j++) {
			uint32_t f = (uint32_t)(v >> (j * bits)) & mask;

			out[i + j] = is_signed ? (int8_t)((int32_t)(f << ext) >> ext) : (int8_t)f;
		}
	}
	for (; i < n; i++) {
		uint64_t pos = (uint64_t)i * bits;
		uint32_t v = row[pos / 8];

		if (pos % 8 + bits > 8)
			v |= (uint32_t)row[pos / 8 + 1] << 8;
		v = (v >> (pos % 8)) & mask;
		out[i] = is_signed && (v & sign) ? (int8_t)((int32_t)v - (int32_t)(mask + 1)) : (int8_t)v;
	}
}

bool nq_planes_rows(const struct nq_weights *wt)
{
	for (uint32_t l = 0; l <= wt->level; l++)
		if (wt->plane[l].layout != NQ_PLANE_ROWS)
			return false;
	return true;
}

bool nq_planes_panel(const struct nq_weights *wt)
{
	for (uint32_t l = 0; l <= wt->level; l++)
		if (wt->plane[l].layout != NQ_PLANE_PANEL16X4)
			return false;
	return true;
}

/* One row by the oracle (which names a corrupt value), padded to kp. */
static int oracle_row(const struct nq_weights *wt, uint32_t row, uint32_t k, uint32_t kp,
		      int8_t *q, int32_t *rowsum)
{
	int32_t sum = 0;
	int err = nq_weights_row(wt, row, 0, k, q);

	if (err)
		return err;
	for (uint32_t i = 0; i < k; i++)
		sum += q[i];
	if (kp > k)
		memset(q + k, 0, kp - k);
	if (rowsum)
		*rowsum = sum;
	return 0;
}

/*
 * nq_unpack_rows for PANEL16X4 planes: a 16-channel group is one bit stream
 * of 64-value chunks, decoded 8 chunks (32 weights of 16 channels) at a
 * time and scattered 4 bytes per channel and chunk.  Padding values
 * (channels past oc, weights past k) are decoded but never stored; should
 * a corrupt one leave the range, the rows of its group go to the oracle,
 * which does not read padding.
 */
#define PANEL_CHUNKS 8

/*
 * Chunks [j0, j0 + nj) of 16-channel group g, composed into q (64 values a
 * chunk, in plane order; tmp is scratch of the same size).  Only channels
 * < nch of the group and weights < k are real; the others (padding) come
 * out as zero and are not checked.  True when a real composed value leaves
 * its level's range.
 */
static bool panel_chunks(const struct nq_weights *wt, uint32_t g, uint32_t j0, uint32_t nj,
			 uint32_t k, uint32_t nch, int8_t *q, int8_t *tmp)
{
	bool bad = false;

	for (uint32_t l = 0; l <= wt->level; l++) {
		const struct nq_plane_view *p = &wt->plane[l];
		const uint8_t *src = p->data + nq_plane_channel_offset(p, g * NQ_PANEL_CH) +
				     (uint64_t)j0 * 8 * p->bits;
		const struct nq_nest_step st = nq_nest_step(wt, l);

		decode_row(src, nj * 64, p->bits, p->is_signed, l ? tmp : q);
		for (uint32_t i = 0; i < nj * 64; i++) {
			bool real = i % 64 / NQ_PANEL_K < nch &&
				    (j0 + i / 64) * NQ_PANEL_K + i % NQ_PANEL_K < k;
			int v = l ? q[i] * (1 << st.shift) + tmp[i] : q[i];

			if (!real)
				v = 0;
			bad |= v < st.lo || v > st.hi;
			q[i] = (int8_t)v;
		}
	}
	return bad;
}

static int unpack_panel_rows(const struct nq_weights *wt, uint32_t row0, uint32_t n, uint32_t k,
			     uint32_t kp, int8_t *dst, int32_t *rowsum)
{
	const uint32_t quads = (k + NQ_PANEL_K - 1) / NQ_PANEL_K;
	int8_t q[PANEL_CHUNKS * 64], tmp[PANEL_CHUNKS * 64];
	const bool fast = nq_planes_panel(wt) && nq_planes_decodable(wt);
	int err;

	for (uint32_t c_lo = row0; c_lo < row0 + n;) {
		uint32_t g = c_lo / NQ_PANEL_CH, c_hi = (g + 1) * NQ_PANEL_CH;
		uint32_t nch = wt->plane[0].rows - g * NQ_PANEL_CH;
		bool bad = !fast;

		if (c_hi > row0 + n)
			c_hi = row0 + n;
		for (uint32_t j0 = 0; j0 < quads && !bad; j0 += PANEL_CHUNKS) {
			uint32_t nj = quads - j0 < PANEL_CHUNKS ? quads - j0 : PANEL_CHUNKS;

			bad = panel_chunks(wt, g, j0, nj, k, nch, q, tmp);
			for (uint32_t c = c_lo; c < c_hi && !bad; c++) {
				int8_t *d = dst + (uint64_t)(c - row0) * kp;

				for (uint32_t j = 0; j < nj; j++) {
					uint32_t w0 = (j0 + j) * NQ_PANEL_K;
					uint32_t cnt = k - w0 < NQ_PANEL_K ? k - w0 : NQ_PANEL_K;

					memcpy(d + w0, q + j * 64 + (c % NQ_PANEL_CH) * NQ_PANEL_K, cnt);
				}
			}
		}
		for (uint32_t c = c_lo; c < c_hi; c++) {
			int8_t *d = dst + (uint64_t)(c - row0) * kp;
			int32_t *rs = rowsum ? rowsum + (c - row0) : NULL;
			int32_t sum = 0;

			if (bad) {
				err = oracle_row(wt, c, k, kp, d, rs);
				if (err)
					return err;
				continue;
			}
			for (uint32_t i = 0; i < k; i++)
				sum += d[i];
			if (kp > k)
				memset(d + k, 0, kp - k);
			if (rs)
				*rs = sum;
		}
		c_lo = c_hi;
	}
	return 0;
}

bool nq_unpack_panel(const struct nq_weights *wt, uint32_t c0, uint32_t nc, uint32_t k,
		     int8_t *panel, uint32_t w, int32_t *rowsum)
{
	const uint32_t quads = (k + NQ_PANEL_K - 1) / NQ_PANEL_K;
	int8_t q[PANEL_CHUNKS * 64], tmp[PANEL_CHUNKS * 64];

	if (c0 % NQ_PANEL_CH || !nq_planes_panel(wt) || !nq_planes_decodable(wt))
		return false;
	for (uint32_t r0 = 0; r0 < nc; r0 += NQ_PANEL_CH) {
		const uint32_t n = nc - r0 < NQ_PANEL_CH ? nc - r0 : NQ_PANEL_CH;
		int32_t sum[NQ_PANEL_CH] = { 0 };

		for (uint32_t j0 = 0; j0 < quads; j0 += PANEL_CHUNKS) {
			uint32_t nj = quads - j0 < PANEL_CHUNKS ? quads - j0 : PANEL_CHUNKS;

			if (panel_chunks(wt, (c0 + r0) / NQ_PANEL_CH, j0, nj, k, n, q, tmp))
				return false;
			for (uint32_t j = 0; j < nj; j++) {
				for (uint32_t i = 0; i < 64; i++)
					sum[i / NQ_PANEL_K] += q[j * 64 + i];
				memcpy(panel + ((uint64_t)(j0 + j) * w + r0) * 4, q + j * 64, 64);
			}
		}
		memcpy(rowsum + r0, sum, sizeof(sum));
	}
	return true;
}

int nq_unpack_rows(const struct nq_weights *wt, uint32_t row0, uint32_t n, uint32_t k,
		   uint32_t kp, int8_t *dst, int32_t *rowsum)
{
	int8_t tmp[512];

	if (!nq_planes_rows(wt))
		return unpack_panel_rows(wt, row0, n, k, kp, dst, rowsum);

	for (uint32_t r = 0; r < n; r++) {
		int8_t *q = dst + (uint64_t)r * kp;
		uint32_t row = row0 + r;
		int32_t sum = 0;

		for (uint32_t done = 0; done < k; done += sizeof(tmp)) {
			uint32_t m = k - done < sizeof(tmp) ? k - done : (uint32_t)sizeof(tmp);
			const struct nq_plane_view *p = &wt->plane[0];

			if (p->bits < 1 || p->bits > 8 || !p->is_signed || done % 8)
				goto slow;
			decode_row(p->data + (uint64_t)row * p->row_stride + (uint64_t)done / 8 * p->bits,
				   m, p->bits, true, q + done);
			for (uint32_t l = 1; l <= wt->level; l++) {
				const struct nq_nest_step st = nq_nest_step(wt, l);
				bool bad = false;

				p = &wt->plane[l];
				if (p->bits < 1 || p->bits > 8 || st.shift < 1 || st.shift > 7 ||
				    wt->level_bits[l] > 8 || (!p->is_signed && p->bits == 8))
					goto slow;
				decode_row(p->data + (uint64_t)row * p->row_stride +
					   (uint64_t)done / 8 * p->bits, m, p->bits, p->is_signed, tmp);
				for (uint32_t i = 0; i < m; i++) {
					int v = q[done + i] * (1 << st.shift) + tmp[i];

					bad |= v < st.lo || v > st.hi;
					q[done + i] = (int8_t)v;
				}
				if (bad)
					goto slow;
			}
		}
		for (uint32_t i = 0; i < k; i++)
			sum += q[i];
		if (kp > k)
			memset(q + k, 0, kp - k);
		if (rowsum)
			rowsum[r] = sum;
		continue;
slow:
		/* Odd plane parameters or a corrupt value: the oracle decides
		 * (and names the failure). */
		{
			int err = oracle_row(wt, row, k, kp, q, rowsum ? rowsum + r : NULL);

			if (err)
				return err;
		}
	}
	return 0;
}

bool nq_conv_is_pointwise(const struct nq_conv_args *a)
{
	return a->kh == 1 && a->kw == 1 && a->stride_h == 1 && a->stride_w == 1 &&
	       a->pad_t == 0 && a->pad_l == 0 && a->groups == 1 && a->cin_per_group == a->in.c &&
	       a->out.h == a->in.h && a->out.w == a->in.w && a->out.n == a->in.n;
}

void nq_im2col(const struct nq_conv_args *a, const uint8_t *in, uint32_t g, uint64_t p0,
	       uint32_t np, uint32_t kp, uint8_t *dst)
{
	const uint32_t cpg = a->cin_per_group, C = a->in.c, k = a->k;
	const int64_t H = a->in.h, W = a->in.w;
	const uint64_t ohw = (uint64_t)a->out.h * a->out.w;
	const bool rows_contiguous = a->dil_w == 1 && cpg == C;
	const uint8_t zx = (uint8_t)a->zx;

	for (uint32_t i = 0; i < np; i++) {
		uint64_t p = p0 + i, n = p / ohw, rem = p % ohw;
		int64_t oh = (int64_t)(rem / a->out.w), ow = (int64_t)(rem % a->out.w);
		int64_t iw0 = ow * a->stride_w - a->pad_l;
		uint8_t *row = dst + (uint64_t)i * kp;

		for (uint32_t ky = 0; ky < a->kh; ky++) {
			int64_t ih = oh * a->stride_h - a->pad_t + (int64_t)ky * a->dil_h;
			uint8_t *d = row + (uint64_t)ky * a->kw * cpg;
			const uint8_t *src;

			if (ih < 0 || ih >= H) {
				memset(d, zx, (size_t)a->kw * cpg);
				continue;
			}
			src = in + ((uint64_t)n * H + ih) * W * C + (uint64_t)g * cpg;
			if (rows_contiguous && iw0 >= 0 && iw0 + a->kw <= W) {
				memcpy(d, src + (uint64_t)iw0 * C, (size_t)a->kw * cpg);
				continue;
			}
			for (uint32_t kx = 0; kx < a->kw; kx++, d += cpg) {
				int64_t iw = iw0 + (int64_t)kx * a->dil_w;

				if (iw < 0 || iw >= W)
					memset(d, zx, cpg);
				else
					memcpy(d, src + (uint64_t)iw * C, cpg);
			}
		}
		if (kp > k)
			memset(row + k, 0, kp - k);
	}
}

bool nq_conv_split(const struct nq_conv_args *a, unsigned int part, unsigned int nparts,
		   struct nq_conv_args *sub, uint64_t *in_off, uint64_t *out_off)
{
	const uint32_t ocpg = a->oc / a->groups;
	uint32_t units, u0, u1, c0, c1;

	*sub = *a;
	*in_off = 0;
	*out_off = 0;
	if (a->groups == 1) {
		units = (a->oc + 15) / 16;
		u0 = (uint32_t)((uint64_t)units * part / nparts);
		u1 = (uint32_t)((uint64_t)units * (part + 1) / nparts);
		c0 = u0 * 16 < a->oc ? u0 * 16 : a->oc;
		c1 = u1 * 16 < a->oc ? u1 * 16 : a->oc;
	} else {
		u0 = (uint32_t)((uint64_t)a->groups * part / nparts);
		u1 = (uint32_t)((uint64_t)a->groups * (part + 1) / nparts);
		c0 = u0 * ocpg;
		c1 = u1 * ocpg;
		sub->groups = u1 - u0;
		*in_off = (uint64_t)u0 * a->cin_per_group;
	}
	if (c1 <= c0)
		return false;
	sub->oc = c1 - c0;
	sub->bias32 = a->bias32 + c0;
	sub->rq = a->rq + c0;
	for (uint32_t l = 0; l <= a->wt.level && l < NQ_FORMAT_MAX_LEVELS; l++) {
		sub->wt.plane[l].data = a->wt.plane[l].data +
					nq_plane_channel_offset(&a->wt.plane[l], c0);
		sub->wt.plane[l].rows = c1 - c0;
	}
	*out_off = c0;
	if (a->add)
		sub->res = a->res + c0;	/* a fused ADD's input moves with out */
	return true;
}

#define ROWS_CBLOCK 64	/* channels per block of a position split */
#define ROWS_MIN 128	/* fewest positions per range when blocks share the work */

/* Blocks of ROWS_CBLOCK output channels a split by positions also cuts. */
static unsigned int rows_cblocks(const struct nq_conv_args *a)
{
	uint32_t cb = (a->oc + ROWS_CBLOCK - 1) / ROWS_CBLOCK;

	return a->groups != 1 || cb < 1 ? 1 : cb > 64 ? 64 : cb;
}

int nq_conv_part(const struct nq_kernels *k, bool depthwise, bool gemm,
		 const struct nq_conv_args *a, int8_t *tile, unsigned int part,
		 unsigned int nparts, const uint8_t *in, uint8_t *out)
{
	const uint64_t M = (uint64_t)a->out.n * a->out.h * a->out.w;
	struct nq_conv_args sub;
	uint64_t io, oo;

	if (nparts > 1 && !depthwise && k->conv_rows && M >= 256) {
		/* Positions in multiples of 6 rows (the AVX-512 micro-kernel),
		 * times blocks of channels when there are several. */
		unsigned int cblocks = rows_cblocks(a), rparts;
		uint64_t units = (M + 5) / 6, p0, p1;

		if (nparts % cblocks)
			cblocks = 1;
		rparts = nparts / cblocks;
		p0 = units * (part / cblocks) / rparts * 6;
		p1 = units * (part / cblocks + 1) / rparts * 6;
		if (p1 > M)
			p1 = M;
		if (p0 >= p1 || !nq_conv_split(a, part % cblocks, cblocks, &sub, &io, &oo))
			return 0;
		sub.tile = tile;
		return k->conv_rows(&sub, p0, p1, in + io, out + oo);
	}
	if (!nq_conv_split(a, part, nparts, &sub, &io, &oo))
		return 0;
	sub.tile = tile;
	if (depthwise)
		return k->conv_dw(&sub, in + io, out + oo);
	return gemm ? k->gemm(&sub, in + io, out + oo) : k->conv(&sub, in + io, out + oo);
}

unsigned int nq_conv_nparts(const struct nq_kernels *k, bool depthwise,
			    const struct nq_conv_args *a, unsigned int threads)
{
	const uint64_t M = (uint64_t)a->out.n * a->out.h * a->out.w;
	uint64_t n, most;

	if (threads <= 1)
		return 1;
	if (!depthwise && k->conv_rows && M >= 256) {
		/* Each part composes the weights of its channel block again, so
		 * about two parts per thread: enough for a thread that loses its
		 * CPU for a while to be covered by the other, few enough that
		 * composing stays small (4 per thread was 4 % slower on
		 * ResNet-50).  With several blocks, fewer row ranges per block
		 * (>= ROWS_MIN rows). */
		uint64_t cb = rows_cblocks(a), r = (2 * (uint64_t)threads + cb - 1) / cb;
		uint64_t rmax = M / ROWS_MIN ? M / ROWS_MIN : 1;

		if (r > rmax)
			r = rmax;
		if (cb * r < threads)
			r = (threads + cb - 1) / cb;
		return (unsigned int)(cb * r);
	} else if (a->groups == 1) {
		most = (a->oc + 15) / 16;
		n = (a->oc + 63) / 64;
		if (n < threads)
			n = threads;
	} else {
		most = a->groups;
		n = 4 * (uint64_t)threads;
	}
	return (unsigned int)(n < most ? n : most ? most : 1);
}

bool nq_planes_decodable(const struct nq_weights *wt)
{
	if (wt->plane[0].bits < 1 || wt->plane[0].bits > 8 || !wt->plane[0].is_signed)
		return false;
	for (uint32_t l = 1; l <= wt->level; l++) {
		int d = wt->level_bits[l] - wt->level_bits[l - 1];

		if (wt->plane[l].bits < 1 || wt->plane[l].bits > 8 || d < 1 || d > 7 ||
		    wt->level_bits[l] > 8 || (!wt->plane[l].is_signed && wt->plane[l].bits == 8))
			return false;
	}
	return true;
}
