#!/bin/bash
# Health check of a jobplane-server container: GET /health over bash's /dev/tcp,
# so the runtime image needs no HTTP client. Exit 0 only on a 200 answer.
#   healthcheck.sh [HOST:PORT]    (default: $JOBPLANE_LISTEN, else 127.0.0.1:8080)
set -u

addr=${1:-${JOBPLANE_LISTEN:-127.0.0.1:8080}}
port=${addr##*:}
host=${addr%:*}
host=${host#[}
host=${host%]}
# A wildcard listen address is reached on loopback.
case $host in
"" | 0.0.0.0 | "*") host=127.0.0.1 ;;
::) host=::1 ;;
esac

if ! { exec 3<>"/dev/tcp/$host/$port"; } 2>/dev/null; then
    echo "unhealthy: nothing answers on $host:$port" >&2
    exit 1
fi
printf 'GET /health HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n' "$host" >&3
IFS= read -r -t 5 status <&3 || exit 1
case $status in
"HTTP/1."?" 200 "*) exit 0 ;;
esac
echo "unhealthy: $status" >&2
exit 1
