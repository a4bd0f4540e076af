#!/bin/sh
# Run a program under the NestQuant runtime: in its own memory cgroup, with
# pressure-driven level switching configured through the environment.
#
#   scripts/launch.sh [--load-monitor] --memory-max BYTES [--memory-high BYTES]
#                     [--policy FILE] [--policy-log FILE] [--signal bpf|kmod|psi|auto|none]
#                     [--name NAME] [--pin-dir DIR] -- CMD [ARGS...]
#
# e.g.  scripts/launch.sh --load-monitor --memory-max 96M --policy-log /tmp/sw.jsonl \
#           -- build/nestquant serve models/fmnist-resnet.nq
#
# --load-monitor first loads the BPF pressure monitor if it is not loaded yet
# (`nestquant monitor load`, idempotent), so the launched cgroup is registered
# and the runtime gets kernel reclaim events instead of PSI.  Everything else
# is passed to `nestquant launch` (see `nestquant launch --help`); the exit
# status is CMD's.  Needs root (or a delegated cgroup).
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
		echo "launch: no nestquant binary (run make, or set NESTQUANT=)" >&2
		exit 125
	fi
fi

load=0
if [ "${1:-}" = --load-monitor ]; then
	load=1
	shift
fi

if [ $load -eq 1 ]; then
	pin=""
	prev=""
	for a in "$@"; do
		[ "$a" = -- ] && break
		[ "$prev" = --pin-dir ] && pin=$a
		prev=$a
	done
	if [ -n "$pin" ]; then
		"$nq" monitor load --pin-dir "$pin" >&2 || echo "launch: continuing without the BPF monitor" >&2
	else
		"$nq" monitor load >&2 || echo "launch: continuing without the BPF monitor" >&2
	fi
fi

exec "$nq" launch "$@"
