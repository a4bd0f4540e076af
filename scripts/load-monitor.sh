#!/bin/sh
# Load the NestQuant BPF pressure monitor and show its status.
#
#   scripts/load-monitor.sh [--group NAME] [--ring-size BYTES] [--pin-dir DIR]
#   scripts/load-monitor.sh --unload [--pin-dir DIR]
#
# Runs `nestquant monitor load` (idempotent: a loaded monitor is left as it is),
# then `nestquant monitor status`.  Needs root (or CAP_BPF + CAP_PERFMON, and
# CAP_SYS_ADMIN if bpffs still has to be mounted).  With --group, members of
# NAME can be clients (pins 0660); without it only root can (0600).
#
# The nestquant binary is $NESTQUANT, else build/nestquant next to this script,
# else the one on PATH.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
nq=${NESTQUANT:-}
if [ -z "$nq" ]; then
	if [ -x "$here/build/nestquant" ]; then
		nq=$here/build/nestquant
	elif command -v nestquant >/dev/null 2>&1; then
		nq=$(command -v nestquant)
	else
		echo "load-monitor: no nestquant binary (run make, or set NESTQUANT=)" >&2
		exit 1
	fi
fi

if [ "${1:-}" = --unload ]; then
	shift
	exec "$nq" monitor unload "$@"
fi

pin=""
prev=""
for a in "$@"; do
	[ "$prev" = --pin-dir ] && pin=$a
	prev=$a
done

"$nq" monitor load "$@"
if [ -n "$pin" ]; then
	"$nq" monitor status --pin-dir "$pin"
else
	"$nq" monitor status
fi
