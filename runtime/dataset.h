/* SPDX-License-Identifier: MIT */
/*
 * Tensors and datasets from files: IDX (the MNIST family, plain or gzip) and
 * NumPy .npy, plus the Fashion-MNIST loader used for calibration and for the
 * accuracy checks.  Internal to libnestquant and the CLI.
 *
 * Every call returns 0 or a negative errno; the reason, naming the file and
 * the field at fault, is in nq_last_error().  Inputs are untrusted: every
 * count and size is checked against the bytes that are really there (and
 * against SIZE_MAX) before anything is allocated or copied.  On failure the
 * output structure is left empty, so freeing it is always safe.
 */
#ifndef NQ_DATASET_H
#define NQ_DATASET_H

#include <stddef.h>
#include <stdint.h>

/* Element types of an nq_array (data is always in host byte order). */
enum nq_dtype {
	NQ_DT_INVALID = 0,
	NQ_DT_F32,
	NQ_DT_F64,
	NQ_DT_U8,
	NQ_DT_I8,
	NQ_DT_I16,
	NQ_DT_I32,
	NQ_DT_I64,
};

#define NQ_ARRAY_MAX_DIMS 8

/* A dense C-order array that owns its data (malloc'd). */
struct nq_array {
	enum nq_dtype dtype;
	unsigned int ndim;
	uint64_t dims[NQ_ARRAY_MAX_DIMS];
	size_t count;		/* product of dims */
	void *data;		/* count * nq_dtype_size(dtype) bytes */
};

/* Size in bytes of one element, 0 for an unknown type. */
size_t nq_dtype_size(enum nq_dtype dt);
/* "f32", "u8", ... ("invalid" for an unknown type). */
const char *nq_dtype_name(enum nq_dtype dt);

void nq_array_free(struct nq_array *a);

/*
 * Read an IDX file (http://yann.lecun.com/exdb/mnist/ layout: 0x00 0x00,
 * type, rank, big-endian u32 dims, data), gzip-compressed or not (zlib reads
 * both).  Only unsigned-byte data (type 0x08) is accepted.  The file must
 * hold exactly the bytes the dims promise; truncated or trailing data is an
 * error.  Result: dtype NQ_DT_U8, ndim = rank.
 */
int nq_idx_read(const char *path, struct nq_array *out);

/*
 * Read a .npy file, format versions 1.0, 2.0 and 3.0.  Accepted dtypes:
 * f4 f8 u1 i1 i2 i4 i8 in either byte order (converted to host order);
 * C order only (fortran_order True is rejected).  A 0-d array reads as
 * ndim 0, count 1.
 */
int nq_npy_read(const char *path, struct nq_array *out);

/* The same from memory; name is used in error messages only. */
int nq_npy_parse(const void *buf, size_t len, const char *name, struct nq_array *out);

/*
 * Write a C-order .npy file (version 1.0, little-endian descr, header padded
 * to 64 bytes as numpy does).  The file appears atomically: it is written to
 * a temporary name, fsync'd and renamed.
 */
int nq_npy_write(const char *path, enum nq_dtype dt, unsigned int ndim,
		 const uint64_t *dims, const void *data);

static inline int nq_npy_write_f32(const char *path, unsigned int ndim,
				   const uint64_t *dims, const float *data)
{
	return nq_npy_write(path, NQ_DT_F32, ndim, dims, data);
}

/*
 * An image-classification set: images as float32 NCHW scaled to [0, 1],
 * labels as class indices.
 */
struct nq_dataset {
	size_t count;
	unsigned int channels, height, width;
	unsigned int classes;
	float *images;		/* count * channels * height * width */
	uint8_t *labels;	/* count, each < classes */
};

/*
 * Load a named dataset.  name: "fashion-mnist" (directory from
 * $NQ_FASHION_MNIST_DIR, else /usr/share/datasets/fashion-mnist, files
 * SPLIT-{images-idx3,labels-idx1}-ubyte[.gz]).  split: "train" or "t10k"
 * ("test" is an alias).  limit > 0 keeps only the first limit examples.
 * Returns -ENOENT when the files are not installed.
 */
int nq_dataset_load(const char *name, const char *split, size_t limit,
		    struct nq_dataset *ds);

/* The directory nq_dataset_load() reads for name, or NULL if unknown. */
const char *nq_dataset_dir(const char *name);

void nq_dataset_free(struct nq_dataset *ds);

#endif
