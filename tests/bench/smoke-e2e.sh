#!/usr/bin/env bash
# smoke-e2e.sh BENCH_BINARY: the ctest smoke run of bench_e2e (label "unit").
# Runs it with --quick (a few calls per block, so it is quick under ASan
# too) and checks that it exits 0 and that every figure printed in the
# shared/BENCH.md shape, followed by the VERDICT line. Not timed.
set -uo pipefail
BIN=$1
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$BIN" --quick | tee "$out"
rc=${PIPESTATUS[0]}
((rc == 0)) || { echo "FAIL: bench_e2e exited $rc"; exit 1; }

num='[0-9]+\.[0-9]+'
shape="^RESULT [a-z0-9_.]+ $num (us|ms) baseline [a-z0-9_.]+ $num (us|ms) ratio $num target -\$"
names=(e2e.seal.200b.us_per_msg e2e.open.200b.us_per_msg
       e2e.seal.4kib.us_per_msg e2e.open.4kib.us_per_msg
       e2e.seal.200b.ed25519_sign.us_per_msg e2e.open.200b.ed25519_verify.us_per_msg
       e2e.seal.4kib.ed25519_sign.us_per_msg e2e.open.4kib.ed25519_verify.us_per_msg
       e2e.envelope.seal.n10.ms e2e.envelope.seal.n10.us_per_envelope
       e2e.envelope.seal.n100.ms e2e.envelope.seal.n100.us_per_envelope
       e2e.envelope.seal.n1000.ms e2e.envelope.seal.n1000.us_per_envelope
       e2e.envelope.open.us e2e.header.wrap.us e2e.header.unwrap.us e2e.header.rekey.us)
for n in "${names[@]}"; do
    line=$(grep -F "RESULT $n " "$out")
    [[ $(grep -cF "RESULT $n " "$out") == 1 ]] || { echo "FAIL: figure $n missing or repeated"; exit 1; }
    [[ $line =~ $shape ]] || { echo "FAIL: not in the BENCH.md shape: $line"; exit 1; }
done
grep -Eq "^RESULT e2e\.epoch\.derive\.us $num us baseline none - - ratio - target -\$" "$out" ||
    { echo "FAIL: no epoch derivation figure"; exit 1; }
[[ $(grep -c '^RESULT ' "$out") == $((${#names[@]} + 1)) ]] || { echo "FAIL: unexpected RESULT lines"; exit 1; }
[[ $(tail -n 1 "$out") == "VERDICT met 0/0" ]] || { echo "FAIL: VERDICT line missing or not last"; exit 1; }
grep -Eq '^machine: [0-9]+ cores, ' "$out" && grep -q '^libsodium: ' "$out" &&
    grep -q '^parameters: ' "$out" || { echo "FAIL: machine, version or parameters not reported"; exit 1; }
grep -Eq 'signature (dominates|does NOT dominate)|\((dominates|does NOT dominate)\)' "$out" ||
    { echo "FAIL: no statement on the signature's share"; exit 1; }
echo "smoke: every figure printed"
