#!/bin/sh
# Throwaway PostgreSQL 15 cluster for tests and the development stack.
#
#   tests/pg-scratch.sh start DIR PORT   create (if needed) and start a cluster in DIR/data;
#                                        prints one line: a libpq conninfo string
#   tests/pg-scratch.sh restart DIR      fast restart (drops every session)
#   tests/pg-scratch.sh stop DIR         fast stop, by the cluster's own pid file
#
# The cluster listens on 127.0.0.1 only, with its unix socket in DIR, and
# trusts every local connection: it is for tests on this machine, never for
# data. PostgreSQL refuses to run as root, so when we are root everything runs
# as the `postgres` OS user and DIR is handed over to it.
set -eu

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

usage() {
    echo "usage: $0 start DIR PORT | restart DIR | stop DIR" >&2
    exit 2
}

# Run a command as the cluster owner.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
    else
        "$@"
    fi
}

[ $# -ge 2 ] || usage
cmd=$1
dir=$2
data=$dir/data

case $cmd in
start)
    [ $# -eq 3 ] || usage
    port=$3
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    data=$dir/data
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres:postgres "$dir"
    fi
    chmod 700 "$dir"
    if [ ! -f "$data/PG_VERSION" ]; then
        # --no-sync: the cluster is thrown away, so initdb need not wait for
        # the disk; the server itself keeps fsync on so commit costs are real.
        as_owner "$PGBIN/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
            --no-sync >"$dir/initdb.log" 2>&1 || {
            cat "$dir/initdb.log" >&2
            exit 1
        }
    fi
    as_owner "$PGBIN/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=50" \
        start >/dev/null || {
        tail -n 20 "$dir/server.log" >&2
        exit 1
    }
    echo "host=127.0.0.1 port=$port user=postgres dbname=postgres"
    ;;
restart)
    as_owner "$PGBIN/pg_ctl" -D "$data" -w -t 60 -m fast restart >/dev/null
    ;;
stop)
    if [ -f "$data/postmaster.pid" ]; then
        as_owner "$PGBIN/pg_ctl" -D "$data" -w -t 60 -m fast stop >/dev/null
    fi
    ;;
*)
    usage
    ;;
esac
