// SPDX-License-Identifier: MIT
/*
 * Choosing a memory-pressure signal source (kmod > bpf > psi under auto),
 * and the two small sources: none, and nestquant.ko purges.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "../kmod/nestquant_uapi.h"
#include "cgroup.h"
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
	n = epoll_wait(s->fd, &e, 1, 0);
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
	if (s->fd >= 0)
		close(s->fd);
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
	s->fd = ep;
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

static void note(struct nq_signal *s, const char *name, const char *what)
{
	size_t len = strlen(s->selection);

	snprintf(s->selection + len, sizeof(s->selection) - len, "%s%s: %s",
		 len ? "; " : "", name, what);
}

int nq_signal_open(const struct nq_signal_opts *opts, struct nq_signal **out)
{
	static const enum nq_signal_kind order[] = { NQ_SIGNAL_KMOD, NQ_SIGNAL_BPF,
						     NQ_SIGNAL_PSI };
	int (*const open_fn[])(struct nq_signal *, const struct nq_signal_opts *) = {
		[NQ_SIGNAL_KMOD] = nq_signal_open_kmod,
		[NQ_SIGNAL_BPF] = nq_signal_open_bpf,
		[NQ_SIGNAL_PSI] = nq_signal_open_psi,
	};
	struct nq_signal *s;
	int err = -ENODEV, version;

	*out = NULL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return nq_fail(-ENOMEM, "signal source: out of memory");
	s->fd = -1;
	if (opts->cgroup) {
		if (strlen(opts->cgroup) >= sizeof(s->cgroup)) {
			free(s);
			return nq_fail(-ENAMETOOLONG, "cgroup path too long");
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
	for (unsigned int i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		enum nq_signal_kind k = order[i];

		if (opts->kind != NQ_SIGNAL_AUTO && opts->kind != k)
			continue;
		err = open_fn[k](s, opts);
		if (!err) {
			char what[sizeof(s->detail) + 16];

			s->kind = k;
			snprintf(what, sizeof(what), "active%s%s%s", s->detail[0] ? " (" : "",
				 s->detail, s->detail[0] ? ")" : "");
			note(s, nq_signal_kind_name(k), what);
			*out = s;
			return 0;
		}
		if (opts->kind != NQ_SIGNAL_AUTO) {
			nq_fail_context(err, "signal source %s", nq_signal_kind_name(k));
			free(s);
			return err;
		}
		note(s, nq_signal_kind_name(k), nq_last_error());
	}
	err = nq_fail(-ENODEV, "no memory-pressure signal source is available: %s", s->selection);
	free(s);
	return err;
}

int nq_signal_fd(const struct nq_signal *s)
{
	return s->fd;
}

int nq_signal_read(struct nq_signal *s, struct nq_pressure_event *evs, unsigned int max)
{
	return s->ops->read(s, evs, max);
}

enum nq_signal_kind nq_signal_kind(const struct nq_signal *s)
{
	return s->kind;
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
	if (s->ops)
		s->ops->close(s);
	free(s);
}
