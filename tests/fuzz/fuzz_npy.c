// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for the .npy reader (nq_npy_parse(), the in-memory form
 * of nq_npy_read()).  An accepted array must hold exactly the elements its
 * dims promise: the first and last are read, so a size the parser got wrong
 * is an out-of-bounds read under AddressSanitizer.
 */
#include <stdint.h>
#include <stdlib.h>

#include "dataset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct nq_array a;
	volatile uint8_t sink;
	size_t count = 1, es;

	if (nq_npy_parse(data, size, "fuzz.npy", &a))
		return 0;
	es = nq_dtype_size(a.dtype);
	if (!es || a.ndim > NQ_ARRAY_MAX_DIMS)
		abort();
	for (unsigned int i = 0; i < a.ndim; i++)
		count *= a.dims[i];
	if (count != a.count)
		abort();
	if (a.count) {
		const uint8_t *p = a.data;

		sink = p[0];
		sink = p[a.count * es - 1];
	}
	(void)sink;
	nq_array_free(&a);
	return 0;
}
