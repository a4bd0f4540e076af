// SPDX-License-Identifier: MIT
/*
 * nestquant run MODEL (--input X.npy | --data fashion-mnist:N) [--level L]
 *
 * One inference (or one per item of a .npy batch) through the public API,
 * printing the top-5 classes with probabilities.  Dataset images are fed as
 * raw 8-bit pixel values (0..255); the model's preprocessing record (e.g.
 * input_scale = 1/255, mean, std) turns them into what the network expects.
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmd_run.h"
#include "dataset.h"
#include "nestquant.h"

static const char *const fashion[] = {
	"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
	"Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
};

const char *cli_fashion_class(unsigned int i)
{
	return i < 10 ? fashion[i] : NULL;
}

void cli_json_str(FILE *out, const char *s)
{
	fputc('"', out);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(out, "\\%c", *p);
		else if (*p < 0x20)
			fprintf(out, "\\u%04x", *p);
		else
			fputc(*p, out);
	}
	fputc('"', out);
}

int cli_parse_level(const struct nq_model *m, const char *arg, unsigned int *level)
{
	char *end;
	long bits;
	int idx;

	if (!strcmp(arg, "full")) {
		*level = nq_model_level_count(m) - 1;
		return 0;
	}
	if (!strcmp(arg, "part")) {
		*level = 0;
		return 0;
	}
	bits = strtol(arg, &end, 10);
	if (*end || end == arg || bits < 1 || bits > 8)
		return -EINVAL;
	idx = nq_model_level_for_bits(m, (unsigned int)bits);
	if (idx < 0)
		return idx;
	*level = (unsigned int)idx;
	return 0;
}

void cli_probabilities(const float *out, size_t n, float *p)
{
	double sum = 0, mx = -INFINITY;
	bool dist = true;

	for (size_t i = 0; i < n; i++) {
		if (!(out[i] >= 0 && out[i] <= 1))
			dist = false;
		sum += out[i];
		if (out[i] > mx)
			mx = out[i];
	}
	if (dist && fabs(sum - 1) < 1e-3) {
		memcpy(p, out, n * sizeof(*p));
		return;
	}
	sum = 0;
	for (size_t i = 0; i < n; i++)
		sum += exp((double)out[i] - mx);
	for (size_t i = 0; i < n; i++)
		p[i] = (float)(exp((double)out[i] - mx) / sum);
}

void cli_top_k(const float *v, size_t n, unsigned int k, uint32_t *idx)
{
	for (unsigned int j = 0; j < k; j++) {
		size_t best = SIZE_MAX;

		for (size_t i = 0; i < n; i++) {
			bool taken = false;

			for (unsigned int t = 0; t < j; t++)
				taken |= idx[t] == i;
			if (!taken && (best == SIZE_MAX || v[i] > v[best]))
				best = i;
		}
		idx[j] = (uint32_t)best;
	}
}

static void usage(FILE *out)
{
	fprintf(out,
		"usage: nestquant run MODEL.nq (--input X.npy | --data fashion-mnist:N)\n"
		"                     [--level L] [--json]\n\n"
		"Run the model on one input (or on every item of a .npy batch) with the\n"
		"scalar-exact integer executor and print the top-5 classes.\n\n"
		"  --input X.npy           raw input values in the model's input layout; the\n"
		"                          array holds one or more inputs of the model's size\n"
		"  --data fashion-mnist:N  test image N of Fashion-MNIST (raw pixels 0..255)\n"
		"  --level L               bit width (e.g. 6, 8), 'full' or 'part' (level 0);\n"
		"                          default: full\n"
		"  --json                  one JSON object per input\n");
}

static int to_float(const struct nq_array *a, float **out)
{
	float *f = malloc((a->count ? a->count : 1) * sizeof(float));

	if (!f)
		return -ENOMEM;
	for (size_t i = 0; i < a->count; i++) {
		switch (a->dtype) {
		case NQ_DT_F32: f[i] = ((const float *)a->data)[i]; break;
		case NQ_DT_F64: f[i] = (float)((const double *)a->data)[i]; break;
		case NQ_DT_U8: f[i] = ((const uint8_t *)a->data)[i]; break;
		case NQ_DT_I8: f[i] = ((const int8_t *)a->data)[i]; break;
		case NQ_DT_I16: f[i] = ((const int16_t *)a->data)[i]; break;
		case NQ_DT_I32: f[i] = (float)((const int32_t *)a->data)[i]; break;
		case NQ_DT_I64: f[i] = (float)((const int64_t *)a->data)[i]; break;
		default:
			free(f);
			return -EINVAL;
		}
	}
	*out = f;
	return 0;
}

static void print_result(const float *out, size_t n, int level, int bits, int label,
			 bool names, bool json, size_t item)
{
	float *p = malloc(n * sizeof(*p));
	uint32_t idx[5];
	unsigned int k = n < 5 ? (unsigned int)n : 5;

	if (!p)
		return;
	cli_probabilities(out, n, p);
	cli_top_k(p, n, k, idx);
	if (json) {
		printf("{\"item\": %zu, \"level\": %d, \"bits\": %d", item, level, bits);
		if (label >= 0)
			printf(", \"label\": %d", label);
		printf(", \"top\": [");
		for (unsigned int j = 0; j < k; j++)
			printf("%s{\"class\": %u, \"probability\": %.6f}", j ? ", " : "", idx[j],
			       p[idx[j]]);
		printf("]}\n");
	} else {
		printf("input %zu: level %d (%d-bit weights)", item, level, bits);
		if (label >= 0)
			printf(", label %d%s%s%s", label, names ? " (" : "",
			       names ? cli_fashion_class((unsigned int)label) : "", names ? ")" : "");
		printf("\n");
		for (unsigned int j = 0; j < k; j++)
			printf("  %u. class %-3u %8.4f%%%s%s\n", j + 1, idx[j], 100.0 * p[idx[j]],
			       names ? "  " : "", names ? cli_fashion_class(idx[j]) : "");
	}
	free(p);
}

static int run(int argc, char **argv)
{
	const char *model = NULL, *input = NULL, *data = NULL, *level_arg = "full";
	struct nq_model *m = NULL;
	struct nq_session *s = NULL;
	struct nq_array arr = { 0 };
	struct nq_dataset ds = { 0 };
	float *in = NULL, *out = NULL;
	size_t nin, nout, items = 1;
	unsigned int level;
	bool json = false, names = false;
	int rc = 1, err, label = -1;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--input") && i + 1 < argc)
			input = argv[++i];
		else if (!strcmp(argv[i], "--data") && i + 1 < argc)
			data = argv[++i];
		else if (!strcmp(argv[i], "--level") && i + 1 < argc)
			level_arg = argv[++i];
		else if (!strcmp(argv[i], "--json"))
			json = true;
		else if (argv[i][0] != '-' && !model)
			model = argv[i];
		else {
			usage(stderr);
			return 2;
		}
	}
	if (!model || !!input == !!data) {
		usage(stderr);
		return 2;
	}
	err = nq_model_open(model, NULL, &m);
	if (err) {
		cli_error("run", "%s", nq_last_error());
		return 1;
	}
	if (cli_parse_level(m, level_arg, &level) < 0) {
		cli_error("run", "--level %s: the model has no such level", level_arg);
		goto out;
	}
	nin = nq_model_input_count(m);
	nout = nq_model_output_count(m);
	if (input) {
		if (nq_npy_read(input, &arr) < 0) {
			cli_error("run", "%s", nq_last_error());
			goto out;
		}
		if (!arr.count || arr.count % nin) {
			cli_error("run", "%s: %zu values is not a multiple of the model input (%zu)",
				  input, arr.count, nin);
			goto out;
		}
		if (to_float(&arr, &in) < 0) {
			cli_error("run", "%s: unsupported element type", input);
			goto out;
		}
		items = arr.count / nin;
	} else {
		const char *colon = strchr(data, ':');
		char *end;
		unsigned long idx;

		if (!colon || strncmp(data, "fashion-mnist", (size_t)(colon - data)) ||
		    colon - data != 13) {
			cli_error("run", "--data %s: expected fashion-mnist:N", data);
			goto out;
		}
		idx = strtoul(colon + 1, &end, 10);
		if (*end || end == colon + 1) {
			cli_error("run", "--data %s: N must be a number", data);
			goto out;
		}
		if (nq_dataset_load("fashion-mnist", "t10k", idx + 1, &ds) < 0) {
			cli_error("run", "%s", nq_last_error());
			goto out;
		}
		if (idx >= ds.count) {
			cli_error("run", "--data %s: the test set has %zu images", data, ds.count);
			goto out;
		}
		if ((size_t)ds.channels * ds.height * ds.width != nin) {
			cli_error("run", "model input has %zu values, a Fashion-MNIST image %u",
				  nin, ds.channels * ds.height * ds.width);
			goto out;
		}
		in = malloc(nin * sizeof(*in));
		if (!in)
			goto out;
		/* Raw pixels: the loader scaled them by 1/255; undo it exactly. */
		for (size_t j = 0; j < nin; j++)
			in[j] = rintf(ds.images[idx * nin + j] * 255.0f);
		label = ds.labels[idx];
		names = nout == 10;
	}
	out = malloc(nout * sizeof(*out));
	if (!out || nq_session_create(m, &s) < 0) {
		cli_error("run", "%s", nq_last_error());
		goto out;
	}
	for (size_t it = 0; it < items; it++) {
		err = nq_session_run_level(s, level, in + it * nin, out);
		if (err) {
			cli_error("run", "%s", nq_last_error());
			goto out;
		}
		print_result(out, nout, (int)level, nq_model_level_bits(m, level), label, names,
			     json, it);
	}
	rc = 0;
out:
	free(in);
	free(out);
	nq_array_free(&arr);
	nq_dataset_free(&ds);
	nq_session_destroy(s);
	nq_model_close(m);
	return rc;
}

const struct nq_verb nq_verb_run = {
	.name = "run",
	.summary = "run a model on one input and print the top-5 classes",
	.run = run,
	.usage = usage,
};
