/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The two kernel API differences nestquant.ko meets between Linux 6.1
 * (Debian 12) and 6.7+ (bookworm-backports' 6.12), behind one name each.
 */
#ifndef NQ_COMPAT_H
#define NQ_COMPAT_H

#include <linux/version.h>
#include <linux/mm.h>
#include <linux/sched.h>
#include <linux/shrinker.h>
#include <linux/swap.h>
#include <linux/slab.h>
#include <linux/err.h>

/*
 * Pages a shrinker frees outside the slab allocator must be credited to the
 * reclaim in progress, or kswapd counts our purge as no progress and, after
 * MAX_RECLAIM_RETRIES such passes, stops being woken for the node.  6.4
 * renamed reclaimed_slab to reclaimed behind mm_account_reclaimed_pages().
 */
static inline void nq_account_reclaimed(unsigned long pages)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 4, 0)
	mm_account_reclaimed_pages(pages);
#else
	if (current->reclaim_state)
		current->reclaim_state->reclaimed_slab += pages;
#endif
}

/*
 * Shrinkers: 6.7 replaced the caller-owned struct shrinker and
 * register_shrinker()/unregister_shrinker() with shrinker_alloc(),
 * shrinker_register() and shrinker_free(); the old calls are gone.
 */
static inline struct shrinker *
nq_shrinker_create(const char *name,
		   unsigned long (*count)(struct shrinker *,
					  struct shrink_control *),
		   unsigned long (*scan)(struct shrinker *,
					 struct shrink_control *))
{
	struct shrinker *s;

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 7, 0)
	s = shrinker_alloc(0, "%s", name);
	if (!s)
		return ERR_PTR(-ENOMEM);
	s->count_objects = count;
	s->scan_objects = scan;
	s->seeks = DEFAULT_SEEKS;
	shrinker_register(s);
#else
	int err;

	s = kzalloc(sizeof(*s), GFP_KERNEL);
	if (!s)
		return ERR_PTR(-ENOMEM);
	s->count_objects = count;
	s->scan_objects = scan;
	s->seeks = DEFAULT_SEEKS;
	err = register_shrinker(s, "%s", name);
	if (err) {
		kfree(s);
		return ERR_PTR(err);
	}
#endif
	return s;
}

static inline void nq_shrinker_destroy(struct shrinker *s)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 7, 0)
	shrinker_free(s);
#else
	unregister_shrinker(s);
	kfree(s);
#endif
}

/* 6.3 made vma->vm_flags read-only behind vm_flags_set()/vm_flags_clear(). */
static inline void nq_vm_flags_mod(struct vm_area_struct *vma,
				   unsigned long set, unsigned long clear)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
	vm_flags_mod(vma, set, clear);
#else
	vma->vm_flags = (vma->vm_flags | set) & ~clear;
#endif
}

#endif /* NQ_COMPAT_H */
