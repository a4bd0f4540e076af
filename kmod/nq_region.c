// SPDX-License-Identifier: GPL-2.0
/*
 * Purgeable regions: creation, filling from a file, publishing, mapping and
 * purging.  See nestquant_uapi.h for the user-space contract.
 */
#include <linux/fs.h>
#include <linux/file.h>
#include <linux/highmem.h>
#include <linux/idr.h>
#include <linux/mm.h>
#include <linux/poll.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/timekeeping.h>

#include "nq_compat.h"
#include "nq_kmod.h"

atomic_long_t nq_pages_allocated = ATOMIC_LONG_INIT(0);
static atomic_long_t nq_pages_reserved = ATOMIC_LONG_INIT(0);
static DEFINE_IDA(nq_ida);

/*
 * What a read of a page that is not resident (never filled, or purged)
 * maps: one zeroed page shared by every region, mapped read-only.
 */
static struct page *nq_zero_page;

int nq_region_init_module(void)
{
	nq_zero_page = alloc_page(GFP_KERNEL | __GFP_ZERO);
	return nq_zero_page ? 0 : -ENOMEM;
}

void nq_region_exit_module(void)
{
	/* release() frees status pages and regions after a grace period */
	rcu_barrier();
	WARN_ON(atomic_long_read(&nq_pages_allocated));
	__free_page(nq_zero_page);
	ida_destroy(&nq_ida);
}

struct nq_region *nq_region_alloc(void)
{
	struct nq_region *r;

	r = kzalloc(sizeof(*r), GFP_KERNEL);
	if (!r)
		return NULL;
	mutex_init(&r->lock);
	INIT_LIST_HEAD(&r->node);
	init_waitqueue_head(&r->wait);
	return r;
}

static void nq_region_free_rcu(struct rcu_head *head)
{
	struct nq_region *r = container_of(head, struct nq_region, rcu);

	__free_page(r->status_page);
	kfree(r);
}

/* Free every resident data page; the caller has unmapped them. */
static unsigned long nq_free_data_pages(struct nq_region *r)
{
	unsigned long i, freed = 0;

	for (i = 0; i < r->npages; i++) {
		if (!r->pages[i])
			continue;
		__free_page(r->pages[i]);
		r->pages[i] = NULL;
		freed++;
	}
	WRITE_ONCE(r->resident, 0);
	nq_status(r)->resident_pages = 0;
	atomic_long_sub(freed, &nq_pages_allocated);
	return freed;
}

/*
 * The last reference to the file is gone, so no mapping, ioctl or fault can
 * reach the region any more; only the shrinker can, through the list.
 */
void nq_region_release(struct nq_region *r)
{
	if (!r->created) {
		kfree(r);
		return;
	}
	mutex_lock(&nq_regions_lock);
	list_del_rcu(&r->node);
	mutex_unlock(&nq_regions_lock);

	nq_free_data_pages(r);
	kvfree(r->pages);
	ida_free(&nq_ida, r->id);
	atomic_long_sub(r->npages, &nq_pages_reserved);
	atomic_long_dec(&nq_pages_allocated);	/* the status page */
	/* count_objects may still read the status word under RCU */
	call_rcu(&r->rcu, nq_region_free_rcu);
}

int nq_region_create(struct nq_region *r, struct file *file,
		     struct nq_kmod_create *c)
{
	unsigned long npages, cap;
	struct page **pages;
	struct page *status;
	int id, err;

	if (c->flags || c->reserved)
		return -EINVAL;
	if (!c->size || !PAGE_ALIGNED(c->size))
		return -EINVAL;
	if (c->size > NQ_MAX_REGION_BYTES ||
	    c->size > ((u64)READ_ONCE(nq_max_region_mb) << 20))
		return -E2BIG;
	npages = c->size >> PAGE_SHIFT;
	cap = (unsigned long)READ_ONCE(nq_max_total_mb) << (20 - PAGE_SHIFT);

	mutex_lock(&r->lock);
	if (r->created) {
		err = -EEXIST;
		goto err_unlock;
	}
	if (atomic_long_add_return(npages, &nq_pages_reserved) > cap) {
		err = -ENOSPC;
		goto err_unreserve;
	}
	id = ida_alloc_range(&nq_ida, 1, NQ_MAX_REGION_ID, GFP_KERNEL);
	if (id < 0) {
		err = id == -ENOSPC ? -EMFILE : id;
		goto err_unreserve;
	}
	pages = kvcalloc(npages, sizeof(*pages), GFP_KERNEL_ACCOUNT);
	if (!pages) {
		err = -ENOMEM;
		goto err_ida;
	}
	status = alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO);
	if (!status) {
		err = -ENOMEM;
		goto err_pages;
	}
	atomic_long_inc(&nq_pages_allocated);

	r->id = id;
	r->pages = pages;
	r->npages = npages;
	r->size = c->size;
	r->status_page = status;
	r->data_offset = (u64)id << NQ_WINDOW_SHIFT;
	r->status_offset = r->data_offset + NQ_STATUS_DELTA;
	r->mapping = file->f_mapping;
	/* Not valid until PUBLISH: pins fail until then. */
	atomic_set(nq_state(r), (int)NQ_KMOD_PURGED);
	r->created = true;

	mutex_lock(&nq_regions_lock);
	list_add_tail_rcu(&r->node, &nq_regions);
	mutex_unlock(&nq_regions_lock);
	mutex_unlock(&r->lock);

	c->data_offset = r->data_offset;
	c->status_offset = r->status_offset;
	return 0;

err_pages:
	kvfree(pages);
err_ida:
	ida_free(&nq_ida, id);
err_unreserve:
	atomic_long_sub(npages, &nq_pages_reserved);
err_unlock:
	mutex_unlock(&r->lock);
	return err;
}

/*
 * Read [file_offset, +length) of a regular file into the region at
 * region_offset: kernel_read() copies from the page cache straight into the
 * region's pages, one copy per byte.  Pages are allocated on first touch
 * and charged to the caller's memory cgroup; a page the range covers only
 * in part is zeroed first, so no stale kernel memory is ever mapped.
 */
int nq_region_fill(struct nq_region *r, const struct nq_kmod_fill *f)
{
	u64 off = f->region_offset, left = f->length;
	loff_t pos = f->file_offset;
	struct file *src;
	int err = 0;

	if (f->flags || !f->length)
		return -EINVAL;
	if (f->file_offset > LLONG_MAX ||
	    f->length > LLONG_MAX - f->file_offset ||
	    f->region_offset > U64_MAX - f->length)
		return -EOVERFLOW;

	mutex_lock(&r->lock);
	if (!r->created) {
		err = -ENXIO;
		goto out_unlock;
	}
	if (f->region_offset + f->length > r->size) {
		err = -EINVAL;
		goto out_unlock;
	}
	if (r->published) {
		err = -EBUSY;
		goto out_unlock;
	}
	src = fget(f->fd);
	if (!src) {
		err = -EBADF;
		goto out_unlock;
	}
	/* kernel_read() would WARN on a file not open for reading */
	if (!(src->f_mode & FMODE_READ)) {
		err = -EBADF;
		goto out_fput;
	}
	/* No pipes, sockets or devices (this one included): they may block. */
	if (!S_ISREG(file_inode(src)->i_mode)) {
		err = -EINVAL;
		goto out_fput;
	}

	while (left) {
		unsigned long idx = off >> PAGE_SHIFT;
		size_t in = offset_in_page(off);
		size_t chunk = min_t(u64, left, PAGE_SIZE - in);
		struct page *page = r->pages[idx];
		bool fresh = !page;
		ssize_t n;
		void *addr;

		if (fresh) {
			gfp_t gfp = GFP_HIGHUSER | __GFP_ACCOUNT | __GFP_NOWARN;

			if (chunk < PAGE_SIZE)
				gfp |= __GFP_ZERO;
			page = alloc_page(gfp);
			if (!page) {
				err = -ENOMEM;
				break;
			}
		}
		addr = kmap_local_page(page);
		n = kernel_read(src, addr + in, chunk, &pos);
		kunmap_local(addr);
		if (n != (ssize_t)chunk) {
			if (fresh)
				__free_page(page);
			err = n < 0 ? (int)n : -ENODATA;
			break;
		}
		if (fresh) {
			r->pages[idx] = page;
			WRITE_ONCE(r->resident, r->resident + 1);
			atomic_long_inc(&nq_pages_allocated);
		}
		off += chunk;
		left -= chunk;
		if (fatal_signal_pending(current)) {
			err = -EINTR;
			break;
		}
		cond_resched();
	}
	nq_status(r)->resident_pages = r->resident;
out_fput:
	fput(src);
out_unlock:
	mutex_unlock(&r->lock);
	return err;
}

int nq_region_publish(struct nq_region *r)
{
	struct nq_kmod_status *st;
	int err = 0;

	mutex_lock(&r->lock);
	if (!r->created) {
		err = -ENXIO;
		goto out;
	}
	if (r->published) {
		err = -EALREADY;
		goto out;
	}
	if (r->resident != r->npages) {
		err = -ENODATA;
		goto out;
	}
	st = nq_status(r);
	r->published = true;
	r->purge_pending = false;
	/*
	 * Readers may have mapped the zero page where pages were missing;
	 * drop those mappings before any pin can succeed.  Faults wait for
	 * r->lock, so none can map the zero page again meanwhile.
	 */
	unmap_mapping_range(r->mapping, r->data_offset, r->size, 1);
	st->publish_seq = ++r->publish_seq;
	/* Pairs with the acquire of a pin's fetch_add in user space. */
	atomic_fetch_andnot_release((int)NQ_KMOD_PURGED, nq_state(r));
out:
	mutex_unlock(&r->lock);
	return err;
}

int nq_region_info(struct nq_region *r, struct nq_kmod_info *info)
{
	int err = 0;

	memset(info, 0, sizeof(*info));
	mutex_lock(&r->lock);
	if (!r->created) {
		err = -ENXIO;
		goto out;
	}
	info->size = r->size;
	info->data_offset = r->data_offset;
	info->status_offset = r->status_offset;
	info->resident_pages = r->resident;
	info->published = r->published;
	info->purge_seq = r->purge_seq;
	info->publish_seq = r->publish_seq;
out:
	mutex_unlock(&r->lock);
	return err;
}

/*
 * Purge a region: called by the shrinker with r->lock held (trylocked).
 *
 * The compare-and-swap on the shared state word is the whole pin protocol:
 * it succeeds only from "no pin" (or from an already-unusable region), and
 * a pin's fetch_add that comes later sees NQ_KMOD_PURGED and backs off.
 * Only after it do we unmap and free anything.
 *
 * unmap_mapping_range() takes the device mapping's i_mmap_rwsem for read,
 * exactly as reclaim's own try_to_unmap() does for file pages, so it cannot
 * deadlock against reclaim; it touches no filesystem.  We trylock the rwsem
 * first so that a concurrent mmap()/munmap() of the device makes us skip
 * this region instead of waiting.
 *
 * Returns the number of pages freed; *pinned tells a pin refused the purge.
 */
unsigned long nq_region_purge_locked(struct nq_region *r, bool *pinned)
{
	atomic_t *state = nq_state(r);
	struct nq_kmod_status *st = nq_status(r);
	bool was_published = r->published;
	unsigned long freed;
	u32 old;
	u64 now;

	*pinned = false;
	if (!r->resident)
		return 0;
	if (!i_mmap_trylock_read(r->mapping))
		return 0;
	i_mmap_unlock_read(r->mapping);

	old = (u32)atomic_read(state);
	do {
		if (!(old & NQ_KMOD_PURGED) && (old & NQ_KMOD_PIN_MASK)) {
			*pinned = true;
			return 0;
		}
	} while (!atomic_try_cmpxchg(state, (int *)&old,
				     (int)(old | NQ_KMOD_PURGED)));

	r->published = false;
	unmap_mapping_range(r->mapping, r->data_offset, r->size, 1);
	freed = nq_free_data_pages(r);
	nq_account_reclaimed(freed);
	now = ktime_get_ns();

	st->purge_seq = ++r->purge_seq;
	st->purge_time_ns = now;
	nq_stats_note_purge(freed, now);
	if (was_published) {
		r->purge_pending = true;
		wake_up_interruptible_poll(&r->wait, EPOLLPRI);
	}
	return freed;
}

/*
 * Both windows of a region fault here: the status page, and data pages
 * (the resident page, or the shared zero page where none is resident).
 * Pages are inserted under r->lock so a purge cannot free a page between
 * our lookup and its mapping; the purge then zaps whatever we mapped.
 */
static vm_fault_t nq_vm_fault(struct vm_fault *vmf)
{
	struct vm_area_struct *vma = vmf->vma;
	struct nq_region *r = vma->vm_private_data;
	unsigned long data_pgoff = r->data_offset >> PAGE_SHIFT;
	struct page *page;
	int err;

	mutex_lock(&r->lock);
	if (vmf->pgoff == r->status_offset >> PAGE_SHIFT) {
		page = r->status_page;
	} else if (vmf->pgoff >= data_pgoff &&
		   vmf->pgoff - data_pgoff < r->npages) {
		page = r->pages[vmf->pgoff - data_pgoff];
		if (!page)
			page = nq_zero_page;
	} else {
		mutex_unlock(&r->lock);
		return VM_FAULT_SIGBUS;
	}
	err = vm_insert_page(vma, vmf->address, page);
	mutex_unlock(&r->lock);

	if (err == -ENOMEM)
		return VM_FAULT_OOM;
	if (err && err != -EBUSY)
		return VM_FAULT_SIGBUS;
	return VM_FAULT_NOPAGE;
}

static const struct vm_operations_struct nq_vm_ops = {
	.fault = nq_vm_fault,
};

/*
 * Data: read-only and shared, within the region, and never writable later
 * (VM_MAYWRITE cleared).  Status: exactly one page, shared.  Pages are
 * inserted at fault time (VM_MIXEDMAP); the mapping keeps the file and so
 * the region alive after close().
 */
int nq_region_mmap(struct nq_region *r, struct vm_area_struct *vma)
{
	unsigned long pgoff = vma->vm_pgoff, len = vma_pages(vma);
	unsigned long data_pgoff, clear = 0;
	int err = 0;

	mutex_lock(&r->lock);
	if (!r->created) {
		err = -ENXIO;
		goto out;
	}
	if (!(vma->vm_flags & VM_SHARED)) {
		err = -EINVAL;
		goto out;
	}
	data_pgoff = r->data_offset >> PAGE_SHIFT;
	if (pgoff == r->status_offset >> PAGE_SHIFT) {
		if (len != 1) {
			err = -EINVAL;
			goto out;
		}
	} else if (pgoff >= data_pgoff && pgoff - data_pgoff < r->npages &&
		   len <= r->npages - (pgoff - data_pgoff)) {
		if (vma->vm_flags & VM_WRITE) {
			err = -EPERM;
			goto out;
		}
		clear = VM_MAYWRITE;
	} else {
		err = -EINVAL;
		goto out;
	}
	nq_vm_flags_mod(vma, VM_MIXEDMAP | VM_DONTEXPAND | VM_DONTDUMP, clear);
	vma->vm_ops = &nq_vm_ops;
	vma->vm_private_data = r;
out:
	mutex_unlock(&r->lock);
	return err;
}
