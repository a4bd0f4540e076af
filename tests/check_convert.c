// SPDX-License-Identifier: MIT
/*
 * The converter pipeline (convert/convert.h) end to end on the committed
 * fixture tests/data/tiny_cnn.onnx (Conv+BN+ReLU, depthwise conv with Clip,
 * Add, MaxPool, AvgPool, GlobalAveragePool, Reshape, Gemm, Softmax):
 * the integer graph it writes, the nesting invariants read back from the
 * file, metadata, calibration parameters, preprocessing, errors that leave no
 * file, cancellation, and the integer executor's output against the FP32
 * reference output of the fixture.
 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jpeglib.h>
#include <png.h>

#include "convert.h"
#include "dataset.h"
#include "graph.h"
#include "nestquant.h"
#include "nq_error.h"
#include "nq_format.h"
#include "nq_test.h"
#include "onnx_import.h"

static char model_path[4096];

static const char *tiny(void)
{
	snprintf(model_path, sizeof(model_path), "%s/tests/data/tiny_cnn.onnx", nq_test_srcdir());
	return model_path;
}

static const char *tmp(const char *name)
{
	static char buf[16][4096];	/* a few calls may be live at once */
	static int i;

	i = (i + 1) % 16;
	snprintf(buf[i], sizeof(buf[i]), "%s/%s", nq_test_tmpdir(), name);
	return buf[i];
}

/* Standard-normal calibration inputs for the 1x13x13 fixture, as .npy. */
static const char *calib_npy(void)
{
	static char path[4096];
	uint64_t dims[4] = { 64, 1, 13, 13 }, s = 42;
	size_t n = 64 * 13 * 13;
	float *x;

	snprintf(path, sizeof(path), "%s/calib.npy", nq_test_tmpdir());
	if (access(path, F_OK) == 0)
		return path;
	x = malloc(n * sizeof(*x));
	ck_assert_ptr_nonnull(x);
	for (size_t i = 0; i < n; i += 2) {
		double u, v;

		s = s * 6364136223846793005ull + 1442695040888963407ull;
		u = ((double)(s >> 11) + 0.5) / 9007199254740992.0;
		s = s * 6364136223846793005ull + 1442695040888963407ull;
		v = ((double)(s >> 11) + 0.5) / 9007199254740992.0;
		x[i] = (float)(sqrt(-2 * log(u)) * cos(2 * M_PI * v));
		x[i + 1] = (float)(sqrt(-2 * log(u)) * sin(2 * M_PI * v));
	}
	ck_assert_int_eq(nq_npy_write_f32(path, 4, dims, x), 0);
	free(x);
	return path;
}

static void opts(struct nq_convert_opts *o, const char *levels, enum nq_round r)
{
	nq_convert_opts_init(o);
	ck_assert_int_eq(nq_levels_parse(levels, o->levels, &o->nlevels), 0);
	o->rounding = r;
	o->calib = NQ_CALIB_SRC_PATH;
	o->calib_path = calib_npy();
	o->calib_count = 64;
	o->pre.input_scale = 1.0f;	/* the fixture takes floats as they are */
}

static int convert(const char *out, const struct nq_convert_opts *o, struct nq_convert_report *r)
{
	struct nq_convert_report local;
	int err = nq_convert(tiny(), out, o, r ? r : &local);

	if (!err && !r)
		nq_convert_report_free(&local);
	return err;
}

/* Nothing but the files we expect in the temp dir (no writer temporaries). */
static int count_dot_files(void)
{
	DIR *d = opendir(nq_test_tmpdir());
	struct dirent *e;
	int n = 0;

	ck_assert_ptr_nonnull(d);
	while ((e = readdir(d)))
		if (e->d_name[0] == '.' && strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

START_TEST(integer_graph_has_quantize_dequantize_and_u8_activations)
{
	struct nq_convert_opts o;
	struct nq_file *f;
	const uint32_t *io;
	uint32_t n, nodes, first, last;
	int softmax = -1;

	opts(&o, "8,6", NQ_ROUND_SQUANT);
	ck_assert_int_eq(convert(tmp("g.nq"), &o, NULL), 0);
	ck_assert_int_eq(nq_file_open(tmp("g.nq"), &f), 0);
	ck_assert_uint_eq(nq_file_level_count(f), 2);
	ck_assert_uint_eq(nq_file_level(f, 0)->bits, 6);
	ck_assert_uint_eq(nq_file_level(f, 1)->bits, 8);
	ck_assert_uint_eq(nq_file_layer_count(f), 5);	/* c1, dw, pw, sc, fc */

	nodes = nq_file_node_count(f);
	first = nq_file_node(f, 0)->op;
	ck_assert_uint_eq(first, NQ_OP_QUANTIZE);
	io = nq_file_graph_inputs(f, &n);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(nq_file_tensor(f, io[0])->dtype, NQ_TENSOR_F32);
	ck_assert_uint_eq(nq_file_tensor(f, io[0])->dims[2], 13);
	io = nq_file_graph_outputs(f, &n);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(nq_file_tensor(f, io[0])->dtype, NQ_TENSOR_F32);
	ck_assert_str_eq(nq_file_str(f, nq_file_tensor(f, io[0])->name), "prob");

	/* Softmax is last and reads an f32 tensor made by a DEQUANTIZE. */
	last = nq_file_node(f, nodes - 1)->op;
	ck_assert_uint_eq(last, NQ_OP_SOFTMAX);
	for (uint32_t i = 0; i < nodes; i++)
		if (nq_file_node(f, i)->op == NQ_OP_SOFTMAX)
			softmax = (int)i;
	ck_assert_int_eq(softmax, (int)nodes - 1);
	ck_assert_uint_eq(nq_file_node(f, nodes - 2)->op, NQ_OP_DEQUANTIZE);

	/* Every tensor is f32 (input, Softmax operands) or u8 with a usable scale. */
	for (uint32_t t = 0, nf32 = 0; t < nq_file_tensor_count(f); t++) {
		const struct nq_disk_tensor *d = nq_file_tensor(f, t);

		if (d->dtype == NQ_TENSOR_F32) {
			ck_assert_uint_le(++nf32, 3);
			continue;
		}
		ck_assert_uint_eq(d->dtype, NQ_TENSOR_U8);
		ck_assert(d->scale > 0 && isfinite(d->scale));
		ck_assert(d->zero_point >= 0 && d->zero_point <= 255);
	}
	/* Every CONV/GEMM node has a layer, nothing else does. */
	for (uint32_t i = 0; i < nodes; i++) {
		const struct nq_disk_node *d = nq_file_node(f, i);

		if (d->op == NQ_OP_CONV || d->op == NQ_OP_GEMM)
			ck_assert_uint_ne(d->layer, NQ_NONE);
		else
			ck_assert_uint_eq(d->layer, NQ_NONE);
	}
	nq_file_close(f);
}
END_TEST

START_TEST(metadata_records_source_options_and_sha256)
{
	struct nq_convert_opts o;
	struct nq_file *f;
	char sha[65];
	FILE *fp;

	/* The hash itself: FIPS 180-2 example "abc". */
	fp = fopen(tmp("abc.txt"), "w");
	ck_assert_ptr_nonnull(fp);
	fputs("abc", fp);
	fclose(fp);
	ck_assert_int_eq(nq_sha256_file(tmp("abc.txt"), sha), 0);
	ck_assert_str_eq(sha, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");

	opts(&o, "8,4", NQ_ROUND_NEAREST);
	o.residual = NQ_RESIDUAL_COMPACT;
	o.calib_method = NQ_CALIB_PERCENTILE;
	o.percentile = 99.9;
	o.calib_count = 40;
	ck_assert_int_eq(convert(tmp("m.nq"), &o, NULL), 0);
	ck_assert_int_eq(nq_file_open(tmp("m.nq"), &f), 0);
	ck_assert_str_eq(nq_file_meta(f, "producer"), NQ_CONVERT_PRODUCER);
	ck_assert_str_eq(nq_file_meta(f, "source"), "tiny_cnn.onnx");
	ck_assert_int_eq(nq_sha256_file(tiny(), sha), 0);
	ck_assert_str_eq(nq_file_meta(f, "source.sha256"), sha);
	ck_assert_str_eq(nq_file_meta(f, "convert.levels"), "8,4");
	ck_assert_str_eq(nq_file_meta(f, "convert.rounding"), "nearest");
	ck_assert_str_eq(nq_file_meta(f, "convert.residual"), "compact");
	ck_assert_str_eq(nq_file_meta(f, "convert.calib-count"), "40");
	ck_assert_str_eq(nq_file_meta(f, "convert.calib-method"), "percentile 99.9");
	ck_assert_str_eq(nq_file_meta(f, "convert.calib"), calib_npy());
	ck_assert_uint_eq(strlen(nq_file_meta(f, "created")), 20);
	nq_file_close(f);
}
END_TEST

/* Composed integers of every layer at one level. */
static int8_t *weights_at(struct nq_file *f, uint32_t level, size_t *count)
{
	size_t total = 0, off = 0;
	int8_t *q;

	for (uint32_t l = 0; l < nq_file_layer_count(f); l++)
		total += (size_t)nq_file_layer(f, l)->oc * nq_file_layer(f, l)->k;
	q = malloc(total);
	ck_assert_ptr_nonnull(q);
	for (uint32_t l = 0; l < nq_file_layer_count(f); l++) {
		const struct nq_disk_layer *d = nq_file_layer(f, l);

		for (uint32_t c = 0; c < d->oc; c++, off += d->k)
			ck_assert_int_eq(nq_file_unpack_weights(f, l, level, c, 0, d->k, q + off), 0);
	}
	*count = total;
	return q;
}

START_TEST(exact_full_bit_equals_the_standalone_int8_model)
{
	struct nq_convert_opts o;
	struct nq_file *a, *b;
	int8_t *qa, *qb;
	size_t na, nb;

	opts(&o, "8,6,4", NQ_ROUND_SQUANT);
	ck_assert_int_eq(convert(tmp("n864.nq"), &o, NULL), 0);
	opts(&o, "8", NQ_ROUND_SQUANT);
	ck_assert_int_eq(convert(tmp("int8.nq"), &o, NULL), 0);
	ck_assert_int_eq(nq_file_open(tmp("n864.nq"), &a), 0);
	ck_assert_int_eq(nq_file_open(tmp("int8.nq"), &b), 0);
	qa = weights_at(a, 2, &na);
	qb = weights_at(b, 0, &nb);
	ck_assert_uint_eq(na, nb);
	ck_assert_int_eq(memcmp(qa, qb, na), 0);
	for (uint32_t l = 0; l < nq_file_layer_count(a); l++)
		ck_assert_int_eq(memcmp(nq_file_layer_scales(a, l, 2), nq_file_layer_scales(b, l, 0),
					nq_file_layer(a, l)->oc * sizeof(float)), 0);
	/* Levels 4 and 6 are in range and their planes are 4 + 3 + 3 bits. */
	for (uint32_t l = 0; l < nq_file_layer_count(a); l++) {
		struct nq_plane_view v;

		ck_assert_int_eq(nq_file_plane(a, l, 0, &v), 0);
		ck_assert_uint_eq(v.bits, 4);
		ck_assert_int_eq(nq_file_plane(a, l, 1, &v), 0);
		ck_assert_uint_eq(v.bits, 3);
		ck_assert_int_eq(nq_file_plane(a, l, 2, &v), 0);
		ck_assert_uint_eq(v.bits, 3);
	}
	free(qa);
	free(qb);
	nq_file_close(a);
	nq_file_close(b);
}
END_TEST

START_TEST(truncation_is_an_arithmetic_shift_of_the_int8_weights)
{
	struct nq_convert_opts o;
	struct nq_file *f;
	int8_t *q0, *q1;
	size_t n0, n1, differ = 0;

	opts(&o, "8,4", NQ_ROUND_TRUNCATE);
	ck_assert_int_eq(convert(tmp("trunc.nq"), &o, NULL), 0);
	ck_assert_int_eq(nq_file_open(tmp("trunc.nq"), &f), 0);
	q0 = weights_at(f, 0, &n0);
	q1 = weights_at(f, 1, &n1);
	ck_assert_uint_eq(n0, n1);
	for (size_t i = 0; i < n0; i++) {
		ck_assert_int_eq(q0[i], q1[i] >> 4);
		differ += q1[i] != q0[i] * 16;
	}
	ck_assert_uint_gt(differ, n0 / 2);	/* the residual plane is not empty */
	free(q0);
	free(q1);
	nq_file_close(f);
}
END_TEST

/* Weights in the file are OHWI and dequantize to the ONNX weights. */
START_TEST(full_bit_weights_dequantize_to_the_onnx_weights_in_ohwi_order)
{
	struct nq_convert_opts o;
	struct nq_graph g;
	struct nq_file *f;
	uint32_t layer = 0;

	opts(&o, "8,6", NQ_ROUND_NEAREST);
	ck_assert_int_eq(convert(tmp("w.nq"), &o, NULL), 0);
	ck_assert_int_eq(nq_file_open(tmp("w.nq"), &f), 0);
	ck_assert_int_eq(nq_onnx_load(tiny(), &g), 0);
	ck_assert_int_eq(nq_graph_normalise(&g), 0);
	for (int i = 0; i < g.n_nodes; i++) {
		const struct nq_node *n = &g.nodes[i];
		const struct nq_disk_layer *d;
		const float *s;
		float *w;
		int8_t *row;

		if (n->op != NQ_OP_CONV && n->op != NQ_OP_GEMM)
			continue;
		d = nq_file_layer(f, layer);
		ck_assert_uint_eq(d->oc, (uint32_t)n->oc);
		ck_assert_uint_eq(d->k, (uint32_t)n->k);
		s = nq_file_layer_scales(f, layer, 1);
		w = malloc((size_t)n->oc * n->k * sizeof(*w));
		row = malloc(n->k);
		ck_assert_int_eq(nq_node_weight_ohwi(n, w), 0);
		for (int c = 0; c < n->oc; c++) {
			ck_assert_int_eq(nq_file_unpack_weights(f, layer, 1, c, 0, n->k, row), 0);
			for (int j = 0; j < n->k; j++)
				ck_assert_float_le(fabsf(w[(size_t)c * n->k + j] - s[c] * row[j]),
						   0.5001f * s[c]);
		}
		/* Bias is stored as float, unchanged. */
		ck_assert_int_eq(memcmp(nq_file_layer_bias(f, layer), n->bias, n->oc * sizeof(float)),
				 0);
		free(w);
		free(row);
		layer++;
	}
	ck_assert_uint_eq(layer, 5);
	nq_graph_free(&g);
	nq_file_close(f);
}
END_TEST

START_TEST(input_quantization_comes_from_the_calibration_range)
{
	struct nq_convert_opts o;
	struct nq_file *f;
	uint64_t dims[4] = { 8, 1, 13, 13 };
	float x[8 * 169];
	const struct nq_disk_tensor *t;

	/* Values from -1 to 3 exactly: scale 4/255, zero point round(255/4). */
	for (int i = 0; i < 8 * 169; i++)
		x[i] = -1.0f + 4.0f * (float)(i % 169) / 168.0f;
	ck_assert_int_eq(nq_npy_write_f32(tmp("ramp.npy"), 4, dims, x), 0);
	opts(&o, "8,6", NQ_ROUND_NEAREST);
	o.calib_path = tmp("ramp.npy");
	ck_assert_int_eq(convert(tmp("ramp.nq"), &o, NULL), 0);
	ck_assert_int_eq(nq_file_open(tmp("ramp.nq"), &f), 0);
	ck_assert_uint_eq(nq_file_node(f, 0)->op, NQ_OP_QUANTIZE);
	t = nq_file_tensor(f, nq_file_node_outputs(f, 0, &(uint32_t){ 0 })[0]);
	ck_assert_uint_eq(t->dtype, NQ_TENSOR_U8);
	ck_assert_float_eq_tol(t->scale, 4.0f / 255.0f, 1e-6f);
	ck_assert_int_eq(t->zero_point, 64);
	nq_file_close(f);
}
END_TEST

START_TEST(mean_std_and_layout_are_stored_in_the_preprocess_record)
{
	struct nq_convert_opts o;
	struct nq_file *f;
	const struct nq_disk_preprocess *p;

	opts(&o, "8,6", NQ_ROUND_NEAREST);
	o.pre.channels = 1;
	o.pre.mean[0] = 0.25f;
	o.pre.std[0] = 2.0f;
	o.pre.layout = NQ_LAYOUT_NHWC;
	/* The calibration array is NCHW [64, 1, 13, 13]: refused as NHWC. */
	ck_assert_int_eq(convert(tmp("pre.nq"), &o, NULL), -EINVAL);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "does not fit"));
	o.calib = NQ_CALIB_SRC_NONE;
	ck_assert_int_eq(convert(tmp("pre.nq"), &o, NULL), 0);
	ck_assert_int_eq(nq_file_open(tmp("pre.nq"), &f), 0);
	p = nq_file_preprocess(f);
	ck_assert_uint_eq(p->channels, 1);
	ck_assert_uint_eq(p->layout, NQ_LAYOUT_NHWC);
	ck_assert_float_eq(p->mean[0], 0.25f);
	ck_assert_float_eq(p->std[0], 2.0f);
	ck_assert_float_eq(p->input_scale, 1.0f);
	ck_assert_str_eq(nq_file_meta(f, "convert.mean"), "0.25");
	ck_assert_str_eq(nq_file_meta(f, "convert.input-scale"), "1");
	nq_file_close(f);

	o.pre.channels = 3;	/* the model has one input channel */
	o.pre.std[1] = o.pre.std[2] = 1;
	ck_assert_int_eq(convert(tmp("pre3.nq"), &o, NULL), -EINVAL);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "3 channels"));
	ck_assert_int_eq(access(tmp("pre3.nq"), F_OK), -1);
}
END_TEST

/* A copy of the fixture with one Conv renamed to an op nobody supports. */
START_TEST(unsupported_op_names_the_node_and_writes_nothing)
{
	struct nq_convert_opts o;
	FILE *fp;
	char *buf, *p;
	long len;

	fp = fopen(tiny(), "rb");
	ck_assert_ptr_nonnull(fp);
	fseek(fp, 0, SEEK_END);
	len = ftell(fp);
	rewind(fp);
	buf = malloc(len);
	ck_assert_int_eq(fread(buf, 1, len, fp), len);
	fclose(fp);
	/* op_type "Conv" is field 4 of NodeProto: tag 0x22, length 4. */
	p = memmem(buf, len, "\x22\x04" "Conv", 6);
	ck_assert_ptr_nonnull(p);
	memcpy(p + 2, "Cosh", 4);
	fp = fopen(tmp("bad.onnx"), "wb");
	fwrite(buf, 1, len, fp);
	fclose(fp);
	free(buf);

	opts(&o, "8,6", NQ_ROUND_SQUANT);
	ck_assert_int_eq(nq_convert(tmp("bad.onnx"), tmp("bad.nq"), &o, &(struct nq_convert_report){ 0 }),
			 -EOPNOTSUPP);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "Cosh"));
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "/c1/Conv"));
	ck_assert_int_eq(access(tmp("bad.nq"), F_OK), -1);
	ck_assert_int_eq(count_dot_files(), 0);
}
END_TEST

struct cancel_at {
	const char *stage;
	volatile int flag;
	int seen;
};

static void cancel_progress(void *arg, const struct nq_convert_progress *p)
{
	struct cancel_at *c = arg;

	if (!strcmp(p->stage, c->stage) && p->done >= 1) {
		c->flag = 1;
		c->seen++;
	}
}

START_TEST(cancel_in_each_stage_leaves_no_file_and_keeps_the_old_one)
{
	static const char *const stages[] = { "calibrate", "quantize", "write" };
	struct nq_convert_opts o;
	struct nq_file *f;

	/* An existing output must survive a cancelled conversion untouched. */
	opts(&o, "6", NQ_ROUND_NEAREST);
	ck_assert_int_eq(convert(tmp("keep.nq"), &o, NULL), 0);
	for (unsigned i = 0; i < 3; i++) {
		struct cancel_at c = { .stage = stages[i] };

		opts(&o, "8,6", NQ_ROUND_SQUANT);
		o.calib_count = 64;
		o.progress = cancel_progress;
		o.progress_arg = &c;
		o.cancel = &c.flag;
		ck_assert_int_eq(convert(tmp("keep.nq"), &o, NULL), -EINTR);
		ck_assert_int_ge(c.seen, 1);
		ck_assert_int_eq(count_dot_files(), 0);
	}
	ck_assert_int_eq(nq_file_open(tmp("keep.nq"), &f), 0);
	ck_assert_uint_eq(nq_file_level_count(f), 1);
	ck_assert_uint_eq(nq_file_level(f, 0)->bits, 6);
	nq_file_close(f);
}
END_TEST

START_TEST(bad_options_and_calibration_data_are_refused)
{
	struct nq_convert_opts o;
	uint64_t dims[3] = { 4, 28, 28 };
	static uint8_t img[4 * 28 * 28];

	opts(&o, "8,6", NQ_ROUND_SQUANT);
	o.levels[0] = 8;	/* not ascending */
	ck_assert_int_eq(convert(tmp("x.nq"), &o, NULL), -EINVAL);

	opts(&o, "8,6", NQ_ROUND_SQUANT);
	o.calib = NQ_CALIB_SRC_FASHION_MNIST;	/* 28x28 images, 13x13 model */
	ck_assert_int_eq(convert(tmp("x.nq"), &o, NULL), -EINVAL);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "fashion-mnist"));

	ck_assert_int_eq(nq_npy_write(tmp("u8.npy"), NQ_DT_U8, 3, dims, img), 0);
	opts(&o, "8,6", NQ_ROUND_SQUANT);
	o.calib_path = tmp("u8.npy");
	ck_assert_int_eq(convert(tmp("x.nq"), &o, NULL), -EINVAL);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "does not fit"));

	opts(&o, "8,6", NQ_ROUND_SQUANT);
	o.calib_path = tmp("missing.npy");
	ck_assert_int_eq(convert(tmp("x.nq"), &o, NULL), -ENOENT);
	ck_assert_int_eq(access(tmp("x.nq"), F_OK), -1);
}
END_TEST

START_TEST(report_gives_bits_and_better_sqnr_for_squant_than_truncation)
{
	struct nq_convert_opts o;
	struct nq_convert_report rs, rt, rc;
	double ws = 0, wt = 0;

	opts(&o, "8,4", NQ_ROUND_SQUANT);
	ck_assert_int_eq(convert(tmp("rs.nq"), &o, &rs), 0);
	opts(&o, "8,4", NQ_ROUND_TRUNCATE);
	ck_assert_int_eq(convert(tmp("rt.nq"), &o, &rt), 0);
	opts(&o, "8,4", NQ_ROUND_SQUANT);
	o.residual = NQ_RESIDUAL_COMPACT;
	ck_assert_int_eq(convert(tmp("rc.nq"), &o, &rc), 0);

	ck_assert_uint_eq(rs.nlayers, 5);
	ck_assert_uint_eq(rs.weights, 8 * 9 + 8 * 9 + 16 * 8 + 16 * 8 + 10 * 16);
	ck_assert_double_eq_tol(rs.level_bits[0], 4.0, 1e-9);
	ck_assert_double_eq_tol(rs.bits_per_weight, 9.0, 1e-9);	/* 4 + 5 */
	ck_assert_double_eq_tol(rc.bits_per_weight, 8.0, 1e-9);	/* 4 + 4 */
	ck_assert_uint_eq(rs.level_bytes[0] % 4096, 0);
	ck_assert_uint_eq(rs.file_size, 8192 + rs.level_bytes[0] + rs.level_bytes[1]);
	for (unsigned i = 0; i < rs.nlayers; i++) {
		ws += rs.layers[i].sqnr_db[0];
		wt += rt.layers[i].sqnr_db[0];
		/* Full bit identical: same INT8 integers (nearest for truncation
		 * vs squant differ only by flips, so compare to itself). */
		ck_assert(rs.layers[i].sqnr_db[1] > 35.0);
	}
	/* SQuant's part-bit weights are clearly closer than q >> 4. */
	ck_assert_double_gt(ws / rs.nlayers, wt / rt.nlayers + 2.0);	/* measured: +2.6 dB */
	nq_convert_report_free(&rs);
	nq_convert_report_free(&rt);
	nq_convert_report_free(&rc);
}
END_TEST

START_TEST(adaround_conversion_uses_calibration_patches)
{
	struct nq_convert_opts o;
	struct nq_convert_report ra, rn;

	opts(&o, "8,4", NQ_ROUND_ADAROUND);
	o.adaround_rows = 512;
	ck_assert_int_eq(convert(tmp("ada.nq"), &o, &ra), 0);
	opts(&o, "8,4", NQ_ROUND_NEAREST);
	ck_assert_int_eq(convert(tmp("near.nq"), &o, &rn), 0);
	/* Adaround minimises output, not weight, error: its weight SQNR stays
	 * within a few dB of nearest rounding and the file is as valid. */
	for (unsigned i = 0; i < ra.nlayers; i++)
		ck_assert_double_gt(ra.layers[i].sqnr_db[0], rn.layers[i].sqnr_db[0] - 6.0);
	nq_convert_report_free(&ra);
	nq_convert_report_free(&rn);
}
END_TEST


static float input_scale_of(const char *path)
{
	struct nq_file *f;
	float s;

	ck_assert_int_eq(nq_file_open(path, &f), 0);
	s = nq_file_tensor(f, nq_file_node_outputs(f, 0, &(uint32_t){ 0 })[0])->scale;
	nq_file_close(f);
	return s;
}

START_TEST(calibration_cache_is_reused_only_for_the_same_key)
{
	struct nq_convert_opts o;
	char cache[4096], line[4096], *text = NULL;
	size_t len = 0;
	float fresh;
	FILE *f, *mem;

	snprintf(cache, sizeof(cache), "%s", tmp("calib.cache"));
	opts(&o, "8,6", NQ_ROUND_SQUANT);
	o.calib_cache = cache;
	ck_assert_int_eq(convert(tmp("c1.nq"), &o, NULL), 0);
	fresh = input_scale_of(tmp("c1.nq"));

	/* Doctor the cached input scale: a matching key must use it as is. */
	f = fopen(cache, "r");
	ck_assert_ptr_nonnull(f);
	mem = open_memstream(&text, &len);
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "t ", 2) && strstr(line, " input\n"))
			fputs("t 0x1p-3 7 -0x1.cp+0 0x1.ep+4 input\n", mem);	/* 0.125, zp 7 */
		else
			fputs(line, mem);
	}
	fclose(f);
	fclose(mem);
	f = fopen(cache, "w");
	fputs(text, f);
	fclose(f);
	free(text);
	ck_assert_int_eq(convert(tmp("c2.nq"), &o, NULL), 0);
	ck_assert_float_eq(input_scale_of(tmp("c2.nq")), 0.125f);

	/* Another calibration count is another key: recomputed and re-saved. */
	o.calib_count = 32;
	ck_assert_int_eq(convert(tmp("c3.nq"), &o, NULL), 0);
	ck_assert_float_ne(input_scale_of(tmp("c3.nq")), 0.125f);
	ck_assert_float_eq_tol(input_scale_of(tmp("c3.nq")), fresh, fresh * 0.5f);
	f = fopen(cache, "r");
	ck_assert_ptr_nonnull(fgets(line, sizeof(line), f));
	ck_assert_str_eq(line, "nestquant-calib-cache 1\n");
	ck_assert_ptr_nonnull(fgets(line, sizeof(line), f));
	ck_assert_ptr_nonnull(fgets(line, sizeof(line), f));
	ck_assert_str_eq(line, "samples 32\n");
	fclose(f);
}
END_TEST

/* Half black, half white: after resize and crop, still exactly 0 and 255. */
static void write_png(const char *path, unsigned w, unsigned h)
{
	png_image im;
	uint8_t *px = malloc((size_t)w * h);

	for (unsigned y = 0; y < h; y++)
		for (unsigned x = 0; x < w; x++)
			px[y * w + x] = x < w / 2 ? 0 : 255;
	memset(&im, 0, sizeof(im));
	im.version = PNG_IMAGE_VERSION;
	im.width = w;
	im.height = h;
	im.format = PNG_FORMAT_GRAY;
	ck_assert_int_ne(png_image_write_to_file(&im, path, 0, px, 0, NULL), 0);
	free(px);
}

static void write_jpeg(const char *path, unsigned w, unsigned h)
{
	struct jpeg_compress_struct ci;
	struct jpeg_error_mgr jerr;
	uint8_t *row = malloc((size_t)w * 3);
	FILE *f = fopen(path, "wb");

	ck_assert_ptr_nonnull(f);
	ci.err = jpeg_std_error(&jerr);
	jpeg_create_compress(&ci);
	jpeg_stdio_dest(&ci, f);
	ci.image_width = w;
	ci.image_height = h;
	ci.input_components = 3;
	ci.in_color_space = JCS_RGB;
	jpeg_set_defaults(&ci);
	jpeg_set_quality(&ci, 95, TRUE);
	jpeg_start_compress(&ci, TRUE);
	while (ci.next_scanline < h) {
		for (unsigned x = 0; x < w; x++)
			row[3 * x] = row[3 * x + 1] = row[3 * x + 2] = (uint8_t)(64 + x % 128);
		jpeg_write_scanlines(&ci, &row, 1);
	}
	jpeg_finish_compress(&ci);
	jpeg_destroy_compress(&ci);
	fclose(f);
	free(row);
}

START_TEST(image_folder_calibration_reads_png_and_jpeg)
{
	struct nq_convert_opts o;
	struct nq_convert_report r;
	struct nq_file *f;
	const struct nq_disk_tensor *t;
	char dir[4096];

	snprintf(dir, sizeof(dir), "%s", tmp("images"));	/* tmp() reuses its buffers */
	ck_assert_int_eq(mkdir(dir, 0755), 0);
	ck_assert_int_eq(mkdir(tmp("images/a"), 0755), 0);
	ck_assert_int_eq(mkdir(tmp("images/b"), 0755), 0);
	write_png(tmp("images/a/1.png"), 40, 30);
	write_png(tmp("images/a/2.PNG"), 26, 52);
	write_png(tmp("images/b/3.png"), 17, 17);
	write_jpeg(tmp("images/b/4.jpg"), 50, 20);
	write_jpeg(tmp("images/b/5.jpeg"), 20, 50);
	fclose(fopen(tmp("images/b/notes.txt"), "w"));	/* ignored */

	opts(&o, "8,6", NQ_ROUND_NEAREST);
	o.calib_path = dir;
	o.calib_count = 100;
	o.pre.input_scale = 0;	/* default: raw 8-bit pixels, / 255 */
	ck_assert_int_eq(convert(tmp("img.nq"), &o, &r), 0);
	ck_assert_uint_eq(r.calib_samples, 5);
	nq_convert_report_free(&r);
	ck_assert_int_eq(nq_file_open(tmp("img.nq"), &f), 0);
	ck_assert_str_eq(nq_file_meta(f, "convert.calib-count"), "5");
	ck_assert_float_eq(nq_file_preprocess(f)->input_scale, 1.0f / 255.0f);
	/* Inputs spanned exactly [0, 1]: scale 1/255, zero point 0. */
	t = nq_file_tensor(f, nq_file_node_outputs(f, 0, &(uint32_t){ 0 })[0]);
	ck_assert_float_eq_tol(t->scale, 1.0f / 255.0f, 1e-7f);
	ck_assert_int_eq(t->zero_point, 0);
	nq_file_close(f);

	/* A broken image is an error naming the file. */
	fclose(fopen(tmp("images/b/0.jpg"), "w"));
	o.calib_count = 100;
	ck_assert_int_lt(convert(tmp("img2.nq"), &o, NULL), 0);
	ck_assert_msg(strstr(nq_last_error(), "0.jpg"), "%s", nq_last_error());
	ck_assert_int_eq(access(tmp("img2.nq"), F_OK), -1);
}
END_TEST

/* The integer executor on the converted fixture against the FP32 output. */
START_TEST(integer_executor_matches_the_fp32_reference_output)
{
	struct nq_convert_opts o;
	struct nq_tensor in = { 0 }, ref = { 0 };
	struct nq_model *m;
	struct nq_session *s;
	char path[4096];
	float out[10];
	int err;

	opts(&o, "8,6", NQ_ROUND_SQUANT);
	ck_assert_int_eq(convert(tmp("e.nq"), &o, NULL), 0);
	snprintf(path, sizeof(path), "%s/tests/data/tiny_cnn.input.pb", nq_test_srcdir());
	ck_assert_int_eq(nq_onnx_read_tensor(path, &in), 0);
	snprintf(path, sizeof(path), "%s/tests/data/tiny_cnn.output.pb", nq_test_srcdir());
	ck_assert_int_eq(nq_onnx_read_tensor(path, &ref), 0);
	ck_assert_int_eq(ref.dims[1], 10);

	err = nq_model_open(tmp("e.nq"), NULL, &m);
	if (err)
		NQ_SKIP("the runtime cannot open the converted model yet: %s", nq_last_error());
	ck_assert_int_eq(nq_session_create(m, &s), 0);
	for (unsigned level = 0; level < 2; level++)
		for (int n = 0; n < (int)in.dims[0]; n++) {
			int best = 0, rbest = 0;
			float maxd = 0;

			ck_assert_int_eq(nq_session_run_level(s, level, in.data + n * 169, out), 0);
			for (int c = 0; c < 10; c++) {
				float d = fabsf(out[c] - ref.data[n * 10 + c]);

				maxd = d > maxd ? d : maxd;
				best = out[c] > out[best] ? c : best;
				rbest = ref.data[n * 10 + c] > ref.data[n * 10 + rbest] ? c : rbest;
			}
			/* Probabilities within 0.05 (8 bit) / 0.1 (6 bit), same class. */
			ck_assert_msg(maxd < (level ? 0.05f : 0.1f), "level %u sample %d: max |dp| %g",
				      level, n, maxd);
			ck_assert_int_eq(best, rbest);
		}
	nq_session_destroy(s);
	nq_model_close(m);
	free(in.name);
	free(in.data);
	free(ref.name);
	free(ref.data);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("convert");
	TCase *tc = tcase_create("pipeline");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, integer_graph_has_quantize_dequantize_and_u8_activations);
	tcase_add_test(tc, metadata_records_source_options_and_sha256);
	tcase_add_test(tc, exact_full_bit_equals_the_standalone_int8_model);
	tcase_add_test(tc, truncation_is_an_arithmetic_shift_of_the_int8_weights);
	tcase_add_test(tc, full_bit_weights_dequantize_to_the_onnx_weights_in_ohwi_order);
	tcase_add_test(tc, input_quantization_comes_from_the_calibration_range);
	tcase_add_test(tc, mean_std_and_layout_are_stored_in_the_preprocess_record);
	tcase_add_test(tc, unsupported_op_names_the_node_and_writes_nothing);
	tcase_add_test(tc, cancel_in_each_stage_leaves_no_file_and_keeps_the_old_one);
	tcase_add_test(tc, bad_options_and_calibration_data_are_refused);
	tcase_add_test(tc, report_gives_bits_and_better_sqnr_for_squant_than_truncation);
	tcase_add_test(tc, adaround_conversion_uses_calibration_patches);
	tcase_add_test(tc, calibration_cache_is_reused_only_for_the_same_key);
	tcase_add_test(tc, image_folder_calibration_reads_png_and_jpeg);
	tcase_add_test(tc, integer_executor_matches_the_fp32_reference_output);
	suite_add_tcase(s, tc);
	return nq_test_run(s);
}
