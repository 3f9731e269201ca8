#!/usr/bin/env bash
# `make image`: build the daemon's image from ./Dockerfile with podman (no Docker), on the
# Debian base image/base.sh makes, tagged localhost/reconciler:<version of pyproject.toml>,
# and save it as an OCI archive (for containerd: `ctr images import`, used by the e2e node).
# Layers are cached in the project's podman storage: a change to reconciler/ rebuilds the
# last layers only. --timestamp 0 makes the layers' and the config's times fixed.
#   --print-name     print the image name and exit
#   --print-archive  print the OCI archive's path and exit
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cache_root="${RECONCILER_CACHE:-$HOME/.cache/reconciler}"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/pyproject.toml" | head -n 1)"
name="localhost/reconciler:${version}"
archive="$cache_root/image/reconciler-${version}.oci.tar"
case "${1:-}" in
    --print-name) echo "$name"; exit 0 ;;
    --print-archive) echo "$archive"; exit 0 ;;
esac
log() { printf '[image/build.sh %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

bash "$here/base.sh"
base="$(bash "$here/base.sh" --print-name)"
# shellcheck source=podman.sh
. "$here/podman.sh"
export TMPDIR="$podman_dir/tmp"

# The host's TLS trust is lent to the RUN steps (a proxy's CA, pip's configuration), mounted
# for the build only: nothing of it is copied into the image.
lend=()
for f in /etc/ssl/certs/ca-certificates.crt /etc/pip.conf; do
    [ -f "$f" ] && lend+=(--volume "$f:$f:ro")
done
start=$SECONDS
log "building $name from Dockerfile (base $base) ..."
if ! out="$("${podman_cmd[@]}" build --network host --pull=never --timestamp 0 "${lend[@]}" \
        --build-arg "BASE_IMAGE=$base" -t "$name" -f "$root/Dockerfile" "$root" 2>&1)"; then
    echo "ERROR: podman build failed:" >&2
    printf '%s\n' "$out" | tail -n 25 | sed 's/^/    | /' >&2
    exit 1
fi
id="$("${podman_cmd[@]}" image inspect --format '{{.Id}}' "$name")"
if [ -s "$archive" ] && [ "$(cat "$archive.id" 2>/dev/null)" = "$id" ]; then
    log "built $name in $(( SECONDS - start ))s: unchanged ($id)"
    exit 0
fi
tmp="$(mktemp "$cache_root/image/.reconciler.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
rm -f "$tmp"
"${podman_cmd[@]}" save --quiet --format oci-archive -o "$tmp" "$name"
mv -f "$tmp" "$archive"
echo "$id" > "$archive.id"
log "built $name in $(( SECONDS - start ))s: $id ($(du -h "$archive" | cut -f1)), saved to $archive"
