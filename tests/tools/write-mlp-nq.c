// SPDX-License-Identifier: MIT
/*
 * write-mlp-nq — a Fashion-MNIST-shaped multilayer perceptron with seeded
 * random weights, big enough that its residual planes are megabytes: the
 * model of the memory-pressure tests, where the planes a switch releases
 * must stand out from the memory cgroup's accounting noise (the reference
 * models' residuals are ~100 KiB).
 *
 *   write-mlp-nq OUT.nq [--hidden H] [--levels 6,8] [--seed N]
 *
 * Graph: image (1,1,28,28) f32 -> Quantize -> Flatten -> Gemm 784xH + ReLU
 * -> Gemm HxH + ReLU -> Gemm Hx10 -> Dequantize.  Weights ~ U(-1, 1) *
 * sqrt(3 / K), per-channel absmax scales, lower levels by rounding q / 2^d
 * (exact residuals).  The answers mean nothing; they are deterministic, and
 * differ between levels.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nq_error.h"
#include "nq_format.h"

#define NLAYERS 3

struct layer {
	struct nq_layer_desc d;
	int8_t *q[NQ_FORMAT_MAX_LEVELS];
	float *scales, *bias;
};

static uint64_t rng;

static float uniform(void)
{
	uint64_t z = (rng += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	z ^= z >> 31;
	return (float)((z >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

static int make_layer(struct layer *l, const uint8_t *bits, uint32_t nl)
{
	struct nq_layer_desc *d = &l->d;
	uint64_t n = (uint64_t)d->oc * d->k;
	int qmax = (1 << (bits[nl - 1] - 1)) - 1;
	float amp = sqrtf(3.0f / (float)d->k);
	int8_t *cur = malloc(n);
	float *w = malloc(n * sizeof(*w));

	l->scales = calloc((size_t)nl * d->oc, sizeof(float));
	l->bias = calloc(d->oc, sizeof(float));
	for (uint32_t k = 0; k < nl; k++)
		l->q[k] = malloc(n);
	if (!cur || !w || !l->scales || !l->bias || !l->q[0] || !l->q[nl - 1]) {
		free(cur);
		free(w);
		return -ENOMEM;
	}
	for (uint64_t i = 0; i < n; i++)
		w[i] = uniform() * amp;
	for (uint32_t c = 0; c < d->oc; c++) {
		float amax = 0, sc;

		for (uint32_t j = 0; j < d->k; j++)
			amax = fmaxf(amax, fabsf(w[(uint64_t)c * d->k + j]));
		sc = amax > 0 ? amax / (float)qmax : 1.0f;
		for (uint32_t j = 0; j < d->k; j++) {
			long v = lroundf(w[(uint64_t)c * d->k + j] / sc);

			cur[(uint64_t)c * d->k + j] = (int8_t)(v > qmax ? qmax : v < -qmax ? -qmax : v);
		}
		for (uint32_t k = 0; k < nl; k++)
			l->scales[(uint64_t)k * d->oc + c] = sc * (float)(1 << (bits[nl - 1] - bits[k]));
		l->bias[c] = uniform() * 0.05f;
	}
	for (uint32_t k = nl - 1; k > 0; k--) {
		int dd = bits[k] - bits[k - 1];
		int lo = -(1 << (bits[k - 1] - 1)), hi = (1 << (bits[k - 1] - 1)) - 1;

		for (uint64_t i = 0; i < n; i++) {
			int qk = cur[i], qh = (int)lroundf((float)qk / (float)(1 << dd));

			qh = qh < lo ? lo : qh > hi ? hi : qh;
			l->q[k][i] = (int8_t)(qk - qh * (1 << dd));
			cur[i] = (int8_t)qh;
		}
		d->plane_bits[k] = (uint8_t)(dd + 1);
		d->plane_signed[k] = true;
	}
	memcpy(l->q[0], cur, n);
	d->plane_bits[0] = bits[0];
	d->plane_signed[0] = true;
	d->scales = l->scales;
	d->bias = l->bias;
	free(cur);
	free(w);
	return 0;
}

static int write_plane(struct nq_writer *w, const struct layer *l, uint32_t li, uint32_t level)
{
	uint32_t stride;
	uint64_t size;
	uint8_t *buf;
	int err;

	err = nq_writer_plane_layout(w, li, level, &stride, &size);
	if (err)
		return err;
	buf = calloc(1, size);
	if (!buf)
		return -ENOMEM;
	for (uint32_t c = 0; c < l->d.oc && !err; c++)
		err = nq_pack_row(l->q[level] + (uint64_t)c * l->d.k, l->d.k, l->d.plane_bits[level],
				  l->d.plane_signed[level], buf + (uint64_t)c * stride);
	if (!err)
		err = nq_writer_write_plane(w, li, level, buf, size);
	free(buf);
	return err;
}

static int tensor(struct nq_writer *w, const char *name, enum nq_tensor_type dt, uint32_t rank,
		  uint32_t d0, uint32_t d1, uint32_t d2, uint32_t d3, float scale)
{
	struct nq_tensor_desc t = {
		.name = name, .dtype = dt, .rank = rank, .dims = { d0, d1, d2, d3 }, .scale = scale,
	};

	return nq_writer_add_tensor(w, &t);
}

static int node(struct nq_writer *w, const char *name, enum nq_op op, uint32_t in, uint32_t out,
		uint32_t layer, const struct nq_attrs *a)
{
	struct nq_node_desc n = {
		.name = name, .op = op, .inputs = &in, .n_inputs = 1, .outputs = &out,
		.n_outputs = 1, .layer = layer,
	};

	if (a)
		n.attrs = *a;
	return nq_writer_add_node(w, &n);
}

#define TRY(x) do { err = (x); if (err < 0) goto out; } while (0)

int main(int argc, char **argv)
{
	uint8_t bits[NQ_FORMAT_MAX_LEVELS] = { 6, 8 };
	struct nq_writer_opts wo = { 0 };
	struct nq_disk_preprocess pre = { 0 };
	struct layer l[NLAYERS] = { 0 };
	struct nq_attrs relu = { 0 }, flat = { 0 };
	struct nq_writer *w = NULL;
	const char *out = NULL;
	uint32_t nl = 2, hidden = 2048, seed = 1;
	char levels[64] = "", *p;
	int err = 0, t[8], li[NLAYERS];

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--hidden") && i + 1 < argc) {
			hidden = (uint32_t)strtoul(argv[++i], NULL, 0);
		} else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
			seed = (uint32_t)strtoul(argv[++i], NULL, 0);
		} else if (!strcmp(argv[i], "--levels") && i + 1 < argc) {
			nl = 0;
			for (p = strtok(argv[++i], ",|"); p && nl < NQ_FORMAT_MAX_LEVELS; p = strtok(NULL, ",|"))
				bits[nl++] = (uint8_t)atoi(p);
		} else if (argv[i][0] != '-' && !out) {
			out = argv[i];
		} else {
			out = NULL;
			break;
		}
	}
	if (!out || hidden < 16 || hidden > 16384 || nl < 2 || bits[nl - 1] != 8) {
		fprintf(stderr, "usage: write-mlp-nq OUT.nq [--hidden 16..16384] [--levels 6,8 (ending "
				"in 8)] [--seed N]\n");
		return 2;
	}
	rng = seed;
	for (uint32_t k = nl; k-- > 0;)
		snprintf(levels + strlen(levels), sizeof(levels) - strlen(levels), "%s%u",
			 k == nl - 1 ? "" : "|", bits[k]);

	l[0].d = (struct nq_layer_desc){ .name = "fc1", .kind = NQ_LAYER_GEMM, .oc = hidden, .k = 784 };
	l[1].d = (struct nq_layer_desc){ .name = "fc2", .kind = NQ_LAYER_GEMM, .oc = hidden, .k = hidden };
	l[2].d = (struct nq_layer_desc){ .name = "fc3", .kind = NQ_LAYER_GEMM, .oc = 10, .k = hidden };
	for (int i = 0; i < NLAYERS; i++)
		TRY(make_layer(&l[i], bits, nl));

	TRY(nq_writer_create(out, bits, nl, &wo, &w));
	TRY(nq_writer_add_meta(w, "producer", "nestquant write-mlp-nq (format 1.0)"));
	TRY(nq_writer_add_meta(w, "source", "synthetic MLP, weights from a splitmix64 seed"));
	TRY(nq_writer_add_meta(w, "convert.levels", levels));
	TRY(nq_writer_add_meta(w, "convert.residual", "exact"));
	pre.layout = NQ_LAYOUT_NCHW;
	pre.channels = 1;
	pre.input_scale = 1.0f / 255.0f;
	pre.std[0] = 1.0f;
	TRY(nq_writer_set_preprocess(w, &pre));

	TRY(t[0] = tensor(w, "image", NQ_TENSOR_F32, 4, 1, 1, 28, 28, 0));
	TRY(t[1] = tensor(w, "image_q", NQ_TENSOR_U8, 4, 1, 1, 28, 28, 1.0f / 255));
	TRY(t[2] = tensor(w, "flat", NQ_TENSOR_U8, 2, 1, 784, 0, 0, 1.0f / 255));
	TRY(t[3] = tensor(w, "h1", NQ_TENSOR_U8, 2, 1, hidden, 0, 0, 2.0f / 255));
	TRY(t[4] = tensor(w, "h2", NQ_TENSOR_U8, 2, 1, hidden, 0, 0, 3.0f / 255));
	TRY(t[5] = tensor(w, "logits_q", NQ_TENSOR_S8, 2, 1, 10, 0, 0, 0.02f));
	TRY(t[6] = tensor(w, "logits", NQ_TENSOR_F32, 2, 1, 10, 0, 0, 0));
	for (int i = 0; i < NLAYERS; i++)
		TRY(li[i] = nq_writer_add_layer(w, &l[i].d));

	relu.i[NQ_A_ACT] = NQ_ACT_RELU;
	flat.i[NQ_A_AXIS] = 1;
	TRY(node(w, "quantize", NQ_OP_QUANTIZE, t[0], t[1], NQ_NONE, NULL));
	TRY(node(w, "flatten", NQ_OP_FLATTEN, t[1], t[2], NQ_NONE, &flat));
	TRY(node(w, "fc1", NQ_OP_GEMM, t[2], t[3], li[0], &relu));
	TRY(node(w, "fc2", NQ_OP_GEMM, t[3], t[4], li[1], &relu));
	TRY(node(w, "fc3", NQ_OP_GEMM, t[4], t[5], li[2], NULL));
	TRY(node(w, "dequantize", NQ_OP_DEQUANTIZE, t[5], t[6], NQ_NONE, NULL));
	TRY(nq_writer_add_input(w, t[0]));
	TRY(nq_writer_add_output(w, t[6]));
	for (uint32_t k = 0; k < nl; k++)
		for (uint32_t i = 0; i < NLAYERS; i++)
			TRY(write_plane(w, &l[i], i, k));
	err = nq_writer_finish(w);
	w = NULL;
out:
	nq_writer_abort(w);
	for (int i = 0; i < NLAYERS; i++) {
		for (uint32_t k = 0; k < NQ_FORMAT_MAX_LEVELS; k++)
			free(l[i].q[k]);
		free(l[i].scales);
		free(l[i].bias);
	}
	if (err < 0) {
		fprintf(stderr, "write-mlp-nq: %s: %s\n", out,
			*nq_last_error() ? nq_last_error() : strerror(-err));
		return 1;
	}
	return 0;
}
