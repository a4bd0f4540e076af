/* SPDX-License-Identifier: MIT */
/*
 * Plane residency mechanisms (residency.c): bring byte ranges of the mapped
 * .nq file into this process's page tables, take them out again, and say
 * how much of a range is really in memory.  No policy here: which ranges
 * and when is decided by switch.c.
 *
 * The model file is mapped read-only and MAP_SHARED, so its pages are page
 * cache pages.  "Resident in our mapping" (pagemap: present in this
 * process's page tables) and "cached" (mincore/cachestat: in the page cache,
 * whoever maps it) are different questions and both are answered.
 *
 * Page-in methods (enum nq_pagein in nestquant.h), all of which end with
 * MADV_POPULATE_READ over the range so that, when they return 0, every page
 * of the range is in our page tables (a level is published only after that):
 *   POPULATE   MADV_POPULATE_READ alone (Linux >= 5.14): one syscall; on a
 *              cold cache the range is MADV_NORMAL for the call, so the
 *              faults go through synchronous readahead (read_ahead_kb at a
 *              time, running on past the range).  Other faults read as
 *              nq_res_random_from() says.
 *   WILLNEED   io_uring IORING_OP_MADVISE(MADV_WILLNEED) per chunk: the
 *              whole range is queued to the block layer at once, then the
 *              populate waits for it.
 *   READ       io_uring IORING_OP_READ of every chunk into one scratch
 *              buffer (queue depth NQ_RES_QD): large reads in flight fill
 *              the page cache; the populate then only maps pages.  Registered
 *              buffers cannot help: they must be anonymous memory, never a
 *              file-backed mapping, and the destination here is scratch.
 *   PREAD      the fallback without io_uring: pread() of each chunk into
 *              scratch, then populate.
 *   DEFAULT    WILLNEED when any page of the range is missing from the page
 *              cache (mincore), POPULATE when all are cached: the whole cold
 *              range is queued at once and fetched exactly (no readahead past
 *              it), and a warm range costs one syscall (docs/performance.md
 *              "Switching" has the measurements).  With large folios (below)
 *              the cold interior goes by io_uring MADV_POPULATE_READ.
 * Large folios.  Where the kernel can (CONFIG_TRANSPARENT_HUGEPAGE, a file
 * system with large folios in the page cache: ext4 since Linux 6.16, xfs,
 * btrfs) and the mapping is PMD-aligned (the kernel's thp_get_unmapped_area
 * does that for files >= 2 MiB), every page-in marks the PMD-aligned
 * interior of each extent MADV_HUGEPAGE + MADV_RANDOM: a fault there reads
 * exactly one 2 MiB folio (VM_RAND_READ: no second folio ahead) and maps it
 * with one PMD.  The unaligned head and tail of an extent are marked
 * MADV_NOHUGEPAGE + MADV_RANDOM, so their faults never read around into a
 * neighbour's pages: the per-level byte accounting stays exact.  With PMD
 * folios a drop zaps one PMD and frees one folio per 2 MiB instead of 512
 * PTEs and 512 order-0 folios (docs/performance.md "Switching" has the
 * numbers).  On a cold cache the interior is filled by io_uring
 * MADV_POPULATE_READ requests of 2 MiB each (io-wq runs them in parallel);
 * MADV_WILLNEED and reads would allocate order-0 folios (forced readahead)
 * and are used for the head and tail only, or when asked for explicitly.
 * A drop that ends inside a 2 MiB block (a budget step) would lose more:
 * unmapping part of a PMD-mapped file folio zaps the whole PMD, and the
 * kernel never evicts a folio the range only partly covers.  So for such a
 * block the drop records which other pages were mapped (pagemap), evicts
 * the folio and reads those pages back as order-0 folios (MADV_WILLNEED +
 * populate): budgets stay exact to the page and pay up to 2 MiB of re-read
 * per split block; a switch of whole levels in a file whose regions start
 * on 2 MiB (format/writer.c) never splits one.  A split block keeps its PTE
 * table, so later folios there are mapped with PTEs (still one folio each).
 *
 * When io_uring_setup fails (kernel.io_uring_disabled=2, seccomp, an old
 * kernel) WILLNEED becomes madvise(MADV_WILLNEED) and READ becomes PREAD; the
 * reason is kept in nq_res.io_why for the caller to log.
 *
 * Drop methods (enum nq_drop):
 *   DONTNEED   madvise(MADV_DONTNEED) on our range (our page tables let go),
 *              then posix_fadvise(POSIX_FADV_DONTNEED) on the file range,
 *              which evicts only pages that nobody maps: another process
 *              serving the same file keeps its pages and its latency.
 *   PAGEOUT    MADV_PAGEOUT (Linux >= 5.4): reclaims the range's pages that
 *              only we map; the kernel skips shared ones.  Needs write
 *              permission on the file or ownership (else -EPERM).
 *   UNMAP      MADV_DONTNEED only: our RSS drops, the page cache keeps the
 *              pages (a later page-in is "warm").
 *
 * All functions return 0 or a negative errno with nq_fail()'s message.
 */
#ifndef NQ_RESIDENCY_H
#define NQ_RESIDENCY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <liburing.h>

#include "nestquant.h"

#define NQ_RES_CHUNK (1u << 20)		/* bytes per io_uring request */
#define NQ_RES_QD 32			/* requests in flight */
#define NQ_RES_PMD (2ull << 20)		/* x86-64/arm64-4K PMD: one huge folio */

/* One byte range of the file, page-aligned (offset and length). */
struct nq_extent {
	uint64_t off, len;
};

struct nq_res {
	int fd;				/* -1: no file (memory model): everything is a no-op */
	const uint8_t *base;		/* the mapping of the whole file */
	uint64_t size;			/* file size */
	uint64_t page;
	bool have_uring;
	bool have_populate;		/* MADV_POPULATE_READ works */
	bool huge;			/* PMD-sized folios possible (see below) */
	uint64_t random_from;		/* MADV_RANDOM from here on (nq_res_random_from()) */
	struct io_uring ring;
	uint8_t *scratch;		/* NQ_RES_CHUNK bytes, for READ/PREAD */
	int pagemap_fd;			/* /proc/self/pagemap, -1 if unreadable */
	char io_why[160];		/* "io_uring" or why not */
};

/* Set up for the file `fd` mapped at base (size bytes).  io_uring failing is
 * not an error (io_why says why); flags: NQ_RES_NO_URING forces the fallback. */
#define NQ_RES_NO_URING 1u
int nq_res_init(struct nq_res *r, int fd, const uint8_t *base, uint64_t size, unsigned int flags);
void nq_res_fini(struct nq_res *r);

/* Page-aligned extent covering [off, off + len) of the file (rounded out). */
struct nq_extent nq_res_round_out(const struct nq_res *r, uint64_t off, uint64_t len);

/*
 * Make every page of the n extents resident in our mapping.  *bytes_read
 * (may be NULL) receives the bytes that were not in the page cache before
 * (mincore), i.e. what had to come from the file.
 */
int nq_res_page_in(struct nq_res *r, const struct nq_extent *ext, unsigned int n,
		   enum nq_pagein how, uint64_t *bytes_read);

/*
 * Release the n extents.  *released (may be NULL) receives the bytes of the
 * range that left the page cache (mincore before minus after), *unmapped
 * the bytes that left our page tables (pagemap; 0 when unreadable).
 * t[0] and t[1] (t may be NULL) receive the CLOCK_MONOTONIC times (ns) at
 * which every extent was unmapped and at which the release was complete
 * (before the "after" measurements).
 */
int nq_res_drop(struct nq_res *r, const struct nq_extent *ext, unsigned int n, enum nq_drop how,
		uint64_t *released, uint64_t *unmapped, uint64_t t[2]);

/* CLOCK_MONOTONIC in ns. */
uint64_t nq_res_now(void);

/* Bytes of [off, off + len) in the page cache (mincore over our mapping). */
int nq_res_cached(const struct nq_res *r, uint64_t off, uint64_t len, uint64_t *bytes);

/* Bytes of [off, off + len) present in this process's page tables
 * (/proc/self/pagemap bit 63).  -ENOTSUP when pagemap cannot be read. */
int nq_res_mapped(const struct nq_res *r, uint64_t off, uint64_t len, uint64_t *bytes);

/* cachestat(2) (Linux >= 6.5) over a file range: cached bytes.  -ENOSYS
 * where the kernel lacks it. */
int nq_res_cachestat(int fd, uint64_t off, uint64_t len, uint64_t *bytes);

/*
 * The mapping's fault advice, by file offset: [0, from) MADV_NORMAL, the
 * rest MADV_RANDOM (from is rounded down to a page; nq_res_init starts with
 * 0, all random).  The switch keeps `from` at the first byte it dropped, or
 * the file size while every plane is in force.  MADV_RANDOM does two things
 * and we want both only where planes are dropped:
 *  - a fault reads its page alone, not a read_ahead_kb window around it,
 *    which knows no region boundaries: a stray fault in a dropped range
 *    does not read the range back, under the very pressure it was dropped
 *    for;
 *  - reclaim ignores the accessed bits of the pages (VM_RAND_READ: the
 *    kernel's vma_has_recency() is false), so it takes them first however
 *    often they are read.  On the header, the parameters and the planes in
 *    force that would be ruinous: under a page-cache hog the page an
 *    inference reads in every node was evicted and faulted back 129 times
 *    in 15 s.  Below `from` the LRU sees our use and keeps those pages; a
 *    fault there (rare) reads around and may put dropped pages back in the
 *    page cache, though not in our page tables (fault-around stays inside
 *    the VMA), where they are the kernel's first pick.
 * Huge interiors marked by a page-in keep MADV_HUGEPAGE either way.
 */
void nq_res_random_from(struct nq_res *r, uint64_t from);

/* mlock [off, off + len); -ENOMEM/-EPERM name RLIMIT_MEMLOCK and its value. */
int nq_res_lock(struct nq_res *r, uint64_t off, uint64_t len);

/* Names for logs ("populate", "dontneed", ...). */
const char *nq_pagein_name(enum nq_pagein how);
const char *nq_drop_name(enum nq_drop how);

#endif
