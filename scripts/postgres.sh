#!/usr/bin/env bash
# A local PostgreSQL for planlock's journal, queue and durable engine (development and CI).
#
#   scripts/postgres.sh start      initialise (first time) and start; set up the roles (below)
#   scripts/postgres.sh migrate    create planlock's tables in schema public, as the owner role,
#                                  and grant the application role its privileges (needs the
#                                  `planlock` command: $PLANLOCK_BIN, .venv/bin/planlock or PATH)
#   scripts/postgres.sh stop       stop it (a no-op when it is not running)
#   scripts/postgres.sh status     exit 0 when it runs
#   scripts/postgres.sh dsn        print the application's DSN,
#                                  e.g. postgresql://planlock:planlock@127.0.0.1:54329/planlock
#   scripts/postgres.sh owner-dsn  print the table owner's DSN (for `planlock db migrate`)
#
# The cluster lives in $PLANLOCK_PG_DIR (default: .pg/ in the repository, gitignored) and listens
# on 127.0.0.1:$PLANLOCK_PG_PORT only (default 54329). Two roles:
#   planlock_owner (password planlock_owner) owns the database `planlock`, its schema `public`
#       and, once migrated, the tables in it: only it runs migrations;
#   planlock (password planlock, CREATEDB) is the application: in `public` it may use the
#       tables the owner grants it (`planlock db migrate --grant planlock`: INSERT and SELECT on
#       events, no UPDATE, DELETE or TRUNCATE) and create nothing. It may create schemas of its
#       own in the database (the tests use a fresh one per test; DBOS keeps its tables in
#       `dbos`); in a schema it creates, it owns the tables, as before.
# Setting up the roles is idempotent and runs on every start. PostgreSQL refuses to run as root,
# so when started by root the server runs as the `postgres` system user (created if missing).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PORT="${PLANLOCK_PG_PORT:-54329}"
DIR="${PLANLOCK_PG_DIR:-$ROOT/.pg}"
DB=planlock
ROLE=planlock
PASSWORD=planlock
OWNER=planlock_owner
OWNER_PASSWORD=planlock_owner
DSN="postgresql://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DB"
OWNER_DSN="postgresql://$OWNER:$OWNER_PASSWORD@127.0.0.1:$PORT/$DB"

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
        setup_roles
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
    setup_roles
}

ensure_role() {  # NAME PASSWORD [ATTRIBUTES]
    if [[ -z "$(psql_admin postgres -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$1'")" ]]; then
        psql_admin postgres -c "CREATE ROLE $1 LOGIN ${3:-} PASSWORD '$2'"
    fi
}

# The owner owns the database and its schema public; the application may connect, create
# schemas of its own, and use public (not create in it). Idempotent.
setup_roles() {
    ensure_role "$OWNER" "$OWNER_PASSWORD"
    ensure_role "$ROLE" "$PASSWORD" CREATEDB
    if [[ -z "$(psql_admin postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" ]]; then
        psql_admin postgres -c "CREATE DATABASE $DB OWNER $OWNER"
    fi
    psql_admin "$DB" <<SQL
ALTER DATABASE $DB OWNER TO $OWNER;
GRANT CONNECT, TEMPORARY, CREATE ON DATABASE $DB TO $ROLE;
ALTER SCHEMA public OWNER TO $OWNER;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
REVOKE CREATE ON SCHEMA public FROM $ROLE;
GRANT USAGE ON SCHEMA public TO $ROLE;
SQL
}

find_planlock() {
    if [[ -n "${PLANLOCK_BIN:-}" ]]; then echo "$PLANLOCK_BIN"; return; fi
    if [[ -x "$ROOT/.venv/bin/planlock" ]]; then echo "$ROOT/.venv/bin/planlock"; return; fi
    if command -v planlock >/dev/null 2>&1; then command -v planlock; return; fi
    die "the planlock command was not found (make check installs it in .venv; or set PLANLOCK_BIN)"
}

migrate() {
    "$(find_planlock)" db migrate --dsn "$OWNER_DSN" --grant "$ROLE"
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
    migrate) migrate ;;
    dsn) echo "$DSN" ;;
    owner-dsn) echo "$OWNER_DSN" ;;
    *) echo "usage: $0 start|migrate|stop|status|dsn|owner-dsn" >&2; exit 2 ;;
esac
