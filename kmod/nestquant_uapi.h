/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR MIT */
/*
 * nestquant.ko user-space interface: purgeable regions for the residual
 * (lower-bit) planes of a NestQuant model.
 *
 * A region is memory the kernel may take back in its own reclaim, the moment
 * it needs the pages, unless user space holds a pin on it (ashmem semantics,
 * one region per open file):
 *
 *	fd = open("/dev/nestquant", O_RDWR | O_CLOEXEC);
 *	ioctl(fd, NQ_KMOD_IOC_CREATE, &create);	size; returns the mmap offsets
 *	status = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
 *		      create.status_offset);
 *	data = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, create.data_offset);
 *	ioctl(fd, NQ_KMOD_IOC_FILL, &fill);	one or more times, from a file
 *	ioctl(fd, NQ_KMOD_IOC_PUBLISH);		contents complete and valid
 *
 * Filling.  NQ_KMOD_IOC_FILL names a readable regular file (fd, offset,
 * length); the module kernel_read()s it straight into the region's pages.
 * That is one CPU copy per byte (page cache -> region page), plus the device
 * read if the file was not cached.  A region is filled in any number of
 * calls and becomes usable only with NQ_KMOD_IOC_PUBLISH, which fails with
 * -ENODATA while any page of the region is missing (never filled, or purged
 * since).  FILL on a published region fails with -EBUSY: published contents
 * never change under a reader.
 *
 * Mappings.  Data is mapped read-only and shared (writable or private
 * mappings are refused, and mprotect() cannot add PROT_WRITE).  The status
 * page is mapped shared and writable.  Offsets are per region (like DRM's
 * fake offsets): use the ones NQ_KMOD_IOC_CREATE returns.
 *
 * Pinning: the status page.  A full-bit inference must not see a page
 * disappear, so it pins the region for its duration.  Pinning is a single
 * atomic read-modify-write on the shared status word, no system call -- an
 * inference runs thousands of times a second and an ioctl per pin would
 * cost more than the residual planes save.  The state word holds the pin
 * count (bits 0-30) and NQ_KMOD_PURGED (bit 31):
 *
 *	pin:	old = atomic_fetch_add(&st->state, 1, acquire);
 *		if (old & NQ_KMOD_PURGED) {
 *			atomic_fetch_sub(&st->state, 1, release);
 *			serve part-bit: the region is not (or no longer) valid;
 *		}
 *	unpin:	atomic_fetch_sub(&st->state, 1, release);
 *
 * The shrinker purges a region only by a compare-and-swap of the state word
 * from "pin count 0, not purged" to NQ_KMOD_PURGED, before it unmaps and
 * frees any page.  Both sides modify the same word atomically, so exactly
 * one of them wins: either the pin's fetch_add saw NQ_KMOD_PURGED (and the
 * reader backs off) or the shrinker's compare-and-swap saw the pin (and
 * leaves the region alone).  A successful pin therefore guarantees that
 * every page of the region stays mapped with its published contents until
 * the matching unpin.  The acquire/release orderings keep the reader's data
 * loads inside the pinned interval.
 *
 * NQ_KMOD_PURGED is set while a region is not usable: after CREATE, after a
 * purge, and during refill; PUBLISH clears it.  The pin count belongs to
 * user space; the kernel never changes it and only ever reads it.  A process
 * that corrupts its own status word can only hurt itself: the kernel keeps
 * its own copy of every other field, and pages are accounted to the memory
 * cgroup of the process that filled them.
 *
 * After a purge.  The data pages are unmapped from every process and freed;
 * any later read of the data mapping sees zero-filled pages (ashmem's
 * semantics: a careless reader gets zeros, never SIGBUS).  Readers that
 * follow the pin protocol never see those zeros.  purge_seq counts purges,
 * purge_time_ns is the CLOCK_MONOTONIC time the pages were freed, and
 * poll()/epoll on the fd reports EPOLLPRI while the region is purged and not
 * yet republished (level-triggered: refill, or stop polling).
 *
 * Errors (ioctl and mmap return -1 with errno; tests/kmod checks each):
 *	any		ENOTTY unknown command, EFAULT bad argument pointer,
 *			ENXIO no region created on this fd yet
 *	CREATE		EINVAL size 0 or not a page multiple, flags/reserved set;
 *			E2BIG over max_region_mb; ENOSPC over max_total_mb;
 *			EEXIST a region exists on this fd
 *	FILL		EINVAL flags set, length 0, range past the region, fd not
 *			a regular file; EOVERFLOW offsets wrap or exceed
 *			LLONG_MAX; EBADF fd not open for reading; EBUSY region
 *			published; ENODATA file shorter than the range
 *	PUBLISH		EINVAL nonzero argument; ENODATA pages missing;
 *			EALREADY already published
 *	mmap		EINVAL not MAP_SHARED, offset/length outside this fd's
 *			windows, status not exactly one page; EPERM writable data
 */
#ifndef NESTQUANT_UAPI_H
#define NESTQUANT_UAPI_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define NQ_KMOD_DEVICE		"/dev/nestquant"

/* Status word: pin count in bits 0-30, NQ_KMOD_PURGED in bit 31. */
#define NQ_KMOD_PURGED		0x80000000u
#define NQ_KMOD_PIN_MASK	0x7fffffffu

/* The shared status page (the first bytes of one page). */
struct nq_kmod_status {
	__u32 state;		/* user: atomic pin count; kernel: PURGED bit */
	__u32 purge_seq;	/* kernel: purges of this region so far */
	__u32 publish_seq;	/* kernel: successful PUBLISH calls so far */
	__u32 reserved;
	__u64 purge_time_ns;	/* kernel: CLOCK_MONOTONIC of the last purge */
	__u64 resident_pages;	/* kernel: data pages held now */
};

struct nq_kmod_create {
	__u64 size;		/* in: bytes, a multiple of the page size */
	__u32 flags;		/* in: must be 0 */
	__u32 reserved;		/* in: must be 0 */
	__u64 data_offset;	/* out: mmap offset of the data */
	__u64 status_offset;	/* out: mmap offset of the status page */
};

struct nq_kmod_fill {
	__s32 fd;		/* readable regular file */
	__u32 flags;		/* must be 0 */
	__u64 file_offset;	/* where to read in the file */
	__u64 region_offset;	/* where to write in the region */
	__u64 length;		/* bytes; the file must hold them all */
};

struct nq_kmod_info {
	__u64 size;
	__u64 data_offset;
	__u64 status_offset;
	__u64 resident_pages;
	__u32 published;	/* 1 while contents are valid */
	__u32 purge_seq;
	__u32 publish_seq;
	__u32 reserved;
};

/* Module-wide counters; any open fd may ask, with or without a region. */
struct nq_kmod_stats {
	__u64 count_calls;	/* shrinker count_objects calls */
	__u64 scan_calls;	/* shrinker scan_objects calls */
	__u64 purges;		/* regions purged */
	__u64 pages_purged;	/* data pages freed by purges */
	__u64 pages_allocated;	/* data + status pages held now, all regions */
	__u64 regions;		/* regions alive now */
	__u64 skipped_pinned;	/* purge attempts refused by a pin */
	__u64 skipped_busy;	/* trylock failures (region or list busy) */
	__u64 last_purge_ns;	/* CLOCK_MONOTONIC of the last purge */
	__u64 last_scan_to_free_ns; /* scan entry -> pages freed, last purge */
	__u64 max_scan_to_free_ns;
	__u64 reserved[5];
};

#define NQ_KMOD_IOC_MAGIC	0xB7

#define NQ_KMOD_IOC_CREATE	_IOWR(NQ_KMOD_IOC_MAGIC, 1, struct nq_kmod_create)
#define NQ_KMOD_IOC_FILL	_IOW(NQ_KMOD_IOC_MAGIC, 2, struct nq_kmod_fill)
#define NQ_KMOD_IOC_PUBLISH	_IO(NQ_KMOD_IOC_MAGIC, 3)
#define NQ_KMOD_IOC_INFO	_IOR(NQ_KMOD_IOC_MAGIC, 4, struct nq_kmod_info)
#define NQ_KMOD_IOC_STATS	_IOR(NQ_KMOD_IOC_MAGIC, 5, struct nq_kmod_stats)

#endif /* NESTQUANT_UAPI_H */
