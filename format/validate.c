// SPDX-License-Identifier: MIT
/*
 * Validation of a .nq file's contents, after reader.c has checked that every
 * section lies inside the file, has the right record size and checksum.
 * The order follows format/SPEC.md "Validation" 7-13 so that a file with
 * several faults reports the same one every time.  Messages name the record
 * and field ("node 7 (conv1): input tensor 12 is produced later (cycle)").
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nq_error.h"
#include "nq_file_int.h"

#define MAX_META 4096
#define MAX_ELEMS (1ull << 48)
#define NOT_PRODUCED -1
#define GRAPH_INPUT -2

static bool str_ok(const struct nq_file *f, uint32_t ref)
{
	return ref < f->n_strings;
}

static bool inside(uint64_t off, uint64_t len, uint64_t start, uint64_t size)
{
	return off >= start && off - start <= size && len <= size - (off - start);
}

static int check_strings(const struct nq_file *f)
{
	if (f->n_strings == 0)
		return nq_fail(-EINVAL, "section STRINGS: empty (needs at least the empty string)");
	if (f->strings[0] != '\0')
		return nq_fail(-EINVAL, "section STRINGS: does not start with the empty string");
	if (f->strings[f->n_strings - 1] != '\0')
		return nq_fail(-EINVAL, "section STRINGS: last string is not NUL-terminated");
	return 0;
}

static int check_levels(const struct nq_file *f)
{
	const struct nq_disk_header *h = f->hdr;
	const struct nq_disk_section *tab = (const void *)(f->data + h->table_offset);
	uint64_t meta_end = h->table_offset + (uint64_t)h->section_count * NQ_SECTION_ENTRY_SIZE;
	uint64_t end = 0;

	for (uint32_t i = 0; i < h->section_count; i++)
		if (tab[i].offset + tab[i].size > meta_end)
			meta_end = tab[i].offset + tab[i].size;

	if (f->n_levels != h->level_count)
		return nq_fail(-EINVAL, "section LEVELS: %u records, but the header says %u levels",
			       f->n_levels, h->level_count);
	for (uint32_t k = 0; k < f->n_levels; k++) {
		const struct nq_disk_level *l = &f->levels[k];

		if (l->bits < 1 || l->bits > NQ_MAX_BITS)
			return nq_fail(-EINVAL, "level %u: bit width %u outside 1..%d", k, l->bits,
				       NQ_MAX_BITS);
		if (k && l->bits <= f->levels[k - 1].bits)
			return nq_fail(-EINVAL, "level %u: %u bits is not above level %u's %u bits (levels must ascend)",
				       k, l->bits, k - 1, f->levels[k - 1].bits);
		if (l->region_offset % h->region_align)
			return nq_fail(-EINVAL, "level %u region: offset %" PRIu64
				       " is not a multiple of the region alignment %u",
				       k, l->region_offset, h->region_align);
		if (l->region_size % h->region_align)
			return nq_fail(-EINVAL, "level %u region: size %" PRIu64
				       " is not a multiple of the region alignment %u",
				       k, l->region_size, h->region_align);
		if (k == 0 && l->region_offset < meta_end)
			return nq_fail(-EINVAL, "level 0 region: offset %" PRIu64
				       " overlaps the metadata (which ends at %" PRIu64 ")",
				       l->region_offset, meta_end);
		if (k && l->region_offset != end)
			return nq_fail(-EINVAL, "level %u region: offset %" PRIu64
				       " does not follow level %u's region (which ends at %" PRIu64 ")",
				       k, l->region_offset, k - 1, end);
		if (!inside(l->region_offset, l->region_size, 0, f->size))
			return nq_fail(-EINVAL, "level %u region: bytes [%" PRIu64 ", +%" PRIu64
				       ") are past the end of the file (%" PRIu64 " bytes)",
				       k, l->region_offset, l->region_size, f->size);
		end = l->region_offset + l->region_size;
	}
	if (end != f->size)
		return nq_fail(-EINVAL, "level %u region ends at %" PRIu64 ", not at the end of the file (%" PRIu64 ")",
			       f->n_levels - 1, end, f->size);
	return 0;
}

static int check_preprocess(const struct nq_file *f)
{
	const struct nq_disk_preprocess *p = f->pre;

	if (p->layout != NQ_LAYOUT_NCHW && p->layout != NQ_LAYOUT_NHWC)
		return nq_fail(-EINVAL, "preprocess: layout %u is neither 1 (NCHW) nor 2 (NHWC)",
			       p->layout);
	if (p->channels < 1 || p->channels > NQ_PRE_MAX_CHANNELS)
		return nq_fail(-EINVAL, "preprocess: %u channels outside 1..%d", p->channels,
			       NQ_PRE_MAX_CHANNELS);
	if (!isfinite(p->input_scale) || p->input_scale <= 0)
		return nq_fail(-EINVAL, "preprocess: input_scale %g is not a positive number",
			       p->input_scale);
	for (uint32_t c = 0; c < p->channels; c++) {
		if (!isfinite(p->mean[c]))
			return nq_fail(-EINVAL, "preprocess: mean[%u] is not finite", c);
		if (!isfinite(p->std[c]) || p->std[c] <= 0)
			return nq_fail(-EINVAL, "preprocess: std[%u] = %g is not a positive number",
				       c, p->std[c]);
	}
	return 0;
}

static int check_meta(const struct nq_file *f)
{
	if (f->n_meta > MAX_META)
		return nq_fail(-EINVAL, "section METADATA: %u pairs exceed the limit of %d",
			       f->n_meta, MAX_META);
	for (uint32_t i = 0; i < f->n_meta; i++) {
		const struct nq_disk_meta *m = &f->meta[i];

		if (!str_ok(f, m->key) || !str_ok(f, m->value))
			return nq_fail(-EINVAL, "metadata %u: string offset %u out of range (string table is %u bytes)",
				       i, str_ok(f, m->key) ? m->value : m->key, f->n_strings);
		if (!f->strings[m->key])
			return nq_fail(-EINVAL, "metadata %u: empty key", i);
		for (uint32_t j = 0; j < i; j++)
			if (!strcmp(f->strings + f->meta[j].key, f->strings + m->key))
				return nq_fail(-EINVAL, "metadata %u: key '%s' appears twice", i,
					       f->strings + m->key);
	}
	return 0;
}

/* Elements in tensor t (validated dims), or per batch element when per_batch. */
static uint64_t tensor_elems(const struct nq_disk_tensor *t, bool per_batch)
{
	uint64_t n = 1;

	for (uint32_t d = (per_batch && t->rank > 1) ? 1 : 0; d < t->rank; d++)
		n *= t->dims[d];
	return n;
}

static int check_tensors(const struct nq_file *f)
{
	for (uint32_t i = 0; i < f->n_tensors; i++) {
		const struct nq_disk_tensor *t = &f->tensors[i];
		const char *name;
		uint64_t n = 1;

		if (!str_ok(f, t->name))
			return nq_fail(-EINVAL, "tensor %u: name offset %u out of range (string table is %u bytes)",
				       i, t->name, f->n_strings);
		name = f->strings + t->name;
		if (t->dtype < NQ_TENSOR_F32 || t->dtype > NQ_TENSOR_S32)
			return nq_fail(-EINVAL, "tensor %u (%s): unknown dtype %u", i, name, t->dtype);
		if (t->rank > 4)
			return nq_fail(-EINVAL, "tensor %u (%s): rank %u exceeds 4", i, name, t->rank);
		for (uint32_t d = 0; d < 4; d++) {
			if (d < t->rank && t->dims[d] == 0)
				return nq_fail(-EINVAL, "tensor %u (%s): dimension %u is 0", i, name, d);
			if (d >= t->rank && t->dims[d] != 0)
				return nq_fail(-EINVAL, "tensor %u (%s): dimension %u = %u beyond rank %u",
					       i, name, d, t->dims[d], t->rank);
			if (d < t->rank) {
				if (t->dims[d] > MAX_ELEMS / n)
					return nq_fail(-EOVERFLOW, "tensor %u (%s): element count overflows 2^48",
						       i, name);
				n *= t->dims[d];
			}
		}
		if (!isfinite(t->scale) || t->scale < 0)
			return nq_fail(-EINVAL, "tensor %u (%s): scale %g is not a finite number >= 0",
				       i, name, t->scale);
		if (t->dtype == NQ_TENSOR_U8 || t->dtype == NQ_TENSOR_S8) {
			int lo = t->dtype == NQ_TENSOR_U8 ? 0 : -128;

			if (t->scale == 0)
				return nq_fail(-EINVAL, "tensor %u (%s): quantized tensor with scale 0",
					       i, name);
			if (t->zero_point < lo || t->zero_point > lo + 255)
				return nq_fail(-EINVAL, "tensor %u (%s): zero point %d outside the %s range",
					       i, name, t->zero_point, nq_tensor_type_name(t->dtype));
		}
	}
	return 0;
}

static int check_floats(const struct nq_file *f, uint32_t off, uint64_t n, bool nonneg,
			uint32_t layer, const char *what)
{
	const char *name = f->strings + f->layers[layer].name;
	const float *v;

	if (off % 4 || !inside(off, n * 4, 0, f->n_params))
		return nq_fail(-EINVAL, "layer %u (%s): %s [%u, +%" PRIu64
			       ") misaligned or outside PARAMS (%u bytes)",
			       layer, name, what, off, n * 4, f->n_params);
	v = (const float *)(f->params + off);
	for (uint64_t i = 0; i < n; i++)
		if (!isfinite(v[i]) || (nonneg && v[i] < 0))
			return nq_fail(-EINVAL, "layer %u (%s): %s[%" PRIu64 "] = %g is not %s",
				       layer, name, what, i, v[i],
				       nonneg ? "a finite number >= 0" : "finite");
	return 0;
}

/* Layout, row stride and size of a plane (SPEC.md "Packing"). */
static int check_plane_bytes(const struct nq_disk_layer *l, const struct nq_disk_plane *p,
			     uint32_t li, const char *name, uint32_t k)
{
	uint64_t need;

	if (p->layout == NQ_PLANE_PANEL16X4) {
		if (l->groups != 1)
			return nq_fail(-EINVAL, "layer %u (%s) level %u plane: layout panel16x4 needs groups = 1, layer has %u",
				       li, name, k, l->groups);
		if (p->row_stride != 0)
			return nq_fail(-EINVAL, "layer %u (%s) level %u plane: layout panel16x4 has row stride %u, must be 0",
				       li, name, k, p->row_stride);
		need = nq_panel_plane_bytes(l->oc, l->k, p->bits);
		if (p->size != need)
			return nq_fail(-EINVAL, "layer %u (%s) level %u plane: size %" PRIu64
				       " is not %" PRIu64 " bytes (panel16x4: %u channels x %u values of %u bits)",
				       li, name, k, p->size, need, l->oc, l->k, p->bits);
		return 0;
	}
	if (p->layout != NQ_PLANE_ROWS)
		return nq_fail(-EINVAL, "layer %u (%s) level %u plane: layout %u unknown (0 = rows, 1 = panel16x4)",
			       li, name, k, p->layout);
	need = nq_packed_bytes(l->k, p->bits);
	if (p->row_stride < need)
		return nq_fail(-EINVAL, "layer %u (%s) level %u plane: row stride %u < %" PRIu64
			       " bytes needed for %u values of %u bits",
			       li, name, k, p->row_stride, need, l->k, p->bits);
	if (p->size != (uint64_t)l->oc * p->row_stride)
		return nq_fail(-EINVAL, "layer %u (%s) level %u plane: size %" PRIu64
			       " is not %u rows x %u bytes", li, name, k, p->size, l->oc, p->row_stride);
	return 0;
}

static int check_plane(const struct nq_file *f, uint32_t li, uint32_t k)
{
	const struct nq_disk_layer *l = &f->layers[li];
	const struct nq_disk_plane *p = &f->planes[(uint64_t)li * f->n_levels + k];
	const struct nq_disk_level *lv = &f->levels[k];
	const char *name = f->strings + l->name;
	int err;

	if (p->level != k)
		return nq_fail(-EINVAL, "layer %u (%s) level %u plane: level field says %u",
			       li, name, k, p->level);
	if (p->is_signed > 1)
		return nq_fail(-EINVAL, "layer %u (%s) level %u plane: is_signed = %u",
			       li, name, k, p->is_signed);
	if (k == 0) {
		if (p->bits != lv->bits || !p->is_signed)
			return nq_fail(-EINVAL, "layer %u (%s) level 0 plane: %u bits %s, expected %u bits signed",
				       li, name, p->bits, p->is_signed ? "signed" : "unsigned", lv->bits);
	} else {
		uint32_t d = lv->bits - f->levels[k - 1].bits;
		uint32_t max = p->is_signed ? d + 1 : (d < 7 ? d : 7);

		if (p->bits < 1 || p->bits > max)
			return nq_fail(-EINVAL, "layer %u (%s) level %u plane: %u-bit %s residual, allowed 1..%u bits for a %u-bit step",
				       li, name, k, p->bits, p->is_signed ? "signed" : "unsigned", max, d);
	}
	err = check_plane_bytes(l, p, li, name, k);
	if (err)
		return err;
	if (k > 0 && p->layout != f->planes[(uint64_t)li * f->n_levels].layout)
		return nq_fail(-EINVAL, "layer %u (%s) level %u plane: layout %s differs from plane 0's (%s)",
			       li, name, k, nq_plane_layout_name(p->layout),
			       nq_plane_layout_name(f->planes[(uint64_t)li * f->n_levels].layout));
	if (p->offset % NQ_PLANE_ALIGN)
		return nq_fail(-EINVAL, "layer %u (%s) level %u plane: offset %" PRIu64
			       " is not %d-byte aligned", li, name, k, p->offset, NQ_PLANE_ALIGN);
	if (!inside(p->offset, p->size, lv->region_offset, lv->region_size))
		return nq_fail(-EINVAL, "layer %u (%s) level %u plane: bytes [%" PRIu64 ", +%" PRIu64
			       ") lie outside the level %u region [%" PRIu64 ", +%" PRIu64 ")",
			       li, name, k, p->offset, p->size, k, lv->region_offset, lv->region_size);
	return 0;
}

static int check_layers(const struct nq_file *f)
{
	if ((uint64_t)f->n_layers * f->n_levels != f->n_planes)
		return nq_fail(-EINVAL, "section PLANES: %u records, expected %u layers x %u levels",
			       f->n_planes, f->n_layers, f->n_levels);
	for (uint32_t i = 0; i < f->n_layers; i++) {
		const struct nq_disk_layer *l = &f->layers[i];
		const char *name;
		int err;

		if (!str_ok(f, l->name))
			return nq_fail(-EINVAL, "layer %u: name offset %u out of range (string table is %u bytes)",
				       i, l->name, f->n_strings);
		name = f->strings + l->name;
		if (l->kind != NQ_LAYER_CONV && l->kind != NQ_LAYER_GEMM)
			return nq_fail(-EINVAL, "layer %u (%s): unknown kind %u", i, name, l->kind);
		if (!l->oc || !l->k)
			return nq_fail(-EINVAL, "layer %u (%s): empty shape %u x %u", i, name, l->oc, l->k);
		if (l->kind == NQ_LAYER_CONV) {
			uint64_t hw = (uint64_t)l->kh * l->kw;

			if (!l->groups || l->oc % l->groups)
				return nq_fail(-EINVAL, "layer %u (%s): %u output channels not divisible into %u groups",
					       i, name, l->oc, l->groups);
			if (!l->kh || !l->kw || !l->cin_per_group || hw > l->k ||
			    hw * l->cin_per_group != l->k)
				return nq_fail(-EINVAL, "layer %u (%s): K %u != kh %u x kw %u x cin_per_group %u",
					       i, name, l->k, l->kh, l->kw, l->cin_per_group);
		} else if (l->groups != 1 || l->kh != 1 || l->kw != 1 || l->cin_per_group != l->k) {
			return nq_fail(-EINVAL, "layer %u (%s): gemm needs groups 1, kernel 1x1, cin_per_group = K",
				       i, name);
		}
		err = check_floats(f, l->scales, (uint64_t)f->n_levels * l->oc, true, i, "scales");
		if (!err && l->bias != NQ_NONE)
			err = check_floats(f, l->bias, l->oc, false, i, "bias");
		for (uint32_t k = 0; !err && k < f->n_levels; k++)
			err = check_plane(f, i, k);
		if (err)
			return err;
	}
	return 0;
}

static int check_range(const char *node, uint32_t i, const char *attr, int32_t v,
		       int32_t lo, int32_t hi)
{
	if (v < lo || v > hi)
		return nq_fail(-EINVAL, "node %u (%s): attribute %s = %d outside %d..%d",
			       i, node, attr, v, lo, hi);
	return 0;
}

static int check_clip(const char *node, uint32_t i, const struct nq_attrs *a)
{
	float lo = a->f[NQ_F_CLIP_MIN], hi = a->f[NQ_F_CLIP_MAX];

	if (isnan(lo) || isnan(hi) || lo > hi)
		return nq_fail(-EINVAL, "node %u (%s): clip bounds [%g, %g] are not an interval",
			       i, node, lo, hi);
	return 0;
}

static int check_attrs(const char *node, uint32_t i, const struct nq_disk_node *n)
{
	static const struct { int slot; const char *name; int lo; } win[] = {
		{ NQ_A_KH, "kernel_h", 1 }, { NQ_A_KW, "kernel_w", 1 },
		{ NQ_A_STRIDE_H, "stride_h", 1 }, { NQ_A_STRIDE_W, "stride_w", 1 },
		{ NQ_A_PAD_T, "pad_top", 0 }, { NQ_A_PAD_L, "pad_left", 0 },
		{ NQ_A_PAD_B, "pad_bottom", 0 }, { NQ_A_PAD_R, "pad_right", 0 },
		{ NQ_A_DIL_H, "dilation_h", 1 }, { NQ_A_DIL_W, "dilation_w", 1 },
	};
	const struct nq_attrs *a = &n->attrs;
	int err = 0;

	switch (n->op) {
	case NQ_OP_CONV:
	case NQ_OP_MAXPOOL:
	case NQ_OP_AVGPOOL:
		for (size_t j = 0; !err && j < sizeof(win) / sizeof(win[0]); j++)
			err = check_range(node, i, win[j].name, a->i[win[j].slot], win[j].lo, 65535);
		if (!err && n->op == NQ_OP_CONV)
			err = check_range(node, i, "groups", a->i[NQ_A_GROUPS], 1, INT32_MAX);
		if (!err && n->op == NQ_OP_AVGPOOL)
			err = check_range(node, i, "count_include_pad", a->i[NQ_A_COUNT_INCLUDE_PAD], 0, 1);
		break;
	case NQ_OP_FLATTEN:
	case NQ_OP_CONCAT:
	case NQ_OP_SOFTMAX:
		err = check_range(node, i, "axis", a->i[NQ_A_AXIS], 0, 3);
		break;
	case NQ_OP_CLIP:
		err = check_clip(node, i, a);
		break;
	}
	if (err)
		return err;
	if (n->op == NQ_OP_CONV || n->op == NQ_OP_GEMM || n->op == NQ_OP_ADD) {
		err = check_range(node, i, "activation", a->i[NQ_A_ACT], NQ_ACT_NONE, NQ_ACT_CLIP);
		if (!err && a->i[NQ_A_ACT] == NQ_ACT_CLIP)
			err = check_clip(node, i, a);
	}
	return err;
}

/* CONV/GEMM: the layer reference and the shapes it implies. */
static int check_node_layer(const struct nq_file *f, const char *node, uint32_t i,
			    const struct nq_disk_node *n)
{
	const struct nq_disk_tensor *in, *out;
	const struct nq_disk_layer *l;
	uint32_t want = n->op == NQ_OP_CONV ? NQ_LAYER_CONV : NQ_LAYER_GEMM;

	if (n->op != NQ_OP_CONV && n->op != NQ_OP_GEMM) {
		if (n->layer != NQ_NONE)
			return nq_fail(-EINVAL, "node %u (%s): %s node refers to weight layer %u",
				       i, node, nq_file_op_name(n->op), n->layer);
		return 0;
	}
	if (n->layer >= f->n_layers)
		return nq_fail(-EINVAL, "node %u (%s): weight layer %u out of range (%u layers)",
			       i, node, n->layer, f->n_layers);
	l = &f->layers[n->layer];
	if (l->kind != want)
		return nq_fail(-EINVAL, "node %u (%s): %s node refers to %s layer %u",
			       i, node, nq_file_op_name(n->op), nq_layer_kind_name(l->kind), n->layer);
	in = &f->tensors[f->io[n->first_io]];
	out = &f->tensors[f->io[n->first_io + n->n_inputs]];
	if (n->op == NQ_OP_CONV) {
		const struct nq_attrs *a = &n->attrs;

		if ((uint32_t)a->i[NQ_A_KH] != l->kh || (uint32_t)a->i[NQ_A_KW] != l->kw ||
		    (uint32_t)a->i[NQ_A_GROUPS] != l->groups)
			return nq_fail(-EINVAL, "node %u (%s): kernel %dx%d groups %d differ from layer %u's %ux%u groups %u",
				       i, node, a->i[NQ_A_KH], a->i[NQ_A_KW], a->i[NQ_A_GROUPS],
				       n->layer, l->kh, l->kw, l->groups);
		if (in->rank != 4 || in->dims[1] != (uint64_t)l->groups * l->cin_per_group)
			return nq_fail(-EINVAL, "node %u (%s): input is not rank 4 with %" PRIu64 " channels",
				       i, node, (uint64_t)l->groups * l->cin_per_group);
		if (out->rank != 4 || out->dims[1] != l->oc)
			return nq_fail(-EINVAL, "node %u (%s): output is not rank 4 with %u channels",
				       i, node, l->oc);
	} else {
		if (tensor_elems(in, true) != l->k)
			return nq_fail(-EINVAL, "node %u (%s): input has %" PRIu64
				       " elements per batch, layer %u has K = %u",
				       i, node, tensor_elems(in, true), n->layer, l->k);
		if (tensor_elems(out, true) != l->oc)
			return nq_fail(-EINVAL, "node %u (%s): output has %" PRIu64
				       " elements per batch, layer %u has %u outputs",
				       i, node, tensor_elems(out, true), n->layer, l->oc);
	}
	return 0;
}

static void op_arity(uint32_t op, uint32_t *in_min, uint32_t *in_max)
{
	*in_min = *in_max = 1;
	if (op == NQ_OP_ADD)
		*in_min = *in_max = 2;
	else if (op == NQ_OP_CONCAT)
		*in_max = UINT32_MAX;
}

static int check_graph(const struct nq_file *f, int32_t *producer, uint8_t *seen)
{
	for (uint32_t t = 0; t < f->n_tensors; t++)
		producer[t] = NOT_PRODUCED;
	if (!f->n_gin)
		return nq_fail(-EINVAL, "section GRAPH_INPUTS: the graph has no inputs");
	if (!f->n_gout)
		return nq_fail(-EINVAL, "section GRAPH_OUTPUTS: the graph has no outputs");
	for (uint32_t j = 0; j < f->n_gin; j++) {
		uint32_t t = f->gin[j];

		if (t >= f->n_tensors)
			return nq_fail(-EINVAL, "graph input %u: tensor %u out of range (%u tensors)",
				       j, t, f->n_tensors);
		if (producer[t] == GRAPH_INPUT)
			return nq_fail(-EINVAL, "graph input %u: tensor %u listed twice", j, t);
		producer[t] = GRAPH_INPUT;
	}

	/* Pass 1: node records and their outputs, so pass 2 can tell an input
	 * produced later (a cycle) from one never produced. */
	for (uint32_t i = 0; i < f->n_nodes; i++) {
		const struct nq_disk_node *n = &f->nodes[i];
		uint32_t in_min, in_max;
		const char *node;

		if (!str_ok(f, n->name))
			return nq_fail(-EINVAL, "node %u: name offset %u out of range (string table is %u bytes)",
				       i, n->name, f->n_strings);
		node = f->strings + n->name;
		if (n->op == NQ_OP_INVALID || n->op >= NQ_OP_COUNT)
			return nq_fail(-EINVAL, "node %u (%s): unknown op %u", i, node, n->op);
		if ((uint64_t)n->first_io + n->n_inputs + n->n_outputs > f->n_io)
			return nq_fail(-EOVERFLOW, "node %u (%s): inputs/outputs [%u, +%u+%u) past the end of NODE_IO (%u ids)",
				       i, node, n->first_io, n->n_inputs, n->n_outputs, f->n_io);
		op_arity(n->op, &in_min, &in_max);
		if (n->n_inputs < in_min || n->n_inputs > in_max || n->n_outputs != 1)
			return nq_fail(-EINVAL, "node %u (%s): %s takes %u..%u inputs and 1 output, has %u and %u",
				       i, node, nq_file_op_name(n->op), in_min,
				       in_max == UINT32_MAX ? 65535 : in_max, n->n_inputs, n->n_outputs);
		for (uint32_t j = 0; j < n->n_outputs; j++) {
			uint32_t t = f->io[n->first_io + n->n_inputs + j];

			if (t >= f->n_tensors)
				return nq_fail(-EINVAL, "node %u (%s): output tensor %u out of range (%u tensors)",
					       i, node, t, f->n_tensors);
			if (producer[t] == GRAPH_INPUT)
				return nq_fail(-EINVAL, "node %u (%s): output tensor %u is a graph input",
					       i, node, t);
			if (producer[t] != NOT_PRODUCED)
				return nq_fail(-EINVAL, "node %u (%s): tensor %u is produced twice (also by node %d)",
					       i, node, t, producer[t]);
			producer[t] = (int32_t)i;
		}
	}

	for (uint32_t i = 0; i < f->n_nodes; i++) {
		const struct nq_disk_node *n = &f->nodes[i];
		const char *node = f->strings + n->name;
		int err;

		for (uint32_t j = 0; j < n->n_inputs; j++) {
			uint32_t t = f->io[n->first_io + j];

			if (t >= f->n_tensors)
				return nq_fail(-EINVAL, "node %u (%s): input tensor %u out of range (%u tensors)",
					       i, node, t, f->n_tensors);
			if (producer[t] == NOT_PRODUCED)
				return nq_fail(-EINVAL, "node %u (%s): input tensor %u is never produced",
					       i, node, t);
			if (producer[t] >= (int32_t)i)
				return nq_fail(-EINVAL, "node %u (%s): input tensor %u is produced %s (cycle)",
					       i, node, t, producer[t] == (int32_t)i ? "by itself" : "later");
		}
		err = check_attrs(node, i, n);
		if (!err)
			err = check_node_layer(f, node, i, n);
		if (err)
			return err;
	}

	for (uint32_t j = 0; j < f->n_gout; j++) {
		uint32_t t = f->gout[j];

		if (t >= f->n_tensors)
			return nq_fail(-EINVAL, "graph output %u: tensor %u out of range (%u tensors)",
				       j, t, f->n_tensors);
		if (producer[t] == NOT_PRODUCED)
			return nq_fail(-EINVAL, "graph output %u: tensor %u is never produced", j, t);
		if (seen[t])
			return nq_fail(-EINVAL, "graph output %u: tensor %u listed twice", j, t);
		seen[t] = 1;
	}
	return 0;
}

int nq_validate_contents(struct nq_file *f)
{
	int32_t *producer;
	uint8_t *seen;
	int err;

	err = check_strings(f);
	if (!err)
		err = check_levels(f);
	if (!err)
		err = check_preprocess(f);
	if (!err)
		err = check_meta(f);
	if (!err)
		err = check_tensors(f);
	if (!err)
		err = check_layers(f);
	if (err)
		return err;
	/* n_tensors is bounded by the file size (32 bytes per record). */
	producer = malloc(((size_t)f->n_tensors + 1) * sizeof(*producer));
	seen = calloc((size_t)f->n_tensors + 1, 1);
	if (!producer || !seen)
		err = nq_fail(-ENOMEM, "out of memory for %u tensors", f->n_tensors);
	else
		err = check_graph(f, producer, seen);
	free(seen);
	free(producer);
	return err;
}
