/* SPDX-License-Identifier: MIT */
/* What the monitor's loader and its clients agree on: the pin layout. */
#ifndef NQ_RUNTIME_MONITOR_PRIV_H
#define NQ_RUNTIME_MONITOR_PRIV_H

#include <stddef.h>

/*
 * Under the pin directory:
 *   <map name>        every map of bpf/monitor.bpf.c, by its name
 *   ringNN            client slot NN's ring buffer (NN = 00..NQ_MON_MAX_CLIENTS-1)
 *   link_<program>    the attached tracepoint programs (the pins keep them attached)
 */
extern const char *const nq_mon_map_names[];	/* NULL-terminated */
extern const char *const nq_mon_prog_names[];	/* NULL-terminated */

/* "dir/name" into buf; -ENAMETOOLONG via nq_fail when it does not fit. */
int nq_mon_path(char *buf, size_t len, const char *dir, const char *name);
void nq_mon_ring_name(char *buf, size_t len, unsigned int slot);
void nq_mon_link_name(char *buf, size_t len, const char *prog);

#endif
