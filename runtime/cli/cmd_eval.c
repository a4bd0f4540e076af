// SPDX-License-Identifier: MIT
/*
 * nestquant eval MODEL.nq --data SET [--labels L] [--level L] [--limit N] [--json]
 *
 * Top-1 / top-5 accuracy of the integer executor over a labelled set, at one
 * level: exactly what the device computes.  SET is "fashion-mnist" (the test
 * split), an IDX image file (labels: --labels, or the file name with
 * "images-idx3" replaced by "labels-idx1"), or a .npy array of inputs
 * (--labels LABELS.npy required), or an ImageNet-style folder
 * SET/<class>/<image>.{jpg,jpeg,png} (classes = subfolder names in strcmp order,
 * labels 0..C-1, as torchvision's ImageFolder).  Images go through the
 * converter's calibration transform (convert/calib_data.c).  Everything is
 * fed as raw pixel values; the model's preprocessing record normalises.
 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cmd_run.h"
#include "convert.h"
#include "nq_error.h"
#include "dataset.h"
#include "nestquant.h"

struct eval_set {
	size_t count, item;	/* inputs, floats per input */
	float *x;		/* count * item raw values */
	int64_t *labels;	/* count */
};

static void usage(FILE *out)
{
	fprintf(out,
		"usage: nestquant eval MODEL.nq --data SET [--labels PATH] [--level L]\n"
		"                      [--resize R] [--limit N] [--json]\n\n"
		"Top-1 and top-5 accuracy of the integer executor over a labelled set.\n\n"
		"  --data SET      'fashion-mnist' (test split, $NQ_FASHION_MNIST_DIR or\n"
		"                  /usr/share/datasets/fashion-mnist), an IDX image file\n"
		"                  (plain or .gz), a .npy array of raw inputs, or a folder\n"
		"                  SET/<class>/*.{jpg,jpeg,png}: classes are the subfolder\n"
		"                  names in sorted (strcmp) order -> labels 0..C-1\n"
		"  --labels PATH   labels (IDX or .npy); for IDX images the default is the\n"
		"                  image file name with images-idx3 -> labels-idx1\n"
		"  --level L       bit width (e.g. 6, 8), 'full' or 'part' (level 0); default full\n"
		"  --budget BYTES  graded switching: at most BYTES of planes resident (K/M/G)\n"
		"  --resize R      folder images: shorter side resized to R (bilinear), then\n"
		"                  centre-cropped to the model's H x W; default\n"
		"                  round(H * 256/224), as the converter calibrates\n"
		"  --limit N       only the first N inputs\n"
		"  --json          print one JSON object with the summary\n");
}

static void set_free(struct eval_set *e)
{
	free(e->x);
	free(e->labels);
	memset(e, 0, sizeof(*e));
}

static int read_any(const char *path, struct nq_array *a)
{
	size_t n = strlen(path);

	if (n >= 4 && !strcmp(path + n - 4, ".npy"))
		return nq_npy_read(path, a);
	return nq_idx_read(path, a);
}

static double elem(const struct nq_array *a, size_t i)
{
	switch (a->dtype) {
	case NQ_DT_F32: return ((const float *)a->data)[i];
	case NQ_DT_F64: return ((const double *)a->data)[i];
	case NQ_DT_U8: return ((const uint8_t *)a->data)[i];
	case NQ_DT_I8: return ((const int8_t *)a->data)[i];
	case NQ_DT_I16: return ((const int16_t *)a->data)[i];
	case NQ_DT_I32: return ((const int32_t *)a->data)[i];
	case NQ_DT_I64: return (double)((const int64_t *)a->data)[i];
	default: return NAN;
	}
}

static int load_files(const char *data, const char *labels, size_t item, size_t limit,
		      struct eval_set *e)
{
	struct nq_array x = { 0 }, y = { 0 };
	char guess[4096];
	int err;

	if (!labels) {
		const char *p = strstr(data, "images-idx3");

		if (!p || strlen(data) >= sizeof(guess)) {
			cli_error("eval", "%s: give the labels with --labels", data);
			return -EINVAL;
		}
		snprintf(guess, sizeof(guess), "%.*slabels-idx1%s", (int)(p - data), data,
			 p + strlen("images-idx3"));
		labels = guess;
	}
	err = read_any(data, &x);
	if (!err)
		err = read_any(labels, &y);
	if (err) {
		cli_error("eval", "%s", nq_last_error());
		goto out;
	}
	if (!x.count || x.count % item || x.count / item != y.count) {
		cli_error("eval", "%s: %zu values are not %zu inputs of %zu (the labels' count)",
			  data, x.count, y.count, item);
		err = -EINVAL;
		goto out;
	}
	e->count = y.count;
	if (limit && limit < e->count)
		e->count = limit;
	e->item = item;
	e->x = malloc(e->count * item * sizeof(float));
	e->labels = malloc(e->count * sizeof(int64_t));
	if (!e->x || !e->labels) {
		err = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < e->count * item; i++)
		e->x[i] = (float)elem(&x, i);
	for (size_t i = 0; i < e->count; i++)
		e->labels[i] = (int64_t)elem(&y, i);
out:
	nq_array_free(&x);
	nq_array_free(&y);
	return err;
}

static int load_named(const char *name, size_t item, size_t limit, struct eval_set *e)
{
	struct nq_dataset ds = { 0 };
	size_t sz;
	int err;

	err = nq_dataset_load(name, "t10k", limit, &ds);
	if (err) {
		cli_error("eval", "%s", nq_last_error());
		return err;
	}
	sz = (size_t)ds.channels * ds.height * ds.width;
	if (sz != item) {
		cli_error("eval", "model input has %zu values, a %s image %zu", item, name, sz);
		nq_dataset_free(&ds);
		return -EINVAL;
	}
	e->count = ds.count;
	e->item = item;
	e->x = malloc(ds.count * item * sizeof(float));
	e->labels = malloc(ds.count * sizeof(int64_t));
	if (!e->x || !e->labels) {
		nq_dataset_free(&ds);
		return -ENOMEM;
	}
	/* Raw pixels: the loader scaled them by 1/255; undo it exactly. */
	for (size_t i = 0; i < ds.count * item; i++)
		e->x[i] = rintf(ds.images[i] * 255.0f);
	for (size_t i = 0; i < ds.count; i++)
		e->labels[i] = ds.labels[i];
	nq_dataset_free(&ds);
	return 0;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

/* Grow e to hold n inputs. */
static int set_reserve(struct eval_set *e, size_t n)
{
	float *x = realloc(e->x, n * e->item * sizeof(float));
	int64_t *y;

	if (!x)
		return -ENOMEM;
	e->x = x;
	y = realloc(e->labels, n * sizeof(int64_t));
	if (!y)
		return -ENOMEM;
	e->labels = y;
	return 0;
}

/* Images of one class folder, labelled `label`, appended to e. */
static int load_class(const char *dir, int64_t label, const struct nq_model *m,
		      const struct nq_calib_shape *sh, unsigned resize, size_t limit,
		      struct eval_set *e)
{
	size_t nlisted = 0, nfiles, plane = (size_t)sh->h * sh->w;
	char **files = NULL;
	float *tmp = NULL;
	int err;

	err = nq_image_list(dir, &files, &nlisted);
	if (err)
		goto fail;
	nfiles = nlisted;	/* --limit takes fewer; every listed path is still freed */
	if (limit && nfiles > limit - e->count)
		nfiles = limit - e->count;
	err = set_reserve(e, e->count + nfiles);
	tmp = malloc(e->item * sizeof(float));
	if (err || !tmp) {
		err = nq_fail(-ENOMEM, "%s: out of memory", dir);
		goto fail;
	}
	for (size_t i = 0; i < nfiles; i++) {
		float *dst = e->x + e->count * e->item;

		err = nq_image_load(files[i], sh, resize, 1.0f, tmp);
		if (err)
			goto fail;
		/* tmp is NCHW; the caller's buffer is in the model's layout. */
		for (unsigned c = 0; c < sh->c; c++)
			for (size_t p = 0; p < plane; p++)
				if (nq_model_input_layout(m) == NQ_INPUT_NHWC)
					dst[p * sh->c + c] = tmp[c * plane + p];
				else
					dst[c * plane + p] = tmp[c * plane + p];
		e->labels[e->count++] = label;
	}
fail:
	free(tmp);
	nq_image_list_free(files, nlisted);
	return err;
}

static int load_folder(const char *dir, const struct nq_model *m, unsigned resize, size_t limit,
		       struct eval_set *e)
{
	struct dirent **ents = NULL;
	struct nq_shape shape;
	struct nq_calib_shape sh;
	int n, err = 0;
	int64_t label = 0;

	if (nq_model_input_shape(m, &shape) < 0 || shape.rank != 4) {
		cli_error("eval", "%s: folders need a model with an [N, C, H, W] input", dir);
		return -EINVAL;
	}
	sh.c = shape.dims[1];
	sh.h = shape.dims[2];
	sh.w = shape.dims[3];
	e->item = nq_model_input_count(m);
	n = scandir(dir, &ents, NULL, by_name);
	if (n < 0) {
		err = -errno;
		cli_error("eval", "%s: %s", dir, strerror(-err));
		return err;
	}
	for (int i = 0; i < n; i++) {
		char path[4096];
		struct stat st;

		if (err || ents[i]->d_name[0] == '.' || (limit && e->count >= limit))
			goto next;
		if (snprintf(path, sizeof(path), "%s/%s", dir, ents[i]->d_name) >= (int)sizeof(path) ||
		    stat(path, &st) || !S_ISDIR(st.st_mode))
			goto next;
		err = load_class(path, label++, m, &sh, resize, limit, e);
		if (err)
			cli_error("eval", "%s", nq_last_error());
next:
		free(ents[i]);
	}
	free(ents);
	if (!err && !e->count) {
		cli_error("eval", "%s: no class folders with .jpg/.jpeg/.png images", dir);
		err = -ENOENT;
	}
	return err;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void progress(size_t done, size_t total, size_t top1, double t0)
{
	int width = 30, fill = total ? (int)(width * done / total) : width;
	double el = now() - t0, eta = done ? el * (total - done) / done : 0;

	fprintf(stderr, "\r  [%.*s%*s] %5.1f%%  %zu/%zu  top-1 %6.2f%%  ETA %.0fs ",
		fill, "##############################", width - fill, "",
		total ? 100.0 * done / total : 100.0, done, total,
		done ? 100.0 * top1 / done : 0.0, eta);
}

static int run(int argc, char **argv)
{
	const char *model = NULL, *data = NULL, *labels = NULL, *level_arg = "full";
	unsigned long long budget = NQ_BUDGET_NONE;
	struct nq_model *m = NULL;
	struct nq_session *s = NULL;
	struct eval_set e = { 0 };
	size_t limit = 0, top1 = 0, top5 = 0, nout;
	unsigned resize = 0;
	struct stat st;
	float *out = NULL;
	unsigned int level;
	bool json = false, tty = isatty(2);
	int rc = 1, used = -1, degraded = 0;
	double t0, secs;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--data") && i + 1 < argc)
			data = argv[++i];
		else if (!strcmp(argv[i], "--labels") && i + 1 < argc)
			labels = argv[++i];
		else if (!strcmp(argv[i], "--level") && i + 1 < argc)
			level_arg = argv[++i];
		else if (!strcmp(argv[i], "--budget") && i + 1 < argc) {
			char *end;

			budget = strtoull(argv[++i], &end, 10);
			budget <<= *end == 'K' ? 10 : *end == 'M' ? 20 : *end == 'G' ? 30 : 0;
		} else if (!strcmp(argv[i], "--resize") && i + 1 < argc)
			resize = (unsigned)strtoul(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--limit") && i + 1 < argc)
			limit = strtoull(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--json"))
			json = true;
		else if (argv[i][0] != '-' && !model)
			model = argv[i];
		else {
			usage(stderr);
			return 2;
		}
	}
	if (!model || !data) {
		usage(stderr);
		return 2;
	}
	if (nq_model_open(model, NULL, &m) < 0) {
		cli_error("eval", "%s", nq_last_error());
		return 1;
	}
	if (cli_parse_level(m, level_arg, &level) < 0) {
		cli_error("eval", "--level %s: the model has no such level", level_arg);
		goto out;
	}
	nq_model_set_level(m, level);
	if (budget != NQ_BUDGET_NONE && nq_model_set_budget(m, budget) < 0) {
		cli_error("eval", "%s", nq_last_error());
		goto out;
	}
	if (!strcmp(data, "fashion-mnist") ? load_named(data, nq_model_input_count(m), limit, &e)
	    : !stat(data, &st) && S_ISDIR(st.st_mode) ? load_folder(data, m, resize, limit, &e)
	    : load_files(data, labels, nq_model_input_count(m), limit, &e))
		goto out;
	nout = nq_model_output_count(m);
	out = malloc(nout * sizeof(*out));
	if (!out || nq_session_create(m, &s) < 0) {
		cli_error("eval", "%s", nq_last_error());
		goto out;
	}
	t0 = now();
	for (size_t i = 0; i < e.count; i++) {
		uint32_t idx[5];
		unsigned int k = nout < 5 ? (unsigned int)nout : 5;

		if (nq_session_run(s, e.x + i * e.item, out, &used) < 0) {
			if (tty)
				fputc('\n', stderr);
			cli_error("eval", "input %zu: %s", i, nq_last_error());
			goto out;
		}
		cli_top_k(out, nout, k, idx);
		top1 += idx[0] == e.labels[i];
		for (unsigned int j = 0; j < k; j++)
			top5 += idx[j] == e.labels[i];
		if (tty && (i % 50 == 0 || i + 1 == e.count))
			progress(i + 1, e.count, top1, t0);
	}
	secs = now() - t0;
	degraded = used >= 0 && (used & NQ_LEVEL_DEGRADED);
	used &= NQ_LEVEL_MASK;
	if (tty)
		fputc('\n', stderr);
	if (json) {
		printf("{\"model\": ");
		cli_json_str(stdout, model);
		printf(", \"data\": ");
		cli_json_str(stdout, data);
		printf(", \"level\": %d, \"bits\": %d, \"isa\": \"%s\", \"count\": %zu, "
		       "\"top1\": %.6f, \"top5\": %.6f, \"seconds\": %.3f, \"degraded\": %s}\n",
		       used, nq_model_level_bits(m, (unsigned int)used), nq_model_isa(m), e.count,
		       e.count ? (double)top1 / e.count : 0, e.count ? (double)top5 / e.count : 0,
		       secs, degraded ? "true" : "false");
	} else {
		printf("%s: level %d (%d-bit weights%s), %zu inputs\n", model, used,
		       nq_model_level_bits(m, (unsigned int)used),
		       degraded ? "; some layers lower under the budget" : "", e.count);
		printf("  top-1 %.2f%%  top-5 %.2f%%  (%.1f ms per input, %s kernels)\n",
		       e.count ? 100.0 * top1 / e.count : 0, e.count ? 100.0 * top5 / e.count : 0,
		       e.count ? 1e3 * secs / e.count : 0, nq_model_isa(m));
	}
	rc = 0;
out:
	free(out);
	set_free(&e);
	nq_session_destroy(s);
	nq_model_close(m);
	return rc;
}

const struct nq_verb nq_verb_eval = {
	.name = "eval",
	.summary = "top-1/top-5 accuracy of a model over a labelled set at one level",
	.run = run,
	.usage = usage,
};
