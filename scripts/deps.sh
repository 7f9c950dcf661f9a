#!/bin/sh
# Installs the Debian packages jobplane needs to build, test and run, when missing.
# Called by `make`; a no-op (one dpkg query) once everything is there.
set -eu

pkgs="build-essential pkg-config meson ninja-build clang
libmicrohttpd-dev libjansson-dev libhiredis-dev libpq-dev libsqlite3-dev
libcurl4-openssl-dev libxml2-dev libcmocka-dev
redis-server postgresql python3 curl procps jq docker-compose"

missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

echo "deps: installing$missing" >&2
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
