/* SPDX-License-Identifier: MIT */
/* Helpers shared by `nestquant run` and `nestquant eval` (defined in cmd_run.c). */
#ifndef NQ_CMD_RUN_H
#define NQ_CMD_RUN_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "nestquant.h"

/* "full" (highest level), "part" (level 0, always resident) or a bit width. */
int cli_parse_level(const struct nq_model *m, const char *arg, unsigned int *level);

/* out -> probabilities: copied when it already is a distribution, else softmax. */
void cli_probabilities(const float *out, size_t n, float *p);

/* Indices of the k largest values, largest first (ties: lower index first). */
void cli_top_k(const float *v, size_t n, unsigned int k, uint32_t *idx);

/* Class name for Fashion-MNIST label i (NULL when out of range). */
const char *cli_fashion_class(unsigned int i);

/* JSON string with the escapes RFC 8259 requires. */
void cli_json_str(FILE *out, const char *s);

#endif
