// SPDX-License-Identifier: MIT
/*
 * Calibration: one pass of the FP32 executor over the calibration inputs.
 * Its observer feeds every activation that becomes a u8 tensor into a range
 * observer (calib.h) and, for adaround, a bounded random sample of each
 * weight layer's input patches (im2col rows, in the weight's OIHW row order)
 * into one gram matrix per conv group (quant.h).  The ranges can be cached
 * in a file keyed by the model's SHA-256 and the calibration options.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fp32_exec.h"
#include "nq_error.h"
#include "pipeline_int.h"

static uint64_t rnd(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static int add_feed(struct conv *cv, int t, int layer)
{
	int n = 0;
	int *v;

	while (cv->feeds[t] && cv->feeds[t][n] >= 0)
		n++;
	v = realloc(cv->feeds[t], (n + 2) * sizeof(*v));
	if (!v)
		return nq_fail(-ENOMEM, "out of memory");
	v[n] = layer;
	v[n + 1] = -1;
	cv->feeds[t] = v;
	return 0;
}

/* Sample patches of layer l's input x (run-time view) into its grams. */
static int sample_rows(struct conv *cv, struct wlayer *l, const struct nq_fp32_view *x)
{
	const struct nq_node *n = &cv->g.nodes[l->node];
	unsigned want = cv->rows_per_batch, k = l->sh.k;
	size_t need = (size_t)want * k;
	int err;

	if (cv->rowbuf_cap < need) {
		float *p = realloc(cv->rowbuf, need * sizeof(float));

		if (!p)
			return nq_fail(-ENOMEM, "adaround: out of memory for %u x %u patches", want, k);
		cv->rowbuf = p;
		cv->rowbuf_cap = need;
	}
	if (n->op == NQ_OP_GEMM) {
		size_t b = x->dims[0];

		if (x->numel != b * k)
			return nq_fail(-EINVAL, "adaround: Gemm input of %zu values, %zu x %u expected",
				       x->numel, b, k);
		return nq_gram_add(&l->gram[0], x->data, b, cv->o->threads);
	}

	const struct nq_attrs *a = &n->attrs;
	const struct nq_tensor *yt = &cv->g.tensors[n->output];
	int64_t B = x->dims[0], C = x->dims[1], H = x->dims[2], W = x->dims[3];
	int64_t OH = yt->dims[2], OW = yt->dims[3];
	unsigned cpg = l->cpg;

	for (unsigned gi = 0; gi < l->sh.groups; gi++) {
		uint64_t st = cv->rng + gi;	/* same positions in every group */

		for (unsigned r = 0; r < want; r++) {
			uint64_t v = rnd(&st);
			int64_t b = (int64_t)(v % (uint64_t)B);
			int64_t pos = (int64_t)((v >> 20) % (uint64_t)(OH * OW));
			int64_t oy = pos / OW, ox = pos % OW;
			float *row = cv->rowbuf + (size_t)r * k;

			for (unsigned c = 0; c < cpg; c++) {
				int64_t ch = (int64_t)gi * cpg + c;

				for (unsigned ky = 0; ky < l->kh; ky++) {
					int64_t iy = oy * a->i[NQ_A_STRIDE_H] - a->i[NQ_A_PAD_T] +
						     (int64_t)ky * a->i[NQ_A_DIL_H];

					for (unsigned kx = 0; kx < l->kw; kx++) {
						int64_t ix = ox * a->i[NQ_A_STRIDE_W] - a->i[NQ_A_PAD_L] +
							     (int64_t)kx * a->i[NQ_A_DIL_W];
						float val = 0;

						if (iy >= 0 && iy < H && ix >= 0 && ix < W && ch < C)
							val = x->data[((b * C + ch) * H + iy) * W + ix];
						row[(c * l->kh + ky) * l->kw + kx] = val;
					}
				}
			}
		}
		err = nq_gram_add(&l->gram[gi], cv->rowbuf, want, cv->o->threads);
		if (err)
			return err;
	}
	return 0;
}

static int observe(void *arg, const struct nq_graph *g, const struct nq_fp32_view *t)
{
	struct conv *cv = arg;
	int err;

	(void)g;
	if (cv->obs[t->tensor]) {
		err = nq_observer_observe(cv->obs[t->tensor], t->data, t->numel);
		if (err)
			return nq_fail_context(err, "calibrating '%s'", cv->g.tensors[t->tensor].name);
	}
	if (cv->feeds[t->tensor])
		for (int *f = cv->feeds[t->tensor]; *f >= 0; f++) {
			err = sample_rows(cv, &cv->wl[*f], t);
			if (err)
				return err;
		}
	return 0;
}

/*
 * The calibration cache: one text file holding every u8 tensor's range,
 * valid for one (model file, calibration options) key.  Floats are written
 * with %a so a cached conversion is bit-identical to a fresh one.
 */
#define CACHE_MAGIC "nestquant-calib-cache 1"

static int cache_key(const struct conv *cv, const char *src, char *key, size_t len)
{
	const struct nq_convert_opts *o = cv->o;
	char sha[65];
	int err, n;

	err = nq_sha256_file(src, sha);
	if (err)
		return err;
	n = snprintf(key, len, "%s|%d|%s|%u|%d|%a|%llu|%a|%d|%u", sha, (int)o->calib,
		     o->calib_path ? o->calib_path : "", o->calib_count ? o->calib_count
								 : DEFAULT_CALIB_COUNT,
		     (int)o->calib_method, o->percentile, (unsigned long long)o->seed,
		     nq_convert_input_scale(&o->pre), o->pre.layout, o->pre.channels);
	for (unsigned c = 0; c < o->pre.channels && n > 0 && (size_t)n < len; c++)
		n += snprintf(key + n, len - n, "|%a,%a", o->pre.mean[c], o->pre.std[c]);
	return 0;
}

/* 1: loaded, 0: no usable cache (missing, other key, other graph). */
static int cache_load(struct conv *cv, const char *key, unsigned *samples)
{
	struct nq_graph *g = &cv->g;
	char line[1024], name[1024];
	int loaded = 0, t;
	FILE *f = fopen(cv->o->calib_cache, "r");

	if (!f)
		return 0;
	if (!fgets(line, sizeof(line), f) || strncmp(line, CACHE_MAGIC "\n", sizeof(line)))
		goto out;
	if (!fgets(line, sizeof(line), f) || strncmp(line, "key ", 4) ||
	    strcspn(line + 4, "\n") != strlen(key) || strncmp(line + 4, key, strlen(key)))
		goto out;
	if (!fgets(line, sizeof(line), f) || sscanf(line, "samples %u", samples) != 1)
		goto out;
	for (t = 0; t < g->n_tensors; t++)
		cv->qp[t].scale = 0;
	while (fgets(line, sizeof(line), f)) {
		struct nq_act_qparams qp;
		int pos = 0;

		if (sscanf(line, "t %a %d %a %a %n", &qp.scale, &qp.zero_point, &qp.lo, &qp.hi,
			   &pos) != 4 || !pos)
			goto out;
		snprintf(name, sizeof(name), "%.*s", (int)strcspn(line + pos, "\n"), line + pos);
		t = nq_graph_find(g, name);
		if (t < 0 || cv->kind[t] != TK_U8 || cv->alias[t] >= 0 || !(qp.scale > 0) ||
		    qp.zero_point < 0 || qp.zero_point > 255)
			goto out;
		cv->qp[t] = qp;
	}
	for (t = 0; t < g->n_tensors; t++)
		if (cv->kind[t] == TK_U8 && cv->alias[t] < 0 && !(cv->qp[t].scale > 0))
			goto out;
	loaded = 1;
out:
	fclose(f);
	return loaded;
}

static int cache_save(const struct conv *cv, const char *key, unsigned samples)
{
	const struct nq_graph *g = &cv->g;
	char tmp[4096];
	FILE *f;
	int err = 0;

	if (snprintf(tmp, sizeof(tmp), "%s.%d.tmp", cv->o->calib_cache, (int)getpid()) >=
	    (int)sizeof(tmp))
		return nq_fail(-ENAMETOOLONG, "calibration cache name too long");
	f = fopen(tmp, "w");
	if (!f)
		return nq_fail(-errno, "calibration cache %s: %s", tmp, strerror(errno));
	fprintf(f, "%s\nkey %s\nsamples %u\n", CACHE_MAGIC, key, samples);
	for (int t = 0; t < g->n_tensors; t++)
		if (cv->kind[t] == TK_U8 && cv->alias[t] < 0)
			fprintf(f, "t %a %d %a %a %s\n", cv->qp[t].scale, cv->qp[t].zero_point,
				cv->qp[t].lo, cv->qp[t].hi, g->tensors[t].name);
	if (fflush(f) || ferror(f))
		err = nq_fail(-EIO, "calibration cache %s: write error", tmp);
	if (fclose(f) && !err)
		err = nq_fail(-EIO, "calibration cache %s: write error", tmp);
	if (!err && rename(tmp, cv->o->calib_cache))
		err = nq_fail(-errno, "calibration cache %s: %s", cv->o->calib_cache, strerror(errno));
	if (err)
		unlink(tmp);
	return err;
}

static int calib_shape(const struct nq_tensor *x, struct nq_calib_shape *sh)
{
	switch (x->rank) {
	case 2:
		*sh = (struct nq_calib_shape){ 1, 1, (unsigned)x->dims[1] };
		break;
	case 3:
		*sh = (struct nq_calib_shape){ 1, (unsigned)x->dims[1], (unsigned)x->dims[2] };
		break;
	default:
		*sh = (struct nq_calib_shape){ (unsigned)x->dims[1], (unsigned)x->dims[2],
					       (unsigned)x->dims[3] };
	}
	return 0;
}

int cv_calibrate(struct conv *cv, const char *src, struct nq_convert_report *rep)
{
	const struct nq_convert_opts *o = cv->o;
	struct nq_graph *g = &cv->g;
	const struct nq_tensor *in = &g->tensors[g->inputs[0]];
	struct nq_calib_shape sh;
	struct nq_fp32_opts fo = { .threads = (int)(o->threads ? o->threads : 1),
				   .observe = observe, .arg = cv };
	float *x = NULL, **outs = NULL;
	unsigned count = o->calib_count ? o->calib_count : DEFAULT_CALIB_COUNT, n = 0;
	size_t per;
	int batch, err, t;
	bool ada = o->rounding == NQ_ROUND_ADAROUND || cv_full_rounding(o) == NQ_ROUND_ADAROUND;
	char key[2048];

	if (fo.threads > 16)
		fo.threads = 16;
	if (o->calib_cache) {
		err = cache_key(cv, src, key, sizeof(key));
		if (err)
			return err;
		if (!ada && cache_load(cv, key, &rep->calib_samples)) {
			for (t = 0; t < g->n_tensors; t++)
				if (cv->alias[t] >= 0)
					cv->qp[t] = cv->qp[cv->alias[t]];
			cv_progress(cv, "calibrate", 1, 1, "(cached)");
			return 0;
		}
	}
	calib_shape(in, &sh);
	per = (size_t)sh.c * sh.h * sh.w;
	err = nq_calib_inputs(o, &sh, count, &x, &n);
	if (err)
		return err;
	rep->calib_samples = n;

	for (t = 0; t < g->n_tensors; t++) {
		if (cv->kind[t] != TK_U8 || cv->alias[t] >= 0)
			continue;
		err = nq_observer_new(o->calib_method, o->percentile, &cv->obs[t]);
		if (err)
			goto out;
	}
	batch = nq_fp32_batchable(g) ? CALIB_BATCH : g->batch;
	if (batch < 1)
		batch = 1;
	cv->batches = (n + (unsigned)batch - 1) / (unsigned)batch;
	if (ada) {
		unsigned rows = o->adaround_rows ? o->adaround_rows : DEFAULT_ADAROUND_ROWS;

		cv->rows_per_batch = (rows + cv->batches - 1) / cv->batches;
		for (int i = 0; i < cv->nwl; i++) {
			struct wlayer *l = &cv->wl[i];
			const struct nq_node *nd = &g->nodes[l->node];
			uint32_t kg = l->sh.k;

			l->gram = calloc(l->sh.groups, sizeof(*l->gram));
			if (!l->gram) {
				err = nq_fail(-ENOMEM, "adaround: out of memory");
				goto out;
			}
			for (unsigned gi = 0; gi < l->sh.groups; gi++) {
				err = nq_gram_init(&l->gram[gi], kg);
				if (err)
					goto out;
			}
			err = add_feed(cv, nd->inputs[0], i);
			if (err)
				goto out;
		}
	}

	outs = calloc(g->n_outputs, sizeof(*outs));
	if (!outs) {
		err = nq_fail(-ENOMEM, "out of memory");
		goto out;
	}
	for (int i = 0; i < g->n_outputs; i++) {
		outs[i] = malloc(nq_fp32_numel(g, g->outputs[i], batch) * sizeof(float));
		if (!outs[i]) {
			err = nq_fail(-ENOMEM, "out of memory");
			goto out;
		}
	}
	for (unsigned s = 0; s < n; s += (unsigned)batch) {
		int b = (int)(n - s < (unsigned)batch ? n - s : (unsigned)batch);
		const float *ins[1];

		err = cv_cancelled(cv);
		if (err)
			goto out;
		if (!nq_fp32_batchable(g))
			b = batch;	/* only whole batches; n is a multiple here */
		if (s + (unsigned)b > n)
			break;
		ins[0] = x + (size_t)s * per;
		cv->rng = o->seed * 0x9e3779b97f4a7c15ull + s;
		err = nq_fp32_run(g, b, ins, outs, &fo);
		if (err) {
			nq_fail_context(err, "calibration run on samples %u..%u", s, s + b - 1);
			goto out;
		}
		cv->batches_done++;
		cv_progress(cv, "calibrate", cv->batches_done, cv->batches, NULL);
	}

	for (t = 0; t < g->n_tensors; t++) {
		if (!cv->obs[t])
			continue;
		err = nq_observer_finalize(cv->obs[t], &cv->qp[t]);
		if (err) {
			nq_fail_context(err, "tensor '%s'", g->tensors[t].name);
			goto out;
		}
	}
	if (o->calib_cache) {
		err = cache_save(cv, key, n);
		if (err)
			goto out;
	}
	for (t = 0; t < g->n_tensors; t++)
		if (cv->alias[t] >= 0)
			cv->qp[t] = cv->qp[cv->alias[t]];
	if (ada)
		for (int i = 0; i < cv->nwl; i++)
			for (unsigned gi = 0; gi < cv->wl[i].sh.groups; gi++) {
				err = nq_gram_finish(&cv->wl[i].gram[gi], GRAM_DAMP);
				if (err)
					goto out;
			}
out:
	if (outs)
		for (int i = 0; i < g->n_outputs; i++)
			free(outs[i]);
	free(outs);
	free(x);
	return err;
}
