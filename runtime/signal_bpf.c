// SPDX-License-Identifier: MIT
/*
 * The bpf signal source: a client of the pinned pressure monitor
 * (runtime/monitor.h), subscribed to the process's memory cgroup and,
 * optionally, to evictions of the model file and machine-wide reclaim.
 * Events carry the tracepoint's bpf_ktime_get_ns() (CLOCK_MONOTONIC).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "monitor.h"
#include "nq_error.h"
#include "pressure.h"

/*
 * The monitor delivers a whole batch per consume and a record whose
 * callback fails is lost, so events are queued here; when the queue is full
 * a new event is folded into a queued one of the same cause and cgroup.
 */
#define QUEUE	256

struct bpf_src {
	struct nq_monitor *mon;
	unsigned int head, len;
	struct nq_pressure_event q[QUEUE];
	uint64_t recv_ns;
};

static uint32_t cause_of(uint32_t type)
{
	switch (type) {
	case NQ_MON_EV_MEMCG_RECLAIM: return NQ_CAUSE_MEMCG_RECLAIM;
	case NQ_MON_EV_KSWAPD_WAKE: return NQ_CAUSE_KSWAPD;
	case NQ_MON_EV_DIRECT_RECLAIM: return NQ_CAUSE_DIRECT_RECLAIM;
	case NQ_MON_EV_FILE_EVICT: return NQ_CAUSE_FILE_EVICT;
	default: return NQ_CAUSE_NONE;
	}
}

static int on_event(void *ctx, const struct nq_mon_event *mev)
{
	struct bpf_src *b = ctx;
	struct nq_pressure_event ev = {
		.ktime_ns = mev->ktime_ns,
		.recv_ns = b->recv_ns,
		.cgroup_id = mev->cgroup_id,
		.count = mev->count ? mev->count : 1,
		.cause = cause_of(mev->type),
		.flags = NQ_PEV_KERNEL_TIME | (mev->flags & NQ_MON_EVF_GLOBAL ? NQ_PEV_GLOBAL : 0),
	};

	if (ev.cause == NQ_CAUSE_NONE)
		return 0;
	if (b->len < QUEUE) {
		b->q[(b->head + b->len++) % QUEUE] = ev;
		return 0;
	}
	for (unsigned int i = 0; i < QUEUE; i++) {
		struct nq_pressure_event *q = &b->q[(b->head + i) % QUEUE];

		if (q->cause == ev.cause && q->cgroup_id == ev.cgroup_id &&
		    q->flags == ev.flags) {
			q->count += ev.count;
			return 0;
		}
	}
	/* Every slot holds another kind (cannot happen with so few causes): drop. */
	return 0;
}

static int bpf_read(struct nq_signal *s, struct nq_pressure_event *evs, unsigned int max)
{
	struct bpf_src *b = s->priv;
	unsigned int n = 0;
	int err;

	if (b->len < max) {
		b->recv_ns = nq_monotonic_ns();
		err = nq_monitor_consume(b->mon, on_event, b);
		if (err < 0)
			return err;
	}
	while (n < max && b->len) {
		evs[n++] = b->q[b->head];
		b->head = (b->head + 1) % QUEUE;
		b->len--;
	}
	return n;
}

static void bpf_close(struct nq_signal *s)
{
	struct bpf_src *b = s->priv;

	nq_monitor_close(b->mon);
	free(b);
}

static int bpf_check(struct nq_signal *s)
{
	struct bpf_src *b = s->priv;

	return nq_monitor_check(b->mon);
}

/* The cgroup's directory is gone: drop our bit from its entry in the maps. */
static void bpf_cgroup_gone(struct nq_signal *s)
{
	struct bpf_src *b = s->priv;

	if (s->cgroup_id && nq_monitor_unwatch_cgroup_id(b->mon, s->cgroup_id))
		nq_clear_error();	/* not watched (any more): nothing to drop */
}

static const struct nq_signal_ops bpf_ops = {
	.read = bpf_read,
	.close = bpf_close,
	.check = bpf_check,
	.cgroup_gone = bpf_cgroup_gone,
};

int nq_signal_open_bpf(struct nq_signal *s, const struct nq_signal_opts *o)
{
	const char *pin = o->pin_dir ? o->pin_dir : NQ_MONITOR_PIN_DIR;
	uint64_t interval = o->min_interval_ns ? o->min_interval_ns : NQ_MONITOR_DEFAULT_INTERVAL_NS;
	struct bpf_src *b;
	int err;

	if (access(pin, F_OK))
		return nq_fail(-ENOENT, "monitor not loaded (%s missing; run `nestquant monitor "
				"load`)", pin);
	if (!s->cgroup[0])
		return nq_fail(-ENOENT, "no memory cgroup to watch (no memory controller "
				"found for this process)");
	b = calloc(1, sizeof(*b));
	if (!b)
		return nq_fail(-ENOMEM, "bpf: out of memory");
	err = nq_monitor_open(pin, o->global ? NQ_MONITOR_GLOBAL : 0, &b->mon);
	if (err)
		goto err_free;
	/* A reopen after the cgroup was removed still gets file and machine-wide events. */
	if (!s->cgroup_gone) {
		err = nq_monitor_watch_cgroup(b->mon, s->cgroup, interval);
		if (err)
			goto err_close;
	}
	if (o->model_path) {
		err = nq_monitor_watch_file(b->mon, o->model_path, interval);
		if (err)
			goto err_close;
	}
	s->ops = &bpf_ops;
	s->src_fd = nq_monitor_fd(b->mon);
	s->priv = b;
	if (snprintf(s->detail, sizeof(s->detail), "monitor %s, client slot %d, cgroup %s%s%s%s",
		     pin, nq_monitor_slot(b->mon), s->cgroup, o->model_path ? ", file " : "",
		     o->model_path ? o->model_path : "",
		     o->global ? ", machine-wide reclaim" : "") >= (int)sizeof(s->detail))
		s->detail[sizeof(s->detail) - 1] = '\0';	/* long paths: cut */
	return 0;

err_close:
	nq_monitor_close(b->mon);
err_free:
	free(b);
	return err;
}
