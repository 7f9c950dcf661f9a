#!/bin/bash
# The docker-compose topology (deploy/docker-compose.yml) as local processes, for
# machines without Docker: redis-server (AOF), PostgreSQL, jobplane-server and two
# jobplane-workers, configured through the same JOBPLANE_* variables.
#
#   scripts/stack.sh [run|demo] [BUILDDIR]
#
# run   (make stack): start everything, print where it listens, stop it all on
#       Ctrl-C (or SIGTERM).
# demo  (make stack-demo): start, submit a mixed batch, print each job's outcome,
#       stop; exit 0 only if every job ended as expected.
#
# State and logs live in .state/stack/ (wiped at each start). Knobs: STACK_REDIS_PORT
# (6390), STACK_PG_PORT (5440), STACK_SERVER_PORT (8090), STACK_WORKERS (2),
# STACK_STATE (the state directory).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODE=${1:-run}
BUILD=${2:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
STATE=${STACK_STATE:-$ROOT/.state/stack}
REDIS_PORT=${STACK_REDIS_PORT:-6390}
PG_PORT=${STACK_PG_PORT:-5440}
SERVER_PORT=${STACK_SERVER_PORT:-8090}
NWORKERS=${STACK_WORKERS:-2}
DRAIN=10

SERVER_BIN=$BUILD/jobplane-server
WORKER_BIN=$BUILD/jobplane-worker
CLI_BIN=$BUILD/jobplane

case $MODE in
run | demo) ;;
*)
    echo "usage: $0 [run|demo] [BUILDDIR]" >&2
    exit 2
    ;;
esac

# The stack is configured here and nowhere else: nothing from the caller's
# environment leaks into it.
while IFS='=' read -r name _; do
    case $name in JOBPLANE_*) unset "$name" ;; esac
done < <(env)

say() { printf 'stack: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

# --- processes -------------------------------------------------------------

# pid of each process started, by name, and the order to stop them in.
declare -A PID=()
ORDER=()
PG_STARTED=0
PG_DATA=
PG_BIN=
STOPPING=0
FAILED_STOP=()

# True while pid runs (a child that exited is a zombie until waited for).
running() {
    local line rest
    [ -r "/proc/$1/stat" ] || return 1
    IFS= read -r line <"/proc/$1/stat" 2>/dev/null || return 1
    rest=${line##*) }
    [ "${rest%% *}" != Z ]
}

# Starts a long-running process in its own session (so a Ctrl-C at the terminal
# reaches this script only, which stops everything in order), logging to
# $STATE/<name>.log. Remaining arguments: VAR=value... then the command.
spawn() {
    local name=$1
    shift
    setsid env "$@" >"$STATE/$name.log" 2>&1 </dev/null &
    PID[$name]=$!
    ORDER+=("$name")
    echo "${PID[$name]}" >"$STATE/$name.pid"
}

# Stops processes by name: SIGTERM to all of them at once, SIGKILL to those
# still running after `grace` seconds; records non-zero exit statuses.
stop() {
    local grace=$1 name pid i st left
    shift
    for name in "$@"; do
        pid=${PID[$name]:-}
        [ -z "$pid" ] || kill -TERM "$pid" 2>/dev/null || true
    done
    for ((i = 0; i < grace * 10; i++)); do
        left=0
        for name in "$@"; do
            pid=${PID[$name]:-}
            if [ -n "$pid" ] && running "$pid"; then
                left=1
            fi
        done
        [ "$left" -eq 1 ] || break
        sleep 0.1
    done
    for name in "$@"; do
        pid=${PID[$name]:-}
        [ -n "$pid" ] || continue
        if running "$pid"; then
            say "$name did not stop within ${grace}s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        st=0
        wait "$pid" 2>/dev/null || st=$?
        unset "PID[$name]"
        rm -f "$STATE/$name.pid"
        if [ "$st" -ne 0 ]; then
            FAILED_STOP+=("$name exited with status $st (log: $STATE/$name.log)")
        fi
    done
}

pg() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# Workers first (they drain and report), then the control plane, then the
# database and Redis under it.
teardown() {
    [ "$STOPPING" -eq 0 ] || return 0
    STOPPING=1
    trap '' INT TERM
    local name
    if [ "${#PID[@]}" -gt 0 ] || [ "$PG_STARTED" -eq 1 ]; then
        say "stopping"
    fi
    local workers=()
    for name in "${ORDER[@]}"; do
        case $name in worker-*) workers+=("$name") ;; esac
    done
    [ "${#workers[@]}" -eq 0 ] || stop $((DRAIN + 10)) "${workers[@]}"
    stop 30 server
    if [ "$PG_STARTED" -eq 1 ]; then
        if [ -f "$PG_DATA/postmaster.pid" ]; then
            pg "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m fast -w -t 30 >/dev/null 2>&1 ||
                FAILED_STOP+=("postgres did not stop cleanly (log: $STATE/postgres.log)")
        fi
        PG_STARTED=0
        # A cluster outside the state directory is not kept.
        case $PG_DATA in /tmp/jobplane-stack-pg.*) rm -rf "$(dirname "$PG_DATA")" ;; esac
    fi
    stop 30 redis
    [ "${#PID[@]}" -eq 0 ] || stop 10 "${!PID[@]}"
    if [ "${#FAILED_STOP[@]}" -gt 0 ]; then
        printf 'stack: %s\n' "${FAILED_STOP[@]}" >&2
        return 1
    fi
    return 0
}

on_exit() {
    local st=$?
    teardown || st=1
    exit "$st"
}

# Ctrl-C is how `make stack` ends; it interrupts a demo.
on_signal() {
    echo >&2
    teardown || exit 1
    [ "$MODE" = run ] || exit 130
    exit 0
}

# --- checks ----------------------------------------------------------------

port_busy() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Polls a command until it succeeds; fails if `name`'s process died meanwhile.
wait_for() {
    local what=$1 name=$2 secs=$3
    shift 3
    local i
    for ((i = 0; i < secs * 10; i++)); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        if [ -n "$name" ] && [ -n "${PID[$name]:-}" ] && ! running "${PID[$name]}"; then
            tail -n 20 "$STATE/$name.log" >&2 || true
            die "$name exited while waiting for $what (log: $STATE/$name.log)"
        fi
        sleep 0.1
    done
    [ -z "$name" ] || tail -n 20 "$STATE/$name.log" >&2 || true
    die "timed out after ${secs}s waiting for $what"
}

need() {
    command -v "$1" >/dev/null 2>&1 || die "$1 is not installed (scripts/deps.sh installs it)"
}

pg_bindir() {
    local d
    for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV); do
        if [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

# A previous run killed without its teardown leaves processes behind: stop the
# ones its pid files name, if they are still what we started.
stop_stale() {
    local f pid name i
    [ -d "$STATE" ] || return 0
    if [ -f "$STATE/stack.pid" ]; then
        pid=$(cat "$STATE/stack.pid")
        if [ "$pid" != $$ ] && running "$pid" &&
            tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'stack\.sh'; then
            die "a stack is already running from $STATE (pid $pid): stop it first (Ctrl-C)"
        fi
    fi
    for name in 'worker-*' server postgres redis; do
        if [ "$name" = postgres ]; then
            [ -f "$STATE/pgdata" ] || continue
            local data
            data=$(cat "$STATE/pgdata")
            if [ -f "$data/postmaster.pid" ]; then
                say "stopping PostgreSQL left by a previous run"
                pg "$PG_BIN/pg_ctl" stop -D "$data" -m fast -w >/dev/null 2>&1 || true
            fi
            case $data in /tmp/jobplane-stack-pg.*) rm -rf "$(dirname "$data")" ;; esac
            continue
        fi
        for f in "$STATE"/$name.pid; do
            [ -e "$f" ] || continue
            name=$(basename "$f" .pid)
            pid=$(cat "$f")
            if running "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null |
                grep -qE 'jobplane|redis-server'; then
                say "stopping $name (pid $pid) left by a previous run"
                kill -TERM "$pid" 2>/dev/null || true
                for ((i = 0; i < 300; i++)); do
                    running "$pid" || break
                    sleep 0.1
                done
                if running "$pid"; then
                    kill -KILL "$pid" 2>/dev/null || true
                fi
            fi
        done
    done
}

token() {
    od -An -N24 -tx1 /dev/urandom | tr -d ' \n'
}

# --- start -----------------------------------------------------------------

for b in "$SERVER_BIN" "$WORKER_BIN" "$CLI_BIN"; do
    [ -x "$b" ] || die "$b is missing: build first (make build)"
done
need redis-server
need redis-cli
need curl
need jq
need setsid
PG_BIN=$(pg_bindir) || die "PostgreSQL server is not installed (package postgresql)"
if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || die "as root, PostgreSQL runs as the user postgres, which does not exist"
fi

stop_stale
for p in "$REDIS_PORT" "$PG_PORT" "$SERVER_PORT"; do
    if port_busy "$p"; then
        die "port $p on 127.0.0.1 is in use (set STACK_REDIS_PORT, STACK_PG_PORT or STACK_SERVER_PORT)"
    fi
done

trap on_exit EXIT
trap on_signal INT TERM

# Wipe only what looks like a stack's state, never a directory given by mistake.
if [ -d "$STATE" ] && [ -n "$(ls -A "$STATE")" ] && [ ! -e "$STATE/stack.pid" ]; then
    die "$STATE is not empty and holds no stack: refusing to wipe it (set STACK_STATE)"
fi
mkdir -p "$(dirname "$STATE")"
# Tokens and passwords are in the state directory and its logs: only its owner
# reads them (postgres may pass through to its own directory).
umask 077
rm -rf "$STATE"
mkdir -p "$STATE"
chmod 711 "$STATE"
echo $$ >"$STATE/stack.pid"

CLIENT_TOKEN=$(token)
WORKER_TOKEN=$(token)
ADMIN_TOKEN=$(token)
PG_PASSWORD=$(token)
(
    umask 077
    printf 'client %s\nworker %s\nadmin %s\n' "$CLIENT_TOKEN" "$WORKER_TOKEN" "$ADMIN_TOKEN" >"$STATE/tokens"
)

REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
DATABASE_URL=postgres://jobplane:$PG_PASSWORD@127.0.0.1:$PG_PORT/jobplane
SERVER_URL=http://127.0.0.1:$SERVER_PORT

# Redis, persistent and never evicting, as in compose.
mkdir -p "$STATE/redis"
spawn redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$STATE/redis" \
    --appendonly yes --appendfsync everysec --maxmemory-policy noeviction \
    --save "" --daemonize no
wait_for "redis to answer" redis 15 sh -c "[ \"\$(redis-cli -p $REDIS_PORT ping)\" = PONG ]"

# PostgreSQL refuses to run as root: as root its cluster belongs to postgres,
# which must be able to reach the state directory (a repository under /root is
# out of its reach, and then a directory in /tmp holds the cluster).
PG_DIR=$STATE/pg
mkdir -p "$PG_DIR"
if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$PG_DIR"
    if ! runuser -u postgres -- test -w "$PG_DIR"; then
        PG_DIR=$(mktemp -d /tmp/jobplane-stack-pg.XXXXXX)
        chown postgres: "$PG_DIR"
        say "postgres cannot reach $STATE; its cluster is in $PG_DIR"
    fi
fi
PG_DATA=$PG_DIR/data
echo "$PG_DATA" >"$STATE/pgdata"
(
    umask 077
    echo "$PG_PASSWORD" >"$PG_DIR/pwfile"
)
[ "$(id -u)" -ne 0 ] || chown postgres: "$PG_DIR/pwfile"
pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --pwfile="$PG_DIR/pwfile" \
    --auth=scram-sha-256 -E UTF8 --locale=C --no-sync >"$STATE/initdb.log" 2>&1 ||
    die "initdb failed (log: $STATE/initdb.log)"
rm -f "$PG_DIR/pwfile"
# TCP on loopback only, no Unix socket (its path would depend on where the
# repository is).
cat >>"$PG_DATA/postgresql.conf" <<EOF
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 100
logging_collector = off
EOF
PG_STARTED=1
# Without -l the server logs to pg_ctl's output, a file opened here: postgres
# writes it whether or not it may reach the state directory.
# shellcheck disable=SC2016 # expanded by the inner shell
setsid bash -c 'if [ "$(id -u)" -eq 0 ]; then exec runuser -u postgres -- "$@"; else exec "$@"; fi' \
    pg "$PG_BIN/pg_ctl" start -D "$PG_DATA" -w -t 60 >>"$STATE/postgres.log" 2>&1 ||
    die "PostgreSQL did not start (log: $STATE/postgres.log)"
psql_admin() {
    PGPASSWORD=$PG_PASSWORD "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres \
        -v ON_ERROR_STOP=1 -qAt "$@"
}
wait_for "PostgreSQL to accept connections" "" 30 psql_admin -c "SELECT 1"
psql_admin -c "CREATE ROLE jobplane LOGIN PASSWORD '$PG_PASSWORD'" >/dev/null
psql_admin -c "CREATE DATABASE jobplane OWNER jobplane" >/dev/null

# The control plane: the variables of the compose file's server service.
spawn server \
    JOBPLANE_LISTEN="127.0.0.1:$SERVER_PORT" \
    JOBPLANE_DATABASE_URL="$DATABASE_URL" \
    JOBPLANE_REDIS_URL="$REDIS_URL" \
    JOBPLANE_TOKENS_FILE="$STATE/tokens" \
    JOBPLANE_RECONCILE_INTERVAL=5 \
    JOBPLANE_LEASE_SECONDS=30 \
    JOBPLANE_LOG_LEVEL=info \
    "$SERVER_BIN"
wait_for "the control plane to be ready" server 30 curl -fsS "$SERVER_URL/ready"

# The workers: the compose file's worker service, with exec enabled for a
# short allow-list.
STRATEGIES=noop,sleep,http,exec
EXEC_ALLOW=/bin/echo,/bin/false
WORKER_IDS=()
for ((i = 1; i <= NWORKERS; i++)); do
    wid=stack-w$i
    WORKER_IDS+=("$wid")
    spawn "worker-$i" \
        JOBPLANE_REDIS_URL="$REDIS_URL" \
        JOBPLANE_CONTROL_PLANE_URL="$SERVER_URL" \
        JOBPLANE_TOKEN="$WORKER_TOKEN" \
        JOBPLANE_REPORT=api \
        JOBPLANE_QUEUES=default \
        JOBPLANE_CONCURRENCY=4 \
        JOBPLANE_STRATEGIES="$STRATEGIES" \
        JOBPLANE_EXEC_ALLOW="$EXEC_ALLOW" \
        JOBPLANE_WORKER_ID="$wid" \
        JOBPLANE_LEASE_SECONDS=30 \
        JOBPLANE_DRAIN_TIMEOUT=$DRAIN \
        JOBPLANE_LOG_LEVEL=info \
        "$WORKER_BIN"
done

api() {
    curl -fsS -H "Authorization: Bearer $CLIENT_TOKEN" "$SERVER_URL$1"
}
workers_up() {
    local ids wid
    ids=$(api /api/v1/workers | jq -r '.workers[].id') || return 1
    for wid in "${WORKER_IDS[@]}"; do
        grep -qx "$wid" <<<"$ids" || return 1
    done
}
for ((i = 1; i <= NWORKERS; i++)); do
    wait_for "worker stack-w$i to register" "worker-$i" 30 workers_up
done
wait_for "all workers to register" "" 30 workers_up

cat >"$STATE/client.env" <<EOF
export JOBPLANE_SERVER=$SERVER_URL
export JOBPLANE_TOKEN=$CLIENT_TOKEN
EOF
chmod 600 "$STATE/client.env"

rel() {
    case $1 in "$ROOT"/*) echo "${1#"$ROOT"/}" ;; *) echo "$1" ;; esac
}

cat <<EOF

jobplane stack is up
  redis      $REDIS_URL   (AOF in $(rel "$STATE/redis"))
  postgres   postgres://jobplane:…@127.0.0.1:$PG_PORT/jobplane   (cluster in $(rel "$PG_DATA"))
  server     $SERVER_URL   (dashboard /, metrics /metrics, health /health)
  workers    ${WORKER_IDS[*]}   (strategies $STRATEGIES; exec allows $EXEC_ALLOW)
  tokens     $(rel "$STATE/tokens")   (client, worker, admin)
  logs       $(rel "$STATE")/*.log

EOF

# --- run: until Ctrl-C -----------------------------------------------------

if [ "$MODE" = run ]; then
    cat <<EOF
Use it from another terminal:
  . $(rel "$STATE/client.env")      # sets JOBPLANE_SERVER and JOBPLANE_TOKEN (client)
  $(rel "$CLI_BIN") submit --strategy noop --wait
  $(rel "$CLI_BIN") submit --strategy exec --payload '{"command": ["/bin/echo", "hi"]}' --wait
  $(rel "$CLI_BIN") workers

Ctrl-C stops everything.
EOF
    while :; do
        for name in "${!PID[@]}"; do
            if ! running "${PID[$name]}"; then
                tail -n 20 "$STATE/$name.log" >&2 || true
                die "$name exited unexpectedly (log: $STATE/$name.log)"
            fi
        done
        sleep 1 &
        wait $! || true
    done
fi

# --- demo: a mixed batch ---------------------------------------------------

export JOBPLANE_SERVER=$SERVER_URL JOBPLANE_TOKEN=$CLIENT_TOKEN

NAMES=()
declare -A JOB=() STRAT=() WANT=() WANT_ATTEMPTS=() WANT_ERROR=() CHECK=() SEEN=()

submit() {
    local name=$1 want=$2 attempts=$3 error=$4 check=$5 strategy=$6
    shift 6
    local id
    id=$("$CLI_BIN" submit --strategy "$strategy" "$@") || die "submitting $name failed"
    NAMES+=("$name")
    JOB[$name]=$id
    STRAT[$name]=$strategy
    WANT[$name]=$want
    WANT_ATTEMPTS[$name]=$attempts
    WANT_ERROR[$name]=$error
    CHECK[$name]=$check
}

job_json() {
    "$CLI_BIN" get "${JOB[$1]}"
}

say "submitting the demo batch"
submit noop completed 1 - true noop
submit exec-echo completed 1 - '.result.stdout == "hello from exec\n"' exec \
    --payload '{"command": ["/bin/echo", "hello from exec"]}'
submit http-health completed 1 - '.result.status == 200 and .result.extracted.status == "ok"' http \
    --payload "{\"url\": \"$SERVER_URL/health\", \"extract\": {\"status\": \"/status\"}}"
submit exec-false failed 2 exit_status '.result == null or .result.exit_code == 1' exec \
    --payload '{"command": ["/bin/false"]}' --max-attempts 2
submit delayed completed 1 - \
    '(.started_at | sub("\\.[0-9]+Z$"; "Z") | fromdate) - (.created_at | sub("\\.[0-9]+Z$"; "Z") | fromdate) >= 2' \
    noop --delay 3
submit cancelled cancelled 1 '*' true sleep --payload '{"ms": 60000}' --max-attempts 1

# The delayed job waits its turn; the sleep job is cancelled once it runs.
[ "$(job_json delayed | jq -r .status)" = scheduled ] || SEEN[delayed]=not-scheduled
deadline=$((SECONDS + 30))
until [ "$(job_json cancelled | jq -r .status)" = running ]; do
    [ "$SECONDS" -lt "$deadline" ] || die "the sleep job never started running"
    sleep 0.1
done
"$CLI_BIN" cancel "${JOB[cancelled]}" >/dev/null || die "cancelling the sleep job failed"

terminal() {
    case $1 in completed | failed | cancelled) return 0 ;; esac
    return 1
}
declare -A FINAL=()
deadline=$((SECONDS + 60))
for name in "${NAMES[@]}"; do
    while :; do
        json=$(job_json "$name") || die "reading job $name failed"
        if terminal "$(jq -r .status <<<"$json")"; then
            FINAL[$name]=$json
            break
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            FINAL[$name]=$json
            break
        fi
        sleep 0.1
    done
done

bad=0
printf '\n%-36s  %-11s  %-8s  %-9s  %-8s  %-12s  %-9s  %s\n' \
    JOB NAME STRATEGY STATUS ATTEMPTS ERROR WORKER OUTCOME
for name in "${NAMES[@]}"; do
    json=${FINAL[$name]}
    status=$(jq -r .status <<<"$json")
    attempts=$(jq -r .attempts <<<"$json")
    error=$(jq -r '.error.code // "-"' <<<"$json")
    worker=$(jq -r '.worker_id // "-"' <<<"$json")
    why=()
    [ "$status" = "${WANT[$name]}" ] || why+=("want status ${WANT[$name]}")
    [ "$attempts" = "${WANT_ATTEMPTS[$name]}" ] || why+=("want ${WANT_ATTEMPTS[$name]} attempts")
    if [ "${WANT_ERROR[$name]}" != '*' ] && [ "$error" != "${WANT_ERROR[$name]}" ]; then
        why+=("want error ${WANT_ERROR[$name]}")
    fi
    if [ "${#why[@]}" -eq 0 ] && [ "$(jq -r "${CHECK[$name]}" <<<"$json")" != true ]; then
        why+=("result not as expected")
    fi
    [ -z "${SEEN[$name]:-}" ] || why+=("${SEEN[$name]}")
    if [ "${#why[@]}" -eq 0 ]; then
        outcome=ok
    else
        outcome="UNEXPECTED: $(
            IFS=,
            echo "${why[*]}"
        )"
        bad=$((bad + 1))
        echo "$json" >"$STATE/unexpected-$name.json"
    fi
    printf '%-36s  %-11s  %-8s  %-9s  %-8s  %-12s  %-9s  %s\n' \
        "${JOB[$name]}" "$name" "${STRAT[$name]}" "$status" "$attempts" "$error" "$worker" "$outcome"
done
echo

if [ "$bad" -ne 0 ]; then
    say "$bad of ${#NAMES[@]} jobs did not end as expected (their JSON: $(rel "$STATE")/unexpected-*.json)"
    exit 1
fi
teardown || {
    say "the demo's jobs ended as expected, but the stack did not stop cleanly"
    exit 1
}
echo "stack-demo: all ${#NAMES[@]} jobs ended as expected"
