#!/bin/sh
# Builds one jobplane binary for shipping: the commands the container images run
# (deploy/Dockerfile.*), `make release` runs and tests/integration/test_deploy.py
# runs for real, so all three stay the same.
#
#   scripts/build-release.sh server|worker|cli BUILDDIR
#
# server: jobplane-server without the execution engine (-Dengine=false), as the
#         control plane's image carries it; it runs in distributed mode only.
# worker: jobplane-worker.   cli: jobplane.
# The binary is left at BUILDDIR/<name>.
set -eu

usage() {
    echo "usage: $0 server|worker|cli BUILDDIR" >&2
    exit 2
}

[ $# -eq 2 ] || usage
what=$1
dir=$2

case $what in
server) target=jobplane-server engine=false ;;
worker) target=jobplane-worker engine=true ;;
cli)    target=jobplane engine=true ;;
*)      usage ;;
esac

here=$(cd "$(dirname "$0")/.." && pwd)

if [ -f "$dir/build.ninja" ]; then
    meson configure "$dir" -Dengine=$engine
else
    meson setup "$dir" "$here" -Dwerror=true -Dbuildtype=release -Dengine=$engine
fi
ninja -C "$dir" "$target"
echo "built $dir/$target"
