/* SPDX-License-Identifier: MIT */
/*
 * The .nq model file: on-disk structures, reader, writer, plane packing and
 * CRC32C.  Internal to the project (converter, runtime, tests, fuzzers); the
 * normative description is format/SPEC.md, whose structs these mirror.
 *
 * Every function returning int returns 0 (or a count/id >= 0) on success and
 * a negative errno on failure, with a message for nq_last_error()
 * (common/nq_error.h) that names the offending field.
 */
#ifndef NQ_FORMAT_H
#define NQ_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nq_ops.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the .nq reader uses the file in place and needs a little-endian host"
#endif

#define NQ_FORMAT_MAJOR 1
#define NQ_FORMAT_MINOR 0

#define NQ_MAGIC "\x89NQF\r\n\x1a\n"
#define NQ_MAGIC_LEN 8
#define NQ_HEADER_SIZE 128
#define NQ_SECTION_ENTRY_SIZE 32
#define NQ_MAX_SECTIONS 64
#define NQ_FORMAT_MAX_LEVELS 8
#define NQ_MAX_BITS 8
#define NQ_PLANE_ALIGN 64
#define NQ_SECTION_ALIGN 8		/* required by readers; writers use 64 */
#define NQ_REGION_ALIGN_DEFAULT 4096
#define NQ_REGION_ALIGN_MIN 4096
#define NQ_REGION_ALIGN_MAX (1u << 20)
#define NQ_PRE_MAX_CHANNELS 16
#define NQ_NONE 0xFFFFFFFFu

/* ------------------------------------------------------------------ */
/* On-disk structures (little-endian, naturally aligned, no padding).  */

struct nq_disk_header {
	uint8_t magic[8];
	uint16_t version_major;
	uint16_t version_minor;
	uint32_t header_size;
	uint64_t file_size;
	uint32_t region_align;
	uint32_t level_count;
	uint64_t table_offset;
	uint32_t section_count;
	uint32_t section_entry_size;
	uint32_t table_crc32c;
	uint32_t flags;
	uint8_t reserved[68];
	uint32_t header_crc32c;
};

enum nq_section_kind {
	NQ_SEC_STRINGS = 1,
	NQ_SEC_METADATA = 2,
	NQ_SEC_PREPROCESS = 3,
	NQ_SEC_LEVELS = 4,
	NQ_SEC_TENSORS = 5,
	NQ_SEC_NODES = 6,
	NQ_SEC_NODE_IO = 7,
	NQ_SEC_GRAPH_INPUTS = 8,
	NQ_SEC_GRAPH_OUTPUTS = 9,
	NQ_SEC_LAYERS = 10,
	NQ_SEC_PLANES = 11,
	NQ_SEC_PARAMS = 12,
	NQ_SEC_KNOWN_MAX = 12,
};

struct nq_disk_section {
	uint32_t kind;
	uint32_t record_size;
	uint64_t offset;
	uint64_t size;
	uint32_t count;
	uint32_t crc32c;
};

struct nq_disk_meta {
	uint32_t key;
	uint32_t value;
};

enum nq_layout {
	NQ_LAYOUT_NCHW = 1,
	NQ_LAYOUT_NHWC = 2,
};

struct nq_disk_preprocess {
	uint32_t layout;		/* enum nq_layout: the caller's buffer */
	uint32_t channels;
	float input_scale;
	uint32_t flags;
	float mean[NQ_PRE_MAX_CHANNELS];
	float std[NQ_PRE_MAX_CHANNELS];
};

struct nq_disk_level {
	uint32_t bits;
	uint32_t region_crc32c;
	uint64_t region_offset;
	uint64_t region_size;
};

enum nq_tensor_type {
	NQ_TENSOR_F32 = 1,
	NQ_TENSOR_U8 = 2,
	NQ_TENSOR_S8 = 3,
	NQ_TENSOR_S32 = 4,
};

struct nq_disk_tensor {
	uint32_t name;
	uint8_t dtype;
	uint8_t rank;
	uint16_t flags;
	uint32_t dims[4];
	float scale;
	int32_t zero_point;
};

struct nq_disk_node {
	uint32_t op;			/* enum nq_op */
	uint32_t name;
	uint32_t first_io;
	uint32_t n_inputs;
	uint32_t n_outputs;
	uint32_t layer;			/* NQ_NONE unless CONV/GEMM */
	struct nq_attrs attrs;
};

enum nq_layer_kind {
	NQ_LAYER_CONV = 1,
	NQ_LAYER_GEMM = 2,
};

struct nq_disk_layer {
	uint32_t name;
	uint32_t kind;			/* enum nq_layer_kind */
	uint32_t oc;
	uint32_t k;
	uint32_t groups;
	uint32_t kh;
	uint32_t kw;
	uint32_t cin_per_group;
	uint32_t bias;			/* PARAMS offset or NQ_NONE */
	uint32_t scales;		/* PARAMS offset of f32[levels][oc] */
	uint32_t flags;
	uint32_t reserved;
};

/*
 * Order of a plane's values (SPEC.md "Packing").  ROWS: row c = channel c,
 * row_stride bytes apart.  PANEL16X4: channels in groups of 16 and k in
 * quads of 4, one 64-value chunk of 8 * bits bytes per (group, quad), value
 * i of a chunk = channel 16 g + i / 4, weight 4 j + i % 4; row_stride is 0.
 */
enum nq_plane_layout {
	NQ_PLANE_ROWS = 0,
	NQ_PLANE_PANEL16X4 = 1,
};

#define NQ_PANEL_CH 16			/* channels per PANEL16X4 group */
#define NQ_PANEL_K 4			/* weights per PANEL16X4 quad */

struct nq_disk_plane {
	uint64_t offset;
	uint64_t size;
	uint32_t row_stride;		/* ROWS; 0 for PANEL16X4 */
	uint8_t bits;
	uint8_t is_signed;
	uint8_t level;
	uint8_t layout;			/* enum nq_plane_layout (was reserved, 0) */
};

_Static_assert(sizeof(struct nq_disk_header) == NQ_HEADER_SIZE, "header size");
_Static_assert(offsetof(struct nq_disk_header, header_crc32c) == 124, "header crc offset");
_Static_assert(sizeof(struct nq_disk_section) == NQ_SECTION_ENTRY_SIZE, "section size");
_Static_assert(sizeof(struct nq_disk_meta) == 8, "meta size");
_Static_assert(sizeof(struct nq_disk_preprocess) == 144, "preprocess size");
_Static_assert(sizeof(struct nq_disk_level) == 24, "level size");
_Static_assert(sizeof(struct nq_disk_tensor) == 32, "tensor size");
_Static_assert(sizeof(struct nq_disk_node) == 88, "node size");
_Static_assert(offsetof(struct nq_disk_node, attrs) == 24, "node attrs offset");
_Static_assert(sizeof(struct nq_disk_layer) == 48, "layer size");
_Static_assert(sizeof(struct nq_disk_plane) == 24, "plane size");

/* Printable names ("STRINGS", "f32", "CONV", ...); "?" when unknown. */
const char *nq_section_name(uint32_t kind);
const char *nq_tensor_type_name(uint32_t dtype);
const char *nq_file_op_name(uint32_t op);
const char *nq_layer_kind_name(uint32_t kind);
const char *nq_plane_layout_name(uint32_t layout);

/* ------------------------------------------------------------------ */
/* CRC32C (Castagnoli).                                                */

/*
 * Continue a CRC32C over buf: start with crc = 0, feed the result of one call
 * to the next.  Uses SSE4.2 / ARMv8 CRC instructions when the CPU has them
 * (checked once at run time), a table otherwise.  nq_crc32c_sw always uses the
 * table (tests compare the two).
 */
uint32_t nq_crc32c(uint32_t crc, const void *buf, size_t len);
uint32_t nq_crc32c_sw(uint32_t crc, const void *buf, size_t len);
/* Name of the implementation nq_crc32c uses ("sse4.2", "armv8-crc", "table"). */
const char *nq_crc32c_impl(void);

/* ------------------------------------------------------------------ */
/* Plane packing (format/plane.c).                                     */

/* Bytes needed for n values of `bits` bits: ceil(n * bits / 8). */
uint64_t nq_packed_bytes(uint64_t n, unsigned int bits);

/* Range of a `bits`-bit value; unsigned 8-bit values do not fit int8. */
int nq_bits_range(unsigned int bits, bool is_signed, int *lo, int *hi);

/*
 * Pack n int8 values into `bits`-bit fields, LSB-first (SPEC.md "Packing").
 * out must hold nq_packed_bytes(n, bits) bytes; it is fully written (the tail
 * bits of the last byte are zero).  Returns -ERANGE naming the index and value
 * of the first value outside the range; -EINVAL for bits outside 1..8, or
 * unsigned 8-bit.
 */
int nq_pack_row(const int8_t *vals, uint32_t n, unsigned int bits, bool is_signed,
		uint8_t *out);

/*
 * Unpack values [start, start + n) of a packed row into out (sign-extended
 * when is_signed).  row must hold nq_packed_bytes(start + n, bits) bytes.
 */
int nq_unpack_row(const uint8_t *row, uint32_t start, uint32_t n, unsigned int bits,
		  bool is_signed, int8_t *out);

/*
 * One nesting step, in place: q[i] = q[i] * 2^shift + r[i] (shift = b_k -
 * b_{k-1}, 1..7).  Returns -ERANGE (naming the index) if a result leaves the
 * signed `bits_out`-bit range; q is then partly updated.
 */
int nq_compose_step(int8_t *q, const int8_t *r, uint32_t n, unsigned int shift,
		    unsigned int bits_out);

/*
 * PANEL16X4 geometry: bytes of one 16-channel group (ceil(k / 4) chunks of
 * 8 * bits bytes) and of a whole plane of oc channels.
 */
static inline uint64_t nq_panel_group_bytes(uint32_t k, unsigned int bits)
{
	return ((uint64_t)k + NQ_PANEL_K - 1) / NQ_PANEL_K * 8 * bits;
}

static inline uint64_t nq_panel_plane_bytes(uint32_t oc, uint32_t k, unsigned int bits)
{
	return ((uint64_t)oc + NQ_PANEL_CH - 1) / NQ_PANEL_CH * nq_panel_group_bytes(k, bits);
}

/*
 * Pack the k values of channel `row` into a plane of either layout (plane
 * bytes zeroed beforehand by the caller; PANEL16X4 ORs the fields in).
 * row_stride is used by ROWS only.  Errors as nq_pack_row; -EINVAL for an
 * unknown layout.
 */
int nq_plane_pack_row(uint8_t *plane, uint32_t layout, uint32_t row_stride, uint32_t k,
		      uint32_t row, const int8_t *vals, unsigned int bits, bool is_signed);

/* ------------------------------------------------------------------ */
/* Reader.                                                             */

struct nq_file;

/*
 * Map `path` read-only (MAP_SHARED; the fd stays open for madvise/fadvise by
 * the runtime) and validate everything except plane contents and region CRCs
 * (SPEC.md "Validation").  On success *out owns the mapping.  On failure
 * *out is NULL and the message names the field, prefixed with nothing (the
 * caller adds the path).  Plane pages are not touched.  As with any shared
 * mapping, truncating the file while it is open makes later accesses fault
 * (SIGBUS): files are replaced by rename (nq_writer_finish), never rewritten.
 */
int nq_file_open(const char *path, struct nq_file **out);

/*
 * Same over a caller's buffer, which must stay valid and unchanged until
 * nq_file_close() and be 8-byte aligned (-EINVAL otherwise).  No fd.
 */
int nq_file_open_memory(const void *buf, size_t len, struct nq_file **out);

/* Unmap and free; NULL is a no-op. */
void nq_file_close(struct nq_file *f);

/* Whole file: base address, length, fd (-1 for memory files). */
const uint8_t *nq_file_data(const struct nq_file *f);
uint64_t nq_file_size(const struct nq_file *f);
int nq_file_fd(const struct nq_file *f);
const struct nq_disk_header *nq_file_header(const struct nq_file *f);

/* A validated string reference (never NULL; "" for an invalid reference). */
const char *nq_file_str(const struct nq_file *f, uint32_t ref);

/* Metadata: count, pair i (key/value strings), or the value of `key` (NULL if absent). */
uint32_t nq_file_meta_count(const struct nq_file *f);
int nq_file_meta_at(const struct nq_file *f, uint32_t i, const char **key, const char **value);
const char *nq_file_meta(const struct nq_file *f, const char *key);

const struct nq_disk_preprocess *nq_file_preprocess(const struct nq_file *f);

/* Levels and their regions; NULL / -EINVAL when level is out of range. */
uint32_t nq_file_level_count(const struct nq_file *f);
const struct nq_disk_level *nq_file_level(const struct nq_file *f, uint32_t level);
int nq_file_region(const struct nq_file *f, uint32_t level, uint64_t *offset, uint64_t *len);

/* Graph: views are zero-copy, valid until nq_file_close; NULL when out of range. */
uint32_t nq_file_tensor_count(const struct nq_file *f);
const struct nq_disk_tensor *nq_file_tensor(const struct nq_file *f, uint32_t id);
uint32_t nq_file_node_count(const struct nq_file *f);
const struct nq_disk_node *nq_file_node(const struct nq_file *f, uint32_t i);
const uint32_t *nq_file_node_inputs(const struct nq_file *f, uint32_t i, uint32_t *n);
const uint32_t *nq_file_node_outputs(const struct nq_file *f, uint32_t i, uint32_t *n);
const uint32_t *nq_file_graph_inputs(const struct nq_file *f, uint32_t *n);
const uint32_t *nq_file_graph_outputs(const struct nq_file *f, uint32_t *n);

/* Weight layers: record, per-level scales f32[oc], bias f32[oc] (NULL if none). */
uint32_t nq_file_layer_count(const struct nq_file *f);
const struct nq_disk_layer *nq_file_layer(const struct nq_file *f, uint32_t layer);
const float *nq_file_layer_scales(const struct nq_file *f, uint32_t layer, uint32_t level);
const float *nq_file_layer_bias(const struct nq_file *f, uint32_t layer);

/* A plane, ready to use: data points into the mapping (not paged in yet). */
struct nq_plane_view {
	const uint8_t *data;
	uint64_t offset;		/* in the file */
	uint64_t size;			/* oc * row_stride, or the panel bytes */
	uint32_t row_stride;		/* ROWS only */
	uint32_t rows;			/* oc */
	uint32_t k;			/* values per row */
	unsigned int bits;
	bool is_signed;
	unsigned int layout;		/* enum nq_plane_layout */
};
int nq_file_plane(const struct nq_file *f, uint32_t layer, uint32_t level,
		  struct nq_plane_view *v);

/*
 * Values [start, start + n) of channel `row` of a plane view, either layout
 * (sign-extended when signed).  -EINVAL for an unknown layout.
 */
int nq_plane_unpack(const struct nq_plane_view *v, uint32_t row, uint32_t start, uint32_t n,
		    int8_t *out);

/*
 * Bytes from the start of a plane view to channel c0's data: c0 * row_stride
 * (ROWS), or c0's 16-channel group (PANEL16X4; c0 a multiple of 16).
 */
static inline uint64_t nq_plane_channel_offset(const struct nq_plane_view *v, uint32_t c0)
{
	if (v->layout == NQ_PLANE_PANEL16X4)
		return (uint64_t)(c0 / NQ_PANEL_CH) * nq_panel_group_bytes(v->k, v->bits);
	return (uint64_t)c0 * v->row_stride;
}

/*
 * The composed weights q_level of layer `layer`, row `row`, values
 * [start, start + n): unpacks planes 0..level and applies the nesting steps
 * (the scalar oracle).  Touches the plane pages of every level <= level.
 * -ERANGE when a composed value leaves the level's range (corrupt planes).
 */
int nq_file_unpack_weights(const struct nq_file *f, uint32_t layer, uint32_t level,
			   uint32_t row, uint32_t start, uint32_t n, int8_t *out);

/*
 * Check the CRC32C of region `level`, or of every region when level < 0.
 * Reads (and faults in) the region's pages.  -EBADMSG names the region.
 */
int nq_file_verify_planes(const struct nq_file *f, int level);

/* ------------------------------------------------------------------ */
/* Writer.                                                             */

struct nq_writer;

struct nq_writer_opts {
	uint32_t region_align;		/* 0 = NQ_REGION_ALIGN_DEFAULT */
};

/* Tensor as declared to the writer; the name is copied. */
struct nq_tensor_desc {
	const char *name;
	enum nq_tensor_type dtype;
	uint32_t rank;
	uint32_t dims[4];
	float scale;
	int32_t zero_point;
};

struct nq_node_desc {
	const char *name;
	enum nq_op op;
	const uint32_t *inputs;
	uint32_t n_inputs;
	const uint32_t *outputs;
	uint32_t n_outputs;
	uint32_t layer;			/* from nq_writer_add_layer, or NQ_NONE */
	struct nq_attrs attrs;
};

/*
 * A weight layer.  plane_bits/plane_signed give each level's plane encoding
 * (plane 0: b_0, signed).  row_stride[k] = 0 picks the packed minimum.
 * layout (enum nq_plane_layout) applies to every plane of the layer;
 * PANEL16X4 needs groups == 1 and row_stride[] all 0.
 * scales points to f32[levels][oc] (level-major), bias to f32[oc] or NULL;
 * both are copied.
 */
struct nq_layer_desc {
	const char *name;
	enum nq_layer_kind kind;
	uint32_t oc, k, groups, kh, kw, cin_per_group;
	uint8_t plane_bits[NQ_FORMAT_MAX_LEVELS];
	bool plane_signed[NQ_FORMAT_MAX_LEVELS];
	uint32_t row_stride[NQ_FORMAT_MAX_LEVELS];
	uint32_t layout;
	const float *scales;
	const float *bias;
};

/*
 * Start a file that will appear at `path` on nq_writer_finish().  Creates a
 * temporary file in path's directory.  levels[0..n_levels) are the bit widths
 * b_k, strictly ascending.  opts may be NULL.
 */
int nq_writer_create(const char *path, const uint8_t *levels, uint32_t n_levels,
		     const struct nq_writer_opts *opts, struct nq_writer **out);

/* Metadata pair (strings copied); duplicate or empty keys give -EINVAL. */
int nq_writer_add_meta(struct nq_writer *w, const char *key, const char *value);
/* Replace the identity preprocessing record (validated). */
int nq_writer_set_preprocess(struct nq_writer *w, const struct nq_disk_preprocess *p);
/* Returns the tensor id (>= 0). */
int nq_writer_add_tensor(struct nq_writer *w, const struct nq_tensor_desc *t);
/* Returns the layer index (>= 0); checks shapes and plane encodings. */
int nq_writer_add_layer(struct nq_writer *w, const struct nq_layer_desc *l);
/* Returns the node index (>= 0); nodes must be added in topological order. */
int nq_writer_add_node(struct nq_writer *w, const struct nq_node_desc *n);
int nq_writer_add_input(struct nq_writer *w, uint32_t tensor);
int nq_writer_add_output(struct nq_writer *w, uint32_t tensor);

/*
 * Row stride and size of a declared plane, so the caller can pack into a
 * buffer of the right size (row stride 0 for a PANEL16X4 plane; pack it
 * with nq_plane_pack_row).
 */
int nq_writer_plane_layout(const struct nq_writer *w, uint32_t layer, uint32_t level,
			   uint32_t *row_stride, uint64_t *size);

/*
 * Stream the next plane.  Planes go in file order: level 0 of layers 0..n-1,
 * then level 1, ...; (layer, level) must be the next one (-EINVAL otherwise)
 * and len its size.  The first call freezes the graph and layers (later add_*
 * calls fail with -EBUSY).  Nothing but this plane is buffered.
 */
int nq_writer_write_plane(struct nq_writer *w, uint32_t layer, uint32_t level,
			  const void *data, uint64_t len);

/*
 * Write metadata, section table and header, check the result with the
 * reader, fsync, rename over `path`, fsync the directory.  Always frees w; on
 * failure the temporary is removed and `path` is untouched.
 */
int nq_writer_finish(struct nq_writer *w);

/* Discard everything: remove the temporary, free w.  NULL is a no-op. */
void nq_writer_abort(struct nq_writer *w);

#endif
