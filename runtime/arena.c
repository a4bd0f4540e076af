// SPDX-License-Identifier: MIT
/*
 * The static activation arena: every tensor gets a fixed offset at load
 * time, so an inference touches one preallocated block and never calls
 * malloc.  Two tensors may share bytes only if their lifetimes (producer
 * node .. last consumer node) do not overlap.
 *
 * Greedy by size (the strategy of TFLite's arena planner): largest tensor
 * first, each placed at the lowest aligned offset that does not collide
 * with an already placed, simultaneously live tensor.  O(n^2) in tensors,
 * which is nothing for graphs of a few hundred nodes.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "model.h"
#include "nq_error.h"

/* qsort_r (glibc): the planner may run on several threads at once. */
static int by_size_desc(const void *a, const void *b, void *ctx)
{
	const struct nq_arena_item *it = ctx;
	uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;

	if (it[i].size != it[j].size)
		return it[i].size < it[j].size ? 1 : -1;
	/* Ties by index: the plan must not depend on qsort's order. */
	return i < j ? -1 : i > j;
}

static int by_offset(const void *a, const void *b, void *ctx)
{
	const struct nq_arena_item *it = ctx;
	uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;

	if (it[i].offset != it[j].offset)
		return it[i].offset < it[j].offset ? -1 : 1;
	return i < j ? -1 : i > j;
}

static bool overlap_in_time(const struct nq_arena_item *x, const struct nq_arena_item *y)
{
	return x->first <= y->last && y->first <= x->last;
}

int nq_arena_plan(struct nq_arena_item *items, uint32_t n, uint64_t align, uint64_t *total)
{
	uint32_t *order, *placed;
	uint32_t n_placed = 0;
	uint64_t end = 0;

	*total = 0;
	if (!n)
		return 0;
	if (!align || (align & (align - 1)))
		return nq_fail(-EINVAL, "arena alignment %llu is not a power of two",
			       (unsigned long long)align);
	for (uint32_t i = 0; i < n; i++)
		if (items[i].size > (UINT64_MAX >> 2) / n)
			return nq_fail(-EOVERFLOW, "arena: tensor of %llu bytes is too large",
				       (unsigned long long)items[i].size);
	order = calloc(n, sizeof(*order));
	placed = calloc(n, sizeof(*placed));
	if (!order || !placed) {
		free(order);
		free(placed);
		return nq_fail(-ENOMEM, "arena plan: out of memory");
	}
	for (uint32_t i = 0; i < n; i++)
		order[i] = i;
	qsort_r(order, n, sizeof(*order), by_size_desc, items);

	for (uint32_t oi = 0; oi < n; oi++) {
		struct nq_arena_item *x = &items[order[oi]];
		uint64_t size = (x->size + align - 1) & ~(align - 1), at = 0;

		/* placed[] is kept sorted by offset; walk the gaps between the
		 * live ones. */
		for (uint32_t pi = 0; pi < n_placed; pi++) {
			const struct nq_arena_item *y = &items[placed[pi]];
			uint64_t yend;

			if (!overlap_in_time(x, y) || !y->size)
				continue;
			yend = (y->offset + y->size + align - 1) & ~(align - 1);
			if (y->offset >= at + size)
				break;
			if (yend > at)
				at = yend;
		}
		x->offset = at;
		if (at + size > end)
			end = at + size;
		placed[n_placed++] = order[oi];
		qsort_r(placed, n_placed, sizeof(*placed), by_offset, items);
	}
	free(order);
	free(placed);
	*total = end;
	return 0;
}
