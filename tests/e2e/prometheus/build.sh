#!/usr/bin/env bash
# Build the Prometheus server for the e2e tests from its Go module (called by `make cluster`).
#
#   prometheus   (github.com/prometheus/prometheus/cmd/prometheus, through the wrapper module
#                 tests/e2e/prometheus, i.e. go.mod/go.sum next to this script)
#
# into ${RECONCILER_CACHE:-$HOME/.cache/reconciler}/bin/prometheus-<version>/prometheus, doing
# nothing when that binary exists and reports the pinned version. The version is pinned in
# versions.env. Only the Go module proxy is used.
#
# The binary is built like upstream's promu build (same version stamping, tag netgo) except
# WITHOUT the `builtinassets` tag: the web UI is not embedded (building it needs node/npm).
# The server, its HTTP API (/api/v1/...), /metrics and /-/ready, /-/healthy work as usual;
# only the browser UI pages are missing.
#
# Environment:
#   RECONCILER_CACHE        cache root (default: $HOME/.cache/reconciler)
#   RECONCILER_BUILD_JOBS   parallel compile jobs, `go build -p` (default: 2)
#   --print-bin-dir         print the binary directory and exit (used by the test fixture)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
. "$here/versions.env"

cache_root="${RECONCILER_CACHE:-$HOME/.cache/reconciler}"
versions_key="prometheus-${PROMETHEUS_VERSION}"
bin_dir="$cache_root/bin/$versions_key"

if [ "${1:-}" = "--print-bin-dir" ]; then
    echo "$bin_dir"
    exit 0
fi

# Prometheus publishes its Go module as v0.<major><minor 2 digits>.<patch>:
# v0.316.0 is Prometheus 3.16.0, which is what `prometheus --version` must report.
mod_mm="${PROMETHEUS_VERSION#v0.}"        # 316.0
mod_minor="${mod_mm%%.*}"                 # 316
mod_patch="${mod_mm#*.}"                  # 0
if ! [[ "$mod_minor" =~ ^[0-9]{3,}$ && "$mod_patch" =~ ^[0-9]+$ ]]; then
    echo "ERROR: PROMETHEUS_VERSION=${PROMETHEUS_VERSION} in versions.env is not of the form v0.<MMM>.<patch>" >&2
    exit 1
fi
prom_version="${mod_minor:0:${#mod_minor}-2}.$((10#${mod_minor: -2})).${mod_patch}"   # 3.16.0

log() { printf '[prometheus/build.sh %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# One clear message, then exit: the build cannot run here.
give_up() {
    local what="$1" details="${2:-}"
    {
        echo
        echo "ERROR: cannot build Prometheus for the e2e tests: $what"
        if [ -n "$details" ]; then
            echo
            echo "  Details (first lines of the Go tool's output):"
            printf '%s\n' "$details" | head -n 8 | sed 's/^/    | /'
        fi
        echo
        echo "  The e2e tests that use Prometheus need ${go_required:+Go >= $go_required and }access to the"
        echo "  Go module proxy ($(go env GOPROXY 2>/dev/null || echo 'GOPROXY')), so that this script can build"
        echo "  github.com/prometheus/prometheus ${PROMETHEUS_VERSION} (Prometheus ${prom_version}) into $bin_dir."
        echo "  See docs/e2e.md."
    } >&2
    exit 1
}

# The binary "matches" when it runs and reports the pinned version.
binary_version() {   # <path>: prints the version `prometheus --version` reports, or nothing
    "$1" --version 2>/dev/null | sed -n 's/^prometheus, version \([^ ]*\) .*/\1/p' | head -n 1
}

if [ -x "$bin_dir/prometheus" ]; then
    have="$(binary_version "$bin_dir/prometheus" || true)"
    if [ "$have" = "$prom_version" ]; then
        log "prometheus ${prom_version} present in $bin_dir (nothing to build)"
        exit 0
    fi
    log "$bin_dir/prometheus reports version '${have:-?}', expected ${prom_version}: rebuilding"
fi
log "binary directory: $bin_dir"
log "to build: prometheus ${prom_version} (github.com/prometheus/prometheus ${PROMETHEUS_VERSION})"

# --- prerequisites -----------------------------------------------------------------------
# The wrapper module's go directive is upstream's (e.g. 1.26.7); with GOTOOLCHAIN=local an
# older Go would refuse it, so check it here and say so clearly.
go_required="$(sed -n 's/^go \([0-9][0-9.]*\)$/\1/p' "$here/go.mod")"
command -v go >/dev/null 2>&1 || give_up "the Go toolchain ('go') is not on PATH."
go_version="$(go env GOVERSION 2>/dev/null || true)"   # e.g. go1.26.8
version_ge() {   # <have> <want>: dotted numeric versions, missing parts count as 0
    local IFS=. i
    local -a h w
    read -r -a h <<<"$1"
    read -r -a w <<<"$2"
    for i in 0 1 2; do
        local hv="${h[$i]:-0}" wv="${w[$i]:-0}"
        hv="${hv%%[!0-9]*}"; wv="${wv%%[!0-9]*}"
        [[ "$hv" =~ ^[0-9]+$ && "$wv" =~ ^[0-9]+$ ]] || return 1
        [ "$hv" -gt "$wv" ] && return 0
        [ "$hv" -lt "$wv" ] && return 1
    done
    return 0
}
if [ -z "$go_required" ] || ! version_ge "${go_version#go}" "$go_required"; then
    give_up "Go >= ${go_required:-?} is required (go directive of tests/e2e/prometheus/go.mod), found '${go_version:-unknown}'."
fi

# Never let the go command fetch another toolchain; build a static binary; use the committed
# go.mod/go.sum as they are.
export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOFLAGS="-mod=readonly -buildvcs=false"
jobs="${RECONCILER_BUILD_JOBS:-2}"
log "using $go_version, go build -p $jobs, GOPROXY=$(go env GOPROXY), GOCACHE=$(go env GOCACHE)"

# The committed wrapper module must match versions.env (else we would build one release and
# stamp another): it is regenerated by gen-module.sh, never edited by hand.
if ! grep -qE "^(require)?[[:space:]]*github\.com/prometheus/prometheus ${PROMETHEUS_VERSION//./\\.}( //.*)?\$" "$here/go.mod"; then
    echo "ERROR: tests/e2e/prometheus/go.mod does not require github.com/prometheus/prometheus ${PROMETHEUS_VERSION} (versions.env)." >&2
    echo "  Regenerate it with: bash tests/e2e/prometheus/gen-module.sh" >&2
    exit 1
fi

mkdir -p "$bin_dir"
tmp_dir="$(mktemp -d "$bin_dir/.build.XXXXXX")"
trap 'rm -rf "$tmp_dir"' EXIT

total_start=$SECONDS

# --- download (first, so that a missing proxy gives one clear message) ----------------------
start=$SECONDS
log "downloading modules for Prometheus ${prom_version} ..."
if ! out="$(cd "$here" && go mod download 2>&1)"; then
    give_up "downloading the Go modules for Prometheus ${prom_version} failed (is the module proxy reachable?)." "$out"
fi
log "downloaded modules for Prometheus ${prom_version} in $(( SECONDS - start ))s"

# The module zip carries upstream's VERSION file: it must agree with the version derived above.
mod_dir="$(cd "$here" && go list -m -f '{{.Dir}}' github.com/prometheus/prometheus)"
upstream_version="$(tr -d '[:space:]' < "$mod_dir/VERSION" 2>/dev/null || true)"
if [ -n "$upstream_version" ] && [ "$upstream_version" != "$prom_version" ]; then
    echo "ERROR: github.com/prometheus/prometheus ${PROMETHEUS_VERSION} says VERSION=${upstream_version}, expected ${prom_version}." >&2
    exit 1
fi

# --- build -----------------------------------------------------------------------------------
# Stamp the version as promu does (.promu.yml), so that `prometheus --version`, the
# prometheus_build_info metric and /api/v1/status/buildinfo report it. The module proxy does
# not record the git commit, so the revision is the module version; the build date is the
# module's publication time and the user is fixed, so the binary is reproducible.
build_date="$(cd "$here" && go list -m -f '{{if .Time}}{{.Time.UTC.Format "20060102-15:04:05"}}{{end}}' github.com/prometheus/prometheus)"
[ -n "$build_date" ] || build_date="19700101-00:00:00"
vpkg=github.com/prometheus/common/version
ldflags="-s -w"
ldflags+=" -X $vpkg.Version=${prom_version}"
ldflags+=" -X $vpkg.Revision=${PROMETHEUS_VERSION}"
ldflags+=" -X $vpkg.Branch=HEAD"
ldflags+=" -X $vpkg.BuildUser=reconciler@build.sh"
ldflags+=" -X $vpkg.BuildDate=${build_date}"
# Upstream builds with tags netgo,builtinassets; builtinassets would embed web/ui/static,
# which the module zip does not contain (it is generated by npm), so it is left out.
# remove_all_sd: the tests scrape static targets only; without the service-discovery
# plugins the cold build takes 122 s instead of 295 s and the binary is 52 MB, not 100.
tags="netgo,remove_all_sd"

start=$SECONDS
log "building prometheus (tags: $tags) ..."
if ! (cd "$here" && nice -n 10 go build -p "$jobs" -trimpath -tags "$tags" -ldflags "$ldflags" \
        -o "$tmp_dir/prometheus" github.com/prometheus/prometheus/cmd/prometheus); then
    echo "ERROR: building prometheus failed (see the Go output above)." >&2
    exit 1
fi
have="$(binary_version "$tmp_dir/prometheus" || true)"
if [ "$have" != "$prom_version" ]; then
    echo "ERROR: the built prometheus reports version '${have:-?}', expected ${prom_version}:" >&2
    "$tmp_dir/prometheus" --version >&2 || true
    exit 1
fi
# Move into place atomically, so that an interrupted build never leaves a partial binary that
# later runs would take as built.
mv -f "$tmp_dir/prometheus" "$bin_dir/prometheus"
log "built prometheus in $(( SECONDS - start ))s"

log "done in $(( SECONDS - total_start ))s; binary in $bin_dir:"
printf '    %-24s %s\n' prometheus "$(du -h "$bin_dir/prometheus" | cut -f1)"
"$bin_dir/prometheus" --version | sed 's/^/    /'
