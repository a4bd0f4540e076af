// SPDX-License-Identifier: MIT
/*
 * nestquant switch bench NQ.nq --hi INT8.nq --lo INT6.nq [--cycles N]
 *
 * The switch benchmark, NestQuant against the paper's baseline in one
 * process, interleaved cycle by cycle (the side that goes first alternates).
 *
 * NestQuant: one nested file, opened once.  Down = nq_model_switch to level
 * 0; timed from the request to the moment the residual planes are out of
 * the page cache (nq_switch_result.release_ns; the mincore/pagemap
 * accounting after that is reported in total_ns); up = nq_model_switch
 * back to the top level.  Cycle = down (release) + cold up.
 *
 * Baseline ("diverse-bitwidth PTQ models"): two standalone files.  A switch
 * releases one model (session destroyed, model closed, its file evicted with
 * POSIX_FADV_DONTNEED once nothing maps it) and loads the other (open, which
 * pages in every plane it needs, and a session), so it reads the whole
 * target file each time.
 *
 * Cold = the bytes to be read are verifiably out of the page cache
 * (cachestat, or mincore) before the switch; warm = they were read into the
 * page cache (not mapped) just before, untimed.  After each switch the first
 * inference is timed.  The sequential read bandwidth of the same nested
 * file (its residual range, cold, 1 MiB preads) is measured in every cycle,
 * so the cold switch-up can be compared with what the disk allows.
 * Switch-down with one inference in flight is measured separately: the
 * extra time is the wait for that inference to finish.
 *
 * Output: one JSON object on stdout with every sample and the medians.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cmd_run.h"
#include "cmd_switch.h"
#include "nestquant.h"
#include "residency.h"

#define MAXC 200

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(const double *v, int n)
{
	double t[MAXC];

	if (n <= 0)
		return 0;
	memcpy(t, v, sizeof(double) * (size_t)n);
	qsort(t, (size_t)n, sizeof(double), cmp_d);
	return n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
}

/* Bytes of [off, off + len) of a file in the page cache (cachestat, or a
 * throwaway mapping + mincore where the kernel lacks cachestat). */
static uint64_t cached(const char *path, uint64_t off, uint64_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	uint64_t b = UINT64_MAX;

	if (fd < 0)
		return UINT64_MAX;
	if (nq_res_cachestat(fd, off, len, &b) < 0)
		b = UINT64_MAX;
	close(fd);
	return b;
}

static uint64_t file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) ? 0 : (uint64_t)st.st_size;
}

/* Drop [off, off + len) of the file from the page cache (pages nobody maps). */
static void evict(const char *path, uint64_t off, uint64_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return;
	(void)posix_fadvise(fd, (off_t)off, (off_t)len, POSIX_FADV_DONTNEED);
	close(fd);
}

/* Sequential cold read of [off, off + len): bytes per second (0 on error). */
static double read_range(const char *path, uint64_t off, uint64_t len, void *buf)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	uint64_t t0, done = 0;

	if (fd < 0)
		return 0;
	(void)posix_fadvise(fd, (off_t)off, (off_t)len, POSIX_FADV_SEQUENTIAL);
	t0 = now_ns();
	while (done < len) {
		size_t want = len - done < NQ_RES_CHUNK ? (size_t)(len - done) : NQ_RES_CHUNK;
		ssize_t got = pread(fd, buf, want, (off_t)(off + done));

		if (got <= 0)
			break;
		done += (uint64_t)got;
	}
	t0 = now_ns() - t0;
	close(fd);
	return done == len && t0 ? (double)len * 1e9 / (double)t0 : 0;
}

struct side {
	struct nq_model *m;
	struct nq_session *s;
};

static int load(const char *path, const struct nq_model_opts *o, struct side *x)
{
	if (nq_model_open(path, o, &x->m) < 0)
		return -1;
	if (nq_session_create(x->m, &x->s) < 0) {
		nq_model_close(x->m);
		x->m = NULL;
		return -1;
	}
	return 0;
}

static void release(const char *path, struct side *x)
{
	nq_session_destroy(x->s);
	nq_model_close(x->m);
	x->s = NULL;
	x->m = NULL;
	evict(path, 0, file_size(path));
}

static double infer_ms(struct side *x, const float *in, float *out)
{
	uint64_t t0 = now_ns();

	if (nq_session_run(x->s, in, out, NULL) < 0)
		return -1;
	return (double)(now_ns() - t0) / 1e6;
}

struct inflight {
	struct nq_model *m;
	const float *in;
	_Atomic int go, started, stop;
};

static void *inflight_main(void *arg)
{
	struct inflight *f = arg;
	struct nq_session *s;
	float *out = malloc(nq_model_output_count(f->m) * sizeof(float));

	if (!out || nq_session_create(f->m, &s) < 0) {
		atomic_store(&f->started, -1);
		free(out);
		return NULL;
	}
	while (!atomic_load(&f->go))
		;
	atomic_store(&f->started, 1);
	nq_session_run(s, f->in, out, NULL);
	nq_session_destroy(s);
	free(out);
	return NULL;
}

static void print_arr(const char *name, const double *v, int n, bool last)
{
	printf("\"%s\": [", name);
	for (int i = 0; i < n; i++)
		printf("%s%.6g", i ? ", " : "", v[i]);
	printf("]%s", last ? "" : ", ");
}

int cli_switch_bench(int argc, char **argv)
{
	const char *nqp = NULL, *hi = NULL, *lo = NULL;
	struct nq_model_opts o = { .level = -1 };
	struct nq_switch_result r;
	struct nq_residency rs;
	struct side nq = { 0 }, base = { 0 };
	int cycles = 5, c, top, err = 1;
	bool nq_only = false;
	float *in = NULL, *out = NULL;
	void *buf = NULL;
	uint64_t res_off, res_len, nq_read = 0, nq_released = 0, base_read = 0;
	uint64_t cold_bad = 0;
	static double nd[MAXC], nuc[MAXC], nuw[MAXC], nid[MAXC], niu[MAXC], ncyc[MAXC];
	static double bd[MAXC], buc[MAXC], buw[MAXC], bid[MAXC], biu[MAXC], bcyc[MAXC];
	static double bw[MAXC], fl_total[MAXC], fl_wait[MAXC], ndu[MAXC], ndr[MAXC];

	for (int i = 2; i < argc; i++) {
		if ((c = cli_switch_common_opt(argc, argv, &i, &o)) < 0)
			return 2;
		else if (c)
			continue;
		if (!strcmp(argv[i], "--hi") && i + 1 < argc)
			hi = argv[++i];
		else if (!strcmp(argv[i], "--lo") && i + 1 < argc)
			lo = argv[++i];
		else if (!strcmp(argv[i], "--nq-only"))
			nq_only = true;
		else if (!strcmp(argv[i], "--cycles") && i + 1 < argc)
			cycles = atoi(argv[++i]);
		else if (argv[i][0] != '-' && !nqp)
			nqp = argv[i];
		else {
			cli_error("switch", "bench: unknown argument %s", argv[i]);
			return 2;
		}
	}
	if (nq_only && !hi)
		hi = lo = nqp;	/* unused */
	if (!nqp || !hi || !lo || cycles < 1 || cycles > MAXC) {
		cli_error("switch", "bench needs MODEL.nq --hi INT8.nq --lo INT6.nq [--cycles 1..%d]", MAXC);
		return 2;
	}
	buf = aligned_alloc(4096, NQ_RES_CHUNK);
	/* Start: everything cold, then NestQuant at its top level and the
	 * baseline's INT8 model loaded. */
	evict(nqp, 0, file_size(nqp));
	evict(hi, 0, file_size(hi));
	evict(lo, 0, file_size(lo));
	if (load(nqp, &o, &nq) < 0 || (!nq_only && load(hi, NULL, &base) < 0)) {
		cli_error("switch", "bench: %s", nq_last_error());
		goto out;
	}
	top = (int)nq_model_level_count(nq.m) - 1;
	if (top < 1) {
		cli_error("switch", "bench: %s has one level; nothing to switch", nqp);
		goto out;
	}
	nq_model_residency(nq.m, &rs);
	res_off = rs.region_bytes[0];
	{
		uint64_t off0 = file_size(nqp);

		res_len = 0;
		for (int k = 1; k <= top; k++)
			res_len += rs.region_bytes[k];
		res_off = off0 - res_len;	/* regions 1.. are the end of the file */
	}
	in = malloc(nq_model_input_count(nq.m) * sizeof(float));
	out = malloc((nq_only || nq_model_output_count(nq.m) > nq_model_output_count(base.m)
			      ? nq_model_output_count(nq.m) : nq_model_output_count(base.m)) * sizeof(float));
	if (!in || !out || !buf)
		goto out;
	srand(1);
	for (size_t i = 0; i < nq_model_input_count(nq.m); i++)
		in[i] = (float)(rand() % 256);
	infer_ms(&nq, in, out);
	if (!nq_only)
		infer_ms(&base, in, out);

	for (c = 0; c < cycles; c++) {
		for (int turn = 0; turn < 2; turn++) {
			bool do_nq = (turn == 0) == (c % 2 == 0);
			uint64_t t0;

			if (do_nq) {
				/* Down, first inference. */
				if (nq_model_switch(nq.m, 0, &r) < 0)
					goto fail;
				nd[c] = (double)r.total_ns / 1e6;
				ndu[c] = (double)r.unmap_ns / 1e6;
				ndr[c] = (double)r.release_ns / 1e6;
				nq_released = r.bytes_released;
				nid[c] = infer_ms(&nq, in, out);
				/* The disk, on the same bytes: cold sequential read. */
				if (cached(nqp, res_off, res_len))
					cold_bad++;
				bw[c] = read_range(nqp, res_off, res_len, buf);
				evict(nqp, res_off, res_len);
				/* Up, cold. */
				if (cached(nqp, res_off, res_len))
					cold_bad++;
				if (nq_model_switch(nq.m, (unsigned int)top, &r) < 0)
					goto fail;
				nuc[c] = (double)r.total_ns / 1e6;
				nq_read = r.bytes_read;
				niu[c] = infer_ms(&nq, in, out);
				ncyc[c] = ndr[c] + nuc[c];
				/* Up, warm: down, residual read into the cache, up. */
				if (nq_model_switch(nq.m, 0, &r) < 0)
					goto fail;
				read_range(nqp, res_off, res_len, buf);
				if (nq_model_switch(nq.m, (unsigned int)top, &r) < 0)
					goto fail;
				nuw[c] = (double)r.total_ns / 1e6;
				/* Down with one inference in flight. */
				{
					struct inflight f = { .m = nq.m, .in = in };
					pthread_t th;

					if (pthread_create(&th, NULL, inflight_main, &f))
						goto fail;
					atomic_store(&f.go, 1);
					while (!atomic_load(&f.started))
						;
					/* Well inside the inference, not racing its start. */
					{
						struct timespec ts = { 0, (long)(niu[c] * 0.3e6) };

						nanosleep(&ts, NULL);
					}
					err = nq_model_switch(nq.m, 0, &r);
					pthread_join(th, NULL);
					if (err < 0 || f.started < 0)
						goto fail;
					err = 1;
					fl_total[c] = (double)r.total_ns / 1e6;
					fl_wait[c] = (double)r.wait_ns / 1e6;
					if (nq_model_switch(nq.m, (unsigned int)top, &r) < 0)
						goto fail;
				}
			} else if (!nq_only) {
				uint64_t lo_size = file_size(lo), hi_size = file_size(hi);

				/* Down: release INT8, load INT6 (cold: evicted when released). */
				if (cached(lo, 0, lo_size))
					cold_bad++;
				t0 = now_ns();
				release(hi, &base);
				if (load(lo, NULL, &base) < 0)
					goto fail;
				bd[c] = (double)(now_ns() - t0) / 1e6;
				bid[c] = infer_ms(&base, in, out);
				/* Up, cold. */
				if (cached(hi, 0, hi_size))
					cold_bad++;
				t0 = now_ns();
				release(lo, &base);
				if (load(hi, NULL, &base) < 0)
					goto fail;
				buc[c] = (double)(now_ns() - t0) / 1e6;
				biu[c] = infer_ms(&base, in, out);
				bcyc[c] = bd[c] + buc[c];
				base_read = lo_size + hi_size;
				/* Up, warm: back down (untimed), INT8 read into the cache, up. */
				release(hi, &base);
				if (load(lo, NULL, &base) < 0)
					goto fail;
				read_range(hi, 0, hi_size, buf);
				t0 = now_ns();
				release(lo, &base);
				if (load(hi, NULL, &base) < 0)
					goto fail;
				buw[c] = (double)(now_ns() - t0) / 1e6;
			}
		}
	}

	nq_model_residency(nq.m, &rs);
	printf("{\"model\": ");
	cli_json_str(stdout, nqp);
	printf(", \"hi\": ");
	cli_json_str(stdout, hi);
	printf(", \"lo\": ");
	cli_json_str(stdout, lo);
	printf(", \"cycles\": %d, \"isa\": \"%s\", \"io\": ", cycles, nq_model_isa(nq.m));
	cli_json_str(stdout, rs.io);
	printf(", \"pagein\": \"%s\", \"drop\": \"%s\", \"nq_file_bytes\": %" PRIu64
	       ", \"residual_bytes\": %" PRIu64 ", \"hi_bytes\": %" PRIu64 ", \"lo_bytes\": %" PRIu64
	       ", \"nq_bytes_read_per_cycle\": %" PRIu64 ", \"nq_bytes_released_per_down\": %" PRIu64
	       ", \"base_bytes_read_per_cycle\": %" PRIu64 ", \"cold_check_failures\": %" PRIu64 ", ",
	       rs.pagein, rs.drop, file_size(nqp), res_len, file_size(hi), file_size(lo), nq_read,
	       nq_released, base_read, cold_bad);
	printf("\"median\": {\"nq_down_unmap_ms\": %.4f, \"nq_down_release_ms\": %.4f, ",
	       median(ndu, cycles), median(ndr, cycles));
	printf("\"nq_down_ms\": %.4f, \"nq_up_cold_ms\": %.4f, \"nq_up_warm_ms\": %.4f, "
	       "\"nq_cycle_ms\": %.4f, \"nq_first_infer_down_ms\": %.4f, \"nq_first_infer_up_ms\": %.4f, "
	       "\"nq_down_inflight_ms\": %.4f, \"nq_down_inflight_wait_ms\": %.4f, "
	       "\"base_down_ms\": %.4f, \"base_up_cold_ms\": %.4f, \"base_up_warm_ms\": %.4f, "
	       "\"base_cycle_ms\": %.4f, \"base_first_infer_down_ms\": %.4f, \"base_first_infer_up_ms\": %.4f, "
	       "\"seq_read_bytes_per_s\": %.6g}, \"samples\": {",
	       median(nd, cycles), median(nuc, cycles), median(nuw, cycles), median(ncyc, cycles),
	       median(nid, cycles), median(niu, cycles), median(fl_total, cycles),
	       median(fl_wait, cycles), median(bd, cycles), median(buc, cycles),
	       median(buw, cycles), median(bcyc, cycles), median(bid, cycles), median(biu, cycles),
	       median(bw, cycles));
	print_arr("nq_down_ms", nd, cycles, false);
	print_arr("nq_down_unmap_ms", ndu, cycles, false);
	print_arr("nq_down_release_ms", ndr, cycles, false);
	print_arr("nq_up_cold_ms", nuc, cycles, false);
	print_arr("nq_up_warm_ms", nuw, cycles, false);
	print_arr("nq_cycle_ms", ncyc, cycles, false);
	print_arr("nq_down_inflight_wait_ms", fl_wait, cycles, false);
	print_arr("base_down_ms", bd, cycles, false);
	print_arr("base_up_cold_ms", buc, cycles, false);
	print_arr("base_up_warm_ms", buw, cycles, false);
	print_arr("base_cycle_ms", bcyc, cycles, false);
	print_arr("seq_read_bytes_per_s", bw, cycles, true);
	printf("}}\n");
	err = 0;
	goto out;
fail:
	cli_error("switch", "bench: %s", nq_last_error());
out:
	if (nq.m) {
		nq_session_destroy(nq.s);
		nq_model_close(nq.m);
	}
	if (base.m) {
		nq_session_destroy(base.s);
		nq_model_close(base.m);
	}
	free(in);
	free(out);
	free(buf);
	return err;
}
