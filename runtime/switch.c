// SPDX-License-Identifier: MIT
/*
 * Level switching: which planes are usable now, the protocol that keeps a
 * running inference away from planes being dropped, budgets, and the
 * switching thread behind the non-blocking API.  The mechanisms (page-in,
 * drop, mincore) are in residency.c.
 *
 * State.  cap[j] is the highest level whose planes of weight layer j are
 * resident and usable (level 0 always is).  m->level is the nominal level
 * in force.  An inference runs layer j at min(level, cap[j]) for the whole
 * run; with no budget every cap[j] >= level and nothing is degraded.
 *
 * Why epochs with per-level counters (and not one reference count per
 * level, or a lock).  A plane (j, k) may only be released once no running
 * inference can read it, i.e. once every inference that started with a
 * nominal level >= k *before the plane was unpublished* has finished.  A
 * plain per-level count cannot tell those from inferences that started
 * afterwards, so with inferences arriving back to back at the same level
 * (graded switching drops single layers of the level in use) it might
 * never reach zero.  A reader-writer lock would stall new inferences behind
 * the dropping thread.  Instead readers count themselves in
 * active[epoch & 1][level] (two atomic adds per inference, never a wait),
 * and a dropping thread, after unpublishing, flips the epoch twice and each
 * time waits for the counters of the parity it left, for levels >= k only.
 * After the first flip new readers count in the other parity, so the one
 * waited for only drains; the second flip catches readers that had entered
 * on the parity before the first flip (they can linger there).  Readers
 * that entered after the first flip read the lowered caps (sequentially
 * consistent atomics: the cap stores precede the flip).  Inferences at a
 * lower level never delay a drop.
 *
 * Why a running inference can be withdrawn.  Waiting for readers means
 * waiting for the slowest inference that started at the level being
 * dropped, and under the very pressure that triggers the drop that one is
 * slow: its upper planes are being evicted by the kernel and it faults them
 * back one by one (milliseconds each).  So every drop also bumps `drops`
 * after lowering the caps, and an inference that asked for the level in
 * force (level -1) checks it between nodes (nq_switch_withdrawn) and
 * between the parts of a CONV/GEMM (nq_switch_must_leave): when a plane it
 * runs with is no longer published it leaves and starts over at the level
 * now in force.  An inference still runs entirely at the levels it
 * reports, and the drop waits for at most one part per thread of it.
 * Inferences at an explicit level cannot move and are waited for as before.
 *
 * Page-in needs no waiting: the planes are made resident first and the caps
 * (then the level) are published after, with sequentially consistent
 * stores, so a reader that sees the new level also sees the new caps.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "kmod_backing.h"
#include "model.h"
#include "nq_error.h"
#include "residency.h"

#define QMAX 256		/* queued requests */
#define NRES 64			/* results kept */

struct req {
	uint64_t ticket;
	bool budget;
	uint64_t value;
	uint64_t t0;
};

struct done {
	struct nq_switch_result r;
	char msg[200];
};

struct nq_switch {
	/* Readers touch only these: keep them on their own lines. */
	_Alignas(64) _Atomic uint64_t epoch;
	_Atomic uint64_t drops;			/* bumped after caps were lowered */
	_Alignas(64) _Atomic uint32_t active[2][NQ_FORMAT_MAX_LEVELS];
	_Alignas(64) _Atomic uint8_t *cap;		/* [layers] */

	struct nq_model *m;
	struct nq_res res;
	uint32_t layers, levels;
	uint64_t *poff, *psz;			/* plane [j * levels + k] in the file */
	uint64_t region_off[NQ_FORMAT_MAX_LEVELS], region_len[NQ_FORMAT_MAX_LEVELS];
	uint64_t floor;				/* region 0 */
	uint8_t *want, *prev;			/* [layers], under lock */
	bool *sel;				/* [layers], under lock */
	uint8_t *pagemark;			/* one byte per page of the largest region */
	struct nq_extent *ext;			/* extents scratch */
	unsigned int ext_cap;
	uint64_t budget;
	enum nq_pagein pagein;
	enum nq_drop drop;
	_Atomic uint64_t switches;

	pthread_mutex_t lock;			/* one switch at a time */

	pthread_mutex_t qlock;			/* queue, results, closing, users */
	pthread_cond_t qcond, dcond;
	pthread_t worker;
	bool worker_on, closing;
	unsigned int users;
	struct req q[QMAX];
	unsigned int qhead, qn;
	uint64_t next_ticket, done_ticket;
	struct done results[NRES];
	int efd;
	nq_switch_hook_fn hook;			/* tests: called after each drop */
	void *hook_arg;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t psz(const struct nq_switch *sw, uint32_t j, uint32_t k)
{
	return sw->psz[(size_t)j * sw->levels + k];
}

static uint64_t poff(const struct nq_switch *sw, uint32_t j, uint32_t k)
{
	return sw->poff[(size_t)j * sw->levels + k];
}

/* ------------------------------------------------------------------ */
/* Readers (the executor).                                             */

unsigned int nq_switch_enter(struct nq_model *m, int level, uint8_t *layer_level,
			     struct nq_pin *pin)
{
	struct nq_switch *sw = m->sw;
	struct nq_kmod_backing *kb;
	unsigned int t, degraded = 0;
	uint64_t e;

	/* Before the level and the caps: a drop that lowers them after we read
	 * them bumps it after, so nq_switch_withdrawn sees the change. */
	pin->drops = atomic_load(&sw->drops);
	for (;;) {
		e = atomic_load(&sw->epoch);
		t = level >= 0 ? (unsigned int)level : atomic_load(&m->level);
		atomic_fetch_add(&sw->active[e & 1][t], 1);
		if (atomic_load(&sw->epoch) == e)
			break;
		/* A drop flipped the epoch in between: count again on the new one. */
		atomic_fetch_sub(&sw->active[e & 1][t], 1);
	}
	pin->slot = (unsigned int)(e & 1);
	pin->kmod = 0;
	kb = __atomic_load_n(&m->kmod, __ATOMIC_ACQUIRE);
	if (kb) {
		/* Regions the kernel purged: run below them (level -1), or read
		 * the file's planes (an explicit level; see nq_session_run_level). */
		unsigned int run = nq_kmod_pin(kb, t, &pin->kmod);

		if (level < 0 && run < t) {
			atomic_fetch_add(&sw->active[e & 1][run], 1);
			atomic_fetch_sub(&sw->active[e & 1][t], 1);
			t = run;
		}
	}
	pin->level = t;
	for (uint32_t j = 0; j < sw->layers; j++) {
		unsigned int c = atomic_load(&sw->cap[j]);

		layer_level[j] = (uint8_t)(level >= 0 || c >= t ? t : c);
		degraded += layer_level[j] < t;
	}
	return degraded;
}

static bool above_caps(const struct nq_switch *sw, const uint8_t *layer_level)
{
	for (uint32_t j = 0; j < sw->layers; j++)
		if (layer_level[j] > atomic_load(&sw->cap[j]))
			return true;
	return false;
}

bool nq_switch_withdrawn(struct nq_model *m, struct nq_pin *pin, const uint8_t *layer_level)
{
	struct nq_switch *sw = m->sw;
	uint64_t d = atomic_load_explicit(&sw->drops, memory_order_acquire);

	if (d == pin->drops)
		return false;
	pin->drops = d;
	return above_caps(sw, layer_level);
}

bool nq_switch_must_leave(const struct nq_model *m, const struct nq_pin *pin,
			  const uint8_t *layer_level)
{
	const struct nq_switch *sw = m->sw;

	return atomic_load_explicit(&sw->drops, memory_order_acquire) != pin->drops &&
	       above_caps(sw, layer_level);
}

void nq_switch_leave(struct nq_model *m, const struct nq_pin *pin)
{
	if (pin->kmod)
		nq_kmod_unpin(m->kmod, pin->kmod);
	atomic_fetch_sub(&m->sw->active[pin->slot][pin->level], 1);
}

static bool busy(struct nq_switch *sw, unsigned int parity, unsigned int kmin)
{
	for (unsigned int k = kmin; k < sw->levels; k++)
		if (atomic_load(&sw->active[parity][k]))
			return true;
	return false;
}

/* Wait until no inference that may read a plane of level >= kmin and
 * started before this call is still running (see the comment at the top). */
static uint64_t wait_readers(struct nq_switch *sw, unsigned int kmin)
{
	uint64_t t0 = now_ns();

	for (int pass = 0; pass < 2; pass++) {
		unsigned int parity = (unsigned int)(atomic_fetch_add(&sw->epoch, 1) & 1);

		for (unsigned int spin = 0; busy(sw, parity, kmin); spin++) {
			if (spin < 100) {
				sched_yield();
			} else {
				struct timespec ts = { 0, spin < 1000 ? 20000 : 200000 };

				nanosleep(&ts, NULL);
			}
		}
	}
	return now_ns() - t0;
}

/* ------------------------------------------------------------------ */
/* Plane sets -> page extents.                                         */

static int push_ext(struct nq_switch *sw, unsigned int *n, uint64_t off, uint64_t len)
{
	if (*n && sw->ext[*n - 1].off + sw->ext[*n - 1].len == off) {
		sw->ext[*n - 1].len += len;
		return 0;
	}
	if (*n == sw->ext_cap) {
		unsigned int cap = sw->ext_cap ? sw->ext_cap * 2 : 64;
		struct nq_extent *e = realloc(sw->ext, cap * sizeof(*e));

		if (!e)
			return nq_fail(-ENOMEM, "switch: out of memory");
		sw->ext = e;
		sw->ext_cap = cap;
	}
	sw->ext[(*n)++] = (struct nq_extent){ off, len };
	return 0;
}

/*
 * Extents of region k covering the planes (j, k) for which sel[j] is true.
 * For a drop (keep_others), pages shared with a plane that stays are left
 * out; for a page-in they are included (populating them again is harmless).
 */
static int region_extents(struct nq_switch *sw, uint32_t k, const bool *sel, bool drop,
			  unsigned int *n)
{
	struct nq_res *r = &sw->res;
	uint64_t base = sw->region_off[k], pages = sw->region_len[k] / r->page, run = 0;
	uint32_t nsel = 0;
	int err;

	for (uint32_t j = 0; j < sw->layers; j++)
		nsel += sel[j];
	if (!nsel || !sw->region_len[k])
		return 0;
	if (nsel == sw->layers)
		return push_ext(sw, n, base, sw->region_len[k]);
	memset(sw->pagemark, 0, pages);
	/* 1 = selected, 2 = stays (drop only); a kept plane wins a shared page. */
	for (int pass = 0; pass < 2; pass++)
		for (uint32_t j = 0; j < sw->layers; j++) {
			uint64_t o = poff(sw, j, k), s = psz(sw, j, k), p0, p1;

			if (!s || (pass == 0 && !sel[j]) || (pass == 1 && (sel[j] || !drop)))
				continue;
			p0 = (o - base) / r->page;
			p1 = (o - base + s + r->page - 1) / r->page;
			for (uint64_t p = p0; p < p1 && p < pages; p++)
				sw->pagemark[p] = (uint8_t)(pass + 1);
		}
	for (uint64_t p = 0; p <= pages; p++) {
		if (p < pages && sw->pagemark[p] == 1) {
			run++;
			continue;
		}
		if (run) {
			err = push_ext(sw, n, base + (p - run) * r->page, run * r->page);
			if (err)
				return err;
		}
		run = 0;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Budgets.                                                            */

static uint64_t planes_bytes(const struct nq_switch *sw, const uint8_t *lv)
{
	uint64_t sum = sw->floor;

	for (uint32_t j = 0; j < sw->layers; j++)
		for (uint32_t k = 1; k <= lv[j]; k++)
			sum += psz(sw, j, k);
	return sum;
}

/*
 * want[j] for nominal level `level` under `budget`: start with every layer
 * at `level`, then give up planes from the highest level present down, the
 * largest plane of that level first, until the planes fit.
 */
static void plan(struct nq_switch *sw, unsigned int level, uint64_t budget, uint8_t *want)
{
	uint64_t total;

	for (uint32_t j = 0; j < sw->layers; j++)
		want[j] = (uint8_t)level;
	total = planes_bytes(sw, want);
	while (budget != NQ_BUDGET_NONE && total > budget) {
		uint32_t top = 0, best = UINT32_MAX;

		for (uint32_t j = 0; j < sw->layers; j++)
			if (want[j] > top)
				top = want[j];
		if (!top)
			break;
		for (uint32_t j = 0; j < sw->layers; j++)
			if (want[j] == top && (best == UINT32_MAX || psz(sw, j, top) > psz(sw, best, top)))
				best = j;
		total -= psz(sw, best, top);
		want[best]--;
	}
}

/* ------------------------------------------------------------------ */
/* One switch, under sw->lock.                                          */

/*
 * Is a plane not in force (its layer's cap below its level)?  Then the
 * whole mapping is MADV_RANDOM (nq_res_advise_dropped() says why).
 */
static bool any_dropped(struct nq_switch *sw)
{
	for (uint32_t j = 0; j < sw->layers; j++)
		for (uint32_t k = atomic_load(&sw->cap[j]) + 1u; k < sw->levels; k++)
			if (psz(sw, j, k))
				return true;
	return false;
}

static int apply(struct nq_switch *sw, unsigned int level, uint64_t budget,
		 struct nq_switch_result *out, uint64_t t0)
{
	struct nq_model *m = sw->m;
	unsigned int kmin = UINT32_MAX, kmax = 0, n = 0, cur = atomic_load(&m->level);
	uint64_t b, t[2];
	bool *sel = sw->sel;
	int err = 0;

	memset(out, 0, sizeof(*out));
	if (budget != NQ_BUDGET_NONE && budget < sw->floor) {
		err = nq_fail(-ENOSPC, "budget of %llu bytes is below the always-resident floor of %llu bytes (level 0's planes)",
			      (unsigned long long)budget, (unsigned long long)sw->floor);
		goto out;
	}
	plan(sw, level, budget, sw->want);

	/*
	 * Down: unpublish, wait for the readers that may hold them, release.
	 * The level goes first, so that a reader seeing the old caps with the
	 * new level does not report layers as degraded.
	 */
	if (level < cur)
		atomic_store(&m->level, level);
	for (uint32_t j = 0; j < sw->layers; j++) {
		unsigned int c = atomic_load(&sw->cap[j]);

		sw->prev[j] = (uint8_t)c;
		if (sw->want[j] < c) {
			kmin = sw->want[j] + 1u < kmin ? sw->want[j] + 1u : kmin;
			kmax = c > kmax ? c : kmax;
			atomic_store(&sw->cap[j], sw->want[j]);
		}
	}
	if (kmin != UINT32_MAX) {
		/* Before any plane goes: no fault may read it back. */
		nq_res_advise_dropped(&sw->res, true);
		atomic_fetch_add(&sw->drops, 1);	/* withdraws running inferences */
		out->wait_ns = wait_readers(sw, kmin);
		for (uint32_t k = kmin; k <= kmax; k++) {
			if (nq_kmod_holds(m->kmod, k))
				continue;	/* unpinned now: the kernel's to take */
			for (uint32_t j = 0; j < sw->layers; j++)
				sel[j] = sw->want[j] < k && k <= sw->prev[j];
			err = region_extents(sw, k, sel, true, &n);
			if (err)
				goto out;
		}
		err = nq_res_drop(&sw->res, sw->ext, n, sw->drop, &out->bytes_released,
				  &out->bytes_unmapped, t);
		if (err)
			goto out;
		out->unmap_ns = t[0] - t0;
		out->release_ns = t[1] - t0;
		if (sw->hook)
			sw->hook(sw->hook_arg, nq_file_data(m->file), sw->ext, n);
	}
	/* Up: make resident, then publish caps, then the level. */
	n = 0;
	kmax = 0;
	for (uint32_t j = 0; j < sw->layers; j++)
		if (sw->want[j] > kmax)
			kmax = sw->want[j];
	for (uint32_t k = 1; k <= kmax; k++) {
		if (nq_kmod_holds(m->kmod, k))
			continue;	/* in a region: refilled below */
		for (uint32_t j = 0; j < sw->layers; j++)
			sel[j] = atomic_load(&sw->cap[j]) < k && sw->want[j] >= k;
		err = region_extents(sw, k, sel, false, &n);
		if (err)
			goto out;
	}
	if (n) {
		err = nq_res_page_in(&sw->res, sw->ext, n, sw->pagein, &b);
		if (err)
			goto out;
		out->bytes_read = b;
	}
	err = nq_kmod_refill(m, kmax);
	if (err)
		goto out;
	for (uint32_t j = 0; j < sw->layers; j++)
		if (sw->want[j] > atomic_load(&sw->cap[j]))
			atomic_store(&sw->cap[j], sw->want[j]);
	atomic_store(&m->level, level);
	sw->budget = budget;
	atomic_fetch_add(&sw->switches, 1);
	/* Read-around and recency again once every plane is back in force. */
	nq_res_advise_dropped(&sw->res, any_dropped(sw));
out:
	out->status = err;
	out->level = atomic_load(&m->level);
	for (uint32_t j = 0; j < sw->layers; j++)
		out->layers_degraded += atomic_load(&sw->cap[j]) < out->level;
	out->total_ns = now_ns() - t0;
	return err;
}

/* ------------------------------------------------------------------ */
/* Entry points shared by the blocking and the queued paths.            */

/* Take a place as a user of the API (nq_model_close waits for users to
 * leave); -ESHUTDOWN once closing has started. */
static int user_enter(struct nq_switch *sw)
{
	int err = 0;

	pthread_mutex_lock(&sw->qlock);
	if (sw->closing)
		err = nq_fail(-ESHUTDOWN, "the model is being closed: no more switches");
	else
		sw->users++;
	pthread_mutex_unlock(&sw->qlock);
	return err;
}

static void user_leave(struct nq_switch *sw)
{
	pthread_mutex_lock(&sw->qlock);
	sw->users--;
	pthread_cond_broadcast(&sw->dcond);
	pthread_mutex_unlock(&sw->qlock);
}

static int run_locked(struct nq_switch *sw, bool is_budget, uint64_t value,
		      struct nq_switch_result *res, uint64_t t0)
{
	unsigned int level;
	uint64_t budget;
	int err;

	pthread_mutex_lock(&sw->lock);
	level = is_budget ? atomic_load(&sw->m->level) : (unsigned int)value;
	budget = is_budget ? value : sw->budget;
	err = apply(sw, level, budget, res, t0);
	pthread_mutex_unlock(&sw->lock);
	return err;
}

static int check_level(const struct nq_model *m, unsigned int level)
{
	if (level >= m->n_levels)
		return nq_fail(-EINVAL, "level %u out of range: the model has %u level%s (0..%u)",
			       level, m->n_levels, m->n_levels == 1 ? "" : "s", m->n_levels - 1);
	return 0;
}

int nq_model_switch(struct nq_model *m, unsigned int level, struct nq_switch_result *res)
{
	struct nq_switch_result tmp;
	uint64_t t0 = now_ns();
	int err;

	if (!m)
		return nq_fail(-EINVAL, "switch: NULL model");
	if ((err = check_level(m, level)) || (err = user_enter(m->sw)))
		return err;
	err = run_locked(m->sw, false, level, res ? res : &tmp, t0);
	user_leave(m->sw);
	return err;
}

int nq_model_set_level(struct nq_model *m, unsigned int level)
{
	return nq_model_switch(m, level, NULL);
}

int nq_model_set_budget(struct nq_model *m, uint64_t bytes)
{
	struct nq_switch_result res;
	int err;

	if (!m)
		return nq_fail(-EINVAL, "budget: NULL model");
	if ((err = user_enter(m->sw)))
		return err;
	err = run_locked(m->sw, true, bytes, &res, now_ns());
	user_leave(m->sw);
	return err;
}

static void *worker_main(void *arg)
{
	struct nq_switch *sw = arg;

	pthread_mutex_lock(&sw->qlock);
	for (;;) {
		struct req rq;
		struct done *d;
		uint64_t one = 1;

		while (!sw->qn && !sw->closing)
			pthread_cond_wait(&sw->qcond, &sw->qlock);
		if (!sw->qn)
			break;
		rq = sw->q[sw->qhead];
		sw->qhead = (sw->qhead + 1) % QMAX;
		sw->qn--;
		d = &sw->results[rq.ticket % NRES];
		if (sw->closing) {
			/* Close has started: what is still queued does not run. */
			memset(d, 0, sizeof(*d));
			d->r.status = -ECANCELED;
			snprintf(d->msg, sizeof(d->msg), "the model was closed before switch request %llu ran",
				 (unsigned long long)rq.ticket);
		} else {
			struct nq_switch_result r;
			int err;

			pthread_mutex_unlock(&sw->qlock);
			nq_clear_error();
			err = run_locked(sw, rq.budget, rq.value, &r, rq.t0);
			pthread_mutex_lock(&sw->qlock);
			d->r = r;
			snprintf(d->msg, sizeof(d->msg), "%s", err ? nq_last_error() : "");
		}
		sw->done_ticket = rq.ticket;
		pthread_cond_broadcast(&sw->dcond);
		if (write(sw->efd, &one, sizeof(one)) < 0) {
			/* The counter cannot overflow at one per request; nothing to do. */
		}
	}
	pthread_mutex_unlock(&sw->qlock);
	return NULL;
}

static int request(struct nq_model *m, bool is_budget, uint64_t value, uint64_t *ticket)
{
	struct nq_switch *sw = m->sw;
	int err = 0;

	*ticket = 0;
	pthread_mutex_lock(&sw->qlock);
	if (sw->closing) {
		err = nq_fail(-ESHUTDOWN, "the model is being closed: no more switches");
		goto out;
	}
	if (sw->qn == QMAX) {
		err = nq_fail(-EBUSY, "%u switch requests are already queued", QMAX);
		goto out;
	}
	if (!sw->worker_on) {
		err = -pthread_create(&sw->worker, NULL, worker_main, sw);
		if (err) {
			nq_fail(err, "cannot start the switching thread: %s", strerror(-err));
			goto out;
		}
		sw->worker_on = true;
	}
	*ticket = ++sw->next_ticket;
	sw->q[(sw->qhead + sw->qn) % QMAX] = (struct req){
		.ticket = *ticket, .budget = is_budget, .value = value, .t0 = now_ns(),
	};
	sw->qn++;
	pthread_cond_signal(&sw->qcond);
out:
	pthread_mutex_unlock(&sw->qlock);
	return err;
}

int nq_model_request_level(struct nq_model *m, unsigned int level, uint64_t *ticket)
{
	int err;

	if (!m || !ticket)
		return nq_fail(-EINVAL, "switch request: NULL argument");
	*ticket = 0;
	if ((err = check_level(m, level)))
		return err;
	return request(m, false, level, ticket);
}

int nq_model_request_budget(struct nq_model *m, uint64_t bytes, uint64_t *ticket)
{
	if (!m || !ticket)
		return nq_fail(-EINVAL, "budget request: NULL argument");
	*ticket = 0;
	if (bytes != NQ_BUDGET_NONE && bytes < m->sw->floor)
		return nq_fail(-ENOSPC, "budget of %llu bytes is below the always-resident floor of %llu bytes (level 0's planes)",
			       (unsigned long long)bytes, (unsigned long long)m->sw->floor);
	return request(m, true, bytes, ticket);
}

int nq_model_switch_fd(struct nq_model *m)
{
	return m ? m->sw->efd : nq_fail(-EINVAL, "switch fd: NULL model");
}

int nq_model_switch_wait(struct nq_model *m, uint64_t ticket, int timeout_ms,
			 struct nq_switch_result *res)
{
	struct nq_switch *sw;
	struct timespec dl;
	char msg[200] = "";
	int err = 0;

	if (!m)
		return nq_fail(-EINVAL, "switch wait: NULL model");
	sw = m->sw;
	if (timeout_ms > 0) {
		clock_gettime(CLOCK_REALTIME, &dl);
		dl.tv_sec += timeout_ms / 1000;
		dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
		if (dl.tv_nsec >= 1000000000L) {
			dl.tv_sec++;
			dl.tv_nsec -= 1000000000L;
		}
	}
	pthread_mutex_lock(&sw->qlock);
	if (!ticket || ticket > sw->next_ticket) {
		pthread_mutex_unlock(&sw->qlock);
		return nq_fail(-ENOENT, "switch request %llu was never made", (unsigned long long)ticket);
	}
	sw->users++;
	while (sw->done_ticket < ticket && !err) {
		if (!timeout_ms)
			err = -EAGAIN;
		else if (timeout_ms < 0)
			pthread_cond_wait(&sw->dcond, &sw->qlock);
		else if (pthread_cond_timedwait(&sw->dcond, &sw->qlock, &dl) == ETIMEDOUT)
			err = -ETIMEDOUT;
	}
	if (!err && sw->done_ticket - ticket >= NRES) {
		err = -ENOENT;
		snprintf(msg, sizeof(msg), "the result of switch request %llu is no longer kept (the last %u are)",
			 (unsigned long long)ticket, NRES);
	} else if (!err) {
		const struct done *d = &sw->results[ticket % NRES];

		if (res)
			*res = d->r;
		err = d->r.status;
		snprintf(msg, sizeof(msg), "%s", d->msg);
	} else if (err == -EAGAIN) {
		snprintf(msg, sizeof(msg), "switch request %llu is still pending", (unsigned long long)ticket);
	} else {
		snprintf(msg, sizeof(msg), "switch request %llu did not finish within %d ms",
			 (unsigned long long)ticket, timeout_ms);
	}
	sw->users--;
	pthread_cond_broadcast(&sw->dcond);
	pthread_mutex_unlock(&sw->qlock);
	if (err)
		nq_fail(err, "%s", msg[0] ? msg : "switch failed");
	return err;
}

int nq_model_residency(struct nq_model *m, struct nq_residency *out)
{
	struct nq_switch *sw;
	int err = 0;

	if (!m || !out)
		return nq_fail(-EINVAL, "residency: NULL argument");
	sw = m->sw;
	memset(out, 0, sizeof(*out));
	out->level = atomic_load(&m->level);
	out->level_count = sw->levels;
	out->layers = sw->layers;
	out->budget = sw->budget;
	out->floor = sw->floor;
	out->io = sw->res.io_why;
	out->pagein = nq_pagein_name(sw->pagein);
	out->drop = nq_drop_name(sw->drop == NQ_DROP_DEFAULT ? NQ_DROP_DONTNEED : sw->drop);
	out->switches = atomic_load(&sw->switches);
	for (uint32_t j = 0; j < sw->layers; j++) {
		unsigned int c = atomic_load(&sw->cap[j]);

		out->layers_degraded += c < out->level;
		for (uint32_t k = 0; k <= c && k < sw->levels; k++)
			out->usable_bytes[k] += psz(sw, j, k);
	}
	for (uint32_t k = 0; k < sw->levels && !err; k++) {
		out->region_bytes[k] = sw->region_len[k];
		err = nq_res_cached(&sw->res, sw->region_off[k], sw->region_len[k], &out->cached_bytes[k]);
		if (!err && nq_res_mapped(&sw->res, sw->region_off[k], sw->region_len[k],
					  &out->mapped_bytes[k]) == -ENOTSUP)
			out->mapped_bytes[k] = UINT64_MAX;
	}
	return err;
}

/* ------------------------------------------------------------------ */
/* Setup and teardown (model.c).                                        */

int nq_switch_init(struct nq_model *m, const struct nq_model_opts *opts, unsigned int level)
{
	const struct nq_file *f = m->file;
	struct nq_switch *sw;
	uint64_t biggest = 0;
	struct nq_switch_result res;
	unsigned int flags = opts ? opts->flags : 0;
	int err;

	sw = aligned_alloc(64, (sizeof(*sw) + 63) & ~(size_t)63);
	if (!sw)
		return nq_fail(-ENOMEM, "out of memory");
	memset(sw, 0, sizeof(*sw));
	m->sw = sw;
	sw->m = m;
	sw->efd = -1;
	sw->res.fd = -1;
	sw->res.pagemap_fd = -1;
	sw->budget = NQ_BUDGET_NONE;
	pthread_mutex_init(&sw->lock, NULL);
	pthread_mutex_init(&sw->qlock, NULL);
	pthread_cond_init(&sw->qcond, NULL);
	pthread_cond_init(&sw->dcond, NULL);
	sw->pagein = opts ? opts->pagein : NQ_PAGEIN_DEFAULT;
	sw->drop = opts ? opts->drop : NQ_DROP_DEFAULT;
	if ((unsigned int)sw->pagein > NQ_PAGEIN_PREAD || (unsigned int)sw->drop > NQ_DROP_UNMAP)
		return nq_fail(-EINVAL, "unknown page-in (%d) or drop (%d) method", sw->pagein, sw->drop);
	sw->levels = m->n_levels;
	sw->layers = nq_file_layer_count(f);
	sw->cap = calloc(sw->layers ? sw->layers : 1, sizeof(*sw->cap));
	sw->want = calloc(sw->layers ? sw->layers : 1, 1);
	sw->prev = calloc(sw->layers ? sw->layers : 1, 1);
	sw->sel = calloc(sw->layers ? sw->layers : 1, sizeof(bool));
	sw->poff = calloc((size_t)(sw->layers ? sw->layers : 1) * sw->levels, sizeof(uint64_t));
	sw->psz = calloc((size_t)(sw->layers ? sw->layers : 1) * sw->levels, sizeof(uint64_t));
	if (!sw->cap || !sw->want || !sw->prev || !sw->sel || !sw->poff || !sw->psz)
		return nq_fail(-ENOMEM, "out of memory");
	for (uint32_t k = 0; k < sw->levels; k++) {
		err = nq_file_region(f, k, &sw->region_off[k], &sw->region_len[k]);
		if (err)
			return err;
		if (sw->region_len[k] > biggest)
			biggest = sw->region_len[k];
		for (uint32_t j = 0; j < sw->layers; j++) {
			struct nq_plane_view v;

			err = nq_file_plane(f, j, k, &v);
			if (err)
				return err;
			sw->poff[(size_t)j * sw->levels + k] = v.offset;
			sw->psz[(size_t)j * sw->levels + k] = v.size;
		}
	}
	sw->floor = sw->region_len[0];
	err = nq_res_init(&sw->res, nq_file_fd(f), nq_file_data(f), nq_file_size(f),
			  flags & NQ_OPEN_NO_URING ? NQ_RES_NO_URING : 0);
	if (err)
		return err;
	sw->pagemark = malloc(biggest / sw->res.page + 1);
	if (!sw->pagemark)
		return nq_fail(-ENOMEM, "out of memory");
	sw->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (sw->efd < 0)
		return nq_fail(-errno, "eventfd: %s", strerror(errno));
	if (flags & NQ_OPEN_LOCK_RESIDENT) {
		/* The header and parameters too: inference reads them in place. */
		err = nq_res_lock(&sw->res, 0, sw->region_off[0] + sw->region_len[0]);
		if (err)
			return err;
	}
	if (flags & NQ_OPEN_LAZY) {
		/* Nothing paged in: the level is usable, its pages fault in on
		 * use, a read-around window at a time. */
		for (uint32_t j = 0; j < sw->layers; j++)
			atomic_store(&sw->cap[j], (uint8_t)level);
		nq_res_advise_dropped(&sw->res, any_dropped(sw));
		atomic_store(&m->level, level);
		return 0;
	}
	atomic_store(&m->level, 0);
	err = nq_res_page_in(&sw->res, &(struct nq_extent){ sw->region_off[0], sw->region_len[0] },
			     sw->region_len[0] ? 1 : 0, sw->pagein, NULL);
	if (err)
		return err;
	return apply(sw, level, NQ_BUDGET_NONE, &res, now_ns());
}

void nq_switch_fini(struct nq_model *m)
{
	struct nq_switch *sw = m->sw;

	if (!sw)
		return;
	pthread_mutex_lock(&sw->qlock);
	sw->closing = true;
	pthread_cond_broadcast(&sw->qcond);
	pthread_cond_broadcast(&sw->dcond);
	pthread_mutex_unlock(&sw->qlock);
	if (sw->worker_on)
		pthread_join(sw->worker, NULL);
	/* Waiters wake on dcond, see their request done or cancelled, leave. */
	pthread_mutex_lock(&sw->qlock);
	while (sw->users)
		pthread_cond_wait(&sw->dcond, &sw->qlock);
	pthread_mutex_unlock(&sw->qlock);
	pthread_mutex_lock(&sw->lock);	/* a blocking switch still inside apply() */
	pthread_mutex_unlock(&sw->lock);
	nq_res_fini(&sw->res);
	if (sw->efd >= 0)
		close(sw->efd);
	pthread_mutex_destroy(&sw->lock);
	pthread_mutex_destroy(&sw->qlock);
	pthread_cond_destroy(&sw->qcond);
	pthread_cond_destroy(&sw->dcond);
	free(sw->cap);
	free(sw->want);
	free(sw->prev);
	free(sw->sel);
	free(sw->poff);
	free(sw->psz);
	free(sw->pagemark);
	free(sw->ext);
	free(sw);
	m->sw = NULL;
}

/* Internal: per-layer usable level (tests). */
unsigned int nq_switch_layer_cap(const struct nq_model *m, uint32_t layer)
{
	return layer < m->sw->layers ? atomic_load(&m->sw->cap[layer]) : 0;
}

void nq_switch_set_drop_hook(struct nq_model *m, nq_switch_hook_fn fn, void *arg)
{
	pthread_mutex_lock(&m->sw->lock);
	m->sw->hook = fn;
	m->sw->hook_arg = arg;
	pthread_mutex_unlock(&m->sw->lock);
}
