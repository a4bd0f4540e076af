// SPDX-License-Identifier: MIT
/*
 * FP32 kernels for the reference executor.  Plain C written so gcc -O2
 * vectorises the hot loop: the GEMM keeps a 4x16 accumulator tile whose
 * inner loops have a constant trip count (gcc 12's "very cheap" cost model
 * at -O2 only vectorises loops it needs no epilogue for).
 */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fp32_kernels.h"

#define TM 4
#define TN 16

void k_sgemm(int m0, int m1, int N, int K, const float *A, int lda, const float *B, int ldb,
	     float *C, int ldc)
{
	int i = m0, j;

	for (; i + TM <= m1; i += TM) {
		const float *a0 = A + (size_t)i * lda;

		for (j = 0; j + TN <= N; j += TN) {
			float acc[TM][TN] = { { 0 } };

			for (int k = 0; k < K; k++) {
				const float *b = B + (size_t)k * ldb + j;
				float av[TM];

				for (int r = 0; r < TM; r++)
					av[r] = a0[(size_t)r * lda + k];
				for (int r = 0; r < TM; r++)
					for (int c = 0; c < TN; c++)
						acc[r][c] += av[r] * b[c];
			}
			for (int r = 0; r < TM; r++)
				memcpy(C + (size_t)(i + r) * ldc + j, acc[r], sizeof(acc[r]));
		}
		for (; j < N; j++) {
			for (int r = 0; r < TM; r++) {
				const float *a = a0 + (size_t)r * lda;
				float s = 0.0f;

				for (int k = 0; k < K; k++)
					s += a[k] * B[(size_t)k * ldb + j];
				C[(size_t)(i + r) * ldc + j] = s;
			}
		}
	}
	for (; i < m1; i++) {
		const float *a = A + (size_t)i * lda;
		float *c = C + (size_t)i * ldc;

		for (j = 0; j + TN <= N; j += TN) {
			float acc[TN] = { 0 };

			for (int k = 0; k < K; k++) {
				const float *b = B + (size_t)k * ldb + j;

				for (int cc = 0; cc < TN; cc++)
					acc[cc] += a[k] * b[cc];
			}
			memcpy(c + j, acc, sizeof(acc));
		}
		for (; j < N; j++) {
			float s = 0.0f;

			for (int k = 0; k < K; k++)
				s += a[k] * B[(size_t)k * ldb + j];
			c[j] = s;
		}
	}
}

void k_act(float *y, size_t n, int act, float lo, float hi)
{
	if (act == NQ_ACT_RELU) {
		for (size_t i = 0; i < n; i++)
			y[i] = y[i] > 0.0f ? y[i] : 0.0f;
	} else if (act == NQ_ACT_CLIP) {
		for (size_t i = 0; i < n; i++)
			y[i] = y[i] < lo ? lo : y[i] > hi ? hi : y[i];
	}
}

/* col[(c*kh + ky)*kw + kx][oy*OW + ox] for the channels of one group. */
static void im2col(const struct k_conv *p, const float *x, int cg, float *col)
{
	int P = p->OH * p->OW;

	for (int c = 0; c < cg; c++) {
		const float *xc = x + (size_t)c * p->H * p->W;

		for (int ky = 0; ky < p->kh; ky++) {
			for (int kx = 0; kx < p->kw; kx++) {
				float *row = col + ((size_t)(c * p->kh + ky) * p->kw + kx) * P;

				for (int oy = 0; oy < p->OH; oy++) {
					int iy = oy * p->sh - p->pt + ky * p->dh;
					float *r = row + (size_t)oy * p->OW;

					if (iy < 0 || iy >= p->H) {
						memset(r, 0, (size_t)p->OW * sizeof(float));
						continue;
					}
					for (int ox = 0; ox < p->OW; ox++) {
						int ix = ox * p->sw - p->pl + kx * p->dw;

						r[ox] = ix >= 0 && ix < p->W ? xc[(size_t)iy * p->W + ix] : 0.0f;
					}
				}
			}
		}
	}
}

int k_conv2d(const struct k_conv *p, const float *x, float *y, int n0, int n1)
{
	int cg = p->C / p->groups, ocg = p->OC / p->groups;
	int K = cg * p->kh * p->kw, P = p->OH * p->OW;
	int direct = p->kh == 1 && p->kw == 1 && p->sh == 1 && p->sw == 1 && p->pt == 0 &&
		     p->pl == 0 && p->OH == p->H && p->OW == p->W;
	float *col = NULL;

	if (!direct) {
		col = malloc((size_t)K * P * sizeof(float));
		if (!col)
			return -ENOMEM;
	}
	for (int n = n0; n < n1; n++) {
		const float *xn = x + (size_t)n * p->C * p->H * p->W;
		float *yn = y + (size_t)n * p->OC * P;

		for (int g = 0; g < p->groups; g++) {
			const float *xg = xn + (size_t)g * cg * p->H * p->W;
			const float *b = xg;
			float *yg = yn + (size_t)g * ocg * P;

			if (!direct) {
				im2col(p, xg, cg, col);
				b = col;
			}
			k_sgemm(0, ocg, P, K, p->weight + (size_t)g * ocg * K, K, b, P, yg, P);
		}
		for (int o = 0; o < p->OC; o++) {
			float *yo = yn + (size_t)o * P;
			float bv = p->bias ? p->bias[o] : 0.0f;

			for (int i = 0; i < P; i++)
				yo[i] += bv;
			k_act(yo, (size_t)P, p->act, p->lo, p->hi);
		}
	}
	free(col);
	return 0;
}

/*
 * The taps t in [0, k) of one pooling axis whose position base + t * step
 * lies in [lo, hi), as [*t0, *t1).  Computed rather than tested tap by tap:
 * a window may be far wider than the input (auto_pad SAME with a kernel of
 * 65535 is valid ONNX), and the loops then cost the input, not the window.
 */
static void tap_range(int base, int step, int k, int lo, int hi, int *t0, int *t1)
{
	long long b = base, st = step > 0 ? step : 1, a = 0, e = k;

	if (b < lo)
		a = (lo - b + st - 1) / st;
	if (b >= hi)
		e = 0;
	else if ((hi - 1 - b) / st + 1 < e)
		e = (hi - 1 - b) / st + 1;
	*t0 = (int)(a < k ? a : k);
	*t1 = (int)(e > *t0 ? e : *t0);
}

void k_maxpool(const struct k_pool *p, const float *x, float *y, int n0, int n1)
{
	for (size_t nc = (size_t)n0 * p->C; nc < (size_t)n1 * p->C; nc++) {
		const float *xc = x + nc * p->H * p->W;
		float *yc = y + nc * p->OH * p->OW;

		for (int oy = 0; oy < p->OH; oy++) {
			int by = oy * p->sh - p->pt, ky0, ky1;

			tap_range(by, p->dh, p->kh, 0, p->H, &ky0, &ky1);
			for (int ox = 0; ox < p->OW; ox++) {
				int bx = ox * p->sw - p->pl, kx0, kx1;
				float m = -INFINITY;

				tap_range(bx, p->dw, p->kw, 0, p->W, &kx0, &kx1);
				for (int ky = ky0; ky < ky1; ky++) {
					const float *row = xc + (size_t)(by + ky * p->dh) * p->W;

					for (int kx = kx0; kx < kx1; kx++)
						if (row[bx + kx * p->dw] > m)
							m = row[bx + kx * p->dw];
				}
				yc[oy * p->OW + ox] = m;
			}
		}
	}
}

void k_avgpool(const struct k_pool *p, const float *x, float *y, int n0, int n1)
{
	for (size_t nc = (size_t)n0 * p->C; nc < (size_t)n1 * p->C; nc++) {
		const float *xc = x + nc * p->H * p->W;
		float *yc = y + nc * p->OH * p->OW;

		for (int oy = 0; oy < p->OH; oy++) {
			int by = oy * p->sh - p->pt, ky0, ky1, py0, py1;

			tap_range(by, p->dh, p->kh, 0, p->H, &ky0, &ky1);
			/* count_include_pad counts the pads, not what lies past
			 * them (ceil_mode) */
			tap_range(by, p->dh, p->kh, -p->pt, p->H + p->pb, &py0, &py1);
			for (int ox = 0; ox < p->OW; ox++) {
				int bx = ox * p->sw - p->pl, kx0, kx1, px0, px1;
				float s = 0.0f;
				long long cnt, total;

				tap_range(bx, p->dw, p->kw, 0, p->W, &kx0, &kx1);
				tap_range(bx, p->dw, p->kw, -p->pl, p->W + p->pr, &px0, &px1);
				for (int ky = ky0; ky < ky1; ky++) {
					const float *row = xc + (size_t)(by + ky * p->dh) * p->W;

					for (int kx = kx0; kx < kx1; kx++)
						s += row[bx + kx * p->dw];
				}
				cnt = (long long)(ky1 - ky0) * (kx1 - kx0);
				total = (long long)(py1 - py0) * (px1 - px0);
				yc[oy * p->OW + ox] = s / (float)(p->count_include_pad ? total : (cnt ? cnt : 1));
			}
		}
	}
}

void k_softmax(const float *x, float *y, size_t outer0, size_t outer1, size_t len, size_t inner)
{
	for (size_t o = outer0; o < outer1; o++) {
		for (size_t in = 0; in < inner; in++) {
			const float *xr = x + o * len * inner + in;
			float *yr = y + o * len * inner + in;
			float m = -INFINITY, s = 0.0f;

			for (size_t i = 0; i < len; i++)
				if (xr[i * inner] > m)
					m = xr[i * inner];
			for (size_t i = 0; i < len; i++) {
				yr[i * inner] = expf(xr[i * inner] - m);
				s += yr[i * inner];
			}
			for (size_t i = 0; i < len; i++)
				yr[i * inner] /= s;
		}
	}
}
