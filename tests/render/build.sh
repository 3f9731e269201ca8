#!/usr/bin/env bash
# The render check's tools (tests/e2e/test_report_render.py, test_zz_report_render.py):
# Debian's Chromium, a font with Arial's metrics (what GitHub's CSS falls back to) and one
# for emoji (the reports' phase icons), and two
# pinned installs of mermaid-cli from the npm registry, the oldest and the newest Mermaid that
# GitHub and GitLab are known to serve (tests/render/mermaid-*/package.json and their locks),
# each into ~/.cache/reconciler/render/mermaid-<which>-<hash of its lock>. No browser download:
# puppeteer's own Chrome is never fetched, the machine's Chromium is used.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="${RECONCILER_CACHE:-$HOME/.cache/reconciler}/render"
log() { echo "[render/build.sh $(date +%H:%M:%S)] $*"; }

bash "$root/image/debian-packages.sh" chromium fonts-liberation2 fonts-noto-color-emoji
if ! command -v npm >/dev/null 2>&1; then
    echo "ERROR: npm (Node.js >= 20) is needed for the render check's mermaid-cli; install Node.js" >&2
    exit 1
fi
for which in oldest newest; do
    src="$here/mermaid-$which"
    key="$(sha256sum "$src/package-lock.json" | cut -c1-12)"
    dir="$cache/mermaid-$which-$key"
    if [ -f "$dir/.installed" ]; then
        log "mermaid-$which present in $dir (nothing to install)"
        continue
    fi
    started=$(date +%s)
    rm -rf "$dir.part" && mkdir -p "$dir.part"
    cp "$src/package.json" "$src/package-lock.json" "$dir.part/"
    if ! out="$(cd "$dir.part" && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --ignore-scripts --no-audit \
            --no-fund --loglevel=error 2>&1)"; then
        echo "ERROR: npm ci of tests/render/mermaid-$which failed (is the npm registry reachable?):" >&2
        printf '%s\n' "$out" | tail -n 12 | sed 's/^/    | /' >&2
        exit 1
    fi
    rm -rf "$dir" && mv "$dir.part" "$dir" && touch "$dir/.installed"
    version="$(node -p "require('$dir/node_modules/mermaid/package.json').version")"
    log "installed mermaid-cli with Mermaid $version into $dir in $(( $(date +%s) - started ))s"
done
