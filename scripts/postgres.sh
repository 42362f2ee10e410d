#!/usr/bin/env bash
# A local PostgreSQL for planlock's journal, queue and durable engine (development and CI).
#
#   scripts/postgres.sh start   initialise (first time) and start; a no-op when it already runs
#   scripts/postgres.sh stop    stop it (a no-op when it is not running)
#   scripts/postgres.sh status  exit 0 when it runs
#   scripts/postgres.sh dsn     print the DSN, e.g. postgresql://planlock:planlock@127.0.0.1:54329/planlock
#
# The cluster lives in $PLANLOCK_PG_DIR (default: .pg/ in the repository, gitignored), listens
# on 127.0.0.1:$PLANLOCK_PG_PORT only (default 54329) and has a database `planlock` owned by a
# role `planlock` (password `planlock`, CREATEDB). PostgreSQL refuses to run as root, so when
# started by root the server runs as the `postgres` system user (created if missing).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PORT="${PLANLOCK_PG_PORT:-54329}"
DIR="${PLANLOCK_PG_DIR:-$ROOT/.pg}"
DB=planlock
ROLE=planlock
PASSWORD=planlock
DSN="postgresql://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DB"

die() { echo "postgres.sh: $*" >&2; exit 1; }

find_bin() {
    if [[ -n "${PLANLOCK_PG_BIN:-}" ]]; then echo "$PLANLOCK_PG_BIN"; return; fi
    local d
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -n "$d" && -x "$d/pg_ctl" ]]; then echo "$d"; return; fi
    if command -v pg_ctl >/dev/null 2>&1; then dirname "$(command -v pg_ctl)"; return; fi
    die "PostgreSQL binaries not found (Debian: apt-get install postgresql; or set PLANLOCK_PG_BIN)"
}

# Run a command as the server's user: `postgres` when we are root, ourselves otherwise.
as_owner() {
    if [[ "$(id -u)" == 0 ]]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

ensure_user() {
    [[ "$(id -u)" == 0 ]] || return 0
    if ! id -u postgres >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/postgresql --shell /usr/sbin/nologin postgres
    fi
}

# The server's user must reach the data directory; a clone under /root cannot be reached, so
# fall back to a directory of our own under /var/tmp (keyed by the repository's path).
resolve_dir() {
    if [[ -z "${PLANLOCK_PG_DIR:-}" && "$(id -u)" == 0 ]]; then
        mkdir -p "$DIR"
        if ! runuser -u postgres -- test -x "$DIR"; then
            DIR="/var/tmp/planlock-pg-$(echo -n "$ROOT" | sha256sum | cut -c1-12)"
        fi
    fi
    DATA="$DIR/data"
    SOCK="$DIR/run"
    LOG="$DIR/postgres.log"
    # A Unix socket path is limited to ~107 bytes.
    if (( ${#SOCK} > 90 )); then SOCK="/tmp/planlock-pg-$PORT"; fi
}

is_running() {
    [[ -f "$DATA/PG_VERSION" ]] && as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

psql_admin() {
    as_owner "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" \
        -U postgres -d "${1:-postgres}" "${@:2}"
}

start() {
    ensure_user
    resolve_dir
    if is_running; then
        return 0
    fi
    mkdir -p "$DIR" "$SOCK"
    if [[ "$(id -u)" == 0 ]]; then chown postgres: "$DIR" "$SOCK"; fi
    chmod 700 "$SOCK"
    if [[ ! -f "$DATA/PG_VERSION" ]]; then
        as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth-local=trust \
            --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 \
            || { cat "$DIR/initdb.log" >&2; die "initdb failed"; }
    fi
    as_owner "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 -o \
        "-c listen_addresses=127.0.0.1 -p $PORT -c unix_socket_directories=$SOCK -c max_connections=200 -c fsync=off -c synchronous_commit=off" \
        start >/dev/null || { tail -n 30 "$LOG" >&2 || true; die "the server did not start"; }
    if [[ -z "$(psql_admin postgres -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" ]]; then
        psql_admin postgres -c "CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD '$PASSWORD'"
    fi
    if [[ -z "$(psql_admin postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" ]]; then
        psql_admin postgres -c "CREATE DATABASE $DB OWNER $ROLE"
    fi
}

stop() {
    resolve_dir
    if is_running; then
        as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null
    fi
}

BIN="$(find_bin)"
case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) resolve_dir; is_running ;;
    dsn) echo "$DSN" ;;
    *) echo "usage: $0 start|stop|status|dsn" >&2; exit 2 ;;
esac
