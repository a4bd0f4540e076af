/* SPDX-License-Identifier: MIT */
/*
 * Memory-pressure signal sources (internal).  (Not "signal.h": with -Iruntime
 * that name would shadow <signal.h> for every file of the runtime.)
 *
 * A source turns one of the kernel's memory-pressure mechanisms into
 * timestamped pressure events behind a single fd the runtime can poll or
 * epoll (readable = events waiting):
 *
 *   kmod   nestquant.ko purged a region inside the kernel's own reclaim
 *   bpf    the pinned BPF monitor (`nestquant monitor load`): memcg reclaim
 *          onset, kswapd wake, direct reclaim, evictions of the model file;
 *          stamped in the tracepoint with bpf_ktime_get_ns()
 *   psi    PSI triggers ("some"/"full" stall time per window) on the
 *          cgroup's memory.pressure (v2) or /proc/pressure/memory; stamped
 *          when user space saw POLLPRI (PSI has no event timestamp)
 *   none   never fires (switching disabled)
 *   auto   the first of kmod > bpf > psi that opens; the reason each better
 *          one was unavailable is kept in nq_signal_selection()
 *
 * All times are CLOCK_MONOTONIC nanoseconds.  Functions return 0 (or a
 * count) or a negative errno with the reason in nq_last_error(); nothing
 * here prints.
 */
#ifndef NQ_RUNTIME_PRESSURE_H
#define NQ_RUNTIME_PRESSURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum nq_signal_kind {
	NQ_SIGNAL_NONE = 0,
	NQ_SIGNAL_PSI = 1,
	NQ_SIGNAL_BPF = 2,
	NQ_SIGNAL_KMOD = 3,
	NQ_SIGNAL_AUTO = 4,
};

/* Why pressure was signalled. */
enum nq_pressure_cause {
	NQ_CAUSE_NONE = 0,
	NQ_CAUSE_MEMCG_RECLAIM,		/* reclaim began in a memory cgroup (limit hit) */
	NQ_CAUSE_KSWAPD,		/* kswapd woke (the machine is short) */
	NQ_CAUSE_DIRECT_RECLAIM,	/* an allocation had to reclaim itself */
	NQ_CAUSE_FILE_EVICT,		/* pages of the watched model file were evicted */
	NQ_CAUSE_PSI_SOME,		/* PSI "some" trigger fired */
	NQ_CAUSE_PSI_FULL,		/* PSI "full" trigger fired */
	NQ_CAUSE_HIGH_WATERMARK,	/* usage above the policy's high watermark */
	NQ_CAUSE_KMOD_PURGE,		/* nestquant.ko purged a region */
	NQ_CAUSE_HOLD_EXPIRED,		/* (decisions only) pressure absent for the hold time */
	NQ_CAUSE_MAX,
};

/* nq_pressure_event.flags */
#define NQ_PEV_KERNEL_TIME	(1u << 0)	/* ktime_ns was taken in the kernel */
#define NQ_PEV_GLOBAL		(1u << 1)	/* machine-wide, not attributed to a cgroup */

struct nq_pressure_event {
	uint64_t ktime_ns;	/* when it happened (kernel stamp, else = recv_ns) */
	uint64_t recv_ns;	/* when user space read it */
	uint64_t cgroup_id;	/* memory cgroup it belongs to; 0: unattributed */
	uint64_t count;		/* occurrences folded into this event (>= 1) */
	uint32_t cause;		/* enum nq_pressure_cause */
	uint32_t flags;		/* NQ_PEV_* */
};

struct nq_signal_opts {
	enum nq_signal_kind kind;
	/*
	 * The memory cgroup directory to watch (v1 memory hierarchy or v2);
	 * NULL: the calling process's own (from /proc/self/cgroup).
	 */
	const char *cgroup;
	/*
	 * PSI file for the psi source; NULL: <cgroup>/memory.pressure when
	 * the cgroup is v2, else the process's own v2 cgroup's
	 * memory.pressure when cgroup2 is mounted (PSI is accounted per v2
	 * cgroup even without the memory controller), else
	 * /proc/pressure/memory.
	 */
	const char *psi_path;
	const char *pin_dir;		/* bpf: NULL = NQ_MONITOR_PIN_DIR */
	const char *model_path;		/* bpf: also watch evictions of this file */
	bool global;			/* bpf: also kswapd / direct reclaim machine-wide */
	uint64_t min_interval_ns;	/* bpf: rate limit per event type (0: default) */
	/*
	 * kmod: fd of the runtime's nestquant.ko region (nq_kmod_region.fd);
	 * it reports EPOLLPRI when the kernel purged it.  -1 or 0: none.
	 */
	int kmod_region_fd;
	/* psi: stall thresholds per window; 0 disables that trigger. */
	uint64_t psi_some_ns, psi_full_ns, psi_window_ns;
};

/* Defaults of the PSI trigger: 150 ms of "some" stall per 1 s window. */
#define NQ_PSI_DEFAULT_SOME_NS		150000000ull
#define NQ_PSI_DEFAULT_FULL_NS		0ull
#define NQ_PSI_DEFAULT_WINDOW_NS	1000000000ull

struct nq_signal;

/*
 * Open a source.  With NQ_SIGNAL_AUTO, tries kmod, bpf, psi in that order
 * and returns the first that opens (-ENODEV if none, every reason in the
 * message).  nq_signal_selection() then says which is active and why each
 * better one was not.
 */
int nq_signal_open(const struct nq_signal_opts *opts, struct nq_signal **out);

/*
 * Readable (EPOLLIN) when events are waiting or the source wants to check
 * itself; -1 for the none source.  The fd stays the same for the life of
 * the nq_signal even when the active source changes underneath (see
 * nq_signal_read).
 */
int nq_signal_fd(const struct nq_signal *s);

/*
 * Move up to max waiting events into evs without blocking; returns how many
 * (0 when none).  Call until it returns less than max to drain.
 *
 * Each call also runs the periodic checks (every NQ_SIGNAL_CHECK_NS, driven
 * by a timer inside the fd): the bpf source checks that the monitor is
 * still loaded (nq_monitor_check), every source that its memory cgroup
 * still exists.  A source that is gone or fails to read is replaced: under
 * auto by the next one in kmod > bpf > psi order (and the bpf source again
 * once the monitor is back), under an explicit kind by nothing until the
 * same kind can be opened again: the runtime keeps serving at its level
 * and only usage watermarks can move it.  Every such change leaves a line
 * for nq_signal_notice().  Errors of the sources therefore never reach the
 * caller; a negative return means the fd itself failed.
 */
int nq_signal_read(struct nq_signal *s, struct nq_pressure_event *evs, unsigned int max);

#define NQ_SIGNAL_CHECK_NS	500000000ull

/*
 * The next line for the operator's log about a change of source or of the
 * watched cgroup ("BPF monitor unloaded (...); falling back to PSI (...)"),
 * oldest first, or NULL when there is none.  The text stays valid until
 * the next call.  Call after nq_signal_read().
 */
const char *nq_signal_notice(struct nq_signal *s);

/* true once the watched memory cgroup's directory has been removed. */
bool nq_signal_cgroup_gone(const struct nq_signal *s);

enum nq_signal_kind nq_signal_kind(const struct nq_signal *s);

/* Kernel id (inode) of the memory cgroup watched; 0 when unknown. */
uint64_t nq_signal_cgroup_id(const struct nq_signal *s);
/* Its directory ("" when unknown). */
const char *nq_signal_cgroup(const struct nq_signal *s);

/*
 * Human-readable account of the choice, one clause per source tried, e.g.
 * "kmod: nestquant.ko not loaded (/dev/nestquant missing); bpf: active
 * (cgroup /sys/fs/cgroup/memory/x, slot 0)".
 */
const char *nq_signal_selection(const struct nq_signal *s);

void nq_signal_close(struct nq_signal *s);

/* "none" "psi" "bpf" "kmod" "auto" <-> kind; -EINVAL for anything else. */
int nq_signal_parse_kind(const char *name, enum nq_signal_kind *kind);
const char *nq_signal_kind_name(enum nq_signal_kind kind);
const char *nq_pressure_cause_name(uint32_t cause);

/* CLOCK_MONOTONIC now, in ns (the clock BPF's ktime and PSI use). */
uint64_t nq_monotonic_ns(void);

/* ---- for the source implementations (signal_*.c) ----------------------- */

struct nq_signal_ops {
	int (*read)(struct nq_signal *s, struct nq_pressure_event *evs, unsigned int max);
	void (*close)(struct nq_signal *s);
	/* Optional: 0 while the source still works, -errno and a reason when not. */
	int (*check)(struct nq_signal *s);
	/*
	 * Optional, called on each periodic check: events the source can
	 * only find by looking (psi: trigger wakes an outer epoll consumed).
	 */
	int (*tick)(struct nq_signal *s, struct nq_pressure_event *evs, unsigned int max);
	/* Optional: the watched cgroup (s->cgroup_id) was removed: unsubscribe it. */
	void (*cgroup_gone)(struct nq_signal *s);
};

#define NQ_SIGNAL_NOTICES	4

struct nq_signal {
	const struct nq_signal_ops *ops;
	enum nq_signal_kind kind;	/* the active source */
	enum nq_signal_kind want;	/* what was asked for (auto or one kind) */
	int fd;			/* what the runtime waits on: an epoll set of the two below */
	int src_fd;		/* the active source's own fd; -1: none */
	int tick_fd;		/* timerfd of the periodic checks */
	uint64_t cgroup_id;
	bool cgroup_gone;
	bool reattach;		/* a better source was lost: reopen it when it is back */
	uint64_t retry_ino;	/* pin inode a reopen last failed on (no retry on it) */
	char cgroup[4096];
	char selection[1536];
	char detail[512];	/* set by the source that opened: what it watches */
	void *priv;
	/* The options, kept to reopen sources (strings copied). */
	struct nq_signal_opts opts;
	char psi_path[4096], pin_dir[4096], model_path[4096];
	unsigned int notice_head, notices;
	char notice[NQ_SIGNAL_NOTICES][1024];
	char notice_out[1024];
};

/* Each returns 0 and fills s->ops/src_fd/priv, or -errno with a one-line reason. */
int nq_signal_open_kmod(struct nq_signal *s, const struct nq_signal_opts *o);
int nq_signal_open_bpf(struct nq_signal *s, const struct nq_signal_opts *o);
int nq_signal_open_psi(struct nq_signal *s, const struct nq_signal_opts *o);

#endif
