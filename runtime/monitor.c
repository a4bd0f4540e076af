// SPDX-License-Identifier: MIT
/*
 * The pressure monitor's clients: open the pinned maps, claim a slot and its
 * ring buffer, subscribe cgroups and files, read events; and the status
 * snapshot that `nestquant monitor status` prints.
 *
 * Concurrency.  Subscriptions are bitmasks of client slots inside map values,
 * so subscribing is read-modify-write.  Every such edit happens under an
 * exclusive flock() on the pin directory, which the loader takes as well;
 * BPF programs only read the configuration maps.  A client that died without
 * closing leaves its slot claimed: the next client that needs a slot checks
 * whether the owner (PID plus start time, against PID reuse) still exists and
 * takes the slot over, clearing the dead client's subscriptions first.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/magic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "monitor.h"
#include "monitor_priv.h"
#include "nq_error.h"

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif
#ifndef CGROUP_SUPER_MAGIC
#define CGROUP_SUPER_MAGIC 0x27e0eb
#endif

/* The maps a client or the status reader opens. */
struct pins {
	char dir[256];
	int dirfd;
	int slots, client_stat, cgroup_cfg, cgroup_stat, file_cfg, file_stat;
	int settings, global_stat, totals;
};

struct nq_monitor {
	struct pins p;
	int slot;
	unsigned int flags;
	int ring_fd;
	ino_t ring_ino;		/* of our ring's pin, to tell a reload from ours */
	struct ring_buffer *rb;
	nq_monitor_cb cb;
	void *cb_ctx;
};

static const char *const event_names[NQ_MON_EV_MAX] = {
	[NQ_MON_EV_NONE] = "none",
	[NQ_MON_EV_MEMCG_RECLAIM] = "memcg_reclaim",
	[NQ_MON_EV_KSWAPD_WAKE] = "kswapd_wake",
	[NQ_MON_EV_DIRECT_RECLAIM] = "direct_reclaim",
	[NQ_MON_EV_FILE_EVICT] = "file_evict",
};

const char *nq_monitor_event_name(uint32_t type)
{
	return type < NQ_MON_EV_MAX ? event_names[type] : "unknown";
}

uint32_t nq_monitor_kdev(uint64_t st_dev)
{
	return (major(st_dev) << 20) | (minor(st_dev) & 0xfffff);
}

/* Explain EACCES/EPERM on a pin in terms the operator can act on. */
static int access_error(int err, const char *dir, const char *path)
{
	struct stat st;
	const char *what = path;

	if (stat(dir, &st) == 0 && (err == -EACCES || err == -EPERM)) {
		return nq_fail(err, "permission denied on the monitor's pins: %s is mode %04o "
			       "owned by uid %u gid %u and this process runs as uid %u gid %u; "
			       "ask the operator to load it with `nestquant monitor load --group "
			       "GROUP` and to add this user to GROUP",
			       dir, st.st_mode & 07777, st.st_uid, st.st_gid, geteuid(), getegid());
	}
	if (err == -ENOENT)
		return nq_fail(err, "no monitor is loaded (%s missing; run `nestquant monitor "
			       "load` as root)", what);
	return nq_fail(err, "opening %s: %s", what, strerror(-err));
}

static int open_pin(struct pins *p, const char *name, __u32 value_size, int *fd)
{
	struct bpf_map_info info = {};
	__u32 len = sizeof(info);
	char path[PATH_MAX];
	int err;

	err = nq_mon_path(path, sizeof(path), p->dir, name);
	if (err)
		return err;
	*fd = bpf_obj_get(path);
	if (*fd < 0) {
		err = -errno;
		*fd = -1;
		return access_error(err, p->dir, path);
	}
	if (bpf_obj_get_info_by_fd(*fd, &info, &len))
		return nq_fail(-errno, "%s: %s", path, strerror(errno));
	if (value_size && info.value_size != value_size)
		return nq_fail(-EPROTO, "%s: value size %u, this build expects %u (the loaded "
			       "monitor is from another version: reload it)", path,
			       info.value_size, value_size);
	return 0;
}

static void pins_close(struct pins *p)
{
	int *fds[] = { &p->slots, &p->client_stat, &p->cgroup_cfg, &p->cgroup_stat,
		       &p->file_cfg, &p->file_stat, &p->settings, &p->global_stat,
		       &p->totals, &p->dirfd };

	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
		if (*fds[i] >= 0)
			close(*fds[i]);
		*fds[i] = -1;
	}
}

static int pins_open(struct pins *p, const char *dir)
{
	struct {
		const char *name;
		int *fd;
		__u32 size;
	} maps[] = {
		{ "client_slots", &p->slots, sizeof(struct nq_mon_client) },
		{ "client_stat", &p->client_stat, sizeof(struct nq_mon_client_stat) },
		{ "cgroup_cfg", &p->cgroup_cfg, sizeof(struct nq_mon_cgroup_cfg) },
		{ "cgroup_stat", &p->cgroup_stat, sizeof(struct nq_mon_stat) },
		{ "file_cfg", &p->file_cfg, sizeof(struct nq_mon_file_cfg) },
		{ "file_stat", &p->file_stat, sizeof(struct nq_mon_stat) },
		{ "settings", &p->settings, sizeof(struct nq_mon_settings) },
		{ "global_stat", &p->global_stat, sizeof(struct nq_mon_stat) },
		{ "totals", &p->totals, 0 },
	};
	struct nq_mon_settings set;
	__u32 zero = 0;
	int err;

	memset(p, 0, sizeof(*p));
	p->dirfd = -1;
	for (size_t i = 0; i < sizeof(maps) / sizeof(maps[0]); i++)
		*maps[i].fd = -1;
	if (snprintf(p->dir, sizeof(p->dir), "%s", dir ? dir : NQ_MONITOR_PIN_DIR) >=
	    (int)sizeof(p->dir))
		return nq_fail(-ENAMETOOLONG, "pin directory name is too long");
	p->dirfd = open(p->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (p->dirfd < 0)
		return access_error(-errno, p->dir, p->dir);
	for (size_t i = 0; i < sizeof(maps) / sizeof(maps[0]); i++) {
		err = open_pin(p, maps[i].name, maps[i].size, maps[i].fd);
		if (err)
			goto err_close;
	}
	if (!bpf_map_lookup_elem(p->settings, &zero, &set) && set.abi != NQ_MON_ABI) {
		err = nq_fail(-EPROTO, "the monitor pinned at %s has layout version %u, this "
			      "build speaks %u: reload it (nestquant monitor unload; load)",
			      p->dir, set.abi, NQ_MON_ABI);
		goto err_close;
	}
	return 0;
err_close:
	pins_close(p);
	return err;
}

static int pins_lock(struct pins *p)
{
	if (flock(p->dirfd, LOCK_EX))
		return nq_fail(-errno, "locking %s: %s", p->dir, strerror(errno));
	return 0;
}

static void pins_unlock(struct pins *p)
{
	flock(p->dirfd, LOCK_UN);
}

/* Field 22 of /proc/PID/stat (start time in clock ticks), 0 if gone. */
static uint64_t proc_start_time(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long long start = 0;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	p = strrchr(buf, ')');	/* comm may contain spaces and parentheses */
	if (!p)
		return 0;
	/* After ") " come fields 3..: skip 19 fields to reach field 22. */
	p++;
	for (int field = 2; field < 21 && p; field++)
		p = strchr(p + 1, ' ');
	if (p)
		sscanf(p, " %llu", &start);
	return start;
}

static bool client_alive(const struct nq_mon_client *c)
{
	uint64_t start = proc_start_time(c->pid);

	return start && start == c->start_time;
}

/* Clear slot's bit in every subscription; drop entries nobody keeps. */
static void clear_slot(struct pins *p, unsigned int slot)
{
	__u64 bit = 1ull << slot, key, next, *prev = NULL;
	struct nq_mon_file_key fkey, fnext, *fprev = NULL;
	struct nq_mon_settings set;
	__u32 zero = 0;

	while (!bpf_map_get_next_key(p->cgroup_cfg, prev, &next)) {
		struct nq_mon_cgroup_cfg cfg;

		key = next;
		prev = &key;
		if (bpf_map_lookup_elem(p->cgroup_cfg, &key, &cfg) || !(cfg.clients & bit))
			continue;
		cfg.clients &= ~bit;
		if (!cfg.clients && !(cfg.flags & NQ_MON_CGF_PERSIST)) {
			bpf_map_delete_elem(p->cgroup_cfg, &key);
			bpf_map_delete_elem(p->cgroup_stat, &key);
			prev = NULL;	/* the iteration order changed: restart */
			continue;
		}
		bpf_map_update_elem(p->cgroup_cfg, &key, &cfg, BPF_EXIST);
	}
	while (!bpf_map_get_next_key(p->file_cfg, fprev, &fnext)) {
		struct nq_mon_file_cfg cfg;

		fkey = fnext;
		fprev = &fkey;
		if (bpf_map_lookup_elem(p->file_cfg, &fkey, &cfg) || !(cfg.clients & bit))
			continue;
		cfg.clients &= ~bit;
		if (!cfg.clients && !(cfg.flags & NQ_MON_CGF_PERSIST)) {
			bpf_map_delete_elem(p->file_cfg, &fkey);
			bpf_map_delete_elem(p->file_stat, &fkey);
			fprev = NULL;
			continue;
		}
		bpf_map_update_elem(p->file_cfg, &fkey, &cfg, BPF_EXIST);
	}
	if (!bpf_map_lookup_elem(p->settings, &zero, &set) && (set.global_clients & bit)) {
		set.global_clients &= ~bit;
		bpf_map_update_elem(p->settings, &zero, &set, BPF_ANY);
	}
}

static int claim_slot(struct nq_monitor *m)
{
	struct nq_mon_client me = {
		.pid = getpid(),
		.uid = geteuid(),
		.flags = m->flags,
		.abi = NQ_MON_ABI,
	};
	struct nq_mon_client_stat zero_stat = {};
	struct nq_mon_client c;

	me.start_time = proc_start_time(me.pid);
	for (__u32 slot = 0; slot < NQ_MON_MAX_CLIENTS; slot++) {
		if (!bpf_map_lookup_elem(m->p.slots, &slot, &c)) {
			if (client_alive(&c))
				continue;
			clear_slot(&m->p, slot);
			bpf_map_delete_elem(m->p.slots, &slot);
		}
		if (bpf_map_update_elem(m->p.slots, &slot, &me, BPF_NOEXIST))
			continue;
		bpf_map_update_elem(m->p.client_stat, &slot, &zero_stat, BPF_ANY);
		m->slot = slot;
		return 0;
	}
	return nq_fail(-EBUSY, "all %d monitor client slots are in use by live processes",
		       NQ_MON_MAX_CLIENTS);
}

static int discard_event(void *ctx, void *data, size_t size)
{
	(void)ctx, (void)data, (void)size;
	return 0;
}

static int ring_event(void *ctx, void *data, size_t size)
{
	struct nq_monitor *m = ctx;
	struct nq_mon_event ev;

	if (size < sizeof(ev) || !m->cb)
		return 0;
	memcpy(&ev, data, sizeof(ev));
	return m->cb(m->cb_ctx, &ev);
}

int nq_monitor_open(const char *pin_dir, unsigned int flags, struct nq_monitor **out)
{
	char name[32], path[PATH_MAX];
	struct nq_monitor *m;
	__u32 zero = 0;
	int err;

	*out = NULL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return nq_fail(-ENOMEM, "out of memory");
	m->slot = -1;
	m->ring_fd = -1;
	m->flags = flags;
	err = pins_open(&m->p, pin_dir);
	if (err)
		goto err_free;
	err = pins_lock(&m->p);
	if (err)
		goto err_pins;
	err = claim_slot(m);
	if (err)
		goto err_unlock;

	nq_mon_ring_name(name, sizeof(name), m->slot);
	err = nq_mon_path(path, sizeof(path), m->p.dir, name);
	if (err)
		goto err_release;
	m->ring_fd = bpf_obj_get(path);
	if (m->ring_fd < 0) {
		err = access_error(-errno, m->p.dir, path);
		goto err_release;
	}
	{
		struct stat sb;

		if (!fstatat(m->p.dirfd, name, &sb, 0))
			m->ring_ino = sb.st_ino;
	}
	/* A dead previous owner may have left records: drop them unread. */
	m->rb = ring_buffer__new(m->ring_fd, discard_event, m, NULL);
	if (!m->rb) {
		err = nq_fail(-errno, "mapping ring buffer %s: %s", path, strerror(errno));
		goto err_release;
	}
	ring_buffer__consume(m->rb);
	ring_buffer__free(m->rb);
	m->rb = ring_buffer__new(m->ring_fd, ring_event, m, NULL);
	if (!m->rb) {
		err = nq_fail(-errno, "mapping ring buffer %s: %s", path, strerror(errno));
		goto err_release;
	}
	if (flags & NQ_MONITOR_GLOBAL) {
		struct nq_mon_settings set;

		if (bpf_map_lookup_elem(m->p.settings, &zero, &set) == 0) {
			set.global_clients |= 1ull << m->slot;
			if (!set.global_min_interval_ns)
				set.global_min_interval_ns = NQ_MONITOR_DEFAULT_INTERVAL_NS;
			bpf_map_update_elem(m->p.settings, &zero, &set, BPF_ANY);
		}
	}
	pins_unlock(&m->p);
	*out = m;
	return 0;

err_release:
	clear_slot(&m->p, m->slot);
	bpf_map_delete_elem(m->p.slots, &m->slot);
err_unlock:
	pins_unlock(&m->p);
err_pins:
	if (m->rb)
		ring_buffer__free(m->rb);
	if (m->ring_fd >= 0)
		close(m->ring_fd);
	pins_close(&m->p);
err_free:
	free(m);
	return err;
}

void nq_monitor_close(struct nq_monitor *m)
{
	__u32 slot;

	if (!m)
		return;
	slot = m->slot;
	if (!pins_lock(&m->p)) {
		clear_slot(&m->p, slot);
		bpf_map_delete_elem(m->p.slots, &slot);
		pins_unlock(&m->p);
	}
	ring_buffer__free(m->rb);
	close(m->ring_fd);
	pins_close(&m->p);
	free(m);
}

/*
 * `nestquant monitor unload` removes the pins; a client keeps its map fds,
 * so the maps live on, but the links go with their pins and the programs
 * detach: the ring simply stays empty.  Nothing in the kernel tells the
 * client, so look at the pins themselves, relative to the directory fd
 * taken at open (unload removes that directory: lookups in it then fail
 * even when a new monitor was loaded under the same name meanwhile).
 */
int nq_monitor_check(const struct nq_monitor *m)
{
	char name[64];
	struct stat sb;
	int links = 0;

	nq_mon_ring_name(name, sizeof(name), m->slot);
	if (fstatat(m->p.dirfd, name, &sb, 0))
		return nq_fail(errno == ENOENT ? -ENOENT : -errno, "pin %s/%s %s", m->p.dir, name,
			       errno == ENOENT ? "is gone" :
			       strerror(errno));
	if (m->ring_ino && sb.st_ino != m->ring_ino)
		return nq_fail(-ESTALE, "pin %s/%s is a new one: the monitor was unloaded and "
			       "loaded again", m->p.dir, name);
	for (int i = 0; nq_mon_prog_names[i]; i++) {
		nq_mon_link_name(name, sizeof(name), nq_mon_prog_names[i]);
		links += !fstatat(m->p.dirfd, name, &sb, 0);
	}
	if (!links)
		return nq_fail(-ENOLINK, "no program link is pinned in %s any more: the "
			       "programs are detached", m->p.dir);
	return 0;
}

int nq_monitor_fd(const struct nq_monitor *m)
{
	return ring_buffer__epoll_fd(m->rb);
}

int nq_monitor_slot(const struct nq_monitor *m)
{
	return m->slot;
}

int nq_monitor_poll(struct nq_monitor *m, int timeout_ms, nq_monitor_cb cb, void *ctx)
{
	int n;

	m->cb = cb;
	m->cb_ctx = ctx;
	n = ring_buffer__poll(m->rb, timeout_ms);
	if (n == -EINTR)
		return 0;
	if (n < 0)
		return nq_fail(n, "reading monitor events: %s", strerror(-n));
	return n;
}

int nq_monitor_consume(struct nq_monitor *m, nq_monitor_cb cb, void *ctx)
{
	int n;

	m->cb = cb;
	m->cb_ctx = ctx;
	n = ring_buffer__consume(m->rb);
	if (n < 0)
		return nq_fail(n, "reading monitor events: %s", strerror(-n));
	return n;
}

/* ---- subscriptions -------------------------------------------------------- */

/* Resolve a memory cgroup directory to the id the BPF side reports. */
static int cgroup_id(const char *path, __u64 *id)
{
	static const char *const memfiles[] = {
		"memory.limit_in_bytes", "memory.max", "memory.stat", NULL,
	};
	struct statfs sfs;
	struct stat st;
	char probe[PATH_MAX];
	bool mem = false;

	if (stat(path, &st))
		return nq_fail(-errno, "cgroup '%s': %s", path, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return nq_fail(-ENOTDIR, "cgroup '%s' is not a directory", path);
	if (statfs(path, &sfs))
		return nq_fail(-errno, "cgroup '%s': %s", path, strerror(errno));
	if (sfs.f_type != CGROUP_SUPER_MAGIC && sfs.f_type != CGROUP2_SUPER_MAGIC)
		return nq_fail(-EINVAL, "'%s' is not in a cgroup filesystem", path);
	for (int i = 0; memfiles[i] && !mem; i++) {
		snprintf(probe, sizeof(probe), "%s/%s", path, memfiles[i]);
		mem = !access(probe, F_OK);
	}
	if (!mem)
		return nq_fail(-EINVAL, "'%s' is not a memory cgroup (no memory.* files: the "
			       "memory controller is on another hierarchy, e.g. "
			       "/sys/fs/cgroup/memory on cgroup v1)", path);
	/* kernfs ids are the inode numbers on 64-bit (kernfs_id_ino). */
	*id = st.st_ino;
	return 0;
}

static int file_key(const char *path, struct nq_mon_file_key *key)
{
	struct stat st;

	if (stat(path, &st))
		return nq_fail(-errno, "file '%s': %s", path, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return nq_fail(-EINVAL, "'%s' is not a regular file", path);
	memset(key, 0, sizeof(*key));
	key->dev = nq_monitor_kdev(st.st_dev);
	key->ino = st.st_ino;
	return 0;
}

static void copy_path(char *dst, const char *path)
{
	char real[PATH_MAX];
	const char *src = realpath(path, real) ? real : path;
	size_t len = strlen(src);

	/* Keep the tail, which names the cgroup or file, when it is too long. */
	if (len >= NQ_MON_PATH_MAX)
		src += len - (NQ_MON_PATH_MAX - 1);
	snprintf(dst, NQ_MON_PATH_MAX, "%s", src);
}

/*
 * Add (on) or remove (!on) subscriber bits and/or the persist flag on one
 * entry of a cfg/stat map pair.  The cfg structs of cgroups and files share
 * their layout, so one function edits both.
 */
static int edit_watch(struct pins *p, int cfg_fd, int stat_fd, const void *key, const char *path,
		      __u64 bits, __u32 flags, __u64 interval, bool on)
{
	struct nq_mon_cgroup_cfg cfg;
	struct nq_mon_stat st = {};
	bool exists;
	int err;

	err = pins_lock(p);
	if (err)
		return err;
	exists = !bpf_map_lookup_elem(cfg_fd, key, &cfg);
	if (!on) {
		if (!exists) {
			err = nq_fail(-ENOENT, "'%s' is not watched", path);
			goto out;
		}
		cfg.clients &= ~bits;
		cfg.flags &= ~flags;
		if (!cfg.clients && !(cfg.flags & NQ_MON_CGF_PERSIST)) {
			bpf_map_delete_elem(cfg_fd, key);
			bpf_map_delete_elem(stat_fd, key);
		} else {
			bpf_map_update_elem(cfg_fd, key, &cfg, BPF_EXIST);
		}
		goto out;
	}
	if (!exists) {
		memset(&cfg, 0, sizeof(cfg));
		cfg.abi = NQ_MON_ABI;
		cfg.min_interval_ns = interval;
		copy_path(cfg.path, path);
		/* The BPF side finds cfg first, then stat: create stat first. */
		if (bpf_map_update_elem(stat_fd, key, &st, BPF_NOEXIST) && errno != EEXIST) {
			err = nq_fail(-errno, "watching '%s': %s", path,
				      errno == E2BIG ? "too many watched entries" : strerror(errno));
			goto out;
		}
	} else if (interval < cfg.min_interval_ns) {
		cfg.min_interval_ns = interval;
	}
	cfg.clients |= bits;
	cfg.flags |= flags;
	if (bpf_map_update_elem(cfg_fd, key, &cfg, BPF_ANY)) {
		err = nq_fail(-errno, "watching '%s': %s", path,
			      errno == E2BIG ? "too many watched entries" : strerror(errno));
		if (!exists)
			bpf_map_delete_elem(stat_fd, key);
	}
out:
	pins_unlock(p);
	return err;
}

int nq_monitor_watch_cgroup(struct nq_monitor *m, const char *path, uint64_t min_interval_ns)
{
	__u64 id;
	int err = cgroup_id(path, &id);

	if (err)
		return err;
	return edit_watch(&m->p, m->p.cgroup_cfg, m->p.cgroup_stat, &id, path, 1ull << m->slot, 0,
			  min_interval_ns, true);
}

int nq_monitor_unwatch_cgroup(struct nq_monitor *m, const char *path)
{
	__u64 id;
	int err = cgroup_id(path, &id);

	if (err)
		return err;
	return edit_watch(&m->p, m->p.cgroup_cfg, m->p.cgroup_stat, &id, path, 1ull << m->slot, 0,
			  0, false);
}

int nq_monitor_unwatch_cgroup_id(struct nq_monitor *m, uint64_t id)
{
	char what[48];
	__u64 key = id;

	snprintf(what, sizeof(what), "cgroup id %" PRIu64, id);
	return edit_watch(&m->p, m->p.cgroup_cfg, m->p.cgroup_stat, &key, what, 1ull << m->slot,
			  0, 0, false);
}

int nq_monitor_watch_file(struct nq_monitor *m, const char *path, uint64_t min_interval_ns)
{
	struct nq_mon_file_key key;
	int err = file_key(path, &key);

	if (err)
		return err;
	return edit_watch(&m->p, m->p.file_cfg, m->p.file_stat, &key, path, 1ull << m->slot, 0,
			  min_interval_ns, true);
}

int nq_monitor_unwatch_file(struct nq_monitor *m, const char *path)
{
	struct nq_mon_file_key key;
	int err = file_key(path, &key);

	if (err)
		return err;
	return edit_watch(&m->p, m->p.file_cfg, m->p.file_stat, &key, path, 1ull << m->slot, 0,
			  0, false);
}

int nq_monitor_persist_cgroup(const char *pin_dir, const char *path, uint64_t min_interval_ns,
			      bool on)
{
	struct pins p;
	__u64 id;
	int err;

	err = cgroup_id(path, &id);
	if (err)
		return err;
	err = pins_open(&p, pin_dir);
	if (err)
		return err;
	err = edit_watch(&p, p.cgroup_cfg, p.cgroup_stat, &id, path, 0, NQ_MON_CGF_PERSIST,
			 min_interval_ns, on);
	pins_close(&p);
	return err;
}

int nq_monitor_forget_cgroup(const char *pin_dir, uint64_t id)
{
	char what[48];
	struct pins p;
	__u64 key = id;
	int err;

	snprintf(what, sizeof(what), "cgroup id %" PRIu64, id);
	err = pins_open(&p, pin_dir);
	if (err)
		return err;
	err = edit_watch(&p, p.cgroup_cfg, p.cgroup_stat, &key, what, 0, NQ_MON_CGF_PERSIST, 0,
			 false);
	pins_close(&p);
	return err;
}

int nq_monitor_persist_file(const char *pin_dir, const char *path, uint64_t min_interval_ns,
			    bool on)
{
	struct nq_mon_file_key key;
	struct pins p;
	int err;

	err = file_key(path, &key);
	if (err)
		return err;
	err = pins_open(&p, pin_dir);
	if (err)
		return err;
	err = edit_watch(&p, p.file_cfg, p.file_stat, &key, path, 0, NQ_MON_CGF_PERSIST,
			 min_interval_ns, on);
	pins_close(&p);
	return err;
}

/* ---- status --------------------------------------------------------------- */

static void read_totals(struct pins *p, __u64 *totals)
{
	int ncpu = libbpf_num_possible_cpus();
	__u64 *vals;

	if (ncpu <= 0)
		return;
	vals = calloc(ncpu, sizeof(*vals));
	if (!vals)
		return;
	for (__u32 t = 0; t < NQ_MON_EV_MAX; t++) {
		if (bpf_map_lookup_elem(p->totals, &t, vals))
			continue;
		for (int c = 0; c < ncpu; c++)
			totals[t] += vals[c];
	}
	free(vals);
}

int nq_monitor_status(const char *pin_dir, struct nq_monitor_status **out)
{
	struct nq_mon_file_key fkey, fcur, *fprev = NULL;
	struct nq_monitor_status *st;
	__u64 key, cur, *prev = NULL;
	char name[64];
	struct stat sb;
	struct pins p;
	__u32 zero = 0;
	int err;

	*out = NULL;
	err = pins_open(&p, pin_dir);
	if (err)
		return err;
	st = calloc(1, sizeof(*st));
	if (!st) {
		pins_close(&p);
		return nq_fail(-ENOMEM, "out of memory");
	}
	snprintf(st->pin_dir, sizeof(st->pin_dir), "%s", p.dir);
	if (!fstat(p.dirfd, &sb)) {
		st->mode = sb.st_mode & 07777;
		st->uid = sb.st_uid;
		st->gid = sb.st_gid;
	}
	for (int i = 0; nq_mon_prog_names[i]; i++) {
		nq_mon_link_name(name, sizeof(name), nq_mon_prog_names[i]);
		if (!fstatat(p.dirfd, name, &sb, 0))
			st->nr_links++;
	}
	read_totals(&p, st->totals);
	bpf_map_lookup_elem(p.settings, &zero, &st->settings);
	bpf_map_lookup_elem(p.global_stat, &zero, &st->global);

	for (__u32 slot = 0; slot < NQ_MON_MAX_CLIENTS; slot++) {
		struct nq_monitor_status_client *c = &st->clients[st->nr_clients];
		struct nq_mon_client_stat cs = {};
		struct nq_mon_client cl;

		if (bpf_map_lookup_elem(p.slots, &slot, &cl))
			continue;
		bpf_map_lookup_elem(p.client_stat, &slot, &cs);
		c->slot = slot;
		c->pid = cl.pid;
		c->uid = cl.uid;
		c->flags = cl.flags;
		c->alive = client_alive(&cl);
		c->delivered = cs.delivered;
		c->dropped = cs.dropped;
		st->nr_clients++;
	}
	while (st->nr_cgroups < NQ_MON_MAX_CGROUPS &&
	       !bpf_map_get_next_key(p.cgroup_cfg, prev, &key)) {
		struct nq_monitor_status_watch *w = &st->cgroups[st->nr_cgroups];

		cur = key;
		prev = &cur;
		w->cgroup_id = cur;
		if (bpf_map_lookup_elem(p.cgroup_cfg, &cur, &w->cfg))
			continue;
		bpf_map_lookup_elem(p.cgroup_stat, &cur, &w->stat);
		st->nr_cgroups++;
	}
	while (st->nr_files < NQ_MON_MAX_FILES &&
	       !bpf_map_get_next_key(p.file_cfg, fprev, &fkey)) {
		struct nq_monitor_status_watch *w = &st->files[st->nr_files];
		struct nq_mon_file_cfg fcfg;

		fcur = fkey;
		fprev = &fcur;
		w->dev = fcur.dev;
		w->ino = fcur.ino;
		if (bpf_map_lookup_elem(p.file_cfg, &fcur, &fcfg))
			continue;
		w->cfg.clients = fcfg.clients;
		w->cfg.min_interval_ns = fcfg.min_interval_ns;
		w->cfg.flags = fcfg.flags;
		w->cfg.abi = fcfg.abi;
		memcpy(w->cfg.path, fcfg.path, sizeof(w->cfg.path));
		bpf_map_lookup_elem(p.file_stat, &fcur, &w->stat);
		st->nr_files++;
	}
	pins_close(&p);
	*out = st;
	return 0;
}

void nq_monitor_status_free(struct nq_monitor_status *st)
{
	free(st);
}
