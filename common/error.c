// SPDX-License-Identifier: MIT
#include <stdio.h>
#include <string.h>

#include "nq_error.h"

#define NQ_ERRMSG_MAX 512

static __thread char errmsg[NQ_ERRMSG_MAX];

int nq_vfail(int err, const char *fmt, va_list ap)
{
	vsnprintf(errmsg, sizeof(errmsg), fmt, ap);
	return err;
}

int nq_fail(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	nq_vfail(err, fmt, ap);
	va_end(ap);
	return err;
}

int nq_fail_context(int err, const char *fmt, ...)
{
	char prefix[NQ_ERRMSG_MAX], old[NQ_ERRMSG_MAX];
	va_list ap;

	memcpy(old, errmsg, sizeof(old));
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	/* Truncating an over-long message is fine; it is for humans. */
	if (old[0]) {
		size_t n = strlen(prefix);

		if (n > sizeof(errmsg) - 3)
			n = sizeof(errmsg) - 3;
		memcpy(errmsg, prefix, n);
		memcpy(errmsg + n, ": ", 3);
		strncat(errmsg, old, sizeof(errmsg) - n - 3);
	} else {
		memcpy(errmsg, prefix, sizeof(errmsg));
	}
	return err;
}

const char *nq_last_error(void)
{
	return errmsg;
}

void nq_clear_error(void)
{
	errmsg[0] = '\0';
}
