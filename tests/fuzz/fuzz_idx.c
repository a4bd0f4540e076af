// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for the IDX reader.  nq_idx_read() takes a path (zlib's
 * gzopen reads plain and gzip files alike), so each input is written to a
 * memfd and read back through /proc/self/fd; no disk is touched.  An
 * accepted array must hold exactly prod(dims) bytes: the last one is read.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dataset.h"

static int fd = -1;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct nq_array a;
	char path[64];
	volatile uint8_t sink;
	size_t count = 1, done = 0;

	if (fd < 0 && (fd = memfd_create("fuzz-idx", MFD_CLOEXEC)) < 0)
		abort();
	if (ftruncate(fd, 0))
		abort();
	while (done < size) {
		ssize_t n = pwrite(fd, data + done, size - done, (off_t)done);

		if (n <= 0)
			abort();
		done += (size_t)n;
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	if (nq_idx_read(path, &a))
		return 0;
	if (a.dtype != NQ_DT_U8 || a.ndim < 1 || a.ndim > NQ_ARRAY_MAX_DIMS)
		abort();
	for (unsigned int i = 0; i < a.ndim; i++)
		count *= a.dims[i];
	if (count != a.count || !a.data)
		abort();
	sink = ((const uint8_t *)a.data)[a.count - 1];
	(void)sink;
	free(a.data);
	return 0;
}
