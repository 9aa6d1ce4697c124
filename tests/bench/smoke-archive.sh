#!/usr/bin/env bash
# smoke-archive.sh BENCH_BINARY: the ctest smoke run of bench_archive (label
# "unit": it starts its own scratch PostgreSQL, no XMPP server). Runs it
# with --quick and checks that it exits 0, that both parts checked what they
# timed (every stored and served header exactly k_f*P), and that every
# figure printed in the shared/BENCH.md shape, followed by the VERDICT line.
# Not timed: the figures of a quick run on a loaded machine mean nothing.
set -uo pipefail
BIN=$1
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$BIN" --quick | tee "$out"
rc=${PIPESTATUS[0]}
((rc == 0)) || { echo "FAIL: bench_archive exited $rc"; exit 1; }

num='[0-9]+(\.[0-9]+)?'
check() { # check REGEX WHAT
    [[ $(grep -cE "$1" "$out") == 1 ]] || { echo "FAIL: $2 missing, repeated or not in the BENCH.md shape"; exit 1; }
}
check "^RESULT archive\.sweep\.n[0-9]+\.headers_per_s $num headers/s baseline scalarmult\.2threads\.headers_per_s $num headers/s ratio $num target >=0\.7\$" "the sweep figure"
check "^RESULT archive\.removal_to_readable\.m[0-9]+\.s[0-9]+\.lazy\.ms $num ms baseline archive\.removal_to_readable\.naive_member_rewrap\.ms $num ms ratio $num target <100\$" "the removal-to-readable figure"
check "^RESULT archive\.member_unwrap_all\.h[0-9]+\.ms $num ms baseline none - - ratio - target -\$" "the member unwrap figure"
[[ $(grep -c '^RESULT ' "$out") == 3 ]] || { echo "FAIL: unexpected RESULT lines"; exit 1; }
[[ $(tail -n 1 "$out") =~ ^VERDICT\ met\ [0-2]/2$ ]] || { echo "FAIL: VERDICT line missing or not last"; exit 1; }
grep -q '^  checked: all [0-9]* stored headers are k_c\*P' "$out" &&
    grep -q '^  checked: every served header was k_f\*P' "$out" ||
    { echo "FAIL: a part did not check its headers"; exit 1; }
grep -Eq '^machine: [0-9]+ cores, ' "$out" && grep -q '^postgresql: ' "$out" &&
    grep -q '^libsodium: ' "$out" && grep -q '^parameters: ' "$out" ||
    { echo "FAIL: machine, versions or parameters not reported"; exit 1; }
echo "smoke: every figure printed"
