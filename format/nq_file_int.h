/* SPDX-License-Identifier: MIT */
/* The reader's state, shared by reader.c (container) and validate.c (contents). */
#ifndef NQ_FILE_INT_H
#define NQ_FILE_INT_H

#include "nq_format.h"

struct nq_file {
	const uint8_t *data;
	uint64_t size;
	int fd;				/* -1 for memory files */
	bool mapped;

	const struct nq_disk_header *hdr;
	const struct nq_disk_section *sec[NQ_SEC_KNOWN_MAX + 1];	/* by kind */

	const char *strings;
	uint32_t n_strings;		/* bytes */
	const struct nq_disk_meta *meta;
	uint32_t n_meta;
	const struct nq_disk_preprocess *pre;
	const struct nq_disk_level *levels;
	uint32_t n_levels;
	const struct nq_disk_tensor *tensors;
	uint32_t n_tensors;
	const struct nq_disk_node *nodes;
	uint32_t n_nodes;
	const uint32_t *io;
	uint32_t n_io;
	const uint32_t *gin;
	uint32_t n_gin;
	const uint32_t *gout;
	uint32_t n_gout;
	const struct nq_disk_layer *layers;
	uint32_t n_layers;
	const struct nq_disk_plane *planes;
	uint32_t n_planes;
	const uint8_t *params;
	uint32_t n_params;		/* bytes */
};

/* validate.c: everything inside the sections (SPEC.md "Validation" 7-13). */
int nq_validate_contents(struct nq_file *f);

#endif
