#!/usr/bin/env bash
# run-archive-live.sh: removal to readable end to end (issue 5 benchmark b
# through a real stack). Builds sealroomd and bench_archive_live (Release),
# brings up a private stack with `contrib/sealroom-dev stack-up` (PostgreSQL
# 15, Prosody, sealroomd) in a fresh directory under /var/tmp on ports of its
# own, runs the benchmark (alice, bob and carol are among the stack's test
# users) and stops the stack. Run as root:
#
#   tests/bench/run-archive-live.sh [BUILD_DIR] [-- bench_archive_live options]
#
# Environment: SEALROOM_BENCH_PORT_BASE (default 58000), SEALROOM_BENCH_KEEP=1
# keeps the run directory, SEALROOM_NO_BUILD=1 uses BUILD_DIR as it is,
# SEALROOM_DMKD_COALESCE_MS sets sealroomd's dmkd.coalesce_ms (the dev
# stack's 300 by default; the product's default is 2000): the wait before
# the key-distribution run that follows a membership change, which is part
# of every removal's time (0 shows the run alone).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
DEV=$REPO/contrib/sealroom-dev
BUILD_DIR=$REPO/build-bench
ARGS=()
if (($#)) && [[ $1 != -- ]]; then BUILD_DIR=$(realpath -m "$1"); shift; fi
if (($#)) && [[ $1 == -- ]]; then shift; ARGS=("$@"); fi
say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'run-archive-live: %s\n' "$*" >&2; exit 1; }
((EUID == 0)) || die "run me as root: PostgreSQL and Prosody run as their own users"
mkdir -p "$BUILD_DIR"
if [[ ! -f $BUILD_DIR/CMakeCache.txt ]]; then
    cmake -S "$REPO" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DSEALROOM_WERROR=ON >/dev/null
fi
if [[ ${SEALROOM_NO_BUILD:-0} != 1 ]]; then
    cmake --build "$BUILD_DIR" -j "${SEALROOM_JOBS:-2}" --target sealroomd bench_archive_live >/dev/null
fi
RD=$(mktemp -d /var/tmp/sealroom-bench.XXXXXX)
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    "$DEV" down "$RD" >&2 || rc=1
    if [[ ${SEALROOM_BENCH_KEEP:-0} == 1 || $rc != 0 ]]; then say "logs kept in $RD"; else rm -rf -- "$RD"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
SEALROOM_PORT_BASE=${SEALROOM_BENCH_PORT_BASE:-58000} SEALROOM_PROSODY_LOG_LEVEL=warn \
    SEALROOM_LOG_LEVEL=warn "$DEV" stack-up "$RD" prosody "$BUILD_DIR" >&2
eval "$("$DEV" env "$RD")"
echo "prosody $(cat /usr/lib/prosody/prosody.version 2>/dev/null || echo unknown); $(psql --version)"
"$BUILD_DIR/tests/bench/bench_archive_live" "${ARGS[@]}"
