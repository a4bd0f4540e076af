// SPDX-License-Identifier: GPL-2.0
/*
 * The shrinker: the kernel's reclaim asks how many unpinned resident pages
 * the regions hold (count_objects) and takes them (scan_objects).
 *
 * A region is purged whole: a residual plane with holes is useless, and the
 * runtime falls back to the lower level for the whole level anyway.  The
 * scan therefore may free more than nr_to_scan.  It never waits: the region
 * list and each region are trylocked, and SHRINK_STOP tells reclaim to go
 * elsewhere when nothing could be taken because something was busy.
 */
#include <linux/atomic.h>
#include <linux/ktime.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/rculist.h>
#include <linux/shrinker.h>

#include "nq_compat.h"
#include "nq_kmod.h"

DEFINE_MUTEX(nq_regions_lock);
LIST_HEAD(nq_regions);

static struct shrinker *nq_shrinker;

static atomic64_t nq_count_calls = ATOMIC64_INIT(0);
static atomic64_t nq_scan_calls = ATOMIC64_INIT(0);
static atomic64_t nq_purges = ATOMIC64_INIT(0);
static atomic64_t nq_pages_purged = ATOMIC64_INIT(0);
static atomic64_t nq_skipped_pinned = ATOMIC64_INIT(0);
static atomic64_t nq_skipped_busy = ATOMIC64_INIT(0);
static atomic64_t nq_last_purge_ns = ATOMIC64_INIT(0);
static atomic64_t nq_last_scan_to_free_ns = ATOMIC64_INIT(0);
static atomic64_t nq_max_scan_to_free_ns = ATOMIC64_INIT(0);

void nq_stats_note_purge(unsigned long pages, u64 now_ns)
{
	atomic64_inc(&nq_purges);
	atomic64_add(pages, &nq_pages_purged);
	atomic64_set(&nq_last_purge_ns, now_ns);
}

void nq_stats_read(struct nq_kmod_stats *st)
{
	struct nq_region *r;
	u64 regions = 0;

	memset(st, 0, sizeof(*st));
	rcu_read_lock();
	list_for_each_entry_rcu(r, &nq_regions, node)
		regions++;
	rcu_read_unlock();

	st->count_calls = atomic64_read(&nq_count_calls);
	st->scan_calls = atomic64_read(&nq_scan_calls);
	st->purges = atomic64_read(&nq_purges);
	st->pages_purged = atomic64_read(&nq_pages_purged);
	st->pages_allocated = atomic_long_read(&nq_pages_allocated);
	st->regions = regions;
	st->skipped_pinned = atomic64_read(&nq_skipped_pinned);
	st->skipped_busy = atomic64_read(&nq_skipped_busy);
	st->last_purge_ns = atomic64_read(&nq_last_purge_ns);
	st->last_scan_to_free_ns = atomic64_read(&nq_last_scan_to_free_ns);
	st->max_scan_to_free_ns = atomic64_read(&nq_max_scan_to_free_ns);
}

/*
 * Lockless: regions are RCU-listed and their status pages outlive a grace
 * period.  A region counts while nobody pins it, or while it is unusable
 * anyway (purged bit set: never published, or being refilled).
 */
static unsigned long nq_count_objects(struct shrinker *s,
				      struct shrink_control *sc)
{
	unsigned long n = 0;
	struct nq_region *r;

	atomic64_inc(&nq_count_calls);
	rcu_read_lock();
	list_for_each_entry_rcu(r, &nq_regions, node) {
		unsigned long res = READ_ONCE(r->resident);
		u32 state;

		if (!res)
			continue;
		state = (u32)atomic_read(nq_state(r));
		if ((state & NQ_KMOD_PURGED) || !(state & NQ_KMOD_PIN_MASK))
			n += res;
	}
	rcu_read_unlock();
	return n ? n : SHRINK_EMPTY;
}

static unsigned long nq_scan_objects(struct shrinker *s,
				     struct shrink_control *sc)
{
	s64 t0 = ktime_get_ns(), dt, max;
	unsigned long freed = 0;
	struct nq_region *r;
	bool busy = false;

	atomic64_inc(&nq_scan_calls);
	if (!mutex_trylock(&nq_regions_lock)) {
		atomic64_inc(&nq_skipped_busy);
		return SHRINK_STOP;
	}
	list_for_each_entry(r, &nq_regions, node) {
		unsigned long n;
		bool pinned;

		if (freed >= sc->nr_to_scan)
			break;
		if (!READ_ONCE(r->resident))
			continue;
		if (!mutex_trylock(&r->lock)) {
			atomic64_inc(&nq_skipped_busy);
			busy = true;
			continue;
		}
		n = nq_region_purge_locked(r, &pinned);
		mutex_unlock(&r->lock);
		if (pinned)
			atomic64_inc(&nq_skipped_pinned);
		else if (!n)
			busy = true;	/* i_mmap_rwsem contended */
		freed += n;
	}
	mutex_unlock(&nq_regions_lock);

	if (freed) {
		dt = ktime_get_ns() - t0;
		atomic64_set(&nq_last_scan_to_free_ns, dt);
		max = atomic64_read(&nq_max_scan_to_free_ns);
		while (dt > max &&
		       !atomic64_try_cmpxchg(&nq_max_scan_to_free_ns, &max, dt))
			;
		return freed;
	}
	return busy ? SHRINK_STOP : 0;
}

int nq_shrinker_init(void)
{
	nq_shrinker = nq_shrinker_create("nestquant", nq_count_objects,
					 nq_scan_objects);
	return PTR_ERR_OR_ZERO(nq_shrinker);
}

void nq_shrinker_exit(void)
{
	nq_shrinker_destroy(nq_shrinker);
}
