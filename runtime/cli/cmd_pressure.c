// SPDX-License-Identifier: MIT
/*
 * nestquant pressure — follow the memory-pressure signal exactly as a
 * runtime under `nestquant launch` would: which source is active and why the
 * better ones are not, the events it delivers, and the decisions the policy
 * takes for a simulated model.  For checking a machine, a cgroup or a policy
 * file before serving.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "nq_error.h"
#include "policy.h"
#include "serve.h"	/* nq_serve_json_escape */

static void usage(FILE *out)
{
	fprintf(out,
		"usage: nestquant pressure [OPTIONS]\n"
		"\n"
		"Open the memory-pressure signal source the runtime would use (same\n"
		"environment: NQ_SIGNAL, NQ_CGROUP, NQ_POLICY, NQ_PSI_PATH, ...) and print, as\n"
		"JSON lines on stdout, a \"start\" line naming the active source and why each\n"
		"better one was unavailable, then either the raw pressure events (--events)\n"
		"or the policy's decisions for a simulated model (default).\n"
		"\n"
		"options:\n"
		"  --signal S             bpf|kmod|psi|auto|none (default $NQ_SIGNAL, else auto)\n"
		"  --cgroup DIR           memory cgroup (default $NQ_CGROUP, else our own)\n"
		"  --psi-path FILE        PSI file (default $NQ_PSI_PATH, else as chosen)\n"
		"  --pin-dir DIR          BPF monitor pins\n"
		"  --policy FILE          policy file (default $NQ_POLICY)\n"
		"  --events               print pressure events instead of running the policy\n"
		"  --levels N             simulated model: N levels (default 2)\n"
		"  --level-bytes LIST     bytes resident at each level, e.g. 10M,14M,18M\n"
		"  --level L              level in force at the start (default the top)\n"
		"  --switch-ms MS         simulated switch duration (default 0)\n"
		"  --log FILE             decisions to FILE (default $NQ_POLICY_LOG, else stdout)\n"
		"  --count N              stop after N events / decisions\n"
		"  --duration SECONDS     stop after this long (default: until SIGINT/SIGTERM)\n");
}

struct opts {
	const char *signal, *cgroup, *psi_path, *pin_dir, *policy, *log;
	bool events;
	unsigned int levels, level;
	bool level_set;
	uint64_t level_bytes[NQ_POLICY_MAX_LEVELS];
	unsigned int nbytes;
	unsigned int switch_ms;
	long count;
	double duration;
};

static volatile sig_atomic_t stop;

static void on_stop(int sig)
{
	(void)sig;
	stop = 1;
}

static int parse_list(const char *s, struct opts *o)
{
	char buf[512], *tok, *save;

	snprintf(buf, sizeof(buf), "%s", s);
	o->nbytes = 0;
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (o->nbytes == NQ_POLICY_MAX_LEVELS || nq_parse_bytes(tok, &o->level_bytes[o->nbytes]))
			return -1;
		o->nbytes++;
	}
	return o->nbytes ? 0 : -1;
}

static int parse(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
		{ "signal", required_argument, NULL, 's' },
		{ "cgroup", required_argument, NULL, 'c' },
		{ "psi-path", required_argument, NULL, 'P' },
		{ "pin-dir", required_argument, NULL, 'D' },
		{ "policy", required_argument, NULL, 'p' },
		{ "events", no_argument, NULL, 'e' },
		{ "levels", required_argument, NULL, 'n' },
		{ "level-bytes", required_argument, NULL, 'b' },
		{ "level", required_argument, NULL, 'L' },
		{ "switch-ms", required_argument, NULL, 'w' },
		{ "log", required_argument, NULL, 'l' },
		{ "count", required_argument, NULL, 'C' },
		{ "duration", required_argument, NULL, 't' },
		{ NULL, 0, NULL, 0 },
	};
	char *end;
	int c;

	o->levels = 2;
	o->count = -1;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 's': o->signal = optarg; break;
		case 'c': o->cgroup = optarg; break;
		case 'P': o->psi_path = optarg; break;
		case 'D': o->pin_dir = optarg; break;
		case 'p': o->policy = optarg; break;
		case 'e': o->events = true; break;
		case 'l': o->log = optarg; break;
		case 'n':
			o->levels = strtoul(optarg, &end, 10);
			if (*end || !o->levels || o->levels > NQ_POLICY_MAX_LEVELS)
				goto bad;
			break;
		case 'b':
			if (parse_list(optarg, o))
				goto bad;
			break;
		case 'L':
			o->level = strtoul(optarg, &end, 10);
			if (*end)
				goto bad;
			o->level_set = true;
			break;
		case 'w':
			o->switch_ms = strtoul(optarg, &end, 10);
			if (*end)
				goto bad;
			break;
		case 'C':
			o->count = strtol(optarg, &end, 10);
			if (*end || o->count <= 0)
				goto bad;
			break;
		case 't':
			o->duration = strtod(optarg, &end);
			if (*end || o->duration <= 0)
				goto bad;
			break;
		default:
			usage(stderr);
			return -1;
		}
	}
	if (o->nbytes && o->nbytes != o->levels) {
		if (o->levels == 2 && o->nbytes > 1)
			o->levels = o->nbytes;
		else {
			cli_error("pressure", "--level-bytes has %u values for %u levels", o->nbytes,
				  o->levels);
			return -1;
		}
	}
	if (!o->level_set)
		o->level = o->levels - 1;
	if (o->level >= o->levels) {
		cli_error("pressure", "--level %u: the model has levels 0..%u", o->level,
			  o->levels - 1);
		return -1;
	}
	return 0;
bad:
	cli_error("pressure", "bad value '%s' (see nestquant pressure --help)", optarg);
	return -1;
}

static int remaining_ms(const struct opts *o, uint64_t start)
{
	double left;

	if (o->duration <= 0)
		return -1;
	left = o->duration * 1e3 - (double)(nq_monotonic_ns() - start) / 1e6;
	return left <= 0 ? 0 : (int)left + 1;
}

static void print_start(const char *source, const char *selection)
{
	char esc[2048];

	nq_serve_json_escape(esc, sizeof(esc), selection);
	printf("{\"event\":\"start\",\"pid\":%d,\"source\":\"%s\",\"selection\":\"%s\"}\n",
	       (int)getpid(), source, esc);
	fflush(stdout);
	fprintf(stderr, "nestquant pressure: signal source %s — %s\n", source, selection);
}

static int follow_events(const struct opts *o)
{
	struct nq_signal_opts so = { 0 };
	struct nq_policy_cfg cfg;
	struct nq_signal *s;
	const char *sig = o->signal ? o->signal : getenv("NQ_SIGNAL");
	const char *pol = o->policy ? o->policy : getenv("NQ_POLICY");
	uint64_t start = nq_monotonic_ns();
	long seen = 0;
	int err, ep;

	nq_policy_cfg_default(&cfg);
	if (pol && *pol && nq_policy_cfg_load(&cfg, pol)) {
		cli_error("pressure", "%s", nq_last_error());
		return 1;
	}
	if (!sig || !*sig)
		sig = cfg.signal[0] ? cfg.signal : "auto";
	if (nq_signal_parse_kind(sig, &so.kind)) {
		cli_error("pressure", "%s", nq_last_error());
		return 2;
	}
	so.cgroup = o->cgroup ? o->cgroup : getenv("NQ_CGROUP");
	so.psi_path = o->psi_path ? o->psi_path : getenv("NQ_PSI_PATH");
	so.pin_dir = o->pin_dir ? o->pin_dir : getenv("NQ_MONITOR_PIN_DIR");
	so.global = cfg.global;
	so.psi_some_ns = cfg.psi_some_ns;
	so.psi_full_ns = cfg.psi_full_ns;
	so.psi_window_ns = cfg.psi_window_ns;
	err = nq_signal_open(&so, &s);
	if (err) {
		cli_error("pressure", "%s", nq_last_error());
		return 1;
	}
	print_start(nq_signal_kind_name(nq_signal_kind(s)), nq_signal_selection(s));
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (nq_signal_fd(s) >= 0) {
		struct epoll_event e = { .events = EPOLLIN };

		epoll_ctl(ep, EPOLL_CTL_ADD, nq_signal_fd(s), &e);
	}
	while (!stop && (o->count < 0 || seen < o->count)) {
		struct nq_pressure_event evs[32];
		struct epoll_event e;
		int ms = remaining_ms(o, start), n;

		if (!ms)
			break;
		n = epoll_wait(ep, &e, 1, ms);
		if (n <= 0)
			continue;
		n = nq_signal_read(s, evs, 32);
		/* The source changed (a monitor unloaded or loaded again): say so
		 * in the stream and on stderr, as the policy log does. */
		for (const char *msg; (msg = nq_signal_notice(s));) {
			char esc[2048];

			nq_serve_json_escape(esc, sizeof(esc), msg);
			printf("{\"event\":\"source\",\"source\":\"%s\",\"message\":\"%s\"}\n",
			       nq_signal_kind_name(nq_signal_kind(s)), esc);
			fprintf(stderr, "nestquant pressure: %s\n", msg);
		}
		if (n < 0) {
			cli_error("pressure", "%s", nq_last_error());
			err = n;
			break;
		}
		for (int i = 0; i < n; i++) {
			printf("{\"event\":\"pressure\",\"cause\":\"%s\",\"event_ns\":%" PRIu64
			       ",\"recv_ns\":%" PRIu64 ",\"delay_ns\":%" PRIu64 ",\"kernel_time\":%s,"
			       "\"global\":%s,\"cgroup_id\":%" PRIu64 ",\"count\":%" PRIu64 "}\n",
			       nq_pressure_cause_name(evs[i].cause), evs[i].ktime_ns, evs[i].recv_ns,
			       evs[i].recv_ns - evs[i].ktime_ns,
			       evs[i].flags & NQ_PEV_KERNEL_TIME ? "true" : "false",
			       evs[i].flags & NQ_PEV_GLOBAL ? "true" : "false", evs[i].cgroup_id,
			       evs[i].count);
			seen++;
		}
		fflush(stdout);
	}
	close(ep);
	nq_signal_close(s);
	return err < 0 ? 1 : 0;
}

struct sim {
	struct nq_controller *c;
	const struct opts *o;
	unsigned int level;
};

static int sim_switch(void *ctx, unsigned int level)
{
	struct sim *sm = ctx;
	struct timespec ts = { sm->o->switch_ms / 1000, (sm->o->switch_ms % 1000) * 1000000L };

	if (sm->o->switch_ms)
		nanosleep(&ts, NULL);
	if (sm->o->nbytes && level < sm->level)
		nq_controller_report_released(sm->c, sm->o->level_bytes[sm->level] -
					      sm->o->level_bytes[level]);
	sm->level = level;
	return 0;
}

static int run_policy(const struct opts *o)
{
	struct sim sm = { .o = o, .level = o->level };
	struct nq_controller_opts co = {
		.signal = o->signal,
		.cgroup = o->cgroup,
		.policy_file = o->policy,
		.log_path = o->log,
		/* --log, else $NQ_POLICY_LOG (as the runtime would), else stdout */
		.log_fd = o->log || (getenv("NQ_POLICY_LOG") && *getenv("NQ_POLICY_LOG")) ? -1 :
			  STDOUT_FILENO,
		.psi_path = o->psi_path,
		.pin_dir = o->pin_dir,
		.nlevels = o->levels,
		.level_bytes = o->nbytes ? o->level_bytes : NULL,
		.level = o->level,
		.switch_to = sim_switch,
		.ctx = &sm,
	};
	uint64_t start = nq_monotonic_ns();
	long decisions = 0;
	int n, ret = 0;

	n = nq_controller_create(&co, &sm.c);
	if (n) {
		cli_error("pressure", "%s", nq_last_error());
		return 1;
	}
	fprintf(stderr, "nestquant pressure: signal source %s — %s\n", nq_controller_source(sm.c),
		nq_controller_selection(sm.c));
	while (!stop && (o->count < 0 || decisions < o->count)) {
		int ms = remaining_ms(o, start);

		if (!ms)
			break;
		n = nq_controller_run(sm.c, ms);
		if (n < 0) {
			cli_error("pressure", "%s", nq_last_error());
			ret = 1;
			break;
		}
		decisions += n;
	}
	nq_controller_destroy(sm.c);
	return ret;
}

static int run(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_stop };
	struct opts o = { 0 };

	if (parse(argc, argv, &o))
		return 2;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	setvbuf(stdout, NULL, _IOLBF, 0);
	return o.events ? follow_events(&o) : run_policy(&o);
}

const struct nq_verb nq_verb_pressure = {
	.name = "pressure",
	.summary = "show the memory-pressure signal source, its events and policy decisions",
	.run = run,
	.usage = usage,
};
