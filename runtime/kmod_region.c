// SPDX-License-Identifier: MIT
/*
 * User-space helper for nestquant.ko regions (see kmod_region.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kmod_region.h"
#include "nq_error.h"

int nq_kmod_probe(void)
{
	int fd = open(NQ_KMOD_DEVICE, O_RDWR | O_CLOEXEC);

	if (fd < 0)
		return nq_fail(-errno, "%s: %s (is nestquant.ko loaded?)",
			       NQ_KMOD_DEVICE, strerror(errno));
	close(fd);
	return 0;
}

int nq_kmod_region_open(struct nq_kmod_region *r, size_t size)
{
	long page = sysconf(_SC_PAGESIZE);
	struct nq_kmod_create c;
	void *p;
	int err;

	memset(r, 0, sizeof(*r));
	r->fd = -1;
	if (page <= 0)
		page = 4096;
	if (!size || size > SIZE_MAX - (size_t)page)
		return nq_fail(-EINVAL, "region size %zu: must be 1..SIZE_MAX-page", size);
	size = (size + (size_t)page - 1) & ~((size_t)page - 1);

	r->fd = open(NQ_KMOD_DEVICE, O_RDWR | O_CLOEXEC);
	if (r->fd < 0)
		return nq_fail(-errno, "%s: %s (is nestquant.ko loaded?)",
			       NQ_KMOD_DEVICE, strerror(errno));

	memset(&c, 0, sizeof(c));
	c.size = size;
	if (ioctl(r->fd, NQ_KMOD_IOC_CREATE, &c) < 0) {
		err = nq_fail(-errno, "creating a %zu-byte region: %s", size,
			      strerror(errno));
		goto err_close;
	}
	r->size = size;
	r->data_offset = c.data_offset;
	r->status_offset = c.status_offset;

	p = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd,
		 (off_t)c.status_offset);
	if (p == MAP_FAILED) {
		err = nq_fail(-errno, "mapping the region status page: %s",
			      strerror(errno));
		goto err_close;
	}
	r->status = p;

	p = mmap(NULL, size, PROT_READ, MAP_SHARED, r->fd, (off_t)c.data_offset);
	if (p == MAP_FAILED) {
		err = nq_fail(-errno, "mapping %zu bytes of region data: %s", size,
			      strerror(errno));
		goto err_unmap_status;
	}
	r->data = p;
	return 0;

err_unmap_status:
	munmap(r->status, (size_t)page);
	r->status = NULL;
err_close:
	close(r->fd);
	r->fd = -1;
	return err;
}

int nq_kmod_region_fill(struct nq_kmod_region *r, int fd, uint64_t file_offset,
			uint64_t region_offset, uint64_t length)
{
	struct nq_kmod_fill f;

	memset(&f, 0, sizeof(f));
	f.fd = fd;
	f.file_offset = file_offset;
	f.region_offset = region_offset;
	f.length = length;
	if (ioctl(r->fd, NQ_KMOD_IOC_FILL, &f) < 0)
		return nq_fail(-errno,
			       "filling region bytes %llu+%llu from file offset %llu: %s",
			       (unsigned long long)region_offset,
			       (unsigned long long)length,
			       (unsigned long long)file_offset, strerror(errno));
	return 0;
}

int nq_kmod_region_publish(struct nq_kmod_region *r)
{
	if (ioctl(r->fd, NQ_KMOD_IOC_PUBLISH, 0) < 0) {
		if (errno == ENODATA)
			return nq_fail(-ENODATA,
				       "publishing the region: pages missing (purged during fill, or never filled)");
		return nq_fail(-errno, "publishing the region: %s", strerror(errno));
	}
	return 0;
}

int nq_kmod_region_wait_purge(struct nq_kmod_region *r, int timeout_ms)
{
	struct pollfd p = { .fd = r->fd, .events = POLLPRI };
	int n;

	do
		n = poll(&p, 1, timeout_ms);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return nq_fail(-errno, "polling the region: %s", strerror(errno));
	if (n && (p.revents & (POLLERR | POLLNVAL)))
		return nq_fail(-EIO, "polling the region: revents 0x%x", p.revents);
	return n && (p.revents & POLLPRI) ? 1 : 0;
}

int nq_kmod_region_info(struct nq_kmod_region *r, struct nq_kmod_info *info)
{
	if (ioctl(r->fd, NQ_KMOD_IOC_INFO, info) < 0)
		return nq_fail(-errno, "region info: %s", strerror(errno));
	return 0;
}

int nq_kmod_stats(struct nq_kmod_region *r, struct nq_kmod_stats *st)
{
	if (ioctl(r->fd, NQ_KMOD_IOC_STATS, st) < 0)
		return nq_fail(-errno, "nestquant.ko statistics: %s", strerror(errno));
	return 0;
}

void nq_kmod_region_close(struct nq_kmod_region *r)
{
	long page = sysconf(_SC_PAGESIZE);

	if (r->data)
		munmap((void *)r->data, r->size);
	if (r->status)
		munmap(r->status, page > 0 ? (size_t)page : 4096);
	if (r->fd >= 0)
		close(r->fd);
	r->data = NULL;
	r->status = NULL;
	r->fd = -1;
}
