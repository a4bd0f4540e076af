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
