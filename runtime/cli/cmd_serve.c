// SPDX-License-Identifier: MIT
/*
 * nestquant serve MODEL.nq — a long-running inference server on a Unix
 * socket (protocol: runtime/serve.h), the program users run under `nestquant
 * launch`.  N worker threads, each with its own session, share one epoll
 * set; every connection is armed EPOLLONESHOT, so one worker at a time owns
 * it and its answers go out in request order.  The main thread only waits
 * for SIGTERM/SIGINT/SIGHUP.  Switching under memory pressure is the
 * library's autoswitch thread (runtime/autoswitch.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cmd_run.h"
#include "cmd_serve.h"
#include "dataset.h"
#include "model.h"
#include "nestquant.h"
#include "nq_error.h"
#include "serve.h"

#define DEFAULT_THREADS		2
#define DEFAULT_MAX_CLIENTS	64
#define READ_CHUNK		4096

static void usage(FILE *out)
{
	char sock[PATH_MAX];

	cli_serve_default_socket(sock, sizeof(sock));
	fprintf(out,
		"usage: nestquant serve MODEL.nq [OPTIONS]\n"
		"\n"
		"Serve classifications on a Unix socket until SIGTERM or SIGINT.  Requests\n"
		"(one per header line, answered in order, one JSON line each):\n"
		"  npy BYTES\\n<.npy bytes>        one input, f32, of the model's input size\n"
		"  data fashion-mnist:test:N\\n    a dataset image (raw pixels 0..255)\n"
		"  status\\n                       level, residency, counters\n"
		"Each answer carries the class, the top-5 and the level the inference ran\n"
		"at.  `nestquant query` is the client.\n"
		"\n"
		"Under memory pressure the model switches levels by itself (autoswitch: the\n"
		"signal source, a hysteresis policy, one JSON line per decision in the\n"
		"policy log); `nestquant launch` passes its configuration in the environment.\n"
		"\n"
		"options:\n"
		"  --socket PATH       listen here (default %s); an existing\n"
		"                      socket nobody listens on is replaced, anything else is\n"
		"                      refused\n"
		"  --group NAME        socket mode 0660 with this group (default 0600, owner only)\n"
		"  --signal S          auto|bpf|psi|kmod|none (default $NQ_SIGNAL, else auto);\n"
		"                      none disables switching altogether\n"
		"  --policy FILE       switching policy (default $NQ_POLICY)\n"
		"  --policy-log FILE   JSON decision log (default $NQ_POLICY_LOG)\n"
		"  --level L           initial level: bits, 'full' or 'part' (default full)\n"
		"  --threads N         worker threads = concurrent inferences (default %d)\n"
		"  --max-clients N     connections served at once (default %d)\n"
		"  --lock-resident     mlock what the part-bit path reads, so that pressure cannot\n"
		"                      fault it: the file's header, parameters and always-resident\n"
		"                      planes, and every mapping of\n"
		"                      the process but the model file (code, libraries, stacks,\n"
		"                      arenas); the residual planes stay reclaimable\n"
		"  --rt-priority N     run the inference threads SCHED_FIFO at priority N (1..98;\n"
		"                      needs CAP_SYS_NICE or an RLIMIT_RTPRIO of N): a neighbour\n"
		"                      at normal priority then never holds up an answer; the\n"
		"                      switching thread runs one priority higher\n"
		"  -q, --quiet         no notes on stderr\n"
		"\n"
		"stdout gets one JSON line when the socket is ready: {\"event\":\"ready\",...}.\n",
		sock, DEFAULT_THREADS, DEFAULT_MAX_CLIENTS);
}

void cli_serve_default_socket(char *buf, size_t len)
{
	const char *xdg = getenv("XDG_RUNTIME_DIR");

	if (geteuid() == 0)
		snprintf(buf, len, "/run/nestquant/serve.sock");
	else if (xdg && *xdg)
		snprintf(buf, len, "%s/nestquant-serve.sock", xdg);
	else
		snprintf(buf, len, "/tmp/nestquant-serve-%u.sock", (unsigned int)geteuid());
}

struct opts {
	const char *model, *socket, *group, *signal, *policy, *policy_log, *level;
	unsigned int threads, max_clients, rt_priority;
	bool lock_resident, quiet;
};

struct conn {
	struct conn *prev, *next;
	int fd;
	uint8_t *in;
	size_t in_len, in_cap;
	char *out;
	size_t out_len, out_off, out_cap;
	bool closing;			/* close once the output is flushed */
};

/* One dataset split, loaded on first use. */
struct split {
	bool tried;
	int err;
	char why[256];
	struct nq_array images, labels;
};

struct server {
	const struct opts *o;
	struct nq_model *m;
	size_t nin, nout, max_payload;
	int lfd, ep, wake_fd;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	bool autoswitch;
	atomic_bool stop;
	atomic_uint_fast64_t seq, answered, errors, per_level[8];
	pthread_mutex_t conns_lock;
	struct conn *conns;
	unsigned int nconns;
	pthread_mutex_t ds_lock;
	struct split splits[2];		/* test, train */
};

struct worker {
	struct server *srv;
	unsigned int index;
	struct nq_session *s;
	float *in, *out, *scratch;
	pthread_t thread;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- output ---------------------------------------------------------------- */

static int put(struct conn *c, const char *s, size_t n)
{
	if (c->out_len + n > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 4096;
		char *p;

		while (cap < c->out_len + n)
			cap *= 2;
		p = realloc(c->out, cap);
		if (!p)
			return -ENOMEM;
		c->out = p;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, s, n);
	c->out_len += n;
	return 0;
}

static int put_error(struct conn *c, const char *msg)
{
	char line[NQ_SERVE_MAX_ANSWER];
	int n = nq_serve_format_error(line, sizeof(line), msg);

	return n > 0 ? put(c, line, (size_t)n) : -ENOSPC;
}

/* 1: all out, 0: the socket is full, <0: the peer is gone. */
static int flush(struct conn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (n <= 0)
			return -EPIPE;
		c->out_off += (size_t)n;
	}
	c->out_off = c->out_len = 0;
	return 1;
}

/* ---- requests -------------------------------------------------------------- */

static struct split *load_split(struct server *srv, const char *name)
{
	struct split *sp = &srv->splits[!strcmp(name, "train")];
	const char *dir = nq_dataset_dir("fashion-mnist");
	const char *file = !strcmp(name, "train") ? "train" : "t10k";
	char path[PATH_MAX];

	pthread_mutex_lock(&srv->ds_lock);
	if (sp->tried)
		goto out;
	sp->tried = true;
	snprintf(path, sizeof(path), "%s/%s-images-idx3-ubyte.gz", dir, file);
	if (access(path, R_OK))
		snprintf(path, sizeof(path), "%s/%s-images-idx3-ubyte", dir, file);
	sp->err = nq_idx_read(path, &sp->images);
	if (!sp->err) {
		snprintf(path, sizeof(path), "%s/%s-labels-idx1-ubyte.gz", dir, file);
		if (access(path, R_OK))
			snprintf(path, sizeof(path), "%s/%s-labels-idx1-ubyte", dir, file);
		sp->err = nq_idx_read(path, &sp->labels);
	}
	if (!sp->err && (sp->images.ndim != 3 || sp->labels.ndim != 1 ||
			 sp->labels.dims[0] != sp->images.dims[0]))
		sp->err = nq_fail(-EBADMSG, "fashion-mnist %s: images and labels do not match", name);
	if (sp->err) {
		snprintf(sp->why, sizeof(sp->why), "%s", nq_last_error());
		nq_array_free(&sp->images);
		nq_array_free(&sp->labels);
	}
out:
	pthread_mutex_unlock(&srv->ds_lock);
	return sp;
}

/* Fill w->in from a data request; -errno with the reason in msg. */
static int data_input(struct worker *w, const struct nq_serve_request *req, int *label,
		      char *msg, size_t len)
{
	struct server *srv = w->srv;
	struct split *sp;
	size_t px;
	const uint8_t *img;

	if (strcmp(req->dataset, "fashion-mnist")) {
		snprintf(msg, len, "data: unknown dataset '%s' (known: fashion-mnist)", req->dataset);
		return -ENOENT;
	}
	if (strcmp(req->split, "test") && strcmp(req->split, "t10k") && strcmp(req->split, "train")) {
		snprintf(msg, len, "data: unknown split '%s' (test, t10k or train)", req->split);
		return -ENOENT;
	}
	sp = load_split(srv, req->split);
	if (sp->err) {
		snprintf(msg, len, "data: %s", sp->why);
		return sp->err;
	}
	px = (size_t)(sp->images.dims[1] * sp->images.dims[2]);
	if (px != srv->nin) {
		snprintf(msg, len, "data: the model takes %zu input values, a fashion-mnist image "
			 "has %zu", srv->nin, px);
		return -EINVAL;
	}
	if (req->index >= sp->images.dims[0]) {
		snprintf(msg, len, "data: index %" PRIu64 " out of range (the %s split has %" PRIu64
			 " images)", req->index, req->split, sp->images.dims[0]);
		return -ERANGE;
	}
	img = (const uint8_t *)sp->images.data + req->index * px;
	for (size_t j = 0; j < px; j++)
		w->in[j] = (float)img[j];
	*label = ((const uint8_t *)sp->labels.data)[req->index];
	return 0;
}

static uint64_t self_majflt(void)
{
	char buf[1024], *p;
	ssize_t n;
	int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	p = strrchr(buf, ')');
	/* After "(comm)": state ppid pgrp session tty tpgid flags minflt cminflt majflt. */
	for (int field = 0; p && field < 10; field++)
		p = strchr(p + 1, ' ');
	return p ? strtoull(p + 1, NULL, 10) : 0;
}

static int status_answer(struct worker *w, struct conn *c)
{
	struct server *srv = w->srv;
	struct nq_residency r;
	struct nq_autoswitch_info ai;
	unsigned int nl = nq_model_level_count(srv->m);
	char line[4096];
	size_t o = 0;

#define ADD(...) do {								\
		int _n = snprintf(line + o, sizeof(line) - o, __VA_ARGS__);	\
		if (_n < 0 || (size_t)_n >= sizeof(line) - o)			\
			return put_error(c, "status: answer too long");	\
		o += (size_t)_n;						\
	} while (0)

	if (nq_model_residency(srv->m, &r))
		return put_error(c, nq_last_error());
	nq_model_autoswitch_info(srv->m, &ai);
	ADD("{\"ok\":true,\"status\":{\"pid\":%d,\"level\":%u,\"bits\":%d,\"levels\":[",
	    (int)getpid(), r.level, nq_model_level_bits(srv->m, r.level));
	for (unsigned int i = 0; i < nl; i++)
		ADD("%s%d", i ? "," : "", nq_model_level_bits(srv->m, i));
	ADD("],\"cached_bytes\":[");
	for (unsigned int i = 0; i < nl && i < 8; i++)
		ADD("%s%" PRIu64, i ? "," : "", r.cached_bytes[i]);
	ADD("],\"mapped_bytes\":[");
	for (unsigned int i = 0; i < nl && i < 8; i++)
		ADD("%s%" PRIu64, i ? "," : "", r.mapped_bytes[i]);
	ADD("],\"answered\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"per_level\":[",
	    (uint64_t)srv->answered, (uint64_t)srv->errors);
	for (unsigned int i = 0; i < nl && i < 8; i++)
		ADD("%s%" PRIu64, i ? "," : "", (uint64_t)srv->per_level[i]);
	ADD("],\"switches\":%" PRIu64 ",\"majflt\":%" PRIu64 ",\"autoswitch\":", r.switches,
	    self_majflt());
	if (ai.active)
		ADD("{\"source\":\"%s\",\"decisions\":%" PRIu64 ",\"downs\":%" PRIu64 ",\"ups\":%"
		    PRIu64 ",\"failures\":%" PRIu64 ",\"bytes_released\":%" PRIu64 "}",
		    ai.source, ai.decisions, ai.downs, ai.ups, ai.failures, ai.bytes_released);
	else
		ADD("null");
	ADD("}}\n");
#undef ADD
	return put(c, line, o);
}

static int handle(struct worker *w, struct conn *c, const struct nq_serve_request *req)
{
	struct server *srv = w->srv;
	struct nq_serve_answer a = { .label = -1 };
	char line[NQ_SERVE_MAX_ANSWER], msg[512];
	uint64_t t0 = now_ns();
	int err, used = 0, n;

	if (req->verb == NQ_SERVE_STATUS)
		return status_answer(w, c);
	if (req->verb == NQ_SERVE_NPY) {
		err = nq_serve_npy_input(req, srv->nin, w->in);
		if (err)
			snprintf(msg, sizeof(msg), "%s", nq_last_error());
	} else {
		err = data_input(w, req, &a.label, msg, sizeof(msg));
	}
	if (!err) {
		err = nq_session_run(w->s, w->in, w->out, &used);
		if (err)
			snprintf(msg, sizeof(msg), "inference: %s", nq_last_error());
	}
	if (err) {
		srv->errors++;
		return put_error(c, msg);
	}
	a.seq = ++srv->seq;
	a.level = used & NQ_LEVEL_MASK;
	a.degraded = used & NQ_LEVEL_DEGRADED;
	a.bits = nq_model_level_bits(srv->m, (unsigned int)a.level);
	nq_serve_classify(w->out, srv->nout, w->scratch, &a);
	a.latency_us = (now_ns() - t0) / 1000;
	n = nq_serve_format_answer(line, sizeof(line), &a);
	if (n < 0)
		return put_error(c, nq_last_error());
	srv->answered++;
	if (a.level < 8)
		srv->per_level[a.level]++;
	return put(c, line, (size_t)n);
}

/* ---- connections ----------------------------------------------------------- */

static void close_conn(struct server *srv, struct conn *c)
{
	pthread_mutex_lock(&srv->conns_lock);
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	srv->nconns--;
	pthread_mutex_unlock(&srv->conns_lock);
	close(c->fd);
	free(c->in);
	free(c->out);
	free(c);
}

static void rearm(struct server *srv, struct conn *c, uint32_t ev)
{
	struct epoll_event e = { .events = ev | EPOLLONESHOT | EPOLLRDHUP, .data.ptr = c };

	if (epoll_ctl(srv->ep, EPOLL_CTL_MOD, c->fd, &e))
		close_conn(srv, c);
}

static int grow_in(struct conn *c, size_t need)
{
	size_t cap = c->in_cap ? c->in_cap : READ_CHUNK;
	uint8_t *p;

	if (need <= c->in_cap)
		return 0;
	while (cap < need)
		cap *= 2;
	p = realloc(c->in, cap);
	if (!p)
		return -ENOMEM;
	c->in = p;
	c->in_cap = cap;
	return 0;
}

/*
 * Serve one connection until it would block: answer every complete request
 * in the buffer (pipelined requests in order), read more when none is.
 */
static void serve_conn(struct worker *w, struct conn *c)
{
	struct server *srv = w->srv;
	struct nq_serve_request req;

	for (;;) {
		int r;

		if (c->out_len) {
			r = flush(c);
			if (r < 0) {
				close_conn(srv, c);
				return;
			}
			if (!r) {
				rearm(srv, c, EPOLLOUT);
				return;
			}
		}
		if (c->closing || atomic_load(&srv->stop)) {
			close_conn(srv, c);
			return;
		}
		r = nq_serve_parse(c->in, c->in_len, srv->max_payload, &req);
		if (r > 0) {
			if (handle(w, c, &req) < 0) {
				close_conn(srv, c);
				return;
			}
			memmove(c->in, c->in + r, c->in_len - (size_t)r);
			c->in_len -= (size_t)r;
			continue;
		}
		if (r < 0) {
			/* A stream we cannot frame cannot be resynchronised: answer, then close. */
			srv->errors++;
			c->closing = true;
			if (put_error(c, nq_last_error()) < 0) {
				close_conn(srv, c);
				return;
			}
			continue;
		}
		/*
		 * Incomplete: make room for the rest of this request (it is
		 * larger than what is buffered, so there is room to read into).
		 */
		if (grow_in(c, req.header_len ? req.header_len + req.payload_len :
				NQ_SERVE_MAX_LINE) < 0) {
			close_conn(srv, c);
			return;
		}
		ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, MSG_DONTWAIT);

		if (n > 0) {
			c->in_len += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			rearm(srv, c, EPOLLIN);
			return;
		}
		close_conn(srv, c);	/* EOF or error: a partial request is dropped */
		return;
	}
}

static void accept_all(struct server *srv)
{
	for (;;) {
		int fd = accept4(srv->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct epoll_event e = { .events = EPOLLIN | EPOLLONESHOT | EPOLLRDHUP };
		struct conn *c;

		if (fd < 0)
			return;
		pthread_mutex_lock(&srv->conns_lock);
		if (srv->nconns >= srv->o->max_clients) {
			char line[NQ_SERVE_MAX_ANSWER];
			int n;

			pthread_mutex_unlock(&srv->conns_lock);
			n = nq_serve_format_error(line, sizeof(line),
						  "server busy: too many connections (--max-clients)");
			if (n > 0 && send(fd, line, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
				/* The refusal is best effort. */
			}
			close(fd);
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			pthread_mutex_unlock(&srv->conns_lock);
			close(fd);
			continue;
		}
		c->fd = fd;
		c->next = srv->conns;
		if (c->next)
			c->next->prev = c;
		srv->conns = c;
		srv->nconns++;
		pthread_mutex_unlock(&srv->conns_lock);
		e.data.ptr = c;
		if (epoll_ctl(srv->ep, EPOLL_CTL_ADD, fd, &e))
			close_conn(srv, c);
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct server *srv = w->srv;
	char name[16];

	snprintf(name, sizeof(name), "nq-serve-%u", w->index);
	pthread_setname_np(pthread_self(), name);

	while (!atomic_load(&srv->stop)) {
		struct epoll_event e;
		int n = epoll_wait(srv->ep, &e, 1, -1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (e.data.ptr == &srv->wake_fd)
			break;		/* never read: stays readable for every worker */
		if (e.data.ptr == &srv->lfd) {
			accept_all(srv);
			continue;
		}
		serve_conn(w, e.data.ptr);
	}
	return NULL;
}

/* ---- the socket ------------------------------------------------------------ */

static int make_socket(struct server *srv)
{
	const struct opts *o = srv->o;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	mode_t old;
	gid_t gid = (gid_t)-1;
	int fd;

	if (strlen(srv->path) >= sizeof(sa.sun_path)) {
		cli_error("serve", "--socket %s: longer than %zu bytes", srv->path,
			  sizeof(sa.sun_path) - 1);
		return -1;
	}
	memcpy(sa.sun_path, srv->path, strlen(srv->path) + 1);
	if (o->group) {
		struct group *g = getgrnam(o->group);

		if (!g) {
			cli_error("serve", "--group %s: no such group", o->group);
			return -1;
		}
		gid = g->gr_gid;
	}
	if (!lstat(srv->path, &st)) {
		if (!S_ISSOCK(st.st_mode)) {
			cli_error("serve", "%s exists and is not a socket: refusing to replace it",
				  srv->path);
			return -1;
		}
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd >= 0 && !connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
			close(fd);
			cli_error("serve", "%s: another server is listening there", srv->path);
			return -1;
		}
		if (fd >= 0)
			close(fd);
		unlink(srv->path);	/* stale: nobody listens */
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		cli_error("serve", "socket: %s", strerror(errno));
		return -1;
	}
	/* The socket must never exist with a wider mode than asked for, not even briefly. */
	old = umask(0177);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		umask(old);
		cli_error("serve", "bind %s: %s", srv->path, strerror(errno));
		close(fd);
		return -1;
	}
	umask(old);
	if (o->group && (chown(srv->path, (uid_t)-1, gid) || chmod(srv->path, 0660))) {
		cli_error("serve", "%s: group %s, mode 0660: %s", srv->path, o->group, strerror(errno));
		goto err_unlink;
	}
	if (listen(fd, 128)) {
		cli_error("serve", "listen %s: %s", srv->path, strerror(errno));
		goto err_unlink;
	}
	srv->lfd = fd;
	return 0;
err_unlink:
	unlink(srv->path);
	close(fd);
	return -1;
}

/* ---- main ------------------------------------------------------------------ */

static int parse(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 'S' },
		{ "group", required_argument, NULL, 'g' },
		{ "signal", required_argument, NULL, 's' },
		{ "policy", required_argument, NULL, 'p' },
		{ "policy-log", required_argument, NULL, 'l' },
		{ "level", required_argument, NULL, 'L' },
		{ "threads", required_argument, NULL, 't' },
		{ "max-clients", required_argument, NULL, 'c' },
		{ "lock-resident", no_argument, NULL, 'k' },
		{ "rt-priority", required_argument, NULL, 'r' },
		{ "quiet", no_argument, NULL, 'q' },
		{ NULL, 0, NULL, 0 },
	};
	char *end;
	unsigned long v;
	int ch;

	o->threads = DEFAULT_THREADS;
	o->max_clients = DEFAULT_MAX_CLIENTS;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "q", longopts, NULL)) != -1) {
		switch (ch) {
		case 'S': o->socket = optarg; break;
		case 'g': o->group = optarg; break;
		case 's': o->signal = optarg; break;
		case 'p': o->policy = optarg; break;
		case 'l': o->policy_log = optarg; break;
		case 'L': o->level = optarg; break;
		case 'k': o->lock_resident = true; break;
		case 'q': o->quiet = true; break;
		case 'r':
			/* 99 is left to the switching thread, one above. */
			v = strtoul(optarg, &end, 10);
			if (*end || !v || v > 98) {
				cli_error("serve", "--rt-priority %s: expected 1..98", optarg);
				return -1;
			}
			o->rt_priority = (unsigned int)v;
			break;
		case 't':
		case 'c':
			v = strtoul(optarg, &end, 10);
			if (*end || !v || v > 1024) {
				cli_error("serve", "--%s %s: expected 1..1024",
					  ch == 't' ? "threads" : "max-clients", optarg);
				return -1;
			}
			if (ch == 't')
				o->threads = (unsigned int)v;
			else
				o->max_clients = (unsigned int)v;
			break;
		default:
			usage(stderr);
			return -1;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return -1;
	}
	o->model = argv[optind];
	if (o->signal && strcmp(o->signal, "auto") && strcmp(o->signal, "bpf") &&
	    strcmp(o->signal, "psi") && strcmp(o->signal, "kmod") && strcmp(o->signal, "none")) {
		cli_error("serve", "--signal %s: expected auto, bpf, psi, kmod or none", o->signal);
		return -1;
	}
	return 0;
}

static int start_autoswitch(struct server *srv)
{
	const struct opts *o = srv->o;
	const char *env = getenv("NQ_SIGNAL");
	struct nq_autoswitch_opts ao = {
		.signal = o->signal,
		.policy_file = o->policy,
		.log_path = o->policy_log,
		.model_path = o->model,
	};
	struct nq_autoswitch_info ai;

	if ((o->signal && !strcmp(o->signal, "none")) ||
	    (!o->signal && env && !strcmp(env, "none"))) {
		if (!o->quiet)
			fprintf(stderr, "nestquant serve: switching disabled (--signal none)\n");
		return 0;
	}
	if (nq_model_level_count(srv->m) < 2) {
		if (!o->quiet)
			fprintf(stderr, "nestquant serve: one level only: nothing to switch\n");
		return 0;
	}
	if (nq_model_enable_autoswitch(srv->m, &ao)) {
		cli_error("serve", "%s", nq_last_error());
		return -1;
	}
	srv->autoswitch = true;
	nq_model_autoswitch_info(srv->m, &ai);
	if (!o->quiet)
		fprintf(stderr, "nestquant serve: switching on pressure, signal source %s — %s\n",
			ai.source, ai.selection);
	return 0;
}

/*
 * The model is read in place from its mapped file.  If the file is truncated
 * while we serve, the next read of a vanished page raises SIGBUS inside a
 * kernel loop, where nothing can be unwound.  We choose to exit with a clear
 * message (and remove the socket) rather than die silently: answers computed
 * from a file that changed under us cannot be trusted anyway.  A file
 * *replaced* by rename (convert -o, package managers) keeps the old inode
 * mapped and never gets here.  Only async-signal-safe calls below.
 */
#define SERVE_EXIT_MODEL_CHANGED 3

static const uint8_t *bus_base;
static size_t bus_len;
static char bus_msg[PATH_MAX + 200];
static size_t bus_msg_len;
static char bus_sock[sizeof(((struct sockaddr_un *)0)->sun_path)];

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	const uint8_t *a = si->si_addr;
	struct sigaction dfl = { .sa_handler = SIG_DFL };

	(void)uc;
	if (a >= bus_base && a < bus_base + bus_len) {
		if (write(STDERR_FILENO, bus_msg, bus_msg_len) < 0)
			bus_msg_len = 0;
		unlink(bus_sock);
		_exit(SERVE_EXIT_MODEL_CHANGED);
	}
	/* Not our mapping: the default action on return (the access faults again). */
	sigaction(sig, &dfl, NULL);
}

static void catch_model_sigbus(const struct nq_model *m, const char *model, const char *sock)
{
	struct sigaction sa = { .sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO };

	bus_base = nq_file_data(m->file);
	bus_len = nq_file_size(m->file);
	snprintf(bus_sock, sizeof(bus_sock), "%s", sock);
	bus_msg_len = (size_t)snprintf(bus_msg, sizeof(bus_msg),
		"nestquant serve: %s was truncated or overwritten in place while being served "
		"(a mapped weight page vanished: SIGBUS); exiting, restart it with an intact file\n",
		model);
	if (bus_msg_len >= sizeof(bus_msg))
		bus_msg_len = sizeof(bus_msg) - 1;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);
}

/*
 * --lock-resident, once the sessions and threads exist: lock every readable
 * mapping except the model file's, whose always-resident region the
 * library locked already (NQ_OPEN_LOCK_RESIDENT) and whose residual planes
 * must stay droppable.  MLOCK_ONFAULT: the pages in use now and whatever
 * faults in later, never populating a whole mapping (8 MiB thread stacks,
 * malloc arenas: populating them OOM-killed the server in a 41 MiB
 * cgroup).  Not mlockall(MCL_CURRENT): that would also fault in and map
 * the residual planes of a level not in force.  The raw syscall, because
 * sanitizer runtimes turn mlock() into a no-op.  What this keeps out of
 * reach of the cgroup's reclaim is mainly the code of the binary and its
 * libraries (anonymous memory cannot be evicted without swap anyway).
 */
static int lock_mappings(const struct nq_model *m)
{
	uintptr_t mb = (uintptr_t)nq_file_data(m->file), me = mb + nq_file_size(m->file);
	uint64_t locked = 0;
	char line[512];
	FILE *f = fopen("/proc/self/maps", "re");
	int err = 0;

	if (!f) {
		cli_error("serve", "--lock-resident: /proc/self/maps: %s", strerror(errno));
		return -1;
	}
	while (!err && fgets(line, sizeof(line), f)) {
		unsigned long b, e;
		char perm[5];

		if (sscanf(line, "%lx-%lx %4s", &b, &e, perm) != 3 || perm[0] != 'r' ||
		    strstr(line, "[vvar") || strstr(line, "[vsyscall]") || (b < me && e > mb))
			continue;
		if (syscall(SYS_mlock2, (void *)b, (size_t)(e - b), MLOCK_ONFAULT))
			err = -errno;
		else
			locked += e - b;
	}
	fclose(f);
	if (err) {
		cli_error("serve", "--lock-resident: mlock of the process's mappings: %s "
			  "(%" PRIu64 " bytes locked so far; raise RLIMIT_MEMLOCK with `ulimit -l` "
			  "or LimitMEMLOCK=, or grant CAP_IPC_LOCK)", strerror(-err), locked);
		return -1;
	}
	return 0;
}

/*
 * --rt-priority: the calling (main) thread becomes SCHED_FIFO, so that every
 * thread created after it inherits the policy: the serve workers and their
 * sessions' pool threads; autoswitch, started after it too, puts its own
 * thread one priority above.  The main thread goes back to normal once they
 * exist (it only waits for signals).
 */
static int set_realtime(unsigned int prio)
{
	struct sched_param sp = { .sched_priority = (int)prio };
	int err = pthread_setschedparam(pthread_self(), prio ? SCHED_FIFO : SCHED_OTHER, &sp);

	if (err && prio) {
		struct rlimit rl = { 0 };

		getrlimit(RLIMIT_RTPRIO, &rl);
		cli_error("serve", "--rt-priority %u: %s: needs CAP_SYS_NICE or an RLIMIT_RTPRIO "
			  "of at least %u (this process has %llu; e.g. LimitRTPRIO= in a systemd "
			  "unit)", prio, strerror(err), prio, (unsigned long long)rl.rlim_cur);
		return -1;
	}
	return err ? -1 : 0;
}

static int run(int argc, char **argv)
{
	struct opts o = { 0 };
	struct server srv = { .o = &o, .lfd = -1, .ep = -1, .wake_fd = -1 };
	struct nq_model_opts mo = { .level = -1, .flags = NQ_OPEN_NO_AUTOSWITCH };
	struct worker *w = NULL;
	struct epoll_event e = { .events = EPOLLIN };
	struct signalfd_siginfo si;
	struct sigaction ign = { .sa_handler = SIG_IGN };
	sigset_t stopset;
	unsigned int started = 0;
	int sfd = -1, rc = 1;

	if (parse(argc, argv, &o))
		return 2;
	if (o.socket)
		snprintf(srv.path, sizeof(srv.path), "%s", o.socket);
	else
		cli_serve_default_socket(srv.path, sizeof(srv.path));
	if (o.lock_resident)
		mo.flags |= NQ_OPEN_LOCK_RESIDENT;
	pthread_mutex_init(&srv.conns_lock, NULL);
	pthread_mutex_init(&srv.ds_lock, NULL);

	/* Every thread (workers, autoswitch) starts with the stop signals blocked. */
	sigemptyset(&stopset);
	sigaddset(&stopset, SIGTERM);
	sigaddset(&stopset, SIGINT);
	sigaddset(&stopset, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &stopset, NULL);
	sigemptyset(&ign.sa_mask);
	sigaction(SIGPIPE, &ign, NULL);
	sfd = signalfd(-1, &stopset, SFD_CLOEXEC);

	if (nq_model_open(o.model, &mo, &srv.m)) {
		cli_error("serve", "%s", nq_last_error());
		goto out;
	}
	catch_model_sigbus(srv.m, o.model, srv.path);
	if (o.level) {
		unsigned int level;

		if (cli_parse_level(srv.m, o.level, &level) < 0) {
			cli_error("serve", "--level %s: the model has no such level", o.level);
			goto out;
		}
		if (nq_model_set_level(srv.m, level)) {
			cli_error("serve", "%s", nq_last_error());
			goto out;
		}
	}
	srv.nin = nq_model_input_count(srv.m);
	srv.nout = nq_model_output_count(srv.m);
	/* An f32 input plus a generous .npy header; the protocol caps it anyway. */
	srv.max_payload = srv.nin * sizeof(float) + 4096;
	if (o.rt_priority && set_realtime(o.rt_priority))
		goto out;
	if (start_autoswitch(&srv))
		goto out;

	if (!strcmp(srv.path, "/run/nestquant/serve.sock"))
		mkdir("/run/nestquant", 0755);
	if (make_socket(&srv))
		goto out;
	srv.ep = epoll_create1(EPOLL_CLOEXEC);
	srv.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (srv.ep < 0 || srv.wake_fd < 0 || sfd < 0) {
		cli_error("serve", "%s", strerror(errno));
		goto out_unlink;
	}
	e.data.ptr = &srv.lfd;
	epoll_ctl(srv.ep, EPOLL_CTL_ADD, srv.lfd, &e);
	e.data.ptr = &srv.wake_fd;
	epoll_ctl(srv.ep, EPOLL_CTL_ADD, srv.wake_fd, &e);

	w = calloc(o.threads, sizeof(*w));
	if (!w)
		goto out_unlink;
	for (started = 0; started < o.threads; started++) {
		struct worker *wk = &w[started];

		wk->srv = &srv;
		wk->index = started;
		wk->in = malloc(srv.nin * sizeof(float));
		wk->out = malloc(srv.nout * sizeof(float));
		wk->scratch = malloc(srv.nout * sizeof(float));
		if (!wk->in || !wk->out || !wk->scratch || nq_session_create(srv.m, &wk->s)) {
			cli_error("serve", "session %u: %s", started, nq_last_error());
			break;
		}
		if (pthread_create(&wk->thread, NULL, worker_main, wk)) {
			nq_session_destroy(wk->s);
			break;
		}
	}
	if (o.rt_priority)
		set_realtime(0);
	if (started < o.threads)
		goto out_stop;
	if (o.lock_resident && lock_mappings(srv.m))
		goto out_stop;

	printf("{\"event\":\"ready\",\"socket\":\"%s\",\"pid\":%d,\"threads\":%u,\"level\":%u,"
	       "\"levels\":%u,\"autoswitch\":%s,\"rt_priority\":%u}\n", srv.path, (int)getpid(),
	       o.threads, nq_model_level(srv.m), nq_model_level_count(srv.m),
	       srv.autoswitch ? "true" : "false", o.rt_priority);
	fflush(stdout);
	if (!o.quiet)
		fprintf(stderr, "nestquant serve: %s on %s, %u threads\n", o.model, srv.path,
			o.threads);

	while (read(sfd, &si, sizeof(si)) < 0 && errno == EINTR)
		;
	if (!o.quiet)
		fprintf(stderr, "nestquant serve: signal %u: stopping after %" PRIu64 " answers\n",
			si.ssi_signo, (uint64_t)srv.answered);
	rc = 0;

out_stop:
	atomic_store(&srv.stop, true);
	if (srv.wake_fd >= 0) {
		uint64_t one = 1;

		if (write(srv.wake_fd, &one, sizeof(one)) < 0)
			rc = 1;
	}
	for (unsigned int i = 0; i < started; i++) {
		pthread_join(w[i].thread, NULL);
		nq_session_destroy(w[i].s);
	}
	while (srv.conns)
		close_conn(&srv, srv.conns);
out_unlink:
	if (srv.lfd >= 0) {
		unlink(srv.path);
		close(srv.lfd);
	}
out:
	for (unsigned int i = 0; w && i < o.threads; i++) {
		free(w[i].in);
		free(w[i].out);
		free(w[i].scratch);
	}
	free(w);
	nq_model_close(srv.m);	/* stops autoswitch first */
	for (int i = 0; i < 2; i++) {
		nq_array_free(&srv.splits[i].images);
		nq_array_free(&srv.splits[i].labels);
	}
	if (srv.ep >= 0)
		close(srv.ep);
	if (srv.wake_fd >= 0)
		close(srv.wake_fd);
	if (sfd >= 0)
		close(sfd);
	return rc;
}

const struct nq_verb nq_verb_serve = {
	.name = "serve",
	.summary = "serve classifications on a Unix socket, switching levels under pressure",
	.run = run,
	.usage = usage,
};
