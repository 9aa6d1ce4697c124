#!/usr/bin/env bash
# run-e2e.sh: the end-to-end encryption client-cost benchmark (issue 3,
# item 9). Configures BUILD_DIR as a Release build (-Werror), builds
# bench_e2e only and runs it; extra arguments go to bench_e2e (--reps N,
# --iters N). No stack, no root. About a minute on 2 cores.
#
#   tests/bench/run-e2e.sh [BUILD_DIR] [-- bench_e2e options]
#
# BUILD_DIR defaults to build-bench/ in the checkout.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
BUILD=$REPO/build-bench
if [[ $# -gt 0 && $1 != -- ]]; then
    BUILD=$1
    shift
fi
[[ ${1:-} == -- ]] && shift
cmake -S "$REPO" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DSEALROOM_WERROR=ON >/dev/null
cmake --build "$BUILD" -j2 --target bench_e2e >/dev/null
exec "$BUILD/tests/bench/bench_e2e" "$@"
