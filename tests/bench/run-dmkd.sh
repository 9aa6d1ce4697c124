#!/usr/bin/env bash
# run-dmkd.sh: the multi-cast key distribution cost benchmark (issue 4,
# item 6 a and b). Configures BUILD_DIR as a Release build (-Werror), builds
# bench_dmkd only and runs it. No stack, no root. About two minutes.
#
#   tests/bench/run-dmkd.sh [BUILD_DIR]
#
# BUILD_DIR defaults to build-bench/ in the checkout.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
BUILD=${1:-$REPO/build-bench}
cmake -S "$REPO" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DSEALROOM_WERROR=ON >/dev/null
cmake --build "$BUILD" -j2 --target bench_dmkd >/dev/null
exec "$BUILD/tests/bench/bench_dmkd"
