// SPDX-License-Identifier: MIT
/*
 * write-sample-nq — write a small but real .nq model through the format
 * library: Quantize -> Conv 3x3 (3->8) -> depthwise Conv 3x3 stride 2 ->
 * GlobalAveragePool -> Flatten -> Gemm (8->10) -> Dequantize.  Weights are
 * seeded pseudo-random, quantized per output channel to the top level's bits
 * and decomposed into nested planes (round-to-nearest for the lower level in
 * exact mode, floor in compact mode).  Deterministic: the same arguments give
 * the same bytes, so the bad-file corpus derived from it is reproducible.
 *
 *   write-sample-nq OUT.nq [--levels 6,8] [--compact] [--align BYTES] [--seed N]
 *
 * Until the converter exists this is what `make demo` shows.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nq_error.h"
#include "nq_format.h"

struct sample_layer {
	struct nq_layer_desc d;
	int8_t *q[NQ_FORMAT_MAX_LEVELS];	/* per level: oc * k values (plane contents) */
	float *scales;
	float *bias;
};

static uint64_t rng_state;

static uint64_t rng_next(void)
{
	/* splitmix64: tiny, good enough, identical everywhere */
	uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static float rng_uniform(void)
{
	return (float)((rng_next() >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

/*
 * Quantize w[oc][k] per channel to the top level, then derive each lower
 * level from the one above: q_{k-1} = round(q_k / 2^d) (exact) or floor
 * (compact), r_k = q_k - q_{k-1} * 2^d.
 */
static int make_layer(struct sample_layer *s, const uint8_t *bits, uint32_t nl, bool compact)
{
	struct nq_layer_desc *d = &s->d;
	uint64_t n = (uint64_t)d->oc * d->k;
	int8_t *full;
	float *w;

	w = malloc(n * sizeof(*w));
	full = malloc(n);
	s->scales = calloc((size_t)nl * d->oc, sizeof(float));
	s->bias = malloc(d->oc * sizeof(float));
	for (uint32_t k = 0; k < nl; k++)
		s->q[k] = malloc(n);
	if (!w || !full || !s->scales || !s->bias || !s->q[nl - 1])
		return -ENOMEM;
	for (uint64_t i = 0; i < n; i++)
		w[i] = rng_uniform() * 0.5f;
	for (uint32_t c = 0; c < d->oc; c++) {
		int qmax = (1 << (bits[nl - 1] - 1)) - 1;
		float amax = 0, sc;

		for (uint32_t j = 0; j < d->k; j++)
			amax = fmaxf(amax, fabsf(w[(uint64_t)c * d->k + j]));
		sc = amax > 0 ? amax / (float)qmax : 1.0f;
		for (uint32_t j = 0; j < d->k; j++) {
			long v = lroundf(w[(uint64_t)c * d->k + j] / sc);

			full[(uint64_t)c * d->k + j] = (int8_t)(v > qmax ? qmax : v < -qmax ? -qmax : v);
		}
		/* Level k's grid is 2^(b_top - b_k) coarser. */
		for (uint32_t k = 0; k < nl; k++)
			s->scales[(uint64_t)k * d->oc + c] = sc * (float)(1 << (bits[nl - 1] - bits[k]));
		s->bias[c] = rng_uniform() * 0.1f;
	}

	/* Walk down: cur holds q_k; q[k] receives the plane of level k. */
	memcpy(s->q[nl - 1], full, n);
	for (uint32_t k = nl - 1; k > 0; k--) {
		int dd = bits[k] - bits[k - 1];
		int lo = -(1 << (bits[k - 1] - 1)), hi = (1 << (bits[k - 1] - 1)) - 1;

		for (uint64_t i = 0; i < n; i++) {
			int qk = full[i], qh;

			if (compact)
				qh = qk >> dd;	/* floor; arithmetic shift on gcc/clang */
			else
				qh = (int)lroundf((float)qk / (float)(1 << dd));
			qh = qh < lo ? lo : qh > hi ? hi : qh;
			s->q[k][i] = (int8_t)(qk - qh * (1 << dd));
			full[i] = (int8_t)qh;
		}
		d->plane_bits[k] = (uint8_t)(compact ? dd : dd + 1);
		d->plane_signed[k] = !compact;
	}
	memcpy(s->q[0], full, n);
	d->plane_bits[0] = bits[0];
	d->plane_signed[0] = true;
	d->scales = s->scales;
	d->bias = s->bias;
	free(full);
	free(w);
	return 0;
}

static int write_plane(struct nq_writer *w, const struct sample_layer *s, uint32_t li,
		       uint32_t level)
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
	for (uint32_t c = 0; c < s->d.oc && !err; c++)
		err = nq_pack_row(s->q[level] + (uint64_t)c * s->d.k, s->d.k, s->d.plane_bits[level],
				  s->d.plane_signed[level], buf + (uint64_t)c * stride);
	if (!err)
		err = nq_writer_write_plane(w, li, level, buf, size);
	free(buf);
	return err;
}

static int tensor(struct nq_writer *w, const char *name, enum nq_tensor_type dt, uint32_t n,
		  uint32_t c, uint32_t h, uint32_t wd, uint32_t rank, float scale)
{
	struct nq_tensor_desc t = {
		.name = name, .dtype = dt, .rank = rank, .dims = { n, c, h, wd },
		.scale = scale,
	};

	for (uint32_t i = rank; i < 4; i++)
		t.dims[i] = 0;
	return nq_writer_add_tensor(w, &t);
}

static int node(struct nq_writer *w, const char *name, enum nq_op op, uint32_t in,
		uint32_t out, uint32_t layer, const struct nq_attrs *a)
{
	struct nq_node_desc n = {
		.name = name, .op = op, .inputs = &in, .n_inputs = 1, .outputs = &out,
		.n_outputs = 1, .layer = layer,
	};

	if (a)
		n.attrs = *a;
	return nq_writer_add_node(w, &n);
}

static struct nq_attrs window(int k, int stride, int pad, int groups, int act)
{
	struct nq_attrs a = { 0 };

	a.i[NQ_A_KH] = a.i[NQ_A_KW] = k;
	a.i[NQ_A_STRIDE_H] = a.i[NQ_A_STRIDE_W] = stride;
	a.i[NQ_A_PAD_T] = a.i[NQ_A_PAD_L] = a.i[NQ_A_PAD_B] = a.i[NQ_A_PAD_R] = pad;
	a.i[NQ_A_DIL_H] = a.i[NQ_A_DIL_W] = 1;
	a.i[NQ_A_GROUPS] = groups;
	a.i[NQ_A_ACT] = act;
	return a;
}

#define TRY(x)                          \
	do {                            \
		err = (x);              \
		if (err < 0)            \
			goto out;       \
	} while (0)

int main(int argc, char **argv)
{
	uint8_t bits[NQ_FORMAT_MAX_LEVELS] = { 6, 8 };
	struct nq_writer_opts opts = { 0 };
	struct sample_layer layers[3] = { 0 };
	struct nq_disk_preprocess pre = { 0 };
	uint32_t nl = 2, seed = 1;
	const char *out = NULL;
	struct nq_writer *w = NULL;
	bool compact = false;
	char levels_str[64] = "", *p;
	int err = 0, t[10], li[3];

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--compact")) {
			compact = true;
		} else if (!strcmp(argv[i], "--levels") && i + 1 < argc) {
			nl = 0;
			for (p = strtok(argv[++i], ",|"); p && nl < NQ_FORMAT_MAX_LEVELS; p = strtok(NULL, ",|"))
				bits[nl++] = (uint8_t)atoi(p);
		} else if (!strcmp(argv[i], "--align") && i + 1 < argc) {
			opts.region_align = (uint32_t)strtoul(argv[++i], NULL, 0);
		} else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
			seed = (uint32_t)strtoul(argv[++i], NULL, 0);
		} else if (argv[i][0] != '-' && !out) {
			out = argv[i];
		} else {
			fprintf(stderr, "usage: write-sample-nq OUT.nq [--levels 6,8] [--compact] [--align BYTES] [--seed N]\n");
			return 2;
		}
	}
	if (!out) {
		fprintf(stderr, "usage: write-sample-nq OUT.nq [--levels 6,8] [--compact] [--align BYTES] [--seed N]\n");
		return 2;
	}
	if (nl < 1 || (nl > 1 && bits[nl - 1] != 8)) {
		fprintf(stderr, "write-sample-nq: levels must end with 8 bits\n");
		return 2;
	}
	rng_state = seed;
	for (uint32_t k = nl; k-- > 0;)
		snprintf(levels_str + strlen(levels_str), sizeof(levels_str) - strlen(levels_str),
			 "%s%u", k == nl - 1 ? "" : "|", bits[k]);

	layers[0].d = (struct nq_layer_desc){ .name = "conv1", .kind = NQ_LAYER_CONV, .oc = 8,
		.k = 27, .groups = 1, .kh = 3, .kw = 3, .cin_per_group = 3 };
	layers[1].d = (struct nq_layer_desc){ .name = "conv2_dw", .kind = NQ_LAYER_CONV, .oc = 8,
		.k = 9, .groups = 8, .kh = 3, .kw = 3, .cin_per_group = 1 };
	layers[2].d = (struct nq_layer_desc){ .name = "fc", .kind = NQ_LAYER_GEMM, .oc = 10,
		.k = 8 };
	for (int i = 0; i < 3; i++)
		TRY(make_layer(&layers[i], bits, nl, compact));

	TRY(nq_writer_create(out, bits, nl, &opts, &w));
	TRY(nq_writer_add_meta(w, "producer", "nestquant write-sample-nq (format 1.0)"));
	TRY(nq_writer_add_meta(w, "source", "synthetic weights (splitmix64 seed)"));
	TRY(nq_writer_add_meta(w, "convert.levels", levels_str));
	TRY(nq_writer_add_meta(w, "convert.residual", compact ? "compact" : "exact"));
	pre.layout = NQ_LAYOUT_NCHW;
	pre.channels = 3;
	pre.input_scale = 1.0f / 255.0f;
	pre.mean[0] = 0.485f, pre.mean[1] = 0.456f, pre.mean[2] = 0.406f;
	pre.std[0] = 0.229f, pre.std[1] = 0.224f, pre.std[2] = 0.225f;
	TRY(nq_writer_set_preprocess(w, &pre));

	TRY(t[0] = tensor(w, "image", NQ_TENSOR_F32, 1, 3, 16, 16, 4, 0));
	TRY(t[1] = tensor(w, "image_q", NQ_TENSOR_U8, 1, 3, 16, 16, 4, 1.0f / 64));
	TRY(t[2] = tensor(w, "conv1_out", NQ_TENSOR_U8, 1, 8, 16, 16, 4, 0.05f));
	TRY(t[3] = tensor(w, "conv2_out", NQ_TENSOR_U8, 1, 8, 8, 8, 4, 0.05f));
	TRY(t[4] = tensor(w, "pooled", NQ_TENSOR_U8, 1, 8, 1, 1, 4, 0.05f));
	TRY(t[5] = tensor(w, "flat", NQ_TENSOR_U8, 1, 8, 0, 0, 2, 0.05f));
	TRY(t[6] = tensor(w, "logits_q", NQ_TENSOR_S8, 1, 10, 0, 0, 2, 0.1f));
	TRY(t[7] = tensor(w, "logits", NQ_TENSOR_F32, 1, 10, 0, 0, 2, 0));
	for (int i = 0; i < 3; i++)
		TRY(li[i] = nq_writer_add_layer(w, &layers[i].d));

	struct nq_attrs c1 = window(3, 1, 1, 1, NQ_ACT_RELU), c2 = window(3, 2, 1, 8, NQ_ACT_RELU);
	struct nq_attrs flat = { 0 };

	flat.i[NQ_A_AXIS] = 1;
	TRY(node(w, "quantize", NQ_OP_QUANTIZE, t[0], t[1], NQ_NONE, NULL));
	TRY(node(w, "conv1", NQ_OP_CONV, t[1], t[2], li[0], &c1));
	TRY(node(w, "conv2_dw", NQ_OP_CONV, t[2], t[3], li[1], &c2));
	TRY(node(w, "pool", NQ_OP_GLOBALAVGPOOL, t[3], t[4], NQ_NONE, NULL));
	TRY(node(w, "flatten", NQ_OP_FLATTEN, t[4], t[5], NQ_NONE, &flat));
	TRY(node(w, "fc", NQ_OP_GEMM, t[5], t[6], li[2], NULL));
	TRY(node(w, "dequantize", NQ_OP_DEQUANTIZE, t[6], t[7], NQ_NONE, NULL));
	TRY(nq_writer_add_input(w, t[0]));
	TRY(nq_writer_add_output(w, t[7]));

	for (uint32_t k = 0; k < nl; k++)
		for (uint32_t i = 0; i < 3; i++)
			TRY(write_plane(w, &layers[i], i, k));
	err = nq_writer_finish(w);
	w = NULL;
out:
	nq_writer_abort(w);
	for (int i = 0; i < 3; i++) {
		for (uint32_t k = 0; k < NQ_FORMAT_MAX_LEVELS; k++)
			free(layers[i].q[k]);
		free(layers[i].scales);
		free(layers[i].bias);
	}
	if (err < 0) {
		fprintf(stderr, "write-sample-nq: %s: %s\n", out,
			*nq_last_error() ? nq_last_error() : strerror(-err));
		return 1;
	}
	return 0;
}
