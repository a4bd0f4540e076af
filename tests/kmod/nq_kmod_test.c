// SPDX-License-Identifier: MIT
/*
 * nq_kmod_test: nestquant.ko tests that run inside a real kernel (a qemu
 * guest, see scripts/check-kmod.sh).  Statically linked; uses the uapi
 * header directly for the argument checks and runtime/kmod_region.c (the
 * runtime's own helper) for everything else.
 *
 *	nq_kmod_test validate		every ioctl/mmap argument check
 *	nq_kmod_test dropcaches		purge via drop_caches; pins respected
 *	nq_kmod_test reclaim MB		purge under real reclaim (nq_pressure)
 *					while a full-bit inference loop runs
 *
 * Each check prints "RESULT PASS|FAIL|SKIP name (detail)"; measurements
 * print "PERF key=value".  Exit status: 1 if any check failed.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kmod_region.h"
#include "nq_error.h"

#define MB (1024UL * 1024UL)
#define PAGE 4096UL

static int failed;

static void result(int ok, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void result(int ok, const char *name, const char *fmt, ...)
{
	char detail[512] = "";
	va_list ap;

	if (fmt) {
		va_start(ap, fmt);
		vsnprintf(detail, sizeof(detail), fmt, ap);
		va_end(ap);
	}
	if (!ok)
		failed = 1;
	printf("RESULT %s %s%s%s%s\n", ok ? "PASS" : "FAIL", name,
	       *detail ? " (" : "", detail, *detail ? ")" : "");
	fflush(stdout);
}

static void skip(const char *name, const char *why)
{
	printf("RESULT SKIP %s (%s)\n", name, why);
	fflush(stdout);
}

/* A call that must fail with exactly want. */
static void expect_errno(const char *name, long rc, int err, int want)
{
	if (rc == -1 && err == want)
		result(1, name, "%s", strerror(want));
	else
		result(0, name, "want %s, got rc %ld errno %s", strerror(want), rc,
		       rc == -1 ? strerror(err) : "-");
}

#define EXPECT_ERRNO(name, call, want)					\
	do {								\
		long rc_;						\
		errno = 0;						\
		rc_ = (long)(call);					\
		expect_errno(name, rc_, errno, want);			\
	} while (0)

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The expected contents: a 64-bit word pattern no zero page can match. */
static inline uint64_t pattern(uint64_t word, uint64_t seed)
{
	uint64_t x = (word + seed + 1) * 0x9E3779B97F4A7C15ull;

	return x ^ (x >> 29) ^ 0x8000000000000001ull;
}

/* Write a file of bytes pattern bytes; returns an fd open for reading. */
static int make_file(const char *path, size_t bytes, uint64_t seed)
{
	uint64_t buf[8192];
	size_t done = 0;
	int fd;

	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	while (done < bytes) {
		size_t n = bytes - done < sizeof(buf) ? bytes - done : sizeof(buf);
		size_t i;

		for (i = 0; i < sizeof(buf) / 8; i++)
			buf[i] = pattern(done / 8 + i, seed);
		if (write(fd, buf, n) != (ssize_t)n) {
			close(fd);
			return -1;
		}
		done += n;
	}
	return fd;
}

/* Count words in [off, off+len) that differ from the pattern. */
static size_t verify(const uint8_t *data, size_t off, size_t len, uint64_t seed)
{
	const volatile uint64_t *w = (const volatile uint64_t *)(data + off);
	size_t i, bad = 0;

	for (i = 0; i < len / 8; i++)
		if (w[i] != pattern(off / 8 + i, seed))
			bad++;
	return bad;
}

static int all_zero(const uint8_t *data, size_t len)
{
	const volatile uint8_t *p = data;
	size_t i;

	for (i = 0; i < len; i++)
		if (p[i])
			return 0;
	return 1;
}

static int stats(int fd, struct nq_kmod_stats *st)
{
	return ioctl(fd, NQ_KMOD_IOC_STATS, st);
}

static long write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = write(fd, s, strlen(s));
	close(fd);
	return n == (ssize_t)strlen(s) ? 0 : -1;
}

static void protect_self(void)
{
	/* The pressure tool is the OOM killer's choice, never the test. */
	write_file("/proc/self/oom_score_adj", "-1000");
}

static int fill_region(struct nq_kmod_region *r, int fd, size_t bytes)
{
	int err = nq_kmod_region_fill(r, fd, 0, 0, bytes);

	if (!err)
		err = nq_kmod_region_publish(r);
	return err;
}

/* ------------------------------------------------------------------ */

static void validate_no_region(int dev)
{
	struct nq_kmod_fill f = { .fd = 0, .length = PAGE };
	struct nq_kmod_info info;
	struct nq_kmod_stats st;

	EXPECT_ERRNO("ioctl-fill-without-region", ioctl(dev, NQ_KMOD_IOC_FILL, &f), ENXIO);
	EXPECT_ERRNO("ioctl-publish-without-region", ioctl(dev, NQ_KMOD_IOC_PUBLISH, 0), ENXIO);
	EXPECT_ERRNO("ioctl-info-without-region", ioctl(dev, NQ_KMOD_IOC_INFO, &info), ENXIO);
	EXPECT_ERRNO("mmap-without-region",
		     mmap(NULL, PAGE, PROT_READ, MAP_SHARED, dev, 0) == MAP_FAILED ? -1 : 0,
		     ENXIO);
	result(stats(dev, &st) == 0, "ioctl-stats-without-region", NULL);
	EXPECT_ERRNO("ioctl-unknown-cmd", ioctl(dev, _IO(NQ_KMOD_IOC_MAGIC, 99), 0), ENOTTY);
	EXPECT_ERRNO("ioctl-foreign-cmd", ioctl(dev, _IOR('T', 0x01, int), &f), ENOTTY);
}

static void validate_create(int dev)
{
	struct nq_kmod_create c;
	char old[32] = "";
	int dev2, fd;
	ssize_t n;

	EXPECT_ERRNO("ioctl-create-bad-pointer",
		     ioctl(dev, NQ_KMOD_IOC_CREATE, (void *)16), EFAULT);
	memset(&c, 0, sizeof(c));
	EXPECT_ERRNO("ioctl-create-size-zero", ioctl(dev, NQ_KMOD_IOC_CREATE, &c), EINVAL);
	c.size = MB + 1;
	EXPECT_ERRNO("ioctl-create-size-unaligned", ioctl(dev, NQ_KMOD_IOC_CREATE, &c), EINVAL);
	c.size = MB;
	c.flags = 1;
	EXPECT_ERRNO("ioctl-create-flags", ioctl(dev, NQ_KMOD_IOC_CREATE, &c), EINVAL);
	c.flags = 0;
	c.reserved = 1;
	EXPECT_ERRNO("ioctl-create-reserved", ioctl(dev, NQ_KMOD_IOC_CREATE, &c), EINVAL);
	c.reserved = 0;
	c.size = 4096 * MB;
	EXPECT_ERRNO("ioctl-create-too-big", ioctl(dev, NQ_KMOD_IOC_CREATE, &c), E2BIG);

	/* The module-wide cap: lower it to 1 MiB and ask for 2 MiB. */
	fd = open("/sys/module/nestquant/parameters/max_total_mb", O_RDONLY);
	n = fd >= 0 ? read(fd, old, sizeof(old) - 1) : -1;
	if (fd >= 0)
		close(fd);
	dev2 = open(NQ_KMOD_DEVICE, O_RDWR | O_CLOEXEC);
	if (n > 0 && dev2 >= 0 &&
	    !write_file("/sys/module/nestquant/parameters/max_total_mb", "1")) {
		c.size = 2 * MB;
		EXPECT_ERRNO("ioctl-create-over-total-cap",
			     ioctl(dev2, NQ_KMOD_IOC_CREATE, &c), ENOSPC);
		write_file("/sys/module/nestquant/parameters/max_total_mb", old);
	} else {
		skip("ioctl-create-over-total-cap", "cannot set max_total_mb");
	}
	if (dev2 >= 0)
		close(dev2);

	c.size = MB;
	n = ioctl(dev, NQ_KMOD_IOC_CREATE, &c);
	result(n == 0 && c.data_offset &&
	       c.status_offset && c.data_offset != c.status_offset &&
	       !(c.data_offset % PAGE) && !(c.status_offset % PAGE),
	       "ioctl-create", "data at 0x%llx, status at 0x%llx",
	       (unsigned long long)c.data_offset, (unsigned long long)c.status_offset);
	EXPECT_ERRNO("ioctl-create-twice", ioctl(dev, NQ_KMOD_IOC_CREATE, &c), EEXIST);
}

static void validate_fill(int dev, int file, int wronly)
{
	struct nq_kmod_fill f, good = { .fd = file, .length = PAGE };
	int pipefd[2], dir;

	f = good;
	f.flags = 1;
	EXPECT_ERRNO("ioctl-fill-flags", ioctl(dev, NQ_KMOD_IOC_FILL, &f), EINVAL);
	f = good;
	f.length = 0;
	EXPECT_ERRNO("ioctl-fill-length-zero", ioctl(dev, NQ_KMOD_IOC_FILL, &f), EINVAL);
	f = good;
	f.fd = -1;
	EXPECT_ERRNO("ioctl-fill-fd-negative", ioctl(dev, NQ_KMOD_IOC_FILL, &f), EBADF);
	f.fd = 1000;
	EXPECT_ERRNO("ioctl-fill-fd-closed", ioctl(dev, NQ_KMOD_IOC_FILL, &f), EBADF);
	f.fd = wronly;
	EXPECT_ERRNO("ioctl-fill-fd-write-only", ioctl(dev, NQ_KMOD_IOC_FILL, &f), EBADF);
	dir = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	f.fd = dir;
	EXPECT_ERRNO("ioctl-fill-fd-directory", ioctl(dev, NQ_KMOD_IOC_FILL, &f), EINVAL);
	close(dir);
	if (pipe(pipefd) == 0) {
		f.fd = pipefd[0];
		EXPECT_ERRNO("ioctl-fill-fd-pipe", ioctl(dev, NQ_KMOD_IOC_FILL, &f), EINVAL);
		close(pipefd[0]);
		close(pipefd[1]);
	}
	f.fd = dev;
	EXPECT_ERRNO("ioctl-fill-fd-self", ioctl(dev, NQ_KMOD_IOC_FILL, &f), EINVAL);
	f = good;
	f.region_offset = MB - PAGE;
	f.length = 2 * PAGE;
	EXPECT_ERRNO("ioctl-fill-past-region", ioctl(dev, NQ_KMOD_IOC_FILL, &f), EINVAL);
	f = good;
	f.region_offset = UINT64_MAX - 10;
	EXPECT_ERRNO("ioctl-fill-region-offset-wraps", ioctl(dev, NQ_KMOD_IOC_FILL, &f), EOVERFLOW);
	f = good;
	f.file_offset = 1ull << 63;
	EXPECT_ERRNO("ioctl-fill-file-offset-negative", ioctl(dev, NQ_KMOD_IOC_FILL, &f), EOVERFLOW);
	f = good;
	f.file_offset = MB - 100;
	EXPECT_ERRNO("ioctl-fill-file-too-short", ioctl(dev, NQ_KMOD_IOC_FILL, &f), ENODATA);
	EXPECT_ERRNO("ioctl-fill-bad-pointer", ioctl(dev, NQ_KMOD_IOC_FILL, (void *)16), EFAULT);
}

static void validate_mmap(int dev, int other, const struct nq_kmod_info *in,
			  const struct nq_kmod_info *oin)
{
	off_t d = (off_t)in->data_offset, s = (off_t)in->status_offset;

#define MMAP_RC(len, prot, flags, fd, off) \
	(mmap(NULL, len, prot, flags, fd, off) == MAP_FAILED ? -1 : 0)
	EXPECT_ERRNO("mmap-data-writable", MMAP_RC(MB, PROT_READ | PROT_WRITE, MAP_SHARED, dev, d), EPERM);
	EXPECT_ERRNO("mmap-data-private", MMAP_RC(MB, PROT_READ, MAP_PRIVATE, dev, d), EINVAL);
	EXPECT_ERRNO("mmap-offset-zero", MMAP_RC(PAGE, PROT_READ, MAP_SHARED, dev, 0), EINVAL);
	EXPECT_ERRNO("mmap-data-too-long", MMAP_RC(2 * MB, PROT_READ, MAP_SHARED, dev, d), EINVAL);
	EXPECT_ERRNO("mmap-data-past-end", MMAP_RC(PAGE, PROT_READ, MAP_SHARED, dev, d + (off_t)MB), EINVAL);
	EXPECT_ERRNO("mmap-status-two-pages", MMAP_RC(2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, dev, s), EINVAL);
	EXPECT_ERRNO("mmap-status-private", MMAP_RC(PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, dev, s), EINVAL);
	EXPECT_ERRNO("mmap-other-regions-data", MMAP_RC(PAGE, PROT_READ, MAP_SHARED, dev, (off_t)oin->data_offset), EINVAL);
	EXPECT_ERRNO("mmap-other-regions-status", MMAP_RC(PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, other, s), EINVAL);
#undef MMAP_RC
}

/* A write through the read-only data mapping must fault (SIGSEGV). */
static int child_write_faults(const uint8_t *data)
{
	int status;
	pid_t pid = fork();

	if (pid == 0) {
		*(volatile uint8_t *)data = 1;
		_exit(0);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		return 0;
	return WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV;
}

static int cmd_validate(void)
{
	struct nq_kmod_info info, oinfo;
	struct nq_kmod_stats st0, st;
	struct nq_kmod_status *status;
	int dev, other, file, wronly;
	uint8_t *data, *status_map;
	struct nq_kmod_create oc = { .size = PAGE };
	void *p;

	file = make_file("/tmp/validate.bin", MB, 7);
	wronly = open("/tmp/validate.bin", O_WRONLY | O_CLOEXEC);
	dev = open(NQ_KMOD_DEVICE, O_RDWR | O_CLOEXEC);
	other = open(NQ_KMOD_DEVICE, O_RDWR | O_CLOEXEC);
	if (file < 0 || wronly < 0 || dev < 0 || other < 0) {
		result(0, "validate-setup", "%s", strerror(errno));
		return 1;
	}
	stats(dev, &st0);

	validate_no_region(dev);
	validate_create(dev);
	validate_fill(dev, file, wronly);
	EXPECT_ERRNO("ioctl-publish-empty", ioctl(dev, NQ_KMOD_IOC_PUBLISH, 0), ENODATA);
	EXPECT_ERRNO("ioctl-publish-nonzero-arg", ioctl(dev, NQ_KMOD_IOC_PUBLISH, 1), EINVAL);

	ioctl(dev, NQ_KMOD_IOC_INFO, &info);
	ioctl(other, NQ_KMOD_IOC_CREATE, &oc);
	ioctl(other, NQ_KMOD_IOC_INFO, &oinfo);
	validate_mmap(dev, other, &info, &oinfo);

	p = mmap(NULL, MB, PROT_READ, MAP_SHARED, dev, (off_t)info.data_offset);
	data = p == MAP_FAILED ? NULL : p;
	p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, dev, (off_t)info.status_offset);
	status_map = p == MAP_FAILED ? NULL : p;
	result(data && status_map, "mmap-data-and-status", NULL);
	if (!data || !status_map)
		return 1;
	status = (struct nq_kmod_status *)status_map;

	/* Unpublished: a careless reader sees zeros, and pins fail. */
	result(all_zero(data, MB), "read-before-publish-is-zero", NULL);
	result(status->state == NQ_KMOD_PURGED, "status-unpublished-purged-bit",
	       "state 0x%x", status->state);

	/* Two fills splitting a page: the module zeroes and merges them. */
	{
		struct nq_kmod_fill f = { .fd = file, .length = 300000 };

		result(ioctl(dev, NQ_KMOD_IOC_FILL, &f) == 0, "ioctl-fill-first-part", NULL);
		EXPECT_ERRNO("ioctl-publish-incomplete", ioctl(dev, NQ_KMOD_IOC_PUBLISH, 0), ENODATA);
		f.file_offset = f.region_offset = 300000;
		f.length = MB - 300000;
		result(ioctl(dev, NQ_KMOD_IOC_FILL, &f) == 0, "ioctl-fill-rest", NULL);
	}
	result(ioctl(dev, NQ_KMOD_IOC_PUBLISH, 0) == 0, "ioctl-publish", NULL);
	/* The zero pages mapped above were dropped at publish. */
	result(verify(data, 0, MB, 7) == 0, "read-after-publish-matches-file", NULL);
	EXPECT_ERRNO("ioctl-publish-twice", ioctl(dev, NQ_KMOD_IOC_PUBLISH, 0), EALREADY);
	{
		struct nq_kmod_fill f = { .fd = file, .length = PAGE };

		EXPECT_ERRNO("ioctl-fill-published", ioctl(dev, NQ_KMOD_IOC_FILL, &f), EBUSY);
	}
	ioctl(dev, NQ_KMOD_IOC_INFO, &info);
	result(info.size == MB && info.published == 1 && info.resident_pages == MB / PAGE &&
	       info.publish_seq == 1 && status->state == 0 && status->publish_seq == 1,
	       "ioctl-info", "published %u resident %llu state 0x%x", info.published,
	       (unsigned long long)info.resident_pages, status->state);

	EXPECT_ERRNO("mprotect-data-writable", mprotect(data, MB, PROT_READ | PROT_WRITE), EACCES);
	result(child_write_faults(data), "write-to-data-faults", NULL);
	EXPECT_ERRNO("mremap-data-grow", mremap(data, MB, 2 * MB, 0) == MAP_FAILED ? -1 : 0, EFAULT);
	{
		struct pollfd pfd = { .fd = dev, .events = POLLPRI };

		result(poll(&pfd, 1, 0) == 0, "poll-no-purge", NULL);
	}
	stats(dev, &st);
	result(st.pages_allocated == st0.pages_allocated + MB / PAGE + 2 && st.regions == st0.regions + 2,
	       "stats-pages-allocated", "%llu pages, %llu regions",
	       (unsigned long long)st.pages_allocated, (unsigned long long)st.regions);

	/* Use after close: the mappings keep the region, and the module. */
	close(dev);
	close(other);
	result(verify(data, 0, MB, 7) == 0, "mapping-survives-close", NULL);
	{
		int rc = system("rmmod nestquant 2>/dev/null");

		result(rc != 0 && access(NQ_KMOD_DEVICE, F_OK) == 0,
		       "rmmod-refused-while-mapped", "rmmod status %d", rc);
	}
	munmap(data, MB);
	munmap(status_map, PAGE);
	dev = open(NQ_KMOD_DEVICE, O_RDWR | O_CLOEXEC);
	stats(dev, &st);
	result(st.pages_allocated == st0.pages_allocated && st.regions == st0.regions,
	       "pages-freed-after-unmap", "%llu pages, %llu regions",
	       (unsigned long long)st.pages_allocated, (unsigned long long)st.regions);
	close(dev);
	close(file);
	close(wronly);
	unlink("/tmp/validate.bin");
	return failed;
}

/* ------------------------------------------------------------------ */

static int cmd_dropcaches(void)
{
	const size_t size = 8 * MB;
	struct nq_kmod_stats st0, st1, st2;
	struct nq_kmod_region r;
	struct nq_kmod_info info;
	uint32_t seq;
	int file, err;

	file = make_file("/tmp/dropcaches.bin", size, 11);
	err = file < 0 ? -errno : nq_kmod_region_open(&r, size);
	if (!err)
		err = fill_region(&r, file, size);
	if (err) {
		result(0, "dropcaches-setup", "%s", nq_last_error());
		return 1;
	}
	close(file);
	unlink("/tmp/dropcaches.bin");

	/* Pinned: drop_caches asks (count) and must leave the region alone. */
	nq_kmod_stats(&r, &st0);
	seq = nq_kmod_region_purge_seq(&r);
	result(nq_kmod_region_pin(&r) == 0, "pin-published-region", NULL);
	write_file("/proc/sys/vm/drop_caches", "2");
	nq_kmod_stats(&r, &st1);
	result(st1.count_calls > st0.count_calls, "drop-caches-calls-count",
	       "%llu calls", (unsigned long long)(st1.count_calls - st0.count_calls));
	result(nq_kmod_region_purge_seq(&r) == seq && st1.purges == st0.purges &&
	       verify(r.data, 0, size, 11) == 0, "drop-caches-spares-pinned-region", NULL);
	nq_kmod_region_unpin(&r);

	/* Unpinned: count and scan, the whole region goes. */
	write_file("/proc/sys/vm/drop_caches", "2");
	nq_kmod_stats(&r, &st2);
	nq_kmod_region_info(&r, &info);
	result(st2.scan_calls > st1.scan_calls && st2.purges == st1.purges + 1 &&
	       st2.pages_purged == st1.pages_purged + size / PAGE,
	       "drop-caches-purges-unpinned-region", "scan calls %llu, pages freed %llu",
	       (unsigned long long)(st2.scan_calls - st1.scan_calls),
	       (unsigned long long)(st2.pages_purged - st1.pages_purged));
	result(nq_kmod_region_purge_seq(&r) == seq + 1 && !info.published &&
	       !info.resident_pages && r.status->resident_pages == 0 &&
	       st2.pages_allocated == st1.pages_allocated - size / PAGE,
	       "purge-frees-pages", "resident %llu, module pages %llu",
	       (unsigned long long)info.resident_pages,
	       (unsigned long long)st2.pages_allocated);
	result(nq_kmod_region_pin(&r) == -ESTALE, "pin-after-purge-fails", NULL);
	result(nq_kmod_region_wait_purge(&r, 0) == 1, "poll-reports-purge", NULL);
	result(all_zero(r.data, size), "careless-read-after-purge-is-zero", NULL);
	printf("PERF dropcaches_scan_to_free_us=%.1f pages=%zu\n",
	       st2.last_scan_to_free_ns / 1e3, size / PAGE);

	/* Refill from the file, as the runtime's policy would. */
	file = make_file("/tmp/dropcaches.bin", size, 11);
	err = fill_region(&r, file, size);
	close(file);
	unlink("/tmp/dropcaches.bin");
	result(!err && nq_kmod_region_pin(&r) == 0 && verify(r.data, 0, size, 11) == 0 &&
	       nq_kmod_region_wait_purge(&r, 0) == 0,
	       "refill-after-purge", "%s", err ? nq_last_error() : "");
	nq_kmod_region_unpin(&r);
	nq_kmod_region_close(&r);
	return failed;
}

/* ------------------------------------------------------------------ */

struct pressure {
	pid_t pid;
	int out;
	char text[2048];
};

static int pressure_start(struct pressure *p, const char *hold)
{
	int fds[2];

	if (pipe(fds) < 0)
		return -errno;
	p->pid = fork();
	if (p->pid < 0)
		return -errno;
	if (p->pid == 0) {
		dup2(fds[1], 1);
		close(fds[0]);
		close(fds[1]);
		execl("/bin/nq_pressure", "nq_pressure", hold, (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	p->out = fds[0];
	return 0;
}

/* Reap the tool (blocking if wait); 1 when it has exited, 0 if still running. */
static int pressure_done(struct pressure *p, int wait, int *status)
{
	pid_t w = waitpid(p->pid, status, wait ? 0 : WNOHANG);
	ssize_t n;

	if (w != p->pid)
		return 0;
	n = read(p->out, p->text, sizeof(p->text) - 1);
	p->text[n > 0 ? n : 0] = 0;
	close(p->out);
	return 1;
}

static uint64_t pressure_value(const struct pressure *p, const char *key)
{
	const char *s = strstr(p->text, key);

	return s ? strtoull(s + strlen(key), NULL, 10) : 0;
}

struct poller {
	struct nq_kmod_region *r;
	uint64_t woke_ns;
	int rc;
};

static void *poll_thread(void *arg)
{
	struct poller *pl = arg;

	pl->rc = nq_kmod_region_wait_purge(pl->r, 30000);
	pl->woke_ns = now_ns();
	return NULL;
}

/*
 * A full-bit "inference" loop -- pin, read a chunk and check every word,
 * unpin, a short gap -- while the pressure tool steps past the watermarks
 * until the module purged.  A pinned read must never see a wrong value, and
 * no purge may happen inside a pin.
 */
static void reclaim_purge(struct nq_kmod_region *r, size_t size)
{
	const size_t chunk = 256 * 1024;
	uint64_t full = 0, part = 0, bad = 0, violations = 0, first_part_ns = 0;
	struct nq_kmod_stats st0, st1;
	struct pressure pr;
	struct poller pl;
	pthread_t thr;
	size_t off = 0;
	uint32_t seq;
	int status;

	pl.r = r;
	pl.woke_ns = 0;
	pl.rc = 0;
	pthread_create(&thr, NULL, poll_thread, &pl);
	nq_kmod_stats(r, &st0);
	seq = nq_kmod_region_purge_seq(r);
	if (pressure_start(&pr, "3") < 0) {
		result(0, "reclaim-purge", "cannot start nq_pressure");
		return;
	}
	while (!pressure_done(&pr, 0, &status)) {
		if (nq_kmod_region_pin(r) == 0) {
			uint32_t s0 = nq_kmod_region_purge_seq(r);

			off = (off + chunk) % size;
			bad += verify(r->data, off, chunk, 23);
			if (nq_kmod_region_purge_seq(r) != s0)
				violations++;
			nq_kmod_region_unpin(r);
			full++;
			usleep(5000);	/* the gap between two requests */
		} else {
			if (!first_part_ns)
				first_part_ns = now_ns();
			part++;
			usleep(1000);	/* a part-bit inference */
		}
	}
	nq_kmod_stats(r, &st1);
	pthread_join(thr, NULL);
	printf("PRESSURE %s", pr.text);

	result(st1.purges > st0.purges && nq_kmod_region_purge_seq(r) > seq && part > 0,
	       "reclaim-purge", "purges %llu, %llu pages freed, %llu full-bit / %llu part-bit inferences, by %s",
	       (unsigned long long)(st1.purges - st0.purges),
	       (unsigned long long)(st1.pages_purged - st0.pages_purged),
	       (unsigned long long)full, (unsigned long long)part,
	       pressure_value(&pr, "direct_reclaims=") ? "direct reclaim" : "kswapd");
	result(!bad && !violations && full > 0, "reclaim-pinned-reads-correct",
	       "%llu wrong words, %llu purges inside a pin",
	       (unsigned long long)bad, (unsigned long long)violations);
	result(pl.rc == 1, "reclaim-poll-wakes", "rc %d", pl.rc);

	if (st1.purges > st0.purges) {
		uint64_t purge_ns = r->status->purge_time_ns;
		uint64_t wake_step = pressure_value(&pr, "t_last_step_ns=");
		uint64_t wake_seen = pressure_value(&pr, "t_wake_seen_ns=");

		printf("PERF reclaim_region_pages=%zu\n", size / PAGE);
		printf("PERF reclaim_path=%s\n",
		       pressure_value(&pr, "direct_reclaims=") ? "direct" : "kswapd");
		printf("PERF reclaim_scan_to_free_us=%.1f\n", st1.last_scan_to_free_ns / 1e3);
		printf("PERF reclaim_max_scan_to_free_us=%.1f\n", st1.max_scan_to_free_ns / 1e3);
		if (wake_step && purge_ns > wake_step)
			printf("PERF reclaim_last_pressure_step_to_purge_us=%.1f\n",
			       (purge_ns - wake_step) / 1e3);
		if (wake_seen)
			printf("PERF reclaim_purge_minus_kswapd_wake_seen_us=%.1f\n",
			       ((double)purge_ns - (double)wake_seen) / 1e3);
		if (pl.rc == 1 && pl.woke_ns > purge_ns)
			printf("PERF reclaim_purge_to_poll_wakeup_us=%.1f\n",
			       (pl.woke_ns - purge_ns) / 1e3);
		/* Negative: the pin failed before the pages were all freed. */
		if (first_part_ns)
			printf("PERF reclaim_first_part_bit_minus_purge_us=%.1f\n",
			       ((double)first_part_ns - (double)purge_ns) / 1e3);
	}
}

/*
 * Pinned through real reclaim: a second, unpinned 8 MiB region is what
 * reclaim may take; the pinned one must survive with every word intact, and
 * the scan must have seen it pinned and skipped it (the pinned region is
 * first on the module's list).
 */
static void reclaim_pinned(struct nq_kmod_region *r, size_t size)
{
	const size_t chunk = 256 * 1024, dsize = 8 * MB;
	struct nq_kmod_region decoy;
	struct nq_kmod_stats st0, st1;
	struct pressure pr;
	uint64_t bad = 0;
	uint32_t seq, dseq;
	size_t off = 0;
	int dfile, err, status;

	dfile = make_file("/tmp/decoy.bin", dsize, 31);
	err = dfile < 0 ? -errno : nq_kmod_region_open(&decoy, dsize);
	if (!err)
		err = fill_region(&decoy, dfile, dsize);
	if (dfile >= 0)
		close(dfile);
	unlink("/tmp/decoy.bin");
	if (err) {
		result(0, "reclaim-pinned-never-purged", "decoy: %s", nq_last_error());
		return;
	}

	nq_kmod_stats(r, &st0);
	seq = nq_kmod_region_purge_seq(r);
	dseq = nq_kmod_region_purge_seq(&decoy);
	if (nq_kmod_region_pin(r) || pressure_start(&pr, "2") < 0) {
		result(0, "reclaim-pinned-never-purged", "setup");
		nq_kmod_region_close(&decoy);
		return;
	}
	while (!pressure_done(&pr, 0, &status)) {
		off = (off + chunk) % size;
		bad += verify(r->data, off, chunk, 23);
		usleep(2000);
	}
	bad += verify(r->data, 0, size, 23);
	nq_kmod_stats(r, &st1);
	printf("PRESSURE %s", pr.text);
	result(!bad && nq_kmod_region_purge_seq(r) == seq &&
	       nq_kmod_region_purge_seq(&decoy) > dseq &&
	       st1.skipped_pinned > st0.skipped_pinned,
	       "reclaim-pinned-never-purged",
	       "%llu wrong words; unpinned region purged %u times, pinned one skipped %llu times, by %s",
	       (unsigned long long)bad, nq_kmod_region_purge_seq(&decoy) - dseq,
	       (unsigned long long)(st1.skipped_pinned - st0.skipped_pinned),
	       pressure_value(&pr, "direct_reclaims=") ? "direct reclaim" : "kswapd");
	nq_kmod_region_unpin(r);
	nq_kmod_region_close(&decoy);
}

static int cmd_reclaim(size_t size)
{
	struct nq_kmod_region r;
	int file, err;

	protect_self();
	file = make_file("/tmp/reclaim.bin", size, 23);
	err = file < 0 ? -errno : nq_kmod_region_open(&r, size);
	if (!err)
		err = fill_region(&r, file, size);
	if (err) {
		result(0, "reclaim-setup", "%s", nq_last_error());
		return 1;
	}
	/* Keep the (unlinked) file for the refill; it is not reclaimable. */
	unlink("/tmp/reclaim.bin");

	reclaim_purge(&r, size);

	/* The pressure is gone: refill from the file and serve full-bit again. */
	err = fill_region(&r, file, size);
	result(!err && nq_kmod_region_pin(&r) == 0 && verify(r.data, 0, size, 23) == 0,
	       "reclaim-refill", "%s", err ? nq_last_error() : "");
	nq_kmod_region_unpin(&r);

	if (!err)
		reclaim_pinned(&r, size);
	nq_kmod_region_close(&r);
	close(file);
	return failed;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 2 && !strcmp(argv[1], "validate"))
		return cmd_validate();
	if (argc == 2 && !strcmp(argv[1], "dropcaches"))
		return cmd_dropcaches();
	if (argc == 3 && !strcmp(argv[1], "reclaim"))
		return cmd_reclaim((size_t)atoi(argv[2]) * MB);
	fprintf(stderr, "usage: nq_kmod_test validate | dropcaches | reclaim MB\n");
	return 2;
}
