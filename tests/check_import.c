// SPDX-License-Identifier: MIT
/*
 * Bad ONNX input: every file here must be rejected with a negative errno and
 * a message that names what is wrong (node index and name, op type,
 * attribute) — never a crash.  Models are built in memory with the
 * protobuf-c code generated from onnx.proto.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx.pb-c.h"
#include "fp32_exec.h"
#include "graph.h"
#include "nq_error.h"
#include "nq_test.h"
#include "onnx_import.h"

struct model {
	Onnx__ModelProto m;
	Onnx__GraphProto g;
	Onnx__OperatorSetIdProto os;
	Onnx__OperatorSetIdProto *osp[1];
	Onnx__NodeProto node;
	Onnx__NodeProto *nodes[1];
	Onnx__AttributeProto attr[4];
	Onnx__AttributeProto *attrs[4];
	char *node_in[3];
	char *node_out[1];
	Onnx__TensorProto init;
	Onnx__TensorProto *inits[1];
	int64_t wdims[4];
	float wdata[64];
	Onnx__ValueInfoProto vin, vout;
	Onnx__ValueInfoProto *vins[1], *vouts[1];
	Onnx__TypeProto tin;
	Onnx__TypeProto__Tensor ttin;
	Onnx__TensorShapeProto shape;
	Onnx__TensorShapeProto__Dimension dim[4];
	Onnx__TensorShapeProto__Dimension *dimp[4];
};

/*
 * x[1,2,5,5] -> op(x[, W]) -> y, node named `name`.  With a weight, W is an
 * initializer [3,2,3,3] (54 floats, all present).
 */
static void model_init(struct model *md, const char *op, const char *name, int with_weight)
{
	static const int64_t xd[4] = { 1, 2, 5, 5 };

	memset(md, 0, sizeof(*md));
	md->m = (Onnx__ModelProto)ONNX__MODEL_PROTO__INIT;
	md->g = (Onnx__GraphProto)ONNX__GRAPH_PROTO__INIT;
	md->os = (Onnx__OperatorSetIdProto)ONNX__OPERATOR_SET_ID_PROTO__INIT;
	md->os.domain = "";
	md->os.has_version = 1;
	md->os.version = 13;
	md->osp[0] = &md->os;
	md->m.has_ir_version = 1;
	md->m.ir_version = 7;
	md->m.n_opset_import = 1;
	md->m.opset_import = md->osp;
	md->m.graph = &md->g;

	md->node = (Onnx__NodeProto)ONNX__NODE_PROTO__INIT;
	md->node.op_type = (char *)op;
	md->node.name = (char *)name;
	md->node_in[0] = "x";
	md->node_in[1] = "W";
	md->node.n_input = with_weight ? 2 : 1;
	md->node.input = md->node_in;
	md->node_out[0] = "y";
	md->node.n_output = 1;
	md->node.output = md->node_out;
	md->node.attribute = md->attrs;
	md->nodes[0] = &md->node;
	md->g.n_node = 1;
	md->g.node = md->nodes;

	if (with_weight) {
		md->init = (Onnx__TensorProto)ONNX__TENSOR_PROTO__INIT;
		md->init.name = "W";
		md->init.has_data_type = 1;
		md->init.data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
		md->wdims[0] = 3, md->wdims[1] = 2, md->wdims[2] = 3, md->wdims[3] = 3;
		md->init.n_dims = 4;
		md->init.dims = md->wdims;
		md->init.n_float_data = 54;
		md->init.float_data = md->wdata;
		md->inits[0] = &md->init;
		md->g.n_initializer = 1;
		md->g.initializer = md->inits;
	}

	md->ttin = (Onnx__TypeProto__Tensor)ONNX__TYPE_PROTO__TENSOR__INIT;
	md->ttin.has_elem_type = 1;
	md->ttin.elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
	md->shape = (Onnx__TensorShapeProto)ONNX__TENSOR_SHAPE_PROTO__INIT;
	for (int i = 0; i < 4; i++) {
		md->dim[i] = (Onnx__TensorShapeProto__Dimension)ONNX__TENSOR_SHAPE_PROTO__DIMENSION__INIT;
		md->dim[i].value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
		md->dim[i].dim_value = xd[i];
		md->dimp[i] = &md->dim[i];
	}
	md->shape.n_dim = 4;
	md->shape.dim = md->dimp;
	md->ttin.shape = &md->shape;
	md->tin = (Onnx__TypeProto)ONNX__TYPE_PROTO__INIT;
	md->tin.value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
	md->tin.tensor_type = &md->ttin;
	md->vin = (Onnx__ValueInfoProto)ONNX__VALUE_INFO_PROTO__INIT;
	md->vin.name = "x";
	md->vin.type = &md->tin;
	md->vins[0] = &md->vin;
	md->vout = (Onnx__ValueInfoProto)ONNX__VALUE_INFO_PROTO__INIT;
	md->vout.name = "y";
	md->vouts[0] = &md->vout;
	md->g.n_input = 1;
	md->g.input = md->vins;
	md->g.n_output = 1;
	md->g.output = md->vouts;
}

static Onnx__AttributeProto *add_attr(struct model *md, const char *name, int type)
{
	Onnx__AttributeProto *a = &md->attr[md->node.n_attribute];

	*a = (Onnx__AttributeProto)ONNX__ATTRIBUTE_PROTO__INIT;
	a->name = (char *)name;
	a->has_type = 1;
	a->type = type;
	md->attrs[md->node.n_attribute++] = a;
	return a;
}

static void attr_int(struct model *md, const char *name, int64_t v)
{
	Onnx__AttributeProto *a = add_attr(md, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);

	a->has_i = 1;
	a->i = v;
}

static void attr_str(struct model *md, const char *name, const char *v)
{
	Onnx__AttributeProto *a = add_attr(md, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);

	a->has_s = 1;
	a->s.data = (uint8_t *)v;
	a->s.len = strlen(v);
}

static void attr_ints(struct model *md, const char *name, int64_t *v, size_t n)
{
	Onnx__AttributeProto *a = add_attr(md, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);

	a->n_ints = n;
	a->ints = v;
}

/* Pack and import; returns the loader's result, message in nq_last_error(). */
static int load_model(struct model *md)
{
	size_t len = onnx__model_proto__get_packed_size(&md->m);
	uint8_t *buf = malloc(len);
	struct nq_graph g;
	int err;

	onnx__model_proto__pack(&md->m, buf);
	nq_clear_error();
	err = nq_onnx_load_buffer(buf, len, &g);
	nq_graph_free(&g);
	free(buf);
	return err;
}

#define assert_msg_has(s)                                                            \
	ck_assert_msg(strstr(nq_last_error(), (s)), "message '%s' lacks '%s'", nq_last_error(), (s))

START_TEST(test_well_formed_builder_model_loads)
{
	struct model md;
	int64_t pads[4] = { 1, 1, 1, 1 };

	/* the builder itself makes valid models: the rejections below are real */
	model_init(&md, "Conv", "conv_ok", 1);
	attr_ints(&md, "pads", pads, 4);
	ck_assert_msg(load_model(&md) == 0, "%s", nq_last_error());
}
END_TEST

START_TEST(test_unsupported_op_names_node_and_op_type)
{
	struct model md;

	model_init(&md, "LSTM", "lstm_7", 0);
	ck_assert_int_eq(load_model(&md), -EOPNOTSUPP);
	assert_msg_has("node 0 'lstm_7'");
	assert_msg_has("'LSTM'");
	assert_msg_has("not supported");

	model_init(&md, "Conv", "custom", 1);
	md.node.domain = "com.microsoft";
	ck_assert_int_eq(load_model(&md), -EOPNOTSUPP);
	assert_msg_has("com.microsoft");
}
END_TEST

START_TEST(test_unsupported_attribute_names_it)
{
	struct model md;
	int64_t k1[1] = { 3 };

	model_init(&md, "MaxPool", "pool_3", 0);
	attr_ints(&md, "kernel_shape", (int64_t[]){ 2, 2 }, 2);
	attr_int(&md, "storage_order", 1);
	ck_assert_int_eq(load_model(&md), -EOPNOTSUPP);
	assert_msg_has("node 0 'pool_3': MaxPool attribute storage_order=1 is not supported");

	model_init(&md, "Conv", "Conv_3", 1);
	attr_str(&md, "auto_pad", "SAME_SIDEWAYS");
	ck_assert_int_eq(load_model(&md), -EOPNOTSUPP);
	assert_msg_has("node 0 'Conv_3': Conv attribute auto_pad='SAME_SIDEWAYS' is not supported");

	model_init(&md, "Conv", "c", 1);
	attr_int(&md, "frobnicate", 1);
	ck_assert_int_eq(load_model(&md), -EOPNOTSUPP);
	assert_msg_has("Conv attribute 'frobnicate' is not supported");

	model_init(&md, "Conv", "c1d", 1);
	attr_ints(&md, "kernel_shape", k1, 1);
	ck_assert_int_eq(load_model(&md), -EOPNOTSUPP);
	assert_msg_has("kernel_shape");

	model_init(&md, "Conv", "g0", 1);
	attr_int(&md, "group", 0);
	ck_assert_int_eq(load_model(&md), -EOPNOTSUPP);
	assert_msg_has("group=0");

	model_init(&md, "BatchNormalization", "bn", 0);
	attr_int(&md, "training_mode", 1);
	ck_assert_int_eq(load_model(&md), -EOPNOTSUPP);
	assert_msg_has("training_mode=1");
}
END_TEST

START_TEST(test_inconsistent_shapes_are_rejected)
{
	struct model md;

	/* weight expects 2 input channels; make the input 3 */
	model_init(&md, "Conv", "conv_bad", 1);
	md.dim[1].dim_value = 3;
	ck_assert_int_eq(load_model(&md), -EINVAL);
	assert_msg_has("node 0 'conv_bad'");

	/* kernel_shape contradicts the weight */
	model_init(&md, "Conv", "conv_k", 1);
	attr_ints(&md, "kernel_shape", (int64_t[]){ 5, 5 }, 2);
	ck_assert_int_eq(load_model(&md), -EINVAL);
	assert_msg_has("kernel_shape");

	/* an input nobody defines */
	model_init(&md, "Relu", "r", 0);
	md.node_in[0] = "nope";
	ck_assert_int_eq(load_model(&md), -EINVAL);
	assert_msg_has("'nope'");

	/* output not produced */
	model_init(&md, "Relu", "r", 0);
	md.vout.name = "z";
	ck_assert_int_eq(load_model(&md), -EINVAL);
	assert_msg_has("'z'");
}
END_TEST

START_TEST(test_tensor_sizes_are_checked)
{
	struct model md;
	uint8_t raw[10] = { 0 };

	model_init(&md, "Conv", "c", 1);
	md.init.n_float_data = 5;	/* dims say 54 */
	ck_assert_int_eq(load_model(&md), -EINVAL);
	assert_msg_has("tensor 'W'");

	model_init(&md, "Conv", "c", 1);
	md.init.n_float_data = 0;
	md.init.has_raw_data = 1;
	md.init.raw_data.data = raw;
	md.init.raw_data.len = sizeof(raw);
	ck_assert_int_eq(load_model(&md), -EINVAL);
	assert_msg_has("raw_data holds 10 bytes");

	model_init(&md, "Conv", "c", 1);
	md.wdims[0] = (int64_t)1 << 40;	/* overflows any size computation */
	md.wdims[1] = (int64_t)1 << 40;
	ck_assert_int_lt(load_model(&md), 0);

	model_init(&md, "Conv", "c", 1);
	md.wdims[2] = -3;
	ck_assert_int_eq(load_model(&md), -EINVAL);
	assert_msg_has("dimension 2 is -3");

	model_init(&md, "Conv", "c", 1);
	md.init.data_type = ONNX__TENSOR_PROTO__DATA_TYPE__STRING;
	ck_assert_int_eq(load_model(&md), -EOPNOTSUPP);
	assert_msg_has("STRING");
}
END_TEST

static uint8_t *fixture(size_t *len)
{
	char path[1024];
	FILE *f;
	uint8_t *buf;
	long n;

	snprintf(path, sizeof(path), "%s/tests/data/tiny_cnn.onnx", nq_test_srcdir());
	f = fopen(path, "rb");
	ck_assert_ptr_nonnull(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)n);
	ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return buf;
}

START_TEST(test_truncated_file_is_rejected)
{
	char path[1024];
	struct nq_graph g;
	size_t len;
	uint8_t *buf = fixture(&len);
	FILE *f;

	ck_assert_int_eq(nq_onnx_load_buffer(buf, len, &g), 0);
	nq_graph_free(&g);
	for (size_t cut = 1; cut < len; cut += len / 37 + 1) {
		ck_assert_msg(nq_onnx_load_buffer(buf, cut, &g) < 0, "accepted %zu of %zu bytes", cut, len);
		nq_graph_free(&g);
	}
	snprintf(path, sizeof(path), "%s/half.onnx", nq_test_tmpdir());
	f = fopen(path, "wb");
	fwrite(buf, 1, len / 2, f);
	fclose(f);
	ck_assert_int_eq(nq_onnx_load(path, &g), -EINVAL);
	nq_graph_free(&g);
	assert_msg_has(path);
	assert_msg_has("truncated or corrupt");
	free(buf);
}
END_TEST

START_TEST(test_garbage_empty_and_missing_files)
{
	struct nq_graph g;
	uint8_t junk[256];
	unsigned seed = 99;

	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)rand_r(&seed);
	ck_assert_int_eq(nq_onnx_load_buffer(junk, sizeof(junk), &g), -EINVAL);
	nq_graph_free(&g);
	ck_assert_int_eq(nq_onnx_load_buffer(junk, 0, &g), -EINVAL);
	nq_graph_free(&g);
	ck_assert_int_eq(nq_onnx_load("/nonexistent/model.onnx", &g), -ENOENT);
	nq_graph_free(&g);
	assert_msg_has("/nonexistent/model.onnx");
}
END_TEST

/* Random byte flips: load, normalise and run must fail cleanly or work. */
START_TEST(test_corrupted_bytes_never_crash)
{
	size_t len;
	uint8_t *orig = fixture(&len), *buf = malloc(len);
	unsigned seed = 4242;
	int loaded = 0, rejected = 0;

	for (int round = 0; round < 400; round++) {
		struct nq_graph g;
		int err;

		memcpy(buf, orig, len);
		for (int k = 0; k < 1 + round % 4; k++)
			buf[(size_t)rand_r(&seed) % len] = (uint8_t)rand_r(&seed);
		err = nq_onnx_load_buffer(buf, len, &g);
		if (err) {
			ck_assert_int_lt(err, 0);
			ck_assert_msg(nq_last_error()[0], "error %d without a message", err);
			rejected++;
		} else {
			loaded++;
			if (nq_graph_normalise(&g) == 0 && g.n_inputs == 1 && g.n_outputs == 1) {
				size_t ni = nq_fp32_numel(&g, g.inputs[0], g.batch);
				size_t no = nq_fp32_numel(&g, g.outputs[0], g.batch);
				float *x = calloc(ni, sizeof(float)), *y = calloc(no, sizeof(float));
				const float *in[1] = { x };
				float *out[1] = { y };

				if (ni < (1u << 24) && no < (1u << 24))
					nq_fp32_run(&g, g.batch, in, out, NULL);
				free(x);
				free(y);
			}
		}
		nq_graph_free(&g);
	}
	/* both outcomes happen: flips in float data still load */
	ck_assert_int_gt(loaded, 0);
	ck_assert_int_gt(rejected, 0);
	free(buf);
	free(orig);
}
END_TEST

Suite *import_suite(void);

Suite *import_suite(void)
{
	Suite *s = suite_create("import");
	TCase *tc = tcase_create("bad input");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_well_formed_builder_model_loads);
	tcase_add_test(tc, test_unsupported_op_names_node_and_op_type);
	tcase_add_test(tc, test_unsupported_attribute_names_it);
	tcase_add_test(tc, test_inconsistent_shapes_are_rejected);
	tcase_add_test(tc, test_tensor_sizes_are_checked);
	tcase_add_test(tc, test_truncated_file_is_rejected);
	tcase_add_test(tc, test_garbage_empty_and_missing_files);
	tcase_add_test(tc, test_corrupted_bytes_never_crash);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return nq_test_run(import_suite());
}
