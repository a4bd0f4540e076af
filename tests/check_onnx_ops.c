// SPDX-License-Identifier: MIT
/*
 * ONNX import + FP32 executor conformance.
 *
 * 1. ONNX's own operator test vectors (Debian libonnx-testdata): every case
 *    under data/{node,pytorch-converted,pytorch-operator} whose operators are
 *    all ones the importer accepts is imported and run, and each output is
 *    compared with the reference:
 *
 *        |got - want| <= 1e-4 * max(1, |want|)      for every element
 *
 *    (relative 1e-4, absolute 1e-4 near zero), with identical dims.  int64
 *    inputs (Reshape's shape) are bound as constants at load.  Then
 *    the case is normalised (non-data inputs bound as constants, as weights
 *    are in a real model) and, when that succeeds, run and compared again.
 *    A case is skipped only when the importer reports -EOPNOTSUPP (a feature
 *    the issue does not ask for); its reason is listed.  The list is printed
 *    and written as Markdown to $NQ_CONFORMANCE_MD (make onnx-conformance
 *    writes docs/onnx-conformance.md).
 *
 * 2. Normalisation preserves results on whole models (tests/data/ *.onnx and,
 *    when present, models/resnet-small.onnx and models/mobilenet.onnx).
 *
 * 3. Executor properties: batch split, threads, observer, OHWI weights.
 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "onnx.pb-c.h"
#include "fp32_exec.h"
#include "graph.h"
#include "nq_error.h"
#include "nq_test.h"
#include "onnx_import.h"

#define TESTDATA "/usr/share/libonnx-testdata/data"
#define TOL 1e-4

/* The operators of the issue; cases using only the shape-folding helpers
 * (Constant, Shape, Gather, Unsqueeze, Pad) are not conformance cases. */
static const char *const primary_ops[] = {
	"Conv", "Gemm", "MatMul", "BatchNormalization", "Relu", "Clip", "Add", "MaxPool",
	"AveragePool", "GlobalAveragePool", "Flatten", "Reshape", "Identity", "Softmax", "Concat",
};

static int is_primary(const char *op)
{
	for (size_t i = 0; i < sizeof(primary_ops) / sizeof(primary_ops[0]); i++)
		if (!strcmp(op, primary_ops[i]))
			return 1;
	return 0;
}

/* ---- helpers ---------------------------------------------------------- */

static int read_whole(const char *path, uint8_t **buf, size_t *len)
{
	FILE *f = fopen(path, "rb");
	long n;

	*buf = NULL;
	*len = 0;
	if (!f)
		return -errno;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	*buf = malloc(n > 0 ? (size_t)n : 1);
	*len = fread(*buf, 1, (size_t)n, f);
	fclose(f);
	return *len == (size_t)n ? 0 : -EIO;
}

/* Op types of a model, read with the generated protobuf-c code: which
 * cases apply is decided before our importer sees the file. */
static int model_ops(const char *path, char *ops, size_t len, int *all_supported, int *any_primary)
{
	Onnx__ModelProto *m;
	uint8_t *buf;
	size_t n;
	int err = read_whole(path, &buf, &n);

	if (err)
		return err;
	m = onnx__model_proto__unpack(NULL, n, buf);
	free(buf);
	if (!m || !m->graph) {
		if (m)
			onnx__model_proto__free_unpacked(m, NULL);
		return -EINVAL;
	}
	*all_supported = 1;
	*any_primary = 0;
	ops[0] = '\0';
	for (size_t i = 0; i < m->graph->n_node; i++) {
		const char *op = m->graph->node[i]->op_type ? m->graph->node[i]->op_type : "";
		const char *dom = m->graph->node[i]->domain;

		if ((dom && dom[0] && strcmp(dom, "ai.onnx")) || !nq_onnx_op_supported(op))
			*all_supported = 0;
		if (is_primary(op))
			*any_primary = 1;
		if (!strstr(ops, op) && strlen(ops) + strlen(op) + 2 < len) {
			if (ops[0])
				strcat(ops, ",");
			strcat(ops, op);
		}
	}
	onnx__model_proto__free_unpacked(m, NULL);
	return 0;
}

struct io {
	int n;
	struct nq_tensor t[16];
};

static void io_free(struct io *io)
{
	for (int i = 0; i < io->n; i++) {
		free(io->t[i].name);
		free(io->t[i].data);
		free(io->t[i].i64);
	}
	io->n = 0;
}

/* Reads prefix_0.pb, prefix_1.pb, ... from dir. */
static int read_set(const char *dir, const char *prefix, struct io *io, char *why, size_t wlen)
{
	char path[1024];
	struct stat st;

	io->n = 0;
	for (int i = 0; i < 16; i++) {
		int err;

		snprintf(path, sizeof(path), "%s/%s_%d.pb", dir, prefix, i);
		if (stat(path, &st))
			break;
		err = nq_onnx_read_tensor(path, &io->t[i]);
		if (err) {
			snprintf(why, wlen, "%s_%d.pb: %s", prefix, i, nq_last_error());
			io_free(io);
			return err;
		}
		io->n = i + 1;
		if (io->t[i].dtype != NQ_ELEM_FLOAT && (strcmp(prefix, "input") || !io->t[i].name[0])) {
			snprintf(why, wlen, "%s_%d.pb is not a float tensor", prefix, i);
			io_free(io);
			return -EOPNOTSUPP;
		}
	}
	return 0;
}

static int same_dims(const struct nq_tensor *a, const struct nq_tensor *b)
{
	size_t na = nq_tensor_numel(a), nb = nq_tensor_numel(b);

	/* a 0-d scalar and a [1] tensor hold the same value; otherwise dims
	 * must match exactly */
	if (a->rank != b->rank)
		return na == 1 && nb == 1;
	return !memcmp(a->dims, b->dims, (size_t)a->rank * sizeof(int64_t));
}

/* Index of the worst element, or -1 when all are within tolerance. */
static long compare(const float *got, const float *want, size_t n, double *worst)
{
	long bad = -1;

	*worst = 0;
	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)got[i] - want[i]);
		double lim = TOL * fmax(1.0, fabs(want[i]));

		if (!(d <= lim) && (bad < 0 || d / lim > *worst)) {
			*worst = d / lim;
			bad = (long)i;
		}
	}
	return bad;
}

/*
 * Run g on the data set and compare.  0 = match, -EOPNOTSUPP = cannot run
 * here (why says so), other = mismatch or error (why says so).
 */
static int run_and_compare(struct nq_graph *g, const struct io *in, const struct io *want,
			   char *why, size_t wlen)
{
	const float *inputs[16];
	float *outputs[16] = { 0 };
	int err = 0;

	if (g->n_outputs != want->n || g->n_outputs > 16) {
		snprintf(why, wlen, "graph has %d outputs, data set %d", g->n_outputs, want->n);
		return -EINVAL;
	}
	for (int i = 0; i < g->n_inputs; i++) {
		const struct nq_tensor *gt = &g->tensors[g->inputs[i]];
		const struct nq_tensor *src = NULL;

		for (int j = 0; j < in->n && !src; j++)
			if (in->t[j].name[0] && !strcmp(in->t[j].name, gt->name))
				src = &in->t[j];
		if (!src && i < in->n)
			src = &in->t[i];
		if (!src || !same_dims(src, gt)) {
			snprintf(why, wlen, "input '%s' missing or of other dims", gt->name);
			return -EINVAL;
		}
		inputs[i] = src->data;
	}
	for (int i = 0; i < g->n_outputs; i++) {
		const struct nq_tensor *gt = &g->tensors[g->outputs[i]];

		if (!same_dims(gt, &want->t[i])) {
			snprintf(why, wlen, "output %d: inferred rank %d dims[0..] %lld,%lld differ from the reference",
				 i, gt->rank, (long long)gt->dims[0], (long long)(gt->rank > 1 ? gt->dims[1] : 0));
			err = -EINVAL;
			goto out;
		}
		outputs[i] = calloc(nq_tensor_numel(gt), sizeof(float));
	}
	err = nq_fp32_run(g, g->batch, inputs, outputs, &(struct nq_fp32_opts){ .threads = 2 });
	if (err) {
		snprintf(why, wlen, "run failed: %s", nq_last_error());
		goto out;
	}
	for (int i = 0; i < g->n_outputs; i++) {
		double worst;
		long bad = compare(outputs[i], want->t[i].data, nq_tensor_numel(&want->t[i]), &worst);

		if (bad >= 0) {
			snprintf(why, wlen, "output %d element %ld: got %g want %g (%.1fx tolerance)", i,
				 bad, outputs[i][bad], want->t[i].data[bad], worst);
			err = -EDOM;
			goto out;
		}
	}
out:
	for (int i = 0; i < g->n_outputs; i++)
		free(outputs[i]);
	return err;
}

/* Turn every graph input but the first into a constant holding data. */
static void bind_weights(struct nq_graph *g, const struct io *in)
{
	for (int i = 1; i < g->n_inputs; i++) {
		struct nq_tensor *t = &g->tensors[g->inputs[i]];
		size_t n = nq_tensor_numel(t);

		if (i >= in->n)
			break;
		t->data = malloc(n * sizeof(float));
		memcpy(t->data, in->t[i].data, n * sizeof(float));
		t->flags = (t->flags & ~NQ_TF_INPUT) | NQ_TF_CONST;
	}
	if (g->n_inputs > 1)
		g->n_inputs = 1;
}

/* ---- the operator vectors --------------------------------------------- */

enum verdict { V_PASS, V_SKIP, V_FAIL };

struct result {
	char name[96];
	char ops[96];
	enum verdict v;
	char note[320];
};

struct report {
	struct result *r;
	int n, cap;
	int na;			/* cases with other operators */
	char na_list[16384];
};

static int run_case(const char *dir, struct result *res)
{
	char path[1200], why[320] = "", normnote[256] = "";
	struct nq_graph g;
	struct io in = { 0 }, want = { 0 }, feed = { 0 };
	struct nq_tensor binds[16];
	int sets = 0, err = 0, normalised_ok = 0, normalised_tried = 0, nb, nf;

	snprintf(path, sizeof(path), "%s/model.onnx", dir);
	for (int s = 0; s < 8; s++) {
		char set[1100];
		struct stat st;

		snprintf(set, sizeof(set), "%s/test_data_set_%d", dir, s);
		if (stat(set, &st))
			break;
		err = read_set(set, "input", &in, why, sizeof(why));
		if (!err)
			err = read_set(set, "output", &want, why, sizeof(why));
		if (err) {
			/* data we cannot read (sequences, optionals, int8): the
			 * model's own import error, if any, is the better reason */
			if (nq_onnx_load(path, &g) == -EOPNOTSUPP)
				snprintf(why, sizeof(why), "%s", nq_last_error() + strlen(path) + 2);
			nq_graph_free(&g);
			goto done;
		}

		/* int64 inputs become constants; the rest are fed */
		nb = nf = 0;
		for (int i = 0; i < in.n; i++) {
			if (in.t[i].dtype == NQ_ELEM_INT64)
				binds[nb++] = in.t[i];
			else
				feed.t[nf++] = in.t[i];
		}
		feed.n = nf;

		/* imported form */
		err = nq_onnx_load_bound(path, &g, binds, nb);
		if (!err)
			err = run_and_compare(&g, &feed, &want, why, sizeof(why));
		else	/* drop the path prefix the loader adds */
			snprintf(why, sizeof(why), "%s",
				 strncmp(nq_last_error(), path, strlen(path)) ? nq_last_error() :
				 nq_last_error() + strlen(path) + 2);
		nq_graph_free(&g);
		if (err)
			goto done;

		/* normalised form */
		err = nq_onnx_load_bound(path, &g, binds, nb);
		if (!err) {
			bind_weights(&g, &feed);
			normalised_tried = 1;
			err = nq_graph_normalise(&g);
			if (err == -EOPNOTSUPP) {
				err = 0;
				snprintf(normnote, sizeof(normnote), "%s", nq_last_error());
				err = 0;
			} else if (!err) {
				err = run_and_compare(&g, &feed, &want, why, sizeof(why));
				if (err) {
					char tmp[320];

					snprintf(tmp, sizeof(tmp), "normalised: %s", why);
					memcpy(why, tmp, sizeof(why));
				} else {
					normalised_ok = 1;
				}
			} else {
				snprintf(why, sizeof(why), "normalise: %s", nq_last_error());
			}
		}
		nq_graph_free(&g);
		if (err)
			goto done;
		io_free(&in);
		io_free(&want);
		sets++;
	}
done:
	io_free(&in);
	io_free(&want);
	if (err) {
		res->v = err == -EOPNOTSUPP ? V_SKIP : V_FAIL;
		snprintf(res->note, sizeof(res->note), "%s", why);
	} else if (!sets) {
		res->v = V_FAIL;
		snprintf(res->note, sizeof(res->note), "no test data sets");
	} else {
		res->v = V_PASS;
		if (normalised_ok)
			snprintf(res->note, sizeof(res->note), "%d data set%s; normalised form matches too",
				 sets, sets > 1 ? "s" : "");
		else
			snprintf(res->note, sizeof(res->note), "%d data set%s; normalised form: %s", sets,
				 sets > 1 ? "s" : "", normalised_tried ? normnote : "not tried");
	}
	return 0;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void run_folder(const char *folder, struct report *rep)
{
	char dir[512], **names = NULL;
	struct dirent *de;
	DIR *d;
	int n = 0, cap = 0;

	snprintf(dir, sizeof(dir), "%s/%s", TESTDATA, folder);
	d = opendir(dir);
	if (!d)
		return;
	while ((de = readdir(d))) {
		if (strncmp(de->d_name, "test_", 5))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 256;
			names = realloc(names, (size_t)cap * sizeof(*names));
		}
		names[n++] = strdup(de->d_name);
	}
	closedir(d);
	qsort(names, (size_t)n, sizeof(*names), cmp_names);

	for (int i = 0; i < n; i++) {
		char casedir[1024], model[1100], ops[96];
		int all, prim;
		struct result *res;

		snprintf(casedir, sizeof(casedir), "%s/%s", dir, names[i]);
		snprintf(model, sizeof(model), "%s/model.onnx", casedir);
		if (model_ops(model, ops, sizeof(ops), &all, &prim) || !all || !prim) {
			rep->na++;
			if (strlen(rep->na_list) + strlen(names[i]) + 3 < sizeof(rep->na_list)) {
				strcat(rep->na_list, rep->na_list[0] ? ", " : "");
				strcat(rep->na_list, names[i]);
			}
			free(names[i]);
			continue;
		}
		if (rep->n == rep->cap) {
			rep->cap = rep->cap ? rep->cap * 2 : 128;
			rep->r = realloc(rep->r, (size_t)rep->cap * sizeof(*rep->r));
		}
		res = &rep->r[rep->n++];
		memset(res, 0, sizeof(*res));
		snprintf(res->name, sizeof(res->name), "%s/%s", folder, names[i]);
		snprintf(res->ops, sizeof(res->ops), "%s", ops);
		run_case(casedir, res);
		free(names[i]);
	}
	free(names);
}

static void write_markdown(const struct report *rep, int pass, int skip, int fail)
{
	const char *path = getenv("NQ_CONFORMANCE_MD");
	static const char *const vname[] = { "ran", "skipped", "FAILED" };
	FILE *f;

	if (!path || !path[0])
		return;
	f = fopen(path, "w");
	if (!f)
		return;
	fprintf(f, "# ONNX operator conformance\n\n"
		   "Generated by `make onnx-conformance` (tests/check_onnx_ops.c) from Debian's\n"
		   "`libonnx-testdata` (%s/{node,pytorch-converted,pytorch-operator}).\n\n"
		   "Every case whose operators are all accepted by the importer (and that uses at\n"
		   "least one of the issue's operators) is imported, run by the FP32 reference\n"
		   "executor and compared with the reference outputs element by element:\n"
		   "`|got - want| <= 1e-4 * max(1, |want|)`, dims identical.  The case is then\n"
		   "normalised (inputs other than the first bound as constants, as weights are in a\n"
		   "real model) and, where the normalised vocabulary can express it, run and compared\n"
		   "again.  A case is skipped only when the importer reports a feature the issue does\n"
		   "not ask for; the reason is the importer's own error message.\n\n"
		   "**%d ran and matched, %d skipped, %d failed**; %d other cases use operators\n"
		   "outside the supported set.\n\n"
		   "| case | operators | result | note |\n|---|---|---|---|\n",
		TESTDATA, pass, skip, fail, rep->na);
	for (int i = 0; i < rep->n; i++) {
		const struct result *r = &rep->r[i];
		char note[400];
		size_t j = 0;

		for (const char *p = r->note; *p && j + 2 < sizeof(note); p++) {
			if (*p == '|')
				note[j++] = '\\';
			note[j++] = *p;
		}
		note[j] = '\0';
		fprintf(f, "| %s | %s | %s | %s |\n", r->name, r->ops, vname[r->v], note);
	}
	fprintf(f, "\n## Cases with other operators (not applicable)\n\n%s\n", rep->na_list);
	fclose(f);
}

START_TEST(test_onnx_operator_vectors)
{
	static const char *const folders[] = { "node", "pytorch-converted", "pytorch-operator" };
	struct report rep = { 0 };
	int pass = 0, skip = 0, fail = 0;
	struct stat st;

	if (stat(TESTDATA "/node", &st))
		NQ_SKIP("libonnx-testdata is not installed (" TESTDATA ")");
	for (size_t i = 0; i < 3; i++)
		run_folder(folders[i], &rep);
	printf("ONNX operator vectors (tolerance |got-want| <= 1e-4*max(1,|want|)):\n");
	for (int i = 0; i < rep.n; i++) {
		const struct result *r = &rep.r[i];

		pass += r->v == V_PASS;
		skip += r->v == V_SKIP;
		fail += r->v == V_FAIL;
		printf("  %-7s %-60s %s\n", r->v == V_PASS ? "ran" : r->v == V_SKIP ? "skipped" : "FAILED",
		       r->name, r->note);
	}
	printf("%d ran, %d skipped, %d failed; %d cases use other operators\n", pass, skip, fail, rep.na);
	write_markdown(&rep, pass, skip, fail);
	for (int i = 0; i < rep.n; i++)
		if (rep.r[i].v == V_FAIL)
			fprintf(stderr, "FAILED %s: %s\n", rep.r[i].name, rep.r[i].note);
	free(rep.r);
	ck_assert_msg(fail == 0, "%d operator test cases failed (see the list above)", fail);
	/* the supported ops have well over 100 cases in ONNX 1.12's vectors */
	ck_assert_int_ge(pass, 100);
}
END_TEST

/* ---- whole models ------------------------------------------------------ */

static const char *srcpath(const char *rel)
{
	static char buf[4][1024];
	static int k;

	k = (k + 1) % 4;
	snprintf(buf[k], sizeof(buf[k]), "%s/%s", nq_test_srcdir(), rel);
	return buf[k];
}

static float *run_graph(const struct nq_graph *g, int batch, const float *x, int threads)
{
	float *y = calloc(nq_fp32_numel(g, g->outputs[0], batch), sizeof(float));
	const float *in[1] = { x };
	float *out[1] = { y };
	int err = nq_fp32_run(g, batch, in, out, &(struct nq_fp32_opts){ .threads = threads });

	ck_assert_msg(err == 0, "run: %s", nq_last_error());
	return y;
}

static void assert_close(const float *got, const float *want, size_t n, double tol, const char *what)
{
	for (size_t i = 0; i < n; i++)
		ck_assert_msg(fabs((double)got[i] - want[i]) <= tol * fmax(1.0, fabs(want[i])),
			      "%s: element %zu: %.7g vs %.7g", what, i, got[i], want[i]);
}

static int count_op(const struct nq_graph *g, int op)
{
	int c = 0;

	for (int i = 0; i < g->n_nodes; i++)
		c += g->nodes[i].op == op;
	return c;
}

static const struct nq_node *node_producing(const struct nq_graph *g, const char *tensor)
{
	int t = nq_graph_find(g, tensor);

	ck_assert_msg(t >= 0, "no tensor '%s'", tensor);
	ck_assert_int_ge(g->tensors[t].producer, 0);
	return &g->nodes[g->tensors[t].producer];
}

/* Imported and normalised forms both match the reference computed by
 * numpy (conv_bn_gemm) / torch (tiny_cnn), and the normalised graph has the
 * shape the passes promise. */
static void check_fixture(const char *name, int expect_nodes)
{
	char rel[256];
	struct nq_tensor x, want;
	struct nq_graph g;
	float *y;
	int err;

	snprintf(rel, sizeof(rel), "tests/data/%s.input.pb", name);
	ck_assert_int_eq(nq_onnx_read_tensor(srcpath(rel), &x), 0);
	snprintf(rel, sizeof(rel), "tests/data/%s.output.pb", name);
	ck_assert_int_eq(nq_onnx_read_tensor(srcpath(rel), &want), 0);
	snprintf(rel, sizeof(rel), "tests/data/%s.onnx", name);
	err = nq_onnx_load(srcpath(rel), &g);
	ck_assert_msg(err == 0, "load: %s", nq_last_error());
	ck_assert_int_eq(g.batch_symbolic, 1);
	ck_assert_int_eq(nq_fp32_batchable(&g), 1);

	y = run_graph(&g, (int)x.dims[0], x.data, 2);
	assert_close(y, want.data, nq_tensor_numel(&want), TOL, "imported");
	free(y);

	err = nq_graph_normalise(&g);
	ck_assert_msg(err == 0, "normalise: %s", nq_last_error());
	ck_assert_int_eq(g.normalised, 1);
	for (int i = 0; i < g.n_nodes; i++)
		ck_assert_msg(g.nodes[i].op > NQ_OP_DEQUANTIZE && g.nodes[i].op < NQ_OP_COUNT,
			      "node %d op %d after normalisation", i, g.nodes[i].op);
	ck_assert_int_eq(g.n_nodes, expect_nodes);
	y = run_graph(&g, (int)x.dims[0], x.data, 1);
	assert_close(y, want.data, nq_tensor_numel(&want), TOL, "normalised");
	free(y);
	nq_graph_free(&g);
	free(x.name), free(x.data), free(want.name), free(want.data);
}

START_TEST(test_conv_bn_gemm_normalises_to_fused_layers)
{
	struct nq_graph g;
	const struct nq_node *n;

	/* Conv+BN+Relu -> one CONV(act RELU); Identity gone; Gemm/MatMul -> GEMM;
	 * Clip fused into the MatMul GEMM */
	check_fixture("conv_bn_gemm", 5);
	ck_assert_int_eq(nq_onnx_load(srcpath("tests/data/conv_bn_gemm.onnx"), &g), 0);
	ck_assert_int_eq(nq_graph_normalise(&g), 0);
	ck_assert_int_eq(count_op(&g, NQ_OP_CONV), 1);
	ck_assert_int_eq(count_op(&g, NQ_OP_GEMM), 2);
	ck_assert_int_eq(count_op(&g, NQ_OP_GLOBALAVGPOOL), 1);
	ck_assert_int_eq(count_op(&g, NQ_OP_FLATTEN), 1);
	n = node_producing(&g, "r");	/* the Relu's tensor, now made by the conv */
	ck_assert_int_eq(n->op, NQ_OP_CONV);
	ck_assert_int_eq(n->attrs.i[NQ_A_ACT], NQ_ACT_RELU);
	ck_assert_int_eq(n->n_inputs, 1);
	ck_assert_int_eq(n->oc, 4);
	ck_assert_int_eq(n->k, 18);
	ck_assert_int_eq(n->cin_per_group, 2);
	ck_assert_int_eq(n->attrs.i[NQ_A_PAD_T], 1);
	n = node_producing(&g, "y");
	ck_assert_int_eq(n->op, NQ_OP_GEMM);
	ck_assert_int_eq(n->attrs.i[NQ_A_ACT], NQ_ACT_CLIP);
	ck_assert_float_eq(n->attrs.f[NQ_F_CLIP_MIN], -0.5f);
	ck_assert_float_eq(n->attrs.f[NQ_F_CLIP_MAX], 0.75f);
	ck_assert_int_eq(n->oc, 5);
	ck_assert_int_eq(n->k, 6);
	ck_assert_ptr_nonnull(n->bias);
	ck_assert_float_eq(n->bias[0], 0.0f);	/* MatMul has no bias */
	nq_graph_free(&g);
}
END_TEST

START_TEST(test_pytorch_cnn_matches_torch_before_and_after_normalisation)
{
	struct nq_graph g;
	const struct nq_node *n;

	/* 4 Conv (BN folded, Relu/Clip fused), Add(+Relu), MaxPool, AvgPool
	 * (Pad merged), GlobalAveragePool, Reshape, Gemm, Softmax */
	check_fixture("tiny_cnn", 11);
	ck_assert_int_eq(nq_onnx_load(srcpath("tests/data/tiny_cnn.onnx"), &g), 0);
	ck_assert_int_eq(nq_graph_normalise(&g), 0);
	ck_assert_int_eq(count_op(&g, NQ_OP_CONV), 4);
	ck_assert_int_eq(count_op(&g, NQ_OP_ADD), 1);
	ck_assert_int_eq(count_op(&g, NQ_OP_RELU) + count_op(&g, NQ_OP_CLIP), 0);
	for (int i = 0; i < g.n_nodes; i++) {
		n = &g.nodes[i];
		if (n->op == NQ_OP_ADD)
			ck_assert_int_eq(n->attrs.i[NQ_A_ACT], NQ_ACT_RELU);
		if (n->op == NQ_OP_CONV && n->attrs.i[NQ_A_GROUPS] == 8) {	/* depthwise + ReLU6 */
			ck_assert_int_eq(n->attrs.i[NQ_A_ACT], NQ_ACT_CLIP);
			ck_assert_float_eq(n->attrs.f[NQ_F_CLIP_MAX], 6.0f);
			ck_assert_int_eq(n->cin_per_group, 1);
		}
		if (n->op == NQ_OP_AVGPOOL) {	/* torch's Pad + AveragePool */
			ck_assert_int_eq(n->attrs.i[NQ_A_PAD_T], 1);
			ck_assert_int_eq(n->attrs.i[NQ_A_PAD_R], 1);
			ck_assert_int_eq(n->attrs.i[NQ_A_COUNT_INCLUDE_PAD], 1);
		}
		if (n->op == NQ_OP_MAXPOOL)	/* ceil_mode=1 on 7x7 -> extra end pad */
			ck_assert_int_eq(n->attrs.i[NQ_A_PAD_B], 1);
		if (n->op == NQ_OP_RESHAPE) {
			ck_assert_int_eq(n->n_inputs, 1);
			ck_assert_int_eq(g.tensors[n->output].rank, 2);
			ck_assert_int_eq(g.tensors[n->output].dims[1], 16);
		}
	}
	nq_graph_free(&g);
}
END_TEST

/* Models from the training script, when they exist: normalisation must not
 * change the outputs beyond float rounding. */
static void check_model_normalises(const char *rel)
{
	struct nq_graph a, b;
	size_t nin;
	float *x, *ya, *yb;
	int batch, err;
	unsigned seed = 12345;
	err = nq_onnx_load(srcpath(rel), &a);
	ck_assert_msg(err == 0, "%s: %s", rel, nq_last_error());
	ck_assert_int_eq(nq_onnx_load(srcpath(rel), &b), 0);
	err = nq_graph_normalise(&b);
	ck_assert_msg(err == 0, "normalise %s: %s", rel, nq_last_error());
	ck_assert_int_eq(count_op(&b, NQ_GOP_BATCHNORM), 0);
	batch = nq_fp32_batchable(&a) ? 4 : a.batch;
	nin = nq_fp32_numel(&a, a.inputs[0], batch);
	x = malloc(nin * sizeof(float));
	for (size_t i = 0; i < nin; i++)
		x[i] = (float)rand_r(&seed) / RAND_MAX * 2.0f - 1.0f;
	ya = run_graph(&a, batch, x, 2);
	yb = run_graph(&b, batch, x, 2);
	assert_close(yb, ya, nq_fp32_numel(&a, a.outputs[0], batch), 1e-4, rel);
	free(x), free(ya), free(yb);
	nq_graph_free(&a);
	nq_graph_free(&b);
}

START_TEST(test_normalise_preserves_resnet_small)
{
	struct stat st;

	if (stat(srcpath("models/resnet-small.onnx"), &st))
		NQ_SKIP("models/resnet-small.onnx is not there (made by scripts/train-reference.py)");
	check_model_normalises("models/resnet-small.onnx");
}
END_TEST

START_TEST(test_normalise_preserves_mobilenet)
{
	struct stat st;

	if (stat(srcpath("models/mobilenet.onnx"), &st))
		NQ_SKIP("models/mobilenet.onnx is not there (made by scripts/train-reference.py)");
	check_model_normalises("models/mobilenet.onnx");
}
END_TEST

/* ---- executor properties ---------------------------------------------- */

struct seen {
	int calls, last;
	float first_out;
	int stop_at;
};

static int observer(void *arg, const struct nq_graph *g, const struct nq_fp32_view *t)
{
	struct seen *s = arg;

	ck_assert_int_eq((int)t->numel, (int)nq_fp32_numel(g, t->tensor, (int)t->dims[0]));
	s->calls++;
	s->last = t->tensor;
	s->first_out = t->data[0];
	return s->calls == s->stop_at ? -ECANCELED : 0;
}

START_TEST(test_batch_threads_and_observer)
{
	struct nq_tensor x;
	struct nq_graph g;
	struct seen s = { 0 };
	size_t per_in, per_out;
	float *all, *one, *y;
	const float *in[1];
	float *out[1];
	int batch, nodes = 0;

	ck_assert_int_eq(nq_onnx_read_tensor(srcpath("tests/data/tiny_cnn.input.pb"), &x), 0);
	ck_assert_int_eq(nq_onnx_load(srcpath("tests/data/tiny_cnn.onnx"), &g), 0);
	batch = (int)x.dims[0];
	per_in = nq_fp32_numel(&g, g.inputs[0], 1);
	per_out = nq_fp32_numel(&g, g.outputs[0], 1);
	ck_assert_uint_eq(per_out, 10);

	/* one batch of 3 on 2 threads == three batches of 1 */
	all = run_graph(&g, batch, x.data, 2);
	for (int b = 0; b < batch; b++) {
		one = run_graph(&g, 1, x.data + b * per_in, 1);
		assert_close(one, all + b * per_out, per_out, 1e-6, "sample vs batch");
		free(one);
	}

	/* the observer sees the input, then each computed tensor in order */
	y = calloc((size_t)batch * per_out, sizeof(float));
	in[0] = x.data;
	out[0] = y;
	ck_assert_int_eq(nq_fp32_run(&g, batch, in, out,
				     &(struct nq_fp32_opts){ .threads = 2, .observe = observer, .arg = &s }), 0);
	for (int i = 0; i < g.n_nodes; i++)
		nodes += !(g.tensors[g.nodes[i].output].flags & NQ_TF_CONST);
	ck_assert_int_eq(s.calls, 1 + nodes);
	ck_assert_int_eq(s.last, g.outputs[0]);
	ck_assert_float_eq(s.first_out, y[0]);
	assert_close(y, all, (size_t)batch * per_out, 0, "observed run");

	/* an observer error stops the run and is returned */
	s = (struct seen){ .stop_at = 3 };
	ck_assert_int_eq(nq_fp32_run(&g, batch, in, out,
				     &(struct nq_fp32_opts){ .observe = observer, .arg = &s }), -ECANCELED);
	ck_assert_int_eq(s.calls, 3);
	free(y), free(all), free(x.name), free(x.data);
	nq_graph_free(&g);
}
END_TEST

START_TEST(test_weight_rows_in_ohwi_order)
{
	/* one output channel, 2 input channels, 2x3 kernel, OIHW value = index */
	static const float want[12] = { 0, 6, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11 };
	struct nq_node n = { .op = NQ_OP_CONV, .oc = 1, .k = 12, .cin_per_group = 2 };
	float w[12], out[12];

	for (int i = 0; i < 12; i++)
		w[i] = (float)i;
	n.weight = w;
	n.attrs.i[NQ_A_KH] = 2;
	n.attrs.i[NQ_A_KW] = 3;
	ck_assert_int_eq(nq_node_weight_ohwi(&n, out), 0);
	for (int i = 0; i < 12; i++)
		ck_assert_float_eq(out[i], want[i]);
	n.k = 11;	/* inconsistent row length */
	ck_assert_int_eq(nq_node_weight_ohwi(&n, out), -EINVAL);
}
END_TEST

Suite *onnx_ops_suite(void);

Suite *onnx_ops_suite(void)
{
	Suite *s = suite_create("onnx_ops");
	TCase *tc = tcase_create("vectors");
	TCase *tm = tcase_create("models");

	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_onnx_operator_vectors);
	suite_add_tcase(s, tc);
	tcase_set_timeout(tm, 120);
	tcase_add_test(tm, test_conv_bn_gemm_normalises_to_fused_layers);
	tcase_add_test(tm, test_pytorch_cnn_matches_torch_before_and_after_normalisation);
	tcase_add_test(tm, test_normalise_preserves_resnet_small);
	tcase_add_test(tm, test_normalise_preserves_mobilenet);
	tcase_add_test(tm, test_batch_threads_and_observer);
	tcase_add_test(tm, test_weight_rows_in_ohwi_order);
	suite_add_tcase(s, tm);
	return s;
}

int main(void)
{
	return nq_test_run(onnx_ops_suite());
}
