// SPDX-License-Identifier: MIT
/*
 * Choosing a memory-pressure signal source (kmod > bpf > psi under auto),
 * and the two small sources: none, and nestquant.ko purges.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "../kmod/nestquant_uapi.h"
#include "cgroup.h"
#include "monitor.h"
#include "nq_error.h"
#include "pressure.h"

uint64_t nq_monotonic_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static const char *const kind_names[] = {
	[NQ_SIGNAL_NONE] = "none",
	[NQ_SIGNAL_PSI] = "psi",
	[NQ_SIGNAL_BPF] = "bpf",
	[NQ_SIGNAL_KMOD] = "kmod",
	[NQ_SIGNAL_AUTO] = "auto",
};

int nq_signal_parse_kind(const char *name, enum nq_signal_kind *kind)
{
	for (unsigned int i = 0; i < sizeof(kind_names) / sizeof(kind_names[0]); i++) {
		if (name && !strcmp(name, kind_names[i])) {
			*kind = i;
			return 0;
		}
	}
	return nq_fail(-EINVAL, "unknown signal source '%s' (bpf, kmod, psi, auto or none)",
		       name ? name : "");
}

const char *nq_signal_kind_name(enum nq_signal_kind kind)
{
	return (unsigned int)kind <= NQ_SIGNAL_AUTO ? kind_names[kind] : "?";
}

const char *nq_pressure_cause_name(uint32_t cause)
{
	static const char *const names[NQ_CAUSE_MAX] = {
		[NQ_CAUSE_NONE] = "none",
		[NQ_CAUSE_MEMCG_RECLAIM] = "memcg_reclaim",
		[NQ_CAUSE_KSWAPD] = "kswapd_wake",
		[NQ_CAUSE_DIRECT_RECLAIM] = "direct_reclaim",
		[NQ_CAUSE_FILE_EVICT] = "file_evict",
		[NQ_CAUSE_PSI_SOME] = "psi_some",
		[NQ_CAUSE_PSI_FULL] = "psi_full",
		[NQ_CAUSE_HIGH_WATERMARK] = "high_watermark",
		[NQ_CAUSE_KMOD_PURGE] = "kmod_purge",
		[NQ_CAUSE_HOLD_EXPIRED] = "hold_expired",
	};

	return cause < NQ_CAUSE_MAX ? names[cause] : "?";
}

/* ---- none ------------------------------------------------------------------ */

static int none_read(struct nq_signal *s, struct nq_pressure_event *evs, unsigned int max)
{
	(void)s, (void)evs, (void)max;
	return 0;
}

static void none_close(struct nq_signal *s)
{
	(void)s;
}

static const struct nq_signal_ops none_ops = { none_read, none_close };

/* ---- kmod: purges of the runtime's region ------------------------------------ */

/*
 * The region's status page, mapped read-only a second time: the purge's
 * kernel timestamp (taken when the pages were freed) is the event's time.
 */
static const struct nq_kmod_status *kmod_status(const struct nq_signal *s)
{
	return s->priv;
}

static int kmod_read(struct nq_signal *s, struct nq_pressure_event *evs, unsigned int max)
{
	const struct nq_kmod_status *st = kmod_status(s);
	struct epoll_event e;
	int n;

	if (!max)
		return 0;
	n = epoll_wait(s->src_fd, &e, 1, 0);
	if (n < 0)
		return n == -1 && errno == EINTR ? 0 : nq_fail(-errno, "kmod: epoll_wait: %s",
								 strerror(errno));
	if (!n || !(e.events & EPOLLPRI))
		return 0;
	memset(evs, 0, sizeof(*evs));
	evs->recv_ns = evs->ktime_ns = nq_monotonic_ns();
	evs->flags = NQ_PEV_GLOBAL;
	if (st && __atomic_load_n(&st->purge_time_ns, __ATOMIC_ACQUIRE)) {
		evs->ktime_ns = __atomic_load_n(&st->purge_time_ns, __ATOMIC_ACQUIRE);
		evs->flags |= NQ_PEV_KERNEL_TIME;
	}
	evs->cause = NQ_CAUSE_KMOD_PURGE;
	evs->count = 1;
	evs->cgroup_id = s->cgroup_id;
	return 1;
}

static void kmod_close(struct nq_signal *s)
{
	if (s->priv)
		munmap(s->priv, 4096);
	if (s->src_fd >= 0)
		close(s->src_fd);
}

static const struct nq_signal_ops kmod_ops = { kmod_read, kmod_close };

int nq_signal_open_kmod(struct nq_signal *s, const struct nq_signal_opts *o)
{
	struct epoll_event e = { .events = EPOLLPRI | EPOLLET };
	struct nq_kmod_info info;
	void *st;
	int ep;

	if (access(NQ_KMOD_DEVICE, F_OK))
		return nq_fail(-ENODEV, "nestquant.ko not loaded (%s missing)", NQ_KMOD_DEVICE);
	if (o->kmod_region_fd <= 0)
		return nq_fail(-ENODEV, "nestquant.ko loaded, but this process keeps no region "
				"in it (the model's planes are not in %s)", NQ_KMOD_DEVICE);
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		return nq_fail(-errno, "kmod: epoll_create1: %s", strerror(errno));
	/* Edge-triggered: the region reports EPOLLPRI for as long as it is purged. */
	if (epoll_ctl(ep, EPOLL_CTL_ADD, o->kmod_region_fd, &e)) {
		int err = -errno;

		close(ep);
		return nq_fail(err, "kmod: watching the region fd: %s", strerror(-err));
	}
	s->ops = &kmod_ops;
	s->src_fd = ep;
	/* Without the status page events carry user-space time only. */
	if (sysconf(_SC_PAGESIZE) == 4096 && !ioctl(o->kmod_region_fd, NQ_KMOD_IOC_INFO, &info)) {
		st = mmap(NULL, 4096, PROT_READ, MAP_SHARED, o->kmod_region_fd,
			  (off_t)info.status_offset);
		if (st != MAP_FAILED)
			s->priv = st;
		snprintf(s->detail, sizeof(s->detail),
			 "purges of the model's %llu-byte region, fd %d, pages freed inside reclaim",
			 (unsigned long long)info.size, o->kmod_region_fd);
	}
	return 0;
}

/* ---- selection ------------------------------------------------------------- */

/* Preference under auto, best first. */
static const enum nq_signal_kind order[] = { NQ_SIGNAL_KMOD, NQ_SIGNAL_BPF, NQ_SIGNAL_PSI };
#define NORDER	(sizeof(order) / sizeof(order[0]))

enum { TAG_SOURCE = 1, TAG_TICK = 2 };

typedef int (*open_fn)(struct nq_signal *s, const struct nq_signal_opts *o);

static open_fn opener(enum nq_signal_kind k)
{
	switch (k) {
	case NQ_SIGNAL_KMOD: return nq_signal_open_kmod;
	case NQ_SIGNAL_BPF: return nq_signal_open_bpf;
	case NQ_SIGNAL_PSI: return nq_signal_open_psi;
	default: return NULL;
	}
}

/* How the operator knows each source, for the notices. */
static const char *title(enum nq_signal_kind k)
{
	switch (k) {
	case NQ_SIGNAL_KMOD: return "nestquant.ko";
	case NQ_SIGNAL_BPF: return "BPF monitor";
	case NQ_SIGNAL_PSI: return "PSI";
	default: return "no source";
	}
}

static void note(struct nq_signal *s, const char *name, const char *what)
{
	size_t len = strlen(s->selection);

	snprintf(s->selection + len, sizeof(s->selection) - len, "%s%s: %s",
		 len ? "; " : "", name, what);
}

__attribute__((format(printf, 2, 3)))
static void notice(struct nq_signal *s, const char *fmt, ...)
{
	va_list ap;
	char *line;

	if (s->notices == NQ_SIGNAL_NOTICES) {	/* nobody reads them: keep the newest */
		s->notice_head = (s->notice_head + 1) % NQ_SIGNAL_NOTICES;
		s->notices--;
	}
	line = s->notice[(s->notice_head + s->notices++) % NQ_SIGNAL_NOTICES];
	va_start(ap, fmt);
	vsnprintf(line, sizeof(s->notice[0]), fmt, ap);
	va_end(ap);
}

const char *nq_signal_notice(struct nq_signal *s)
{
	if (!s->notices)
		return NULL;
	memcpy(s->notice_out, s->notice[s->notice_head], sizeof(s->notice_out));
	s->notice_head = (s->notice_head + 1) % NQ_SIGNAL_NOTICES;
	s->notices--;
	return s->notice_out;
}

/* Close the active source and take its fd out of the set. */
static void drop_source(struct nq_signal *s)
{
	if (s->src_fd >= 0 && s->fd >= 0)
		epoll_ctl(s->fd, EPOLL_CTL_DEL, s->src_fd, NULL);
	if (s->ops)
		s->ops->close(s);
	s->ops = &none_ops;
	s->kind = NQ_SIGNAL_NONE;
	s->src_fd = -1;
	s->priv = NULL;
	s->detail[0] = '\0';
}

/*
 * Open kind k beside the active source, and only once it is open and in
 * the epoll set replace the active one with it: a failed attempt leaves
 * the runtime with what it had.
 */
static int replace_source(struct nq_signal *s, enum nq_signal_kind k)
{
	struct epoll_event e = { .events = EPOLLIN, .data.u32 = TAG_SOURCE };
	struct nq_signal *t;
	int err;

	t = calloc(1, sizeof(*t));
	if (!t)
		return nq_fail(-ENOMEM, "signal source: out of memory");
	t->fd = t->src_fd = t->tick_fd = -1;
	memcpy(t->cgroup, s->cgroup, sizeof(t->cgroup));
	t->cgroup_id = s->cgroup_id;
	t->cgroup_gone = s->cgroup_gone;
	err = opener(k)(t, &s->opts);
	if (err)
		goto out;
	if (s->fd >= 0 && t->src_fd >= 0 && epoll_ctl(s->fd, EPOLL_CTL_ADD, t->src_fd, &e)) {
		err = nq_fail(-errno, "%s: adding its fd to the signal's epoll set: %s",
			      nq_signal_kind_name(k), strerror(errno));
		t->ops->close(t);
		goto out;
	}
	drop_source(s);
	s->ops = t->ops;
	s->kind = k;
	s->src_fd = t->src_fd;
	s->priv = t->priv;
	memcpy(s->detail, t->detail, sizeof(s->detail));
out:
	free(t);
	return err;
}

/*
 * The active source is gone (what: "BPF monitor unloaded", why: the
 * detail).  Under auto take the same kind again if it reopens (the monitor
 * was reloaded), else the next in preference order; under an explicit kind
 * only that kind, or nothing.  Every outcome is one notice.
 */
static void source_lost(struct nq_signal *s, const char *what, const char *why)
{
	enum nq_signal_kind was = s->kind;
	char reason[512], tried[512] = "";
	unsigned int i = 0;

	snprintf(reason, sizeof(reason), "%s", why);
	drop_source(s);
	if (s->want == NQ_SIGNAL_AUTO) {
		while (i < NORDER && order[i] != was)
			i++;
	} else {
		while (i < NORDER && order[i] != s->want)
			i++;
	}
	for (; i < NORDER; i++) {
		size_t len = strlen(tried);

		if (!replace_source(s, order[i])) {
			if (order[i] == was)
				notice(s, "%s (%s); re-attached to the new one (%s)", what, reason,
				       s->detail);
			else
				notice(s, "%s (%s); falling back to %s (%s)", what, reason,
				       title(order[i]), s->detail);
			/* A better source may come back: look for it on each check. */
			s->reattach = was == NQ_SIGNAL_BPF && order[i] != was;
			s->retry_ino = 0;
			nq_clear_error();
			return;
		}
		snprintf(tried + len, sizeof(tried) - len, "%s%s: %s", len ? "; " : "",
			 nq_signal_kind_name(order[i]), nq_last_error());
		nq_clear_error();
		if (s->want != NQ_SIGNAL_AUTO)
			break;
	}
	s->reattach = was == NQ_SIGNAL_BPF;
	s->retry_ino = 0;
	if (s->want == NQ_SIGNAL_AUTO)
		notice(s, "%s (%s); no other source opened (%s): no pressure events now, only the "
		       "usage watermarks can move the level%s", what, reason, tried,
		       s->reattach ? "; re-attaching when the monitor is loaded again" : "");
	else
		notice(s, "%s (%s); --signal %s was asked for, so no fallback: no pressure events "
		       "until it can be opened again (%s); serving goes on at the current level, "
		       "only the usage watermarks can move it%s", what, reason,
		       nq_signal_kind_name(s->want), tried,
		       s->reattach ? "; re-attaching when the monitor is loaded again" : "");
}

/*
 * After a lost BPF monitor: when a monitor is pinned again, attach to it.
 * One stat() per check; a load we failed to attach to is not retried (its
 * pin inode is remembered), so a monitor we may not use costs nothing.
 */
static void try_reattach(struct nq_signal *s)
{
	const char *pin = s->opts.pin_dir ? s->opts.pin_dir : NQ_MONITOR_PIN_DIR;
	enum nq_signal_kind from = s->kind;
	char path[4200];
	struct stat st;

	snprintf(path, sizeof(path), "%s/client_slots", pin);
	if (stat(path, &st) || (uint64_t)st.st_ino == s->retry_ino)
		return;
	if (replace_source(s, NQ_SIGNAL_BPF)) {
		s->retry_ino = st.st_ino;
		notice(s, "BPF monitor loaded again at %s but not usable (%s); staying on %s", pin,
		       nq_last_error(), title(from));
		nq_clear_error();
		return;
	}
	s->reattach = false;
	notice(s, "BPF monitor loaded again; switching from %s back to it (%s)", title(from),
	       s->detail);
}

/* The watched cgroup's directory is gone (or is another cgroup now). */
static void check_cgroup(struct nq_signal *s)
{
	const char *why;
	int err;

	if (s->cgroup_gone || !s->cgroup[0] || !s->cgroup_id)
		return;
	err = nq_cgroup_still(s->cgroup, s->cgroup_id);
	if (err == -ESTALE)
		why = "a new cgroup of the same name is there";
	else if (err == -ENOENT)
		why = strerror(ENOENT);
	else
		return;	/* still ours, or transient (EINTR, ENOMEM): look again next time */
	s->cgroup_gone = true;
	if (s->ops && s->ops->cgroup_gone)
		s->ops->cgroup_gone(s);
	notice(s, "memory cgroup %s was removed (%s): its usage and limit cannot be read any more "
	       "and no reclaim can begin in it%s; still following %s", s->cgroup, why,
	       s->kind == NQ_SIGNAL_BPF ? ", so it was dropped from the BPF monitor's watch list" :
	       "", s->kind == NQ_SIGNAL_NONE ? "no source" : title(s->kind));
}

static void check(struct nq_signal *s)
{
	int err;

	check_cgroup(s);
	if (s->ops && s->ops->check) {
		err = s->ops->check(s);
		if (err)
			source_lost(s, s->kind == NQ_SIGNAL_BPF ? (err == -ESTALE ?
				    "BPF monitor reloaded" : "BPF monitor unloaded") :
				    "signal source lost", nq_last_error());
	}
	if (s->reattach)
		try_reattach(s);
	nq_clear_error();
}

/* Keep the options, with copies of their strings, to reopen sources later. */
static int keep_opts(struct nq_signal *s, const struct nq_signal_opts *o)
{
	struct {
		const char *src;
		char *dst;
		size_t len;
		const char **field;
	} strs[] = {
		{ o->psi_path, s->psi_path, sizeof(s->psi_path), &s->opts.psi_path },
		{ o->pin_dir, s->pin_dir, sizeof(s->pin_dir), &s->opts.pin_dir },
		{ o->model_path, s->model_path, sizeof(s->model_path), &s->opts.model_path },
	};

	s->opts = *o;
	s->opts.cgroup = NULL;	/* s->cgroup has it */
	for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
		if (!strs[i].src)
			continue;
		if (strlen(strs[i].src) >= strs[i].len)
			return nq_fail(-ENAMETOOLONG, "signal source: path too long: %s", strs[i].src);
		strcpy(strs[i].dst, strs[i].src);
		*strs[i].field = strs[i].dst;
	}
	return 0;
}

/* The fd the runtime waits on: the source's fd and the check timer, in one set. */
static int make_set(struct nq_signal *s)
{
	struct itimerspec its = {
		.it_value = { NQ_SIGNAL_CHECK_NS / 1000000000ull, NQ_SIGNAL_CHECK_NS % 1000000000ull },
		.it_interval = { NQ_SIGNAL_CHECK_NS / 1000000000ull,
				 NQ_SIGNAL_CHECK_NS % 1000000000ull },
	};
	struct epoll_event e = { .events = EPOLLIN, .data.u32 = TAG_TICK };

	s->fd = epoll_create1(EPOLL_CLOEXEC);
	if (s->fd < 0)
		return nq_fail(-errno, "signal source: epoll_create1: %s", strerror(errno));
	s->tick_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (s->tick_fd < 0)
		return nq_fail(-errno, "signal source: timerfd_create: %s", strerror(errno));
	if (timerfd_settime(s->tick_fd, 0, &its, NULL) ||
	    epoll_ctl(s->fd, EPOLL_CTL_ADD, s->tick_fd, &e))
		return nq_fail(-errno, "signal source: check timer: %s", strerror(errno));
	return 0;
}

int nq_signal_open(const struct nq_signal_opts *opts, struct nq_signal **out)
{
	struct nq_signal *s;
	int err = -ENODEV, version;

	*out = NULL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return nq_fail(-ENOMEM, "signal source: out of memory");
	s->fd = s->src_fd = s->tick_fd = -1;
	s->want = opts->kind;
	if (opts->cgroup) {
		if (strlen(opts->cgroup) >= sizeof(s->cgroup)) {
			err = nq_fail(-ENAMETOOLONG, "cgroup path too long");
			goto err_free;
		}
		strcpy(s->cgroup, opts->cgroup);
	} else if (nq_cgroup_self(s->cgroup, sizeof(s->cgroup), &version)) {
		s->cgroup[0] = '\0';	/* no memory controller: only PSI can work */
	}
	if (s->cgroup[0] && nq_cgroup_id(s->cgroup, &s->cgroup_id))
		s->cgroup_id = 0;
	nq_clear_error();

	if (opts->kind == NQ_SIGNAL_NONE) {
		s->ops = &none_ops;
		s->kind = NQ_SIGNAL_NONE;
		note(s, "none", "switching on pressure disabled");
		*out = s;
		return 0;
	}
	err = keep_opts(s, opts);
	if (!err)
		err = make_set(s);
	if (err)
		goto err_free;
	for (unsigned int i = 0; i < NORDER; i++) {
		enum nq_signal_kind k = order[i];

		if (opts->kind != NQ_SIGNAL_AUTO && opts->kind != k)
			continue;
		err = replace_source(s, k);
		if (!err) {
			char what[sizeof(s->detail) + 16];

			snprintf(what, sizeof(what), "active%s%s%s", s->detail[0] ? " (" : "",
				 s->detail, s->detail[0] ? ")" : "");
			note(s, nq_signal_kind_name(k), what);
			*out = s;
			return 0;
		}
		if (opts->kind != NQ_SIGNAL_AUTO) {
			nq_fail_context(err, "signal source %s", nq_signal_kind_name(k));
			goto err_free;
		}
		note(s, nq_signal_kind_name(k), nq_last_error());
	}
	err = nq_fail(-ENODEV, "no memory-pressure signal source is available: %s", s->selection);
err_free:
	if (s->tick_fd >= 0)
		close(s->tick_fd);
	if (s->fd >= 0)
		close(s->fd);
	free(s);
	return err;
}

int nq_signal_fd(const struct nq_signal *s)
{
	return s->fd;
}

int nq_signal_read(struct nq_signal *s, struct nq_pressure_event *evs, unsigned int max)
{
	uint64_t ticks;
	int n;

	/*
	 * A wake by the check timer runs the checks and does not read the
	 * source: the psi source reads a wake as "its trigger fired" (an outer
	 * epoll may have consumed the trigger's own report), and the others
	 * keep their fd readable until drained, so the caller's next wait comes
	 * back.  A source may look for itself then (psi: the totals).
	 */
	if (s->tick_fd >= 0 && read(s->tick_fd, &ticks, sizeof(ticks)) == (ssize_t)sizeof(ticks)) {
		check(s);
		if (!s->ops->tick)
			return 0;
		n = s->ops->tick(s, evs, max);
	} else {
		n = s->ops->read(s, evs, max);
	}
	if (n < 0 && s->fd >= 0) {
		char what[64];

		snprintf(what, sizeof(what), "%s source failed", title(s->kind));
		source_lost(s, what, nq_last_error());
		return 0;
	}
	return n;
}

enum nq_signal_kind nq_signal_kind(const struct nq_signal *s)
{
	return s->kind;
}

bool nq_signal_cgroup_gone(const struct nq_signal *s)
{
	return s->cgroup_gone;
}

uint64_t nq_signal_cgroup_id(const struct nq_signal *s)
{
	return s->cgroup_id;
}

const char *nq_signal_cgroup(const struct nq_signal *s)
{
	return s->cgroup;
}

const char *nq_signal_selection(const struct nq_signal *s)
{
	return s->selection;
}

void nq_signal_close(struct nq_signal *s)
{
	if (!s)
		return;
	drop_source(s);
	if (s->tick_fd >= 0)
		close(s->tick_fd);
	if (s->fd >= 0)
		close(s->fd);
	free(s);
}
