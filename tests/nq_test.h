/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the Check suites.
 *
 * Check has no notion of a skipped test.  A test that cannot run on this
 * machine calls NQ_SKIP("why"): the reason is appended to the file named by
 * $NQ_SKIP_LOG (set by tests/run-suites.sh), the test returns, and the runner
 * reports it as skipped with the reason instead of counting it as passed.
 */
#ifndef NQ_TEST_H
#define NQ_TEST_H

#include <check.h>

void nq_test_skip(const char *test, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define NQ_SKIP(...)                                  \
	do {                                          \
		nq_test_skip(__func__, __VA_ARGS__);  \
		return;                               \
	} while (0)

/* Run one suite with CK_NORMAL output; returns the process exit status. */
int nq_test_run(Suite *s);

/* Path of a file under the source tree (tests run from the top directory). */
const char *nq_test_srcdir(void);

/* A fresh temporary directory for this test process (removed at exit). */
const char *nq_test_tmpdir(void);

#endif
