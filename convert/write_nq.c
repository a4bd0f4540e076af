// SPDX-License-Identifier: MIT
/*
 * Writing the .nq file: metadata (provenance and every option), the
 * preprocessing record, the integer graph (QUANTIZE after the f32 input, u8
 * activations, DEQUANTIZE before f32 outputs and before SOFTMAX), one layer
 * record per CONV/GEMM with its per-level scales, then the planes level by
 * level, each row permuted from the graph's OIHW order to the file's OHWI
 * and packed.  The writer publishes by rename: any failure or a cancel
 * leaves the destination untouched.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nq_error.h"
#include "nq_format.h"
#include "pipeline_int.h"

static void iso_date(char *buf, size_t len)
{
	time_t now = time(NULL);
	struct tm tm;

	gmtime_r(&now, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int add_metadata(struct conv *cv, struct nq_writer *w, const char *src,
			const struct nq_convert_report *rep)
{
	const struct nq_convert_opts *o = cv->o;
	char sha[65], buf[512], date[32];
	const char *base = strrchr(src, '/');
	int err, n = 0;

	err = nq_sha256_file(src, sha);
	if (err)
		return err;
	iso_date(date, sizeof(date));
	for (int i = (int)cv->nlevels - 1; i >= 0; i--)
		n += snprintf(buf + n, sizeof(buf) - n, "%s%u", n ? "," : "", cv->levels[i]);
#define META(k, v)                                       \
	do {                                             \
		err = nq_writer_add_meta(w, (k), (v));   \
		if (err)                                 \
			return err;                      \
	} while (0)
	META("producer", NQ_CONVERT_PRODUCER);
	META("source", base ? base + 1 : src);
	META("source.sha256", sha);
	META("created", date);
	META("convert.levels", buf);
	META("convert.rounding", nq_round_name(o->rounding));
	META("convert.full-rounding", nq_round_name(cv_full_rounding(o)));
	META("convert.residual", o->residual == NQ_RESIDUAL_EXACT ? "exact" : "compact");
	META("convert.weight-scale", nq_wscale_name(o->wscale));
	META("convert.level-scale", o->lscale == NQ_LSCALE_REFIT ? "refit" : "shift");
	META("convert.calib", o->calib == NQ_CALIB_SRC_NONE ? "none" :
			      o->calib == NQ_CALIB_SRC_FASHION_MNIST ? "fashion-mnist" :
			      o->calib_path);
	snprintf(buf, sizeof(buf), "%u", rep->calib_samples);
	META("convert.calib-count", buf);
	if (o->calib_method == NQ_CALIB_PERCENTILE)
		snprintf(buf, sizeof(buf), "percentile %.4g", o->percentile);
	else
		snprintf(buf, sizeof(buf), "%s", nq_calib_name(o->calib_method));
	META("convert.calib-method", buf);
	snprintf(buf, sizeof(buf), "%llu", (unsigned long long)o->seed);
	META("convert.seed", buf);
	snprintf(buf, sizeof(buf), "%.9g", nq_convert_input_scale(&o->pre));
	META("convert.input-scale", buf);
	if (o->pre.channels) {
		n = 0;
		for (unsigned c = 0; c < o->pre.channels; c++)
			n += snprintf(buf + n, sizeof(buf) - n, "%s%g", c ? "," : "", o->pre.mean[c]);
		META("convert.mean", buf);
		n = 0;
		for (unsigned c = 0; c < o->pre.channels; c++)
			n += snprintf(buf + n, sizeof(buf) - n, "%s%g", c ? "," : "", o->pre.std[c]);
		META("convert.std", buf);
		META("convert.layout", o->pre.layout == NQ_LAYOUT_NHWC ? "nhwc" : "nchw");
	}
#undef META
	return 0;
}

static int tensor_desc(const struct conv *cv, int t, enum nq_tensor_type dt, const char *name,
		       struct nq_tensor_desc *d)
{
	const struct nq_tensor *x = &cv->g.tensors[t];

	memset(d, 0, sizeof(*d));
	d->name = name ? name : x->name;
	d->dtype = dt;
	d->rank = (uint32_t)x->rank;
	for (int i = 0; i < x->rank; i++) {
		if (x->dims[i] < 1 || x->dims[i] > UINT32_MAX)
			return nq_fail(-EINVAL, "tensor '%s': dimension %d is %lld", x->name, i,
				       (long long)x->dims[i]);
		d->dims[i] = (uint32_t)x->dims[i];
	}
	if (dt == NQ_TENSOR_U8) {
		d->scale = cv->qp[t].scale;
		d->zero_point = cv->qp[t].zero_point;
	}
	return 0;
}

static int add_dequantize(struct nq_writer *w, uint32_t from, uint32_t to, const char *name)
{
	struct nq_node_desc nd = { .name = name, .op = NQ_OP_DEQUANTIZE, .inputs = &from,
				   .n_inputs = 1, .outputs = &to, .n_outputs = 1,
				   .layer = NQ_NONE };

	return nq_writer_add_node(w, &nd);
}

/*
 * The f32 form of tensor t (for a Softmax input or a graph output): added
 * once, as a DEQUANTIZE of its u8 form; f32_name NULL keeps the ONNX name.
 */
static int ensure_f32(struct conv *cv, struct nq_writer *w, uint32_t *fid, uint32_t *fid32,
		      int t, const char *f32_name)
{
	struct nq_tensor_desc td;
	char name[600];
	int id, err;

	if (fid32[t] != NQ_NONE)
		return 0;
	err = tensor_desc(cv, t, NQ_TENSOR_F32, f32_name, &td);
	if (err)
		return err;
	id = nq_writer_add_tensor(w, &td);
	if (id < 0)
		return id;
	fid32[t] = (uint32_t)id;
	snprintf(name, sizeof(name), "dequantize:%s", cv->g.tensors[t].name);
	err = add_dequantize(w, fid[t], fid32[t], name);
	return err < 0 ? err : 0;
}

/* Panel order wherever the SIMD kernels build 16 x 4 panels: every
 * ungrouped CONV and every GEMM; grouped and depthwise layers keep rows. */
static uint32_t plane_layout(const struct conv *cv, const struct wlayer *l)
{
	return !cv->o->rows_only && l->sh.groups == 1 ? NQ_PLANE_PANEL16X4 : NQ_PLANE_ROWS;
}

static int add_layer(struct conv *cv, struct nq_writer *w, struct wlayer *l)
{
	const struct nq_node *n = &cv->g.nodes[l->node];
	struct nq_layer_desc ld;
	float *scales;
	int id;

	memset(&ld, 0, sizeof(ld));
	ld.name = cv_layer_name(cv, l);
	ld.kind = n->op == NQ_OP_CONV ? NQ_LAYER_CONV : NQ_LAYER_GEMM;
	ld.oc = l->sh.oc;
	ld.k = l->sh.k;
	ld.groups = l->sh.groups;
	ld.kh = l->kh;
	ld.kw = l->kw;
	ld.cin_per_group = n->op == NQ_OP_CONV ? l->cpg : l->sh.k;
	ld.layout = plane_layout(cv, l);
	for (unsigned lv = 0; lv < cv->nlevels; lv++) {
		ld.plane_bits[lv] = (uint8_t)l->nest.plane_bits[lv];
		ld.plane_signed[lv] = true;
	}
	scales = malloc((size_t)cv->nlevels * l->sh.oc * sizeof(*scales));
	if (!scales)
		return nq_fail(-ENOMEM, "out of memory");
	for (unsigned lv = 0; lv < cv->nlevels; lv++)
		memcpy(scales + (size_t)lv * l->sh.oc, l->nest.scale[lv], l->sh.oc * sizeof(float));
	ld.scales = scales;
	ld.bias = n->bias;
	id = nq_writer_add_layer(w, &ld);
	free(scales);
	if (id < 0)
		return nq_fail_context(id, "layer '%s'", ld.name);
	l->file_layer = id;
	return 0;
}

/* The integer graph: see the top of convert.h. */
static int add_graph(struct conv *cv, struct nq_writer *w)
{
	struct nq_graph *g = &cv->g;
	struct nq_tensor_desc td;
	uint32_t *fid = NULL, *fid32 = NULL;	/* file ids: u8/f32 form of each tensor */
	char name[600];
	int err = 0, id;

	fid = malloc(g->n_tensors * sizeof(*fid));
	fid32 = malloc(g->n_tensors * sizeof(*fid32));
	if (!fid || !fid32) {
		err = nq_fail(-ENOMEM, "out of memory");
		goto out;
	}
	for (int t = 0; t < g->n_tensors; t++)
		fid[t] = fid32[t] = NQ_NONE;

	/* Graph input: f32 as the caller gives it, QUANTIZE to u8. */
	for (int i = 0; i < g->n_inputs; i++) {
		int t = g->inputs[i];
		struct nq_node_desc nd = { .op = NQ_OP_QUANTIZE, .n_inputs = 1, .n_outputs = 1,
					   .layer = NQ_NONE };

		err = tensor_desc(cv, t, NQ_TENSOR_F32, NULL, &td);
		if (err)
			goto out;
		id = nq_writer_add_tensor(w, &td);
		if (id < 0) {
			err = id;
			goto out;
		}
		fid32[t] = (uint32_t)id;
		snprintf(name, sizeof(name), "%s:u8", g->tensors[t].name);
		err = tensor_desc(cv, t, NQ_TENSOR_U8, name, &td);
		if (err)
			goto out;
		id = nq_writer_add_tensor(w, &td);
		if (id < 0) {
			err = id;
			goto out;
		}
		fid[t] = (uint32_t)id;
		err = nq_writer_add_input(w, fid32[t]);
		if (err)
			goto out;
		snprintf(name, sizeof(name), "quantize:%s", g->tensors[t].name);
		nd.name = name;
		nd.inputs = &fid32[t];
		nd.outputs = &fid[t];
		err = nq_writer_add_node(w, &nd);
		if (err < 0)
			goto out;
		err = 0;
	}

	for (int i = 0; i < g->n_nodes; i++) {
		const struct nq_node *n = &g->nodes[i];
		uint32_t ins[16], out;
		struct nq_node_desc nd;
		int y = n->output, ni = 0;

		if (n->n_inputs > 16) {
			err = nq_fail(-EOPNOTSUPP, "node '%s': %d inputs (at most 16)", n->name,
				      n->n_inputs);
			goto out;
		}
		for (int j = 0; j < n->n_inputs; j++) {
			int t = n->inputs[j];

			if (t < 0)
				continue;
			if (n->op == NQ_OP_SOFTMAX) {
				/* Softmax runs in f32: dequantize its input first. */
				snprintf(name, sizeof(name), "%s:f32", g->tensors[t].name);
				err = ensure_f32(cv, w, fid, fid32, t, name);
				if (err)
					goto out;
				ins[ni++] = fid32[t];
			} else {
				ins[ni++] = fid[t];
			}
		}
		/* u8 graph outputs keep the ONNX name for their f32 form. */
		if (cv->kind[y] == TK_U8 && (g->tensors[y].flags & NQ_TF_OUTPUT))
			snprintf(name, sizeof(name), "%s:u8", g->tensors[y].name);
		else
			snprintf(name, sizeof(name), "%s", g->tensors[y].name);
		err = tensor_desc(cv, y, cv->kind[y] == TK_F32 ? NQ_TENSOR_F32 : NQ_TENSOR_U8, name,
				  &td);
		if (err)
			goto out;
		id = nq_writer_add_tensor(w, &td);
		if (id < 0) {
			err = id;
			goto out;
		}
		out = (uint32_t)id;
		if (cv->kind[y] == TK_F32)
			fid32[y] = out;
		else
			fid[y] = out;

		memset(&nd, 0, sizeof(nd));
		nd.name = n->name && *n->name ? n->name : g->tensors[y].name;
		nd.op = (enum nq_op)n->op;
		nd.inputs = ins;
		nd.n_inputs = (uint32_t)ni;
		nd.outputs = &out;
		nd.n_outputs = 1;
		nd.layer = NQ_NONE;
		nd.attrs = n->attrs;
		if (cv->layer_of[i] >= 0) {
			err = add_layer(cv, w, &cv->wl[cv->layer_of[i]]);
			if (err)
				goto out;
			nd.layer = (uint32_t)cv->wl[cv->layer_of[i]].file_layer;
		}
		err = nq_writer_add_node(w, &nd);
		if (err < 0) {
			nq_fail_context(err, "node '%s'", nd.name);
			goto out;
		}
		err = 0;
	}

	/* Outputs: dequantize u8 results to f32 under the ONNX name. */
	for (int i = 0; i < g->n_outputs; i++) {
		int t = g->outputs[i];

		err = ensure_f32(cv, w, fid, fid32, t, NULL);
		if (err)
			goto out;
		err = nq_writer_add_output(w, fid32[t]);
		if (err)
			goto out;
	}
out:
	free(fid);
	free(fid32);
	return err;
}

/* Pack plane `lv` of layer l, OIHW -> OHWI, and stream it. */
static int write_plane(struct conv *cv, struct nq_writer *w, struct wlayer *l, unsigned lv,
		       int8_t *row, uint8_t **buf, size_t *cap)
{
	uint32_t stride;
	uint64_t size;
	const int8_t *src = l->nest.plane[lv];
	unsigned kh = l->kh, kw = l->kw, cpg = l->cpg;
	bool conv = cv->g.nodes[l->node].op == NQ_OP_CONV;
	uint32_t layout = plane_layout(cv, l);
	int err;

	err = nq_writer_plane_layout(w, (uint32_t)l->file_layer, lv, &stride, &size);
	if (err)
		return err;
	if (*cap < size) {
		uint8_t *p = realloc(*buf, size);

		if (!p)
			return nq_fail(-ENOMEM, "out of memory for a %llu-byte plane",
				       (unsigned long long)size);
		*buf = p;
		*cap = size;
	}
	memset(*buf, 0, size);
	for (uint32_t c = 0; c < l->sh.oc; c++) {
		const int8_t *s = src + (size_t)c * l->sh.k;

		if (conv) {
			for (unsigned ci = 0; ci < cpg; ci++)
				for (unsigned y = 0; y < kh; y++)
					for (unsigned x = 0; x < kw; x++)
						row[(y * kw + x) * cpg + ci] = s[(ci * kh + y) * kw + x];
		} else {
			memcpy(row, s, l->sh.k);
		}
		err = nq_plane_pack_row(*buf, layout, stride, l->sh.k, c, row,
					l->nest.plane_bits[lv], true);
		if (err)
			return nq_fail_context(err, "layer '%s' level %u row %u", cv_layer_name(cv, l),
					       lv, c);
	}
	return nq_writer_write_plane(w, (uint32_t)l->file_layer, lv, *buf, size);
}

int cv_write_file(struct conv *cv, const char *src, const char *dst,
		  const struct nq_convert_report *rep)
{
	const struct nq_convert_opts *o = cv->o;
	struct nq_writer *w = NULL;
	uint8_t lv8[NQ_MAX_LEVELS], *buf = NULL;
	int8_t *row = NULL;
	size_t cap = 0;
	uint32_t maxk = 1;
	unsigned done = 0, total = cv->nlevels * (unsigned)cv->nwl;
	int err;

	for (unsigned i = 0; i < cv->nlevels; i++)
		lv8[i] = (uint8_t)cv->levels[i];
	for (int i = 0; i < cv->nwl; i++)
		if (cv->wl[i].sh.k > maxk)
			maxk = cv->wl[i].sh.k;
	row = malloc(maxk);
	if (!row)
		return nq_fail(-ENOMEM, "out of memory");
	err = nq_writer_create(dst, lv8, cv->nlevels, NULL, &w);
	if (err)
		goto out;
	err = add_metadata(cv, w, src, rep);
	if (!err) {
		struct nq_disk_preprocess p;

		memset(&p, 0, sizeof(p));
		p.layout = o->pre.layout ? (uint32_t)o->pre.layout : NQ_LAYOUT_NCHW;
		p.channels = o->pre.channels ? o->pre.channels : 1;
		p.input_scale = nq_convert_input_scale(&o->pre);
		p.std[0] = 1.0f;
		for (unsigned c = 0; c < o->pre.channels; c++) {
			p.mean[c] = o->pre.mean[c];
			p.std[c] = o->pre.std[c];
		}
		err = nq_writer_set_preprocess(w, &p);
	}
	if (!err)
		err = add_graph(cv, w);
	for (unsigned lv = 0; !err && lv < cv->nlevels; lv++)
		for (int i = 0; !err && i < cv->nwl; i++) {
			err = cv_cancelled(cv);
			if (!err)
				err = write_plane(cv, w, &cv->wl[i], lv, row, &buf, &cap);
			cv_progress(cv, "write", ++done, total, cv_layer_name(cv, &cv->wl[i]));
		}
	if (!err)
		err = cv_cancelled(cv);
	if (err) {
		nq_writer_abort(w);
		goto out;
	}
	err = nq_writer_finish(w);
out:
	free(buf);
	free(row);
	return err;
}
