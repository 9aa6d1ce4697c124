#!/usr/bin/env bash
# run-archive.sh: the archive re-encryption benchmarks and soak (issue 5),
# full size. Configures BUILD_DIR as a Release build (-Werror) if it is not
# configured yet, builds sealroomd, soak_sweep and bench_archive, then runs
#   1. soak_sweep: the real sealroomd SIGKILLed 20 times at random points of
#      a sweep over 200,000 headers, then PostgreSQL restarted 20 times
#      mid-sweep; every row checked after each, exactly at the end;
#   2. bench_archive: (a) the sweep's headers/s beside bare scalar
#      multiplications on 2 threads, (b) removal to readable for 1,000,000
#      messages from 100 senders beside (c) the naive member re-wrap; the
#      BENCH.md RESULT lines and the VERDICT come last.
# Both start their own scratch PostgreSQL (tests/pg-scratch.sh); no XMPP
# server is needed. Extra arguments go to bench_archive (--full for
# 1,000,000 headers in (a), --reps N, ...).
#
#   tests/bench/run-archive.sh [BUILD_DIR] [-- bench_archive options]
#
# Environment: SEALROOM_NO_BUILD=1 uses BUILD_DIR as it is;
# SEALROOM_SOAK_ARGS replaces the soak's size ("--headers 200000 --kills 20
# --pg-restarts 20"); SEALROOM_SOAK=0 skips the soak. The exit status is
# non-zero if the soak or the benchmark failed (not if a target is missed:
# the VERDICT says that).
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
    cmake --build "$BUILD_DIR" -j "${SEALROOM_JOBS:-2}" --target sealroomd soak_sweep bench_archive >/dev/null
fi
export SEALROOM_SOURCE_DIR=$REPO

soak_rc=0
if [[ ${SEALROOM_SOAK:-1} != 0 ]]; then
    # shellcheck disable=SC2086 # the size is a list of options
    say "soak_sweep ${SEALROOM_SOAK_ARGS:=--headers 200000 --kills 20 --pg-restarts 20}"
    # shellcheck disable=SC2086
    "$BUILD_DIR/tests/bench/soak_sweep" --sealroomd "$BUILD_DIR/sealroomd" $SEALROOM_SOAK_ARGS || soak_rc=$?
    ((soak_rc == 0)) || say "the soak FAILED (status $soak_rc)"
fi
say "bench_archive ${ARGS[*]}"
bench_rc=0
"$BUILD_DIR/tests/bench/bench_archive" "${ARGS[@]}" || bench_rc=$?
((soak_rc == 0 && bench_rc == 0))
