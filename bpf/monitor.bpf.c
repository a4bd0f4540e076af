// SPDX-License-Identifier: (MIT OR GPL-2.0)
/*
 * The NestQuant pressure monitor: kernel side.
 *
 * Four tracepoints, each a few map lookups and at most one ring-buffer write
 * per subscribed client:
 *
 *   vmscan:mm_vmscan_memcg_reclaim_begin   a memory cgroup hit its limit
 *   vmscan:mm_vmscan_kswapd_wake           the node fell below its low watermark
 *   vmscan:mm_vmscan_direct_reclaim_begin  an allocation is reclaiming itself
 *   filemap:mm_filemap_delete_from_page_cache
 *                                          a page of a watched file is leaving
 *                                          the page cache (our planes evicted)
 *
 * Attribution.  All three vmscan events fire in the context of the task that
 * is allocating, and memcg limit reclaim runs on behalf of that task's memory
 * cgroup or one of its ancestors.  We take the task's memory-controller css
 * (task->cgroups->subsys[memory_cgrp_id]) and walk css->parent until a watched
 * cgroup is found.  That css belongs to whichever hierarchy the memory
 * controller is bound to, so the same code works on cgroup v1 (our machines:
 * memory on /sys/fs/cgroup/memory, v2 mounted without it) and on v2, where
 * bpf_get_current_cgroup_id() would only ever return the v2 cgroup.  The id
 * we report is css->cgroup->kn->id, which user space gets as the inode number
 * of the cgroup directory.
 *
 * Fan-out.  A BPF ring buffer has exactly one consumer position, so two
 * inference processes reading one ring would steal each other's events.  Each
 * client slot therefore owns a ring buffer in the array-of-maps `clients`,
 * and each watched cgroup or file holds a bitmask of subscribed slots.  An
 * event is copied once per subscriber; a full ring drops only that client's
 * copy (counted), never another client's.  Fanning out in user space instead
 * would need a privileged daemon on the latency path.
 *
 * Rate limit.  Per watched cgroup (or file) and event type, at most one
 * record per min_interval_ns; the ones in between are counted and reported as
 * `count` of the next record, so a reclaim storm cannot fill the rings.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "monitor.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct ring {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, NQ_MON_RING_BYTES);
};

/* Slot -> that client's ring buffer; filled by the loader, one ring per slot. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, NQ_MON_MAX_CLIENTS);
	__type(key, __u32);
	__array(values, struct ring);
} clients SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NQ_MON_MAX_CLIENTS);
	__type(key, __u32);
	__type(value, struct nq_mon_client);
} client_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NQ_MON_MAX_CLIENTS);
	__type(key, __u32);
	__type(value, struct nq_mon_client_stat);
} client_stat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NQ_MON_MAX_CGROUPS);
	__type(key, __u64);
	__type(value, struct nq_mon_cgroup_cfg);
} cgroup_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NQ_MON_MAX_CGROUPS);
	__type(key, __u64);
	__type(value, struct nq_mon_stat);
} cgroup_stat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NQ_MON_MAX_FILES);
	__type(key, struct nq_mon_file_key);
	__type(value, struct nq_mon_file_cfg);
} file_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NQ_MON_MAX_FILES);
	__type(key, struct nq_mon_file_key);
	__type(value, struct nq_mon_stat);
} file_stat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nq_mon_settings);
} settings SEC(".maps");

/* Rate-limit state and counters of global deliveries. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nq_mon_stat);
} global_stat SEC(".maps");

/* Every firing of every tracepoint, watched or not (status shows them). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NQ_MON_EV_MAX);
	__type(key, __u32);
	__type(value, __u64);
} totals SEC(".maps");

static __always_inline void count_total(__u32 type)
{
	__u64 *n = bpf_map_lookup_elem(&totals, &type);

	if (n)
		*n += 1;	/* per-CPU: no atomics needed */
}

/* The current task's memory-controller css (v1 or v2), or NULL. */
static __always_inline struct cgroup_subsys_state *task_memcg_css(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct cgroup_subsys_state *css = NULL;
	struct css_set *cset;
	int id;

	if (!bpf_core_enum_value_exists(enum cgroup_subsys_id, memory_cgrp_id))
		return NULL;
	id = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
	if (id < 0 || id >= 16)
		return NULL;
	cset = BPF_CORE_READ(task, cgroups);
	if (!cset)
		return NULL;
	bpf_core_read(&css, sizeof(css), &cset->subsys[id]);
	return css;
}

static __always_inline __u64 css_id(struct cgroup_subsys_state *css)
{
	return BPF_CORE_READ(css, cgroup, kn, id);
}

static __always_inline __u64 task_memcg_id(void)
{
	struct cgroup_subsys_state *css = task_memcg_css();

	return css ? css_id(css) : bpf_get_current_cgroup_id();
}

/*
 * Rate limit one event type in one stat record.  Returns the count to report
 * (>= 1), or 0 when the event is folded into the next record.  Races between
 * CPUs can at worst let two records through or miscount a folded event; the
 * counters that matter for status are updated atomically.
 */
static __always_inline __u64 rate_limit(struct nq_mon_stat *st, __u32 type,
					__u64 interval, __u64 now)
{
	__u64 pending;

	if (type >= NQ_MON_EV_MAX)
		return 0;
	__sync_fetch_and_add(&st->seen[type], 1);
	if (interval && st->last_ns[type] && now - st->last_ns[type] < interval) {
		__sync_fetch_and_add(&st->ratelimited[type], 1);
		st->pending[type] += 1;
		return 0;
	}
	st->last_ns[type] = now;
	pending = st->pending[type];
	st->pending[type] = 0;
	return pending + 1;
}

/* Copy ev into the ring of every slot in mask. */
static __always_inline void deliver(struct nq_mon_event *ev, __u64 mask,
				    struct nq_mon_stat *st)
{
	for (__u32 slot = 0; slot < NQ_MON_MAX_CLIENTS; slot++) {
		struct nq_mon_client_stat *cs;
		/*
		 * Look up with a copy: a counter whose address goes to a helper
		 * lives on the stack, and the 6.1/6.12 verifiers then lose its
		 * bounds and reject the loop as infinite (6.18 accepts it).
		 */
		__u32 key = slot;
		void *ring;

		if (!(mask & (1ULL << slot)))
			continue;
		ring = bpf_map_lookup_elem(&clients, &key);
		cs = bpf_map_lookup_elem(&client_stat, &key);
		if (!ring || !cs)
			continue;
		ev->slot = slot;
		if (bpf_ringbuf_output(ring, ev, sizeof(*ev), 0)) {
			__sync_fetch_and_add(&cs->dropped, 1);
			__sync_fetch_and_add(&st->dropped, 1);
			continue;
		}
		__sync_fetch_and_add(&cs->delivered, 1);
		if (ev->type < NQ_MON_EV_MAX)
			__sync_fetch_and_add(&st->delivered[ev->type], 1);
	}
}

/*
 * vmscan events: to the subscribers of the nearest watched memory cgroup of
 * the current task and, for the two node-wide events, to global subscribers.
 */
static __always_inline int vmscan_event(__u32 type, __u32 order)
{
	struct cgroup_subsys_state *css = task_memcg_css();
	struct nq_mon_cgroup_cfg *cfg = NULL;
	struct nq_mon_event ev = {};
	__u64 now = bpf_ktime_get_ns();
	__u64 id = 0, watched = 0;
	__u32 zero = 0;

	count_total(type);
	ev.ktime_ns = now;
	ev.type = type;
	ev.order = order;
	ev.pid = bpf_get_current_pid_tgid() >> 32;

	for (int i = 0; i < NQ_MON_MAX_ANCESTORS && css; i++) {
		id = css_id(css);
		if (i == 0)
			ev.cgroup_id = id;	/* the task's own memcg */
		cfg = bpf_map_lookup_elem(&cgroup_cfg, &id);
		if (cfg)
			break;
		css = BPF_CORE_READ(css, parent);
	}

	if (cfg) {
		struct nq_mon_stat *st = bpf_map_lookup_elem(&cgroup_stat, &id);

		watched = cfg->clients;
		ev.cgroup_id = id;
		if (st) {
			ev.count = rate_limit(st, type, cfg->min_interval_ns, now);
			if (ev.count)
				deliver(&ev, watched, st);
		}
	}

	if (type != NQ_MON_EV_MEMCG_RECLAIM) {
		struct nq_mon_settings *set = bpf_map_lookup_elem(&settings, &zero);
		struct nq_mon_stat *gst = bpf_map_lookup_elem(&global_stat, &zero);
		__u64 mask;

		if (!set || !gst)
			return 0;
		/* Slots that already got it through their cgroup are skipped. */
		mask = set->global_clients & ~watched;
		if (!mask)
			return 0;
		ev.count = rate_limit(gst, type, set->global_min_interval_ns, now);
		if (!ev.count)
			return 0;
		if (!cfg)
			ev.cgroup_id = task_memcg_id();
		ev.flags = NQ_MON_EVF_GLOBAL;
		deliver(&ev, mask, gst);
	}
	return 0;
}

SEC("tp/vmscan/mm_vmscan_memcg_reclaim_begin")
int memcg_reclaim(struct trace_event_raw_mm_vmscan_direct_reclaim_begin_template *ctx)
{
	return vmscan_event(NQ_MON_EV_MEMCG_RECLAIM, ctx->order);
}

SEC("tp/vmscan/mm_vmscan_kswapd_wake")
int kswapd_wake(struct trace_event_raw_mm_vmscan_kswapd_wake *ctx)
{
	return vmscan_event(NQ_MON_EV_KSWAPD_WAKE, ctx->order);
}

SEC("tp/vmscan/mm_vmscan_direct_reclaim_begin")
int direct_reclaim(struct trace_event_raw_mm_vmscan_direct_reclaim_begin_template *ctx)
{
	return vmscan_event(NQ_MON_EV_DIRECT_RECLAIM, ctx->order);
}

/*
 * A page of some file leaves the page cache: truncation, fadvise/madvise,
 * or reclaim.  Fires for every page on the machine, so the common path is
 * one hash lookup that misses.
 */
SEC("tp/filemap/mm_filemap_delete_from_page_cache")
int file_evict(struct trace_event_raw_mm_filemap_op_page_cache *ctx)
{
	struct nq_mon_file_key key;
	struct nq_mon_file_cfg *cfg;
	struct nq_mon_event ev = {};
	struct nq_mon_stat *st;
	__u32 order = 0;

	__builtin_memset(&key, 0, sizeof(key));
	key.dev = ctx->s_dev;
	key.ino = ctx->i_ino;
	cfg = bpf_map_lookup_elem(&file_cfg, &key);
	if (!cfg)
		return 0;
	count_total(NQ_MON_EV_FILE_EVICT);
	st = bpf_map_lookup_elem(&file_stat, &key);
	if (!st)
		return 0;
	/* The folio order field appeared in 6.5; older kernels delete one page. */
	if (bpf_core_field_exists(ctx->order))
		order = ctx->order;
	__sync_fetch_and_add(&st->pages, 1ULL << (order & 31));

	ev.ktime_ns = bpf_ktime_get_ns();
	ev.count = rate_limit(st, NQ_MON_EV_FILE_EVICT, cfg->min_interval_ns, ev.ktime_ns);
	if (!ev.count)
		return 0;
	ev.type = NQ_MON_EV_FILE_EVICT;
	ev.dev = key.dev;
	ev.ino = key.ino;
	ev.index = ctx->index;
	ev.order = order;
	ev.pid = bpf_get_current_pid_tgid() >> 32;
	ev.cgroup_id = task_memcg_id();
	deliver(&ev, cfg->clients, st);
	return 0;
}
