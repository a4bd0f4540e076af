/* SPDX-License-Identifier: MIT */
/* Shared by `nestquant serve` and its client `nestquant query` (cmd_serve.c). */
#ifndef NQ_CMD_SERVE_H
#define NQ_CMD_SERVE_H

#include <stddef.h>

/*
 * The socket both use when none is given: /run/nestquant/serve.sock for
 * root, else $XDG_RUNTIME_DIR/nestquant-serve.sock, else
 * /tmp/nestquant-serve-UID.sock.
 */
void cli_serve_default_socket(char *buf, size_t len);

#endif
