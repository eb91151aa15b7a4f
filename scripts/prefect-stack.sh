#!/usr/bin/env bash
# Prefect at production scale on this machine: PostgreSQL (Debian's postgresql 15, a cluster of
# its own), one `prefect server start` on it, and N process workers on the x2c-process pool.
#
#   scripts/prefect-stack.sh up       # idempotent: starts only what is not running
#   scripts/prefect-stack.sh status   # exit 0 when everything is up
#   scripts/prefect-stack.sh down     # stops what `up` started (pid files); keeps the data
#   . "$STATE/env"                    # sets PREFECT_API_URL for this shell (nothing else)
#
# `up` and `status` end with the line PREFECT_API_URL=<url>.
#
# Environment:
#   X2C_PREFECT_STACK_DIR  state directory (default /tmp/x2c-prefect-stack): the PostgreSQL
#                          cluster, the generated database password (0600), pid files, logs,
#                          PREFECT_HOME, the env file
#   X2C_PREFECT_WORKERS    process workers on the x2c-process pool (default 2)
#   X2C_PREFECT_API_PORT   the server's loopback port (default: a free one, chosen once)
#   X2C_PREFECT_PG_PORT    PostgreSQL's loopback port (default: a free one, chosen once)
#   X2C_PREFECT_PG_BIN     PostgreSQL's programs (default /usr/lib/postgresql/15/bin)
# Everything listens on 127.0.0.1 only. Run as root, PostgreSQL runs as the OS user `postgres`
# (the package creates it); as another user, it runs as that user.
#
# The database password never reaches a command line or a log: psql reads it from a .pgpass
# file (PGPASSFILE), and the connection URL is in the environment of the server process only.
# The server and the workers inherit the caller's environment (so `PREFECT_WORKER_QUERY_SECONDS=2
# scripts/prefect-stack.sh up` or another PREFECT_* setting reaches them; the workers get e.g.
# XNAT_PASS for the flows they run) but the workers never get the database URL. The env file
# holds only PREFECT_API_URL.
#
# One server process, no Redis: Prefect's self-hosting guide requires Redis (prefect-redis) for
# several server instances or `prefect server start --workers N>1` (its CLI refuses N>1 without
# it): the event messaging broker and cache, the causal ordering of events and the lease storage
# of global concurrency limits are in-memory in each server process, so several processes would
# each see only their own events and leases. With one server process they are consistent; the
# workers are clients of the API and need no Redis, however many there are. The limit is one
# API process (its CPU); scale the flows with workers, here or on other machines.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
umask 077

STATE=${X2C_PREFECT_STACK_DIR:-/tmp/x2c-prefect-stack}
WORKERS=${X2C_PREFECT_WORKERS:-2}
PG_BIN=${X2C_PREFECT_PG_BIN:-/usr/lib/postgresql/15/bin}
POOL=x2c-process
DB_USER=x2c
DB_NAME=prefect
PREFECT=$ROOT/.venv/bin/prefect
PGDIR=$STATE/pg
PGDATA=$PGDIR/data
SECRET=$STATE/secret

say() { echo "prefect-stack: $*"; }
die() { echo "prefect-stack: $*" >&2; exit 1; }

case "$WORKERS" in ''|*[!0-9]*) die "X2C_PREFECT_WORKERS must be a whole number, not '$WORKERS'";; esac

if [ "$(id -u)" = 0 ]; then PG_OSUSER=postgres; else PG_OSUSER=$(id -un); fi
as_pg() {  # run a PostgreSQL program as the non-root OS user
  if [ "$(id -u)" = 0 ]; then runuser -u "$PG_OSUSER" -- "$@"; else "$@"; fi
}

ensure_postgresql() {
  [ -x "$PG_BIN/initdb" ] && return 0
  [ "$(id -u)" = 0 ] || die "PostgreSQL is not installed ($PG_BIN/initdb); as root: apt-get install postgresql"
  say "apt-get install postgresql"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  [ -x "$PG_BIN/initdb" ] || die "no $PG_BIN/initdb after installing postgresql; set X2C_PREFECT_PG_BIN"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

launch() {  # launch LOG PIDFILE COMMAND...: in the background, in a process group of its own
  # Job control (set -m) gives the command its own process group and, unlike a plain `&` in a
  # script, leaves SIGINT at its default: a Prefect worker turns SIGTERM into SIGINT to stop
  # and would never stop with SIGINT ignored. fd 9 (the lock) is not inherited.
  local log=$1 pidfile=$2; shift 2
  set -m
  nohup "$@" >>"$log" 2>&1 </dev/null 9>&- &
  echo $! > "$pidfile"
  set +m
}

alive() {  # alive PIDFILE: the process runs (a killed one left unreaped as a zombie does not)
  [ -f "$1" ] || return 1
  local state
  state=$(ps -o stat= -p "$(cat "$1")" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "${state#Z}" = "$state" ]
}

load_ports() {  # ports chosen on first use are kept in $STATE/ports; the env vars override them
  PG_PORT="" API_PORT=""
  if [ -f "$STATE/ports" ]; then . "$STATE/ports"; fi
  PG_PORT=${X2C_PREFECT_PG_PORT:-$PG_PORT}
  API_PORT=${X2C_PREFECT_API_PORT:-$API_PORT}
  API_URL="http://127.0.0.1:${API_PORT:-?}/api"
}

healthy() { curl -fsS -m 3 "$API_URL/health" >/dev/null 2>&1; }

pg_running() { [ -f "$PGDATA/PG_VERSION" ] && as_pg "$PG_BIN/pg_ctl" status -D "$PGDATA" >/dev/null 2>&1; }

psql_x2c() {  # psql as the database owner; the password comes from the .pgpass file
  PGPASSFILE=$SECRET/pgpass psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U "$DB_USER" "$@"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll a readiness check
  local seconds=$1 what=$2; shift 2
  local deadline=$((SECONDS + seconds))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if "$@"; then return 0; fi
    sleep 0.3
  done
  die "$what not ready after ${seconds}s; see the logs in $STATE"
}

up_postgres() {
  mkdir -p "$SECRET"
  chmod 711 "$STATE"  # the postgres user only traverses to its own directory
  chmod 700 "$SECRET"
  install -d -m 700 -o "$PG_OSUSER" "$PGDIR"
  if [ ! -f "$SECRET/db-password" ]; then
    python3 -c 'import secrets; print(secrets.token_hex(24))' > "$SECRET/db-password"
  fi
  chmod 600 "$SECRET/db-password"
  local pw
  read -r pw < "$SECRET/db-password"
  printf '127.0.0.1:*:*:%s:%s\n' "$DB_USER" "$pw" > "$SECRET/pgpass"
  chmod 600 "$SECRET/pgpass"

  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    say "initdb $PGDATA (first use)"
    rm -rf "$PGDATA"
    install -d -m 700 -o "$PG_OSUSER" "$PGDATA"
    local pwfile=$PGDIR/initdb-pw
    install -m 600 -o "$PG_OSUSER" /dev/null "$pwfile"
    printf '%s\n' "$pw" > "$pwfile"
    as_pg "$PG_BIN/initdb" -D "$PGDATA" -U "$DB_USER" --pwfile="$pwfile" -E UTF8 --no-locale \
      --auth-local=scram-sha-256 --auth-host=scram-sha-256 >"$PGDIR/initdb.log" 2>&1 \
      || { rm -f "$pwfile"; die "initdb failed; see $PGDIR/initdb.log"; }
    rm -f "$pwfile"
    cat >> "$PGDATA/postgresql.conf" <<CONF
# x2c prefect-stack: loopback TCP only, no unix socket
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 200
CONF
  fi
  if pg_running; then return 0; fi
  as_pg "$PG_BIN/pg_ctl" start -D "$PGDATA" -w -t 60 -l "$PGDIR/postgres.log" -o "-p $PG_PORT" >/dev/null 9>&- \
    || die "PostgreSQL did not start; see $PGDIR/postgres.log"
  echo started > "$PGDIR/started-by-up"
  if [ -z "$(psql_x2c -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" ]; then
    psql_x2c -d postgres -c "CREATE DATABASE $DB_NAME OWNER $DB_USER"
  fi
}

prefect_env() {  # the Prefect settings every process started here shares (no database URL)
  unset PREFECT_SERVER_DATABASE_CONNECTION_URL PREFECT_API_DATABASE_CONNECTION_URL
  export PREFECT_HOME=$STATE/prefect-home
  export PREFECT_API_URL=$API_URL
  export PREFECT_SERVER_ANALYTICS_ENABLED=false
  export PREFECT_CLI_PROMPT=false
}

up_server() {
  if alive "$STATE/server.pid" && healthy; then return 0; fi
  if alive "$STATE/server.pid"; then
    wait_for 120 "the Prefect server (pid $(cat "$STATE/server.pid"))" healthy
    return 0
  fi
  healthy && die "something else answers on $API_URL; set X2C_PREFECT_API_PORT to a free port"
  mkdir -p "$STATE/prefect-home"
  local pw
  read -r pw < "$SECRET/db-password"
  say "prefect server start on 127.0.0.1:$API_PORT (PostgreSQL 127.0.0.1:$PG_PORT)"
  # the URL is in this one process's environment: not in argv, not exported to the workers
  (
    export PREFECT_SERVER_DATABASE_CONNECTION_URL="postgresql+asyncpg://$DB_USER:$pw@127.0.0.1:$PG_PORT/$DB_NAME"
    launch "$STATE/server.log" "$STATE/server.pid" "$PREFECT" server start --host 127.0.0.1 --port "$API_PORT"
  )
  wait_for 180 "the Prefect server on $API_URL" server_up_or_dead
}

server_up_or_dead() {
  alive "$STATE/server.pid" || die "the Prefect server exited; see $STATE/server.log"
  healthy
}

ensure_pool() {
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' -m 10 "$API_URL/work_pools/$POOL")
  case "$code" in
    200) ;;
    404) say "prefect work-pool create $POOL --type process"
         "$PREFECT" work-pool create "$POOL" --type process >>"$STATE/server.log" 2>&1 \
           || die "could not create the work pool $POOL; see $STATE/server.log";;
    *) die "reading the work pool $POOL from $API_URL answered HTTP $code";;
  esac
}

worker_name() { echo "x2c-stack-$(hostname -s)-$1"; }

worker_seen() {  # the server has a heartbeat from worker $1
  curl -fsS -m 5 -X POST -H 'Content-Type: application/json' -d '{}' \
    "$API_URL/work_pools/$POOL/workers/filter" 2>/dev/null | grep -q "\"$(worker_name "$1")\""
}

up_workers() {
  local i started=()
  for i in $(seq 1 "$WORKERS"); do
    alive "$STATE/worker-$i.pid" && continue
    launch "$STATE/worker-$i.log" "$STATE/worker-$i.pid" \
      "$PREFECT" worker start --pool "$POOL" --type process --name "$(worker_name "$i")"
    started+=("$i")
  done
  [ ${#started[@]} -eq 0 ] || say "started worker(s) ${started[*]} on the $POOL pool"
  for i in "${started[@]}"; do
    wait_for 120 "worker $i" worker_up_or_dead "$i"
  done
}

worker_up_or_dead() {
  alive "$STATE/worker-$1.pid" || die "worker $1 exited; see $STATE/worker-$1.log"
  worker_seen "$1"
}

write_env() {
  printf 'export PREFECT_API_URL=%s\n' "$API_URL" > "$STATE/env.tmp"
  chmod 644 "$STATE/env.tmp"
  mv "$STATE/env.tmp" "$STATE/env"
}

stop_group() {  # stop_group PIDFILE NAME: SIGTERM the process group `up` started, then SIGKILL
  local pidfile=$1 name=$2 pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 20))
    while kill -0 -- "-$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    if kill -0 -- "-$pid" 2>/dev/null; then
      say "$name did not stop in 20 s: SIGKILL"
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    say "stopped $name"
  fi
  rm -f "$pidfile"
}

cmd_up() {
  ensure_postgresql
  [ -x "$PREFECT" ] || die "no $PREFECT: run scripts/bootstrap.sh first"
  mkdir -p "$STATE"
  exec 9>"$STATE/lock"  # one `up` or `down` at a time; the processes started here close fd 9
  flock 9
  load_ports
  if [ -z "$PG_PORT" ]; then PG_PORT=$(free_port); fi
  if [ -z "$API_PORT" ]; then API_PORT=$(free_port); fi
  printf 'PG_PORT=%s\nAPI_PORT=%s\n' "$PG_PORT" "$API_PORT" > "$STATE/ports"
  API_URL="http://127.0.0.1:$API_PORT/api"
  up_postgres
  prefect_env
  up_server
  ensure_pool
  up_workers
  write_env
  say "up: PostgreSQL 127.0.0.1:$PG_PORT, server $API_URL, $WORKERS worker(s) on $POOL ($STATE)"
  echo "PREFECT_API_URL=$API_URL"
}

cmd_status() {
  [ -d "$STATE" ] || { say "not up (no $STATE)"; exit 1; }
  load_ports
  local ok=0 i n=0
  if pg_running; then say "PostgreSQL: running on 127.0.0.1:$PG_PORT"; else say "PostgreSQL: not running"; ok=1; fi
  if alive "$STATE/server.pid" && healthy; then
    say "server: healthy at $API_URL (pid $(cat "$STATE/server.pid"))"
  else
    say "server: not running"; ok=1
  fi
  for f in "$STATE"/worker-*.pid; do
    [ -e "$f" ] || continue
    i=${f##*/worker-}; i=${i%.pid}
    if alive "$f"; then say "worker $i: running (pid $(cat "$f"))"; n=$((n + 1)); else say "worker $i: dead"; ok=1; fi
  done
  [ "$n" -gt 0 ] || { say "workers: none running"; ok=1; }
  [ -f "$STATE/env" ] || ok=1
  if [ "$ok" != 0 ]; then say "not up"; exit 1; fi
  echo "PREFECT_API_URL=$API_URL"
}

cmd_down() {
  [ -d "$STATE" ] || { say "nothing to stop (no $STATE)"; return 0; }
  exec 9>"$STATE/lock"
  flock 9
  rm -f "$STATE/env"
  local f
  for f in "$STATE"/worker-*.pid; do
    [ -e "$f" ] || continue
    local i=${f##*/worker-}
    stop_group "$f" "worker ${i%.pid}"
  done
  stop_group "$STATE/server.pid" "the Prefect server"
  if [ -f "$PGDIR/started-by-up" ]; then
    if pg_running; then
      as_pg "$PG_BIN/pg_ctl" stop -D "$PGDATA" -m fast -w -t 60 >/dev/null
      say "stopped PostgreSQL"
    fi
    rm -f "$PGDIR/started-by-up"
  fi
  say "down (data kept in $STATE)"
}

case "${1:-}" in
  up) cmd_up;;
  status) cmd_status;;
  down) cmd_down;;
  *) echo "usage: $0 up|down|status" >&2; exit 2;;
esac
