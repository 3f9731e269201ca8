#!/usr/bin/env bash
# The Debian base image, made from Debian's packages (no registry is reachable here):
# mmdebstrap --variant=minbase with python3 and git (image/base.env), imported into this
# project's podman storage as localhost/reconciler-debian:<suite>-r<recipe>, and saved as an
# OCI archive for containerd (the e2e node's Job image). Nothing is done when both exist.
#   --print-name     print the image name and exit
#   --print-archive  print the OCI archive's path and exit
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=base.env
. "$here/base.env"
cache_root="${RECONCILER_CACHE:-$HOME/.cache/reconciler}"
name="localhost/reconciler-debian:${DEBIAN_SUITE}-r${BASE_RECIPE}"
archive="$cache_root/image/reconciler-debian-${DEBIAN_SUITE}-r${BASE_RECIPE}.oci.tar"
case "${1:-}" in
    --print-name) echo "$name"; exit 0 ;;
    --print-archive) echo "$archive"; exit 0 ;;
esac
log() { printf '[image/base.sh %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

bash "$here/debian-packages.sh" podman mmdebstrap runc
# shellcheck source=podman.sh
. "$here/podman.sh"

if "${podman_cmd[@]}" image exists "$name" && [ -s "$archive" ]; then
    log "$name present (nothing to build)"
    exit 0
fi
start=$SECONDS
tmp="$(mktemp -d "$cache_root/image/.base.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
if ! "${podman_cmd[@]}" image exists "$name"; then
    log "making the root filesystem: mmdebstrap $DEBIAN_SUITE ($BASE_PACKAGES) ..."
    if ! out="$(mmdebstrap --variant=minbase --include="$BASE_PACKAGES" \
            --aptopt='Acquire::Retries "3"' "$DEBIAN_SUITE" "$tmp/rootfs.tar" "$DEBIAN_MIRROR" 2>&1)"; then
        echo "ERROR: mmdebstrap failed (is $DEBIAN_MIRROR reachable?):" >&2
        printf '%s\n' "$out" | tail -n 12 | sed 's/^/    | /' >&2
        exit 1
    fi
    "${podman_cmd[@]}" import --quiet --change 'CMD ["/bin/bash"]' "$tmp/rootfs.tar" "$name" >/dev/null
fi
"${podman_cmd[@]}" save --quiet --format oci-archive -o "$tmp/base.oci.tar" "$name"
mv -f "$tmp/base.oci.tar" "$archive"
log "made $name in $(( SECONDS - start ))s ($(du -h "$archive" | cut -f1))"
