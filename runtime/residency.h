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
 *              nq_res_advise_dropped() says.
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
	bool dropped;			/* planes dropped: all MADV_RANDOM (nq_res_advise_dropped()) */
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
 * The mapping's fault advice outside a page-in: the whole mapping
 * MADV_RANDOM while any plane is dropped, MADV_NORMAL while every plane is
 * in force (nq_res_init starts random, until the switch says).
 *
 * Why the whole mapping.  A fault with the default advice reads a
 * read_ahead_kb window around its page (8 MiB on our virtio disk), by file
 * offset, whatever the VMA: one fault on a level-0 page the kernel had
 * reclaimed read 0.7-4 MB of the dropped residual planes back into the
 * page cache (charged to our cgroup, under the very pressure they were
 * dropped for), that pushed the cgroup to its limit again, reclaim took
 * more level-0 pages, and the next fault read around again: in 4 of 20
 * soak cycles a part-bit server thrashed (1.5 million pages read, requests
 * 70-350 ms) while only header, parameters and level 0 were in use.
 * MADV_RANDOM makes every fault read its page alone.  Its price: reclaim
 * ignores the accessed bits of the pages (VM_RAND_READ: the kernel's
 * vma_has_recency() is false), so under pressure it also takes the pages
 * that every inference reads, and they come back one 4 KiB fault at a time
 * (a page-cache hog made the header page fault 129 times in 15 s).  That
 * costs far less than the read-around loop (the same soak: p99 4.9 ms
 * instead of 164 ms, 12x less read), and `--lock-resident`
 * (NQ_OPEN_LOCK_RESIDENT) removes it: the header, the parameters and level
 * 0 are locked and never fault.  With every plane in force nothing can be
 * read back that should not be, and the default advice keeps both
 * read-around and recency.
 * Huge interiors marked by a page-in keep MADV_HUGEPAGE either way.
 */
void nq_res_advise_dropped(struct nq_res *r, bool dropped);

/* mlock [off, off + len); -ENOMEM/-EPERM name RLIMIT_MEMLOCK and its value. */
int nq_res_lock(struct nq_res *r, uint64_t off, uint64_t len);

/* Names for logs ("populate", "dontneed", ...). */
const char *nq_pagein_name(enum nq_pagein how);
const char *nq_drop_name(enum nq_drop how);

#endif
