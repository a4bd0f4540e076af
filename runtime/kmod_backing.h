/* SPDX-License-Identifier: MIT */
/*
 * Kernel-module residency (internal): the residual planes of the top
 * level(s) held in nestquant.ko regions instead of the file mapping.
 *
 * For every level k in [from, top] the module gets one region the size of
 * the level's plane range in the file; the module kernel_read()s that range
 * into the region (one copy), and the file's own copy is then dropped from
 * our mapping and from the page cache, so the planes are in memory once.
 * Plane offsets inside the file range map 1:1 onto the region.
 *
 * Readers (switch.c nq_switch_enter/leave, session.c run_node):
 *
 *	run = nq_kmod_pin(kb, level, &mask);	one atomic add per region
 *	... planes of the levels in mask are read from the regions
 *	    (nq_kmod_redirect), every other level from the file ...
 *	nq_kmod_unpin(kb, mask);
 *
 * A region the kernel purged fails its pin: the inference runs at the
 * level below (run < level) and reports it.  Refilling is part of a switch
 * up (nq_kmod_refill, from switch.c under the switch lock): FILL + PUBLISH.
 * A switch down leaves the regions alone: with no pin on them the kernel
 * may take them whenever it needs the pages.
 */
#ifndef NQ_KMOD_BACKING_H
#define NQ_KMOD_BACKING_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "kernels/kernels.h"
#include "kmod_region.h"
#include "nq_format.h"

struct nq_model;

struct nq_kmod_backing {
	unsigned int from, top;			/* levels held in regions */
	struct nq_kmod_region reg[NQ_FORMAT_MAX_LEVELS];	/* [k], from <= k <= top */
	uint64_t off[NQ_FORMAT_MAX_LEVELS];	/* the level's range in the file */
	uint64_t len[NQ_FORMAT_MAX_LEVELS];
	uint32_t seen_seq[NQ_FORMAT_MAX_LEVELS];	/* purge_seq at the last refill */
	_Atomic uint64_t pin_failures;		/* pins that found a region purged */
	_Atomic uint64_t last_fail_ns;		/* CLOCK_MONOTONIC of the first failure after a purge */
	uint64_t refills;			/* under the switch lock */
	uint64_t last_refill_ns;		/* duration of the last refill */
};

static inline uint64_t nq_kmod_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * Pin the regions of levels from..level (stopping at the first purged one).
 * *mask receives the levels pinned (bit k); returns the highest level whose
 * planes are all usable: level when every region pinned (or level < from),
 * else the level below the first purged region.
 */
static inline unsigned int nq_kmod_pin(struct nq_kmod_backing *kb, unsigned int level,
				       unsigned int *mask)
{
	*mask = 0;
	for (unsigned int k = kb->from; k <= level && k <= kb->top; k++) {
		if (nq_kmod_region_pin(&kb->reg[k])) {
			uint64_t zero = 0;

			atomic_fetch_add(&kb->pin_failures, 1);
			atomic_compare_exchange_strong(&kb->last_fail_ns, &zero, nq_kmod_now_ns());
			return k - 1;
		}
		*mask |= 1u << k;
	}
	return level;
}

static inline void nq_kmod_unpin(struct nq_kmod_backing *kb, unsigned int mask)
{
	for (unsigned int k = kb->from; k <= kb->top; k++)
		if (mask & (1u << k))
			nq_kmod_region_unpin(&kb->reg[k]);
}

/* Point the planes of the levels in mask (all pinned) at their regions. */
static inline void nq_kmod_redirect(const struct nq_kmod_backing *kb, unsigned int mask,
				    struct nq_weights *wt)
{
	for (unsigned int k = kb->from; k <= wt->level && k <= kb->top; k++)
		if (mask & (1u << k))
			wt->plane[k].data = kb->reg[k].data + (wt->plane[k].offset - kb->off[k]);
}

/* Is level k held in a region? */
static inline bool nq_kmod_holds(const struct nq_kmod_backing *kb, unsigned int k)
{
	return kb && k >= kb->from && k <= kb->top;
}

/*
 * Refill every purged region of a level <= level (FILL from the .nq file,
 * PUBLISH, drop the file's copy again).  Called by switch.c with the switch
 * lock held.  -ENODATA when a purge took pages again during every retry.
 */
int nq_kmod_refill(struct nq_model *m, unsigned int level);

/*
 * For nq_model_enable_autoswitch: the source name (NULL: $NQ_SIGNAL, else
 * "auto").  "kmod" moves the top level into a region if it is not there
 * yet (its failure is returned); "auto" does so when /dev/nestquant exists
 * (a failure is not an error: auto then picks another source).  *fd: the
 * region fd to watch for purges, or -1.
 */
int nq_kmod_for_signal(struct nq_model *m, const char *signal, int *fd);

/* From nq_model_close(), after switching has stopped. */
void nq_kmod_detach(struct nq_model *m);

#endif
