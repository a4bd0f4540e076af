// SPDX-License-Identifier: MIT
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nq_test.h"

void nq_test_skip(const char *test, const char *fmt, ...)
{
	const char *log = getenv("NQ_SKIP_LOG");
	FILE *f = log ? fopen(log, "a") : NULL;
	va_list ap;

	if (!f)
		f = stderr;
	fprintf(f, "SKIP %s: ", test);
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fputc('\n', f);
	if (f != stderr)
		fclose(f);
}

int nq_test_run(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

const char *nq_test_srcdir(void)
{
	const char *d = getenv("NQ_SRCDIR");

	return d ? d : ".";
}

static char tmpdir[64];
static pid_t tmpdir_owner;

/* Check forks a child per test; only the process that made the folder removes it. */
static void rm_tmpdir(void)
{
	char cmd[96];

	if (getpid() != tmpdir_owner)
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "warning: could not remove %s\n", tmpdir);
}

const char *nq_test_tmpdir(void)
{
	if (!tmpdir[0]) {
		strcpy(tmpdir, "/tmp/nqtest.XXXXXX");
		if (!mkdtemp(tmpdir))
			return "/tmp";
		tmpdir_owner = getpid();
		atexit(rm_tmpdir);
	}
	return tmpdir;
}
