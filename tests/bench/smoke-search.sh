#!/usr/bin/env bash
# smoke-search.sh BENCH_BINARY: the ctest smoke run of bench_search (label
# "unit": it starts its own scratch PostgreSQL, no XMPP server). Runs it
# with --quick and checks that it exits 0 (it exits 1 if any encrypted page
# or full result set differs from PostgreSQL full-text search or from the
# corpus), that both states were checked that way for every benchmark
# keyword and a conjunction, and that every figure printed in the
# shared/BENCH.md shape, followed by the VERDICT line. Not timed: the
# figures of a quick run on a loaded machine mean nothing.
set -uo pipefail
BIN=$1
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$BIN" --quick | tee "$out"
rc=${PIPESTATUS[0]}
((rc == 0)) || { echo "FAIL: bench_search exited $rc"; exit 1; }

num='[0-9]+(\.[0-9]+)?'
check() { # check REGEX WHAT
    [[ $(grep -cE "$1" "$out") == 1 ]] || { echo "FAIL: $2 missing, repeated or not in the BENCH.md shape"; exit 1; }
}
for state in uncompacted compacted; do
    for r in 10 100 1000 10000; do
        # With compaction off the figures carry no target.
        t50='-' tsrv='-' target='-'
        [[ $state == compacted ]] && t50='<=1\.5' tsrv='<1' target='<=3'
        check "^RESULT search\.$state\.newest50\.r$r\.latency_ms $num ms baseline fts\.newest50\.r$r\.latency_ms $num ms ratio $num target $t50\$" "the $state newest-50 r$r figure"
        check "^RESULT search\.$state\.newest50\.r$r\.server_ms $num ms baseline none - - ratio - target $tsrv\$" "the $state newest-50 r$r server figure"
        check "^RESULT search\.$state\.full\.r$r\.latency_ms $num ms baseline fts\.full\.r$r\.latency_ms $num ms ratio $num target $target\$" "the $state full r$r figure"
    done
    check "^RESULT search\.$state\.index_bytes_per_posting $num B baseline fts\.gin\.index_bytes_per_posting $num B ratio $num target -\$" "the $state index size figure"
    # The run's own check of every result against FTS and the corpus.
    check "^  checked: every encrypted page and full result set equals full-text search and the corpus \($state\)\$" "the $state correctness check"
done
check "^RESULT search\.insert\.msgs_per_s $num msg/s baseline fts\.insert\.msgs_per_s $num msg/s ratio $num target >=0\.5\$" "the insert figure"
check "^RESULT search\.client\.cover_us $num us baseline none - - ratio - target -\$" "the client cover figure"
[[ $(grep -c '^RESULT ' "$out") == 28 ]] || { echo "FAIL: unexpected RESULT lines"; exit 1; }
[[ $(tail -n 1 "$out") =~ ^VERDICT\ met\ ([0-9]+)/13$ ]] && ((BASH_REMATCH[1] <= 13)) ||
    { echo "FAIL: VERDICT line missing or not last"; exit 1; }
[[ $(grep -cE '^  conjunction .*: [0-9]+ matches, encrypted = FTS = corpus$' "$out") == 2 ]] ||
    { echo "FAIL: the conjunction was not checked in both states"; exit 1; }
grep -Eq '^  live: 0 open \+ [0-9]+ sealed batches; segments:.* of level 2' "$out" ||
    { echo "FAIL: compaction did not reach level 2"; exit 1; }
! grep -q 'MISMATCH' "$out" || { echo "FAIL: a result differed"; exit 1; }
grep -Eq '^machine: [0-9]+ cores, ' "$out" && grep -q '^postgresql: ' "$out" &&
    grep -q '^xmpp server: ' "$out" && grep -q '^libsodium: ' "$out" &&
    grep -q '^parameters: ' "$out" ||
    { echo "FAIL: machine, versions or parameters not reported"; exit 1; }
echo "smoke: every figure printed, every result checked"
