// SPDX-License-Identifier: MIT
/*
 * AVX2 kernels (x86-64 without AVX-512 VNNI).  Built with -mavx2 -mfma.
 *
 * AVX2 has no vpdpbusd, and vpmaddubsw, the usual u8 x s8 instruction,
 * saturates its int16 pair sums (255 * 127 * 2 > 32767): not bit-exact.  So
 * both operands are widened to int16 and multiplied with vpmaddwd, whose
 * pair sums are exact in int32.  Weights stay row-major as composed from
 * the planes (no transpose); each output is a dot product of an im2col row
 * and a weight row, 2 positions x 4 channels per step, reduced horizontally
 * at the end.  The zero point comes back through row sums as in the
 * AVX-512 kernel: acc = bias - zx * sum(q) + sum(u * q).
 */
#include <errno.h>
#include <immintrin.h>
#include <string.h>

#include "kernels.h"
#include "nq_error.h"
#include "pack.h"

/* ---- weight rows ---- */

/*
 * 16 `bits`-bit fields (2 * bits <= 16 bytes) as int16: vpshufb moves the
 * two bytes holding field i into 16-bit lane i, vpmullw shifts it left so
 * that the field's top bit is bit 15, and one shift right by 16 - bits
 * sign-extends (or zero-extends) it.
 */
struct field_ctl {
	__m256i idx, mul;
	__m128i sh;
	bool is_signed;
	unsigned int bits;
};

static void field_ctl_init(struct field_ctl *f, unsigned int bits, bool is_signed)
{
	uint8_t idx[32];
	int16_t mul[16];

	for (int i = 0; i < 16; i++) {
		unsigned int pos = i * bits, s = pos % 8;

		idx[2 * i] = (uint8_t)(pos / 8);
		idx[2 * i + 1] = s + bits > 8 ? (uint8_t)(pos / 8 + 1) : 0x80;
		mul[i] = (int16_t)(uint16_t)(1u << (16 - bits - s));
	}
	f->idx = _mm256_loadu_si256((const void *)idx);
	f->mul = _mm256_loadu_si256((const void *)mul);
	f->sh = _mm_cvtsi32_si128(16 - (int)bits);
	f->is_signed = is_signed;
	f->bits = bits;
}

/* Values [j, j + 16) of a packed row (j a multiple of 16); `avail` bytes
 * of the row may be read from `src` on. */
static inline __m256i decode16(const uint8_t *src, uint64_t avail, const struct field_ctl *f)
{
	__m128i b;
	__m256i v;

	if (avail >= 16) {
		b = _mm_loadu_si128((const void *)src);
	} else {
		uint8_t tmp[16] = { 0 };

		memcpy(tmp, src, avail);
		b = _mm_loadu_si128((const void *)tmp);
	}
	v = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(b), f->idx);
	v = _mm256_mullo_epi16(v, f->mul);
	return f->is_signed ? _mm256_sra_epi16(v, f->sh) : _mm256_srl_epi16(v, f->sh);
}

/* What composing a chain of planes needs per level (unpack_rows, unpack_panel). */
struct nest_ctl {
	struct field_ctl f[NQ_FORMAT_MAX_LEVELS];
	__m256i lo[NQ_FORMAT_MAX_LEVELS], hi[NQ_FORMAT_MAX_LEVELS];
	__m128i sh[NQ_FORMAT_MAX_LEVELS];
};

static void nest_ctl_init(struct nest_ctl *c, const struct nq_weights *wt)
{
	for (uint32_t l = 0; l <= wt->level; l++) {
		const struct nq_nest_step st = nq_nest_step(wt, l);

		field_ctl_init(&c->f[l], wt->plane[l].bits, wt->plane[l].is_signed);
		c->lo[l] = _mm256_set1_epi16((int16_t)st.lo);
		c->hi[l] = _mm256_set1_epi16((int16_t)st.hi);
		c->sh[l] = _mm_cvtsi32_si128((int)st.shift);
	}
}

/* q_l = q_{l-1} * 2^d + x (level l >= 1, 16 int16 lanes); live lanes out of
 * level l's range are or-ed into *bad. */
static inline __m256i nest_step(const struct nest_ctl *c, uint32_t l, __m256i q, __m256i x,
				__m256i live, __m256i *bad)
{
	q = _mm256_add_epi16(_mm256_sll_epi16(q, c->sh[l]), x);
	*bad = _mm256_or_si256(*bad, _mm256_and_si256(live,
			_mm256_or_si256(_mm256_cmpgt_epi16(q, c->hi[l]), _mm256_cmpgt_epi16(c->lo[l], q))));
	return q;
}

/*
 * unpack_rows for PANEL16X4 planes (format/SPEC.md "Packing"): values
 * 16 m .. 16 m + 15 of a chunk, 2 * bits bytes from byte 2 m * bits, are
 * the 4 weights of channels 4 m .. 4 m + 3 of the group: one decode16
 * each, composed and checked as in unpack_rows, then 4 bytes to each of the
 * 4 rows (kp a multiple of 16, as for unpack_rows).  Lanes of channels
 * >= n and weights >= k (padding) are zeroed.  A group with a value out of
 * range goes to the generic unpacker (which lets the oracle name it); so do
 * row ranges that do not start a plane group.
 */
static int unpack_panel(const struct nq_weights *wt, uint32_t row0, uint32_t n, uint32_t k,
			uint32_t kp, int8_t *dst, int32_t *rowsum)
{
	struct nest_ctl c;
	const uint32_t quads = (k + 3) / 4;
	const __m256i ones = _mm256_set1_epi16(1);
	const __m256i lane_ch = _mm256_setr_epi16(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
	const __m256i lane_k = _mm256_setr_epi16(0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3);

	if (!nq_planes_decodable(wt) || row0 % 16)
		return nq_unpack_rows(wt, row0, n, k, kp, dst, rowsum);
	nest_ctl_init(&c, wt);
	for (uint32_t g0 = row0; g0 < row0 + n; g0 += 16) {
		const uint32_t nr = row0 + n - g0 < 16 ? row0 + n - g0 : 16;
		int8_t *rows = dst + (uint64_t)(g0 - row0) * kp;
		const uint8_t *src[NQ_FORMAT_MAX_LEVELS], *end[NQ_FORMAT_MAX_LEVELS];
		__m256i bad = _mm256_setzero_si256();
		__m256i sum[4] = { bad, bad, bad, bad };

		for (uint32_t l = 0; l <= wt->level; l++) {
			const struct nq_plane_view *p = &wt->plane[l];

			src[l] = p->data + nq_plane_channel_offset(p, g0);
			end[l] = src[l] + nq_panel_group_bytes(k, p->bits);
		}
		/* Four quads at a time: a 4 x 4 dword transpose turns the
		 * four decodes of channels 4 m .. 4 m + 3 into 16 bytes of
		 * each of their rows (kp, a multiple of 16, has room). */
		for (uint32_t jb = 0; jb < quads; jb += 4) {
			for (uint32_t m = 0; 4 * m < nr; m++) {
				const __m256i chlive = _mm256_cmpgt_epi16(
						_mm256_set1_epi16((int16_t)(nr - 4 * m)), lane_ch);
				__m128i v[4];

				for (uint32_t jj = 0; jj < 4; jj++) {
					const uint32_t j = jb + jj;
					__m256i live, q = _mm256_setzero_si256();

					if (j >= quads) {
						v[jj] = _mm_setzero_si128();
						continue;
					}
					live = _mm256_and_si256(chlive, _mm256_cmpgt_epi16(
							_mm256_set1_epi16((int16_t)(k - 4 * j)), lane_k));
					for (uint32_t l = 0; l <= wt->level; l++) {
						const unsigned int bits = wt->plane[l].bits;
						const uint8_t *at = src[l] + (uint64_t)j * 8 * bits + 2 * m * bits;
						__m256i x = decode16(at, (uint64_t)(end[l] - at), &c.f[l]);

						q = l ? nest_step(&c, l, q, x, live, &bad) : x;
					}
					q = _mm256_and_si256(q, live);
					sum[m] = _mm256_add_epi32(sum[m], _mm256_madd_epi16(q, ones));
					q = _mm256_permute4x64_epi64(_mm256_packs_epi16(q, q), 0x08);
					v[jj] = _mm256_castsi256_si128(q);
				}
				{
					__m128i a0 = _mm_unpacklo_epi32(v[0], v[1]), a1 = _mm_unpackhi_epi32(v[0], v[1]);
					__m128i a2 = _mm_unpacklo_epi32(v[2], v[3]), a3 = _mm_unpackhi_epi32(v[2], v[3]);
					__m128i r[4] = {
						_mm_unpacklo_epi64(a0, a2), _mm_unpackhi_epi64(a0, a2),
						_mm_unpacklo_epi64(a1, a3), _mm_unpackhi_epi64(a1, a3),
					};

					for (uint32_t t = 0; t < 4 && 4 * m + t < nr; t++)
						_mm_storeu_si128((void *)(rows + (uint64_t)(4 * m + t) * kp +
									  4 * jb), r[t]);
				}
			}
		}
		if (!_mm256_testz_si256(bad, bad)) {
			int err = nq_unpack_rows(wt, g0, nr, k, kp, rows,
						 rowsum ? rowsum + (g0 - row0) : NULL);

			if (err)
				return err;
			continue;
		}
		for (uint32_t m = 0; 4 * m < nr; m++) {
			int32_t s32[8];

			_mm256_storeu_si256((void *)s32, sum[m]);
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
	struct nest_ctl c;
	const __m256i ones = _mm256_set1_epi16(1);
	const __m256i iota = _mm256_setr_epi16(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);

	if (nq_planes_panel(wt))
		return unpack_panel(wt, row0, n, k, kp, dst, rowsum);
	if (!nq_planes_decodable(wt) || !nq_planes_rows(wt))
		return nq_unpack_rows(wt, row0, n, k, kp, dst, rowsum);
	nest_ctl_init(&c, wt);
	for (uint32_t r = 0; r < n; r++) {
		int8_t *q8 = dst + (uint64_t)r * kp;
		__m256i bad = _mm256_setzero_si256(), sum = _mm256_setzero_si256();
		int32_t s32[8], total = 0;

		for (uint32_t j = 0; j < k; j += 16) {
			const __m256i live = _mm256_cmpgt_epi16(_mm256_set1_epi16((int16_t)(k - j)), iota);
			__m256i q = _mm256_setzero_si256();

			for (uint32_t l = 0; l <= wt->level; l++) {
				const struct nq_plane_view *p = &wt->plane[l];
				uint64_t packed = ((uint64_t)k * p->bits + 7) / 8;
				uint64_t off = (uint64_t)j / 8 * p->bits;
				__m256i x = decode16(p->data + (uint64_t)(row0 + r) * p->row_stride + off,
						     packed - off, &c.f[l]);

				q = l ? nest_step(&c, l, q, x, live, &bad) : x;
			}
			q = _mm256_and_si256(q, live);
			sum = _mm256_add_epi32(sum, _mm256_madd_epi16(q, ones));
			q = _mm256_permute4x64_epi64(_mm256_packs_epi16(q, q), 0x08);
			_mm_storeu_si128((void *)(q8 + j), _mm256_castsi256_si128(q));
		}
		if (!_mm256_testz_si256(bad, bad)) {
			int err = nq_unpack_rows(wt, row0 + r, 1, k, kp, q8, rowsum ? rowsum + r : NULL);

			if (err)
				return err;
			continue;
		}
		_mm256_storeu_si256((void *)s32, sum);
		for (int i = 0; i < 8; i++)
			total += s32[i];
		if (kp > nq_round_up(k, 16))
			memset(q8 + nq_round_up(k, 16), 0, kp - nq_round_up(k, 16));
		if (rowsum)
			rowsum[r] = total;
	}
	return 0;
}

/* Sum of the 8 lanes of each of 4 vectors, as 4 lanes. */
static inline __m128i hsum4(__m256i a, __m256i b, __m256i c, __m256i d)
{
	__m256i ab = _mm256_hadd_epi32(a, b), cd = _mm256_hadd_epi32(c, d);
	__m256i s = _mm256_hadd_epi32(ab, cd);

	return _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
}

/*
 * Two positions (x0, x1) x four weight rows (w, stride kp): 16 k per step.
 * Results (without bias) in s0[4], s1[4].
 */
static inline void dot_2x4(const uint8_t *x0, const uint8_t *x1, const int8_t *w, uint32_t kp,
			   __m128i *s0, __m128i *s1)
{
	__m256i a00 = _mm256_setzero_si256(), a01 = a00, a02 = a00, a03 = a00;
	__m256i a10 = a00, a11 = a00, a12 = a00, a13 = a00;

	for (uint32_t j = 0; j < kp; j += 16) {
		__m256i u0 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const void *)(x0 + j)));
		__m256i u1 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const void *)(x1 + j)));
		__m256i q;

		q = _mm256_cvtepi8_epi16(_mm_loadu_si128((const void *)(w + j)));
		a00 = _mm256_add_epi32(a00, _mm256_madd_epi16(u0, q));
		a10 = _mm256_add_epi32(a10, _mm256_madd_epi16(u1, q));
		q = _mm256_cvtepi8_epi16(_mm_loadu_si128((const void *)(w + kp + j)));
		a01 = _mm256_add_epi32(a01, _mm256_madd_epi16(u0, q));
		a11 = _mm256_add_epi32(a11, _mm256_madd_epi16(u1, q));
		q = _mm256_cvtepi8_epi16(_mm_loadu_si128((const void *)(w + 2 * (size_t)kp + j)));
		a02 = _mm256_add_epi32(a02, _mm256_madd_epi16(u0, q));
		a12 = _mm256_add_epi32(a12, _mm256_madd_epi16(u1, q));
		q = _mm256_cvtepi8_epi16(_mm_loadu_si128((const void *)(w + 3 * (size_t)kp + j)));
		a03 = _mm256_add_epi32(a03, _mm256_madd_epi16(u0, q));
		a13 = _mm256_add_epi32(a13, _mm256_madd_epi16(u1, q));
	}
	*s0 = hsum4(a00, a01, a02, a03);
	*s1 = hsum4(a10, a11, a12, a13);
}

/* n outputs at o; with a fused ADD, res holds its other input at o's offset. */
static void store4(const struct nq_conv_args *a, __m128i sum, const int32_t *corr, uint32_t c0,
		   uint32_t n, uint8_t *o, const uint8_t *res)
{
	int32_t v[4];

	_mm_storeu_si128((void *)v, _mm_add_epi32(sum, _mm_loadu_si128((const void *)corr)));
	for (uint32_t i = 0; i < n; i++) {
		uint8_t u = (uint8_t)nq_rq_output(v[i], a->rq[c0 + i], a->zy, a->lo, a->hi);

		o[i] = a->add ? nq_add_one(a->add, u, res[i]) : u;
	}
}

static int conv_avx2(const struct nq_conv_args *a, const uint8_t *in, uint8_t *out)
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
					__m128i s0, s1;

					dot_2x4(x0, x1, s.rows + (size_t)c * kp, kp, &s0, &s1);
					store4(a, s0, s.corr + c, c0 + c, n, o0 + c, r0 ? r0 + c : NULL);
					if (r + 1 < np)
						store4(a, s1, s.corr + c, c0 + c, n, o0 + a->out.c + c,
						       r0 ? r0 + a->out.c + c : NULL);
				}
			}
		}
	}
	return 0;
}

static void add_avx2(const struct nq_add_args *a, const uint8_t *x1, const uint8_t *x2,
		     uint8_t *out, size_t n)
{
	const __m256i z1 = _mm256_set1_epi32(a->z1), z2 = _mm256_set1_epi32(a->z2);
	const __m256i k1 = _mm256_set1_epi32(a->rq.k1), k2 = _mm256_set1_epi32(a->rq.k2);
	const __m256i r = _mm256_set1_epi32(a->rq.shift ? 1 << (a->rq.shift - 1) : 0);
	const __m256i z3 = _mm256_set1_epi32(a->z3), lo = _mm256_set1_epi32(a->lo);
	const __m256i hi = _mm256_set1_epi32(a->hi);
	const __m128i sh = _mm_cvtsi32_si128(a->rq.shift);
	const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
					      0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		int64_t b1, b2;
		__m256i d1, d2, v;

		memcpy(&b1, x1 + i, 8);
		memcpy(&b2, x2 + i, 8);
		d1 = _mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(b1)), z1);
		d2 = _mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(b2)), z2);
		v = _mm256_add_epi32(_mm256_mullo_epi32(d1, k1), _mm256_mullo_epi32(d2, k2));
		v = _mm256_add_epi32(z3, _mm256_sra_epi32(_mm256_add_epi32(v, r), sh));
		v = _mm256_min_epi32(_mm256_max_epi32(v, lo), hi);
		v = _mm256_shuffle_epi8(v, pick);
		{
			uint32_t w0 = (uint32_t)_mm256_extract_epi32(v, 0);
			uint32_t w1 = (uint32_t)_mm256_extract_epi32(v, 4);

			memcpy(out + i, &w0, 4);
			memcpy(out + i + 4, &w1, 4);
		}
	}
	for (; i < n; i++)
		out[i] = nq_add_one(a, x1[i], x2[i]);
}

/* Ops without an AVX2 version yet run the oracle's loops (nq_scalar_*). */
const struct nq_kernels nq_kernels_avx2 = {
	.name = "avx2",
	.conv = conv_avx2,
	.conv_dw = nq_scalar_conv,
	.gemm = conv_avx2,
	.add = add_avx2,
	.maxpool = nq_scalar_maxpool,
	.avgpool = nq_scalar_avgpool,
	.gap = nq_scalar_gap,
	.eltwise = nq_scalar_eltwise,
	.quantize = nq_scalar_quantize,
	.tile_bytes = nq_widen_tile_bytes,
};
