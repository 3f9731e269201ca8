# Sourced by the image scripts: podman with this project's own storage and configuration under
# the cache (nothing in /var/lib/containers or /etc/containers), Debian's runc, host network
# for builds (there is no container network on these machines), no Docker.
cache_root="${RECONCILER_CACHE:-$HOME/.cache/reconciler}"
podman_dir="$cache_root/image/podman"
mkdir -p "$podman_dir"
cat > "$podman_dir/containers.conf" <<CONF
[containers]
# this host's limits cannot be raised inside a container
default_ulimits = []
netns = "host"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$podman_dir/events.log"
CONF
export CONTAINERS_CONF="$podman_dir/containers.conf"
export CONTAINERS_REGISTRIES_CONF=/dev/null   # a short name never means a registry here
podman_cmd=(podman --root "$podman_dir/storage" --runroot "$podman_dir/run" --storage-driver overlay
            --tmpdir "$podman_dir/tmp")
mkdir -p "$podman_dir/tmp"

# A root filesystem tar packed as the image `name` (one Dockerfile-style --change, e.g. its
# ENTRYPOINT) and saved as the OCI archive `archive`, moved into place whole.
pack_image() {   # <rootfs.tar> <name> <change> <archive>
    "${podman_cmd[@]}" import --quiet --change "$3" "$1" "$2" >/dev/null
    "${podman_cmd[@]}" save --quiet --format oci-archive -o "$4.partial" "$2"
    mv -f "$4.partial" "$4"
}
