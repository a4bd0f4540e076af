/* SPDX-License-Identifier: MIT */
/*
 * The subset of the Check unit-test API our suites use, for builds where
 * the real library is not available: the arm64 cross build of
 * check_kernels, run under qemu-user (Debian ships no arm64 libcheck on an
 * amd64 host without multiarch).  No fork per test: a failed assertion
 * longjmps out of the test.  Prints the same summary and failure lines as
 * Check's CK_NORMAL, which tests/run-suites.sh parses.
 */
#ifndef NQ_MINICHECK_H
#define NQ_MINICHECK_H

#include <stdint.h>
#include <string.h>

#define CK_NORMAL 0

typedef struct mc_suite Suite;
typedef struct mc_tcase TCase;
typedef struct mc_runner SRunner;

struct mc_test {
	const char *name;
	void (*fn)(int);
};

#define START_TEST(name)							\
	static void name##_fn(int _i);						\
	static const struct mc_test name##_def = { #name, name##_fn };		\
	static const struct mc_test *const name = &name##_def;			\
	static void name##_fn(int _i __attribute__((unused)))
#define END_TEST

Suite *suite_create(const char *name);
TCase *tcase_create(const char *name);
void suite_add_tcase(Suite *s, TCase *tc);
void tcase_set_timeout(TCase *tc, double seconds);
void mc_add(TCase *tc, const struct mc_test *t, int lo, int hi);
#define tcase_add_test(tc, t) mc_add(tc, t, 0, 1)
#define tcase_add_loop_test(tc, t, lo, hi) mc_add(tc, t, lo, hi)
SRunner *srunner_create(Suite *s);
void srunner_run_all(SRunner *sr, int mode);
int srunner_ntests_failed(SRunner *sr);
void srunner_free(SRunner *sr);

void mc_fail(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4), noreturn));

#define ck_assert_msg(expr, ...) \
	do { if (!(expr)) mc_fail(__FILE__, __LINE__, __VA_ARGS__); } while (0)
#define ck_assert(expr) ck_assert_msg(expr, "Assertion '%s' failed", #expr)
#define ck_abort_msg(...) mc_fail(__FILE__, __LINE__, __VA_ARGS__)
#define mc_cmp(T, F, X, OP, Y)								\
	do {										\
		T x_ = (X), y_ = (Y);							\
		if (!(x_ OP y_))							\
			mc_fail(__FILE__, __LINE__, "Assertion '%s' failed: %s == " F	\
				", %s == " F, #X " " #OP " " #Y, #X, x_, #Y, y_);	\
	} while (0)
#define ck_assert_int_eq(X, Y) mc_cmp(intmax_t, "%jd", X, ==, Y)
#define ck_assert_int_ne(X, Y) mc_cmp(intmax_t, "%jd", X, !=, Y)
#define ck_assert_int_ge(X, Y) mc_cmp(intmax_t, "%jd", X, >=, Y)
#define ck_assert_uint_eq(X, Y) mc_cmp(uintmax_t, "%ju", X, ==, Y)
#define ck_assert_uint_ge(X, Y) mc_cmp(uintmax_t, "%ju", X, >=, Y)
#define ck_assert_ptr_nonnull(X) ck_assert_msg((X) != NULL, "'%s' is NULL", #X)
#define ck_assert_str_eq(X, Y) \
	ck_assert_msg(!strcmp((X), (Y)), "'%s' is \"%s\", expected \"%s\"", #X, (X), (Y))
#define ck_assert_mem_eq(X, Y, L) \
	ck_assert_msg(!memcmp((X), (Y), (L)), "'%s' and '%s' differ in their first %zu bytes", \
		      #X, #Y, (size_t)(L))

#endif
