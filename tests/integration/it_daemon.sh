#!/usr/bin/env bash
# sealroomd as a daemon on the real stack: SIGHUP applies a changed
# reloadable key, refuses a changed non-reloadable key (naming it) and keeps
# running on the old configuration; SIGTERM stops it cleanly (log says
# "stopped", pidfile removed) within the grace period; it is then started
# again for the tests that follow.
set -euo pipefail
[[ -n ${SEALROOM_TEST_SERVER:-} ]] || exit 77
conf=$SEALROOM_TEST_SEALROOMD_CONF
pidfile=$SEALROOM_TEST_SEALROOMD_PIDFILE
log=$SEALROOM_TEST_SEALROOMD_LOG
backup=$(mktemp)
cp -p "$conf" "$backup"
restore() { cp -p "$backup" "$conf"; rm -f "$backup"; }
trap restore EXIT
fail() { echo "it_daemon: FAILED: $*" >&2; exit 1; }

# wait_log PATTERN FROM_LINE: the log gains a line matching PATTERN.
wait_log() {
    local i
    for ((i = 0; i < 100; i++)); do
        tail -n +"$2" "$log" | grep -q -- "$1" && return 0
        sleep 0.1
    done
    fail "no log line matching '$1'"
}
lines() { wc -l <"$log"; }
alive() { kill -0 "$1" 2>/dev/null; }

pid=$(cat "$pidfile")
alive "$pid" || fail "sealroomd (pid $pid) is not running"

# A reloadable key changes.
from=$(($(lines) + 1))
sed -i '/^limits.max_payload_bytes/d' "$conf"
echo "limits.max_payload_bytes = 4321" >>"$conf"
kill -HUP "$pid"
wait_log "limits.max_payload_bytes = 4321" "$from"
alive "$pid" || fail "sealroomd died on a good reload"

# A non-reloadable key changes: refused, old value kept, still running.
from=$(($(lines) + 1))
port=$(sed -n 's/^xmpp.port = //p' "$conf")
sed -i "s/^xmpp.port = .*/xmpp.port = $((port + 1))/" "$conf"
kill -HUP "$pid"
wait_log "reload refused" "$from"
tail -n +"$from" "$log" | grep "reload refused" | grep -q "xmpp.port" ||
    fail "the refusal does not name xmpp.port"
wait_log "xmpp.port = $port" "$from"
alive "$pid" || fail "sealroomd died on a refused reload"

# A syntax error: refused with file and line.
from=$(($(lines) + 1))
cp -p "$backup" "$conf"
echo "this is not a setting" >>"$conf"
kill -HUP "$pid"
wait_log "reload refused" "$from"
tail -n +"$from" "$log" | grep "reload refused" | grep -q "$conf:[0-9]" ||
    fail "the refusal does not give file and line"
alive "$pid" || fail "sealroomd died on a broken config file"
restore
trap - EXIT

# SIGTERM: a clean stop.
from=$(($(lines) + 1))
kill -TERM "$pid"
for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.1; done
alive "$pid" && fail "sealroomd still running 10 s after SIGTERM"
wait_log "stopped" "$from"
[[ ! -e $pidfile ]] || fail "pidfile left behind after SIGTERM"

eval "$SEALROOM_TEST_SEALROOMD_RESTART"
[[ -s $pidfile ]] && alive "$(cat "$pidfile")" || fail "sealroomd did not start again"
echo "it_daemon: ok"
