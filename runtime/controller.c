// SPDX-License-Identifier: MIT
/*
 * The controller: one signal source + the policy + a timer, behind one fd.
 * On a decision it calls the runtime's switch and writes one JSON line per
 * decision (when the switch has finished or failed) to the policy log.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "cgroup.h"
#include "nq_error.h"
#include "policy.h"
#include "serve.h"	/* nq_serve_json_escape */

enum { TAG_SIGNAL = 1, TAG_TIMER = 2 };

#define BATCH		32
#define LIMIT_REFRESH_NS	2000000000ull
#define WAIT_RECHECK_NS		100000000ull	/* an up waiting for room, sample=0 */

struct nq_controller {
	pthread_mutex_t lock;
	struct nq_signal *sig;
	struct nq_policy pol;
	int ep, tfd, usage_fd, stat_fd, log_fd;
	const char *inactive_key;	/* memory.stat key of reclaimable file cache */
	bool own_log;
	char cgroup[4096];
	uint64_t limit_checked_ns;
	nq_switch_fn fn;
	void *ctx;
	bool in_flight;
	struct nq_policy_decision cur;
	uint64_t released;
	uint64_t armed_ns;
};

static const char *env_or(const char *v, const char *name)
{
	const char *e;

	if (v)
		return v;
	e = getenv(name);
	return e && *e ? e : NULL;
}

static void log_line(struct nq_controller *c, const char *line, size_t len)
{
	/* One write per line: lines of processes sharing an O_APPEND log stay whole. */
	if (c->log_fd >= 0 && write(c->log_fd, line, len) < 0)
		return;
}

/* "key value" from a memory.stat buffer; 0 when absent. */
static uint64_t stat_value(const char *buf, const char *key)
{
	size_t klen = strlen(key);

	for (const char *p = buf; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (!strncmp(p, key, klen) && p[klen] == ' ')
			return strtoull(p + klen + 1, NULL, 10);
	return 0;
}

/*
 * The usage the policy compares with the watermarks is the working set:
 * the cgroup's usage minus its inactive file cache, which the kernel drops
 * first and which would otherwise keep usage near the limit long after a
 * burst of file reading is over (kubelet's measure, for the same reason).
 */
static uint64_t sample_usage(struct nq_controller *c)
{
	char buf[8192];
	uint64_t usage, inactive;
	ssize_t n;

	if (c->usage_fd < 0)
		return NQ_POLICY_UNLIMITED;
	n = pread(c->usage_fd, buf, 31, 0);
	if (n <= 0)
		return NQ_POLICY_UNLIMITED;
	buf[n] = '\0';
	usage = strtoull(buf, NULL, 10);
	if (c->stat_fd < 0)
		return usage;
	n = pread(c->stat_fd, buf, sizeof(buf) - 1, 0);
	if (n <= 0)
		return usage;
	buf[n] = '\0';
	inactive = stat_value(buf, c->inactive_key);
	return usage > inactive ? usage - inactive : 0;
}

static void refresh_limit(struct nq_controller *c, uint64_t now)
{
	uint64_t lim;

	if (!c->cgroup[0] || now - c->limit_checked_ns < LIMIT_REFRESH_NS)
		return;
	c->limit_checked_ns = now;
	if (!nq_cgroup_limit(c->cgroup, &lim) && lim != c->pol.limit)
		nq_policy_set_limit(&c->pol, lim);
	nq_clear_error();
}

static void finish(struct nq_controller *c, unsigned int level, int err)
{
	char line[1024];
	uint64_t now = nq_monotonic_ns();
	int n;

	nq_policy_done(&c->pol, level, now);
	c->in_flight = false;
	n = nq_policy_format(line, sizeof(line), &c->cur, nq_signal_kind_name(nq_signal_kind(c->sig)),
			     now, c->released, err);
	if (n > 0)
		log_line(c, line, n);
}

static int do_switch(struct nq_controller *c, const struct nq_policy_decision *d)
{
	int err;

	c->cur = *d;
	c->in_flight = true;
	c->released = 0;
	c->cur.wait_ns = 0;
	err = c->fn ? c->fn(c->ctx, d->to) : 0;
	if (err == NQ_SWITCH_PENDING)
		return 1;
	finish(c, err < 0 ? d->from : d->to, err < 0 ? err : 0);
	return 1;
}

/*
 * The timer: at the policy's deadline or the next usage sample, whichever
 * comes first.  A deadline already past with no deferred down means the
 * policy waits on usage alone (an up whose hold time is over, waiting for
 * room under the low watermark), which only a new sample can change: look
 * again one sampling period later.  Arming it at `now` instead spun this
 * thread — SCHED_FIFO — for as long as the room did not come, taking a
 * whole CPU from the inferences while the pressure lasted.
 */
static void arm(struct nq_controller *c, uint64_t now)
{
	uint64_t next = nq_policy_deadline(&c->pol);
	uint64_t period = c->pol.cfg.sample_ns ? c->pol.cfg.sample_ns : WAIT_RECHECK_NS;
	struct itimerspec its = { 0 };

	if (next && next <= now && !c->pol.pending)
		next = now + period;
	if (c->pol.cfg.sample_ns && c->usage_fd >= 0 && (!next || now + c->pol.cfg.sample_ns < next))
		next = now + c->pol.cfg.sample_ns;
	if (next && next <= now)
		next = now + 1;
	if (next == c->armed_ns)
		return;
	c->armed_ns = next;
	its.it_value.tv_sec = next / 1000000000ull;
	its.it_value.tv_nsec = next % 1000000000ull;
	timerfd_settime(c->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

/* The signal source changed (lost, fell back, re-attached) or its cgroup went. */
static void log_notices(struct nq_controller *c)
{
	char esc[2048], line[2304];
	const char *msg;
	int n;

	while ((msg = nq_signal_notice(c->sig))) {
		nq_serve_json_escape(esc, sizeof(esc), msg);
		n = snprintf(line, sizeof(line), "{\"event\":\"source\",\"pid\":%d,\"time_ns\":%"
			     PRIu64 ",\"source\":\"%s\",\"message\":\"%s\"}\n", (int)getpid(),
			     nq_monotonic_ns(), nq_signal_kind_name(nq_signal_kind(c->sig)), esc);
		if (n > 0 && (size_t)n < sizeof(line))
			log_line(c, line, n);
	}
}

static int on_signal(struct nq_controller *c, uint64_t woke)
{
	struct nq_pressure_event evs[BATCH];
	struct nq_policy_decision d;
	uint64_t usage = NQ_POLICY_UNLIMITED;
	int n, decided = 0;
	bool sampled = false;

	do {
		n = nq_signal_read(c->sig, evs, BATCH);
		log_notices(c);
		if (n < 0)
			return n;
		for (int i = 0; i < n; i++) {
			uint64_t now;

			/*
			 * Usage only when this event can make a decision: under
			 * sustained pressure the cgroup reclaims hundreds of times
			 * a second, and at level 0 or mid-switch every event would
			 * otherwise cost a read of memory.stat (slow in v1, and on
			 * this thread's real-time priority: it delayed inferences).
			 */
			if (!sampled && c->pol.level > 0 && !c->pol.switching) {
				usage = sample_usage(c);
				sampled = true;
			}
			now = nq_monotonic_ns();
			/* While a switch is in flight the policy only records pressure. */
			if (nq_policy_event(&c->pol, &evs[i], usage, now, &d) == 1) {
				d.woke_ns = woke;
				decided += do_switch(c, &d);
			}
		}
	} while (n == BATCH);
	return decided;
}

static int on_timer(struct nq_controller *c)
{
	struct nq_policy_decision d;
	uint64_t now = nq_monotonic_ns(), exp;

	if (read(c->tfd, &exp, sizeof(exp)) < 0 && errno != EAGAIN)
		return nq_fail(-errno, "controller: timerfd: %s", strerror(errno));
	c->armed_ns = 0;
	refresh_limit(c, now);
	if (nq_policy_tick(&c->pol, sample_usage(c), now, &d) == 1)
		return do_switch(c, &d);
	return 0;
}

int nq_controller_dispatch(struct nq_controller *c)
{
	uint64_t woke = nq_monotonic_ns();
	struct epoll_event e[4];
	int n, decided = 0, err = 0;

	pthread_mutex_lock(&c->lock);
	n = epoll_wait(c->ep, e, 4, 0);
	for (int i = 0; i < n && err >= 0; i++) {
		err = e[i].data.u32 == TAG_SIGNAL ? on_signal(c, woke) : on_timer(c);
		if (err > 0)
			decided += err;
	}
	arm(c, nq_monotonic_ns());
	pthread_mutex_unlock(&c->lock);
	return err < 0 ? err : decided;
}

int nq_controller_run(struct nq_controller *c, int timeout_ms)
{
	struct epoll_event e;
	int n;

	n = epoll_wait(c->ep, &e, 1, timeout_ms);
	if (n < 0 && errno != EINTR)
		return nq_fail(-errno, "controller: epoll_wait: %s", strerror(errno));
	return n > 0 ? nq_controller_dispatch(c) : 0;
}

int nq_controller_fd(const struct nq_controller *c)
{
	return c->ep;
}

int nq_controller_switch_done(struct nq_controller *c, unsigned int level,
			      uint64_t bytes_released)
{
	pthread_mutex_lock(&c->lock);
	if (!c->in_flight) {
		pthread_mutex_unlock(&c->lock);
		return nq_fail(-EINVAL, "controller: no switch in flight");
	}
	c->released = bytes_released;
	finish(c, level, 0);
	arm(c, nq_monotonic_ns());
	pthread_mutex_unlock(&c->lock);
	return 0;
}

void nq_controller_report_released(struct nq_controller *c, uint64_t bytes)
{
	c->released = bytes;
}

void nq_controller_report_wait(struct nq_controller *c, uint64_t wait_ns)
{
	c->cur.wait_ns = wait_ns;
}

const char *nq_controller_source(const struct nq_controller *c)
{
	return nq_signal_kind_name(nq_signal_kind(c->sig));
}

const char *nq_controller_selection(const struct nq_controller *c)
{
	return nq_signal_selection(c->sig);
}

const struct nq_policy *nq_controller_policy(const struct nq_controller *c)
{
	return &c->pol;
}

static void log_start(struct nq_controller *c, uint64_t now)
{
	char sel[2048], cg[1024], line[4096];
	int n;

	nq_serve_json_escape(sel, sizeof(sel), nq_signal_selection(c->sig));
	nq_serve_json_escape(cg, sizeof(cg), c->cgroup);
	n = snprintf(line, sizeof(line),
		     "{\"event\":\"start\",\"pid\":%d,\"time_ns\":%" PRIu64 ",\"source\":\"%s\","
		     "\"selection\":\"%s\",\"cgroup\":\"%s\",\"limit\":%" PRIu64 ",\"high\":%" PRIu64
		     ",\"low\":%" PRIu64 ",\"hold_ns\":%" PRIu64 ",\"min_interval_ns\":%" PRIu64
		     ",\"levels\":%u,\"level\":%u}\n",
		     (int)getpid(), now, nq_controller_source(c), sel, cg,
		     c->pol.limit == NQ_POLICY_UNLIMITED ? 0 : c->pol.limit,
		     c->pol.high == NQ_POLICY_UNLIMITED ? 0 : c->pol.high,
		     c->pol.low == NQ_POLICY_UNLIMITED ? 0 : c->pol.low, c->pol.cfg.hold_ns,
		     c->pol.cfg.min_interval_ns, c->pol.nlevels, c->pol.level);
	if (n > 0 && (size_t)n < sizeof(line))
		log_line(c, line, n);
}

static int open_usage(struct nq_controller *c)
{
	char path[4200];
	int v = nq_cgroup_version(c->cgroup);

	if (v < 0)
		return v;
	snprintf(path, sizeof(path), "%s/%s", c->cgroup,
		 v == NQ_CGROUP_V2 ? "memory.current" : "memory.usage_in_bytes");
	c->usage_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (c->usage_fd < 0)
		return nq_fail(-errno, "%s: %s", path, strerror(errno));
	/* v1's memory.stat has the hierarchical figures under total_*. */
	snprintf(path, sizeof(path), "%s/memory.stat", c->cgroup);
	c->stat_fd = open(path, O_RDONLY | O_CLOEXEC);
	c->inactive_key = v == NQ_CGROUP_V2 ? "inactive_file" : "total_inactive_file";
	return 0;
}

int nq_controller_create(const struct nq_controller_opts *o, struct nq_controller **out)
{
	struct nq_signal_opts so = { 0 };
	struct nq_policy_cfg cfg;
	struct epoll_event e = { .events = EPOLLIN };
	pthread_mutexattr_t ma;
	struct nq_controller *c;
	const char *cg, *pol, *logp, *sig;
	uint64_t limit = NQ_POLICY_UNLIMITED, now;
	int err, version;

	*out = NULL;
	nq_policy_cfg_default(&cfg);
	pol = env_or(o->policy_file, "NQ_POLICY");
	if (pol) {
		err = nq_policy_cfg_load(&cfg, pol);
		if (err)
			return err;
	}
	sig = env_or(o->signal, "NQ_SIGNAL");
	if (!sig)
		sig = cfg.signal[0] ? cfg.signal : "auto";
	err = nq_signal_parse_kind(sig, &so.kind);
	if (err)
		return err;

	c = calloc(1, sizeof(*c));
	if (!c)
		return nq_fail(-ENOMEM, "controller: out of memory");
	c->ep = c->tfd = c->usage_fd = c->stat_fd = c->log_fd = -1;
	pthread_mutexattr_init(&ma);
	pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
	pthread_mutex_init(&c->lock, &ma);
	pthread_mutexattr_destroy(&ma);
	c->fn = o->switch_to;
	c->ctx = o->ctx;

	cg = env_or(o->cgroup, "NQ_CGROUP");
	if (cg)
		snprintf(c->cgroup, sizeof(c->cgroup), "%s", cg);
	else if (nq_cgroup_self(c->cgroup, sizeof(c->cgroup), &version))
		c->cgroup[0] = '\0';
	nq_clear_error();
	if (c->cgroup[0] && open_usage(c)) {
		err = nq_fail_context(-ENOENT, "NQ_CGROUP");
		goto err_free;
	}

	so.cgroup = c->cgroup[0] ? c->cgroup : NULL;
	so.psi_path = env_or(o->psi_path, "NQ_PSI_PATH");
	so.pin_dir = env_or(o->pin_dir, "NQ_MONITOR_PIN_DIR");
	so.model_path = o->model_path;
	so.kmod_region_fd = o->kmod_region_fd;
	so.global = cfg.global;
	so.psi_some_ns = cfg.psi_some_ns;
	so.psi_full_ns = cfg.psi_full_ns;
	so.psi_window_ns = cfg.psi_window_ns;
	err = nq_signal_open(&so, &c->sig);
	if (err == -ENODEV && so.kind == NQ_SIGNAL_AUTO) {
		/* Nothing event-driven: still follow the watermarks by sampling. */
		char why[1024];

		snprintf(why, sizeof(why), "%s", nq_last_error());
		so.kind = NQ_SIGNAL_NONE;
		err = nq_signal_open(&so, &c->sig);
		if (!err)
			snprintf(c->sig->selection, sizeof(c->sig->selection),
				 "%s; none: active (usage sampling only)", why);
	}
	if (err)
		goto err_free;

	now = nq_monotonic_ns();
	if (c->cgroup[0] && nq_cgroup_limit(c->cgroup, &limit))
		limit = NQ_POLICY_UNLIMITED;
	nq_clear_error();
	c->limit_checked_ns = now;
	err = nq_policy_init(&c->pol, &cfg, o->nlevels, o->level_bytes, o->level,
			     nq_signal_cgroup_id(c->sig), limit, now);
	if (err)
		goto err_close;

	c->ep = epoll_create1(EPOLL_CLOEXEC);
	c->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (c->ep < 0 || c->tfd < 0) {
		err = nq_fail(-errno, "controller: %s", strerror(errno));
		goto err_close;
	}
	e.data.u32 = TAG_TIMER;
	epoll_ctl(c->ep, EPOLL_CTL_ADD, c->tfd, &e);
	if (nq_signal_fd(c->sig) >= 0) {
		e.data.u32 = TAG_SIGNAL;
		if (epoll_ctl(c->ep, EPOLL_CTL_ADD, nq_signal_fd(c->sig), &e)) {
			err = nq_fail(-errno, "controller: epoll_ctl: %s", strerror(errno));
			goto err_close;
		}
	}

	logp = env_or(o->log_path, "NQ_POLICY_LOG");
	if (o->log_fd > 0) {
		c->log_fd = o->log_fd;
	} else if (logp) {
		c->log_fd = open(logp, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
		if (c->log_fd < 0) {
			err = nq_fail(-errno, "policy log %s: %s", logp, strerror(errno));
			goto err_close;
		}
		c->own_log = true;
	}
	log_start(c, now);
	arm(c, now);
	*out = c;
	return 0;

err_close:
	if (c->ep >= 0)
		close(c->ep);
	if (c->tfd >= 0)
		close(c->tfd);
	nq_signal_close(c->sig);
err_free:
	if (c->usage_fd >= 0)
		close(c->usage_fd);
	if (c->stat_fd >= 0)
		close(c->stat_fd);
	pthread_mutex_destroy(&c->lock);
	free(c);
	return err;
}

void nq_controller_destroy(struct nq_controller *c)
{
	if (!c)
		return;
	close(c->ep);
	close(c->tfd);
	if (c->usage_fd >= 0)
		close(c->usage_fd);
	if (c->stat_fd >= 0)
		close(c->stat_fd);
	if (c->own_log)
		close(c->log_fd);
	nq_signal_close(c->sig);
	pthread_mutex_destroy(&c->lock);
	free(c);
}
