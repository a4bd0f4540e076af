/* SPDX-License-Identifier: MIT */
/*
 * A fixed pool of worker threads for one session.  The executor splits a
 * node into `nq_pool_threads()` parts and runs them with nq_pool_run(); the
 * calling thread runs part 0 itself, so a pool of 1 has no workers and costs
 * nothing.  Part i > 0 is meant for worker i, but when the caller has
 * finished part 0 before that worker started, the caller runs it: an
 * inference never waits for a thread the scheduler has not run.  So part
 * i's per-thread state (scratch, error slot) must be indexed by the part,
 * not by the thread.  nq_pool_run() allocates nothing and returns when every
 * part is done (a full barrier: the parts' writes are visible to the caller).
 *
 * Workers spin briefly on the dispatch counter before sleeping, because
 * one inference dispatches once per layer and a futex wake-up per layer
 * costs more than the smaller layers themselves.
 *
 * Functions return 0 or a negative errno (the message via nq_last_error()).
 */
#ifndef NQ_THREADPOOL_H
#define NQ_THREADPOOL_H

#include <stdint.h>

#define NQ_MAX_THREADS 64

struct nq_pool;

typedef void (*nq_pool_fn)(void *arg, unsigned int part, unsigned int nparts);

/* A pool running `threads` parts at a time (1..NQ_MAX_THREADS). */
int nq_pool_create(unsigned int threads, struct nq_pool **out);
void nq_pool_destroy(struct nq_pool *p);
unsigned int nq_pool_threads(const struct nq_pool *p);

/*
 * Work is coming soon (an inference is starting): sleeping workers wake and
 * spin again.  A worker's wake-up takes the scheduler (and, in a VM, the
 * host) a while; issued before the input is prepared, it overlaps that work
 * instead of the first layers, which would otherwise run on fewer threads.
 */
void nq_pool_wake(struct nq_pool *p);

/* fn(arg, i, n) once for every i in [0, n), n = nq_pool_threads(p); part 0
 * and any part whose worker has not started yet on the calling thread. */
void nq_pool_run(struct nq_pool *p, nq_pool_fn fn, void *arg);

/*
 * CPUs this process may use: the affinity mask (sched_getaffinity),
 * lowered to the cgroup CPU quota rounded up (cgroup v2 cpu.max, or v1
 * cpu.cfs_quota_us / cpu.cfs_period_us of the process's cgroup).  At least 1.
 */
unsigned int nq_cpus_usable(void);

/*
 * The thread count a session uses: `requested` when non-zero, else
 * $NQ_THREADS when set, else nq_cpus_usable(); capped at NQ_MAX_THREADS.
 * -EINVAL when $NQ_THREADS is not a number in 1..NQ_MAX_THREADS.
 */
int nq_threads_choose(unsigned int requested, unsigned int *out);

/*
 * Parse a cgroup quota: v2 "max 100000" / "150000 100000", or v1 quota and
 * period strings.  Returns the CPU count the quota allows (rounded up), or
 * 0 when unlimited or unparsable.  Exposed for the tests.
 */
unsigned int nq_cgroup_quota_cpus_v2(const char *cpu_max);
unsigned int nq_cgroup_quota_cpus_v1(const char *quota, const char *period);

#endif
