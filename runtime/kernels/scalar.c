// SPDX-License-Identifier: MIT
/*
 * The scalar kernels: the oracle.  Straight loops over the semantics of
 * format/SPEC.md "Execution semantics (normative)"; every SIMD table must
 * reproduce these bytes exactly.  Clarity over speed, but no allocation and
 * no whole-tensor weight copies: one weight row is composed into the tile,
 * used for every output position, then replaced by the next.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"
#include "nq_error.h"

int nq_weights_row(const struct nq_weights *wt, uint32_t row, uint32_t start, uint32_t n,
		   int8_t *out)
{
	int8_t tmp[256];
	int err;

	for (uint32_t done = 0; done < n; done += sizeof(tmp)) {
		uint32_t m = n - done < sizeof(tmp) ? n - done : (uint32_t)sizeof(tmp);

		for (uint32_t k = 0; k <= wt->level; k++) {
			err = nq_plane_unpack(&wt->plane[k], row, start + done, m,
					      k ? tmp : out + done);
			if (!err && k)
				err = nq_compose_step(out + done, tmp, m,
						      wt->level_bits[k] - wt->level_bits[k - 1],
						      wt->level_bits[k]);
			if (err)
				return nq_fail_context(err, "layer %u level %u row %u",
						       wt->layer, k, row);
		}
	}
	return 0;
}

int nq_scalar_conv(const struct nq_conv_args *a, const uint8_t *in, uint8_t *out)
{
	const uint32_t ocpg = a->oc / a->groups, cpg = a->cin_per_group;
	const int64_t H = a->in.h, W = a->in.w;
	int err;

	for (uint32_t c = 0; c < a->oc; c++) {
		const uint32_t g = c / ocpg;

		err = nq_weights_row(&a->wt, c, 0, a->k, a->tile);
		if (err)
			return err;
		for (uint32_t n = 0; n < a->out.n; n++)
		for (uint32_t oh = 0; oh < a->out.h; oh++)
		for (uint32_t ow = 0; ow < a->out.w; ow++) {
			int32_t acc = a->bias32[c];

			for (uint32_t ky = 0; ky < a->kh; ky++) {
				int64_t ih = (int64_t)oh * a->stride_h - a->pad_t +
					     (int64_t)ky * a->dil_h;

				if (ih < 0 || ih >= H)
					continue;
				for (uint32_t kx = 0; kx < a->kw; kx++) {
					int64_t iw = (int64_t)ow * a->stride_w - a->pad_l +
						     (int64_t)kx * a->dil_w;
					const uint8_t *px;
					const int8_t *wp;

					if (iw < 0 || iw >= W)
						continue;
					px = in + (((uint64_t)n * H + ih) * W + iw) * a->in.c +
					     (uint64_t)g * cpg;
					wp = a->tile + ((uint64_t)ky * a->kw + kx) * cpg;
					for (uint32_t ci = 0; ci < cpg; ci++)
						acc += ((int32_t)px[ci] - a->zx) * wp[ci];
				}
			}
			uint64_t o = (((uint64_t)n * a->out.h + oh) * a->out.w + ow) * a->out.c + c;
			uint8_t u = (uint8_t)nq_rq_output(acc, a->rq[c], a->zy, a->lo, a->hi);

			out[o] = a->add ? nq_add_one(a->add, u, a->res[o]) : u;
		}
	}
	return 0;
}

static void add_scalar(const struct nq_add_args *a, const uint8_t *x1, const uint8_t *x2,
		       uint8_t *out, size_t n)
{
	for (size_t i = 0; i < n; i++)
		out[i] = nq_add_one(a, x1[i], x2[i]);
}

/* Window rows/cols [*b, *e) that fall inside [lo, hi) for output index o. */
static void window(uint32_t o, uint32_t stride, uint32_t pad, uint32_t dil, uint32_t k,
		   int64_t lo, int64_t hi, int64_t *pos0, uint32_t *b, uint32_t *e)
{
	int64_t p0 = (int64_t)o * stride - pad;

	*pos0 = p0;
	*b = 0;
	*e = 0;
	for (uint32_t i = 0; i < k; i++) {
		int64_t p = p0 + (int64_t)i * dil;

		if (p >= lo && p < hi) {
			if (*e == 0)
				*b = i;
			*e = i + 1;
		}
	}
}

void nq_scalar_maxpool(const struct nq_pool_args *a, const uint8_t *in, uint8_t *out)
{
	const struct nq_nhwc *I = &a->in, *O = &a->out;

	for (uint32_t n = 0; n < O->n; n++)
	for (uint32_t oh = 0; oh < O->h; oh++)
	for (uint32_t ow = 0; ow < O->w; ow++) {
		int64_t h0, w0;
		uint32_t yb, ye, xb, xe;

		window(oh, a->stride_h, a->pad_t, a->dil_h, a->kh, 0, I->h, &h0, &yb, &ye);
		window(ow, a->stride_w, a->pad_l, a->dil_w, a->kw, 0, I->w, &w0, &xb, &xe);
		for (uint32_t c = 0; c < O->c; c++) {
			int32_t m = -1, y;

			for (uint32_t ky = yb; ky < ye; ky++)
			for (uint32_t kx = xb; kx < xe; kx++) {
				int64_t ih = h0 + (int64_t)ky * a->dil_h, iw = w0 + (int64_t)kx * a->dil_w;
				int32_t v = in[(((uint64_t)n * I->h + ih) * I->w + iw) * I->c + c];

				if (v > m)
					m = v;
			}
			/* A window over padding only holds -inf: the lowest code. */
			y = m < 0 ? 0 : nq_rq_output(m - a->zx, a->rq_max, a->zy, a->lo, a->hi);
			out[(((uint64_t)n * O->h + oh) * O->w + ow) * O->c + c] = (uint8_t)y;
		}
	}
}

void nq_scalar_avgpool(const struct nq_pool_args *a, const uint8_t *in, uint8_t *out)
{
	const struct nq_nhwc *I = &a->in, *O = &a->out;

	for (uint32_t n = 0; n < O->n; n++)
	for (uint32_t oh = 0; oh < O->h; oh++)
	for (uint32_t ow = 0; ow < O->w; ow++) {
		int64_t h0, w0, ph0, pw0;
		uint32_t yb, ye, xb, xe, pyb, pye, pxb, pxe, cnt;

		window(oh, a->stride_h, a->pad_t, a->dil_h, a->kh, 0, I->h, &h0, &yb, &ye);
		window(ow, a->stride_w, a->pad_l, a->dil_w, a->kw, 0, I->w, &w0, &xb, &xe);
		if (a->count_include_pad) {
			/* Positions inside the padded input count (they hold zx). */
			window(oh, a->stride_h, a->pad_t, a->dil_h, a->kh, -(int64_t)a->pad_t,
			       (int64_t)I->h + a->pad_b, &ph0, &pyb, &pye);
			window(ow, a->stride_w, a->pad_l, a->dil_w, a->kw, -(int64_t)a->pad_l,
			       (int64_t)I->w + a->pad_r, &pw0, &pxb, &pxe);
			cnt = (pye - pyb) * (pxe - pxb);
		} else {
			cnt = (ye - yb) * (xe - xb);
		}
		for (uint32_t c = 0; c < O->c; c++) {
			int32_t sum = 0, y;

			for (uint32_t ky = yb; ky < ye; ky++)
			for (uint32_t kx = xb; kx < xe; kx++) {
				int64_t ih = h0 + (int64_t)ky * a->dil_h, iw = w0 + (int64_t)kx * a->dil_w;

				sum += (int32_t)in[(((uint64_t)n * I->h + ih) * I->w + iw) * I->c + c] - a->zx;
			}
			y = nq_rq_output(sum, a->rq_avg[cnt], a->zy, a->lo, a->hi);
			out[(((uint64_t)n * O->h + oh) * O->w + ow) * O->c + c] = (uint8_t)y;
		}
	}
}

void nq_scalar_gap(const struct nq_gap_args *a, const uint8_t *in, uint8_t *out)
{
	const uint64_t hw = (uint64_t)a->in.h * a->in.w;

	for (uint32_t n = 0; n < a->in.n; n++)
		for (uint32_t c = 0; c < a->in.c; c++) {
			int32_t sum = 0;

			for (uint64_t p = 0; p < hw; p++)
				sum += (int32_t)in[((uint64_t)n * hw + p) * a->in.c + c] - a->zx;
			out[(uint64_t)n * a->in.c + c] =
				(uint8_t)nq_rq_output(sum, a->rq, a->zy, 0, 255);
		}
}

void nq_scalar_eltwise(const struct nq_eltwise_args *a, const uint8_t *in, uint8_t *out,
			   size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int32_t u = a->in_signed ? (int32_t)(int8_t)in[i] : (int32_t)in[i];

		out[i] = (uint8_t)nq_rq_output(u - a->zx, a->rq, a->zy, a->lo, a->hi);
	}
}

void nq_scalar_quantize(const struct nq_quant_args *a, const float *in, uint8_t *out)
{
	for (uint32_t n = 0; n < a->n; n++)
		for (uint32_t c = 0; c < a->c; c++)
			for (uint32_t p = 0; p < a->hw; p++) {
				uint64_t src = ((uint64_t)n * a->c + c) * a->hw + p;
				uint64_t dst = a->nhwc ? ((uint64_t)n * a->hw + p) * a->c + c : src;

				out[dst] = (uint8_t)nq_quantize_one(in[src], a->inv, a->z,
								    a->qmin, a->qmax);
			}
}

static size_t tile_bytes_scalar(uint32_t k, uint32_t oc)
{
	(void)oc;
	return k;
}

const struct nq_kernels nq_kernels_scalar = {
	.name = "scalar",
	.conv = nq_scalar_conv,
	.conv_dw = nq_scalar_conv,
	.gemm = nq_scalar_conv,
	.add = add_scalar,
	.maxpool = nq_scalar_maxpool,
	.avgpool = nq_scalar_avgpool,
	.gap = nq_scalar_gap,
	.eltwise = nq_scalar_eltwise,
	.quantize = nq_scalar_quantize,
	.tile_bytes = tile_bytes_scalar,
};
