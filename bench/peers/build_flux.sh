#!/usr/bin/env bash
# Build the Flux peer of bench/peers from Go modules (called by `make bench-peers`):
#
#   source-controller, kustomize-controller  (github.com/fluxcd/*-controller, through the
#       wrapper module bench/peers/flux; notification-controller is not needed: the bench
#       does what its Receiver does, an annotation)
#   crds/*.yaml                              (the controllers' config/crd/bases, plain YAML
#       in the module zips, so no kustomize is needed)
#
# into ${RECONCILER_CACHE:-$HOME/.cache/reconciler}/bin/flux-<version>/, skipping what already
# exists. Only the Go module proxy is used.
#
# Environment:
#   RECONCILER_CACHE        cache root (default: $HOME/.cache/reconciler)
#   RECONCILER_BUILD_JOBS   parallel compile jobs, `go build -p` (default: number of CPUs, max 4)
#   --print-bin-dir         print the binary directory and exit (used by bench/peers/flux.py)
set -euo pipefail

# Both controllers are released together as v1.9.6 (Flux v2.9): v1.10 needs Go 1.27 and the
# Kubernetes 0.37 modules, 1.9.6 matches the 1.36 control plane of the e2e suite.
FLUX_CONTROLLERS_VERSION=v1.9.6

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mod_dir="$here/flux"
cache_root="${RECONCILER_CACHE:-$HOME/.cache/reconciler}"
versions_key="flux-${FLUX_CONTROLLERS_VERSION}"
bin_dir="$cache_root/bin/$versions_key"

if [ "${1:-}" = "--print-bin-dir" ]; then
    echo "$bin_dir"
    exit 0
fi

controllers=(source-controller kustomize-controller)

log() { printf '[build_flux.sh %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# One clear message, then exit: the build cannot run here.
give_up() {
    local what="$1" details="${2:-}"
    {
        echo
        echo "ERROR: cannot build the Flux controllers for bench/peers: $what"
        if [ -n "$details" ]; then
            echo
            echo "  Details (first lines of the Go tool's output):"
            printf '%s\n' "$details" | head -n 8 | sed 's/^/    | /'
        fi
        echo
        echo "  The Flux side of bench/peers needs Go >= 1.26 and access to the Go module proxy"
        echo "  ($(go env GOPROXY 2>/dev/null || echo 'GOPROXY')), so that this script can build them into $bin_dir."
    } >&2
    exit 1
}

missing=()
for b in "${controllers[@]}"; do
    [ -x "$bin_dir/$b" ] || missing+=("$b")
done
crds_present=1
[ -f "$bin_dir/crds/.complete" ] || crds_present=0
if [ ${#missing[@]} -eq 0 ] && [ $crds_present -eq 1 ]; then
    log "all binaries and CRDs present in $bin_dir (nothing to build)"
    exit 0
fi
log "binary directory: $bin_dir"
[ ${#missing[@]} -eq 0 ] || log "to build: ${missing[*]}"
[ $crds_present -eq 1 ] || log "to copy: the CRDs"

# --- prerequisites -----------------------------------------------------------------------
command -v go >/dev/null 2>&1 || give_up "the Go toolchain ('go') is not on PATH."
go_version="$(go env GOVERSION 2>/dev/null || true)"   # e.g. go1.26.8
go_mm="${go_version#go}"
go_major="${go_mm%%.*}"
go_minor="${go_mm#*.}"; go_minor="${go_minor%%[!0-9]*}"
if ! [[ "$go_major" =~ ^[0-9]+$ && "$go_minor" =~ ^[0-9]+$ ]] \
    || [ "$go_major" -lt 1 ] || { [ "$go_major" -eq 1 ] && [ "$go_minor" -lt 26 ]; }; then
    give_up "Go >= 1.26 is required, found '${go_version:-unknown}'."
fi

# Never let the go command fetch another toolchain; build static binaries (as the controllers'
# own Makefiles do: netgo, osusergo); use the committed go.mod/go.sum as they are.
export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOFLAGS="-mod=readonly -buildvcs=false"
cpus="$(nproc 2>/dev/null || echo 2)"
jobs="${RECONCILER_BUILD_JOBS:-$(( cpus > 4 ? 4 : cpus ))}"
log "using $go_version, go build -p $jobs, GOPROXY=$(go env GOPROXY), GOCACHE=$(go env GOCACHE)"

# The committed wrapper module must require the version pinned above, for the controllers and
# their api modules alike (else we would build one release and label it another).
stale=""
for m in source-controller source-controller/api kustomize-controller kustomize-controller/api; do
    grep -qE "^(require)?[[:space:]]*github\.com/fluxcd/${m//\//\\/} ${FLUX_CONTROLLERS_VERSION//./\\.}( //.*)?\$" "$mod_dir/go.mod" \
        || stale+=" flux/go.mod does not require github.com/fluxcd/$m ${FLUX_CONTROLLERS_VERSION};"
done
if [ -n "$stale" ]; then
    echo "ERROR: the wrapper module does not match FLUX_CONTROLLERS_VERSION in $0:$stale" >&2
    echo "  Edit bench/peers/flux/go.mod, then: cd bench/peers/flux && GOFLAGS=-mod=mod go mod tidy -e" >&2
    exit 1
fi

mkdir -p "$bin_dir"
tmp_dir="$(mktemp -d "$bin_dir/.build.XXXXXX")"
trap 'rm -rf "$tmp_dir"' EXIT

total_start=$SECONDS

# Download the modules first so that a missing proxy gives one clear message.
start=$SECONDS
log "downloading modules for Flux ${FLUX_CONTROLLERS_VERSION} ..."
if ! out="$(cd "$mod_dir" && go mod download \
        "github.com/fluxcd/source-controller" "github.com/fluxcd/kustomize-controller" 2>&1 \
        && go list -deps -test=false "${controllers[@]/#/github.com/fluxcd/}" 2>&1 >/dev/null)"; then
    give_up "downloading the Go modules for Flux ${FLUX_CONTROLLERS_VERSION} failed (is the module proxy reachable?)." "$out"
fi
log "downloaded modules for Flux ${FLUX_CONTROLLERS_VERSION} in $(( SECONDS - start ))s"

# Build one binary into tmp_dir and move it into place atomically, so that an interrupted
# build never leaves a partial binary that later runs would take as built.
need() { [[ " ${missing[*]} " == *" $1 "* ]]; }
for b in "${controllers[@]}"; do
    need "$b" || continue
    start=$SECONDS
    log "building $b ..."
    if ! (cd "$mod_dir" && nice -n 10 go build -p "$jobs" -trimpath -tags netgo,osusergo \
            -ldflags "-s -w" -o "$tmp_dir/$b" "github.com/fluxcd/$b"); then
        echo "ERROR: building $b failed (see the Go output above)." >&2
        exit 1
    fi
    mv -f "$tmp_dir/$b" "$bin_dir/$b"
    log "built $b in $(( SECONDS - start ))s"
done

# --- CRDs ---------------------------------------------------------------------------------------
if [ $crds_present -eq 0 ]; then
    mkdir -p "$tmp_dir/crds"
    for b in "${controllers[@]}"; do
        src="$(cd "$mod_dir" && go list -m -f '{{.Dir}}' "github.com/fluxcd/$b")"
        [ -d "$src/config/crd/bases" ] || give_up "github.com/fluxcd/$b has no config/crd/bases in its module zip."
        cp "$src"/config/crd/bases/*.yaml "$tmp_dir/crds/"
    done
    chmod 644 "$tmp_dir"/crds/*.yaml
    touch "$tmp_dir/crds/.complete"
    rm -rf "$bin_dir/crds"
    mv "$tmp_dir/crds" "$bin_dir/crds"
    log "copied $(find "$bin_dir/crds" -name '*.yaml' | wc -l) CRDs into $bin_dir/crds"
fi

log "done in $(( SECONDS - total_start ))s; in $bin_dir:"
for b in "${controllers[@]}" crds; do
    printf '    %-24s %s\n' "$b" "$(du -sh "$bin_dir/$b" | cut -f1)"
done
