/* SPDX-License-Identifier: MIT */
/*
 * The converter: an FP32 ONNX model in, a nested .nq model out.
 *
 *   import (onnx_import.h) -> normalise (graph.h) -> calibrate activations on
 *   images or noise with the FP32 executor (fp32_exec.h, calib.h) -> quantize
 *   and nest every weight layer (quant.h) -> write the integer graph
 *   (nq_format.h), atomically.
 *
 * The integer graph is what the runtime executes (format/SPEC.md): a QUANTIZE
 * node after every f32 graph input, u8 activations with per-tensor
 * (scale, zero point), CONV/GEMM reading nested weight planes, and a
 * DEQUANTIZE in front of every graph output and in front of SOFTMAX (which
 * runs in f32).  Flatten, Reshape and MaxPool keep their input's
 * quantization, so they never requantize.
 *
 * All calls return 0 or a negative errno with the reason in nq_last_error();
 * nothing here prints.  -EINTR: *cancel became non-zero.  On any failure the
 * output path is untouched (the writer publishes by rename).
 */
#ifndef NQ_CONVERT_H
#define NQ_CONVERT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "calib.h"
#include "quant.h"

#define NQ_CONVERT_PRODUCER "nestquant-convert 0.3"
#define NQ_CONVERT_MAX_CHANNELS 16

/* Where calibration inputs come from. */
enum nq_calib_source {
	NQ_CALIB_SRC_FASHION_MNIST = 0,	/* training split of Debian's dataset */
	NQ_CALIB_SRC_NONE,		/* data-free: uniform noise in [0, 1) */
	NQ_CALIB_SRC_PATH,		/* calib_path: IDX, .npy or image folder */
};

/*
 * Preprocessing the model expects from its caller, stored in the .nq so that
 * eval/run/serve apply it: a raw value v of channel c (what a caller feeds,
 * e.g. an 8-bit pixel) becomes (v * input_scale - mean[c]) / std[c]
 * (format/SPEC.md, PREPROCESS).  input_scale 0 means 1/255: raw inputs are
 * 8-bit pixels and the ONNX model takes them in [0, 1], as torchvision and
 * our reference models do.  Use 1 for a model fed with floats as they are.
 * channels = 0: no mean/std (identity).  layout: of the caller's buffer.
 */
struct nq_convert_pre {
	float input_scale;		/* 0 = 1/255 */
	unsigned channels;		/* 0, or 1..NQ_CONVERT_MAX_CHANNELS */
	float mean[NQ_CONVERT_MAX_CHANNELS];
	float std[NQ_CONVERT_MAX_CHANNELS];
	int layout;			/* enum nq_layout; 0 = NCHW */
};

/* One progress report (from the calling thread). */
struct nq_convert_progress {
	const char *stage;		/* "calibrate", "quantize", "write" */
	unsigned done, total;		/* units of the stage (batches, layers, planes) */
	const char *item;		/* layer name while quantizing, else "" */
	double elapsed;			/* seconds since nq_convert() started */
};

typedef void (*nq_convert_progress_fn)(void *arg, const struct nq_convert_progress *p);

struct nq_convert_opts {
	unsigned nlevels;		/* 1..NQ_MAX_LEVELS; 1 = standalone INT-n */
	unsigned levels[NQ_MAX_LEVELS];	/* ascending; last = full-bit width */
	enum nq_round rounding;		/* of each lower level (and of a single level) */
	int full_rounding;		/* enum nq_round of the full-bit INT-n integers;
				   -1: as rounding (nearest for truncate) */
	enum nq_residual residual;
	enum nq_wscale wscale;
	enum nq_level_scale lscale;
	enum nq_calib_source calib;
	const char *calib_path;		/* NQ_CALIB_SRC_PATH */
	unsigned calib_count;		/* images (or noise samples); 0 = 512 */
	enum nq_calib_method calib_method;
	double percentile;		/* NQ_CALIB_PERCENTILE, e.g. 99.99 */
	struct nq_convert_pre pre;
	uint64_t seed;
	unsigned threads;		/* FP32 executor and adaround; 0 = 1 */
	unsigned adaround_rows;		/* input patches per layer for adaround; 0 = 4096 */
	const char *calib_cache;	/* optional file: activation ranges are read from
					   it when it matches this model and these
					   calibration options, else computed and saved
					   there (not used by adaround, which needs the
					   calibration run itself) */
	int rows_only;			/* store every plane in the ROWS layout (else
					   PANEL16X4 for layers with groups == 1) */
	volatile int *cancel;		/* optional: stop with -EINTR when non-zero (a
				   sig_atomic_t, which is int on Linux) */
	nq_convert_progress_fn progress; /* optional */
	void *progress_arg;
};

/* Per weight layer results. */
struct nq_convert_layer {
	char name[96];
	int kind;			/* enum nq_layer_kind */
	uint32_t oc, k;
	unsigned plane_bits[NQ_MAX_LEVELS];
	double sqnr_db[NQ_MAX_LEVELS];	/* weight SQNR at each level */
	double clip_mean[NQ_MAX_LEVELS];	/* see struct nq_werr */
};

struct nq_convert_report {
	uint64_t file_size;
	uint64_t weights;		/* weight count over all layers */
	double bits_per_weight;		/* all planes, packed, per weight */
	double level_bits[NQ_MAX_LEVELS]; /* planes 0..k per weight: what level k reads */
	uint64_t level_bytes[NQ_MAX_LEVELS]; /* region size of each level in the file */
	unsigned nlayers;
	struct nq_convert_layer *layers; /* owned; nq_convert_report_free() */
	unsigned calib_samples;
	double seconds_load, seconds_calib, seconds_quant, seconds_write, seconds_total;
};

/* Defaults: levels 6,8, squant rounding (of both the INT8 integers and the
 * nesting),
 * exact residual, absmax scales, shifted level scales, Fashion-MNIST
 * calibration on 512 images, min/max observer, seed 1, 1 thread. */
void nq_convert_opts_init(struct nq_convert_opts *o);

/*
 * Convert the ONNX model at `onnx_path` into `out_path`.  report (optional)
 * is filled on success and must be released with nq_convert_report_free().
 * Errors: whatever the importer returns (-EOPNOTSUPP names node, op and
 * attribute), -EINVAL for bad options or a graph the integer format cannot
 * hold, -ENOENT for missing calibration data, -EINTR when cancelled.
 */
int nq_convert(const char *onnx_path, const char *out_path, const struct nq_convert_opts *o,
	       struct nq_convert_report *report);

void nq_convert_report_free(struct nq_convert_report *r);

/* Calibration inputs (calib_data.c). */

/* Shape of the graph input to calibrate: batch of float NCHW. */
struct nq_calib_shape {
	unsigned c, h, w;
};

/*
 * Produce `count` calibration samples for an input of shape `sh`, as the
 * model sees them: float NCHW in *out (count * c * h * w, malloc'd).  Every
 * source is read as raw caller values and preprocessed like the runtime
 * does, (v * input_scale - mean) / std: IDX, .npy (u8 or float) and images
 * (JPEG/PNG folders: resized so the shorter side is h * 256/224, bilinear,
 * centre-cropped to h x w; grey images repeated over 3 channels, colour
 * averaged to 1 when the model asks).  --calib none draws v * input_scale
 * uniformly from [0, 1) (the paper's torch.rand).  Fewer samples than
 * count: all of them (*n_out says how many).
 */
/* The input_scale a conversion records (pre->input_scale, or 1/255). */
float nq_convert_input_scale(const struct nq_convert_pre *pre);

int nq_calib_inputs(const struct nq_convert_opts *o, const struct nq_calib_shape *sh,
		    unsigned count, float **out, unsigned *n_out);

/*
 * One JPEG/PNG image through the same transform: shorter side resized to
 * `resize` (0: round(h * 256/224)), bilinear, centre-cropped to h x w, to
 * sh->c (1 or 3) channels; out gets c * h * w floats NCHW, pixel * vscale.
 */
int nq_image_load(const char *path, const struct nq_calib_shape *sh, unsigned resize, float vscale,
		  float *out);

/* .jpg/.jpeg/.png files below dir, recursively, each folder sorted by name. */
int nq_image_list(const char *dir, char ***paths, size_t *n);
void nq_image_list_free(char **paths, size_t n);

/* SHA-256 of a file as 64 hex digits + NUL (sha256.c). */
int nq_sha256_file(const char *path, char hex[65]);

#endif
