# SPDX-License-Identifier: MIT
# Sourced by the fault tests that keep a `nestquant serve` running while
# something goes wrong around it: a small two-level model and a check that
# the server still answers, each answer right for the level it reports.
#
# Needs NQ, TOOLS, TMP and fail(); sets M (the model), DATA (empty when the
# Fashion-MNIST test set is missing: answers are then not checked, and
# `notes` says so) and defines query_ok TAG, which talks to socket $S.

M=$TMP/m.nq
"$TOOLS/write-mlp-nq" "$M" --hidden 512 --levels 2,8 >/dev/null || fail "write-mlp-nq"
DATA=1
"$NQ" run "$M" --data fashion-mnist:0 --json >/dev/null 2>"$TMP/data.err" || {
	DATA=
	notes="$notes (answers not checked: no Fashion-MNIST test set: $(tail -n 1 "$TMP/data.err"))"
}
ITEMS=8
: >"$TMP/expect"
[ -z "$DATA" ] || scripts/expected-answers.sh "$NQ" "$M" $ITEMS >"$TMP/expect"

# query_ok TAG: a batch of requests, each right for its level.
query_ok() {
	if [ -n "$DATA" ]; then
		"$NQ" query --socket "$S" --data fashion-mnist:test:0-$((ITEMS - 1)) --count 16 \
			--expect "$TMP/expect" -q >"$TMP/q-$1.json" 2>"$TMP/q-$1.err" ||
			fail "$1: queries failed: $(cat "$TMP/q-$1.json" "$TMP/q-$1.err")"
		grep -q '"wrong":0,' "$TMP/q-$1.json" || fail "$1: wrong answers: $(cat "$TMP/q-$1.json")"
		grep -q '"checked":16,' "$TMP/q-$1.json" || fail "$1: not all checked: $(cat "$TMP/q-$1.json")"
	else
		"$NQ" query --socket "$S" --status >"$TMP/q-$1.json" 2>"$TMP/q-$1.err" ||
			fail "$1: server does not answer: $(cat "$TMP/q-$1.err")"
	fi
}
