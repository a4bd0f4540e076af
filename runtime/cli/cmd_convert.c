// SPDX-License-Identifier: MIT
/*
 * nestquant convert MODEL.onnx -o OUT.nq [options]
 *
 * Front end of convert/pipeline.c: parses options, shows progress on a
 * terminal, turns SIGINT/SIGTERM into a clean cancel (the library then
 * removes its temporary file, so no partial .nq is ever left), and prints
 * a human or JSON summary.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "convert.h"
#include "nq_error.h"
#include "nq_format.h"

static volatile sig_atomic_t stop;
_Static_assert(sizeof(sig_atomic_t) == sizeof(int), "cancel flag is an int");

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static void usage(FILE *out)
{
	fprintf(out,
		"usage: nestquant convert MODEL.onnx -o OUT.nq [options]\n\n"
		"Quantize an FP32 ONNX model into one nested .nq file (no retraining).\n\n"
		"Weights:\n"
		"  --levels L          bit widths, highest first: 8,6 (default), 8,4, 8,6,4,\n"
		"                      or one width for a standalone INT-n model (e.g. 6)\n"
		"  --rounding R        lower-level rounding: nearest, squant (default),\n"
		"                      adaround (uses calibration patches), truncate (q >> l)\n"
		"  --full-rounding R   rounding of the full-bit integers (default: as\n"
		"                      --rounding; nearest when that is truncate)\n"
		"  --residual M        exact (l+1-bit residual, full bit = INT-n model; default)\n"
		"                      or compact (l-bit residual, full bit re-derived)\n"
		"  --weight-scale S    absmax|minmax (default), mse, nest (keeps the lowest\n"
		"                      grid unclipped), nest-mse\n"
		"  --level-scale S     shift (s*2^l, default) or refit (least squares per level)\n"
		"Activations (u8, per tensor):\n"
		"  --calib SRC         fashion-mnist (default) or none (data-free uniform noise)\n"
		"  --calib-data PATH   IDX file, .npy, or a folder of JPEG/PNG images\n"
		"  --calib-count N     calibration samples (default 512)\n"
		"  --calib-method M    minmax (default), percentile, mse\n"
		"  --percentile P      for --calib-method percentile (default 99.99)\n"
		"  --calib-cache FILE  reuse activation ranges saved by an earlier run with the\n"
		"                      same model and calibration options (else save them)\n"
		"Preprocessing (stored in the file; eval/run apply it to the caller's raw\n"
		"input v as (v * input_scale - mean[c]) / std[c]):\n"
		"  --input-scale S     default 1/255: callers feed 8-bit pixels and the ONNX\n"
		"                      model takes [0, 1]; use 1 for models fed floats as is\n"
		"  --mean a,b,c --std a,b,c   per channel, after input_scale\n"
		"  --layout nchw|nhwc  layout of the caller's input buffer\n"
		"Calibration data are raw caller values and go through the same steps.\n"
		"Other:\n"
		"  -o, --output PATH   output file (written atomically)\n"
		"  --threads N         worker threads (default 2)\n"
		"  --seed N            seed for sampling and noise (default 1)\n"
		"  --plane-layout L    weight plane order: auto (default: 16 x 4 panels for\n"
		"                      layers with groups = 1, rows for the others) or rows\n"
		"  --quiet             no progress, no summary\n"
		"  --json              summary as one JSON object on stdout\n\n"
		"Exit status: 0 on success, 1 on error (no output file is left), 130 when\n"
		"interrupted.\n");
}

static int parse_floats(const char *s, float *v, unsigned max, unsigned *n)
{
	char *end;

	*n = 0;
	while (*s) {
		if (*n == max)
			return -1;
		v[(*n)++] = strtof(s, &end);
		if (end == s)
			return -1;
		s = end;
		if (*s == ',')
			s++;
		else if (*s)
			return -1;
	}
	return *n ? 0 : -1;
}

static int parse_uint(const char *s, unsigned long long max, unsigned long long *v)
{
	char *end;

	errno = 0;
	*v = strtoull(s, &end, 10);
	return errno || end == s || *end || *v > max || *s == '-' ? -1 : 0;
}

struct view {
	int tty, quiet;
	double last;			/* elapsed at the last redraw */
	const char *stage;		/* stage being shown, and when it started */
	double stage_t0;
};

/* One status line on stderr, redrawn at most 10 times a second. */
static void show_progress(void *arg, const struct nq_convert_progress *p)
{
	struct view *v = arg;

	if (!v->tty || v->quiet)
		return;
	if (!v->stage || strcmp(v->stage, p->stage)) {
		v->stage = p->stage;
		v->stage_t0 = p->elapsed;
	} else if (p->elapsed - v->last < 0.1 && p->done != p->total) {
		return;
	}
	v->last = p->elapsed;
	fprintf(stderr, "\r\033[K  %-9s %4u/%-4u", p->stage, p->done, p->total);
	if (p->done && p->done < p->total)
		fprintf(stderr, "  ETA %4.0fs",
			(p->elapsed - v->stage_t0) / p->done * (p->total - p->done));
	else
		fprintf(stderr, "           ");
	fprintf(stderr, "  %6.1fs  %.40s", p->elapsed, p->item);
	fflush(stderr);
}

static void json_str(const char *s)
{
	putchar('"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if (*p < 0x20)
			printf("\\u%04x", *p);
		else
			putchar(*p);
	}
	putchar('"');
}

static void json_num(double v)
{
	if (v != v || v > 1e308 || v < -1e308)
		fputs("null", stdout);
	else
		printf("%.6g", v);
}

static void print_json(const char *in, const char *out, const struct nq_convert_opts *o,
		       const struct nq_convert_report *r)
{
	printf("{\"input\":");
	json_str(in);
	printf(",\"output\":");
	json_str(out);
	printf(",\"levels\":[");
	for (int i = (int)o->nlevels - 1; i >= 0; i--)
		printf("%s%u", i == (int)o->nlevels - 1 ? "" : ",", o->levels[i]);
	printf("],\"rounding\":\"%s\",\"residual\":\"%s\",\"weight_scale\":\"%s\"",
	       nq_round_name(o->rounding), o->residual == NQ_RESIDUAL_EXACT ? "exact" : "compact",
	       nq_wscale_name(o->wscale));
	printf(",\"calib_samples\":%u,\"file_size\":%llu,\"weights\":%llu,\"bits_per_weight\":",
	       r->calib_samples, (unsigned long long)r->file_size, (unsigned long long)r->weights);
	json_num(r->bits_per_weight);
	printf(",\"level_bits_per_weight\":{");
	for (unsigned i = 0; i < o->nlevels; i++) {
		printf("%s\"%u\":", i ? "," : "", o->levels[i]);
		json_num(r->level_bits[i]);
	}
	printf("},\"level_region_bytes\":{");
	for (unsigned i = 0; i < o->nlevels; i++)
		printf("%s\"%u\":%llu", i ? "," : "", o->levels[i],
		       (unsigned long long)r->level_bytes[i]);
	printf("},\"seconds\":{\"load\":");
	json_num(r->seconds_load);
	printf(",\"calibrate\":");
	json_num(r->seconds_calib);
	printf(",\"quantize\":");
	json_num(r->seconds_quant);
	printf(",\"write\":");
	json_num(r->seconds_write);
	printf(",\"total\":");
	json_num(r->seconds_total);
	printf("},\"layers\":[");
	for (unsigned i = 0; i < r->nlayers; i++) {
		const struct nq_convert_layer *l = &r->layers[i];

		printf("%s{\"name\":", i ? "," : "");
		json_str(l->name);
		printf(",\"kind\":\"%s\",\"oc\":%u,\"k\":%u,\"plane_bits\":[",
		       l->kind == NQ_LAYER_CONV ? "conv" : "gemm", l->oc, l->k);
		for (unsigned j = 0; j < o->nlevels; j++)
			printf("%s%u", j ? "," : "", l->plane_bits[j]);
		printf("],\"sqnr_db\":{");
		for (unsigned j = 0; j < o->nlevels; j++) {
			printf("%s\"%u\":", j ? "," : "", o->levels[j]);
			json_num(l->sqnr_db[j]);
		}
		printf("}}");
	}
	printf("]}\n");
}

static void print_summary(const char *out, const struct nq_convert_opts *o,
			  const struct nq_convert_report *r)
{
	printf("wrote %s: %llu bytes, %u layers, %llu weights, %.2f stored bits/weight\n", out,
	       (unsigned long long)r->file_size, r->nlayers, (unsigned long long)r->weights,
	       r->bits_per_weight);
	for (int i = (int)o->nlevels - 1; i >= 0; i--) {
		double sq = 0;
		uint64_t n = 0;

		for (unsigned j = 0; j < r->nlayers; j++) {
			sq += r->layers[j].sqnr_db[i] * r->layers[j].oc * r->layers[j].k;
			n += (uint64_t)r->layers[j].oc * r->layers[j].k;
		}
		printf("  level %u bits: reads %.2f bits/weight, region %llu bytes, weight SQNR %.2f dB (weighted mean)\n",
		       o->levels[i], r->level_bits[i], (unsigned long long)r->level_bytes[i],
		       n ? sq / (double)n : 0);
	}
	printf("  %u calibration samples; %.2fs (load %.2f, calibrate %.2f, quantize %.2f, write %.2f)\n",
	       r->calib_samples, r->seconds_total, r->seconds_load, r->seconds_calib,
	       r->seconds_quant, r->seconds_write);
}

enum {
	OPT_LEVELS = 256, OPT_ROUNDING, OPT_FULL_ROUNDING, OPT_RESIDUAL, OPT_WSCALE, OPT_LSCALE,
	OPT_CALIB, OPT_CALIB_DATA, OPT_CALIB_COUNT, OPT_CALIB_METHOD, OPT_PERCENTILE, OPT_MEAN,
	OPT_STD, OPT_LAYOUT, OPT_INPUT_SCALE, OPT_CALIB_CACHE, OPT_THREADS, OPT_SEED, OPT_QUIET, OPT_JSON, OPT_ADA_ROWS,
	OPT_PLANE_LAYOUT,
};

static const struct option longopts[] = {
	{ "output", required_argument, NULL, 'o' },
	{ "levels", required_argument, NULL, OPT_LEVELS },
	{ "rounding", required_argument, NULL, OPT_ROUNDING },
	{ "full-rounding", required_argument, NULL, OPT_FULL_ROUNDING },
	{ "residual", required_argument, NULL, OPT_RESIDUAL },
	{ "weight-scale", required_argument, NULL, OPT_WSCALE },
	{ "level-scale", required_argument, NULL, OPT_LSCALE },
	{ "calib", required_argument, NULL, OPT_CALIB },
	{ "calib-data", required_argument, NULL, OPT_CALIB_DATA },
	{ "calib-count", required_argument, NULL, OPT_CALIB_COUNT },
	{ "calib-method", required_argument, NULL, OPT_CALIB_METHOD },
	{ "percentile", required_argument, NULL, OPT_PERCENTILE },
	{ "mean", required_argument, NULL, OPT_MEAN },
	{ "std", required_argument, NULL, OPT_STD },
	{ "layout", required_argument, NULL, OPT_LAYOUT },
	{ "input-scale", required_argument, NULL, OPT_INPUT_SCALE },
	{ "calib-cache", required_argument, NULL, OPT_CALIB_CACHE },
	{ "threads", required_argument, NULL, OPT_THREADS },
	{ "seed", required_argument, NULL, OPT_SEED },
	{ "adaround-rows", required_argument, NULL, OPT_ADA_ROWS },
	{ "plane-layout", required_argument, NULL, OPT_PLANE_LAYOUT },
	{ "quiet", no_argument, NULL, OPT_QUIET },
	{ "json", no_argument, NULL, OPT_JSON },
	{ NULL, 0, NULL, 0 },
};

static int run(int argc, char **argv)
{
	struct nq_convert_opts o;
	struct nq_convert_report rep;
	struct sigaction sa, old_int, old_term;
	struct view view = { 0 };
	const char *out = NULL, *in;
	float mean[NQ_CONVERT_MAX_CHANNELS], sd[NQ_CONVERT_MAX_CHANNELS];
	unsigned nmean = 0, nstd = 0;
	unsigned long long v;
	int json = 0, c, err;
	enum nq_round r;
	char *end;

	nq_convert_opts_init(&o);
	o.threads = 2;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "o:", longopts, NULL)) != -1) {
		switch (c) {
		case 'o':
			out = optarg;
			break;
		case OPT_LEVELS:
			if (nq_levels_parse(optarg, o.levels, &o.nlevels)) {
				cli_error("convert", "--levels %s: %s", optarg, nq_last_error());
				return 2;
			}
			break;
		case OPT_ROUNDING:
		case OPT_FULL_ROUNDING:
			if (nq_round_parse(optarg, &r)) {
				cli_error("convert", "--%s %s: use nearest, squant, adaround or truncate",
					  c == OPT_ROUNDING ? "rounding" : "full-rounding", optarg);
				return 2;
			}
			if (c == OPT_ROUNDING)
				o.rounding = r;
			else
				o.full_rounding = (int)r;
			break;
		case OPT_RESIDUAL:
			if (!strcmp(optarg, "exact")) {
				o.residual = NQ_RESIDUAL_EXACT;
			} else if (!strcmp(optarg, "compact")) {
				o.residual = NQ_RESIDUAL_COMPACT;
			} else {
				cli_error("convert", "--residual %s: use exact or compact", optarg);
				return 2;
			}
			break;
		case OPT_WSCALE:
			if (!strcmp(optarg, "minmax"))
				o.wscale = NQ_WSCALE_ABSMAX;
			else if (nq_wscale_parse(optarg, &o.wscale)) {
				cli_error("convert", "--weight-scale %s: use minmax, mse, nest or nest-mse",
					  optarg);
				return 2;
			}
			break;
		case OPT_LSCALE:
			if (!strcmp(optarg, "shift")) {
				o.lscale = NQ_LSCALE_SHIFT;
			} else if (!strcmp(optarg, "refit")) {
				o.lscale = NQ_LSCALE_REFIT;
			} else {
				cli_error("convert", "--level-scale %s: use shift or refit", optarg);
				return 2;
			}
			break;
		case OPT_CALIB:
			if (!strcmp(optarg, "fashion-mnist")) {
				o.calib = NQ_CALIB_SRC_FASHION_MNIST;
			} else if (!strcmp(optarg, "none")) {
				o.calib = NQ_CALIB_SRC_NONE;
			} else {
				cli_error("convert", "--calib %s: use fashion-mnist or none (or --calib-data PATH)",
					  optarg);
				return 2;
			}
			break;
		case OPT_CALIB_DATA:
			o.calib = NQ_CALIB_SRC_PATH;
			o.calib_path = optarg;
			break;
		case OPT_CALIB_COUNT:
			if (parse_uint(optarg, 1u << 20, &v) || !v) {
				cli_error("convert", "--calib-count %s: need 1..%u", optarg, 1u << 20);
				return 2;
			}
			o.calib_count = (unsigned)v;
			break;
		case OPT_CALIB_METHOD:
			if (nq_calib_parse(optarg, &o.calib_method)) {
				cli_error("convert", "--calib-method %s: use minmax, percentile or mse",
					  optarg);
				return 2;
			}
			break;
		case OPT_PERCENTILE:
			o.percentile = strtod(optarg, &end);
			if (*end || !(o.percentile > 50 && o.percentile <= 100)) {
				cli_error("convert", "--percentile %s: need a number in (50, 100]", optarg);
				return 2;
			}
			break;
		case OPT_MEAN:
		case OPT_STD:
			if (parse_floats(optarg, c == OPT_MEAN ? mean : sd, NQ_CONVERT_MAX_CHANNELS,
					 c == OPT_MEAN ? &nmean : &nstd)) {
				cli_error("convert", "--%s %s: need 1..%d comma-separated numbers",
					  c == OPT_MEAN ? "mean" : "std", optarg, NQ_CONVERT_MAX_CHANNELS);
				return 2;
			}
			break;
		case OPT_LAYOUT:
			if (!strcmp(optarg, "nchw")) {
				o.pre.layout = NQ_LAYOUT_NCHW;
			} else if (!strcmp(optarg, "nhwc")) {
				o.pre.layout = NQ_LAYOUT_NHWC;
			} else {
				cli_error("convert", "--layout %s: use nchw or nhwc", optarg);
				return 2;
			}
			break;
		case OPT_PLANE_LAYOUT:
			if (!strcmp(optarg, "auto") || !strcmp(optarg, "rows")) {
				o.rows_only = !strcmp(optarg, "rows");
			} else {
				cli_error("convert", "--plane-layout %s: use auto or rows", optarg);
				return 2;
			}
			break;
		case OPT_CALIB_CACHE:
			o.calib_cache = optarg;
			break;
		case OPT_INPUT_SCALE:
			o.pre.input_scale = strtof(optarg, &end);
			if (*end || !(o.pre.input_scale > 0) || o.pre.input_scale > 1e30f) {
				cli_error("convert", "--input-scale %s: need a positive number", optarg);
				return 2;
			}
			break;
		case OPT_THREADS:
			if (parse_uint(optarg, 16, &v) || !v) {
				cli_error("convert", "--threads %s: need 1..16", optarg);
				return 2;
			}
			o.threads = (unsigned)v;
			break;
		case OPT_SEED:
			if (parse_uint(optarg, UINT64_MAX, &v)) {
				cli_error("convert", "--seed %s: need a non-negative integer", optarg);
				return 2;
			}
			o.seed = v;
			break;
		case OPT_ADA_ROWS:
			if (parse_uint(optarg, 1u << 24, &v) || !v) {
				cli_error("convert", "--adaround-rows %s: need 1..%u", optarg, 1u << 24);
				return 2;
			}
			o.adaround_rows = (unsigned)v;
			break;
		case OPT_QUIET:
			view.quiet = 1;
			break;
		case OPT_JSON:
			json = 1;
			break;
		default:
			cli_error("convert", "unknown or incomplete option '%s' (see --help)",
				  argv[optind - 1]);
			return 2;
		}
	}
	if (optind != argc - 1 || !out) {
		cli_error("convert", "need exactly one MODEL.onnx and -o OUT.nq (see --help)");
		return 2;
	}
	in = argv[optind];
	if (nmean || nstd) {
		if (nmean != nstd) {
			cli_error("convert", "--mean has %u values, --std %u; give both with the same count",
				  nmean, nstd);
			return 2;
		}
		o.pre.channels = nmean;
		memcpy(o.pre.mean, mean, sizeof(float) * nmean);
		memcpy(o.pre.std, sd, sizeof(float) * nmean);
	}

	view.tty = isatty(STDERR_FILENO);
	o.progress = show_progress;
	o.progress_arg = &view;
	o.cancel = (volatile int *)&stop;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);

	err = nq_convert(in, out, &o, &rep);

	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	if (view.tty && !view.quiet)
		fprintf(stderr, "\r\033[K");
	if (err) {
		cli_error("convert", "%s", nq_last_error());
		return err == -EINTR ? 130 : 1;
	}
	if (json)
		print_json(in, out, &o, &rep);
	else if (!view.quiet)
		print_summary(out, &o, &rep);
	nq_convert_report_free(&rep);
	return 0;
}

const struct nq_verb nq_verb_convert = {
	.name = "convert",
	.summary = "quantize an FP32 ONNX model into a nested .nq file",
	.run = run,
	.usage = usage,
};
