#!/usr/bin/env bash
# run-search.sh: the encrypted-search benchmark (issue 6), full size.
# Configures BUILD_DIR as a Release build (-Werror) if it is not configured
# yet, builds bench_search and runs it: a generated Zipf corpus of
# 1,000,000 messages in the encrypted index and in a plaintext table with
# tsvector + GIN of the same scratch PostgreSQL (tests/pg-scratch.sh; no
# XMPP server), newest-50 pages and full result sets for keywords with
# about 10, 100, 1,000 and 10,000 matches before and after compaction,
# index bytes per posting and insert throughput; the BENCH.md RESULT lines
# and the VERDICT come last. About 6 to 8 minutes on 2 cores (335-460 s
# measured), and about 5 GB free under /var/tmp for the scratch cluster
# (2.3 GB of them index entries before compaction). Extra arguments go to
# bench_search (--messages N, --reps R, --insert M, --senders S, ...).
#
#   tests/bench/run-search.sh [BUILD_DIR] [-- bench_search options]
#
# Environment: SEALROOM_NO_BUILD=1 uses BUILD_DIR as it is;
# SEALROOM_TEST_PG=conninfo uses that server instead of a scratch cluster.
# The exit status is non-zero if the benchmark failed, including a result
# that differed from full-text search (not if a target is missed: the
# VERDICT says that).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
BUILD_DIR=$REPO/build-bench
ARGS=()
if (($#)) && [[ $1 != -- ]]; then BUILD_DIR=$(realpath -m "$1"); shift; fi
if (($#)) && [[ $1 == -- ]]; then shift; ARGS=("$@"); fi
say() { printf '==> %s\n' "$*" >&2; }

mkdir -p "$BUILD_DIR"
if [[ ! -f $BUILD_DIR/CMakeCache.txt ]]; then
    cmake -S "$REPO" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DSEALROOM_WERROR=ON >/dev/null
fi
bt=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD_DIR/CMakeCache.txt")
[[ $bt == Release ]] || say "warning: $BUILD_DIR is a '$bt' build, not Release: figures may not be representative"
if [[ ${SEALROOM_NO_BUILD:-0} != 1 ]]; then
    cmake --build "$BUILD_DIR" -j "${SEALROOM_JOBS:-2}" --target bench_search >/dev/null
fi
export SEALROOM_SOURCE_DIR=$REPO
say "bench_search ${ARGS[*]}"
"$BUILD_DIR/tests/bench/bench_search" "${ARGS[@]}"
