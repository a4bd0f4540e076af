/* SPDX-License-Identifier: MIT */
/* The nestquant command: one verb per file (runtime/cli/cmd_<verb>.c). */
#ifndef NQ_CLI_H
#define NQ_CLI_H

#include <stdio.h>

struct nq_verb {
	const char *name;
	const char *summary;			/* one line for `nestquant --help` */
	int (*run)(int argc, char **argv);	/* argv[0] is the verb; returns exit code */
	void (*usage)(FILE *out);		/* full help for `nestquant VERB --help` */
};

/* Print "nestquant VERB: message" plus the library's last error, if any. */
void cli_error(const char *verb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* True when argv contains --help or -h (after the verb). */
int cli_wants_help(int argc, char **argv);

#endif
