// SPDX-License-Identifier: MIT
/*
 * nestquant switch — level switching from the command line.
 *
 *   nestquant switch status MODEL [--level L] [--budget BYTES] [options]
 *   nestquant switch hold MODEL [--level L] [options]
 *   nestquant switch bench MODEL.nq --hi INT8.nq --lo INT6.nq [options]
 *
 * status switches (and budgets) the way a server would and prints the
 * residency that results; hold opens a model at a level, runs one
 * inference and waits (the page-cache sharing measurement starts several);
 * bench is the switch benchmark (cmd_switch_bench.c).
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cmd_run.h"
#include "cmd_switch.h"
#include "nestquant.h"

static void usage(FILE *out)
{
	fprintf(out,
		"usage: nestquant switch status MODEL [--level L] [--budget BYTES] [options]\n"
		"       nestquant switch hold MODEL [--level L] [options]\n"
		"       nestquant switch bench MODEL.nq (--hi INT8.nq --lo INT6.nq | --nq-only)\n"
		"                              [--cycles N] [options]\n\n"
		"Page a model's precision levels in and out (see README.md, \"Switching\").\n\n"
		"  status   open the model, switch to --level (and --budget), print the\n"
		"           residency: bytes usable, cached (mincore) and mapped (pagemap)\n"
		"           per level, and what the switch read and released\n"
		"  hold     open at --level, run one inference, print \"ready PID level L\",\n"
		"           then wait for SIGTERM/SIGINT (for RSS/PSS measurements)\n"
		"  bench    the switch benchmark against separate INT8/INT6 files (see\n"
		"           scripts/switch-latency.sh); JSON on stdout\n\n"
		"Options:\n"
		"  --level L          bit width, 'full' or 'part' (default full)\n"
		"  --budget BYTES     graded switching: at most BYTES of planes resident\n"
		"                     (suffixes K, M, G)\n"
		"  --lock-resident    mlock the always-resident (level 0) planes\n"
		"  --pagein M         populate (default), willneed, read, pread\n"
		"  --drop M           dontneed (default), pageout, unmap\n"
		"  --no-uring         use the plain madvise/pread fallback\n"
		"  --json             status as one JSON object\n");
}

int cli_switch_parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case 'K': case 'k': v <<= 10; end++; break;
	case 'M': case 'm': v <<= 20; end++; break;
	case 'G': case 'g': v <<= 30; end++; break;
	default: break;
	}
	if (*end)
		return -EINVAL;
	*out = v;
	return 0;
}

int cli_switch_parse_method(const char *arg, struct nq_model_opts *o, bool drop)
{
	static const char *const pin[] = { "default", "populate", "willneed", "read", "pread" };
	static const char *const drp[] = { "default", "dontneed", "pageout", "unmap" };

	for (unsigned int i = 0; i < (drop ? 4u : 5u); i++)
		if (!strcmp(arg, drop ? drp[i] : pin[i])) {
			if (drop)
				o->drop = (enum nq_drop)i;
			else
				o->pagein = (enum nq_pagein)i;
			return 0;
		}
	return -EINVAL;
}

/* Options every subcommand shares; returns 1 when argv[*i] was one, 0 when
 * not, -1 on a bad value (reported). */
int cli_switch_common_opt(int argc, char **argv, int *i, struct nq_model_opts *o)
{
	const char *a = argv[*i];

	if (!strcmp(a, "--lock-resident")) {
		o->flags |= NQ_OPEN_LOCK_RESIDENT;
		return 1;
	}
	if (!strcmp(a, "--no-uring")) {
		o->flags |= NQ_OPEN_NO_URING;
		return 1;
	}
	if ((!strcmp(a, "--pagein") || !strcmp(a, "--drop")) && *i + 1 < argc) {
		bool drop = !strcmp(a, "--drop");

		if (cli_switch_parse_method(argv[++*i], o, drop) < 0) {
			cli_error("switch", "%s %s: unknown method", a, argv[*i]);
			return -1;
		}
		return 1;
	}
	return 0;
}

static void print_status(const struct nq_residency *r, const struct nq_switch_result *sr,
			 unsigned int bits, bool json)
{
	if (json) {
		printf("{\"level\": %u, \"bits\": %u, \"levels\": %u, \"layers\": %u, "
		       "\"layers_degraded\": %u, \"floor\": %" PRIu64 ", \"budget\": ",
		       r->level, bits, r->level_count, r->layers, r->layers_degraded, r->floor);
		if (r->budget == NQ_BUDGET_NONE)
			printf("null");
		else
			printf("%" PRIu64, r->budget);
		printf(", \"io\": ");
		cli_json_str(stdout, r->io);
		printf(", \"pagein\": \"%s\", \"drop\": \"%s\", \"regions\": [", r->pagein, r->drop);
		for (unsigned int k = 0; k < r->level_count; k++)
			printf("%s{\"bytes\": %" PRIu64 ", \"usable\": %" PRIu64 ", \"cached\": %" PRIu64
			       ", \"mapped\": %" PRIu64 "}", k ? ", " : "", r->region_bytes[k],
			       r->usable_bytes[k], r->cached_bytes[k], r->mapped_bytes[k]);
		printf("], \"switch\": {\"status\": %d, \"bytes_read\": %" PRIu64
		       ", \"bytes_released\": %" PRIu64 ", \"bytes_unmapped\": %" PRIu64
		       ", \"wait_ns\": %" PRIu64 ", \"unmap_ns\": %" PRIu64 ", \"release_ns\": %" PRIu64
		       ", \"total_ns\": %" PRIu64 "}}\n",
		       sr->status, sr->bytes_read, sr->bytes_released, sr->bytes_unmapped, sr->wait_ns,
		       sr->unmap_ns, sr->release_ns, sr->total_ns);
		return;
	}
	printf("level in force: %u (%u-bit) of %u (%u of %u layers held lower by the budget)\n",
	       r->level, bits, r->level_count, r->layers_degraded, r->layers);
	printf("io: %s; page-in: %s; drop: %s\n", r->io, r->pagein, r->drop);
	if (r->budget != NQ_BUDGET_NONE)
		printf("budget: %" PRIu64 " bytes (floor %" PRIu64 ")\n", r->budget, r->floor);
	printf("level  region bytes  usable bytes  cached bytes  mapped bytes\n");
	for (unsigned int k = 0; k < r->level_count; k++)
		printf("%5u  %12" PRIu64 "  %12" PRIu64 "  %12" PRIu64 "  %12" PRIu64 "\n", k,
		       r->region_bytes[k], r->usable_bytes[k], r->cached_bytes[k], r->mapped_bytes[k]);
	printf("last switch: read %" PRIu64 " bytes, released %" PRIu64 " (unmapped %" PRIu64
	       "), waited %.3f ms, released after %.3f ms, took %.3f ms\n", sr->bytes_read,
	       sr->bytes_released, sr->bytes_unmapped, sr->wait_ns / 1e6, sr->release_ns / 1e6,
	       sr->total_ns / 1e6);
}

static int open_at(const char *path, const char *level_arg, struct nq_model_opts *o,
		   struct nq_model **m, unsigned int *level)
{
	o->level = -1;
	if (nq_model_open(path, o, m) < 0) {
		cli_error("switch", "%s", nq_last_error());
		return -1;
	}
	if (cli_parse_level(*m, level_arg, level) < 0) {
		cli_error("switch", "--level %s: the model has no such level", level_arg);
		nq_model_close(*m);
		return -1;
	}
	return 0;
}

static int cmd_status(int argc, char **argv)
{
	struct nq_model_opts o = { .level = -1 };
	struct nq_switch_result sr = { 0 };
	struct nq_residency r;
	const char *path = NULL, *level_arg = "full";
	uint64_t budget = NQ_BUDGET_NONE;
	struct nq_model *m;
	unsigned int level;
	bool json = false;
	int rc = 1, c;

	for (int i = 2; i < argc; i++) {
		if ((c = cli_switch_common_opt(argc, argv, &i, &o)) < 0)
			return 2;
		else if (c)
			continue;
		if (!strcmp(argv[i], "--level") && i + 1 < argc) {
			level_arg = argv[++i];
		} else if (!strcmp(argv[i], "--budget") && i + 1 < argc) {
			if (cli_switch_parse_size(argv[++i], &budget) < 0) {
				cli_error("switch", "--budget %s: not a size", argv[i]);
				return 2;
			}
		} else if (!strcmp(argv[i], "--json")) {
			json = true;
		} else if (argv[i][0] != '-' && !path) {
			path = argv[i];
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (!path) {
		usage(stderr);
		return 2;
	}
	if (open_at(path, level_arg, &o, &m, &level) < 0)
		return 1;
	if (budget != NQ_BUDGET_NONE && nq_model_set_budget(m, budget) < 0) {
		cli_error("switch", "%s", nq_last_error());
		goto out;
	}
	if (nq_model_switch(m, level, &sr) < 0) {
		cli_error("switch", "%s", nq_last_error());
		goto out;
	}
	if (nq_model_residency(m, &r) < 0) {
		cli_error("switch", "%s", nq_last_error());
		goto out;
	}
	print_status(&r, &sr, (unsigned int)nq_model_level_bits(m, r.level), json);
	rc = 0;
out:
	nq_model_close(m);
	return rc;
}

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static int cmd_hold(int argc, char **argv)
{
	struct nq_model_opts o = { .level = -1 };
	const char *path = NULL, *level_arg = "full";
	struct nq_session *s = NULL;
	struct nq_model *m;
	unsigned int level;
	float *in = NULL, *out = NULL;
	int rc = 1, c, used;

	for (int i = 2; i < argc; i++) {
		if ((c = cli_switch_common_opt(argc, argv, &i, &o)) < 0)
			return 2;
		else if (c)
			continue;
		if (!strcmp(argv[i], "--level") && i + 1 < argc) {
			level_arg = argv[++i];
		} else if (argv[i][0] != '-' && !path) {
			path = argv[i];
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (!path) {
		usage(stderr);
		return 2;
	}
	if (open_at(path, level_arg, &o, &m, &level) < 0)
		return 1;
	if (nq_model_switch(m, level, NULL) < 0 || nq_session_create(m, &s) < 0) {
		cli_error("switch", "%s", nq_last_error());
		goto out;
	}
	in = calloc(nq_model_input_count(m), sizeof(float));
	out = calloc(nq_model_output_count(m), sizeof(float));
	if (!in || !out || nq_session_run(s, in, out, &used) < 0) {
		cli_error("switch", "inference failed: %s", nq_last_error());
		goto out;
	}
	{
		struct sigaction sa = { .sa_handler = on_signal };

		sigaction(SIGTERM, &sa, NULL);
		sigaction(SIGINT, &sa, NULL);
	}
	printf("ready %d level %d\n", (int)getpid(), used);
	fflush(stdout);
	while (!stop)
		pause();
	rc = 0;
out:
	free(in);
	free(out);
	nq_session_destroy(s);
	nq_model_close(m);
	return rc;
}

static int run(int argc, char **argv)
{
	if (cli_wants_help(argc, argv) || argc < 2) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (!strcmp(argv[1], "status"))
		return cmd_status(argc, argv);
	if (!strcmp(argv[1], "hold"))
		return cmd_hold(argc, argv);
	if (!strcmp(argv[1], "bench"))
		return cli_switch_bench(argc, argv);
	usage(stderr);
	return 2;
}

const struct nq_verb nq_verb_switch = {
	.name = "switch",
	.summary = "page precision levels in and out; status, hold, benchmark",
	.run = run,
	.usage = usage,
};
