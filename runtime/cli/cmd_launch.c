// SPDX-License-Identifier: MIT
/*
 * nestquant launch — run a command in a fresh memory cgroup with limits,
 * registered with the pressure monitor, with the runtime's switching
 * configuration in its environment; remove the cgroup when it exits.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cgroup.h"
#include "cli.h"
#include "monitor.h"
#include "nq_error.h"
#include "policy.h"

/* Exit codes of the launcher itself (the env(1) / systemd-run convention). */
#define EXIT_LAUNCH	125
#define EXIT_NOEXEC	126
#define EXIT_NOTFOUND	127

static void usage(FILE *out)
{
	fprintf(out,
		"usage: nestquant launch --memory-max BYTES [OPTIONS] -- CMD [ARGS...]\n"
		"\n"
		"Run CMD in a new memory cgroup limited to BYTES, so a program linked with\n"
		"libnestquant switches precision levels under that limit.  The cgroup is made\n"
		"in the hierarchy that has the memory controller (cgroup v2, else v1), below\n"
		"the launcher's own memory cgroup, registered with the BPF pressure monitor\n"
		"when it is loaded, and removed when CMD exits (processes CMD left behind in\n"
		"it are killed).  If someone else removes the cgroup while CMD runs (after\n"
		"moving CMD out: a populated cgroup cannot be removed), the launcher says so,\n"
		"unregisters it from the monitor and keeps waiting for CMD.\n"
		"Exits with CMD's status (128+N when killed by signal N);\n"
		"125 when launching failed, 126/127 when CMD cannot be run / is not found.\n"
		"\n"
		"options:\n"
		"  --memory-max BYTES     hard limit (memory.max / memory.limit_in_bytes);\n"
		"                         BYTES takes K, M, G suffixes (1024-based)\n"
		"  --memory-high BYTES    v2: memory.high (throttle + reclaim above it); v1 has\n"
		"                         no equivalent: memory.soft_limit_in_bytes is set\n"
		"  --policy FILE          switching policy (key=value; see below) -> $NQ_POLICY\n"
		"  --policy-log FILE      JSON line per switching decision -> $NQ_POLICY_LOG\n"
		"  --signal S             bpf|kmod|psi|auto|none -> $NQ_SIGNAL (default auto:\n"
		"                         kmod > bpf > psi, the choice is logged with reasons)\n"
		"  --name NAME            cgroup name (default nestquant-PID)\n"
		"  --parent DIR           create the cgroup below DIR instead\n"
		"  --pin-dir DIR          BPF monitor pins (default $NQ_MONITOR_PIN_DIR, else %s)\n"
		"  --no-monitor           do not register the cgroup with the monitor\n"
		"  -q, --quiet            no notes on stderr, only errors\n"
		"\n"
		"CMD's environment: NQ_CGROUP (the cgroup dir), NQ_CGROUP_VERSION, NQ_MEMORY_MAX,\n"
		"NQ_MEMORY_HIGH, NQ_SIGNAL, NQ_POLICY, NQ_POLICY_LOG, NQ_PSI_PATH (a cgroup2\n"
		"memory.pressure for PSI when the memory controller is on v1), NQ_MONITOR_PIN_DIR,\n"
		"NQ_LAUNCH_NAME.\n"
		"\n"
		"Policy file keys: high=90%% low=75%% hold=2s min_interval=200ms step=one|budget\n"
		"global=0|1 sample=100ms psi_some=150ms psi_full=0 psi_window=1s signal=auto\n"
		"\n"
		"SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 sent to the launcher are\n"
		"forwarded to CMD (terminal-generated ones reach CMD directly).\n",
		NQ_MONITOR_PIN_DIR);
}

struct opts {
	uint64_t max, high;
	const char *policy, *policy_log, *signal, *name, *parent, *pin_dir;
	bool no_monitor, quiet;
	char **cmd;
};

static int parse(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
		{ "memory-max", required_argument, NULL, 'M' },
		{ "memory-high", required_argument, NULL, 'H' },
		{ "policy", required_argument, NULL, 'p' },
		{ "policy-log", required_argument, NULL, 'l' },
		{ "signal", required_argument, NULL, 's' },
		{ "name", required_argument, NULL, 'n' },
		{ "parent", required_argument, NULL, 'P' },
		{ "pin-dir", required_argument, NULL, 'D' },
		{ "no-monitor", no_argument, NULL, 'N' },
		{ "quiet", no_argument, NULL, 'q' },
		{ NULL, 0, NULL, 0 },
	};
	enum nq_signal_kind kind;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "+q", longopts, NULL)) != -1) {
		switch (c) {
		case 'M':
		case 'H':
			if (nq_parse_bytes(optarg, c == 'M' ? &o->max : &o->high)) {
				cli_error("launch", "--memory-%s: %s", c == 'M' ? "max" : "high",
					  nq_last_error());
				return -1;
			}
			break;
		case 'p': o->policy = optarg; break;
		case 'l': o->policy_log = optarg; break;
		case 's':
			if (nq_signal_parse_kind(optarg, &kind)) {
				cli_error("launch", "--signal: %s", nq_last_error());
				return -1;
			}
			o->signal = optarg;
			break;
		case 'n': o->name = optarg; break;
		case 'P': o->parent = optarg; break;
		case 'D': o->pin_dir = optarg; break;
		case 'N': o->no_monitor = true; break;
		case 'q': o->quiet = true; break;
		default:
			usage(stderr);
			return -1;
		}
	}
	if (optind >= argc) {
		cli_error("launch", "no command given (nestquant launch --memory-max BYTES -- CMD)");
		return -1;
	}
	if (!o->max) {
		cli_error("launch", "--memory-max is required and must be above 0");
		return -1;
	}
	if (o->high && o->high > o->max) {
		cli_error("launch", "--memory-high (%" PRIu64 ") is above --memory-max (%" PRIu64 ")",
			  o->high, o->max);
		return -1;
	}
	o->cmd = argv + optind;
	return 0;
}

static void human(char *buf, size_t len, uint64_t b)
{
	if (b >= (1ull << 30) && !(b % (1ull << 20)))
		snprintf(buf, len, "%.2f GiB", (double)b / (1ull << 30));
	else if (b >= (1ull << 20))
		snprintf(buf, len, "%.1f MiB", (double)b / (1ull << 20));
	else
		snprintf(buf, len, "%" PRIu64 " bytes", b);
}

/* ---- signals ----------------------------------------------------------------- */

static volatile sig_atomic_t child_pid;
static const int forwarded[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 };
#define NFORWARDED	(sizeof(forwarded) / sizeof(forwarded[0]))

/*
 * A terminal's ^C reaches the whole foreground process group, CMD
 * included: only signals sent to us by a process (kill, systemd) are
 * passed on, or CMD would get each ^C twice.
 */
static void forward(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	if (child_pid > 0 && si->si_code != SI_KERNEL)
		kill(child_pid, sig);
}

static void set_handlers(bool on)
{
	struct sigaction sa = { 0 };

	if (on) {
		sa.sa_sigaction = forward;
		sa.sa_flags = SA_SIGINFO | SA_RESTART;
	} else {
		sa.sa_handler = SIG_DFL;
	}
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < NFORWARDED; i++)
		sigaction(forwarded[i], &sa, NULL);
}

/* ---- the child ----------------------------------------------------------------- */

struct child_err {
	int err;		/* positive errno */
	int code;		/* exit code the launcher should use */
	char msg[480];
};

static void child_fail(int fd, int err, int code, const char *msg)
{
	struct child_err ce = { .err = err, .code = code };

	snprintf(ce.msg, sizeof(ce.msg), "%s", msg);
	if (write(fd, &ce, sizeof(ce)) < 0)
		_exit(code);
	_exit(code);
}

/* In the child: join the cgroup before exec, so CMD never runs outside it. */
static void run_child(const struct nq_cgroup *cg, char **cmd, int errfd, const sigset_t *mask)
{
	char msg[480];

	set_handlers(false);
	sigprocmask(SIG_SETMASK, mask, NULL);
	if (nq_cgroup_attach(cg, 0))
		child_fail(errfd, EPERM, EXIT_LAUNCH, nq_last_error());
	execvp(cmd[0], cmd);
	snprintf(msg, sizeof(msg), "cannot run '%s': %s", cmd[0], strerror(errno));
	child_fail(errfd, errno, errno == ENOENT ? EXIT_NOTFOUND : EXIT_NOEXEC, msg);
}

/* ---- the launcher ----------------------------------------------------------------- */

static void put_env(const char *name, const char *value)
{
	if (value)
		setenv(name, value, 1);
}

static void put_env_u64(const char *name, uint64_t v)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%" PRIu64, v);
	setenv(name, buf, 1);
}

/* Absolute path for the environment (CMD may chdir); the file may not exist yet. */
static const char *absolute(const char *path, char *buf, size_t len)
{
	char cwd[PATH_MAX];

	if (!path || path[0] == '/')
		return path;
	if (!getcwd(cwd, sizeof(cwd)) || snprintf(buf, len, "%s/%s", cwd, path) >= (int)len)
		return path;
	return buf;
}

static int report_exit(const struct opts *o, const struct nq_cgroup *cg, int status,
		       uint64_t oom_before)
{
	uint64_t kills = 0;
	char lim[32];
	bool oom;

	oom = !nq_cgroup_oom_kills(cg->dir, &kills) && kills > oom_before;
	human(lim, sizeof(lim), o->max);
	if (WIFSIGNALED(status)) {
		int sig = WTERMSIG(status);

		fprintf(stderr, "nestquant launch: %s was killed by signal %d (%s)%s", o->cmd[0],
			sig, sigabbrev_np(sig) ? sigabbrev_np(sig) : "?", WCOREDUMP(status) ?
			", core dumped" : "");
		if (oom)
			fprintf(stderr, ": the memory cgroup's OOM killer (oom_kill %" PRIu64
				", limit %s)", kills - oom_before, lim);
		fputc('\n', stderr);
		return 128 + sig;
	}
	if (oom && !o->quiet)
		fprintf(stderr, "nestquant launch: note: the cgroup's OOM killer killed %" PRIu64
			" process%s of %s (limit %s)\n", kills - oom_before,
			kills - oom_before == 1 ? "" : "es", o->cmd[0], lim);
	if (!o->quiet && WEXITSTATUS(status))
		fprintf(stderr, "nestquant launch: %s exited with status %d\n", o->cmd[0],
			WEXITSTATUS(status));
	return WEXITSTATUS(status);
}

/* Drop the cgroup's monitor entry, by id: the directory may be gone already. */
static void unwatch(const struct opts *o, const char *pin, uint64_t id, bool *watched)
{
	if (*watched && nq_monitor_forget_cgroup(pin, id) && !o->quiet)
		fprintf(stderr, "nestquant launch: unregistering from the monitor: %s\n",
			nq_last_error());
	*watched = false;
}

/* The cgroup is gone: say so once and drop its monitor entry. */
static void cgroup_removed(const struct opts *o, const struct nq_cgroup *cg, const char *pin,
			   uint64_t id, bool *watched, bool running)
{
	if (!o->quiet)
		fprintf(stderr, "nestquant launch: memory cgroup %s was removed by someone else "
			"%s%s\n", cg->dir, running ? "while CMD runs: CMD now runs without its "
			"memory limit" : "before CMD exited: nothing left to remove",
			*watched ? "; unregistered from the BPF monitor" : "");
	unwatch(o, pin, id, watched);
}

/*
 * Wait for CMD, looking every CHECK_MS whether its cgroup still exists (a
 * pidfd tells when CMD exits; without one, plain waitpid).
 */
#define CHECK_MS	500

static void wait_child(const struct opts *o, const struct nq_cgroup *cg, const char *pin,
		       uint64_t id, bool *watched, bool *gone, pid_t pid, int *status)
{
	int pfd = (int)syscall(SYS_pidfd_open, pid, 0);

	while (pfd >= 0) {
		struct pollfd p = { .fd = pfd, .events = POLLIN };
		int n = poll(&p, 1, CHECK_MS);

		if (n > 0 || (n < 0 && errno != EINTR))
			break;
		if (!n && !*gone && nq_cgroup_still(cg->dir, id)) {
			*gone = true;
			cgroup_removed(o, cg, pin, id, watched, true);
		}
	}
	if (pfd >= 0)
		close(pfd);
	while (waitpid(pid, status, 0) < 0 && errno == EINTR)
		;
}

static int launch(const struct opts *o)
{
	char name[64], pathbuf[2][PATH_MAX], lim[32], psi[PATH_MAX + 32];
	const char *env_pin = getenv("NQ_MONITOR_PIN_DIR");
	const char *pin = o->pin_dir ? o->pin_dir : env_pin && *env_pin ? env_pin : NQ_MONITOR_PIN_DIR;
	struct nq_policy_cfg cfg;
	struct nq_cgroup cg;
	sigset_t all, old;
	bool approx = false, watched = false, gone = false;
	uint64_t oom_before = 0, id = 0;
	int err, pipefd[2], status = 0, rc = EXIT_LAUNCH, left;
	pid_t pid;

	/* Catch a bad policy file here, not inside CMD. */
	nq_policy_cfg_default(&cfg);
	if (o->policy && nq_policy_cfg_load(&cfg, o->policy)) {
		cli_error("launch", "%s", nq_last_error());
		return EXIT_LAUNCH;
	}
	/* An explicit source that cannot work would only fail later, inside CMD. */
	if (o->signal && !strcmp(o->signal, "bpf") && access(pin, F_OK)) {
		cli_error("launch", "--signal bpf: the BPF monitor is not loaded (%s missing; run "
			  "`nestquant monitor load`)", pin);
		return EXIT_LAUNCH;
	}
	if (o->name)
		snprintf(name, sizeof(name), "%s", o->name);
	else
		snprintf(name, sizeof(name), "nestquant-%d", (int)getpid());

	err = nq_cgroup_create(&cg, o->parent, name);
	if (err) {
		cli_error("launch", "%s", nq_last_error());
		return EXIT_LAUNCH;
	}
	err = nq_cgroup_set_max(&cg, o->max);
	if (!err && o->high)
		err = nq_cgroup_set_high(&cg, o->high, &approx);
	if (err) {
		cli_error("launch", "%s", nq_last_error());
		goto out_remove;
	}
	nq_cgroup_oom_kills(cg.dir, &oom_before);
	if (nq_cgroup_id(cg.dir, &id))
		id = 0;
	human(lim, sizeof(lim), o->max);
	if (!o->quiet) {
		fprintf(stderr, "nestquant launch: memory cgroup %s (cgroup v%d), limit %s\n",
			cg.dir, cg.version, lim);
		if (approx) {
			char high[32];

			human(high, sizeof(high), o->high);
			fprintf(stderr, "nestquant launch: note: cgroup v1 has no memory.high; set "
				"memory.soft_limit_in_bytes = %s instead (reclaimed toward it only "
				"under machine-wide pressure, never throttled)\n", high);
		}
	}

	if (!o->no_monitor) {
		if (access(pin, F_OK)) {
			if (!o->quiet)
				fprintf(stderr, "nestquant launch: BPF monitor not loaded (%s "
					"missing; run `nestquant monitor load`): cgroup not "
					"registered\n", pin);
		} else if (nq_monitor_persist_cgroup(pin, cg.dir, NQ_MONITOR_DEFAULT_INTERVAL_NS,
						     true)) {
			if (!o->quiet)
				fprintf(stderr, "nestquant launch: not registered with the BPF "
					"monitor: %s\n", nq_last_error());
		} else {
			watched = true;
			if (!o->quiet)
				fprintf(stderr, "nestquant launch: registered with the BPF monitor "
					"(%s)\n", pin);
		}
	}

	put_env("NQ_CGROUP", cg.dir);
	put_env_u64("NQ_CGROUP_VERSION", cg.version);
	put_env_u64("NQ_MEMORY_MAX", o->max);
	if (o->high)
		put_env_u64("NQ_MEMORY_HIGH", o->high);
	put_env("NQ_SIGNAL", o->signal);
	put_env("NQ_POLICY", absolute(o->policy, pathbuf[0], sizeof(pathbuf[0])));
	put_env("NQ_POLICY_LOG", absolute(o->policy_log, pathbuf[1], sizeof(pathbuf[1])));
	put_env("NQ_MONITOR_PIN_DIR", o->pin_dir);
	put_env("NQ_LAUNCH_NAME", name);
	if (cg.psi_dir[0]) {
		snprintf(psi, sizeof(psi), "%s/memory.pressure", cg.psi_dir);
		if (!access(psi, F_OK))
			put_env("NQ_PSI_PATH", psi);
	}

	if (pipe2(pipefd, O_CLOEXEC)) {
		cli_error("launch", "pipe: %s", strerror(errno));
		goto out_unwatch;
	}
	/* Signals wait until the child's pid is known to the handler. */
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &old);
	set_handlers(true);
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		close(pipefd[0]);
		run_child(&cg, o->cmd, pipefd[1], &old);
	}
	if (pid < 0) {
		err = errno;
		set_handlers(false);
		sigprocmask(SIG_SETMASK, &old, NULL);
		close(pipefd[0]);
		close(pipefd[1]);
		cli_error("launch", "fork: %s", strerror(err));
		goto out_unwatch;
	}
	child_pid = pid;
	sigprocmask(SIG_SETMASK, &old, NULL);
	close(pipefd[1]);

	{
		struct child_err ce;
		ssize_t n;

		do
			n = read(pipefd[0], &ce, sizeof(ce));
		while (n < 0 && errno == EINTR);
		close(pipefd[0]);
		wait_child(o, &cg, pin, id, &watched, &gone, pid, &status);
		child_pid = 0;
		if (n == (ssize_t)sizeof(ce)) {
			cli_error("launch", "%s", ce.msg);
			rc = ce.code;
		} else {
			rc = report_exit(o, &cg, status, oom_before);
		}
	}
	set_handlers(false);

out_unwatch:
	if (!gone && nq_cgroup_still(cg.dir, id)) {
		gone = true;
		cgroup_removed(o, &cg, pin, id, &watched, false);
	}
	unwatch(o, pin, id, &watched);
out_remove:
	left = gone ? 0 : nq_cgroup_nprocs(cg.dir);
	nq_clear_error();
	if (left > 0 && !o->quiet)
		fprintf(stderr, "nestquant launch: killing %d process%s that %s left in the cgroup\n",
			left, left == 1 ? "" : "es", o->cmd[0]);
	if (nq_cgroup_remove(&cg, true, 5000)) {
		cli_error("launch", "%s", nq_last_error());
		if (rc == 0)
			rc = EXIT_LAUNCH;
	}
	return rc;
}

static int run(int argc, char **argv)
{
	struct opts o = { 0 };

	if (parse(argc, argv, &o))
		return 2;
	return launch(&o);
}

const struct nq_verb nq_verb_launch = {
	.name = "launch",
	.summary = "run a command in a memory cgroup, switching levels under its limit",
	.run = run,
	.usage = usage,
};
