// SPDX-License-Identifier: MIT
/*
 * ONNX ModelProto -> graph IR.  protobuf-c decodes (and bounds-checks) the
 * wire format; everything it hands us is still untrusted: dims, element
 * counts, byte sizes and attribute values are checked here before use.
 */
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx.pb-c.h"
#include "graph.h"
#include "nq_error.h"
#include "onnx_import.h"

/* Protobuf messages are limited to 2 GiB; so is a model file we read. */
#define MAX_FILE_BYTES ((size_t)INT32_MAX)
/* Largest element count of one tensor (1 Gi elements). */
#define MAX_NUMEL ((uint64_t)1 << 30)
/* Largest kernel/stride/pad/dilation/axis value accepted. */
#define MAX_WINDOW (1 << 16)

static const struct {
	const char *name;
	int op;
} op_table[] = {
	{ "Conv", NQ_OP_CONV },
	{ "Gemm", NQ_OP_GEMM },
	{ "MatMul", NQ_GOP_MATMUL },
	{ "BatchNormalization", NQ_GOP_BATCHNORM },
	{ "Relu", NQ_OP_RELU },
	{ "Clip", NQ_OP_CLIP },
	{ "Add", NQ_OP_ADD },
	{ "MaxPool", NQ_OP_MAXPOOL },
	{ "AveragePool", NQ_OP_AVGPOOL },
	{ "GlobalAveragePool", NQ_OP_GLOBALAVGPOOL },
	{ "Flatten", NQ_OP_FLATTEN },
	{ "Reshape", NQ_OP_RESHAPE },
	{ "Identity", NQ_GOP_IDENTITY },
	{ "Softmax", NQ_OP_SOFTMAX },
	{ "Concat", NQ_OP_CONCAT },
	{ "Constant", NQ_GOP_CONSTANT },
	{ "Shape", NQ_GOP_SHAPE },
	{ "Gather", NQ_GOP_GATHER },
	{ "Unsqueeze", NQ_GOP_UNSQUEEZE },
	{ "Pad", NQ_GOP_PAD },
	{ "Cast", NQ_GOP_CAST },
};

static int op_lookup(const char *op_type)
{
	for (size_t i = 0; i < sizeof(op_table) / sizeof(op_table[0]); i++)
		if (!strcmp(op_table[i].name, op_type))
			return op_table[i].op;
	return -1;
}

int nq_onnx_op_supported(const char *op_type)
{
	return op_type && op_lookup(op_type) >= 0;
}

static const char *dtype_name(int dt)
{
	static const char *const names[] = {
		"UNDEFINED", "FLOAT", "UINT8", "INT8", "UINT16", "INT16", "INT32", "INT64",
		"STRING", "BOOL", "FLOAT16", "DOUBLE", "UINT32", "UINT64", "COMPLEX64",
		"COMPLEX128", "BFLOAT16",
	};

	if (dt >= 0 && dt < (int)(sizeof(names) / sizeof(names[0])))
		return names[dt];
	return "unknown";
}

/*
 * TensorProto -> tensor fields (name not touched).  Float and double become
 * float; int32 and int64 become int64.  what names the tensor in messages.
 */
static int tensor_from_proto(const Onnx__TensorProto *tp, const char *what, struct nq_tensor *t)
{
	uint64_t numel = 1;
	size_t n, esize, present;
	int dt = tp->has_data_type ? tp->data_type : 0;

	if (tp->has_data_location && tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL)
		return nq_fail(-EOPNOTSUPP, "tensor '%s': external data files are not supported", what);
	if (tp->segment)
		return nq_fail(-EOPNOTSUPP, "tensor '%s': segmented tensors are not supported", what);
	if (tp->n_dims > NQ_MAX_RANK)
		return nq_fail(-EOPNOTSUPP, "tensor '%s': rank %zu exceeds %d", what, tp->n_dims,
			       NQ_MAX_RANK);
	for (size_t i = 0; i < tp->n_dims; i++) {
		if (tp->dims[i] < 0 || (uint64_t)tp->dims[i] > MAX_NUMEL)
			return nq_fail(-EINVAL, "tensor '%s': dimension %zu is %lld", what, i,
				       (long long)tp->dims[i]);
		numel *= (uint64_t)tp->dims[i];
		if (numel > MAX_NUMEL)
			return nq_fail(-EOPNOTSUPP, "tensor '%s': more than %llu elements", what,
				       (unsigned long long)MAX_NUMEL);
	}
	if (numel == 0)
		return nq_fail(-EOPNOTSUPP, "tensor '%s': empty tensors are not supported", what);
	t->rank = (int)tp->n_dims;
	for (size_t i = 0; i < tp->n_dims; i++)
		t->dims[i] = tp->dims[i];
	n = (size_t)numel;

	/*
	 * The dims are only a claim: the values must really be in the file
	 * before anything is allocated for them (a few bytes of protobuf can
	 * declare 2^30 elements).
	 */
	switch (dt) {
	case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
		present = tp->n_float_data, esize = 4;
		break;
	case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE:
		present = tp->n_double_data, esize = 8;
		break;
	case ONNX__TENSOR_PROTO__DATA_TYPE__INT32:
		present = tp->n_int32_data, esize = 4;
		break;
	case ONNX__TENSOR_PROTO__DATA_TYPE__INT64:
		present = tp->n_int64_data, esize = 8;
		break;
	default:
		present = n, esize = 0;	/* rejected below */
	}
	if (tp->has_raw_data && tp->raw_data.len && esize) {
		if (tp->raw_data.len != n * esize)
			return nq_fail(-EINVAL, "tensor '%s': raw_data holds %zu bytes, dims need %zu",
				       what, tp->raw_data.len, n * esize);
	} else if (present != n) {
		goto count;
	}

	switch (dt) {
	case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
	case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE:
		t->dtype = NQ_ELEM_FLOAT;
		t->data = malloc(n * sizeof(float));
		if (!t->data)
			return nq_fail(-ENOMEM, "tensor '%s': out of memory", what);
		break;
	case ONNX__TENSOR_PROTO__DATA_TYPE__INT32:
	case ONNX__TENSOR_PROTO__DATA_TYPE__INT64:
		t->dtype = NQ_ELEM_INT64;
		t->i64 = malloc(n * sizeof(int64_t));
		if (!t->i64)
			return nq_fail(-ENOMEM, "tensor '%s': out of memory", what);
		break;
	default:
		return nq_fail(-EOPNOTSUPP, "tensor '%s': element type %s is not supported", what,
			       dtype_name(dt));
	}
	esize = dt == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT || dt == ONNX__TENSOR_PROTO__DATA_TYPE__INT32 ? 4 : 8;

	if (tp->has_raw_data && tp->raw_data.len) {
		const uint8_t *raw = tp->raw_data.data;

		if (tp->raw_data.len != n * esize)
			return nq_fail(-EINVAL, "tensor '%s': raw_data holds %zu bytes, dims need %zu",
				       what, tp->raw_data.len, n * esize);
		/* raw_data is little-endian, as are the hosts we build for. */
		for (size_t i = 0; i < n; i++) {
			const uint8_t *p = raw + i * esize;

			switch (dt) {
			case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
				memcpy(&t->data[i], p, 4);
				break;
			case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE: {
				double d;

				memcpy(&d, p, 8);
				t->data[i] = (float)d;
				break;
			}
			case ONNX__TENSOR_PROTO__DATA_TYPE__INT32: {
				int32_t v;

				memcpy(&v, p, 4);
				t->i64[i] = v;
				break;
			}
			default:
				memcpy(&t->i64[i], p, 8);
			}
		}
		return 0;
	}

	switch (dt) {
	case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
		if (tp->n_float_data != n)
			goto count;
		memcpy(t->data, tp->float_data, n * sizeof(float));
		break;
	case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE:
		if (tp->n_double_data != n)
			goto count;
		for (size_t i = 0; i < n; i++)
			t->data[i] = (float)tp->double_data[i];
		break;
	case ONNX__TENSOR_PROTO__DATA_TYPE__INT32:
		if (tp->n_int32_data != n)
			goto count;
		for (size_t i = 0; i < n; i++)
			t->i64[i] = tp->int32_data[i];
		break;
	default:
		if (tp->n_int64_data != n)
			goto count;
		memcpy(t->i64, tp->int64_data, n * sizeof(int64_t));
	}
	return 0;
count:
	return nq_fail(-EINVAL, "tensor '%s': holds a different number of values than its dims (%zu)",
		       what, n);
}

static void tensor_fields_free(struct nq_tensor *t)
{
	free(t->data);
	free(t->i64);
	t->data = NULL;
	t->i64 = NULL;
}

/* Add a constant tensor decoded from tp under name. */
static int add_constant(struct nq_graph *g, const char *name, const Onnx__TensorProto *tp)
{
	struct nq_tensor tmp = { 0 };
	int id, err;

	err = tensor_from_proto(tp, name, &tmp);
	if (err) {
		tensor_fields_free(&tmp);
		return err;
	}
	id = nq_graph_add_tensor(g, name, tmp.dtype, tmp.rank, tmp.dims);
	if (id < 0) {
		tensor_fields_free(&tmp);
		return id;
	}
	g->tensors[id].data = tmp.data;
	g->tensors[id].i64 = tmp.i64;
	g->tensors[id].flags |= NQ_TF_CONST;
	return id;
}

/* --- attributes ------------------------------------------------------- */

struct attrs {
	const Onnx__NodeProto *np;
	const char *op;
	char label[160];
	uint64_t used;		/* bit i: attribute i was read */
};

static const Onnx__AttributeProto *attr_find(struct attrs *a, const char *name, int type)
{
	for (size_t i = 0; i < a->np->n_attribute && i < 64; i++) {
		const Onnx__AttributeProto *ap = a->np->attribute[i];

		if (!ap->name || strcmp(ap->name, name))
			continue;
		a->used |= 1ull << i;
		/* Old exporters leave type unset; the field present tells. */
		if (ap->has_type && (int)ap->type != type)
			return (const Onnx__AttributeProto *)-1;
		return ap;
	}
	return NULL;
}

static int bad_type(struct attrs *a, const char *name)
{
	return nq_fail(-EINVAL, "%s: %s attribute '%s' has the wrong type", a->label, a->op, name);
}

static int get_int(struct attrs *a, const char *name, int64_t def, int64_t lo, int64_t hi, int64_t *out)
{
	const Onnx__AttributeProto *ap = attr_find(a, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);

	*out = def;
	if (!ap)
		return 0;
	if (ap == (void *)-1)
		return bad_type(a, name);
	if (ap->i < lo || ap->i > hi)
		return nq_fail(-EOPNOTSUPP, "%s: %s attribute %s=%lld is not supported", a->label,
			       a->op, name, (long long)ap->i);
	*out = ap->i;
	return 0;
}

static int get_float(struct attrs *a, const char *name, float def, float *out)
{
	const Onnx__AttributeProto *ap = attr_find(a, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);

	*out = def;
	if (!ap)
		return 0;
	if (ap == (void *)-1)
		return bad_type(a, name);
	*out = ap->f;
	return 0;
}

/* A list of ints of exactly want entries (want < 0: any count up to max). */
static int get_ints(struct attrs *a, const char *name, int want, int64_t lo, int64_t hi,
		    int64_t *out, int *count, int max)
{
	const Onnx__AttributeProto *ap = attr_find(a, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);

	if (count)
		*count = 0;
	if (!ap)
		return 0;
	if (ap == (void *)-1)
		return bad_type(a, name);
	if ((want >= 0 && ap->n_ints != (size_t)want) || ap->n_ints > (size_t)max)
		return nq_fail(-EOPNOTSUPP,
			       "%s: %s attribute %s has %zu values; only 2-D (NCHW) windows are supported",
			       a->label, a->op, name, ap->n_ints);
	for (size_t i = 0; i < ap->n_ints; i++) {
		if (ap->ints[i] < lo || ap->ints[i] > hi)
			return nq_fail(-EOPNOTSUPP, "%s: %s attribute %s[%zu]=%lld is not supported",
				       a->label, a->op, name, i, (long long)ap->ints[i]);
		out[i] = ap->ints[i];
	}
	if (count)
		*count = (int)ap->n_ints;
	return 1;
}

static int get_string(struct attrs *a, const char *name, char *out, size_t len)
{
	const Onnx__AttributeProto *ap = attr_find(a, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);

	out[0] = '\0';
	if (!ap)
		return 0;
	if (ap == (void *)-1)
		return bad_type(a, name);
	/* An attribute with no s field decodes as { len 0, data NULL }. */
	if (ap->s.len >= len || (ap->s.len && memchr(ap->s.data, 0, ap->s.len)))
		return nq_fail(-EOPNOTSUPP, "%s: %s attribute %s has an unsupported value", a->label,
			       a->op, name);
	if (ap->s.len)
		memcpy(out, ap->s.data, ap->s.len);
	out[ap->s.len] = '\0';
	return 1;
}

/* Attributes accepted and ignored (no effect on inference results). */
static int ignored_attr(struct attrs *a, const char *name)
{
	static const char *const names[] = {
		"consumed_inputs", /* opset < 6 bookkeeping */
		"momentum",	   /* BatchNormalization: training only */
		"broadcast",	   /* Gemm/Add opset < 7: checked by shapes */
		"axis_w",
	};

	(void)a;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcmp(name, names[i]))
			return 1;
	return 0;
}

static int check_all_used(struct attrs *a)
{
	const Onnx__NodeProto *np = a->np;

	if (np->n_attribute > 64)
		return nq_fail(-EINVAL, "%s: more than 64 attributes", a->label);
	for (size_t i = 0; i < np->n_attribute; i++) {
		const char *name = np->attribute[i]->name ? np->attribute[i]->name : "";

		if (a->used & (1ull << i) || ignored_attr(a, name))
			continue;
		return nq_fail(-EOPNOTSUPP, "%s: %s attribute '%s' is not supported", a->label, a->op,
			       name);
	}
	return 0;
}

/* kernel_shape, strides, pads, dilations, auto_pad, ceil_mode of Conv/pools */
static int window_attrs(struct attrs *a, struct nq_node *n, int has_ceil)
{
	int64_t v[4];
	char s[32];
	int err, cnt;

	err = get_ints(a, "kernel_shape", 2, 1, MAX_WINDOW, v, &cnt, 2);
	if (err < 0)
		return err;
	if (cnt) {
		n->attrs.i[NQ_A_KH] = (int)v[0];
		n->attrs.i[NQ_A_KW] = (int)v[1];
	}
	n->attrs.i[NQ_A_STRIDE_H] = n->attrs.i[NQ_A_STRIDE_W] = 1;
	err = get_ints(a, "strides", 2, 1, MAX_WINDOW, v, NULL, 2);
	if (err < 0)
		return err;
	if (err) {
		n->attrs.i[NQ_A_STRIDE_H] = (int)v[0];
		n->attrs.i[NQ_A_STRIDE_W] = (int)v[1];
	}
	err = get_ints(a, "pads", 4, 0, MAX_WINDOW, v, NULL, 4);
	if (err < 0)
		return err;
	if (err) {
		/* ONNX: [h_begin, w_begin, h_end, w_end] */
		n->attrs.i[NQ_A_PAD_T] = (int)v[0];
		n->attrs.i[NQ_A_PAD_L] = (int)v[1];
		n->attrs.i[NQ_A_PAD_B] = (int)v[2];
		n->attrs.i[NQ_A_PAD_R] = (int)v[3];
	}
	n->attrs.i[NQ_A_DIL_H] = n->attrs.i[NQ_A_DIL_W] = 1;
	err = get_ints(a, "dilations", 2, 1, MAX_WINDOW, v, NULL, 2);
	if (err < 0)
		return err;
	if (err) {
		n->attrs.i[NQ_A_DIL_H] = (int)v[0];
		n->attrs.i[NQ_A_DIL_W] = (int)v[1];
	}
	err = get_string(a, "auto_pad", s, sizeof(s));
	if (err < 0)
		return err;
	if (!err || !strcmp(s, "NOTSET"))
		n->auto_pad = NQ_AUTO_PAD_NOTSET;
	else if (!strcmp(s, "VALID"))
		n->auto_pad = NQ_AUTO_PAD_VALID;
	else if (!strcmp(s, "SAME_UPPER"))
		n->auto_pad = NQ_AUTO_PAD_SAME_UPPER;
	else if (!strcmp(s, "SAME_LOWER"))
		n->auto_pad = NQ_AUTO_PAD_SAME_LOWER;
	else
		return nq_fail(-EOPNOTSUPP, "%s: %s attribute auto_pad='%s' is not supported",
			       a->label, a->op, s);
	if (has_ceil) {
		int64_t c;

		err = get_int(a, "ceil_mode", 0, 0, 1, &c);
		if (err)
			return err;
		n->ceil_mode = (int)c;
	}
	return 0;
}

static int parse_attrs(struct nq_graph *g, struct nq_node *n, struct attrs *a)
{
	int64_t v = 0, vs[NQ_ATTR_INTS];
	float f;
	char s[32];
	int err = 0, cnt;

	switch (n->op) {
	case NQ_OP_CONV:
		err = window_attrs(a, n, 0);
		if (!err)
			err = get_int(a, "group", 1, 1, INT32_MAX, &v);
		n->attrs.i[NQ_A_GROUPS] = (int)v;
		break;
	case NQ_OP_MAXPOOL:
		err = window_attrs(a, n, 1);
		if (!err)
			err = get_int(a, "storage_order", 0, 0, 0, &v);
		break;
	case NQ_OP_AVGPOOL:
		err = window_attrs(a, n, 1);
		if (!err)
			err = get_int(a, "count_include_pad", 0, 0, 1, &v);
		n->attrs.i[NQ_A_COUNT_INCLUDE_PAD] = (int)v;
		break;
	case NQ_OP_GEMM:
		err = get_int(a, "transA", 0, 0, 1, &v);
		n->attrs.i[NQ_A_TRANS_A] = (int)v;
		if (!err)
			err = get_int(a, "transB", 0, 0, 1, &v);
		n->attrs.i[NQ_A_TRANS_B] = (int)v;
		if (!err)
			err = get_float(a, "alpha", 1.0f, &n->attrs.f[NQ_F_ALPHA]);
		if (!err)
			err = get_float(a, "beta", 1.0f, &n->attrs.f[NQ_F_BETA]);
		break;
	case NQ_GOP_BATCHNORM:
		err = get_float(a, "epsilon", 1e-5f, &n->attrs.f[NQ_F_BN_EPSILON]);
		if (!err)
			err = get_int(a, "training_mode", 0, 0, 0, &v);
		if (!err)
			err = get_int(a, "is_test", 1, 1, 1, &v);
		if (!err)
			err = get_int(a, "spatial", 1, 1, 1, &v);
		break;
	case NQ_OP_CLIP:
		/* opset < 11: bounds are attributes; later: optional inputs */
		err = get_float(a, "min", -FLT_MAX, &n->attrs.f[NQ_F_CLIP_MIN]);
		if (!err)
			err = get_float(a, "max", FLT_MAX, &n->attrs.f[NQ_F_CLIP_MAX]);
		break;
	case NQ_OP_SOFTMAX:
		err = get_int(a, "axis", g->opset < 13 ? 1 : -1, -NQ_MAX_RANK, NQ_MAX_RANK - 1, &v);
		n->attrs.i[NQ_A_AXIS] = (int)v;
		n->attrs.i[NQ_A_SOFTMAX_2D] = g->opset < 13;
		break;
	case NQ_OP_FLATTEN:
		err = get_int(a, "axis", 1, -NQ_MAX_RANK, NQ_MAX_RANK, &v);
		n->attrs.i[NQ_A_AXIS] = (int)v;
		break;
	case NQ_OP_CONCAT:
		err = get_int(a, "axis", INT32_MIN, -NQ_MAX_RANK, NQ_MAX_RANK - 1, &v);
		if (!err && v == INT32_MIN)
			err = nq_fail(-EINVAL, "%s: Concat has no axis attribute", a->label);
		n->attrs.i[NQ_A_AXIS] = (int)v;
		break;
	case NQ_OP_RESHAPE:
		err = get_int(a, "allowzero", 0, 0, 1, &v);
		n->attrs.i[1] = (int)v;
		if (!err && attr_find(a, "shape", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS))
			err = nq_fail(-EOPNOTSUPP,
				      "%s: Reshape attribute 'shape' (opset < 5) is not supported",
				      a->label);
		break;
	case NQ_GOP_CAST:
		err = get_int(a, "to", 0, 0, 16, &v);
		if (!err && v != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT && v != ONNX__TENSOR_PROTO__DATA_TYPE__INT64)
			err = nq_fail(-EOPNOTSUPP, "%s: Cast attribute to=%s is not supported", a->label,
				      dtype_name((int)v));
		n->attrs.i[0] = (int)v;
		break;
	case NQ_GOP_GATHER:
		err = get_int(a, "axis", 0, -NQ_MAX_RANK, NQ_MAX_RANK - 1, &v);
		n->attrs.i[0] = (int)v;
		break;
	case NQ_GOP_UNSQUEEZE:
		err = get_ints(a, "axes", -1, -NQ_MAX_RANK, NQ_MAX_RANK - 1, vs, &cnt, NQ_ATTR_INTS - 1);
		if (err > 0) {
			n->attrs.i[0] = cnt;
			for (int i = 0; i < cnt; i++)
				n->attrs.i[1 + i] = (int)vs[i];
			err = 0;
		}
		break;
	case NQ_GOP_SHAPE:
		err = get_int(a, "start", 0, -NQ_MAX_RANK, NQ_MAX_RANK, &v);
		n->attrs.i[0] = (int)v;
		if (!err)
			err = get_int(a, "end", NQ_MAX_RANK, -NQ_MAX_RANK, INT64_MAX, &v);
		n->attrs.i[1] = (int)(v > NQ_MAX_RANK ? NQ_MAX_RANK : v);
		break;
	case NQ_GOP_PAD:
		err = get_string(a, "mode", s, sizeof(s));
		if (err > 0 && strcmp(s, "constant"))
			return nq_fail(-EOPNOTSUPP, "%s: Pad attribute mode='%s' is not supported",
				       a->label, s);
		if (err < 0)
			return err;
		err = get_float(a, "value", 0.0f, &f);
		n->attrs.f[NQ_F_PAD_VALUE] = f;
		if (!err) {
			err = get_ints(a, "pads", 8, -MAX_WINDOW, MAX_WINDOW, vs, &cnt, 8);
			if (err > 0) {
				if (vs[0] || vs[1] || vs[4] || vs[5])
					return nq_fail(-EOPNOTSUPP,
						       "%s: Pad on the batch or channel axis is not supported",
						       a->label);
				n->attrs.i[NQ_A_PAD_T] = (int)vs[2];
				n->attrs.i[NQ_A_PAD_L] = (int)vs[3];
				n->attrs.i[NQ_A_PAD_B] = (int)vs[6];
				n->attrs.i[NQ_A_PAD_R] = (int)vs[7];
				n->attrs.i[0] = 1; /* pads came from the attribute */
				err = 0;
			}
		}
		break;
	default:
		break;
	}
	if (err)
		return err;
	return check_all_used(a);
}

/* Constant node: its value becomes a constant tensor named after the output. */
static int import_constant(struct nq_graph *g, struct attrs *a, const char *out)
{
	const Onnx__NodeProto *np = a->np;
	const Onnx__AttributeProto *ap;
	Onnx__TensorProto tp = ONNX__TENSOR_PROTO__INIT;
	int64_t dim;

	if (np->n_attribute != 1)
		return nq_fail(-EINVAL, "%s: Constant needs exactly one value attribute", a->label);
	ap = np->attribute[0];
	if (!ap->name)
		return nq_fail(-EINVAL, "%s: Constant attribute without a name", a->label);
	if (!strcmp(ap->name, "value") && ap->t)
		return add_constant(g, out, ap->t);
	/* value_float(s) / value_int(s): build a TensorProto on the stack */
	tp.has_data_type = 1;
	tp.dims = &dim;
	if (!strcmp(ap->name, "value_float")) {
		tp.data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
		tp.n_float_data = 1;
		tp.float_data = (float *)&ap->f;
	} else if (!strcmp(ap->name, "value_floats")) {
		tp.data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
		tp.n_dims = 1;
		dim = (int64_t)ap->n_floats;
		tp.n_float_data = ap->n_floats;
		tp.float_data = ap->floats;
	} else if (!strcmp(ap->name, "value_int")) {
		tp.data_type = ONNX__TENSOR_PROTO__DATA_TYPE__INT64;
		tp.n_int64_data = 1;
		tp.int64_data = (int64_t *)&ap->i;
	} else if (!strcmp(ap->name, "value_ints")) {
		tp.data_type = ONNX__TENSOR_PROTO__DATA_TYPE__INT64;
		tp.n_dims = 1;
		dim = (int64_t)ap->n_ints;
		tp.n_int64_data = ap->n_ints;
		tp.int64_data = ap->ints;
	} else {
		return nq_fail(-EOPNOTSUPP, "%s: Constant attribute '%s' is not supported", a->label,
			       ap->name);
	}
	return add_constant(g, out, &tp);
}

static int import_node(struct nq_graph *g, const Onnx__NodeProto *np, int index)
{
	struct attrs a = { .np = np };
	const char *name = np->name ? np->name : "";
	const char *op_type = np->op_type ? np->op_type : "";
	const char *out_name = NULL;
	int inputs[64], op, id, out, err;

	snprintf(a.label, sizeof(a.label), "node %d '%s'", index, name);
	a.op = op_type;
	if (np->domain && np->domain[0] && strcmp(np->domain, "ai.onnx"))
		return nq_fail(-EOPNOTSUPP, "%s: operator '%s' of domain '%s' is not supported",
			       a.label, op_type, np->domain);
	op = op_lookup(op_type);
	if (op < 0)
		return nq_fail(-EOPNOTSUPP, "%s: operator '%s' is not supported", a.label, op_type);

	/* Every accepted op has one output; extra ones (MaxPool Indices,
	 * BatchNormalization training statistics) must be left unnamed. */
	for (size_t i = 0; i < np->n_output; i++) {
		const char *o = np->output[i] ? np->output[i] : "";

		if (i == 0) {
			out_name = o;
		} else if (o[0]) {
			return nq_fail(-EOPNOTSUPP, "%s: %s output %zu ('%s') is not supported", a.label,
				       op_type, i, o);
		}
	}
	if (!out_name || !out_name[0])
		return nq_fail(-EINVAL, "%s: %s has no output", a.label, op_type);
	if (nq_graph_find(g, out_name) >= 0)
		return nq_fail(-EINVAL, "%s: output '%s' is defined twice", a.label, out_name);

	if (op == NQ_GOP_CONSTANT) {
		err = import_constant(g, &a, out_name);
		return err < 0 ? nq_fail_context(err, "%s", a.label) : 0;
	}

	if (np->n_input > sizeof(inputs) / sizeof(inputs[0]))
		return nq_fail(-EOPNOTSUPP, "%s: %s with %zu inputs is not supported", a.label, op_type,
			       np->n_input);
	for (size_t i = 0; i < np->n_input; i++) {
		const char *in = np->input[i] ? np->input[i] : "";

		if (!in[0]) {
			inputs[i] = -1;
			continue;
		}
		inputs[i] = nq_graph_find(g, in);
		if (inputs[i] < 0)
			return nq_fail(-EINVAL, "%s: input '%s' is not defined by an earlier node", a.label,
				       in);
	}
	out = nq_graph_add_tensor(g, out_name, NQ_ELEM_FLOAT, 0, NULL);
	if (out < 0)
		return out;
	id = nq_graph_add_node(g, op, name, op_type, inputs, (int)np->n_input, out);
	if (id < 0)
		return id;
	g->nodes[id].index = index;
	g->tensors[out].producer = id;
	return parse_attrs(g, &g->nodes[id], &a);
}

/* A graph input the caller binds to a constant value. */
static int bind_input(struct nq_graph *g, const char *name, const struct nq_tensor *v)
{
	size_t n = nq_tensor_numel(v);
	int id = nq_graph_add_tensor(g, name, v->dtype, v->rank, v->dims);
	struct nq_tensor *t;

	if (id < 0)
		return id;
	t = &g->tensors[id];
	if (v->dtype == NQ_ELEM_FLOAT && v->data) {
		t->data = malloc(n * sizeof(float));
		if (t->data)
			memcpy(t->data, v->data, n * sizeof(float));
	} else if (v->dtype == NQ_ELEM_INT64 && v->i64) {
		t->i64 = malloc(n * sizeof(int64_t));
		if (t->i64)
			memcpy(t->i64, v->i64, n * sizeof(int64_t));
	} else {
		return nq_fail(-EINVAL, "binding for input '%s' has no data", name);
	}
	if (!t->data && !t->i64)
		return nq_fail(-ENOMEM, "out of memory");
	t->flags |= NQ_TF_CONST;
	return 0;
}

static int import_input(struct nq_graph *g, const Onnx__ValueInfoProto *vi,
			const struct nq_tensor *binds, int n_binds)
{
	const char *name = vi->name ? vi->name : "";
	const Onnx__TypeProto__Tensor *tt;
	int64_t dims[NQ_MAX_RANK];
	int id, *arr;

	if (nq_graph_find(g, name) >= 0) /* IR < 4 lists initializers as inputs too */
		return 0;
	for (int i = 0; i < n_binds; i++)
		if (binds[i].name && !strcmp(binds[i].name, name))
			return bind_input(g, name, &binds[i]);
	if (!vi->type || vi->type->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE)
		return nq_fail(-EOPNOTSUPP, "graph input '%s' is not a tensor", name);
	tt = vi->type->tensor_type;
	if (!tt->has_elem_type || tt->elem_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT)
		return nq_fail(-EOPNOTSUPP, "graph input '%s' has element type %s; only FLOAT is supported",
			       name, dtype_name(tt->has_elem_type ? tt->elem_type : 0));
	if (!tt->shape)
		return nq_fail(-EOPNOTSUPP, "graph input '%s' has no shape", name);
	if (tt->shape->n_dim > NQ_MAX_ACT_RANK)
		return nq_fail(-EOPNOTSUPP, "graph input '%s' has rank %zu; ranks 0 to %d are supported",
			       name, tt->shape->n_dim, NQ_MAX_ACT_RANK);
	for (size_t i = 0; i < tt->shape->n_dim; i++) {
		const Onnx__TensorShapeProto__Dimension *d = tt->shape->dim[i];

		if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE) {
			if (d->dim_value < 1 || (uint64_t)d->dim_value > MAX_NUMEL)
				return nq_fail(-EOPNOTSUPP, "graph input '%s': dimension %zu is %lld", name,
					       i, (long long)d->dim_value);
			dims[i] = d->dim_value;
		} else if (i == 0) {
			dims[i] = 1;	/* symbolic batch */
			if (g->n_inputs == 0)
				g->batch_symbolic = 1;
		} else {
			return nq_fail(-EOPNOTSUPP,
				       "graph input '%s': dimension %zu is symbolic ('%s'); only the batch may be",
				       name, i,
				       d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM &&
						       d->dim_param ? d->dim_param : "");
		}
	}
	id = nq_graph_add_tensor(g, name, NQ_ELEM_FLOAT, (int)tt->shape->n_dim, dims);
	if (id < 0)
		return id;
	g->tensors[id].flags |= NQ_TF_INPUT;
	arr = realloc(g->inputs, (size_t)(g->n_inputs + 1) * sizeof(int));
	if (!arr)
		return nq_fail(-ENOMEM, "out of memory");
	g->inputs = arr;
	if (g->n_inputs == 0)
		g->batch = tt->shape->n_dim ? (int)dims[0] : 1;
	g->inputs[g->n_inputs++] = id;
	return 0;
}

static int import_model(struct nq_graph *g, const Onnx__ModelProto *m, const struct nq_tensor *binds,
			int n_binds)
{
	const Onnx__GraphProto *gp = m->graph;
	int err;

	if (!gp)
		return nq_fail(-EINVAL, "the model has no graph");
	g->opset = 1;
	for (size_t i = 0; i < m->n_opset_import; i++) {
		const Onnx__OperatorSetIdProto *os = m->opset_import[i];

		if ((!os->domain || !os->domain[0] || !strcmp(os->domain, "ai.onnx")) && os->has_version)
			g->opset = os->version > INT32_MAX ? INT32_MAX : (int)os->version;
	}
	if (gp->n_sparse_initializer)
		return nq_fail(-EOPNOTSUPP, "sparse initializers are not supported");
	for (size_t i = 0; i < gp->n_initializer; i++) {
		const char *name = gp->initializer[i]->name ? gp->initializer[i]->name : "";

		if (!name[0])
			return nq_fail(-EINVAL, "initializer %zu has no name", i);
		if (nq_graph_find(g, name) >= 0)
			return nq_fail(-EINVAL, "initializer '%s' is defined twice", name);
		err = add_constant(g, name, gp->initializer[i]);
		if (err < 0)
			return nq_fail_context(err, "initializer %zu", i);
	}
	for (size_t i = 0; i < gp->n_input; i++) {
		err = import_input(g, gp->input[i], binds, n_binds);
		if (err)
			return err;
	}
	if (g->n_inputs == 0)
		return nq_fail(-EINVAL, "the graph has no (non-constant) input");
	if (gp->n_node > (1u << 20))
		return nq_fail(-E2BIG, "the graph has %zu nodes", gp->n_node);
	for (size_t i = 0; i < gp->n_node; i++) {
		err = import_node(g, gp->node[i], (int)i);
		if (err)
			return err;
	}
	if (gp->n_output == 0)
		return nq_fail(-EINVAL, "the graph has no output");
	g->outputs = calloc(gp->n_output, sizeof(int));
	if (!g->outputs)
		return nq_fail(-ENOMEM, "out of memory");
	for (size_t i = 0; i < gp->n_output; i++) {
		const char *name = gp->output[i]->name ? gp->output[i]->name : "";
		int id = nq_graph_find(g, name);

		if (id < 0)
			return nq_fail(-EINVAL, "graph output '%s' is not produced by any node", name);
		g->tensors[id].flags |= NQ_TF_OUTPUT;
		g->outputs[g->n_outputs++] = id;
	}
	return nq_graph_infer_shapes(g);
}

static int load_buffer(const void *buf, size_t len, struct nq_graph *g,
		       const struct nq_tensor *binds, int n_binds)
{
	Onnx__ModelProto *m;
	int err;

	nq_graph_init(g);
	if (len == 0)
		return nq_fail(-EINVAL, "empty file: not an ONNX model");
	m = onnx__model_proto__unpack(NULL, len, buf);
	if (!m)
		return nq_fail(-EINVAL, "not a valid ONNX model (protobuf decoding failed: truncated or corrupt)");
	err = import_model(g, m, binds, n_binds);
	onnx__model_proto__free_unpacked(m, NULL);
	return err;
}

int nq_onnx_load_buffer(const void *buf, size_t len, struct nq_graph *g)
{
	return load_buffer(buf, len, g, NULL, 0);
}

static int read_file(const char *path, uint8_t **buf, size_t *len)
{
	FILE *f = fopen(path, "rb");
	long size;
	int err = 0;

	*buf = NULL;
	if (!f)
		return nq_fail(-errno, "cannot open '%s': %s", path, strerror(errno));
	if (fseek(f, 0, SEEK_END) || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET)) {
		err = nq_fail(-EIO, "cannot read '%s'", path);
		goto out;
	}
	if ((size_t)size > MAX_FILE_BYTES) {
		err = nq_fail(-EFBIG, "'%s' is larger than 2 GiB", path);
		goto out;
	}
	*buf = malloc(size ? (size_t)size : 1);
	if (!*buf) {
		err = nq_fail(-ENOMEM, "out of memory reading '%s'", path);
		goto out;
	}
	if (fread(*buf, 1, (size_t)size, f) != (size_t)size) {
		err = nq_fail(-EIO, "short read on '%s'", path);
		free(*buf);
		*buf = NULL;
		goto out;
	}
	*len = (size_t)size;
out:
	fclose(f);
	return err;
}

int nq_onnx_load_bound(const char *path, struct nq_graph *g, const struct nq_tensor *binds,
		       int n_binds)
{
	uint8_t *buf;
	size_t len;
	int err;

	nq_graph_init(g);
	err = read_file(path, &buf, &len);
	if (err)
		return err;
	err = load_buffer(buf, len, g, binds, n_binds);
	free(buf);
	if (err)
		return nq_fail_context(err, "%s", path);
	return 0;
}

int nq_onnx_load(const char *path, struct nq_graph *g)
{
	return nq_onnx_load_bound(path, g, NULL, 0);
}

int nq_onnx_read_tensor(const char *path, struct nq_tensor *t)
{
	Onnx__TensorProto *tp;
	uint8_t *buf;
	size_t len;
	int err;

	memset(t, 0, sizeof(*t));
	t->producer = -1;
	err = read_file(path, &buf, &len);
	if (err)
		return err;
	tp = onnx__tensor_proto__unpack(NULL, len, buf);
	free(buf);
	if (!tp)
		return nq_fail(-EINVAL, "%s: not a valid TensorProto", path);
	err = tensor_from_proto(tp, tp->name ? tp->name : path, t);
	if (!err) {
		t->name = strdup(tp->name ? tp->name : "");
		if (!t->name)
			err = nq_fail(-ENOMEM, "out of memory");
	}
	if (err)
		tensor_fields_free(t);
	onnx__tensor_proto__free_unpacked(tp, NULL);
	return err;
}
