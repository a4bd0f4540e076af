// SPDX-License-Identifier: MIT
/*
 * nestquant query — the client of `nestquant serve`: one request (printing
 * the answer), or a steady load from several connections with latency
 * percentiles, the level of every answer and, given the expected answers
 * per level, a check of each one.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cmd_serve.h"
#include "dataset.h"
#include "nq_error.h"
#include "serve.h"

#define MAX_EXPECT_LEVELS	8

/* Set by SIGINT/SIGTERM during a load: send no more, finish, summarise. */
static volatile sig_atomic_t load_stop;

static void on_stop(int sig)
{
	(void)sig;
	load_stop = 1;
}

static void usage(FILE *out)
{
	fprintf(out,
		"usage: nestquant query [--socket PATH] (--status | --data SPEC | --input X.npy |\n"
		"                       --raw-request FILE) [LOAD OPTIONS]\n"
		"\n"
		"Send requests to `nestquant serve` and print the answers (one JSON line each).\n"
		"\n"
		"  --socket PATH        the server's socket (default: as nestquant serve)\n"
		"  --status             the server's level, residency and counters\n"
		"  --data SPEC          fashion-mnist:test:N, or a range fashion-mnist:test:A-B\n"
		"                       (requests cycle through it)\n"
		"  --input X.npy        f32 inputs; a batch is sent one item per request\n"
		"  --raw-request FILE   send FILE's bytes as they are and print what comes back\n"
		"                       (protocol tests)\n"
		"\n"
		"load options (any of them turns on the summary line):\n"
		"  --count N            requests in all (default: one per item)\n"
		"  --duration SECONDS   send until this much time has passed instead\n"
		"                       (SIGINT or SIGTERM also ends a load: the requests in\n"
		"                       flight are answered, then the summary is printed)\n"
		"  --rate R             requests per second over all connections (default: as\n"
		"                       fast as answers come)\n"
		"  --concurrency C      connections, one thread each (default 1)\n"
		"  --log FILE           one JSON line per request: send time (CLOCK_MONOTONIC\n"
		"                       ns), latency, item, level, class, correct\n"
		"  --expect FILE        expected answers: lines 'ITEM LEVEL TOP' where TOP is the\n"
		"                       \"top\" array of `nestquant run --json` (spaces ignored);\n"
		"                       every answer is checked against its item at the level it\n"
		"                       reports\n"
		"  -q, --quiet          do not print the answers, only the summary\n"
		"\n"
		"Exit status: 0 when every request got an ok answer (and every checked one was\n"
		"right), 1 otherwise, 3 when the server cannot be reached.\n");
}

struct expect {
	uint64_t item;
	unsigned int level;
	char *top;
};

struct opts {
	const char *socket, *data, *input, *raw, *log, *expect;
	bool status, quiet, load;
	uint64_t count;
	double duration, rate;
	unsigned int concurrency;
};

struct item {
	char *req;		/* the whole request */
	size_t len;
	uint64_t id;		/* dataset index, or batch item */
};

struct sample {
	uint64_t t_ns, lat_ns;
	uint64_t id;
	int level, cls;
	signed char ok, correct;	/* correct: 1, 0, -1 unchecked */
};

struct client {
	const struct opts *o;
	char path[PATH_MAX];
	struct item *items;
	size_t nitems;
	struct expect *exp;
	size_t nexp;
	uint64_t start_ns;
	atomic_uint_fast64_t next;	/* next request number */
	pthread_mutex_t out_lock;
	FILE *log;
};

struct thread {
	struct client *cl;
	pthread_t t;
	struct sample *s;
	size_t n, cap;
	int err;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int connect_to(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = 60 };
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		int e = errno;

		close(fd);
		errno = e;
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

static int send_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* One answer line into buf (NUL-terminated, '\n' kept); -1 on EOF/error/overlong. */
static int read_line(int fd, char *buf, size_t len)
{
	size_t o = 0;

	while (o + 1 < len) {
		ssize_t n = recv(fd, buf + o, 1, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		if (buf[o++] == '\n') {
			buf[o] = '\0';
			return (int)o;
		}
	}
	return -1;
}

/* Integer after "key": in a JSON line; def when absent. */
static long json_int(const char *line, const char *key, long def)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(line, pat);
	return p ? strtol(p + strlen(pat), NULL, 10) : def;
}

/* Copy s without spaces. */
static char *squeeze(const char *s, size_t n)
{
	char *d = malloc(n + 1), *o = d;

	if (!d)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (s[i] != ' ' && s[i] != '\n')
			*o++ = s[i];
	*o = '\0';
	return d;
}

/* The "top":[...] array of an answer, spaces removed. */
static char *answer_top(const char *line)
{
	const char *p = strstr(line, "\"top\":"), *e;

	if (!p)
		p = strstr(line, "\"top\": ");
	if (!p)
		return NULL;
	p = strchr(p, '[');
	e = p ? strchr(p, ']') : NULL;
	return e ? squeeze(p, (size_t)(e - p + 1)) : NULL;
}

static int load_expect(struct client *cl, const char *path)
{
	FILE *f = fopen(path, "r");
	char line[4096];
	size_t cap = 0;

	if (!f) {
		cli_error("query", "--expect %s: %s", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f)) {
		struct expect e;
		char *p = line, *end;

		e.item = strtoull(p, &end, 10);
		if (end == p)
			continue;
		p = end;
		e.level = (unsigned int)strtoul(p, &end, 10);
		if (end == p || !(p = strchr(end, '[')))
			continue;
		e.top = squeeze(p, strlen(p));
		if (!e.top)
			break;
		if (cl->nexp == cap) {
			struct expect *n;

			cap = cap ? cap * 2 : 64;
			n = realloc(cl->exp, cap * sizeof(*n));
			if (!n) {
				free(e.top);
				break;
			}
			cl->exp = n;
		}
		cl->exp[cl->nexp++] = e;
	}
	fclose(f);
	if (!cl->nexp) {
		cli_error("query", "--expect %s: no 'ITEM LEVEL TOP' line", path);
		return -1;
	}
	return 0;
}

/* 1 right, 0 wrong, -1 nothing to compare with. */
static int check(const struct client *cl, uint64_t id, int level, const char *line)
{
	char *top;
	int r = -1;

	for (size_t i = 0; i < cl->nexp; i++) {
		if (cl->exp[i].item != id || (int)cl->exp[i].level != level)
			continue;
		top = answer_top(line);
		r = top && !strcmp(top, cl->exp[i].top);
		free(top);
		break;
	}
	return r;
}

static int add_item(struct client *cl, size_t *cap, const void *hdr, size_t hlen,
		    const void *payload, size_t plen, uint64_t id)
{
	struct item *it;

	if (cl->nitems == *cap) {
		struct item *n;

		*cap = *cap ? *cap * 2 : 64;
		n = realloc(cl->items, *cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		cl->items = n;
	}
	it = &cl->items[cl->nitems];
	it->req = malloc(hlen + plen);
	if (!it->req)
		return -ENOMEM;
	memcpy(it->req, hdr, hlen);
	if (plen)
		memcpy(it->req + hlen, payload, plen);
	it->len = hlen + plen;
	it->id = id;
	cl->nitems++;
	return 0;
}

/* A .npy (v1.0, little-endian f32) of n values, shape (n,). */
static size_t build_npy(char *buf, size_t len, const float *v, size_t n)
{
	char hdr[128];
	int h = snprintf(hdr, sizeof(hdr), "{'descr': '<f4', 'fortran_order': False, 'shape': (%zu,), }",
			 n);
	size_t total = 10 + (size_t)h + 1, pad = (64 - total % 64) % 64;
	size_t hl = (size_t)h + pad + 1;

	if (total + pad + n * 4 > len)
		return 0;
	memcpy(buf, "\x93NUMPY\x01\x00", 8);
	buf[8] = (char)(hl & 0xff);
	buf[9] = (char)(hl >> 8);
	memcpy(buf + 10, hdr, (size_t)h);
	memset(buf + 10 + h, ' ', pad);
	buf[10 + h + pad] = '\n';
	memcpy(buf + total + pad, v, n * 4);	/* x86-64/arm64: host order is little-endian */
	return total + pad + n * 4;
}

static int make_items(struct client *cl)
{
	const struct opts *o = cl->o;
	size_t cap = 0;
	char hdr[NQ_SERVE_MAX_LINE];
	int n;

	if (o->status) {
		return add_item(cl, &cap, "status\n", 7, NULL, 0, 0);
	} else if (o->raw) {
		FILE *f = fopen(o->raw, "rb");
		char *buf = malloc(NQ_SERVE_MAX_PAYLOAD + 4096);
		size_t len;
		int err;

		if (!f || !buf) {
			cli_error("query", "--raw-request %s: %s", o->raw, strerror(errno));
			if (f)
				fclose(f);
			free(buf);
			return -1;
		}
		len = fread(buf, 1, NQ_SERVE_MAX_PAYLOAD + 4096, f);
		fclose(f);
		err = add_item(cl, &cap, buf, len, NULL, 0, 0);
		free(buf);
		return err;
	} else if (o->data) {
		const char *c2 = strrchr(o->data, ':'), *dash;
		char *end;
		uint64_t a, b;

		if (!c2 || c2 == o->data) {
			cli_error("query", "--data %s: expected DATASET:SPLIT:N or :A-B", o->data);
			return -1;
		}
		a = strtoull(c2 + 1, &end, 10);
		b = a;
		dash = end;
		if (*dash == '-')
			b = strtoull(dash + 1, &end, 10);
		if (*end || end == c2 + 1 || b < a || b - a > 1000000) {
			cli_error("query", "--data %s: bad index or range", o->data);
			return -1;
		}
		for (uint64_t i = a; i <= b; i++) {
			n = snprintf(hdr, sizeof(hdr), "data %.*s%" PRIu64 "\n",
				     (int)(c2 + 1 - o->data), o->data, i);
			if (n < 0 || (size_t)n >= sizeof(hdr) || add_item(cl, &cap, hdr, (size_t)n, NULL, 0, i))
				return -1;
		}
		return 0;
	} else {
		struct nq_array arr = { 0 };
		size_t per, items;
		char *buf;

		if (nq_npy_read(o->input, &arr)) {
			cli_error("query", "%s", nq_last_error());
			return -1;
		}
		if (arr.dtype != NQ_DT_F32 || !arr.count) {
			cli_error("query", "%s: the server takes f32 inputs (this is %s)", o->input,
				  nq_dtype_name(arr.dtype));
			nq_array_free(&arr);
			return -1;
		}
		/* A batch: the first dimension counts items when there are two or more. */
		items = arr.ndim >= 2 ? arr.dims[0] : 1;
		per = arr.count / items;
		buf = malloc(per * 4 + 256);
		for (size_t i = 0; buf && i < items; i++) {
			size_t len = build_npy(buf, per * 4 + 256, (const float *)arr.data + i * per, per);

			n = snprintf(hdr, sizeof(hdr), "npy %zu\n", len);
			if (add_item(cl, &cap, hdr, (size_t)n, buf, len, i))
				break;
		}
		free(buf);
		nq_array_free(&arr);
		return cl->nitems == items ? 0 : -1;
	}
}

static int record(struct thread *th, const struct sample *s)
{
	if (th->n == th->cap) {
		size_t cap = th->cap ? th->cap * 2 : 1024;
		struct sample *n = realloc(th->s, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		th->s = n;
		th->cap = cap;
	}
	th->s[th->n++] = *s;
	return 0;
}

static void *thread_main(void *arg)
{
	struct thread *th = arg;
	struct client *cl = th->cl;
	const struct opts *o = cl->o;
	char line[8192];
	int fd = connect_to(cl->path);

	if (fd < 0) {
		th->err = -errno;
		return NULL;
	}
	for (;;) {
		uint64_t k = atomic_fetch_add(&cl->next, 1), t;
		const struct item *it;
		struct sample s = { 0 };

		if (load_stop)
			break;
		if (o->duration > 0) {
			if (now_ns() - cl->start_ns >= (uint64_t)(o->duration * 1e9))
				break;
		} else if (k >= o->count) {
			break;
		}
		it = &cl->items[k % cl->nitems];
		if (o->rate > 0) {
			uint64_t due = cl->start_ns + (uint64_t)((double)k * 1e9 / o->rate);

			t = now_ns();
			if (due > t) {
				struct timespec ts = { (time_t)((due - t) / 1000000000ull),
						       (long)((due - t) % 1000000000ull) };

				nanosleep(&ts, NULL);
				if (load_stop)
					break;
			}
		}
		s.t_ns = now_ns();
		s.id = it->id;
		if (send_all(fd, it->req, it->len) || read_line(fd, line, sizeof(line)) < 0) {
			th->err = -EPIPE;
			break;
		}
		s.lat_ns = now_ns() - s.t_ns;
		s.ok = !strncmp(line, "{\"ok\":true", 10);
		s.level = (int)json_int(line, "level", -1);
		s.cls = (int)json_int(line, "class", -1);
		s.correct = s.ok && cl->nexp && !o->status ? (signed char)check(cl, s.id, s.level, line)
							  : -1;
		if (record(th, &s)) {
			th->err = -ENOMEM;
			break;
		}
		pthread_mutex_lock(&cl->out_lock);
		if (!o->quiet)
			fputs(line, stdout);
		if (cl->log)
			fprintf(cl->log, "{\"t_ns\":%" PRIu64 ",\"lat_ns\":%" PRIu64 ",\"item\":%" PRIu64
				",\"ok\":%s,\"level\":%d,\"class\":%d,\"correct\":%s}\n", s.t_ns, s.lat_ns,
				s.id, s.ok ? "true" : "false", s.level, s.cls,
				s.correct < 0 ? "null" : s.correct ? "true" : "false");
		pthread_mutex_unlock(&cl->out_lock);
		/* After an error on a framing problem the server closes: stop this connection. */
		if (!s.ok && o->raw)
			break;
	}
	close(fd);
	return NULL;
}

/*
 * --raw-request: send the bytes, close our side, print every answer line
 * until the server hangs up.  0 when every answer was ok.
 */
static int raw_exchange(struct client *cl)
{
	char line[8192];
	int fd = connect_to(cl->path), rc = 0, n = 0;

	if (fd < 0) {
		cli_error("query", "cannot connect to %s: %s", cl->path, strerror(errno));
		return 3;
	}
	/* A server that refuses mid-way may close before taking it all: not an error here. */
	send_all(fd, cl->items[0].req, cl->items[0].len);
	shutdown(fd, SHUT_WR);
	while (read_line(fd, line, sizeof(line)) > 0) {
		fputs(line, stdout);
		rc |= strncmp(line, "{\"ok\":true", 10) != 0;
		n++;
	}
	close(fd);
	return n && !rc ? 0 : 1;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static uint64_t pct(const uint64_t *v, size_t n, double p)
{
	size_t i;

	if (!n)
		return 0;
	i = (size_t)ceil(p / 100.0 * (double)n);
	return v[i ? i - 1 : 0];
}

static int summary(struct client *cl, struct thread *th, unsigned int nth, uint64_t wall_ns)
{
	uint64_t per_level[8] = { 0 }, *lat;
	size_t n = 0, ok = 0, wrong = 0, checked = 0, k = 0;

	for (unsigned int i = 0; i < nth; i++)
		n += th[i].n;
	lat = malloc((n ? n : 1) * sizeof(*lat));
	if (!lat)
		return 1;
	for (unsigned int i = 0; i < nth; i++) {
		for (size_t j = 0; j < th[i].n; j++) {
			const struct sample *s = &th[i].s[j];

			lat[k++] = s->lat_ns;
			ok += s->ok;
			if (s->correct >= 0) {
				checked++;
				wrong += !s->correct;
			}
			if (s->ok && s->level >= 0 && s->level < 8)
				per_level[s->level]++;
		}
	}
	qsort(lat, n, sizeof(*lat), cmp_u64);
	printf("{\"summary\":true,\"requests\":%zu,\"ok\":%zu,\"errors\":%zu,\"checked\":%zu,"
	       "\"wrong\":%zu,\"p50_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f,\"rps\":%.1f,"
	       "\"per_level\":[", n, ok, n - ok, checked, wrong, pct(lat, n, 50) / 1e3,
	       pct(lat, n, 99) / 1e3, n ? lat[n - 1] / 1e3 : 0.0,
	       wall_ns ? (double)n * 1e9 / (double)wall_ns : 0.0);
	for (int i = 0; i < 8; i++)
		printf("%s%" PRIu64, i ? "," : "", per_level[i]);
	printf("]}\n");
	free(lat);
	(void)cl;
	return ok == n && !wrong ? 0 : 1;
}

static int parse(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 'S' },
		{ "status", no_argument, NULL, 's' },
		{ "data", required_argument, NULL, 'd' },
		{ "input", required_argument, NULL, 'i' },
		{ "raw-request", required_argument, NULL, 'r' },
		{ "count", required_argument, NULL, 'n' },
		{ "duration", required_argument, NULL, 't' },
		{ "rate", required_argument, NULL, 'R' },
		{ "concurrency", required_argument, NULL, 'c' },
		{ "log", required_argument, NULL, 'l' },
		{ "expect", required_argument, NULL, 'e' },
		{ "quiet", no_argument, NULL, 'q' },
		{ NULL, 0, NULL, 0 },
	};
	char *end;
	int ch, what;

	o->concurrency = 1;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "q", longopts, NULL)) != -1) {
		switch (ch) {
		case 'S': o->socket = optarg; break;
		case 's': o->status = true; break;
		case 'd': o->data = optarg; break;
		case 'i': o->input = optarg; break;
		case 'r': o->raw = optarg; break;
		case 'l': o->log = optarg; o->load = true; break;
		case 'e': o->expect = optarg; o->load = true; break;
		case 'q': o->quiet = true; break;
		case 'n':
			o->count = strtoull(optarg, &end, 10);
			if (*end || !o->count)
				goto bad;
			o->load = true;
			break;
		case 't':
			o->duration = strtod(optarg, &end);
			if (*end || !(o->duration > 0))
				goto bad;
			o->load = true;
			break;
		case 'R':
			o->rate = strtod(optarg, &end);
			if (*end || !(o->rate > 0))
				goto bad;
			o->load = true;
			break;
		case 'c':
			o->concurrency = (unsigned int)strtoul(optarg, &end, 10);
			if (*end || !o->concurrency || o->concurrency > 256)
				goto bad;
			o->load = true;
			break;
		default:
			usage(stderr);
			return -1;
		}
	}
	what = o->status + !!o->data + !!o->input + !!o->raw;
	if (what != 1 || optind != argc) {
		usage(stderr);
		return -1;
	}
	return 0;
bad:
	cli_error("query", "bad value '%s' (see nestquant query --help)", optarg);
	return -1;
}

static int run(int argc, char **argv)
{
	struct opts o = { 0 };
	struct client cl = { .o = &o };
	struct thread *th = NULL;
	uint64_t wall;
	int rc = 1, fails = 0, probe;

	if (parse(argc, argv, &o))
		return 2;
	if (o.socket)
		snprintf(cl.path, sizeof(cl.path), "%s", o.socket);
	else
		cli_serve_default_socket(cl.path, sizeof(cl.path));
	pthread_mutex_init(&cl.out_lock, NULL);
	probe = connect_to(cl.path);
	if (probe < 0) {
		cli_error("query", "cannot connect to %s: %s%s", cl.path, strerror(errno),
			  errno == EACCES ? " (the socket's mode or group does not let this user in)" :
			  errno == ENOENT || errno == ECONNREFUSED ? " (is nestquant serve running?)" : "");
		return 3;
	}
	close(probe);
	if (make_items(&cl))
		goto out;
	if (o.expect && load_expect(&cl, o.expect))
		goto out;
	if (o.log && !(cl.log = fopen(o.log, "w"))) {
		cli_error("query", "--log %s: %s", o.log, strerror(errno));
		goto out;
	}
	if (o.raw) {
		rc = raw_exchange(&cl);
		goto out;
	}
	if (!o.count && o.duration <= 0)
		o.count = cl.nitems;
	if (!o.load)
		o.concurrency = 1;
	th = calloc(o.concurrency, sizeof(*th));
	if (!th)
		goto out;
	if (o.load) {
		/* No SA_RESTART: a thread asleep until its next send wakes early. */
		struct sigaction sa = { .sa_handler = on_stop };

		sigemptyset(&sa.sa_mask);
		sigaction(SIGINT, &sa, NULL);
		sigaction(SIGTERM, &sa, NULL);
	}
	cl.start_ns = now_ns();
	for (unsigned int i = 0; i < o.concurrency; i++) {
		th[i].cl = &cl;
		if (pthread_create(&th[i].t, NULL, thread_main, &th[i])) {
			o.concurrency = i;
			break;
		}
	}
	for (unsigned int i = 0; i < o.concurrency; i++) {
		pthread_join(th[i].t, NULL);
		if (th[i].err) {
			fails++;
			cli_error("query", "connection %u: %s", i, th[i].err == -EPIPE ?
				  "the server closed the connection" : strerror(-th[i].err));
		}
	}
	wall = now_ns() - cl.start_ns;
	fflush(stdout);
	if (o.load) {
		rc = summary(&cl, th, o.concurrency, wall);
	} else {
		rc = th[0].n == 1 && th[0].s[0].ok ? 0 : 1;
	}
	/* --raw-request expects the server to hang up after an error answer. */
	if (fails && !(o.raw && th[0].n))
		rc = 1;
out:
	for (unsigned int i = 0; th && i < o.concurrency; i++)
		free(th[i].s);
	free(th);
	for (size_t i = 0; i < cl.nitems; i++)
		free(cl.items[i].req);
	free(cl.items);
	for (size_t i = 0; i < cl.nexp; i++)
		free(cl.exp[i].top);
	free(cl.exp);
	if (cl.log)
		fclose(cl.log);
	return rc;
}

const struct nq_verb nq_verb_query = {
	.name = "query",
	.summary = "send requests to nestquant serve (one, or a steady load with percentiles)",
	.run = run,
	.usage = usage,
};
