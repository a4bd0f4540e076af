// SPDX-License-Identifier: MIT
/*
 * Shape inference over the graph IR, in node order.  Every operand is checked
 * here (ranks, matching dims, element types), so the FP32 executor and the
 * passes can trust shapes.  Shape arithmetic (Shape, Gather, Unsqueeze,
 * Concat of int64, Identity/Reshape of constants) is evaluated into constant
 * tensors, which is how PyTorch's `x.view(x.size(0), -1)` becomes a constant
 * Reshape target.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph.h"
#include "nq_error.h"

#define MAX_NUMEL ((uint64_t)1 << 30)

struct ctx {
	struct nq_graph *g;
	struct nq_node *n;
	char label[160];
};

static struct nq_tensor *in(struct ctx *c, int i)
{
	if (i >= c->n->n_inputs || c->n->inputs[i] < 0)
		return NULL;
	return &c->g->tensors[c->n->inputs[i]];
}

static struct nq_tensor *out(struct ctx *c)
{
	return &c->g->tensors[c->n->output];
}

static int fail_unsup(struct ctx *c, const char *what)
{
	return nq_fail(-EOPNOTSUPP, "%s: %s %s is not supported", c->label, c->n->op_type, what);
}

static void dims_str(const struct nq_tensor *t, char *buf, size_t len)
{
	size_t o = 0;

	o += (size_t)snprintf(buf, len, "[");
	for (int i = 0; i < t->rank && o < len; i++)
		o += (size_t)snprintf(buf + o, len - o, "%s%lld", i ? "," : "", (long long)t->dims[i]);
	if (o < len)
		snprintf(buf + o, len - o, "]");
}

/* Set the output shape of the current node after checking it. */
static int set_out(struct ctx *c, int dtype, int rank, const int64_t *dims)
{
	struct nq_tensor *t = out(c);
	uint64_t numel = 1;

	if (rank > NQ_MAX_RANK || (dtype == NQ_ELEM_FLOAT && !(t->flags & NQ_TF_CONST) &&
				   (rank < 1 || rank > NQ_MAX_ACT_RANK)))
		return nq_fail(-EOPNOTSUPP, "%s: %s output of rank %d is not supported (ranks 1..%d)",
			       c->label, c->n->op_type, rank, NQ_MAX_ACT_RANK);
	for (int i = 0; i < rank; i++) {
		if (dims[i] < 1)
			return nq_fail(-EOPNOTSUPP, "%s: %s output dimension %d would be %lld", c->label,
				       c->n->op_type, i, (long long)dims[i]);
		numel *= (uint64_t)dims[i];
		if (numel > MAX_NUMEL)
			return nq_fail(-EOPNOTSUPP, "%s: %s output has more than %llu elements", c->label,
				       c->n->op_type, (unsigned long long)MAX_NUMEL);
	}
	t->dtype = dtype;
	t->rank = rank;
	memcpy(t->dims, dims, (size_t)rank * sizeof(int64_t));
	return 0;
}

static int need_float(struct ctx *c, const struct nq_tensor *t, const char *what)
{
	if (!t)
		return nq_fail(-EINVAL, "%s: %s has no %s input", c->label, c->n->op_type, what);
	if (t->dtype != NQ_ELEM_FLOAT)
		return nq_fail(-EOPNOTSUPP, "%s: %s input '%s' is not FLOAT", c->label, c->n->op_type,
			       t->name);
	return 0;
}

static int need_rank(struct ctx *c, const struct nq_tensor *t, const char *what, int rank)
{
	int err = need_float(c, t, what);

	if (err)
		return err;
	if (t->rank != rank) {
		char msg[96];

		snprintf(msg, sizeof(msg), "on a rank-%d %s ('%s'; rank %d expected)", t->rank, what,
			 t->name, rank);
		return fail_unsup(c, msg);
	}
	return 0;
}

/* The output becomes a constant int64 tensor with these values. */
static int set_const_i64(struct ctx *c, int rank, const int64_t *dims, const int64_t *v, size_t n)
{
	struct nq_tensor *t = out(c);
	int err;

	t->flags |= NQ_TF_CONST;
	err = set_out(c, NQ_ELEM_INT64, rank, dims);
	if (err)
		return err;
	free(t->i64);
	t->i64 = malloc((n ? n : 1) * sizeof(int64_t));
	if (!t->i64)
		return nq_fail(-ENOMEM, "out of memory");
	memcpy(t->i64, v, n * sizeof(int64_t));
	return 0;
}

/* Identity/Reshape/Unsqueeze of a constant: copy the value, new dims. */
static int copy_const(struct ctx *c, const struct nq_tensor *src, int rank, const int64_t *dims)
{
	struct nq_tensor *t = out(c);
	size_t n = nq_tensor_numel(src);
	int err;

	if (src->dtype == NQ_ELEM_INT64)
		return set_const_i64(c, rank, dims, src->i64, n);
	t->flags |= NQ_TF_CONST;
	err = set_out(c, NQ_ELEM_FLOAT, rank, dims);
	if (err)
		return err;
	free(t->data);
	t->data = malloc(n * sizeof(float));
	if (!t->data)
		return nq_fail(-ENOMEM, "out of memory");
	memcpy(t->data, src->data, n * sizeof(float));
	return 0;
}

/* Resolve auto_pad / ceil_mode into explicit pads and compute out size. */
static int window_dim(struct ctx *c, int64_t size, int k, int s, int d, int *pb, int *pe,
		      int64_t *outsz, int ceil_mode)
{
	int64_t eff = (int64_t)(k - 1) * d + 1, o;

	switch (c->n->auto_pad) {
	case NQ_AUTO_PAD_VALID:
		*pb = *pe = 0;
		break;
	case NQ_AUTO_PAD_SAME_UPPER:
	case NQ_AUTO_PAD_SAME_LOWER: {
		int64_t want = (size + s - 1) / s;
		int64_t total = (want - 1) * s + eff - size;

		if (total < 0)
			total = 0;
		if (c->n->auto_pad == NQ_AUTO_PAD_SAME_UPPER) {
			*pb = (int)(total / 2);
			*pe = (int)(total - total / 2);
		} else {
			*pe = (int)(total / 2);
			*pb = (int)(total - total / 2);
		}
		break;
	}
	default:
		break;
	}
	if (size + *pb + *pe < eff)
		return nq_fail(-EINVAL, "%s: %s window %lld is larger than the padded input %lld",
			       c->label, c->n->op_type, (long long)eff, (long long)(size + *pb + *pe));
	if (ceil_mode) {
		o = (size + *pb + *pe - eff + s - 1) / s + 1;
		/* the last window must start inside the input or the begin pad */
		if ((o - 1) * s >= size + *pb)
			o--;
		if ((o - 1) * s + eff > size + *pb + *pe)
			*pe = (int)((o - 1) * s + eff - size - *pb);
	} else {
		o = (size + *pb + *pe - eff) / s + 1;
	}
	*outsz = o;
	return 0;
}

static int infer_window(struct ctx *c, const struct nq_tensor *x, int64_t *od, int is_pool)
{
	struct nq_attrs *a = &c->n->attrs;
	int cip_before = a->i[NQ_A_PAD_B] + a->i[NQ_A_PAD_R];
	int err;

	err = window_dim(c, x->dims[2], a->i[NQ_A_KH], a->i[NQ_A_STRIDE_H], a->i[NQ_A_DIL_H],
			 &a->i[NQ_A_PAD_T], &a->i[NQ_A_PAD_B], &od[2], c->n->ceil_mode);
	if (!err)
		err = window_dim(c, x->dims[3], a->i[NQ_A_KW], a->i[NQ_A_STRIDE_W], a->i[NQ_A_DIL_W],
				 &a->i[NQ_A_PAD_L], &a->i[NQ_A_PAD_R], &od[3], c->n->ceil_mode);
	if (err)
		return err;
	if (c->n->ceil_mode && c->n->op == NQ_OP_AVGPOOL && a->i[NQ_A_COUNT_INCLUDE_PAD] &&
	    a->i[NQ_A_PAD_B] + a->i[NQ_A_PAD_R] != cip_before)
		return fail_unsup(c, "with ceil_mode=1 and count_include_pad=1");
	c->n->ceil_mode = 0;
	c->n->auto_pad = NQ_AUTO_PAD_NOTSET;
	if (is_pool) {
		int eh = (a->i[NQ_A_KH] - 1) * a->i[NQ_A_DIL_H] + 1;
		int ew = (a->i[NQ_A_KW] - 1) * a->i[NQ_A_DIL_W] + 1;

		/* a window entirely in the padding has no defined value */
		if (a->i[NQ_A_PAD_T] >= eh || a->i[NQ_A_PAD_B] >= eh || a->i[NQ_A_PAD_L] >= ew ||
		    a->i[NQ_A_PAD_R] >= ew)
			return fail_unsup(c, "with pads as large as the window");
	}
	return 0;
}

static int infer_conv(struct ctx *c)
{
	struct nq_node *n = c->n;
	struct nq_tensor *x = in(c, 0), *w = NULL, *b;
	int64_t od[4], oc, cg, kh, kw, groups = n->attrs.i[NQ_A_GROUPS];
	int err;

	err = need_rank(c, x, "data input (only 2-D convolution on NCHW)", 4);
	if (err)
		return err;
	if (n->weight) {
		oc = n->oc;
		cg = n->cin_per_group;
		kh = n->attrs.i[NQ_A_KH];
		kw = n->attrs.i[NQ_A_KW];
	} else {
		w = in(c, 1);
		err = need_rank(c, w, "weight", 4);
		if (err)
			return err;
		oc = w->dims[0];
		cg = w->dims[1];
		kh = w->dims[2];
		kw = w->dims[3];
		if ((n->attrs.i[NQ_A_KH] && n->attrs.i[NQ_A_KH] != kh) ||
		    (n->attrs.i[NQ_A_KW] && n->attrs.i[NQ_A_KW] != kw))
			return nq_fail(-EINVAL, "%s: Conv kernel_shape %dx%d does not match the weight %lldx%lld",
				       c->label, n->attrs.i[NQ_A_KH], n->attrs.i[NQ_A_KW],
				       (long long)kh, (long long)kw);
		if (kh > (1 << 16) || kw > (1 << 16))
			return fail_unsup(c, "kernel larger than 65536");
		n->attrs.i[NQ_A_KH] = (int)kh;
		n->attrs.i[NQ_A_KW] = (int)kw;
		b = in(c, 2);
		if (b) {
			err = need_rank(c, b, "bias", 1);
			if (err)
				return err;
			if (b->dims[0] != oc)
				return nq_fail(-EINVAL, "%s: Conv bias has %lld values for %lld channels",
					       c->label, (long long)b->dims[0], (long long)oc);
		}
	}
	if (groups < 1 || x->dims[1] % groups || oc % groups || x->dims[1] / groups != cg)
		return nq_fail(-EINVAL,
			       "%s: Conv input has %lld channels, weight [%lld,%lld,..] with group=%lld",
			       c->label, (long long)x->dims[1], (long long)oc, (long long)cg,
			       (long long)groups);
	err = infer_window(c, x, od, 0);
	if (err)
		return err;
	od[0] = x->dims[0];
	od[1] = oc;
	return set_out(c, NQ_ELEM_FLOAT, 4, od);
}

static int infer_pool(struct ctx *c)
{
	struct nq_tensor *x = in(c, 0);
	int64_t od[4];
	int err;

	err = need_rank(c, x, "input (only 2-D pooling on NCHW)", 4);
	if (err)
		return err;
	if (c->n->op == NQ_OP_GLOBALAVGPOOL) {
		od[0] = x->dims[0];
		od[1] = x->dims[1];
		od[2] = od[3] = 1;
		return set_out(c, NQ_ELEM_FLOAT, 4, od);
	}
	if (!c->n->attrs.i[NQ_A_KH] || !c->n->attrs.i[NQ_A_KW])
		return nq_fail(-EINVAL, "%s: %s has no kernel_shape", c->label, c->n->op_type);
	err = infer_window(c, x, od, 1);
	if (err)
		return err;
	od[0] = x->dims[0];
	od[1] = x->dims[1];
	return set_out(c, NQ_ELEM_FLOAT, 4, od);
}

static int infer_gemm(struct ctx *c)
{
	struct nq_node *n = c->n;
	struct nq_tensor *a = in(c, 0), *b, *cc;
	int64_t od[2], m, k, k2, nn;
	int err;

	err = need_rank(c, a, "input A (only 2-D matrices)", 2);
	if (err)
		return err;
	if (n->weight) {
		if (a->dims[1] != n->k)
			return nq_fail(-EINVAL, "%s: Gemm input has %lld features, weight %d", c->label,
				       (long long)a->dims[1], n->k);
		od[0] = a->dims[0];
		od[1] = n->oc;
		return set_out(c, NQ_ELEM_FLOAT, 2, od);
	}
	b = in(c, 1);
	err = need_rank(c, b, "input B (only 2-D matrices)", 2);
	if (err)
		return err;
	if (n->op == NQ_GOP_MATMUL) {
		m = a->dims[0], k = a->dims[1], k2 = b->dims[0], nn = b->dims[1];
	} else {
		m = a->dims[n->attrs.i[NQ_A_TRANS_A] ? 1 : 0];
		k = a->dims[n->attrs.i[NQ_A_TRANS_A] ? 0 : 1];
		k2 = b->dims[n->attrs.i[NQ_A_TRANS_B] ? 1 : 0];
		nn = b->dims[n->attrs.i[NQ_A_TRANS_B] ? 0 : 1];
	}
	if (k != k2)
		return nq_fail(-EINVAL, "%s: %s inner dimensions differ (%lld vs %lld)", c->label,
			       n->op_type, (long long)k, (long long)k2);
	cc = n->op == NQ_OP_GEMM ? in(c, 2) : NULL;
	if (cc) {
		int ok;

		err = need_float(c, cc, "C");
		if (err)
			return err;
		/* unidirectional broadcast of C to [M][N] */
		switch (cc->rank) {
		case 0:
			ok = 1;
			break;
		case 1:
			ok = cc->dims[0] == nn || cc->dims[0] == 1;
			break;
		case 2:
			ok = (cc->dims[0] == m || cc->dims[0] == 1) && (cc->dims[1] == nn || cc->dims[1] == 1);
			break;
		default:
			ok = 0;
		}
		if (!ok)
			return nq_fail(-EINVAL, "%s: Gemm C does not broadcast to [%lld,%lld]", c->label,
				       (long long)m, (long long)nn);
	}
	od[0] = m;
	od[1] = nn;
	return set_out(c, NQ_ELEM_FLOAT, 2, od);
}

static int infer_batchnorm(struct ctx *c)
{
	struct nq_tensor *x = in(c, 0);
	static const char *const what[] = { "scale", "B", "mean", "var" };
	int err = need_float(c, x, "X");

	if (err)
		return err;
	if (x->rank < 2)
		return fail_unsup(c, "on a rank-1 input");
	for (int i = 1; i <= 4; i++) {
		struct nq_tensor *p = in(c, i);

		err = need_rank(c, p, what[i - 1], 1);
		if (err)
			return err;
		if (p->dims[0] != x->dims[1])
			return nq_fail(-EINVAL, "%s: BatchNormalization %s has %lld values for %lld channels",
				       c->label, what[i - 1], (long long)p->dims[0], (long long)x->dims[1]);
	}
	if (!(c->n->attrs.f[NQ_F_BN_EPSILON] >= 0.0f))
		return fail_unsup(c, "with a negative epsilon");
	return set_out(c, NQ_ELEM_FLOAT, x->rank, x->dims);
}

static int infer_unary(struct ctx *c)
{
	struct nq_tensor *x = in(c, 0);
	int err = need_float(c, x, "data");

	if (err)
		return err;
	if (c->n->op == NQ_OP_CLIP) {
		for (int i = 1; i <= 2; i++) {
			struct nq_tensor *b = in(c, i);

			if (b && (b->dtype != NQ_ELEM_FLOAT || nq_tensor_numel(b) != 1))
				return fail_unsup(c, "with a non-scalar or non-float bound");
		}
	}
	return set_out(c, NQ_ELEM_FLOAT, x->rank, x->dims);
}

static int infer_add(struct ctx *c)
{
	struct nq_tensor *a = in(c, 0), *b = in(c, 1);
	char sa[64], sb[64], msg[160];
	int err;

	err = need_float(c, a, "A");
	if (!err)
		err = need_float(c, b, "B");
	if (err)
		return err;
	if (a->rank != b->rank || memcmp(a->dims, b->dims, (size_t)a->rank * sizeof(int64_t))) {
		dims_str(a, sa, sizeof(sa));
		dims_str(b, sb, sizeof(sb));
		snprintf(msg, sizeof(msg), "with broadcasting (shapes %s and %s)", sa, sb);
		return fail_unsup(c, msg);
	}
	return set_out(c, NQ_ELEM_FLOAT, a->rank, a->dims);
}

static int norm_axis(struct ctx *c, int axis, int rank, int allow_rank)
{
	int a = axis < 0 ? axis + rank : axis;

	if (a < 0 || a > rank - !allow_rank)
		return nq_fail(-EINVAL, "%s: %s axis %d is out of range for rank %d", c->label,
			       c->n->op_type, axis, rank);
	return a;
}

static int infer_flatten(struct ctx *c)
{
	struct nq_tensor *x = in(c, 0);
	int64_t od[2] = { 1, 1 };
	int axis, err = need_float(c, x, "data");

	if (err)
		return err;
	axis = norm_axis(c, c->n->attrs.i[NQ_A_AXIS], x->rank, 1);
	if (axis < 0)
		return axis;
	c->n->attrs.i[NQ_A_AXIS] = axis;
	for (int i = 0; i < x->rank; i++)
		od[i >= axis] *= x->dims[i];
	if (x->flags & NQ_TF_CONST)
		return copy_const(c, x, 2, od);
	return set_out(c, NQ_ELEM_FLOAT, 2, od);
}

static int infer_reshape(struct ctx *c)
{
	struct nq_tensor *x = in(c, 0), *s = in(c, 1);
	int64_t od[NQ_MAX_RANK];
	size_t want, have = 1;
	int rank, minus = -1;

	if (!x)
		return nq_fail(-EINVAL, "%s: Reshape has no data input", c->label);
	want = nq_tensor_numel(x);
	if (c->n->n_inputs == 1) {	/* normalised: the output dims are the target */
		if (nq_tensor_numel(out(c)) != want)
			return nq_fail(-EINVAL, "%s: Reshape changes the element count", c->label);
		return 0;
	}
	if (!s || !(s->flags & NQ_TF_CONST) || s->dtype != NQ_ELEM_INT64 || s->rank != 1)
		return fail_unsup(c, "with a shape that is not a constant int64 vector");
	if (s->dims[0] > NQ_MAX_RANK)
		return fail_unsup(c, "to more than 8 dimensions");
	rank = (int)s->dims[0];
	for (int i = 0; i < rank; i++) {
		int64_t v = s->i64[i];

		if (v == 0 && !c->n->attrs.i[1]) {
			if (i >= x->rank)
				return nq_fail(-EINVAL, "%s: Reshape copies dimension %d of a rank-%d input",
					       c->label, i, x->rank);
			v = x->dims[i];
		} else if (v == -1) {
			if (minus >= 0)
				return nq_fail(-EINVAL, "%s: Reshape target has two -1 entries", c->label);
			minus = i;
			v = 1;
		} else if (v < 1) {
			return fail_unsup(c, "to an empty or negative dimension");
		}
		if (v > (int64_t)MAX_NUMEL)
			return nq_fail(-EINVAL, "%s: Reshape dimension %lld", c->label, (long long)v);
		od[i] = v;
		have *= (size_t)v;
		if (have > MAX_NUMEL)
			return nq_fail(-EINVAL, "%s: Reshape target too large", c->label);
	}
	if (minus >= 0) {
		if (want % have)
			return nq_fail(-EINVAL, "%s: Reshape cannot infer the -1 dimension", c->label);
		od[minus] = (int64_t)(want / have);
		have = want;
	}
	if (have != want)
		return nq_fail(-EINVAL, "%s: Reshape of %zu elements into %zu", c->label, want, have);
	if (x->flags & NQ_TF_CONST)
		return copy_const(c, x, rank, od);
	return set_out(c, NQ_ELEM_FLOAT, rank, od);
}

static int infer_softmax(struct ctx *c)
{
	struct nq_tensor *x = in(c, 0);
	int axis, err = need_float(c, x, "data");

	if (err)
		return err;
	axis = norm_axis(c, c->n->attrs.i[NQ_A_AXIS], x->rank, 0);
	if (axis < 0)
		return axis;
	c->n->attrs.i[NQ_A_AXIS] = axis;
	return set_out(c, NQ_ELEM_FLOAT, x->rank, x->dims);
}

static int infer_concat(struct ctx *c)
{
	struct nq_tensor *x = in(c, 0);
	int64_t od[NQ_MAX_RANK];
	int axis;

	if (!x || c->n->n_inputs < 1)
		return nq_fail(-EINVAL, "%s: Concat has no inputs", c->label);
	if (x->dtype == NQ_ELEM_INT64) {	/* shape arithmetic */
		int64_t v[NQ_MAX_RANK * 4];
		size_t nv = 0;

		for (int i = 0; i < c->n->n_inputs; i++) {
			struct nq_tensor *t = in(c, i);

			if (!t || !(t->flags & NQ_TF_CONST) || t->dtype != NQ_ELEM_INT64 || t->rank != 1)
				return fail_unsup(c, "of int64 values that are not constant vectors");
			if (nv + (size_t)t->dims[0] > sizeof(v) / sizeof(v[0]))
				return fail_unsup(c, "of more than 32 int64 values");
			memcpy(v + nv, t->i64, (size_t)t->dims[0] * sizeof(int64_t));
			nv += (size_t)t->dims[0];
		}
		od[0] = (int64_t)nv;
		return set_const_i64(c, 1, od, v, nv);
	}
	axis = norm_axis(c, c->n->attrs.i[NQ_A_AXIS], x->rank, 0);
	if (axis < 0)
		return axis;
	c->n->attrs.i[NQ_A_AXIS] = axis;
	memcpy(od, x->dims, sizeof(od));
	od[axis] = 0;
	for (int i = 0; i < c->n->n_inputs; i++) {
		struct nq_tensor *t = in(c, i);
		int err = need_float(c, t, "data");

		if (err)
			return err;
		if (t->rank != x->rank)
			return nq_fail(-EINVAL, "%s: Concat inputs of different ranks", c->label);
		for (int d = 0; d < x->rank; d++)
			if (d != axis && t->dims[d] != x->dims[d])
				return nq_fail(-EINVAL, "%s: Concat input %d differs in dimension %d",
					       c->label, i, d);
		od[axis] += t->dims[axis];
	}
	return set_out(c, NQ_ELEM_FLOAT, x->rank, od);
}

static int infer_pad(struct ctx *c)
{
	struct nq_attrs *a = &c->n->attrs;
	struct nq_tensor *x = in(c, 0), *p = in(c, 1), *v = in(c, 2);
	int64_t od[4];
	int err = need_rank(c, x, "input (only NCHW)", 4);

	if (err)
		return err;
	if (!a->i[0]) {		/* opset >= 11: pads (and value) are inputs */
		if (!p || !(p->flags & NQ_TF_CONST) || p->dtype != NQ_ELEM_INT64 || p->rank != 1 ||
		    p->dims[0] != 8)
			return fail_unsup(c, "with pads that are not a constant int64[8]");
		if (p->i64[0] || p->i64[1] || p->i64[4] || p->i64[5])
			return fail_unsup(c, "on the batch or channel axis");
		for (int i = 0; i < 8; i++)
			if (p->i64[i] < 0 || p->i64[i] > (1 << 16))
				return fail_unsup(c, "with negative or huge pads");
		a->i[NQ_A_PAD_T] = (int)p->i64[2];
		a->i[NQ_A_PAD_L] = (int)p->i64[3];
		a->i[NQ_A_PAD_B] = (int)p->i64[6];
		a->i[NQ_A_PAD_R] = (int)p->i64[7];
		if (v) {
			if (!(v->flags & NQ_TF_CONST) || v->dtype != NQ_ELEM_FLOAT || nq_tensor_numel(v) != 1)
				return fail_unsup(c, "with a non-constant value");
			a->f[NQ_F_PAD_VALUE] = v->data[0];
		}
		a->i[0] = 1;
	}
	if (a->i[NQ_A_PAD_T] < 0 || a->i[NQ_A_PAD_L] < 0 || a->i[NQ_A_PAD_B] < 0 || a->i[NQ_A_PAD_R] < 0)
		return fail_unsup(c, "with negative pads (cropping)");
	od[0] = x->dims[0];
	od[1] = x->dims[1];
	od[2] = x->dims[2] + a->i[NQ_A_PAD_T] + a->i[NQ_A_PAD_B];
	od[3] = x->dims[3] + a->i[NQ_A_PAD_L] + a->i[NQ_A_PAD_R];
	return set_out(c, NQ_ELEM_FLOAT, 4, od);
}

static int infer_shape_op(struct ctx *c)
{
	struct nq_tensor *x = in(c, 0);
	int start = c->n->attrs.i[0], end = c->n->attrs.i[1];
	int64_t od[1];

	if (!x)
		return nq_fail(-EINVAL, "%s: Shape has no input", c->label);
	if (start < 0)
		start += x->rank;
	if (end < 0)
		end += x->rank;
	start = start < 0 ? 0 : start > x->rank ? x->rank : start;
	end = end < 0 ? 0 : end > x->rank ? x->rank : end;
	if (end <= start)
		return fail_unsup(c, "producing an empty shape");
	od[0] = end - start;
	return set_const_i64(c, 1, od, x->dims + start, (size_t)(end - start));
}

static int infer_gather(struct ctx *c)
{
	struct nq_tensor *d = in(c, 0), *idx = in(c, 1);
	int64_t v[NQ_MAX_RANK], od[1];
	size_t n;

	if (!d || !idx || !(d->flags & NQ_TF_CONST) || !(idx->flags & NQ_TF_CONST) ||
	    d->dtype != NQ_ELEM_INT64 || idx->dtype != NQ_ELEM_INT64 || d->rank != 1 || idx->rank > 1)
		return fail_unsup(c, "on anything but constant int64 shape vectors");
	if (c->n->attrs.i[0] != 0 && c->n->attrs.i[0] != -1)
		return fail_unsup(c, "with axis != 0");
	n = nq_tensor_numel(idx);
	if (n > NQ_MAX_RANK)
		return fail_unsup(c, "of more than 8 indices");
	for (size_t i = 0; i < n; i++) {
		int64_t k = idx->i64[i];

		if (k < 0)
			k += d->dims[0];
		if (k < 0 || k >= d->dims[0])
			return nq_fail(-EINVAL, "%s: Gather index %lld out of range", c->label,
				       (long long)idx->i64[i]);
		v[i] = d->i64[k];
	}
	od[0] = (int64_t)n;
	return set_const_i64(c, idx->rank, od, v, n);
}

static int infer_unsqueeze(struct ctx *c)
{
	struct nq_tensor *x = in(c, 0), *ax = in(c, 1);
	int axes[NQ_MAX_RANK], na, rank;
	int64_t od[NQ_MAX_RANK];
	unsigned mask = 0;

	if (!x || !(x->flags & NQ_TF_CONST))
		return fail_unsup(c, "of a non-constant tensor");
	if (ax) {
		if (!(ax->flags & NQ_TF_CONST) || ax->dtype != NQ_ELEM_INT64 || ax->rank > 1 ||
		    nq_tensor_numel(ax) > NQ_MAX_RANK)
			return fail_unsup(c, "with non-constant axes");
		na = (int)nq_tensor_numel(ax);
		for (int i = 0; i < na; i++)
			axes[i] = (int)(ax->i64[i] < -16 || ax->i64[i] > 16 ? 99 : ax->i64[i]);
	} else {
		na = c->n->attrs.i[0];
		for (int i = 0; i < na && i < NQ_MAX_RANK; i++)
			axes[i] = c->n->attrs.i[1 + i];
	}
	rank = x->rank + na;
	if (na < 1 || rank > NQ_MAX_RANK)
		return fail_unsup(c, "to more than 8 dimensions");
	for (int i = 0; i < na; i++) {
		int a = axes[i] < 0 ? axes[i] + rank : axes[i];

		if (a < 0 || a >= rank || (mask & (1u << a)))
			return nq_fail(-EINVAL, "%s: Unsqueeze axis %d invalid", c->label, axes[i]);
		mask |= 1u << a;
	}
	for (int i = 0, j = 0; i < rank; i++)
		od[i] = mask & (1u << i) ? 1 : x->dims[j++];
	return copy_const(c, x, rank, od);
}

static int infer_cast(struct ctx *c)
{
	struct nq_tensor *x = in(c, 0), *t = out(c);
	size_t n;
	int err;

	if (!x || !(x->flags & NQ_TF_CONST))
		return fail_unsup(c, "of a non-constant tensor");
	if (c->n->attrs.i[0] == x->dtype)
		return copy_const(c, x, x->rank, x->dims);
	n = nq_tensor_numel(x);
	t->flags |= NQ_TF_CONST;
	err = set_out(c, c->n->attrs.i[0], x->rank, x->dims);
	if (err)
		return err;
	if (x->dtype == NQ_ELEM_INT64) {
		free(t->data);
		t->data = malloc(n * sizeof(float));
		if (!t->data)
			return nq_fail(-ENOMEM, "out of memory");
		for (size_t i = 0; i < n; i++)
			t->data[i] = (float)x->i64[i];
	} else {
		free(t->i64);
		t->i64 = malloc(n * sizeof(int64_t));
		if (!t->i64)
			return nq_fail(-ENOMEM, "out of memory");
		for (size_t i = 0; i < n; i++) {
			float v = x->data[i];

			if (!(v > -9.2e18f && v < 9.2e18f))
				return nq_fail(-EINVAL, "%s: Cast of %g to INT64", c->label, v);
			t->i64[i] = (int64_t)v;	/* ONNX: truncation toward zero */
		}
	}
	return 0;
}

static int infer_node(struct ctx *c)
{
	struct nq_node *n = c->n;
	struct nq_tensor *x = in(c, 0);

	switch (n->op) {
	case NQ_OP_CONV:
		return infer_conv(c);
	case NQ_OP_MAXPOOL:
	case NQ_OP_AVGPOOL:
	case NQ_OP_GLOBALAVGPOOL:
		return infer_pool(c);
	case NQ_OP_GEMM:
	case NQ_GOP_MATMUL:
		return infer_gemm(c);
	case NQ_GOP_BATCHNORM:
		return infer_batchnorm(c);
	case NQ_OP_RELU:
	case NQ_OP_CLIP:
		return infer_unary(c);
	case NQ_OP_ADD:
		return infer_add(c);
	case NQ_OP_FLATTEN:
		return infer_flatten(c);
	case NQ_OP_RESHAPE:
		return infer_reshape(c);
	case NQ_OP_SOFTMAX:
		return infer_softmax(c);
	case NQ_OP_CONCAT:
		return infer_concat(c);
	case NQ_GOP_IDENTITY:
		if (!x)
			return nq_fail(-EINVAL, "%s: Identity has no input", c->label);
		if (x->flags & NQ_TF_CONST)
			return copy_const(c, x, x->rank, x->dims);
		return set_out(c, x->dtype, x->rank, x->dims);
	case NQ_GOP_PAD:
		return infer_pad(c);
	case NQ_GOP_SHAPE:
		return infer_shape_op(c);
	case NQ_GOP_GATHER:
		return infer_gather(c);
	case NQ_GOP_UNSQUEEZE:
		return infer_unsqueeze(c);
	case NQ_GOP_CAST:
		return infer_cast(c);
	default:
		return nq_fail(-EOPNOTSUPP, "%s: op %d (%s) cannot be executed", c->label, n->op,
			       n->op_type);
	}
}

int nq_graph_infer_shapes(struct nq_graph *g)
{
	struct ctx c = { .g = g };
	int err;

	for (int i = 0; i < g->n_nodes; i++) {
		c.n = &g->nodes[i];
		nq_node_label(c.n, c.label, sizeof(c.label));
		if (g->tensors[c.n->output].flags & NQ_TF_CONST)
			continue;	/* value already known */
		for (int j = 0; j < c.n->n_inputs; j++) {
			int t = c.n->inputs[j];

			if (t >= g->n_tensors)
				return nq_fail(-EINVAL, "%s: input %d refers to tensor %d", c.label, j, t);
			if (t >= 0 && !(g->tensors[t].flags & (NQ_TF_CONST | NQ_TF_INPUT)) &&
			    (g->tensors[t].producer < 0 || g->tensors[t].producer >= i))
				return nq_fail(-EINVAL, "%s: input '%s' is not produced before it is used",
					       c.label, g->tensors[t].name);
		}
		err = infer_node(&c);
		if (err)
			return err;
	}
	for (int i = 0; i < g->n_outputs; i++) {
		const struct nq_tensor *t = &g->tensors[g->outputs[i]];

		if (t->dtype != NQ_ELEM_FLOAT || (t->flags & NQ_TF_CONST))
			return nq_fail(-EOPNOTSUPP, "graph output '%s' is a constant or not FLOAT", t->name);
	}
	return 0;
}
