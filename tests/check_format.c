// SPDX-License-Identifier: MIT
/*
 * The .nq format: CRC32C, plane packing, writer/reader round trips (2 and 3
 * levels, exact and compact residuals, odd K), atomic writes, and the corpus
 * of bad files, each rejected with its own errno and message.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nq_error.h"
#include "nq_format.h"
#include "nq_test.h"

static uint64_t rng = 12345;

static uint32_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 11);
}

static int rnd_range(int lo, int hi)
{
	return lo + (int)(rnd() % (uint32_t)(hi - lo + 1));
}

static char *path_in_tmp(const char *name)
{
	static char buf[8][256];
	static int next;
	char *p = buf[next++ % 8];

	snprintf(p, 256, "%s/%s", nq_test_tmpdir(), name);
	return p;
}

/* ---------------------------------------------------------------- CRC32C */

START_TEST(crc32c_matches_the_standard_check_value)
{
	ck_assert_uint_eq(nq_crc32c(0, "123456789", 9), 0xE3069283u);
	ck_assert_uint_eq(nq_crc32c_sw(0, "123456789", 9), 0xE3069283u);
	/* Incremental use gives the same result as one call. */
	ck_assert_uint_eq(nq_crc32c(nq_crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
	ck_assert_uint_eq(nq_crc32c(0, "", 0), 0);
}
END_TEST

START_TEST(crc32c_instruction_and_table_agree)
{
	uint8_t buf[1024 + 8];

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)rnd();
	/* Every misalignment and many lengths, so head/body/tail paths all run. */
	for (size_t off = 0; off < 8; off++)
		for (size_t len = 0; len < 1024; len += 1 + len / 8)
			ck_assert_uint_eq(nq_crc32c(7, buf + off, len), nq_crc32c_sw(7, buf + off, len));
	printf("crc32c implementation: %s\n", nq_crc32c_impl());
}
END_TEST

/* ---------------------------------------------------------------- packing */

START_TEST(pack_layout_is_lsb_first)
{
	const int8_t u4[3] = { 1, 2, 3 };
	const int8_t s3[3] = { -1, 2, -4 };	/* 111 010 100 -> 0b0_100_010_111 */
	uint8_t out[4] = { 0xAA, 0xAA, 0xAA, 0xAA };

	ck_assert_int_eq(nq_pack_row(u4, 3, 4, false, out), 0);
	ck_assert_uint_eq(out[0], 0x21);
	ck_assert_uint_eq(out[1], 0x03);
	ck_assert_uint_eq(out[2], 0xAA);	/* nothing past the packed bytes */
	ck_assert_int_eq(nq_pack_row(s3, 3, 3, true, out), 0);
	ck_assert_uint_eq(out[0], 0x17);	/* bits 0-7: 111 010 10 */
	ck_assert_uint_eq(out[1], 0x01);	/* bit 8: the last 1 of 100 */
	ck_assert_uint_eq(nq_packed_bytes(27, 3), 11);
	ck_assert_uint_eq(nq_packed_bytes(9, 5), 6);
}
END_TEST

/*
 * PANEL16X4 order, by hand: chunk j of group g holds (channel 16 g + i / 4,
 * weight 4 j + i % 4) as value i of a 64-value LSB-first stream.
 */
START_TEST(panel_layout_is_channel_quads)
{
	/* oc 17, k 5, 8 bits: 2 groups x 2 quads x 64 bytes. */
	uint8_t p8[256] = { 0 };
	int8_t row[5] = { 1, 2, 3, 4, 5 }, got[5];
	struct nq_plane_view v = { .data = p8, .rows = 17, .k = 5, .bits = 8, .is_signed = true,
				   .layout = NQ_PLANE_PANEL16X4 };

	ck_assert_uint_eq(nq_panel_plane_bytes(17, 5, 8), 256);
	ck_assert_uint_eq(nq_panel_group_bytes(5, 8), 128);
	ck_assert_int_eq(nq_plane_pack_row(p8, NQ_PLANE_PANEL16X4, 0, 5, 1, row, 8, true), 0);
	ck_assert_int_eq(nq_plane_pack_row(p8, NQ_PLANE_PANEL16X4, 0, 5, 16, row, 8, true), 0);
	/* channel 1: chunk 0 bytes 4..7, chunk 1 byte 4 */
	ck_assert_uint_eq(p8[4], 1);
	ck_assert_uint_eq(p8[7], 4);
	ck_assert_uint_eq(p8[64 + 4], 5);
	ck_assert_uint_eq(p8[64 + 5], 0);	/* weight 5 of channel 1: padding */
	/* channel 16: group 1 */
	ck_assert_uint_eq(p8[128], 1);
	ck_assert_uint_eq(p8[192], 5);
	ck_assert_int_eq(nq_plane_unpack(&v, 16, 0, 5, got), 0);
	ck_assert_mem_eq(got, row, 5);
	ck_assert_int_eq(nq_plane_unpack(&v, 1, 3, 2, got), 0);
	ck_assert_int_eq(got[0], 4);
	ck_assert_int_eq(got[1], 5);
	ck_assert_uint_eq(nq_plane_channel_offset(&v, 16), 128);

	/* 3 bits: channel 1, weight 0 is value 4 of chunk 0, bits 12..14. */
	{
		uint8_t p3[2 * 24] = { 0 };
		const int8_t r3[5] = { -1, 0, 0, 0, 3 };

		ck_assert_int_eq(nq_plane_pack_row(p3, NQ_PLANE_PANEL16X4, 0, 5, 1, r3, 3, true), 0);
		ck_assert_uint_eq(p3[1], 0x70);			/* 111 at bits 12..14 */
		ck_assert_uint_eq(p3[24 + 1], 0x30);		/* chunk 1: 011 */
		ck_assert_uint_eq(p3[0] | p3[2] | p3[3], 0);
		v.data = p3;
		v.bits = 3;
		ck_assert_int_eq(nq_plane_unpack(&v, 1, 0, 5, got), 0);
		ck_assert_mem_eq(got, r3, 5);
	}
	ck_assert_int_eq(nq_plane_pack_row(p8, 9, 0, 5, 1, row, 8, true), -EINVAL);
	v.layout = 9;
	ck_assert_int_eq(nq_plane_unpack(&v, 1, 0, 5, got), -EINVAL);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "layout 9 unknown"));
	row[2] = 4;
	ck_assert_int_eq(nq_plane_pack_row(p8, NQ_PLANE_PANEL16X4, 0, 5, 1, row, 3, true), -ERANGE);
}
END_TEST

START_TEST(pack_unpack_every_width)
{
	int8_t in[67], back[67];
	uint8_t packed[80];

	for (unsigned int bits = 1; bits <= 8; bits++) {
		for (int sign = 0; sign <= 1; sign++) {
			int lo, hi;

			if (!sign && bits == 8) {
				ck_assert_int_eq(nq_bits_range(8, false, &lo, &hi), -EINVAL);
				ck_assert_int_eq(nq_pack_row(in, 1, 8, false, packed), -EINVAL);
				continue;
			}
			ck_assert_int_eq(nq_bits_range(bits, sign, &lo, &hi), 0);
			ck_assert_int_eq(lo, sign ? -(1 << (bits - 1)) : 0);
			ck_assert_int_eq(hi, sign ? (1 << (bits - 1)) - 1 : (1 << bits) - 1);
			for (int i = 0; i < 67; i++)	/* include both extremes */
				in[i] = (int8_t)(i == 0 ? lo : i == 1 ? hi : rnd_range(lo, hi));
			memset(packed, 0xFF, sizeof(packed));
			ck_assert_int_eq(nq_pack_row(in, 67, bits, sign, packed), 0);
			/* Tail bits of the last byte are zero. */
			if ((67 * bits) % 8)
				ck_assert_uint_eq(packed[67 * bits / 8] >> ((67 * bits) % 8), 0);
			ck_assert_int_eq(nq_unpack_row(packed, 0, 67, bits, sign, back), 0);
			ck_assert_mem_eq(in, back, 67);
			/* Sub-ranges starting at every bit phase. */
			for (uint32_t start = 0; start < 20; start++) {
				memset(back, 0x55, sizeof(back));
				ck_assert_int_eq(nq_unpack_row(packed, start, 67 - start, bits, sign, back), 0);
				ck_assert_mem_eq(in + start, back, 67 - start);
			}
			/* Out of range on either side, named by index and value. */
			in[5] = (int8_t)(hi + 1 > 127 ? -128 : hi + 1);
			if (hi + 1 <= 127) {
				ck_assert_int_eq(nq_pack_row(in, 67, bits, sign, packed), -ERANGE);
				ck_assert_ptr_nonnull(strstr(nq_last_error(), "index 5"));
			}
			in[5] = (int8_t)(lo - 1);
			if (lo - 1 >= -128) {
				ck_assert_int_eq(nq_pack_row(in, 67, bits, sign, packed), -ERANGE);
				ck_assert_ptr_nonnull(strstr(nq_last_error(), "index 5"));
			}
		}
	}
	ck_assert_int_eq(nq_pack_row(in, 1, 0, true, packed), -EINVAL);
	ck_assert_int_eq(nq_pack_row(in, 1, 9, true, packed), -EINVAL);
}
END_TEST

START_TEST(compose_step_nests_and_checks_range)
{
	int8_t q[3] = { 31, -32, 5 };
	const int8_t r[3] = { 3, -0, -3 };
	int8_t bad[1] = { 31 };
	const int8_t rbad[1] = { 4 };

	ck_assert_int_eq(nq_compose_step(q, r, 3, 2, 8), 0);
	ck_assert_int_eq(q[0], 127);
	ck_assert_int_eq(q[1], -128);
	ck_assert_int_eq(q[2], 17);
	ck_assert_int_eq(nq_compose_step(bad, rbad, 1, 2, 8), -ERANGE);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "128"));
}
END_TEST

/* ---------------------------------------------------------------- round trip */

struct model {
	uint8_t bits[NQ_FORMAT_MAX_LEVELS];
	uint32_t nl;
	bool compact;
	uint32_t align;
	uint32_t n_layers;
	struct nq_layer_desc d[4];
	int8_t *q[4][NQ_FORMAT_MAX_LEVELS];	/* composed q_k per layer and level */
	int8_t *plane[4][NQ_FORMAT_MAX_LEVELS];	/* plane contents (q_0 or r_k) */
	float *scales[4];
	float *bias[4];
};

/* Random q_0, then residuals within the plane encoding and the level's range. */
static void fill_layer(struct model *m, uint32_t li)
{
	struct nq_layer_desc *d = &m->d[li];
	uint64_t n = (uint64_t)d->oc * d->k;

	for (uint32_t k = 0; k < m->nl; k++) {
		m->q[li][k] = malloc(n);
		m->plane[li][k] = malloc(n);
		if (k == 0) {
			d->plane_bits[0] = m->bits[0];
			d->plane_signed[0] = true;
		} else {
			uint32_t dd = m->bits[k] - m->bits[k - 1];

			d->plane_bits[k] = (uint8_t)(m->compact ? dd : dd + 1);
			/* compact: alternate unsigned/signed residuals across layers */
			d->plane_signed[k] = !m->compact || (li % 2 == 1);
		}
	}
	for (uint64_t i = 0; i < n; i++) {
		int lo0 = -(1 << (m->bits[0] - 1)), hi0 = (1 << (m->bits[0] - 1)) - 1;

		m->q[li][0][i] = m->plane[li][0][i] = (int8_t)rnd_range(lo0, hi0);
		for (uint32_t k = 1; k < m->nl; k++) {
			int dd = m->bits[k] - m->bits[k - 1];
			int lok = -(1 << (m->bits[k] - 1)), hik = (1 << (m->bits[k] - 1)) - 1;
			int base = m->q[li][k - 1][i] * (1 << dd);
			int rlo, rhi, plo, phi;

			nq_bits_range(d->plane_bits[k], d->plane_signed[k], &plo, &phi);
			rlo = plo > lok - base ? plo : lok - base;
			rhi = phi < hik - base ? phi : hik - base;
			if (!m->compact) {	/* exact: |r| <= 2^d - 1 */
				rlo = rlo > -((1 << dd) - 1) ? rlo : -((1 << dd) - 1);
				rhi = rhi < (1 << dd) - 1 ? rhi : (1 << dd) - 1;
			}
			m->plane[li][k][i] = (int8_t)rnd_range(rlo, rhi);
			m->q[li][k][i] = (int8_t)(base + m->plane[li][k][i]);
		}
	}
	m->scales[li] = malloc((size_t)m->nl * d->oc * sizeof(float));
	for (uint32_t i = 0; i < m->nl * d->oc; i++)
		m->scales[li][i] = (float)rnd() / 4e9f + 1e-4f;
	m->bias[li] = NULL;
	if (li != 3) {
		m->bias[li] = malloc(d->oc * sizeof(float));
		for (uint32_t i = 0; i < d->oc; i++)
			m->bias[li][i] = ((float)rnd() / 2e9f) - 1.0f;
	}
	d->scales = m->scales[li];
	d->bias = m->bias[li];
}

static void free_model(struct model *m)
{
	for (uint32_t li = 0; li < m->n_layers; li++) {
		for (uint32_t k = 0; k < m->nl; k++) {
			free(m->q[li][k]);
			free(m->plane[li][k]);
		}
		free(m->scales[li]);
		free(m->bias[li]);
	}
}

static void init_model(struct model *m, const uint8_t *bits, uint32_t nl, bool compact,
		       uint32_t align)
{
	memset(m, 0, sizeof(*m));
	memcpy(m->bits, bits, nl);
	m->nl = nl;
	m->compact = compact;
	m->align = align;
	m->n_layers = 4;
	/* Odd K everywhere: 27 (3x3x3), 9 (depthwise 3x3), 5 (1x1), 12 (gemm). */
	m->d[0] = (struct nq_layer_desc){ .name = "conv_a", .kind = NQ_LAYER_CONV, .oc = 5,
		.k = 27, .groups = 1, .kh = 3, .kw = 3, .cin_per_group = 3 };
	m->d[1] = (struct nq_layer_desc){ .name = "conv_dw", .kind = NQ_LAYER_CONV, .oc = 5,
		.k = 9, .groups = 5, .kh = 3, .kw = 3, .cin_per_group = 1 };
	m->d[2] = (struct nq_layer_desc){ .name = "conv_pw", .kind = NQ_LAYER_CONV, .oc = 7,
		.k = 5, .groups = 1, .kh = 1, .kw = 1, .cin_per_group = 5 };
	m->d[3] = (struct nq_layer_desc){ .name = "fc", .kind = NQ_LAYER_GEMM, .oc = 3, .k = 12 };
	/* One plane with a padded row stride, as a converter may want; the
	 * ungrouped conv and the gemm in panel order (oc 5 and 3, k 27 and
	 * 12: a partial 16-channel group and, for 27, a partial quad). */
	m->d[2].row_stride[0] = 16;
	m->d[0].layout = NQ_PLANE_PANEL16X4;
	m->d[3].layout = NQ_PLANE_PANEL16X4;
	for (uint32_t li = 0; li < m->n_layers; li++)
		fill_layer(m, li);
}

#define T(id, name, dt, rank, d0, d1, d2, d3, sc, zp)					\
	do {										\
		struct nq_tensor_desc td = { name, dt, rank, { d0, d1, d2, d3 }, sc, zp }; \
		ck_assert_int_eq(nq_writer_add_tensor(w, &td), id);			\
	} while (0)

static struct nq_attrs conv_attrs(int k, int groups, int act)
{
	struct nq_attrs a = { 0 };

	a.i[NQ_A_KH] = a.i[NQ_A_KW] = k;
	a.i[NQ_A_STRIDE_H] = a.i[NQ_A_STRIDE_W] = 1;
	a.i[NQ_A_PAD_T] = a.i[NQ_A_PAD_L] = a.i[NQ_A_PAD_B] = a.i[NQ_A_PAD_R] = k / 2;
	a.i[NQ_A_DIL_H] = a.i[NQ_A_DIL_W] = 1;
	a.i[NQ_A_GROUPS] = groups;
	a.i[NQ_A_ACT] = act;
	if (act == NQ_ACT_CLIP) {
		a.f[NQ_F_CLIP_MIN] = 0.0f;
		a.f[NQ_F_CLIP_MAX] = 6.0f;
	}
	return a;
}

static int add_node(struct nq_writer *w, const char *name, enum nq_op op, const uint32_t *in,
		    uint32_t nin, uint32_t out, uint32_t layer, struct nq_attrs a)
{
	struct nq_node_desc n = { name, op, in, nin, &out, 1, layer, a };

	return nq_writer_add_node(w, &n);
}

/* Graph and layers of the test model; planes are written by the caller. */
static struct nq_writer *declare_model(const struct model *m, const char *path)
{
	struct nq_writer_opts opts = { .region_align = m->align };
	struct nq_disk_preprocess pre = { .layout = NQ_LAYOUT_NHWC, .channels = 3,
		.input_scale = 1.0f / 255, .mean = { 0.5f, 0.25f, 0.125f }, .std = { 2, 3, 4 } };
	struct nq_attrs none = { 0 }, axis1 = { 0 };
	struct nq_writer *w;
	uint32_t in[2];

	ck_assert_int_eq(nq_writer_create(path, m->bits, m->nl, &opts, &w), 0);
	ck_assert_int_eq(nq_writer_add_meta(w, "producer", "check_format"), 0);
	ck_assert_int_eq(nq_writer_add_meta(w, "convert.calib", "noise \"quoted\""), 0);
	ck_assert_int_eq(nq_writer_add_meta(w, "producer", "again"), -EINVAL);
	ck_assert_int_eq(nq_writer_set_preprocess(w, &pre), 0);
	T(0, "x", NQ_TENSOR_F32, 4, 2, 3, 8, 8, 0.0f, 0);
	T(1, "xq", NQ_TENSOR_U8, 4, 2, 3, 8, 8, 0.02f, 128);
	T(2, "a", NQ_TENSOR_U8, 4, 2, 5, 8, 8, 0.03f, 0);
	T(3, "dw", NQ_TENSOR_S8, 4, 2, 5, 8, 8, 0.04f, -3);
	T(4, "pw", NQ_TENSOR_U8, 4, 2, 7, 8, 8, 0.05f, 7);
	T(5, "cat", NQ_TENSOR_U8, 4, 2, 12, 8, 8, 0.06f, 0);
	T(6, "gap", NQ_TENSOR_U8, 4, 2, 12, 1, 1, 0.07f, 0);
	T(7, "flat", NQ_TENSOR_U8, 2, 2, 12, 0, 0, 0.08f, 0);
	T(8, "fc", NQ_TENSOR_S32, 2, 2, 3, 0, 0, 0.001f, 0);
	T(9, "y", NQ_TENSOR_F32, 2, 2, 3, 0, 0, 0.0f, 0);
	for (uint32_t li = 0; li < m->n_layers; li++)
		ck_assert_int_eq(nq_writer_add_layer(w, &m->d[li]), (int)li);
	axis1.i[NQ_A_AXIS] = 1;
	in[0] = 0;
	ck_assert_int_eq(add_node(w, "quant", NQ_OP_QUANTIZE, in, 1, 1, NQ_NONE, none), 0);
	in[0] = 1;
	ck_assert_int_eq(add_node(w, "conv_a", NQ_OP_CONV, in, 1, 2, 0, conv_attrs(3, 1, NQ_ACT_RELU)), 1);
	in[0] = 2;
	ck_assert_int_eq(add_node(w, "conv_dw", NQ_OP_CONV, in, 1, 3, 1, conv_attrs(3, 5, NQ_ACT_CLIP)), 2);
	in[0] = 3;
	ck_assert_int_eq(add_node(w, "conv_pw", NQ_OP_CONV, in, 1, 4, 2, conv_attrs(1, 1, NQ_ACT_NONE)), 3);
	in[0] = 2;
	in[1] = 4;
	ck_assert_int_eq(add_node(w, "concat", NQ_OP_CONCAT, in, 2, 5, NQ_NONE, axis1), 4);
	in[0] = 5;
	ck_assert_int_eq(add_node(w, "gap", NQ_OP_GLOBALAVGPOOL, in, 1, 6, NQ_NONE, none), 5);
	in[0] = 6;
	ck_assert_int_eq(add_node(w, "flatten", NQ_OP_FLATTEN, in, 1, 7, NQ_NONE, axis1), 6);
	in[0] = 7;
	ck_assert_int_eq(add_node(w, "fc", NQ_OP_GEMM, in, 1, 8, 3, none), 7);
	in[0] = 8;
	ck_assert_int_eq(add_node(w, "deq", NQ_OP_DEQUANTIZE, in, 1, 9, NQ_NONE, none), 8);
	ck_assert_int_eq(nq_writer_add_input(w, 0), 0);
	ck_assert_int_eq(nq_writer_add_output(w, 9), 0);
	return w;
}

static int write_planes(const struct model *m, struct nq_writer *w, uint32_t upto_level)
{
	for (uint32_t k = 0; k < m->nl && k <= upto_level; k++) {
		for (uint32_t li = 0; li < m->n_layers; li++) {
			const struct nq_layer_desc *d = &m->d[li];
			uint32_t stride;
			uint64_t size;
			uint8_t *buf;
			int err;

			ck_assert_int_eq(nq_writer_plane_layout(w, li, k, &stride, &size), 0);
			if (d->layout == NQ_PLANE_PANEL16X4) {
				ck_assert_uint_eq(stride, 0);
				ck_assert_uint_eq(size, (d->oc + 15) / 16 * ((d->k + 3) / 4) * 8 *
						  d->plane_bits[k]);
			} else {
				ck_assert_uint_eq(size, (uint64_t)d->oc * stride);
			}
			buf = calloc(1, size);
			for (uint32_t c = 0; c < d->oc; c++)
				ck_assert_int_eq(nq_plane_pack_row(buf, d->layout, stride, d->k, c,
								   m->plane[li][k] + c * d->k,
								   d->plane_bits[k], d->plane_signed[k]), 0);
			err = nq_writer_write_plane(w, li, k, buf, size);
			free(buf);
			if (err)
				return err;
		}
	}
	return 0;
}

static void check_model(const struct model *m, const struct nq_file *f)
{
	const struct nq_disk_header *h = nq_file_header(f);
	const struct nq_disk_preprocess *pre = nq_file_preprocess(f);
	static const char *const names[] = { "x", "xq", "a", "dw", "pw", "cat", "gap", "flat", "fc", "y" };
	const uint32_t *ids;
	uint32_t n;
	uint64_t prev_end = 0;

	ck_assert_uint_eq(h->version_major, NQ_FORMAT_MAJOR);
	ck_assert_uint_eq(h->region_align, m->align ? m->align : 4096);
	ck_assert_uint_eq(nq_file_level_count(f), m->nl);
	ck_assert_str_eq(nq_file_meta(f, "producer"), "check_format");
	ck_assert_str_eq(nq_file_meta(f, "convert.calib"), "noise \"quoted\"");
	ck_assert_ptr_null(nq_file_meta(f, "missing"));
	ck_assert_uint_eq(nq_file_meta_count(f), 2);
	ck_assert_uint_eq(pre->layout, NQ_LAYOUT_NHWC);
	ck_assert_uint_eq(pre->channels, 3);
	ck_assert_float_eq(pre->mean[2], 0.125f);
	ck_assert_float_eq(pre->std[1], 3.0f);

	for (uint32_t k = 0; k < m->nl; k++) {
		const struct nq_disk_level *l = nq_file_level(f, k);

		ck_assert_uint_eq(l->bits, m->bits[k]);
		ck_assert_uint_eq(l->region_offset % h->region_align, 0);
		ck_assert_uint_eq(l->region_size % h->region_align, 0);
		if (k)
			ck_assert_uint_eq(l->region_offset, prev_end);
		prev_end = l->region_offset + l->region_size;
	}
	ck_assert_uint_eq(prev_end, nq_file_size(f));

	ck_assert_uint_eq(nq_file_tensor_count(f), 10);
	for (uint32_t t = 0; t < 10; t++)
		ck_assert_str_eq(nq_file_str(f, nq_file_tensor(f, t)->name), names[t]);
	ck_assert_uint_eq(nq_file_tensor(f, 3)->dtype, NQ_TENSOR_S8);
	ck_assert_int_eq(nq_file_tensor(f, 3)->zero_point, -3);
	ck_assert_float_eq(nq_file_tensor(f, 4)->scale, 0.05f);
	ck_assert_uint_eq(nq_file_tensor(f, 7)->rank, 2);
	ck_assert_uint_eq(nq_file_tensor(f, 7)->dims[1], 12);
	ck_assert_uint_eq(nq_file_tensor(f, 7)->dims[2], 0);
	ck_assert_ptr_null(nq_file_tensor(f, 10));

	ck_assert_uint_eq(nq_file_node_count(f), 9);
	ck_assert_uint_eq(nq_file_node(f, 4)->op, NQ_OP_CONCAT);
	ids = nq_file_node_inputs(f, 4, &n);
	ck_assert_uint_eq(n, 2);
	ck_assert_uint_eq(ids[0], 2);
	ck_assert_uint_eq(ids[1], 4);
	ids = nq_file_node_outputs(f, 4, &n);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(ids[0], 5);
	ck_assert_str_eq(nq_file_str(f, nq_file_node(f, 2)->name), "conv_dw");
	ck_assert_uint_eq(nq_file_node(f, 2)->layer, 1);
	ck_assert_int_eq(nq_file_node(f, 2)->attrs.i[NQ_A_GROUPS], 5);
	ck_assert_float_eq(nq_file_node(f, 2)->attrs.f[NQ_F_CLIP_MAX], 6.0f);
	ck_assert_uint_eq(nq_file_node(f, 0)->layer, NQ_NONE);
	ids = nq_file_graph_inputs(f, &n);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(ids[0], 0);
	ids = nq_file_graph_outputs(f, &n);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(ids[0], 9);

	ck_assert_uint_eq(nq_file_layer_count(f), m->n_layers);
	for (uint32_t li = 0; li < m->n_layers; li++) {
		const struct nq_layer_desc *d = &m->d[li];
		const struct nq_disk_layer *l = nq_file_layer(f, li);
		const float *bias = nq_file_layer_bias(f, li);
		int8_t *got = malloc(d->k);

		ck_assert_str_eq(nq_file_str(f, l->name), d->name);
		ck_assert_uint_eq(l->kind, d->kind);
		ck_assert_uint_eq(l->oc, d->oc);
		ck_assert_uint_eq(l->k, d->k);
		ck_assert_uint_eq(l->groups, d->kind == NQ_LAYER_CONV ? d->groups : 1);
		ck_assert_uint_eq(l->kh, d->kind == NQ_LAYER_CONV ? d->kh : 1);
		ck_assert_uint_eq(l->cin_per_group, d->kind == NQ_LAYER_CONV ? d->cin_per_group : d->k);
		if (m->bias[li]) {
			ck_assert_ptr_nonnull(bias);
			ck_assert_mem_eq(bias, m->bias[li], d->oc * sizeof(float));
		} else {
			ck_assert_ptr_null(bias);
		}
		for (uint32_t k = 0; k < m->nl; k++) {
			const struct nq_disk_level *lv = nq_file_level(f, k);
			struct nq_plane_view v;

			ck_assert_mem_eq(nq_file_layer_scales(f, li, k), m->scales[li] + k * d->oc,
					 d->oc * sizeof(float));
			ck_assert_int_eq(nq_file_plane(f, li, k, &v), 0);
			ck_assert_uint_eq(v.bits, d->plane_bits[k]);
			ck_assert_int_eq(v.is_signed, d->plane_signed[k]);
			ck_assert_uint_eq(v.rows, d->oc);
			ck_assert_uint_eq(v.k, d->k);
			ck_assert_uint_eq(v.layout, d->layout);
			if (d->layout == NQ_PLANE_PANEL16X4)
				ck_assert_uint_eq(v.row_stride, 0);
			else
				ck_assert_uint_eq(v.row_stride, d->row_stride[k] ? d->row_stride[k] :
						  nq_packed_bytes(d->k, d->plane_bits[k]));
			ck_assert_uint_eq(v.offset % NQ_PLANE_ALIGN, 0);
			ck_assert(v.offset >= lv->region_offset &&
				  v.offset + v.size <= lv->region_offset + lv->region_size);
			for (uint32_t c = 0; c < d->oc; c++) {
				/* the raw plane and the composed weights */
				ck_assert_int_eq(nq_plane_unpack(&v, c, 0, d->k, got), 0);
				ck_assert_mem_eq(got, m->plane[li][k] + c * d->k, d->k);
				ck_assert_int_eq(nq_file_unpack_weights(f, li, k, c, 0, d->k, got), 0);
				ck_assert_mem_eq(got, m->q[li][k] + c * d->k, d->k);
				ck_assert_int_eq(nq_file_unpack_weights(f, li, k, c, 3, d->k - 4, got), 0);
				ck_assert_mem_eq(got, m->q[li][k] + c * d->k + 3, d->k - 4);
			}
		}
		ck_assert_int_eq(nq_file_unpack_weights(f, li, 0, d->oc, 0, 1, got), -EINVAL);
		ck_assert_int_eq(nq_file_unpack_weights(f, li, 0, 0, d->k, 1, got), -EINVAL);
		free(got);
	}
	ck_assert_int_eq(nq_file_verify_planes(f, -1), 0);
	ck_assert_int_eq(nq_file_verify_planes(f, (int)m->nl), -EINVAL);
}

static void round_trip(const uint8_t *bits, uint32_t nl, bool compact, uint32_t align)
{
	const char *path = path_in_tmp("rt.nq");
	struct nq_file *f, *g;
	struct model m;
	struct nq_writer *w;
	uint8_t *copy;
	uint64_t size;

	init_model(&m, bits, nl, compact, align);
	w = declare_model(&m, path);
	ck_assert_int_eq(write_planes(&m, w, nl), 0);
	ck_assert_msg(nq_writer_finish(w) == 0, "finish: %s", nq_last_error());
	ck_assert_msg(nq_file_open(path, &f) == 0, "open: %s", nq_last_error());
	ck_assert_int_ge(nq_file_fd(f), 0);
	check_model(&m, f);

	/* The same bytes through the memory reader; then a flipped plane byte is
	 * invisible at open but caught by verify, naming the region. */
	size = nq_file_size(f);
	copy = aligned_alloc(64, (size + 63) / 64 * 64);
	memcpy(copy, nq_file_data(f), size);
	ck_assert_int_eq(nq_file_open_memory(copy, size, &g), 0);
	ck_assert_int_eq(nq_file_fd(g), -1);
	check_model(&m, g);
	nq_file_close(g);
	copy[nq_file_level(f, nl - 1)->region_offset + 1] ^= 0x10;
	ck_assert_int_eq(nq_file_open_memory(copy, size, &g), 0);
	if (nl > 1)
		ck_assert_int_eq(nq_file_verify_planes(g, 0), 0);
	ck_assert_int_eq(nq_file_verify_planes(g, -1), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "checksum mismatch"));
	ck_assert_int_eq(nq_file_verify_planes(g, (int)nl - 1), -EBADMSG);
	nq_file_close(g);
	ck_assert_int_eq(nq_file_open_memory(copy + 4, size - 4, &g), -EINVAL);
	free(copy);
	nq_file_close(f);
	free_model(&m);
}

START_TEST(round_trip_two_levels_exact)
{
	round_trip((const uint8_t[]){ 6, 8 }, 2, false, 0);
}
END_TEST

START_TEST(round_trip_two_levels_compact)
{
	round_trip((const uint8_t[]){ 4, 8 }, 2, true, 0);
}
END_TEST

START_TEST(round_trip_three_levels_exact)
{
	round_trip((const uint8_t[]){ 4, 6, 8 }, 3, false, 0);
}
END_TEST

START_TEST(round_trip_three_levels_compact_16k_pages)
{
	round_trip((const uint8_t[]){ 2, 5, 8 }, 3, true, 16384);
}
END_TEST

START_TEST(round_trip_one_level)
{
	round_trip((const uint8_t[]){ 8 }, 1, false, 65536);
}
END_TEST

/* ---------------------------------------------------------------- writer */

static int count_dir_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	while (d && (e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	if (d)
		closedir(d);
	return n;
}

START_TEST(aborted_write_leaves_destination_untouched)
{
	char dir[256], path[300], buf[64];
	const uint8_t bits[2] = { 6, 8 };
	struct model m;
	struct nq_writer *w;
	int fd;
	ssize_t n;

	snprintf(dir, sizeof(dir), "%s/atomic", nq_test_tmpdir());
	ck_assert_int_eq(mkdir(dir, 0755), 0);
	snprintf(path, sizeof(path), "%s/model.nq", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ck_assert_int_eq(write(fd, "previous model", 14), 14);
	close(fd);

	init_model(&m, bits, 2, false, 0);
	/* 1. explicit abort after streaming part of the planes */
	w = declare_model(&m, path);
	ck_assert_int_eq(count_dir_entries(dir), 2);	/* model.nq + the temporary */
	ck_assert_int_eq(write_planes(&m, w, 0), 0);
	nq_writer_abort(w);
	/* 2. finish with planes missing: an error, same outcome */
	w = declare_model(&m, path);
	ck_assert_int_eq(write_planes(&m, w, 0), 0);
	ck_assert_int_eq(nq_writer_finish(w), -EINVAL);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "finished before plane (layer 0, level 1)"));

	fd = open(path, O_RDONLY);
	n = read(fd, buf, sizeof(buf));
	close(fd);
	ck_assert_int_eq(n, 14);
	ck_assert_mem_eq(buf, "previous model", 14);
	ck_assert_int_eq(count_dir_entries(dir), 1);

	/* 3. a complete write replaces it, again leaving no temporary */
	w = declare_model(&m, path);
	ck_assert_int_eq(write_planes(&m, w, 1), 0);
	ck_assert_int_eq(nq_writer_finish(w), 0);
	ck_assert_int_eq(count_dir_entries(dir), 1);
	fd = open(path, O_RDONLY);
	n = read(fd, buf, 8);
	close(fd);
	ck_assert_int_eq(n, 8);
	ck_assert_mem_eq(buf, NQ_MAGIC, 8);
	free_model(&m);
}
END_TEST

START_TEST(writer_enforces_plane_order_and_freezes_the_graph)
{
	const uint8_t bits[2] = { 6, 8 }, down[2] = { 8, 6 };
	struct nq_tensor_desc td = { "late", NQ_TENSOR_F32, 1, { 1 }, 0, 0 };
	struct model m;
	struct nq_writer *w;
	uint8_t buf[256] = { 0 };

	ck_assert_int_eq(nq_writer_create(path_in_tmp("bad.nq"), down, 2, NULL, &w), -EINVAL);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "not above"));
	init_model(&m, bits, 2, false, 0);
	w = declare_model(&m, path_in_tmp("order.nq"));
	{
		struct nq_layer_desc bad = m.d[1];	/* depthwise */

		bad.name = "dw_panel";
		bad.layout = NQ_PLANE_PANEL16X4;
		ck_assert_int_eq(nq_writer_add_layer(w, &bad), -EINVAL);
		ck_assert_ptr_nonnull(strstr(nq_last_error(), "panel16x4 needs groups = 1"));
		bad = m.d[0];
		bad.name = "odd_layout";
		bad.layout = 5;
		ck_assert_int_eq(nq_writer_add_layer(w, &bad), -EINVAL);
		ck_assert_ptr_nonnull(strstr(nq_last_error(), "plane layout 5 unknown"));
	}
	ck_assert_int_eq(nq_writer_write_plane(w, 1, 0, buf, 1), -EINVAL);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "out of order"));
	ck_assert_int_eq(nq_writer_write_plane(w, 0, 0, buf, 3), -EINVAL);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "bytes given"));
	ck_assert_int_eq(nq_writer_add_tensor(w, &td), -EBUSY);
	nq_writer_abort(w);
	free_model(&m);
}
END_TEST

/* ---------------------------------------------------------------- corpus */

static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	uint8_t *buf = NULL;
	long n;

	if (!fp)
		return NULL;
	if (!fseek(fp, 0, SEEK_END) && (n = ftell(fp)) >= 0 && !fseek(fp, 0, SEEK_SET)) {
		buf = aligned_alloc(64, ((size_t)n + 64) / 64 * 64);
		if (buf && fread(buf, 1, (size_t)n, fp) != (size_t)n) {
			free(buf);
			buf = NULL;
		}
		*len = (size_t)n;
	}
	fclose(fp);
	return buf;
}

static int errno_by_name(const char *s)
{
	static const struct { const char *name; int e; } t[] = {
		{ "EINVAL", EINVAL }, { "EBADMSG", EBADMSG }, { "ENOTSUP", ENOTSUP },
		{ "EOVERFLOW", EOVERFLOW }, { "ERANGE", ERANGE },
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (!strcmp(s, t[i].name))
			return t[i].e;
	return 0;
}

START_TEST(good_corpus_file_opens)
{
	char path[512];
	struct nq_file *f;

	snprintf(path, sizeof(path), "%s/tests/corpus/format-good/sample.nq", nq_test_srcdir());
	ck_assert_msg(nq_file_open(path, &f) == 0, "%s: %s", path, nq_last_error());
	ck_assert_uint_eq(nq_file_level_count(f), 2);
	ck_assert_uint_eq(nq_file_layer_count(f), 3);
	ck_assert_int_eq(nq_file_verify_planes(f, -1), 0);
	nq_file_close(f);
}
END_TEST

/*
 * tests/corpus/format-bad/EXPECTED: one line per file,
 *   FILE <TAB> ERRNO <TAB> open|verify <TAB> message substring
 * Every *.nq in the folder must be listed, and each must fail as listed,
 * through both the mmap reader and the memory reader.
 */
START_TEST(bad_corpus_is_rejected_with_its_own_message)
{
	char dir[512], path[1024], line[1024];
	int listed = 0, present = 0;
	FILE *fp;
	DIR *d;
	struct dirent *e;

	snprintf(dir, sizeof(dir), "%s/tests/corpus/format-bad", nq_test_srcdir());
	snprintf(path, sizeof(path), "%s/EXPECTED", dir);
	fp = fopen(path, "r");
	ck_assert_msg(fp != NULL, "cannot open %s", path);
	while (fgets(line, sizeof(line), fp)) {
		char *file, *ename, *stage, *msg, *save;
		struct nq_file *f;
		uint8_t *buf;
		size_t len;
		int want, err;

		if (line[0] == '#' || line[0] == '\n')
			continue;
		line[strcspn(line, "\n")] = '\0';
		file = strtok_r(line, "\t", &save);
		ename = strtok_r(NULL, "\t", &save);
		stage = strtok_r(NULL, "\t", &save);
		msg = strtok_r(NULL, "", &save);
		ck_assert_msg(file && ename && stage && msg, "malformed EXPECTED line");
		want = errno_by_name(ename);
		ck_assert_msg(want, "%s: unknown errno name %s", file, ename);
		snprintf(path, sizeof(path), "%s/%s", dir, file);
		listed++;

		err = nq_file_open(path, &f);
		if (!strcmp(stage, "verify")) {
			ck_assert_msg(err == 0, "%s: should open, got %d %s", file, err, nq_last_error());
			err = nq_file_verify_planes(f, -1);
			nq_file_close(f);
		} else {
			ck_assert_msg(err < 0, "%s: was accepted", file);
			ck_assert_ptr_null(f);
		}
		ck_assert_msg(err == -want, "%s: errno %d, expected -%s (%s)", file, err, ename,
			      nq_last_error());
		ck_assert_msg(strstr(nq_last_error(), msg), "%s: message '%s' lacks '%s'", file,
			      nq_last_error(), msg);

		buf = slurp(path, &len);
		ck_assert_ptr_nonnull(buf);
		err = nq_file_open_memory(buf, len, &f);
		if (!err) {
			err = nq_file_verify_planes(f, -1);
			nq_file_close(f);
		}
		ck_assert_msg(err == -want && strstr(nq_last_error(), msg),
			      "%s from memory: %d %s", file, err, nq_last_error());
		free(buf);
	}
	fclose(fp);

	d = opendir(dir);
	ck_assert_ptr_nonnull(d);
	while ((e = readdir(d)))
		if (strlen(e->d_name) > 3 && !strcmp(e->d_name + strlen(e->d_name) - 3, ".nq"))
			present++;
	closedir(d);
	ck_assert_int_ge(listed, 20);
	ck_assert_int_eq(present, listed);
	printf("bad corpus: %d files rejected as expected\n", listed);
}
END_TEST

START_TEST(missing_and_odd_files)
{
	struct nq_file *f;
	const char *p = path_in_tmp("empty.nq");
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	close(fd);
	ck_assert_int_eq(nq_file_open(path_in_tmp("does-not-exist.nq"), &f), -ENOENT);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "cannot open"));
	ck_assert_int_eq(nq_file_open(p, &f), -EINVAL);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "bad magic"));
	ck_assert_int_eq(nq_file_open(nq_test_tmpdir(), &f), -EINVAL);
	ck_assert_ptr_nonnull(strstr(nq_last_error(), "not a regular file"));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("format");
	TCase *tc = tcase_create("format");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, crc32c_matches_the_standard_check_value);
	tcase_add_test(tc, crc32c_instruction_and_table_agree);
	tcase_add_test(tc, pack_layout_is_lsb_first);
	tcase_add_test(tc, pack_unpack_every_width);
	tcase_add_test(tc, panel_layout_is_channel_quads);
	tcase_add_test(tc, compose_step_nests_and_checks_range);
	tcase_add_test(tc, round_trip_two_levels_exact);
	tcase_add_test(tc, round_trip_two_levels_compact);
	tcase_add_test(tc, round_trip_three_levels_exact);
	tcase_add_test(tc, round_trip_three_levels_compact_16k_pages);
	tcase_add_test(tc, round_trip_one_level);
	tcase_add_test(tc, aborted_write_leaves_destination_untouched);
	tcase_add_test(tc, writer_enforces_plane_order_and_freezes_the_graph);
	tcase_add_test(tc, good_corpus_file_opens);
	tcase_add_test(tc, bad_corpus_is_rejected_with_its_own_message);
	tcase_add_test(tc, missing_and_odd_files);
	suite_add_tcase(s, tc);
	return nq_test_run(s);
}
