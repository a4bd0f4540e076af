// SPDX-License-Identifier: MIT
/*
 * The converter pipeline (convert.h): import, normalise, calibrate,
 * quantize and nest, write.  This file holds the plan (which tensor becomes
 * what in the integer graph), the weight stage and the driver; calibration
 * is in calibrate.c, the file in write_nq.c.
 *
 * Weights are quantized in
 * the graph's OIHW row order (SQuant's kernel stage needs kh*kw runs) and
 * permuted to the file's OHWI order only when the planes are packed.
 *
 * All layers are quantized before the writer is created: the file format
 * streams planes level by level, and holding the small integer planes costs
 * far less than quantizing twice.  The writer publishes by rename, so an
 * error or a cancel anywhere leaves the destination untouched.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nq_error.h"
#include "nq_format.h"
#include "onnx_import.h"
#include "pipeline_int.h"

double cv_since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) * 1e-9;
}

int cv_cancelled(const struct conv *cv)
{
	if (cv->o->cancel && *cv->o->cancel)
		return nq_fail(-EINTR, "conversion interrupted");
	return 0;
}

void cv_progress(const struct conv *cv, const char *stage, unsigned done, unsigned total,
		 const char *item)
{
	struct nq_convert_progress p = {
		.stage = stage, .done = done, .total = total, .item = item ? item : "",
		.elapsed = cv_since(&cv->t0),
	};

	if (cv->o->progress)
		cv->o->progress(cv->o->progress_arg, &p);
}

void nq_convert_opts_init(struct nq_convert_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->nlevels = 2;
	o->levels[0] = 6;
	o->levels[1] = 8;
	o->rounding = NQ_ROUND_SQUANT;
	o->full_rounding = -1;
	o->residual = NQ_RESIDUAL_EXACT;
	o->wscale = NQ_WSCALE_ABSMAX;
	o->lscale = NQ_LSCALE_SHIFT;
	o->calib = NQ_CALIB_SRC_FASHION_MNIST;
	o->calib_count = DEFAULT_CALIB_COUNT;
	o->calib_method = NQ_CALIB_MINMAX;
	o->percentile = 99.99;
	o->seed = 1;
	o->threads = 1;
}

void nq_convert_report_free(struct nq_convert_report *r)
{
	if (!r)
		return;
	free(r->layers);
	r->layers = NULL;
	r->nlayers = 0;
}

/* The rounding of the full-bit integers (see nq_convert_opts). */
enum nq_round cv_full_rounding(const struct nq_convert_opts *o)
{
	enum nq_round r;

	if (o->full_rounding >= 0)
		r = (enum nq_round)o->full_rounding;
	else
		r = o->rounding;
	return r == NQ_ROUND_TRUNCATE ? NQ_ROUND_NEAREST : r;
}

const char *cv_layer_name(const struct conv *cv, const struct wlayer *l)
{
	const struct nq_node *n = &cv->g.nodes[l->node];

	return n->name && *n->name ? n->name : cv->g.tensors[n->output].name;
}

/* ---- graph checks and tensor plan ------------------------------------- */

static int plan(struct conv *cv)
{
	struct nq_graph *g = &cv->g;
	char lab[160];
	int t, i;

	cv->kind = calloc(g->n_tensors, sizeof(*cv->kind));
	cv->alias = malloc(g->n_tensors * sizeof(*cv->alias));
	cv->obs = calloc(g->n_tensors, sizeof(*cv->obs));
	cv->qp = calloc(g->n_tensors, sizeof(*cv->qp));
	cv->feeds = calloc(g->n_tensors, sizeof(*cv->feeds));
	cv->layer_of = malloc(g->n_nodes * sizeof(*cv->layer_of));
	cv->wl = calloc(g->n_nodes ? g->n_nodes : 1, sizeof(*cv->wl));
	if (!cv->kind || !cv->alias || !cv->obs || !cv->qp || !cv->feeds || !cv->layer_of || !cv->wl)
		return nq_fail(-ENOMEM, "out of memory planning %d tensors", g->n_tensors);
	for (t = 0; t < g->n_tensors; t++)
		cv->alias[t] = -1;

	if (g->n_inputs != 1)
		return nq_fail(-EOPNOTSUPP, "the model has %d graph inputs; the converter handles exactly one",
			       g->n_inputs);
	for (i = 0; i < g->n_inputs; i++) {
		const struct nq_tensor *x = &g->tensors[g->inputs[i]];

		if (x->dtype != NQ_ELEM_FLOAT || x->rank < 2 || x->rank > 4)
			return nq_fail(-EOPNOTSUPP, "graph input '%s': need a float tensor of rank 2..4",
				       x->name);
		cv->kind[g->inputs[i]] = TK_U8;
	}

	for (i = 0; i < g->n_nodes; i++) {
		const struct nq_node *n = &g->nodes[i];
		const struct nq_tensor *y = &g->tensors[n->output];

		cv->layer_of[i] = -1;
		nq_node_label(n, lab, sizeof(lab));
		if (n->op <= NQ_OP_DEQUANTIZE || n->op >= NQ_OP_COUNT)
			return nq_fail(-EOPNOTSUPP, "%s: op %s has no integer form", lab, nq_op_name(n->op));
		if (y->rank > 4)
			return nq_fail(-EOPNOTSUPP, "%s: output '%s' has rank %d (at most 4)", lab,
				       y->name, y->rank);
		for (int j = 0; j < n->n_inputs; j++) {
			int in = n->inputs[j];

			if (in < 0)
				continue;
			if (g->tensors[in].flags & NQ_TF_CONST)
				return nq_fail(-EOPNOTSUPP, "%s: input %d ('%s') is a constant; only weight layers may hold constants",
					       lab, j, g->tensors[in].name);
			if (cv->kind[in] == TK_F32 && n->op != NQ_OP_SOFTMAX)
				return nq_fail(-EOPNOTSUPP, "%s: reads the Softmax output '%s'; Softmax must end the graph",
					       lab, g->tensors[in].name);
		}
		cv->kind[n->output] = n->op == NQ_OP_SOFTMAX ? TK_F32 : TK_U8;
		switch (n->op) {
		case NQ_OP_FLATTEN:
		case NQ_OP_RESHAPE:
		case NQ_OP_MAXPOOL:
			/* Moves values around: keep the input's quantization. */
			cv->alias[n->output] = cv->alias[n->inputs[0]] >= 0 ? cv->alias[n->inputs[0]]
									 : n->inputs[0];
			break;
		case NQ_OP_CONV:
		case NQ_OP_GEMM: {
			struct wlayer *l = &cv->wl[cv->nwl];

			if (!n->weight || n->oc < 1 || n->k < 1)
				return nq_fail(-EINVAL, "%s: weight layer without weights", lab);
			l->node = i;
			l->sh.oc = (uint32_t)n->oc;
			l->sh.k = (uint32_t)n->k;
			if (n->op == NQ_OP_CONV) {
				l->kh = (unsigned)n->attrs.i[NQ_A_KH];
				l->kw = (unsigned)n->attrs.i[NQ_A_KW];
				l->sh.groups = (uint32_t)n->attrs.i[NQ_A_GROUPS];
				l->sh.kernel = l->kh * l->kw;
			} else {
				l->kh = l->kw = 1;
				l->sh.groups = 1;
				l->sh.kernel = 1;
			}
			l->cpg = (unsigned)n->cin_per_group;
			if (!l->sh.groups || l->sh.oc % l->sh.groups ||
			    (uint64_t)l->cpg * l->sh.kernel != l->sh.k)
				return nq_fail(-EINVAL, "%s: inconsistent weight shape %d x %d (groups %u)",
					       lab, n->oc, n->k, l->sh.groups);
			l->file_layer = -1;
			cv->layer_of[i] = cv->nwl++;
			break;
		}
		default:
			break;
		}
	}
	for (i = 0; i < g->n_outputs; i++)
		if (!cv->kind[g->outputs[i]])
			return nq_fail(-EOPNOTSUPP, "graph output '%s' is a constant",
				       g->tensors[g->outputs[i]].name);
	return 0;
}

/* ---- weights ------------------------------------------------------------- */

static int quantize_layers(struct conv *cv, struct nq_convert_report *rep)
{
	const struct nq_convert_opts *o = cv->o;
	struct nq_quant_opts qo;
	struct nq_nest_opts no;
	int err;

	nq_quant_opts_init(&qo);
	nq_nest_opts_init(&no);
	qo.bits = cv->levels[cv->nlevels - 1];
	qo.scale = o->wscale;
	qo.round.method = cv->nlevels == 1 ? (o->rounding == NQ_ROUND_TRUNCATE ? NQ_ROUND_NEAREST
										: o->rounding)
					   : cv_full_rounding(o);
	qo.round.threads = o->threads;
	no.nlevels = cv->nlevels;
	memcpy(no.levels, cv->levels, sizeof(no.levels));
	no.round.method = o->rounding;
	no.round.threads = o->threads;
	no.residual = o->residual;
	no.lscale = o->lscale;
	no.target = NQ_TARGET_FLOAT;

	rep->layers = calloc(cv->nwl ? cv->nwl : 1, sizeof(*rep->layers));
	if (!rep->layers)
		return nq_fail(-ENOMEM, "out of memory");
	rep->nlayers = (unsigned)cv->nwl;
	for (int i = 0; i < cv->nwl; i++) {
		struct wlayer *l = &cv->wl[i];
		const struct nq_node *n = &cv->g.nodes[l->node];
		struct nq_convert_layer *rl = &rep->layers[i];

		err = cv_cancelled(cv);
		if (err)
			return err;
		cv_progress(cv, "quantize", (unsigned)i, (unsigned)cv->nwl, cv_layer_name(cv, l));
		err = nq_nested_alloc(&l->nest, l->sh.oc, l->sh.k, &no);
		if (!err)
			err = nq_quant_layer(n->weight, &l->sh, l->gram, &qo, &no, &l->nest);
		if (err)
			return nq_fail_context(err, "layer '%s'", cv_layer_name(cv, l));
		snprintf(rl->name, sizeof(rl->name), "%s", cv_layer_name(cv, l));
		rl->kind = n->op == NQ_OP_CONV ? NQ_LAYER_CONV : NQ_LAYER_GEMM;
		rl->oc = l->sh.oc;
		rl->k = l->sh.k;
		for (unsigned lv = 0; lv < cv->nlevels; lv++) {
			struct nq_werr e;

			rl->plane_bits[lv] = l->nest.plane_bits[lv];
			err = nq_weight_error(n->weight, &l->sh, l->nest.q[lv], l->nest.scale[lv], &e);
			if (err)
				return err;
			rl->sqnr_db[lv] = e.sqnr_db;
			rl->clip_mean[lv] = e.clip_mean;
		}
		rep->weights += (uint64_t)l->sh.oc * l->sh.k;
		/* The grams are large (k^2 floats); drop them as soon as used. */
		if (l->gram) {
			for (unsigned gi = 0; gi < l->sh.groups; gi++)
				nq_gram_free(&l->gram[gi]);
			free(l->gram);
			l->gram = NULL;
		}
	}
	cv_progress(cv, "quantize", (unsigned)cv->nwl, (unsigned)cv->nwl, "");
	for (unsigned lv = 0; lv < cv->nlevels; lv++) {
		double bits = 0;

		for (int i = 0; i < cv->nwl; i++)
			bits += (double)cv->wl[i].nest.plane_bits[lv] * cv->wl[i].sh.oc * cv->wl[i].sh.k;
		rep->level_bits[lv] = (lv ? rep->level_bits[lv - 1] : 0) +
				      (rep->weights ? bits / (double)rep->weights : 0);
	}
	rep->bits_per_weight = rep->level_bits[cv->nlevels - 1];
	return 0;
}

static void conv_free(struct conv *cv)
{
	struct nq_graph *g = &cv->g;

	if (cv->obs)
		for (int t = 0; t < g->n_tensors; t++)
			nq_observer_free(cv->obs[t]);
	if (cv->feeds)
		for (int t = 0; t < g->n_tensors; t++)
			free(cv->feeds[t]);
	if (cv->wl)
		for (int i = 0; i < cv->nwl; i++) {
			if (cv->wl[i].gram) {
				for (unsigned gi = 0; gi < cv->wl[i].sh.groups; gi++)
					nq_gram_free(&cv->wl[i].gram[gi]);
				free(cv->wl[i].gram);
			}
			nq_nested_free(&cv->wl[i].nest);
		}
	free(cv->obs);
	free(cv->feeds);
	free(cv->kind);
	free(cv->alias);
	free(cv->qp);
	free(cv->layer_of);
	free(cv->wl);
	free(cv->rowbuf);
	nq_graph_free(g);
}

static int check_opts(const struct nq_convert_opts *o, struct conv *cv)
{
	if (o->nlevels < 1 || o->nlevels > NQ_MAX_LEVELS)
		return nq_fail(-EINVAL, "levels: %u given, 1..%d allowed", o->nlevels, NQ_MAX_LEVELS);
	for (unsigned i = 0; i < o->nlevels; i++) {
		if (o->levels[i] < NQ_QUANT_MIN_BITS || o->levels[i] > NQ_QUANT_MAX_BITS)
			return nq_fail(-EINVAL, "levels: %u bits is outside %d..%d", o->levels[i],
				       NQ_QUANT_MIN_BITS, NQ_QUANT_MAX_BITS);
		if (i && o->levels[i] <= o->levels[i - 1])
			return nq_fail(-EINVAL, "levels must be strictly ascending inside the options");
	}
	if ((o->wscale == NQ_WSCALE_NEST || o->wscale == NQ_WSCALE_NEST_MSE) && o->nlevels < 2)
		return nq_fail(-EINVAL, "--weight-scale %s needs at least two levels",
			       nq_wscale_name(o->wscale));
	if (!(o->pre.input_scale >= 0) || !isfinite(o->pre.input_scale))
		return nq_fail(-EINVAL, "--input-scale must be a positive number");
	if (o->pre.channels > NQ_CONVERT_MAX_CHANNELS)
		return nq_fail(-EINVAL, "--mean/--std: at most %d channels", NQ_CONVERT_MAX_CHANNELS);
	for (unsigned c = 0; c < o->pre.channels; c++)
		if (!(o->pre.std[c] > 0) || !isfinite(o->pre.std[c]) || !isfinite(o->pre.mean[c]))
			return nq_fail(-EINVAL, "--std must be positive and --mean finite (channel %u)", c);
	cv->nlevels = o->nlevels;
	memcpy(cv->levels, o->levels, sizeof(cv->levels));
	return 0;
}

int nq_convert(const char *onnx_path, const char *out_path, const struct nq_convert_opts *o,
	       struct nq_convert_report *report)
{
	struct nq_convert_report rep;
	struct conv cv;
	struct nq_file *f = NULL;
	double t;
	int err;

	memset(&cv, 0, sizeof(cv));
	memset(&rep, 0, sizeof(rep));
	clock_gettime(CLOCK_MONOTONIC, &cv.t0);
	cv.o = o;
	nq_graph_init(&cv.g);
	if (!onnx_path || !out_path || !o)
		return nq_fail(-EINVAL, "convert: missing argument");
	err = check_opts(o, &cv);
	if (err)
		goto out;

	err = nq_onnx_load(onnx_path, &cv.g);
	if (!err)
		err = nq_graph_normalise(&cv.g);
	if (err) {
		nq_fail_context(err, "%s", onnx_path);
		goto out;
	}
	err = plan(&cv);
	if (err) {
		nq_fail_context(err, "%s", onnx_path);
		goto out;
	}
	rep.seconds_load = cv_since(&cv.t0);

	err = cv_calibrate(&cv, onnx_path, &rep);
	if (err)
		goto out;
	t = cv_since(&cv.t0);
	rep.seconds_calib = t - rep.seconds_load;

	err = quantize_layers(&cv, &rep);
	if (err)
		goto out;
	rep.seconds_quant = cv_since(&cv.t0) - t;
	t = cv_since(&cv.t0);

	err = cv_write_file(&cv, onnx_path, out_path, &rep);
	if (err)
		goto out;
	rep.seconds_write = cv_since(&cv.t0) - t;

	/* Sizes as written (the reader validates the result once more). */
	err = nq_file_open(out_path, &f);
	if (err) {
		nq_fail_context(err, "re-reading %s", out_path);
		goto out;
	}
	rep.file_size = nq_file_size(f);
	for (unsigned lv = 0; lv < cv.nlevels; lv++)
		rep.level_bytes[lv] = nq_file_level(f, lv)->region_size;
	nq_file_close(f);
	rep.seconds_total = cv_since(&cv.t0);
out:
	conv_free(&cv);
	if (err || !report)
		nq_convert_report_free(&rep);
	else
		*report = rep;
	return err;
}
