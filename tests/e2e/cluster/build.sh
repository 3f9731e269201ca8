#!/usr/bin/env bash
# Build the binaries of the e2e control plane from Go modules (called by `make cluster`).
#
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl  (k8s.io/kubernetes,
#       through the wrapper module tests/e2e/cluster/kube)
#   etcd                                                             (go.etcd.io/etcd/server/v3,
#       through the wrapper module tests/e2e/cluster/etcd)
#   kwok, kwokctl                                                    (go install sigs.k8s.io/kwok)
#
# into ${RECONCILER_CACHE:-$HOME/.cache/reconciler}/bin/<versions-key>/, skipping binaries that
# already exist. Versions are pinned in versions.env. Only the Go module proxy is used.
#
# Environment:
#   RECONCILER_CACHE        cache root (default: $HOME/.cache/reconciler)
#   RECONCILER_BUILD_JOBS   parallel compile jobs, `go build -p` (default: number of CPUs, max 4)
#   --print-bin-dir         print the binary directory and exit (used by the test fixture)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
. "$here/versions.env"

cache_root="${RECONCILER_CACHE:-$HOME/.cache/reconciler}"
versions_key="k8s-${KUBERNETES_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}"
bin_dir="$cache_root/bin/$versions_key"

if [ "${1:-}" = "--print-bin-dir" ]; then
    echo "$bin_dir"
    exit 0
fi

all_binaries=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok kwokctl)

log() { printf '[build.sh %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# One clear message, then exit: the build cannot run here.
give_up() {
    local what="$1" details="${2:-}"
    {
        echo
        echo "ERROR: cannot build the e2e control plane: $what"
        if [ -n "$details" ]; then
            echo
            echo "  Details (first lines of the Go tool's output):"
            printf '%s\n' "$details" | head -n 8 | sed 's/^/    | /'
        fi
        echo
        echo "  The e2e tests need either"
        echo "    - Go >= 1.26 and access to the Go module proxy ($(go env GOPROXY 2>/dev/null || echo 'GOPROXY')),"
        echo "      so that this script can build the binaries into $bin_dir, or"
        echo "    - an existing Kubernetes cluster (kind, k3d, a real one). Point the suite at it with:"
        echo "        RECONCILER_E2E_USE_KUBECONFIG=1 KUBECONFIG=/path/to/kubeconfig pytest tests/e2e"
        echo "  See docs/e2e.md."
    } >&2
    exit 1
}

missing=()
for b in "${all_binaries[@]}"; do
    [ -x "$bin_dir/$b" ] || missing+=("$b")
done
if [ ${#missing[@]} -eq 0 ]; then
    log "all binaries present in $bin_dir (nothing to build)"
    exit 0
fi
log "binary directory: $bin_dir"
log "to build: ${missing[*]}"

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

# Never let the go command fetch another toolchain; build static binaries; use the committed
# go.mod/go.sum as they are.
export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOFLAGS="-mod=readonly -buildvcs=false"
cpus="$(nproc 2>/dev/null || echo 2)"
jobs="${RECONCILER_BUILD_JOBS:-$(( cpus > 4 ? 4 : cpus ))}"
log "using $go_version, go build -p $jobs, GOPROXY=$(go env GOPROXY), GOCACHE=$(go env GOCACHE)"

mkdir -p "$bin_dir"
tmp_dir="$(mktemp -d "$bin_dir/.build.XXXXXX")"
trap 'rm -rf "$tmp_dir"' EXIT

total_start=$SECONDS

# Download the modules first so that a missing proxy gives one clear message.
download() {   # <description> <dir> <go args...>
    local what="$1" dir="$2"; shift 2
    local out start=$SECONDS
    log "downloading modules for $what ..."
    if ! out="$(cd "$dir" && go "$@" 2>&1)"; then
        give_up "downloading the Go modules for $what failed (is the module proxy reachable?)." "$out"
    fi
    log "downloaded modules for $what in $(( SECONDS - start ))s"
}

# Build one binary into tmp_dir and move it into place atomically, so that an interrupted
# build never leaves a partial binary that later runs would take as built.
build() {   # <name> <dir> <go args...>
    local name="$1" dir="$2"; shift 2
    local start=$SECONDS
    log "building $name ..."
    if ! (cd "$dir" && nice -n 10 "$@"); then
        echo "ERROR: building $name failed (see the Go output above)." >&2
        exit 1
    fi
    mv -f "$tmp_dir/$name" "$bin_dir/$name"
    log "built $name in $(( SECONDS - start ))s"
}

need() { [[ " ${missing[*]} " == *" $1 "* ]]; }

# --- etcd ----------------------------------------------------------------------------------
if need etcd; then
    download "etcd ${ETCD_VERSION}" "$here/etcd" mod download
    build etcd "$here/etcd" go build -p "$jobs" -trimpath -ldflags "-s -w" \
        -o "$tmp_dir/etcd" go.etcd.io/etcd/server/v3
fi

# --- kube-* and kubectl ----------------------------------------------------------------------
kube_needed=()
for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    need "$b" && kube_needed+=("$b")
done
if [ ${#kube_needed[@]} -gt 0 ]; then
    download "Kubernetes ${KUBERNETES_VERSION}" "$here/kube" mod download
    # Stamp the release so that /version and `kubectl version` report it (otherwise v0.0.0,
    # which also trips the apiserver's emulation-version checks). The build date is the
    # module's publication time, so the binaries are reproducible.
    k_ver="${KUBERNETES_VERSION}"
    k_mm="${k_ver#v}"
    k_major="${k_mm%%.*}"
    k_minor="${k_mm#*.}"; k_minor="${k_minor%%.*}"
    build_date="$(cd "$here/kube" && go list -m -f '{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes)"
    [ -n "$build_date" ] || build_date="1970-01-01T00:00:00Z"
    ldflags="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $pkg.gitVersion=$k_ver -X $pkg.gitMajor=$k_major -X $pkg.gitMinor=$k_minor"
        ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
    done
    for b in "${kube_needed[@]}"; do
        build "$b" "$here/kube" go build -p "$jobs" -trimpath -ldflags "$ldflags" \
            -o "$tmp_dir/$b" "k8s.io/kubernetes/cmd/$b"
    done
fi

# --- kwok, kwokctl -----------------------------------------------------------------------------
if need kwok || need kwokctl; then
    # Run outside any module so that `go install pkg@version` uses kwok's own go.mod.
    download "kwok ${KWOK_VERSION}" "$tmp_dir" mod download "sigs.k8s.io/kwok@${KWOK_VERSION}"
    start=$SECONDS
    log "building kwok, kwokctl ..."
    if ! (cd "$tmp_dir" && GOFLAGS=-buildvcs=false GOBIN="$tmp_dir" nice -n 10 \
            go install -p "$jobs" -trimpath -ldflags "-s -w" \
            "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}" "sigs.k8s.io/kwok/cmd/kwokctl@${KWOK_VERSION}"); then
        echo "ERROR: building kwok/kwokctl failed (see the Go output above)." >&2
        exit 1
    fi
    mv -f "$tmp_dir/kwok" "$tmp_dir/kwokctl" "$bin_dir/"
    log "built kwok, kwokctl in $(( SECONDS - start ))s"
fi

log "done in $(( SECONDS - total_start ))s; binaries in $bin_dir:"
for b in "${all_binaries[@]}"; do
    printf '    %-24s %s\n' "$b" "$(du -h "$bin_dir/$b" | cut -f1)"
done
