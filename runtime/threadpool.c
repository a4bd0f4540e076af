// SPDX-License-Identifier: MIT
/*
 * The session thread pool (threadpool.h).  One dispatch = one generation:
 * the caller publishes (fn, arg), bumps `gen` and runs part 0; part i > 0 is
 * worker i's, but whoever claims it first for the generation runs it (see
 * claim_part): worker i, or the caller once its own part is done.  Each run
 * of a part decrements `pending`.  Waiting is
 * spin-then-sleep on both sides; sleeping uses one mutex and two condition
 * variables, and `gen`/`pending` are re-checked under the mutex, so a wake-up
 * cannot be lost between the check and the wait.  nq_pool_wake(), called as
 * an inference starts, sets sleeping workers spinning again and keeps them
 * off the caller's CPU.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nq_error.h"
#include "threadpool.h"

#define SPIN_NS 200000	/* ~ the gap between two layers of a small network */

struct worker {
	struct nq_pool *pool;
	unsigned int index;
	pthread_t tid;
	_Atomic unsigned int taken;	/* last generation whose part `index` was claimed */
};

struct nq_pool {
	unsigned int threads;
	_Atomic unsigned int gen;
	_Atomic unsigned int wake;	/* bumped by nq_pool_wake(): spin again */
	_Atomic unsigned int pending;
	_Atomic int stop;
	nq_pool_fn fn;
	void *arg;
	pthread_mutex_t lock;
	pthread_cond_t go;
	pthread_cond_t done;
	unsigned int started;		/* workers created */
	cpu_set_t allowed;		/* the process's CPUs when the pool was made */
	int caller_cpu;			/* where the caller ran at the last wake, or -1 */
	struct worker w[];
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

static uint64_t now_ns(void);

/*
 * One step of a spin-wait.  Every 64th step also reads the clock and yields
 * the CPU: when the thread we wait for shares our CPU (a worker woken onto
 * the caller's CPU, a vCPU taken away by the host), pausing would keep it
 * off the CPU for the rest of our time slice; sched_yield() lets it run, and
 * returns at once when nothing else is waiting.  Returns false once the
 * spin has lasted SPIN_NS, when the caller should sleep instead.
 */
static bool spin_step(unsigned int *spins, uint64_t *t0)
{
	if ((++*spins & 63) == 0) {
		uint64_t t = now_ns();

		if (!*t0)
			*t0 = t;
		else if (t - *t0 > SPIN_NS)
			return false;
		sched_yield();
	}
	cpu_relax();
	return true;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * Claim part w->index of generation g, for the worker itself or for the
 * caller.  Why the caller takes parts at all: a worker that the scheduler
 * has not run yet (its CPU held by a neighbour in the middle of its slice,
 * or by a long system call on a kernel without preemption: 1-2 ms measured
 * behind a page-cache reader under reclaim) would otherwise hold up the
 * whole inference, although CONV/GEMM parts are shared out dynamically and
 * its part usually has nothing left to do.  Exactly one claim succeeds per
 * part and generation; a late worker finds its part taken and goes back to
 * waiting.  A stale g cannot succeed either: generation g ends only once
 * every one of its parts has been claimed.
 */
static bool claim_part(struct worker *w, unsigned int g)
{
	unsigned int t = atomic_load_explicit(&w->taken, memory_order_relaxed);

	return t != g && atomic_compare_exchange_strong_explicit(&w->taken, &t, g,
								 memory_order_acq_rel,
								 memory_order_relaxed);
}

/* One part of the generation is done; the last one wakes a sleeping caller. */
static void part_done(struct nq_pool *p)
{
	if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) == 1) {
		pthread_mutex_lock(&p->lock);
		pthread_cond_signal(&p->done);
		pthread_mutex_unlock(&p->lock);
	}
}

static void *worker_main(void *opaque)
{
	struct worker *w = opaque;
	struct nq_pool *p = w->pool;
	unsigned int seen = 0;	/* gen at creation: a dispatch may come before we run */
	char name[16];

	/* Named for top -H, ps -L and perf: the thread shows what it is. */
	snprintf(name, sizeof(name), "nq-pool-%u", w->index);
	pthread_setname_np(pthread_self(), name);

	for (;;) {
		uint64_t t0 = 0;
		unsigned int spins = 0, woken;

		/* Spin for a while, then sleep until the generation moves or
		 * nq_pool_wake() says work is coming (then spin again). */
		while (atomic_load_explicit(&p->gen, memory_order_acquire) == seen &&
		       !atomic_load_explicit(&p->stop, memory_order_acquire)) {
			if (!spin_step(&spins, &t0)) {
				pthread_mutex_lock(&p->lock);
				woken = atomic_load(&p->wake);
				while (atomic_load(&p->gen) == seen && !atomic_load(&p->stop) &&
				       atomic_load(&p->wake) == woken)
					pthread_cond_wait(&p->go, &p->lock);
				pthread_mutex_unlock(&p->lock);
				spins = 0;
				t0 = 0;
			}
		}
		if (atomic_load_explicit(&p->stop, memory_order_acquire))
			return NULL;
		seen = atomic_load_explicit(&p->gen, memory_order_acquire);
		if (claim_part(w, seen)) {
			p->fn(p->arg, w->index, p->threads);
			part_done(p);
		}
	}
}

int nq_pool_create(unsigned int threads, struct nq_pool **out)
{
	struct nq_pool *p;
	int err;

	*out = NULL;
	if (threads < 1 || threads > NQ_MAX_THREADS)
		return nq_fail(-EINVAL, "thread pool: %u threads (1..%d)", threads, NQ_MAX_THREADS);
	p = calloc(1, sizeof(*p) + threads * sizeof(p->w[0]));
	if (!p)
		return nq_fail(-ENOMEM, "thread pool: out of memory");
	p->threads = threads;
	p->caller_cpu = -1;
	if (sched_getaffinity(0, sizeof(p->allowed), &p->allowed))
		CPU_ZERO(&p->allowed);
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->go, NULL);
	pthread_cond_init(&p->done, NULL);
	for (unsigned int i = 1; i < threads; i++) {
		p->w[i].pool = p;
		p->w[i].index = i;
		err = pthread_create(&p->w[i].tid, NULL, worker_main, &p->w[i]);
		if (err) {
			nq_pool_destroy(p);
			return nq_fail(-err, "thread pool: cannot start thread %u of %u: %s",
				       i + 1, threads, strerror(err));
		}
		p->started = i;
	}
	*out = p;
	return 0;
}

void nq_pool_destroy(struct nq_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	atomic_store(&p->stop, 1);
	pthread_cond_broadcast(&p->go);
	pthread_mutex_unlock(&p->lock);
	for (unsigned int i = 1; i <= p->started; i++)
		pthread_join(p->w[i].tid, NULL);
	pthread_cond_destroy(&p->done);
	pthread_cond_destroy(&p->go);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

unsigned int nq_pool_threads(const struct nq_pool *p)
{
	return p ? p->threads : 1;
}

/*
 * Keep the workers off the caller's CPU.  A sleeping worker woken by the
 * caller is placed by the scheduler; in a VM an idle vCPU often looks busy
 * (vcpu_is_preempted), so the worker lands on the caller's CPU and, being
 * cache-hot there, stays: the caller then does every part itself while the
 * worker only queues behind it (measured here: a quarter of the inferences
 * after an idle gap ran at one-thread speed).  When the caller has moved to
 * another CPU, the workers' affinity becomes "every CPU of ours but that
 * one"; the kernel moves them at once.  Nothing is changed when that would
 * leave no CPU, or when the set cannot be read.
 */
static void keep_off_caller_cpu(struct nq_pool *p)
{
	int cpu = sched_getcpu();
	cpu_set_t set;

	if (cpu < 0 || cpu == p->caller_cpu || !CPU_ISSET(cpu, &p->allowed) ||
	    CPU_COUNT(&p->allowed) < 2)
		return;
	p->caller_cpu = cpu;
	set = p->allowed;
	CPU_CLR(cpu, &set);
	for (unsigned int i = 1; i <= p->started; i++)
		(void)pthread_setaffinity_np(p->w[i].tid, sizeof(set), &set);
}

void nq_pool_wake(struct nq_pool *p)
{
	if (!p || p->threads == 1)
		return;
	keep_off_caller_cpu(p);
	pthread_mutex_lock(&p->lock);
	atomic_fetch_add(&p->wake, 1);
	pthread_cond_broadcast(&p->go);
	pthread_mutex_unlock(&p->lock);
}

void nq_pool_run(struct nq_pool *p, nq_pool_fn fn, void *arg)
{
	uint64_t t0 = 0;
	unsigned int spins = 0, g;

	if (!p || p->threads == 1) {
		fn(arg, 0, 1);
		return;
	}
	p->fn = fn;
	p->arg = arg;
	atomic_store_explicit(&p->pending, p->threads - 1, memory_order_relaxed);
	g = atomic_fetch_add_explicit(&p->gen, 1, memory_order_acq_rel) + 1;
	pthread_mutex_lock(&p->lock);
	pthread_cond_broadcast(&p->go);
	pthread_mutex_unlock(&p->lock);

	fn(arg, 0, p->threads);
	/* Run every part no worker has started yet; then wait only for the
	 * ones that are running. */
	for (unsigned int i = 1; i < p->threads; i++)
		if (claim_part(&p->w[i], g)) {
			fn(arg, i, p->threads);
			part_done(p);
		}

	while (atomic_load_explicit(&p->pending, memory_order_acquire)) {
		if (!spin_step(&spins, &t0)) {
			pthread_mutex_lock(&p->lock);
			while (atomic_load(&p->pending))
				pthread_cond_wait(&p->done, &p->lock);
			pthread_mutex_unlock(&p->lock);
			break;
		}
	}
}

/* ---- how many CPUs may we use ---- */

static unsigned int div_up(unsigned long long a, unsigned long long b)
{
	unsigned long long v = (a + b - 1) / b;

	return v > NQ_MAX_THREADS ? NQ_MAX_THREADS : (unsigned int)v;
}

unsigned int nq_cgroup_quota_cpus_v2(const char *cpu_max)
{
	unsigned long long quota, period = 100000;
	int n;

	if (!cpu_max || !strncmp(cpu_max, "max", 3))
		return 0;
	n = sscanf(cpu_max, "%llu %llu", &quota, &period);
	if (n < 1 || !quota || !period)
		return 0;
	return div_up(quota, period);
}

unsigned int nq_cgroup_quota_cpus_v1(const char *quota, const char *period)
{
	long long q, per;

	if (!quota || !period || sscanf(quota, "%lld", &q) != 1 || sscanf(period, "%lld", &per) != 1)
		return 0;
	if (q <= 0 || per <= 0)		/* -1: unlimited */
		return 0;
	return div_up((unsigned long long)q, (unsigned long long)per);
}

static int read_small(const char *path, char *buf, size_t size)
{
	FILE *f = fopen(path, "re");
	size_t n;

	if (!f)
		return -1;
	n = fread(buf, 1, size - 1, f);
	fclose(f);
	buf[n] = 0;
	return n ? 0 : -1;
}

/* Is `tok` one of the comma-separated names in `list`? */
static int has_token(const char *list, const char *tok)
{
	size_t n = strlen(tok);

	for (const char *p = list; p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
		if (!strncmp(p, tok, n) && (p[n] == ',' || p[n] == 0))
			return 1;
	return 0;
}

static void keep_lowest(unsigned int *best, unsigned int v)
{
	if (v && (!*best || v < *best))
		*best = v;
}

/*
 * The quota of cgroup `dir` (a path from /proc/self/cgroup) and of every
 * ancestor, since a parent's limit binds its children: the lowest wins.
 * v2 reads cpu.max under `root`; v1 cpu.cfs_quota_us / cpu.cfs_period_us.
 * Inside a container the path may not exist under the mount (own
 * namespace); the walk then ends at the mount's root, the process's own.
 */
static void walk_quota(const char *root, const char *dir, bool v2, unsigned int *best)
{
	char path[1024], q[1100], a[64], b[64];
	size_t n;

	snprintf(path, sizeof(path), "%s%s", root, dir);
	n = strlen(path);
	while (n && path[n - 1] == '/')
		path[--n] = 0;
	for (;;) {
		if (v2) {
			snprintf(q, sizeof(q), "%s/cpu.max", path);
			if (!read_small(q, a, sizeof(a)))
				keep_lowest(best, nq_cgroup_quota_cpus_v2(a));
		} else {
			snprintf(q, sizeof(q), "%s/cpu.cfs_quota_us", path);
			if (!read_small(q, a, sizeof(a))) {
				snprintf(q, sizeof(q), "%s/cpu.cfs_period_us", path);
				if (!read_small(q, b, sizeof(b)))
					keep_lowest(best, nq_cgroup_quota_cpus_v1(a, b));
			}
		}
		if (strlen(path) <= strlen(root))
			break;
		*strrchr(path, '/') = 0;
		if (strlen(path) < strlen(root))
			break;
	}
}

/* The lowest CPU quota over the process's cgroups ("0::/path" for v2,
 * "N:cpu,cpuacct:/path" for v1), 0 when unlimited. */
static unsigned int cgroup_quota_cpus(void)
{
	char line[512];
	unsigned int best = 0;
	FILE *f = fopen("/proc/self/cgroup", "re");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL, *nl;

		if (!c2)
			continue;
		if ((nl = strchr(c2, '\n')))
			*nl = 0;
		*c2 = 0;
		if (!strcmp(c1 + 1, "")) {
			walk_quota("/sys/fs/cgroup", c2 + 1, true, &best);
		} else if (has_token(c1 + 1, "cpu")) {
			walk_quota("/sys/fs/cgroup/cpu", c2 + 1, false, &best);
			walk_quota("/sys/fs/cgroup/cpu,cpuacct", c2 + 1, false, &best);
		}
	}
	fclose(f);
	return best;
}

unsigned int nq_cpus_usable(void)
{
	cpu_set_t set;
	unsigned int n = 0, q;

	if (!sched_getaffinity(0, sizeof(set), &set))
		n = (unsigned int)CPU_COUNT(&set);
	if (!n)
		n = 1;
	q = cgroup_quota_cpus();
	if (q && q < n)
		n = q;
	return n > NQ_MAX_THREADS ? NQ_MAX_THREADS : n;
}

int nq_threads_choose(unsigned int requested, unsigned int *out)
{
	const char *env = getenv("NQ_THREADS");

	if (requested) {
		*out = requested > NQ_MAX_THREADS ? NQ_MAX_THREADS : requested;
		return 0;
	}
	if (env && *env) {
		char *end;
		long v = strtol(env, &end, 10);

		if (*end || v < 1 || v > NQ_MAX_THREADS)
			return nq_fail(-EINVAL, "NQ_THREADS=%s: expected a number in 1..%d",
				       env, NQ_MAX_THREADS);
		*out = (unsigned int)v;
		return 0;
	}
	*out = nq_cpus_usable();
	return 0;
}
