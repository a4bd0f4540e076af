// SPDX-License-Identifier: MIT
/*
 * Named image datasets for calibration and evaluation.  Only Fashion-MNIST
 * for now: Debian's dataset-fashion-mnist installs the four IDX files under
 * /usr/share/datasets/fashion-mnist.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dataset.h"
#include "nq_error.h"

#define FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"
#define FASHION_MNIST_CLASSES 10

const char *nq_dataset_dir(const char *name)
{
	const char *env;

	if (!name || strcmp(name, "fashion-mnist"))
		return NULL;
	env = getenv("NQ_FASHION_MNIST_DIR");
	return env && *env ? env : FASHION_MNIST_DIR;
}

void nq_dataset_free(struct nq_dataset *ds)
{
	if (!ds)
		return;
	free(ds->images);
	free(ds->labels);
	memset(ds, 0, sizeof(*ds));
}

/* DIR/SPLIT-KIND-ubyte.gz, or without .gz when only the plain file exists. */
static int idx_path(char *buf, size_t size, const char *dir, const char *split, const char *kind)
{
	int n = snprintf(buf, size, "%s/%s-%s-ubyte.gz", dir, split, kind);

	if (n < 0 || (size_t)n >= size)
		return nq_fail(-ENAMETOOLONG, "dataset directory name too long: '%s'", dir);
	if (access(buf, F_OK) == 0)
		return 0;
	buf[n - 3] = '\0';
	if (access(buf, F_OK) == 0)
		return 0;
	return nq_fail(-ENOENT, "'%s/%s-%s-ubyte[.gz]' not found (install dataset-fashion-mnist or set NQ_FASHION_MNIST_DIR)",
		       dir, split, kind);
}

int nq_dataset_load(const char *name, const char *split, size_t limit, struct nq_dataset *ds)
{
	struct nq_array img = { 0 }, lab = { 0 };
	char path[PATH_MAX];
	const char *dir = nq_dataset_dir(name);
	const uint8_t *px;
	size_t n, pixels, bytes;
	int err;

	memset(ds, 0, sizeof(*ds));
	if (!dir)
		return nq_fail(-EINVAL, "unknown dataset '%s' (known: fashion-mnist)", name ? name : "(null)");
	if (split && !strcmp(split, "test"))
		split = "t10k";
	if (!split || (strcmp(split, "train") && strcmp(split, "t10k")))
		return nq_fail(-EINVAL, "dataset '%s': unknown split '%s' (train, t10k or test)",
			       name, split ? split : "(null)");

	err = idx_path(path, sizeof(path), dir, split, "images-idx3");
	if (err)
		return err;
	err = nq_idx_read(path, &img);
	if (err)
		return err;
	if (img.ndim != 3) {
		err = nq_fail(-EBADMSG, "'%s': images have rank %u, expected 3 (N, rows, cols)",
			      path, img.ndim);
		goto out;
	}
	err = idx_path(path, sizeof(path), dir, split, "labels-idx1");
	if (err)
		goto out;
	err = nq_idx_read(path, &lab);
	if (err)
		goto out;
	if (lab.ndim != 1 || lab.dims[0] != img.dims[0]) {
		err = nq_fail(-EBADMSG, "'%s': %llu labels (rank %u) for %llu images",
			      path, (unsigned long long)lab.dims[0], lab.ndim,
			      (unsigned long long)img.dims[0]);
		goto out;
	}

	n = img.dims[0];
	if (limit && limit < n)
		n = limit;
	pixels = img.dims[1] * img.dims[2];	/* fits: count did not overflow */
	if (__builtin_mul_overflow(n * pixels, sizeof(float), &bytes)) {
		err = nq_fail(-EOVERFLOW, "dataset '%s': %zu images overflow SIZE_MAX as floats", name, n);
		goto out;
	}
	ds->images = malloc(bytes);
	ds->labels = malloc(n);
	if (!ds->images || !ds->labels) {
		err = nq_fail(-ENOMEM, "dataset '%s': no memory for %zu images", name, n);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		const uint8_t *l = lab.data;

		if (l[i] >= FASHION_MNIST_CLASSES) {
			err = nq_fail(-EBADMSG, "'%s': label %zu is %u, outside 0..%d",
				      path, i, l[i], FASHION_MNIST_CLASSES - 1);
			goto out;
		}
		ds->labels[i] = l[i];
	}
	px = img.data;
	for (size_t i = 0; i < n * pixels; i++)
		ds->images[i] = (float)px[i] / 255.0f;
	ds->count = n;
	ds->channels = 1;
	ds->height = (unsigned int)img.dims[1];
	ds->width = (unsigned int)img.dims[2];
	ds->classes = FASHION_MNIST_CLASSES;
	err = 0;
out:
	if (err)
		nq_dataset_free(ds);
	nq_array_free(&img);
	nq_array_free(&lab);
	return err;
}
