// SPDX-License-Identifier: MIT
/*
 * Kernel micro-benchmark (`make bench-kernels`, not a test).
 *
 * 1. The machine's int8 VNNI peak: per thread, a register-only loop of 24
 *    independent vpdpbusd zmm chains (no loads, no dependencies shorter than
 *    24 instructions), run on 1..T threads at once.  One vpdpbusd = 64
 *    multiply-adds = 128 int8 ops.
 * 2. The selected kernel table's CONV on ResNet-50 shapes (ImageNet, batch
 *    1), weights as a 6|8 nested layer read from packed planes at both
 *    levels, split across T threads exactly as the executor does; the
 *    median of N runs, as int8 ops/s and % of the T-thread peak.
 *
 *   bench_kernels [--threads T] [--iters N] [--shape I] [--rows]
 *
 * Planes are in the PANEL16X4 layout the converter writes for these layers;
 * --rows packs them in the ROWS layout instead.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/kernels.h"
#include "kernels/pack.h"
#include "nq_error.h"
#include "nq_format.h"
#include "requant.h"
#include "threadpool.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* ---- 1. peak ---- */


#if defined(__x86_64__)
/* The loop in assembly, so that nothing but vpdpbusd runs: zmm8..zmm31 are
 * the chains, zmm0/zmm1 the operands. */
__attribute__((target("avx512f,avx512bw,avx512vnni"))) static void *peak_thread(void *arg)
{
	long n = *(long *)arg;

	__asm__ volatile(
		"vpternlogd $0xff, %%zmm0, %%zmm0, %%zmm0\n\t"
		"vpabsb %%zmm0, %%zmm1\n\t"
		"1:\n\t"
		".irp r, 8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31\n\t"
		"vpdpbusd %%zmm1, %%zmm0, %%zmm\\r\n\t"
		".endr\n\t"
		"dec %0\n\t"
		"jnz 1b\n\t"
		: "+r"(n)
		:
		: "xmm0", "xmm1", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14",
		  "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22",
		  "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30",
		  "xmm31", "cc");
	*(long *)arg = n;
	return NULL;
}

/*
 * int8 ops/s of `threads` threads running the loop at once.  The machine
 * is shared: short bursts (a few ms), best of many, so that a burst that
 * ran without being preempted sets the number.
 */
static double vnni_peak(unsigned int threads)
{
	pthread_t tid[NQ_MAX_THREADS];
	long arg[NQ_MAX_THREADS];
	const long burst = 100000;
	double best = 0;

	if (!__builtin_cpu_supports("avx512vnni"))
		return 0;
	for (int rep = 0; rep < 60; rep++) {
		double t0 = now(), dt, r;

		for (unsigned int i = 0; i < threads; i++) {
			arg[i] = burst;
			if (i)
				pthread_create(&tid[i], NULL, peak_thread, &arg[i]);
		}
		peak_thread(&arg[0]);
		for (unsigned int i = 1; i < threads; i++)
			pthread_join(tid[i], NULL);
		dt = now() - t0;
		r = (double)threads * burst * 24 * 128 / dt;
		if (r > best)
			best = r;
	}
	return best;
}
#else
static double vnni_peak(unsigned int threads)
{
	(void)threads;
	return 0;
}
#endif

/* ---- 2. conv ---- */

struct shape {
	const char *name;
	uint32_t h, w, c, oc, k, stride, pad;
};

static const struct shape shapes[] = {
	{ "stem 7x7/2 3->64 (M 12544, K 147)", 224, 224, 3, 64, 7, 2, 3 },
	{ "layer1 3x3 64->64 (M 3136, K 576)", 56, 56, 64, 64, 3, 1, 1 },
	{ "layer1 1x1 64->256 (M 3136, K 64)", 56, 56, 64, 256, 1, 1, 0 },
	{ "layer1 1x1 256->64 (M 3136, K 256)", 56, 56, 256, 64, 1, 1, 0 },
	{ "layer2 3x3 128->128 (M 784, K 1152)", 28, 28, 128, 128, 3, 1, 1 },
	{ "layer3 3x3 256->256 (M 196, K 2304)", 14, 14, 256, 256, 3, 1, 1 },
	{ "layer3 1x1 1024->256 (M 196, K 1024)", 14, 14, 1024, 256, 1, 1, 0 },
	{ "layer4 3x3 512->512 (M 49, K 4608)", 7, 7, 512, 512, 3, 1, 1 },
	{ "layer4 1x1 512->2048 (M 49, K 512)", 7, 7, 512, 2048, 1, 1, 0 },
};

static uint64_t rng = 88172645463325252ull;

static uint32_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 16);
}

struct job {
	const struct nq_kernels *k;
	const struct nq_conv_args *a;
	const uint8_t *in;
	uint8_t *out;
	int8_t *tile[NQ_MAX_THREADS];
	int err;
};

static void part(void *arg, unsigned int i, unsigned int n)
{
	struct job *j = arg;
	int err = nq_conv_part(j->k, false, false, j->a, j->tile[i], i, n, j->in, j->out);

	if (err)
		j->err = err;
}

static bool rows_layout;

static int bench_shape(const struct nq_kernels *k, struct nq_pool *pool, const struct shape *s,
		       int iters, double peak)
{
	const uint32_t K = s->k * s->k * s->c, oh = (s->h + 2 * s->pad - s->k) / s->stride + 1;
	const uint32_t bits[2] = { 6, 3 };
	uint8_t *plane[2], *in, *out;
	struct nq_conv_args a;
	struct nq_rq *rq;
	int32_t *bias;
	int8_t *row;
	struct job j;
	double *t;
	unsigned int T = nq_pool_threads(pool);

	memset(&a, 0, sizeof(a));
	row = malloc(K);
	for (int l = 0; l < 2; l++) {
		uint32_t stride = (uint32_t)((nq_packed_bytes(K, bits[l]) + 63) & ~63ull);
		uint32_t layout = rows_layout ? NQ_PLANE_ROWS : NQ_PLANE_PANEL16X4;
		size_t size = rows_layout ? (size_t)stride * s->oc :
			      (nq_panel_plane_bytes(s->oc, K, bits[l]) + 63) & ~(size_t)63;

		plane[l] = aligned_alloc(64, size);
		memset(plane[l], 0, size);
		for (uint32_t c = 0; c < s->oc; c++) {
			for (uint32_t i = 0; i < K; i++)
				row[i] = (int8_t)(l ? (int)(rnd() % 7) - 3 : (int)(rnd() % 63) - 31);
			nq_plane_pack_row(plane[l], layout, stride, K, c, row, bits[l], true);
		}
		a.wt.plane[l] = (struct nq_plane_view){ .data = plane[l],
							.row_stride = rows_layout ? stride : 0,
							.rows = s->oc, .k = K, .bits = bits[l],
							.is_signed = true, .layout = layout };
	}
	a.wt.level_bits[0] = 6;
	a.wt.level_bits[1] = 8;
	a.oc = s->oc, a.k = K, a.groups = 1, a.kh = a.kw = s->k, a.cin_per_group = s->c;
	a.stride_h = a.stride_w = s->stride, a.pad_t = a.pad_l = s->pad, a.dil_h = a.dil_w = 1;
	a.in = (struct nq_nhwc){ 1, s->h, s->w, s->c };
	a.out = (struct nq_nhwc){ 1, oh, oh, s->oc };
	a.zx = 3, a.zy = 0, a.lo = 0, a.hi = 255;
	bias = calloc(s->oc, sizeof(*bias));
	rq = calloc(s->oc, sizeof(*rq));
	for (uint32_t c = 0; c < s->oc; c++)
		nq_rq_derive(1e-4, &rq[c]);
	a.bias32 = bias, a.rq = rq;
	in = aligned_alloc(64, (size_t)s->h * s->w * s->c + 64);
	out = aligned_alloc(64, (size_t)oh * oh * s->oc + 64);
	for (size_t i = 0; i < (size_t)s->h * s->w * s->c; i++)
		in[i] = (uint8_t)rnd();
	memset(&j, 0, sizeof(j));
	j.k = k, j.a = &a, j.in = in, j.out = out;
	for (unsigned int i = 0; i < T; i++)
		j.tile[i] = aligned_alloc(64, (k->tile_bytes(K, s->oc) + 63) & ~(size_t)63);
	t = calloc(iters, sizeof(*t));
	printf("  %-40s", s->name);
	for (int level = 1; level >= 0; level--) {
		double ops = 2.0 * oh * oh * (double)K * s->oc, med;

		a.wt.level = level;
		nq_pool_run(pool, part, &j);	/* warm up */
		for (int i = 0; i < iters; i++) {
			double t0 = now();

			nq_pool_run(pool, part, &j);
			t[i] = now() - t0;
		}
		qsort(t, iters, sizeof(*t), cmp_double);
		med = t[iters / 2];
		printf("  L%d %7.3f ms %6.1f Gop/s", level, med * 1e3, ops / med * 1e-9);
		if (peak > 0)
			printf(" %5.1f%% (best %5.1f%%)", 100 * ops / med / peak, 100 * ops / t[0] / peak);
	}
	printf("\n");
	for (unsigned int i = 0; i < T; i++)
		free(j.tile[i]);
	free(t), free(in), free(out), free(bias), free(rq), free(row);
	free(plane[0]), free(plane[1]);
	if (j.err)
		fprintf(stderr, "conv failed: %s\n", nq_last_error());
	return j.err;
}

int main(int argc, char **argv)
{
	unsigned int threads = 0;
	int iters = 20, only = -1;
	const struct nq_kernels *k;
	struct nq_pool *pool;
	double peak1, peakT;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--threads") && i + 1 < argc)
			threads = (unsigned int)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--shape") && i + 1 < argc)
			only = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--iters") && i + 1 < argc)
			iters = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--rows"))
			rows_layout = true;
		else {
			fprintf(stderr, "usage: %s [--threads T] [--iters N] [--shape I] [--rows]\n", argv[0]);
			return 2;
		}
	}
	if (nq_threads_choose(threads, &threads) || nq_kernels_select(&k) ||
	    nq_pool_create(threads, &pool)) {
		fprintf(stderr, "bench_kernels: %s\n", nq_last_error());
		return 1;
	}
	peak1 = vnni_peak(1);
	peakT = threads > 1 ? vnni_peak(threads) : peak1;
	printf("VNNI peak (register-only vpdpbusd zmm x 24 chains): 1 thread %.1f Gop/s, "
	       "%u threads %.1f Gop/s\n", peak1 * 1e-9, threads, peakT * 1e-9);
	printf("conv, table %s, %u thread(s), median of %d, %% of the %u-thread peak (L1 = full 6|8, L0 = part 6-bit):\n",
	       k->name, threads, iters, threads);
	for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++)
		if ((only < 0 || (size_t)only == i) && bench_shape(k, pool, &shapes[i], iters, peakT))
			return 1;
	nq_pool_destroy(pool);
	return 0;
}
