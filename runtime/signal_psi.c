// SPDX-License-Identifier: MIT
/*
 * The psi signal source: PSI triggers ("some 150000 1000000" = wake when
 * tasks stalled on memory for 150 ms within any 1 s window) on a cgroup's
 * memory.pressure or on /proc/pressure/memory.
 *
 * Two kernel behaviours shape this file:
 *
 *  - A trigger's poll() *consumes* the event (psi_trigger_poll does
 *    cmpxchg(&t->event, 1, 0)).  When the runtime waits on our fd inside
 *    its own epoll, that outer epoll's readiness check has already eaten
 *    it, so read() cannot ask the trigger again.  It therefore also
 *    compares the "total=" stall counters with the previous read: a
 *    trigger only fires when stall time grew, so growth + a wake = a fire.
 *  - Since Linux 6.4 (commit "sched/psi: allow unprivileged polling of N*2s
 *    period"; 6.5 for cgroups) users without CAP_SYS_RESOURCE may create
 *    triggers only with windows that are multiples of 2 s.  When the
 *    requested window is refused, it is raised to the next multiple of 2 s
 *    (threshold scaled with it) and the detail says so.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "cgroup.h"
#include "nq_error.h"
#include "pressure.h"

#define NS_PER_US	((uint64_t)1000)
#define TWO_S_NS	((uint64_t)2000000000)

enum { SOME, FULL, NTRIG };

#define SAMPLES	16

struct psi_src {
	int trig[NTRIG];	/* trigger fds, -1 when that trigger is off */
	int stat_fd;		/* for the totals */
	uint64_t total[NTRIG];	/* us, at the previous read */
	uint64_t thr_us[NTRIG];	/* the triggers' thresholds */
	uint64_t window_ns;
	uint64_t fired_ns[NTRIG];	/* last event reported */
	/* Totals at the periodic checks, oldest first: a trigger emulated in user space. */
	unsigned int nsamples;
	uint64_t sample_ns[SAMPLES], sample[SAMPLES][NTRIG];
	char path[4096];
};

/* "some avg10=0.00 avg60=0.00 avg300=0.00 total=313579" */
static int read_totals(int fd, uint64_t total[NTRIG])
{
	char buf[512], *p;
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);

	if (n < 0)
		return -errno;
	buf[n] = '\0';
	total[SOME] = total[FULL] = 0;
	for (p = buf; p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		char *t = strstr(p, "total=");

		if (!t)
			continue;
		if (!strncmp(p, "some ", 5))
			total[SOME] = strtoull(t + 6, NULL, 10);
		else if (!strncmp(p, "full ", 5))
			total[FULL] = strtoull(t + 6, NULL, 10);
	}
	return 0;
}

/*
 * The periodic check (nq_signal_read on its timer) reads the totals too:
 * with the runtime's fd nested a few epolls deep, every level's readiness
 * check polls the trigger and the first one consumes its event, so the
 * level that would act can find nothing ready and the wake is lost.  Here
 * the trigger's own rule is applied to the sampled totals: stall growth
 * within the window at or above the threshold, at most one event per
 * window (the kernel's rate as well).
 */
static bool emulated_fire(struct psi_src *p, int t, const uint64_t total[NTRIG], uint64_t now)
{
	uint64_t base = total[t];

	/* The oldest sample inside the window (none: no growth measurable yet). */
	for (unsigned int i = 0; i < p->nsamples; i++) {
		if (p->sample_ns[i] + p->window_ns >= now) {
			base = p->sample[i][t];
			break;
		}
	}
	return total[t] >= base && total[t] - base >= p->thr_us[t];
}

static void add_sample(struct psi_src *p, const uint64_t total[NTRIG], uint64_t now)
{
	if (p->nsamples == SAMPLES) {
		memmove(p->sample_ns, p->sample_ns + 1, sizeof(p->sample_ns[0]) * (SAMPLES - 1));
		memmove(p->sample, p->sample + 1, sizeof(p->sample[0]) * (SAMPLES - 1));
		p->nsamples--;
	}
	p->sample_ns[p->nsamples] = now;
	memcpy(p->sample[p->nsamples++], total, sizeof(p->sample[0]));
}

static int psi_tick(struct nq_signal *s, struct nq_pressure_event *evs, unsigned int max)
{
	struct psi_src *p = s->priv;
	uint64_t total[NTRIG], now = nq_monotonic_ns();
	bool fired[NTRIG] = { false, false };
	unsigned int n = 0;

	if (read_totals(p->stat_fd, total))
		return nq_fail(-ENODEV, "psi: %s went away (cgroup removed?)", p->path);
	for (int t = 0; t < NTRIG; t++)
		fired[t] = p->trig[t] >= 0 && (!p->fired_ns[t] ||
			   now - p->fired_ns[t] >= p->window_ns) && emulated_fire(p, t, total, now);
	add_sample(p, total, now);
	if (fired[FULL])
		fired[SOME] = false;
	for (int t = NTRIG - 1; t >= 0 && n < max; t--) {
		if (!fired[t])
			continue;
		p->fired_ns[t] = now;
		memset(&evs[n], 0, sizeof(evs[n]));
		evs[n].ktime_ns = evs[n].recv_ns = now;
		evs[n].cgroup_id = s->cgroup_id;
		evs[n].count = 1;
		evs[n].cause = t == FULL ? NQ_CAUSE_PSI_FULL : NQ_CAUSE_PSI_SOME;
		n++;
	}
	return n;
}

static int psi_read(struct nq_signal *s, struct nq_pressure_event *evs, unsigned int max)
{
	struct psi_src *p = s->priv;
	struct epoll_event e[NTRIG];
	bool fired[NTRIG] = { false, false };
	uint64_t total[NTRIG], now = nq_monotonic_ns();
	unsigned int n = 0;
	int ne;

	ne = epoll_wait(s->src_fd, e, NTRIG, 0);
	for (int i = 0; i < ne; i++) {
		if (e[i].events & (EPOLLERR | EPOLLHUP))
			return nq_fail(-ENODEV, "psi: %s went away (cgroup removed?)", p->path);
		if (e[i].events & EPOLLPRI)
			fired[e[i].data.u32] = true;
	}
	if (!read_totals(p->stat_fd, total)) {
		for (int t = 0; t < NTRIG; t++) {
			if (p->trig[t] >= 0 && total[t] > p->total[t] && ne <= 0)
				fired[t] = true;	/* the wake was consumed by an outer epoll */
			p->total[t] = total[t];
		}
	}
	/* A "full" stall is also a "some" stall: report the stronger one once. */
	if (fired[FULL])
		fired[SOME] = false;
	for (int t = NTRIG - 1; t >= 0 && n < max; t--) {
		if (!fired[t])
			continue;
		memset(&evs[n], 0, sizeof(evs[n]));
		evs[n].ktime_ns = evs[n].recv_ns = now;
		evs[n].cgroup_id = s->cgroup_id;
		evs[n].count = 1;
		evs[n].cause = t == FULL ? NQ_CAUSE_PSI_FULL : NQ_CAUSE_PSI_SOME;
		p->fired_ns[t] = now;
		n++;
	}
	return n;
}

static void psi_close(struct nq_signal *s)
{
	struct psi_src *p = s->priv;

	for (int t = 0; t < NTRIG; t++)
		if (p->trig[t] >= 0)
			close(p->trig[t]);
	if (p->stat_fd >= 0)
		close(p->stat_fd);
	close(s->src_fd);
	free(p);
}

static const struct nq_signal_ops psi_ops = {
	.read = psi_read,
	.close = psi_close,
	.tick = psi_tick,
};

/* Open path and write one trigger; -errno of the write when refused. */
static int add_trigger(const char *path, const char *kind, uint64_t stall_ns, uint64_t window_ns)
{
	char spec[64];
	int fd, n, err;

	fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = snprintf(spec, sizeof(spec), "%s %" PRIu64 " %" PRIu64, kind, stall_ns / NS_PER_US,
		     window_ns / NS_PER_US);
	/* The kernel wants the terminating NUL in the write. */
	if (write(fd, spec, n + 1) < 0) {
		err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

/* Which memory.pressure to use; see nq_signal_opts.psi_path. */
static int pick_path(const struct nq_signal *s, const struct nq_signal_opts *o, char *path,
		     size_t len)
{
	char dir[4096];

	if (o->psi_path) {
		snprintf(path, len, "%s", o->psi_path);
		return 0;
	}
	if (s->cgroup[0] && nq_cgroup_version(s->cgroup) == NQ_CGROUP_V2) {
		if (snprintf(path, len, "%s/memory.pressure", s->cgroup) >= (int)len)
			return nq_fail(-ENAMETOOLONG, "cgroup path too long");
		return 0;
	}
	if (!nq_cgroup_self_v2(dir, sizeof(dir)) &&
	    snprintf(path, len, "%s/memory.pressure", dir) < (int)len && !access(path, F_OK))
		return 0;
	nq_clear_error();
	snprintf(path, len, "/proc/pressure/memory");
	return 0;
}

int nq_signal_open_psi(struct nq_signal *s, const struct nq_signal_opts *o)
{
	static const char *const kinds[NTRIG] = { "some", "full" };
	uint64_t stall[NTRIG], window = o->psi_window_ns ? o->psi_window_ns :
					NQ_PSI_DEFAULT_WINDOW_NS;
	uint64_t asked = window;
	struct psi_src *p;
	char note[160] = "", trig[96] = "";
	int err, ep;

	stall[SOME] = o->psi_some_ns;
	stall[FULL] = o->psi_full_ns;
	if (!stall[SOME] && !stall[FULL])
		stall[SOME] = NQ_PSI_DEFAULT_SOME_NS;
	p = calloc(1, sizeof(*p));
	if (!p)
		return nq_fail(-ENOMEM, "psi: out of memory");
	p->trig[SOME] = p->trig[FULL] = p->stat_fd = -1;
	err = pick_path(s, o, p->path, sizeof(p->path));
	if (err)
		goto err_free;
	if (access(p->path, F_OK)) {
		err = nq_fail(-ENOENT, "PSI unavailable (%s missing: kernel without CONFIG_PSI, "
			      "or booted with psi=0)", p->path);
		goto err_free;
	}
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0) {
		err = nq_fail(-errno, "psi: epoll_create1: %s", strerror(errno));
		goto err_free;
	}
	for (int t = 0; t < NTRIG; t++) {
		struct epoll_event e = { .events = EPOLLPRI, .data.u32 = t };
		uint64_t thr = stall[t] * window / asked;

		if (!stall[t])
			continue;
		err = add_trigger(p->path, kinds[t], thr, window);
		if ((err == -EPERM || err == -EINVAL) && window % TWO_S_NS) {
			window = (window / TWO_S_NS + 1) * TWO_S_NS;
			thr = stall[t] * window / asked;
			err = add_trigger(p->path, kinds[t], thr, window);
			if (err >= 0)
				snprintf(note, sizeof(note), "; window raised from %" PRIu64 " ms "
					 "to %" PRIu64 " ms: without CAP_SYS_RESOURCE PSI "
					 "triggers need multiples of 2 s (Linux >= 6.4)", asked / 1000000,
					 window / 1000000);
		}
		if (err < 0) {
			err = nq_fail(err, "cannot create PSI trigger '%s %" PRIu64 " %" PRIu64
				      "' on %s: %s", kinds[t], thr / NS_PER_US, window / NS_PER_US,
				      p->path, strerror(-err));
			goto err_close;
		}
		p->trig[t] = err;
		p->thr_us[t] = thr / NS_PER_US;
		if (epoll_ctl(ep, EPOLL_CTL_ADD, p->trig[t], &e)) {
			err = nq_fail(-errno, "psi: epoll_ctl: %s", strerror(errno));
			goto err_close;
		}
	}
	p->stat_fd = open(p->path, O_RDONLY | O_CLOEXEC);
	if (p->stat_fd < 0 || read_totals(p->stat_fd, p->total)) {
		err = nq_fail(-errno, "psi: reading %s: %s", p->path, strerror(errno));
		goto err_close;
	}
	p->window_ns = window;
	add_sample(p, p->total, nq_monotonic_ns());
	s->ops = &psi_ops;
	s->src_fd = ep;
	s->priv = p;
	for (int t = 0; t < NTRIG; t++) {
		size_t l = strlen(trig);

		if (p->trig[t] >= 0)
			snprintf(trig + l, sizeof(trig) - l, "%s%s >= %" PRIu64 " ms",
				 l ? " or " : "", kinds[t], stall[t] * window / asked / 1000000);
	}
	if (snprintf(s->detail, sizeof(s->detail), "%s: %s stalled per %" PRIu64 " ms window%s",
		     p->path, trig, window / 1000000, note) >= (int)sizeof(s->detail))
		s->detail[sizeof(s->detail) - 1] = '\0';	/* a long path: cut */
	return 0;

err_close:
	for (int t = 0; t < NTRIG; t++)
		if (p->trig[t] >= 0)
			close(p->trig[t]);
	if (p->stat_fd >= 0)
		close(p->stat_fd);
	close(ep);
err_free:
	free(p);
	return err;
}
