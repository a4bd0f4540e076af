// SPDX-License-Identifier: MIT
/*
 * Plane residency and level switching.
 *
 * The model: a 4-layer MLP written here with the format writer (levels
 * 4|6|8, exact residuals, planes of 1.5-96 KiB so that regions span many
 * pages and layers share boundary pages).  Oracle: the same file opened
 * with the scalar kernels (NQ_ISA=scalar), run with every per-layer level
 * vector (3^4 of them) before anything is switched.
 *
 * What is checked, with the kernel's own accounting (mincore for the page
 * cache, /proc/self/pagemap for our page tables, cachestat where present):
 * a drop really releases the bytes it reports and a page-in really makes
 * every page resident, for each page-in and drop method and without
 * io_uring; bad requests fail with clear errors; the non-blocking API
 * completes through its eventfd; closing the model mid-switch cancels
 * cleanly; budgets step memory down largest-plane-first with honest
 * per-layer levels; and under a stress of thousands of random switches and
 * budgets with inferences running on other threads, every output is
 * byte-identical to the oracle's for the levels the run reports and no
 * dropped page is ever faulted back by a running inference.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/vfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "model.h"
#include "nestquant.h"
#include "nq_error.h"
#include "nq_format.h"
#include "nq_test.h"
#include "residency.h"

#define NL 4			/* weight layers */
#define NLEV 3
#define NIN 2			/* distinct inputs */
#define NVEC 81			/* 3^NL per-layer level vectors */

static const uint8_t BITS[NLEV] = { 4, 6, 8 };
static const uint32_t DIMS[NL + 1] = { 512, 384, 512, 256, 16 };

static char model_path[600];
static float *inputs;			/* [NIN][DIMS[0]] */
static float *oracle;			/* [NVEC][NIN][DIMS[NL]] */
static uint64_t rng = 7;

static uint64_t next(void)
{
	uint64_t z = (rng += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static int rnd_round(double v)
{
	return (int)(v < 0 ? -(long)(-v + 0.5) : (long)(v + 0.5));
}

/* Checks for the one-time setup in main(), outside any test. */
#define S_CMP(a, op, b)                                                                   \
	do {                                                                              \
		long long a_ = (long long)(a), b_ = (long long)(b);                       \
		if (!(a_ op b_)) {                                                        \
			fprintf(stderr, "%s:%d: setup: %s = %lld, want %s %lld (%s)\n",     \
				__FILE__, __LINE__, #a, a_, #op, b_, nq_last_error());     \
			exit(1);                                                          \
		}                                                                         \
	} while (0)
#define S_EQ(a, b) S_CMP(a, ==, b)
#define S_GE(a, b) S_CMP(a, >=, b)
#define S_TRUE(c) S_CMP(!!(c), ==, 1)

/* ---------------------------------------------------------------- */
/* The test model.                                                   */

static void build_model(void)
{
	struct nq_layer_desc d[NL];
	int8_t *planes[NL][NLEV];
	float *scales[NL], *bias[NL];
	struct nq_writer *w;
	struct nq_disk_preprocess pre = { 0 };
	uint32_t t[NL + 3], li[NL];
	char name[32];

	snprintf(model_path, sizeof(model_path), "%s/mlp.nq", nq_test_tmpdir());
	S_EQ(nq_writer_create(model_path, BITS, NLEV, NULL, &w), 0);
	pre.layout = NQ_LAYOUT_NCHW;
	pre.channels = 1;
	pre.input_scale = 1.0f;
	pre.std[0] = 1.0f;
	S_EQ(nq_writer_set_preprocess(w, &pre), 0);

	t[0] = (uint32_t)nq_writer_add_tensor(w, &(struct nq_tensor_desc){
		.name = "x", .dtype = NQ_TENSOR_F32, .rank = 2, .dims = { 1, DIMS[0] } });
	t[1] = (uint32_t)nq_writer_add_tensor(w, &(struct nq_tensor_desc){
		.name = "xq", .dtype = NQ_TENSOR_U8, .rank = 2, .dims = { 1, DIMS[0] },
		.scale = 1.0f / 64 });
	for (int l = 0; l < NL; l++) {
		bool last = l == NL - 1;

		snprintf(name, sizeof(name), "h%d", l);
		t[l + 2] = (uint32_t)nq_writer_add_tensor(w, &(struct nq_tensor_desc){
			.name = name, .dtype = last ? NQ_TENSOR_S8 : NQ_TENSOR_U8, .rank = 2,
			.dims = { 1, DIMS[l + 1] }, .scale = last ? 0.01f : 8.0f / 255 });
	}
	t[NL + 2] = (uint32_t)nq_writer_add_tensor(w, &(struct nq_tensor_desc){
		.name = "y", .dtype = NQ_TENSOR_F32, .rank = 2, .dims = { 1, DIMS[NL] } });

	for (int l = 0; l < NL; l++) {
		uint32_t oc = DIMS[l + 1], k = DIMS[l];
		uint64_t n = (uint64_t)oc * k;
		int8_t *q8 = malloc(n), *q6 = malloc(n);

		for (int lv = 0; lv < NLEV; lv++)
			planes[l][lv] = malloc(n);
		scales[l] = malloc(sizeof(float) * NLEV * oc);
		bias[l] = malloc(sizeof(float) * oc);
		for (uint64_t i = 0; i < n; i++)
			q8[i] = (int8_t)((int)(next() % 255) - 127);
		for (uint64_t i = 0; i < n; i++) {
			int h6 = rnd_round(q8[i] / 4.0), h4;

			h6 = h6 < -32 ? -32 : h6 > 31 ? 31 : h6;
			q6[i] = (int8_t)h6;
			planes[l][2][i] = (int8_t)(q8[i] - 4 * h6);
			h4 = rnd_round(h6 / 4.0);
			h4 = h4 < -8 ? -8 : h4 > 7 ? 7 : h4;
			planes[l][1][i] = (int8_t)(h6 - 4 * h4);
			planes[l][0][i] = (int8_t)h4;
		}
		for (uint32_t c = 0; c < oc; c++) {
			/* Pre-activations of about unit spread: little saturation,
			 * so a one-layer level change shows in the output. */
			float sw = 1.5f / (127.0f * sqrtf((float)k));

			for (int lv = 0; lv < NLEV; lv++)
				scales[l][(uint64_t)lv * oc + c] = sw * (float)(1 << (8 - BITS[lv]));
			bias[l][c] = (float)((int)(next() % 200) - 100) / 400.0f;
		}
		d[l] = (struct nq_layer_desc){ .kind = NQ_LAYER_GEMM, .oc = oc, .k = k, .groups = 1,
					       .kh = 1, .kw = 1, .cin_per_group = k,
					       .plane_bits = { 4, 3, 3 },
					       .plane_signed = { true, true, true },
					       .scales = scales[l], .bias = bias[l] };
		snprintf(name, sizeof(name), "fc%d", l);
		d[l].name = name;
		li[l] = (uint32_t)nq_writer_add_layer(w, &d[l]);
		S_GE((int)li[l], 0);
		free(q8);
		free(q6);
	}
	{
		uint32_t in = t[0], out = t[1];

		S_GE(nq_writer_add_node(w, &(struct nq_node_desc){
			.name = "q", .op = NQ_OP_QUANTIZE, .inputs = &in, .n_inputs = 1,
			.outputs = &out, .n_outputs = 1, .layer = NQ_NONE }), 0);
	}
	for (int l = 0; l < NL; l++) {
		uint32_t in = t[l + 1], out = t[l + 2];
		struct nq_node_desc nd = { .op = NQ_OP_GEMM, .inputs = &in, .n_inputs = 1,
					   .outputs = &out, .n_outputs = 1, .layer = li[l] };

		snprintf(name, sizeof(name), "fc%d", l);
		nd.name = name;
		nd.attrs.i[NQ_A_ACT] = l == NL - 1 ? NQ_ACT_NONE : NQ_ACT_RELU;
		S_GE(nq_writer_add_node(w, &nd), 0);
	}
	{
		uint32_t in = t[NL + 1], out = t[NL + 2];

		S_GE(nq_writer_add_node(w, &(struct nq_node_desc){
			.name = "dq", .op = NQ_OP_DEQUANTIZE, .inputs = &in, .n_inputs = 1,
			.outputs = &out, .n_outputs = 1, .layer = NQ_NONE }), 0);
	}
	S_EQ(nq_writer_add_input(w, t[0]), 0);
	S_EQ(nq_writer_add_output(w, t[NL + 2]), 0);
	for (uint32_t lv = 0; lv < NLEV; lv++)
		for (int l = 0; l < NL; l++) {
			uint32_t oc = DIMS[l + 1], k = DIMS[l], stride;
			uint64_t size;
			uint8_t *buf;

			S_EQ(nq_writer_plane_layout(w, li[l], lv, &stride, &size), 0);
			buf = calloc(1, size);
			for (uint32_t c = 0; c < oc; c++)
				S_EQ(nq_pack_row(planes[l][lv] + (uint64_t)c * k, k,
							     d[l].plane_bits[lv], true,
							     buf + (uint64_t)c * stride), 0);
			S_EQ(nq_writer_write_plane(w, li[l], lv, buf, size), 0);
			free(buf);
		}
	S_EQ(nq_writer_finish(w), 0);
	for (int l = 0; l < NL; l++) {
		for (int lv = 0; lv < NLEV; lv++)
			free(planes[l][lv]);
		free(scales[l]);
		free(bias[l]);
	}
}

static void vec_of(unsigned int v, uint8_t *lv)
{
	for (int j = 0; j < NL; j++, v /= NLEV)
		lv[j] = (uint8_t)(v % NLEV);
}

static unsigned int index_of(const uint8_t *lv)
{
	unsigned int v = 0;

	for (int j = NL; j-- > 0;)
		v = v * NLEV + lv[j];
	return v;
}

static const float *oracle_out(unsigned int vec, unsigned int in)
{
	return oracle + ((size_t)vec * NIN + in) * DIMS[NL];
}

/* Once per test process (Check forks each test from the parent, which has
 * run this already in main). */
static void setup_once(void)
{
	struct nq_model *m;
	struct nq_session *s;
	uint8_t lv[NL];

	build_model();
	inputs = malloc(sizeof(float) * NIN * DIMS[0]);
	for (size_t i = 0; i < (size_t)NIN * DIMS[0]; i++)
		inputs[i] = (float)(next() % 256) / 64.0f;
	oracle = malloc(sizeof(float) * NVEC * NIN * DIMS[NL]);
	setenv("NQ_ISA", "scalar", 1);
	S_EQ(nq_model_open(model_path, NULL, &m), 0);
	unsetenv("NQ_ISA");
	S_TRUE(!strcmp(nq_model_isa(m), "scalar"));
	S_EQ(nq_session_create(m, &s), 0);
	for (unsigned int v = 0; v < NVEC; v++) {
		vec_of(v, lv);
		for (unsigned int i = 0; i < NIN; i++)
			S_EQ(nq_session_run_layers(s, lv, inputs + (size_t)i * DIMS[0],
							       (float *)oracle_out(v, i)), 0);
	}
	/* The levels must differ, or the tests below could not tell them apart. */
	S_TRUE(memcmp(oracle_out(0, 0), oracle_out(NVEC - 1, 0), sizeof(float) * DIMS[NL]));
	S_TRUE(memcmp(oracle_out(NVEC - 1, 0), oracle_out(NVEC - 2, 0), sizeof(float) * DIMS[NL]));
	nq_session_destroy(s);
	nq_model_close(m);
}

static struct nq_model *open_model(int level, unsigned int flags, enum nq_pagein pin,
				   enum nq_drop drop)
{
	struct nq_model_opts o = { .level = level, .flags = flags, .pagein = pin, .drop = drop };
	struct nq_model *m;

	if (nq_model_open(model_path, &o, &m) < 0)
		ck_abort_msg("open: %s", nq_last_error());
	return m;
}

/* Bytes of [addr, addr + len) present in this process's page tables
 * (UINT64_MAX when /proc/self/pagemap cannot be read).  Called from the
 * switching thread too, so it reports instead of asserting. */
static uint64_t pagemap_present(const uint8_t *addr, uint64_t len)
{
	long ps = sysconf(_SC_PAGESIZE);
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	uint64_t n = 0, e;

	if (fd < 0)
		return UINT64_MAX;
	for (uint64_t o = 0; o < len; o += (uint64_t)ps) {
		if (pread(fd, &e, 8, (off_t)(((uintptr_t)addr + o) / (uint64_t)ps * 8)) != 8) {
			close(fd);
			return UINT64_MAX;
		}
		n += e >> 63;
	}
	close(fd);
	return n * (uint64_t)ps;
}

/* fadvise can evict the test file's pages (not tmpfs/ramfs, whose pages
 * only leave when the file does). */
static bool evictable(void)
{
	struct statfs sf;

	return statfs(nq_test_tmpdir(), &sf) == 0 && sf.f_type != TMPFS_MAGIC &&
	       sf.f_type != RAMFS_MAGIC;
}

/*
 * Put every page the kernel still holds in a per-CPU LRU add batch on its
 * LRU list.  MADV_PAGEOUT drains only the calling CPU's batch and cannot
 * see pages in another CPU's (io_uring's workers read on any CPU), so
 * without this how much it releases depends on where the reads ran.
 * move_pages(2) drains every CPU's batch before it looks at its pages
 * (lru_cache_disable); moving one page of ours to the node it is already
 * on changes nothing else.  False where the kernel has no page migration.
 */
static bool drain_lru_batches(const void *page)
{
	void *pages[1] = { (void *)page };
	int node = 0, status = 0;

	return syscall(SYS_move_pages, 0, 1UL, pages, &node, &status, 0) == 0;
}

static uint64_t sum_above(const uint64_t *v, unsigned int from)
{
	uint64_t s = 0;

	for (unsigned int k = from; k < NLEV; k++)
		s += v[k];
	return s;
}

/* ---------------------------------------------------------------- */
/* Mechanisms: what a drop releases and a page-in brings, per method. */

static void check_cycle(enum nq_pagein pin, enum nq_drop drop, unsigned int flags)
{
	struct nq_model *m;
	struct nq_switch_result r;
	struct nq_residency st;
	uint64_t upper, cs;
	bool paged_out_all;

	if (!evictable())
		NQ_SKIP("%s is on tmpfs/ramfs: its pages cannot be evicted", nq_test_tmpdir());
	m = open_model(-1, flags, pin, drop);
	ck_assert_int_eq(nq_model_residency(m, &st), 0);
	if (st.mapped_bytes[0] == UINT64_MAX) {
		nq_model_close(m);
		NQ_SKIP("/proc/self/pagemap cannot be read here");
	}
	ck_assert_uint_eq(st.level, 2);
	upper = st.region_bytes[1] + st.region_bytes[2];
	ck_assert_uint_gt(upper, 64 * 1024);
	for (unsigned int k = 0; k < NLEV; k++) {
		ck_assert_uint_eq(st.cached_bytes[k], st.region_bytes[k]);
		ck_assert_uint_eq(st.mapped_bytes[k], st.region_bytes[k]);
	}
	if (flags & NQ_OPEN_NO_URING)
		ck_assert_ptr_nonnull(strstr(st.io, "plain madvise/pread"));
	else
		ck_assert_str_eq(st.io, "io_uring");

	/* Down to level 0: both upper regions leave our page tables, and
	 * (except for UNMAP) the page cache, byte for byte.  MADV_PAGEOUT
	 * skips pages not on an LRU list yet: drain the per-CPU batches. */
	paged_out_all = drop == NQ_DROP_PAGEOUT && drain_lru_batches(nq_file_data(m->file));
	ck_assert_int_eq(nq_model_switch(m, 0, &r), 0);
	ck_assert_int_eq(r.status, 0);
	ck_assert_uint_eq(r.level, 0);
	ck_assert_uint_eq(r.bytes_unmapped, upper);
	if (drop == NQ_DROP_PAGEOUT && !paged_out_all)
		ck_assert_uint_ge(r.bytes_released, upper / 2);
	else
		ck_assert_uint_eq(r.bytes_released, drop == NQ_DROP_UNMAP ? 0 : upper);
	ck_assert_uint_gt(r.unmap_ns, 0);
	ck_assert_uint_le(r.unmap_ns, r.release_ns);
	ck_assert_uint_le(r.release_ns, r.total_ns);
	ck_assert_int_eq(nq_model_residency(m, &st), 0);
	ck_assert_uint_eq(st.level, 0);
	ck_assert_uint_eq(sum_above(st.mapped_bytes, 1), 0);
	ck_assert_uint_eq(sum_above(st.usable_bytes, 1), 0);
	ck_assert_uint_eq(sum_above(st.cached_bytes, 1), upper - r.bytes_released);
	ck_assert_uint_eq(st.mapped_bytes[0], st.region_bytes[0]);
	{
		/* cachestat(2) agrees (Linux >= 6.5). */
		uint64_t off, len;

		ck_assert_int_eq(nq_file_region(m->file, 1, &off, &len), 0);
		if (nq_res_cachestat(nq_file_fd(m->file), off, upper, &cs) != -ENOSYS)
			ck_assert_uint_eq(cs, upper - r.bytes_released);
	}

	/* Up to level 1: exactly region 1 comes back (from disk unless UNMAP). */
	ck_assert_int_eq(nq_model_switch(m, 1, &r), 0);
	ck_assert_uint_eq(r.level, 1);
	if (drop != NQ_DROP_PAGEOUT)
		ck_assert_uint_eq(r.bytes_read, drop == NQ_DROP_UNMAP ? 0 : st.region_bytes[1]);
	ck_assert_int_eq(nq_model_residency(m, &st), 0);
	ck_assert_uint_eq(st.mapped_bytes[1], st.region_bytes[1]);
	ck_assert_uint_eq(st.cached_bytes[1], st.region_bytes[1]);
	/* Exact methods fetch region 1 only.  MADV_POPULATE_READ alone faults
	 * with the mapping's readahead, which runs on into region 2, and
	 * fault-around then maps what it cached. */
	if (pin == NQ_PAGEIN_POPULATE)
		ck_assert_uint_le(st.mapped_bytes[2], 256 * 1024);
	else if (drop == NQ_DROP_UNMAP)	/* still cached: fault-around maps some */
		ck_assert_uint_le(st.mapped_bytes[2], 64 * 1024);
	else
		ck_assert_uint_eq(st.mapped_bytes[2], 0);
	ck_assert_uint_eq(st.usable_bytes[1], nq_model_weight_bytes(m, 1) - nq_model_weight_bytes(m, 0));

	/* Down one level: only region 1's bytes go. */
	ck_assert_int_eq(nq_model_switch(m, 0, &r), 0);
	ck_assert_uint_eq(r.bytes_unmapped, st.region_bytes[1]);
	ck_assert_int_eq(nq_model_switch(m, 2, &r), 0);
	ck_assert_int_eq(nq_model_residency(m, &st), 0);
	ck_assert_uint_eq(sum_above(st.mapped_bytes, 0), sum_above(st.region_bytes, 0));
	ck_assert_uint_eq(st.switches, 5);	/* open + 4 */
	nq_model_close(m);
}

START_TEST(drop_releases_and_pagein_restores_every_byte)
{
	static const enum nq_pagein pins[] = { NQ_PAGEIN_POPULATE, NQ_PAGEIN_WILLNEED,
					       NQ_PAGEIN_READ, NQ_PAGEIN_PREAD };

	check_cycle(pins[_i], NQ_DROP_DONTNEED, 0);
}
END_TEST

START_TEST(fallback_without_io_uring_does_the_same)
{
	check_cycle(NQ_PAGEIN_READ, NQ_DROP_DONTNEED, NQ_OPEN_NO_URING);
	check_cycle(NQ_PAGEIN_WILLNEED, NQ_DROP_DONTNEED, NQ_OPEN_NO_URING);
}
END_TEST

START_TEST(pageout_and_unmap_drops)
{
	check_cycle(NQ_PAGEIN_POPULATE, NQ_DROP_PAGEOUT, 0);
	check_cycle(NQ_PAGEIN_POPULATE, NQ_DROP_UNMAP, 0);
}
END_TEST

START_TEST(another_mapping_keeps_its_pages)
{
	/* POSIX_FADV_DONTNEED evicts only pages nobody maps: while a second
	 * instance holds level 2, our drop unmaps ours and the cache keeps them. */
	struct nq_model *a, *b;
	struct nq_switch_result r;
	struct nq_residency st;

	if (!evictable())
		NQ_SKIP("%s is on tmpfs/ramfs: its pages cannot be evicted", nq_test_tmpdir());
	a = open_model(-1, 0, 0, 0);
	b = open_model(-1, 0, 0, 0);
	ck_assert_int_eq(nq_model_switch(a, 0, &r), 0);
	ck_assert_uint_gt(r.bytes_unmapped, 0);
	ck_assert_uint_eq(r.bytes_released, 0);
	ck_assert_int_eq(nq_model_residency(b, &st), 0);
	ck_assert_uint_eq(st.mapped_bytes[2], st.region_bytes[2]);
	nq_model_close(b);
	ck_assert_int_eq(nq_model_switch(a, 2, &r), 0);
	ck_assert_uint_eq(r.bytes_read, 0);	/* warm: b's pages were still cached */
	nq_model_close(a);
}
END_TEST

START_TEST(lazy_open_pages_nothing_in)
{
	struct nq_model *m;
	struct nq_residency st;

	/* Evict the file first: a full-level open elsewhere cached it. */
	m = open_model(-1, 0, 0, 0);
	ck_assert_int_eq(nq_model_switch(m, 0, NULL), 0);
	nq_model_close(m);
	m = open_model(1, NQ_OPEN_LAZY, 0, 0);
	ck_assert_int_eq(nq_model_residency(m, &st), 0);
	/* Usable (faulted in on first use), not read: reading the metadata
	 * may read ahead into region 0, but region 1 lies beyond. */
	ck_assert_uint_eq(st.level, 1);
	ck_assert_uint_eq(st.usable_bytes[1], nq_model_weight_bytes(m, 1) - nq_model_weight_bytes(m, 0));
	ck_assert_uint_lt(st.mapped_bytes[1], st.region_bytes[1]);
	ck_assert_uint_eq(st.mapped_bytes[2], 0);
	nq_model_close(m);
}
END_TEST

/* ---------------------------------------------------------------- */
/* Bad requests.                                                     */

START_TEST(bad_requests_fail_clearly)
{
	struct nq_model *m = open_model(-1, 0, 0, 0);
	struct nq_residency st;
	uint64_t t;

	ck_assert_int_eq(nq_model_switch(m, 3, NULL), -EINVAL);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "level 3 out of range"));
	ck_assert_int_eq(nq_model_set_level(m, 99), -EINVAL);
	ck_assert_int_eq(nq_model_request_level(m, 3, &t), -EINVAL);
	ck_assert_uint_eq(t, 0);
	ck_assert_int_eq(nq_model_residency(m, &st), 0);
	ck_assert_int_eq(nq_model_set_budget(m, st.floor - 1), -ENOSPC);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "below the always-resident floor"));
	ck_assert_int_eq(nq_model_request_budget(m, 100, &t), -ENOSPC);
	ck_assert_int_eq(nq_model_switch_wait(m, 0, 0, NULL), -ENOENT);
	ck_assert_int_eq(nq_model_switch_wait(m, 5, 0, NULL), -ENOENT);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "never made"));
	/* Nothing changed. */
	ck_assert_uint_eq(nq_model_level(m), 2);
	ck_assert_int_eq(nq_model_residency(m, &st), 0);
	ck_assert_uint_eq(st.budget, NQ_BUDGET_NONE);
	ck_assert_uint_eq(st.mapped_bytes[2], st.region_bytes[2]);
	nq_model_close(m);

	{
		struct nq_model_opts o = { .level = -1, .pagein = 17 };

		ck_assert_int_eq(nq_model_open(model_path, &o, &m), -EINVAL);
		ck_assert_ptr_null(m);
	}
}
END_TEST

/*
 * Does the VMA holding addr carry VmFlags flag ("rr": VM_RAND_READ, "lo":
 * VM_LOCKED) in /proc/self/smaps?
 */
static bool vm_flag(const void *addr, const char *flag)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512], want[8];
	bool in = false, has = false;

	ck_assert_ptr_nonnull(f);
	snprintf(want, sizeof(want), " %s", flag);
	while (fgets(line, sizeof(line), f)) {
		unsigned long a, b;

		/* A VMA's first line starts "start-end "; no field name parses so. */
		if (sscanf(line, "%lx-%lx ", &a, &b) == 2)
			in = (uintptr_t)addr >= a && (uintptr_t)addr < b;
		else if (in && !strncmp(line, "VmFlags:", 8))
			has = strstr(line + 8, want) != NULL;
	}
	fclose(f);
	return has;
}

START_TEST(a_part_bit_fault_reads_no_dropped_plane_back)
{
	/* While planes are dropped the whole mapping is MADV_RANDOM (rr):
	 * a fault on a page of the level in force that the kernel took must
	 * read that page alone, not a read_ahead_kb window running on into
	 * the dropped regions.  With every plane in force, default advice. */
	struct nq_model *m = open_model(-1, 0, 0, 0);
	const uint8_t *base = nq_file_data(m->file);
	uint64_t off[3], len[3], ps = (uint64_t)sysconf(_SC_PAGESIZE);
	struct nq_residency st;
	const uint8_t *last;

	for (unsigned int k = 0; k < 3; k++)
		ck_assert_int_eq(nq_file_region(m->file, k, &off[k], &len[k]), 0);
	for (int step = 0; step < 4; step++) {
		const unsigned int level = step == 0 || step == 3 ? 2 : step == 1 ? 1 : 0;

		if (step)
			ck_assert_int_eq(nq_model_switch(m, level, NULL), 0);
		ck_assert_msg(vm_flag(base, "rr") == (level < 2), "step %d (level %u): the header %s MADV_RANDOM",
			      step, level, level < 2 ? "is not" : "is");
		for (unsigned int k = 0; k < 3; k++)
			ck_assert_msg(vm_flag(base + off[k] + len[k] / 2, "rr") == (level < 2),
				      "step %d (level %u): region %u %s MADV_RANDOM", step, level, k,
				      level < 2 ? "is not" : "is");
	}

	if (!evictable()) {
		nq_model_close(m);
		NQ_SKIP("%s is on tmpfs/ramfs: its pages cannot be evicted to fault them back",
			nq_test_tmpdir());
	}
	/* At level 0, the kernel takes the last page of region 0 (next to
	 * region 1, within any read-around window of it); the next read
	 * faults it back. */
	ck_assert_int_eq(nq_model_switch(m, 0, NULL), 0);
	ck_assert_int_eq(nq_model_residency(m, &st), 0);
	ck_assert_uint_eq(st.cached_bytes[1] + st.cached_bytes[2], 0);
	last = base + ((off[0] + len[0] - 1) & ~(ps - 1));
	ck_assert_int_eq(madvise((void *)last, ps, MADV_DONTNEED), 0);
	ck_assert_int_eq(posix_fadvise(nq_file_fd(m->file), (off_t)(last - base), (off_t)ps,
				       POSIX_FADV_DONTNEED), 0);
	ck_assert_int_eq(nq_model_residency(m, &st), 0);
	ck_assert_uint_eq(st.cached_bytes[0], st.region_bytes[0] - ps);
	(void)*(volatile const uint8_t *)last;
	ck_assert_int_eq(nq_model_residency(m, &st), 0);
	ck_assert_uint_eq(st.cached_bytes[0], st.region_bytes[0]);
	ck_assert_msg(st.cached_bytes[1] + st.cached_bytes[2] == 0,
		      "one fault at level 0 cached %llu bytes of the dropped regions",
		      (unsigned long long)(st.cached_bytes[1] + st.cached_bytes[2]));
	nq_model_close(m);
}
END_TEST

START_TEST(lock_resident_names_rlimit_memlock)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];
	int status;
	pid_t pid;

	/* Locked as root (CAP_IPC_LOCK ignores the limit): the header (read
	 * in place by inference) and level 0, not the residual planes... */
	{
		struct nq_model *m = open_model(-1, NQ_OPEN_LOCK_RESIDENT, 0, 0);
		const uint8_t *base = nq_file_data(m->file);
		uint64_t off, len;

		ck_assert(vm_flag(base, "lo"));
		ck_assert_int_eq(nq_file_region(m->file, 0, &off, &len), 0);
		ck_assert(vm_flag(base + off + len - 1, "lo"));
		ck_assert_int_eq(nq_file_region(m->file, 1, &off, &len), 0);
		ck_assert(!vm_flag(base + off, "lo"));
		nq_model_close(m);
	}
	/* ...and refused, naming the limit, without the capability. */
	if (syscall(SYS_capget, &h, d) < 0)
		NQ_SKIP("capget: %s", strerror(errno));
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct rlimit rl = { 4096, 4096 };
		struct nq_model_opts o = { .level = 0, .flags = NQ_OPEN_LOCK_RESIDENT };
		struct nq_model *m;
		int err;

		d[0].effective &= ~(1u << CAP_IPC_LOCK);
		if (syscall(SYS_capset, &h, d) < 0 || setrlimit(RLIMIT_MEMLOCK, &rl) < 0)
			_exit(3);
		err = nq_model_open(model_path, &o, &m);
		if ((err == -ENOMEM || err == -EPERM) && strstr(nq_last_error(), "RLIMIT_MEMLOCK is 4096 bytes"))
			_exit(0);
		fprintf(stderr, "open gave %d: %s\n", err, nq_last_error());
		_exit(1);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 3)
		NQ_SKIP("cannot drop CAP_IPC_LOCK or set RLIMIT_MEMLOCK here");
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), 0);
}
END_TEST

/* ---------------------------------------------------------------- */
/* The non-blocking API.                                             */

START_TEST(request_completes_through_the_eventfd)
{
	struct nq_model *m = open_model(-1, 0, 0, 0);
	struct nq_switch_result r;
	struct pollfd p = { .fd = nq_model_switch_fd(m), .events = POLLIN };
	uint64_t t1, t2, t3, cnt = 0, got = 0;

	ck_assert_int_ge(p.fd, 0);
	ck_assert_int_eq(nq_model_request_level(m, 0, &t1), 0);
	ck_assert_uint_gt(t1, 0);
	ck_assert_int_eq(poll(&p, 1, 10000), 1);
	ck_assert_int_eq(read(p.fd, &cnt, 8), 8);
	ck_assert_uint_eq(cnt, 1);
	ck_assert_int_eq(nq_model_switch_wait(m, t1, 0, &r), 0);
	ck_assert_uint_eq(r.level, 0);
	ck_assert_uint_gt(r.bytes_released, 0);
	ck_assert_uint_ge(r.total_ns, r.wait_ns);
	ck_assert_uint_eq(nq_model_level(m), 0);

	/* Queued requests run in order; the last one decides. */
	ck_assert_int_eq(nq_model_request_level(m, 2, &t1), 0);
	ck_assert_int_eq(nq_model_request_budget(m, NQ_BUDGET_NONE, &t2), 0);
	ck_assert_int_eq(nq_model_request_level(m, 1, &t3), 0);
	ck_assert(t1 < t2 && t2 < t3);
	ck_assert_int_eq(nq_model_switch_wait(m, t3, -1, &r), 0);
	ck_assert_uint_eq(r.level, 1);
	ck_assert_int_eq(nq_model_switch_wait(m, t1, 0, &r), 0);
	ck_assert_uint_eq(r.level, 2);
	ck_assert_uint_gt(r.bytes_read, 0);
	while (got < 3) {
		ck_assert_int_eq(poll(&p, 1, 10000), 1);
		ck_assert_int_eq(read(p.fd, &cnt, 8), 8);
		got += cnt;
	}
	ck_assert_uint_eq(got, 3);
	ck_assert_uint_eq(nq_model_level(m), 1);
	nq_model_close(m);
}
END_TEST

struct waiter {
	struct nq_model *m;
	uint64_t ticket;
	int rc;
	_Atomic int started;
};

static void *wait_thread(void *arg)
{
	struct waiter *w = arg;

	atomic_store(&w->started, 1);
	w->rc = nq_model_switch_wait(w->m, w->ticket, -1, NULL);
	return NULL;
}

START_TEST(close_mid_switch_cancels_cleanly)
{
	struct nq_model *m = open_model(-1, 0, 0, 0);
	struct waiter w = { .m = m };
	pthread_t th;
	uint64_t t = 0;

	for (int i = 0; i < 200; i++)
		ck_assert_int_eq(nq_model_request_level(m, (unsigned int)(i % 3), &t), 0);
	w.ticket = t;
	ck_assert_int_eq(pthread_create(&th, NULL, wait_thread, &w), 0);
	while (!atomic_load(&w.started))
		sched_yield();
	nq_model_close(m);	/* returns only once the waiter has left */
	ck_assert_int_eq(pthread_join(th, NULL), 0);
	ck_assert_msg(w.rc == -ECANCELED || w.rc == 0, "waiter got %d", w.rc);
}
END_TEST

/* ---------------------------------------------------------------- */
/* Graded switching.                                                 */

START_TEST(budget_steps_down_largest_planes_first)
{
	struct nq_model *m = open_model(-1, 0, 0, 0);
	struct nq_session *s;
	struct nq_residency st;
	struct nq_run_info info;
	uint64_t full, floor, prev_usable = UINT64_MAX, prev_cached = UINT64_MAX;
	unsigned int prev_deg = 0, distinct = 0;
	float out[16];
	int used;

	ck_assert_int_eq(nq_session_create(m, &s), 0);
	ck_assert_int_eq(nq_model_residency(m, &st), 0);
	full = nq_model_weight_bytes(m, 2);
	floor = st.floor;
	for (int step = 0; step <= 10; step++) {
		uint64_t budget = full - (full - floor) * (uint64_t)step / 10, usable = 0, cached = 0;
		uint8_t lv[NL];

		ck_assert_int_eq(nq_model_set_budget(m, budget), 0);
		ck_assert_int_eq(nq_model_residency(m, &st), 0);
		ck_assert_uint_eq(st.level, 2);		/* the nominal level stays */
		for (unsigned int k = 0; k < NLEV; k++) {
			usable += st.usable_bytes[k];
			cached += st.cached_bytes[k];
		}
		ck_assert_uint_le(usable - st.usable_bytes[0] + floor, budget);
		ck_assert_uint_le(usable, prev_usable);
		ck_assert_uint_le(cached, prev_cached);
		ck_assert_uint_ge(st.layers_degraded, prev_deg);
		distinct += cached < prev_cached;
		ck_assert_int_eq(nq_session_run(s, inputs, out, &used), 0);
		ck_assert_int_eq(nq_session_last_run(s, &info), 0);
		ck_assert_uint_eq(info.level, 2);
		ck_assert_uint_eq(info.layers_degraded, st.layers_degraded);
		ck_assert_int_eq(used, 2 | (st.layers_degraded ? NQ_LEVEL_DEGRADED : 0));
		for (int j = 0; j < NL; j++) {
			lv[j] = info.layer_level[j];
			ck_assert_uint_eq(lv[j], nq_switch_layer_cap(m, (uint32_t)j));
		}
		ck_assert_mem_eq(out, oracle_out(index_of(lv), 0), sizeof(out));
		if (step == 1) {
			/* The first plane to go: level 2 of the largest layer
			 * (fc0 and fc1 both have 72 KiB; ties go to the first). */
			ck_assert_uint_eq(lv[0], 1);
			ck_assert_uint_eq(lv[1], 2);
		}
		prev_usable = usable;
		prev_cached = cached;
		prev_deg = st.layers_degraded;
	}
	/* Memory stepped through intermediate sizes, down to the floor. */
	ck_assert_uint_ge(distinct, 5);
	ck_assert_int_eq(nq_model_residency(m, &st), 0);
	ck_assert_uint_eq(st.layers_degraded, NL);
	ck_assert_uint_eq(sum_above(st.usable_bytes, 1), 0);
	ck_assert_uint_eq(sum_above(st.mapped_bytes, 1), 0);
	/* A level switch stays within the budget; lifting it restores all. */
	ck_assert_int_eq(nq_model_switch(m, 1, NULL), 0);
	ck_assert_int_eq(nq_model_residency(m, &st), 0);
	ck_assert_uint_eq(st.usable_bytes[1], 0);
	ck_assert_int_eq(nq_model_set_budget(m, NQ_BUDGET_NONE), 0);
	ck_assert_int_eq(nq_model_switch(m, 2, NULL), 0);
	ck_assert_int_eq(nq_session_run(s, inputs, out, &used), 0);
	ck_assert_int_eq(used, 2);
	ck_assert_mem_eq(out, oracle_out(NVEC - 1, 0), sizeof(out));
	nq_session_destroy(s);
	nq_model_close(m);
}
END_TEST

/* ---------------------------------------------------------------- */
/* The stress test.                                                  */

struct stress {
	struct nq_model *m;
	_Atomic int stop;
	_Atomic uint64_t runs, mismatches, degraded_runs, faulted_back, withdrawn;
	uint64_t per_level[NLEV];
	char first_error[256];
	pthread_mutex_t lock;
};

/* After every drop, with the switch lock held: give a misbehaving reader
 * time to touch what was dropped, then demand that none of it came back
 * into our page tables. */
static void drop_hook(void *arg, const uint8_t *base, const struct nq_extent *ext, unsigned int n)
{
	struct stress *st = arg;
	struct timespec ts = { 0, 100000 };

	nanosleep(&ts, NULL);
	for (unsigned int i = 0; i < n; i++)
		if (pagemap_present(base + ext[i].off, ext[i].len))
			atomic_fetch_add(&st->faulted_back, 1);
}

static void *reader(void *arg)
{
	struct stress *st = arg;
	struct nq_session *s;
	struct nq_run_info info;
	float out[16];
	unsigned int i = 0;
	int used;

	ck_assert_int_eq(nq_session_create(st->m, &s), 0);
	while (!atomic_load(&st->stop)) {
		const float *in = inputs + (size_t)(i % NIN) * DIMS[0];
		uint8_t lv[NL];
		bool bad;

		if (nq_session_run(s, in, out, &used) < 0) {
			pthread_mutex_lock(&st->lock);
			snprintf(st->first_error, sizeof(st->first_error), "run: %s", nq_last_error());
			pthread_mutex_unlock(&st->lock);
			atomic_fetch_add(&st->mismatches, 1);
			break;
		}
		nq_session_last_run(s, &info);
		memcpy(lv, info.layer_level, NL);
		bad = memcmp(out, oracle_out(index_of(lv), i % NIN), sizeof(out)) != 0 ||
		      (used & NQ_LEVEL_MASK) != (int)info.level ||
		      !!(used & NQ_LEVEL_DEGRADED) != (info.layers_degraded > 0);
		for (int j = 0; j < NL; j++)
			bad |= lv[j] > info.level;
		if (bad) {
			pthread_mutex_lock(&st->lock);
			if (!st->first_error[0])
				snprintf(st->first_error, sizeof(st->first_error),
					 "input %u, level %u (used %#x), layers %u/%u/%u/%u: output differs from the oracle",
					 i % NIN, info.level, used, lv[0], lv[1], lv[2], lv[3]);
			pthread_mutex_unlock(&st->lock);
			atomic_fetch_add(&st->mismatches, 1);
		}
		atomic_fetch_add(&st->runs, 1);
		atomic_fetch_add(&st->degraded_runs, info.layers_degraded > 0);
		i++;
	}
	atomic_fetch_add(&st->withdrawn, nq_session_withdrawn(s));
	nq_session_destroy(s);
	return NULL;
}

START_TEST(stress_random_switches_under_inference)
{
	struct stress st = { 0 };
	struct nq_residency rs;
	pthread_t th[3];
	unsigned int switches = 3000, async = 0, budgets = 0;
	const char *env = getenv("NQ_STRESS_SWITCHES");
	uint64_t floor, full, t = 0;
	struct timespec t0, t1;

	if (env)
		switches = (unsigned int)strtoul(env, NULL, 10);
	if (pagemap_present(inputs == NULL ? NULL : (const uint8_t *)inputs, 1) == UINT64_MAX)
		NQ_SKIP("/proc/self/pagemap cannot be read: dropped pages cannot be watched");
	if (!evictable())
		NQ_SKIP("%s is on tmpfs/ramfs: its pages cannot be evicted", nq_test_tmpdir());
	pthread_mutex_init(&st.lock, NULL);
	st.m = open_model(-1, 0, 0, 0);
	nq_switch_set_drop_hook(st.m, drop_hook, &st);
	ck_assert_int_eq(nq_model_residency(st.m, &rs), 0);
	floor = rs.floor;
	full = nq_model_weight_bytes(st.m, 2);
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, reader, &st), 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (unsigned int n = 0; n < switches; n++) {
		unsigned int op = (unsigned int)(next() % 100), level = (unsigned int)(next() % NLEV);
		struct nq_switch_result r;

		if (op < 55) {
			/* Half the time, let queued requests finish first so the
			 * residency can be checked against this level alone. */
			bool check = op & 1;

			if (check && t)
				ck_assert_int_eq(nq_model_switch_wait(st.m, t, -1, NULL), 0);
			ck_assert_int_eq(nq_model_switch(st.m, level, &r), 0);
			ck_assert_uint_eq(r.level, level);
			st.per_level[level]++;
			if (check && rs.budget == NQ_BUDGET_NONE) {
				/* Whole regions above the level: out of the page
				 * tables and the page cache, right now. */
				ck_assert_int_eq(nq_model_residency(st.m, &rs), 0);
				if (rs.budget == NQ_BUDGET_NONE) {
					ck_assert_uint_eq(sum_above(rs.mapped_bytes, level + 1), 0);
					ck_assert_uint_eq(sum_above(rs.cached_bytes, level + 1), 0);
					ck_assert_uint_eq(sum_above(rs.mapped_bytes, 0),
							  sum_above(rs.region_bytes, 0) -
							  sum_above(rs.region_bytes, level + 1));
				}
			}
		} else if (op < 80) {
			ck_assert_int_eq(nq_model_request_level(st.m, level, &t), 0);
			async++;
			if (op & 1)
				ck_assert_int_eq(nq_model_switch_wait(st.m, t, -1, NULL), 0);
		} else if (op < 95) {
			uint64_t b = op < 85 ? NQ_BUDGET_NONE
					     : floor + (full - floor) * (next() % 100) / 100;

			if (op & 1) {
				ck_assert_int_eq(nq_model_set_budget(st.m, b), 0);
			} else {
				ck_assert_int_eq(nq_model_request_budget(st.m, b, &t), 0);
				async++;
			}
			rs.budget = b;
			budgets++;
		} else {
			ck_assert_int_eq(nq_model_switch(st.m, NLEV + (unsigned int)(next() % 5), NULL),
					 -EINVAL);
			ck_assert_int_eq(nq_model_set_budget(st.m, floor - 1 - next() % floor), -ENOSPC);
		}
	}
	if (t)
		nq_model_switch_wait(st.m, t, -1, NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	atomic_store(&st.stop, 1);
	for (int i = 0; i < 3; i++)
		pthread_join(th[i], NULL);
	ck_assert_int_eq(nq_model_residency(st.m, &rs), 0);
	fprintf(stderr, "stress: %u switches (%u queued, %u budgets) in %.2f s, %llu inferences "
		"(%llu degraded, %llu withdrawn by a drop and run again), %llu mismatches, "
		"%llu dropped ranges faulted back; %s\n",
		switches, async, budgets,
		(double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
		(unsigned long long)st.runs, (unsigned long long)st.degraded_runs,
		(unsigned long long)st.withdrawn,
		(unsigned long long)st.mismatches, (unsigned long long)st.faulted_back,
		nq_model_isa(st.m));
	ck_assert_msg(st.mismatches == 0, "%llu mismatches; first: %s",
		      (unsigned long long)st.mismatches, st.first_error);
	ck_assert_uint_eq(st.faulted_back, 0);
	ck_assert_uint_gt(st.runs, 100);
	ck_assert_uint_gt(st.degraded_runs, 0);
	ck_assert_uint_ge(rs.switches, switches / 2);
	for (int k = 0; k < NLEV; k++)
		ck_assert_uint_gt(st.per_level[k], 0);
	nq_model_close(st.m);
	pthread_mutex_destroy(&st.lock);
}
END_TEST

/* ---------------------------------------------------------------- */
/* Withdrawing a running inference.                                  */

#define NODE_MS 100		/* a full-level node, slowed down by the hook */

struct slow {
	struct nq_session *s;
	bool explicit_level;
	_Atomic int in_node2;
	float out[16];
	int used, err;
};

/* Full-level nodes take NODE_MS each: an inference the kernel is evicting
 * planes under, faulting them back one by one. */
static void slow_hook(void *arg, uint32_t node, const uint8_t *lv)
{
	struct slow *sl = arg;
	struct timespec ts = { 0, NODE_MS * 1000000L };

	if (lv[0] != NLEV - 1)
		return;
	if (node == 2)
		atomic_store(&sl->in_node2, 1);
	nanosleep(&ts, NULL);
}

static void *slow_run(void *arg)
{
	struct slow *sl = arg;

	if (sl->explicit_level)
		sl->err = nq_session_run_level(sl->s, NLEV - 1, inputs, sl->out);
	else
		sl->err = nq_session_run(sl->s, inputs, sl->out, &sl->used);
	return NULL;
}

/* Start a slowed-down full-level inference, drop to level 0 while it is in
 * its third node (four more to go), return the drop's wait for readers. */
static uint64_t drop_under(struct nq_model *m, struct slow *sl)
{
	struct nq_switch_result r;
	struct timespec ts = { 0, 1000000 };
	pthread_t th;

	ck_assert_int_eq(nq_model_switch(m, NLEV - 1, NULL), 0);
	atomic_store(&sl->in_node2, 0);
	ck_assert_int_eq(pthread_create(&th, NULL, slow_run, sl), 0);
	while (!atomic_load(&sl->in_node2))
		nanosleep(&ts, NULL);
	ck_assert_int_eq(nq_model_switch(m, 0, &r), 0);
	ck_assert_uint_eq(r.level, 0);
	pthread_join(th, NULL);
	ck_assert_int_eq(sl->err, 0);
	return r.wait_ns;
}

START_TEST(drop_withdraws_a_long_inference_within_one_node)
{
	struct nq_model *m = open_model(NLEV - 1, 0, 0, 0);
	struct slow sl = { 0 };
	uint64_t wait;

	ck_assert_int_eq(nq_session_create(m, &sl.s), 0);
	nq_session_set_node_hook(sl.s, slow_hook, &sl);

	/* At the level in force: it leaves at the next node boundary and runs
	 * again, wholly at level 0, byte for byte the oracle's level-0 answer. */
	wait = drop_under(m, &sl);
	ck_assert_uint_lt(wait, (uint64_t)NODE_MS * 5 / 2 * 1000000);
	ck_assert_int_eq(sl.used, 0);
	ck_assert_uint_eq(nq_session_withdrawn(sl.s), 1);
	ck_assert_mem_eq(sl.out, oracle_out(0, 0), sizeof(sl.out));

	/* At an explicit level it cannot move: the drop waits for all of it
	 * (nodes 2-5), and the answer is the full level's. */
	sl.explicit_level = true;
	wait = drop_under(m, &sl);
	ck_assert_uint_ge(wait, (uint64_t)NODE_MS * 3 * 1000000);
	ck_assert_uint_eq(nq_session_withdrawn(sl.s), 1);
	ck_assert_mem_eq(sl.out, oracle_out(NVEC - 1, 0), sizeof(sl.out));

	nq_session_destroy(sl.s);
	nq_model_close(m);
}
END_TEST

#define PART_MS 40		/* a part of a full-level GEMM, slowed down */

struct slow_parts {
	struct nq_session *s;
	_Atomic int in_layer1;		/* parts of layer 1 started */
	_Atomic int parts_after_drop;	/* full-level parts started after it */
	_Atomic int dropped;
	float out[16];
	int used, err;
};

/* Every full-level part takes PART_MS: a big GEMM faulting its planes back. */
static void slow_part_hook(void *arg, uint32_t layer, unsigned int part, const uint8_t *lv)
{
	struct slow_parts *sp = arg;
	struct timespec ts = { 0, PART_MS * 1000000L };

	(void)part;
	if (lv[layer] != NLEV - 1)
		return;
	if (atomic_load(&sp->dropped))
		atomic_fetch_add(&sp->parts_after_drop, 1);
	if (layer == 1)
		atomic_fetch_add(&sp->in_layer1, 1);
	nanosleep(&ts, NULL);
}

static void *slow_parts_run(void *arg)
{
	struct slow_parts *sp = arg;

	sp->err = nq_session_run(sp->s, inputs, sp->out, &sp->used);
	return NULL;
}

START_TEST(drop_withdraws_a_long_inference_within_one_part)
{
	/* Layer 1 is a 512-channel GEMM: 8 parts of 64 channels, 320 ms at one
	 * thread and 160 ms at two.  Dropped in its second part, the run stops
	 * claiming parts: the drop waits for the parts in flight (one per
	 * thread), and the answer is wholly level 0's. */
	struct nq_model *m = open_model(NLEV - 1, 0, 0, 0);
	struct timespec ts = { 0, 1000000 };

	for (unsigned int threads = 1; threads <= 2; threads++) {
		struct nq_session_opts o = { .threads = threads };
		struct slow_parts sp = { 0 };
		struct nq_switch_result r;
		pthread_t th;
		int after;

		ck_assert_int_eq(nq_session_create_opts(m, &o, &sp.s), 0);
		nq_session_set_part_hook(sp.s, slow_part_hook, &sp);
		ck_assert_int_eq(nq_model_switch(m, NLEV - 1, NULL), 0);
		ck_assert_int_eq(pthread_create(&th, NULL, slow_parts_run, &sp), 0);
		while (atomic_load(&sp.in_layer1) < (int)threads + 1)
			nanosleep(&ts, NULL);
		atomic_store(&sp.dropped, 1);
		ck_assert_int_eq(nq_model_switch(m, 0, &r), 0);
		pthread_join(th, NULL);
		ck_assert_int_eq(sp.err, 0);
		ck_assert_int_eq(sp.used, 0);
		ck_assert_uint_eq(nq_session_withdrawn(sp.s), 1);
		ck_assert_mem_eq(sp.out, oracle_out(0, 0), sizeof(sp.out));
		/* The threads' parts in flight may finish; none starts after. */
		after = atomic_load(&sp.parts_after_drop);
		ck_assert_int_le(after, (int)threads);
		ck_assert_uint_lt(r.wait_ns, (uint64_t)PART_MS * 5 / 2 * 1000000);
		nq_session_destroy(sp.s);
	}
	nq_model_close(m);
}
END_TEST

/* ---------------------------------------------------------------- */
/* Large folios (residency.h, "Large folios").                        */

#define MIB (1ull << 20)

static uint64_t file_pmd_mapped(void)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[256];
	uint64_t sum = 0;
	unsigned long kb;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "FilePmdMapped: %lu", &kb) == 1)
			sum += kb * 1024;
	fclose(f);
	return sum;
}

static uint64_t cached_at(const struct nq_res *r, uint64_t off, uint64_t len)
{
	uint64_t b = UINT64_MAX;

	ck_assert_int_eq(nq_res_cached(r, off, len, &b), 0);
	return b;
}

static uint64_t mapped_at(const struct nq_res *r, uint64_t off, uint64_t len)
{
	uint64_t b = UINT64_MAX;

	ck_assert_int_eq(nq_res_mapped(r, off, len, &b), 0);
	return b;
}

/* A size-byte file NAME in the test directory, written with a pattern
 * that differs from page to page and synced to disk; its path goes to
 * path, the bytes to *buf (malloc'd).  Returns the fd, open read-write. */
static int patterned_file(const char *name, uint64_t size, char *path, size_t len, uint8_t **buf)
{
	int fd;

	snprintf(path, len, "%s/%s", nq_test_tmpdir(), name);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	ck_assert_int_ge(fd, 0);
	*buf = malloc(size);
	ck_assert_ptr_nonnull(*buf);
	for (uint64_t i = 0; i < size; i++)
		(*buf)[i] = (uint8_t)(i * 7 + (i >> 12));
	ck_assert_int_eq(pwrite(fd, *buf, size, 0), (ssize_t)size);
	ck_assert_int_eq(fsync(fd), 0);
	return fd;
}

/*
 * A 10 MiB file mapped 2 MiB-aligned: a page-in of a range with unaligned
 * ends reads exactly the range (nothing around it is cached) and maps its
 * whole 2 MiB blocks with PMDs; a drop that splits two of those blocks
 * releases exactly its own bytes and leaves every other page of the range
 * mapped with the right contents; dropping the rest releases the rest.
 */
START_TEST(large_folios_page_in_exactly_and_drop_exactly)
{
	const uint64_t size = 10 * MIB + 12288;
	const struct nq_extent e = { 2 * MIB - 8192, 6 * MIB + 20480 };
	const struct nq_extent d = { 3 * MIB, 2 * MIB };
	const struct nq_extent rest[2] = { { e.off, d.off - e.off },
					   { d.off + d.len, e.off + e.len - d.off - d.len } };
	uint64_t rd = 0, rel = 0, unm = 0, lim = (size + 4095) & ~4095ull;
	char path[640];
	uint8_t *buf, *resv, *base;
	struct nq_res r;
	int fd;

	fd = patterned_file("huge.bin", size, path, sizeof(path), &buf);
	resv = mmap(NULL, size + 2 * MIB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	ck_assert_ptr_ne(resv, MAP_FAILED);
	base = (uint8_t *)(((uintptr_t)resv + 2 * MIB - 1) & ~(uintptr_t)(2 * MIB - 1));
	ck_assert_ptr_eq(mmap(base, size, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0), base);
	ck_assert_int_eq(nq_res_init(&r, fd, base, size, 0), 0);
	if (!r.huge) {
		nq_res_fini(&r);
		munmap(resv, size + 2 * MIB);
		close(fd);
		free(buf);
		NQ_SKIP("no transparent huge pages in this kernel");
	}
	/* Start cold: nothing of the file in the page cache. */
	ck_assert_int_eq(madvise(base, size, MADV_DONTNEED), 0);
	ck_assert_int_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	ck_assert_uint_eq(cached_at(&r, 0, size), 0);

	ck_assert_int_eq(nq_res_page_in(&r, &e, 1, NQ_PAGEIN_DEFAULT, &rd), 0);
	if (file_pmd_mapped() < 6 * MIB) {
		nq_res_fini(&r);
		munmap(resv, size + 2 * MIB);
		close(fd);
		free(buf);
		NQ_SKIP("the page cache gave no 2 MiB folios here (file system without large folios?)");
	}
	ck_assert_uint_eq(rd, e.len);
	ck_assert_uint_eq(cached_at(&r, e.off, e.len), e.len);
	ck_assert_uint_eq(mapped_at(&r, e.off, e.len), e.len);
	/* Exact: nothing before or after the range was read (the header page
	 * the probe in nq_res_init touched was evicted above). */
	ck_assert_uint_eq(cached_at(&r, 0, e.off), 0);
	ck_assert_uint_eq(cached_at(&r, e.off + e.len, lim - e.off - e.len), 0);
	ck_assert_int_eq(memcmp(base + e.off, buf + e.off, e.len), 0);

	/* A drop splitting the blocks [2, 4) and [4, 6) MiB. */
	ck_assert_int_eq(nq_res_drop(&r, &d, 1, NQ_DROP_DONTNEED, &rel, &unm, NULL), 0);
	ck_assert_uint_eq(rel, d.len);
	ck_assert_uint_eq(unm, d.len);
	ck_assert_uint_eq(cached_at(&r, d.off, d.len), 0);
	ck_assert_uint_eq(mapped_at(&r, rest[0].off, rest[0].len), rest[0].len);
	ck_assert_uint_eq(mapped_at(&r, rest[1].off, rest[1].len), rest[1].len);
	ck_assert_uint_eq(cached_at(&r, e.off, e.len), e.len - d.len);
	ck_assert_int_eq(memcmp(base + rest[0].off, buf + rest[0].off, rest[0].len), 0);
	ck_assert_int_eq(memcmp(base + rest[1].off, buf + rest[1].off, rest[1].len), 0);
	ck_assert_uint_eq(mapped_at(&r, d.off, d.len), 0);	/* reading them did not map d */

	/* The rest goes too; then a page-in brings every byte back. */
	ck_assert_int_eq(nq_res_drop(&r, rest, 2, NQ_DROP_DONTNEED, &rel, &unm, NULL), 0);
	ck_assert_uint_eq(rel, e.len - d.len);
	ck_assert_uint_eq(unm, e.len - d.len);
	ck_assert_uint_eq(cached_at(&r, 0, lim), 0);
	ck_assert_uint_eq(mapped_at(&r, 0, lim), 0);
	ck_assert_int_eq(nq_res_page_in(&r, &e, 1, NQ_PAGEIN_DEFAULT, &rd), 0);
	ck_assert_uint_eq(rd, e.len);
	ck_assert_uint_eq(cached_at(&r, 0, e.off), 0);
	ck_assert_uint_eq(cached_at(&r, e.off + e.len, lim - e.off - e.len), 0);
	/* The block [6, 8) MiB was never split: one PMD again.  The split
	 * ones keep their PTE tables (MADV_DONTNEED does not free them), so
	 * their new 2 MiB folios are mapped with PTEs. */
	ck_assert_uint_ge(file_pmd_mapped(), 2 * MIB);
	ck_assert_int_eq(memcmp(base + e.off, buf + e.off, e.len), 0);

	nq_res_fini(&r);
	munmap(resv, size + 2 * MIB);
	close(fd);
	unlink(path);
	free(buf);
}
END_TEST

/* read_ahead_kb of the device holding path, or -1. */
static long read_ahead_kb(const char *path)
{
	struct stat st;
	char f[96];
	long kb = -1;
	FILE *fp;

	if (stat(path, &st))
		return -1;
	snprintf(f, sizeof(f), "/sys/class/bdi/%u:%u/read_ahead_kb", major(st.st_dev),
		 minor(st.st_dev));
	fp = fopen(f, "re");
	if (fp && fscanf(fp, "%ld", &kb) != 1)
		kb = -1;
	if (fp)
		fclose(fp);
	return kb;
}

/*
 * While planes are dropped, a fault on a page the kernel reclaimed (an
 * inference touching a high plane under memory pressure) reads that page
 * and no other: the mapping's default read-around would read read_ahead_kb
 * around it and bring the dropped planes back.  An explicit POPULATE of a
 * cold range, which reads around on purpose, leaves the mapping that way.
 * With read-around on (everything in force) one fault reads around again.
 */
START_TEST(a_stray_fault_reads_only_its_own_page)
{
	const uint64_t size = 4 * MIB, ps = (uint64_t)sysconf(_SC_PAGESIZE);
	const struct nq_extent head = { 0, 256 * 1024 };
	char path[640];
	uint8_t *buf, *base;
	struct nq_res r;
	long ra_kb;
	int fd;

	if (!evictable())
		NQ_SKIP("%s is tmpfs: its pages cannot be evicted to fault them back", nq_test_tmpdir());
	fd = patterned_file("stray.bin", size, path, sizeof(path), &buf);
	ra_kb = read_ahead_kb(path);
	base = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	ck_assert_ptr_ne(base, MAP_FAILED);
	ck_assert_int_eq(nq_res_init(&r, fd, base, size, 0), 0);

	/* Rounds 0, 1 and 3 read one page; round 2 with read-around on. */
	for (int round = 0; round < 4; round++) {
		uint64_t got;

		nq_res_advise_dropped(&r, round != 2);
		ck_assert_int_eq(madvise(base, size, MADV_DONTNEED), 0);
		ck_assert_int_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
		ck_assert_uint_eq(cached_at(&r, 0, size), 0);
		ck_assert_uint_eq(*(volatile uint8_t *)(base + 3 * MIB + 100), buf[3 * MIB + 100]);
		got = cached_at(&r, 0, size);
		if (round != 2) {
			ck_assert_uint_eq(got, ps);
			ck_assert_uint_eq(mapped_at(&r, 0, size), ps);
		} else if (ra_kb >= 16) {
			ck_assert_msg(got > ps, "read-around on, read_ahead_kb %ld: one fault cached %llu bytes",
				      ra_kb, (unsigned long long)got);
		}
		/* Round 0 then pages a cold range in by read-around on purpose;
		 * its read-around goes on after the call returns: let it
		 * settle, or the next eviction could miss its last pages. */
		if (round == 0 || round == 2) {
			if (round == 0) {
				ck_assert_int_eq(nq_res_page_in(&r, &head, 1, NQ_PAGEIN_POPULATE, NULL), 0);
				ck_assert_uint_eq(mapped_at(&r, head.off, head.len), head.len);
				ck_assert_int_eq(memcmp(base + head.off, buf + head.off, head.len), 0);
			}
			for (uint64_t was = UINT64_MAX, now; (now = cached_at(&r, 0, size)) != was;
			     was = now)
				usleep(100000);
		}
	}
	nq_res_fini(&r);
	munmap(base, size);
	close(fd);
	unlink(path);
	free(buf);
}
END_TEST

static Suite *residency_suite(void)
{
	Suite *s = suite_create("residency");
	TCase *tc = tcase_create("mechanisms");
	TCase *api = tcase_create("api");
	TCase *graded = tcase_create("graded");
	TCase *stress = tcase_create("stress");

	tcase_add_loop_test(tc, drop_releases_and_pagein_restores_every_byte, 0, 4);
	tcase_add_test(tc, fallback_without_io_uring_does_the_same);
	tcase_add_test(tc, pageout_and_unmap_drops);
	tcase_add_test(tc, another_mapping_keeps_its_pages);
	tcase_add_test(tc, lazy_open_pages_nothing_in);
	tcase_add_test(tc, large_folios_page_in_exactly_and_drop_exactly);
	tcase_add_test(tc, a_stray_fault_reads_only_its_own_page);
	tcase_add_test(tc, a_part_bit_fault_reads_no_dropped_plane_back);
	suite_add_tcase(s, tc);
	tcase_add_test(api, bad_requests_fail_clearly);
	tcase_add_test(api, lock_resident_names_rlimit_memlock);
	tcase_add_test(api, request_completes_through_the_eventfd);
	tcase_add_test(api, close_mid_switch_cancels_cleanly);
	suite_add_tcase(s, api);
	tcase_add_test(graded, budget_steps_down_largest_planes_first);
	tcase_add_test(graded, drop_withdraws_a_long_inference_within_one_node);
	tcase_add_test(graded, drop_withdraws_a_long_inference_within_one_part);
	suite_add_tcase(s, graded);
	tcase_add_test(stress, stress_random_switches_under_inference);
	tcase_set_timeout(stress, 120);
	suite_add_tcase(s, stress);
	return s;
}

int main(void)
{
	setup_once();
	return nq_test_run(residency_suite());
}
