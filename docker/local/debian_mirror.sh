# Sourced by images.sh: `debian_mirror [APT_DIR]` prints the first Debian mirror apt uses here (one-line
# `deb` entries or deb822 `URIs:`), or nothing, and succeeds either way: a machine may have only
# sources.list.d/*.sources and no sources.list at all (as Debian bookworm's own images do).
debian_mirror() {
    local apt_dir="${1:-/etc/apt}"
    { grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?' "$apt_dir/sources.list" "$apt_dir/sources.list.d/" \
        2>/dev/null || true; } | awk 'NR == 1 {print $2}'
}
