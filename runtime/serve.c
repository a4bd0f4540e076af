// SPDX-License-Identifier: MIT
/*
 * The serve protocol: framing and checking requests, formatting answers.
 * Every byte comes from a client we do not trust, so the parser looks at no
 * byte beyond len, accepts exactly the grammar in serve.h and says which
 * rule a request broke.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "nq_error.h"
#include "serve.h"

/* A decimal without sign or leading zeros, at most 10 digits. */
static int parse_uint(const char *s, size_t n, uint64_t *v)
{
	uint64_t x = 0;

	if (!n || n > 10 || (s[0] == '0' && n > 1))
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		x = x * 10 + (uint64_t)(s[i] - '0');
	}
	*v = x;
	return 0;
}

static bool name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* Copy the name s[0, n) into out[size] if it is 1..size-1 name characters. */
static int take_name(const char *s, size_t n, char *out, size_t size)
{
	if (!n || n >= size)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (!name_char(s[i]))
			return -1;
	memcpy(out, s, n);
	out[n] = '\0';
	return 0;
}

static int parse_data(const char *arg, size_t n, struct nq_serve_request *req)
{
	const char *c1 = memchr(arg, ':', n), *c2;

	if (!c1)
		return nq_fail(-EPROTO, "data: expected DATASET:SPLIT:INDEX");
	c2 = memchr(c1 + 1, ':', n - (size_t)(c1 + 1 - arg));
	if (!c2)
		return nq_fail(-EPROTO, "data: expected DATASET:SPLIT:INDEX");
	if (take_name(arg, (size_t)(c1 - arg), req->dataset, sizeof(req->dataset)))
		return nq_fail(-EPROTO, "data: the dataset name must be 1..%zu of [a-z0-9_-]",
			       sizeof(req->dataset) - 1);
	if (take_name(c1 + 1, (size_t)(c2 - c1 - 1), req->split, sizeof(req->split)))
		return nq_fail(-EPROTO, "data: the split must be 1..%zu of [a-z0-9_-]",
			       sizeof(req->split) - 1);
	if (parse_uint(c2 + 1, n - (size_t)(c2 + 1 - arg), &req->index))
		return nq_fail(-EPROTO, "data: INDEX must be a decimal of at most 10 digits, "
				"without sign or leading zeros");
	return 0;
}

int nq_serve_parse(const void *buf, size_t len, size_t max_payload, struct nq_serve_request *req)
{
	const char *p = buf, *nl = NULL, *sp;
	size_t scan = len < NQ_SERVE_MAX_LINE ? len : NQ_SERVE_MAX_LINE, line, vlen, alen;
	uint64_t bytes;

	memset(req, 0, sizeof(*req));
	if (max_payload > NQ_SERVE_MAX_PAYLOAD)
		max_payload = NQ_SERVE_MAX_PAYLOAD;
	/* Reject a bad byte as soon as it arrives: no waiting for a '\n' that garbage never sends. */
	for (size_t i = 0; i < scan; i++) {
		unsigned char c = (unsigned char)p[i];

		if (c == '\n') {
			nl = p + i;
			break;
		}
		if (c < 0x20 || c > 0x7e)
			return nq_fail(-EPROTO, "header byte %zu is 0x%02x: the header is one line "
					"of printable ASCII", i, c);
	}
	if (!nl)
		return len >= NQ_SERVE_MAX_LINE ?
			nq_fail(-EMSGSIZE, "header line longer than %d bytes", NQ_SERVE_MAX_LINE - 1) :
			0;
	line = (size_t)(nl - p);
	req->header_len = line + 1;
	if (!line)
		return nq_fail(-EPROTO, "empty header line");
	if (p[0] == ' ' || p[line - 1] == ' ')
		return nq_fail(-EPROTO, "leading or trailing space in the header");
	sp = memchr(p, ' ', line);
	vlen = sp ? (size_t)(sp - p) : line;
	alen = sp ? line - vlen - 1 : 0;
	if (sp && memchr(sp + 1, ' ', alen))
		return nq_fail(-EPROTO, "the header has more than one argument");

	if (vlen == 6 && !memcmp(p, "status", 6)) {
		if (sp)
			return nq_fail(-EPROTO, "status takes no argument");
		req->verb = NQ_SERVE_STATUS;
		return (int)req->header_len;
	}
	if (vlen == 4 && !memcmp(p, "data", 4)) {
		if (!sp)
			return nq_fail(-EPROTO, "data: expected DATASET:SPLIT:INDEX");
		req->verb = NQ_SERVE_DATA;
		if (parse_data(sp + 1, alen, req) < 0)
			return -EPROTO;
		return (int)req->header_len;
	}
	if (vlen == 3 && !memcmp(p, "npy", 3)) {
		if (!sp || parse_uint(sp + 1, alen, &bytes))
			return nq_fail(-EPROTO, "npy: expected the payload size in bytes (decimal)");
		if (!bytes)
			return nq_fail(-EPROTO, "npy: empty payload");
		if (bytes > max_payload)
			return nq_fail(-EMSGSIZE, "npy: %" PRIu64 " bytes declared, at most %zu accepted",
				       bytes, max_payload);
		req->verb = NQ_SERVE_NPY;
		req->payload_len = (size_t)bytes;
		if (len - req->header_len < req->payload_len)
			return 0;
		req->payload = (const uint8_t *)p + req->header_len;
		return (int)(req->header_len + req->payload_len);
	}
	return nq_fail(-EPROTO, "unknown request '%.*s' (expected npy, data or status)",
		       (int)(vlen < 16 ? vlen : 16), p);
}

int nq_serve_npy_input(const struct nq_serve_request *req, size_t count, float *input)
{
	struct nq_array a = { 0 };
	int err;

	if (req->verb != NQ_SERVE_NPY || !req->payload)
		return nq_fail(-EINVAL, "not a complete npy request");
	err = nq_npy_parse(req->payload, req->payload_len, "npy request", &a);
	if (err)
		return err;
	if (a.dtype != NQ_DT_F32) {
		err = nq_fail(-EINVAL, "npy request: dtype %s, the server takes f32",
			      nq_dtype_name(a.dtype));
		goto out;
	}
	if (a.count != count) {
		err = nq_fail(-EINVAL, "npy request: %zu values, the model takes one input of %zu",
			      a.count, count);
		goto out;
	}
	memcpy(input, a.data, count * sizeof(float));
out:
	nq_array_free(&a);
	return err;
}

/* The same arithmetic as cli_probabilities/cli_top_k, so the digits agree with `nestquant run`. */
void nq_serve_classify(const float *out, size_t n, float *p, struct nq_serve_answer *a)
{
	double sum = 0, mx = -INFINITY;
	bool dist = true;

	for (size_t i = 0; i < n; i++) {
		if (!(out[i] >= 0 && out[i] <= 1))
			dist = false;
		sum += out[i];
		if (out[i] > mx)
			mx = out[i];
	}
	if (dist && fabs(sum - 1) < 1e-3) {
		memcpy(p, out, n * sizeof(*p));
	} else {
		sum = 0;
		for (size_t i = 0; i < n; i++)
			sum += exp((double)out[i] - mx);
		for (size_t i = 0; i < n; i++)
			p[i] = (float)(exp((double)out[i] - mx) / sum);
	}
	a->k = n < NQ_SERVE_TOPK ? (unsigned int)n : NQ_SERVE_TOPK;
	for (unsigned int j = 0; j < a->k; j++) {
		size_t best = SIZE_MAX;

		for (size_t i = 0; i < n; i++) {
			bool taken = false;

			for (unsigned int t = 0; t < j; t++)
				taken |= a->top[t] == i;
			if (!taken && (best == SIZE_MAX || p[i] > p[best]))
				best = i;
		}
		a->top[j] = (uint32_t)best;
		a->prob[j] = p[best];
	}
}

size_t nq_serve_json_escape(char *buf, size_t len, const char *s)
{
	size_t o = 0;

	if (!len)
		return 0;
	for (; *s && o + 7 < len; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			buf[o++] = '\\';
			buf[o++] = (char)c;
		} else if (c < 0x20 || c == 0x7f) {
			o += (size_t)snprintf(buf + o, len - o, "\\u%04x", c);
		} else {
			buf[o++] = (char)c;
		}
	}
	buf[o] = '\0';
	return o;
}

int nq_serve_format_answer(char *buf, size_t len, const struct nq_serve_answer *a)
{
	size_t o;
	int n;

	n = snprintf(buf, len, "{\"ok\":true,\"seq\":%" PRIu64 ",\"class\":%d,\"level\":%d,"
		     "\"bits\":%d,\"degraded\":%s,\"top\":[", a->seq, a->k ? (int)a->top[0] : -1,
		     a->level, a->bits, a->degraded ? "true" : "false");
	if (n < 0 || (size_t)n >= len)
		return nq_fail(-ENOSPC, "answer longer than %zu bytes", len);
	o = (size_t)n;
	for (unsigned int j = 0; j < a->k; j++) {
		n = snprintf(buf + o, len - o, "%s{\"class\":%u,\"probability\":%.6f}", j ? "," : "",
			     a->top[j], a->prob[j]);
		if (n < 0 || (size_t)n >= len - o)
			return nq_fail(-ENOSPC, "answer longer than %zu bytes", len);
		o += (size_t)n;
	}
	if (a->label >= 0)
		n = snprintf(buf + o, len - o, "],\"label\":%d,\"latency_us\":%" PRIu64 "}\n",
			     a->label, a->latency_us);
	else
		n = snprintf(buf + o, len - o, "],\"latency_us\":%" PRIu64 "}\n", a->latency_us);
	if (n < 0 || (size_t)n >= len - o)
		return nq_fail(-ENOSPC, "answer longer than %zu bytes", len);
	return (int)(o + (size_t)n);
}

int nq_serve_format_error(char *buf, size_t len, const char *msg)
{
	char esc[NQ_SERVE_MAX_ANSWER - 32];
	int n;

	nq_serve_json_escape(esc, sizeof(esc), msg && *msg ? msg : "unknown error");
	n = snprintf(buf, len, "{\"ok\":false,\"error\":\"%s\"}\n", esc);
	if (n < 0 || (size_t)n >= len)
		return nq_fail(-ENOSPC, "answer longer than %zu bytes", len);
	return n;
}
