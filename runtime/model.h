/* SPDX-License-Identifier: MIT */
/*
 * Internals of the runtime: the loaded model (model.c), its activation arena
 * plan (arena.c) and the executor (session.c).  Not installed; tests use it
 * to check the plan and to run at explicit levels.
 */
#ifndef NQ_MODEL_H
#define NQ_MODEL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "kernels/kernels.h"
#include "nestquant.h"
#include "nq_format.h"
#include "requant.h"

#define NQ_ARENA_ALIGN 64

/* One tensor as the executor sees it. */
struct nq_xtensor {
	uint8_t dtype;			/* enum nq_tensor_type */
	uint8_t rank;
	bool nhwc;			/* stored NHWC (rank-4 u8/s8) */
	bool used;			/* needs arena space */
	uint32_t dims[4];		/* logical */
	uint32_t n, c, h, w;		/* dims padded to 4-D: [N, C, H, W] */
	uint64_t count;
	uint64_t bytes;
	float scale;
	int32_t zp, qmin, qmax;		/* storage range for u8/s8 */
	int32_t first, last;		/* lifetime in node indices (-1: before node 0) */
	uint64_t offset;		/* in the arena */
};

/* One node with everything derived at load. */
struct nq_xnode {
	uint32_t op;
	uint32_t index;
	const char *name;
	uint32_t n_in;
	const uint32_t *in;
	uint32_t out;
	/*
	 * Residual ADD fusion (model.c plan_fusion): on a CONV, the ADD node
	 * whose output it writes instead of its own (which then has no
	 * buffer); on that ADD, the CONV node that computes it (the ADD is
	 * skipped).  -1 when not fused.
	 */
	int32_t fused;
	union {
		struct {
			struct nq_conv_args tmpl;	/* level fields filled per run */
			int32_t *bias32;		/* [levels][oc] */
			struct nq_rq *rq;		/* [levels][oc] */
			bool depthwise;
			struct nq_add_args add;		/* fused: the ADD, conv output as x1 */
			uint32_t res;			/* fused: the ADD's other input */
		} conv;
		struct nq_add_args add;
		struct nq_pool_args pool;
		struct nq_gap_args gap;
		struct nq_eltwise_args elt;
		struct nq_quant_args quant;
		struct {
			struct nq_eltwise_args *in;	/* [n_in] */
			uint32_t axis;
		} concat;
		uint32_t axis;				/* SOFTMAX */
	} u;
	struct nq_rq *avg_table;			/* AVGPOOL [kh*kw + 1] */
};

struct nq_model {
	struct nq_file *file;
	const struct nq_kernels *kern;
	uint32_t n_levels;
	uint8_t level_bits[NQ_FORMAT_MAX_LEVELS];
	_Atomic unsigned int level;

	uint32_t n_tensors;
	struct nq_xtensor *t;
	uint32_t n_nodes;
	struct nq_xnode *nodes;

	struct nq_switch *sw;			/* residency and switching (switch.c) */
	struct nq_kmod_backing *kmod;		/* planes in nestquant.ko (kmod_backing.c), or NULL */
	uint32_t n_layers;			/* weight layers in the file */

	uint32_t input, output;			/* graph input 0 / output 0 */
	struct nq_disk_preprocess pre;
	uint64_t arena_bytes;
	size_t tile_bytes;			/* weight scratch per session */
	uint32_t fused_adds;			/* ADD nodes fused into a CONV */
};

/* Arena planning (arena.c): one item per tensor that needs memory. */
struct nq_arena_item {
	uint64_t size;
	int32_t first, last;			/* live over nodes [first, last] */
	uint64_t offset;			/* result */
};

/*
 * Give every item an offset (multiple of align) so that items whose
 * lifetimes overlap never overlap in memory; greedy, largest first, each at
 * the lowest gap that fits.  *total receives the arena size.  Allocates
 * O(n) temporaries; -ENOMEM, -EOVERFLOW.
 */
int nq_arena_plan(struct nq_arena_item *items, uint32_t n, uint64_t align, uint64_t *total);

/*
 * Residency and switching (switch.c).  nq_switch_init pages in `level`
 * (unless NQ_OPEN_LAZY) and publishes it; nq_switch_fini stops the
 * switching thread and waits for API users.
 *
 * An inference brackets its run with nq_switch_enter/nq_switch_leave:
 * enter fills layer_level[0 .. layers) with the level each weight layer
 * runs at (level >= 0: that level for every layer; -1: the level in force,
 * lowered per layer where a budget dropped planes) and returns the number
 * of layers below the nominal level; a drop of any plane the inference may
 * read waits for its leave.  Never blocks.  When levels live in nestquant.ko
 * (m->kmod), enter also pins their regions (pin->kmod; leave unpins) and,
 * for level -1, runs below a purged region (pin->level is the level used).
 */
struct nq_pin {
	unsigned int slot, level;
	unsigned int kmod;			/* levels pinned in nestquant.ko regions (bit k) */
	uint64_t drops;				/* drops seen (nq_switch_withdrawn) */
};
int nq_switch_init(struct nq_model *m, const struct nq_model_opts *opts, unsigned int level);
void nq_switch_fini(struct nq_model *m);
unsigned int nq_switch_enter(struct nq_model *m, int level, uint8_t *layer_level,
			     struct nq_pin *pin);
void nq_switch_leave(struct nq_model *m, const struct nq_pin *pin);
/* Between nodes of an inference entered with level -1: true when a drop
 * unpublished a plane layer_level[] runs with (leave, enter, start over). */
bool nq_switch_withdrawn(struct nq_model *m, struct nq_pin *pin, const uint8_t *layer_level);
/* The same question from any thread, without touching pin (between the
 * parts of a node). */
bool nq_switch_must_leave(const struct nq_model *m, const struct nq_pin *pin,
			  const uint8_t *layer_level);
unsigned int nq_switch_layer_cap(const struct nq_model *m, uint32_t layer);

/* Tests: fn(arg, mapping base, extents, n) runs after every drop, with the
 * switch lock held (no page-in can run meanwhile). */
struct nq_extent;
typedef void (*nq_switch_hook_fn)(void *arg, const uint8_t *base, const struct nq_extent *ext,
				  unsigned int n);
void nq_switch_set_drop_hook(struct nq_model *m, nq_switch_hook_fn fn, void *arg);

/* Run with every weight layer at its own level (session.c; tests' oracle). */
int nq_session_run_layers(struct nq_session *s, const uint8_t *layer_level, const float *input,
			  float *output);

/* Inferences of s started over at a lower level after a drop (session.c). */
uint64_t nq_session_withdrawn(const struct nq_session *s);
/* Tests: fn(arg, node, layer_level) runs before every node of s's inferences. */
typedef void (*nq_node_hook_fn)(void *arg, uint32_t node, const uint8_t *layer_level);
void nq_session_set_node_hook(struct nq_session *s, nq_node_hook_fn fn, void *arg);
/* Called by the thread that runs it, before every part of a CONV/GEMM. */
typedef void (*nq_part_hook_fn)(void *arg, uint32_t layer, unsigned int part,
				const uint8_t *layer_level);
void nq_session_set_part_hook(struct nq_session *s, nq_part_hook_fn fn, void *arg);

/* Offset of the element at logical linear index i (row-major over dims). */
static inline uint64_t nq_xtensor_phys(const struct nq_xtensor *t, uint64_t i)
{
	uint64_t hw, c, n, p;

	if (!t->nhwc)
		return i;
	hw = (uint64_t)t->h * t->w;
	p = i % hw;
	c = (i / hw) % t->c;
	n = i / (hw * t->c);
	return (n * hw + p) * t->c + c;
}

#endif
