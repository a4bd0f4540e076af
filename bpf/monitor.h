/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * Types shared by the pressure monitor's BPF programs (bpf/monitor.bpf.c) and
 * user space (runtime/monitor.c).  Everything here is part of the layout of
 * the maps pinned under /sys/fs/bpf/nestquant/: a client built from another
 * version of this header is refused when the value sizes differ, so change a
 * struct only by growing it and bumping NQ_MON_ABI.
 *
 * Kernel side includes vmlinux.h first; user space gets the __u* types from
 * <linux/types.h>.
 */
#ifndef NQ_BPF_MONITOR_H
#define NQ_BPF_MONITOR_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define NQ_MON_ABI		1

#define NQ_MON_MAX_CLIENTS	32	/* ring buffers, one per client slot */
#define NQ_MON_MAX_CGROUPS	256
#define NQ_MON_MAX_FILES	256
#define NQ_MON_MAX_ANCESTORS	8	/* memcg levels walked to find a watched one */
#define NQ_MON_RING_BYTES	(256 * 1024)
#define NQ_MON_PATH_MAX		128	/* informational copy of the path, for status */

enum nq_mon_event_type {
	NQ_MON_EV_NONE = 0,
	NQ_MON_EV_MEMCG_RECLAIM = 1,	/* vmscan:mm_vmscan_memcg_reclaim_begin */
	NQ_MON_EV_KSWAPD_WAKE = 2,	/* vmscan:mm_vmscan_kswapd_wake */
	NQ_MON_EV_DIRECT_RECLAIM = 3,	/* vmscan:mm_vmscan_direct_reclaim_begin */
	NQ_MON_EV_FILE_EVICT = 4,	/* filemap:mm_filemap_delete_from_page_cache */
	NQ_MON_EV_MAX = 5,
};

/* nq_mon_event.flags */
#define NQ_MON_EVF_GLOBAL	(1u << 0)	/* delivered to a global subscriber */

/*
 * One record in a client's ring buffer.  ktime_ns is bpf_ktime_get_ns()
 * (CLOCK_MONOTONIC) taken in the tracepoint.  cgroup_id is the kernfs id
 * (= inode number of the cgroup directory on 64-bit) of the watched memory
 * cgroup the event was attributed to, or of the current task's memory cgroup
 * for global deliveries and file evictions.  count is 1 plus the number of
 * events of this type that the rate limit folded into this one.
 */
struct nq_mon_event {
	__u64 ktime_ns;
	__u64 cgroup_id;
	__u64 count;
	__u64 ino;		/* FILE_EVICT: inode of the watched file */
	__u64 index;		/* FILE_EVICT: page index in the file */
	__u32 dev;		/* FILE_EVICT: kernel dev_t (major << 20 | minor) */
	__u32 type;		/* enum nq_mon_event_type */
	__u32 pid;		/* tgid of the task in whose context it fired */
	__u32 order;		/* allocation / folio order */
	__u32 flags;		/* NQ_MON_EVF_* */
	__u32 slot;		/* client slot it was delivered to */
};

/* cgroup_cfg: key __u64 cgroup id, written by user space. */
#define NQ_MON_CGF_PERSIST	(1u << 0)	/* stays watched with no client (CLI) */

struct nq_mon_cgroup_cfg {
	__u64 clients;		/* bit n: client slot n subscribed */
	__u64 min_interval_ns;	/* rate limit per event type */
	__u32 flags;		/* NQ_MON_CGF_* */
	__u32 abi;
	char path[NQ_MON_PATH_MAX];
};

/* cgroup_stat: key __u64 cgroup id, created zeroed by user space, counted by BPF. */
struct nq_mon_stat {
	__u64 seen[NQ_MON_EV_MAX];	 /* events attributed to it */
	__u64 delivered[NQ_MON_EV_MAX];	 /* records written to ring buffers */
	__u64 ratelimited[NQ_MON_EV_MAX]; /* folded into a later record */
	__u64 dropped;			 /* ring buffer full */
	__u64 last_ns[NQ_MON_EV_MAX];	 /* rate-limit state */
	__u64 pending[NQ_MON_EV_MAX];
	__u64 pages;			 /* FILE_EVICT: pages evicted */
};

/* file_cfg / file_stat key.  dev is the kernel's dev_t encoding. */
struct nq_mon_file_key {
	__u32 dev;
	__u32 pad;
	__u64 ino;
};

struct nq_mon_file_cfg {
	__u64 clients;
	__u64 min_interval_ns;
	__u32 flags;		/* NQ_MON_CGF_PERSIST */
	__u32 abi;
	char path[NQ_MON_PATH_MAX];
};

/* clients: key __u32 slot, a hash so a slot is claimed with BPF_NOEXIST. */
#define NQ_MON_CLF_GLOBAL	(1u << 0)	/* also wants kswapd / direct reclaim anywhere */

struct nq_mon_client {
	__u64 start_time;	/* /proc/PID/stat starttime, to detect PID reuse */
	__u32 pid;
	__u32 flags;		/* NQ_MON_CLF_* */
	__u32 uid;
	__u32 abi;
};

/* client_stat: array indexed by slot, counted by BPF. */
struct nq_mon_client_stat {
	__u64 delivered;
	__u64 dropped;
};

/* settings: array of one, written by user space. */
struct nq_mon_settings {
	__u64 global_clients;		/* slots with NQ_MON_CLF_GLOBAL */
	__u64 global_min_interval_ns;	/* rate limit of global deliveries */
	__u32 abi;
	__u32 pad;
};

#endif
