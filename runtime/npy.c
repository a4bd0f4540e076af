// SPDX-License-Identifier: MIT
/*
 * NumPy .npy reader and writer.
 *
 *	u8  magic[6]		"\x93NUMPY"
 *	u8  major, minor	1.0, 2.0 or 3.0
 *	u16 / u32 header_len	little-endian; u16 in 1.0, u32 from 2.0
 *	char header[header_len]	a Python dict literal, e.g.
 *		{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
 *	    data		prod(shape) elements
 *
 * 3.0 differs from 2.0 only in allowing UTF-8 in the header, which matters
 * for structured dtypes' field names; we reject those anyway.  The header is
 * parsed with a small tokenizer rather than a general Python evaluator:
 * exactly the three keys numpy writes, each once.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dataset.h"
#include "nq_error.h"

static const char npy_magic[6] = "\x93NUMPY";

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define HOST_ORDER '<'
#else
#define HOST_ORDER '>'
#endif

size_t nq_dtype_size(enum nq_dtype dt)
{
	switch (dt) {
	case NQ_DT_U8:
	case NQ_DT_I8:
		return 1;
	case NQ_DT_I16:
		return 2;
	case NQ_DT_F32:
	case NQ_DT_I32:
		return 4;
	case NQ_DT_F64:
	case NQ_DT_I64:
		return 8;
	default:
		return 0;
	}
}

const char *nq_dtype_name(enum nq_dtype dt)
{
	switch (dt) {
	case NQ_DT_F32: return "f32";
	case NQ_DT_F64: return "f64";
	case NQ_DT_U8: return "u8";
	case NQ_DT_I8: return "i8";
	case NQ_DT_I16: return "i16";
	case NQ_DT_I32: return "i32";
	case NQ_DT_I64: return "i64";
	default: return "invalid";
	}
}

void nq_array_free(struct nq_array *a)
{
	if (!a)
		return;
	free(a->data);
	memset(a, 0, sizeof(*a));
}

/* numpy's type code (without byte order) for each dtype */
static const struct {
	const char *code;
	enum nq_dtype dt;
} npy_types[] = {
	{ "f4", NQ_DT_F32 }, { "f8", NQ_DT_F64 }, { "u1", NQ_DT_U8 }, { "i1", NQ_DT_I8 },
	{ "i2", NQ_DT_I16 }, { "i4", NQ_DT_I32 }, { "i8", NQ_DT_I64 }, { "b1", NQ_DT_U8 },
};

struct hdr {
	const char *name;	/* file name, for messages */
	const char *p, *end;
	char order;		/* '<' '>' or '|' */
	enum nq_dtype dtype;
	int fortran;
	unsigned int ndim;
	uint64_t dims[NQ_ARRAY_MAX_DIMS];
	unsigned int seen;	/* bit per key */
};

static void skip_ws(struct hdr *h)
{
	while (h->p < h->end && (*h->p == ' ' || *h->p == '\t' || *h->p == '\n' || *h->p == '\r'))
		h->p++;
}

static int expect(struct hdr *h, char c, const char *where)
{
	skip_ws(h);
	if (h->p >= h->end)
		return nq_fail(-EBADMSG, "'%s': .npy header ends where '%c' is expected %s",
			       h->name, c, where);
	if (*h->p != c)
		return nq_fail(-EBADMSG, "'%s': .npy header has '%c' where '%c' is expected %s",
			       h->name, *h->p, c, where);
	h->p++;
	return 0;
}

/* A quoted Python string without escapes; copied into buf. */
static int parse_string(struct hdr *h, char *buf, size_t size, const char *what)
{
	const char *start;
	char q;
	size_t n;

	skip_ws(h);
	if (h->p >= h->end || (*h->p != '\'' && *h->p != '"'))
		return nq_fail(-EBADMSG, "'%s': .npy header: %s is not a quoted string",
			       h->name, what);
	q = *h->p++;
	start = h->p;
	while (h->p < h->end && *h->p != q) {
		if (*h->p == '\\')
			return nq_fail(-EBADMSG, "'%s': .npy header: escape sequence in %s",
				       h->name, what);
		h->p++;
	}
	if (h->p >= h->end)
		return nq_fail(-EBADMSG, "'%s': .npy header: unterminated string in %s",
			       h->name, what);
	n = (size_t)(h->p - start);
	h->p++;
	if (n >= size)
		return nq_fail(-EBADMSG, "'%s': .npy header: %s is too long (%zu characters)",
			       h->name, what, n);
	memcpy(buf, start, n);
	buf[n] = '\0';
	return 0;
}

static int parse_descr(struct hdr *h)
{
	char s[16];
	int err;

	skip_ws(h);
	if (h->p < h->end && *h->p == '[')
		return nq_fail(-ENOTSUP, "'%s': .npy structured dtypes (descr is a list) are not supported",
			       h->name);
	err = parse_string(h, s, sizeof(s), "'descr'");
	if (err)
		return err;
	h->order = s[0];
	if (h->order == '=')
		h->order = HOST_ORDER;
	if (h->order != '<' && h->order != '>' && h->order != '|')
		return nq_fail(-EBADMSG, "'%s': .npy descr '%s' has no byte order ('<', '>', '|' or '=')",
			       h->name, s);
	for (size_t i = 0; i < sizeof(npy_types) / sizeof(npy_types[0]); i++) {
		if (strcmp(s + 1, npy_types[i].code))
			continue;
		h->dtype = npy_types[i].dt;
		if (h->order == '|' && nq_dtype_size(h->dtype) != 1)
			return nq_fail(-EBADMSG, "'%s': .npy descr '%s': '|' (no byte order) on a multi-byte type",
				       h->name, s);
		return 0;
	}
	return nq_fail(-ENOTSUP, "'%s': .npy dtype '%s' is not supported (f4 f8 u1 i1 i2 i4 i8 b1)",
		       h->name, s);
}

static int parse_bool(struct hdr *h, int *val)
{
	skip_ws(h);
	if (h->end - h->p >= 4 && !memcmp(h->p, "True", 4)) {
		h->p += 4;
		*val = 1;
		return 0;
	}
	if (h->end - h->p >= 5 && !memcmp(h->p, "False", 5)) {
		h->p += 5;
		*val = 0;
		return 0;
	}
	return nq_fail(-EBADMSG, "'%s': .npy header: 'fortran_order' is not True or False", h->name);
}

/* (), (n,), (n, m), (n, m,) — non-negative decimal integers */
static int parse_shape(struct hdr *h)
{
	int err = expect(h, '(', "to open 'shape'");

	if (err)
		return err;
	h->ndim = 0;
	for (;;) {
		uint64_t v = 0;
		const char *start;

		skip_ws(h);
		if (h->p < h->end && *h->p == ')') {
			h->p++;
			return 0;
		}
		start = h->p;
		while (h->p < h->end && *h->p >= '0' && *h->p <= '9') {
			if (__builtin_mul_overflow(v, 10, &v) ||
			    __builtin_add_overflow(v, (uint64_t)(*h->p - '0'), &v))
				return nq_fail(-EOVERFLOW, "'%s': .npy shape dimension %u overflows 64 bits",
					       h->name, h->ndim);
			h->p++;
		}
		if (h->p == start)
			return nq_fail(-EBADMSG, "'%s': .npy shape: dimension %u is not a non-negative integer",
				       h->name, h->ndim);
		if (h->p < h->end && *h->p == 'L')	/* written by Python 2 */
			h->p++;
		if (h->ndim == NQ_ARRAY_MAX_DIMS)
			return nq_fail(-E2BIG, "'%s': .npy shape has more than %d dimensions",
				       h->name, NQ_ARRAY_MAX_DIMS);
		h->dims[h->ndim++] = v;
		skip_ws(h);
		if (h->p < h->end && *h->p == ',') {
			h->p++;
			continue;
		}
		err = expect(h, ')', "to close 'shape'");
		if (err)
			return err;
		/* "(5)" is an int in Python, not a tuple; numpy writes "(5,)" */
		if (h->ndim == 1)
			return nq_fail(-EBADMSG, "'%s': .npy shape (%llu) is not a tuple (expected (%llu,))",
				       h->name, (unsigned long long)h->dims[0],
				       (unsigned long long)h->dims[0]);
		return 0;
	}
}

enum { KEY_DESCR = 1, KEY_FORTRAN = 2, KEY_SHAPE = 4 };

static int parse_header(struct hdr *h)
{
	int err = expect(h, '{', "at the start of the header");

	if (err)
		return err;
	for (;;) {
		char key[32];
		unsigned int bit;

		skip_ws(h);
		if (h->p < h->end && *h->p == '}') {
			h->p++;
			break;
		}
		err = parse_string(h, key, sizeof(key), "a dictionary key");
		if (err)
			return err;
		if (!strcmp(key, "descr"))
			bit = KEY_DESCR;
		else if (!strcmp(key, "fortran_order"))
			bit = KEY_FORTRAN;
		else if (!strcmp(key, "shape"))
			bit = KEY_SHAPE;
		else
			return nq_fail(-EBADMSG, "'%s': .npy header has an unknown key '%s'", h->name, key);
		if (h->seen & bit)
			return nq_fail(-EBADMSG, "'%s': .npy header repeats the key '%s'", h->name, key);
		h->seen |= bit;
		err = expect(h, ':', "after a key");
		if (err)
			return err;
		if (bit == KEY_DESCR)
			err = parse_descr(h);
		else if (bit == KEY_FORTRAN)
			err = parse_bool(h, &h->fortran);
		else
			err = parse_shape(h);
		if (err)
			return err;
		skip_ws(h);
		if (h->p < h->end && *h->p == ',') {
			h->p++;
			continue;
		}
		err = expect(h, '}', "to close the header");
		if (err)
			return err;
		break;
	}
	skip_ws(h);
	if (h->p != h->end)
		return nq_fail(-EBADMSG, "'%s': .npy header has text after the closing '}'", h->name);
	if (!(h->seen & KEY_DESCR))
		return nq_fail(-EBADMSG, "'%s': .npy header has no 'descr'", h->name);
	if (!(h->seen & KEY_FORTRAN))
		return nq_fail(-EBADMSG, "'%s': .npy header has no 'fortran_order'", h->name);
	if (!(h->seen & KEY_SHAPE))
		return nq_fail(-EBADMSG, "'%s': .npy header has no 'shape'", h->name);
	return 0;
}

static void swap_bytes(void *data, size_t count, size_t esize)
{
	unsigned char *p = data;

	for (size_t i = 0; i < count; i++, p += esize)
		for (size_t a = 0, b = esize - 1; a < b; a++, b--) {
			unsigned char t = p[a];

			p[a] = p[b];
			p[b] = t;
		}
}

int nq_npy_parse(const void *buf, size_t len, const char *name, struct nq_array *out)
{
	const unsigned char *b = buf;
	struct hdr h = { .name = name };
	size_t prefix, hlen, esize, count = 1, bytes;
	int err;

	memset(out, 0, sizeof(*out));
	if (len < 10)
		return nq_fail(-EBADMSG, "'%s': truncated .npy preamble: %zu of at least 10 bytes",
			       name, len);
	if (memcmp(b, npy_magic, sizeof(npy_magic)))
		return nq_fail(-EBADMSG, "'%s': bad .npy magic (expected \\x93NUMPY)", name);
	if (b[7] != 0 || b[6] < 1 || b[6] > 3)
		return nq_fail(-ENOTSUP, "'%s': .npy format version %u.%u is not supported (1.0, 2.0, 3.0)",
			       name, b[6], b[7]);
	if (b[6] == 1) {
		prefix = 10;
		hlen = (size_t)b[8] | (size_t)b[9] << 8;
	} else {
		prefix = 12;
		if (len < prefix)
			return nq_fail(-EBADMSG, "'%s': truncated .npy preamble: %zu of 12 bytes",
				       name, len);
		hlen = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
	}
	if (hlen > len - prefix)
		return nq_fail(-EBADMSG, "'%s': truncated .npy header: header_len %zu, only %zu bytes follow",
			       name, hlen, len - prefix);
	h.p = (const char *)b + prefix;
	h.end = h.p + hlen;
	if (memchr(h.p, '\0', hlen))
		return nq_fail(-EBADMSG, "'%s': .npy header contains a NUL byte", name);
	err = parse_header(&h);
	if (err)
		return err;
	if (h.fortran)
		return nq_fail(-ENOTSUP, "'%s': .npy array is in Fortran order (fortran_order: True); only C order is supported, save it with numpy.ascontiguousarray",
			       name);

	esize = nq_dtype_size(h.dtype);
	for (unsigned int i = 0; i < h.ndim; i++) {
		if (h.dims[i] > SIZE_MAX || __builtin_mul_overflow(count, (size_t)h.dims[i], &count))
			return nq_fail(-EOVERFLOW, "'%s': .npy shape overflows: element count exceeds SIZE_MAX at dimension %u",
				       name, i);
	}
	if (__builtin_mul_overflow(count, esize, &bytes))
		return nq_fail(-EOVERFLOW, "'%s': .npy data size overflows: %zu elements of %zu bytes",
			       name, count, esize);
	if (bytes > len - prefix - hlen)
		return nq_fail(-EBADMSG, "'%s': truncated .npy data: shape needs %zu bytes, file has %zu",
			       name, bytes, len - prefix - hlen);
	if (bytes < len - prefix - hlen)
		return nq_fail(-EBADMSG, "'%s': %zu trailing bytes after the .npy data",
			       name, len - prefix - hlen - bytes);

	out->data = malloc(bytes ? bytes : 1);
	if (!out->data)
		return nq_fail(-ENOMEM, "'%s': no memory for %zu bytes of .npy data", name, bytes);
	memcpy(out->data, b + prefix + hlen, bytes);
	if (esize > 1 && h.order != HOST_ORDER)
		swap_bytes(out->data, count, esize);
	out->dtype = h.dtype;
	out->ndim = h.ndim;
	memcpy(out->dims, h.dims, sizeof(h.dims));
	out->count = count;
	return 0;
}

int nq_npy_read(const char *path, struct nq_array *out)
{
	struct stat st;
	size_t len, done = 0;
	char *buf;
	int fd, err;

	memset(out, 0, sizeof(*out));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return nq_fail(-errno, "'%s': cannot open: %s", path, strerror(errno));
	if (fstat(fd, &st) < 0) {
		err = nq_fail(-errno, "'%s': fstat: %s", path, strerror(errno));
		goto err_close;
	}
	if (!S_ISREG(st.st_mode)) {
		err = nq_fail(-EINVAL, "'%s': not a regular file", path);
		goto err_close;
	}
	if ((uint64_t)st.st_size > SIZE_MAX / 2) {
		err = nq_fail(-EFBIG, "'%s': file too large (%lld bytes)", path, (long long)st.st_size);
		goto err_close;
	}
	len = (size_t)st.st_size;
	buf = malloc(len ? len : 1);
	if (!buf) {
		err = nq_fail(-ENOMEM, "'%s': no memory for %zu bytes", path, len);
		goto err_close;
	}
	while (done < len) {
		ssize_t n = read(fd, buf + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			err = nq_fail(-errno, "'%s': read: %s", path, strerror(errno));
			goto err_free;
		}
		if (n == 0)
			break;	/* shrank under us: parse what is there */
		done += (size_t)n;
	}
	err = nq_npy_parse(buf, done, path, out);
err_free:
	free(buf);
err_close:
	close(fd);
	return err;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static const char *npy_code(enum nq_dtype dt)
{
	for (size_t i = 0; i < sizeof(npy_types) / sizeof(npy_types[0]); i++)
		if (npy_types[i].dt == dt)
			return npy_types[i].code;
	return NULL;
}

/* Data in little-endian order; swapped through a bounce buffer on BE hosts. */
static int write_data(int fd, const void *data, size_t count, size_t esize)
{
	unsigned char tmp[4096];
	const unsigned char *p = data;
	size_t per = sizeof(tmp) / esize;
	int err;

	if (HOST_ORDER == '<' || esize == 1)
		return write_all(fd, data, count * esize);
	while (count) {
		size_t n = count < per ? count : per;

		memcpy(tmp, p, n * esize);
		swap_bytes(tmp, n, esize);
		err = write_all(fd, tmp, n * esize);
		if (err)
			return err;
		p += n * esize;
		count -= n;
	}
	return 0;
}

int nq_npy_write(const char *path, enum nq_dtype dt, unsigned int ndim,
		 const uint64_t *dims, const void *data)
{
	char head[512], *tmp;
	const char *code = npy_code(dt);
	size_t esize = nq_dtype_size(dt), count = 1, bytes, plen;
	int n, fd, err = 0;

	if (!code)
		return nq_fail(-EINVAL, "'%s': cannot write dtype %d to .npy", path, (int)dt);
	if (ndim > NQ_ARRAY_MAX_DIMS)
		return nq_fail(-EINVAL, "'%s': %u dimensions exceed %d", path, ndim, NQ_ARRAY_MAX_DIMS);
	for (unsigned int i = 0; i < ndim; i++)
		if (dims[i] > SIZE_MAX || __builtin_mul_overflow(count, (size_t)dims[i], &count))
			return nq_fail(-EOVERFLOW, "'%s': shape overflows SIZE_MAX at dimension %u",
				       path, i);
	if (__builtin_mul_overflow(count, esize, &bytes))
		return nq_fail(-EOVERFLOW, "'%s': data size overflows", path);

	/* 10-byte preamble, then the dict; numpy pads it to a multiple of 64 */
	n = snprintf(head + 10, sizeof(head) - 10, "{'descr': '%c%s', 'fortran_order': False, 'shape': (",
		     esize == 1 ? '|' : '<', code);
	for (unsigned int i = 0; i < ndim; i++)
		n += snprintf(head + 10 + n, sizeof(head) - 10 - (size_t)n, "%s%llu",
			      i ? ", " : "", (unsigned long long)dims[i]);
	n += snprintf(head + 10 + n, sizeof(head) - 10 - (size_t)n, "%s), }",
		      ndim == 1 ? "," : "");
	plen = 10 + (size_t)n + 1;
	plen = (plen + 63) & ~(size_t)63;
	memset(head + 10 + n, ' ', plen - 10 - (size_t)n - 1);
	head[plen - 1] = '\n';
	memcpy(head, npy_magic, sizeof(npy_magic));
	head[6] = 1;
	head[7] = 0;
	head[8] = (char)((plen - 10) & 0xff);
	head[9] = (char)((plen - 10) >> 8);

	if (asprintf(&tmp, "%s.tmp.XXXXXX", path) < 0)
		return nq_fail(-ENOMEM, "'%s': no memory for a temporary name", path);
	fd = mkstemp(tmp);
	if (fd < 0) {
		err = nq_fail(-errno, "'%s': cannot create: %s", tmp, strerror(errno));
		goto err_free;
	}
	if (fchmod(fd, 0644) < 0 || (err = write_all(fd, head, plen)) ||
	    (err = write_data(fd, data, count, esize)) || fsync(fd) < 0) {
		err = err ? err : -errno;
		nq_fail(err, "'%s': writing: %s", tmp, strerror(-err));
		goto err_unlink;
	}
	if (close(fd) < 0) {
		fd = -1;
		err = nq_fail(-errno, "'%s': close: %s", tmp, strerror(errno));
		goto err_unlink;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		err = nq_fail(-errno, "'%s': rename into place: %s", path, strerror(errno));
		goto err_unlink;
	}
	free(tmp);
	return 0;

err_unlink:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
err_free:
	free(tmp);
	return err;
}
