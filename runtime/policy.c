// SPDX-License-Identifier: MIT
/*
 * The switching policy: watermarks with hysteresis, hold time, minimum
 * interval, graded steps.  Pure logic — every time comes from the caller —
 * so tests drive it with synthetic event sequences (tests/check_policy.c).
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nq_error.h"
#include "policy.h"

#define MS	1000000ull

void nq_policy_cfg_default(struct nq_policy_cfg *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->high_permille = 900;
	cfg->low_permille = 750;
	cfg->hold_ns = 2000 * MS;
	cfg->min_interval_ns = 200 * MS;
	cfg->sample_ns = 100 * MS;
	cfg->step = NQ_POLICY_STEP_ONE;
	cfg->psi_some_ns = NQ_PSI_DEFAULT_SOME_NS;
	cfg->psi_full_ns = NQ_PSI_DEFAULT_FULL_NS;
	cfg->psi_window_ns = NQ_PSI_DEFAULT_WINDOW_NS;
	cfg->rt_priority = 1;
}

/* A decimal number with an optional fraction; returns the end or NULL. */
static const char *parse_num(const char *s, double *v)
{
	char *end;

	while (isspace((unsigned char)*s))
		s++;
	if (!isdigit((unsigned char)*s) && *s != '.')
		return NULL;
	errno = 0;
	*v = strtod(s, &end);
	if (errno || end == s || !isfinite(*v) || *v < 0)
		return NULL;
	return end;
}

static bool only_space(const char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	return !*s;
}

int nq_parse_bytes(const char *s, uint64_t *bytes)
{
	const char *p;
	double v, mul = 1;

	p = s ? parse_num(s, &v) : NULL;
	if (!p)
		return nq_fail(-EINVAL, "'%s' is not a byte count (e.g. 64M, 1G, 4096)", s ? s : "");
	switch (toupper((unsigned char)*p)) {
	case 'K': mul = 1024.0; p++; break;
	case 'M': mul = 1024.0 * 1024; p++; break;
	case 'G': mul = 1024.0 * 1024 * 1024; p++; break;
	case 'T': mul = 1024.0 * 1024 * 1024 * 1024; p++; break;
	}
	if (mul > 1 && *p == 'i')
		p++;
	if (toupper((unsigned char)*p) == 'B')
		p++;
	if (!only_space(p))
		return nq_fail(-EINVAL, "'%s': unknown unit (use K, M, G or T)", s);
	v *= mul;
	if (v >= 18446744073709551615.0)
		return nq_fail(-ERANGE, "'%s' is too large", s);
	if (v != floor(v))
		return nq_fail(-EINVAL, "'%s' is not a whole number of bytes", s);
	*bytes = (uint64_t)v;
	return 0;
}

int nq_parse_duration(const char *s, uint64_t *ns)
{
	const char *p;
	double v, mul;

	p = s ? parse_num(s, &v) : NULL;
	if (!p)
		return nq_fail(-EINVAL, "'%s' is not a duration (e.g. 2s, 200ms)", s ? s : "");
	if (!strncmp(p, "ns", 2))
		mul = 1, p += 2;
	else if (!strncmp(p, "us", 2))
		mul = 1e3, p += 2;
	else if (!strncmp(p, "ms", 2))
		mul = 1e6, p += 2;
	else if (*p == 's')
		mul = 1e9, p += 1;
	else
		mul = 1e6;
	if (!only_space(p))
		return nq_fail(-EINVAL, "'%s': unknown unit (use ns, us, ms or s)", s);
	if (v * mul >= 1.8e19)
		return nq_fail(-ERANGE, "'%s' is too long", s);
	*ns = (uint64_t)llround(v * mul);
	return 0;
}

/* "90%" -> permille, or bytes. */
static int parse_mark(const char *v, uint64_t *bytes, unsigned int *permille)
{
	size_t n = strlen(v);

	while (n && isspace((unsigned char)v[n - 1]))
		n--;
	if (n && v[n - 1] == '%') {
		char tmp[32];
		double pct;
		const char *end;

		if (n >= sizeof(tmp))
			return -EINVAL;
		memcpy(tmp, v, n - 1);
		tmp[n - 1] = '\0';
		end = parse_num(tmp, &pct);
		if (!end || !only_space(end) || pct <= 0 || pct > 100)
			return -EINVAL;
		*permille = (unsigned int)lround(pct * 10);
		*bytes = 0;
		return 0;
	}
	if (nq_parse_bytes(v, bytes) || !*bytes)
		return -EINVAL;
	*permille = 0;
	return 0;
}

static char *trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

static int apply(struct nq_policy_cfg *c, const char *key, const char *val)
{
	enum nq_signal_kind kind;

	if (!strcmp(key, "high"))
		return parse_mark(val, &c->high_bytes, &c->high_permille);
	if (!strcmp(key, "low"))
		return parse_mark(val, &c->low_bytes, &c->low_permille);
	if (!strcmp(key, "hold"))
		return nq_parse_duration(val, &c->hold_ns);
	if (!strcmp(key, "min_interval"))
		return nq_parse_duration(val, &c->min_interval_ns);
	if (!strcmp(key, "sample"))
		return nq_parse_duration(val, &c->sample_ns);
	if (!strcmp(key, "psi_some"))
		return nq_parse_duration(val, &c->psi_some_ns);
	if (!strcmp(key, "psi_full"))
		return nq_parse_duration(val, &c->psi_full_ns);
	if (!strcmp(key, "psi_window"))
		return nq_parse_duration(val, &c->psi_window_ns);
	if (!strcmp(key, "step")) {
		if (!strcmp(val, "one"))
			c->step = NQ_POLICY_STEP_ONE;
		else if (!strcmp(val, "budget"))
			c->step = NQ_POLICY_STEP_BUDGET;
		else
			return -EINVAL;
		return 0;
	}
	if (!strcmp(key, "global")) {
		if (strcmp(val, "0") && strcmp(val, "1"))
			return -EINVAL;
		c->global = val[0] == '1';
		return 0;
	}
	if (!strcmp(key, "rt_priority")) {
		char *end;
		unsigned long v = strtoul(val, &end, 10);

		if (end == val || *end || v > 99)
			return -EINVAL;
		c->rt_priority = (unsigned int)v;
		return 0;
	}
	if (!strcmp(key, "signal")) {
		if (nq_signal_parse_kind(val, &kind))
			return -EINVAL;
		snprintf(c->signal, sizeof(c->signal), "%s", val);
		return 0;
	}
	return -ENOENT;
}

int nq_policy_cfg_parse(struct nq_policy_cfg *cfg, const char *text)
{
	const char *p = text;
	unsigned int lineno = 0;

	while (*p) {
		char line[512], *key, *val, *eq, *hash;
		size_t n = strcspn(p, "\n");
		int err;

		lineno++;
		if (n >= sizeof(line))
			return nq_fail(-EINVAL, "line %u: longer than %zu bytes", lineno,
				       sizeof(line) - 1);
		memcpy(line, p, n);
		line[n] = '\0';
		p += n + (p[n] == '\n');
		hash = strchr(line, '#');
		if (hash)
			*hash = '\0';
		key = trim(line);
		if (!*key)
			continue;
		eq = strchr(key, '=');
		if (!eq)
			return nq_fail(-EINVAL, "line %u: '%s' is not key=value", lineno, key);
		*eq = '\0';
		key = trim(key);
		val = trim(eq + 1);
		err = apply(cfg, key, val);
		if (err == -ENOENT)
			return nq_fail(-EINVAL, "line %u: unknown key '%s' (high, low, hold, "
					"min_interval, step, global, sample, psi_some, psi_full, "
					"psi_window, signal, rt_priority)", lineno, key);
		if (err)
			return nq_fail(-EINVAL, "line %u: bad value '%s' for %s", lineno, val, key);
	}
	if ((cfg->high_permille && cfg->low_permille && cfg->low_permille > cfg->high_permille) ||
	    (cfg->high_bytes && cfg->low_bytes && cfg->low_bytes > cfg->high_bytes))
		return nq_fail(-EINVAL, "low watermark above the high one");
	if (cfg->psi_window_ns && (cfg->psi_window_ns < 500 * MS || cfg->psi_window_ns > 10000 * MS))
		return nq_fail(-EINVAL, "psi_window must be between 500ms and 10s");
	if (cfg->psi_some_ns > cfg->psi_window_ns || cfg->psi_full_ns > cfg->psi_window_ns)
		return nq_fail(-EINVAL, "psi_some/psi_full must not exceed psi_window");
	return 0;
}

int nq_policy_cfg_load(struct nq_policy_cfg *cfg, const char *path)
{
	char buf[8192];
	size_t n;
	FILE *f = fopen(path, "re");
	int err;

	if (!f)
		return nq_fail(-errno, "policy file %s: %s", path, strerror(errno));
	n = fread(buf, 1, sizeof(buf) - 1, f);
	err = ferror(f) ? -EIO : !feof(f) ? -EFBIG : 0;
	fclose(f);
	if (err)
		return nq_fail(err, "policy file %s: %s", path,
			       err == -EFBIG ? "larger than 8 KiB" : "read error");
	buf[n] = '\0';
	err = nq_policy_cfg_parse(cfg, buf);
	if (err)
		return nq_fail_context(err, "policy file %s", path);
	return 0;
}

/* ---- the policy ------------------------------------------------------------ */

static uint64_t mark(uint64_t bytes, unsigned int permille, uint64_t limit)
{
	if (bytes)
		return bytes;
	if (limit == NQ_POLICY_UNLIMITED || !permille)
		return NQ_POLICY_UNLIMITED;
	return (uint64_t)((double)limit * permille / 1000.0);
}

void nq_policy_set_limit(struct nq_policy *p, uint64_t limit)
{
	p->limit = limit ? limit : NQ_POLICY_UNLIMITED;
	p->high = mark(p->cfg.high_bytes, p->cfg.high_permille, p->limit);
	p->low = mark(p->cfg.low_bytes, p->cfg.low_permille, p->limit);
	if (p->low > p->high)
		p->low = p->high;
}

void nq_policy_set_max_level(struct nq_policy *p, unsigned int max_level)
{
	p->max_level = max_level < p->nlevels ? max_level : p->nlevels - 1;
}

int nq_policy_init(struct nq_policy *p, const struct nq_policy_cfg *cfg, unsigned int nlevels,
		   const uint64_t *level_bytes, unsigned int level, uint64_t cgroup_id,
		   uint64_t limit, uint64_t now_ns)
{
	memset(p, 0, sizeof(*p));
	if (!nlevels || nlevels > NQ_POLICY_MAX_LEVELS)
		return nq_fail(-EINVAL, "policy: %u levels (1..%d)", nlevels, NQ_POLICY_MAX_LEVELS);
	if (level >= nlevels)
		return nq_fail(-EINVAL, "policy: level %u of %u", level, nlevels);
	for (unsigned int i = 0; level_bytes && i < nlevels; i++) {
		if (i && level_bytes[i] < level_bytes[i - 1])
			return nq_fail(-EINVAL, "policy: level %u has fewer bytes than level %u",
				       i, i - 1);
		p->level_bytes[i] = level_bytes[i];
	}
	if (cfg)
		p->cfg = *cfg;
	else
		nq_policy_cfg_default(&p->cfg);
	p->nlevels = nlevels;
	p->max_level = nlevels - 1;
	p->level = level;
	p->cgroup_id = cgroup_id;
	/* Nothing is known about the time before we started watching. */
	p->last_pressure_ns = now_ns;
	nq_policy_set_limit(p, limit);
	return 0;
}

static bool relevant(const struct nq_policy *p, const struct nq_pressure_event *ev)
{
	if (ev->cause == NQ_CAUSE_FILE_EVICT || ev->cause == NQ_CAUSE_KMOD_PURGE)
		return true;	/* our own planes: whoever's pressure it is */
	if (ev->flags & NQ_PEV_GLOBAL)
		return p->cfg.global;
	return !p->cgroup_id || !ev->cgroup_id || ev->cgroup_id == p->cgroup_id;
}

static bool interval_ok(const struct nq_policy *p, uint64_t now)
{
	return !p->switched || now - p->last_switch_ns >= p->cfg.min_interval_ns;
}

static uint64_t extra(const struct nq_policy *p, unsigned int from, unsigned int to)
{
	return p->level_bytes[to] - p->level_bytes[from];	/* to > from */
}

/* Usage once the planes above `to` are released. */
static uint64_t after_drop(const struct nq_policy *p, uint64_t usage, unsigned int to)
{
	uint64_t x = extra(p, to, p->level);

	return usage > x ? usage - x : 0;
}

static unsigned int down_target(const struct nq_policy *p, uint64_t usage)
{
	unsigned int to = p->level - 1;

	if (p->cfg.step != NQ_POLICY_STEP_BUDGET || usage == NQ_POLICY_UNLIMITED ||
	    p->low == NQ_POLICY_UNLIMITED)
		return to;
	/* Release until usage would be at the low watermark (or level 0). */
	while (to > 0 && after_drop(p, usage, to) > p->low)
		to--;
	return to;
}

static bool fits(const struct nq_policy *p, uint64_t usage, unsigned int to)
{
	if (p->low == NQ_POLICY_UNLIMITED)
		return true;
	if (usage == NQ_POLICY_UNLIMITED)
		return false;	/* a limit but no reading: stay */
	return usage + extra(p, p->level, to) <= p->low;
}

static void decide(struct nq_policy *p, unsigned int to, uint32_t cause, uint32_t flags,
		   uint64_t event_ns, uint64_t usage, uint64_t now, struct nq_policy_decision *d)
{
	d->seq = ++p->seq;
	d->from = p->level;
	d->to = to;
	d->cause = cause;
	d->event_flags = flags;
	d->event_ns = event_ns;
	d->decided_ns = now;
	d->usage = usage;
	d->limit = p->limit;
	p->level = to;
	p->switched = true;
	p->switching = true;
	p->last_switch_ns = now;
	p->pending = false;
}

static int try_down(struct nq_policy *p, uint32_t cause, uint32_t flags, uint64_t event_ns,
		    uint64_t usage, uint64_t now, struct nq_policy_decision *d)
{
	if (p->level == 0)
		return 0;
	if (p->switching || (!interval_ok(p, now) && cause != NQ_CAUSE_KMOD_PURGE)) {
		if (!p->pending) {
			p->pending = true;
			p->pending_cause = cause;
			p->pending_flags = flags;
			p->pending_event_ns = event_ns;
		}
		return 0;
	}
	decide(p, down_target(p, usage), cause, flags, event_ns, usage, now, d);
	return 1;
}

int nq_policy_event(struct nq_policy *p, const struct nq_pressure_event *ev, uint64_t usage,
		    uint64_t now_ns, struct nq_policy_decision *d)
{
	uint64_t t = ev->ktime_ns ? ev->ktime_ns : now_ns;

	if (!relevant(p, ev))
		return 0;
	if (t > p->last_pressure_ns)
		p->last_pressure_ns = t;
	/* Pressure from before the last switch took effect was already answered. */
	if (p->switched && !p->switching && t <= p->settled_ns)
		return 0;
	return try_down(p, ev->cause, ev->flags, t, usage, now_ns, d);
}

int nq_policy_tick(struct nq_policy *p, uint64_t usage, uint64_t now_ns,
		   struct nq_policy_decision *d)
{
	unsigned int to;

	if (usage != NQ_POLICY_UNLIMITED && p->high != NQ_POLICY_UNLIMITED && usage > p->high) {
		if (now_ns > p->last_pressure_ns)
			p->last_pressure_ns = now_ns;
		return try_down(p, NQ_CAUSE_HIGH_WATERMARK, 0, now_ns, usage, now_ns, d);
	}
	if (p->switching)
		return 0;
	if (p->pending) {
		if (!interval_ok(p, now_ns))
			return 0;
		/* Only if it was not answered by the switch that made it wait. */
		if (p->pending_event_ns > p->settled_ns || p->level == 0) {
			uint32_t cause = p->pending_cause, flags = p->pending_flags;
			uint64_t ev = p->pending_event_ns;

			p->pending = false;
			return try_down(p, cause, flags, ev, usage, now_ns, d);
		}
		p->pending = false;
	}
	if (p->level >= p->max_level || !interval_ok(p, now_ns) ||
	    now_ns - p->last_pressure_ns < p->cfg.hold_ns || !fits(p, usage, p->level + 1))
		return 0;
	to = p->level + 1;
	if (p->cfg.step == NQ_POLICY_STEP_BUDGET)
		while (to < p->max_level && fits(p, usage, to + 1))
			to++;
	decide(p, to, NQ_CAUSE_HOLD_EXPIRED, 0, p->last_pressure_ns, usage, now_ns, d);
	return 1;
}

void nq_policy_done(struct nq_policy *p, unsigned int level, uint64_t now_ns)
{
	p->switching = false;
	p->level = level < p->nlevels ? level : p->nlevels - 1;
	p->settled_ns = now_ns;
	/* Downs deferred during the switch were answered by it. */
	if (p->pending && p->pending_event_ns <= now_ns)
		p->pending = false;
}

uint64_t nq_policy_deadline(const struct nq_policy *p)
{
	uint64_t t, hold;

	if (p->switching)
		return 0;
	t = p->switched ? p->last_switch_ns + p->cfg.min_interval_ns : 0;
	if (p->pending)
		return t ? t : 1;
	if (p->level >= p->max_level)
		return 0;
	hold = p->last_pressure_ns + p->cfg.hold_ns;
	return hold > t ? hold : t;
}

int nq_policy_format(char *buf, size_t len, const struct nq_policy_decision *d,
		     const char *source, uint64_t done_ns, uint64_t bytes_released, int err)
{
	char lim[32], tail[256];
	int n;

	if (d->limit == NQ_POLICY_UNLIMITED)
		snprintf(lim, sizeof(lim), "null");
	else
		snprintf(lim, sizeof(lim), "%" PRIu64, d->limit);
	if (err)
		snprintf(tail, sizeof(tail), "\"error\":%d,\"error_name\":\"%s\"", err,
			 strerrorname_np(-err) ? strerrorname_np(-err) : "?");
	else
		snprintf(tail, sizeof(tail), "\"done_ns\":%" PRIu64 ",\"switch_ns\":%" PRIu64
			 ",\"onset_to_done_ns\":%" PRIu64 ",\"bytes_released\":%" PRIu64,
			 done_ns, done_ns - d->decided_ns,
			 done_ns >= d->event_ns ? done_ns - d->event_ns : 0, bytes_released);
	if (!err && d->woke_ns) {
		size_t o = strlen(tail);

		snprintf(tail + o, sizeof(tail) - o, ",\"woke_ns\":%" PRIu64 ",\"wait_ns\":%" PRIu64,
			 d->woke_ns, d->wait_ns);
	}
	n = snprintf(buf, len,
		     "{\"event\":\"switch\",\"seq\":%" PRIu64 ",\"source\":\"%s\",\"cause\":\"%s\","
		     "\"direction\":\"%s\",\"from\":%u,\"to\":%u,\"event_ns\":%" PRIu64
		     ",\"kernel_time\":%s,\"decided_ns\":%" PRIu64 ",\"usage\":%" PRIu64
		     ",\"limit\":%s,%s}\n",
		     d->seq, source ? source : "", nq_pressure_cause_name(d->cause),
		     d->to < d->from ? "down" : "up", d->from, d->to, d->event_ns,
		     d->event_flags & NQ_PEV_KERNEL_TIME ? "true" : "false", d->decided_ns,
		     d->usage == NQ_POLICY_UNLIMITED ? 0 : d->usage, lim, tail);
	if (n < 0 || (size_t)n >= len)
		return nq_fail(-ENOSPC, "decision log line longer than %zu bytes", len);
	return n;
}
