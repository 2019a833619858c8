#!/bin/sh
# Installs crisp onto the node this runs on. It is the init container of the DaemonSet in
# manifests/daemonset.yaml (the image from packaging/Containerfile has it as
# /opt/crisp/install.sh), which runs privileged with hostPID and these host directories
# mounted under $CRISP_HOST_ROOT (default /host):
#   /usr/local/bin        <- crispd, crisp-shim
#   /opt/cni/bin          <- crisp-bridge
#   /etc/systemd/system   <- crispd.service
#   /etc/crisp            <- config.toml
#   /etc/cni/net.d        <- 99-crisp.conflist (only with CRISP_INSTALL_CNI_CONF=true)
# Files are replaced atomically (write beside, then rename), so a running crispd or shim keeps
# its old binary until it restarts. systemctl runs in the host's mount namespace through
# nsenter into PID 1 (hence hostPID): daemon-reload, enable crispd, and restart it when
# something it uses changed or it is not running. With KillMode=process a restart leaves the
# containers running; the new crispd picks them up.
#
# Environment:
#   CRISP_HOST_ROOT         where the host directories are mounted (default /host)
#   CRISP_SRC               the image's payload: bin/, crispd.service (default /opt/crisp)
#   CRISP_CONFIG_DIR        config.toml and 99-crisp.conflist, from the ConfigMap; falls back
#                           to CRISP_SRC (default /etc/crisp-config)
#   CRISP_INSTALL_CNI_CONF  true|false: also install the CNI conflist (default true)
#   CRISP_HOST_EXEC         the command prefix that runs a command on the host
#                           (default "nsenter --target 1 --mount --"); scripts/validate-manifests.sh
#                           points it at a stub to dry-run this script
#   CRISP_SETTLE_SECONDS    how long crispd must stay up after making its socket (default 2)
set -eu

HOST=${CRISP_HOST_ROOT:-/host}
SRC=${CRISP_SRC:-/opt/crisp}
CONF=${CRISP_CONFIG_DIR:-/etc/crisp-config}
INSTALL_CNI_CONF=${CRISP_INSTALL_CNI_CONF:-true}
HOST_EXEC=${CRISP_HOST_EXEC:-nsenter --target 1 --mount --}
SETTLE=${CRISP_SETTLE_SECONDS:-2}

log() { echo "crisp-install: $*"; }
die() {
    echo "crisp-install: error: $*" >&2
    exit 1
}
# Runs a command in the host's mount namespace (word splitting of HOST_EXEC is intended).
host() {
    # shellcheck disable=SC2086
    $HOST_EXEC "$@"
}

changed=false
# install_file SRC DST MODE: copies SRC to DST (a path under $HOST) unless identical.
install_file() {
    [ -f "$1" ] || die "missing $1 in the image"
    if [ -f "$2" ] && cmp -s "$1" "$2"; then
        log "unchanged ${2#"$HOST"}"
        return 0
    fi
    mkdir -p "$(dirname "$2")"
    tmp="$2.crisp-install.$$"
    cp "$1" "$tmp"
    chmod "$3" "$tmp"
    mv -f "$tmp" "$2"
    log "installed ${2#"$HOST"}"
    changed=true
}

# The config comes from the ConfigMap when it is mounted, else from the image.
pick() {
    if [ -f "$CONF/$1" ]; then echo "$CONF/$1"; else echo "$SRC/$1"; fi
}

for d in /usr/local/bin /opt/cni/bin /etc/systemd/system /etc/crisp /etc/cni/net.d; do
    [ -d "$HOST$d" ] || die "host directory $d is not mounted at $HOST$d"
done
host test -d /run/systemd/system || die "the host does not run systemd (no /run/systemd/system)"

install_file "$SRC/bin/crispd" "$HOST/usr/local/bin/crispd" 0755
install_file "$SRC/bin/crisp-shim" "$HOST/usr/local/bin/crisp-shim" 0755
install_file "$SRC/bin/crisp-bridge" "$HOST/opt/cni/bin/crisp-bridge" 0755
install_file "$SRC/crispd.service" "$HOST/etc/systemd/system/crispd.service" 0644
install_file "$(pick config.toml)" "$HOST/etc/crisp/config.toml" 0644
if [ "$INSTALL_CNI_CONF" = true ]; then
    install_file "$(pick 99-crisp.conflist)" "$HOST/etc/cni/net.d/99-crisp.conflist" 0644
else
    log "not installing a CNI config (CRISP_INSTALL_CNI_CONF=$INSTALL_CNI_CONF)"
fi

# What the binaries need from the host: shared libraries (crisp-shim links libseccomp) and
# iptables-restore (crisp-bridge's masquerade and hostPort rules).
for b in /usr/local/bin/crispd /usr/local/bin/crisp-shim /opt/cni/bin/crisp-bridge; do
    if host ldd "$b" 2>&1 | grep -q "not found"; then
        host ldd "$b" >&2 || true
        die "$b is missing shared libraries on the host (libseccomp2?)"
    fi
done
host sh -c 'command -v iptables-restore' >/dev/null ||
    die "iptables-restore is not on the host's PATH (install iptables)"
host /usr/local/bin/crispd config check /etc/crisp/config.toml ||
    die "/etc/crisp/config.toml is not a valid crispd config"

host systemctl daemon-reload
host systemctl enable crispd.service
if [ "$changed" = true ] || ! host systemctl is-active --quiet crispd.service; then
    log "restarting crispd"
    host systemctl restart crispd.service
fi
# Wait until crispd has made its CRI socket and stays up, so that a crispd that fails to start
# fails this pod, where it is seen (kubectl logs/describe), instead of the node going quiet.
sock=$(sed -n 's/^socket *= *"\(.*\)".*/\1/p' "$HOST/etc/crisp/config.toml" | head -n 1)
sock=${sock:-/run/crisp/crisp.sock}
i=0
until host test -S "$sock" && host systemctl is-active --quiet crispd.service; do
    i=$((i + 1))
    if [ "$i" -gt 60 ]; then
        host systemctl status --no-pager crispd.service >&2 || true
        die "crispd did not come up with its socket $sock within 30s"
    fi
    sleep 0.5
done
sleep "$SETTLE"
if ! host systemctl is-active --quiet crispd.service; then
    host systemctl status --no-pager crispd.service >&2 || true
    die "crispd stopped right after starting"
fi
log "crispd is running; CRI socket $sock"
