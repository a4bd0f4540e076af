// SPDX-License-Identifier: MIT
/*
 * The switching policy, driven with synthetic event sequences on a fake
 * clock: down on reclaim onset, no oscillation inside the minimum interval,
 * up only after the hold time and under the low watermark, graded steps,
 * events of other cgroups ignored; and the policy file / log line formats.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cgroup.h"

#include "nq_error.h"
#include "nq_test.h"
#include "policy.h"

#define MS	1000000ull
#define MiB	(1024ull * 1024)
#define CG	4242ull		/* our cgroup's id */

static struct nq_policy_cfg cfg(void)
{
	struct nq_policy_cfg c;

	nq_policy_cfg_default(&c);
	c.hold_ns = 2000 * MS;
	c.min_interval_ns = 200 * MS;
	return c;
}

static struct nq_pressure_event ev(uint32_t cause, uint64_t t, uint64_t cgroup)
{
	struct nq_pressure_event e = {
		.ktime_ns = t, .recv_ns = t, .cgroup_id = cgroup, .count = 1,
		.cause = cause, .flags = NQ_PEV_KERNEL_TIME,
	};

	return e;
}

/* Two levels, no byte figures, no limit: pure event logic. */
static void two_levels(struct nq_policy *p, const struct nq_policy_cfg *c, uint64_t now)
{
	ck_assert_int_eq(nq_policy_init(p, c, 2, NULL, 1, CG, NQ_POLICY_UNLIMITED, now), 0);
}

START_TEST(test_down_on_memcg_reclaim_onset)
{
	struct nq_policy_cfg c = cfg();
	struct nq_policy p;
	struct nq_policy_decision d;
	struct nq_pressure_event e = ev(NQ_CAUSE_MEMCG_RECLAIM, 5000 * MS, CG);

	two_levels(&p, &c, 1000 * MS);
	ck_assert_int_eq(nq_policy_event(&p, &e, NQ_POLICY_UNLIMITED, 5000 * MS + 40000, &d), 1);
	ck_assert_uint_eq(d.from, 1);
	ck_assert_uint_eq(d.to, 0);
	ck_assert_uint_eq(d.cause, NQ_CAUSE_MEMCG_RECLAIM);
	ck_assert_uint_eq(d.event_ns, 5000 * MS);		/* the kernel's stamp */
	ck_assert_uint_eq(d.decided_ns, 5000 * MS + 40000);
	ck_assert_uint_eq(d.seq, 1);
	ck_assert_uint_eq(p.level, 0);
	/* at the lowest level, more pressure changes nothing */
	nq_policy_done(&p, 0, 5001 * MS);
	e.ktime_ns = 6000 * MS;
	ck_assert_int_eq(nq_policy_event(&p, &e, NQ_POLICY_UNLIMITED, 6000 * MS, &d), 0);
}
END_TEST

START_TEST(test_ignores_events_of_other_cgroups)
{
	struct nq_policy_cfg c = cfg();
	struct nq_policy p;
	struct nq_policy_decision d;
	struct nq_pressure_event other = ev(NQ_CAUSE_MEMCG_RECLAIM, 5000 * MS, CG + 1);
	struct nq_pressure_event global = ev(NQ_CAUSE_KSWAPD, 5001 * MS, 99);
	struct nq_pressure_event evict = ev(NQ_CAUSE_FILE_EVICT, 5002 * MS, CG + 7);

	global.flags |= NQ_PEV_GLOBAL;
	two_levels(&p, &c, 0);
	ck_assert_int_eq(nq_policy_event(&p, &other, NQ_POLICY_UNLIMITED, 5000 * MS, &d), 0);
	ck_assert_int_eq(nq_policy_event(&p, &global, NQ_POLICY_UNLIMITED, 5001 * MS, &d), 0);
	ck_assert_uint_eq(p.level, 1);
	/* ignored events do not count as pressure either: up-hold unaffected */
	ck_assert_uint_eq(p.last_pressure_ns, 0);
	/* evictions of our own file count, whichever cgroup evicted them */
	ck_assert_int_eq(nq_policy_event(&p, &evict, NQ_POLICY_UNLIMITED, 5002 * MS, &d), 1);
	ck_assert_uint_eq(d.cause, NQ_CAUSE_FILE_EVICT);

	/* with global=1 machine-wide reclaim is pressure too */
	c.global = true;
	two_levels(&p, &c, 0);
	ck_assert_int_eq(nq_policy_event(&p, &global, NQ_POLICY_UNLIMITED, 5001 * MS, &d), 1);
	ck_assert_uint_eq(d.cause, NQ_CAUSE_KSWAPD);
	/* unattributed events (PSI on /proc/pressure) are accepted */
	two_levels(&p, &c, 0);
	other = ev(NQ_CAUSE_PSI_SOME, 7000 * MS, 0);
	other.flags = 0;
	ck_assert_int_eq(nq_policy_event(&p, &other, NQ_POLICY_UNLIMITED, 7000 * MS, &d), 1);
}
END_TEST

START_TEST(test_no_switch_inside_min_interval)
{
	struct nq_policy_cfg c = cfg();
	struct nq_policy p;
	struct nq_policy_decision d;
	struct nq_pressure_event e = ev(NQ_CAUSE_MEMCG_RECLAIM, 1000 * MS, CG);
	uint64_t t0 = 1000 * MS;

	ck_assert_int_eq(nq_policy_init(&p, &c, 3, NULL, 2, CG, NQ_POLICY_UNLIMITED, 0), 0);
	ck_assert_int_eq(nq_policy_event(&p, &e, NQ_POLICY_UNLIMITED, t0, &d), 1);
	ck_assert_uint_eq(d.to, 1);
	/* while the switch runs: recorded, no decision */
	e.ktime_ns = t0 + 1 * MS;
	ck_assert_int_eq(nq_policy_event(&p, &e, NQ_POLICY_UNLIMITED, t0 + 1 * MS, &d), 0);
	nq_policy_done(&p, 1, t0 + 2 * MS);
	/* fresh pressure after it settled, but inside the minimum interval */
	e.ktime_ns = t0 + 50 * MS;
	ck_assert_int_eq(nq_policy_event(&p, &e, NQ_POLICY_UNLIMITED, t0 + 50 * MS, &d), 0);
	ck_assert(p.pending);
	ck_assert_uint_eq(nq_policy_deadline(&p), t0 + 200 * MS);
	ck_assert_int_eq(nq_policy_tick(&p, NQ_POLICY_UNLIMITED, t0 + 199 * MS, &d), 0);
	ck_assert_uint_eq(p.level, 1);
	/* at the deadline the deferred step is taken, with the event's own time */
	ck_assert_int_eq(nq_policy_tick(&p, NQ_POLICY_UNLIMITED, t0 + 200 * MS, &d), 1);
	ck_assert_uint_eq(d.from, 1);
	ck_assert_uint_eq(d.to, 0);
	ck_assert_uint_eq(d.event_ns, t0 + 50 * MS);
	ck_assert_uint_eq(d.seq, 2);
}
END_TEST

START_TEST(test_pressure_before_settle_is_absorbed)
{
	struct nq_policy_cfg c = cfg();
	struct nq_policy p;
	struct nq_policy_decision d;
	struct nq_pressure_event e = ev(NQ_CAUSE_MEMCG_RECLAIM, 1000 * MS, CG);

	ck_assert_int_eq(nq_policy_init(&p, &c, 3, NULL, 2, CG, NQ_POLICY_UNLIMITED, 0), 0);
	ck_assert_int_eq(nq_policy_event(&p, &e, NQ_POLICY_UNLIMITED, 1000 * MS, &d), 1);
	nq_policy_done(&p, 1, 1005 * MS);
	/* a burst from before the release, delivered late (ring buffer batch) */
	e.ktime_ns = 1003 * MS;
	ck_assert_int_eq(nq_policy_event(&p, &e, NQ_POLICY_UNLIMITED, 1006 * MS, &d), 0);
	ck_assert(!p.pending);
	ck_assert_int_eq(nq_policy_tick(&p, NQ_POLICY_UNLIMITED, 1300 * MS, &d), 0);
	ck_assert_uint_eq(p.level, 1);
	/* but it still restarts the hold time */
	ck_assert_uint_eq(p.last_pressure_ns, 1003 * MS);
}
END_TEST

START_TEST(test_up_only_after_hold)
{
	struct nq_policy_cfg c = cfg();
	struct nq_policy p;
	struct nq_policy_decision d;
	struct nq_pressure_event e = ev(NQ_CAUSE_PSI_SOME, 1000 * MS, CG);

	two_levels(&p, &c, 0);
	ck_assert_int_eq(nq_policy_event(&p, &e, NQ_POLICY_UNLIMITED, 1000 * MS, &d), 1);
	nq_policy_done(&p, 0, 1001 * MS);
	ck_assert_uint_eq(nq_policy_deadline(&p), 3000 * MS);
	ck_assert_int_eq(nq_policy_tick(&p, NQ_POLICY_UNLIMITED, 2999 * MS, &d), 0);
	/* pressure again at 2.5 s: the hold restarts from there */
	e.ktime_ns = 2500 * MS;
	ck_assert_int_eq(nq_policy_event(&p, &e, NQ_POLICY_UNLIMITED, 2500 * MS, &d), 0);
	ck_assert_int_eq(nq_policy_tick(&p, NQ_POLICY_UNLIMITED, 3000 * MS, &d), 0);
	ck_assert_uint_eq(nq_policy_deadline(&p), 4500 * MS);
	ck_assert_int_eq(nq_policy_tick(&p, NQ_POLICY_UNLIMITED, 4500 * MS, &d), 1);
	ck_assert_uint_eq(d.from, 0);
	ck_assert_uint_eq(d.to, 1);
	ck_assert_uint_eq(d.cause, NQ_CAUSE_HOLD_EXPIRED);
	ck_assert_uint_eq(d.event_ns, 2500 * MS);	/* the last pressure seen */
	nq_policy_done(&p, 1, 4501 * MS);
	ck_assert_uint_eq(nq_policy_deadline(&p), 0);	/* at the top: nothing to wait for */
}
END_TEST

START_TEST(test_up_needs_room_under_low_watermark)
{
	struct nq_policy_cfg c = cfg();
	struct nq_policy p;
	struct nq_policy_decision d;
	uint64_t bytes[2] = { 10 * MiB, 30 * MiB };

	/* limit 100 MiB: low = 75 MiB, high = 90 MiB; level 1 needs 20 MiB more */
	ck_assert_int_eq(nq_policy_init(&p, &c, 2, bytes, 0, CG, 100 * MiB, 0), 0);
	ck_assert_uint_eq(p.low, 75 * MiB);
	ck_assert_uint_eq(p.high, 90 * MiB);
	ck_assert_int_eq(nq_policy_tick(&p, 60 * MiB, 5000 * MS, &d), 0);	/* 80 > 75 */
	ck_assert_int_eq(nq_policy_tick(&p, NQ_POLICY_UNLIMITED, 5000 * MS, &d), 0); /* unknown */
	ck_assert_int_eq(nq_policy_tick(&p, 55 * MiB, 5000 * MS, &d), 1);	/* 75 <= 75 */
	ck_assert_uint_eq(d.to, 1);
	ck_assert_uint_eq(d.usage, 55 * MiB);
	ck_assert_uint_eq(d.limit, 100 * MiB);
}
END_TEST

START_TEST(test_down_above_high_watermark)
{
	struct nq_policy_cfg c = cfg();
	struct nq_policy p;
	struct nq_policy_decision d;

	ck_assert_int_eq(nq_policy_init(&p, &c, 2, NULL, 1, CG, 100 * MiB, 0), 0);
	ck_assert_int_eq(nq_policy_tick(&p, 90 * MiB, 100 * MS, &d), 0);	/* at, not above */
	ck_assert_int_eq(nq_policy_tick(&p, 90 * MiB + 1, 100 * MS, &d), 1);
	ck_assert_uint_eq(d.cause, NQ_CAUSE_HIGH_WATERMARK);
	ck_assert_uint_eq(d.to, 0);
	ck_assert_uint_eq(d.event_ns, 100 * MS);
	/* bytes instead of a percentage; the limit may change under us */
	c.high_bytes = 50 * MiB;
	c.low_bytes = 40 * MiB;
	ck_assert_int_eq(nq_policy_init(&p, &c, 2, NULL, 1, CG, NQ_POLICY_UNLIMITED, 0), 0);
	ck_assert_uint_eq(p.high, 50 * MiB);
	ck_assert_int_eq(nq_policy_tick(&p, 51 * MiB, 100 * MS, &d), 1);
	c = cfg();
	ck_assert_int_eq(nq_policy_init(&p, &c, 2, NULL, 1, CG, NQ_POLICY_UNLIMITED, 0), 0);
	ck_assert_int_eq(nq_policy_tick(&p, 1000 * MiB, 100 * MS, &d), 0);	/* no limit */
	nq_policy_set_limit(&p, 200 * MiB);
	ck_assert_uint_eq(p.high, 180 * MiB);
	ck_assert_int_eq(nq_policy_tick(&p, 190 * MiB, 100 * MS, &d), 1);
}
END_TEST

START_TEST(test_graded_one_step_at_a_time)
{
	struct nq_policy_cfg c = cfg();
	struct nq_policy p;
	struct nq_policy_decision d;
	unsigned int expect = 3;
	uint64_t t = 1000 * MS;

	ck_assert_int_eq(nq_policy_init(&p, &c, 4, NULL, 3, CG, NQ_POLICY_UNLIMITED, 0), 0);
	/* sustained pressure: one step per minimum interval, down to 0, then nothing */
	for (int i = 0; i < 6; i++, t += 250 * MS) {
		struct nq_pressure_event e = ev(NQ_CAUSE_MEMCG_RECLAIM, t, CG);
		int r = nq_policy_event(&p, &e, NQ_POLICY_UNLIMITED, t, &d);

		if (expect == 0) {
			ck_assert_int_eq(r, 0);
			continue;
		}
		ck_assert_int_eq(r, 1);
		ck_assert_uint_eq(d.from, expect);
		ck_assert_uint_eq(d.to, expect - 1);
		expect--;
		nq_policy_done(&p, d.to, t + 1 * MS);
	}
	ck_assert_uint_eq(p.seq, 3);
	/* and back up one level per hold time */
	t += 2000 * MS;
	for (unsigned int want = 1; want <= 3; want++) {
		ck_assert_int_eq(nq_policy_tick(&p, NQ_POLICY_UNLIMITED, t, &d), 1);
		ck_assert_uint_eq(d.to, want);
		nq_policy_done(&p, want, t + 1 * MS);
		ck_assert_int_eq(nq_policy_tick(&p, NQ_POLICY_UNLIMITED, t + 100 * MS, &d), 0);
		t += 200 * MS;
	}
}
END_TEST

START_TEST(test_budget_steps_as_far_as_bytes_allow)
{
	struct nq_policy_cfg c = cfg();
	struct nq_policy p;
	struct nq_policy_decision d;
	struct nq_pressure_event e = ev(NQ_CAUSE_MEMCG_RECLAIM, 1000 * MS, CG);
	uint64_t bytes[4] = { 10 * MiB, 20 * MiB, 30 * MiB, 40 * MiB };

	c.step = NQ_POLICY_STEP_BUDGET;
	/* 82 MiB used: dropping one level (10 MiB) reaches 72 <= 75 */
	ck_assert_int_eq(nq_policy_init(&p, &c, 4, bytes, 3, CG, 100 * MiB, 0), 0);
	ck_assert_int_eq(nq_policy_event(&p, &e, 82 * MiB, 1000 * MS, &d), 1);
	ck_assert_uint_eq(d.to, 2);
	/* 98 MiB used: 88, 78, 68 -> all the way to 0 */
	ck_assert_int_eq(nq_policy_init(&p, &c, 4, bytes, 3, CG, 100 * MiB, 0), 0);
	ck_assert_int_eq(nq_policy_event(&p, &e, 98 * MiB, 1000 * MS, &d), 1);
	ck_assert_uint_eq(d.to, 0);
	/* up: 40 MiB used at level 0 -> 70 MiB at level 3 fits under 75 */
	ck_assert_int_eq(nq_policy_init(&p, &c, 4, bytes, 0, CG, 100 * MiB, 0), 0);
	ck_assert_int_eq(nq_policy_tick(&p, 40 * MiB, 3000 * MS, &d), 1);
	ck_assert_uint_eq(d.to, 3);
	/* 52 MiB: level 2 = 72 fits, level 3 = 82 does not */
	ck_assert_int_eq(nq_policy_init(&p, &c, 4, bytes, 0, CG, 100 * MiB, 0), 0);
	ck_assert_int_eq(nq_policy_tick(&p, 52 * MiB, 3000 * MS, &d), 1);
	ck_assert_uint_eq(d.to, 2);
	/* a cap on the levels the model has */
	ck_assert_int_eq(nq_policy_init(&p, &c, 4, bytes, 0, CG, 100 * MiB, 0), 0);
	nq_policy_set_max_level(&p, 1);
	ck_assert_int_eq(nq_policy_tick(&p, 10 * MiB, 3000 * MS, &d), 1);
	ck_assert_uint_eq(d.to, 1);
}
END_TEST

START_TEST(test_kmod_purge_ignores_min_interval)
{
	struct nq_policy_cfg c = cfg();
	struct nq_policy p;
	struct nq_policy_decision d;
	struct nq_pressure_event e = ev(NQ_CAUSE_MEMCG_RECLAIM, 1000 * MS, CG);

	ck_assert_int_eq(nq_policy_init(&p, &c, 3, NULL, 2, CG, NQ_POLICY_UNLIMITED, 0), 0);
	ck_assert_int_eq(nq_policy_event(&p, &e, NQ_POLICY_UNLIMITED, 1000 * MS, &d), 1);
	nq_policy_done(&p, 1, 1001 * MS);
	e = ev(NQ_CAUSE_KMOD_PURGE, 1010 * MS, 0);
	ck_assert_int_eq(nq_policy_event(&p, &e, NQ_POLICY_UNLIMITED, 1010 * MS, &d), 1);
	ck_assert_uint_eq(d.to, 0);
}
END_TEST

START_TEST(test_failed_switch_keeps_old_level)
{
	struct nq_policy_cfg c = cfg();
	struct nq_policy p;
	struct nq_policy_decision d;
	struct nq_pressure_event e = ev(NQ_CAUSE_MEMCG_RECLAIM, 1000 * MS, CG);

	two_levels(&p, &c, 0);
	ck_assert_int_eq(nq_policy_event(&p, &e, NQ_POLICY_UNLIMITED, 1000 * MS, &d), 1);
	nq_policy_done(&p, 1, 1001 * MS);	/* the runtime could not switch */
	ck_assert_uint_eq(p.level, 1);
	e.ktime_ns = 1300 * MS;
	ck_assert_int_eq(nq_policy_event(&p, &e, NQ_POLICY_UNLIMITED, 1300 * MS, &d), 1);
	ck_assert_uint_eq(d.from, 1);
}
END_TEST

START_TEST(test_init_rejects_bad_models)
{
	struct nq_policy p;
	uint64_t shrinking[2] = { 20, 10 };

	ck_assert_int_eq(nq_policy_init(&p, NULL, 0, NULL, 0, 0, 0, 0), -EINVAL);
	ck_assert_int_eq(nq_policy_init(&p, NULL, 9, NULL, 0, 0, 0, 0), -EINVAL);
	ck_assert_int_eq(nq_policy_init(&p, NULL, 2, NULL, 2, 0, 0, 0), -EINVAL);
	ck_assert_int_eq(nq_policy_init(&p, NULL, 2, shrinking, 1, 0, 0, 0), -EINVAL);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "fewer bytes"));
}
END_TEST

START_TEST(test_parse_bytes_and_durations)
{
	uint64_t v;

	ck_assert_int_eq(nq_parse_bytes("64M", &v), 0);
	ck_assert_uint_eq(v, 64 * MiB);
	ck_assert_int_eq(nq_parse_bytes("1G", &v), 0);
	ck_assert_uint_eq(v, 1024 * MiB);
	ck_assert_int_eq(nq_parse_bytes("1.5K", &v), 0);
	ck_assert_uint_eq(v, 1536);
	ck_assert_int_eq(nq_parse_bytes("4096", &v), 0);
	ck_assert_uint_eq(v, 4096);
	ck_assert_int_eq(nq_parse_bytes("2MiB", &v), 0);
	ck_assert_uint_eq(v, 2 * MiB);
	ck_assert_int_eq(nq_parse_bytes("12X", &v), -EINVAL);
	ck_assert_int_eq(nq_parse_bytes("", &v), -EINVAL);
	ck_assert_int_eq(nq_parse_bytes("-1", &v), -EINVAL);
	ck_assert_int_eq(nq_parse_bytes("0.5", &v), -EINVAL);
	ck_assert_int_eq(nq_parse_bytes("99999999T", &v), -ERANGE);

	ck_assert_int_eq(nq_parse_duration("2s", &v), 0);
	ck_assert_uint_eq(v, 2000 * MS);
	ck_assert_int_eq(nq_parse_duration("200ms", &v), 0);
	ck_assert_uint_eq(v, 200 * MS);
	ck_assert_int_eq(nq_parse_duration("150", &v), 0);		/* bare = ms */
	ck_assert_uint_eq(v, 150 * MS);
	ck_assert_int_eq(nq_parse_duration("500us", &v), 0);
	ck_assert_uint_eq(v, 500000);
	ck_assert_int_eq(nq_parse_duration("1.5s", &v), 0);
	ck_assert_uint_eq(v, 1500 * MS);
	ck_assert_int_eq(nq_parse_duration("3h", &v), -EINVAL);
}
END_TEST

START_TEST(test_policy_file)
{
	struct nq_policy_cfg c;
	char path[4200];
	FILE *f;

	nq_policy_cfg_default(&c);
	ck_assert_int_eq(nq_policy_cfg_parse(&c,
		"# switching policy\n"
		"high = 85%\n"
		"low=60%   # hysteresis\n"
		"\n"
		"hold = 3s\nmin_interval=50ms\nstep=budget\nglobal=1\nsample=20ms\n"
		"psi_some=100ms\npsi_full=50ms\npsi_window=2s\nsignal=psi\n"), 0);
	ck_assert_uint_eq(c.high_permille, 850);
	ck_assert_uint_eq(c.low_permille, 600);
	ck_assert_uint_eq(c.hold_ns, 3000 * MS);
	ck_assert_uint_eq(c.min_interval_ns, 50 * MS);
	ck_assert_int_eq(c.step, NQ_POLICY_STEP_BUDGET);
	ck_assert(c.global);
	ck_assert_uint_eq(c.sample_ns, 20 * MS);
	ck_assert_uint_eq(c.psi_some_ns, 100 * MS);
	ck_assert_uint_eq(c.psi_full_ns, 50 * MS);
	ck_assert_uint_eq(c.psi_window_ns, 2000 * MS);
	ck_assert_str_eq(c.signal, "psi");
	ck_assert_int_eq(nq_policy_cfg_parse(&c, "high=200M\nlow=150M\n"), 0);
	ck_assert_uint_eq(c.high_bytes, 200 * MiB);
	ck_assert_uint_eq(c.high_permille, 0);

	nq_policy_cfg_default(&c);
	ck_assert_int_eq(nq_policy_cfg_parse(&c, "high=90%\nhigher=1\n"), -EINVAL);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "line 2"));
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "higher"));
	ck_assert_int_eq(nq_policy_cfg_parse(&c, "hold\n"), -EINVAL);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "not key=value"));
	ck_assert_int_eq(nq_policy_cfg_parse(&c, "high=150%\n"), -EINVAL);
	ck_assert_int_eq(nq_policy_cfg_parse(&c, "step=sideways\n"), -EINVAL);
	ck_assert_int_eq(nq_policy_cfg_parse(&c, "signal=carrier-pigeon\n"), -EINVAL);
	/* The switching thread: SCHED_FIFO 1 unless told otherwise, 0 = normal. */
	nq_policy_cfg_default(&c);
	ck_assert_uint_eq(c.rt_priority, 1);
	ck_assert_int_eq(nq_policy_cfg_parse(&c, "rt_priority=0\n"), 0);
	ck_assert_uint_eq(c.rt_priority, 0);
	ck_assert_int_eq(nq_policy_cfg_parse(&c, "rt_priority=100\n"), -EINVAL);
	ck_assert_int_eq(nq_policy_cfg_parse(&c, "rt_priority=high\n"), -EINVAL);
	nq_policy_cfg_default(&c);
	ck_assert_int_eq(nq_policy_cfg_parse(&c, "high=50%\nlow=60%\n"), -EINVAL);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "low watermark above"));
	nq_policy_cfg_default(&c);
	ck_assert_int_eq(nq_policy_cfg_parse(&c, "psi_window=100ms\n"), -EINVAL);

	snprintf(path, sizeof(path), "%s/p.conf", nq_test_tmpdir());
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs("hold=5s\nmin_interval=oops\n", f);
	fclose(f);
	nq_policy_cfg_default(&c);
	ck_assert_int_eq(nq_policy_cfg_load(&c, path), -EINVAL);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "p.conf"));
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "line 2"));
	ck_assert_int_eq(nq_policy_cfg_load(&c, "/nonexistent/p.conf"), -ENOENT);
}
END_TEST

START_TEST(test_decision_log_line)
{
	struct nq_policy_decision d = {
		.seq = 7, .from = 1, .to = 0, .cause = NQ_CAUSE_MEMCG_RECLAIM,
		.event_flags = NQ_PEV_KERNEL_TIME, .event_ns = 1000, .decided_ns = 1500,
		.usage = 123, .limit = NQ_POLICY_UNLIMITED,
	};
	char buf[1024];
	int n;

	n = nq_policy_format(buf, sizeof(buf), &d, "bpf", 2500, 4096, 0);
	ck_assert_int_eq(n, (int)strlen(buf));
	ck_assert_int_eq(buf[n - 1], '\n');
	ck_assert_ptr_nonnull(strstr(buf, "\"seq\":7,"));
	ck_assert_ptr_nonnull(strstr(buf, "\"source\":\"bpf\""));
	ck_assert_ptr_nonnull(strstr(buf, "\"cause\":\"memcg_reclaim\""));
	ck_assert_ptr_nonnull(strstr(buf, "\"direction\":\"down\",\"from\":1,\"to\":0"));
	ck_assert_ptr_nonnull(strstr(buf, "\"event_ns\":1000,\"kernel_time\":true"));
	ck_assert_ptr_nonnull(strstr(buf, "\"decided_ns\":1500"));
	ck_assert_ptr_nonnull(strstr(buf, "\"limit\":null"));
	ck_assert_ptr_nonnull(strstr(buf, "\"done_ns\":2500,\"switch_ns\":1000"));
	ck_assert_ptr_nonnull(strstr(buf, "\"onset_to_done_ns\":1500,\"bytes_released\":4096}"));

	/* With the controller's timings: where the onset-to-done time went. */
	d.woke_ns = 1200;
	d.wait_ns = 300;
	n = nq_policy_format(buf, sizeof(buf), &d, "bpf", 2500, 4096, 0);
	ck_assert_int_gt(n, 0);
	ck_assert_ptr_nonnull(strstr(buf, "\"bytes_released\":4096,\"woke_ns\":1200,\"wait_ns\":300}"));
	d.woke_ns = d.wait_ns = 0;

	d.limit = 1 << 20;
	n = nq_policy_format(buf, sizeof(buf), &d, "psi", 0, 0, -EBUSY);
	ck_assert_int_gt(n, 0);
	ck_assert_ptr_nonnull(strstr(buf, "\"limit\":1048576"));
	ck_assert_ptr_nonnull(strstr(buf, "\"error\":-16,\"error_name\":\"EBUSY\"}"));
	ck_assert_ptr_null(strstr(buf, "done_ns"));
	ck_assert_int_eq(nq_policy_format(buf, 40, &d, "psi", 0, 0, 0), -ENOSPC);
}
END_TEST

struct fake_runtime {
	unsigned int calls, level;
	int ret;
};

static int fake_switch(void *ctx, unsigned int level)
{
	struct fake_runtime *rt = ctx;

	rt->calls++;
	rt->level = level;
	return rt->ret;
}

/*
 * The controller with the "none" source on this process's own memory
 * cgroup: a 4 KiB high watermark is exceeded at the first usage sample, so
 * the timer alone must produce one down decision, reported through the
 * asynchronous completion, logged as one JSON line after the start line.
 */
START_TEST(test_controller_switches_on_watermark_and_logs)
{
	char dir[PATH_MAX], pol[PATH_MAX + 16], log[4096] = "";
	struct fake_runtime rt = { .ret = NQ_SWITCH_PENDING };
	struct nq_controller *c;
	struct nq_controller_opts o = { 0 };
	int version, pipefd[2], n = 0;
	ssize_t got;
	FILE *f;

	if (nq_cgroup_self(dir, sizeof(dir), &version))
		NQ_SKIP("no memory cgroup for this process: %s", nq_last_error());
	snprintf(pol, sizeof(pol), "%s/ctl.policy", nq_test_tmpdir());
	f = fopen(pol, "w");
	ck_assert_ptr_nonnull(f);
	fputs("high=4K\nlow=4K\nsample=10ms\nmin_interval=10ms\nhold=50ms\n", f);
	fclose(f);
	ck_assert_int_eq(pipe2(pipefd, O_NONBLOCK), 0);
	o.signal = "none";
	o.cgroup = dir;
	o.policy_file = pol;
	o.log_fd = pipefd[1];
	o.nlevels = 2;
	o.level = 1;
	o.switch_to = fake_switch;
	o.ctx = &rt;
	ck_assert_int_eq(nq_controller_create(&o, &c), 0);
	ck_assert_str_eq(nq_controller_source(c), "none");
	ck_assert_ptr_nonnull(strstr(nq_controller_selection(c), "none: switching on pressure disabled"));
	ck_assert_uint_eq(nq_controller_policy(c)->high, 4096);
	ck_assert_int_eq(nq_controller_switch_done(c, 0, 1), -EINVAL);	/* nothing in flight */
	for (int i = 0; i < 50 && !n; i++)
		n = nq_controller_run(c, 100);
	ck_assert_int_eq(n, 1);
	ck_assert_uint_eq(rt.calls, 1);
	ck_assert_uint_eq(rt.level, 0);
	/* in flight: no second decision, nothing logged yet but the start line */
	for (int i = 0; i < 5; i++)
		ck_assert_int_eq(nq_controller_run(c, 20), 0);
	ck_assert_uint_eq(rt.calls, 1);
	ck_assert_int_eq(nq_controller_switch_done(c, 0, 12345), 0);
	ck_assert_uint_eq(nq_controller_policy(c)->level, 0);
	got = read(pipefd[0], log, sizeof(log) - 1);
	ck_assert_int_gt(got, 0);
	log[got] = '\0';
	ck_assert_ptr_nonnull(strstr(log, "{\"event\":\"start\""));
	ck_assert_ptr_nonnull(strstr(log, "\"source\":\"none\""));
	ck_assert_ptr_nonnull(strstr(log, "\"cause\":\"high_watermark\",\"direction\":\"down\","
				      "\"from\":1,\"to\":0"));
	ck_assert_ptr_nonnull(strstr(log, "\"bytes_released\":12345}\n"));
	nq_controller_destroy(c);
	close(pipefd[0]);
	close(pipefd[1]);
}
END_TEST

/*
 * At part-bit with the hold time over but no room under the low watermark
 * (4 KiB: never), only a usage sample can allow the up, so the controller
 * must wake once per sampling period (50 ms), not spin on a deadline that
 * has passed (the switching thread runs SCHED_FIFO: a spin takes a CPU
 * from the inferences for as long as the pressure lasts).
 */
START_TEST(test_controller_waits_for_room_without_spinning)
{
	char dir[PATH_MAX], pol[PATH_MAX + 16];
	struct fake_runtime rt = { .ret = 0 };
	struct nq_controller *c;
	struct nq_controller_opts o = { 0 };
	uint64_t t0, wakeups = 0;
	int version;
	FILE *f;

	if (nq_cgroup_self(dir, sizeof(dir), &version))
		NQ_SKIP("no memory cgroup for this process: %s", nq_last_error());
	snprintf(pol, sizeof(pol), "%s/wait.policy", nq_test_tmpdir());
	f = fopen(pol, "w");
	ck_assert_ptr_nonnull(f);
	fputs("high=1T\nlow=4K\nsample=50ms\nmin_interval=10ms\nhold=20ms\n", f);
	fclose(f);
	o.signal = "none";
	o.cgroup = dir;
	o.policy_file = pol;
	o.nlevels = 2;
	o.level = 0;
	o.switch_to = fake_switch;
	o.ctx = &rt;
	ck_assert_int_eq(nq_controller_create(&o, &c), 0);
	t0 = nq_monotonic_ns();
	while (nq_monotonic_ns() - t0 < 400 * MS) {
		ck_assert_int_eq(nq_controller_run(c, 100), 0);
		wakeups++;
	}
	/* 400 ms / 50 ms = 8 samples (+ the first deadline and slack) */
	ck_assert_uint_le(wakeups, 12);
	ck_assert_uint_ge(wakeups, 4);
	ck_assert_uint_eq(rt.calls, 0);
	ck_assert_uint_eq(nq_controller_policy(c)->level, 0);
	nq_controller_destroy(c);
}
END_TEST

START_TEST(test_controller_rejects_bad_configuration)
{
	struct nq_controller *c;
	struct nq_controller_opts o = { .signal = "smoke", .nlevels = 2 };

	ck_assert_int_eq(nq_controller_create(&o, &c), -EINVAL);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "unknown signal source 'smoke'"));
	o.signal = "bpf";
	o.pin_dir = "/sys/fs/bpf/nqtest-no-such-monitor";
	ck_assert_int_eq(nq_controller_create(&o, &c), -ENOENT);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "monitor not loaded"));
	o.signal = "none";
	o.policy_file = "/nonexistent.policy";
	ck_assert_int_eq(nq_controller_create(&o, &c), -ENOENT);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "/nonexistent.policy"));
}
END_TEST

static Suite *policy_suite(void)
{
	Suite *s = suite_create("policy");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_down_on_memcg_reclaim_onset);
	tcase_add_test(tc, test_ignores_events_of_other_cgroups);
	tcase_add_test(tc, test_no_switch_inside_min_interval);
	tcase_add_test(tc, test_pressure_before_settle_is_absorbed);
	tcase_add_test(tc, test_up_only_after_hold);
	tcase_add_test(tc, test_up_needs_room_under_low_watermark);
	tcase_add_test(tc, test_down_above_high_watermark);
	tcase_add_test(tc, test_graded_one_step_at_a_time);
	tcase_add_test(tc, test_budget_steps_as_far_as_bytes_allow);
	tcase_add_test(tc, test_kmod_purge_ignores_min_interval);
	tcase_add_test(tc, test_failed_switch_keeps_old_level);
	tcase_add_test(tc, test_init_rejects_bad_models);
	tcase_add_test(tc, test_parse_bytes_and_durations);
	tcase_add_test(tc, test_policy_file);
	tcase_add_test(tc, test_decision_log_line);
	tcase_add_test(tc, test_controller_switches_on_watermark_and_logs);
	tcase_add_test(tc, test_controller_waits_for_room_without_spinning);
	tcase_add_test(tc, test_controller_rejects_bad_configuration);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return nq_test_run(policy_suite());
}
