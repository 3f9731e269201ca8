#!/usr/bin/env bash
# Build the e2e cluster's real node (called by `make cluster`):
#
#   kubelet                      (k8s.io/kubernetes, the control plane's wrapper module
#                                 tests/e2e/cluster/kube: same release, same build cache)
#   containerd, containerd-shim-runc-v2, ctr   (github.com/containerd/containerd/v2)
#   runc                         (github.com/opencontainers/runc, CGO and seccomp)
#   cni/loopback                 (github.com/containernetworking/plugins), and
#   cni/isolated                 (./cni/isolated): each pod gets a network namespace with
#                                 its loopback interface and nothing else: no bridge, no
#                                 route, no traffic out
#   pause                        (tests/e2e/node/pause: the sandbox process, packed as
#                                 localhost/reconciler-pause:<key> by the node fixture)
#
# into ${RECONCILER_CACHE:-$HOME/.cache/reconciler}/bin/<versions-key>/, skipping what exists.
# Then the images the node runs: the Debian base (image/base.sh) and the daemon's image
# (image/build.sh, `make image`). Versions are pinned in versions.env.
#   --print-bin-dir   print the binary directory and exit (used by the test fixture)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
# shellcheck source=../cluster/versions.env
. "$here/../cluster/versions.env"
# shellcheck source=versions.env
. "$here/versions.env"
cache_root="${RECONCILER_CACHE:-$HOME/.cache/reconciler}"
versions_key="node-k8s-${KUBERNETES_VERSION}_containerd-${CONTAINERD_VERSION}_runc-${RUNC_VERSION}_cni-${CNI_PLUGINS_VERSION}"
bin_dir="$cache_root/bin/$versions_key"
if [ "${1:-}" = "--print-bin-dir" ]; then
    echo "$bin_dir"
    exit 0
fi
log() { printf '[node/build.sh %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
give_up() {
    {
        echo
        echo "ERROR: cannot build the e2e cluster's real node: $1"
        [ -n "${2:-}" ] && printf '%s\n' "$2" | tail -n 10 | sed 's/^/    | /'
        echo "  It needs Linux, root, Go >= 1.26 with the module proxy, gcc and Debian's"
        echo "  libseccomp-dev (installed by this script when missing). See docs/e2e.md."
    } >&2
    exit 1
}
[ "$(uname -s)" = Linux ] || give_up "this is not Linux"
command -v go >/dev/null 2>&1 || give_up "the Go toolchain ('go') is not on PATH"
bash "$root/image/debian-packages.sh" libseccomp-dev gcc pkg-config iptables || give_up "Debian packages missing"

binaries=(kubelet containerd containerd-shim-runc-v2 ctr runc cni/loopback pause)
missing=()
for b in "${binaries[@]}"; do [ -x "$bin_dir/$b" ] || missing+=("$b"); done
total_start=$SECONDS
if [ ${#missing[@]} -gt 0 ]; then
    log "binary directory: $bin_dir; to build: ${missing[*]}"
    export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
    cpus="$(nproc 2>/dev/null || echo 2)"
    jobs="${RECONCILER_BUILD_JOBS:-$(( cpus > 4 ? 4 : cpus ))}"
    mkdir -p "$bin_dir/cni"
    tmp="$(mktemp -d "$bin_dir/.build.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    need() { [[ " ${missing[*]} " == *" $1 "* ]]; }
    step() {   # <what> <command...>: run it, log its time, one clear message if it fails
        local what="$1" start=$SECONDS out; shift
        log "building $what ..."
        out="$("$@" 2>&1)" || give_up "building $what failed" "$out"
        log "built $what in $(( SECONDS - start ))s"
    }
    if need kubelet; then
        k_mm="${KUBERNETES_VERSION#v}"; k_minor="${k_mm#*.}"; k_minor="${k_minor%%.*}"
        build_date="$(cd "$here/../cluster/kube" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)"
        ldflags="-s -w"
        for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
            ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k_minor"
            ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
        done
        step "kubelet $KUBERNETES_VERSION" bash -c "cd '$here/../cluster/kube' && CGO_ENABLED=0 GOFLAGS='-mod=readonly -buildvcs=false' \
            nice -n 10 go build -p $jobs -trimpath -ldflags '$ldflags' -o '$tmp/kubelet' k8s.io/kubernetes/cmd/kubelet"
    fi
    if need containerd || need containerd-shim-runc-v2 || need ctr; then
        m="github.com/containerd/containerd/v2"
        step "containerd $CONTAINERD_VERSION" env CGO_ENABLED=0 GOBIN="$tmp" nice -n 10 go install -p "$jobs" -trimpath \
            -tags no_btrfs -ldflags "-s -w -X $m/version.Version=$CONTAINERD_VERSION" \
            "$m/cmd/containerd@$CONTAINERD_VERSION" "$m/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
            "$m/cmd/ctr@$CONTAINERD_VERSION"
    fi
    if need runc; then
        step "runc $RUNC_VERSION" env CGO_ENABLED=1 GOBIN="$tmp" nice -n 10 go install -p "$jobs" -trimpath \
            -tags seccomp -ldflags "-s -w -X main.version=${RUNC_VERSION#v}" \
            "github.com/opencontainers/runc@$RUNC_VERSION"
    fi
    if need cni/loopback; then
        mkdir -p "$tmp/cni"
        step "CNI loopback $CNI_PLUGINS_VERSION" env CGO_ENABLED=0 GOBIN="$tmp/cni" nice -n 10 go install -p "$jobs" \
            -trimpath -ldflags "-s -w" "github.com/containernetworking/plugins/plugins/main/loopback@$CNI_PLUGINS_VERSION"
    fi
    if need pause; then
        step "pause" bash -c "cd '$here/pause' && CGO_ENABLED=0 GOFLAGS='-mod=readonly -buildvcs=false' go build -trimpath -ldflags '-s -w' -o '$tmp/pause' ."
    fi
    for b in "${missing[@]}"; do mv -f "$tmp/$b" "$bin_dir/$b"; done
    log "built the node's binaries in $(( SECONDS - total_start ))s"
else
    log "all node binaries present in $bin_dir (nothing to build)"
fi
install -m 0755 "$here/cni/isolated" "$bin_dir/cni/isolated"   # a script: always the current one
# The node's own images, packed by podman as OCI archives.
if [ ! -s "$bin_dir/pause.oci.tar" ] || [ ! -s "$bin_dir/jobs.oci.tar" ]; then
    bash "$root/image/debian-packages.sh" podman runc
    # shellcheck source=../../../image/podman.sh
    . "$root/image/podman.sh"
fi
# The sandbox image: the pause binary alone.
if [ ! -s "$bin_dir/pause.oci.tar" ]; then
    pack="$(mktemp -d "$bin_dir/.pause.XXXXXX")"
    cp "$bin_dir/pause" "$pack/pause"
    tar -C "$pack" --owner=0 --group=0 --mtime=@0 -cf "$pack/rootfs.tar" pause
    pack_image "$pack/rootfs.tar" "$PAUSE_IMAGE" 'ENTRYPOINT ["/pause"]' "$bin_dir/pause.oci.tar"
    rm -rf "$pack"
    log "packed $PAUSE_IMAGE into $bin_dir/pause.oci.tar"
fi
# The test Jobs' image: Debian's busybox (sh, sleep, echo, wget, ...) and the C library it
# links, nothing else: small, so that a container starts at once, and with a working resolver
# (the static busybox crashes resolving a name: static glibc cannot load its NSS modules).
if [ ! -s "$bin_dir/jobs.oci.tar" ]; then
    pack="$(mktemp -d "$bin_dir/.jobs.XXXXXX")"
    (cd "$pack" && apt-get download -q busybox libc6 >/dev/null 2>&1) \
        || give_up "apt-get download busybox libc6 failed (is Debian's mirror reachable?)"
    mkdir -p "$pack/rootfs"
    for deb in "$pack"/busybox_*.deb "$pack"/libc6_*.deb; do dpkg-deb -x "$deb" "$pack/rootfs"; done
    rm -rf "$pack/rootfs/usr/share" "$pack/rootfs/usr/lib/x86_64-linux-gnu/gconv" "$pack/rootfs/etc/ld.so.conf.d"
    mkdir -p "$pack/rootfs/etc" "$pack/rootfs/tmp"
    [ -x "$pack/rootfs/bin/busybox" ] || give_up "Debian's busybox package has no /bin/busybox"
    for applet in $(chroot "$pack/rootfs" /bin/busybox --list); do
        [ -e "$pack/rootfs/bin/$applet" ] || ln -s busybox "$pack/rootfs/bin/$applet"
    done
    printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$pack/rootfs/etc/passwd"
    printf 'root:x:0:\nnobody:x:65534:\n' > "$pack/rootfs/etc/group"
    printf 'hosts: files dns\n' > "$pack/rootfs/etc/nsswitch.conf"
    chmod 1777 "$pack/rootfs/tmp"
    tar -C "$pack/rootfs" --owner=0 --group=0 --mtime=@0 --sort=name -cf "$pack/rootfs.tar" .
    pack_image "$pack/rootfs.tar" "$JOBS_IMAGE" 'CMD ["/bin/sh"]' "$bin_dir/jobs.oci.tar"
    rm -rf "$pack"
    log "packed $JOBS_IMAGE into $bin_dir/jobs.oci.tar"
fi
bash "$root/image/build.sh"
log "done in $(( SECONDS - total_start ))s"
