/* SPDX-License-Identifier: MIT */
/*
 * libnestquant — run a NestQuant (.nq) model at any of its nested precision
 * levels.
 *
 *	struct nq_model *m;
 *	struct nq_session *s;
 *	int level;
 *
 *	if (nq_model_open("model.nq", NULL, &m) < 0)
 *		fprintf(stderr, "%s\n", nq_last_error());
 *	nq_session_create(m, &s);
 *	nq_session_run(s, image, logits, &level);
 *	nq_session_destroy(s);
 *	nq_model_close(m);
 *
 * Conventions.  Every function returning int returns 0 (or a non-negative
 * value where documented) on success and a negative errno on failure; the
 * reason, in words, is then in nq_last_error() (per thread).  Nothing here
 * prints, exits or aborts.
 *
 * Levels are numbered 0 .. nq_model_level_count() - 1 from the lowest
 * precision (always resident) to the full one; nq_model_level_bits() gives
 * each level's weight bit width.  Activations are 8-bit at every level.
 *
 * Threads.  A model may be shared by any number of sessions on any threads;
 * one session runs one inference at a time (it owns the activation arena).
 * nq_model_set_level() may be called at any time: an inference runs wholly
 * at the level it read when it started, and reports that level.
 */
#ifndef NESTQUANT_H
#define NESTQUANT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NQ_API __attribute__((visibility("default")))

struct nq_model;
struct nq_session;

/* How a level's planes are brought into memory (see nq_model_switch). */
enum nq_pagein {
	/* Cold: WILLNEED, or where 2 MiB folios are possible io_uring
	 * MADV_POPULATE_READ per 2 MiB with WILLNEED at the unaligned ends;
	 * all cached: POPULATE (docs/performance.md "Switching"). */
	NQ_PAGEIN_DEFAULT = 0,
	NQ_PAGEIN_POPULATE,	/* madvise(MADV_POPULATE_READ) alone */
	NQ_PAGEIN_WILLNEED,	/* io_uring MADV_WILLNEED batches, then populate */
	NQ_PAGEIN_READ,		/* io_uring reads into scratch (fills the cache), then populate */
	NQ_PAGEIN_PREAD,	/* pread into scratch, then populate (no io_uring) */
};

/* How a level's planes are released. */
enum nq_drop {
	NQ_DROP_DEFAULT = 0,	/* = NQ_DROP_DONTNEED */
	NQ_DROP_DONTNEED,	/* MADV_DONTNEED + POSIX_FADV_DONTNEED (pages others map stay) */
	NQ_DROP_PAGEOUT,	/* MADV_PAGEOUT (reclaims pages only we map) */
	NQ_DROP_UNMAP,		/* MADV_DONTNEED only: leaves the page cache warm */
};

/* nq_model_opts.flags */
#define NQ_OPEN_LOCK_RESIDENT	(1u << 0)	/* mlock header, parameters, level 0's planes */
#define NQ_OPEN_NO_URING	(1u << 1)	/* do not use io_uring (the plain fallback) */
#define NQ_OPEN_LAZY		(1u << 2)	/* do not page the initial level in at open */
#define NQ_OPEN_NO_FUSE		(1u << 5)	/* run every ADD as its own node (also $NQ_FUSE=0) */

/* Options for nq_model_open (NULL = all defaults; zero-fill what you do not set). */
struct nq_model_opts {
	int level;		/* initial level: index, or -1 = the full (highest) level */
	unsigned int flags;	/* NQ_OPEN_* */
	enum nq_pagein pagein;
	enum nq_drop drop;
};

/* Layout of the caller's input buffer (from the model's preprocessing record). */
enum nq_input_layout {
	NQ_INPUT_NCHW = 1,
	NQ_INPUT_NHWC = 2,
};

/* A tensor shape in logical NCHW order; dims[i] for i < rank. */
struct nq_shape {
	unsigned int rank;
	uint32_t dims[4];
};

/*
 * Open and map a model, check it, pick the kernels (cpuid, or $NQ_ISA:
 * -ENOTSUP when it names kernels this build or CPU lacks), derive every
 * per-layer, per-level constant and plan the activation arena.  Weights are
 * not copied: they are read from the mapped file when an inference needs
 * them.  -EINVAL/-EBADMSG/-ENOTSUP for a file the runtime cannot run, with
 * the node or field named in nq_last_error().  The planes of the initial
 * level are paged in before this returns (unless NQ_OPEN_LAZY);
 * NQ_OPEN_LOCK_RESIDENT also mlocks what every level reads (the file's
 * header and parameters, level 0's planes): -ENOMEM or -EPERM,
 * naming RLIMIT_MEMLOCK and its value, when the limit is too low.
 */
NQ_API int nq_model_open(const char *path, const struct nq_model_opts *opts,
			 struct nq_model **out);

/* Release the model; every session on it must be destroyed first.  NULL is a no-op. */
NQ_API void nq_model_close(struct nq_model *m);

/* Number of levels (1 .. 8). */
NQ_API unsigned int nq_model_level_count(const struct nq_model *m);

/* Weight bit width of level `level`, or -EINVAL when out of range. */
NQ_API int nq_model_level_bits(const struct nq_model *m, unsigned int level);

/* Index of the level with `bits` weight bits, or -ENOENT. */
NQ_API int nq_model_level_for_bits(const struct nq_model *m, unsigned int bits);

/*
 * Switch to `level` and wait for it: the same as nq_model_switch(m, level,
 * NULL).  -EINVAL when out of range.
 */
NQ_API int nq_model_set_level(struct nq_model *m, unsigned int level);

/* The level in force (what the next nq_session_run will use). */
NQ_API unsigned int nq_model_level(const struct nq_model *m);

/*
 * Switching levels: paging plane regions in and out.
 *
 * Level k's planes (the residual of k over k - 1) are one contiguous range
 * of the file.  Switching up pages the missing ranges in (see enum
 * nq_pagein) and publishes the new level only once every page is resident
 * in this process's mapping: no inference ever sees a half-loaded level.
 * Switching down publishes the lower level first, then waits until every
 * inference that started at a level that reads the planes being dropped
 * has finished, then releases them (enum nq_drop) and checks with mincore
 * how many bytes really left memory.  Inferences are never blocked; an
 * inference runs wholly at the level (and per-layer levels, see
 * nq_model_set_budget) it read when it started.
 *
 * Switches on one model are serialised.  Each returns 0 or a negative
 * errno; the numbers of the switch are in struct nq_switch_result.
 */
struct nq_switch_result {
	int status;			/* 0 or -errno */
	unsigned int level;		/* level in force afterwards */
	unsigned int layers_degraded;	/* layers the budget holds below it */
	uint64_t bytes_read;		/* paged in that were not cached before */
	uint64_t bytes_released;	/* left the page cache (mincore, before - after) */
	uint64_t bytes_unmapped;	/* left this process's page tables */
	uint64_t wait_ns;		/* waiting for inferences on dropped planes */
	uint64_t unmap_ns;		/* request until dropped planes left our page tables */
	uint64_t release_ns;		/* request until they left the page cache too */
	uint64_t total_ns;		/* request to completion (accounting included) */
};

/*
 * Blocking switch, run in the calling thread.  res may be NULL.
 * -EINVAL for an unknown level; -ESHUTDOWN when the model is being closed;
 * I/O errors of the page-in (the level then stays where it was).
 */
NQ_API int nq_model_switch(struct nq_model *m, unsigned int level, struct nq_switch_result *res);

/*
 * Non-blocking switch: queue it for the model's switching thread (started
 * on first use) and return at once with *ticket (> 0) naming it.  Queued
 * requests run in order.  Completion: nq_model_switch_wait(), or poll /
 * epoll nq_model_switch_fd() for readability.  -EINVAL for an unknown
 * level (nothing queued); -ESHUTDOWN after nq_model_close() has started.
 */
NQ_API int nq_model_request_level(struct nq_model *m, unsigned int level, uint64_t *ticket);

/* The same for a budget (see nq_model_set_budget). */
NQ_API int nq_model_request_budget(struct nq_model *m, uint64_t bytes, uint64_t *ticket);

/*
 * An eventfd (non-blocking, close-on-exec, owned by the model: do not
 * close it) whose counter goes up by one for every queued request that
 * completes.  Read it to reset it, then collect results with
 * nq_model_switch_wait(m, ticket, 0, &res).
 */
NQ_API int nq_model_switch_fd(struct nq_model *m);

/*
 * Wait up to timeout_ms (0: just poll, -1: forever) for request `ticket`
 * and copy its result into *res (may be NULL).  Returns the request's
 * status; -EAGAIN when it is not done yet (poll) or -ETIMEDOUT; -ENOENT for
 * a ticket never issued or older than the last 64; -ECANCELED when the
 * model was closed before the request ran (the waiter returns before
 * nq_model_close() frees the model; it must not touch it afterwards).
 */
NQ_API int nq_model_switch_wait(struct nq_model *m, uint64_t ticket, int timeout_ms,
				struct nq_switch_result *res);

#define NQ_BUDGET_NONE UINT64_MAX

/*
 * Graded switching: keep at most `bytes` of plane memory (level 0 included)
 * resident and wait for it.  Planes are given up from the top level down
 * and, within a level, the largest layer's first, so memory steps through
 * intermediate sizes; an inference then runs each layer at the highest
 * level resident for it (nq_session_run reports NQ_LEVEL_DEGRADED).  A
 * later level switch stays within the budget.  NQ_BUDGET_NONE lifts it.
 * -ENOSPC when bytes is below the always-resident floor (level 0's
 * planes), naming both numbers.
 */
NQ_API int nq_model_set_budget(struct nq_model *m, uint64_t bytes);

/* Residency of a model right now. */
struct nq_residency {
	unsigned int level;			/* in force */
	unsigned int level_count;
	unsigned int layers;			/* weight layers */
	unsigned int layers_degraded;		/* held below `level` by the budget */
	uint64_t budget;			/* NQ_BUDGET_NONE when none */
	uint64_t floor;				/* bytes that never leave: level 0's planes */
	uint64_t region_bytes[8];		/* size of each level's plane range */
	uint64_t usable_bytes[8];		/* plane bytes of each level inferences may read */
	uint64_t cached_bytes[8];		/* of each range in the page cache (mincore) */
	uint64_t mapped_bytes[8];		/* of each range in this process's page tables */
	const char *io;				/* "io_uring", or why the fallback is used */
	const char *pagein, *drop;		/* method names */
	uint64_t switches;			/* completed so far */
};

/* Fill *out (mincore and /proc/self/pagemap over the plane ranges). */
NQ_API int nq_model_residency(struct nq_model *m, struct nq_residency *out);

/*
 * Input: the shape of the graph input in logical NCHW, the layout the
 * caller's buffer is in (NCHW or NHWC, from the model's preprocessing
 * record), and the number of floats one nq_session_run reads.
 */
NQ_API int nq_model_input_shape(const struct nq_model *m, struct nq_shape *shape);
NQ_API enum nq_input_layout nq_model_input_layout(const struct nq_model *m);
NQ_API size_t nq_model_input_count(const struct nq_model *m);

/* Output: shape of graph output 0 and the number of floats one run writes. */
NQ_API int nq_model_output_shape(const struct nq_model *m, struct nq_shape *shape);
NQ_API size_t nq_model_output_count(const struct nq_model *m);

/* Bytes of the activation arena each session allocates. */
NQ_API uint64_t nq_model_arena_bytes(const struct nq_model *m);

/* Bytes of weight planes an inference at `level` reads (regions 0..level). */
NQ_API uint64_t nq_model_weight_bytes(const struct nq_model *m, unsigned int level);

/* Name of the kernel table in use ("scalar", "avx2", ...). */
NQ_API const char *nq_model_isa(const struct nq_model *m);

/*
 * Residual ADDs computed in the epilogue of the CONV that produces one of
 * their inputs (the conv's own output is then never stored; the bytes are
 * those of conv-then-add).  0 when NQ_OPEN_NO_FUSE or $NQ_FUSE=0.
 */
NQ_API unsigned int nq_model_fused_adds(const struct nq_model *m);

/* Options for nq_session_create_opts (NULL = defaults). */
struct nq_session_opts {
	unsigned int threads;	/* 0 = default: $NQ_THREADS, else the CPUs this process may use */
};

/*
 * A session: the activation arena and scratch of one inference at a time.
 * All memory an inference needs is allocated here; nq_session_run never
 * allocates.
 */
NQ_API int nq_session_create(struct nq_model *m, struct nq_session **out);
NQ_API int nq_session_create_opts(struct nq_model *m, const struct nq_session_opts *opts,
				  struct nq_session **out);
NQ_API void nq_session_destroy(struct nq_session *s);

/*
 * One inference at the model's current level.  input: the caller's raw
 * values, nq_model_input_count() floats in nq_model_input_layout(); the
 * model's preprocessing ((v * input_scale - mean[c]) / std[c]) is applied
 * here.  output: nq_model_output_count() floats of graph output 0 in
 * logical (NCHW, row-major) order, dequantized when the graph's output is
 * 8-bit.  *level_used (may be NULL) receives the level it ran at; when a
 * budget held some layers below it, NQ_LEVEL_DEGRADED is or-ed in
 * (nq_session_last_run() tells which).  -ERANGE when a weight plane turns
 * out to be corrupt.
 */
#define NQ_LEVEL_DEGRADED 0x100
#define NQ_LEVEL_MASK 0xff
NQ_API int nq_session_run(struct nq_session *s, const float *input, float *output,
			  int *level_used);

/* What the last nq_session_run/_batch on this session ran at. */
struct nq_run_info {
	unsigned int level;		/* nominal level */
	unsigned int layers;		/* weight layers */
	unsigned int layers_degraded;	/* run below `level` */
	const uint8_t *layer_level;	/* [layers], valid until the next run */
};
NQ_API int nq_session_last_run(const struct nq_session *s, struct nq_run_info *info);

/* The same at an explicit level, every layer at it (tests, benchmarks).
 * Planes of a dropped level are faulted back in from the file. */
NQ_API int nq_session_run_level(struct nq_session *s, unsigned int level,
				const float *input, float *output);

/*
 * count inferences back to back at one level (read once, at the start):
 * input holds count * nq_model_input_count() floats, output count *
 * nq_model_output_count().
 */
NQ_API int nq_session_run_batch(struct nq_session *s, size_t count, const float *input,
				float *output, int *level_used);

/* Why the last call on this thread failed ("" if none).  Never NULL. */
NQ_API const char *nq_last_error(void);

/*
 * Autoswitch: pressure-driven switching in a background thread.
 *
 * A thread of the library follows a memory-pressure signal source (kmod,
 * the BPF monitor, PSI, or none = usage sampling only) and a hysteresis
 * policy, and switches the model's level through nq_model_switch: down
 * (residual planes released) at reclaim onset or above the high watermark,
 * up again once the pressure has been gone for the hold time.  Every
 * decision is appended as one JSON line to the policy log, with the
 * kernel timestamp of the triggering event, when the switch finished and
 * the bytes released.
 *
 * It starts by itself in nq_model_open() when the environment carries the
 * launcher's configuration ($NQ_SIGNAL or $NQ_CGROUP, see `nestquant
 * launch`), unless NQ_OPEN_NO_AUTOSWITCH is given or $NQ_AUTOSWITCH is "0";
 * a program can also start it explicitly.  nq_model_close() stops it.
 */
#define NQ_OPEN_NO_AUTOSWITCH	(1u << 3)	/* ignore the launcher's environment */

/* NULL fields fall back to the environment, then to the defaults. */
struct nq_autoswitch_opts {
	const char *signal;	/* "auto" "bpf" "kmod" "psi" "none"; else $NQ_SIGNAL, else auto */
	const char *cgroup;	/* memory cgroup dir; else $NQ_CGROUP, else our own */
	const char *policy_file;	/* key=value policy; else $NQ_POLICY, else defaults */
	const char *log_path;	/* JSON decision log; else $NQ_POLICY_LOG, else none */
	int log_fd;		/* > 0: log to this fd instead (the caller keeps it open) */
	const char *psi_path;	/* else $NQ_PSI_PATH, else the cgroup's memory.pressure */
	const char *pin_dir;	/* BPF monitor pins; else $NQ_MONITOR_PIN_DIR */
	const char *model_path;	/* bpf: also react to evictions of this file's pages */
};

/*
 * Start autoswitch on m (opts may be NULL).  -EBUSY when it already runs;
 * -EINVAL for a model with a single level; the signal source's error when
 * an explicitly named source cannot be opened (auto degrades instead).
 */
NQ_API int nq_model_enable_autoswitch(struct nq_model *m, const struct nq_autoswitch_opts *opts);

/* Stop it and wait for its thread (a switch in progress completes).  No-op when off. */
NQ_API void nq_model_disable_autoswitch(struct nq_model *m);

struct nq_autoswitch_info {
	int active;			/* 1 when running */
	char source[16];		/* "bpf", "psi", ... */
	char selection[1024];		/* why this source (and not the better ones) */
	uint64_t decisions;		/* switches the policy decided */
	uint64_t downs, ups;		/* of which down / up, completed */
	uint64_t failures;		/* switches that returned an error */
	uint64_t bytes_released;	/* by all down switches */
	uint64_t last_event_ns;		/* trigger of the last decision (CLOCK_MONOTONIC) */
	uint64_t last_done_ns;		/* when it completed */
};

/* Fill *out; active = 0 (and the rest zero) when autoswitch is off. */
NQ_API int nq_model_autoswitch_info(struct nq_model *m, struct nq_autoswitch_info *out);

/*
 * Kernel-module residency (optional; needs nestquant.ko, see README.md
 * "When to use the kernel module").
 *
 * The residual planes of levels from_level..top move out of the file
 * mapping into nestquant.ko regions: one region per level, filled by the
 * kernel from the .nq file (one copy), mapped read-only; the file's copy of
 * those ranges is then dropped from the page cache.  Every inference at such
 * a level pins its regions for its duration (one atomic instruction on a
 * shared page, no system call) and unpins after.  The kernel purges
 * unpinned regions inside its own reclaim: an inference whose pin finds its
 * region purged runs at the level below and reports that level.  Switching
 * to the level again (nq_model_switch/nq_model_set_level, or autoswitch
 * when its policy says so) refills the region.  A switch down leaves the
 * regions to the kernel, which may take them whenever it needs memory.
 *
 * from_level: 1 .. top, or 0 for the top level only.  -ENOENT when the
 * module is not loaded, -EALREADY when the model uses it already, -EINVAL
 * for a one-level model or a level out of range; the module's errors
 * (-E2BIG, -ENOSPC: over its max_region_mb / max_total_mb) otherwise.
 * Call it before inferences start (nq_model_open does with NQ_OPEN_KMOD;
 * autoswitch does for --signal kmod, and for auto when /dev/nestquant
 * exists).
 */
#define NQ_OPEN_KMOD		(1u << 4)	/* nq_model_use_kmod(m, 0) at open */

NQ_API int nq_model_use_kmod(struct nq_model *m, unsigned int from_level);

struct nq_kmod_residency {
	int active;			/* 1 when planes live in nestquant.ko */
	unsigned int from_level, top_level;
	uint64_t region_bytes;		/* of all regions */
	uint64_t resident_bytes;	/* held by the module now */
	uint64_t file_cached_bytes;	/* of the same ranges still in the page cache */
	unsigned int published;		/* levels whose region is valid now (bit k) */
	uint32_t purges;		/* by the kernel, all regions */
	uint64_t refills;		/* by switches up */
	uint64_t pin_failures;		/* inferences that found a region purged */
	uint64_t pin_failed_ns;		/* first of them since the last refill (CLOCK_MONOTONIC); 0: none */
	uint64_t last_purge_ns;		/* CLOCK_MONOTONIC, kernel stamp; 0: never */
	uint64_t last_refill_ns;	/* duration of the last refill */
};

/* Fill *out; active = 0 (the rest zero) when the model does not use the module. */
NQ_API int nq_model_kmod_status(struct nq_model *m, struct nq_kmod_residency *out);

#ifdef __cplusplus
}
#endif

#endif
