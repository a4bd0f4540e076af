// SPDX-License-Identifier: MIT
/* The serve protocol (runtime/serve.c): framing, inputs, answers. */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nq_error.h"
#include "nq_test.h"
#include "serve.h"

static int parse(const char *s, struct nq_serve_request *r)
{
	return nq_serve_parse(s, strlen(s), 4096, r);
}

START_TEST(test_status_and_data_are_framed)
{
	struct nq_serve_request r;

	ck_assert_int_eq(parse("status\nrest", &r), 7);
	ck_assert_int_eq(r.verb, NQ_SERVE_STATUS);
	ck_assert_int_eq(parse("data fashion-mnist:test:1234\n", &r), 29);
	ck_assert_int_eq(r.verb, NQ_SERVE_DATA);
	ck_assert_str_eq(r.dataset, "fashion-mnist");
	ck_assert_str_eq(r.split, "test");
	ck_assert_uint_eq(r.index, 1234);
	ck_assert_int_eq(parse("data a:b:0\n", &r), 11);
	ck_assert_uint_eq(r.index, 0);
}
END_TEST

START_TEST(test_incomplete_requests_ask_for_more)
{
	struct nq_serve_request r;

	ck_assert_int_eq(parse("", &r), 0);
	ck_assert_int_eq(parse("stat", &r), 0);
	ck_assert_int_eq(parse("npy 10\n12345", &r), 0);
	/* The header is known, so the server knows how much to wait for. */
	ck_assert_uint_eq(r.header_len, 7);
	ck_assert_uint_eq(r.payload_len, 10);
	ck_assert_int_eq(parse("npy 10\n1234567890status\n", &r), 17);
	ck_assert_ptr_nonnull(r.payload);
	ck_assert_int_eq(memcmp(r.payload, "1234567890", 10), 0);
}
END_TEST

START_TEST(test_bad_headers_are_rejected_with_the_rule_broken)
{
	static const struct {
		const char *req;
		int err;
		const char *msg;
	} cases[] = {
		{ "\n", -EPROTO, "empty header line" },
		{ " status\n", -EPROTO, "leading or trailing space" },
		{ "status \n", -EPROTO, "leading or trailing space" },
		{ "status x\n", -EPROTO, "status takes no argument" },
		{ "data a:b:1 c\n", -EPROTO, "more than one argument" },
		{ "data a:b\n", -EPROTO, "expected DATASET:SPLIT:INDEX" },
		{ "data A:b:1\n", -EPROTO, "dataset name" },
		{ "data a:b:01\n", -EPROTO, "leading zeros" },
		{ "data a:b:-1\n", -EPROTO, "without sign" },
		{ "data a:b:12345678901\n", -EPROTO, "at most 10 digits" },
		{ "data a:toolongsplit:1\n", -EPROTO, "split" },
		{ "npy\n", -EPROTO, "payload size" },
		{ "npy 0\n", -EPROTO, "empty payload" },
		{ "npy 4097\n", -EMSGSIZE, "4097 bytes declared, at most 4096" },
		{ "get /\n", -EPROTO, "unknown request 'get'" },
		{ "status\r\n", -EPROTO, "0x0d" },
		{ "sta\x80tus", -EPROTO, "header byte 3 is 0x80" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct nq_serve_request r;

		ck_assert_msg(parse(cases[i].req, &r) == cases[i].err, "case %zu", i);
		ck_assert_msg(strstr(nq_last_error(), cases[i].msg), "case %zu: '%s'", i, nq_last_error());
	}
}
END_TEST

START_TEST(test_overlong_header_is_rejected_without_a_newline)
{
	char buf[NQ_SERVE_MAX_LINE + 8];
	struct nq_serve_request r;

	memset(buf, 'a', sizeof(buf));
	ck_assert_int_eq(nq_serve_parse(buf, NQ_SERVE_MAX_LINE - 1, 4096, &r), 0);
	ck_assert_int_eq(nq_serve_parse(buf, sizeof(buf), 4096, &r), -EMSGSIZE);
	/* max_payload above the protocol's cap is clamped to it. */
	ck_assert_int_eq(nq_serve_parse("npy 16777217\n", 13, SIZE_MAX, &r), -EMSGSIZE);
}
END_TEST

/* A minimal .npy v1.0 of n little-endian values of descr. */
static size_t npy(uint8_t *buf, const char *descr, unsigned int n, const void *data, size_t esize)
{
	char hdr[118];
	int h = snprintf(hdr, sizeof(hdr), "{'descr': '%s', 'fortran_order': False, 'shape': (%u,), }",
			 descr, n);

	memset(hdr + h, ' ', sizeof(hdr) - (size_t)h);
	hdr[sizeof(hdr) - 1] = '\n';
	memcpy(buf, "\x93NUMPY\x01\x00\x76\x00", 10);
	memcpy(buf + 10, hdr, sizeof(hdr));
	memcpy(buf + 128, data, n * esize);
	return 128 + n * esize;
}

START_TEST(test_npy_input_must_be_f32_of_the_model_size)
{
	uint8_t buf[512];
	float v[4] = { 1.5f, -2, 0, 255 }, in[4] = { 0 };
	int32_t iv[4] = { 1, 2, 3, 4 };
	struct nq_serve_request r = { .verb = NQ_SERVE_NPY, .payload = buf };

	r.payload_len = npy(buf, "<f4", 4, v, 4);
	ck_assert_int_eq(nq_serve_npy_input(&r, 4, in), 0);
	ck_assert(in[0] == 1.5f && in[1] == -2 && in[3] == 255);
	ck_assert_int_eq(nq_serve_npy_input(&r, 5, in), -EINVAL);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "4 values, the model takes one input of 5"));
	r.payload_len = npy(buf, "<i4", 4, iv, 4);
	ck_assert_int_eq(nq_serve_npy_input(&r, 4, in), -EINVAL);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "dtype i32, the server takes f32"));
	r.payload_len = 20;
	ck_assert_int_lt(nq_serve_npy_input(&r, 4, in), 0);
}
END_TEST

START_TEST(test_answers_carry_class_top5_and_level)
{
	float logits[7] = { 0.1f, 3, -1, 2, 2, 0, 1 }, scratch[7];
	struct nq_serve_answer a = { .seq = 9, .level = 1, .bits = 8, .label = 1, .latency_us = 42 };
	char line[NQ_SERVE_MAX_ANSWER];
	double sum = 0;
	int n;

	nq_serve_classify(logits, 7, scratch, &a);
	ck_assert_uint_eq(a.k, 5);
	/* Ties go to the lower index: 3 before 4. */
	ck_assert_uint_eq(a.top[0], 1);
	ck_assert_uint_eq(a.top[1], 3);
	ck_assert_uint_eq(a.top[2], 4);
	ck_assert_uint_eq(a.top[3], 6);
	ck_assert_uint_eq(a.top[4], 0);
	for (int i = 0; i < 7; i++)
		sum += scratch[i];
	ck_assert(fabs(sum - 1) < 1e-6);
	ck_assert(fabsf(a.prob[0] - expf(3) / (float)(expf(0.1f) + expf(3) + expf(-1) + 2 * expf(2) +
						     1 + expf(1))) < 1e-6f);
	n = nq_serve_format_answer(line, sizeof(line), &a);
	ck_assert_int_gt(n, 0);
	ck_assert_int_eq(line[n - 1], '\n');
	ck_assert_ptr_nonnull(strstr(line, "{\"ok\":true,\"seq\":9,\"class\":1,\"level\":1,\"bits\":8,"
				 "\"degraded\":false,\"top\":[{\"class\":1,\"probability\":0."));
	ck_assert_ptr_nonnull(strstr(line, "],\"label\":1,\"latency_us\":42}\n"));
	ck_assert_int_eq(nq_serve_format_answer(line, 40, &a), -ENOSPC);
}
END_TEST

START_TEST(test_error_answers_are_escaped_json)
{
	char line[NQ_SERVE_MAX_ANSWER];
	int n = nq_serve_format_error(line, sizeof(line), "bad \"x\"\\\n\x01");

	ck_assert_int_gt(n, 0);
	ck_assert_str_eq(line, "{\"ok\":false,\"error\":\"bad \\\"x\\\"\\\\\\u000a\\u0001\"}\n");
}
END_TEST

static Suite *serve_suite(void)
{
	Suite *s = suite_create("serve");
	TCase *tc = tcase_create("protocol");

	tcase_add_test(tc, test_status_and_data_are_framed);
	tcase_add_test(tc, test_incomplete_requests_ask_for_more);
	tcase_add_test(tc, test_bad_headers_are_rejected_with_the_rule_broken);
	tcase_add_test(tc, test_overlong_header_is_rejected_without_a_newline);
	tcase_add_test(tc, test_npy_input_must_be_f32_of_the_model_size);
	tcase_add_test(tc, test_answers_carry_class_top5_and_level);
	tcase_add_test(tc, test_error_answers_are_escaped_json);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return nq_test_run(serve_suite());
}
