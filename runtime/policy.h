/* SPDX-License-Identifier: MIT */
/*
 * When to switch levels (internal): the policy, and the controller that
 * feeds it from a signal source and calls the runtime's switch.
 *
 * Levels are numbered as in nestquant.h: 0 is the lowest precision (always
 * resident), nlevels-1 the full one.  "Down" releases memory.
 *
 * The policy is pure logic on an injected clock (CLOCK_MONOTONIC ns):
 *
 *  - DOWN at reclaim onset in our cgroup (or any relevant pressure event),
 *    or when usage is above the high watermark.  (The controller passes the
 *    working set as usage: memory.current / usage_in_bytes minus the
 *    inactive file cache, which the kernel reclaims first.)  Pressure that happened
 *    before the previous switch finished is attributed to the old state and
 *    does not cause another step.
 *  - UP only after pressure has been absent for hold_ns AND usage plus the
 *    bytes the upper level needs stays at or below the low watermark.
 *  - Graded: one level per decision (step=one), or as far as the byte
 *    budget allows (step=budget: down until usage would fall to the low
 *    watermark, up while it stays below it).
 *  - Never two switches within min_interval_ns (a purge by nestquant.ko is
 *    the exception: those planes are already gone).  A down that had to
 *    wait is taken when the interval expires (nq_policy_deadline()).
 *  - While a switch is in flight (decided, not yet reported done) no other
 *    decision is made.
 *
 * Every function returns 0 / a count or a negative errno with the reason in
 * nq_last_error(); nothing here prints.
 */
#ifndef NQ_RUNTIME_POLICY_H
#define NQ_RUNTIME_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pressure.h"

#define NQ_POLICY_MAX_LEVELS	8
#define NQ_POLICY_UNLIMITED	UINT64_MAX

enum nq_policy_step {
	NQ_POLICY_STEP_ONE = 0,
	NQ_POLICY_STEP_BUDGET = 1,
};

/*
 * Configuration: a policy file holds key=value lines ('#' comments):
 *
 *   high = 90%            usage above this (of the limit, or bytes: 200M) -> down
 *   low = 75%             up only if usage + the upper level's bytes <= this
 *   hold = 2s             pressure-free time before going up (ns/us/ms/s; bare = ms)
 *   min_interval = 200ms  least time between two switches
 *   step = one|budget     graded stepping
 *   global = 0|1          also react to machine-wide kswapd / direct reclaim
 *   sample = 100ms        how often the controller reads usage (0: only on events)
 *   psi_some = 150ms      PSI trigger: "some" stall per window (0: off)
 *   psi_full = 0          PSI trigger: "full" stall per window (0: off)
 *   psi_window = 1s       PSI window (unprivileged: a multiple of 2 s)
 *   signal = auto         bpf|kmod|psi|auto|none ($NQ_SIGNAL overrides)
 *   rt_priority = 1       SCHED_FIFO priority of the switching thread, where
 *                         allowed (CAP_SYS_NICE or RLIMIT_RTPRIO); 0: normal.
 *                         Raised to one above the thread that enables
 *                         autoswitch when that one is SCHED_FIFO itself
 */
struct nq_policy_cfg {
	uint64_t high_bytes, low_bytes;		/* absolute, when non-zero */
	unsigned int high_permille, low_permille;	/* of the limit, otherwise */
	uint64_t hold_ns;
	uint64_t min_interval_ns;
	uint64_t sample_ns;
	enum nq_policy_step step;
	bool global;
	uint64_t psi_some_ns, psi_full_ns, psi_window_ns;
	char signal[16];			/* "" = not set */
	unsigned int rt_priority;		/* 0: SCHED_OTHER */
};

void nq_policy_cfg_default(struct nq_policy_cfg *cfg);
/* Apply key=value text over cfg; -EINVAL naming the line and key. */
int nq_policy_cfg_parse(struct nq_policy_cfg *cfg, const char *text);
int nq_policy_cfg_load(struct nq_policy_cfg *cfg, const char *path);

/* "64M", "1G", "4096", "1.5G" (K/M/G/T = 1024^n; optional trailing B/iB). */
int nq_parse_bytes(const char *s, uint64_t *bytes);
/* "2s", "200ms", "500us", "1000ns"; a bare number is milliseconds. */
int nq_parse_duration(const char *s, uint64_t *ns);

struct nq_policy_decision {
	uint64_t seq;			/* 1, 2, ... */
	unsigned int from, to;
	uint32_t cause;			/* enum nq_pressure_cause */
	uint32_t event_flags;		/* NQ_PEV_* of the triggering event */
	uint64_t event_ns;		/* triggering event's time (kernel stamp if any) */
	uint64_t decided_ns;
	uint64_t usage, limit;		/* at decision time; NQ_POLICY_UNLIMITED: none */
	/* Filled by the controller for the log (0: not measured). */
	uint64_t woke_ns;		/* its thread woke up for the triggering event */
	uint64_t wait_ns;		/* the switch waited for inferences */
};

struct nq_policy {
	struct nq_policy_cfg cfg;
	unsigned int nlevels, level, max_level;
	uint64_t level_bytes[NQ_POLICY_MAX_LEVELS];
	uint64_t cgroup_id;
	uint64_t limit, high, low;

	uint64_t seq;
	bool switched, switching;
	uint64_t last_switch_ns;	/* decision time of the last switch */
	uint64_t settled_ns;		/* when it finished */
	uint64_t last_pressure_ns;

	bool pending;			/* a down waits for min_interval */
	uint32_t pending_cause, pending_flags;
	uint64_t pending_event_ns;
};

/*
 * level_bytes[i]: bytes resident with level i in force (non-decreasing;
 * all zero when unknown: then only the watermark on usage counts).
 * cgroup_id: events attributed to another cgroup are ignored (0: accept
 * all).  limit: the cgroup's limit (NQ_POLICY_UNLIMITED: none; the
 * watermarks then only apply when given in bytes).
 */
int nq_policy_init(struct nq_policy *p, const struct nq_policy_cfg *cfg, unsigned int nlevels,
		   const uint64_t *level_bytes, unsigned int level, uint64_t cgroup_id,
		   uint64_t limit, uint64_t now_ns);

void nq_policy_set_limit(struct nq_policy *p, uint64_t limit);

/* Highest level the policy may choose (e.g. what the model file has). */
void nq_policy_set_max_level(struct nq_policy *p, unsigned int max_level);

/*
 * Feed one pressure event, with the usage sampled now (NQ_POLICY_UNLIMITED
 * when unknown).  Returns 1 and fills *d when the level must change, 0
 * when not (ignored, absorbed, deferred by min_interval, or already at 0).
 */
int nq_policy_event(struct nq_policy *p, const struct nq_pressure_event *ev, uint64_t usage,
		    uint64_t now_ns, struct nq_policy_decision *d);

/* Periodic / deadline check: high watermark, deferred downs, going up. */
int nq_policy_tick(struct nq_policy *p, uint64_t usage, uint64_t now_ns,
		   struct nq_policy_decision *d);

/* The decided switch finished (or failed) and `level` is now in force. */
void nq_policy_done(struct nq_policy *p, unsigned int level, uint64_t now_ns);

/* Next time nq_policy_tick could decide without a new event; 0: none. */
uint64_t nq_policy_deadline(const struct nq_policy *p);

/*
 * One JSON line (with '\n') describing a decision and its outcome: err 0
 * and done_ns/bytes_released when the switch finished, or the negative
 * errno the switch failed with.  Returns its length, -ENOSPC if len is short.
 */
int nq_policy_format(char *buf, size_t len, const struct nq_policy_decision *d,
		     const char *source, uint64_t done_ns, uint64_t bytes_released, int err);

/* ---- the controller ------------------------------------------------------ */

/*
 * Called on a decision.  Return 0 when `level` is in force on return
 * (nq_controller_report_released() may be called from inside to give the
 * bytes), NQ_SWITCH_PENDING when it continues asynchronously (then call
 * nq_controller_switch_done() when it finishes), or a negative errno.
 */
typedef int (*nq_switch_fn)(void *ctx, unsigned int level);
#define NQ_SWITCH_PENDING	1

struct nq_controller_opts {
	/* NULL: from the environment ($NQ_SIGNAL, $NQ_CGROUP, $NQ_POLICY, $NQ_POLICY_LOG). */
	const char *signal;		/* "auto" when neither given */
	const char *cgroup;		/* memory cgroup dir; else the process's own */
	const char *policy_file;	/* else the defaults */
	const char *log_path;		/* JSON lines appended here, unless log_fd > 0 */
	int log_fd;			/* > 0: log here (the caller keeps it open) */
	const char *psi_path;		/* else $NQ_PSI_PATH, else as signal.h says */
	const char *pin_dir;		/* else $NQ_MONITOR_PIN_DIR */
	const char *model_path;		/* bpf: watch evictions of this file */
	int kmod_region_fd;		/* kmod: the model's nestquant.ko region (<= 0: none) */

	unsigned int nlevels;		/* 1..NQ_POLICY_MAX_LEVELS */
	const uint64_t *level_bytes;	/* NULL: unknown */
	unsigned int level;		/* level in force now */
	nq_switch_fn switch_to;
	void *ctx;
};

struct nq_controller;

/*
 * Read the configuration, open the signal source (a source that fails to
 * open degrades to "none" only under auto; an explicit --signal that fails
 * is an error), set up the policy and a timer, and log a JSON "start" line
 * naming the source and why better ones were unavailable.
 */
int nq_controller_create(const struct nq_controller_opts *opts, struct nq_controller **out);

/* One fd (epoll) that is readable when nq_controller_dispatch has work. */
int nq_controller_fd(const struct nq_controller *c);

/* Handle what is ready, without blocking; returns decisions taken. */
int nq_controller_dispatch(struct nq_controller *c);

/* Wait up to timeout_ms (-1: forever) for work, then dispatch. */
int nq_controller_run(struct nq_controller *c, int timeout_ms);

/* An asynchronous switch finished: `level` in force, bytes released (or 0). */
int nq_controller_switch_done(struct nq_controller *c, unsigned int level,
			      uint64_t bytes_released);
/* From inside a synchronous switch_to: the bytes the switch released. */
void nq_controller_report_released(struct nq_controller *c, uint64_t bytes);
/* ... and how long it waited for running inferences (the log's wait_ns). */
void nq_controller_report_wait(struct nq_controller *c, uint64_t wait_ns);

const char *nq_controller_source(const struct nq_controller *c);	/* "bpf" ... */
const char *nq_controller_selection(const struct nq_controller *c);
const struct nq_policy *nq_controller_policy(const struct nq_controller *c);

void nq_controller_destroy(struct nq_controller *c);

#endif
