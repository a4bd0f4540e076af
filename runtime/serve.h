/* SPDX-License-Identifier: MIT */
/*
 * The request/answer protocol of `nestquant serve` (internal; the parser is
 * kept apart from the server so it can be fuzzed on its own).
 *
 * A connection carries any number of requests, answered in order.  A
 * request is one header line of printable ASCII ending in '\n' (at most
 * NQ_SERVE_MAX_LINE bytes with the '\n'; no '\r', tabs, leading, trailing or
 * doubled spaces), optionally followed by a payload whose size the header
 * gives:
 *
 *	npy BYTES\n<BYTES bytes of a .npy file>	one input, f32, of the model's size
 *	data DATASET:SPLIT:INDEX\n		a dataset image, e.g. fashion-mnist:test:1234
 *	status\n				level in force, residency, counters
 *
 * BYTES and INDEX are decimal without sign or leading zeros.  Every answer
 * is one JSON object on one line ending in '\n' (at most NQ_SERVE_MAX_ANSWER
 * bytes), "ok" first:
 *
 *	{"ok":true,"seq":7,"class":3,"level":1,"bits":6,"degraded":false,
 *	 "top":[{"class":3,"probability":0.912345},...],"label":3,"latency_us":210}
 *	{"ok":false,"error":"npy: 3136 bytes declared, at most 65536 accepted"}
 *
 * "level" is the level the inference really ran at (it runs wholly at the
 * level in force when it started).  A request the server cannot frame
 * (garbled header, oversize payload) is answered with an error and the
 * connection is closed, since the stream cannot be resynchronised; a
 * well-framed request with bad content (wrong dtype, index out of range)
 * gets an error answer and the connection stays open.
 *
 * Functions return 0 / a byte count or a negative errno with the reason in
 * nq_last_error(); nothing here prints.
 */
#ifndef NQ_RUNTIME_SERVE_H
#define NQ_RUNTIME_SERVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NQ_SERVE_MAX_LINE	256
#define NQ_SERVE_MAX_ANSWER	1024
/* Hard cap on a payload whatever the model: 16 MiB. */
#define NQ_SERVE_MAX_PAYLOAD	(16u << 20)
#define NQ_SERVE_TOPK		5

enum nq_serve_verb {
	NQ_SERVE_NPY = 1,
	NQ_SERVE_DATA,
	NQ_SERVE_STATUS,
};

struct nq_serve_request {
	enum nq_serve_verb verb;
	size_t header_len;		/* the header line, '\n' included */
	size_t payload_len;		/* npy: bytes following the header */
	const uint8_t *payload;		/* npy: points into the parsed buffer */
	char dataset[32];		/* data: e.g. "fashion-mnist" */
	char split[8];			/* data: "test" or "train" */
	uint64_t index;			/* data: image index */
};

/*
 * Frame one request at the start of buf[0, len).  Returns its total size
 * (header + payload) when it is all there, 0 when more bytes are needed, or
 * a negative errno when the bytes can never become a valid request:
 * -EMSGSIZE (a header line or a declared payload larger than allowed;
 * max_payload caps npy payloads, itself capped at NQ_SERVE_MAX_PAYLOAD) or
 * -EPROTO (anything else), with the reason in nq_last_error().
 */
int nq_serve_parse(const void *buf, size_t len, size_t max_payload, struct nq_serve_request *req);

/*
 * The input of an npy request: the payload must be a valid .npy of dtype
 * f32 holding exactly `count` values (any shape with that many, e.g.
 * (1,1,28,28) or (784,)); they are copied to input[0, count).  -EINVAL or
 * -EBADMSG with the reason.
 */
int nq_serve_npy_input(const struct nq_serve_request *req, size_t count, float *input);

/* One classification answer. */
struct nq_serve_answer {
	uint64_t seq;			/* the server's request counter */
	int level;			/* level the inference ran at */
	int bits;			/* its weight bit width */
	bool degraded;			/* some layers ran below it (budget) */
	int label;			/* the dataset's label, -1 when unknown */
	uint64_t latency_us;		/* request parsed -> answer formatted */
	unsigned int k;			/* entries in top (<= NQ_SERVE_TOPK) */
	uint32_t top[NQ_SERVE_TOPK];	/* class indices, most probable first */
	float prob[NQ_SERVE_TOPK];	/* their probabilities */
};

/*
 * Fill the class fields of *a from n output values: probabilities (the
 * values themselves when they already are a distribution, else a softmax;
 * the arithmetic of `nestquant run`, so both print the same digits) and the
 * top-k, ties to the lower index.  scratch holds n floats.
 */
void nq_serve_classify(const float *out, size_t n, float *scratch, struct nq_serve_answer *a);

/* Answer lines, '\n' included; return their length or -ENOSPC. */
int nq_serve_format_answer(char *buf, size_t len, const struct nq_serve_answer *a);
int nq_serve_format_error(char *buf, size_t len, const char *msg);

/* JSON string body of s (escaped, no quotes) into buf; returns its length. */
size_t nq_serve_json_escape(char *buf, size_t len, const char *s);

#endif
