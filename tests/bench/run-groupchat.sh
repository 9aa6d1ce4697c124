#!/usr/bin/env bash
# run-groupchat.sh: the groupchat throughput benchmark, end to end. Builds
# sealroomd and bench_groupchat (Release), brings up a private stack —
# PostgreSQL 15, Prosody with the stack's own config (contrib/prosody) and
# sealroomd — in a fresh directory on ports of its own, registers the
# benchmark users, runs bench_groupchat (Sealroom vs Prosody's MUC with MAM,
# interleaved), and stops everything it started, by pid. Run as root:
#
#   tests/bench/run-groupchat.sh [BUILD_DIR] [-- bench_groupchat options]
#
# BUILD_DIR defaults to build-bench/ in the checkout. Environment:
#   SEALROOM_BENCH_PORT_BASE   ports BASE+432 (PostgreSQL), BASE+222 (c2s),
#                              BASE+347 (component); default 58000
#   SEALROOM_BENCH_KEEP=1      keep the run directory (logs) afterwards
#   SEALROOM_NO_BUILD=1        use BUILD_DIR's binaries as they are
#   SEALROOM_BENCH_PERF=SECS   also record `perf record -g` of sealroomd and
#                              Prosody for the first SECS seconds of the runs
#                              (report in the kept run directory)
#   SEALROOM_PG_OPTS           extra postgres -c options (e.g. to try
#                              -c synchronous_commit=off; the default is
#                              PostgreSQL's own, durable, setting)
# It never touches another stack: it does not use run/ or run-test/.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
PGBIN=${SEALROOM_PGBIN:-/usr/lib/postgresql/15/bin}
BASE=${SEALROOM_BENCH_PORT_BASE:-58000}
PG_PORT=$((BASE + 432)) C2S_PORT=$((BASE + 222)) COMPONENT_PORT=$((BASE + 347))
DOMAIN=localhost SERVICE=rooms.localhost MUC_SERVICE=muc.localhost PASSWORD=secret
BUILD_DIR=$REPO/build-bench
BENCH_ARGS=()
if (($#)) && [[ $1 != -- ]]; then BUILD_DIR=$(realpath -m "$1"); shift; fi
if (($#)) && [[ $1 == -- ]]; then shift; BENCH_ARGS=("$@"); fi

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'run-groupchat: %s\n' "$*" >&2; exit 1; }
((EUID == 0)) || die "run me as root: PostgreSQL and Prosody run as their own users"

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
chmod 755 "$RD"
mkdir -p "$RD/pids"
declare -A PIDS=()

as_user() { # as_user USER CMD...
    local u=$1; shift
    env HOME="$RD" setpriv --reuid="$u" --regid="$(id -g "$u")" --init-groups -- "$@"
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# A recorded pid is ours only while its command line names our directory.
ours() { [[ -r /proc/$1/cmdline ]] && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$RD/"; }
stop_pid() { # stop_pid NAME SIGNAL
    local pid=${PIDS[$1]:-} i
    [[ -n $pid ]] && ours "$pid" || return 0
    kill -s "$2" "$pid" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do ours "$pid" || break; sleep 0.1; done
    if ours "$pid"; then kill -s KILL "$pid" 2>/dev/null || true; fi
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid perf INT
    stop_pid sealroomd TERM
    stop_pid prosody TERM
    stop_pid postgres INT
    if [[ ${SEALROOM_BENCH_KEEP:-0} == 1 || $rc != 0 ]]; then
        say "logs kept in $RD"
    else
        rm -rf -- "$RD"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for p in $PG_PORT $C2S_PORT $COMPONENT_PORT; do
    port_open "$p" && die "port $p is in use: set SEALROOM_BENCH_PORT_BASE to another base"
done

say "PostgreSQL on 127.0.0.1:$PG_PORT"
mkdir -p "$RD/pg" && chown postgres: "$RD/pg" && chmod 700 "$RD/pg"
as_user postgres "$PGBIN/initdb" -D "$RD/pg/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
    >"$RD/pg/initdb.log" 2>&1 || { cat "$RD/pg/initdb.log"; exit 1; }
(cd "$RD/pg" && as_user postgres "$PGBIN/pg_ctl" -D "$RD/pg/data" -l "$RD/pg/postgres.log" -w -t 60 -s \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories='$RD/pg' ${SEALROOM_PG_OPTS:-}" \
    start) || { tail -n 20 "$RD/pg/postgres.log"; exit 1; }
PIDS[postgres]=$(head -n1 "$RD/pg/data/postmaster.pid")
echo "${PIDS[postgres]}" >"$RD/pids/postgres"
"$PGBIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres sealroom
PG="host=127.0.0.1 port=$PG_PORT dbname=sealroom user=postgres"

say "Prosody on 127.0.0.1:$C2S_PORT (c2s), $COMPONENT_PORT (component)"
SECRET=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
P=$RD/prosody
mkdir -p "$P/data" "$P/certs"
sed -e "s|@PROSODY_DIR@|$P|g" -e "s|@C2S_PORT@|$C2S_PORT|g" \
    -e "s|@COMPONENT_PORT@|$COMPONENT_PORT|g" -e "s|@SERVICE@|$SERVICE|g" \
    -e "s|@MUC_SERVICE@|$MUC_SERVICE|g" -e "s|@COMPONENT_SECRET@|$SECRET|g" \
    -e "s|@PROSODY_LOG_LEVEL@|warn|g" -e "s|@PROSODY_TLS_MODULE@||g" \
    "$REPO/contrib/prosody/sealroom-dev.cfg.lua" >"$P/prosody.cfg.lua"
! grep -q '@[A-Z_]*@' "$P/prosody.cfg.lua" || die "unfilled placeholder in the Prosody config"
# The baseline must not be throttled, and must archive every MUC message.
! grep -Eq '^[^-]*"limits"' "$P/prosody.cfg.lua" || die "the Prosody config loads mod_limits"
grep -q 'muc_mam' "$P/prosody.cfg.lua" || die "the Prosody config does not load mod_muc_mam"
chown -R prosody: "$P" && chmod -R go-rwx "$P"
(cd "$P" && exec setsid env HOME="$P" setpriv --reuid=prosody --regid="$(id -g prosody)" \
    --init-groups -- prosody --config "$P/prosody.cfg.lua" -F >>"$P/prosody.out" 2>&1 </dev/null) &
PIDS[prosody]=$!
echo "${PIDS[prosody]}" >"$RD/pids/prosody"
for ((i = 0; i < 300; i++)); do port_open "$C2S_PORT" && port_open "$COMPONENT_PORT" && break; sleep 0.1; done
port_open "$C2S_PORT" || { tail -n 20 "$P/prosody.log" "$P/prosody.out"; die "Prosody did not start"; }

say "registering users bench001..bench$(printf %03d "$NUSERS")"
# prosodyctl boots Lua once per call: two at a time (two cores).
seq -f 'bench%03g' 1 "$NUSERS" |
    xargs -P 2 -I{} env HOME="$P" setpriv --reuid=prosody --regid="$(id -g prosody)" --init-groups -- \
        prosodyctl --config "$P/prosody.cfg.lua" register {} "$DOMAIN" "$PASSWORD" >/dev/null

say "sealroomd"
cat >"$RD/sealroomd.conf" <<EOF
component.jid = $SERVICE
component.secret = $SECRET
xmpp.host = 127.0.0.1
xmpp.port = $COMPONENT_PORT
db.conninfo = $PG
log.file = $RD/sealroomd.log
log.level = warn
EOF
chmod 600 "$RD/sealroomd.conf"
(cd "$RD" && exec setsid "$BUILD_DIR/sealroomd" -c "$RD/sealroomd.conf" --pidfile "$RD/sealroomd.pid" \
    --sql-dir "$REPO/sql" >>"$RD/sealroomd.out" 2>&1 </dev/null) &
PIDS[sealroomd]=$!
echo "${PIDS[sealroomd]}" >"$RD/pids/sealroomd"
# Attached once it holds an established connection to the component port.
for ((i = 0; i < 300; i++)); do
    ours "${PIDS[sealroomd]}" || { tail -n 20 "$RD/sealroomd.out" "$RD/sealroomd.log" 2>/dev/null; die "sealroomd exited"; }
    ss -Htnp state established "( dport = :$COMPONENT_PORT )" | grep -q "pid=${PIDS[sealroomd]}," && break
    sleep 0.1
done
sleep 0.5
ss -Htnp state established "( dport = :$COMPONENT_PORT )" | grep -q "pid=${PIDS[sealroomd]}," ||
    { tail -n 20 "$RD/sealroomd.out" "$RD/sealroomd.log" 2>/dev/null; die "sealroomd did not attach to Prosody"; }

if [[ -n ${SEALROOM_BENCH_PERF:-} ]]; then
    # Started now, it records the room set-up too: profile a plan of one
    # occupant count (--plan) so the timed runs dominate the samples.
    perf record -g -o "$RD/perf.data" -p "${PIDS[sealroomd]},${PIDS[prosody]}" \
        -- sleep "$SEALROOM_BENCH_PERF" >"$RD/perf.out" 2>&1 &
    PIDS[perf]=$!
fi

say "bench_groupchat"
set +e
"$BUILD_DIR/tests/bench/bench_groupchat" --host 127.0.0.1 --port "$C2S_PORT" --domain "$DOMAIN" \
    --service "$SERVICE" --muc-service "$MUC_SERVICE" --password "$PASSWORD" --users bench \
    --server prosody --server-version "$(cat /usr/lib/prosody/prosody.version 2>/dev/null || echo unknown)" \
    --pg "$PG" --pid-sealroomd "${PIDS[sealroomd]}" --pid-xmpp "${PIDS[prosody]}" \
    --pid-pg "${PIDS[postgres]}" "${BENCH_ARGS[@]}"
rc=$?
set -e
if [[ -n ${SEALROOM_BENCH_PERF:-} ]]; then
    wait "${PIDS[perf]}" 2>/dev/null || true
    perf report -i "$RD/perf.data" --no-children --sort comm,dso,symbol --stdio -g none \
        2>/dev/null | grep -v '^$' | head -n 80 >"$RD/perf-top.txt" || true
    say "perf profile of sealroomd and Prosody: $RD/perf-top.txt (kept)"
    SEALROOM_BENCH_KEEP=1
fi
exit "$rc"
