// SPDX-License-Identifier: MIT
/*
 * nestquant monitor — load, inspect and unload the BPF pressure monitor, and
 * register cgroups/files with it or follow its events from a shell.
 */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "monitor.h"
#include "nq_error.h"

static void usage(FILE *out)
{
	fprintf(out,
		"usage: nestquant monitor SUBCOMMAND [OPTIONS]\n"
		"\n"
		"The kernel side of pressure-driven switching: BPF programs on the vmscan\n"
		"tracepoints (memcg reclaim, kswapd wake, direct reclaim) and on page-cache\n"
		"evictions of watched model files, pinned in bpffs so they outlive the loader.\n"
		"\n"
		"subcommands:\n"
		"  load [--group NAME] [--ring-size BYTES]\n"
		"                         load and pin (needs CAP_BPF+CAP_PERFMON or root);\n"
		"                         pins are 0600 root-only, or 0660 for NAME's members\n"
		"                         so their processes can be clients. Idempotent.\n"
		"  status [--json]        watched cgroups and files, clients, counters\n"
		"  unload                 remove the pins (detaches the programs)\n"
		"  watch-cgroup PATH [--min-interval-us N]\n"
		"  unwatch-cgroup PATH    keep counting a memory cgroup with no client\n"
		"  watch-file PATH [--min-interval-us N]\n"
		"  unwatch-file PATH      keep counting page-cache evictions of a file\n"
		"  events [--cgroup PATH]... [--file PATH]... [--global] [--count N]\n"
		"         [--timeout SECONDS] [--min-interval-us N]\n"
		"                         be a client: print events as JSON lines with the\n"
		"                         kernel timestamp and the delay until received;\n"
		"                         exits 3 with the reason if the monitor is unloaded\n"
		"\n"
		"common options:\n"
		"  --pin-dir DIR          bpffs directory (default %s)\n"
		"\n"
		"Rate limit: per watched cgroup/file and event type at most one event per\n"
		"min-interval (default %llu us); events in between are counted in `count`.\n",
		NQ_MONITOR_PIN_DIR, (unsigned long long)NQ_MONITOR_DEFAULT_INTERVAL_NS / 1000);
}

struct opts {
	const char *pin_dir;
	const char *group;
	size_t ring_bytes;
	bool json, global;
	uint64_t interval_ns;
	long count;
	double timeout;
	const char *cgroups[16];
	int nr_cgroups;
	const char *files[16];
	int nr_files;
	const char *arg;	/* the PATH of watch-* */
};

static int parse_u64(const char *s, uint64_t *v)
{
	char *end;

	errno = 0;
	*v = strtoull(s, &end, 0);
	return errno || end == s || *end || s[0] == '-' ? -EINVAL : 0;
}

static int parse(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
		{ "pin-dir", required_argument, NULL, 'P' },
		{ "group", required_argument, NULL, 'g' },
		{ "ring-size", required_argument, NULL, 'r' },
		{ "json", no_argument, NULL, 'j' },
		{ "global", no_argument, NULL, 'G' },
		{ "min-interval-us", required_argument, NULL, 'i' },
		{ "count", required_argument, NULL, 'n' },
		{ "timeout", required_argument, NULL, 't' },
		{ "cgroup", required_argument, NULL, 'c' },
		{ "file", required_argument, NULL, 'f' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t v;
	int c;

	o->interval_ns = NQ_MONITOR_DEFAULT_INTERVAL_NS;
	o->count = -1;
	o->timeout = -1;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'P': o->pin_dir = optarg; break;
		case 'g': o->group = optarg; break;
		case 'j': o->json = true; break;
		case 'G': o->global = true; break;
		case 'r':
			if (parse_u64(optarg, &v))
				goto bad;
			o->ring_bytes = v;
			break;
		case 'i':
			if (parse_u64(optarg, &v) || v > UINT64_MAX / 1000)
				goto bad;
			o->interval_ns = v * 1000;
			break;
		case 'n':
			if (parse_u64(optarg, &v) || v > LONG_MAX)
				goto bad;
			o->count = v;
			break;
		case 't':
			o->timeout = strtod(optarg, NULL);
			if (o->timeout <= 0)
				goto bad;
			break;
		case 'c':
			if (o->nr_cgroups == 16) {
				cli_error("monitor", "at most 16 --cgroup");
				return -1;
			}
			o->cgroups[o->nr_cgroups++] = optarg;
			break;
		case 'f':
			if (o->nr_files == 16) {
				cli_error("monitor", "at most 16 --file");
				return -1;
			}
			o->files[o->nr_files++] = optarg;
			break;
		default:
			return -1;
		}
	}
	if (optind < argc)
		o->arg = argv[optind++];
	if (optind < argc) {
		cli_error("monitor", "unexpected argument '%s'", argv[optind]);
		return -1;
	}
	return 0;
bad:
	cli_error("monitor", "bad value '%s' for an option", optarg);
	return -1;
}

static int fail(const char *what)
{
	cli_error("monitor", "%s: %s", what, nq_last_error());
	return 1;
}

static int cmd_load(const struct opts *o)
{
	struct nq_monitor_load_opts lo = {
		.pin_dir = o->pin_dir,
		.group = o->group,
		.ring_bytes = o->ring_bytes,
	};
	const char *dir = o->pin_dir ? o->pin_dir : NQ_MONITOR_PIN_DIR;
	int err = nq_monitor_load(&lo);

	if (err < 0)
		return fail("load");
	if (err == 1)
		printf("monitor already loaded at %s\n", dir);
	else
		printf("monitor loaded and pinned at %s (mode %s%s)\n", dir,
		       o->group ? "0660, group " : "0600", o->group ? o->group : "");
	return 0;
}

static int cmd_unload(const struct opts *o)
{
	const char *dir = o->pin_dir ? o->pin_dir : NQ_MONITOR_PIN_DIR;
	int err = nq_monitor_unload(o->pin_dir);

	if (err == -ENOENT) {
		printf("monitor not loaded (%s absent)\n", dir);
		return 0;
	}
	if (err)
		return fail("unload");
	printf("monitor unloaded (%s removed)\n", dir);
	return 0;
}

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", *s);
		else
			putchar(*s);
	}
	putchar('"');
}

static void json_counts(const char *name, const __u64 *v)
{
	printf("\"%s\":{", name);
	for (int t = 1; t < NQ_MON_EV_MAX; t++)
		printf("%s\"%s\":%llu", t > 1 ? "," : "", nq_monitor_event_name(t), v[t]);
	printf("}");
}

static void json_watch(const struct nq_monitor_status_watch *w, bool file)
{
	if (file)
		printf("{\"dev\":\"%u:%u\",\"ino\":%llu,", w->dev >> 20, w->dev & 0xfffff,
		       w->ino);
	else
		printf("{\"id\":%llu,", w->cgroup_id);
	printf("\"path\":");
	json_str(w->cfg.path);
	printf(",\"clients\":%llu,\"persist\":%s,\"min_interval_ns\":%llu,",
	       w->cfg.clients, w->cfg.flags & NQ_MON_CGF_PERSIST ? "true" : "false",
	       w->cfg.min_interval_ns);
	json_counts("seen", w->stat.seen);
	putchar(',');
	json_counts("delivered", w->stat.delivered);
	putchar(',');
	json_counts("ratelimited", w->stat.ratelimited);
	printf(",\"dropped\":%llu", w->stat.dropped);
	if (file)
		printf(",\"pages_evicted\":%llu", w->stat.pages);
	putchar('}');
}

static void print_json(const struct nq_monitor_status *st)
{
	printf("{\"loaded\":true,\"pin_dir\":");
	json_str(st->pin_dir);
	printf(",\"mode\":\"%04o\",\"uid\":%u,\"gid\":%u,\"programs_attached\":%u,",
	       st->mode, st->uid, st->gid, st->nr_links);
	json_counts("totals", st->totals);
	printf(",\"clients\":[");
	for (unsigned int i = 0; i < st->nr_clients; i++) {
		const struct nq_monitor_status_client *c = &st->clients[i];

		printf("%s{\"slot\":%u,\"pid\":%u,\"uid\":%u,\"alive\":%s,\"global\":%s,"
		       "\"delivered\":%llu,\"dropped\":%llu}",
		       i ? "," : "", c->slot, c->pid, c->uid, c->alive ? "true" : "false",
		       c->flags & NQ_MON_CLF_GLOBAL ? "true" : "false", c->delivered, c->dropped);
	}
	printf("],\"cgroups\":[");
	for (unsigned int i = 0; i < st->nr_cgroups; i++) {
		printf(i ? "," : "");
		json_watch(&st->cgroups[i], false);
	}
	printf("],\"files\":[");
	for (unsigned int i = 0; i < st->nr_files; i++) {
		printf(i ? "," : "");
		json_watch(&st->files[i], true);
	}
	printf("]}\n");
}

static __u64 sum(const __u64 *v)
{
	__u64 s = 0;

	for (int t = 1; t < NQ_MON_EV_MAX; t++)
		s += v[t];
	return s;
}

static void print_text(const struct nq_monitor_status *st)
{
	struct group *gr = getgrgid(st->gid);

	printf("monitor: loaded at %s (mode %04o, group %s), %u of 4 programs attached\n",
	       st->pin_dir, st->mode, gr ? gr->gr_name : "?", st->nr_links);
	printf("events seen (all cgroups): memcg_reclaim %llu, kswapd_wake %llu"
	       ", direct_reclaim %llu, file_evict (watched files) %llu\n",
	       st->totals[NQ_MON_EV_MEMCG_RECLAIM], st->totals[NQ_MON_EV_KSWAPD_WAKE],
	       st->totals[NQ_MON_EV_DIRECT_RECLAIM], st->totals[NQ_MON_EV_FILE_EVICT]);
	printf("\nclients: %u\n", st->nr_clients);
	for (unsigned int i = 0; i < st->nr_clients; i++) {
		const struct nq_monitor_status_client *c = &st->clients[i];

		printf("  slot %-2u pid %-7u uid %-5u %-5s%s delivered %llu dropped %"
		       "llu\n", c->slot, c->pid, c->uid, c->alive ? "" : "dead",
		       c->flags & NQ_MON_CLF_GLOBAL ? " global" : "", c->delivered, c->dropped);
	}
	printf("\nwatched cgroups: %u\n", st->nr_cgroups);
	if (st->nr_cgroups)
		printf("  %-10s %-10s %8s %8s %10s %10s %11s %8s  %s\n", "id", "clients",
		       "interval", "memcg", "kswapd", "direct", "ratelimited", "dropped", "path");
	for (unsigned int i = 0; i < st->nr_cgroups; i++) {
		const struct nq_monitor_status_watch *w = &st->cgroups[i];

		printf("  %-10llu %#-10llx %6lluus %8llu %10llu"
		       " %10llu %11llu %8llu  %s%s\n", w->cgroup_id,
		       w->cfg.clients, w->cfg.min_interval_ns / 1000,
		       w->stat.seen[NQ_MON_EV_MEMCG_RECLAIM], w->stat.seen[NQ_MON_EV_KSWAPD_WAKE],
		       w->stat.seen[NQ_MON_EV_DIRECT_RECLAIM], sum(w->stat.ratelimited),
		       w->stat.dropped, w->cfg.path,
		       w->cfg.flags & NQ_MON_CGF_PERSIST ? " (persist)" : "");
	}
	printf("\nwatched files: %u\n", st->nr_files);
	if (st->nr_files)
		printf("  %-9s %-10s %-10s %8s %10s %10s %8s  %s\n", "dev", "inode", "clients",
		       "interval", "evicted", "events", "dropped", "path");
	for (unsigned int i = 0; i < st->nr_files; i++) {
		const struct nq_monitor_status_watch *w = &st->files[i];
		char dev[24];

		snprintf(dev, sizeof(dev), "%u:%u", w->dev >> 20, w->dev & 0xfffff);
		printf("  %-9s %-10llu %#-10llx %6lluus %10llu %10"
		       "llu %8llu  %s%s\n", dev, w->ino, w->cfg.clients,
		       w->cfg.min_interval_ns / 1000, w->stat.pages,
		       w->stat.seen[NQ_MON_EV_FILE_EVICT], w->stat.dropped, w->cfg.path,
		       w->cfg.flags & NQ_MON_CGF_PERSIST ? " (persist)" : "");
	}
}

static int cmd_status(const struct opts *o)
{
	struct nq_monitor_status *st;
	int err = nq_monitor_status(o->pin_dir, &st);

	if (err == -ENOENT) {
		if (o->json)
			printf("{\"loaded\":false}\n");
		else
			printf("monitor: not loaded\n");
		return 3;	/* like `systemctl status` for a stopped unit */
	}
	if (err)
		return fail("status");
	if (o->json)
		print_json(st);
	else
		print_text(st);
	nq_monitor_status_free(st);
	return 0;
}

static int cmd_persist(const struct opts *o, bool file, bool on)
{
	int err;

	if (!o->arg) {
		cli_error("monitor", "%s needs a PATH", file ? "watch-file" : "watch-cgroup");
		return 2;
	}
	if (file)
		err = nq_monitor_persist_file(o->pin_dir, o->arg, o->interval_ns, on);
	else
		err = nq_monitor_persist_cgroup(o->pin_dir, o->arg, o->interval_ns, on);
	if (err)
		return fail(file ? "watch-file" : "watch-cgroup");
	printf("%s %s\n", on ? "watching" : "no longer watching", o->arg);
	return 0;
}

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

struct events_ctx {
	long left;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static int print_event(void *ctx, const struct nq_mon_event *ev)
{
	struct events_ctx *ec = ctx;
	uint64_t recv = now_ns();

	if (ec->left == 0)
		return 0;
	printf("{\"type\":\"%s\",\"ktime_ns\":%llu,\"recv_ns\":%llu"
	       ",\"delay_ns\":%lld,\"cgroup_id\":%llu,\"pid\":%u,\"count\":%llu"
	       ",\"order\":%u,\"slot\":%u,\"global\":%s",
	       nq_monitor_event_name(ev->type), ev->ktime_ns, (unsigned long long)recv,
	       (long long)(recv - ev->ktime_ns), ev->cgroup_id, ev->pid,
	       ev->count, ev->order, ev->slot,
	       ev->flags & NQ_MON_EVF_GLOBAL ? "true" : "false");
	if (ev->type == NQ_MON_EV_FILE_EVICT)
		printf(",\"dev\":\"%u:%u\",\"ino\":%llu,\"index\":%llu", ev->dev >> 20,
		       ev->dev & 0xfffff, ev->ino, ev->index);
	printf("}\n");
	if (ec->left > 0)
		ec->left--;
	return 0;
}

static int cmd_events(const struct opts *o)
{
	struct events_ctx ec = { .left = o->count };
	uint64_t deadline = 0;
	struct nq_monitor *m;
	int err, rc = 0;

	if (!o->nr_cgroups && !o->nr_files && !o->global) {
		cli_error("monitor", "events needs --cgroup, --file or --global");
		return 2;
	}
	err = nq_monitor_open(o->pin_dir, o->global ? NQ_MONITOR_GLOBAL : 0, &m);
	if (err)
		return fail("events");
	for (int i = 0; i < o->nr_cgroups && !err; i++)
		err = nq_monitor_watch_cgroup(m, o->cgroups[i], o->interval_ns);
	for (int i = 0; i < o->nr_files && !err; i++)
		err = nq_monitor_watch_file(m, o->files[i], o->interval_ns);
	if (err) {
		rc = fail("events");
		goto out;
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	/* Tell a script driving us that the subscriptions are in place. */
	fprintf(stderr, "nestquant monitor: listening (slot %d)\n", nq_monitor_slot(m));
	if (o->timeout > 0)
		deadline = now_ns() + (uint64_t)(o->timeout * 1e9);
	setvbuf(stdout, NULL, _IOLBF, 0);
	uint64_t checked = now_ns();

	while (!stop && ec.left != 0) {
		int wait = 200;

		/* An unloaded monitor leaves our ring silent (its maps live on
		 * through our fds): look at the pins once a second and end the
		 * stream with the reason instead of listening to nothing. */
		if (now_ns() - checked >= 1000000000ull) {
			checked = now_ns();
			err = nq_monitor_check(m);
			if (err) {
				cli_error("monitor", "events: the BPF monitor was %s (%s); no more "
					  "events will come%s", err == -ESTALE ? "reloaded" : "unloaded",
					  nq_last_error(), err == -ESTALE ? ": run events again" : "");
				rc = 3;
				break;
			}
		}

		if (deadline) {
			uint64_t now = now_ns();

			if (now >= deadline)
				break;
			if ((deadline - now) / 1000000 < (uint64_t)wait)
				wait = (deadline - now) / 1000000 + 1;
		}
		err = nq_monitor_poll(m, wait, print_event, &ec);
		if (err < 0) {
			rc = fail("events");
			break;
		}
	}
out:
	nq_monitor_close(m);
	return rc;
}

static int run(int argc, char **argv)
{
	struct opts o = {};
	const char *sub;

	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	sub = argv[1];
	if (parse(argc - 1, argv + 1, &o))
		return 2;
	if (!strcmp(sub, "load") || !strcmp(sub, "unload")) {
		if (nq_monitor_check_privilege()) {
			cli_error("monitor", "%s: %s", sub, nq_last_error());
			return 1;
		}
		return sub[0] == 'l' ? cmd_load(&o) : cmd_unload(&o);
	}
	if (!strcmp(sub, "status"))
		return cmd_status(&o);
	if (!strcmp(sub, "watch-cgroup"))
		return cmd_persist(&o, false, true);
	if (!strcmp(sub, "unwatch-cgroup"))
		return cmd_persist(&o, false, false);
	if (!strcmp(sub, "watch-file"))
		return cmd_persist(&o, true, true);
	if (!strcmp(sub, "unwatch-file"))
		return cmd_persist(&o, true, false);
	if (!strcmp(sub, "events"))
		return cmd_events(&o);
	cli_error("monitor", "unknown subcommand '%s'", sub);
	usage(stderr);
	return 2;
}

const struct nq_verb nq_verb_monitor = {
	.name = "monitor",
	.summary = "load, inspect or unload the BPF memory-pressure monitor",
	.run = run,
	.usage = usage,
};
