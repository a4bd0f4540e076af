// SPDX-License-Identifier: MIT
/*
 * The BPF pressure monitor on the real kernel: load it into a private pin
 * directory, put a reader into a cgroup-v1 (or v2) memory cgroup with a
 * 64 MiB limit, and check what each client receives.
 *
 * Needs root, BPF and a memory cgroup; each test skips with the reason
 * otherwise.  The monitor is loaded once per run (an unchecked fixture in the
 * parent process) and removed at the end even when a test fails.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "monitor.h"
#include "nq_error.h"
#include "nq_test.h"

#define LIMIT_BYTES	(64ull << 20)
#define BIG_BYTES	(3 * LIMIT_BYTES)	/* read inside the cgroup: forces reclaim */
#define SMALL_BYTES	(8ull << 20)		/* evicted with fadvise */
#define MAX_EVENTS	8192

static char skip_reason[256];
static char pin_dir[64];
static char cg_path[PATH_MAX];
static char big_file[PATH_MAX];
static char small_file[PATH_MAX];

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static int write_file(const char *path, uint64_t bytes)
{
	static char buf[1 << 20];
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	if (fd < 0)
		return -errno;
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (char)(i * 131 + 7);
	for (uint64_t off = 0; off < bytes; off += sizeof(buf)) {
		if (write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf)) {
			close(fd);
			return -EIO;
		}
	}
	/* Clean pages only: fadvise(DONTNEED) leaves dirty ones in the cache. */
	fdatasync(fd);
	posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	close(fd);
	return 0;
}

/* A memory cgroup with a limit: v1 where the memory controller is, else v2. */
static int make_cgroup(void)
{
	char file[PATH_MAX + 32];
	FILE *f;

	if (!access("/sys/fs/cgroup/memory/memory.limit_in_bytes", F_OK)) {
		snprintf(cg_path, sizeof(cg_path), "/sys/fs/cgroup/memory/nqtest-monitor-%d",
			 (int)getpid());
		snprintf(file, sizeof(file), "%s/memory.limit_in_bytes", cg_path);
	} else if (!access("/sys/fs/cgroup/cgroup.controllers", F_OK)) {
		snprintf(cg_path, sizeof(cg_path), "/sys/fs/cgroup/nqtest-monitor-%d", (int)getpid());
		snprintf(file, sizeof(file), "%s/memory.max", cg_path);
	} else {
		return -ENOENT;
	}
	if (mkdir(cg_path, 0755) && errno != EEXIST)
		return -errno;
	f = fopen(file, "w");
	if (!f)
		return -errno;
	fprintf(f, "%llu\n", LIMIT_BYTES);
	if (fclose(f))
		return -errno;
	return 0;
}

static void monitor_setup(void)
{
	struct nq_monitor_load_opts lo = { 0 };
	int err;

	if (geteuid() != 0) {
		snprintf(skip_reason, sizeof(skip_reason), "needs root (loads BPF programs)");
		return;
	}
	snprintf(pin_dir, sizeof(pin_dir), "/sys/fs/bpf/nqtest-%d", (int)getpid());
	lo.pin_dir = pin_dir;
	err = nq_monitor_load(&lo);
	if (err < 0) {
		snprintf(skip_reason, sizeof(skip_reason), "cannot load the BPF monitor: %s",
			 nq_last_error());
		pin_dir[0] = '\0';
		return;
	}
	err = make_cgroup();
	if (err) {
		snprintf(skip_reason, sizeof(skip_reason), "no memory cgroup to test in (%s)",
			 strerror(-err));
		cg_path[0] = '\0';
		return;
	}
	snprintf(big_file, sizeof(big_file), "/var/tmp/nqtest-monitor-big-%d", (int)getpid());
	snprintf(small_file, sizeof(small_file), "/var/tmp/nqtest-monitor-small-%d", (int)getpid());
	if (write_file(big_file, BIG_BYTES) || write_file(small_file, SMALL_BYTES))
		snprintf(skip_reason, sizeof(skip_reason), "cannot write test files in /var/tmp");
}

static void monitor_teardown(void)
{
	if (big_file[0])
		unlink(big_file);
	if (small_file[0])
		unlink(small_file);
	if (cg_path[0])
		rmdir(cg_path);	/* empty again: every child has exited */
	if (pin_dir[0])
		nq_monitor_unload(pin_dir);
}

#define REQUIRE_SETUP()                            \
	do {                                       \
		if (skip_reason[0])                \
			NQ_SKIP("%s", skip_reason); \
	} while (0)

struct log {
	unsigned int n;
	struct nq_mon_event ev[MAX_EVENTS];
	uint64_t recv_ns[MAX_EVENTS];
};

static int record(void *ctx, const struct nq_mon_event *ev)
{
	struct log *l = ctx;

	if (l->n < MAX_EVENTS) {
		l->recv_ns[l->n] = mono_ns();
		l->ev[l->n++] = *ev;
	}
	return 0;
}

/* Child: join the cgroup and read the big file through its page cache. */
static pid_t spawn_reader(const char *cgroup, const char *path)
{
	char procs[PATH_MAX + 16], buf[1 << 16];
	pid_t pid;
	FILE *f;
	int fd;

	/* Pages cached by an earlier reader would be hits, charging nothing. */
	fd = open(path, O_RDONLY);
	if (fd >= 0) {
		posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
		close(fd);
	}
	pid = fork();
	if (pid)
		return pid;
	snprintf(procs, sizeof(procs), "%s/cgroup.procs", cgroup);
	f = fopen(procs, "w");
	if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f))
		_exit(10);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		_exit(11);
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	_exit(0);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static uint64_t cgroup_ino(const char *path)
{
	struct stat st;

	ck_assert_int_eq(stat(path, &st), 0);
	return st.st_ino;
}

/*
 * Reclaim in a 64 MiB cgroup while reading 192 MiB: both clients receive the
 * same memcg-reclaim events, attributed to that cgroup, timestamped inside
 * the run window, in order; and the kernel-to-client delay is measured.
 */
START_TEST(memcg_reclaim_reaches_every_client)
{
	static struct log a, b;
	struct nq_monitor *ma, *mb;
	uint64_t t0, t1, id, lat[MAX_EVENTS];
	unsigned int nreclaim = 0;
	int status, err;
	pid_t pid;

	REQUIRE_SETUP();
	id = cgroup_ino(cg_path);
	err = nq_monitor_open(pin_dir, 0, &ma);
	ck_assert_msg(!err, "open A: %s", nq_last_error());
	err = nq_monitor_open(pin_dir, 0, &mb);
	ck_assert_msg(!err, "open B: %s", nq_last_error());
	ck_assert_int_ne(nq_monitor_slot(ma), nq_monitor_slot(mb));
	/* No rate limit: both clients must see exactly the same records. */
	ck_assert_msg(!nq_monitor_watch_cgroup(ma, cg_path, 0), "%s", nq_last_error());
	ck_assert_msg(!nq_monitor_watch_cgroup(mb, cg_path, 0), "%s", nq_last_error());
	ck_assert_int_ge(nq_monitor_fd(ma), 0);

	t0 = mono_ns();
	pid = spawn_reader(cg_path, big_file);
	ck_assert_int_gt(pid, 0);
	for (;;) {
		err = nq_monitor_poll(ma, 50, record, &a);
		ck_assert_msg(err >= 0, "poll: %s", nq_last_error());
		if (waitpid(pid, &status, WNOHANG) == pid)
			break;
	}
	t1 = mono_ns();
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "reader failed (status %#x)", status);
	ck_assert_int_ge(nq_monitor_consume(ma, record, &a), 0);
	ck_assert_int_ge(nq_monitor_consume(mb, record, &b), 0);

	ck_assert_msg(a.n > 0, "no event for a 64 MiB cgroup reading 192 MiB");
	ck_assert_uint_eq(a.n, b.n);
	for (unsigned int i = 0; i < a.n; i++) {
		const struct nq_mon_event *e = &a.ev[i];

		ck_assert_uint_eq(e->type, NQ_MON_EV_MEMCG_RECLAIM);
		ck_assert_uint_eq(e->cgroup_id, id);
		ck_assert_uint_eq(e->pid, (unsigned int)pid);
		ck_assert_uint_eq(e->count, 1);
		ck_assert_uint_ge(e->ktime_ns, t0);
		ck_assert_uint_le(e->ktime_ns, t1);
		ck_assert_uint_le(e->ktime_ns, a.recv_ns[i]);
		if (i)
			ck_assert_uint_ge(e->ktime_ns, a.ev[i - 1].ktime_ns);
		ck_assert_uint_eq(e->slot, (unsigned int)nq_monitor_slot(ma));
		ck_assert_uint_eq(b.ev[i].ktime_ns, e->ktime_ns);
		ck_assert_uint_eq(b.ev[i].slot, (unsigned int)nq_monitor_slot(mb));
		lat[nreclaim++] = a.recv_ns[i] - e->ktime_ns;
	}
	qsort(lat, nreclaim, sizeof(lat[0]), cmp_u64);
	printf("memcg_reclaim events: %u per client; kernel->client delay p50 %.1f us, "
	       "p99 %.1f us, max %.1f us\n", nreclaim, lat[nreclaim / 2] / 1e3,
	       lat[(nreclaim * 99) / 100] / 1e3, lat[nreclaim - 1] / 1e3);

	nq_monitor_close(ma);
	nq_monitor_close(mb);
}
END_TEST

/*
 * Reclaim charged in a child cgroup of a watched one (the limit is on the
 * parent): the BPF side walks up the memory-controller hierarchy and reports
 * the watched ancestor.
 */
START_TEST(reclaim_in_child_cgroup_goes_to_watched_parent)
{
	static struct log l;
	char child[PATH_MAX + 16];
	struct nq_monitor *m;
	uint64_t parent_id;
	int status;
	pid_t pid;

	REQUIRE_SETUP();
	snprintf(child, sizeof(child), "%s/child", cg_path);
	ck_assert_int_eq(mkdir(child, 0755), 0);
	parent_id = cgroup_ino(cg_path);
	ck_assert_uint_ne(cgroup_ino(child), parent_id);
	ck_assert_msg(!nq_monitor_open(pin_dir, 0, &m), "%s", nq_last_error());
	ck_assert_msg(!nq_monitor_watch_cgroup(m, cg_path, 0), "%s", nq_last_error());
	pid = spawn_reader(child, big_file);
	ck_assert_int_gt(pid, 0);
	while (waitpid(pid, &status, WNOHANG) != pid)
		ck_assert_int_ge(nq_monitor_poll(m, 50, record, &l), 0);
	ck_assert_int_ge(nq_monitor_consume(m, record, &l), 0);
	rmdir(child);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "reader status %#x", status);
	ck_assert_uint_gt(l.n, 0);
	for (unsigned int i = 0; i < l.n; i++) {
		ck_assert_uint_eq(l.ev[i].type, NQ_MON_EV_MEMCG_RECLAIM);
		ck_assert_uint_eq(l.ev[i].cgroup_id, parent_id);
	}
	nq_monitor_close(m);
}
END_TEST

static long resident_pages(const char *path)
{
	long page = sysconf(_SC_PAGESIZE), n = 0;
	struct stat st;
	unsigned char *vec;
	void *map;
	int fd = open(path, O_RDONLY);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fstat(fd, &st), 0);
	map = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	ck_assert_ptr_ne(map, MAP_FAILED);
	vec = malloc(st.st_size / page + 1);
	ck_assert_ptr_nonnull(vec);
	ck_assert_int_eq(mincore(map, st.st_size, vec), 0);
	for (long i = 0; i < st.st_size / page; i++)
		n += vec[i] & 1;
	free(vec);
	munmap(map, st.st_size);
	close(fd);
	return n;
}

/* fadvise(DONTNEED) of a watched file: evictions reported for its inode. */
START_TEST(file_eviction_reported_for_its_inode)
{
	static struct log l;
	struct nq_monitor_status *st;
	struct nq_monitor *m;
	char buf[1 << 16];
	struct stat sb;
	uint64_t pages = 0, count = 0;
	long resident;
	int fd;

	REQUIRE_SETUP();
	ck_assert_int_eq(stat(small_file, &sb), 0);
	ck_assert_msg(!nq_monitor_open(pin_dir, 0, &m), "%s", nq_last_error());
	ck_assert_msg(!nq_monitor_watch_file(m, small_file, 0), "%s", nq_last_error());

	fd = open(small_file, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	resident = resident_pages(small_file);
	ck_assert_int_eq(resident, SMALL_BYTES / sysconf(_SC_PAGESIZE));
	ck_assert_int_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	close(fd);
	ck_assert_int_eq(resident_pages(small_file), 0);

	ck_assert_int_ge(nq_monitor_consume(m, record, &l), 0);
	ck_assert_uint_gt(l.n, 0);
	for (unsigned int i = 0; i < l.n; i++) {
		ck_assert_uint_eq(l.ev[i].type, NQ_MON_EV_FILE_EVICT);
		ck_assert_uint_eq(l.ev[i].ino, sb.st_ino);
		ck_assert_uint_eq(l.ev[i].dev, nq_monitor_kdev(sb.st_dev));
		ck_assert_uint_lt(l.ev[i].index, SMALL_BYTES / sysconf(_SC_PAGESIZE));
		ck_assert_uint_eq(l.ev[i].pid, (unsigned int)getpid());
		pages += 1ull << l.ev[i].order;
		count += l.ev[i].count;
	}
	/* No rate limit and nothing else touching it: one record per folio. */
	ck_assert_uint_eq(pages, (uint64_t)resident);

	ck_assert_msg(!nq_monitor_status(pin_dir, &st), "%s", nq_last_error());
	ck_assert_uint_eq(st->nr_files, 1);
	ck_assert_uint_eq(st->files[0].ino, sb.st_ino);
	ck_assert_uint_eq(st->files[0].stat.pages, (uint64_t)resident);
	ck_assert_uint_eq(st->files[0].stat.delivered[NQ_MON_EV_FILE_EVICT], count);
	nq_monitor_status_free(st);
	nq_monitor_close(m);
}
END_TEST

/* The rate limit folds a burst into few records whose counts add up. */
START_TEST(rate_limit_folds_events_into_count)
{
	static struct log l;
	struct nq_monitor_status *st;
	struct nq_monitor *m;
	char buf[1 << 16];
	uint64_t count = 0;
	int fd;

	REQUIRE_SETUP();
	ck_assert_msg(!nq_monitor_open(pin_dir, 0, &m), "%s", nq_last_error());
	/* One second: the whole fadvise burst fits in one interval. */
	ck_assert_msg(!nq_monitor_watch_file(m, small_file, 1000000000ull), "%s",
		      nq_last_error());
	fd = open(small_file, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	ck_assert_int_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	close(fd);
	ck_assert_int_ge(nq_monitor_consume(m, record, &l), 0);
	ck_assert_msg(!nq_monitor_status(pin_dir, &st), "%s", nq_last_error());
	ck_assert_uint_eq(st->nr_files, 1);
	for (unsigned int i = 0; i < l.n; i++)
		count += l.ev[i].count;
	/* The first eviction is delivered at once; the rest wait for the next. */
	ck_assert_uint_eq(l.n, 1);
	ck_assert_uint_eq(l.ev[0].count, 1);
	ck_assert_uint_gt(st->files[0].stat.seen[NQ_MON_EV_FILE_EVICT], 1);
	ck_assert_uint_eq(st->files[0].stat.ratelimited[NQ_MON_EV_FILE_EVICT],
			  st->files[0].stat.seen[NQ_MON_EV_FILE_EVICT] - 1);
	nq_monitor_status_free(st);
	nq_monitor_close(m);
}
END_TEST

/* A client that dies without closing: its slot and subscriptions are taken back. */
START_TEST(dead_client_slot_is_reclaimed)
{
	struct nq_monitor_status *st;
	struct nq_monitor *m;
	int status, slot_dead;
	int pipefd[2];
	pid_t pid;

	REQUIRE_SETUP();
	ck_assert_int_eq(pipe(pipefd), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct nq_monitor *cm;
		int slot = -1;

		if (!nq_monitor_open(pin_dir, 0, &cm) && !nq_monitor_watch_cgroup(cm, cg_path, 0))
			slot = nq_monitor_slot(cm);
		if (write(pipefd[1], &slot, sizeof(slot)) != sizeof(slot))
			_exit(2);
		_exit(0);	/* no nq_monitor_close: a crash, as far as the maps know */
	}
	ck_assert_int_eq(read(pipefd[0], &slot_dead, sizeof(slot_dead)), sizeof(slot_dead));
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_int_ge(slot_dead, 0);

	ck_assert_msg(!nq_monitor_status(pin_dir, &st), "%s", nq_last_error());
	ck_assert_uint_eq(st->nr_cgroups, 1);
	ck_assert_uint_eq(st->cgroups[0].cfg.clients, 1ull << slot_dead);
	ck_assert(!st->clients[0].alive);
	nq_monitor_status_free(st);

	ck_assert_msg(!nq_monitor_open(pin_dir, 0, &m), "%s", nq_last_error());
	ck_assert_int_eq(nq_monitor_slot(m), slot_dead);
	ck_assert_msg(!nq_monitor_status(pin_dir, &st), "%s", nq_last_error());
	ck_assert_uint_eq(st->nr_cgroups, 0);	/* the dead client's watch is gone */
	ck_assert_uint_eq(st->nr_clients, 1);
	ck_assert_uint_eq(st->clients[0].pid, (unsigned int)getpid());
	nq_monitor_status_free(st);
	nq_monitor_close(m);

	ck_assert_msg(!nq_monitor_status(pin_dir, &st), "%s", nq_last_error());
	ck_assert_uint_eq(st->nr_clients, 0);
	nq_monitor_status_free(st);
	close(pipefd[0]);
	close(pipefd[1]);
}
END_TEST

/* Paths that are not memory cgroups or regular files are refused with a reason. */
START_TEST(bad_paths_are_refused)
{
	struct nq_monitor *m;

	REQUIRE_SETUP();
	ck_assert_msg(!nq_monitor_open(pin_dir, 0, &m), "%s", nq_last_error());
	ck_assert_int_eq(nq_monitor_watch_cgroup(m, "/nonexistent/cgroup", 0), -ENOENT);
	ck_assert_int_eq(nq_monitor_watch_cgroup(m, "/var/tmp", 0), -EINVAL);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "cgroup filesystem"));
	ck_assert_int_eq(nq_monitor_watch_file(m, "/var/tmp", 0), -EINVAL);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "regular file"));
	ck_assert_int_eq(nq_monitor_unwatch_file(m, small_file), -ENOENT);
	nq_monitor_close(m);
	ck_assert_int_eq(nq_monitor_open("/sys/fs/bpf/nq-no-such-monitor", 0, &m), -ENOENT);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "no monitor is loaded"));
}
END_TEST

/* Loading again is a no-op that says so. */
START_TEST(load_is_idempotent)
{
	struct nq_monitor_load_opts lo = { .pin_dir = pin_dir };
	struct nq_monitor_status *st;

	REQUIRE_SETUP();
	ck_assert_int_eq(nq_monitor_load(&lo), 1);
	ck_assert_msg(!nq_monitor_status(pin_dir, &st), "%s", nq_last_error());
	ck_assert_uint_eq(st->nr_links, 4);
	ck_assert_uint_eq(st->mode, 0700);
	nq_monitor_status_free(st);
	lo.ring_bytes = 12345;
	ck_assert_int_eq(nq_monitor_load(&lo), -EINVAL);
}
END_TEST

/*
 * A client notices when the monitor it reads is unloaded (the kernel does
 * not tell it: its map fds keep the maps), also when another monitor is
 * loaded under the same name; watches are dropped by cgroup id.
 */
START_TEST(client_notices_unload_and_drops_watch_by_id)
{
	struct nq_monitor_load_opts lo = { 0 };
	struct nq_monitor_status *st;
	struct nq_monitor *m;
	char pin2[64];
	uint64_t id = 0;

	REQUIRE_SETUP();
	id = cgroup_ino(cg_path);
	snprintf(pin2, sizeof(pin2), "/sys/fs/bpf/nqtest-check-%d", (int)getpid());
	lo.pin_dir = pin2;
	ck_assert_msg(nq_monitor_load(&lo) == 0, "%s", nq_last_error());
	ck_assert_msg(!nq_monitor_open(pin2, 0, &m), "%s", nq_last_error());
	ck_assert_int_eq(nq_monitor_check(m), 0);

	ck_assert_msg(!nq_monitor_watch_cgroup(m, cg_path, 0), "%s", nq_last_error());
	ck_assert_msg(!nq_monitor_unwatch_cgroup_id(m, id), "%s", nq_last_error());
	ck_assert_int_eq(nq_monitor_unwatch_cgroup_id(m, id), -ENOENT);
	ck_assert_msg(!nq_monitor_persist_cgroup(pin2, cg_path, 0, true), "%s", nq_last_error());
	ck_assert_msg(!nq_monitor_status(pin2, &st), "%s", nq_last_error());
	ck_assert_uint_eq(st->nr_cgroups, 1);
	ck_assert_uint_eq(st->cgroups[0].cgroup_id, id);
	nq_monitor_status_free(st);
	ck_assert_msg(!nq_monitor_forget_cgroup(pin2, id), "%s", nq_last_error());
	ck_assert_int_eq(nq_monitor_forget_cgroup(pin2, id), -ENOENT);
	ck_assert_msg(!nq_monitor_status(pin2, &st), "%s", nq_last_error());
	ck_assert_uint_eq(st->nr_cgroups, 0);
	nq_monitor_status_free(st);

	ck_assert_int_eq(nq_monitor_unload(pin2), 0);
	ck_assert_int_eq(nq_monitor_check(m), -ENOENT);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "is gone"));
	ck_assert_msg(nq_monitor_load(&lo) == 0, "%s", nq_last_error());
	/* A new monitor under the same name is not the one this client reads. */
	ck_assert_int_eq(nq_monitor_check(m), -ENOENT);
	nq_monitor_close(m);
	ck_assert_int_eq(nq_monitor_unload(pin2), 0);
}
END_TEST

static Suite *monitor_suite(void)
{
	Suite *s = suite_create("monitor");
	TCase *tc = tcase_create("kernel");

	tcase_add_unchecked_fixture(tc, monitor_setup, monitor_teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, load_is_idempotent);
	tcase_add_test(tc, bad_paths_are_refused);
	tcase_add_test(tc, memcg_reclaim_reaches_every_client);
	tcase_add_test(tc, reclaim_in_child_cgroup_goes_to_watched_parent);
	tcase_add_test(tc, file_eviction_reported_for_its_inode);
	tcase_add_test(tc, rate_limit_folds_events_into_count);
	tcase_add_test(tc, dead_client_slot_is_reclaimed);
	tcase_add_test(tc, client_notices_unload_and_drops_watch_by_id);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return nq_test_run(monitor_suite());
}
