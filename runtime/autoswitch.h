/* SPDX-License-Identifier: MIT */
/*
 * Autoswitch hooks for the model's life cycle (internal; the public calls
 * are in nestquant.h).
 */
#ifndef NQ_RUNTIME_AUTOSWITCH_H
#define NQ_RUNTIME_AUTOSWITCH_H

#include "nestquant.h"

/*
 * From nq_model_open(), once the model works: start autoswitch when the
 * launcher's environment asks for it ($NQ_SIGNAL or $NQ_CGROUP set,
 * $NQ_AUTOSWITCH not "0", no NQ_OPEN_NO_AUTOSWITCH, more than one level).
 * Returns 0 when started or not wanted, else the reason it could not start.
 */
int nq_autoswitch_open_hook(struct nq_model *m, const char *path,
			    const struct nq_model_opts *opts);

/* From nq_model_close(), before switching is torn down. */
void nq_autoswitch_close_hook(struct nq_model *m);

#endif
