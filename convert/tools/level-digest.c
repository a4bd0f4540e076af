// SPDX-License-Identifier: MIT
/*
 * level-digest FILE.nq LEVEL
 *
 * A 64-bit FNV-1a digest of everything the integer executor computes with at
 * one level: the composed weights q_level of every layer, that level's
 * scales, the biases, every tensor's quantization and every node.  Two
 * (file, level) pairs with the same digest give the same outputs, so
 * scripts/accuracy.sh evaluates each distinct model once (for example the
 * full-bit level of every exact-residual file equals the standalone INT8
 * file, bit for bit).  Prints the digest as 16 hex digits.
 */
#include <stdio.h>
#include <stdlib.h>

#include "nq_error.h"
#include "nq_format.h"

static uint64_t h = 0xcbf29ce484222325ull;

static void mix(const void *p, size_t n)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 0x100000001b3ull;
	}
}

int main(int argc, char **argv)
{
	struct nq_file *f;
	uint32_t level, n;
	int8_t *row = NULL;
	int err;

	if (argc != 3) {
		fprintf(stderr, "usage: level-digest FILE.nq LEVEL\n");
		return 2;
	}
	level = (uint32_t)atoi(argv[2]);
	err = nq_file_open(argv[1], &f);
	if (err || level >= nq_file_level_count(f)) {
		fprintf(stderr, "level-digest: %s\n", err ? nq_last_error() : "no such level");
		return 1;
	}
	mix(nq_file_preprocess(f), sizeof(struct nq_disk_preprocess));
	for (uint32_t t = 0; t < nq_file_tensor_count(f); t++) {
		const struct nq_disk_tensor *d = nq_file_tensor(f, t);

		mix(&d->dtype, 1);
		mix(d->dims, sizeof(d->dims));
		mix(&d->scale, sizeof(d->scale));
		mix(&d->zero_point, sizeof(d->zero_point));
	}
	for (uint32_t i = 0; i < nq_file_node_count(f); i++) {
		const struct nq_disk_node *d = nq_file_node(f, i);
		const uint32_t *io = nq_file_node_inputs(f, i, &n);

		mix(&d->op, sizeof(d->op));
		mix(&d->attrs, sizeof(d->attrs));
		mix(io, n * sizeof(*io));
		io = nq_file_node_outputs(f, i, &n);
		mix(io, n * sizeof(*io));
	}
	for (uint32_t l = 0; l < nq_file_layer_count(f); l++) {
		const struct nq_disk_layer *d = nq_file_layer(f, l);
		const float *b = nq_file_layer_bias(f, l);

		row = realloc(row, d->k);
		mix(nq_file_layer_scales(f, l, level), d->oc * sizeof(float));
		if (b)
			mix(b, d->oc * sizeof(float));
		for (uint32_t c = 0; c < d->oc; c++) {
			err = nq_file_unpack_weights(f, l, level, c, 0, d->k, row);
			if (err) {
				fprintf(stderr, "level-digest: %s\n", nq_last_error());
				return 1;
			}
			mix(row, d->k);
		}
	}
	printf("%016llx\n", (unsigned long long)h);
	free(row);
	nq_file_close(f);
	return 0;
}
