// SPDX-License-Identifier: MIT
/*
 * IDX and .npy readers, the .npy writer and the Fashion-MNIST loader.
 *
 * The Fashion-MNIST facts below were computed independently in Python
 * (gzip + numpy on /usr/share/datasets/fashion-mnist), not with this code:
 *	labels t10k: 1000 per class; first ten 9 2 1 1 6 1 4 6 5 7
 *	t10k image 0: byte sum 33456, pixel (14, 14) = 110, mean of x/255 in
 *	float32 0.167346943, sum of byte * (i % 251 + 1) = 3698275
 *	t10k image 9999: weighted sum 3054134, label 5
 *	all t10k bytes: sum 573469082
 *	train labels: 6000 per class, first five 9 0 0 3 0; image 0 byte sum 76247
 * The .npy fixtures are the exact bytes numpy 1.24 writes for the commented
 * calls.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "dataset.h"
#include "nq_error.h"
#include "nq_test.h"

/* np.save(np.arange(6, dtype='<f4').reshape(2, 3) / 4 - 0.5) */
static const char npy_v1_f32[] =
	"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape'"
	": (2, 3), }                                                          "
	"\x0a"
	"\x00\x00\x00\xbf\x00\x00\x80\xbe\x00\x00\x00\x00\x00\x00\x80>\x00\x00"
	"\x00\x3f\x00\x00@\x3f"
	;

/* format.write_array(np.array([-1, 2**40, 7], '<i8'), version=(2, 0)) */
static const char npy_v2_i8[] =
	"\x93NUMPY\x02\x00t\x00\x00\x00{'descr': '<i8', 'fortran_order': False,"
	" 'shape': (3,), }                                                     "
	"     \x0a"
	"\xff\xff\xff\xff\xff\xff\xff\xff\x00\x00\x00\x00\x00\x01\x00\x00\x07"
	"\x00\x00\x00\x00\x00\x00\x00"
	;

/* format.write_array(np.array([[1, 2], [3, 255]], '|u1'), version=(3, 0)) */
static const char npy_v3_u8[] =
	"\x93NUMPY\x03\x00t\x00\x00\x00{'descr': '|u1', 'fortran_order': False,"
	" 'shape': (2, 2), }                                                   "
	"     \x0a"
	"\x01\x02\x03\xff"
	;

/* np.save(np.array([1, -2, 65536], '>i4')) */
static const char npy_be_i4[] =
	"\x93NUMPY\x01\x00v\x00{'descr': '>i4', 'fortran_order': False, 'shape'"
	": (3,), }                                                            "
	"\x0a"
	"\x00\x00\x00\x01\xff\xff\xff\xfe\x00\x01\x00\x00"
	;

/* np.save(np.asfortranarray(np.arange(6, dtype='<f4').reshape(2, 3))) */
static const char npy_fortran[] =
	"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': True, 'shape':"
	" (2, 3), }                                                           "
	"\x0a"
	"\x00\x00\x00\x00\x00\x00@@\x00\x00\x80\x3f\x00\x00\x80@\x00\x00\x00@"
	"\x00\x00\xa0@"
	;

/* np.save(np.array(3.5, '<f8')) */
static const char npy_scalar[] =
	"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape'"
	": (), }                                                              "
	"\x0a"
	"\x00\x00\x00\x00\x00\x00\x0c@"
	;

/* ---------------------------------------------------------------- helpers */

static const char *tmp_path(const char *name)
{
	static char buf[4][256];
	static int next;
	char *p = buf[next++ & 3];

	snprintf(p, sizeof(buf[0]), "%s/%s", nq_test_tmpdir(), name);
	return p;
}

static const char *write_file(const char *name, const void *data, size_t len)
{
	const char *path = tmp_path(name);
	FILE *f = fopen(path, "wb");

	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(data, 1, len, f), len);
	ck_assert_int_eq(fclose(f), 0);
	return path;
}

static const char *write_gz(const char *name, const void *data, size_t len)
{
	const char *path = tmp_path(name);
	gzFile gz = gzopen(path, "wb");

	ck_assert_ptr_nonnull(gz);
	ck_assert_int_eq(gzwrite(gz, data, (unsigned int)len), (int)len);
	ck_assert_int_eq(gzclose(gz), Z_OK);
	return path;
}

static long file_size(const char *path)
{
	struct stat st;

	ck_assert_int_eq(stat(path, &st), 0);
	return (long)st.st_size;
}

/* An IDX image of rank 2, 3 x 4, bytes 0..11 * 20 */
static size_t small_idx(unsigned char *buf)
{
	static const unsigned char head[] = { 0, 0, 0x08, 2, 0, 0, 0, 3, 0, 0, 0, 4 };

	memcpy(buf, head, sizeof(head));
	for (int i = 0; i < 12; i++)
		buf[sizeof(head) + i] = (unsigned char)(i * 20);
	return sizeof(head) + 12;
}

#define ck_assert_error(call, want_err, substr)                                       \
	do {                                                                          \
		int _r = (call);                                                      \
		ck_assert_msg(_r == (want_err), "%s returned %d (%s), expected %d",   \
			      #call, _r, nq_last_error(), (want_err));                \
		ck_assert_msg(strstr(nq_last_error(), (substr)) != NULL,              \
			      "message '%s' lacks '%s'", nq_last_error(), (substr));  \
	} while (0)

/* ------------------------------------------------------ Fashion-MNIST */

static int load_or_skip(const char *split, size_t limit, struct nq_dataset *ds)
{
	int err = nq_dataset_load("fashion-mnist", split, limit, ds);

	if (err == -ENOENT)
		return err;
	ck_assert_msg(err == 0, "load %s: %d %s", split, err, nq_last_error());
	return 0;
}

START_TEST(test_fashion_mnist_test_set_facts)
{
	static const uint8_t first_labels[10] = { 9, 2, 1, 1, 6, 1, 4, 6, 5, 7 };
	struct nq_dataset ds;
	size_t hist[10] = { 0 }, bad = 0;
	uint64_t total = 0, sum0 = 0, w0 = 0, wlast = 0;
	double mean0 = 0;
	const float *last;

	if (load_or_skip("t10k", 0, &ds))
		NQ_SKIP("Fashion-MNIST not installed (%s)", nq_last_error());
	ck_assert_uint_eq(ds.count, 10000);
	ck_assert_uint_eq(ds.channels, 1);
	ck_assert_uint_eq(ds.height, 28);
	ck_assert_uint_eq(ds.width, 28);
	ck_assert_uint_eq(ds.classes, 10);
	for (size_t i = 0; i < ds.count; i++)
		hist[ds.labels[i]]++;
	for (int c = 0; c < 10; c++)
		ck_assert_uint_eq(hist[c], 1000);
	ck_assert_mem_eq(ds.labels, first_labels, 10);
	ck_assert_uint_eq(ds.labels[9999], 5);

	/* every pixel is exactly byte / 255 in float32 (one assert: Check
	 * writes to a pipe for each one that passes) */
	for (size_t i = 0; i < ds.count * 784; i++) {
		float v = ds.images[i];
		long b = lrintf(v * 255.0f);

		if (!(v >= 0.0f && v <= 1.0f) || v != (float)b / 255.0f)
			bad++;
		total += (uint64_t)b;
	}
	ck_assert_uint_eq(bad, 0);
	ck_assert_uint_eq(total, 573469082);

	for (int i = 0; i < 784; i++) {
		long b = lrintf(ds.images[i] * 255.0f);

		sum0 += (uint64_t)b;
		w0 += (uint64_t)b * (uint64_t)(i % 251 + 1);
		mean0 += ds.images[i];
	}
	ck_assert_uint_eq(sum0, 33456);
	ck_assert_uint_eq(w0, 3698275);
	ck_assert_double_eq_tol(mean0 / 784, 0.167346943, 1e-7);
	ck_assert_float_eq(ds.images[14 * 28 + 14], 110.0f / 255.0f);

	last = ds.images + 9999 * 784;
	for (int i = 0; i < 784; i++)
		wlast += (uint64_t)lrintf(last[i] * 255.0f) * (uint64_t)(i % 251 + 1);
	ck_assert_uint_eq(wlast, 3054134);
	nq_dataset_free(&ds);
	ck_assert_ptr_null(ds.images);
}
END_TEST

START_TEST(test_fashion_mnist_train_limit_and_labels)
{
	static const uint8_t first_labels[5] = { 9, 0, 0, 3, 0 };
	struct nq_dataset ds;
	struct nq_array lab;
	char path[512];
	size_t hist[10] = { 0 };
	uint64_t sum0 = 0;
	const uint8_t *l;

	if (load_or_skip("train", 100, &ds))
		NQ_SKIP("Fashion-MNIST not installed (%s)", nq_last_error());
	ck_assert_uint_eq(ds.count, 100);
	ck_assert_mem_eq(ds.labels, first_labels, 5);
	for (int i = 0; i < 784; i++)
		sum0 += (uint64_t)lrintf(ds.images[i] * 255.0f);
	ck_assert_uint_eq(sum0, 76247);
	nq_dataset_free(&ds);

	snprintf(path, sizeof(path), "%s/train-labels-idx1-ubyte.gz", nq_dataset_dir("fashion-mnist"));
	ck_assert_int_eq(nq_idx_read(path, &lab), 0);
	ck_assert_uint_eq(lab.dtype, NQ_DT_U8);
	ck_assert_uint_eq(lab.ndim, 1);
	ck_assert_uint_eq(lab.dims[0], 60000);
	ck_assert_uint_eq(lab.count, 60000);
	l = lab.data;
	for (size_t i = 0; i < lab.count; i++)
		hist[l[i]]++;
	for (int c = 0; c < 10; c++)
		ck_assert_uint_eq(hist[c], 6000);
	nq_array_free(&lab);
}
END_TEST

/* A two-image set in plain (uncompressed) IDX under $NQ_FASHION_MNIST_DIR */
START_TEST(test_dataset_dir_override_and_bad_names)
{
	static const unsigned char labels[] = { 0, 0, 8, 1, 0, 0, 0, 2, 3, 7 };
	unsigned char images[16 + 2 * 4];
	static const unsigned char ihead[] = { 0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2 };
	static const unsigned char bad_labels[] = { 0, 0, 8, 1, 0, 0, 0, 2, 3, 10 };
	struct nq_dataset ds;

	memcpy(images, ihead, sizeof(ihead));
	for (int i = 0; i < 8; i++)
		images[16 + i] = (unsigned char)(i * 36);
	write_file("t10k-images-idx3-ubyte", images, sizeof(images));
	write_file("t10k-labels-idx1-ubyte", labels, sizeof(labels));
	setenv("NQ_FASHION_MNIST_DIR", nq_test_tmpdir(), 1);
	ck_assert_str_eq(nq_dataset_dir("fashion-mnist"), nq_test_tmpdir());

	ck_assert_int_eq(nq_dataset_load("fashion-mnist", "test", 0, &ds), 0);
	ck_assert_uint_eq(ds.count, 2);
	ck_assert_uint_eq(ds.height, 2);
	ck_assert_uint_eq(ds.width, 2);
	ck_assert_uint_eq(ds.labels[0], 3);
	ck_assert_uint_eq(ds.labels[1], 7);
	ck_assert_float_eq(ds.images[7], 252.0f / 255.0f);
	ck_assert_float_eq(ds.images[0], 0.0f);
	nq_dataset_free(&ds);

	ck_assert_error(nq_dataset_load("fashion-mnist", "train", 0, &ds), -ENOENT,
			"NQ_FASHION_MNIST_DIR");
	ck_assert_ptr_null(ds.images);
	ck_assert_error(nq_dataset_load("cifar-10", "train", 0, &ds), -EINVAL,
			"unknown dataset 'cifar-10'");
	ck_assert_error(nq_dataset_load("fashion-mnist", "validation", 0, &ds), -EINVAL,
			"unknown split 'validation'");
	ck_assert_ptr_null(nq_dataset_dir("mnist"));

	write_file("t10k-labels-idx1-ubyte", bad_labels, sizeof(bad_labels));
	ck_assert_error(nq_dataset_load("fashion-mnist", "t10k", 0, &ds), -EBADMSG,
			"label 1 is 10, outside 0..9");
	ck_assert_ptr_null(ds.images);
	write_file("t10k-labels-idx1-ubyte", labels, sizeof(labels) - 1);
	ck_assert_error(nq_dataset_load("fashion-mnist", "t10k", 0, &ds), -EBADMSG,
			"truncated IDX data");
	unsetenv("NQ_FASHION_MNIST_DIR");
}
END_TEST

/* ------------------------------------------------------------------ IDX */

START_TEST(test_idx_plain_and_gzip_read_alike)
{
	unsigned char buf[64];
	size_t len = small_idx(buf);
	struct nq_array a, b;
	const char *plain = write_file("small.idx", buf, len);
	const char *gz = write_gz("small.idx.gz", buf, len);

	ck_assert_int_lt(file_size(gz), 64);	/* really compressed: gzip header is there */
	ck_assert_int_eq(nq_idx_read(plain, &a), 0);
	ck_assert_int_eq(nq_idx_read(gz, &b), 0);
	ck_assert_uint_eq(a.ndim, 2);
	ck_assert_uint_eq(a.dims[0], 3);
	ck_assert_uint_eq(a.dims[1], 4);
	ck_assert_uint_eq(a.count, 12);
	ck_assert_uint_eq(((uint8_t *)a.data)[11], 220);
	ck_assert_uint_eq(b.count, a.count);
	ck_assert_mem_eq(a.data, b.data, 12);
	nq_array_free(&a);
	nq_array_free(&b);
	ck_assert_ptr_null(a.data);
}
END_TEST

struct bad_idx {
	const char *name;
	unsigned char bytes[40];
	size_t len;
	int err;
	const char *msg;
};

static const struct bad_idx bad_idx[] = {
	{ "empty", { 0 }, 0, -EBADMSG, "truncated IDX header: 0 of 4 bytes" },
	{ "short header", { 0, 0, 8 }, 3, -EBADMSG, "truncated IDX header: 3 of 4 bytes" },
	{ "bad magic", { 0x1f, 0x00, 8, 1, 0, 0, 0, 1, 9 }, 9, -EBADMSG, "bad IDX magic 1f 00" },
	{ "float data", { 0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0 }, 12, -ENOTSUP,
	  "IDX data type 0x0d (float) is not unsigned byte" },
	{ "rank 0", { 0, 0, 8, 0 }, 4, -EBADMSG, "IDX rank 0 outside 1..8" },
	{ "rank 200", { 0, 0, 8, 200, 0, 0, 0, 1 }, 8, -EBADMSG, "IDX rank 200 outside" },
	{ "short dims", { 0, 0, 8, 3, 0, 0, 0, 1, 0, 0 }, 10, -EBADMSG, "6 of 12 dimension bytes" },
	{ "zero dim", { 0, 0, 8, 2, 0, 0, 0, 4, 0, 0, 0, 0 }, 12, -EBADMSG, "IDX dimension 1 is 0" },
	{ "overflowing dims",
	  { 0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1 },
	  17, -EOVERFLOW, "IDX dimensions overflow" },
	{ "huge dims, no data", { 0, 0, 8, 2, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff },
	  12, -EBADMSG, "dims promise 9223372030412324865 bytes, file has 0" },
	{ "truncated data", { 0, 0, 8, 1, 0, 0, 0, 5, 1, 2, 3 }, 11, -EBADMSG,
	  "truncated IDX data: dims promise 5 bytes, file has 3" },
	{ "trailing data", { 0, 0, 8, 1, 0, 0, 0, 2, 1, 2, 3 }, 11, -EBADMSG,
	  "trailing bytes after the 2 data bytes" },
};

START_TEST(test_idx_rejects_malformed)
{
	const struct bad_idx *t = &bad_idx[_i];
	struct nq_array a;
	char name[64];
	const char *path;

	/* the same verdict whether the bytes arrive plain or gzip-compressed */
	for (int gz = 0; gz < 2; gz++) {
		snprintf(name, sizeof(name), "bad-%d%s", _i, gz ? ".gz" : "");
		path = gz ? write_gz(name, t->bytes, t->len) : write_file(name, t->bytes, t->len);
		nq_clear_error();
		ck_assert_error(nq_idx_read(path, &a), t->err, t->msg);
		ck_assert_msg(strstr(nq_last_error(), path) != NULL, "%s: message names no file", t->name);
		ck_assert_ptr_null(a.data);
	}
}
END_TEST

START_TEST(test_idx_rejects_broken_gzip)
{
	unsigned char raw[4096], *gzbytes;
	struct nq_array a;
	const char *path;
	uint32_t x = 2463534242u;
	long len;
	FILE *f;

	/* rank 1, 4080 bytes of xorshift noise so gzip cannot shrink it away */
	memcpy(raw, (unsigned char[]){ 0, 0, 8, 1, 0, 0, 0x0f, 0xf0 }, 8);
	for (int i = 8; i < 4088; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		raw[i] = (unsigned char)x;
	}
	path = write_gz("whole.gz", raw, 4088);
	len = file_size(path);
	ck_assert_int_gt(len, 1000);
	gzbytes = malloc((size_t)len);
	f = fopen(path, "rb");
	ck_assert_uint_eq(fread(gzbytes, 1, (size_t)len, f), (size_t)len);
	fclose(f);
	ck_assert_int_eq(nq_idx_read(path, &a), 0);
	ck_assert_uint_eq(a.count, 4080);
	ck_assert_mem_eq(a.data, raw + 8, 4080);
	nq_array_free(&a);

	path = write_file("cut.gz", gzbytes, (size_t)len / 2);
	ck_assert_error(nq_idx_read(path, &a), -EBADMSG, "gzip stream is truncated or corrupt");
	ck_assert_ptr_null(a.data);

	gzbytes[len - 6] ^= 0x55;	/* CRC-32 in the trailer */
	path = write_file("crc.gz", gzbytes, (size_t)len);
	ck_assert_error(nq_idx_read(path, &a), -EBADMSG, "gzip");
	ck_assert_ptr_null(a.data);

	ck_assert_error(nq_idx_read(tmp_path("does-not-exist"), &a), -ENOENT, "cannot open");
	free(gzbytes);
}
END_TEST

/* ------------------------------------------------------------------ npy */

START_TEST(test_npy_reads_numpy_files)
{
	struct nq_array a;
	const float *f;
	const int64_t *q;
	const int32_t *w;

	ck_assert_int_eq(nq_npy_parse(npy_v1_f32, sizeof(npy_v1_f32) - 1, "v1", &a), 0);
	ck_assert_uint_eq(a.dtype, NQ_DT_F32);
	ck_assert_uint_eq(a.ndim, 2);
	ck_assert_uint_eq(a.dims[0], 2);
	ck_assert_uint_eq(a.dims[1], 3);
	ck_assert_uint_eq(a.count, 6);
	f = a.data;
	for (int i = 0; i < 6; i++)
		ck_assert_float_eq(f[i], i / 4.0f - 0.5f);
	nq_array_free(&a);

	ck_assert_int_eq(nq_npy_parse(npy_v2_i8, sizeof(npy_v2_i8) - 1, "v2", &a), 0);
	ck_assert_uint_eq(a.dtype, NQ_DT_I64);
	ck_assert_uint_eq(a.ndim, 1);
	ck_assert_uint_eq(a.dims[0], 3);
	q = a.data;
	ck_assert_int_eq(q[0], -1);
	ck_assert_int_eq(q[1], (int64_t)1 << 40);
	ck_assert_int_eq(q[2], 7);
	nq_array_free(&a);

	ck_assert_int_eq(nq_npy_parse(npy_v3_u8, sizeof(npy_v3_u8) - 1, "v3", &a), 0);
	ck_assert_uint_eq(a.dtype, NQ_DT_U8);
	ck_assert_uint_eq(a.count, 4);
	ck_assert_uint_eq(((uint8_t *)a.data)[3], 255);
	nq_array_free(&a);

	ck_assert_int_eq(nq_npy_parse(npy_be_i4, sizeof(npy_be_i4) - 1, "be", &a), 0);
	ck_assert_uint_eq(a.dtype, NQ_DT_I32);
	w = a.data;
	ck_assert_int_eq(w[0], 1);
	ck_assert_int_eq(w[1], -2);
	ck_assert_int_eq(w[2], 65536);
	nq_array_free(&a);

	ck_assert_int_eq(nq_npy_parse(npy_scalar, sizeof(npy_scalar) - 1, "0-d", &a), 0);
	ck_assert_uint_eq(a.dtype, NQ_DT_F64);
	ck_assert_uint_eq(a.ndim, 0);
	ck_assert_uint_eq(a.count, 1);
	ck_assert_double_eq(*(double *)a.data, 3.5);
	nq_array_free(&a);

	/* and through a file */
	ck_assert_int_eq(nq_npy_read(write_file("v1.npy", npy_v1_f32, sizeof(npy_v1_f32) - 1), &a), 0);
	ck_assert_float_eq(((float *)a.data)[5], 0.75f);
	nq_array_free(&a);
}
END_TEST

START_TEST(test_npy_rejects_fortran_order)
{
	struct nq_array a;

	ck_assert_error(nq_npy_parse(npy_fortran, sizeof(npy_fortran) - 1, "f.npy", &a), -ENOTSUP,
			"'f.npy': .npy array is in Fortran order (fortran_order: True)");
	ck_assert_ptr_null(a.data);
}
END_TEST

START_TEST(test_npy_write_read_round_trip)
{
	uint64_t dims[3] = { 2, 3, 4 };
	float v[24];
	int64_t q[5] = { INT64_MIN, -1, 0, 1, INT64_MAX };
	uint64_t d1 = 5;
	struct nq_array a;
	const char *path = tmp_path("rt.npy");
	char head[128];
	FILE *f;

	for (int i = 0; i < 24; i++)
		v[i] = i * 0.5f - 3.0f;
	ck_assert_int_eq(nq_npy_write_f32(path, 3, dims, v), 0);
	/* numpy's layout: header padded so data starts at a multiple of 64 */
	ck_assert_int_eq(file_size(path), 128 + 24 * 4);
	f = fopen(path, "rb");
	ck_assert_uint_eq(fread(head, 1, sizeof(head), f), sizeof(head));
	fclose(f);
	ck_assert_mem_eq(head, "\x93NUMPY\x01\x00\x76\x00", 10);
	ck_assert_mem_eq(head + 10, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4), }", 62);
	ck_assert_int_eq(head[127], '\n');
	ck_assert_int_eq(nq_npy_read(path, &a), 0);
	ck_assert_uint_eq(a.dtype, NQ_DT_F32);
	ck_assert_uint_eq(a.ndim, 3);
	ck_assert_uint_eq(a.dims[2], 4);
	ck_assert_uint_eq(a.count, 24);
	ck_assert_mem_eq(a.data, v, sizeof(v));
	nq_array_free(&a);

	/* 1-d shapes are written as numpy writes them: "(5,)" */
	ck_assert_int_eq(nq_npy_write(path, NQ_DT_I64, 1, &d1, q), 0);
	ck_assert_int_eq(nq_npy_read(path, &a), 0);
	ck_assert_uint_eq(a.dtype, NQ_DT_I64);
	ck_assert_uint_eq(a.ndim, 1);
	ck_assert_mem_eq(a.data, q, sizeof(q));
	nq_array_free(&a);

	/* 0-d */
	ck_assert_int_eq(nq_npy_write_f32(path, 0, NULL, v + 7), 0);
	ck_assert_int_eq(nq_npy_read(path, &a), 0);
	ck_assert_uint_eq(a.ndim, 0);
	ck_assert_uint_eq(a.count, 1);
	ck_assert_float_eq(*(float *)a.data, 0.5f);
	nq_array_free(&a);

	ck_assert_error(nq_npy_write_f32(tmp_path("no/such/dir.npy"), 3, dims, v), -ENOENT,
			"cannot create");
	/* nothing left behind: only rt.npy, no temporary files */
	ck_assert_int_eq(access(tmp_path("rt.npy.tmp"), F_OK), -1);
}
END_TEST

struct bad_npy {
	const char *name;
	const char *header;	/* NULL: use raw */
	int version;
	size_t data;		/* bytes of zero data after the header */
	int err;
	const char *msg;
};

#define H(descr, shape) "{'descr': '" descr "', 'fortran_order': False, 'shape': " shape ", }"

static const struct bad_npy bad_npy[] = {
	{ "unsupported version", H("<f4", "(1,)"), 4, 4, -ENOTSUP,
	  ".npy format version 4.0 is not supported" },
	{ "unknown dtype", H("<c8", "(1,)"), 1, 8, -ENOTSUP, ".npy dtype '<c8' is not supported" },
	{ "no byte order", H("f4", "(1,)"), 1, 4, -EBADMSG, "has no byte order" },
	{ "pipe on f4", H("|f4", "(1,)"), 1, 4, -EBADMSG, "'|' (no byte order) on a multi-byte" },
	{ "structured", "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", 1, 4,
	  -ENOTSUP, "structured dtypes" },
	{ "missing shape", "{'descr': '<f4', 'fortran_order': False, }", 1, 4, -EBADMSG,
	  "header has no 'shape'" },
	{ "missing descr", "{'fortran_order': False, 'shape': (1,), }", 1, 4, -EBADMSG,
	  "header has no 'descr'" },
	{ "unknown key", "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}", 1, 4,
	  -EBADMSG, "unknown key 'x'" },
	{ "repeated key", "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}",
	  1, 4, -EBADMSG, "repeats the key 'descr'" },
	{ "not a dict", "['descr', '<f4']", 1, 4, -EBADMSG, "'[' where '{' is expected" },
	{ "unterminated", "{'descr': '<f4", 1, 4, -EBADMSG, "unterminated string" },
	{ "unclosed", "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)", 1, 4, -EBADMSG,
	  "header ends where '}' is expected" },
	{ "text after dict", H("<f4", "(1,)") " x", 1, 4, -EBADMSG, "text after the closing '}'" },
	{ "bad bool", "{'descr': '<f4', 'fortran_order': 0, 'shape': (1,), }", 1, 4, -EBADMSG,
	  "'fortran_order' is not True or False" },
	{ "negative dim", H("<f4", "(-1,)"), 1, 4, -EBADMSG, "dimension 0 is not a non-negative" },
	{ "not a tuple", H("<f4", "(5)"), 1, 20, -EBADMSG, "shape (5) is not a tuple" },
	{ "dim overflows 64 bits", H("<f4", "(99999999999999999999,)"), 1, 4, -EOVERFLOW,
	  "dimension 0 overflows 64 bits" },
	{ "count overflows", H("<f4", "(4294967296, 4294967296, 2)"), 1, 4, -EOVERFLOW,
	  "element count exceeds SIZE_MAX at dimension 1" },
	{ "bytes overflow", H("<f8", "(4611686018427387904,)"), 1, 4, -EOVERFLOW,
	  "data size overflows" },
	{ "too many dims", H("<f4", "(1, 1, 1, 1, 1, 1, 1, 1, 1)"), 1, 4, -E2BIG,
	  "more than 8 dimensions" },
	{ "truncated data", H("<f4", "(2, 3)"), 1, 20, -EBADMSG,
	  "truncated .npy data: shape needs 24 bytes, file has 20" },
	{ "trailing data", H("<i4", "(2,)"), 3, 9, -EBADMSG, "1 trailing bytes after the .npy data" },
	{ "bad magic", NULL, 1, 0, -EBADMSG, "bad .npy magic" },
	{ "short preamble", NULL, 1, 0, -EBADMSG, "truncated .npy preamble: 7 of at least 10" },
	{ "header_len past end", NULL, 2, 0, -EBADMSG,
	  "truncated .npy header: header_len 4096, only 2 bytes follow" },
};

START_TEST(test_npy_rejects_malformed)
{
	const struct bad_npy *t = &bad_npy[_i];
	unsigned char buf[512] = { 0 };
	size_t len, hlen, pre = t->version == 1 ? 10 : 12;
	struct nq_array a;

	memcpy(buf, "\x93NUMPY", 6);
	buf[6] = (unsigned char)t->version;
	if (t->header) {
		hlen = strlen(t->header);
		memcpy(buf + pre, t->header, hlen);
		buf[8] = (unsigned char)hlen;
		len = pre + hlen + t->data;
	} else if (!strcmp(t->name, "bad magic")) {
		buf[1] = 'n';
		len = 64;
	} else if (!strcmp(t->name, "short preamble")) {
		len = 7;
	} else {
		buf[9] = 0x10;		/* header_len 4096, little-endian u32 */
		len = 14;
	}
	ck_assert_error(nq_npy_parse(buf, len, t->name, &a), t->err, t->msg);
	ck_assert_ptr_null(a.data);
	/* the same verdict through a file, naming the file */
	ck_assert_error(nq_npy_read(write_file("bad.npy", buf, len), &a), t->err, t->msg);
	ck_assert_msg(strstr(nq_last_error(), "bad.npy") != NULL, "no file name: %s", nq_last_error());
}
END_TEST

static Suite *dataset_suite(void)
{
	Suite *s = suite_create("dataset");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_fashion_mnist_test_set_facts);
	tcase_add_test(tc, test_fashion_mnist_train_limit_and_labels);
	tcase_add_test(tc, test_dataset_dir_override_and_bad_names);
	tcase_add_test(tc, test_idx_plain_and_gzip_read_alike);
	tcase_add_loop_test(tc, test_idx_rejects_malformed, 0, sizeof(bad_idx) / sizeof(bad_idx[0]));
	tcase_add_test(tc, test_idx_rejects_broken_gzip);
	tcase_add_test(tc, test_npy_reads_numpy_files);
	tcase_add_test(tc, test_npy_rejects_fortran_order);
	tcase_add_test(tc, test_npy_write_read_round_trip);
	tcase_add_loop_test(tc, test_npy_rejects_malformed, 0, sizeof(bad_npy) / sizeof(bad_npy[0]));
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return nq_test_run(dataset_suite());
}
