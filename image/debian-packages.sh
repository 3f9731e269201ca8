#!/usr/bin/env bash
# Install the Debian packages named as arguments that are not installed yet (the image build
# and the e2e node need a few; a fresh machine has none of them). One clear message when that
# is not possible here.
#   bash image/debian-packages.sh podman mmdebstrap ...
set -euo pipefail
missing=()
for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ERROR: these Debian packages are needed and not installed: ${missing[*]}" >&2
    echo "  Install them (apt-get install ${missing[*]}) as root, then run this again." >&2
    exit 1
fi
echo "[debian-packages.sh] installing ${missing[*]} ..."
export DEBIAN_FRONTEND=noninteractive
if ! out="$(apt-get install -y -q --no-install-recommends "${missing[@]}" 2>&1)"; then
    out="$(apt-get update -q 2>&1 && apt-get install -y -q --no-install-recommends "${missing[@]}" 2>&1)" || {
        echo "ERROR: apt-get install ${missing[*]} failed:" >&2
        printf '%s\n' "$out" | tail -n 8 | sed 's/^/    | /' >&2
        exit 1
    }
fi
echo "[debian-packages.sh] installed ${missing[*]}"
