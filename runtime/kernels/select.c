// SPDX-License-Identifier: MIT
/*
 * Picking the kernel table once, at model load.  $NQ_ISA forces one (tests,
 * benchmarks); asking for an ISA that this build does not contain, or that
 * this CPU cannot run, is an error with a message, never a quiet fallback
 * to something slower.
 *
 * A SIMD translation unit adds itself to `isas` below (guarded by the macro
 * its build fragment defines) with a `usable` check on cpuid/hwcaps.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "nq_error.h"

struct isa {
	const char *name;
	const struct nq_kernels *table;		/* NULL: not in this build */
	bool (*usable)(void);			/* NULL: always */
};

/* Best first.  Every ISA name NQ_ISA may give is listed, built or not. */
static const struct isa isas[] = {
#ifdef NQ_HAVE_AVX512
	{ "avx512", &nq_kernels_avx512, nq_cpu_avx512_usable },
#else
	{ "avx512", NULL, NULL },
#endif
#ifdef NQ_HAVE_AVX2
	{ "avx2", &nq_kernels_avx2, nq_cpu_avx2_usable },
#else
	{ "avx2", NULL, NULL },
#endif
#ifdef NQ_HAVE_NEON
	{ "neon", &nq_kernels_neon, NULL },	/* Advanced SIMD is baseline on arm64 */
#else
	{ "neon", NULL, NULL },
#endif
	{ "scalar", &nq_kernels_scalar, NULL },
};

#define NISAS (sizeof(isas) / sizeof(isas[0]))

static bool isa_ok(const struct isa *i)
{
	return i->table && (!i->usable || i->usable());
}

int nq_kernels_select(const struct nq_kernels **out)
{
	const char *want = getenv("NQ_ISA");

	*out = NULL;
	if (want && *want) {
		for (size_t i = 0; i < NISAS; i++) {
			if (strcmp(want, isas[i].name))
				continue;
			if (!isas[i].table)
				return nq_fail(-ENOTSUP, "NQ_ISA=%s: this build has no %s kernels", want, want);
			if (!isa_ok(&isas[i]))
				return nq_fail(-ENOTSUP, "NQ_ISA=%s: this CPU cannot run the %s kernels",
					       want, want);
			*out = isas[i].table;
			return 0;
		}
		return nq_fail(-EINVAL, "NQ_ISA=%s: unknown (scalar, avx2, avx512 or neon)", want);
	}
	for (size_t i = 0; i < NISAS; i++) {
		if (isa_ok(&isas[i])) {
			*out = isas[i].table;
			return 0;
		}
	}
	return nq_fail(-ENOTSUP, "no usable kernel table");
}
