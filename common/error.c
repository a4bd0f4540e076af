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
	if (old[0])
		snprintf(errmsg, sizeof(errmsg), "%s: %s", prefix, old);
	else
		snprintf(errmsg, sizeof(errmsg), "%s", prefix);
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
