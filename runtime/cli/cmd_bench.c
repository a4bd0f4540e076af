// SPDX-License-Identifier: MIT
/*
 * nestquant bench MODEL [--level L[,L...]] [--threads T] [--iters N]
 *                       [--warmup W] [--input X.npy] [--json] [--serve]
 *
 * Latency of nq_session_run_level through the public API: CLOCK_MONOTONIC
 * around each call, warm-up runs first, then median, p99, min, mean and
 * throughput per level.  With several levels the runs alternate level by
 * level (8, 6, 8, 6, ...) so machine noise hits them alike.
 *
 * --serve keeps the model and session open and takes commands on stdin, one
 * per line, so a driver can interleave this engine run by run with another
 * one (scripts/bench-infer.sh does, against ONNX Runtime):
 *
 *	run L N		N timed runs at level L  ->  "ok MS MS ..."
 *	out L		one run at level L       ->  "ok V V ..." (the output floats)
 *	input X.npy	use this input from now on ->  "ok"
 *	cpu		CPU time of the process so far ->  "ok MS" (all threads)
 *	quit
 *
 * Each answer is one line; a failure answers "err MESSAGE" and the loop goes
 * on.  Before the first command it prints one JSON line describing the model.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "cmd_run.h"
#include "dataset.h"
#include "nestquant.h"

#define MAX_LEVELS 8

static void usage(FILE *out)
{
	fprintf(out,
		"usage: nestquant bench MODEL.nq [--level L[,L...]] [--threads T] [--iters N]\n"
		"                       [--warmup W] [--input X.npy] [--json] [--serve]\n\n"
		"Time inferences (batch 1) and print median and p99 latency and throughput\n"
		"for each level.  Several levels are measured interleaved, run by run.\n\n"
		"  --level L,...   bit widths (e.g. 8,6), 'full', 'part' or 'all';\n"
		"                  default: full\n"
		"  --threads T     threads for the session (default: the library's choice)\n"
		"  --iters N       timed runs per level (default 20)\n"
		"  --warmup W      untimed runs per level first (default 3)\n"
		"  --input X.npy   the input, in the model's input layout (default: a fixed\n"
		"                  pseudo-random input in [0, 1))\n"
		"  --json          one JSON object, with every sample\n"
		"  --serve         take commands on stdin (see the top of cmd_bench.c):\n"
		"                  'run L N', 'out L', 'input X.npy', 'cpu', 'quit'\n\n"
		"p99 is the nearest-rank percentile: with fewer than 100 runs it is the\n"
		"slowest run.  Throughput is 1 / mean latency (one stream).  Cores used is\n"
		"the process's CPU time over the wall time of the timed runs.\n");
}

static double clock_ms(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static double now_ms(void)
{
	return clock_ms(CLOCK_MONOTONIC);
}

/* CPU time of every thread of this process: CPU / wall = cores really used. */
static double cpu_ms(void)
{
	return clock_ms(CLOCK_PROCESS_CPUTIME_ID);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

struct stats {
	double median, p99, min, max, mean;
};

/* Sorts a copy; p99 by nearest rank (ceil(0.99 n)). */
static int summarize(const double *v, size_t n, struct stats *st)
{
	double *s = malloc(n * sizeof(*s)), sum = 0;
	size_t rank;

	if (!s)
		return -ENOMEM;
	memcpy(s, v, n * sizeof(*s));
	qsort(s, n, sizeof(*s), cmp_double);
	for (size_t i = 0; i < n; i++)
		sum += s[i];
	st->median = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
	rank = (99 * n + 99) / 100;
	st->p99 = s[rank - 1];
	st->min = s[0];
	st->max = s[n - 1];
	st->mean = sum / n;
	free(s);
	return 0;
}

/* "8,6", "full,part", "all" -> level indices. */
static int parse_levels(const struct nq_model *m, const char *arg, unsigned int *lv,
			unsigned int *n)
{
	char buf[128], *save = NULL, *tok;

	*n = 0;
	if (!strcmp(arg, "all")) {
		unsigned int c = nq_model_level_count(m);

		for (unsigned int i = c; i-- > 0;)
			lv[(*n)++] = i;
		return 0;
	}
	if (strlen(arg) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, arg);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (*n == MAX_LEVELS || cli_parse_level(m, tok, &lv[*n]) < 0)
			return -EINVAL;
		(*n)++;
	}
	return *n ? 0 : -EINVAL;
}

/* A fixed input: the same bytes on every machine and every run. */
static void fill_input(float *in, size_t n)
{
	uint32_t x = 0x9e3779b9u;

	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		in[i] = (float)(x >> 8) / 16777216.0f;
	}
}

static int load_input(const char *path, size_t nin, float *in)
{
	struct nq_array a = { 0 };
	int err = nq_npy_read(path, &a);

	if (err < 0) {
		cli_error("bench", "%s", nq_last_error());
		return err;
	}
	if (a.dtype != NQ_DT_F32 || a.count != nin) {
		cli_error("bench", "%s: want %zu float32 values (one input), got %zu of %s",
			  path, nin, a.count, nq_dtype_name(a.dtype));
		nq_array_free(&a);
		return -EINVAL;
	}
	memcpy(in, a.data, nin * sizeof(*in));
	nq_array_free(&a);
	return 0;
}

static void print_shape(const struct nq_shape *sh)
{
	printf("[");
	for (unsigned int i = 0; i < sh->rank; i++)
		printf("%s%u", i ? ", " : "", sh->dims[i]);
	printf("]");
}

/* The model description shared by --json and --serve (no closing brace). */
static void print_model_json(const char *path, const struct nq_model *m, unsigned int threads)
{
	struct nq_shape in_sh = { 0 }, out_sh = { 0 };
	unsigned int c = nq_model_level_count(m);

	nq_model_input_shape(m, &in_sh);
	nq_model_output_shape(m, &out_sh);
	printf("{\"model\": ");
	cli_json_str(stdout, path);
	printf(", \"isa\": ");
	cli_json_str(stdout, nq_model_isa(m));
	printf(", \"threads_requested\": %u, \"input_layout\": \"%s\", \"input_shape\": ",
	       threads, nq_model_input_layout(m) == NQ_INPUT_NHWC ? "NHWC" : "NCHW");
	print_shape(&in_sh);
	printf(", \"output_shape\": ");
	print_shape(&out_sh);
	printf(", \"arena_bytes\": %llu, \"fused_adds\": %u, \"levels\": [",
	       (unsigned long long)nq_model_arena_bytes(m), nq_model_fused_adds(m));
	for (unsigned int i = 0; i < c; i++)
		printf("%s{\"level\": %u, \"bits\": %d, \"weight_bytes\": %llu}", i ? ", " : "", i,
		       nq_model_level_bits(m, i), (unsigned long long)nq_model_weight_bytes(m, i));
	printf("]");
}

/* One run; *ms its wall time, and *cpu (when not NULL) += its CPU time. */
static int timed_run(struct nq_session *s, unsigned int level, const float *in, float *out,
		     double *ms, double *cpu)
{
	double c0 = cpu ? cpu_ms() : 0, t0 = now_ms();
	int err = nq_session_run_level(s, level, in, out);

	*ms = now_ms() - t0;
	if (cpu)
		*cpu += cpu_ms() - c0;
	return err;
}

/* Time n runs first, print after: the answer is "ok MS..." or "err ...". */
static void serve_runs(struct nq_session *s, unsigned int level, const float *in, float *out,
		       unsigned long n)
{
	double *ms = malloc(n * sizeof(*ms));

	if (!ms) {
		printf("err out of memory\n");
		return;
	}
	for (unsigned long i = 0; i < n; i++) {
		if (timed_run(s, level, in, out, &ms[i], NULL) < 0) {
			printf("err %s\n", nq_last_error());
			free(ms);
			return;
		}
	}
	printf("ok");
	for (unsigned long i = 0; i < n; i++)
		printf(" %.6f", ms[i]);
	printf("\n");
	free(ms);
}

static int serve(struct nq_model *m, struct nq_session *s, float *in, size_t nin, float *out,
		 size_t nout)
{
	char line[4096], lvl[32];
	unsigned int level;
	unsigned long n;

	while (fgets(line, sizeof(line), stdin)) {
		if (!strncmp(line, "quit", 4))
			break;
		if (sscanf(line, "run %31s %lu", lvl, &n) == 2 && n >= 1 && n <= 100000) {
			if (cli_parse_level(m, lvl, &level) < 0) {
				printf("err no level %s\n", lvl);
			} else {
				serve_runs(s, level, in, out, n);
			}
		} else if (!strncmp(line, "cpu", 3)) {
			printf("ok %.6f\n", cpu_ms());
		} else if (!strncmp(line, "input ", 6)) {
			line[strcspn(line, "\n")] = 0;
			if (load_input(line + 6, nin, in) < 0)
				printf("err %s: cannot use it as the input (see stderr)\n", line + 6);
			else
				printf("ok\n");
		} else if (sscanf(line, "out %31s", lvl) == 1) {
			if (cli_parse_level(m, lvl, &level) < 0) {
				printf("err no level %s\n", lvl);
			} else if (nq_session_run_level(s, level, in, out) < 0) {
				printf("err %s\n", nq_last_error());
			} else {
				printf("ok");
				for (size_t i = 0; i < nout; i++)
					printf(" %.9g", out[i]);
				printf("\n");
			}
		} else {
			printf("err unknown command (run L N | out L | quit)\n");
		}
		fflush(stdout);
	}
	return 0;
}

static int run(int argc, char **argv)
{
	const char *model = NULL, *input = NULL, *level_arg = "full";
	unsigned long iters = 20, warmup = 3, threads = 0;
	struct nq_session_opts so = { 0 };
	struct nq_model *m = NULL;
	struct nq_session *s = NULL;
	unsigned int lv[MAX_LEVELS], nlv;
	float *in = NULL, *out = NULL;
	double *ms = NULL, cpu[MAX_LEVELS] = { 0 };
	bool json = false, srv = false;
	size_t nin, nout;
	int rc = 1;
	char *end;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		unsigned long *num = NULL;

		if (!strcmp(a, "--level") && i + 1 < argc)
			level_arg = argv[++i];
		else if (!strcmp(a, "--input") && i + 1 < argc)
			input = argv[++i];
		else if (!strcmp(a, "--threads") && i + 1 < argc)
			num = &threads;
		else if (!strcmp(a, "--iters") && i + 1 < argc)
			num = &iters;
		else if (!strcmp(a, "--warmup") && i + 1 < argc)
			num = &warmup;
		else if (!strcmp(a, "--json"))
			json = true;
		else if (!strcmp(a, "--serve"))
			srv = true;
		else if (a[0] != '-' && !model)
			model = a;
		else {
			usage(stderr);
			return 2;
		}
		if (num) {
			errno = 0;
			*num = strtoul(argv[++i], &end, 10);
			if (errno || *end || end == argv[i] || *num > 1000000 ||
			    (num == &iters && *num == 0) || (num == &threads && *num > 1024)) {
				cli_error("bench", "%s %s: not a valid count", a, argv[i]);
				return 2;
			}
		}
	}
	if (!model) {
		usage(stderr);
		return 2;
	}
	if (nq_model_open(model, NULL, &m) < 0) {
		cli_error("bench", "%s", nq_last_error());
		return 1;
	}
	if (parse_levels(m, level_arg, lv, &nlv) < 0) {
		cli_error("bench", "--level %s: the model has no such level", level_arg);
		goto out;
	}
	nin = nq_model_input_count(m);
	nout = nq_model_output_count(m);
	in = malloc(nin * sizeof(*in));
	out = malloc((nout ? nout : 1) * sizeof(*out));
	ms = malloc(nlv * iters * sizeof(*ms));
	if (!in || !out || !ms) {
		cli_error("bench", "out of memory");
		goto out;
	}
	if (input) {
		if (load_input(input, nin, in) < 0)
			goto out;
	} else {
		fill_input(in, nin);
	}
	so.threads = (unsigned int)threads;
	if (nq_session_create_opts(m, &so, &s) < 0) {
		cli_error("bench", "%s", nq_last_error());
		goto out;
	}
	if (srv) {
		print_model_json(model, m, so.threads);
		printf("}\n");
		fflush(stdout);
		rc = serve(m, s, in, nin, out, nout);
		goto out;
	}
	for (unsigned long i = 0; i < warmup; i++)
		for (unsigned int j = 0; j < nlv; j++)
			if (nq_session_run_level(s, lv[j], in, out) < 0) {
				cli_error("bench", "%s", nq_last_error());
				goto out;
			}
	/* Level by level inside each iteration: ms[j * iters + i]. */
	for (unsigned long i = 0; i < iters; i++)
		for (unsigned int j = 0; j < nlv; j++)
			if (timed_run(s, lv[j], in, out, &ms[j * iters + i], &cpu[j]) < 0) {
				cli_error("bench", "%s", nq_last_error());
				goto out;
			}

	if (json) {
		print_model_json(model, m, so.threads);
		printf(", \"warmup\": %lu, \"iters\": %lu, \"results\": [", warmup, iters);
	} else {
		char tn[32] = "library default";

		if (threads)
			snprintf(tn, sizeof(tn), "%lu", threads);
		printf("%s: isa %s, threads %s, %u ADDs fused into convs, %lu runs per level after %lu warm-up\n",
		       model, nq_model_isa(m), tn, nq_model_fused_adds(m), iters, warmup);
		printf("  level bits  median ms     p99 ms     min ms    mean ms  inferences/s  cores\n");
	}
	for (unsigned int j = 0; j < nlv; j++) {
		const double *v = &ms[j * iters];
		struct stats st;

		if (summarize(v, iters, &st) < 0) {
			cli_error("bench", "out of memory");
			goto out;
		}
		if (json) {
			printf("%s{\"level\": %u, \"bits\": %d, \"median_ms\": %.6f, "
			       "\"p99_ms\": %.6f, \"min_ms\": %.6f, \"max_ms\": %.6f, "
			       "\"mean_ms\": %.6f, \"throughput_per_s\": %.4f, \"cores_used\": %.3f, "
			       "\"samples_ms\": [",
			       j ? ", " : "", lv[j], nq_model_level_bits(m, lv[j]), st.median,
			       st.p99, st.min, st.max, st.mean, 1e3 / st.mean,
			       cpu[j] / (st.mean * iters));
			for (unsigned long i = 0; i < iters; i++)
				printf("%s%.6f", i ? ", " : "", v[i]);
			printf("]}");
		} else {
			printf("  %5u %4d %10.3f %10.3f %10.3f %10.3f %13.2f %6.2f\n", lv[j],
			       nq_model_level_bits(m, lv[j]), st.median, st.p99, st.min,
			       st.mean, 1e3 / st.mean, cpu[j] / (st.mean * iters));
		}
	}
	if (json)
		printf("]}\n");
	rc = 0;
out:
	free(ms);
	free(in);
	free(out);
	nq_session_destroy(s);
	nq_model_close(m);
	return rc;
}

const struct nq_verb nq_verb_bench = {
	.name = "bench",
	.summary = "time inferences: median/p99 latency and throughput per level",
	.run = run,
	.usage = usage,
};
