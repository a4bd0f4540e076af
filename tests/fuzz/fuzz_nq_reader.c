// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for the .nq reader.
 *
 * Every input is tried twice: as given (which mostly exercises the header
 * and checksum checks, since random bytes rarely carry a valid CRC32C), and
 * with file_size and every checksum the input covers recomputed, so mutations
 * reach the structural validation behind the CRCs.  When a file is accepted,
 * every accessor is used and every weight composed, so a validation gap shows
 * up as an out-of-bounds read under AddressSanitizer.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nq_format.h"

#define MAX_WEIGHTS (1u << 16)	/* per input, to keep executions fast */

static void exercise(const uint8_t *buf, size_t size)
{
	struct nq_file *f;
	uint32_t n, budget = MAX_WEIGHTS;
	const uint32_t *ids;
	volatile size_t sink = 0;
	int8_t row[256];

	if (nq_file_open_memory(buf, size, &f))
		return;
	for (uint32_t i = 0; i < nq_file_meta_count(f); i++) {
		const char *k, *v;

		if (!nq_file_meta_at(f, i, &k, &v))
			sink += strlen(k) + strlen(v);
	}
	for (uint32_t t = 0; t < nq_file_tensor_count(f); t++)
		sink += strlen(nq_file_str(f, nq_file_tensor(f, t)->name));
	for (uint32_t i = 0; i < nq_file_node_count(f); i++) {
		sink += strlen(nq_file_str(f, nq_file_node(f, i)->name));
		ids = nq_file_node_inputs(f, i, &n);
		for (uint32_t j = 0; j < n; j++)
			sink += nq_file_tensor(f, ids[j])->rank;
		ids = nq_file_node_outputs(f, i, &n);
		for (uint32_t j = 0; j < n; j++)
			sink += nq_file_tensor(f, ids[j])->rank;
	}
	ids = nq_file_graph_inputs(f, &n);
	for (uint32_t j = 0; j < n; j++)
		sink += nq_file_tensor(f, ids[j])->dtype;
	ids = nq_file_graph_outputs(f, &n);
	for (uint32_t j = 0; j < n; j++)
		sink += nq_file_tensor(f, ids[j])->dtype;
	for (uint32_t li = 0; li < nq_file_layer_count(f); li++) {
		const struct nq_disk_layer *l = nq_file_layer(f, li);
		const float *bias = nq_file_layer_bias(f, li);

		sink += strlen(nq_file_str(f, l->name));
		if (bias)
			sink += (size_t)(bias[l->oc - 1] != 0);
		for (uint32_t k = 0; k < nq_file_level_count(f); k++) {
			const float *s = nq_file_layer_scales(f, li, k);
			struct nq_plane_view v;

			sink += (size_t)(s[0] + s[l->oc - 1] > 0);
			if (nq_file_plane(f, li, k, &v))
				abort();
			if (v.size)
				sink += v.data[0] + v.data[v.size - 1];
			for (uint32_t r = 0; r < l->oc && budget; r++) {
				uint32_t m = l->k < sizeof(row) ? l->k : sizeof(row);

				m = m < budget ? m : budget;
				budget -= m;
				/* the row's tail, where an overrun would be */
				if (!nq_file_unpack_weights(f, li, k, r, l->k - m, m, row))
					sink += (uint8_t)row[m - 1];
			}
		}
	}
	nq_file_verify_planes(f, -1);
	(void)sink;
	nq_file_close(f);
}

/* Recompute file_size and the CRCs the input covers; no trust in anything. */
static void fix_checksums(uint8_t *buf, size_t size)
{
	struct nq_disk_header *h = (struct nq_disk_header *)buf;
	struct nq_disk_section *tab;

	if (size < NQ_HEADER_SIZE || memcmp(h->magic, NQ_MAGIC, NQ_MAGIC_LEN))
		return;
	h->file_size = size;
	if (h->table_offset % 8 == 0 && h->table_offset <= size &&
	    h->section_count <= NQ_MAX_SECTIONS &&
	    (uint64_t)h->section_count * NQ_SECTION_ENTRY_SIZE <= size - h->table_offset) {
		tab = (struct nq_disk_section *)(buf + h->table_offset);
		for (uint32_t i = 0; i < h->section_count; i++)
			if (tab[i].offset <= size && tab[i].size <= size - tab[i].offset)
				tab[i].crc32c = nq_crc32c(0, buf + tab[i].offset, tab[i].size);
		h->table_crc32c = nq_crc32c(0, tab, (size_t)h->section_count * NQ_SECTION_ENTRY_SIZE);
	}
	h->header_crc32c = nq_crc32c(0, buf, offsetof(struct nq_disk_header, header_crc32c));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *buf = aligned_alloc(64, (size + 64) / 64 * 64);

	if (!buf)
		return 0;
	memcpy(buf, data, size);
	exercise(buf, size);
	fix_checksums(buf, size);
	exercise(buf, size);
	free(buf);
	return 0;
}
