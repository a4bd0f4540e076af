// SPDX-License-Identifier: MIT
/*
 * nestquant — the command-line front end.  Each verb lives in its own file;
 * this file only dispatches and prints the overview.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "nq_error.h"

extern const struct nq_verb nq_verb_info;
extern const struct nq_verb nq_verb_monitor;
extern const struct nq_verb nq_verb_launch;
extern const struct nq_verb nq_verb_pressure;
extern const struct nq_verb nq_verb_convert;
extern const struct nq_verb nq_verb_bench;
extern const struct nq_verb nq_verb_run;
extern const struct nq_verb nq_verb_eval;
extern const struct nq_verb nq_verb_serve;
extern const struct nq_verb nq_verb_query;
extern const struct nq_verb nq_verb_switch;

static const struct nq_verb *const verbs[] = {
	&nq_verb_info,
	&nq_verb_monitor,
	&nq_verb_launch,
	&nq_verb_pressure,
	&nq_verb_convert,
	&nq_verb_bench,
	&nq_verb_run,
	&nq_verb_eval,
	&nq_verb_serve,
	&nq_verb_query,
	&nq_verb_switch,
};

#define NVERBS (sizeof(verbs) / sizeof(verbs[0]))

void cli_error(const char *verb, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "nestquant %s: ", verb);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int cli_wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--"))
			break;
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
			return 1;
	}
	return 0;
}

static void overview(FILE *out)
{
	fprintf(out, "usage: nestquant VERB [ARGS...]\n\n"
		     "One quantized model file, served at several nested precisions.\n\n"
		     "verbs:\n");
	for (size_t i = 0; i < NVERBS; i++)
		fprintf(out, "  %-10s %s\n", verbs[i]->name, verbs[i]->summary);
	fprintf(out, "\n`nestquant VERB --help` describes each verb.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		overview(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		overview(stdout);
		return 0;
	}
	for (size_t i = 0; i < NVERBS; i++) {
		if (strcmp(argv[1], verbs[i]->name))
			continue;
		if (cli_wants_help(argc - 1, argv + 1)) {
			verbs[i]->usage(stdout);
			return 0;
		}
		return verbs[i]->run(argc - 1, argv + 1);
	}
	fprintf(stderr, "nestquant: unknown verb '%s'\n\n", argv[1]);
	overview(stderr);
	return 2;
}
