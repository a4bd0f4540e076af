// SPDX-License-Identifier: MIT
/*
 * Weight plane packing: n-bit fields, LSB-first in a little-endian bit stream
 * (format/SPEC.md "Packing"), and the nesting step that composes a level's
 * weights from the level below and a residual plane.  This is the scalar
 * oracle the runtime's kernels and the converter are checked against, so it
 * favours obviousness over speed.
 */
#include <errno.h>
#include <stdint.h>

#include "nq_error.h"
#include "nq_format.h"

uint64_t nq_packed_bytes(uint64_t n, unsigned int bits)
{
	/* n < 2^32 and bits <= 8 in every caller, so n * bits cannot overflow. */
	return (n * bits + 7) / 8;
}

int nq_bits_range(unsigned int bits, bool is_signed, int *lo, int *hi)
{
	if (bits < 1 || bits > NQ_MAX_BITS)
		return nq_fail(-EINVAL, "bit width %u outside 1..%d", bits, NQ_MAX_BITS);
	if (is_signed) {
		*lo = -(1 << (bits - 1));
		*hi = (1 << (bits - 1)) - 1;
		return 0;
	}
	if (bits == 8)
		return nq_fail(-EINVAL, "unsigned 8-bit values do not fit int8");
	*lo = 0;
	*hi = (1 << bits) - 1;
	return 0;
}

int nq_pack_row(const int8_t *vals, uint32_t n, unsigned int bits, bool is_signed,
		uint8_t *out)
{
	uint64_t acc = 0;
	unsigned int fill = 0;
	uint32_t mask;
	size_t o = 0;
	int lo, hi, err;

	err = nq_bits_range(bits, is_signed, &lo, &hi);
	if (err)
		return err;
	mask = (1u << bits) - 1;
	for (uint32_t i = 0; i < n; i++) {
		int v = vals[i];

		if (v < lo || v > hi)
			return nq_fail(-ERANGE, "value %d at index %u outside the %s %u-bit range [%d, %d]",
				       v, i, is_signed ? "signed" : "unsigned", bits, lo, hi);
		acc |= (uint64_t)((uint32_t)v & mask) << fill;
		fill += bits;
		while (fill >= 8) {
			out[o++] = (uint8_t)acc;
			acc >>= 8;
			fill -= 8;
		}
	}
	if (fill)
		out[o] = (uint8_t)acc;
	return 0;
}

int nq_unpack_row(const uint8_t *row, uint32_t start, uint32_t n, unsigned int bits,
		  bool is_signed, int8_t *out)
{
	uint64_t pos = (uint64_t)start * bits;
	uint32_t mask, sign;
	int lo, hi, err;

	err = nq_bits_range(bits, is_signed, &lo, &hi);
	if (err)
		return err;
	mask = (1u << bits) - 1;
	sign = 1u << (bits - 1);
	for (uint32_t i = 0; i < n; i++, pos += bits) {
		uint64_t byte = pos / 8;
		unsigned int shift = pos % 8;
		uint32_t v = row[byte];

		/* A field of <= 8 bits spans at most two bytes; read the second
		 * only when it is part of the field, never past the packed end. */
		if (shift + bits > 8)
			v |= (uint32_t)row[byte + 1] << 8;
		v = (v >> shift) & mask;
		if (is_signed && (v & sign))
			out[i] = (int8_t)((int32_t)v - (int32_t)(mask + 1));
		else
			out[i] = (int8_t)v;
	}
	return 0;
}

int nq_compose_step(int8_t *q, const int8_t *r, uint32_t n, unsigned int shift,
		    unsigned int bits_out)
{
	int lo, hi;

	if (shift < 1 || shift > 7 || bits_out < 2 || bits_out > NQ_MAX_BITS)
		return nq_fail(-EINVAL, "nesting step: shift %u / bits %u out of range",
			       shift, bits_out);
	lo = -(1 << (bits_out - 1));
	hi = (1 << (bits_out - 1)) - 1;
	for (uint32_t i = 0; i < n; i++) {
		int v = q[i] * (1 << shift) + r[i];

		if (v < lo || v > hi)
			return nq_fail(-ERANGE, "weight %u: composed value %d (%d * 2^%u + %d) outside the %u-bit range",
				       i, v, q[i], shift, r[i], bits_out);
		q[i] = (int8_t)v;
	}
	return 0;
}

const char *nq_plane_layout_name(uint32_t layout)
{
	switch (layout) {
	case NQ_PLANE_ROWS: return "rows";
	case NQ_PLANE_PANEL16X4: return "panel16x4";
	}
	return "?";
}

/* Bit position of (channel c, weight j) in a PANEL16X4 plane, in values. */
static uint64_t panel_index(uint32_t k, uint32_t c, uint32_t j)
{
	uint64_t quads = ((uint64_t)k + NQ_PANEL_K - 1) / NQ_PANEL_K;
	uint64_t chunk = (uint64_t)(c / NQ_PANEL_CH) * quads + j / NQ_PANEL_K;

	return chunk * 64 + (c % NQ_PANEL_CH) * NQ_PANEL_K + j % NQ_PANEL_K;
}

int nq_plane_pack_row(uint8_t *plane, uint32_t layout, uint32_t row_stride, uint32_t k,
		      uint32_t row, const int8_t *vals, unsigned int bits, bool is_signed)
{
	uint32_t mask;
	int lo, hi, err;

	if (layout == NQ_PLANE_ROWS)
		return nq_pack_row(vals, k, bits, is_signed, plane + (uint64_t)row * row_stride);
	if (layout != NQ_PLANE_PANEL16X4)
		return nq_fail(-EINVAL, "plane layout %u unknown", layout);
	err = nq_bits_range(bits, is_signed, &lo, &hi);
	if (err)
		return err;
	mask = (1u << bits) - 1;
	for (uint32_t j = 0; j < k; j++) {
		uint64_t pos = panel_index(k, row, j) * bits;
		uint32_t v = (uint32_t)vals[j] & mask;

		if (vals[j] < lo || vals[j] > hi)
			return nq_fail(-ERANGE, "value %d at index %u outside the %s %u-bit range [%d, %d]",
				       vals[j], j, is_signed ? "signed" : "unsigned", bits, lo, hi);
		v <<= pos % 8;
		plane[pos / 8] |= (uint8_t)v;
		if (pos % 8 + bits > 8)
			plane[pos / 8 + 1] |= (uint8_t)(v >> 8);
	}
	return 0;
}

int nq_plane_unpack(const struct nq_plane_view *v, uint32_t row, uint32_t start, uint32_t n,
		    int8_t *out)
{
	uint32_t j = start, end = start + n;
	int err;

	if (v->layout == NQ_PLANE_ROWS)
		return nq_unpack_row(v->data + (uint64_t)row * v->row_stride, start, n, v->bits,
				     v->is_signed, out);
	if (v->layout != NQ_PLANE_PANEL16X4)
		return nq_fail(-EINVAL, "plane layout %u unknown", v->layout);
	/* The weights of one channel come in runs of up to 4 consecutive
	 * values, one run per quad. */
	while (j < end) {
		uint32_t run = NQ_PANEL_K - j % NQ_PANEL_K;
		uint64_t idx = panel_index(v->k, row, j);

		if (run > end - j)
			run = end - j;
		err = nq_unpack_row(v->data + idx / 64 * 8 * v->bits, (uint32_t)(idx % 64), run,
				    v->bits, v->is_signed, out + (j - start));
		if (err)
			return err;
		j += run;
	}
	return 0;
}
