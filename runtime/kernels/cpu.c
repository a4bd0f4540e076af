// SPDX-License-Identifier: MIT
/*
 * Can this CPU run a kernel table?  Built with the baseline flags (never
 * with the ISA's own), so the check itself runs anywhere.  GCC's
 * __builtin_cpu_supports also checks that the OS saves the vector state
 * (XCR0), not just the cpuid bits.
 */
#include <stdbool.h>

#include "kernels.h"

#if defined(__x86_64__)
bool nq_cpu_avx512_usable(void)
{
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
	       __builtin_cpu_supports("avx512dq") &&
	       __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
}

bool nq_cpu_avx2_usable(void)
{
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif
