/* SPDX-License-Identifier: MIT */
/*
 * One error-message channel for all NestQuant library code.
 *
 * Library functions return 0 (or a count) on success and a negative errno on
 * failure.  The human-readable reason for the most recent failure on the
 * calling thread is kept in a thread-local buffer, in the style of dlerror():
 *
 *	return nq_fail(-EINVAL, "tensor %u: rank %u exceeds 4", id, rank);
 *
 * Library code never prints; the CLI and tests print nq_last_error().
 */
#ifndef NQ_ERROR_H
#define NQ_ERROR_H

#include <stdarg.h>

/* Record a formatted message and return err (a negative errno) unchanged. */
int nq_fail(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int nq_vfail(int err, const char *fmt, va_list ap);

/* Prefix the current message with more context ("loading 'x.nq': ..."). */
int nq_fail_context(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Message of the last failure on this thread ("" if none). Never NULL. */
__attribute__((visibility("default"))) const char *nq_last_error(void);	/* exported by libnestquant.so */
void nq_clear_error(void);

#endif
