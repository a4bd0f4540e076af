// SPDX-License-Identifier: MIT
/*
 * AVX-512 kernels: VNNI int8 GEMM for CONV/GEMM (vpdpbusd, u8 activations x
 * s8 weights -> s32), a depthwise kernel, and vector Add, MaxPool, GAP,
 * Quantize and requantising element-wise ops.  Built with -mavx512f
 * -mavx512bw -mavx512vl -mavx512dq -mavx512vnni (kernels.mk); select.c only
 * hands this table out when cpuid says the CPU has them.
 *
 * Convolution as GEMM (kernels/pack.h): per group and per block of up to 64
 * output channels, the weight rows are composed from the planes straight
 * into a panel [k/4][16 * nv][4] (one zmm = 4 consecutive k of 16 channels,
 * as vpdpbusd wants) that stays in L2; then for every 6 output positions
 * the micro-kernel broadcasts 4 activation bytes per position and
 * accumulates 6 x nv zmm.  Activations are read in place: rows of the NHWC
 * input for pointwise layers, and for kh x kw layers with 16+ channels per
 * group (a multiple of 4) through a table of per-tap pointers (im2col-free;
 * padding taps point at a row of zero points); other layers (the 3-channel
 * stem, odd channel counts) go through a small im2col block.  Since
 * vpdpbusd needs unsigned activations, it computes sum(u * q); the zero
 * point comes back through the panel's row sums:
 * acc = bias - zx * sum(q) + sum(u * q), exact in int32 (SPEC.md bounds it).
 *
 * conv_rows runs a range of output positions, so that layers with many
 * positions split across threads by rows (kernels/pack.h nq_conv_part).
 *
 * Weight panels are composed with AVX-512 VBMI (vpermb, vpmultishiftqb) when
 * the CPU has it (checked at run time; only those functions are built for
 * it), else by the generic unpacker in pack.c.  Planes in the PANEL16X4
 * layout (format/SPEC.md "Packing") need no transpose: each 64-value chunk
 * decodes straight into one panel vector, one sequential stream per plane.
 *
 * Requantisation is the oracle's, lane by lane: 64-bit products
 * (vpmuldq), add 2^(s-1), arithmetic shift (vpsravq), saturate to int32
 * (clamping to [lo - zy, hi - zy] first and adding zy after gives the same
 * bytes as adding first, because both bounds fit int32).
 */
#include <errno.h>
#include <immintrin.h>
#include <string.h>

#include "kernels.h"
#include "nq_error.h"
#include "pack.h"

#define MR 6			/* output positions per micro-kernel */
#define NB 64			/* output channels per panel */
#define COLS_BYTES 65536	/* im2col block budget */
#define PF_DIST 4		/* plane prefetch distance, in 64-value chunks */
#define COLS_ONCE (512 * 1024)	/* im2col a whole layer once when it fits */
#define MAX_TAPS 64		/* kh * kw of the im2col-free path */

/* Per-panel constants of the epilogue, in channel order. */
struct epi {
	int32_t corr[NB];	/* bias32 - zx * rowsum */
	int64_t m[NB], s[NB], rnd[NB];
};

struct rq_vec {
	__m512i lo, hi, zy;
};

static inline __m512i requant16(__m512i acc, const int64_t *m, const int64_t *s,
				const int64_t *rnd, const struct rq_vec *b)
{
	__m512i lo = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(acc));
	__m512i hi = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(acc, 1));
	__m512i y;

	lo = _mm512_mul_epi32(lo, _mm512_loadu_si512(m));
	hi = _mm512_mul_epi32(hi, _mm512_loadu_si512(m + 8));
	lo = _mm512_srav_epi64(_mm512_add_epi64(lo, _mm512_loadu_si512(rnd)), _mm512_loadu_si512(s));
	hi = _mm512_srav_epi64(_mm512_add_epi64(hi, _mm512_loadu_si512(rnd + 8)),
			       _mm512_loadu_si512(s + 8));
	y = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtsepi64_epi32(lo)),
			       _mm512_cvtsepi64_epi32(hi), 1);
	y = _mm512_min_epi32(_mm512_max_epi32(y, b->lo), b->hi);
	return _mm512_add_epi32(y, b->zy);
}

/* One multiplier for all lanes (pools, element-wise). */
struct rq_one {
	int64_t m[16], s[16], rnd[16];
};

static void rq_one_init(struct rq_one *o, struct nq_rq rq)
{
	for (int i = 0; i < 16; i++) {
		o->m[i] = rq.m;
		o->s[i] = rq.s;
		o->rnd[i] = (int64_t)1 << (rq.s - 1);
	}
}

static inline struct rq_vec rq_bounds(int32_t zy, int32_t lo, int32_t hi)
{
	struct rq_vec b = {
		.lo = _mm512_set1_epi32(lo - zy),
		.hi = _mm512_set1_epi32(hi - zy),
		.zy = _mm512_set1_epi32(zy),
	};
	return b;
}

/*
 * ADD (requant.h nq_add_apply) on 16 lanes: the standalone add_avx512 and
 * the epilogue of a conv with a fused ADD both go through add_pair.
 *
 * d1 * k1 + d2 * k2 + r is u1 * k1 + u2 * k2 + c with c = r - z1 * k1 -
 * z2 * k2, all modulo 2^32: the true sum fits int32 (nq_add_derive bounds
 * it), so the wrapped one is exact and the arithmetic shift then gives the
 * oracle's bytes.  With each k = kh * 2^9 + kl (0 <= kl < 512; kh < 2^15
 * since k * 255 < 2^31), the two products are two vpmaddwd on the int16
 * pairs (u1, u2) of each lane; other k (negative) take vpmulld.
 */
struct add_vec {
	__m512i kh, kl, c, k1, k2, z3, lo, hi, sh;
	bool madd;
};

static inline void add_vec_init(struct add_vec *v, const struct nq_add_args *a)
{
	const int32_t k1 = a->rq.k1, k2 = a->rq.k2;
	uint32_t c = a->rq.shift ? 1u << (a->rq.shift - 1) : 0;

	c -= (uint32_t)a->z1 * (uint32_t)k1 + (uint32_t)a->z2 * (uint32_t)k2;
	v->madd = k1 >= 0 && k2 >= 0 && (k1 >> 9) < 32768 && (k2 >> 9) < 32768;
	v->kh = _mm512_set1_epi32((int32_t)((uint32_t)(k2 >> 9) << 16 | (uint32_t)(k1 >> 9)));
	v->kl = _mm512_set1_epi32((int32_t)((uint32_t)(k2 & 511) << 16 | (uint32_t)(k1 & 511)));
	v->c = _mm512_set1_epi32((int32_t)c);
	v->k1 = _mm512_set1_epi32(k1);
	v->k2 = _mm512_set1_epi32(k2);
	v->z3 = _mm512_set1_epi32(a->z3);
	v->lo = _mm512_set1_epi32(a->lo);
	v->hi = _mm512_set1_epi32(a->hi);
	v->sh = _mm512_set1_epi32(a->rq.shift);
}

/* pair: u1 | u2 << 16 per lane, two u8 codes; the result in [lo, hi]. */
static inline __m512i add_pair(__m512i pair, const struct add_vec *a)
{
	__m512i t;

	if (a->madd) {
		t = _mm512_slli_epi32(_mm512_madd_epi16(pair, a->kh), 9);
		t = _mm512_add_epi32(t, _mm512_dpwssd_epi32(a->c, pair, a->kl));
	} else {
		__m512i u1 = _mm512_and_si512(pair, _mm512_set1_epi32(0xffff));

		t = _mm512_add_epi32(_mm512_mullo_epi32(u1, a->k1),
				     _mm512_mullo_epi32(_mm512_srli_epi32(pair, 16), a->k2));
		t = _mm512_add_epi32(t, a->c);
	}
	t = _mm512_add_epi32(a->z3, _mm512_srav_epi32(t, a->sh));
	return _mm512_min_epi32(_mm512_max_epi32(t, a->lo), a->hi);
}

/* u1, u2: zero-extended u8 codes. */
static inline __m512i add16(__m512i u1, __m512i u2, const struct add_vec *a)
{
	return add_pair(_mm512_or_si512(u1, _mm512_slli_epi32(u2, 16)), a);
}

/* ---- weight panels ---- */

/*
 * Decoding 64 `bits`-bit fields with VBMI: vpermb gathers the `bits` bytes
 * of every group of 8 fields into a qword, vpmultishiftqb pulls field t of
 * the qword from bit t * bits, then mask and sign-extend.  `nbytes` bytes
 * are read (never past the packed row).
 */
struct field_ctl {
	__m512i perm, shift, mask, sign;
};

#define VBMI __attribute__((target("avx512vbmi")))

VBMI static void field_ctl_init(struct field_ctl *f, unsigned int bits, bool is_signed)
{
	uint8_t perm[64], shift[64];

	for (int i = 0; i < 8; i++)
		for (int t = 0; t < 8; t++) {
			perm[8 * i + t] = (uint8_t)(i * bits + t);
			shift[8 * i + t] = (uint8_t)(t * bits);
		}
	f->perm = _mm512_loadu_si512(perm);
	f->shift = _mm512_loadu_si512(shift);
	f->mask = _mm512_set1_epi8((char)((1u << bits) - 1));
	f->sign = _mm512_set1_epi8(is_signed ? (char)(1u << (bits - 1)) : 0);
}

VBMI static inline __m512i decode64(const uint8_t *src, __mmask64 bytes, const struct field_ctl *f)
{
	__m512i x = _mm512_maskz_loadu_epi8(bytes, src);

	x = _mm512_multishift_epi64_epi8(f->shift, _mm512_permutexvar_epi8(f->perm, x));
	x = _mm512_and_si512(x, f->mask);
	return _mm512_sub_epi8(_mm512_xor_si512(x, f->sign), f->sign);
}

static inline __mmask64 mask64(uint32_t n)
{
	return n >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << n) - 1);
}

/* r[i] <- column i of the 16 x 16 dword matrix in r (rows = channels). */
static inline __attribute__((always_inline)) void transpose16(__m512i r[16])
{
	__m512i a[16], b[16];

	for (int i = 0; i < 8; i++) {
		a[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
		a[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
	}
	for (int i = 0; i < 4; i++) {
		b[4 * i + 0] = _mm512_unpacklo_epi64(a[4 * i], a[4 * i + 2]);
		b[4 * i + 1] = _mm512_unpackhi_epi64(a[4 * i], a[4 * i + 2]);
		b[4 * i + 2] = _mm512_unpacklo_epi64(a[4 * i + 1], a[4 * i + 3]);
		b[4 * i + 3] = _mm512_unpackhi_epi64(a[4 * i + 1], a[4 * i + 3]);
	}
	/* b[4i + m], 128-bit lane L: rows 4i..4i+3 of column 4L + m. */
	for (int m = 0; m < 4; m++) {
		__m512i c0 = _mm512_shuffle_i32x4(b[m], b[4 + m], 0x44);
		__m512i c1 = _mm512_shuffle_i32x4(b[m], b[4 + m], 0xee);
		__m512i c2 = _mm512_shuffle_i32x4(b[8 + m], b[12 + m], 0x44);
		__m512i c3 = _mm512_shuffle_i32x4(b[8 + m], b[12 + m], 0xee);

		r[m] = _mm512_shuffle_i32x4(c0, c2, 0x88);
		r[4 + m] = _mm512_shuffle_i32x4(c0, c2, 0xdd);
		r[8 + m] = _mm512_shuffle_i32x4(c1, c3, 0x88);
		r[12 + m] = _mm512_shuffle_i32x4(c1, c3, 0xdd);
	}
}

/* Can the VBMI path compose these planes?  (Else the generic unpacker.) */
static bool fast_planes(const struct nq_weights *wt)
{
	return __builtin_cpu_supports("avx512vbmi") && nq_planes_decodable(wt);
}

/* What composing any chain of planes needs per level (panel_fast*). */
struct nest_ctl {
	struct field_ctl f[NQ_FORMAT_MAX_LEVELS];
	__m512i lo[NQ_FORMAT_MAX_LEVELS], hi[NQ_FORMAT_MAX_LEVELS], shmask[NQ_FORMAT_MAX_LEVELS];
};

VBMI static void nest_ctl_init(struct nest_ctl *c, const struct nq_weights *wt)
{
	for (uint32_t l = 0; l <= wt->level; l++) {
		const struct nq_nest_step st = nq_nest_step(wt, l);

		field_ctl_init(&c->f[l], wt->plane[l].bits, wt->plane[l].is_signed);
		c->lo[l] = _mm512_set1_epi8((char)st.lo);
		c->hi[l] = _mm512_set1_epi8((char)st.hi);
		c->shmask[l] = _mm512_set1_epi8((char)(0xff << st.shift));
	}
}

/*
 * q_l = q_{l-1} * 2^d + x for level l >= 1, 64 values at once.  Out of int8
 * the saturating sum differs; a narrower level also checks its own range.
 * Lanes that leave their range are added to *bad (within valid).
 */
static inline __attribute__((always_inline)) __m512i
nest_step(const struct nest_ctl *c, const struct nq_weights *wt, uint32_t l, __m512i q, __m512i x,
	  __mmask64 valid, __mmask64 *bad)
{
	unsigned int d = wt->level_bits[l] - wt->level_bits[l - 1];
	__m512i t = _mm512_and_si512(_mm512_slli_epi16(q, d), c->shmask[l]);
	__m512i sum = _mm512_add_epi8(t, x), sat = _mm512_adds_epi8(t, x);
	__mmask64 m = _mm512_cmpneq_epi8_mask(sum, sat);

	if (wt->level_bits[l] < 8)
		m |= _mm512_cmplt_epi8_mask(sat, c->lo[l]) | _mm512_cmpgt_epi8_mask(sat, c->hi[l]);
	*bad |= valid & m;
	return sum;
}

/*
 * Rows [c0, c0 + n) (n <= 16), values [0, k), composed from the planes
 * straight into panel vectors: per 64 values, one zmm per row, then a 16 x
 * 16 dword transpose gives 16 panel vectors of 4 k x 16 channels.  Returns
 * false when a composed value leaves its range (the caller then lets the
 * oracle report it).
 */
VBMI static bool panel_fast(const struct nq_weights *wt, uint32_t c0, uint32_t n, uint32_t k,
		       int8_t *panel, uint32_t w, __m512i *rowsum)
{
	struct nest_ctl c;
	const __m512i ones = _mm512_set1_epi8(1);
	__mmask64 bad = 0;
	__m512i rs = _mm512_setzero_si512();

	nest_ctl_init(&c, wt);
	for (uint32_t kc = 0; kc < k; kc += 64) {
		const uint32_t nv = k - kc < 64 ? k - kc : 64;
		const __mmask64 valid = mask64(nv);
		__m512i r[16];

		for (uint32_t i = 0; i < 16; i++) {
			__m512i q;

			if (i >= n) {
				r[i] = _mm512_setzero_si512();
				continue;
			}
			for (uint32_t l = 0; l <= wt->level; l++) {
				const struct nq_plane_view *p = &wt->plane[l];
				const uint8_t *src = p->data + (uint64_t)(c0 + i) * p->row_stride +
						     (uint64_t)kc / 8 * p->bits;
				uint32_t nb = (nv * p->bits + 7) / 8;
				__m512i x;

				/* 16 rows x planes are too many streams for the
				 * hardware prefetchers: fetch 4 chunks ahead. */
				_mm_prefetch((const char *)src + PF_DIST * 8 * p->bits, _MM_HINT_T0);
				/* The next 16 rows into L2, as in panel_nest8. */
				if (c0 + 32 <= p->rows)
					_mm_prefetch((const char *)src + 16 * p->row_stride, _MM_HINT_T1);
				x = decode64(src, mask64(nb), &c.f[l]);
				q = l ? nest_step(&c, wt, l, q, x, valid, &bad) : x;
			}
			r[i] = _mm512_maskz_mov_epi8(valid, q);
		}
		transpose16(r);
		for (uint32_t j = 0; j < 16 && 4 * j < nv; j++) {
			_mm512_store_si512(panel + ((uint64_t)(kc / 4 + j) * w) * 4, r[j]);
			rs = _mm512_dpbusd_epi32(rs, ones, r[j]);
		}
	}
	*rowsum = rs;
	return !bad;
}

/*
 * The chains the converter writes by default: one level (part bit), or two
 * levels whose full one is 8 bits wide with plane 0 exactly b_0 bits and a
 * residual that keeps q_1 = q_0 * 2^d + r_1 (d = 8 - b_0) from overflowing
 * at the top: signed in at most d + 1 bits, or unsigned in at most d.
 */
static bool nest8_planes(const struct nq_weights *wt)
{
	const struct nq_plane_view *p0 = &wt->plane[0], *p1 = &wt->plane[1];
	unsigned int d;

	if (p0->bits != wt->level_bits[0] || !p0->is_signed)
		return false;
	if (wt->level == 0)
		return true;
	if (wt->level != 1 || wt->level_bits[1] != 8 || wt->level_bits[0] >= 8)
		return false;
	d = 8 - wt->level_bits[0];
	return p1->is_signed ? p1->bits <= d + 1 : p1->bits <= d;
}

/*
 * panel_fast for nest8_planes, with fewer operations per 64 values.
 * Plane 0 is pulled to the top of each byte (vpmultishiftqb from bit
 * t * b_0 - d, the low d bits masked off): that is t = q_0 * 2^d as an int8
 * directly.  Then q_1 = t + r_1 wraps only below -128, and there t < 0 <= q
 * (for t < 0, t <= -2^d and r_1 < 2^d keep an exact q negative): the sign
 * bit of t & ~q marks every overflow, collected by one vpternlog per row.
 * Lanes past k are zeroed before the sum, so they neither show nor count.
 */
VBMI static bool panel_nest8(const struct nq_weights *wt, uint32_t c0, uint32_t n, uint32_t k,
			     int8_t *panel, uint32_t w, __m512i *rowsum)
{
	const struct nq_plane_view *p0 = &wt->plane[0], *p1 = &wt->plane[1];
	const bool two = wt->level == 1;
	const unsigned int b0 = p0->bits, b1 = two ? p1->bits : 1, d = 8 - b0;
	const __m512i ones = _mm512_set1_epi8(1), z = _mm512_setzero_si512();
	const uint8_t *s0[16], *s1[16];
	struct field_ctl f0, f1;
	__m512i bad = z, rs = z;

	field_ctl_init(&f0, b0, true);
	field_ctl_init(&f1, b1, two && p1->is_signed);
	if (two) {
		uint8_t shift[64];

		for (int t = 0; t < 64; t++)
			shift[t] = (uint8_t)(((t % 8) * b0 - d) & 63);
		f0.shift = _mm512_loadu_si512(shift);
		f0.mask = _mm512_set1_epi8((char)(0xff << d));
	}
	/* The next 16 rows are fetched into L2 while these are decoded, at
	 * the same offsets: one group's decode ahead of their use. */
	const bool next = c0 + 32 <= p0->rows;
	const uint64_t next0 = 16 * p0->row_stride, next1 = two ? 16 * p1->row_stride : 0;

	for (uint32_t i = 0; i < n; i++) {
		s0[i] = p0->data + (uint64_t)(c0 + i) * p0->row_stride;
		s1[i] = two ? p1->data + (uint64_t)(c0 + i) * p1->row_stride : NULL;
	}
	for (uint32_t kc = 0; kc < k; kc += 64) {
		const uint32_t nv = k - kc < 64 ? k - kc : 64;
		const __mmask64 valid = mask64(nv), m0 = mask64((nv * b0 + 7) / 8);
		const __mmask64 m1 = mask64((nv * b1 + 7) / 8);
		__m512i r[16];

		for (uint32_t i = 0; i < 16; i++) {
			__m512i x0, x1, q;

			if (i >= n) {
				r[i] = z;
				continue;
			}
			_mm_prefetch((const char *)s0[i] + PF_DIST * 8 * b0, _MM_HINT_T0);
			if (next)
				_mm_prefetch((const char *)s0[i] + next0, _MM_HINT_T1);
			x0 = _mm512_permutexvar_epi8(f0.perm, _mm512_maskz_loadu_epi8(m0, s0[i]));
			x0 = _mm512_maskz_multishift_epi64_epi8(valid, f0.shift, x0);
			s0[i] += 8 * b0;
			if (!two) {
				/* (x & mask) ^ sign, minus sign: sign-extended. */
				x0 = _mm512_ternarylogic_epi32(x0, f0.mask, f0.sign, 0x6a);
				r[i] = _mm512_sub_epi8(x0, f0.sign);
				continue;
			}
			x0 = _mm512_and_si512(x0, f0.mask);
			_mm_prefetch((const char *)s1[i] + PF_DIST * 8 * b1, _MM_HINT_T0);
			if (next)
				_mm_prefetch((const char *)s1[i] + next1, _MM_HINT_T1);
			x1 = _mm512_permutexvar_epi8(f1.perm, _mm512_maskz_loadu_epi8(m1, s1[i]));
			x1 = _mm512_maskz_multishift_epi64_epi8(valid, f1.shift, x1);
			x1 = _mm512_ternarylogic_epi32(x1, f1.mask, f1.sign, 0x6a);
			s1[i] += 8 * b1;
			q = _mm512_add_epi8(x0, _mm512_sub_epi8(x1, f1.sign));
			/* bad |= t & ~q */
			bad = _mm512_ternarylogic_epi32(bad, x0, q, 0xf4);
			r[i] = q;
		}
		transpose16(r);
		for (uint32_t j = 0; j < 16 && 4 * j < nv; j++) {
			_mm512_store_si512(panel + ((uint64_t)(kc / 4 + j) * w) * 4, r[j]);
			rs = _mm512_dpbusd_epi32(rs, ones, r[j]);
		}
	}
	*rowsum = rs;
	return !_mm512_movepi8_mask(bad);
}

/*
 * The same two compositions for PANEL16X4 planes (format/SPEC.md
 * "Packing"): chunk j of a 16-channel group already is panel vector j
 * (4 k x 16 channels), so each plane is one sequential stream, one decode
 * per chunk and no transpose.  Lanes of channels >= n and of weights >= k
 * (the plane's zero padding) are masked to zero before composing, as the
 * row versions mask lanes past k.
 */
static inline __mmask64 chunk_valid(uint32_t n, uint32_t k, uint32_t j)
{
	__mmask64 m = mask64(4 * n);
	uint32_t rem = k - 4 * j;

	if (rem < 4)
		m &= 0x1111111111111111ull * ((1u << rem) - 1);
	return m;
}

VBMI static bool panel_fast_po(const struct nq_weights *wt, uint32_t c0, uint32_t nc, uint32_t k,
			       int8_t *panel, uint32_t w, int32_t *rowsum)
{
	struct nest_ctl c;
	const uint8_t *src[NQ_FORMAT_MAX_LEVELS];
	const uint32_t quads = (k + 3) / 4;
	const __m512i ones = _mm512_set1_epi8(1);
	__mmask64 bad = 0;

	nest_ctl_init(&c, wt);
	for (uint32_t l = 0; l <= wt->level; l++)
		src[l] = wt->plane[l].data + nq_plane_channel_offset(&wt->plane[l], c0);
	/* The groups of a block follow each other: the streams run on. */
	for (uint32_t r0 = 0; r0 < nc; r0 += 16) {
		const uint32_t n = nc - r0 < 16 ? nc - r0 : 16;
		int8_t *dst = panel + (uint64_t)r0 * 4;
		__m512i rs = _mm512_setzero_si512();

		for (uint32_t j = 0; j < quads; j++) {
			const __mmask64 valid = chunk_valid(n, k, j);
			__m512i q = _mm512_setzero_si512();

			for (uint32_t l = 0; l <= wt->level; l++) {
				const unsigned int bytes = 8 * wt->plane[l].bits;
				__m512i x;

				_mm_prefetch((const char *)src[l] + PF_DIST * bytes, _MM_HINT_T0);
				x = decode64(src[l], mask64(bytes), &c.f[l]);
				src[l] += bytes;
				q = l ? nest_step(&c, wt, l, q, x, valid, &bad) : x;
			}
			q = _mm512_maskz_mov_epi8(valid, q);
			_mm512_store_si512(dst + (uint64_t)j * w * 4, q);
			rs = _mm512_dpbusd_epi32(rs, ones, q);
		}
		_mm512_storeu_si512(rowsum + r0, rs);
	}
	return !bad;
}

VBMI static bool panel_nest8_po(const struct nq_weights *wt, uint32_t c0, uint32_t nc, uint32_t k,
				int8_t *panel, uint32_t w, int32_t *rowsum)
{
	const struct nq_plane_view *p0 = &wt->plane[0], *p1 = &wt->plane[1];
	const bool two = wt->level == 1;
	const unsigned int b0 = p0->bits, b1 = two ? p1->bits : 1, d = 8 - b0;
	const uint32_t quads = (k + 3) / 4;
	const __m512i ones = _mm512_set1_epi8(1), z = _mm512_setzero_si512();
	const __mmask64 m0 = mask64(8 * b0), m1 = mask64(8 * b1);
	const uint8_t *s0 = p0->data + nq_plane_channel_offset(p0, c0);
	const uint8_t *s1 = two ? p1->data + nq_plane_channel_offset(p1, c0) : NULL;
	struct field_ctl f0, f1;
	__m512i bad = z;

	field_ctl_init(&f0, b0, true);
	field_ctl_init(&f1, b1, two && p1->is_signed);
	if (two) {
		uint8_t shift[64];

		for (int t = 0; t < 64; t++)
			shift[t] = (uint8_t)(((t % 8) * b0 - d) & 63);
		f0.shift = _mm512_loadu_si512(shift);
		f0.mask = _mm512_set1_epi8((char)(0xff << d));
	}
	/* The groups of a block follow each other: the streams run on. */
	for (uint32_t r0 = 0; r0 < nc; r0 += 16) {
		const uint32_t n = nc - r0 < 16 ? nc - r0 : 16;
		const __mmask64 full = mask64(4 * n);
		int8_t *dst = panel + (uint64_t)r0 * 4;
		__m512i rs = z;

		for (uint32_t j = 0; j < quads; j++) {
			const __mmask64 valid = j + 1 < quads ? full : chunk_valid(n, k, j);
			__m512i x0, x1, q;

			_mm_prefetch((const char *)s0 + PF_DIST * 8 * b0, _MM_HINT_T0);
			x0 = _mm512_permutexvar_epi8(f0.perm, _mm512_maskz_loadu_epi8(m0, s0));
			x0 = _mm512_maskz_multishift_epi64_epi8(valid, f0.shift, x0);
			s0 += 8 * b0;
			if (!two) {
				/* (x & mask) ^ sign, minus sign: sign-extended. */
				x0 = _mm512_ternarylogic_epi32(x0, f0.mask, f0.sign, 0x6a);
				q = _mm512_sub_epi8(x0, f0.sign);
			} else {
				x0 = _mm512_and_si512(x0, f0.mask);
				_mm_prefetch((const char *)s1 + PF_DIST * 8 * b1, _MM_HINT_T0);
				x1 = _mm512_permutexvar_epi8(f1.perm, _mm512_maskz_loadu_epi8(m1, s1));
				x1 = _mm512_maskz_multishift_epi64_epi8(valid, f1.shift, x1);
				x1 = _mm512_ternarylogic_epi32(x1, f1.mask, f1.sign, 0x6a);
				s1 += 8 * b1;
				q = _mm512_add_epi8(x0, _mm512_sub_epi8(x1, f1.sign));
				/* bad |= t & ~q */
				bad = _mm512_ternarylogic_epi32(bad, x0, q, 0xf4);
			}
			_mm512_store_si512(dst + (uint64_t)j * w * 4, q);
			rs = _mm512_dpbusd_epi32(rs, ones, q);
		}
		_mm512_storeu_si512(rowsum + r0, rs);
	}
	return !_mm512_movepi8_mask(bad);
}

/*
 * Rows [c0, c0 + nc) of the layer into panel [kg][nv * 16][4]; rows nc ..
 * nv * 16 - 1 are zero.  rowbuf: nc * kp bytes of scratch (generic path).
 */
static int build_panel(const struct nq_conv_args *a, uint32_t c0, uint32_t nc, uint32_t nv,
		       uint32_t kp, int8_t *panel, int8_t *rowbuf, struct epi *e)
{
	const uint32_t kg = kp / 4, w = nv * 16;
	int32_t rowsum[NB];
	bool fast = fast_planes(&a->wt);
	const bool nest8 = fast && nest8_planes(&a->wt);
	const bool po = nq_planes_panel(&a->wt);
	int err;

	/* Panel-ordered planes compose whole 16-channel groups; rows take
	 * any c0.  Anything else goes to the generic unpacker. */
	if (po ? c0 % 16 != 0 : !nq_planes_rows(&a->wt))
		fast = false;

	if (fast && po) {
		/* The block's groups are one stream per plane: one call. */
		fast = nest8 ? panel_nest8_po(&a->wt, c0, nc, a->k, panel, w, rowsum) :
			       panel_fast_po(&a->wt, c0, nc, a->k, panel, w, rowsum);
	} else if (po) {
		/* No VBMI: the plain C decoder, still chunk = panel vector. */
		fast = nq_unpack_panel(&a->wt, c0, nc, a->k, panel, w, rowsum);
	} else if (fast) {
		for (uint32_t v = 0; v < nv && fast; v++) {
			uint32_t r0 = v * 16, n = nc - r0 < 16 ? nc - r0 : 16;
			int8_t *dst = panel + (uint64_t)r0 * 4;
			__m512i rs;

			fast = nest8 ? panel_nest8(&a->wt, c0 + r0, n, a->k, dst, w, &rs) :
				       panel_fast(&a->wt, c0 + r0, n, a->k, dst, w, &rs);
			_mm512_storeu_si512(rowsum + r0, rs);
		}
		/* k < kp: the last k-group is partly zero, written above; a
		 * k that ends a 64-value chunk exactly leaves nothing over. */
	}
	if (!fast) {
		err = nq_unpack_rows(&a->wt, c0, nc, a->k, kp, rowbuf, rowsum);
		if (err)
			return err;
		for (uint32_t v = 0; v < nv; v++) {
			uint32_t r0 = v * 16, n = nc - r0 < 16 ? nc - r0 : 16;
			__mmask16 live = (__mmask16)((1u << n) - 1);
			__m512i idx = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8,
									  7, 6, 5, 4, 3, 2, 1, 0),
							 _mm512_set1_epi32((int)kg));

			/* Column j of 16 rows: a gather of dword j from each row. */
			for (uint32_t j = 0; j < kg; j++) {
				__m512i col = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), live,
						_mm512_add_epi32(idx, _mm512_set1_epi32((int)j)),
						(const void *)(rowbuf + (uint64_t)r0 * kp), 4);

				_mm512_store_si512(panel + ((uint64_t)j * w + r0) * 4, col);
			}
		}
	}
	for (uint32_t c = 0; c < w; c++) {
		if (c < nc) {
			struct nq_rq rq = a->rq[c0 + c];

			e->corr[c] = (int32_t)((uint32_t)a->bias32[c0 + c] -
					       (uint32_t)a->zx * (uint32_t)rowsum[c]);
			e->m[c] = rq.m;
			e->s[c] = rq.s;
			e->rnd[c] = (int64_t)1 << (rq.s - 1);
		} else {
			e->corr[c] = 0;
			e->m[c] = 0;
			e->s[c] = 1;
			e->rnd[c] = 0;
		}
	}
	return 0;
}

/* ---- micro-kernel ---- */

/*
 * acc += dot4(u8 x, s8 w) per lane.  GCC 12 does not tie the accumulator
 * of the vpdpbusd builtin to its destination and copies every accumulator
 * on each step; the asm form keeps them in place.
 */
#define DP(c, b, w) __asm__("vpdpbusd %2, %1, %0" : "+v"(c) : "v"(b), "v"(w))

/* Accumulators as named variables: GCC keeps an array of them in memory. */
#define ROW(r)										\
	if (R > r) {									\
		int32_t x_;								\
		__m512i b_;								\
											\
		memcpy(&x_, ap##r + 4 * (uint64_t)j, 4);				\
		b_ = _mm512_set1_epi32(x_);						\
		DP(c##r##0, b_, w0);							\
		if (NV > 1)								\
			DP(c##r##1, b_, w1);						\
		if (NV > 2)								\
			DP(c##r##2, b_, w2);						\
		if (NV > 3)								\
			DP(c##r##3, b_, w3);						\
	}
#define DECL(r) __m512i c##r##0 = z, c##r##1 = z, c##r##2 = z, c##r##3 = z; \
	const uint8_t *ap##r = NULL;
#define SEG(r) if (R > r) ap##r = as[r];
#define SAVE(r) acc[r][0] = c##r##0, acc[r][1] = c##r##1, acc[r][2] = c##r##2, acc[r][3] = c##r##3;

static inline __attribute__((always_inline)) void
tile_body(const int R, const int NV, const uint8_t *const *ap, uint32_t nseg, uint32_t seg,
	  const int8_t *panel, const struct epi *e, const struct rq_vec *b, uint8_t *out,
	  uint64_t ostride, uint32_t nc, const struct add_vec *ad, const uint8_t *res)
{
	const __m512i z = _mm512_setzero_si512();
	const uint64_t pstride = (uint64_t)NV * 64;
	const int8_t *pw = panel;
	__m512i acc[MR][4];
	DECL(0) DECL(1) DECL(2) DECL(3) DECL(4) DECL(5)

	/* A fused ADD's input: fetched while the products accumulate. */
	if (ad)
		for (int r = 0; r < R; r++) {
			_mm_prefetch((const char *)res + r * ostride, _MM_HINT_T0);
			_mm_prefetch((const char *)res + r * ostride + nc - 1, _MM_HINT_T0);
		}
	/* Segment t of row r starts at ap[t * MR + r], seg k-groups long. */
	for (uint32_t t = 0; t < nseg; t++) {
		const uint8_t *const *as = ap + (size_t)t * MR;

		SEG(0) SEG(1) SEG(2) SEG(3) SEG(4) SEG(5)
		for (uint32_t j = 0; j < seg; j++, pw += pstride) {
			__m512i w0 = _mm512_load_si512(pw), w1 = z, w2 = z, w3 = z;

			if (NV > 1)
				w1 = _mm512_load_si512(pw + 64);
			if (NV > 2)
				w2 = _mm512_load_si512(pw + 128);
			if (NV > 3)
				w3 = _mm512_load_si512(pw + 192);
			ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5)
		}
	}
	SAVE(0) SAVE(1) SAVE(2) SAVE(3) SAVE(4) SAVE(5)
	/* vpshufb control: byte j of each (broadcast) 16-byte lane to byte 2
	 * of dword j, zeros elsewhere. */
	const __m512i pair_hi = _mm512_set_epi32(
		(int)0x800f8080, (int)0x800e8080, (int)0x800d8080, (int)0x800c8080,
		(int)0x800b8080, (int)0x800a8080, (int)0x80098080, (int)0x80088080,
		(int)0x80078080, (int)0x80068080, (int)0x80058080, (int)0x80048080,
		(int)0x80038080, (int)0x80028080, (int)0x80018080, (int)0x80008080);
	/* The conv's u8 codes y; with a fused ADD (ad), y goes on as its
	 * first input, the second read from res where y would have gone. */
#pragma GCC unroll 4
	for (int v = 0; v < NV; v++) {
		__m512i corr = _mm512_loadu_si512(e->corr + 16 * v);
		uint32_t left = nc - 16 * v;
		__mmask16 mask = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);

#pragma GCC unroll 6
		for (int r = 0; r < R; r++) {
			__m512i y = requant16(_mm512_add_epi32(acc[r][v], corr), e->m + 16 * v,
					      e->s + 16 * v, e->rnd + 16 * v, b);

			if (ad) {
				const uint8_t *rp = res + r * ostride + 16 * v;
				__m512i u2;

				/* 16 codes to bytes 2 of the lanes: (y, u2) pairs. */
				if (left >= 16)
					u2 = _mm512_shuffle_epi8(_mm512_broadcast_i32x4(
						_mm_loadu_si128((const void *)rp)), pair_hi);
				else
					u2 = _mm512_slli_epi32(_mm512_cvtepu8_epi32(
						_mm_maskz_loadu_epi8(mask, rp)), 16);
				y = add_pair(_mm512_or_si512(y, u2), ad);
			}
			_mm_mask_storeu_epi8(out + r * ostride + 16 * v, mask, _mm512_cvtepi32_epi8(y));
		}
	}
}

typedef void (*tile_fn)(const uint8_t *const *ap, uint32_t nseg, uint32_t seg,
			const int8_t *panel, const struct epi *e, const struct rq_vec *b,
			uint8_t *out, uint64_t ostride, uint32_t nc, const struct add_vec *ad,
			const uint8_t *res);

#define TILE(R, NV)									\
static void tile_##R##_##NV(const uint8_t *const *ap, uint32_t nseg, uint32_t seg,	\
			    const int8_t *panel, const struct epi *e,			\
			    const struct rq_vec *b, uint8_t *out, uint64_t ostride,	\
			    uint32_t nc, const struct add_vec *ad, const uint8_t *res)	\
{											\
	tile_body(R, NV, ap, nseg, seg, panel, e, b, out, ostride, nc, ad, res);	\
}
#define TILES(R) TILE(R, 1) TILE(R, 2) TILE(R, 3) TILE(R, 4)
TILES(1) TILES(2) TILES(3) TILES(4) TILES(5) TILES(6)
#define TROW(R) { tile_##R##_1, tile_##R##_2, tile_##R##_3, tile_##R##_4 }
static const tile_fn tiles[MR][4] = { TROW(1), TROW(2), TROW(3), TROW(4), TROW(5), TROW(6) };

/* ---- im2col ---- */

/* n bytes, with masked 64-byte moves: no call, no read past the source. */
static inline void copy_bytes(uint8_t *d, const uint8_t *s, uint32_t n)
{
	for (; n >= 64; n -= 64, d += 64, s += 64)
		_mm512_storeu_si512(d, _mm512_loadu_si512(s));
	if (n)
		_mm512_mask_storeu_epi8(d, mask64(n), _mm512_maskz_loadu_epi8(mask64(n), s));
}

static inline void fill_bytes(uint8_t *d, __m512i v, uint32_t n)
{
	for (; n >= 64; n -= 64, d += 64)
		_mm512_storeu_si512(d, v);
	if (n)
		_mm512_mask_storeu_epi8(d, mask64(n), v);
}

/* kernels/pack.h nq_im2col, with the copies above. */
static void im2col(const struct nq_conv_args *a, const uint8_t *in, uint32_t g, uint64_t p0,
		   uint32_t np, uint32_t kp, uint8_t *dst)
{
	const uint32_t cpg = a->cin_per_group, C = a->in.c, k = a->k, run = a->kw * cpg;
	const int64_t H = a->in.h, W = a->in.w;
	const uint64_t ohw = (uint64_t)a->out.h * a->out.w;
	const bool rows_contiguous = a->dil_w == 1 && cpg == C;
	const __m512i zx = _mm512_set1_epi8((char)a->zx), zero = _mm512_setzero_si512();
	uint64_t n = p0 / ohw, rem = p0 % ohw;
	uint32_t oh = (uint32_t)(rem / a->out.w), ow = (uint32_t)(rem % a->out.w);

	for (uint32_t i = 0; i < np; i++) {
		int64_t iw0 = (int64_t)ow * a->stride_w - a->pad_l;
		uint8_t *row = dst + (uint64_t)i * kp;

		for (uint32_t ky = 0; ky < a->kh; ky++) {
			int64_t ih = (int64_t)oh * a->stride_h - a->pad_t + (int64_t)ky * a->dil_h;
			uint8_t *d = row + (uint64_t)ky * run;
			const uint8_t *src;

			if (ih < 0 || ih >= H) {
				fill_bytes(d, zx, run);
				continue;
			}
			src = in + ((uint64_t)n * H + ih) * W * C + (uint64_t)g * cpg;
			if (rows_contiguous && iw0 >= 0 && iw0 + a->kw <= W) {
				copy_bytes(d, src + (uint64_t)iw0 * C, run);
				continue;
			}
			for (uint32_t kx = 0; kx < a->kw; kx++, d += cpg) {
				int64_t iw = iw0 + (int64_t)kx * a->dil_w;

				if (iw < 0 || iw >= W)
					fill_bytes(d, zx, cpg);
				else
					copy_bytes(d, src + (uint64_t)iw * C, cpg);
			}
		}
		if (kp > k)
			fill_bytes(row + k, zero, kp - k);
		if (++ow == a->out.w) {
			ow = 0;
			if (++oh == a->out.h) {
				oh = 0;
				n++;
			}
		}
	}
}

/* ---- scratch layout ---- */

struct conv_scratch {
	int8_t *panel;		/* NB * kp */
	int8_t *rowbuf;		/* NB * kp */
	uint8_t *cols;		/* rows_per_block * kp */
	struct epi *epi;
	uint32_t rows_per_block;
};

static uint32_t block_rows(uint32_t kp)
{
	uint32_t rb = COLS_BYTES / kp / MR * MR;

	return rb < MR ? MR : rb > 16 * MR ? 16 * MR : rb;
}

static size_t cols_bytes(uint32_t kp)
{
	size_t cols = (size_t)block_rows(kp) * kp;

	if (cols < COLS_ONCE)
		cols = COLS_ONCE;
	return (cols + 63) & ~(size_t)63;
}

static size_t conv_scratch_bytes(uint32_t kp)
{
	return 2 * (size_t)NB * kp + cols_bytes(kp) + sizeof(struct epi) + 256;
}

static void conv_scratch_init(struct conv_scratch *s, int8_t *tile, uint32_t kp)
{
	uintptr_t p = ((uintptr_t)tile + 63) & ~(uintptr_t)63;

	s->panel = (int8_t *)p;
	p += (size_t)NB * kp;
	s->rowbuf = (int8_t *)p;
	p += (size_t)NB * kp;
	s->rows_per_block = block_rows(kp);
	s->cols = (uint8_t *)p;
	p += cols_bytes(kp);
	s->epi = (struct epi *)p;
}

/*
 * The im2col-free convolution (one group of cpg channels, a multiple of 4,
 * at `in`; in.c is the pixel stride): per 6 output positions, a table of
 * kh * kw x 6 pointers, one per tap and position, into the NHWC input or to
 * a row of zero points.
 */
static int conv_taps(const struct nq_conv_args *a, uint64_t pb, uint64_t pe, const uint8_t *in,
		     uint8_t *out, const struct rq_vec *b, const struct add_vec *ad)
{
	const uint32_t C = a->in.c, cpg = a->cin_per_group, T = a->kh * a->kw, kp = a->k;
	const uint32_t oc = a->oc;
	const int64_t H = a->in.h, W = a->in.w;
	const uint64_t ohw = (uint64_t)a->out.h * a->out.w;
	const uint8_t *ap[MAX_TAPS * MR];
	struct conv_scratch s;
	int err;

	conv_scratch_init(&s, a->tile, kp);
	memset(s.cols, (uint8_t)a->zx, cpg);	/* the padding row */
	for (uint32_t c0 = 0; c0 < oc; c0 += NB) {
		const uint32_t nc = oc - c0 < NB ? oc - c0 : NB, nv = (nc + 15) / 16;

		err = build_panel(a, c0, nc, nv, kp, s.panel, s.rowbuf, s.epi);
		if (err)
			return err;
		/* Position p0 as (n, oh, ow), stepped along without divisions. */
		uint64_t n = pb / ohw, rem = pb % ohw;
		int64_t oh = (int64_t)(rem / a->out.w), ow = (int64_t)(rem % a->out.w);

		for (uint64_t p0 = pb; p0 < pe; p0 += MR) {
			uint32_t R = pe - p0 < MR ? (uint32_t)(pe - p0) : MR;

			for (uint32_t r = 0; r < R; r++) {
				uint32_t t = 0;

				for (uint32_t ky = 0; ky < a->kh; ky++) {
					int64_t ih = oh * a->stride_h - a->pad_t + (int64_t)ky * a->dil_h;

					for (uint32_t kx = 0; kx < a->kw; kx++, t++) {
						int64_t iw = ow * a->stride_w - a->pad_l +
							     (int64_t)kx * a->dil_w;

						ap[t * MR + r] = ih < 0 || ih >= H || iw < 0 || iw >= W ?
							s.cols : in + (((uint64_t)n * H + ih) * W + iw) * C;
					}
				}
				if (++ow == a->out.w) {
					ow = 0;
					if (++oh == a->out.h) {
						oh = 0;
						n++;
					}
				}
			}
			tiles[R - 1][nv - 1](ap, T, cpg / 4, s.panel, s.epi, b,
					     out + p0 * a->out.c + c0, a->out.c, nc, ad,
					     ad ? a->res + p0 * a->out.c + c0 : NULL);
		}
	}
	return 0;
}

static int conv_rows_avx512(const struct nq_conv_args *a, uint64_t pb, uint64_t pe,
			    const uint8_t *in, uint8_t *out)
{
	const uint32_t G = a->groups, ocpg = a->oc / G, kp = nq_round_up(a->k, 4), kg = kp / 4;
	const bool direct = nq_conv_is_pointwise(a) && a->k % 4 == 0;
	/* im2col-free: with groups == 1 and whole 4-byte groups of channels,
	 * each tap of a row is a run of C bytes of one input pixel (or of a
	 * row of zero points over padding); the micro-kernel walks them. */
	const bool taps = !direct && G == 1 && a->cin_per_group % 4 == 0 &&
			  a->cin_per_group >= 16 && a->kh * a->kw <= MAX_TAPS;
	const struct rq_vec b = rq_bounds(a->zy, a->lo, a->hi);
	struct add_vec av, *ad = NULL;
	struct conv_scratch s;
	int err;

	if (a->add) {
		add_vec_init(&av, a->add);
		ad = &av;
	}
	if (taps)
		return conv_taps(a, pb, pe, in, out, &b, ad);
	/* Few positions (the late layers): im2col them all once, not once
	 * per panel of 64 channels. */
	const bool once = !direct && (pe - pb) * kp <= COLS_ONCE && ocpg > NB;

	conv_scratch_init(&s, a->tile, kp);
	if (once)
		s.rows_per_block = (uint32_t)(pe - pb);
	for (uint32_t g = 0; g < G; g++) {
	if (once)
		im2col(a, in, g, pb, (uint32_t)(pe - pb), kp, s.cols);
	for (uint32_t cb = 0; cb < ocpg; cb += NB) {
		const uint32_t nc = ocpg - cb < NB ? ocpg - cb : NB, nv = (nc + 15) / 16;
		const uint32_t c0 = g * ocpg + cb;

		err = build_panel(a, c0, nc, nv, kp, s.panel, s.rowbuf, s.epi);
		if (err)
			return err;
		for (uint64_t p0 = pb; p0 < pe; p0 += s.rows_per_block) {
			uint32_t np = pe - p0 < s.rows_per_block ? (uint32_t)(pe - p0) : s.rows_per_block;
			const uint8_t *base;
			uint64_t astride;

			if (direct) {
				base = in + p0 * a->in.c;
				astride = a->in.c;
			} else if (once) {
				base = s.cols;
				astride = kp;
			} else {
				im2col(a, in, g, p0, np, kp, s.cols);
				base = s.cols;
				astride = kp;
			}
			for (uint32_t r0 = 0; r0 < np; r0 += MR) {
				uint32_t R = np - r0 < MR ? np - r0 : MR;
				const uint8_t *ap[MR];

				for (uint32_t r = 0; r < R; r++)
					ap[r] = base + (uint64_t)(r0 + r) * astride;
				tiles[R - 1][nv - 1](ap, 1, kg, s.panel, s.epi, &b,
						     out + (p0 + r0) * a->out.c + c0, a->out.c, nc, ad,
						     ad ? a->res + (p0 + r0) * a->out.c + c0 : NULL);
			}
		}
	}
	}
	return 0;
}

static int conv_avx512(const struct nq_conv_args *a, const uint8_t *in, uint8_t *out)
{
	return conv_rows_avx512(a, 0, (uint64_t)a->out.n * a->out.h * a->out.w, in, out);
}

/* ---- depthwise ---- */

/*
 * groups == oc, one input channel per group: per output position, 16
 * channels per zmm, one tap at a time.  u (zero-extended to 32 bits) times
 * q (int16 in the low half of a dword) through vpmaddwd: the high halves
 * multiply 0, so each lane is exactly u * q.
 */
static int conv_dw_avx512(const struct nq_conv_args *a, const uint8_t *in, uint8_t *out)
{
	const uint32_t C = a->oc, T = a->kh * a->kw, cv = (C + 15) / 16;
	const int64_t H = a->in.h, W = a->in.w;
	const struct rq_vec b = rq_bounds(a->zy, a->lo, a->hi);
	uintptr_t p = ((uintptr_t)a->tile + 63) & ~(uintptr_t)63;
	int32_t *wt = (int32_t *)p;			/* [T][cv * 16] */
	int64_t *m = (int64_t *)(wt + (size_t)T * cv * 16);	/* [cv * 16] x 3 */
	int64_t *sh = m + cv * 16, *rnd = sh + cv * 16;
	int32_t *corr = (int32_t *)(rnd + cv * 16);	/* [cv * 16] */
	int8_t *rowbuf = (int8_t *)(corr + cv * 16);	/* [C][T] */
	const uint8_t *tap[64];
	int err;

	/* The executor fuses no ADD into depthwise layers; the oracle can. */
	if (a->cin_per_group != 1 || a->groups != a->oc || T > 64 || a->add)
		return nq_kernels_scalar.conv(a, in, out);
	err = nq_unpack_rows(&a->wt, 0, C, T, T, rowbuf, NULL);
	if (err)
		return err;
	for (uint32_t c = 0; c < cv * 16; c++) {
		int32_t sum = 0;

		for (uint32_t t = 0; t < T; t++) {
			int32_t q = c < C ? rowbuf[(size_t)c * T + t] : 0;

			wt[(size_t)t * cv * 16 + c] = q & 0xffff;
			sum += q;
		}
		if (c < C) {
			corr[c] = (int32_t)((uint32_t)a->bias32[c] - (uint32_t)a->zx * (uint32_t)sum);
			m[c] = a->rq[c].m;
			sh[c] = a->rq[c].s;
			rnd[c] = (int64_t)1 << (a->rq[c].s - 1);
		} else {
			corr[c] = 0;
			m[c] = 0;
			sh[c] = 1;
			rnd[c] = 0;
		}
	}
	/* Taps over padding read this row of zero points. */
	uint8_t *zrow = (uint8_t *)rowbuf + (((size_t)C * T + 63) & ~(size_t)63);

	memset(zrow, (uint8_t)a->zx, (size_t)cv * 16);
	for (uint32_t n = 0; n < a->out.n; n++)
	for (uint32_t oh = 0; oh < a->out.h; oh++)
	for (uint32_t ow = 0; ow < a->out.w; ow++) {
		uint8_t *o = out + (((uint64_t)n * a->out.h + oh) * a->out.w + ow) * a->out.c;
		uint32_t t = 0;

		for (uint32_t ky = 0; ky < a->kh; ky++) {
			int64_t ih = (int64_t)oh * a->stride_h - a->pad_t + (int64_t)ky * a->dil_h;

			for (uint32_t kx = 0; kx < a->kw; kx++, t++) {
				int64_t iw = (int64_t)ow * a->stride_w - a->pad_l + (int64_t)kx * a->dil_w;

				tap[t] = ih < 0 || ih >= H || iw < 0 || iw >= W ? zrow :
					 in + (((uint64_t)n * H + ih) * W + iw) * a->in.c;
			}
		}
		for (uint32_t v = 0; v < cv; v++) {
			uint32_t left = C - 16 * v;
			__mmask16 mask = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
			__m512i acc = _mm512_loadu_si512(corr + 16 * v);

			for (t = 0; t < T; t++) {
				const uint8_t *src = tap[t] == zrow ? zrow : tap[t] + 16 * v;
				__m512i x = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, src));

				acc = _mm512_add_epi32(acc, _mm512_madd_epi16(x,
						_mm512_loadu_si512(wt + (size_t)t * cv * 16 + 16 * v)));
			}
			acc = requant16(acc, m + 16 * v, sh + 16 * v, rnd + 16 * v, &b);
			_mm_mask_storeu_epi8(o + 16 * v, mask, _mm512_cvtepi32_epi8(acc));
		}
	}
	return 0;
}

static size_t dw_scratch_bytes(uint32_t k, uint32_t oc)
{
	size_t cv16 = ((size_t)oc + 15) / 16 * 16;

	return 64 + cv16 * k * 4 + cv16 * (3 * 8 + 4) + (((size_t)oc * k + 63) & ~(size_t)63) +
	       cv16 + 64;
}

static size_t tile_bytes_avx512(uint32_t k, uint32_t oc)
{
	size_t c = conv_scratch_bytes(nq_round_up(k, 4)), d = dw_scratch_bytes(k, oc);

	return c > d ? c : d;
}

/* ---- element-wise and pools ---- */

static void add_avx512(const struct nq_add_args *a, const uint8_t *x1, const uint8_t *x2,
		       uint8_t *out, size_t n)
{
	struct add_vec c;

	add_vec_init(&c, a);
	for (size_t i = 0; i < n; i += 16) {
		__mmask16 mask = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
		__m512i v = add16(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, x1 + i)),
				  _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, x2 + i)), &c);

		_mm_mask_storeu_epi8(out + i, mask, _mm512_cvtepi32_epi8(v));
	}
}

static void eltwise_avx512(const struct nq_eltwise_args *a, const uint8_t *in, uint8_t *out,
			   size_t n)
{
	const struct rq_vec b = rq_bounds(a->zy, a->lo, a->hi);
	const __m512i zx = _mm512_set1_epi32(a->zx);
	struct rq_one o;

	rq_one_init(&o, a->rq);
	for (size_t i = 0; i < n; i += 16) {
		__mmask16 mask = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
		__m128i x8 = _mm_maskz_loadu_epi8(mask, in + i);
		__m512i x = a->in_signed ? _mm512_cvtepi8_epi32(x8) : _mm512_cvtepu8_epi32(x8);

		x = requant16(_mm512_sub_epi32(x, zx), o.m, o.s, o.rnd, &b);
		_mm_mask_storeu_epi8(out + i, mask, _mm512_cvtepi32_epi8(x));
	}
}

static void gap_avx512(const struct nq_gap_args *a, const uint8_t *in, uint8_t *out)
{
	const uint64_t hw = (uint64_t)a->in.h * a->in.w;
	const uint32_t C = a->in.c;
	const struct rq_vec b = rq_bounds(a->zy, 0, 255);
	const __m512i zsum = _mm512_set1_epi32((int32_t)((uint32_t)a->zx * (uint32_t)hw));
	struct rq_one o;

	rq_one_init(&o, a->rq);
	for (uint32_t n = 0; n < a->in.n; n++)
		for (uint32_t c = 0; c < C; c += 16) {
			__mmask16 mask = C - c >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (C - c)) - 1);
			const uint8_t *src = in + (uint64_t)n * hw * C + c;
			__m512i sum = _mm512_setzero_si512();

			for (uint64_t p = 0; p < hw; p++)
				sum = _mm512_add_epi32(sum, _mm512_cvtepu8_epi32(
						_mm_maskz_loadu_epi8(mask, src + p * C)));
			sum = requant16(_mm512_sub_epi32(sum, zsum), o.m, o.s, o.rnd, &b);
			_mm_mask_storeu_epi8(out + (uint64_t)n * C + c, mask, _mm512_cvtepi32_epi8(sum));
		}
}

/* Window [b, e) of taps inside [0, lim) for output index o (as the oracle). */
static void window(uint32_t o, uint32_t stride, uint32_t pad, uint32_t dil, uint32_t k,
		   int64_t lim, int64_t *p0, uint32_t *b, uint32_t *e)
{
	*p0 = (int64_t)o * stride - pad;
	*b = 0;
	*e = 0;
	for (uint32_t i = 0; i < k; i++) {
		int64_t p = *p0 + (int64_t)i * dil;

		if (p >= 0 && p < lim) {
			if (*e == 0)
				*b = i;
			*e = i + 1;
		}
	}
}

static void maxpool_avx512(const struct nq_pool_args *a, const uint8_t *in, uint8_t *out)
{
	const struct nq_nhwc *I = &a->in, *O = &a->out;
	const struct rq_vec b = rq_bounds(a->zy, a->lo, a->hi);
	const __m512i zx = _mm512_set1_epi32(a->zx);
	struct rq_one o;

	rq_one_init(&o, a->rq_max);
	for (uint32_t n = 0; n < O->n; n++)
	for (uint32_t oh = 0; oh < O->h; oh++)
	for (uint32_t ow = 0; ow < O->w; ow++) {
		int64_t h0, w0;
		uint32_t yb, ye, xb, xe;
		uint8_t *dst = out + (((uint64_t)n * O->h + oh) * O->w + ow) * O->c;

		window(oh, a->stride_h, a->pad_t, a->dil_h, a->kh, I->h, &h0, &yb, &ye);
		window(ow, a->stride_w, a->pad_l, a->dil_w, a->kw, I->w, &w0, &xb, &xe);
		for (uint32_t c = 0; c < O->c; c += 64) {
			uint32_t left = O->c - c;
			__mmask64 mask = left >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << left) - 1);
			__m512i mx = _mm512_setzero_si512();

			if (ye == yb || xe == xb) {	/* padding only: the lowest code */
				_mm512_mask_storeu_epi8(dst + c, mask, mx);
				continue;
			}
			for (uint32_t ky = yb; ky < ye; ky++)
			for (uint32_t kx = xb; kx < xe; kx++) {
				int64_t ih = h0 + (int64_t)ky * a->dil_h, iw = w0 + (int64_t)kx * a->dil_w;

				mx = _mm512_max_epu8(mx, _mm512_maskz_loadu_epi8(mask,
						in + (((uint64_t)n * I->h + ih) * I->w + iw) * I->c + c));
			}
			for (uint32_t q = 0; q < 4 && q * 16 < left; q++) {
				uint32_t l = left - q * 16;
				__mmask16 m16 = l >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << l) - 1);
				__m512i x = _mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(mx, 0));

				switch (q) {
				case 1: x = _mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(mx, 1)); break;
				case 2: x = _mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(mx, 2)); break;
				case 3: x = _mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(mx, 3)); break;
				}
				x = requant16(_mm512_sub_epi32(x, zx), o.m, o.s, o.rnd, &b);
				_mm_mask_storeu_epi8(dst + c + q * 16, m16, _mm512_cvtepi32_epi8(x));
			}
		}
	}
}

/*
 * QUANTIZE as the oracle: one f32 multiply, clamp to [-1024, 1024] with NaN
 * going to -1024 (vmaxps returns its second operand when either is NaN),
 * round half to even (vcvtps2dq in the default rounding mode), add z, clamp.
 */
static void quantize_avx512(const struct nq_quant_args *a, const float *in, uint8_t *out)
{
	const __m512 inv = _mm512_set1_ps(a->inv), lo = _mm512_set1_ps(-1024.0f);
	const __m512 hi = _mm512_set1_ps(1024.0f);
	const __m512i z = _mm512_set1_epi32(a->z), qmin = _mm512_set1_epi32(a->qmin);
	const __m512i qmax = _mm512_set1_epi32(a->qmax);

	for (uint32_t n = 0; n < a->n; n++)
		for (uint32_t c = 0; c < a->c; c++) {
			const float *src = in + ((uint64_t)n * a->c + c) * a->hw;

			for (uint32_t p = 0; p < a->hw; p += 16) {
				uint32_t left = a->hw - p;
				__mmask16 m = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
				__m512 t = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, src + p), inv);
				__m512i v;
				uint8_t b[16];

				t = _mm512_min_ps(_mm512_max_ps(t, lo), hi);
				v = _mm512_add_epi32(_mm512_cvtps_epi32(t), z);
				v = _mm512_min_epi32(_mm512_max_epi32(v, qmin), qmax);
				if (!a->nhwc) {
					_mm_mask_storeu_epi8(out + ((uint64_t)n * a->c + c) * a->hw + p, m,
							     _mm512_cvtepi32_epi8(v));
					continue;
				}
				_mm_storeu_si128((__m128i *)b, _mm512_cvtepi32_epi8(v));
				for (uint32_t i = 0; i < 16 && i < left; i++)
					out[((uint64_t)n * a->hw + p + i) * a->c + c] = b[i];
			}
		}
}

const struct nq_kernels nq_kernels_avx512 = {
	.name = "avx512",
	.conv = conv_avx512,
	.conv_dw = conv_dw_avx512,
	.gemm = conv_avx512,
	.add = add_avx512,
	.maxpool = maxpool_avx512,
	.avgpool = nq_scalar_avgpool,	/* not worth a vector version yet */
	.gap = gap_avx512,
	.eltwise = eltwise_avx512,
	.quantize = quantize_avx512,
	.tile_bytes = tile_bytes_avx512,
	.conv_rows = conv_rows_avx512,
};
