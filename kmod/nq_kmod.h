/* SPDX-License-Identifier: GPL-2.0 */
/*
 * nestquant.ko internals shared by the device (nq_main.c), the regions
 * (nq_region.c) and the shrinker (nq_shrinker.c).
 */
#ifndef NQ_KMOD_H
#define NQ_KMOD_H

#include <linux/atomic.h>
#include <linux/fs.h>
#include <linux/list.h>
#include <linux/mm.h>
#include <linux/mutex.h>
#include <linux/rcupdate.h>
#include <linux/types.h>
#include <linux/wait.h>

#include "nestquant_uapi.h"

/*
 * Each region owns a window of the device's mmap offset space, so that
 * unmap_mapping_range() on the (shared) device inode zaps only its pages:
 * data at window + 0, status page at window + NQ_STATUS_DELTA.
 */
#define NQ_WINDOW_SHIFT		32
#define NQ_STATUS_DELTA		(1ULL << 31)
#define NQ_MAX_REGION_BYTES	(NQ_STATUS_DELTA - PAGE_SIZE)
#define NQ_MAX_REGION_ID	((1 << 19) - 1)

/*
 * One region per open file.  Lock order: region->lock, then
 * nq_regions_lock (create); the shrinker takes nq_regions_lock and only
 * trylocks region->lock, so it never waits for a region.
 *
 * @lock:	serialises ioctls, faults and purges of this region
 * @node:	entry in nq_regions (RCU for count_objects)
 * @pages:	data pages, NULL where not resident
 * @resident:	number of non-NULL @pages (read locklessly by count)
 * @published:	contents complete and valid (kernel's own copy of ~PURGED)
 * @purge_pending: purged since the last publish; poll() reports EPOLLPRI
 */
struct nq_region {
	struct mutex lock;
	struct list_head node;
	struct rcu_head rcu;
	wait_queue_head_t wait;
	struct address_space *mapping;
	struct page *status_page;
	struct page **pages;
	unsigned long npages;
	unsigned long resident;
	u64 size;
	u64 data_offset;
	u64 status_offset;
	int id;
	bool created;
	bool published;
	bool purge_pending;
	u32 purge_seq;
	u32 publish_seq;
};

static inline struct nq_kmod_status *nq_status(struct nq_region *r)
{
	return page_address(r->status_page);
}

/* The status word, shared with user space; the kernel reads it atomically. */
static inline atomic_t *nq_state(struct nq_region *r)
{
	return (atomic_t *)&nq_status(r)->state;
}

/* nq_region.c */
extern atomic_long_t nq_pages_allocated;
extern unsigned int nq_max_region_mb;
extern unsigned int nq_max_total_mb;

int nq_region_init_module(void);
void nq_region_exit_module(void);
struct nq_region *nq_region_alloc(void);
void nq_region_release(struct nq_region *r);
int nq_region_create(struct nq_region *r, struct file *file,
		     struct nq_kmod_create *c);
int nq_region_fill(struct nq_region *r, const struct nq_kmod_fill *f);
int nq_region_publish(struct nq_region *r);
int nq_region_info(struct nq_region *r, struct nq_kmod_info *info);
int nq_region_mmap(struct nq_region *r, struct vm_area_struct *vma);
unsigned long nq_region_purge_locked(struct nq_region *r, bool *pinned);

/* nq_shrinker.c */
extern struct mutex nq_regions_lock;
extern struct list_head nq_regions;

int nq_shrinker_init(void);
void nq_shrinker_exit(void);
void nq_stats_read(struct nq_kmod_stats *st);
void nq_stats_note_purge(unsigned long pages, u64 now_ns);

#endif /* NQ_KMOD_H */
