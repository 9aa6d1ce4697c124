#!/usr/bin/env bash
# smoke-groupchat.sh BENCH_BINARY: the ctest smoke run of bench_groupchat
# (label "integration") against the stack contrib/sealroom-dev started, whose
# SEALROOM_TEST_* variables are in the environment. It registers the
# benchmark users bench001..bench010 on that stack's XMPP server with
# `sealroom-dev register-users` (so the shared test users' identities stay
# untouched), runs the small plan, and checks that both sides completed and
# every figure printed, with the fan-out mode the stack runs in. Not timed.
# Exit 77 (skipped) without a stack or without root.
set -uo pipefail
BIN=$1
[[ -n ${SEALROOM_TEST_RUN_DIR:-} && -n ${SEALROOM_TEST_SERVER:-} ]] ||
    { echo "no stack in the environment (eval \"\$(contrib/sealroom-dev env)\")"; exit 77; }
((EUID == 0)) || { echo "needs root to register the benchmark users"; exit 77; }
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)

# An existing user is fine (a second smoke run on the same stack).
"$REPO/contrib/sealroom-dev" register-users "$SEALROOM_TEST_RUN_DIR" $(seq -f 'bench%03g' 1 10) ||
    { echo "FAIL: could not register the benchmark users"; exit 1; }

out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$BIN" --smoke | tee "$out"
rc=${PIPESTATUS[0]}
((rc == 0)) || { echo "FAIL: bench_groupchat exited $rc"; exit 1; }
for n in 2 10; do
    grep -Eq "^RESULT groupchat\.n$n\.msgs_per_s [0-9.]+ msgs/s baseline [a-z]+-muc [0-9.]+ msgs/s ratio [0-9.]+ target >=1\.0$" "$out" ||
        { echo "FAIL: no throughput figure for n$n"; exit 1; }
    grep -q "^RESULT groupchat\.n$n\.sealroom\.cpu\.sealroomd_us_per_msg " "$out" ||
        { echo "FAIL: no CPU breakdown for n$n"; exit 1; }
done
grep -Eq '^parameters: fanout=(on|off) ' "$out" || { echo "FAIL: fan-out mode not reported"; exit 1; }
grep -Eq '^VERDICT met [0-9]+/2$' "$out" || { echo "FAIL: no VERDICT line"; exit 1; }
echo "smoke: both sides completed; figures printed"
