// SPDX-License-Identifier: MIT
/*
 * classify — the smallest complete libnestquant program: open a .nq model,
 * list its precision levels, create a session, classify one image at the
 * level you ask for (or every level), print the top-1 class, clean up.
 *
 *	classify MODEL.nq IMAGE [BITS]
 *
 * IMAGE is either a .npy file holding exactly one input (float32 or uint8,
 * in the model's input layout, raw values: the model's own preprocessing
 * scales them), or fashion-mnist:N for test image N of the Fashion-MNIST
 * set (read with `gzip -dc` from $NQ_FASHION_MNIST_DIR, else
 * /usr/share/datasets/fashion-mnist).
 *
 * Build against an installed libnestquant:
 *	cc classify.c -o classify $(pkg-config --cflags --libs nestquant)
 * Only <nestquant.h> and the C library are used.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nestquant.h>

static const char *const fashion_classes[10] = {
	"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
	"Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
};

/*
 * A minimal .npy reader: version 1.x or 2.x, C order, little-endian
 * float32 ('<f4') or uint8 ('|u1'), exactly `count` elements in any shape.
 */
static int read_npy(const char *path, float *out, size_t count)
{
	unsigned char pre[12];
	char *hdr = NULL;
	size_t hlen, got;
	int is_u8, err = -EINVAL;
	FILE *f = fopen(path, "rb");

	if (!f) {
		fprintf(stderr, "classify: %s: %s\n", path, strerror(errno));
		return -errno;
	}
	if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6))
		goto bad;
	if (pre[6] == 1) {
		hlen = pre[8] | (size_t)pre[9] << 8;
	} else if (pre[6] == 2) {
		if (fread(pre + 10, 1, 2, f) != 2)
			goto bad;
		hlen = pre[8] | (size_t)pre[9] << 8 | (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
	} else {
		goto bad;
	}
	if (hlen > 65536 || !(hdr = calloc(1, hlen + 1)) || fread(hdr, 1, hlen, f) != hlen)
		goto bad;
	if (strstr(hdr, "'fortran_order': True"))
		goto bad;
	if (strstr(hdr, "'descr': '<f4'"))
		is_u8 = 0;
	else if (strstr(hdr, "'descr': '|u1'"))
		is_u8 = 1;
	else
		goto bad;
	if (is_u8) {
		for (got = 0; got < count; got++) {
			int c = fgetc(f);

			if (c == EOF)
				break;
			out[got] = (float)c;
		}
	} else {
		got = fread(out, sizeof(float), count, f);
	}
	if (got != count || fgetc(f) != EOF) {
		fprintf(stderr, "classify: %s: the model takes %zu values, the file holds %s\n",
			path, count, got != count ? "fewer" : "more");
		goto out;
	}
	err = 0;
	goto out;
bad:
	fprintf(stderr, "classify: %s: not a C-order float32 or uint8 .npy file\n", path);
out:
	free(hdr);
	fclose(f);
	return err;
}

/* Open `gzip -dc FILE` for a file in the Fashion-MNIST directory. */
static FILE *open_gz(const char *file)
{
	const char *dir = getenv("NQ_FASHION_MNIST_DIR");
	char cmd[4200], *p = cmd;
	const char *s;
	int n;

	if (!dir || !*dir)
		dir = "/usr/share/datasets/fashion-mnist";
	/* single-quote the path for the shell; ' becomes '\'' */
	p += snprintf(p, 32, "gzip -dc -- '");
	for (s = dir; *s && p < cmd + sizeof(cmd) - 300; s++) {
		if (*s == '\'') {
			memcpy(p, "'\\''", 4);
			p += 4;
		} else {
			*p++ = *s;
		}
	}
	n = snprintf(p, cmd + sizeof(cmd) - p, "/%s'", file);
	if (n < 0 || n >= cmd + sizeof(cmd) - p)
		return NULL;
	return popen(cmd, "r");
}

/* Skip an IDX header of `rank` dims and then `skip` bytes; 0 or -1. */
static int idx_seek(FILE *f, unsigned int rank, size_t skip)
{
	unsigned char head[4 + 4 * 3];

	if (fread(head, 1, 4 + 4 * rank, f) != 4 + 4 * rank || head[2] != 0x08 || head[3] != rank)
		return -1;
	while (skip--)
		if (fgetc(f) == EOF)
			return -1;
	return 0;
}

/* Test image `index` (28 x 28 raw pixel values) and its label. */
static int read_fashion(size_t index, float *out, size_t count, int *label)
{
	FILE *f;
	int ok;

	if (count != 28 * 28) {
		fprintf(stderr, "classify: the model takes %zu values, not one 28x28 image\n", count);
		return -EINVAL;
	}
	f = open_gz("t10k-images-idx3-ubyte.gz");
	ok = f && !idx_seek(f, 3, index * count);
	for (size_t i = 0; ok && i < count; i++) {
		int c = fgetc(f);

		ok = c != EOF;
		out[i] = (float)c;
	}
	if (f)
		pclose(f);
	f = ok ? open_gz("t10k-labels-idx1-ubyte.gz") : NULL;
	ok = f && !idx_seek(f, 1, index) && (*label = fgetc(f)) != EOF;
	if (f)
		pclose(f);
	if (!ok) {
		fprintf(stderr, "classify: cannot read Fashion-MNIST test image %zu "
			"(is dataset-fashion-mnist installed?)\n", index);
		return -ENOENT;
	}
	return 0;
}

static size_t argmax(const float *v, size_t n)
{
	size_t best = 0;

	for (size_t i = 1; i < n; i++)
		if (v[i] > v[best])
			best = i;
	return best;
}

int main(int argc, char **argv)
{
	struct nq_model *m = NULL;
	struct nq_session *s = NULL;
	float *input = NULL, *output = NULL;
	unsigned int levels, first = 0, last;
	int label = -1, used, err, rc = 1;
	size_t nin, nout;

	if (argc < 3 || argc > 4) {
		fprintf(stderr, "usage: classify MODEL.nq IMAGE.npy|fashion-mnist:N [BITS]\n");
		return 2;
	}
	err = nq_model_open(argv[1], NULL, &m);
	if (err < 0) {
		fprintf(stderr, "classify: %s\n", nq_last_error());
		return 1;
	}

	levels = nq_model_level_count(m);
	printf("%s: %u levels, kernels %s\n", argv[1], levels, nq_model_isa(m));
	for (unsigned int l = 0; l < levels; l++)
		printf("  level %u: %d-bit weights, %llu bytes of planes\n", l,
		       nq_model_level_bits(m, l), (unsigned long long)nq_model_weight_bytes(m, l));
	last = levels - 1;
	if (argc == 4) {
		err = nq_model_level_for_bits(m, (unsigned int)atoi(argv[3]));
		if (err < 0) {
			fprintf(stderr, "classify: the model has no %s-bit level\n", argv[3]);
			goto out;
		}
		first = last = (unsigned int)err;
	}

	nin = nq_model_input_count(m);
	nout = nq_model_output_count(m);
	input = calloc(nin, sizeof(float));
	output = calloc(nout, sizeof(float));
	if (!input || !output) {
		fprintf(stderr, "classify: out of memory\n");
		goto out;
	}
	if (!strncmp(argv[2], "fashion-mnist:", 14))
		err = read_fashion(strtoul(argv[2] + 14, NULL, 10), input, nin, &label);
	else
		err = read_npy(argv[2], input, nin);
	if (err < 0)
		goto out;

	err = nq_session_create(m, &s);
	if (err < 0) {
		fprintf(stderr, "classify: %s\n", nq_last_error());
		goto out;
	}
	for (unsigned int l = first; l <= last; l++) {
		size_t top;

		/* switch (pages the level's planes in), then run at it */
		err = nq_model_set_level(m, l);
		if (!err)
			err = nq_session_run(s, input, output, &used);
		if (err < 0) {
			fprintf(stderr, "classify: level %u: %s\n", l, nq_last_error());
			goto out;
		}
		top = argmax(output, nout);
		printf("level %u (%d-bit): top-1 class %zu", used & NQ_LEVEL_MASK,
		       nq_model_level_bits(m, used & NQ_LEVEL_MASK), top);
		if (label >= 0 && nout == 10)
			printf(" %s (true: %d %s)", fashion_classes[top], label, fashion_classes[label % 10]);
		printf(", score %.4f\n", output[top]);
	}
	rc = 0;
out:
	if (s)
		nq_session_destroy(s);
	nq_model_close(m);
	free(input);
	free(output);
	return rc;
}
