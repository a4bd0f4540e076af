// SPDX-License-Identifier: MIT
/*
 * Plane residency mechanisms: page-in (io_uring batches or the plain
 * fallback, always finished by MADV_POPULATE_READ), drop (MADV_DONTNEED +
 * POSIX_FADV_DONTNEED, MADV_PAGEOUT, or unmap only) and the measurements
 * that confirm them (mincore, /proc/self/pagemap, cachestat).  See
 * residency.h for what each method does and why.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "nq_error.h"
#include "residency.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif
#ifndef __NR_cachestat
#define __NR_cachestat 451	/* the same number on every architecture */
#endif

const char *nq_pagein_name(enum nq_pagein how)
{
	switch (how) {
	case NQ_PAGEIN_DEFAULT: return "auto (cold: 2 MiB populate batches, willneed at unaligned ends; cached: populate)";
	case NQ_PAGEIN_POPULATE: return "populate";
	case NQ_PAGEIN_WILLNEED: return "willneed";
	case NQ_PAGEIN_READ: return "read";
	case NQ_PAGEIN_PREAD: return "pread";
	}
	return "default";
}

const char *nq_drop_name(enum nq_drop how)
{
	switch (how) {
	case NQ_DROP_DONTNEED: return "dontneed";
	case NQ_DROP_PAGEOUT: return "pageout";
	case NQ_DROP_UNMAP: return "unmap";
	case NQ_DROP_DEFAULT: break;
	}
	return "default";
}

int nq_res_init(struct nq_res *r, int fd, const uint8_t *base, uint64_t size, unsigned int flags)
{
	long ps = sysconf(_SC_PAGESIZE);
	int err;

	memset(r, 0, sizeof(*r));
	r->fd = fd;
	r->base = base;
	r->size = size;
	r->page = ps > 0 ? (uint64_t)ps : 4096;
	r->pagemap_fd = -1;
	if (fd < 0) {
		strcpy(r->io_why, "no file (memory model)");
		return 0;
	}
	r->scratch = aligned_alloc(r->page, NQ_RES_CHUNK);
	if (!r->scratch)
		return nq_fail(-ENOMEM, "residency: out of memory");
	/*
	 * Reads through our fd (io_uring READ, pread) then fetch exactly the
	 * range asked for: with the default readahead they would run on into
	 * the next region, and fault-around (which maps cached neighbours of
	 * a faulting page) would then put those pages in our page tables.
	 */
	(void)posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
	/* Probe on the header page, which is always there. */
	r->have_populate = madvise((void *)base, r->page, MADV_POPULATE_READ) == 0;
	/* Faults read one page until the switch says whether planes are
	 * dropped (nq_res_advise_dropped()). */
	(void)madvise((void *)base, size, MADV_RANDOM);
	r->dropped = true;
	/*
	 * PMD-sized folios need the virtual address and the file offset to
	 * agree modulo 2 MiB (the file is mapped from offset 0) and THP in the
	 * kernel; a kernel without it fails MADV_HUGEPAGE (mark() then turns
	 * this off).
	 */
	r->huge = !((uintptr_t)base & (NQ_RES_PMD - 1)) && size >= NQ_RES_PMD && r->page == 4096 &&
		  access("/sys/kernel/mm/transparent_hugepage/enabled", F_OK) == 0;
	r->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (flags & NQ_RES_NO_URING) {
		strcpy(r->io_why, "plain madvise/pread: io_uring turned off (NQ_OPEN_NO_URING)");
		return 0;
	}
	err = io_uring_queue_init(NQ_RES_QD, &r->ring, 0);
	if (err < 0) {
		snprintf(r->io_why, sizeof(r->io_why),
			 "plain madvise/pread: io_uring_setup failed (%s; see /proc/sys/kernel/io_uring_disabled)",
			 strerror(-err));
		return 0;
	}
	r->have_uring = true;
	strcpy(r->io_why, "io_uring");
	return 0;
}

void nq_res_fini(struct nq_res *r)
{
	if (r->have_uring)
		io_uring_queue_exit(&r->ring);
	r->have_uring = false;
	if (r->pagemap_fd >= 0)
		close(r->pagemap_fd);
	r->pagemap_fd = -1;
	free(r->scratch);
	r->scratch = NULL;
}

struct nq_extent nq_res_round_out(const struct nq_res *r, uint64_t off, uint64_t len)
{
	uint64_t end = off + len, lim = (r->size + r->page - 1) & ~(r->page - 1);

	off &= ~(r->page - 1);
	end = (end + r->page - 1) & ~(r->page - 1);
	if (end > lim)
		end = lim;
	return (struct nq_extent){ .off = off, .len = end > off ? end - off : 0 };
}

static int check_extent(const struct nq_res *r, const struct nq_extent *e)
{
	if ((e->off | e->len) & (r->page - 1) || e->off > r->size || e->len > r->size - e->off + r->page)
		return nq_fail(-EINVAL, "residency: range %llu+%llu is not page-aligned inside the file",
			       (unsigned long long)e->off, (unsigned long long)e->len);
	return 0;
}

int nq_res_cached(const struct nq_res *r, uint64_t off, uint64_t len, uint64_t *bytes)
{
	struct nq_extent e = nq_res_round_out(r, off, len);
	unsigned char *vec;
	uint64_t pages, n = 0;

	*bytes = 0;
	if (r->fd < 0 || !e.len)
		return 0;
	pages = e.len / r->page;
	vec = malloc(pages);
	if (!vec)
		return nq_fail(-ENOMEM, "residency: out of memory");
	if (mincore((void *)(r->base + e.off), e.len, vec) < 0) {
		int err = -errno;

		free(vec);
		return nq_fail(err, "mincore: %s", strerror(-err));
	}
	for (uint64_t i = 0; i < pages; i++)
		n += vec[i] & 1;
	free(vec);
	*bytes = n * r->page;
	return 0;
}

int nq_res_mapped(const struct nq_res *r, uint64_t off, uint64_t len, uint64_t *bytes)
{
	struct nq_extent e = nq_res_round_out(r, off, len);
	uint64_t first, pages, n = 0, buf[512];

	*bytes = 0;
	if (r->fd < 0 || !e.len)
		return 0;
	if (r->pagemap_fd < 0)
		return nq_fail(-ENOTSUP, "residency: /proc/self/pagemap cannot be read");
	first = ((uintptr_t)r->base + e.off) / r->page;
	pages = e.len / r->page;
	for (uint64_t done = 0; done < pages;) {
		uint64_t want = pages - done < 512 ? pages - done : 512;
		ssize_t got = pread(r->pagemap_fd, buf, want * 8, (off_t)((first + done) * 8));

		if (got <= 0 || got % 8)
			return nq_fail(got < 0 ? -errno : -EIO, "residency: reading /proc/self/pagemap failed");
		for (ssize_t i = 0; i < got / 8; i++)
			n += buf[i] >> 63;
		done += (uint64_t)got / 8;
	}
	*bytes = n * r->page;
	return 0;
}

int nq_res_cachestat(int fd, uint64_t off, uint64_t len, uint64_t *bytes)
{
	struct { uint64_t off, len; } range = { off, len };
	struct { uint64_t cache, dirty, writeback, evicted, recently_evicted; } cs;
	long ps = sysconf(_SC_PAGESIZE);

	*bytes = 0;
	if (syscall(__NR_cachestat, fd, &range, &cs, 0) < 0) {
		int err = -errno;

		return nq_fail(err, "cachestat: %s", strerror(-err));
	}
	*bytes = cs.cache * (uint64_t)(ps > 0 ? ps : 4096);
	return 0;
}

static uint64_t sum_cached(const struct nq_res *r, const struct nq_extent *ext, unsigned int n)
{
	uint64_t sum = 0, b;

	for (unsigned int i = 0; i < n; i++)
		if (!nq_res_cached(r, ext[i].off, ext[i].len, &b))
			sum += b;
	return sum;
}

static uint64_t sum_mapped(const struct nq_res *r, const struct nq_extent *ext, unsigned int n)
{
	uint64_t sum = 0, b;

	for (unsigned int i = 0; i < n; i++)
		if (!nq_res_mapped(r, ext[i].off, ext[i].len, &b))
			sum += b;
	return sum;
}

/*
 * Map every page of the range into our page tables.  MADV_POPULATE_READ
 * faults the whole range in one call (and fails instead of raising SIGBUS
 * past the end of the file); without it, one read per page does the same.
 */
static int populate(struct nq_res *r, const struct nq_extent *e)
{
	if (r->have_populate) {
		while (madvise((void *)(r->base + e->off), e->len, MADV_POPULATE_READ) < 0) {
			int err = -errno;

			if (err == -EINTR || err == -EAGAIN)
				continue;
			return nq_fail(err, "page-in: MADV_POPULATE_READ of %llu+%llu: %s",
				       (unsigned long long)e->off, (unsigned long long)e->len,
				       strerror(-err));
		}
		return 0;
	}
	for (uint64_t o = 0; o < e->len; o += r->page)
		(void)*(volatile const uint8_t *)(r->base + e->off + o);
	return 0;
}

enum batch_op { OP_WILLNEED, OP_READ, OP_POPULATE };

/*
 * Queue one request per chunk of every extent, NQ_RES_QD in flight.
 * OP_POPULATE goes by 2 MiB (one PMD folio per request, faulted in by the
 * io-wq workers in parallel); its failures are left to the populate() that
 * follows every page-in, which reports them.
 */
static int uring_batch(struct nq_res *r, const struct nq_extent *ext, unsigned int n,
		       enum batch_op op)
{
	uint64_t chunk = op == OP_POPULATE ? NQ_RES_PMD : NQ_RES_CHUNK;
	unsigned int inflight = 0, i = 0;
	uint64_t at;
	int err = 0;

	while (i < n && !ext[i].len)
		i++;
	at = i < n ? ext[i].off : 0;
	for (;;) {
		struct io_uring_cqe *cqe;

		while (!err && i < n && inflight < NQ_RES_QD) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
			uint64_t end = ext[i].off + ext[i].len;
			uint32_t len = (uint32_t)(end - at < chunk ? end - at : chunk);

			if (!sqe)
				break;
			if (op == OP_READ)
				io_uring_prep_read(sqe, r->fd, r->scratch, len, at);
			else
				io_uring_prep_madvise(sqe, (void *)(r->base + at), len,
						      op == OP_POPULATE ? MADV_POPULATE_READ : MADV_WILLNEED);
			inflight++;
			at += len;
			if (at >= end) {
				while (++i < n && !ext[i].len)
					;
				if (i < n)
					at = ext[i].off;
			}
		}
		if (!inflight)
			break;
		err = err ? err : io_uring_submit(&r->ring) < 0 ? -EIO : 0;
		if (io_uring_wait_cqe(&r->ring, &cqe) < 0) {
			err = err ? err : -EIO;
			break;
		}
		if (cqe->res < 0 && !err && op != OP_POPULATE)
			err = cqe->res;
		io_uring_cqe_seen(&r->ring, cqe);
		inflight--;
	}
	if (err)
		return nq_fail(err, "page-in: io_uring %s failed: %s", op == OP_READ ? "read" : "madvise",
			       strerror(-err));
	return 0;
}

/* The PMD-aligned interior [*a, *b) of e (empty: *a == *b); at the end of
 * the file the interior runs to the end (no folio can reach past it). */
static void interior(const struct nq_res *r, const struct nq_extent *e, uint64_t *a, uint64_t *b)
{
	uint64_t end = e->off + e->len, lim = (r->size + r->page - 1) & ~(r->page - 1);

	*a = (e->off + NQ_RES_PMD - 1) & ~(NQ_RES_PMD - 1);
	*b = end == lim ? end : end & ~(NQ_RES_PMD - 1);
	if (!r->huge || *b <= *a)
		*a = *b = e->off;
}

static int advise(struct nq_res *r, uint64_t off, uint64_t len, int a1, int a2)
{
	if (!len)
		return 0;
	if (madvise((void *)(r->base + off), len, a1) < 0 ||
	    madvise((void *)(r->base + off), len, a2) < 0)
		return -errno;
	return 0;
}

/* [off, off + len) back to the mapping's fault advice outside a page-in
 * (nq_res_advise_dropped()). */
static void rest(const struct nq_res *r, uint64_t off, uint64_t len)
{
	(void)madvise((void *)(r->base + off), len, r->dropped ? MADV_RANDOM : MADV_NORMAL);
}

/*
 * Set the fault behaviour of e for a page-in (see "Large folios" in
 * residency.h): exact, one page (or one PMD folio in a huge interior) per
 * fault, so that the bytes read are the range's and no neighbour's; head
 * and tail not huge, so an earlier page-in of a larger range cannot make a
 * fault here read past e.  Unless around is set: an explicit POPULATE of a
 * cold range, whose faults are meant to read around.  Afterwards unmark()
 * puts the resting advice back (huge interiors keep MADV_HUGEPAGE).  A
 * kernel without THP turns large folios off for good.
 */
static void mark(struct nq_res *r, const struct nq_extent *e, bool around)
{
	const int edge = around ? MADV_NORMAL : MADV_RANDOM;
	uint64_t a, b, end = e->off + e->len;

	if (!e->len)
		return;
	if (r->huge) {
		interior(r, e, &a, &b);
		if (!advise(r, e->off, a - e->off, MADV_NOHUGEPAGE, edge) &&
		    !advise(r, b, end - b, MADV_NOHUGEPAGE, edge) &&
		    !advise(r, a, b - a, MADV_HUGEPAGE, MADV_RANDOM))
			return;
		r->huge = false;
	}
	(void)madvise((void *)(r->base + e->off), e->len, edge);
}

/* After a page-in: the resting advice again. */
static void unmark(struct nq_res *r, const struct nq_extent *ext, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++)
		if (ext[i].len)
			rest(r, ext[i].off, ext[i].len);
}

void nq_res_advise_dropped(struct nq_res *r, bool dropped)
{
	if (r->fd < 0 || dropped == r->dropped)
		return;
	r->dropped = dropped;
	rest(r, 0, r->size);
}

static int pread_all(struct nq_res *r, const struct nq_extent *e)
{
	for (uint64_t o = e->off; o < e->off + e->len;) {
		size_t want = e->off + e->len - o < NQ_RES_CHUNK ? e->off + e->len - o : NQ_RES_CHUNK;
		ssize_t got = pread(r->fd, r->scratch, want, (off_t)o);

		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return nq_fail(-errno, "page-in: pread at %llu: %s", (unsigned long long)o,
				       strerror(errno));
		if (got == 0)
			break;
		o += (uint64_t)got;
	}
	return 0;
}

/*
 * Cold default page-in with large folios: the unaligned heads and tails are
 * queued as MADV_WILLNEED (exact, order-0), then the interiors are faulted
 * in 2 MiB at a time by io_uring MADV_POPULATE_READ, each fault reading one
 * PMD folio.
 */
static int cold_huge(struct nq_res *r, const struct nq_extent *ext, unsigned int n)
{
	struct nq_extent *edge = malloc(3 * (size_t)n * sizeof(*edge)), *mid = edge + 2 * n;
	uint64_t a, b;
	int err;

	if (!edge)
		return nq_fail(-ENOMEM, "residency: out of memory");
	for (unsigned int i = 0; i < n; i++) {
		interior(r, &ext[i], &a, &b);
		edge[2 * i] = (struct nq_extent){ ext[i].off, a - ext[i].off };
		edge[2 * i + 1] = (struct nq_extent){ b, ext[i].off + ext[i].len - b };
		mid[i] = (struct nq_extent){ a, b - a };
	}
	err = uring_batch(r, edge, 2 * n, OP_WILLNEED);
	if (!err)
		err = uring_batch(r, mid, n, OP_POPULATE);
	free(edge);
	return err;
}

int nq_res_page_in(struct nq_res *r, const struct nq_extent *ext, unsigned int n,
		   enum nq_pagein how, uint64_t *bytes_read)
{
	uint64_t total = 0, before = 0;
	bool around;
	int err = 0;

	if (bytes_read)
		*bytes_read = 0;
	if (r->fd < 0 || !n)
		return 0;
	for (unsigned int i = 0; i < n; i++) {
		err = check_extent(r, &ext[i]);
		if (err)
			return err;
		total += ext[i].len;
	}
	before = sum_cached(r, ext, n);
	around = how == NQ_PAGEIN_POPULATE && before < total;
	for (unsigned int i = 0; i < n; i++)
		mark(r, &ext[i], around);
	if (how == NQ_PAGEIN_DEFAULT && before < total && r->huge && r->have_uring) {
		err = cold_huge(r, ext, n);
		if (err)
			return err;
		how = NQ_PAGEIN_POPULATE;
	}
	if (how == NQ_PAGEIN_DEFAULT)
		how = before == total ? NQ_PAGEIN_POPULATE : NQ_PAGEIN_WILLNEED;
	switch (how) {
	case NQ_PAGEIN_WILLNEED:
		if (r->have_uring)
			err = uring_batch(r, ext, n, OP_WILLNEED);
		else
			for (unsigned int i = 0; i < n; i++)
				(void)madvise((void *)(r->base + ext[i].off), ext[i].len, MADV_WILLNEED);
		break;
	case NQ_PAGEIN_READ:
		if (r->have_uring) {
			err = uring_batch(r, ext, n, OP_READ);
			break;
		}
		/* no io_uring: read the plain way */
		/* fall through */
	case NQ_PAGEIN_PREAD:
		for (unsigned int i = 0; i < n && !err; i++)
			err = pread_all(r, &ext[i]);
		break;
	default:
		break;
	}
	for (unsigned int i = 0; i < n && !err; i++)
		err = populate(r, &ext[i]);
	unmark(r, ext, n);
	if (err)
		return err;
	if (bytes_read)
		*bytes_read = total > before ? total - before : 0;
	return 0;
}

uint64_t nq_res_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Our pagemap "present" bits for the pages of the block at blk. */
static void present(const struct nq_res *r, uint64_t blk, uint64_t *bits)
{
	uint64_t pm[512];
	ssize_t got = pread(r->pagemap_fd, pm, sizeof(pm), (off_t)(((uintptr_t)r->base + blk) / r->page * 8));

	memset(bits, 0, 8 * sizeof(*bits));
	for (ssize_t p = 0; got > 0 && p < got / 8; p++)
		if (pm[p] >> 63)
			bits[p / 64] |= 1ull << (p % 64);
}

/* Is page offset o inside one of the n extents? */
static bool in_extents(const struct nq_extent *ext, unsigned int n, uint64_t o)
{
	for (unsigned int i = 0; i < n; i++)
		if (o >= ext[i].off && o - ext[i].off < ext[i].len)
			return true;
	return false;
}

/*
 * A drop that ends inside a 2 MiB block loses more than its own pages:
 * unmapping part of a PMD-mapped file folio zaps the whole PMD (the kernel
 * does not remap the rest with PTEs), so the planes that stay would be out
 * of our page tables.  For every such block (split[]) the pages present
 * before the drop are recorded in keep[] (a bitmap, 512 bits per block),
 * and the block is marked MADV_NOHUGEPAGE so that restore() maps them back
 * with PTEs.  Returns the number of blocks (at most 2 per extent).
 */
static unsigned int split_blocks(struct nq_res *r, const struct nq_extent *ext, unsigned int n,
				 uint64_t *split, uint64_t (*keep)[8])
{
	uint64_t lim = (r->size + r->page - 1) & ~(r->page - 1);
	unsigned int m = 0;

	for (unsigned int i = 0; i < n; i++)
		for (int side = 0; side < 2 && ext[i].len; side++) {
			uint64_t o = side ? ext[i].off + ext[i].len : ext[i].off;
			uint64_t blk = o & ~(NQ_RES_PMD - 1), pages, was[8];

			if (!(o & (NQ_RES_PMD - 1)) || o >= lim || (m && split[m - 1] == blk))
				continue;
			pages = ((lim - blk < NQ_RES_PMD ? lim - blk : NQ_RES_PMD)) / r->page;
			memset(keep[m], 0, sizeof(keep[m]));
			present(r, blk, was);
			for (uint64_t p = 0; p < pages; p++)
				if (was[p / 64] >> (p % 64) & 1 && !in_extents(ext, n, blk + p * r->page))
					keep[m][p / 64] |= 1ull << (p % 64);
			(void)madvise((void *)(r->base + blk), pages * r->page, MADV_NOHUGEPAGE);
			split[m++] = blk;
		}
	return m;
}

/* MADV_WILLNEED (evict: the folio goes first) or MADV_POPULATE_READ each run of set bits. */
static void runs(struct nq_res *r, uint64_t blk, const uint64_t *bits, int advice)
{
	uint64_t run = 0;

	for (uint64_t p = 0; p <= 512; p++) {
		if (p < 512 && bits[p / 64] >> (p % 64) & 1) {
			run++;
			continue;
		}
		if (run)
			(void)madvise((void *)(r->base + blk + (p - run) * r->page), run * r->page, advice);
		run = 0;
	}
}

/*
 * After the unmap: where a split block lost pages that stay (it was one
 * PMD-mapped folio), map them back.  With `evict` the block's folio is
 * evicted first (nothing maps it now) and the pages that stay are read
 * again as order-0 folios, exactly (MADV_WILLNEED, then populate), so the
 * dropped planes leave the page cache as they would without large folios;
 * a budget step pays that re-read, a switch of whole levels (2 MiB-aligned
 * regions) never does.  Then the dropped pages of the block are unmapped
 * once more, since fault-around may have mapped cached neighbours.
 */
static void restore(struct nq_res *r, const struct nq_extent *ext, unsigned int n,
		    const uint64_t *split, uint64_t (*keep)[8], unsigned int m, bool evict)
{
	uint64_t lim = (r->size + r->page - 1) & ~(r->page - 1), now[8];

	for (unsigned int b = 0; b < m; b++) {
		bool lost = false;

		present(r, split[b], now);
		for (int w = 0; w < 8; w++)
			lost |= (keep[b][w] & ~now[w]) != 0;
		if (!lost)
			continue;
		if (evict) {
			uint64_t len = lim - split[b] < NQ_RES_PMD ? lim - split[b] : NQ_RES_PMD;

			(void)madvise((void *)(r->base + split[b]), len, MADV_DONTNEED);
			(void)posix_fadvise(r->fd, (off_t)split[b], (off_t)len, POSIX_FADV_DONTNEED);
			runs(r, split[b], keep[b], MADV_WILLNEED);
		}
		runs(r, split[b], keep[b], MADV_POPULATE_READ);
		for (unsigned int i = 0; i < n; i++) {
			uint64_t lo = split[b] > ext[i].off ? split[b] : ext[i].off;
			uint64_t hi = split[b] + NQ_RES_PMD, end = ext[i].off + ext[i].len;

			hi = hi < end ? hi : end;
			if (lo < hi)
				(void)madvise((void *)(r->base + lo), hi - lo, MADV_DONTNEED);
		}
	}
}

int nq_res_drop(struct nq_res *r, const struct nq_extent *ext, unsigned int n, enum nq_drop how,
		uint64_t *released, uint64_t *unmapped, uint64_t t[2])
{
	uint64_t cached0 = 0, mapped0 = 0, c, mp, *split = NULL, (*keep)[8] = NULL;
	unsigned int nsplit = 0;
	int err;

	if (released)
		*released = 0;
	if (unmapped)
		*unmapped = 0;
	if (t)
		t[0] = t[1] = nq_res_now();
	if (r->fd < 0 || !n)
		return 0;
	for (unsigned int i = 0; i < n; i++) {
		err = check_extent(r, &ext[i]);
		if (err)
			return err;
	}
	if (how == NQ_DROP_DEFAULT)
		how = NQ_DROP_DONTNEED;
	if (released)
		cached0 = sum_cached(r, ext, n);
	if (unmapped)
		mapped0 = sum_mapped(r, ext, n);
	if (r->huge && r->pagemap_fd >= 0 && how != NQ_DROP_PAGEOUT) {
		split = malloc(2 * (size_t)n * sizeof(*split));
		keep = malloc(2 * (size_t)n * sizeof(*keep));
		if (!split || !keep) {
			err = nq_fail(-ENOMEM, "residency: out of memory");
			goto out;
		}
		nsplit = split_blocks(r, ext, n, split, keep);
	}
	/* Unmap everything first: our RSS falls at once; eviction is the
	 * slower part (about 0.5 us per order-0 folio, one per 4 KiB page;
	 * a 2 MiB folio costs about as much as one of those). */
	for (unsigned int i = 0; i < n; i++) {
		void *p = (void *)(r->base + ext[i].off);

		if (!ext[i].len)
			continue;
		if (how == NQ_DROP_PAGEOUT) {
			if (madvise(p, ext[i].len, MADV_PAGEOUT) < 0) {
				err = nq_fail(-errno, "drop: MADV_PAGEOUT: %s%s", strerror(errno),
					      errno == EPERM ? " (needs write access to the file or its ownership)" : "");
				goto out;
			}
		} else if (madvise(p, ext[i].len, MADV_DONTNEED) < 0) {
			err = nq_fail(-errno, "drop: MADV_DONTNEED: %s", strerror(errno));
			goto out;
		}
	}
	if (nsplit)
		restore(r, ext, n, split, keep, nsplit, how == NQ_DROP_DONTNEED);
	if (t)
		t[0] = nq_res_now();
	for (unsigned int i = 0; i < n && how == NQ_DROP_DONTNEED; i++) {
		err = posix_fadvise(r->fd, (off_t)ext[i].off, (off_t)ext[i].len, POSIX_FADV_DONTNEED);
		if (err) {
			err = nq_fail(-err, "drop: POSIX_FADV_DONTNEED: %s", strerror(err));
			goto out;
		}
	}
	if (t)
		t[1] = nq_res_now();
	if (released) {
		c = sum_cached(r, ext, n);
		*released = cached0 > c ? cached0 - c : 0;
	}
	if (unmapped) {
		mp = sum_mapped(r, ext, n);
		*unmapped = mapped0 > mp ? mapped0 - mp : 0;
	}
	err = 0;
out:
	free(split);
	free(keep);
	return err;
}

int nq_res_lock(struct nq_res *r, uint64_t off, uint64_t len)
{
	struct nq_extent e = nq_res_round_out(r, off, len);
	struct rlimit rl;
	char lim[32];
	int err;

	if (r->fd < 0 || !e.len)
		return 0;
	/* The raw syscall: sanitizer runtimes replace mlock() with a no-op. */
	if (!syscall(SYS_mlock, r->base + e.off, e.len))
		return 0;
	err = -errno;
	if (err != -ENOMEM && err != -EPERM && err != -EAGAIN)
		return nq_fail(err, "mlock of the always-resident planes: %s", strerror(-err));
	if (getrlimit(RLIMIT_MEMLOCK, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
		strcpy(lim, "unlimited");
	else
		snprintf(lim, sizeof(lim), "%llu bytes", (unsigned long long)rl.rlim_cur);
	return nq_fail(err == -EAGAIN ? -ENOMEM : err,
		       "--lock-resident: cannot mlock %llu bytes of always-resident planes: RLIMIT_MEMLOCK is %s "
		       "(raise it with `ulimit -l`, LimitMEMLOCK= in a systemd unit, or grant CAP_IPC_LOCK)",
		       (unsigned long long)e.len, lim);
}
