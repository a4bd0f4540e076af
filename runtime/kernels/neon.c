// SPDX-License-Identifier: MIT
/*
 * arm64 Advanced SIMD (NEON) kernels, for Raspberry-Pi-class boards.  Only
 * baseline ARMv8.0-A instructions: the Cortex-A72 of a Pi 4 has neither
 * the dot-product (sdot/udot, v8.2) nor the mixed-sign usdot (v8.6 i8mm).
 *
 * CONV/GEMM: weights composed from the planes into row-major int8 rows (no
 * transpose), activations through blocked im2col (or in place for pointwise
 * layers); each output is the dot product of an activation row and a weight
 * row, 2 positions x 4 channels per step.  Both operands are widened to
 * int16 (u8 -> u16 is 0..255, so the signed view is exact) and multiplied
 * with smlal into int32: exact, no saturating step anywhere.  The zero point
 * comes back through row sums: acc = bias - zx * sum(q) + sum(u * q).
 * Requantisation uses the oracle's own function per output.
 */
#include <arm_neon.h>
#include <errno.h>
#include <string.h>

#include "kernels.h"
#include "nq_error.h"
#include "pack.h"

/* ---- weight rows ---- */

/*
 * 16 `bits`-bit fields (2 * bits <= 16 bytes) as two int16x8: tbl moves the
 * two bytes holding field i into 16-bit lane i, a per-lane left shift puts
 * the field's top bit at bit 15, and a right shift by 16 - bits (arithmetic
 * for signed planes: vshl by a negative count) extends it.
 */
struct field_ctl {
	uint8x16_t idx[2];
	int16x8_t up[2];
	int16x8_t down;
	bool is_signed;
};

static void field_ctl_init(struct field_ctl *f, unsigned int bits, bool is_signed)
{
	uint8_t idx[32];
	int16_t up[16];

	for (int i = 0; i < 16; i++) {
		unsigned int pos = i * bits, s = pos % 8;

		idx[2 * i] = (uint8_t)(pos / 8);
		idx[2 * i + 1] = s + bits > 8 ? (uint8_t)(pos / 8 + 1) : 0xff;
		up[i] = (int16_t)(16 - bits - s);
	}
	f->idx[0] = vld1q_u8(idx);
	f->idx[1] = vld1q_u8(idx + 16);
	f->up[0] = vld1q_s16(up);
	f->up[1] = vld1q_s16(up + 8);
	f->down = vdupq_n_s16(-(int16_t)(16 - bits));
	f->is_signed = is_signed;
}

static inline void decode16(const uint8_t *src, uint64_t avail, const struct field_ctl *f,
			    int16x8_t out[2])
{
	uint8x16_t b;

	if (avail >= 16) {
		b = vld1q_u8(src);
	} else {
		uint8_t tmp[16] = { 0 };

		memcpy(tmp, src, avail);
		b = vld1q_u8(tmp);
	}
	for (int h = 0; h < 2; h++) {
		uint16x8_t v = vshlq_u16(vreinterpretq_u16_u8(vqtbl1q_u8(b, f->idx[h])), f->up[h]);

		out[h] = f->is_signed ? vshlq_s16(vreinterpretq_s16_u16(v), f->down) :
			 vreinterpretq_s16_u16(vshlq_u16(v, f->down));
	}
}

/* What composing a chain of planes needs per level (unpack_rows, unpack_panel). */
struct nest_ctl {
	struct field_ctl f[NQ_FORMAT_MAX_LEVELS];
	int16x8_t lo[NQ_FORMAT_MAX_LEVELS], hi[NQ_FORMAT_MAX_LEVELS], sh[NQ_FORMAT_MAX_LEVELS];
};

static void nest_ctl_init(struct nest_ctl *c, const struct nq_weights *wt)
{
	for (uint32_t l = 0; l <= wt->level; l++) {
		const struct nq_nest_step st = nq_nest_step(wt, l);

		field_ctl_init(&c->f[l], wt->plane[l].bits, wt->plane[l].is_signed);
		c->lo[l] = vdupq_n_s16((int16_t)st.lo);
		c->hi[l] = vdupq_n_s16((int16_t)st.hi);
		c->sh[l] = vdupq_n_s16((int16_t)st.shift);
	}
}

/* q_l = q_{l-1} * 2^d + x (level l >= 1, 8 int16 lanes); live lanes out of
 * level l's range are or-ed into *bad. */
static inline int16x8_t nest_step(const struct nest_ctl *c, uint32_t l, int16x8_t q, int16x8_t x,
				  uint16x8_t live, uint16x8_t *bad)
{
	q = vaddq_s16(vshlq_s16(q, c->sh[l]), x);
	*bad = vorrq_u16(*bad, vandq_u16(live, vorrq_u16(vcgtq_s16(q, c->hi[l]),
							 vcltq_s16(q, c->lo[l]))));
	return q;
}

/*
 * unpack_rows for PANEL16X4 planes (format/SPEC.md "Packing"): values
 * 16 m .. 16 m + 15 of a chunk, 2 * bits bytes from byte 2 m * bits, are
 * the 4 weights of channels 4 m .. 4 m + 3 of the group (two per int16x8
 * half): one decode16 each, composed and checked as in unpack_rows, then 4
 * bytes to each of the 4 rows (kp a multiple of 16, as for unpack_rows).
 * Lanes of channels >= n and weights >= k (padding) are zeroed.  A group
 * with a value out of range goes to the generic unpacker (which lets the
 * oracle name it); so do row ranges that do not start a plane group.
 */
static int unpack_panel(const struct nq_weights *wt, uint32_t row0, uint32_t n, uint32_t k,
			uint32_t kp, int8_t *dst, int32_t *rowsum)
{
	static const int16_t ch_v[16] = { 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3 };
	static const int16_t k_v[8] = { 0, 1, 2, 3, 0, 1, 2, 3 };
	struct nest_ctl c;
	const int16x8_t lane_ch[2] = { vld1q_s16(ch_v), vld1q_s16(ch_v + 8) };
	const int16x8_t lane_k = vld1q_s16(k_v);
	const uint32_t quads = (k + 3) / 4;

	if (!nq_planes_decodable(wt) || row0 % 16)
		return nq_unpack_rows(wt, row0, n, k, kp, dst, rowsum);
	nest_ctl_init(&c, wt);
	for (uint32_t g0 = row0; g0 < row0 + n; g0 += 16) {
		const uint32_t nr = row0 + n - g0 < 16 ? row0 + n - g0 : 16;
		int8_t *rows = dst + (uint64_t)(g0 - row0) * kp;
		const uint8_t *src[NQ_FORMAT_MAX_LEVELS], *end[NQ_FORMAT_MAX_LEVELS];
		uint16x8_t bad = vdupq_n_u16(0);
		int32x4_t sum[4][2];

		for (int m = 0; m < 4; m++)
			sum[m][0] = sum[m][1] = vdupq_n_s32(0);
		for (uint32_t l = 0; l <= wt->level; l++) {
			const struct nq_plane_view *p = &wt->plane[l];

			src[l] = p->data + nq_plane_channel_offset(p, g0);
			end[l] = src[l] + nq_panel_group_bytes(k, p->bits);
		}
		/* Four quads at a time: a 4 x 4 transpose of 32-bit lanes
		 * turns the four decodes of channels 4 m .. 4 m + 3 into 16
		 * bytes of each of their rows (kp, a multiple of 16, has room). */
		for (uint32_t jb = 0; jb < quads; jb += 4) {
			for (uint32_t m = 0; 4 * m < nr; m++) {
				const int16x8_t left = vdupq_n_s16((int16_t)(nr - 4 * m));
				const uint16x8_t chlive[2] = { vcltq_s16(lane_ch[0], left),
							       vcltq_s16(lane_ch[1], left) };
				uint32x4_t v[4];

				for (uint32_t jj = 0; jj < 4; jj++) {
					const uint32_t j = jb + jj;
					int16x8_t q[2] = { vdupq_n_s16(0), vdupq_n_s16(0) }, x[2];
					uint16x8_t klive, live[2];

					if (j >= quads) {
						v[jj] = vdupq_n_u32(0);
						continue;
					}
					klive = vcltq_s16(lane_k, vdupq_n_s16((int16_t)(k - 4 * j)));
					live[0] = vandq_u16(klive, chlive[0]);
					live[1] = vandq_u16(klive, chlive[1]);
					for (uint32_t l = 0; l <= wt->level; l++) {
						const unsigned int bits = wt->plane[l].bits;
						const uint8_t *at = src[l] + (uint64_t)j * 8 * bits + 2 * m * bits;

						decode16(at, (uint64_t)(end[l] - at), &c.f[l], x);
						for (int h = 0; h < 2; h++)
							q[h] = l ? nest_step(&c, l, q[h], x[h], live[h], &bad) :
								   x[h];
					}
					for (int h = 0; h < 2; h++) {
						q[h] = vandq_s16(q[h], vreinterpretq_s16_u16(live[h]));
						sum[m][h] = vpadalq_s16(sum[m][h], q[h]);
					}
					v[jj] = vreinterpretq_u32_s8(vcombine_s8(vmovn_s16(q[0]),
										 vmovn_s16(q[1])));
				}
				{
					uint32x4x2_t t01 = vtrnq_u32(v[0], v[1]), t23 = vtrnq_u32(v[2], v[3]);
					uint32x4_t r[4] = {
						vcombine_u32(vget_low_u32(t01.val[0]), vget_low_u32(t23.val[0])),
						vcombine_u32(vget_low_u32(t01.val[1]), vget_low_u32(t23.val[1])),
						vcombine_u32(vget_high_u32(t01.val[0]), vget_high_u32(t23.val[0])),
						vcombine_u32(vget_high_u32(t01.val[1]), vget_high_u32(t23.val[1])),
					};

					for (uint32_t t = 0; t < 4 && 4 * m + t < nr; t++)
						vst1q_u8((uint8_t *)rows + (uint64_t)(4 * m + t) * kp + 4 * jb,
							 vreinterpretq_u8_u32(r[t]));
				}
			}
		}
		if (vmaxvq_u16(bad)) {
			int err = nq_unpack_rows(wt, g0, nr, k, kp, rows,
						 rowsum ? rowsum + (g0 - row0) : NULL);

			if (err)
				return err;
			continue;
		}
		for (uint32_t m = 0; 4 * m < nr; m++) {
			int32_t s32[8];

			vst1q_s32(s32, sum[m][0]);
			vst1q_s32(s32 + 4, sum[m][1]);
			for (uint32_t t = 0; t < 4 && 4 * m + t < nr; t++) {
				if (rowsum)
					rowsum[g0 - row0 + 4 * m + t] = s32[2 * t] + s32[2 * t + 1];
				if (kp > 4 * nq_round_up(quads, 4))
					memset(rows + (uint64_t)(4 * m + t) * kp + 4 * nq_round_up(quads, 4),
					       0, kp - 4 * nq_round_up(quads, 4));
			}
		}
	}
	return 0;
}

/*
 * kernels/pack.h nq_unpack_rows, 16 values at a time, for kp a multiple of
 * 16.  Unusual planes, and rows with a value out of range (so that the
 * oracle names it), go through the generic unpacker.
 */
static int unpack_rows(const struct nq_weights *wt, uint32_t row0, uint32_t n, uint32_t k,
		       uint32_t kp, int8_t *dst, int32_t *rowsum)
{
	static const int16_t iota_v[16] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 };
	struct nest_ctl c;
	const int16x8_t iota0 = vld1q_s16(iota_v), iota1 = vld1q_s16(iota_v + 8);

	if (nq_planes_panel(wt))
		return unpack_panel(wt, row0, n, k, kp, dst, rowsum);
	if (!nq_planes_decodable(wt) || !nq_planes_rows(wt))
		return nq_unpack_rows(wt, row0, n, k, kp, dst, rowsum);
	nest_ctl_init(&c, wt);
	for (uint32_t r = 0; r < n; r++) {
		int8_t *q8 = dst + (uint64_t)r * kp;
		uint16x8_t bad = vdupq_n_u16(0);
		int32x4_t sum = vdupq_n_s32(0);

		for (uint32_t j = 0; j < k; j += 16) {
			const int16x8_t left = vdupq_n_s16((int16_t)(k - j < 16 ? k - j : 16));
			const uint16x8_t live[2] = { vcltq_s16(iota0, left), vcltq_s16(iota1, left) };
			int16x8_t q[2] = { vdupq_n_s16(0), vdupq_n_s16(0) }, x[2];

			for (uint32_t l = 0; l <= wt->level; l++) {
				const struct nq_plane_view *p = &wt->plane[l];
				uint64_t packed = ((uint64_t)k * p->bits + 7) / 8;
				uint64_t off = (uint64_t)j / 8 * p->bits;

				decode16(p->data + (uint64_t)(row0 + r) * p->row_stride + off,
					 packed - off, &c.f[l], x);
				for (int h = 0; h < 2; h++)
					q[h] = l ? nest_step(&c, l, q[h], x[h], live[h], &bad) : x[h];
			}
			for (int h = 0; h < 2; h++) {
				q[h] = vandq_s16(q[h], vreinterpretq_s16_u16(live[h]));
				sum = vpadalq_s16(sum, q[h]);
			}
			vst1q_s8(q8 + j, vcombine_s8(vmovn_s16(q[0]), vmovn_s16(q[1])));
		}
		if (vmaxvq_u16(bad)) {
			int err = nq_unpack_rows(wt, row0 + r, 1, k, kp, q8, rowsum ? rowsum + r : NULL);

			if (err)
				return err;
			continue;
		}
		if (kp > nq_round_up(k, 16))
			memset(q8 + nq_round_up(k, 16), 0, kp - nq_round_up(k, 16));
		if (rowsum)
			rowsum[r] = vaddvq_s32(sum);
	}
	return 0;
}

static inline int32x4_t mla8(int32x4_t acc, int16x8_t u, int16x8_t q)
{
	acc = vmlal_s16(acc, vget_low_s16(u), vget_low_s16(q));
	return vmlal_high_s16(acc, u, q);
}

/* Two positions x four weight rows (stride kp), 8 k per step. */
static void dot_2x4(const uint8_t *x0, const uint8_t *x1, const int8_t *w, uint32_t kp,
		    int32_t s0[4], int32_t s1[4])
{
	int32x4_t a0[4], a1[4];

	for (int c = 0; c < 4; c++)
		a0[c] = a1[c] = vdupq_n_s32(0);
	for (uint32_t j = 0; j < kp; j += 8) {
		int16x8_t u0 = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(x0 + j)));
		int16x8_t u1 = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(x1 + j)));

		for (int c = 0; c < 4; c++) {
			int16x8_t q = vmovl_s8(vld1_s8(w + (size_t)c * kp + j));

			a0[c] = mla8(a0[c], u0, q);
			a1[c] = mla8(a1[c], u1, q);
		}
	}
	for (int c = 0; c < 4; c++) {
		s0[c] = vaddvq_s32(a0[c]);
		s1[c] = vaddvq_s32(a1[c]);
	}
}

/* n outputs at o; with a fused ADD, res holds its other input at o's offset. */
static void store(const struct nq_conv_args *a, const int32_t *sum, const int32_t *corr,
		  uint32_t c0, uint32_t n, uint8_t *o, const uint8_t *res)
{
	for (uint32_t i = 0; i < n; i++) {
		uint8_t u = (uint8_t)nq_rq_output((int32_t)((uint32_t)sum[i] + (uint32_t)corr[i]),
						  a->rq[c0 + i], a->zy, a->lo, a->hi);

		o[i] = a->add ? nq_add_one(a->add, u, res[i]) : u;
	}
}

static int conv_neon(const struct nq_conv_args *a, const uint8_t *in, uint8_t *out)
{
	const uint32_t G = a->groups, ocpg = a->oc / G, kp = nq_round_up(a->k, 16);
	const uint64_t M = (uint64_t)a->out.n * a->out.h * a->out.w;
	const bool direct = nq_conv_is_pointwise(a) && a->k % 16 == 0;
	struct nq_widen_scratch s;
	int32_t rowsum[NQ_WIDEN_NB];
	int err;

	nq_widen_scratch_init(&s, a->tile, kp);
	for (uint32_t g = 0; g < G; g++)
	for (uint32_t cb = 0; cb < ocpg; cb += NQ_WIDEN_NB) {
		const uint32_t nc = ocpg - cb < NQ_WIDEN_NB ? ocpg - cb : NQ_WIDEN_NB, c0 = g * ocpg + cb;
		const uint32_t nc4 = (nc + 3) & ~3u;

		err = unpack_rows(&a->wt, c0, nc, a->k, kp, s.rows, rowsum);
		if (err)
			return err;
		memset(s.rows + (size_t)nc * kp, 0, (size_t)(nc4 - nc) * kp);
		for (uint32_t c = 0; c < nc4; c++)
			s.corr[c] = c < nc ? (int32_t)((uint32_t)a->bias32[c0 + c] -
						       (uint32_t)a->zx * (uint32_t)rowsum[c]) : 0;
		for (uint64_t p0 = 0; p0 < M; p0 += s.rows_per_block) {
			uint32_t np = M - p0 < s.rows_per_block ? (uint32_t)(M - p0) : s.rows_per_block;
			const uint8_t *base;
			uint64_t astride;

			if (direct) {
				base = in + p0 * a->in.c;
				astride = a->in.c;
			} else {
				nq_im2col(a, in, g, p0, np, kp, s.cols);
				base = s.cols;
				astride = kp;
			}
			for (uint32_t r = 0; r < np; r += 2) {
				const uint8_t *x0 = base + r * astride;
				const uint8_t *x1 = r + 1 < np ? x0 + astride : x0;
				uint64_t at = (p0 + r) * a->out.c + c0;
				uint8_t *o0 = out + at;
				const uint8_t *r0 = a->add ? a->res + at : NULL;

				for (uint32_t c = 0; c < nc; c += 4) {
					uint32_t n = nc - c < 4 ? nc - c : 4;
					int32_t s0[4], s1[4];

					dot_2x4(x0, x1, s.rows + (size_t)c * kp, kp, s0, s1);
					store(a, s0, s.corr + c, c0 + c, n, o0 + c, r0 ? r0 + c : NULL);
					if (r + 1 < np)
						store(a, s1, s.corr + c, c0 + c, n, o0 + a->out.c + c,
						      r0 ? r0 + a->out.c + c : NULL);
				}
			}
		}
	}
	return 0;
}

static void add_neon(const struct nq_add_args *a, const uint8_t *x1, const uint8_t *x2,
		     uint8_t *out, size_t n)
{
	const int32x4_t k1 = vdupq_n_s32(a->rq.k1), k2 = vdupq_n_s32(a->rq.k2);
	const int32x4_t r = vdupq_n_s32(a->rq.shift ? 1 << (a->rq.shift - 1) : 0);
	const int32x4_t nsh = vdupq_n_s32(-a->rq.shift), z3 = vdupq_n_s32(a->z3);
	const int32x4_t lo = vdupq_n_s32(a->lo), hi = vdupq_n_s32(a->hi);
	const int16x8_t z1 = vdupq_n_s16((int16_t)a->z1), z2 = vdupq_n_s16((int16_t)a->z2);
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		int16x8_t d1 = vsubq_s16(vreinterpretq_s16_u16(vmovl_u8(vld1_u8(x1 + i))), z1);
		int16x8_t d2 = vsubq_s16(vreinterpretq_s16_u16(vmovl_u8(vld1_u8(x2 + i))), z2);
		int32x4_t v[2];
		uint8_t tmp[8];

		v[0] = vmlaq_s32(vmulq_s32(vmovl_s16(vget_low_s16(d1)), k1), vmovl_s16(vget_low_s16(d2)), k2);
		v[1] = vmlaq_s32(vmulq_s32(vmovl_high_s16(d1), k1), vmovl_high_s16(d2), k2);
		for (int h = 0; h < 2; h++) {
			/* vshlq by a negative count is an arithmetic right shift. */
			int32x4_t y = vaddq_s32(z3, vshlq_s32(vaddq_s32(v[h], r), nsh));

			y = vminq_s32(vmaxq_s32(y, lo), hi);
			tmp[4 * h + 0] = (uint8_t)vgetq_lane_s32(y, 0);
			tmp[4 * h + 1] = (uint8_t)vgetq_lane_s32(y, 1);
			tmp[4 * h + 2] = (uint8_t)vgetq_lane_s32(y, 2);
			tmp[4 * h + 3] = (uint8_t)vgetq_lane_s32(y, 3);
		}
		memcpy(out + i, tmp, 8);
	}
	for (; i < n; i++)
		out[i] = nq_add_one(a, x1[i], x2[i]);
}

/* Ops without a NEON version yet run the oracle's loops (nq_scalar_*). */
const struct nq_kernels nq_kernels_neon = {
	.name = "neon",
	.conv = conv_neon,
	.conv_dw = nq_scalar_conv,
	.gemm = conv_neon,
	.add = add_neon,
	.maxpool = nq_scalar_maxpool,
	.avgpool = nq_scalar_avgpool,
	.gap = nq_scalar_gap,
	.eltwise = nq_scalar_eltwise,
	.quantize = nq_scalar_quantize,
	.tile_bytes = nq_widen_tile_bytes,
};
