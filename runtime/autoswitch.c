// SPDX-License-Identifier: MIT
/*
 * Autoswitch: the glue between the pressure controller (signal source +
 * policy, controller.c) and the switching API (switch.c), so any program
 * linked with libnestquant follows memory pressure under `nestquant
 * launch` without code of its own.
 *
 * One thread per model waits on the controller's fd and a stop eventfd.
 * The controller calls back switch_to() from that thread and the switch
 * runs there, blocking: the policy makes no decision while a switch is in
 * flight anyway, and inferences on other threads are never blocked by a
 * switch (switch.c publishes a lower level first and drops planes once
 * their readers have left).
 *
 * The thread runs SCHED_FIFO (policy rt_priority, default 1) where that is
 * allowed: the pressure event wakes it while inference threads keep every
 * CPU busy, and under the normal scheduler its wake-up then waited for a
 * time slice (measured: up to 7 ms from the kernel's event to the decision
 * on two busy cores).  It only ever runs briefly: a decision, a switch
 * that sleeps while it waits for readers or I/O.
 *
 * Models are found through a small registry keyed by the model pointer, so
 * struct nq_model needs no field for us.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "autoswitch.h"
#include "kmod_backing.h"
#include "nq_error.h"
#include "policy.h"

struct autoswitch {
	struct autoswitch *next;
	struct nq_model *m;
	struct nq_controller *c;
	pthread_t thread;
	int ep, stop_fd;
	pthread_mutex_t lock;		/* guards info */
	struct nq_autoswitch_info info;
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct autoswitch *registry;

/* Called with registry_lock held. */
static struct autoswitch **find(struct nq_model *m)
{
	struct autoswitch **pp;

	for (pp = &registry; *pp; pp = &(*pp)->next)
		if ((*pp)->m == m)
			return pp;
	return NULL;
}

static int switch_to(void *ctx, unsigned int level)
{
	struct autoswitch *a = ctx;
	struct nq_switch_result res = { 0 };
	unsigned int from = nq_model_level(a->m);
	int err;

	err = nq_model_switch(a->m, level, &res);
	pthread_mutex_lock(&a->lock);
	a->info.decisions++;
	if (err) {
		a->info.failures++;
	} else if (level < from) {
		a->info.downs++;
		a->info.bytes_released += res.bytes_released;
	} else if (level > from) {
		a->info.ups++;
	}
	a->info.last_event_ns = nq_controller_policy(a->c)->last_pressure_ns;
	a->info.last_done_ns = nq_monotonic_ns();
	pthread_mutex_unlock(&a->lock);
	if (err)
		return err;
	nq_controller_report_released(a->c, res.bytes_released);
	nq_controller_report_wait(a->c, res.wait_ns);
	return 0;
}

static void *thread_main(void *arg)
{
	struct autoswitch *a = arg;
	struct epoll_event e[2];

	pthread_setname_np(pthread_self(), "nq-switch");
	for (;;) {
		int n = epoll_wait(a->ep, e, 2, -1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break;
		for (int i = 0; i < n; i++)
			if (e[i].data.u32 == 1)
				return NULL;
		/* Errors of one dispatch (a failed switch is logged) do not end the thread. */
		nq_controller_dispatch(a->c);
		/* A dispatch may have changed the source (the BPF monitor
		 * unloaded: PSI; loaded again: BPF); status reports the one
		 * in force. */
		pthread_mutex_lock(&a->lock);
		snprintf(a->info.source, sizeof(a->info.source), "%s", nq_controller_source(a->c));
		pthread_mutex_unlock(&a->lock);
	}
	return NULL;
}

/*
 * The switching thread, real-time where allowed; the outcome goes to the
 * selection text (what `serve` prints and `status` shows).  When the thread
 * that starts us is itself SCHED_FIFO (a server whose inference threads are
 * real-time), we run one priority above it: a switch must never wait for
 * the inferences it is there to protect.
 */
static int start_thread(struct autoswitch *a, unsigned int prio)
{
	struct sched_param sp;
	size_t o = strlen(a->info.selection);
	pthread_attr_t at;
	int err = EPERM, policy;

	if (prio && !pthread_getschedparam(pthread_self(), &policy, &sp) && policy == SCHED_FIFO &&
	    (unsigned int)sp.sched_priority >= prio &&
	    sp.sched_priority < sched_get_priority_max(SCHED_FIFO))
		prio = (unsigned int)sp.sched_priority + 1;
	sp.sched_priority = (int)prio;

	if (prio && !pthread_attr_init(&at)) {
		pthread_attr_setinheritsched(&at, PTHREAD_EXPLICIT_SCHED);
		pthread_attr_setschedpolicy(&at, SCHED_FIFO);
		pthread_attr_setschedparam(&at, &sp);
		err = pthread_create(&a->thread, &at, thread_main, a);
		pthread_attr_destroy(&at);
		if (!err) {
			snprintf(a->info.selection + o, sizeof(a->info.selection) - o,
				 "; switching thread SCHED_FIFO %u", prio);
			return 0;
		}
	}
	if (prio)
		snprintf(a->info.selection + o, sizeof(a->info.selection) - o,
			 "; switching thread at normal priority (SCHED_FIFO %u: %s)", prio,
			 strerrorname_np(err) ? strerrorname_np(err) : "refused");
	return -pthread_create(&a->thread, NULL, thread_main, a);
}

static void destroy(struct autoswitch *a)
{
	if (a->ep >= 0)
		close(a->ep);
	if (a->stop_fd >= 0)
		close(a->stop_fd);
	nq_controller_destroy(a->c);
	pthread_mutex_destroy(&a->lock);
	free(a);
}

int nq_model_enable_autoswitch(struct nq_model *m, const struct nq_autoswitch_opts *opts)
{
	static const struct nq_autoswitch_opts none = { 0 };
	struct nq_controller_opts co = { 0 };
	uint64_t bytes[NQ_POLICY_MAX_LEVELS];
	struct epoll_event e = { .events = EPOLLIN };
	sigset_t all, old;
	struct autoswitch *a;
	unsigned int n;
	int err;

	if (!m)
		return nq_fail(-EINVAL, "autoswitch: no model");
	if (!opts)
		opts = &none;
	n = nq_model_level_count(m);
	if (n < 2)
		return nq_fail(-EINVAL, "autoswitch: the model has a single level: nothing to switch");
	if (n > NQ_POLICY_MAX_LEVELS)
		n = NQ_POLICY_MAX_LEVELS;
	/* Bytes of weight planes resident with each level in force. */
	for (unsigned int i = 0; i < n; i++)
		bytes[i] = nq_model_weight_bytes(m, i);

	a = calloc(1, sizeof(*a));
	if (!a)
		return nq_fail(-ENOMEM, "autoswitch: out of memory");
	a->m = m;
	a->ep = a->stop_fd = -1;
	pthread_mutex_init(&a->lock, NULL);

	co.signal = opts->signal;
	co.cgroup = opts->cgroup;
	co.policy_file = opts->policy_file;
	co.log_path = opts->log_path;
	co.log_fd = opts->log_fd;
	co.psi_path = opts->psi_path;
	co.pin_dir = opts->pin_dir;
	co.model_path = opts->model_path;
	/* kmod (or auto with the module loaded): the planes move into a region first. */
	err = nq_kmod_for_signal(m, opts->signal, &co.kmod_region_fd);
	if (err) {
		nq_fail_context(err, "autoswitch --signal kmod");
		goto err_free;
	}
	co.nlevels = n;
	co.level_bytes = bytes;
	co.level = nq_model_level(m);
	co.switch_to = switch_to;
	co.ctx = a;
	err = nq_controller_create(&co, &a->c);
	if (err) {
		nq_fail_context(err, "autoswitch");
		goto err_free;
	}
	a->info.active = 1;
	snprintf(a->info.source, sizeof(a->info.source), "%s", nq_controller_source(a->c));
	snprintf(a->info.selection, sizeof(a->info.selection), "%s",
		 nq_controller_selection(a->c));

	a->ep = epoll_create1(EPOLL_CLOEXEC);
	a->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (a->ep < 0 || a->stop_fd < 0) {
		err = nq_fail(-errno, "autoswitch: %s", strerror(errno));
		goto err_free;
	}
	e.data.u32 = 0;
	if (epoll_ctl(a->ep, EPOLL_CTL_ADD, nq_controller_fd(a->c), &e)) {
		err = nq_fail(-errno, "autoswitch: epoll_ctl: %s", strerror(errno));
		goto err_free;
	}
	e.data.u32 = 1;
	if (epoll_ctl(a->ep, EPOLL_CTL_ADD, a->stop_fd, &e)) {
		err = nq_fail(-errno, "autoswitch: epoll_ctl: %s", strerror(errno));
		goto err_free;
	}

	pthread_mutex_lock(&registry_lock);
	if (find(m)) {
		pthread_mutex_unlock(&registry_lock);
		err = nq_fail(-EBUSY, "autoswitch: already running on this model");
		goto err_free;
	}
	/* The program's signals are not ours: the thread starts with all blocked. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = start_thread(a, nq_controller_policy(a->c)->cfg.rt_priority);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err) {
		pthread_mutex_unlock(&registry_lock);
		nq_fail(err, "autoswitch: thread: %s", strerror(-err));
		goto err_free;
	}
	a->next = registry;
	registry = a;
	pthread_mutex_unlock(&registry_lock);
	return 0;

err_free:
	destroy(a);
	return err;
}

void nq_model_disable_autoswitch(struct nq_model *m)
{
	struct autoswitch **pp, *a = NULL;
	uint64_t one = 1;

	pthread_mutex_lock(&registry_lock);
	pp = find(m);
	if (pp) {
		a = *pp;
		*pp = a->next;
	}
	pthread_mutex_unlock(&registry_lock);
	if (!a)
		return;
	if (write(a->stop_fd, &one, sizeof(one)) < 0) {
		/* An eventfd write only fails on overflow: the thread is woken already. */
	}
	pthread_join(a->thread, NULL);
	destroy(a);
}

int nq_model_autoswitch_info(struct nq_model *m, struct nq_autoswitch_info *out)
{
	struct autoswitch **pp;

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&registry_lock);
	pp = find(m);
	if (pp) {
		pthread_mutex_lock(&(*pp)->lock);
		*out = (*pp)->info;
		pthread_mutex_unlock(&(*pp)->lock);
	}
	pthread_mutex_unlock(&registry_lock);
	return 0;
}

static bool env_set(const char *name)
{
	const char *v = getenv(name);

	return v && *v;
}

int nq_autoswitch_open_hook(struct nq_model *m, const char *path,
			    const struct nq_model_opts *opts)
{
	const char *off = getenv("NQ_AUTOSWITCH");
	struct nq_autoswitch_opts ao = { .model_path = path };
	int err;

	if (opts && (opts->flags & NQ_OPEN_NO_AUTOSWITCH))
		return 0;
	if (off && !strcmp(off, "0"))
		return 0;
	if (!env_set("NQ_SIGNAL") && !env_set("NQ_CGROUP"))
		return 0;
	if (nq_model_level_count(m) < 2)
		return 0;
	err = nq_model_enable_autoswitch(m, &ao);
	if (err)
		nq_fail_context(err, "switching under the launcher's environment ($NQ_SIGNAL, "
				"$NQ_CGROUP; NQ_AUTOSWITCH=0 turns it off)");
	return err;
}

void nq_autoswitch_close_hook(struct nq_model *m)
{
	nq_model_disable_autoswitch(m);
}
