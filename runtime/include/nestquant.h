/* SPDX-License-Identifier: MIT */
/*
 * libnestquant — run a NestQuant (.nq) model at any of its nested precision
 * levels.
 *
 *	struct nq_model *m;
 *	struct nq_session *s;
 *	int level;
 *
 *	if (nq_model_open("model.nq", NULL, &m) < 0)
 *		fprintf(stderr, "%s\n", nq_last_error());
 *	nq_session_create(m, &s);
 *	nq_session_run(s, image, logits, &level);
 *	nq_session_destroy(s);
 *	nq_model_close(m);
 *
 * Conventions.  Every function returning int returns 0 (or a non-negative
 * value where documented) on success and a negative errno on failure; the
 * reason, in words, is then in nq_last_error() (per thread).  Nothing here
 * prints, exits or aborts.
 *
 * Levels are numbered 0 .. nq_model_level_count() - 1 from the lowest
 * precision (always resident) to the full one; nq_model_level_bits() gives
 * each level's weight bit width.  Activations are 8-bit at every level.
 *
 * Threads.  A model may be shared by any number of sessions on any threads;
 * one session runs one inference at a time (it owns the activation arena).
 * nq_model_set_level() may be called at any time: an inference runs wholly
 * at the level it read when it started, and reports that level.
 */
#ifndef NESTQUANT_H
#define NESTQUANT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NQ_API __attribute__((visibility("default")))

struct nq_model;
struct nq_session;

/* Options for nq_model_open (NULL = all defaults). */
struct nq_model_opts {
	int level;		/* initial level: index, or -1 = the full (highest) level */
};

/* Layout of the caller's input buffer (from the model's preprocessing record). */
enum nq_input_layout {
	NQ_INPUT_NCHW = 1,
	NQ_INPUT_NHWC = 2,
};

/* A tensor shape in logical NCHW order; dims[i] for i < rank. */
struct nq_shape {
	unsigned int rank;
	uint32_t dims[4];
};

/*
 * Open and map a model, check it, pick the kernels (cpuid, or $NQ_ISA:
 * -ENOTSUP when it names kernels this build or CPU lacks), derive every
 * per-layer, per-level constant and plan the activation arena.  Weights are
 * not copied: they are read from the mapped file when an inference needs
 * them.  -EINVAL/-EBADMSG/-ENOTSUP for a file the runtime cannot run, with
 * the node or field named in nq_last_error().
 */
NQ_API int nq_model_open(const char *path, const struct nq_model_opts *opts,
			 struct nq_model **out);

/* Release the model; every session on it must be destroyed first.  NULL is a no-op. */
NQ_API void nq_model_close(struct nq_model *m);

/* Number of levels (1 .. 8). */
NQ_API unsigned int nq_model_level_count(const struct nq_model *m);

/* Weight bit width of level `level`, or -EINVAL when out of range. */
NQ_API int nq_model_level_bits(const struct nq_model *m, unsigned int level);

/* Index of the level with `bits` weight bits, or -ENOENT. */
NQ_API int nq_model_level_for_bits(const struct nq_model *m, unsigned int bits);

/*
 * Level that nq_session_run uses from now on (inferences already running
 * finish at theirs).  -EINVAL when out of range.
 */
NQ_API int nq_model_set_level(struct nq_model *m, unsigned int level);

/* The current level (what the next nq_session_run will use). */
NQ_API unsigned int nq_model_level(const struct nq_model *m);

/*
 * Input: the shape of the graph input in logical NCHW, the layout the
 * caller's buffer is in (NCHW or NHWC, from the model's preprocessing
 * record), and the number of floats one nq_session_run reads.
 */
NQ_API int nq_model_input_shape(const struct nq_model *m, struct nq_shape *shape);
NQ_API enum nq_input_layout nq_model_input_layout(const struct nq_model *m);
NQ_API size_t nq_model_input_count(const struct nq_model *m);

/* Output: shape of graph output 0 and the number of floats one run writes. */
NQ_API int nq_model_output_shape(const struct nq_model *m, struct nq_shape *shape);
NQ_API size_t nq_model_output_count(const struct nq_model *m);

/* Bytes of the activation arena each session allocates. */
NQ_API uint64_t nq_model_arena_bytes(const struct nq_model *m);

/* Bytes of weight planes an inference at `level` reads (regions 0..level). */
NQ_API uint64_t nq_model_weight_bytes(const struct nq_model *m, unsigned int level);

/* Name of the kernel table in use ("scalar", "avx2", ...). */
NQ_API const char *nq_model_isa(const struct nq_model *m);

/* Options for nq_session_create_opts (NULL = defaults). */
struct nq_session_opts {
	unsigned int threads;	/* 0 = default; today every session runs on 1 thread */
};

/*
 * A session: the activation arena and scratch of one inference at a time.
 * All memory an inference needs is allocated here; nq_session_run never
 * allocates.
 */
NQ_API int nq_session_create(struct nq_model *m, struct nq_session **out);
NQ_API int nq_session_create_opts(struct nq_model *m, const struct nq_session_opts *opts,
				  struct nq_session **out);
NQ_API void nq_session_destroy(struct nq_session *s);

/*
 * One inference at the model's current level.  input: the caller's raw
 * values, nq_model_input_count() floats in nq_model_input_layout(); the
 * model's preprocessing ((v * input_scale - mean[c]) / std[c]) is applied
 * here.  output: nq_model_output_count() floats of graph output 0 in
 * logical (NCHW, row-major) order, dequantized when the graph's output is
 * 8-bit.  *level_used (may be NULL) receives the level it ran at.
 * -ERANGE when a weight plane turns out to be corrupt.
 */
NQ_API int nq_session_run(struct nq_session *s, const float *input, float *output,
			  int *level_used);

/* The same at an explicit level (tests, benchmarks). */
NQ_API int nq_session_run_level(struct nq_session *s, unsigned int level,
				const float *input, float *output);

/*
 * count inferences back to back at one level (read once, at the start):
 * input holds count * nq_model_input_count() floats, output count *
 * nq_model_output_count().
 */
NQ_API int nq_session_run_batch(struct nq_session *s, size_t count, const float *input,
				float *output, int *level_used);

/* Why the last call on this thread failed ("" if none).  Never NULL. */
NQ_API const char *nq_last_error(void);

#ifdef __cplusplus
}
#endif

#endif
