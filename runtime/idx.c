// SPDX-License-Identifier: MIT
/*
 * IDX reader (the MNIST file layout), gzip or plain.
 *
 *	u8  zero[2]		0x00 0x00
 *	u8  type		0x08 unsigned byte (others exist; we take only u8)
 *	u8  rank
 *	u32 dims[rank]		big-endian
 *	    data		prod(dims) elements, row-major
 *
 * zlib's gz* functions read gzip and plain files alike, so one path serves
 * both.  The header comes first and fixes the exact size of the data; the
 * buffer then grows with what is actually decompressed, so a forged header
 * claiming gigabytes costs nothing until the bytes really arrive.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <zlib.h>

#include "dataset.h"
#include "nq_error.h"

#define IDX_TYPE_U8 0x08
#define IDX_CHUNK (1u << 24)	/* bytes per gzread and per buffer step */

static const char *idx_type_name(unsigned int t)
{
	switch (t) {
	case 0x08: return "unsigned byte";
	case 0x09: return "signed byte";
	case 0x0b: return "short";
	case 0x0c: return "int";
	case 0x0d: return "float";
	case 0x0e: return "double";
	default: return "unknown";
	}
}

/* zlib's messages start with "PATH: "; the caller names the file already. */
static const char *gz_reason(gzFile gz, const char *path, int *zerr)
{
	const char *msg = gzerror(gz, zerr);
	size_t n = strlen(path);

	if (!strncmp(msg, path, n) && !strncmp(msg + n, ": ", 2))
		msg += n + 2;
	return msg;
}

/*
 * Read up to len bytes; returns the count read (short only at end of file)
 * or a negative errno with the zlib reason recorded.
 */
static ssize_t gz_read_full(gzFile gz, const char *path, void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		size_t want = len - done;
		int n, zerr;
		const char *msg;

		if (want > IDX_CHUNK)
			want = IDX_CHUNK;
		n = gzread(gz, (char *)buf + done, (unsigned int)want);
		if (n < 0) {
			msg = gz_reason(gz, path, &zerr);
			return nq_fail(zerr == Z_ERRNO ? -errno : -EBADMSG,
				       "'%s': reading the gzip stream: %s", path, msg);
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	/*
	 * A gzip member cut short reads as a plain end of file; zlib only
	 * says so through gzerror (Z_BUF_ERROR, "unexpected end of file").
	 */
	if (done < len) {
		int zerr;
		const char *msg = gz_reason(gz, path, &zerr);

		if (zerr != Z_OK)
			return nq_fail(-EBADMSG, "'%s': gzip stream is truncated or corrupt: %s",
				       path, msg);
	}
	return (ssize_t)done;
}

int nq_idx_read(const char *path, struct nq_array *out)
{
	unsigned char head[4], dimbuf[4 * NQ_ARRAY_MAX_DIMS];
	struct nq_array a = { 0 };
	size_t need, have = 0, cap = 0;
	unsigned int rank;
	unsigned char extra;
	ssize_t n;
	gzFile gz;
	int err;

	memset(out, 0, sizeof(*out));
	errno = 0;
	gz = gzopen(path, "rb");
	if (!gz) {
		err = errno ? -errno : -ENOMEM;
		return nq_fail(err, "'%s': cannot open: %s", path, strerror(-err));
	}

	n = gz_read_full(gz, path, head, sizeof(head));
	if (n < 0) {
		err = (int)n;
		goto err_close;
	}
	if (n < (ssize_t)sizeof(head)) {
		err = nq_fail(-EBADMSG, "'%s': truncated IDX header: %zd of 4 bytes", path, n);
		goto err_close;
	}
	if (head[0] != 0 || head[1] != 0) {
		err = nq_fail(-EBADMSG, "'%s': bad IDX magic %02x %02x (expected 00 00)",
			      path, head[0], head[1]);
		goto err_close;
	}
	if (head[2] != IDX_TYPE_U8) {
		err = nq_fail(-ENOTSUP, "'%s': IDX data type 0x%02x (%s) is not unsigned byte (0x08)",
			      path, head[2], idx_type_name(head[2]));
		goto err_close;
	}
	rank = head[3];
	if (rank == 0 || rank > NQ_ARRAY_MAX_DIMS) {
		err = nq_fail(-EBADMSG, "'%s': IDX rank %u outside 1..%d", path, rank,
			      NQ_ARRAY_MAX_DIMS);
		goto err_close;
	}
	n = gz_read_full(gz, path, dimbuf, 4 * rank);
	if (n < 0) {
		err = (int)n;
		goto err_close;
	}
	if (n < (ssize_t)(4 * rank)) {
		err = nq_fail(-EBADMSG, "'%s': truncated IDX header: %zd of %u dimension bytes",
			      path, n, 4 * rank);
		goto err_close;
	}

	a.dtype = NQ_DT_U8;
	a.ndim = rank;
	need = 1;
	for (unsigned int i = 0; i < rank; i++) {
		const unsigned char *p = dimbuf + 4 * i;

		a.dims[i] = (uint64_t)p[0] << 24 | (uint64_t)p[1] << 16 | (uint64_t)p[2] << 8 | p[3];
		if (a.dims[i] == 0) {
			err = nq_fail(-EBADMSG, "'%s': IDX dimension %u is 0", path, i);
			goto err_close;
		}
		if (__builtin_mul_overflow(need, (size_t)a.dims[i], &need) || need > SSIZE_MAX) {
			err = nq_fail(-EOVERFLOW, "'%s': IDX dimensions overflow: product exceeds %zd bytes at dimension %u",
				      path, (ssize_t)SSIZE_MAX, i);
			goto err_close;
		}
	}
	a.count = need;

	while (have < need) {
		size_t step = need - have;
		void *p;

		if (step > IDX_CHUNK)
			step = IDX_CHUNK;
		if (have + step > cap) {
			size_t ncap = cap ? cap * 2 : step;

			if (ncap < have + step || ncap > need)
				ncap = need;
			p = realloc(a.data, ncap);
			if (!p) {
				err = nq_fail(-ENOMEM, "'%s': no memory for %zu data bytes", path, ncap);
				goto err_free;
			}
			a.data = p;
			cap = ncap;
		}
		n = gz_read_full(gz, path, (char *)a.data + have, step);
		if (n < 0) {
			err = (int)n;
			goto err_free;
		}
		have += (size_t)n;
		if ((size_t)n < step) {
			err = nq_fail(-EBADMSG, "'%s': truncated IDX data: dims promise %zu bytes, file has %zu",
				      path, need, have);
			goto err_free;
		}
	}

	n = gz_read_full(gz, path, &extra, 1);
	if (n != 0) {
		err = n < 0 ? (int)n : nq_fail(-EBADMSG, "'%s': trailing bytes after the %zu data bytes the IDX dims promise",
					       path, need);
		goto err_free;
	}
	gzclose(gz);
	*out = a;
	return 0;

err_free:
	free(a.data);
err_close:
	gzclose(gz);
	return err;
}
