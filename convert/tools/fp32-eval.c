// SPDX-License-Identifier: MIT
/*
 * fp32-eval MODEL.onnx [--limit N] [--threads N]
 *
 * Top-1/top-5 of an ONNX model on the Fashion-MNIST test set with the FP32
 * reference executor (convert/fp32_exec.h), after the same normalisation the
 * converter applies (BatchNorm folded, activations fused).  The FP32 column
 * of docs/accuracy.md.  Prints: "top1 top5 count seconds".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dataset.h"
#include "fp32_exec.h"
#include "graph.h"
#include "nq_error.h"
#include "onnx_import.h"

#define BATCH 100

int main(int argc, char **argv)
{
	struct nq_fp32_opts fo = { .threads = 2 };
	struct nq_dataset ds;
	struct nq_graph g;
	struct timespec t0, t1;
	size_t limit = 0, per, top1 = 0, top5 = 0, n;
	float *out = NULL;
	int err, classes, batch;

	if (argc < 2) {
		fprintf(stderr, "usage: fp32-eval MODEL.onnx [--limit N] [--threads N]\n");
		return 2;
	}
	for (int i = 2; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--limit"))
			limit = strtoul(argv[i + 1], NULL, 10);
		else if (!strcmp(argv[i], "--threads"))
			fo.threads = atoi(argv[i + 1]);
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	err = nq_onnx_load(argv[1], &g);
	if (!err)
		err = nq_graph_normalise(&g);
	if (!err)
		err = nq_dataset_load("fashion-mnist", "t10k", limit, &ds);
	if (err) {
		fprintf(stderr, "fp32-eval: %s\n", nq_last_error());
		return 1;
	}
	if (g.n_inputs != 1 || g.n_outputs < 1) {
		fprintf(stderr, "fp32-eval: need one input and an output\n");
		return 1;
	}
	per = (size_t)ds.channels * ds.height * ds.width;
	if (nq_fp32_numel(&g, g.inputs[0], 1) != per) {
		fprintf(stderr, "fp32-eval: model input is not a Fashion-MNIST image\n");
		return 1;
	}
	batch = nq_fp32_batchable(&g) ? BATCH : 1;
	classes = (int)nq_fp32_numel(&g, g.outputs[0], 1);
	out = malloc(sizeof(float) * classes * BATCH);
	for (n = 0; n < ds.count; n += (size_t)batch) {
		int b = ds.count - n < (size_t)batch ? (int)(ds.count - n) : batch;
		const float *in[1] = { ds.images + n * per };
		float *outs[1] = { out };

		err = nq_fp32_run(&g, b, in, outs, &fo);
		if (err) {
			fprintf(stderr, "fp32-eval: %s\n", nq_last_error());
			return 1;
		}
		for (int s = 0; s < b; s++) {
			const float *y = out + (size_t)s * classes;
			int lab = ds.labels[n + s], higher = 0;

			for (int c = 0; c < classes; c++)
				if (y[c] > y[lab] || (y[c] == y[lab] && c < lab))
					higher++;
			top1 += higher == 0;
			top5 += higher < 5;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("%.4f %.4f %zu %.1f\n", 100.0 * top1 / ds.count, 100.0 * top5 / ds.count, ds.count,
	       (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9);
	free(out);
	nq_dataset_free(&ds);
	nq_graph_free(&g);
	return 0;
}
