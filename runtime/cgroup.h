/* SPDX-License-Identifier: MIT */
/*
 * Memory cgroups, v2 and v1 (internal).
 *
 * The memory controller is either in the unified (v2) hierarchy or, on
 * hybrid and legacy systems, in a v1 hierarchy of its own (our CI machines:
 * /sys/fs/cgroup/memory, with a controller-less cgroup2 on
 * /sys/fs/cgroup/unified).  These helpers find it, create a child cgroup
 * with limits, move processes in, read usage and limit, and remove it.
 *
 *             v2                          v1
 *   limit     memory.max                  memory.limit_in_bytes
 *   high      memory.high                 memory.soft_limit_in_bytes (closest)
 *   usage     memory.current              memory.usage_in_bytes
 *   procs     cgroup.procs                cgroup.procs
 *   OOM kills memory.events oom_kill      memory.oom_control oom_kill
 *
 * Every function returns 0 or a negative errno with the path and the
 * reason in nq_last_error(); nothing prints.
 */
#ifndef NQ_RUNTIME_CGROUP_H
#define NQ_RUNTIME_CGROUP_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define NQ_CGROUP_V1	1
#define NQ_CGROUP_V2	2

/* No limit ("max", or v1's PAGE_COUNTER_MAX rounded to pages). */
#define NQ_CGROUP_UNLIMITED	UINT64_MAX

/*
 * Where the memory controller lives: its hierarchy's mount point and
 * version.  -ENOENT when no hierarchy has it (message says what was found).
 */
int nq_cgroup_memory_root(char *mount, size_t len, int *version);

/*
 * The calling process's memory cgroup directory (joined with the mount
 * point), from /proc/self/cgroup: the "memory" v1 line, else the "0::" line
 * when v2 has the memory controller.
 */
int nq_cgroup_self(char *dir, size_t len, int *version);

/*
 * The calling process's cgroup2 directory whatever controllers it has
 * (for PSI, which v2 accounts per cgroup even without a memory
 * controller); -ENOENT when cgroup2 is not mounted.
 */
int nq_cgroup_self_v2(char *dir, size_t len);

/* NQ_CGROUP_V1 or NQ_CGROUP_V2 for a cgroup directory (statfs). */
int nq_cgroup_version(const char *dir);

/* Kernel id of a cgroup (its kernfs inode number, as BPF sees it). */
int nq_cgroup_id(const char *dir, uint64_t *id);
/* Is dir still the cgroup whose id was taken (id 0: any cgroup there)?
 * 0 yes; -ESTALE: another cgroup of the same name; -ENOENT: removed; other
 * -errno from stat (transient).  Silent (no nq_fail): callers poll it. */
int nq_cgroup_still(const char *dir, uint64_t id);

struct nq_cgroup {
	int version;
	char dir[PATH_MAX];
	char psi_dir[PATH_MAX];	/* v1: a companion cgroup2 dir for PSI ("" if none) */
};

/*
 * Create the memory cgroup parent/name (parent NULL: the caller's own
 * memory cgroup) and, for v1 with cgroup2 mounted, a companion v2 cgroup
 * <own v2 cgroup>/name so PSI can be read per cgroup.  On v2, enables the
 * memory controller in the parent's cgroup.subtree_control when needed.
 * -EEXIST when the cgroup already exists; -EACCES/-EPERM naming the path
 * when the caller may not create it.
 */
int nq_cgroup_create(struct nq_cgroup *cg, const char *parent, const char *name);

/*
 * Limits.  nq_cgroup_set_high on v1 writes memory.soft_limit_in_bytes and
 * sets *approximate (v1 has no throttling high limit).
 */
int nq_cgroup_set_max(const struct nq_cgroup *cg, uint64_t bytes);
int nq_cgroup_set_high(const struct nq_cgroup *cg, uint64_t bytes, bool *approximate);

/* Move a process (all its threads) in; pid 0 = the caller. */
int nq_cgroup_attach(const struct nq_cgroup *cg, pid_t pid);

/* Usage and limit of any memory cgroup directory (v1 or v2). */
int nq_cgroup_usage(const char *dir, uint64_t *bytes);
int nq_cgroup_limit(const char *dir, uint64_t *bytes);

/* OOM kills inside the cgroup so far. */
int nq_cgroup_oom_kills(const char *dir, uint64_t *kills);

/* Processes in a cgroup directory; returns the count. */
int nq_cgroup_nprocs(const char *dir);

/*
 * Remove the cgroup (and the companion): sends SIGKILL to processes left
 * inside when kill_left is set, waits up to timeout_ms for it to empty, then
 * rmdir.  -EBUSY when still populated after the timeout.
 */
int nq_cgroup_remove(struct nq_cgroup *cg, bool kill_left, int timeout_ms);

#endif
