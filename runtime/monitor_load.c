// SPDX-License-Identifier: MIT
/*
 * Loading, pinning and unloading the pressure monitor (privileged side).
 *
 * Everything the monitor is made of ends up as a file in one bpffs
 * directory: the maps, one ring buffer per client slot, and one BPF link per
 * tracepoint.  A pinned link keeps its program attached after the loader
 * exits, and unlinking it detaches the program, so "loaded" simply means
 * "all pins present" and unload is a directory removal.
 *
 * Tracepoints are attached by hand (perf_event_open + BPF_LINK_CREATE)
 * rather than with bpf_program__attach(): libbpf's perf-event link disables
 * the perf event when the link object is destroyed, even when the link has
 * been pinned, which would silence a monitor whose loader has exited.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/magic.h>
#include <linux/perf_event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "monitor.h"
#include "monitor_priv.h"
#include "monitor.skel.h"
#include "nq_error.h"

#ifndef CAP_PERFMON
#define CAP_PERFMON 38
#endif
#ifndef CAP_BPF
#define CAP_BPF 39
#endif

const char *const nq_mon_map_names[] = {
	"clients", "client_slots", "client_stat", "cgroup_cfg", "cgroup_stat",
	"file_cfg", "file_stat", "settings", "global_stat", "totals", NULL,
};

const char *const nq_mon_prog_names[] = {
	"memcg_reclaim", "kswapd_wake", "direct_reclaim", "file_evict", NULL,
};

int nq_mon_path(char *buf, size_t len, const char *dir, const char *name)
{
	int n = snprintf(buf, len, "%s/%s", dir, name);

	if (n < 0 || (size_t)n >= len)
		return nq_fail(-ENAMETOOLONG, "pin path '%s/%s' is too long", dir, name);
	return 0;
}

void nq_mon_ring_name(char *buf, size_t len, unsigned int slot)
{
	snprintf(buf, len, "ring%02u", slot);
}

void nq_mon_link_name(char *buf, size_t len, const char *prog)
{
	snprintf(buf, len, "link_%s", prog);
}

static int has_cap(const struct __user_cap_data_struct *data, int cap)
{
	return !!(data[cap / 32].effective & (1u << (cap % 32)));
}

int nq_monitor_check_privilege(void)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[2] = {};
	char missing[64] = "";

	if (syscall(SYS_capget, &hdr, data))
		return nq_fail(-errno, "capget: %s", strerror(errno));
	if (has_cap(data, CAP_SYS_ADMIN))
		return 0;
	if (!has_cap(data, CAP_BPF))
		strcat(missing, " CAP_BPF");
	if (!has_cap(data, CAP_PERFMON))
		strcat(missing, " CAP_PERFMON");
	if (!missing[0])
		return 0;
	return nq_fail(-EPERM, "needs CAP_BPF and CAP_PERFMON (or root); "
		       "this process lacks%s", missing);
}

/* The pin directory's parent must be bpffs; mount it on /sys/fs/bpf if needed. */
static int ensure_bpffs(const char *dir)
{
	char parent[PATH_MAX];
	struct statfs sfs;
	char *slash;

	if (snprintf(parent, sizeof(parent), "%s", dir) >= (int)sizeof(parent))
		return nq_fail(-ENAMETOOLONG, "pin directory '%s' is too long", dir);
	slash = strrchr(parent, '/');
	if (!slash || slash == parent)
		return nq_fail(-EINVAL, "pin directory '%s' must be a subdirectory of a bpffs mount",
			       dir);
	*slash = '\0';
	if (statfs(parent, &sfs))
		return nq_fail(-errno, "'%s': %s", parent, strerror(errno));
	if (sfs.f_type == BPF_FS_MAGIC)
		return 0;
	if (strcmp(parent, "/sys/fs/bpf"))
		return nq_fail(-EINVAL, "'%s' is not a bpf filesystem (mount -t bpf bpf %s)",
			       parent, parent);
	if (mount("bpf", parent, "bpf", 0, "mode=0755"))
		return nq_fail(-errno, "mounting bpffs on %s: %s", parent, strerror(errno));
	return 0;
}

/* tracefs, to look up tracepoint ids; mounted on /sys/kernel/tracing if absent. */
static const char *tracefs_dir(void)
{
	if (!access("/sys/kernel/tracing/events", F_OK))
		return "/sys/kernel/tracing";
	if (!access("/sys/kernel/debug/tracing/events", F_OK))
		return "/sys/kernel/debug/tracing";
	if (!mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, NULL))
		return "/sys/kernel/tracing";
	return NULL;
}

static int tracepoint_id(const char *category, const char *name)
{
	const char *tdir = tracefs_dir();
	char path[PATH_MAX], buf[32];
	ssize_t n;
	int fd;

	if (!tdir)
		return nq_fail(-ENOENT, "tracefs is not mounted and could not be mounted "
			       "on /sys/kernel/tracing");
	snprintf(path, sizeof(path), "%s/events/%s/%s/id", tdir, category, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return nq_fail(-errno, "tracepoint %s:%s: %s: %s", category, name, path,
			       strerror(errno));
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return nq_fail(-EIO, "tracepoint %s:%s: cannot read %s", category, name, path);
	buf[n] = '\0';
	return atoi(buf);
}

/* Attach prog (section "tp/CATEGORY/NAME") and pin the link at path. */
static int attach_and_pin(struct bpf_program *prog, const char *path)
{
	struct perf_event_attr attr = {};
	char sec[128], *category, *name;
	int id, pfd, lfd, err;

	snprintf(sec, sizeof(sec), "%s", bpf_program__section_name(prog));
	category = strchr(sec, '/');
	name = category ? strchr(category + 1, '/') : NULL;
	if (!name)
		return nq_fail(-EINVAL, "program %s: section '%s' is not tp/CATEGORY/NAME",
			       bpf_program__name(prog), sec);
	*category++ = '\0';
	*name++ = '\0';
	id = tracepoint_id(category, name);
	if (id < 0)
		return id;

	attr.size = sizeof(attr);
	attr.type = PERF_TYPE_TRACEPOINT;
	attr.config = id;
	attr.sample_period = 1;
	attr.wakeup_events = 1;
	/* cpu 0, any task: a tracepoint program runs on every CPU regardless. */
	pfd = syscall(SYS_perf_event_open, &attr, -1, 0, -1, PERF_FLAG_FD_CLOEXEC);
	if (pfd < 0)
		return nq_fail(-errno, "perf_event_open(%s:%s): %s", category, name,
			       strerror(errno));
	lfd = bpf_link_create(bpf_program__fd(prog), pfd, BPF_PERF_EVENT, NULL);
	if (lfd < 0) {
		err = nq_fail(lfd, "attaching %s to %s:%s: %s", bpf_program__name(prog),
			      category, name, strerror(-lfd));
		goto out_pfd;
	}
	err = bpf_obj_pin(lfd, path);
	if (err)
		err = nq_fail(-errno, "pinning %s: %s", path, strerror(errno));
	close(lfd);
out_pfd:
	close(pfd);
	return err;
}

static int pin_exists(int dirfd, const char *name)
{
	struct stat st;

	return !fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW);
}

/* Every pin present: maps, rings, links. */
static int pins_complete(int dirfd)
{
	char name[64];

	for (int i = 0; nq_mon_map_names[i]; i++)
		if (!pin_exists(dirfd, nq_mon_map_names[i]))
			return 0;
	for (int i = 0; nq_mon_prog_names[i]; i++) {
		nq_mon_link_name(name, sizeof(name), nq_mon_prog_names[i]);
		if (!pin_exists(dirfd, name))
			return 0;
	}
	for (unsigned int s = 0; s < NQ_MON_MAX_CLIENTS; s++) {
		nq_mon_ring_name(name, sizeof(name), s);
		if (!pin_exists(dirfd, name))
			return 0;
	}
	return 1;
}

/* Unlink our pins, links first so the programs stop before the maps go. */
static int remove_pins(int dirfd)
{
	char name[64];
	int err = 0;

	for (int i = 0; nq_mon_prog_names[i]; i++) {
		nq_mon_link_name(name, sizeof(name), nq_mon_prog_names[i]);
		if (unlinkat(dirfd, name, 0) && errno != ENOENT && !err)
			err = nq_fail(-errno, "removing pin %s: %s", name, strerror(errno));
	}
	for (int i = 0; nq_mon_map_names[i]; i++)
		if (unlinkat(dirfd, nq_mon_map_names[i], 0) && errno != ENOENT && !err)
			err = nq_fail(-errno, "removing pin %s: %s", nq_mon_map_names[i],
				      strerror(errno));
	for (unsigned int s = 0; s < NQ_MON_MAX_CLIENTS; s++) {
		nq_mon_ring_name(name, sizeof(name), s);
		if (unlinkat(dirfd, name, 0) && errno != ENOENT && !err)
			err = nq_fail(-errno, "removing pin %s: %s", name, strerror(errno));
	}
	return err;
}

static int set_mode(int dirfd, const char *name, mode_t mode, gid_t gid)
{
	if (fchmodat(dirfd, name, mode, 0))
		return nq_fail(-errno, "chmod %s: %s", name, strerror(errno));
	if (gid != (gid_t)-1 && fchownat(dirfd, name, 0, gid, 0))
		return nq_fail(-errno, "chown %s: %s", name, strerror(errno));
	return 0;
}

/* 0600 (dir 0700) for root only, or 0660 (dir 0750) for root and gid. */
static int set_modes(int dirfd, gid_t gid)
{
	mode_t fmode = gid == (gid_t)-1 ? 0600 : 0660;
	mode_t dmode = gid == (gid_t)-1 ? 0700 : 0750;
	char name[64];
	int err;

	for (int i = 0; nq_mon_map_names[i]; i++) {
		err = set_mode(dirfd, nq_mon_map_names[i], fmode, gid);
		if (err)
			return err;
	}
	for (int i = 0; nq_mon_prog_names[i]; i++) {
		nq_mon_link_name(name, sizeof(name), nq_mon_prog_names[i]);
		/* Links are never opened by clients. */
		err = set_mode(dirfd, name, 0600, (gid_t)-1);
		if (err)
			return err;
	}
	for (unsigned int s = 0; s < NQ_MON_MAX_CLIENTS; s++) {
		nq_mon_ring_name(name, sizeof(name), s);
		err = set_mode(dirfd, name, fmode, gid);
		if (err)
			return err;
	}
	if (fchmod(dirfd, dmode))
		return nq_fail(-errno, "chmod pin directory: %s", strerror(errno));
	if (gid != (gid_t)-1 && fchown(dirfd, 0, gid))
		return nq_fail(-errno, "chown pin directory: %s", strerror(errno));
	return 0;
}

/* Library code does not print: libbpf's last warning goes into the message. */
static __thread char libbpf_last[256];

static int libbpf_quiet(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	size_t n;

	if (level == LIBBPF_WARN) {
		vsnprintf(libbpf_last, sizeof(libbpf_last), fmt, ap);
		n = strlen(libbpf_last);
		if (n && libbpf_last[n - 1] == '\n')
			libbpf_last[n - 1] = '\0';
	}
	return 0;
}

static int create_rings(struct monitor_bpf *skel, const char *dir, size_t ring_bytes)
{
	int outer = bpf_map__fd(skel->maps.clients);
	char name[64], path[PATH_MAX];
	int err, fd;

	for (unsigned int s = 0; s < NQ_MON_MAX_CLIENTS; s++) {
		fd = bpf_map_create(BPF_MAP_TYPE_RINGBUF, "nq_ring", 0, 0, ring_bytes, NULL);
		if (fd < 0)
			return nq_fail(fd, "creating ring buffer %u (%zu bytes): %s", s, ring_bytes,
				       strerror(-fd));
		err = bpf_map_update_elem(outer, &s, &fd, BPF_ANY);
		if (err) {
			err = nq_fail(-errno, "installing ring buffer %u: %s", s, strerror(errno));
			goto out_fd;
		}
		nq_mon_ring_name(name, sizeof(name), s);
		err = nq_mon_path(path, sizeof(path), dir, name);
		if (err)
			goto out_fd;
		if (bpf_obj_pin(fd, path))
			err = nq_fail(-errno, "pinning %s: %s", path, strerror(errno));
out_fd:
		close(fd);
		if (err)
			return err;
	}
	return 0;
}

static int load_and_pin(const char *dir, size_t ring_bytes)
{
	struct nq_mon_settings set = { .abi = NQ_MON_ABI };
	struct monitor_bpf *skel;
	char name[64], path[PATH_MAX];
	struct bpf_program *prog;
	struct bpf_map *map;
	int err, template_fd = -1;
	__u32 zero = 0;

	skel = monitor_bpf__open();
	if (!skel)
		return nq_fail(-errno ? -errno : -EINVAL, "opening the BPF object: %s",
			       strerror(errno));
	/*
	 * The inner-map template decides the size every ring must have.  libbpf
	 * 1.1 cannot resize the template it builds from BTF (the inner map has
	 * no object and bpf_map__set_max_entries() crashes), so hand it one.
	 */
	template_fd = bpf_map_create(BPF_MAP_TYPE_RINGBUF, "nq_ring", 0, 0, ring_bytes, NULL);
	if (template_fd < 0) {
		err = nq_fail(template_fd, "creating a %zu-byte ring buffer: %s", ring_bytes,
			      strerror(-template_fd));
		goto out;
	}
	err = bpf_map__set_inner_map_fd(skel->maps.clients, template_fd);
	if (err) {
		err = nq_fail(err, "ring buffer size %zu: %s", ring_bytes, strerror(-err));
		goto out;
	}
	err = monitor_bpf__load(skel);
	if (err) {
		err = nq_fail(err, "loading the BPF programs: %s (libbpf: %s)", strerror(-err),
			      libbpf_last[0] ? libbpf_last : "no detail");
		goto out;
	}
	err = bpf_map_update_elem(bpf_map__fd(skel->maps.settings), &zero, &set, BPF_ANY);
	if (err) {
		err = nq_fail(-errno, "initialising settings: %s", strerror(errno));
		goto out;
	}
	err = create_rings(skel, dir, ring_bytes);
	if (err)
		goto out;
	bpf_object__for_each_map(map, skel->obj) {
		/* .bss/.rodata would be internal maps; the program has none. */
		err = nq_mon_path(path, sizeof(path), dir, bpf_map__name(map));
		if (err)
			goto out;
		if (bpf_obj_pin(bpf_map__fd(map), path)) {
			err = nq_fail(-errno, "pinning %s: %s", path, strerror(errno));
			goto out;
		}
	}
	bpf_object__for_each_program(prog, skel->obj) {
		nq_mon_link_name(name, sizeof(name), bpf_program__name(prog));
		err = nq_mon_path(path, sizeof(path), dir, name);
		if (err)
			goto out;
		err = attach_and_pin(prog, path);
		if (err)
			goto out;
	}
out:
	if (template_fd >= 0)
		close(template_fd);
	monitor_bpf__destroy(skel);
	return err;
}

int nq_monitor_load(const struct nq_monitor_load_opts *opts)
{
	const char *dir = opts && opts->pin_dir ? opts->pin_dir : NQ_MONITOR_PIN_DIR;
	size_t ring = opts && opts->ring_bytes ? opts->ring_bytes : NQ_MON_RING_BYTES;
	long page = sysconf(_SC_PAGESIZE);
	libbpf_print_fn_t old_print;
	gid_t gid = (gid_t)-1;
	int dirfd, err;

	if (ring < (size_t)page || (ring & (ring - 1)) || ring > (1u << 30))
		return nq_fail(-EINVAL, "ring buffer size %zu must be a power of two between "
			       "%ld and 1 GiB", ring, page);
	if (opts && opts->group) {
		struct group *gr = getgrnam(opts->group);

		if (!gr)
			return nq_fail(-EINVAL, "group '%s' does not exist", opts->group);
		gid = gr->gr_gid;
	}
	err = nq_monitor_check_privilege();
	if (err)
		return err;
	err = ensure_bpffs(dir);
	if (err)
		return err;
	if (mkdir(dir, 0700) && errno != EEXIST)
		return nq_fail(-errno, "creating %s: %s", dir, strerror(errno));
	dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0)
		return nq_fail(-errno, "opening %s: %s", dir, strerror(errno));
	/* Clients take the same lock while they claim slots and edit the maps. */
	if (flock(dirfd, LOCK_EX)) {
		err = nq_fail(-errno, "locking %s: %s", dir, strerror(errno));
		goto out;
	}
	if (pins_complete(dirfd)) {
		/* Asking for a group again re-applies the modes; nothing else changes. */
		err = gid != (gid_t)-1 ? set_modes(dirfd, gid) : 0;
		if (!err)
			err = 1;
		goto out;
	}
	err = remove_pins(dirfd);	/* an interrupted load */
	if (err)
		goto out;
	libbpf_last[0] = '\0';
	old_print = libbpf_set_print(libbpf_quiet);
	err = load_and_pin(dir, ring);
	libbpf_set_print(old_print);
	if (!err)
		err = set_modes(dirfd, gid);
	if (err)
		remove_pins(dirfd);
out:
	close(dirfd);
	if (err < 0 && !pin_exists(AT_FDCWD, dir))
		return err;
	if (err < 0)
		rmdir(dir);	/* only succeeds when we left it empty */
	return err;
}

int nq_monitor_unload(const char *pin_dir)
{
	const char *dir = pin_dir ? pin_dir : NQ_MONITOR_PIN_DIR;
	int dirfd, err;

	dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0) {
		if (errno == ENOENT)
			return nq_fail(-ENOENT, "no monitor is loaded (%s does not exist)", dir);
		return nq_fail(-errno, "opening %s: %s", dir, strerror(errno));
	}
	flock(dirfd, LOCK_EX);
	err = remove_pins(dirfd);
	close(dirfd);
	if (err)
		return err;
	if (rmdir(dir))
		return nq_fail(-errno, "removing %s: %s (files other than the monitor's "
			       "pins are in it?)", dir, strerror(errno));
	return 0;
}
