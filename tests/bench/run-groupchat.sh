#!/usr/bin/env bash
# run-groupchat.sh: the groupchat throughput benchmark, end to end. Builds
# sealroomd and bench_groupchat (Release), brings up a private stack with
# `contrib/sealroom-dev stack-up` (PostgreSQL 15, Prosody with the stack's
# own config from contrib/prosody, sealroomd) in a fresh directory under
# /var/tmp on ports of its own, registers the benchmark users, runs
# bench_groupchat (Sealroom vs Prosody's MUC with MAM, interleaved) and stops
# the stack again with `contrib/sealroom-dev down`. Run as root:
#
#   tests/bench/run-groupchat.sh [BUILD_DIR] [-- bench_groupchat options]
#
# BUILD_DIR defaults to build-bench/ in the checkout. Environment:
#   SEALROOM_BENCH_FANOUT      both (default): Sealroom with server-side
#                              fan-out (the product default; the figures with
#                              targets) and, interleaved in the same run,
#                              without it (supplementary nofanout figures);
#                              on or off: that mode only
#   SEALROOM_BENCH_PORT_BASE   ports BASE+432 (PostgreSQL), BASE+222 (c2s),
#                              BASE+347 (component); default 58000
#   SEALROOM_BENCH_KEEP=1      keep the run directory (logs) afterwards
#   SEALROOM_NO_BUILD=1        use BUILD_DIR's binaries as they are
#   SEALROOM_BENCH_PERF=SECS   also record `perf record -g` of sealroomd and
#                              Prosody for the first SECS seconds of the runs
#                              (report in the kept run directory)
#   SEALROOM_BENCH_PG_SETTINGS PostgreSQL settings applied with ALTER SYSTEM
#                              before the run, e.g. "synchronous_commit=off"
#                              (the default is PostgreSQL's own, durable one)
#   SEALROOM_BENCH_PROSODY_SETTINGS  global Prosody settings added to the
#                              stack's config for a tuning experiment, e.g.
#                              "network_default_read_size = 65536" (Prosody
#                              is restarted; both sides run with them)
#   SEALROOM_BENCH_LUAPROF=1   load mod_bench_profile.lua into Prosody: CPU
#                              time per Lua function, written to
#                              prosody/bench_profile.txt in the kept run
#                              directory (slows Prosody several times over)
# It never touches another stack: it does not use run/ or run-test/.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
DEV=$REPO/contrib/sealroom-dev
PGBIN=${SEALROOM_PGBIN:-/usr/lib/postgresql/15/bin}
FANOUT=${SEALROOM_BENCH_FANOUT:-both}
BUILD_DIR=$REPO/build-bench
BENCH_ARGS=()
if (($#)) && [[ $1 != -- ]]; then BUILD_DIR=$(realpath -m "$1"); shift; fi
if (($#)) && [[ $1 == -- ]]; then shift; BENCH_ARGS=("$@"); fi

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'run-groupchat: %s\n' "$*" >&2; exit 1; }
((EUID == 0)) || die "run me as root: PostgreSQL and Prosody run as their own users"
[[ $FANOUT == both || $FANOUT == on || $FANOUT == off ]] ||
    die "SEALROOM_BENCH_FANOUT must be both, on or off (not '$FANOUT')"

# The most occupants any plan entry asks for decides how many users exist.
max_n() {
    local plan=2:1:4000:32,10:10:4000:4,100:100:2000:1 i
    for ((i = 0; i < ${#BENCH_ARGS[@]}; i++)); do
        case ${BENCH_ARGS[i]} in
        --plan) plan=${BENCH_ARGS[i + 1]} ;;
        --plan=*) plan=${BENCH_ARGS[i]#--plan=} ;;
        --smoke) plan=2:1:200:8,10:10:200:2 ;;
        esac
    done
    tr ',' '\n' <<<"$plan" | cut -d: -f1 | sort -n | tail -n1
}
NUSERS=$(max_n)

# ------------------------------------------------------------------ build
mkdir -p "$BUILD_DIR"
if [[ ! -f $BUILD_DIR/CMakeCache.txt ]]; then
    cmake -S "$REPO" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DSEALROOM_WERROR=ON >/dev/null
fi
bt=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD_DIR/CMakeCache.txt")
[[ $bt == Release ]] || say "warning: $BUILD_DIR is a '$bt' build, not Release: figures may not be representative"
if [[ ${SEALROOM_NO_BUILD:-0} != 1 ]]; then
    cmake --build "$BUILD_DIR" -j "${SEALROOM_JOBS:-2}" --target sealroomd bench_groupchat >/dev/null
fi

# ------------------------------------------------------------ the stack
RD=$(mktemp -d /var/tmp/sealroom-bench.XXXXXX)
PERF_PID=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $PERF_PID ]]; then
        kill -s INT "$PERF_PID" 2>/dev/null || true
        wait "$PERF_PID" 2>/dev/null || true
    fi
    "$DEV" down "$RD" >&2 || rc=1
    if [[ ${SEALROOM_BENCH_KEEP:-0} == 1 || $rc != 0 ]]; then
        say "logs kept in $RD"
    else
        rm -rf -- "$RD"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Quiet logs: at info level both daemons log per stanza on some paths.
SEALROOM_PORT_BASE=${SEALROOM_BENCH_PORT_BASE:-58000} \
    SEALROOM_FANOUT=$([[ $FANOUT == off ]] && echo 0 || echo 1) \
    SEALROOM_PROSODY_LOG_LEVEL=warn SEALROOM_LOG_LEVEL=warn \
    "$DEV" stack-up "$RD" prosody "$BUILD_DIR" >&2
eval "$("$DEV" env "$RD")"

# The baseline must not be throttled, and must archive every MUC message.
CFG=$RD/prosody/prosody.cfg.lua
! grep -Eq '^[^-]*"limits"' "$CFG" || die "the Prosody config loads mod_limits"
grep -Eq '^[^-]*"muc_mam"' "$CFG" || die "the Prosody config does not load mod_muc_mam"
if [[ $FANOUT != off ]]; then
    grep -Eq '^[^-]*"sealroom_fanout"' "$CFG" || die "the Prosody config does not load mod_sealroom_fanout"
fi

# Prosody tuning and profiling: edit the generated config, then restart
# Prosody through the stack script (sealroomd reattaches by itself).
prosody_global() { # prosody_global LINE: a global setting, before the first section
    local tmp=$CFG.new
    awk -v line="$1" '!done && /^(VirtualHost|Component) / { print line; done = 1 } { print }' \
        "$CFG" >"$tmp" && chown prosody: "$tmp" && chmod 600 "$tmp" && mv "$tmp" "$CFG"
}
restart_prosody=no
if [[ -n ${SEALROOM_BENCH_PROSODY_SETTINGS:-} ]]; then
    say "Prosody settings: $SEALROOM_BENCH_PROSODY_SETTINGS"
    prosody_global "-- from SEALROOM_BENCH_PROSODY_SETTINGS (run-groupchat.sh)"
    prosody_global "$SEALROOM_BENCH_PROSODY_SETTINGS"
    restart_prosody=yes
fi
if [[ ${SEALROOM_BENCH_LUAPROF:-0} == 1 ]]; then
    install -o prosody -g prosody -m 600 "$REPO/tests/bench/mod_bench_profile.lua" "$RD/prosody/plugins/"
    sed -i '0,/^modules_enabled = {/s//modules_enabled = { "bench_profile",/' "$CFG"
    grep -q '^modules_enabled = { "bench_profile",' "$CFG" || die "could not enable mod_bench_profile in $CFG"
    prosody_global "bench_profile_file = \"$RD/prosody/bench_profile.txt\""
    prosody_global "bench_profile_interval = 5000"
    restart_prosody=yes
fi
if [[ $restart_prosody == yes ]]; then
    "$DEV" restart-xmpp "$RD" >&2
fi

if [[ -n ${SEALROOM_BENCH_PG_SETTINGS:-} ]]; then
    say "PostgreSQL settings: $SEALROOM_BENCH_PG_SETTINGS"
    for kv in $SEALROOM_BENCH_PG_SETTINGS; do
        [[ $kv =~ ^[a-z_]+=[A-Za-z0-9_.]+$ ]] || die "bad SEALROOM_BENCH_PG_SETTINGS entry '$kv'"
        "$PGBIN/psql" -q -d "$SEALROOM_TEST_PG" -c "ALTER SYSTEM SET ${kv%%=*} = '${kv#*=}'"
    done
    "$PGBIN/psql" -q -d "$SEALROOM_TEST_PG" -tAc "SELECT pg_reload_conf()" >/dev/null
fi

say "registering users bench001..bench$(printf %03d "$NUSERS")"
# shellcheck disable=SC2046 # one argument per user
"$DEV" register-users "$RD" $(seq -f 'bench%03g' 1 "$NUSERS")

pid() { head -n1 "$RD/pids/$1"; }
if [[ -n ${SEALROOM_BENCH_PERF:-} ]]; then
    # Started now, it records the room set-up too: profile a plan of one
    # occupant count (--plan) so the timed runs dominate the samples.
    perf record -g -o "$RD/perf.data" -p "$(pid sealroomd),$(pid prosody)" \
        -- sleep "$SEALROOM_BENCH_PERF" >"$RD/perf.out" 2>&1 &
    PERF_PID=$!
fi

MODE_ARGS=(--fanout "$FANOUT")
if [[ $FANOUT == both ]]; then
    MODE_ARGS=(--fanout-switch "$(printf '%q set-fanout %q' "$DEV" "$RD")")
fi

say "bench_groupchat (fan-out: $FANOUT)"
if [[ -n ${SEALROOM_BENCH_PROSODY_SETTINGS:-} ]]; then
    echo "prosody: extra settings: $SEALROOM_BENCH_PROSODY_SETTINGS"
fi
set +e
"$BUILD_DIR/tests/bench/bench_groupchat" --users bench --server prosody \
    --server-version "$(cat /usr/lib/prosody/prosody.version 2>/dev/null || echo unknown)" \
    --pid-sealroomd "$(pid sealroomd)" --pid-xmpp "$(pid prosody)" --pid-pg "$(pid postgres)" \
    "${MODE_ARGS[@]}" "${BENCH_ARGS[@]}"
rc=$?
set -e
if [[ -n $PERF_PID ]]; then
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=""
    perf report -i "$RD/perf.data" --no-children --sort comm,dso,symbol --stdio -g none \
        2>/dev/null | grep -v '^$' | head -n 80 >"$RD/perf-top.txt" || true
    say "perf profile of sealroomd and Prosody: $RD/perf-top.txt (kept)"
    SEALROOM_BENCH_KEEP=1
fi
if [[ ${SEALROOM_BENCH_LUAPROF:-0} == 1 ]]; then
    # Prosody writes the profile as it stops, in cleanup.
    say "Lua profile of Prosody: $RD/prosody/bench_profile.txt (kept)"
    SEALROOM_BENCH_KEEP=1
fi
exit "$rc"
