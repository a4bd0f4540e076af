/* SPDX-License-Identifier: MIT */
/*
 * The pressure monitor, user-space side (internal; the public runtime API
 * wraps it).
 *
 * Two roles:
 *
 *  - The loader (privileged: CAP_BPF + CAP_PERFMON, or root) loads the BPF
 *    programs once and pins programs' links and maps under a bpffs directory,
 *    NQ_MONITOR_PIN_DIR by default, so they outlive it.  Pins are mode 0600
 *    (directory 0700), or 0660/0750 with a group so its members can be
 *    clients.
 *
 *  - A client (any user the pin modes let in) opens the pinned maps, claims a
 *    slot with its own ring buffer, registers the memory cgroups and model
 *    files it cares about, and reads events from an fd it can poll/epoll.
 *    Several clients get every event they subscribed to: the kernel copies
 *    each event into each subscriber's ring.
 *
 * All functions return 0 (or a count) on success and a negative errno on
 * failure, with the reason in nq_last_error().  They never print.
 */
#ifndef NQ_RUNTIME_MONITOR_H
#define NQ_RUNTIME_MONITOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../bpf/monitor.h"

#define NQ_MONITOR_PIN_DIR	"/sys/fs/bpf/nestquant"
/* Default rate limit per watched cgroup/file and event type. */
#define NQ_MONITOR_DEFAULT_INTERVAL_NS	1000000ull

/* ---- loader --------------------------------------------------------------- */

struct nq_monitor_load_opts {
	const char *pin_dir;	/* NULL: NQ_MONITOR_PIN_DIR */
	const char *group;	/* NULL: pins 0600 root-only; else 0660 for this group */
	size_t ring_bytes;	/* per client; 0: NQ_MON_RING_BYTES; power of 2 >= page */
};

/*
 * Load and pin the monitor.  Idempotent: when a complete monitor is already
 * pinned there, returns 1 and changes nothing; a partial pin set (an
 * interrupted load) is removed and loaded anew.  Mounts bpffs on /sys/fs/bpf
 * when it is not.  Returns 0 when it loaded, 1 when already loaded.
 */
int nq_monitor_load(const struct nq_monitor_load_opts *opts);

/* Remove every pin (detaches the programs).  -ENOENT when nothing is pinned. */
int nq_monitor_unload(const char *pin_dir);

/*
 * 0 when the calling process may load (CAP_BPF and CAP_PERFMON, or
 * CAP_SYS_ADMIN); -EPERM naming the missing capabilities otherwise.
 */
int nq_monitor_check_privilege(void);

/* ---- client --------------------------------------------------------------- */

struct nq_monitor;

#define NQ_MONITOR_GLOBAL	(1u << 0)	/* also kswapd / direct reclaim anywhere */

/*
 * Open the pinned monitor as a client: claims a free client slot (taking
 * over slots whose owner process has exited) and its ring buffer.  -ENOENT
 * when no monitor is loaded; -EACCES with the pin owner/mode in the message
 * when this user may not use it.
 */
int nq_monitor_open(const char *pin_dir, unsigned int flags, struct nq_monitor **out);

/*
 * Subscribe to events of a memory cgroup (a directory in the v1 memory
 * hierarchy or in cgroup v2) and of any cgroup below it that is not watched
 * itself.  min_interval_ns rate-limits each event type for this cgroup (0:
 * no limit; if several clients watch it the smallest wins).
 */
int nq_monitor_watch_cgroup(struct nq_monitor *m, const char *path, uint64_t min_interval_ns);
int nq_monitor_unwatch_cgroup(struct nq_monitor *m, const char *path);
/* The same by kernel id, for a cgroup whose directory is already gone. */
int nq_monitor_unwatch_cgroup_id(struct nq_monitor *m, uint64_t id);

/* Subscribe to page-cache evictions of a file (its device and inode). */
int nq_monitor_watch_file(struct nq_monitor *m, const char *path, uint64_t min_interval_ns);
int nq_monitor_unwatch_file(struct nq_monitor *m, const char *path);

/*
 * Is the monitor this client reads still loaded?  Unloading removes the
 * pins and detaches the programs, but a client's map fds keep the maps (and
 * its ring) alive, so the ring just stays silent: the kernel tells nobody.
 * This looks at the pins (a few fstatat() calls, cheap enough every
 * second): 0 while our ring and a program link are pinned; -ENOENT when
 * the monitor was unloaded, -ESTALE when it was unloaded and loaded again
 * (reopen to get the new one), -ENOLINK when the programs are detached;
 * the detail is in nq_last_error().
 */
int nq_monitor_check(const struct nq_monitor *m);

/* An fd that becomes readable when events are waiting (an epoll fd). */
int nq_monitor_fd(const struct nq_monitor *m);
int nq_monitor_slot(const struct nq_monitor *m);

/*
 * Called once per event, in the order the kernel committed them to this
 * client's ring (per task that is ktime order; across CPUs two records can be
 * a few microseconds out of order).  A negative return stops the batch and is
 * returned by nq_monitor_poll/consume.  One nq_monitor is not thread-safe:
 * poll it from one thread, or open one per thread.
 */
typedef int (*nq_monitor_cb)(void *ctx, const struct nq_mon_event *ev);

/* Wait up to timeout_ms (-1: forever) and deliver events; returns how many. */
int nq_monitor_poll(struct nq_monitor *m, int timeout_ms, nq_monitor_cb cb, void *ctx);
/* Deliver the events already waiting, without blocking; returns how many. */
int nq_monitor_consume(struct nq_monitor *m, nq_monitor_cb cb, void *ctx);

/* Unsubscribe everything this client registered and release its slot. */
void nq_monitor_close(struct nq_monitor *m);

/* ---- operator ------------------------------------------------------------- */

/*
 * Watch a cgroup or file without a client (counters only, kept until
 * unwatched), as `nestquant monitor watch-cgroup|watch-file` does.  Clients
 * that subscribe later keep the min_interval set here unless smaller.
 */
int nq_monitor_persist_cgroup(const char *pin_dir, const char *path, uint64_t min_interval_ns,
			      bool on);
int nq_monitor_persist_file(const char *pin_dir, const char *path, uint64_t min_interval_ns,
			    bool on);
/*
 * Drop the operator's watch of a cgroup by kernel id, for when its directory
 * was removed before it could be unwatched by path.  -ENOENT when not
 * watched.  Clients' own subscriptions are kept.
 */
int nq_monitor_forget_cgroup(const char *pin_dir, uint64_t id);

struct nq_monitor_status_client {
	__u32 slot, pid, uid, flags;
	__u64 delivered, dropped;
	bool alive;
};

struct nq_monitor_status_watch {
	__u64 cgroup_id;		/* cgroups */
	__u32 dev;			/* files: kernel dev_t */
	__u64 ino;			/* files */
	struct nq_mon_cgroup_cfg cfg;	/* files: the same fields, converted */
	struct nq_mon_stat stat;
};

struct nq_monitor_status {
	char pin_dir[256];
	__u32 mode, uid, gid;		/* of the pin directory */
	__u64 totals[NQ_MON_EV_MAX];		/* all firings, summed over CPUs */
	struct nq_mon_settings settings;
	struct nq_mon_stat global;
	unsigned int nr_links;			/* attached programs found pinned */
	unsigned int nr_clients, nr_cgroups, nr_files;
	struct nq_monitor_status_client clients[NQ_MON_MAX_CLIENTS];
	struct nq_monitor_status_watch cgroups[NQ_MON_MAX_CGROUPS];
	struct nq_monitor_status_watch files[NQ_MON_MAX_FILES];
};

/* Snapshot of the pinned monitor (allocate *out with nq_monitor_status_free). */
int nq_monitor_status(const char *pin_dir, struct nq_monitor_status **out);
void nq_monitor_status_free(struct nq_monitor_status *st);

/* Name of an event type ("memcg_reclaim", ...). */
const char *nq_monitor_event_name(uint32_t type);

/* Kernel dev_t encoding (major << 20 | minor) of a user-space st_dev. */
uint32_t nq_monitor_kdev(uint64_t st_dev);

#endif
