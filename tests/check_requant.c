// SPDX-License-Identifier: MIT
/*
 * The integer arithmetic of the executor (runtime/requant.h) against
 * references computed another way: long double for the multipliers, __int128
 * floor division (not shifts) for the rounding, explicit tie cases.
 */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>

#include "nq_ops.h"
#include "nq_test.h"
#include "requant.h"

static uint64_t rng = 12345;

static uint64_t next(void)
{
	uint64_t z = (rng += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static __int128 floor_div(__int128 a, __int128 b)
{
	__int128 q = a / b;

	if (a % b != 0 && a < 0)
		q--;
	return q;
}

/* x * m / 2^s rounded half up, by division. */
static int64_t ref_apply(int32_t x, struct nq_rq rq)
{
	__int128 p = (__int128)x * rq.m, d = (__int128)1 << rq.s;

	return (int64_t)floor_div(2 * p + d, 2 * d);
}

START_TEST(derive_normal_range_is_normalised_and_accurate)
{
	for (int i = 0; i < 20000; i++) {
		/* log-uniform over [2^-31, 2^30) */
		double e = -31.0 + 61.0 * (double)(next() >> 11) / 9007199254740992.0;
		double M = exp2(e);
		struct nq_rq rq;
		long double approx, err;

		nq_rq_derive(M, &rq);
		ck_assert_int_ge(rq.m, 1 << 30);
		ck_assert_int_ge(rq.s, 1);
		ck_assert_int_le(rq.s, 62);
		approx = ldexpl((long double)rq.m, -rq.s);
		err = fabsl(approx - (long double)M);
		/* half an ulp of the 31-bit mantissa */
		ck_assert_msg(err <= ldexpl(1.0L, -rq.s) / 2 * (1 + 1e-12L),
			      "M=%.17g: m=%d s=%d err=%Lg", M, rq.m, rq.s, err);
	}
}
END_TEST

START_TEST(derive_powers_of_two_are_exact)
{
	for (int k = -29; k <= 31; k++) {
		struct nq_rq rq;

		nq_rq_derive(ldexp(1.0, -k), &rq);
		ck_assert_int_eq(rq.m, 1 << 30);
		ck_assert_int_eq(rq.s, 30 + k);
	}
	/* a mantissa that rounds up to 2^31 renormalises */
	{
		struct nq_rq rq;

		nq_rq_derive(1.0 - ldexp(1.0, -40), &rq);
		ck_assert_int_eq(rq.m, 1 << 30);
		ck_assert_int_eq(rq.s, 30);
	}
}
END_TEST

START_TEST(derive_tiny_huge_and_degenerate)
{
	struct nq_rq rq;

	nq_rq_derive(0.0, &rq);
	ck_assert_int_eq(rq.m, 0);
	ck_assert_int_eq(rq.s, 31);
	nq_rq_derive(-1.0, &rq);
	ck_assert_int_eq(rq.m, 0);
	nq_rq_derive(NAN, &rq);
	ck_assert_int_eq(rq.m, 0);

	/* 2^-40: s would be 70, clamped to 62 with m shifted by 8 */
	nq_rq_derive(ldexp(1.0, -40), &rq);
	ck_assert_int_eq(rq.s, 62);
	ck_assert_int_eq(rq.m, 1 << 22);
	ck_assert_int_eq(nq_rq_apply(INT32_MAX, rq), 0);
	ck_assert_int_eq(ref_apply(INT32_MAX, rq), 0);
	/* 2^-94: shifted out entirely */
	nq_rq_derive(ldexp(1.0, -94), &rq);
	ck_assert_int_eq(rq.m, 0);
	ck_assert_int_eq(rq.s, 62);
	nq_rq_derive(DBL_MIN, &rq);
	ck_assert_int_eq(rq.m, 0);

	/* >= 2^30 saturates every non-zero input */
	nq_rq_derive(ldexp(1.0, 31), &rq);
	ck_assert_int_eq(rq.m, INT32_MAX);
	ck_assert_int_eq(rq.s, 1);
	ck_assert_int_eq(nq_rq_output(1, rq, 0, 0, 255), 255);
	ck_assert_int_eq(nq_rq_output(-1, rq, 200, 0, 255), 0);
	ck_assert_int_eq(nq_rq_output(0, rq, 17, 0, 255), 17);
	nq_rq_derive(INFINITY, &rq);
	ck_assert_int_eq(rq.m, INT32_MAX);
	ck_assert_int_eq(rq.s, 1);
	/* just below 2^30 is still representable */
	nq_rq_derive(ldexp(1.0, 29) * 1.5, &rq);
	ck_assert_int_eq(rq.s, 1);
	ck_assert_int_eq(rq.m, 3 << 29);
}
END_TEST

START_TEST(apply_matches_division_reference)
{
	for (int i = 0; i < 200000; i++) {
		double M = exp2(-40.0 + 70.0 * (double)(next() >> 11) / 9007199254740992.0);
		int32_t x = (int32_t)(uint32_t)next();
		struct nq_rq rq;

		if (i % 3 == 0)
			x >>= (next() % 31);	/* small magnitudes too */
		nq_rq_derive(M, &rq);
		ck_assert_int_eq(nq_rq_apply(x, rq), ref_apply(x, rq));
	}
	/* extremes of the accumulator */
	{
		struct nq_rq rq;

		nq_rq_derive(0.999999, &rq);
		ck_assert_int_eq(nq_rq_apply(INT32_MIN, rq), ref_apply(INT32_MIN, rq));
		ck_assert_int_eq(nq_rq_apply(INT32_MAX, rq), ref_apply(INT32_MAX, rq));
	}
}
END_TEST

START_TEST(apply_ties_round_toward_plus_infinity)
{
	struct nq_rq half, quarter;

	nq_rq_derive(0.5, &half);
	ck_assert_int_eq(nq_rq_apply(3, half), 2);
	ck_assert_int_eq(nq_rq_apply(-3, half), -1);
	ck_assert_int_eq(nq_rq_apply(1, half), 1);
	ck_assert_int_eq(nq_rq_apply(-1, half), 0);
	ck_assert_int_eq(nq_rq_apply(-5, half), -2);
	nq_rq_derive(0.25, &quarter);
	ck_assert_int_eq(nq_rq_apply(-6, quarter), -1);	/* -1.5 */
	ck_assert_int_eq(nq_rq_apply(-7, quarter), -2);	/* -1.75 */
	ck_assert_int_eq(nq_rq_apply(6, quarter), 2);	/* 1.5 */
	ck_assert_int_eq(nq_rq_apply(5, quarter), 1);	/* 1.25 */
}
END_TEST

START_TEST(identity_multiplier_is_exact)
{
	struct nq_rq one;

	nq_rq_derive(1.0, &one);
	for (int64_t x = -70000; x <= 70000; x += 7)
		ck_assert_int_eq(nq_rq_apply((int32_t)x, one), x);
	ck_assert_int_eq(nq_rq_apply(INT32_MIN, one), INT32_MIN);
	ck_assert_int_eq(nq_rq_apply(INT32_MAX, one), INT32_MAX);
	for (int u = 0; u < 256; u++)
		ck_assert_int_eq(nq_rq_output(u - 77, one, 77, 0, 255), u);
}
END_TEST

START_TEST(output_clamps_in_64_bits)
{
	struct nq_rq big;

	nq_rq_derive(1e6, &big);
	/* the shifted product exceeds int32: must clamp, not wrap */
	ck_assert_int_eq(nq_rq_output(INT32_MAX, big, 0, 0, 255), 255);
	ck_assert_int_eq(nq_rq_output(INT32_MIN, big, 255, 0, 255), 0);
	ck_assert_int_eq(nq_rq_output(INT32_MIN, big, 0, -128, 127), -128);
}
END_TEST

START_TEST(bias_rounds_half_away_and_clamps)
{
	/* 0.5 * 0.25 = 0.125 exactly; bias 0.1875 / 0.125 = 1.5 */
	ck_assert_int_eq(nq_bias32(0.1875f, 0.5f, 0.25f, 9), 2);
	ck_assert_int_eq(nq_bias32(-0.1875f, 0.5f, 0.25f, 9), -2);
	ck_assert_int_eq(nq_bias32(0.3125f, 0.5f, 0.25f, 9), 3);	/* 2.5 -> 3 */
	ck_assert_int_eq(nq_bias32(0.124f, 0.5f, 0.25f, 9), 1);
	ck_assert_int_eq(nq_bias32(1.0f, 0.0f, 0.25f, 9), 0);
	ck_assert_int_eq(nq_bias32(1.0f, 0.5f, 0.0f, 9), 0);
	/* limit = 2^31 - 1 - k * 255 * 128 */
	ck_assert_int_eq(nq_bias32(1e30f, 1e-10f, 1e-10f, 100), 2147483647 - 100 * 255 * 128);
	ck_assert_int_eq(nq_bias32(-1e30f, 1e-10f, 1e-10f, 0), -2147483647);
	for (int i = 0; i < 10000; i++) {
		float b = (float)((int64_t)(next() % 2000001) - 1000000) * 1e-4f;
		float sx = 1e-3f + (float)(next() % 1000) * 1e-4f;
		float sw = 1e-4f + (float)(next() % 1000) * 1e-5f;
		long double r = (long double)b / ((long double)sx * (long double)sw);
		long double want = r < 0 ? -floorl(-r + 0.5L) : floorl(r + 0.5L);

		ck_assert_int_eq(nq_bias32(b, sx, sw, 64), (int32_t)want);
	}
}
END_TEST

START_TEST(activation_ranges)
{
	int32_t lo, hi;

	ck_assert_int_eq(nq_act_range(NQ_ACT_NONE, 0, 0, 0.1f, 30, 0, 255, &lo, &hi), 0);
	ck_assert_int_eq(lo, 0);
	ck_assert_int_eq(hi, 255);
	ck_assert_int_eq(nq_act_range(NQ_ACT_RELU, 0, 0, 0.1f, 30, 0, 255, &lo, &hi), 0);
	ck_assert_int_eq(lo, 30);
	ck_assert_int_eq(hi, 255);
	/* ReLU6 on sy = 0.05, zy = 10: 6 / 0.05 = 120 -> 130 */
	ck_assert_int_eq(nq_act_range(NQ_ACT_CLIP, 0.0f, 6.0f, 0.05f, 10, 0, 255, &lo, &hi), 0);
	ck_assert_int_eq(lo, 10);
	ck_assert_int_eq(hi, 130);
	/* exact bounds: -0.25 / 0.125 = -2, 0.25 / 0.125 = 2 */
	ck_assert_int_eq(nq_act_range(NQ_ACT_CLIP, -0.25f, 0.25f, 0.125f, 100, 0, 255, &lo, &hi), 0);
	ck_assert_int_eq(lo, 98);
	ck_assert_int_eq(hi, 102);
	ck_assert_int_eq(nq_act_range(NQ_ACT_CLIP, -0.3125f, 0.3125f, 0.125f, 100, 0, 255, &lo, &hi), 0);
	ck_assert_int_eq(lo, 97);	/* -2.5 -> -3 */
	ck_assert_int_eq(hi, 103);	/* 2.5 -> 3 */
	/* infinite bounds and s8 storage */
	ck_assert_int_eq(nq_act_range(NQ_ACT_CLIP, -INFINITY, INFINITY, 0.1f, 0, -128, 127, &lo, &hi), 0);
	ck_assert_int_eq(lo, -128);
	ck_assert_int_eq(hi, 127);
	ck_assert_int_lt(nq_act_range(7, 0, 0, 0.1f, 0, 0, 255, &lo, &hi), 0);
}
END_TEST

START_TEST(add_fits_int32_and_tracks_reference)
{
	const float ratios[] = { 1.0f, 0.5f, 0.013f, 3.7f, 127.0f, 129.0f, 2000.0f, 5e5f, 1e7f };

	for (size_t i = 0; i < sizeof(ratios) / sizeof(ratios[0]); i++)
		for (size_t j = 0; j < sizeof(ratios) / sizeof(ratios[0]); j++) {
			struct nq_add_rq a;
			int64_t worst;
			float s3 = 0.02f, s1 = ratios[i] * s3, s2 = ratios[j] * s3;

			nq_add_derive(s1, s2, s3, &a);
			ck_assert_int_ge(a.shift, 0);
			ck_assert_int_le(a.shift, 16);
			worst = 255 * ((int64_t)a.k1 + a.k2) + (a.shift ? 1 << (a.shift - 1) : 0);
			ck_assert_msg(worst <= INT32_MAX, "ratios %g %g: k %d %d shift %d", ratios[i],
				      ratios[j], a.k1, a.k2, a.shift);
			if (ratios[i] < 100 && ratios[j] < 100)
				ck_assert_int_eq(a.shift, 16);
			for (int d1 = -255; d1 <= 255; d1 += 17)
				for (int d2 = -255; d2 <= 255; d2 += 13) {
					int64_t sum = (int64_t)d1 * a.k1 + (int64_t)d2 * a.k2 +
						      (a.shift ? 1 << (a.shift - 1) : 0);
					int32_t want = (int32_t)floor_div(sum, (__int128)1 << a.shift);
					long double real = (long double)d1 * s1 / s3 + (long double)d2 * s2 / s3;

					ck_assert_int_eq(nq_add_apply(d1, d2, &a, 0, INT32_MIN, INT32_MAX), want);
					if (ratios[i] < 1e6 && ratios[j] < 1e6)
						ck_assert_msg(fabsl(want - real) <= 0.5L + 255.0L * 2 *
							      ldexpl(1, -a.shift) + fabsl(real) * 1e-6L,
							      "d %d %d: %d vs %Lg", d1, d2, want, real);
				}
		}
}
END_TEST

static int32_t ref_rne(float t)
{
	double f = floor((double)t), d = (double)t - f;

	if (d > 0.5 || (d == 0.5 && fmod(f, 2.0) != 0))
		f += 1;
	return (int32_t)f;
}

START_TEST(quantize_rounds_half_even_and_saturates)
{
	float inv = nq_quant_inv(1.0f);

	ck_assert_int_eq(nq_quantize_one(0.5f, inv, 10, 0, 255), 10);
	ck_assert_int_eq(nq_quantize_one(1.5f, inv, 10, 0, 255), 12);
	ck_assert_int_eq(nq_quantize_one(2.5f, inv, 10, 0, 255), 12);
	ck_assert_int_eq(nq_quantize_one(-0.5f, inv, 10, 0, 255), 10);
	ck_assert_int_eq(nq_quantize_one(-1.5f, inv, 10, 0, 255), 8);
	ck_assert_int_eq(nq_quantize_one(NAN, inv, 10, 0, 255), 0);
	ck_assert_int_eq(nq_quantize_one(INFINITY, inv, 10, 0, 255), 255);
	ck_assert_int_eq(nq_quantize_one(-INFINITY, inv, 10, -128, 127), -128);
	ck_assert_int_eq(nq_quantize_one(3e38f, inv, 0, 0, 255), 255);
	for (int i = 0; i < 100000; i++) {
		float s = 1e-3f + (float)(next() % 10000) * 1e-4f;
		float x = ((float)(next() % 2000001) - 1000000.0f) * 1e-4f;
		float in = nq_quant_inv(s), t = x * in;
		int32_t z = (int32_t)(next() % 256), want = ref_rne(t) + z;

		want = want < 0 ? 0 : want > 255 ? 255 : want;
		ck_assert_int_eq(nq_quantize_one(x, in, z, 0, 255), want);
	}
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("requant");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, derive_normal_range_is_normalised_and_accurate);
	tcase_add_test(tc, derive_powers_of_two_are_exact);
	tcase_add_test(tc, derive_tiny_huge_and_degenerate);
	tcase_add_test(tc, apply_matches_division_reference);
	tcase_add_test(tc, apply_ties_round_toward_plus_infinity);
	tcase_add_test(tc, identity_multiplier_is_exact);
	tcase_add_test(tc, output_clamps_in_64_bits);
	tcase_add_test(tc, bias_rounds_half_away_and_clamps);
	tcase_add_test(tc, activation_ranges);
	tcase_add_test(tc, add_fits_int32_and_tracks_reference);
	tcase_add_test(tc, quantize_rounds_half_even_and_saturates);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return nq_test_run(suite());
}
