#!/usr/bin/env bash
# smoke-dmkd.sh BENCH_BINARY: the ctest smoke run of bench_dmkd (label
# "unit"): --quick (n = 10 and 100, one repetition), exit 0, every figure in
# the shared/BENCH.md shape, the VERDICT line last. Not timed.
set -uo pipefail
BIN=$1
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$BIN" --quick | tee "$out"
rc=${PIPESTATUS[0]}
((rc == 0)) || { echo "FAIL: bench_dmkd exited $rc"; exit 1; }
num='[0-9]+(\.[0-9]+)?'
for n in 10 100; do
    for fig in member_cpu_us component_cpu_ms member_bytes; do
        line=$(grep -E "^RESULT dmkd\.n$n\.$fig " "$out")
        [[ $line =~ ^RESULT\ [a-z0-9_.]+\ $num\ (us|ms|B)\ baseline\ ([a-z0-9_.]+\ $num\ (us|ms|B)|none\ -\ -)\ ratio\ ($num|-)\ target\ -$ ]] ||
            { echo "FAIL: dmkd.n$n.$fig missing or not in the BENCH.md shape: $line"; exit 1; }
    done
done
[[ $(tail -n 1 "$out") == "VERDICT met 0/0" ]] || { echo "FAIL: VERDICT line missing or not last"; exit 1; }
grep -Eq '^machine: [0-9]+ cores, ' "$out" && grep -q '^libsodium: ' "$out" &&
    grep -q '^parameters: ' "$out" || { echo "FAIL: machine, version or parameters not reported"; exit 1; }
echo "smoke: every figure printed"
