// SPDX-License-Identifier: MIT
/*
 * The .nq reader: map the file, check the container (header, section table,
 * section bounds and checksums), hand the contents to validate.c, then serve
 * zero-copy views.  Nothing in the file is trusted until checked here; every
 * size comparison is written so that it cannot overflow (compare against the
 * bytes that remain rather than adding to an offset).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nq_error.h"
#include "nq_file_int.h"

static const char *const section_names[] = {
	[NQ_SEC_STRINGS] = "STRINGS",
	[NQ_SEC_METADATA] = "METADATA",
	[NQ_SEC_PREPROCESS] = "PREPROCESS",
	[NQ_SEC_LEVELS] = "LEVELS",
	[NQ_SEC_TENSORS] = "TENSORS",
	[NQ_SEC_NODES] = "NODES",
	[NQ_SEC_NODE_IO] = "NODE_IO",
	[NQ_SEC_GRAPH_INPUTS] = "GRAPH_INPUTS",
	[NQ_SEC_GRAPH_OUTPUTS] = "GRAPH_OUTPUTS",
	[NQ_SEC_LAYERS] = "LAYERS",
	[NQ_SEC_PLANES] = "PLANES",
	[NQ_SEC_PARAMS] = "PARAMS",
};

static const uint32_t record_sizes[] = {
	[NQ_SEC_STRINGS] = 1,
	[NQ_SEC_METADATA] = sizeof(struct nq_disk_meta),
	[NQ_SEC_PREPROCESS] = sizeof(struct nq_disk_preprocess),
	[NQ_SEC_LEVELS] = sizeof(struct nq_disk_level),
	[NQ_SEC_TENSORS] = sizeof(struct nq_disk_tensor),
	[NQ_SEC_NODES] = sizeof(struct nq_disk_node),
	[NQ_SEC_NODE_IO] = sizeof(uint32_t),
	[NQ_SEC_GRAPH_INPUTS] = sizeof(uint32_t),
	[NQ_SEC_GRAPH_OUTPUTS] = sizeof(uint32_t),
	[NQ_SEC_LAYERS] = sizeof(struct nq_disk_layer),
	[NQ_SEC_PLANES] = sizeof(struct nq_disk_plane),
	[NQ_SEC_PARAMS] = 1,
};

static const char *const op_names[NQ_OP_COUNT] = {
	[NQ_OP_INVALID] = "INVALID",
	[NQ_OP_QUANTIZE] = "Quantize",
	[NQ_OP_DEQUANTIZE] = "Dequantize",
	[NQ_OP_CONV] = "Conv",
	[NQ_OP_GEMM] = "Gemm",
	[NQ_OP_ADD] = "Add",
	[NQ_OP_MAXPOOL] = "MaxPool",
	[NQ_OP_AVGPOOL] = "AveragePool",
	[NQ_OP_GLOBALAVGPOOL] = "GlobalAveragePool",
	[NQ_OP_FLATTEN] = "Flatten",
	[NQ_OP_RESHAPE] = "Reshape",
	[NQ_OP_CONCAT] = "Concat",
	[NQ_OP_SOFTMAX] = "Softmax",
	[NQ_OP_RELU] = "Relu",
	[NQ_OP_CLIP] = "Clip",
};

const char *nq_section_name(uint32_t kind)
{
	if (kind >= 1 && kind <= NQ_SEC_KNOWN_MAX)
		return section_names[kind];
	return "?";
}

const char *nq_tensor_type_name(uint32_t dtype)
{
	switch (dtype) {
	case NQ_TENSOR_F32: return "f32";
	case NQ_TENSOR_U8: return "u8";
	case NQ_TENSOR_S8: return "s8";
	case NQ_TENSOR_S32: return "s32";
	}
	return "?";
}

const char *nq_file_op_name(uint32_t op)
{
	if (op < NQ_OP_COUNT && op_names[op])
		return op_names[op];
	return "?";
}

const char *nq_layer_kind_name(uint32_t kind)
{
	switch (kind) {
	case NQ_LAYER_CONV: return "conv";
	case NQ_LAYER_GEMM: return "gemm";
	}
	return "?";
}

/* Name of a section for messages, also for kinds this build does not know. */
static const char *sec_label(uint32_t kind, char *buf, size_t len)
{
	if (kind >= 1 && kind <= NQ_SEC_KNOWN_MAX)
		return section_names[kind];
	snprintf(buf, len, "kind %" PRIu32, kind);
	return buf;
}

/* "[off, off + len) lies inside [start, start + size)" without overflow. */
static bool inside(uint64_t off, uint64_t len, uint64_t start, uint64_t size)
{
	return off >= start && off - start <= size && len <= size - (off - start);
}

/*
 * The file is shorter than its header says: say where the cut is.  Only
 * bytes before the cut are read, and nothing is trusted beyond comparing
 * numbers.
 */
static int truncated(const struct nq_file *f)
{
	const struct nq_disk_header *h = f->hdr;
	uint64_t cut = f->size, tend;
	char what[64] = "the metadata";

	tend = h->table_offset + (uint64_t)h->section_count * NQ_SECTION_ENTRY_SIZE;
	if (h->table_offset % 8 || h->table_offset < NQ_HEADER_SIZE || h->table_offset > cut ||
	    h->section_count > NQ_MAX_SECTIONS || cut < tend) {
		snprintf(what, sizeof(what), "the section table");
		goto out;
	}
	for (uint32_t i = 0; i < h->section_count; i++) {
		const struct nq_disk_section *s = (const void *)(f->data + h->table_offset +
							   (uint64_t)i * NQ_SECTION_ENTRY_SIZE);
		char lb[24];

		if (s->offset <= cut && s->size > cut - s->offset) {
			snprintf(what, sizeof(what), "section %s",
				 sec_label(s->kind, lb, sizeof(lb)));
			goto out;
		}
	}
	for (uint32_t i = 0; i < h->section_count; i++) {
		const struct nq_disk_section *s = (const void *)(f->data + h->table_offset +
							   (uint64_t)i * NQ_SECTION_ENTRY_SIZE);

		if (s->kind != NQ_SEC_LEVELS || s->offset % 8 || s->offset > cut ||
		    s->size > cut - s->offset)
			continue;
		for (uint64_t k = 0; k < s->size / sizeof(struct nq_disk_level); k++) {
			const struct nq_disk_level *l = (const void *)(f->data + s->offset +
								 k * sizeof(*l));

			if (l->region_offset <= cut && l->region_size > cut - l->region_offset) {
				snprintf(what, sizeof(what), "the level %" PRIu64 " region", k);
				goto out;
			}
		}
	}
out:
	return nq_fail(-EINVAL, "file truncated to %" PRIu64 " bytes (header says %" PRIu64
		       "): cut inside %s", cut, h->file_size, what);
}

static int check_header(struct nq_file *f)
{
	const struct nq_disk_header *h = (const void *)f->data;
	uint32_t crc;

	if (f->size < NQ_MAGIC_LEN || memcmp(h->magic, NQ_MAGIC, NQ_MAGIC_LEN))
		return nq_fail(-EINVAL, "not a NestQuant model (bad magic)");
	if (f->size < NQ_HEADER_SIZE)
		return nq_fail(-EINVAL, "file is %" PRIu64 " bytes, shorter than the %d-byte header (truncated)",
			       f->size, NQ_HEADER_SIZE);
	f->hdr = h;
	if (h->version_major == 0)
		return nq_fail(-EINVAL, "header: format version 0.%u is not valid", h->version_minor);
	if (h->version_major > NQ_FORMAT_MAJOR)
		return nq_fail(-ENOTSUP, "written by a newer version of NestQuant (format %u.%u, this build reads up to %d.%d)",
			       h->version_major, h->version_minor, NQ_FORMAT_MAJOR, NQ_FORMAT_MINOR);
	crc = nq_crc32c(0, h, offsetof(struct nq_disk_header, header_crc32c));
	if (crc != h->header_crc32c)
		return nq_fail(-EBADMSG, "header checksum mismatch (stored 0x%08x, computed 0x%08x)",
			       h->header_crc32c, crc);
	if (h->header_size != NQ_HEADER_SIZE)
		return nq_fail(-EINVAL, "header: header_size %u, expected %d", h->header_size,
			       NQ_HEADER_SIZE);
	if (h->section_entry_size != NQ_SECTION_ENTRY_SIZE)
		return nq_fail(-EINVAL, "header: section_entry_size %u, expected %d",
			       h->section_entry_size, NQ_SECTION_ENTRY_SIZE);
	if (h->region_align < NQ_REGION_ALIGN_MIN || h->region_align > NQ_REGION_ALIGN_MAX ||
	    (h->region_align & (h->region_align - 1)))
		return nq_fail(-EINVAL, "header: region alignment %u is not a power of two in %u..%u",
			       h->region_align, NQ_REGION_ALIGN_MIN, NQ_REGION_ALIGN_MAX);
	if (h->level_count < 1 || h->level_count > NQ_FORMAT_MAX_LEVELS)
		return nq_fail(-EINVAL, "header: level count %u outside 1..%d", h->level_count,
			       NQ_FORMAT_MAX_LEVELS);
	if (h->section_count < 1 || h->section_count > NQ_MAX_SECTIONS)
		return nq_fail(-EINVAL, "header: section count %u outside 1..%d", h->section_count,
			       NQ_MAX_SECTIONS);
	if (h->file_size > f->size)
		return truncated(f);
	if (h->file_size < f->size)
		return nq_fail(-EINVAL, "file has %" PRIu64 " bytes but the header says %" PRIu64
			       " (trailing bytes)", f->size, h->file_size);
	return 0;
}

static int check_sections(struct nq_file *f)
{
	const struct nq_disk_header *h = f->hdr;
	const struct nq_disk_section *tab;
	uint64_t tlen = (uint64_t)h->section_count * NQ_SECTION_ENTRY_SIZE;
	uint64_t tend;
	uint32_t crc;
	char lb[24], lb2[24];

	if (h->table_offset % 8 || h->table_offset < NQ_HEADER_SIZE ||
	    !inside(h->table_offset, tlen, 0, f->size))
		return nq_fail(-EINVAL, "header: section table [%" PRIu64 ", +%" PRIu64
			       ") is misaligned or outside the file (%" PRIu64 " bytes)",
			       h->table_offset, tlen, f->size);
	tab = (const void *)(f->data + h->table_offset);
	tend = h->table_offset + tlen;
	crc = nq_crc32c(0, tab, tlen);
	if (crc != h->table_crc32c)
		return nq_fail(-EBADMSG, "section table checksum mismatch (stored 0x%08x, computed 0x%08x)",
			       h->table_crc32c, crc);

	for (uint32_t i = 0; i < h->section_count; i++) {
		const struct nq_disk_section *s = &tab[i];
		const char *name = sec_label(s->kind, lb, sizeof(lb));
		bool known = s->kind >= 1 && s->kind <= NQ_SEC_KNOWN_MAX;

		if (s->kind == 0)
			return nq_fail(-EINVAL, "section table entry %u: kind 0 is invalid", i);
		if (s->offset % NQ_SECTION_ALIGN)
			return nq_fail(-EINVAL, "section %s: offset %" PRIu64 " is not %d-byte aligned",
				       name, s->offset, NQ_SECTION_ALIGN);
		if (!inside(s->offset, s->size, tend, f->size - tend))
			return nq_fail(-EINVAL, "section %s: bytes [%" PRIu64 ", +%" PRIu64
				       ") are outside the file's metadata area [%" PRIu64 ", %" PRIu64 ")",
				       name, s->offset, s->size, tend, f->size);
		if (known && s->record_size != record_sizes[s->kind])
			return nq_fail(-EINVAL, "section %s: record size %u, expected %u", name,
				       s->record_size, record_sizes[s->kind]);
		if (!known && s->record_size == 0)
			return nq_fail(-EINVAL, "section %s: record size 0", name);
		/* count and record_size are 32-bit: the product fits in 64 bits. */
		if ((uint64_t)s->count * s->record_size > s->size)
			return nq_fail(-EOVERFLOW, "section %s: count %u x %u-byte records overflows its %" PRIu64 " bytes",
				       name, s->count, s->record_size, s->size);
		if ((uint64_t)s->count * s->record_size != s->size)
			return nq_fail(-EINVAL, "section %s: size %" PRIu64 " is not %u records of %u bytes",
				       name, s->size, s->count, s->record_size);
		if (known) {
			if (f->sec[s->kind])
				return nq_fail(-EINVAL, "section %s appears twice", name);
			f->sec[s->kind] = s;
		}
		for (uint32_t j = 0; j < i; j++) {
			const struct nq_disk_section *t = &tab[j];

			if (s->size && t->size && s->offset < t->offset + t->size &&
			    t->offset < s->offset + s->size)
				return nq_fail(-EINVAL, "sections %s and %s overlap",
					       sec_label(t->kind, lb2, sizeof(lb2)), name);
		}
		crc = nq_crc32c(0, f->data + s->offset, s->size);
		if (crc != s->crc32c)
			return nq_fail(-EBADMSG, "section %s: checksum mismatch (stored 0x%08x, computed 0x%08x)",
				       name, s->crc32c, crc);
	}
	for (uint32_t k = 1; k <= NQ_SEC_KNOWN_MAX; k++)
		if (!f->sec[k])
			return nq_fail(-EINVAL, "section %s is missing", section_names[k]);

#define VIEW(kind, ptr, cnt)						\
	do {								\
		(ptr) = (const void *)(f->data + f->sec[kind]->offset);	\
		(cnt) = f->sec[kind]->count;				\
	} while (0)
	VIEW(NQ_SEC_STRINGS, f->strings, f->n_strings);
	VIEW(NQ_SEC_METADATA, f->meta, f->n_meta);
	VIEW(NQ_SEC_LEVELS, f->levels, f->n_levels);
	VIEW(NQ_SEC_TENSORS, f->tensors, f->n_tensors);
	VIEW(NQ_SEC_NODES, f->nodes, f->n_nodes);
	VIEW(NQ_SEC_NODE_IO, f->io, f->n_io);
	VIEW(NQ_SEC_GRAPH_INPUTS, f->gin, f->n_gin);
	VIEW(NQ_SEC_GRAPH_OUTPUTS, f->gout, f->n_gout);
	VIEW(NQ_SEC_LAYERS, f->layers, f->n_layers);
	VIEW(NQ_SEC_PLANES, f->planes, f->n_planes);
	VIEW(NQ_SEC_PARAMS, f->params, f->n_params);
#undef VIEW
	f->pre = (const void *)(f->data + f->sec[NQ_SEC_PREPROCESS]->offset);
	if (f->sec[NQ_SEC_PREPROCESS]->count != 1)
		return nq_fail(-EINVAL, "section PREPROCESS: %u records, expected 1",
			       f->sec[NQ_SEC_PREPROCESS]->count);
	return 0;
}

static int parse(struct nq_file *f)
{
	int err;

	err = check_header(f);
	if (err)
		return err;
	err = check_sections(f);
	if (err)
		return err;
	return nq_validate_contents(f);
}

int nq_file_open_memory(const void *buf, size_t len, struct nq_file **out)
{
	struct nq_file *f;
	int err;

	*out = NULL;
	if ((uintptr_t)buf % 8)
		return nq_fail(-EINVAL, "buffer at %p is not 8-byte aligned", buf);
	f = calloc(1, sizeof(*f));
	if (!f)
		return nq_fail(-ENOMEM, "out of memory");
	f->data = buf;
	f->size = len;
	f->fd = -1;
	err = parse(f);
	if (err) {
		free(f);
		return err;
	}
	*out = f;
	return 0;
}

int nq_file_open(const char *path, struct nq_file **out)
{
	struct nq_file *f;
	struct stat st;
	void *map;
	int fd, err;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return nq_fail(-errno, "cannot open: %s", strerror(errno));
	if (fstat(fd, &st)) {
		err = nq_fail(-errno, "cannot stat: %s", strerror(errno));
		goto err_close;
	}
	if (!S_ISREG(st.st_mode)) {
		err = nq_fail(-EINVAL, "not a regular file");
		goto err_close;
	}
	if ((uint64_t)st.st_size > SIZE_MAX) {
		err = nq_fail(-EFBIG, "file of %lld bytes cannot be mapped", (long long)st.st_size);
		goto err_close;
	}
	if (st.st_size < NQ_HEADER_SIZE) {
		/* Too short to map usefully; read it so the messages match the
		 * memory path (bad magic vs truncated header). */
		uint64_t small[NQ_HEADER_SIZE / 8];
		ssize_t n = pread(fd, small, sizeof(small), 0);

		if (n < 0) {
			err = nq_fail(-errno, "cannot read: %s", strerror(errno));
			goto err_close;
		}
		err = nq_file_open_memory(small, (size_t)n, out);
		if (!err) {	/* cannot happen: no valid file is this short */
			nq_file_close(*out);
			*out = NULL;
			err = nq_fail(-EINVAL, "file too short");
		}
		goto err_close;
	}
	map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		err = nq_fail(-errno, "cannot map: %s", strerror(errno));
		goto err_close;
	}
	f = calloc(1, sizeof(*f));
	if (!f) {
		err = nq_fail(-ENOMEM, "out of memory");
		goto err_unmap;
	}
	f->data = map;
	f->size = (uint64_t)st.st_size;
	f->fd = fd;
	f->mapped = true;
	err = parse(f);
	if (err)
		goto err_free;
	*out = f;
	return 0;

err_free:
	free(f);
err_unmap:
	munmap(map, (size_t)st.st_size);
err_close:
	close(fd);
	return err;
}

void nq_file_close(struct nq_file *f)
{
	if (!f)
		return;
	if (f->mapped)
		munmap((void *)f->data, (size_t)f->size);
	if (f->fd >= 0)
		close(f->fd);
	free(f);
}

const uint8_t *nq_file_data(const struct nq_file *f) { return f->data; }
uint64_t nq_file_size(const struct nq_file *f) { return f->size; }
int nq_file_fd(const struct nq_file *f) { return f->fd; }
const struct nq_disk_header *nq_file_header(const struct nq_file *f) { return f->hdr; }
const struct nq_disk_preprocess *nq_file_preprocess(const struct nq_file *f) { return f->pre; }
uint32_t nq_file_meta_count(const struct nq_file *f) { return f->n_meta; }
uint32_t nq_file_level_count(const struct nq_file *f) { return f->n_levels; }
uint32_t nq_file_tensor_count(const struct nq_file *f) { return f->n_tensors; }
uint32_t nq_file_node_count(const struct nq_file *f) { return f->n_nodes; }
uint32_t nq_file_layer_count(const struct nq_file *f) { return f->n_layers; }

const char *nq_file_str(const struct nq_file *f, uint32_t ref)
{
	return ref < f->n_strings ? f->strings + ref : "";
}

int nq_file_meta_at(const struct nq_file *f, uint32_t i, const char **key, const char **value)
{
	if (i >= f->n_meta)
		return nq_fail(-EINVAL, "metadata index %u out of range (%u pairs)", i, f->n_meta);
	*key = nq_file_str(f, f->meta[i].key);
	*value = nq_file_str(f, f->meta[i].value);
	return 0;
}

const char *nq_file_meta(const struct nq_file *f, const char *key)
{
	for (uint32_t i = 0; i < f->n_meta; i++)
		if (!strcmp(nq_file_str(f, f->meta[i].key), key))
			return nq_file_str(f, f->meta[i].value);
	return NULL;
}

const struct nq_disk_level *nq_file_level(const struct nq_file *f, uint32_t level)
{
	return level < f->n_levels ? &f->levels[level] : NULL;
}

int nq_file_region(const struct nq_file *f, uint32_t level, uint64_t *offset, uint64_t *len)
{
	if (level >= f->n_levels)
		return nq_fail(-EINVAL, "level %u out of range (%u levels)", level, f->n_levels);
	*offset = f->levels[level].region_offset;
	*len = f->levels[level].region_size;
	return 0;
}

const struct nq_disk_tensor *nq_file_tensor(const struct nq_file *f, uint32_t id)
{
	return id < f->n_tensors ? &f->tensors[id] : NULL;
}

const struct nq_disk_node *nq_file_node(const struct nq_file *f, uint32_t i)
{
	return i < f->n_nodes ? &f->nodes[i] : NULL;
}

const uint32_t *nq_file_node_inputs(const struct nq_file *f, uint32_t i, uint32_t *n)
{
	if (i >= f->n_nodes) {
		*n = 0;
		return NULL;
	}
	*n = f->nodes[i].n_inputs;
	return f->io + f->nodes[i].first_io;
}

const uint32_t *nq_file_node_outputs(const struct nq_file *f, uint32_t i, uint32_t *n)
{
	if (i >= f->n_nodes) {
		*n = 0;
		return NULL;
	}
	*n = f->nodes[i].n_outputs;
	return f->io + f->nodes[i].first_io + f->nodes[i].n_inputs;
}

const uint32_t *nq_file_graph_inputs(const struct nq_file *f, uint32_t *n)
{
	*n = f->n_gin;
	return f->gin;
}

const uint32_t *nq_file_graph_outputs(const struct nq_file *f, uint32_t *n)
{
	*n = f->n_gout;
	return f->gout;
}

const struct nq_disk_layer *nq_file_layer(const struct nq_file *f, uint32_t layer)
{
	return layer < f->n_layers ? &f->layers[layer] : NULL;
}

const float *nq_file_layer_scales(const struct nq_file *f, uint32_t layer, uint32_t level)
{
	const struct nq_disk_layer *l;

	if (layer >= f->n_layers || level >= f->n_levels)
		return NULL;
	l = &f->layers[layer];
	return (const float *)(f->params + l->scales) + (uint64_t)level * l->oc;
}

const float *nq_file_layer_bias(const struct nq_file *f, uint32_t layer)
{
	if (layer >= f->n_layers || f->layers[layer].bias == NQ_NONE)
		return NULL;
	return (const float *)(f->params + f->layers[layer].bias);
}

int nq_file_plane(const struct nq_file *f, uint32_t layer, uint32_t level,
		  struct nq_plane_view *v)
{
	const struct nq_disk_plane *p;

	if (layer >= f->n_layers || level >= f->n_levels)
		return nq_fail(-EINVAL, "plane (layer %u, level %u) out of range (%u layers, %u levels)",
			       layer, level, f->n_layers, f->n_levels);
	p = &f->planes[(uint64_t)layer * f->n_levels + level];
	v->data = f->data + p->offset;
	v->offset = p->offset;
	v->size = p->size;
	v->row_stride = p->row_stride;
	v->rows = f->layers[layer].oc;
	v->k = f->layers[layer].k;
	v->bits = p->bits;
	v->is_signed = p->is_signed;
	v->layout = p->layout;
	return 0;
}

int nq_file_unpack_weights(const struct nq_file *f, uint32_t layer, uint32_t level,
			   uint32_t row, uint32_t start, uint32_t n, int8_t *out)
{
	const struct nq_disk_layer *l;
	int8_t tmp[256];
	int err;

	if (layer >= f->n_layers || level >= f->n_levels)
		return nq_fail(-EINVAL, "weights (layer %u, level %u) out of range (%u layers, %u levels)",
			       layer, level, f->n_layers, f->n_levels);
	l = &f->layers[layer];
	if (row >= l->oc || start > l->k || n > l->k - start)
		return nq_fail(-EINVAL, "layer %u (%s): row %u values [%u, +%u) outside %u x %u",
			       layer, nq_file_str(f, l->name), row, start, n, l->oc, l->k);
	for (uint32_t done = 0; done < n; done += sizeof(tmp)) {
		uint32_t m = n - done < sizeof(tmp) ? n - done : sizeof(tmp);

		for (uint32_t k = 0; k <= level; k++) {
			struct nq_plane_view v;

			err = nq_file_plane(f, layer, k, &v);
			if (!err)
				err = nq_plane_unpack(&v, row, start + done, m, k ? tmp : out + done);
			if (!err && k)
				err = nq_compose_step(out + done, tmp, m,
						      f->levels[k].bits - f->levels[k - 1].bits,
						      f->levels[k].bits);
			if (err)
				return nq_fail_context(err, "layer %u (%s) level %u row %u from weight %u",
						       layer, nq_file_str(f, l->name), k, row,
						       start + done);
		}
	}
	return 0;
}

int nq_file_verify_planes(const struct nq_file *f, int level)
{
	for (uint32_t k = 0; k < f->n_levels; k++) {
		const struct nq_disk_level *l = &f->levels[k];
		uint32_t crc;

		if (level >= 0 && (uint32_t)level != k)
			continue;
		crc = nq_crc32c(0, f->data + l->region_offset, l->region_size);
		if (crc != l->region_crc32c)
			return nq_fail(-EBADMSG, "level %u region: checksum mismatch (stored 0x%08x, computed 0x%08x)",
				       k, l->region_crc32c, crc);
	}
	if (level >= 0 && (uint32_t)level >= f->n_levels)
		return nq_fail(-EINVAL, "level %d out of range (%u levels)", level, f->n_levels);
	return 0;
}
