#!/usr/bin/env bash
# run-dmkd-live.sh: wall-clock time to a new epoch for N members (default
# 100) online through Prosody, a multi-cast key distribution run beside the
# envelope baseline, interleaved (issue 4 item 6 c). Builds sealroomd and
# bench_dmkd_live (Release), brings up a private stack with
# `contrib/sealroom-dev stack-up` in a fresh directory under /var/tmp on
# ports of its own, registers the members, runs the benchmark and stops the
# stack. Run as root:
#
#   tests/bench/run-dmkd-live.sh [BUILD_DIR] [-- bench_dmkd_live options]
#
# Environment: SEALROOM_BENCH_PORT_BASE (default 58000), SEALROOM_BENCH_KEEP=1
# keeps the run directory, SEALROOM_NO_BUILD=1 uses BUILD_DIR as it is.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
DEV=$REPO/contrib/sealroom-dev
BUILD_DIR=$REPO/build-bench
ARGS=()
if (($#)) && [[ $1 != -- ]]; then BUILD_DIR=$(realpath -m "$1"); shift; fi
if (($#)) && [[ $1 == -- ]]; then shift; ARGS=("$@"); fi
say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'run-dmkd-live: %s\n' "$*" >&2; exit 1; }
((EUID == 0)) || die "run me as root: PostgreSQL and Prosody run as their own users"
N=100
for ((i = 0; i < ${#ARGS[@]}; i++)); do
    [[ ${ARGS[i]} == --members ]] && N=${ARGS[i + 1]}
done
mkdir -p "$BUILD_DIR"
if [[ ! -f $BUILD_DIR/CMakeCache.txt ]]; then
    cmake -S "$REPO" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DSEALROOM_WERROR=ON >/dev/null
fi
if [[ ${SEALROOM_NO_BUILD:-0} != 1 ]]; then
    cmake --build "$BUILD_DIR" -j "${SEALROOM_JOBS:-2}" --target sealroomd bench_dmkd_live >/dev/null
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
say "registering users dk001..dk$(printf %03d "$N")"
# shellcheck disable=SC2046 # one argument per user
"$DEV" register-users "$RD" $(seq -f 'dk%03g' 1 "$N")
echo "prosody $(cat /usr/lib/prosody/prosody.version 2>/dev/null || echo unknown); $(psql --version)"
"$BUILD_DIR/tests/bench/bench_dmkd_live" --pid-sealroomd "$(head -n1 "$RD/pids/sealroomd")" "${ARGS[@]}"
