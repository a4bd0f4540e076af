// SPDX-License-Identifier: MIT
/*
 * Sessions and the executor: one pass over the nodes in file (topological)
 * order, each reading and writing its planned slot of the arena.  Nothing in
 * the inference path allocates; the levels are read once at the start
 * (nq_switch_enter: the level in force, and per weight layer the level a
 * budget leaves it) and used for the whole inference.  An inference at the
 * level in force that a drop withdraws (switch.c) starts over at the new
 * one, so it still runs at one set of levels from start to end.  A residual
 * ADD fused into the CONV that feeds it (model.c plan_fusion) is skipped:
 * that CONV wrote the ADD's output from its epilogue.
 *
 * Data movement ops (Flatten, Reshape, Concat) and the float ops at the
 * edges (preprocessing, Dequantize, Softmax) are here; everything on the
 * integer hot path goes through the kernel table.
 *
 * Built with -ffp-contract=off (runtime.mk): the preprocessing arithmetic is
 * specified as separate f32 operations and must not be fused into FMAs.
 */
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/pack.h"
#include "kmod_backing.h"
#include "model.h"
#include "nq_error.h"
#include "threadpool.h"

struct nq_session {
	struct nq_model *m;
	uint8_t *arena;
	int8_t *tile;			/* == tiles[0] */
	struct nq_pool *pool;		/* threads of this session (threadpool.h) */
	int8_t *tiles[NQ_MAX_THREADS];	/* kernel scratch, one per pool part (not thread) */
	uint8_t *layer_level;		/* [n_layers]: level of each weight layer this run */
	unsigned int kmod;		/* levels read from nestquant.ko regions this run */
	unsigned int last_level, last_degraded;
	uint64_t withdrawn;		/* inferences started over after a drop */
	struct nq_pin *pin;		/* this run's, if a drop may withdraw it */
	nq_node_hook_fn node_hook;	/* tests: before every node */
	void *node_hook_arg;
	nq_part_hook_fn part_hook;	/* tests: before every part of a CONV/GEMM */
	void *part_hook_arg;
};

/* run_one: the levels it ran with were withdrawn; start over. */
#define WITHDRAWN	1

int nq_session_create_opts(struct nq_model *m, const struct nq_session_opts *opts,
			   struct nq_session **out)
{
	struct nq_session *s;
	unsigned int threads;
	size_t bytes;
	int err;

	*out = NULL;
	err = nq_threads_choose(opts ? opts->threads : 0, &threads);
	if (err)
		return err;
	s = calloc(1, sizeof(*s));
	if (!s)
		return nq_fail(-ENOMEM, "session: out of memory");
	s->m = m;
	err = nq_pool_create(threads, &s->pool);
	if (err) {
		nq_session_destroy(s);
		return err;
	}
	bytes = (size_t)((m->arena_bytes + NQ_ARENA_ALIGN - 1) & ~(uint64_t)(NQ_ARENA_ALIGN - 1));
	s->arena = aligned_alloc(NQ_ARENA_ALIGN, bytes ? bytes : NQ_ARENA_ALIGN);
	for (unsigned int i = 0; i < threads; i++) {
		s->tiles[i] = aligned_alloc(64, ((m->tile_bytes + 63) & ~(size_t)63) + 64);
		if (!s->tiles[i])
			s->arena = (free(s->arena), NULL);
	}
	s->tile = s->tiles[0];
	s->layer_level = calloc(m->n_layers ? m->n_layers : 1, 1);
	if (!s->arena || !s->tile || !s->layer_level) {
		nq_session_destroy(s);
		return nq_fail(-ENOMEM, "session: cannot allocate an arena of %llu bytes",
			       (unsigned long long)m->arena_bytes);
	}
	*out = s;
	return 0;
}

int nq_session_create(struct nq_model *m, struct nq_session **out)
{
	return nq_session_create_opts(m, NULL, out);
}

void nq_session_destroy(struct nq_session *s)
{
	if (!s)
		return;
	nq_pool_destroy(s->pool);
	free(s->arena);
	for (unsigned int i = 0; i < NQ_MAX_THREADS; i++)
		free(s->tiles[i]);
	free(s->layer_level);
	free(s);
}

static void *slot(struct nq_session *s, uint32_t tensor)
{
	return s->arena + s->m->t[tensor].offset;
}

/* Raw caller values -> the graph input (f32, logical NCHW). */
static void preprocess(struct nq_session *s, const float *raw)
{
	const struct nq_model *m = s->m;
	const struct nq_xtensor *t = &m->t[m->input];
	const struct nq_disk_preprocess *p = &m->pre;
	bool nhwc = p->layout == NQ_LAYOUT_NHWC;
	uint64_t hw = (uint64_t)t->h * t->w;
	float *x = slot(s, m->input);

	for (uint32_t n = 0; n < t->n; n++)
		for (uint32_t c = 0; c < t->c; c++) {
			uint32_t pc = p->channels == 1 ? 0 : c;

			for (uint64_t i = 0; i < hw; i++) {
				uint64_t dst = ((uint64_t)n * t->c + c) * hw + i;
				uint64_t src = nhwc ? ((uint64_t)n * hw + i) * t->c + c : dst;
				float v = raw[src] * p->input_scale;

				v = v - p->mean[pc];
				x[dst] = v / p->std[pc];
			}
		}
}

static void dequantize(const struct nq_xtensor *I, const uint8_t *in, float *out)
{
	for (uint64_t i = 0; i < I->count; i++) {
		uint8_t b = in[nq_xtensor_phys(I, i)];
		int32_t u = I->dtype == NQ_TENSOR_S8 ? (int32_t)(int8_t)b : (int32_t)b;

		out[i] = nq_dequantize_one(u, I->scale, I->zp);
	}
}

/* Logical copy (Flatten/Reshape keep the NCHW linear order), requantising
 * 8-bit values when the parameters differ. */
static void relayout(const struct nq_xnode *x, const struct nq_xtensor *I,
		     const struct nq_xtensor *O, const uint8_t *in, uint8_t *out)
{
	if (I->dtype == NQ_TENSOR_F32) {
		memcpy(out, in, I->count * sizeof(float));
		return;
	}
	for (uint64_t i = 0; i < I->count; i++) {
		const struct nq_eltwise_args *e = &x->u.elt;
		uint8_t b = in[nq_xtensor_phys(I, i)];
		int32_t u = e->in_signed ? (int32_t)(int8_t)b : (int32_t)b;

		out[nq_xtensor_phys(O, i)] = (uint8_t)nq_rq_output(u - e->zx, e->rq, e->zy,
								    e->lo, e->hi);
	}
}

static void concat(struct nq_session *s, const struct nq_xnode *x)
{
	const struct nq_xtensor *O = &s->m->t[x->out];
	uint32_t axis = x->u.concat.axis, at = 0;
	uint64_t inner = 1, outer = 1;
	uint8_t *out = slot(s, x->out);

	for (uint32_t d = axis + 1; d < O->rank; d++)
		inner *= O->dims[d];
	for (uint32_t d = 0; d < axis; d++)
		outer *= O->dims[d];
	for (uint32_t j = 0; j < x->n_in; j++) {
		const struct nq_xtensor *J = &s->m->t[x->in[j]];
		const uint8_t *in = slot(s, x->in[j]);
		uint64_t len = J->dims[axis];

		for (uint64_t o = 0; o < outer; o++)
			for (uint64_t a = 0; a < len; a++)
				for (uint64_t i = 0; i < inner; i++) {
					uint64_t li = (o * len + a) * inner + i;
					uint64_t lo = (o * O->dims[axis] + at + a) * inner + i;

					if (O->dtype == NQ_TENSOR_F32) {
						((float *)(void *)out)[lo] = ((const float *)(const void *)in)[li];
					} else {
						const struct nq_eltwise_args *e = &x->u.concat.in[j];
						uint8_t b = in[nq_xtensor_phys(J, li)];
						int32_t u = e->in_signed ? (int32_t)(int8_t)b : (int32_t)b;

						out[nq_xtensor_phys(O, lo)] = (uint8_t)nq_rq_output(
							u - e->zx, e->rq, e->zy, e->lo, e->hi);
					}
				}
		at += J->dims[axis];
	}
}

/* Softmax over one axis (ONNX opset 13), in double, result rounded to f32.
 * Not part of the bit-exact contract: every ISA runs this same code. */
static void softmax(const struct nq_xtensor *T, uint32_t axis, const float *in, float *out)
{
	uint64_t inner = 1, outer = 1, len = T->rank ? T->dims[axis] : 1;

	for (uint32_t d = axis + 1; d < T->rank; d++)
		inner *= T->dims[d];
	for (uint32_t d = 0; d < axis && d < T->rank; d++)
		outer *= T->dims[d];
	for (uint64_t o = 0; o < outer; o++)
		for (uint64_t i = 0; i < inner; i++) {
			const float *x = in + o * len * inner + i;
			float *y = out + o * len * inner + i;
			double mx = -INFINITY, sum = 0;

			for (uint64_t a = 0; a < len; a++)
				if (x[a * inner] > mx)
					mx = x[a * inner];
			for (uint64_t a = 0; a < len; a++)
				sum += exp((double)x[a * inner] - mx);
			for (uint64_t a = 0; a < len; a++)
				y[a * inner] = (float)(exp((double)x[a * inner] - mx) / sum);
		}
}

/*
 * One CONV/GEMM split across the session's threads (kernels/pack.h
 * nq_conv_part).  Error messages live in the failing thread's error
 * channel, so a worker's message is copied out and re-raised here.
 *
 * A drop that withdraws the run (switch.c) is also noticed between parts,
 * not only between nodes: under the pressure that triggers it, a node's
 * upper planes are being evicted and it faults them back page by page, so
 * one big node (an MLP's 2048x2048 GEMM: 10 ms measured) was what the drop
 * waited for.  Every thread stops claiming parts, the node's output is
 * left unfinished and the run starts over (WITHDRAWN), so the drop waits
 * for one part per thread.
 *
 * `slot` below is the pool's part (threadpool.h), which any of the pool's
 * threads may run: the scratch tile and the error entry belong to the slot.
 * The node's own parts (`nparts`) are claimed from `next` by whichever slots
 * are running, so a slot that starts late usually finds none left.
 */
struct conv_job {
	struct nq_session *s;
	const struct nq_conv_args *a;
	bool depthwise, gemm;
	const uint8_t *in;
	uint8_t *out;
	unsigned int nparts;
	_Atomic unsigned int next;	/* parts are claimed in order by free threads */
	_Atomic bool left;		/* withdrawn: the output is unfinished */
	int err[NQ_MAX_THREADS];	/* per slot */
	_Atomic int msg_taken;		/* the first failing worker writes msg */
	char msg[256];
};

static void conv_part(void *arg, unsigned int slot, unsigned int nslots)
{
	struct conv_job *j = arg;
	struct nq_session *s = j->s;
	unsigned int part;
	int err = 0;

	(void)nslots;
	while (!err && !atomic_load_explicit(&j->left, memory_order_relaxed) &&
	       (part = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) < j->nparts) {
		if (s->pin && nq_switch_must_leave(s->m, s->pin, s->layer_level)) {
			atomic_store(&j->left, true);
			break;
		}
		if (s->part_hook)
			s->part_hook(s->part_hook_arg, j->a->wt.layer, part, s->layer_level);
		err = nq_conv_part(s->m->kern, j->depthwise, j->gemm, j->a, s->tiles[slot],
				   part, j->nparts, j->in, j->out);
	}
	j->err[slot] = err;
	if (err && slot && !atomic_exchange(&j->msg_taken, 1))
		snprintf(j->msg, sizeof(j->msg), "%s", nq_last_error());
}

static int run_conv(struct nq_session *s, const struct nq_conv_args *a, bool depthwise, bool gemm,
		    const uint8_t *in, uint8_t *out)
{
	struct conv_job j = { .s = s, .a = a, .depthwise = depthwise, .gemm = gemm,
			      .in = in, .out = out };
	unsigned int n = nq_pool_threads(s->pool);

	if (n == 1) {
		/* One thread: a GEMM a drop may withdraw runs in parts of 64
		 * output channels, which repeat nothing (no im2col, and the
		 * rows kernel needs M >= 256); anything else runs whole. */
		if (!s->pin || !gemm || (uint64_t)a->out.n * a->out.h * a->out.w >= 256)
			return nq_conv_part(s->m->kern, depthwise, gemm, a, s->tiles[0], 0, 1,
					    in, out);
		j.nparts = (a->oc + 63) / 64;
		conv_part(&j, 0, 1);
	} else {
		j.nparts = nq_conv_nparts(s->m->kern, depthwise, a, n);
		nq_pool_run(s->pool, conv_part, &j);
	}
	if (j.err[0])
		return j.err[0];
	for (unsigned int i = 1; i < n; i++)
		if (j.err[i] && atomic_load(&j.msg_taken))
			return nq_fail(j.err[i], "%s", j.msg);
	return atomic_load(&j.left) ? WITHDRAWN : 0;
}

/* ADD split into ranges of 64 elements across the threads. */
struct add_job {
	const struct nq_kernels *k;
	const struct nq_add_args *a;
	const uint8_t *x1, *x2;
	uint8_t *out;
	size_t n;
};

static void add_part(void *arg, unsigned int part, unsigned int nparts)
{
	const struct add_job *j = arg;
	size_t blocks = (j->n + 63) / 64, b0 = blocks * part / nparts * 64;
	size_t b1 = blocks * (part + 1) / nparts * 64;

	if (b1 > j->n)
		b1 = j->n;
	if (b0 < b1)
		j->k->add(j->a, j->x1 + b0, j->x2 + b0, j->out + b0, b1 - b0);
}

static int run_node(struct nq_session *s, const struct nq_xnode *x)
{
	const struct nq_model *m = s->m;
	const struct nq_kernels *k = m->kern;
	const struct nq_xtensor *I = &m->t[x->in[0]], *O = &m->t[x->out];
	const uint8_t *in = slot(s, x->in[0]);
	uint8_t *out = slot(s, x->out);

	switch (x->op) {
	case NQ_OP_QUANTIZE:
		k->quantize(&x->u.quant, (const float *)(const void *)in, out);
		return 0;
	case NQ_OP_DEQUANTIZE:
		dequantize(I, in, (float *)(void *)out);
		return 0;
	case NQ_OP_CONV:
	case NQ_OP_GEMM: {
		struct nq_conv_args a = x->u.conv.tmpl;
		unsigned int level = s->layer_level[a.wt.layer];

		a.wt.level = level;
		if (s->kmod)
			nq_kmod_redirect(m->kmod, s->kmod, &a.wt);
		a.bias32 = x->u.conv.bias32 + (size_t)level * a.oc;
		a.rq = x->u.conv.rq + (size_t)level * a.oc;
		a.tile = s->tile;
		if (x->fused >= 0) {
			/* plan_fusion (model.c): write the ADD's output. */
			a.add = &x->u.conv.add;
			a.res = slot(s, x->u.conv.res);
			out = slot(s, m->nodes[x->fused].out);
		}
		return run_conv(s, &a, x->op == NQ_OP_CONV && x->u.conv.depthwise,
				x->op == NQ_OP_GEMM, in, out);
	}
	case NQ_OP_ADD: {
		struct add_job j = { k, &x->u.add, in, slot(s, x->in[1]), out, O->count };

		if (x->fused >= 0)
			return 0;	/* computed by its CONV */
		if (O->count < 4096)
			k->add(&x->u.add, in, j.x2, out, O->count);
		else
			nq_pool_run(s->pool, add_part, &j);
		return 0;
	}
	case NQ_OP_MAXPOOL:
		k->maxpool(&x->u.pool, in, out);
		return 0;
	case NQ_OP_AVGPOOL:
		k->avgpool(&x->u.pool, in, out);
		return 0;
	case NQ_OP_GLOBALAVGPOOL:
		k->gap(&x->u.gap, in, out);
		return 0;
	case NQ_OP_FLATTEN:
	case NQ_OP_RESHAPE:
		relayout(x, I, O, in, out);
		return 0;
	case NQ_OP_CONCAT:
		concat(s, x);
		return 0;
	case NQ_OP_SOFTMAX:
		softmax(I, x->u.axis, (const float *)(const void *)in, (float *)(void *)out);
		return 0;
	case NQ_OP_RELU:
	case NQ_OP_CLIP:
		/* Same shape and both rank-4 or not: layouts agree, run flat. */
		k->eltwise(&x->u.elt, in, out, O->count);
		return 0;
	}
	return nq_fail(-ENOTSUP, "node %u: op %u", x->index, x->op);
}

/* pin: checked between nodes and parts for a withdrawal (NULL: an explicit
 * level, which cannot move).  0, WITHDRAWN, or -errno. */
static int run_one(struct nq_session *s, struct nq_pin *pin, const float *input, float *output)
{
	struct nq_model *m = s->m;
	const struct nq_xtensor *O = &m->t[m->output];
	int err;

	s->pin = pin;
	nq_pool_wake(s->pool);
	preprocess(s, input);
	for (uint32_t i = 0; i < m->n_nodes; i++) {
		if (s->node_hook)
			s->node_hook(s->node_hook_arg, i, s->layer_level);
		if (pin && nq_switch_withdrawn(m, pin, s->layer_level))
			return WITHDRAWN;
		err = run_node(s, &m->nodes[i]);
		if (err == WITHDRAWN)
			return err;
		if (err)
			return nq_fail_context(err, "node %u (%s)", i, m->nodes[i].name);
	}
	if (O->dtype == NQ_TENSOR_F32)
		memcpy(output, slot(s, m->output), O->count * sizeof(float));
	else
		dequantize(O, slot(s, m->output), output);
	return 0;
}

int nq_session_run_level(struct nq_session *s, unsigned int level, const float *input,
			 float *output)
{
	struct nq_pin pin;
	int err;

	if (!s || !input || !output)
		return nq_fail(-EINVAL, "session run: NULL argument");
	if (level >= s->m->n_levels)
		return nq_fail(-EINVAL, "level %u out of range (%u levels)", level, s->m->n_levels);
	nq_switch_enter(s->m, (int)level, s->layer_level, &pin);
	s->kmod = pin.kmod;
	err = run_one(s, NULL, input, output);
	nq_switch_leave(s->m, &pin);
	return err;
}

/* Internal (model.h): every weight layer at its own level (the oracle for
 * graded switching in the tests). */
int nq_session_run_layers(struct nq_session *s, const uint8_t *layer_level, const float *input,
			  float *output)
{
	unsigned int top = 0;
	struct nq_pin pin;
	int err;

	for (uint32_t j = 0; j < s->m->n_layers; j++) {
		if (layer_level[j] >= s->m->n_levels)
			return nq_fail(-EINVAL, "layer %u: level %u out of range", j, layer_level[j]);
		top = layer_level[j] > top ? layer_level[j] : top;
	}
	nq_switch_enter(s->m, (int)top, s->layer_level, &pin);
	s->kmod = pin.kmod;
	memcpy(s->layer_level, layer_level, s->m->n_layers);
	err = run_one(s, NULL, input, output);
	nq_switch_leave(s->m, &pin);
	return err;
}

int nq_session_last_run(const struct nq_session *s, struct nq_run_info *info)
{
	if (!s || !info)
		return nq_fail(-EINVAL, "last run: NULL argument");
	info->level = s->last_level;
	info->layers = s->m->n_layers;
	info->layers_degraded = s->last_degraded;
	info->layer_level = s->layer_level;
	return 0;
}

int nq_session_run(struct nq_session *s, const float *input, float *output, int *level_used)
{
	return nq_session_run_batch(s, 1, input, output, level_used);
}

int nq_session_run_batch(struct nq_session *s, size_t count, const float *input,
			 float *output, int *level_used)
{
	struct nq_pin pin;
	size_t ni, no;
	int err = 0;

	if (!s || !input || !output)
		return nq_fail(-EINVAL, "session run: NULL argument");
	ni = nq_model_input_count(s->m);
	no = nq_model_output_count(s->m);
	do {
		/* A withdrawn batch starts over whole: one set of levels for all of it. */
		if (err == WITHDRAWN)
			s->withdrawn++;
		s->last_degraded = nq_switch_enter(s->m, -1, s->layer_level, &pin);
		s->last_level = pin.level;
		s->kmod = pin.kmod;
		err = 0;
		for (size_t i = 0; i < count && !err; i++)
			err = run_one(s, &pin, input + i * ni, output + i * no);
		nq_switch_leave(s->m, &pin);
	} while (err == WITHDRAWN);
	if (err)
		return err;
	if (level_used)
		*level_used = (int)pin.level | (s->last_degraded ? NQ_LEVEL_DEGRADED : 0);
	return 0;
}

/* Internal (model.h): inferences started over after a drop, and the tests'
 * per-node and per-part hooks. */
uint64_t nq_session_withdrawn(const struct nq_session *s)
{
	return s->withdrawn;
}

void nq_session_set_node_hook(struct nq_session *s, nq_node_hook_fn fn, void *arg)
{
	s->node_hook = fn;
	s->node_hook_arg = arg;
}

void nq_session_set_part_hook(struct nq_session *s, nq_part_hook_fn fn, void *arg)
{
	s->part_hook = fn;
	s->part_hook_arg = arg;
}
