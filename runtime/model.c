// SPDX-License-Identifier: MIT
/*
 * Loading a model: map the .nq file, check that the graph is one this
 * executor can run (shapes, types, op-specific rules), derive every constant
 * an inference needs once (int32 biases and (m, s) multipliers per layer,
 * channel and level; activation ranges; pooling tables), fuse residual ADDs
 * into the convs that feed them (plan_fusion) and plan the activation
 * arena.  Weights stay in the mapping; nothing here reads plane
 * bytes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "autoswitch.h"
#include "kmod_backing.h"
#include "model.h"
#include "nq_error.h"

#define NODE_FAIL(err, m, x, fmt, ...)                                                   \
	((void)(m), nq_fail(err, "node %u (%s, %s): " fmt, (x)->index, (x)->name,        \
			    nq_file_op_name((x)->op), ##__VA_ARGS__))

static bool is_q8(const struct nq_xtensor *t)
{
	return t->dtype == NQ_TENSOR_U8 || t->dtype == NQ_TENSOR_S8;
}

static int setup_tensor(struct nq_model *m, uint32_t id)
{
	const struct nq_disk_tensor *d = nq_file_tensor(m->file, id);
	struct nq_xtensor *t = &m->t[id];
	uint32_t pad[4] = { 1, 1, 1, 1 };
	uint64_t esize;

	t->dtype = d->dtype;
	t->rank = d->rank;
	t->count = 1;
	for (uint32_t i = 0; i < d->rank; i++) {
		t->dims[i] = d->dims[i];
		pad[i] = d->dims[i];
		t->count *= d->dims[i];
	}
	/* rank 1 [C] is one row of C: N = 1. */
	if (d->rank == 1) {
		pad[1] = pad[0];
		pad[0] = 1;
	}
	t->n = pad[0], t->c = pad[1], t->h = pad[2], t->w = pad[3];
	t->scale = d->scale;
	t->zp = d->zero_point;
	switch (d->dtype) {
	case NQ_TENSOR_U8:
		t->qmin = 0, t->qmax = 255, esize = 1;
		break;
	case NQ_TENSOR_S8:
		t->qmin = -128, t->qmax = 127, esize = 1;
		break;
	default:
		esize = 4;
		break;
	}
	t->nhwc = d->rank == 4 && is_q8(t);
	t->bytes = t->count * esize;
	t->first = INT32_MAX;
	t->last = -1;
	return 0;
}

static struct nq_xtensor *tin(struct nq_model *m, const struct nq_xnode *x, uint32_t i)
{
	return &m->t[x->in[i]];
}

static int want_dtype(struct nq_model *m, const struct nq_xnode *x, const struct nq_xtensor *t,
		      const char *what, bool q8, bool f32)
{
	if ((q8 && is_q8(t)) || (f32 && t->dtype == NQ_TENSOR_F32))
		return 0;
	return NODE_FAIL(-ENOTSUP, m, x, "%s has type %s; the executor needs %s", what,
			 nq_tensor_type_name(t->dtype), q8 && f32 ? "u8/s8 or f32" : q8 ? "u8/s8" : "f32");
}

static int want_u8(struct nq_model *m, const struct nq_xnode *x, const struct nq_xtensor *t,
		   const char *what)
{
	if (t->dtype == NQ_TENSOR_U8)
		return 0;
	return NODE_FAIL(-ENOTSUP, m, x, "%s has type %s; the executor needs u8", what,
			 nq_tensor_type_name(t->dtype));
}

static bool same_dims(const struct nq_xtensor *a, const struct nq_xtensor *b)
{
	return a->rank == b->rank && !memcmp(a->dims, b->dims, sizeof(a->dims));
}

static struct nq_nhwc nhwc_of(const struct nq_xtensor *t)
{
	return (struct nq_nhwc){ .n = t->n, .h = t->h, .w = t->w, .c = t->c };
}

/* Output size of a window op along one axis: floor or ceil mode accepted. */
static int check_window(struct nq_model *m, const struct nq_xnode *x, const char *axis,
			uint32_t in, uint32_t out, uint32_t k, uint32_t stride, uint32_t p0,
			uint32_t p1, uint32_t dil)
{
	uint64_t span = (uint64_t)dil * (k - 1) + 1, padded = (uint64_t)in + p0 + p1;
	uint64_t lo, hi;

	if (k < 1 || stride < 1 || dil < 1 || k > 65535 || stride > 65535 || dil > 65535)
		return NODE_FAIL(-EINVAL, m, x, "%s window: kernel %u, stride %u, dilation %u",
				 axis, k, stride, dil);
	if (padded < span)
		return NODE_FAIL(-EINVAL, m, x, "window %llu larger than the padded %s %llu",
				 (unsigned long long)span, axis, (unsigned long long)padded);
	lo = (padded - span) / stride + 1;
	hi = (padded - span + stride - 1) / stride + 1;
	if (out != lo && out != hi)
		return NODE_FAIL(-EINVAL, m, x, "output %s is %u, the window gives %llu",
				 axis, out, (unsigned long long)lo);
	return 0;
}

static int setup_conv(struct nq_model *m, struct nq_xnode *x, const struct nq_disk_node *dn)
{
	struct nq_xtensor *I = tin(m, x, 0), *O = &m->t[x->out];
	const struct nq_disk_layer *L;
	struct nq_conv_args *a = &x->u.conv.tmpl;
	const int32_t *ai = dn->attrs.i;
	const float *bias;
	bool gemm = x->op == NQ_OP_GEMM;
	int err;

	if (dn->layer >= nq_file_layer_count(m->file))
		return NODE_FAIL(-EINVAL, m, x, "no weight layer");
	L = nq_file_layer(m->file, dn->layer);
	if ((err = want_u8(m, x, I, "input")) || (err = want_dtype(m, x, O, "output", true, false)))
		return err;
	if (L->kind != (gemm ? NQ_LAYER_GEMM : NQ_LAYER_CONV) || !L->groups || L->oc % L->groups ||
	    (uint64_t)L->kh * L->kw * L->cin_per_group != L->k || (gemm && L->groups != 1))
		return NODE_FAIL(-EINVAL, m, x, "layer %u does not fit the op (kind %u, %u groups)",
				 dn->layer, L->kind, L->groups);
	if (L->k > NQ_MAX_DOT)
		return NODE_FAIL(-ENOTSUP, m, x, "%u weights per output channel; the int32 accumulator allows %u",
				 L->k, NQ_MAX_DOT);
	a->oc = L->oc;
	a->k = L->k;
	a->groups = L->groups;
	a->kh = L->kh;
	a->kw = L->kw;
	a->cin_per_group = L->cin_per_group;
	if (gemm) {
		if (I->nhwc && (uint64_t)I->h * I->w > 1)
			return NODE_FAIL(-ENOTSUP, m, x, "input is 4-D with H*W > 1; flatten it first");
		if (I->count % L->k || I->count / L->k != O->count / L->oc || O->count % L->oc)
			return NODE_FAIL(-EINVAL, m, x, "input of %llu / output of %llu elements do not match K %u, OC %u",
					 (unsigned long long)I->count, (unsigned long long)O->count,
					 L->k, L->oc);
		a->in = (struct nq_nhwc){ .n = (uint32_t)(I->count / L->k), .h = 1, .w = 1, .c = L->k };
		a->out = (struct nq_nhwc){ .n = a->in.n, .h = 1, .w = 1, .c = L->oc };
		a->stride_h = a->stride_w = a->dil_h = a->dil_w = 1;
	} else {
		if (I->rank != 4 || O->rank != 4)
			return NODE_FAIL(-EINVAL, m, x, "input and output must be 4-D");
		if (I->c != L->groups * L->cin_per_group || O->c != L->oc || O->n != I->n)
			return NODE_FAIL(-EINVAL, m, x, "channels: input %u, output %u, layer %u x %u -> %u",
					 I->c, O->c, L->groups, L->cin_per_group, L->oc);
		if ((uint32_t)ai[NQ_A_KH] != L->kh || (uint32_t)ai[NQ_A_KW] != L->kw)
			return NODE_FAIL(-EINVAL, m, x, "kernel %dx%d, layer %ux%u",
					 ai[NQ_A_KH], ai[NQ_A_KW], L->kh, L->kw);
		a->stride_h = ai[NQ_A_STRIDE_H], a->stride_w = ai[NQ_A_STRIDE_W];
		a->pad_t = ai[NQ_A_PAD_T], a->pad_l = ai[NQ_A_PAD_L];
		a->dil_h = ai[NQ_A_DIL_H], a->dil_w = ai[NQ_A_DIL_W];
		err = check_window(m, x, "height", I->h, O->h, L->kh, a->stride_h, a->pad_t,
				   ai[NQ_A_PAD_B], a->dil_h);
		if (!err)
			err = check_window(m, x, "width", I->w, O->w, L->kw, a->stride_w, a->pad_l,
					   ai[NQ_A_PAD_R], a->dil_w);
		if (err)
			return err;
		a->in = nhwc_of(I);
		a->out = nhwc_of(O);
		x->u.conv.depthwise = L->groups == L->oc && L->cin_per_group == 1;
	}
	a->zx = I->zp;
	a->zy = O->zp;
	err = nq_act_range(ai[NQ_A_ACT], dn->attrs.f[NQ_F_CLIP_MIN], dn->attrs.f[NQ_F_CLIP_MAX],
			   O->scale, O->zp, O->qmin, O->qmax, &a->lo, &a->hi);
	if (err)
		return NODE_FAIL(err, m, x, "fused activation %d unknown", ai[NQ_A_ACT]);

	a->wt.file = m->file;
	a->wt.layer = dn->layer;
	for (uint32_t k = 0; k < m->n_levels; k++) {
		err = nq_file_plane(m->file, dn->layer, k, &a->wt.plane[k]);
		if (err)
			return nq_fail_context(err, "node %u (%s)", x->index, x->name);
		a->wt.level_bits[k] = m->level_bits[k];
	}

	x->u.conv.bias32 = calloc((size_t)m->n_levels * L->oc, sizeof(int32_t));
	x->u.conv.rq = calloc((size_t)m->n_levels * L->oc, sizeof(struct nq_rq));
	if (!x->u.conv.bias32 || !x->u.conv.rq)
		return nq_fail(-ENOMEM, "out of memory");
	bias = nq_file_layer_bias(m->file, dn->layer);
	for (uint32_t k = 0; k < m->n_levels; k++) {
		const float *sw = nq_file_layer_scales(m->file, dn->layer, k);

		if (!sw)
			return NODE_FAIL(-EINVAL, m, x, "no scales for level %u", k);
		for (uint32_t c = 0; c < L->oc; c++) {
			size_t i = (size_t)k * L->oc + c;

			x->u.conv.bias32[i] = bias ? nq_bias32(bias[c], I->scale, sw[c], L->k) : 0;
			nq_rq_conv(I->scale, sw[c], O->scale, &x->u.conv.rq[i]);
		}
	}
	if (m->kern->tile_bytes(L->k, L->oc) > m->tile_bytes)
		m->tile_bytes = m->kern->tile_bytes(L->k, L->oc);
	return 0;
}

static int setup_pool(struct nq_model *m, struct nq_xnode *x, const struct nq_disk_node *dn)
{
	struct nq_xtensor *I = tin(m, x, 0), *O = &m->t[x->out];
	struct nq_pool_args *a = &x->u.pool;
	const int32_t *ai = dn->attrs.i;
	uint64_t win;
	int err;

	if ((err = want_u8(m, x, I, "input")) || (err = want_u8(m, x, O, "output")))
		return err;
	if (I->rank != 4 || O->rank != 4 || I->n != O->n || I->c != O->c)
		return NODE_FAIL(-EINVAL, m, x, "input and output must be 4-D with the same N and C");
	a->kh = ai[NQ_A_KH], a->kw = ai[NQ_A_KW];
	a->stride_h = ai[NQ_A_STRIDE_H], a->stride_w = ai[NQ_A_STRIDE_W];
	a->pad_t = ai[NQ_A_PAD_T], a->pad_l = ai[NQ_A_PAD_L];
	a->pad_b = ai[NQ_A_PAD_B], a->pad_r = ai[NQ_A_PAD_R];
	a->dil_h = ai[NQ_A_DIL_H] ? ai[NQ_A_DIL_H] : 1;
	a->dil_w = ai[NQ_A_DIL_W] ? ai[NQ_A_DIL_W] : 1;
	err = check_window(m, x, "height", I->h, O->h, a->kh, a->stride_h, a->pad_t, a->pad_b, a->dil_h);
	if (!err)
		err = check_window(m, x, "width", I->w, O->w, a->kw, a->stride_w, a->pad_l, a->pad_r,
				   a->dil_w);
	if (err)
		return err;
	a->in = nhwc_of(I);
	a->out = nhwc_of(O);
	a->zx = I->zp;
	a->zy = O->zp;
	a->lo = 0;
	a->hi = 255;
	nq_rq_derive((double)I->scale / (double)O->scale, &a->rq_max);
	if (x->op == NQ_OP_AVGPOOL) {
		win = (uint64_t)a->kh * a->kw;
		if (win > 65536)
			return NODE_FAIL(-ENOTSUP, m, x, "window of %llu elements (at most 65536)",
					 (unsigned long long)win);
		a->count_include_pad = ai[NQ_A_COUNT_INCLUDE_PAD] != 0;
		x->avg_table = calloc(win + 1, sizeof(*x->avg_table));
		if (!x->avg_table)
			return nq_fail(-ENOMEM, "out of memory");
		for (uint64_t n = 0; n <= win; n++)
			nq_rq_derive(n ? (double)I->scale / ((double)O->scale * (double)n) : 0,
				     &x->avg_table[n]);
		a->rq_avg = x->avg_table;
	}
	return 0;
}

static int setup_eltwise(struct nq_eltwise_args *e, const struct nq_xtensor *I,
			 const struct nq_xtensor *O)
{
	nq_rq_derive((double)I->scale / (double)O->scale, &e->rq);
	e->zx = I->zp;
	e->zy = O->zp;
	e->lo = O->qmin;
	e->hi = O->qmax;
	e->in_signed = I->dtype == NQ_TENSOR_S8;
	e->out_signed = O->dtype == NQ_TENSOR_S8;
	return 0;
}

static int setup_node(struct nq_model *m, uint32_t i)
{
	const struct nq_disk_node *dn = nq_file_node(m->file, i);
	struct nq_xnode *x = &m->nodes[i];
	const uint32_t *outs;
	struct nq_xtensor *I, *O;
	uint32_t n_out;
	int err = 0;

	x->op = dn->op;
	x->index = i;
	x->fused = -1;
	x->name = nq_file_str(m->file, dn->name);
	x->in = nq_file_node_inputs(m->file, i, &x->n_in);
	outs = nq_file_node_outputs(m->file, i, &n_out);
	if (!x->in || !outs || n_out != 1 || x->n_in < 1)
		return NODE_FAIL(-EINVAL, m, x, "needs one output and at least one input");
	x->out = outs[0];
	I = tin(m, x, 0);
	O = &m->t[x->out];

	switch (dn->op) {
	case NQ_OP_QUANTIZE:
		if ((err = want_dtype(m, x, I, "input", false, true)) ||
		    (err = want_dtype(m, x, O, "output", true, false)))
			return err;
		if (I->count != O->count)
			return NODE_FAIL(-EINVAL, m, x, "input and output sizes differ");
		x->u.quant = (struct nq_quant_args){
			.n = O->n, .c = O->c, .hw = O->h * O->w, .nhwc = O->nhwc,
			.inv = nq_quant_inv(O->scale), .z = O->zp, .qmin = O->qmin, .qmax = O->qmax,
		};
		break;
	case NQ_OP_DEQUANTIZE:
		if ((err = want_dtype(m, x, I, "input", true, false)) ||
		    (err = want_dtype(m, x, O, "output", false, true)))
			return err;
		if (I->count != O->count)
			return NODE_FAIL(-EINVAL, m, x, "input and output sizes differ");
		break;
	case NQ_OP_CONV:
	case NQ_OP_GEMM:
		return setup_conv(m, x, dn);
	case NQ_OP_ADD: {
		struct nq_xtensor *I2;

		if (x->n_in != 2)
			return NODE_FAIL(-EINVAL, m, x, "needs two inputs");
		I2 = tin(m, x, 1);
		if ((err = want_u8(m, x, I, "input 0")) || (err = want_u8(m, x, I2, "input 1")) ||
		    (err = want_u8(m, x, O, "output")))
			return err;
		if (!same_dims(I, O) || !same_dims(I2, O))
			return NODE_FAIL(-ENOTSUP, m, x, "inputs and output must have the same shape (no broadcasting)");
		nq_add_derive(I->scale, I2->scale, O->scale, &x->u.add.rq);
		x->u.add.z1 = I->zp;
		x->u.add.z2 = I2->zp;
		x->u.add.z3 = O->zp;
		err = nq_act_range(dn->attrs.i[NQ_A_ACT], dn->attrs.f[NQ_F_CLIP_MIN],
				   dn->attrs.f[NQ_F_CLIP_MAX], O->scale, O->zp, 0, 255,
				   &x->u.add.lo, &x->u.add.hi);
		if (err)
			return NODE_FAIL(err, m, x, "fused activation %d unknown", dn->attrs.i[NQ_A_ACT]);
		break;
	}
	case NQ_OP_MAXPOOL:
	case NQ_OP_AVGPOOL:
		return setup_pool(m, x, dn);
	case NQ_OP_GLOBALAVGPOOL: {
		uint64_t hw = (uint64_t)I->h * I->w;

		if ((err = want_u8(m, x, I, "input")) || (err = want_u8(m, x, O, "output")))
			return err;
		if (I->rank != 4 || O->count != (uint64_t)I->n * I->c)
			return NODE_FAIL(-EINVAL, m, x, "input must be 4-D and the output N x C");
		if (hw > (1u << 23))
			return NODE_FAIL(-ENOTSUP, m, x, "%llu positions overflow the int32 sum",
					 (unsigned long long)hw);
		x->u.gap.in = nhwc_of(I);
		x->u.gap.zx = I->zp;
		x->u.gap.zy = O->zp;
		nq_rq_derive((double)I->scale / ((double)O->scale * (double)hw), &x->u.gap.rq);
		break;
	}
	case NQ_OP_FLATTEN:
	case NQ_OP_RESHAPE:
		if (I->count != O->count)
			return NODE_FAIL(-EINVAL, m, x, "input has %llu elements, output %llu",
					 (unsigned long long)I->count, (unsigned long long)O->count);
		if (is_q8(I) != is_q8(O) || (!is_q8(I) && I->dtype != O->dtype))
			return NODE_FAIL(-EINVAL, m, x, "input and output types differ");
		if (is_q8(I))
			setup_eltwise(&x->u.elt, I, O);
		break;
	case NQ_OP_CONCAT: {
		uint32_t axis = (uint32_t)dn->attrs.i[NQ_A_AXIS], sum = 0;

		if (axis >= O->rank)
			return NODE_FAIL(-EINVAL, m, x, "axis %u outside rank %u", axis, O->rank);
		x->u.concat.axis = axis;
		x->u.concat.in = calloc(x->n_in, sizeof(*x->u.concat.in));
		if (!x->u.concat.in)
			return nq_fail(-ENOMEM, "out of memory");
		for (uint32_t j = 0; j < x->n_in; j++) {
			struct nq_xtensor *J = tin(m, x, j);

			if (J->rank != O->rank || is_q8(J) != is_q8(O) ||
			    (!is_q8(J) && J->dtype != O->dtype))
				return NODE_FAIL(-EINVAL, m, x, "input %u: rank or type differs from the output", j);
			for (uint32_t d = 0; d < O->rank; d++)
				if (d != axis && J->dims[d] != O->dims[d])
					return NODE_FAIL(-EINVAL, m, x, "input %u: dim %u is %u, output %u",
							 j, d, J->dims[d], O->dims[d]);
			sum += J->dims[axis];
			if (is_q8(J))
				setup_eltwise(&x->u.concat.in[j], J, O);
		}
		if (sum != O->dims[axis])
			return NODE_FAIL(-EINVAL, m, x, "inputs add up to %u along axis %u, output has %u",
					 sum, axis, O->dims[axis]);
		break;
	}
	case NQ_OP_SOFTMAX:
		if ((err = want_dtype(m, x, I, "input", false, true)) ||
		    (err = want_dtype(m, x, O, "output", false, true)))
			return err;
		if (!same_dims(I, O) || (uint32_t)dn->attrs.i[NQ_A_AXIS] >= (I->rank ? I->rank : 1))
			return NODE_FAIL(-EINVAL, m, x, "shape or axis mismatch");
		x->u.axis = (uint32_t)dn->attrs.i[NQ_A_AXIS];
		break;
	case NQ_OP_RELU:
	case NQ_OP_CLIP:
		if ((err = want_u8(m, x, I, "input")) || (err = want_u8(m, x, O, "output")))
			return err;
		if (!same_dims(I, O))
			return NODE_FAIL(-EINVAL, m, x, "input and output shapes differ");
		setup_eltwise(&x->u.elt, I, O);
		err = nq_act_range(dn->op == NQ_OP_RELU ? NQ_ACT_RELU : NQ_ACT_CLIP,
				   dn->attrs.f[NQ_F_CLIP_MIN], dn->attrs.f[NQ_F_CLIP_MAX],
				   O->scale, O->zp, 0, 255, &x->u.elt.lo, &x->u.elt.hi);
		break;
	default:
		return NODE_FAIL(-ENOTSUP, m, x, "op %u is not supported by the executor", dn->op);
	}
	return err;
}

static int plan_arena(struct nq_model *m)
{
	struct nq_arena_item *items;
	uint32_t *ids, n = 0;
	int err;

	items = calloc(m->n_tensors, sizeof(*items));
	ids = calloc(m->n_tensors, sizeof(*ids));
	if (!items || !ids) {
		err = nq_fail(-ENOMEM, "out of memory");
		goto out;
	}
	for (uint32_t i = 0; i < m->n_tensors; i++) {
		struct nq_xtensor *t = &m->t[i];

		if (!t->used)
			continue;
		items[n] = (struct nq_arena_item){ .size = t->bytes, .first = t->first,
						   .last = t->last };
		ids[n++] = i;
	}
	err = nq_arena_plan(items, n, NQ_ARENA_ALIGN, &m->arena_bytes);
	if (err)
		goto out;
	for (uint32_t j = 0; j < n; j++)
		m->t[ids[j]].offset = items[j].offset;
out:
	free(items);
	free(ids);
	return err;
}

static int setup_io(struct nq_model *m)
{
	const uint32_t *ins, *outs;
	uint32_t n_in, n_out;
	struct nq_xtensor *I, *O;

	ins = nq_file_graph_inputs(m->file, &n_in);
	outs = nq_file_graph_outputs(m->file, &n_out);
	if (!ins || !outs || n_in != 1 || n_out < 1)
		return nq_fail(-ENOTSUP, "the executor runs graphs with exactly one input (this one has %u)",
			       n_in);
	m->input = ins[0];
	m->output = outs[0];
	I = &m->t[m->input];
	O = &m->t[m->output];
	if (I->dtype != NQ_TENSOR_F32)
		return nq_fail(-ENOTSUP, "graph input has type %s; the executor needs f32",
			       nq_tensor_type_name(I->dtype));
	if (O->dtype == NQ_TENSOR_S32)
		return nq_fail(-ENOTSUP, "graph output has type s32; the executor needs f32, u8 or s8");
	memcpy(&m->pre, nq_file_preprocess(m->file), sizeof(m->pre));
	if (m->pre.channels != 1 && m->pre.channels != I->c)
		return nq_fail(-EINVAL, "preprocess record has %u channels, the input %u",
			       m->pre.channels, I->c);
	return 0;
}

/*
 * Residual ADDs into the epilogue of the CONV producing one of their inputs
 * (kernels.h nq_conv_args.add), decided once here.  Safe when that input
 * has one producer and the ADD as its only reader (not a graph output),
 * the CONV is not depthwise (its tables' epilogues lack the ADD) and the
 * ADD's other input is computed before the CONV runs (in a downsampling
 * block only the later of the two convs qualifies).  The ADD's output is
 * then written at the CONV, so mark_lifetimes moves the ADD's reads and
 * write there: the arena keeps the other input alive through the CONV and
 * apart from the output, and the conv's own output gets no buffer.
 */
static int plan_fusion(struct nq_model *m)
{
	uint32_t *uses = calloc(m->n_tensors, sizeof(*uses));
	uint32_t *nprod = calloc(m->n_tensors, sizeof(*nprod));
	int32_t *prod = calloc(m->n_tensors, sizeof(*prod));
	const uint32_t *outs;
	uint32_t n_out = 0;
	int err = 0;

	if (!uses || !nprod || !prod) {
		err = nq_fail(-ENOMEM, "out of memory");
		goto out;
	}
	for (uint32_t i = 0; i < m->n_nodes; i++) {
		const struct nq_xnode *x = &m->nodes[i];

		for (uint32_t j = 0; j < x->n_in; j++)
			uses[x->in[j]]++;
		prod[x->out] = (int32_t)i;
		nprod[x->out]++;
	}
	outs = nq_file_graph_outputs(m->file, &n_out);
	for (uint32_t j = 0; outs && j < n_out; j++)
		uses[outs[j]]++;
	for (uint32_t i = 0; i < m->n_nodes; i++) {
		struct nq_xnode *x = &m->nodes[i];

		if (x->op != NQ_OP_ADD || nprod[x->out] != 1)
			continue;
		for (uint32_t j = 0; j < 2; j++) {
			uint32_t t = x->in[j], r = x->in[1 - j];
			struct nq_xnode *c;
			struct nq_add_args *a;

			if (nprod[t] != 1 || uses[t] != 1 || nprod[r] != 1)
				continue;
			c = &m->nodes[prod[t]];
			if (c->op != NQ_OP_CONV || c->u.conv.depthwise || c->fused >= 0 ||
			    (uint32_t)prod[t] >= i || prod[r] >= prod[t] || c->in[0] == x->out)
				continue;
			a = &c->u.conv.add;
			*a = x->u.add;
			if (j == 1) {
				/* The conv output is x1 of the fused form: swap the
				 * terms (an exact int32 sum either way). */
				a->rq.k1 = x->u.add.rq.k2;
				a->rq.k2 = x->u.add.rq.k1;
				a->z1 = x->u.add.z2;
				a->z2 = x->u.add.z1;
			}
			c->u.conv.res = r;
			c->fused = (int32_t)i;
			x->fused = prod[t];
			m->fused_adds++;
			break;
		}
	}
out:
	free(uses);
	free(nprod);
	free(prod);
	return err;
}

static void mark_lifetimes(struct nq_model *m)
{
	struct nq_xtensor *t;

	t = &m->t[m->input];
	t->used = true;
	t->first = -1;
	if (t->last < t->first)
		t->last = t->first;
	for (uint32_t i = 0; i < m->n_nodes; i++) {
		struct nq_xnode *x = &m->nodes[i];
		/* A fused ADD runs at its CONV, which writes the ADD's output. */
		bool fused_add = x->op == NQ_OP_ADD && x->fused >= 0;
		int32_t at = fused_add ? x->fused : (int32_t)i;
		uint32_t out = x->op == NQ_OP_CONV && x->fused >= 0 ? m->nodes[x->fused].out : x->out;

		for (uint32_t j = 0; j < x->n_in; j++) {
			if (fused_add && x->in[j] == m->nodes[x->fused].out)
				continue;	/* never stored */
			t = &m->t[x->in[j]];
			t->used = true;
			if (at > t->last)
				t->last = at;
		}
		if (fused_add)
			continue;
		t = &m->t[out];
		t->used = true;
		if (at < t->first)
			t->first = at;
		if (t->last < t->first)
			t->last = t->first;
	}
	/* The caller reads the graph output after the last node. */
	m->t[m->output].last = (int32_t)m->n_nodes;
}

/* $name set to "0": an optimisation switched off (A/B runs, tests). */
static bool env_off(const char *name)
{
	const char *v = getenv(name);

	return v && !strcmp(v, "0");
}

int nq_model_open(const char *path, const struct nq_model_opts *opts, struct nq_model **out)
{
	struct nq_model *m;
	int err;

	*out = NULL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return nq_fail(-ENOMEM, "out of memory");
	err = nq_file_open(path, &m->file);
	if (err)
		goto fail;
	err = nq_kernels_select(&m->kern);
	if (err)
		goto fail;
	m->n_levels = nq_file_level_count(m->file);
	for (uint32_t k = 0; k < m->n_levels; k++)
		m->level_bits[k] = (uint8_t)nq_file_level(m->file, k)->bits;

	m->n_tensors = nq_file_tensor_count(m->file);
	m->n_nodes = nq_file_node_count(m->file);
	m->t = calloc(m->n_tensors ? m->n_tensors : 1, sizeof(*m->t));
	m->nodes = calloc(m->n_nodes ? m->n_nodes : 1, sizeof(*m->nodes));
	if (!m->t || !m->nodes) {
		err = nq_fail(-ENOMEM, "out of memory");
		goto fail;
	}
	for (uint32_t i = 0; i < m->n_tensors; i++)
		setup_tensor(m, i);
	err = setup_io(m);
	if (err)
		goto fail;
	for (uint32_t i = 0; i < m->n_nodes; i++) {
		err = setup_node(m, i);
		if (err)
			goto fail;
	}
	if (!(opts && (opts->flags & NQ_OPEN_NO_FUSE)) && !env_off("NQ_FUSE")) {
		err = plan_fusion(m);
		if (err)
			goto fail;
	}
	mark_lifetimes(m);
	err = plan_arena(m);
	if (err)
		goto fail;

	if (opts && opts->level >= 0 && (uint32_t)opts->level >= m->n_levels) {
		err = nq_fail(-EINVAL, "level %d out of range (%u levels)", opts->level, m->n_levels);
		goto fail;
	}
	m->n_layers = nq_file_layer_count(m->file);
	err = nq_switch_init(m, opts, opts && opts->level >= 0 ? (unsigned int)opts->level
							     : m->n_levels - 1);
	if (err)
		goto fail;
	if (opts && (opts->flags & NQ_OPEN_KMOD)) {
		err = nq_model_use_kmod(m, 0);
		if (err)
			goto fail;
	}
	err = nq_autoswitch_open_hook(m, path, opts);
	if (err)
		goto fail;
	*out = m;
	return 0;
fail:
	nq_fail_context(err, "%s", path);
	nq_model_close(m);
	return err;
}

void nq_model_close(struct nq_model *m)
{
	if (!m)
		return;
	nq_autoswitch_close_hook(m);
	nq_switch_fini(m);
	nq_kmod_detach(m);
	for (uint32_t i = 0; m->nodes && i < m->n_nodes; i++) {
		struct nq_xnode *x = &m->nodes[i];

		if (x->op == NQ_OP_CONV || x->op == NQ_OP_GEMM) {
			free(x->u.conv.bias32);
			free(x->u.conv.rq);
		} else if (x->op == NQ_OP_CONCAT) {
			free(x->u.concat.in);
		}
		free(x->avg_table);
	}
	free(m->nodes);
	free(m->t);
	nq_file_close(m->file);
	free(m);
}

unsigned int nq_model_level_count(const struct nq_model *m)
{
	return m->n_levels;
}

int nq_model_level_bits(const struct nq_model *m, unsigned int level)
{
	if (level >= m->n_levels)
		return nq_fail(-EINVAL, "level %u out of range (%u levels)", level, m->n_levels);
	return m->level_bits[level];
}

int nq_model_level_for_bits(const struct nq_model *m, unsigned int bits)
{
	for (uint32_t k = 0; k < m->n_levels; k++)
		if (m->level_bits[k] == bits)
			return (int)k;
	return nq_fail(-ENOENT, "the model has no %u-bit level", bits);
}

unsigned int nq_model_level(const struct nq_model *m)
{
	return atomic_load(&((struct nq_model *)m)->level);
}

static void shape_of(const struct nq_xtensor *t, struct nq_shape *s)
{
	s->rank = t->rank;
	memset(s->dims, 0, sizeof(s->dims));
	memcpy(s->dims, t->dims, t->rank * sizeof(uint32_t));
}

int nq_model_input_shape(const struct nq_model *m, struct nq_shape *shape)
{
	shape_of(&m->t[m->input], shape);
	return 0;
}

enum nq_input_layout nq_model_input_layout(const struct nq_model *m)
{
	return m->pre.layout == NQ_LAYOUT_NHWC ? NQ_INPUT_NHWC : NQ_INPUT_NCHW;
}

size_t nq_model_input_count(const struct nq_model *m)
{
	return (size_t)m->t[m->input].count;
}

int nq_model_output_shape(const struct nq_model *m, struct nq_shape *shape)
{
	shape_of(&m->t[m->output], shape);
	return 0;
}

size_t nq_model_output_count(const struct nq_model *m)
{
	return (size_t)m->t[m->output].count;
}

uint64_t nq_model_arena_bytes(const struct nq_model *m)
{
	return m->arena_bytes;
}

uint64_t nq_model_weight_bytes(const struct nq_model *m, unsigned int level)
{
	uint64_t sum = 0;

	for (uint32_t l = 0; l < nq_file_layer_count(m->file); l++)
		for (uint32_t k = 0; k <= level && k < m->n_levels; k++) {
			struct nq_plane_view v;

			if (!nq_file_plane(m->file, l, k, &v))
				sum += v.size;
		}
	return sum;
}

const char *nq_model_isa(const struct nq_model *m)
{
	return m->kern->name;
}

unsigned int nq_model_fused_adds(const struct nq_model *m)
{
	return m->fused_adds;
}
