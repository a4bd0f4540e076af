/* SPDX-License-Identifier: MIT */
/*
 * User-space side of nestquant.ko: a purgeable region holding one level's
 * residual planes, filled from the .nq file by the kernel (one copy), mapped
 * read-only, pinned around each full-bit inference through the shared
 * status page (no system call), and purged by the kernel's own reclaim.
 *
 *	struct nq_kmod_region r;
 *	err = nq_kmod_region_open(&r, size);	   -ENOENT: module not loaded
 *	err = nq_kmod_region_fill(&r, fd, file_off, 0, len);	 (repeat)
 *	err = nq_kmod_region_publish(&r);
 *	...
 *	if (nq_kmod_region_pin(&r) == 0) {
 *		full-bit inference reading r.data;
 *		nq_kmod_region_unpin(&r);
 *	} else {
 *		part-bit inference; refill when the policy says so
 *	}
 *
 * All calls return 0 or a negative errno; failures also leave a message in
 * nq_last_error().  The protocol itself is documented in
 * kmod/nestquant_uapi.h.
 */
#ifndef NQ_KMOD_REGION_H
#define NQ_KMOD_REGION_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include "../kmod/nestquant_uapi.h"

struct nq_kmod_region {
	int fd;				/* /dev/nestquant, one region */
	size_t size;			/* bytes, a page multiple */
	const uint8_t *data;		/* read-only; valid only while pinned */
	struct nq_kmod_status *status;	/* shared status page */
	uint64_t data_offset;
	uint64_t status_offset;
};

/* Is the module loaded (the device node present and openable)? */
int nq_kmod_probe(void);

/*
 * Open the device, create a region of size bytes (rounded up to pages) and
 * map its status page and data.  The region starts unpublished: pins fail
 * with -ESTALE until nq_kmod_region_publish().  -ENOENT: no module.
 */
int nq_kmod_region_open(struct nq_kmod_region *r, size_t size);

/* Let the kernel read length bytes of fd at file_offset into the region. */
int nq_kmod_region_fill(struct nq_kmod_region *r, int fd, uint64_t file_offset,
			uint64_t region_offset, uint64_t length);

/* Mark the contents complete; -ENODATA if a purge took pages meanwhile. */
int nq_kmod_region_publish(struct nq_kmod_region *r);

/*
 * Pin for one full-bit inference: 0 and the data stay valid until the
 * unpin, or -ESTALE when the region is purged or not yet published (a normal
 * outcome, not an error: no message is recorded, and nothing to unpin).
 * One atomic instruction; safe from any thread.
 */
static inline int nq_kmod_region_pin(struct nq_kmod_region *r)
{
	uint32_t old = __atomic_fetch_add(&r->status->state, 1, __ATOMIC_ACQUIRE);

	if (old & NQ_KMOD_PURGED) {
		__atomic_fetch_sub(&r->status->state, 1, __ATOMIC_RELEASE);
		return -ESTALE;
	}
	return 0;
}

static inline void nq_kmod_region_unpin(struct nq_kmod_region *r)
{
	__atomic_fetch_sub(&r->status->state, 1, __ATOMIC_RELEASE);
}

/* Purges so far (changes whenever the kernel took the region). */
static inline uint32_t nq_kmod_region_purge_seq(const struct nq_kmod_region *r)
{
	return __atomic_load_n(&r->status->purge_seq, __ATOMIC_ACQUIRE);
}

/*
 * Wait up to timeout_ms (-1: forever) for a purge: 1 when the region is
 * purged and not republished, 0 on timeout, or a negative errno.
 */
int nq_kmod_region_wait_purge(struct nq_kmod_region *r, int timeout_ms);

int nq_kmod_region_info(struct nq_kmod_region *r, struct nq_kmod_info *info);

/* Module-wide counters (any region's fd). */
int nq_kmod_stats(struct nq_kmod_region *r, struct nq_kmod_stats *st);

/* Unmap and close; the kernel frees the pages.  Safe after a failed open. */
void nq_kmod_region_close(struct nq_kmod_region *r);

#endif
