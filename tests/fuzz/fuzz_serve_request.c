// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for the serve protocol (runtime/serve.c): the bytes are
 * a client's stream.  Frame requests one after another as the server does,
 * giving the parser every prefix length it would see when bytes trickle in;
 * turn complete npy requests into inputs; format the error answers.  The
 * invariants checked are the ones the server relies on.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nq_error.h"
#include "serve.h"

#define INPUT_COUNT 784

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static float input[INPUT_COUNT];
	struct nq_serve_request req;
	char line[NQ_SERVE_MAX_ANSWER];
	size_t off = 0;

	/* Copy to an exact-size heap buffer so ASan sees any read past the end. */
	uint8_t *buf = malloc(size ? size : 1);

	if (!buf)
		return 0;
	memcpy(buf, data, size);
	while (off < size) {
		size_t left = size - off;
		int r;

		/* A shorter prefix never completes a request the full buffer rejects. */
		if (left > 1) {
			int p = nq_serve_parse(buf + off, left / 2, INPUT_COUNT * 4 + 4096, &req);

			if (p > 0 && (size_t)p > left / 2)
				abort();
		}
		r = nq_serve_parse(buf + off, left, INPUT_COUNT * 4 + 4096, &req);
		if (r < 0) {
			if (nq_serve_format_error(line, sizeof(line), nq_last_error()) <= 0)
				abort();
			break;
		}
		if (r == 0)
			break;
		if ((size_t)r > left || req.header_len > NQ_SERVE_MAX_LINE)
			abort();
		if (req.verb == NQ_SERVE_NPY) {
			if (req.payload != buf + off + req.header_len ||
			    req.header_len + req.payload_len != (size_t)r)
				abort();
			if (nq_serve_npy_input(&req, INPUT_COUNT, input) < 0)
				nq_serve_format_error(line, sizeof(line), nq_last_error());
		} else if (req.verb == NQ_SERVE_DATA) {
			if (!req.dataset[0] || !req.split[0] || req.index > 9999999999ull)
				abort();
		} else if (req.verb != NQ_SERVE_STATUS) {
			abort();
		}
		off += (size_t)r;
	}
	free(buf);
	return 0;
}
