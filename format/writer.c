// SPDX-License-Identifier: MIT
/*
 * The .nq writer.  Metadata (graph, layers, scales: small) is kept in memory;
 * plane bytes are streamed straight to the file region by region, so a
 * model's weights are never all in memory at once.  Because plane offsets
 * depend on the metadata size and region CRCs on the plane bytes, the
 * metadata and header are written last, in front of the planes, once
 * everything is known.
 *
 * Atomicity: everything goes to a temporary file in the destination's
 * directory (rename is only atomic within one filesystem), which is fsynced,
 * re-opened with the reader as a final check, renamed over the destination,
 * and the directory fsynced so the rename itself survives a crash.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nq_error.h"
#include "nq_format.h"

#define META_ALIGN 64		/* sections start on cache lines */
#define PARAM_ALIGN 16		/* f32 arrays start on 16 bytes */
#define HUGE_ALIGN (2ull << 20)	/* a PMD: one huge page-cache folio */
#define HUGE_MIN (4ull << 20)	/* level 1 regions this big start on HUGE_ALIGN */
#define NSECTIONS NQ_SEC_KNOWN_MAX

struct buf {
	uint8_t *p;
	size_t len, cap;
};

struct nq_writer {
	char *path;
	char *tmp;
	int fd;
	int failed;			/* sticky error of the stream */
	bool frozen;

	uint32_t align;
	struct nq_disk_level levels[NQ_FORMAT_MAX_LEVELS];
	uint32_t n_levels;
	struct nq_disk_preprocess pre;

	struct buf strings, meta, tensors, nodes, io, gin, gout, layers, planes, params;

	/* Layout, fixed by freeze(). */
	uint64_t sec_off[NSECTIONS + 1];
	uint64_t meta_end;		/* end of the metadata (<= region 0 offset) */
	uint64_t file_size;

	/* Streaming position. */
	uint32_t next_layer, next_level;
	uint64_t pos;
	uint32_t crc;
};

static int buf_grow(struct buf *b, size_t more)
{
	size_t cap;
	uint8_t *p;

	if (more <= b->cap - b->len)
		return 0;
	if (more > SIZE_MAX / 2 - b->len)
		return nq_fail(-ENOMEM, "writer: metadata too large");
	cap = b->cap ? b->cap : 256;
	while (cap - b->len < more)
		cap *= 2;
	p = realloc(b->p, cap);
	if (!p)
		return nq_fail(-ENOMEM, "writer: out of memory");
	b->p = p;
	b->cap = cap;
	return 0;
}

static int buf_add(struct buf *b, const void *data, size_t len)
{
	int err = buf_grow(b, len);

	if (err)
		return err;
	if (len)
		memcpy(b->p + b->len, data, len);
	b->len += len;
	return 0;
}

static int buf_pad(struct buf *b, size_t align)
{
	size_t pad = (align - b->len % align) % align;
	int err;

	if (!pad)
		return 0;
	err = buf_grow(b, pad);
	if (err)
		return err;
	memset(b->p + b->len, 0, pad);
	b->len += pad;
	return 0;
}

static void buf_free(struct buf *b)
{
	free(b->p);
}

/* Intern a string; returns its offset in STRINGS or a negative errno. */
static int64_t add_string(struct nq_writer *w, const char *s)
{
	size_t off = w->strings.len;
	int err;

	if (!s || !*s)
		return 0;
	if (off + strlen(s) + 1 > UINT32_MAX)
		return nq_fail(-EOVERFLOW, "writer: string table exceeds 4 GiB");
	err = buf_add(&w->strings, s, strlen(s) + 1);
	return err ? err : (int64_t)off;
}

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

static int busy(const struct nq_writer *w, const char *what)
{
	if (w->failed)
		return w->failed;
	if (w->frozen)
		return nq_fail(-EBUSY, "writer: cannot %s after the first plane was written", what);
	return 0;
}

int nq_writer_create(const char *path, const uint8_t *levels, uint32_t n_levels,
		     const struct nq_writer_opts *opts, struct nq_writer **out)
{
	uint32_t align = opts && opts->region_align ? opts->region_align : NQ_REGION_ALIGN_DEFAULT;
	const char *slash, *base;
	struct nq_writer *w;
	size_t dirlen;
	int err;

	*out = NULL;
	if (align < NQ_REGION_ALIGN_MIN || align > NQ_REGION_ALIGN_MAX || (align & (align - 1)))
		return nq_fail(-EINVAL, "writer: region alignment %u is not a power of two in %u..%u",
			       align, NQ_REGION_ALIGN_MIN, NQ_REGION_ALIGN_MAX);
	if (n_levels < 1 || n_levels > NQ_FORMAT_MAX_LEVELS)
		return nq_fail(-EINVAL, "writer: %u levels, expected 1..%d", n_levels, NQ_FORMAT_MAX_LEVELS);
	for (uint32_t k = 0; k < n_levels; k++) {
		if (levels[k] < 1 || levels[k] > NQ_MAX_BITS)
			return nq_fail(-EINVAL, "writer: level %u: bit width %u outside 1..%d",
				       k, levels[k], NQ_MAX_BITS);
		if (k && levels[k] <= levels[k - 1])
			return nq_fail(-EINVAL, "writer: level %u: %u bits is not above level %u's %u bits",
				       k, levels[k], k - 1, levels[k - 1]);
	}

	w = calloc(1, sizeof(*w));
	if (!w)
		return nq_fail(-ENOMEM, "writer: out of memory");
	w->fd = -1;
	w->align = align;
	w->n_levels = n_levels;
	for (uint32_t k = 0; k < n_levels; k++)
		w->levels[k].bits = levels[k];
	w->pre.layout = NQ_LAYOUT_NCHW;
	w->pre.channels = 1;
	w->pre.input_scale = 1.0f;
	w->pre.std[0] = 1.0f;

	slash = strrchr(path, '/');
	base = slash ? slash + 1 : path;
	dirlen = slash ? (size_t)(slash - path) + 1 : 0;
	w->path = strdup(path);
	w->tmp = malloc(dirlen + strlen(base) + 16);
	if (!w->path || !w->tmp || buf_add(&w->strings, "", 1)) {
		err = nq_fail(-ENOMEM, "writer: out of memory");
		goto err_free;
	}
	if (!*base) {
		err = nq_fail(-EINVAL, "writer: '%s' names a directory", path);
		goto err_free;
	}
	sprintf(w->tmp, "%.*s.%s.XXXXXX", (int)dirlen, path, base);
	w->fd = mkostemp(w->tmp, O_CLOEXEC);
	if (w->fd < 0) {
		err = nq_fail(-errno, "writer: cannot create a temporary file next to '%s': %s",
			      path, strerror(errno));
		goto err_free;
	}
	/* mkstemp makes 0600; a model file is meant to be shared. */
	if (fchmod(w->fd, 0644)) {
		err = nq_fail(-errno, "writer: fchmod %s: %s", w->tmp, strerror(errno));
		goto err_unlink;
	}
	*out = w;
	return 0;

err_unlink:
	unlink(w->tmp);
	close(w->fd);
err_free:
	free(w->tmp);
	free(w->path);
	buf_free(&w->strings);
	free(w);
	return err;
}

int nq_writer_add_meta(struct nq_writer *w, const char *key, const char *value)
{
	struct nq_disk_meta m;
	int64_t k, v;
	int err = busy(w, "add metadata");

	if (err)
		return err;
	if (!key || !*key)
		return nq_fail(-EINVAL, "writer: metadata key is empty");
	for (size_t i = 0; i < w->meta.len / sizeof(m); i++) {
		memcpy(&m, w->meta.p + i * sizeof(m), sizeof(m));
		if (!strcmp((const char *)w->strings.p + m.key, key))
			return nq_fail(-EINVAL, "writer: metadata key '%s' added twice", key);
	}
	k = add_string(w, key);
	v = k < 0 ? k : add_string(w, value ? value : "");
	if (v < 0)
		return (int)v;
	m.key = (uint32_t)k;
	m.value = (uint32_t)v;
	return buf_add(&w->meta, &m, sizeof(m));
}

int nq_writer_set_preprocess(struct nq_writer *w, const struct nq_disk_preprocess *p)
{
	int err = busy(w, "set preprocessing");

	if (err)
		return err;
	if (p->layout != NQ_LAYOUT_NCHW && p->layout != NQ_LAYOUT_NHWC)
		return nq_fail(-EINVAL, "writer: preprocess layout %u is neither NCHW nor NHWC",
			       p->layout);
	if (p->channels < 1 || p->channels > NQ_PRE_MAX_CHANNELS)
		return nq_fail(-EINVAL, "writer: preprocess: %u channels outside 1..%d",
			       p->channels, NQ_PRE_MAX_CHANNELS);
	if (!isfinite(p->input_scale) || p->input_scale <= 0)
		return nq_fail(-EINVAL, "writer: preprocess: input_scale %g is not positive",
			       p->input_scale);
	w->pre = *p;
	w->pre.flags = 0;
	for (uint32_t c = 0; c < NQ_PRE_MAX_CHANNELS; c++) {
		if (c >= p->channels) {
			w->pre.mean[c] = 0;
			w->pre.std[c] = 0;
		} else if (!isfinite(p->mean[c]) || !isfinite(p->std[c]) || p->std[c] <= 0) {
			return nq_fail(-EINVAL, "writer: preprocess channel %u: mean %g / std %g invalid",
				       c, p->mean[c], p->std[c]);
		}
	}
	return 0;
}

int nq_writer_add_tensor(struct nq_writer *w, const struct nq_tensor_desc *t)
{
	struct nq_disk_tensor rec = { 0 };
	size_t id = w->tensors.len / sizeof(rec);
	int64_t name;
	int err = busy(w, "add a tensor");

	if (err)
		return err;
	if (id >= INT32_MAX)
		return nq_fail(-EOVERFLOW, "writer: too many tensors");
	if (t->rank > 4)
		return nq_fail(-EINVAL, "writer: tensor '%s': rank %u exceeds 4", t->name, t->rank);
	name = add_string(w, t->name);
	if (name < 0)
		return (int)name;
	rec.name = (uint32_t)name;
	rec.dtype = (uint8_t)t->dtype;
	rec.rank = (uint8_t)t->rank;
	for (uint32_t d = 0; d < t->rank; d++)
		rec.dims[d] = t->dims[d];
	rec.scale = t->scale;
	rec.zero_point = t->zero_point;
	err = buf_add(&w->tensors, &rec, sizeof(rec));
	return err ? err : (int)id;
}

static int add_floats(struct nq_writer *w, const float *v, uint64_t n, uint32_t *off)
{
	int err = buf_pad(&w->params, PARAM_ALIGN);

	if (err)
		return err;
	if (w->params.len + n * 4 > UINT32_MAX)
		return nq_fail(-EOVERFLOW, "writer: PARAMS section exceeds 4 GiB");
	*off = (uint32_t)w->params.len;
	return buf_add(&w->params, v, n * 4);
}

int nq_writer_add_layer(struct nq_writer *w, const struct nq_layer_desc *l)
{
	struct nq_disk_layer rec = { 0 };
	size_t id = w->layers.len / sizeof(rec);
	size_t params_len = w->params.len, planes_len = w->planes.len;
	int64_t name;
	int err = busy(w, "add a layer");

	if (err)
		return err;
	if (id >= INT32_MAX)
		return nq_fail(-EOVERFLOW, "writer: too many layers");
	if (l->kind != NQ_LAYER_CONV && l->kind != NQ_LAYER_GEMM)
		return nq_fail(-EINVAL, "writer: layer '%s': unknown kind %d", l->name, l->kind);
	if (!l->oc || !l->k || !l->scales)
		return nq_fail(-EINVAL, "writer: layer '%s': empty shape or no scales", l->name);
	if (l->kind == NQ_LAYER_CONV &&
	    (!l->groups || l->oc % l->groups ||
	     (uint64_t)l->kh * l->kw * l->cin_per_group != l->k))
		return nq_fail(-EINVAL, "writer: layer '%s': oc %u groups %u, K %u != %u x %u x %u",
			       l->name, l->oc, l->groups, l->k, l->kh, l->kw, l->cin_per_group);
	for (uint64_t i = 0; i < (uint64_t)w->n_levels * l->oc; i++)
		if (!isfinite(l->scales[i]) || l->scales[i] < 0)
			return nq_fail(-EINVAL, "writer: layer '%s': scale %" PRIu64 " = %g is invalid",
				       l->name, i, l->scales[i]);

	name = add_string(w, l->name);
	if (name < 0)
		return (int)name;
	rec.name = (uint32_t)name;
	rec.kind = l->kind;
	rec.oc = l->oc;
	rec.k = l->k;
	if (l->kind == NQ_LAYER_CONV) {
		rec.groups = l->groups;
		rec.kh = l->kh;
		rec.kw = l->kw;
		rec.cin_per_group = l->cin_per_group;
	} else {
		rec.groups = rec.kh = rec.kw = 1;
		rec.cin_per_group = l->k;
	}
	rec.bias = NQ_NONE;

	for (uint32_t k = 0; k < w->n_levels; k++) {
		struct nq_disk_plane p = { 0 };
		unsigned int bits = l->plane_bits[k];
		bool sign = k == 0 ? true : l->plane_signed[k];
		uint32_t d = k ? w->levels[k].bits - w->levels[k - 1].bits : 0;
		uint32_t max = k == 0 ? w->levels[0].bits : sign ? d + 1 : (d < 7 ? d : 7);
		uint64_t need = nq_packed_bytes(l->k, bits ? bits : 1);
		uint32_t stride = l->row_stride[k] ? l->row_stride[k] : (uint32_t)need;
		bool panel = l->layout == NQ_PLANE_PANEL16X4;

		if (l->layout != NQ_PLANE_ROWS && !panel)
			err = nq_fail(-EINVAL, "writer: layer '%s': plane layout %u unknown",
				      l->name, l->layout);
		else if (panel && (rec.groups != 1 || l->row_stride[k]))
			err = nq_fail(-EINVAL, "writer: layer '%s': layout panel16x4 needs groups = 1 and no row stride",
				      l->name);
		else if (k == 0 && bits != w->levels[0].bits)
			err = nq_fail(-EINVAL, "writer: layer '%s': plane 0 has %u bits, level 0 has %u",
				      l->name, bits, w->levels[0].bits);
		else if (bits < 1 || bits > max)
			err = nq_fail(-EINVAL, "writer: layer '%s': plane %u: %u-bit %s residual, allowed 1..%u",
				      l->name, k, bits, sign ? "signed" : "unsigned", max);
		else if (need > UINT32_MAX || stride < need)
			err = nq_fail(-EINVAL, "writer: layer '%s': plane %u: row stride %u < %" PRIu64,
				      l->name, k, stride, need);
		if (err)
			goto err_undo;
		p.size = panel ? nq_panel_plane_bytes(l->oc, l->k, bits) : (uint64_t)l->oc * stride;
		p.row_stride = panel ? 0 : stride;
		p.layout = (uint8_t)l->layout;
		p.bits = (uint8_t)bits;
		p.is_signed = sign;
		p.level = (uint8_t)k;
		err = buf_add(&w->planes, &p, sizeof(p));
		if (err)
			goto err_undo;
	}
	err = add_floats(w, l->scales, (uint64_t)w->n_levels * l->oc, &rec.scales);
	if (!err && l->bias)
		err = add_floats(w, l->bias, l->oc, &rec.bias);
	if (!err)
		err = buf_add(&w->layers, &rec, sizeof(rec));
	if (err)
		goto err_undo;
	return (int)id;

err_undo:
	w->params.len = params_len;
	w->planes.len = planes_len;
	return err;
}

int nq_writer_add_node(struct nq_writer *w, const struct nq_node_desc *n)
{
	struct nq_disk_node rec = { 0 };
	size_t id = w->nodes.len / sizeof(rec);
	uint32_t n_tensors = (uint32_t)(w->tensors.len / sizeof(struct nq_disk_tensor));
	int64_t name;
	int err = busy(w, "add a node");

	if (err)
		return err;
	if (id >= INT32_MAX || w->io.len / 4 + n->n_inputs + n->n_outputs > UINT32_MAX)
		return nq_fail(-EOVERFLOW, "writer: too many nodes");
	for (uint32_t j = 0; j < n->n_inputs + n->n_outputs; j++) {
		uint32_t t = j < n->n_inputs ? n->inputs[j] : n->outputs[j - n->n_inputs];

		if (t >= n_tensors)
			return nq_fail(-EINVAL, "writer: node '%s': tensor %u not declared (%u tensors)",
				       n->name, t, n_tensors);
	}
	name = add_string(w, n->name);
	if (name < 0)
		return (int)name;
	rec.op = n->op;
	rec.name = (uint32_t)name;
	rec.first_io = (uint32_t)(w->io.len / 4);
	rec.n_inputs = n->n_inputs;
	rec.n_outputs = n->n_outputs;
	rec.layer = n->layer;
	rec.attrs = n->attrs;
	err = buf_add(&w->io, n->inputs, (size_t)n->n_inputs * 4);
	if (!err)
		err = buf_add(&w->io, n->outputs, (size_t)n->n_outputs * 4);
	if (!err)
		err = buf_add(&w->nodes, &rec, sizeof(rec));
	return err ? err : (int)id;
}

static int add_graph_io(struct nq_writer *w, struct buf *b, uint32_t t, const char *what)
{
	int err = busy(w, "add a graph input/output");

	if (err)
		return err;
	if (t >= w->tensors.len / sizeof(struct nq_disk_tensor))
		return nq_fail(-EINVAL, "writer: graph %s: tensor %u not declared", what, t);
	return buf_add(b, &t, sizeof(t));
}

int nq_writer_add_input(struct nq_writer *w, uint32_t tensor)
{
	return add_graph_io(w, &w->gin, tensor, "input");
}

int nq_writer_add_output(struct nq_writer *w, uint32_t tensor)
{
	return add_graph_io(w, &w->gout, tensor, "output");
}

static uint32_t n_layers(const struct nq_writer *w)
{
	return (uint32_t)(w->layers.len / sizeof(struct nq_disk_layer));
}

static struct nq_disk_plane *plane_rec(const struct nq_writer *w, uint32_t layer, uint32_t level)
{
	return (struct nq_disk_plane *)w->planes.p + (uint64_t)layer * w->n_levels + level;
}

int nq_writer_plane_layout(const struct nq_writer *w, uint32_t layer, uint32_t level,
			   uint32_t *row_stride, uint64_t *size)
{
	if (layer >= n_layers(w) || level >= w->n_levels)
		return nq_fail(-EINVAL, "writer: plane (layer %u, level %u) not declared", layer, level);
	*row_stride = plane_rec(w, layer, level)->row_stride;
	*size = plane_rec(w, layer, level)->size;
	return 0;
}

static struct buf *section_buf(struct nq_writer *w, uint32_t kind)
{
	switch (kind) {
	case NQ_SEC_STRINGS: return &w->strings;
	case NQ_SEC_METADATA: return &w->meta;
	case NQ_SEC_TENSORS: return &w->tensors;
	case NQ_SEC_NODES: return &w->nodes;
	case NQ_SEC_NODE_IO: return &w->io;
	case NQ_SEC_GRAPH_INPUTS: return &w->gin;
	case NQ_SEC_GRAPH_OUTPUTS: return &w->gout;
	case NQ_SEC_LAYERS: return &w->layers;
	case NQ_SEC_PLANES: return &w->planes;
	case NQ_SEC_PARAMS: return &w->params;
	}
	return NULL;		/* PREPROCESS and LEVELS are fixed-size fields */
}

static uint64_t section_size(struct nq_writer *w, uint32_t kind)
{
	if (kind == NQ_SEC_PREPROCESS)
		return sizeof(struct nq_disk_preprocess);
	if (kind == NQ_SEC_LEVELS)
		return (uint64_t)w->n_levels * sizeof(struct nq_disk_level);
	return section_buf(w, kind)->len;
}

/*
 * Start level 1's region (the first one a runtime drops and pages in again)
 * on a 2 MiB boundary of the file when it is big, by moving every region
 * up: the gap after the metadata is never written (a hole: no disk blocks,
 * never read) and costs under 2 MiB of apparent file size.  The runtime
 * maps the file 2 MiB-aligned, so the region's pages can live in PMD-sized
 * page-cache folios, mapped by one PMD each: a level switch then unmaps and
 * evicts one folio per 2 MiB instead of 512 pages (docs/performance.md,
 * "Switching").  A writer recommendation, not a format rule (SPEC.md).
 */
static void shift_for_huge_pages(struct nq_writer *w)
{
	uint64_t shift;
	uint32_t nl = n_layers(w);

	if (w->n_levels < 2 || w->levels[1].region_size < HUGE_MIN)
		return;
	shift = align_up(w->levels[1].region_offset, HUGE_ALIGN) - w->levels[1].region_offset;
	for (uint32_t k = 0; k < w->n_levels; k++) {
		w->levels[k].region_offset += shift;
		for (uint32_t i = 0; i < nl; i++)
			plane_rec(w, i, k)->offset += shift;
	}
	w->file_size += shift;
}

/* Fix the layout: section offsets, region offsets and sizes, plane offsets. */
static int freeze(struct nq_writer *w)
{
	uint64_t pos = NQ_HEADER_SIZE + NSECTIONS * NQ_SECTION_ENTRY_SIZE;
	uint32_t nl = n_layers(w);
	int err;

	if (w->frozen)
		return 0;
	/* STRINGS is a byte blob; keep the next section aligned for the reader. */
	for (uint32_t kind = 1; kind <= NSECTIONS; kind++) {
		pos = align_up(pos, META_ALIGN);
		w->sec_off[kind] = pos;
		pos += section_size(w, kind);
	}
	w->meta_end = align_up(pos, w->align);
	pos = w->meta_end;
	for (uint32_t k = 0; k < w->n_levels; k++) {
		uint64_t start = pos;

		for (uint32_t i = 0; i < nl; i++) {
			struct nq_disk_plane *p = plane_rec(w, i, k);

			pos = align_up(pos, NQ_PLANE_ALIGN);
			p->offset = pos;
			pos += p->size;
		}
		pos = align_up(pos, w->align);
		w->levels[k].region_offset = start;
		w->levels[k].region_size = pos - start;
	}
	w->file_size = pos;
	shift_for_huge_pages(w);
	w->pos = w->levels[0].region_offset;
	w->frozen = true;
	err = 0;
	return err;
}

static int write_at(struct nq_writer *w, const void *data, uint64_t len)
{
	const uint8_t *p = data;

	while (len) {
		size_t chunk = len > (1u << 30) ? (1u << 30) : (size_t)len;
		ssize_t n = pwrite(w->fd, p, chunk, (off_t)w->pos);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return w->failed = nq_fail(n < 0 ? -errno : -EIO, "writer: writing %s: %s",
						   w->tmp, n < 0 ? strerror(errno) : "short write");
		if (w->pos >= w->levels[0].region_offset)
			w->crc = nq_crc32c(w->crc, p, (size_t)n);
		p += n;
		w->pos += (uint64_t)n;
		len -= (uint64_t)n;
	}
	return 0;
}

/* Zero padding up to `to`, included in the running region CRC. */
static int pad_to(struct nq_writer *w, uint64_t to)
{
	static const uint8_t zeros[4096];

	while (w->pos < to) {
		uint64_t n = to - w->pos < sizeof(zeros) ? to - w->pos : sizeof(zeros);
		int err = write_at(w, zeros, n);

		if (err)
			return err;
	}
	return 0;
}

/* Close every level whose planes are all written (all of them if no layers). */
static int close_levels(struct nq_writer *w)
{
	while (w->next_level < w->n_levels && w->next_layer == n_layers(w)) {
		struct nq_disk_level *l = &w->levels[w->next_level];
		int err = pad_to(w, l->region_offset + l->region_size);

		if (err)
			return err;
		l->region_crc32c = w->crc;
		w->crc = 0;
		w->next_level++;
		w->next_layer = 0;
		if (n_layers(w))
			break;
	}
	return 0;
}

int nq_writer_write_plane(struct nq_writer *w, uint32_t layer, uint32_t level,
			  const void *data, uint64_t len)
{
	const struct nq_disk_plane *p;
	int err;

	if (w->failed)
		return w->failed;
	err = freeze(w);
	if (err)
		return err;
	if (layer != w->next_layer || level != w->next_level || layer >= n_layers(w))
		return nq_fail(-EINVAL, "writer: plane (layer %u, level %u) out of order, expected (layer %u, level %u)",
			       layer, level, w->next_layer, w->next_level);
	p = plane_rec(w, layer, level);
	if (len != p->size)
		return nq_fail(-EINVAL, "writer: plane (layer %u, level %u): %" PRIu64
			       " bytes given, the plane has %" PRIu64, layer, level, len, p->size);
	err = pad_to(w, p->offset);
	if (!err)
		err = write_at(w, data, len);
	if (err)
		return err;
	w->next_layer++;
	return close_levels(w);
}

static void fill_section(struct nq_writer *w, uint8_t *img, struct nq_disk_section *s, uint32_t kind)
{
	const void *src;
	uint32_t rs;

	s->kind = kind;
	s->offset = w->sec_off[kind];
	s->size = section_size(w, kind);
	if (kind == NQ_SEC_PREPROCESS)
		src = &w->pre;
	else if (kind == NQ_SEC_LEVELS)
		src = w->levels;
	else
		src = section_buf(w, kind)->p;
	switch (kind) {
	case NQ_SEC_STRINGS: case NQ_SEC_PARAMS: rs = 1; break;
	case NQ_SEC_METADATA: rs = sizeof(struct nq_disk_meta); break;
	case NQ_SEC_PREPROCESS: rs = sizeof(struct nq_disk_preprocess); break;
	case NQ_SEC_LEVELS: rs = sizeof(struct nq_disk_level); break;
	case NQ_SEC_TENSORS: rs = sizeof(struct nq_disk_tensor); break;
	case NQ_SEC_NODES: rs = sizeof(struct nq_disk_node); break;
	case NQ_SEC_LAYERS: rs = sizeof(struct nq_disk_layer); break;
	case NQ_SEC_PLANES: rs = sizeof(struct nq_disk_plane); break;
	default: rs = 4; break;
	}
	s->record_size = rs;
	s->count = (uint32_t)(s->size / rs);
	if (s->size)
		memcpy(img + s->offset, src, s->size);
	s->crc32c = nq_crc32c(0, img + s->offset, s->size);
}

/* Header, section table and sections: the first meta_end bytes of the file. */
static int write_metadata(struct nq_writer *w)
{
	struct nq_disk_header *h;
	struct nq_disk_section *tab;
	uint8_t *img;
	int err;

	for (uint32_t kind = 1; kind <= NSECTIONS; kind++)
		if (kind != NQ_SEC_PREPROCESS && kind != NQ_SEC_LEVELS &&
		    section_size(w, kind) / (kind == NQ_SEC_STRINGS || kind == NQ_SEC_PARAMS ? 1 : 4) > UINT32_MAX)
			return nq_fail(-EOVERFLOW, "writer: section %s has too many records",
				       nq_section_name(kind));
	img = calloc(1, w->meta_end);
	if (!img)
		return nq_fail(-ENOMEM, "writer: out of memory for %" PRIu64 " bytes of metadata",
			       w->meta_end);
	h = (struct nq_disk_header *)img;
	tab = (struct nq_disk_section *)(img + NQ_HEADER_SIZE);
	for (uint32_t kind = 1; kind <= NSECTIONS; kind++)
		fill_section(w, img, &tab[kind - 1], kind);
	memcpy(h->magic, NQ_MAGIC, NQ_MAGIC_LEN);
	h->version_major = NQ_FORMAT_MAJOR;
	h->version_minor = NQ_FORMAT_MINOR;
	h->header_size = NQ_HEADER_SIZE;
	h->file_size = w->file_size;
	h->region_align = w->align;
	h->level_count = w->n_levels;
	h->table_offset = NQ_HEADER_SIZE;
	h->section_count = NSECTIONS;
	h->section_entry_size = NQ_SECTION_ENTRY_SIZE;
	h->table_crc32c = nq_crc32c(0, tab, NSECTIONS * NQ_SECTION_ENTRY_SIZE);
	h->header_crc32c = nq_crc32c(0, h, offsetof(struct nq_disk_header, header_crc32c));
	w->pos = 0;
	err = write_at(w, img, w->meta_end);
	free(img);
	return err;
}

static int fsync_dir(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir;
	int fd, err = 0;

	dir = slash ? strndup(path, (size_t)(slash - path) + 1) : strdup(".");
	if (!dir)
		return nq_fail(-ENOMEM, "writer: out of memory");
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd))
		err = nq_fail(-errno, "writer: fsync of directory %s: %s", dir, strerror(errno));
	if (fd >= 0)
		close(fd);
	free(dir);
	return err;
}

int nq_writer_finish(struct nq_writer *w)
{
	struct nq_file *check;
	int err;

	err = w->failed;
	if (!err)
		err = freeze(w);
	if (!err)
		err = close_levels(w);
	if (!err && w->next_level != w->n_levels)
		err = nq_fail(-EINVAL, "writer: finished before plane (layer %u, level %u) was written",
			      w->next_layer, w->next_level);
	if (!err)
		err = write_metadata(w);
	if (!err && fsync(w->fd))
		err = nq_fail(-errno, "writer: fsync %s: %s", w->tmp, strerror(errno));
	if (!err) {
		err = nq_file_open(w->tmp, &check);
		if (err)
			nq_fail_context(err, "writer: the written file does not validate");
		nq_file_close(check);
	}
	if (!err && rename(w->tmp, w->path))
		err = nq_fail(-errno, "writer: rename %s -> %s: %s", w->tmp, w->path, strerror(errno));
	if (err) {
		nq_writer_abort(w);
		return err;
	}
	err = fsync_dir(w->path);
	free(w->tmp);
	w->tmp = NULL;
	nq_writer_abort(w);	/* frees; the temporary no longer exists */
	return err;
}

void nq_writer_abort(struct nq_writer *w)
{
	if (!w)
		return;
	if (w->fd >= 0)
		close(w->fd);
	if (w->tmp)
		unlink(w->tmp);
	free(w->tmp);
	free(w->path);
	buf_free(&w->strings);
	buf_free(&w->meta);
	buf_free(&w->tensors);
	buf_free(&w->nodes);
	buf_free(&w->io);
	buf_free(&w->gin);
	buf_free(&w->gout);
	buf_free(&w->layers);
	buf_free(&w->planes);
	buf_free(&w->params);
	free(w);
}
