// SPDX-License-Identifier: MIT
/*
 * Memory cgroups on v2 and v1: find the hierarchy with the memory
 * controller, create a child with limits, move processes in, read usage,
 * remove it.  See cgroup.h for the v1/v2 file table.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include "cgroup.h"
#include "nq_error.h"

#ifndef CGROUP_SUPER_MAGIC
#define CGROUP_SUPER_MAGIC	0x27e0eb
#endif
#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC	0x63677270
#endif

/* v1 reports "no limit" as PAGE_COUNTER_MAX pages; anything this big is none. */
#define V1_UNLIMITED_FLOOR	(1ull << 62)

static int join(char *buf, size_t len, const char *dir, const char *name)
{
	int n = snprintf(buf, len, "%s/%s", dir, name);

	if (n < 0 || (size_t)n >= len)
		return nq_fail(-ENAMETOOLONG, "path '%s/%s' is too long", dir, name);
	return 0;
}

static int read_text(const char *dir, const char *name, char *buf, size_t len)
{
	char path[PATH_MAX];
	ssize_t n;
	int fd, err;

	err = join(path, sizeof(path), dir, name);
	if (err)
		return err;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return nq_fail(-errno, "%s: %s", path, strerror(errno));
	n = read(fd, buf, len - 1);
	err = n < 0 ? -errno : 0;
	close(fd);
	if (err)
		return nq_fail(err, "reading %s: %s", path, strerror(-err));
	buf[n] = '\0';
	return 0;
}

static int write_text(const char *dir, const char *name, const char *text)
{
	char path[PATH_MAX];
	size_t len = strlen(text);
	ssize_t n;
	int fd, err;

	err = join(path, sizeof(path), dir, name);
	if (err)
		return err;
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return nq_fail(-errno, "%s: %s", path, strerror(errno));
	n = write(fd, text, len);
	err = n < 0 ? -errno : (size_t)n != len ? -EIO : 0;
	close(fd);
	if (err)
		return nq_fail(err, "writing '%s' to %s: %s", text, path, strerror(-err));
	return 0;
}

static int read_u64(const char *dir, const char *name, uint64_t *v)
{
	char buf[64], *end;
	int err = read_text(dir, name, buf, sizeof(buf));

	if (err)
		return err;
	if (!strncmp(buf, "max", 3)) {
		*v = NQ_CGROUP_UNLIMITED;
		return 0;
	}
	errno = 0;
	*v = strtoull(buf, &end, 10);
	if (errno || end == buf)
		return nq_fail(-EBADMSG, "%s/%s: not a number: '%.20s'", dir, name, buf);
	return 0;
}

/* "key value" line of a flat-keyed file (memory.events, memory.stat). */
static int read_key(const char *dir, const char *name, const char *key, uint64_t *v)
{
	char buf[8192], *p;
	size_t klen = strlen(key);
	int err = read_text(dir, name, buf, sizeof(buf));

	if (err)
		return err;
	for (p = buf; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		if (!strncmp(p, key, klen) && p[klen] == ' ') {
			*v = strtoull(p + klen + 1, NULL, 10);
			return 0;
		}
	}
	return nq_fail(-ENOENT, "%s/%s has no '%s' line", dir, name, key);
}

static bool word_in(const char *list, const char *word, const char *seps)
{
	size_t wlen = strlen(word);

	for (const char *p = list; *p;) {
		size_t n = strcspn(p, seps);

		if (n == wlen && !strncmp(p, word, wlen))
			return true;
		p += n;
		if (*p)
			p++;
	}
	return false;
}

/*
 * Scan /proc/self/mountinfo for the memory controller's hierarchy:
 *   ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
 * want_v2 selects a cgroup2 mount (with memory when need_memory), else a v1
 * cgroup mount whose super options name "memory".
 */
static int find_mount(bool want_v2, bool need_memory, char *mnt, size_t len, char *root,
		      size_t rlen)
{
	char line[4096];
	FILE *f = fopen("/proc/self/mountinfo", "re");
	int err = -ENOENT;

	if (!f)
		return nq_fail(-errno, "/proc/self/mountinfo: %s", strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		char r[PATH_MAX], m[PATH_MAX], *dash, fstype[32], superopts[512];

		if (sscanf(line, "%*s %*s %*s %4095s %4095s", r, m) != 2)
			continue;
		dash = strstr(line, " - ");
		if (!dash || sscanf(dash + 3, "%31s %*s %511s", fstype, superopts) != 2)
			continue;
		if (want_v2) {
			char ctl[512] = "";

			if (strcmp(fstype, "cgroup2"))
				continue;
			if (need_memory && (read_text(m, "cgroup.controllers", ctl, sizeof(ctl)) ||
					    !word_in(ctl, "memory", " \n"))) {
				nq_clear_error();
				continue;
			}
		} else if (strcmp(fstype, "cgroup") || !word_in(superopts, "memory", ",")) {
			continue;
		}
		if (strlen(m) >= len || strlen(r) >= rlen) {
			err = nq_fail(-ENAMETOOLONG, "cgroup mount point '%s' too long", m);
			break;
		}
		strcpy(mnt, m);
		strcpy(root, r);
		err = 0;
		break;
	}
	fclose(f);
	return err;
}

int nq_cgroup_memory_root(char *mount, size_t len, int *version)
{
	char root[PATH_MAX];

	if (!find_mount(true, true, mount, len, root, sizeof(root))) {
		*version = NQ_CGROUP_V2;
		return 0;
	}
	if (!find_mount(false, true, mount, len, root, sizeof(root))) {
		*version = NQ_CGROUP_V1;
		return 0;
	}
	return nq_fail(-ENOENT, "no memory cgroup controller: cgroup2 %s and no cgroup v1 "
			"hierarchy has 'memory' (see /proc/self/mountinfo, /proc/cgroups)",
		       find_mount(true, false, mount, len, root, sizeof(root)) ?
			       "is not mounted" : "is mounted without it");
}

/* Path of this process in the hierarchy: v1 line naming memory, or "0::". */
static int self_path(bool v2, char *path, size_t len)
{
	char line[4096];
	FILE *f = fopen("/proc/self/cgroup", "re");
	int err = -ENOENT;

	if (!f)
		return nq_fail(-errno, "/proc/self/cgroup: %s", strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;

		if (!c2)
			continue;
		*c1 = *c2 = '\0';	/* ID \0 CONTROLLERS \0 PATH */
		if (v2 ? strcmp(line, "0") || c1[1] : !word_in(c1 + 1, "memory", ","))
			continue;
		c2[strcspn(c2 + 1, "\n") + 1] = '\0';
		if (strlen(c2 + 1) >= len) {
			err = nq_fail(-ENAMETOOLONG, "cgroup path too long");
			break;
		}
		strcpy(path, c2 + 1);
		err = 0;
		break;
	}
	fclose(f);
	if (err == -ENOENT)
		return nq_fail(err, "/proc/self/cgroup has no %s line", v2 ? "'0::' (cgroup2)" :
			       "'memory' controller");
	return err;
}

/* mount + (path relative to the mount's root). */
static int mount_join(char *dir, size_t len, const char *mnt, const char *root, const char *path)
{
	size_t rlen = strlen(root);
	int n;

	if (strcmp(root, "/") && !strncmp(path, root, rlen) && (!path[rlen] || path[rlen] == '/'))
		path += rlen;
	while (*path == '/')
		path++;
	n = snprintf(dir, len, "%s%s%s", mnt, *path ? "/" : "", path);
	if (n < 0 || (size_t)n >= len)
		return nq_fail(-ENAMETOOLONG, "cgroup path '%s/%s' too long", mnt, path);
	return 0;
}

int nq_cgroup_self(char *dir, size_t len, int *version)
{
	char mnt[PATH_MAX], root[PATH_MAX], path[PATH_MAX];
	int err;

	err = nq_cgroup_memory_root(mnt, sizeof(mnt), version);
	if (err)
		return err;
	find_mount(*version == NQ_CGROUP_V2, true, mnt, sizeof(mnt), root, sizeof(root));
	err = self_path(*version == NQ_CGROUP_V2, path, sizeof(path));
	if (err)
		return err;
	return mount_join(dir, len, mnt, root, path);
}

int nq_cgroup_self_v2(char *dir, size_t len)
{
	char mnt[PATH_MAX], root[PATH_MAX], path[PATH_MAX];
	int err;

	if (find_mount(true, false, mnt, sizeof(mnt), root, sizeof(root)))
		return nq_fail(-ENOENT, "cgroup2 is not mounted");
	err = self_path(true, path, sizeof(path));
	if (err)
		return err;
	return mount_join(dir, len, mnt, root, path);
}

int nq_cgroup_version(const char *dir)
{
	struct statfs sf;

	if (statfs(dir, &sf))
		return nq_fail(-errno, "%s: %s", dir, strerror(errno));
	if (sf.f_type == CGROUP2_SUPER_MAGIC)
		return NQ_CGROUP_V2;
	if (sf.f_type == CGROUP_SUPER_MAGIC)
		return NQ_CGROUP_V1;
	return nq_fail(-EINVAL, "%s is not in a cgroup filesystem", dir);
}

int nq_cgroup_id(const char *dir, uint64_t *id)
{
	struct stat st;

	if (stat(dir, &st))
		return nq_fail(-errno, "%s: %s", dir, strerror(errno));
	*id = st.st_ino;
	return 0;
}

int nq_cgroup_still(const char *dir, uint64_t id)
{
	struct stat st;

	if (stat(dir, &st))
		return -errno;
	return !id || (uint64_t)st.st_ino == id ? 0 : -ESTALE;
}

static int make_dir(const char *dir)
{
	if (!mkdir(dir, 0755))
		return 0;
	switch (errno) {
	case EEXIST:
		return nq_fail(-EEXIST, "cgroup %s already exists (another launch with this "
				"--name, or a leftover: rmdir it)", dir);
	case EACCES:
	case EPERM:
	case EROFS:
		return nq_fail(-errno, "cannot create cgroup %s: %s (run as root, or delegate "
				"the parent cgroup to this user)", dir, strerror(errno));
	default:
		return nq_fail(-errno, "cannot create cgroup %s: %s", dir, strerror(errno));
	}
}

/*
 * v2 only distributes memory to children when the parent's
 * cgroup.subtree_control has it; enabling it fails with EBUSY in a
 * non-root cgroup that has processes itself (the no-internal-process rule).
 */
static int enable_memory_v2(const char *parent)
{
	char ctl[512];
	int err;

	err = read_text(parent, "cgroup.subtree_control", ctl, sizeof(ctl));
	if (err)
		return err;
	if (word_in(ctl, "memory", " \n"))
		return 0;
	err = write_text(parent, "cgroup.subtree_control", "+memory");
	if (err == -EBUSY)
		return nq_fail(err, "cannot enable the memory controller below %s: it has "
				"processes of its own (cgroup v2's no-internal-process rule); "
				"give a parent cgroup without processes", parent);
	return err;
}

int nq_cgroup_create(struct nq_cgroup *cg, const char *parent, const char *name)
{
	char own[PATH_MAX], v2[PATH_MAX];
	int err, n;

	memset(cg, 0, sizeof(*cg));
	if (!name || !*name || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
		return nq_fail(-EINVAL, "cgroup name '%s' must be one path component",
			       name ? name : "");
	if (!parent) {
		err = nq_cgroup_self(own, sizeof(own), &cg->version);
		if (err)
			return err;
		parent = own;
	} else {
		err = nq_cgroup_version(parent);
		if (err < 0)
			return err;
		cg->version = err;
	}
	n = snprintf(cg->dir, sizeof(cg->dir), "%s/%s", parent, name);
	if (n < 0 || (size_t)n >= sizeof(cg->dir))
		return nq_fail(-ENAMETOOLONG, "cgroup path '%s/%s' too long", parent, name);
	if (cg->version == NQ_CGROUP_V2) {
		err = enable_memory_v2(parent);
		if (err)
			return err;
	}
	err = make_dir(cg->dir);
	if (err) {
		cg->dir[0] = '\0';
		return err;
	}
	/* v1 has no per-cgroup PSI; a v2 twin without controllers has. */
	if (cg->version == NQ_CGROUP_V1 && !nq_cgroup_self_v2(v2, sizeof(v2))) {
		n = snprintf(cg->psi_dir, sizeof(cg->psi_dir), "%s/%s", v2, name);
		if (n < 0 || (size_t)n >= sizeof(cg->psi_dir) || mkdir(cg->psi_dir, 0755))
			cg->psi_dir[0] = '\0';
	}
	nq_clear_error();
	return 0;
}

int nq_cgroup_set_max(const struct nq_cgroup *cg, uint64_t bytes)
{
	char v[32];

	snprintf(v, sizeof(v), "%llu", (unsigned long long)bytes);
	return write_text(cg->dir, cg->version == NQ_CGROUP_V2 ? "memory.max" :
			  "memory.limit_in_bytes", v);
}

int nq_cgroup_set_high(const struct nq_cgroup *cg, uint64_t bytes, bool *approximate)
{
	char v[32];

	snprintf(v, sizeof(v), "%llu", (unsigned long long)bytes);
	*approximate = cg->version == NQ_CGROUP_V1;
	return write_text(cg->dir, cg->version == NQ_CGROUP_V2 ? "memory.high" :
			  "memory.soft_limit_in_bytes", v);
}

int nq_cgroup_attach(const struct nq_cgroup *cg, pid_t pid)
{
	char v[32];
	int err;

	snprintf(v, sizeof(v), "%d", (int)pid);
	err = write_text(cg->dir, "cgroup.procs", v);
	if (err)
		return err;
	/* PSI twin: best effort, the memory cgroup is what matters. */
	if (cg->psi_dir[0])
		write_text(cg->psi_dir, "cgroup.procs", v);
	nq_clear_error();
	return 0;
}

int nq_cgroup_usage(const char *dir, uint64_t *bytes)
{
	int v = nq_cgroup_version(dir);

	if (v < 0)
		return v;
	return read_u64(dir, v == NQ_CGROUP_V2 ? "memory.current" : "memory.usage_in_bytes", bytes);
}

/*
 * The limit in force: the smallest along the ancestors.  v1 computes it for
 * us (memory.stat hierarchical_memory_limit); v2 is walked up to the mount.
 */
int nq_cgroup_limit(const char *dir, uint64_t *bytes)
{
	char path[PATH_MAX];
	uint64_t lim, v;
	int ver = nq_cgroup_version(dir), err;

	if (ver < 0)
		return ver;
	if (ver == NQ_CGROUP_V1) {
		err = read_key(dir, "memory.stat", "hierarchical_memory_limit", &lim);
		if (err)
			err = read_u64(dir, "memory.limit_in_bytes", &lim);
		if (err)
			return err;
		*bytes = lim >= V1_UNLIMITED_FLOOR ? NQ_CGROUP_UNLIMITED : lim;
		return 0;
	}
	if (strlen(dir) >= sizeof(path))
		return nq_fail(-ENAMETOOLONG, "cgroup path too long");
	strcpy(path, dir);
	err = read_u64(path, "memory.max", &lim);
	if (err)
		return err;
	for (;;) {
		char *slash = strrchr(path, '/');

		if (!slash || slash == path)
			break;
		*slash = '\0';
		if (nq_cgroup_version(path) != NQ_CGROUP_V2 || read_u64(path, "memory.max", &v))
			break;	/* the root has no memory.max */
		if (v < lim)
			lim = v;
	}
	nq_clear_error();
	*bytes = lim;
	return 0;
}

int nq_cgroup_oom_kills(const char *dir, uint64_t *kills)
{
	int v = nq_cgroup_version(dir);

	if (v < 0)
		return v;
	return read_key(dir, v == NQ_CGROUP_V2 ? "memory.events" : "memory.oom_control",
			"oom_kill", kills);
}

/* Call fn for every pid in dir/cgroup.procs; returns the count. */
static int for_each_pid(const char *dir, void (*fn)(pid_t))
{
	char path[PATH_MAX];
	FILE *f;
	int n = 0, err, pid;

	err = join(path, sizeof(path), dir, "cgroup.procs");
	if (err)
		return err;
	f = fopen(path, "re");
	if (!f)
		return nq_fail(-errno, "%s: %s", path, strerror(errno));
	while (fscanf(f, "%d", &pid) == 1) {
		if (fn)
			fn(pid);
		n++;
	}
	fclose(f);
	return n;
}

int nq_cgroup_nprocs(const char *dir)
{
	return for_each_pid(dir, NULL);
}

static void kill_pid(pid_t pid)
{
	kill(pid, SIGKILL);
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

int nq_cgroup_remove(struct nq_cgroup *cg, bool kill_left, int timeout_ms)
{
	int waited = 0, n, err = 0;

	if (!cg->dir[0])
		return 0;
	for (;;) {
		n = for_each_pid(cg->dir, kill_left ? kill_pid : NULL);
		if (n < 0 && n != -ENOENT)
			return n;
		if (n <= 0)
			break;
		if (waited >= timeout_ms)
			return nq_fail(-EBUSY, "cgroup %s still has %d process%s after %d ms",
				       cg->dir, n, n == 1 ? "" : "es", timeout_ms);
		sleep_ms(10);
		waited += 10;
	}
	/* A v1 memcg can refuse rmdir briefly while the last task's exit settles. */
	while (rmdir(cg->dir) && errno != ENOENT) {
		if (errno != EBUSY || waited >= timeout_ms) {
			err = nq_fail(-errno, "rmdir %s: %s", cg->dir, strerror(errno));
			break;
		}
		sleep_ms(10);
		waited += 10;
	}
	if (cg->psi_dir[0] && !rmdir(cg->psi_dir))
		cg->psi_dir[0] = '\0';
	if (!err)
		cg->dir[0] = '\0';
	return err;
}
