// SPDX-License-Identifier: MIT
/* A minimal runner behind tests/minicheck/check.h (see there). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "check.h"

#define MAX_TESTS 256

struct entry {
	const struct mc_test *t;
	int lo, hi;
};

struct mc_tcase {
	const char *name;
	struct entry e[MAX_TESTS];
	int n;
};

struct mc_suite {
	const char *name;
	TCase *tc[16];
	int n;
};

struct mc_runner {
	Suite *s;
	int checks, failed;
};

static jmp_buf on_fail;

Suite *suite_create(const char *name)
{
	Suite *s = calloc(1, sizeof(*s));

	s->name = name;
	return s;
}

TCase *tcase_create(const char *name)
{
	TCase *tc = calloc(1, sizeof(*tc));

	tc->name = name;
	return tc;
}

void suite_add_tcase(Suite *s, TCase *tc)
{
	if (s->n < 16)
		s->tc[s->n++] = tc;
}

void tcase_set_timeout(TCase *tc, double seconds)
{
	(void)tc;
	(void)seconds;
}

void mc_add(TCase *tc, const struct mc_test *t, int lo, int hi)
{
	if (tc->n < MAX_TESTS)
		tc->e[tc->n++] = (struct entry){ t, lo, hi };
}

SRunner *srunner_create(Suite *s)
{
	SRunner *sr = calloc(1, sizeof(*sr));

	sr->s = s;
	return sr;
}

void mc_fail(const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	printf("%s:%d:F:", file, line);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	longjmp(on_fail, 1);
}

/* 0 passed, 1 failed; its own frame, so setjmp clobbers nothing of the caller's. */
static int run_one(const struct mc_test *t, int i)
{
	if (setjmp(on_fail))
		return 1;
	t->fn(i);
	return 0;
}

void srunner_run_all(SRunner *sr, int mode)
{
	(void)mode;
	printf("Running suite(s): %s\n", sr->s->name);
	for (int c = 0; c < sr->s->n; c++) {
		TCase *tc = sr->s->tc[c];

		for (int i = 0; i < tc->n; i++)
			for (int l = tc->e[i].lo; l < tc->e[i].hi; l++) {
				sr->checks++;
				if (run_one(tc->e[i].t, l)) {
					printf("  (in %s:%s:%d)\n", tc->name, tc->e[i].t->name, l);
					sr->failed++;
				}
			}
	}
	printf("%d%%: Checks: %d, Failures: %d, Errors: 0\n",
	       sr->checks ? 100 * (sr->checks - sr->failed) / sr->checks : 100, sr->checks,
	       sr->failed);
}

int srunner_ntests_failed(SRunner *sr)
{
	return sr->failed;
}

void srunner_free(SRunner *sr)
{
	free(sr);
}
