/* SPDX-License-Identifier: MIT */
/* Helpers shared by the `nestquant switch` subcommands (cmd_switch*.c). */
#ifndef NQ_CMD_SWITCH_H
#define NQ_CMD_SWITCH_H

#include <stdbool.h>
#include <stdint.h>

#include "nestquant.h"

/* "123", "4K", "16M", "1G" -> bytes. */
int cli_switch_parse_size(const char *s, uint64_t *out);
int cli_switch_parse_method(const char *arg, struct nq_model_opts *o, bool drop);
int cli_switch_common_opt(int argc, char **argv, int *i, struct nq_model_opts *o);

/* nestquant switch bench (cmd_switch_bench.c). */
int cli_switch_bench(int argc, char **argv);

#endif
