#!/bin/sh
# SPDX-License-Identifier: MIT
# The answers `nestquant query --expect FILE` checks against: for Fashion-MNIST
# test items 0 .. COUNT-1, the top classes `nestquant run` gives at the part
# and the full level, one line 'ITEM LEVEL TOP' each (2 x COUNT lines).
#
#   scripts/expected-answers.sh NESTQUANT MODEL.nq COUNT >FILE
#
# Used by the serve tests and the pressure benchmark, so that every one of
# them judges a served answer by the same reference.
set -u
[ $# -eq 3 ] || { echo "usage: expected-answers.sh NESTQUANT MODEL.nq COUNT" >&2; exit 2; }
nq=$1 model=$2 count=$3
i=0
while [ "$i" -lt "$count" ]; do
	for l in part full; do
		"$nq" run "$model" --data fashion-mnist:$i --level $l --json |
			sed -n "s/.*\"level\": \([0-9]*\),.*\"top\": \(\[.*\]\)}/$i \1 \2/p"
	done
	i=$((i + 1))
done
