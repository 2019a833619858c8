#!/usr/bin/env bash
# Builds a single-layer OCI image layout from the host's static busybox.
#
#   build-busybox.sh OUTDIR [NAME [CMD_JSON]]
#       NAME default docker.io/library/busybox:latest
#       CMD_JSON default ["sh"]: the image config's Cmd, as a JSON array
#
# Every applet is a hard link to /bin/busybox (not a symlink), so the image
# exercises hard-link handling in the unpacker. The output is deterministic
# for a given busybox binary: sorted tar, fixed mtimes/owners, gzip -n.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 3 ]]; then
    echo "usage: $0 OUTDIR [NAME [CMD_JSON]]" >&2
    exit 2
fi
OUTDIR=$1
NAME=${2:-docker.io/library/busybox:latest}
CMD_JSON=${3:-'["sh"]'}

# Tag = text after the last ':' unless that ':' belongs to a registry port.
last=${NAME##*/}
if [[ $last == *:* ]]; then TAG=${last##*:}; else TAG=latest; fi

BUSYBOX=/bin/busybox
if [[ ! -x $BUSYBOX ]]; then
    echo "error: $BUSYBOX not found; run: apt-get install busybox-static" >&2
    exit 1
fi
if ldd "$BUSYBOX" >/dev/null 2>&1; then
    # ldd succeeds only for dynamic executables.
    echo "error: $BUSYBOX is dynamically linked; run: apt-get install busybox-static" >&2
    exit 1
fi

for tool in tar gzip sha256sum stat; do
    command -v "$tool" >/dev/null || { echo "error: $tool is required" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/build-busybox.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

ROOTFS=$WORK/rootfs
LAYOUT=$WORK/layout
mkdir -p "$ROOTFS" "$LAYOUT/blobs/sha256"

# --- rootfs ---------------------------------------------------------------
for d in bin sbin usr/bin usr/sbin etc proc sys dev root var home tmp; do
    mkdir -p "$ROOTFS/$d"
done
chmod 0755 "$ROOTFS" "$ROOTFS"/{bin,sbin,usr,usr/bin,usr/sbin,etc,proc,sys,dev,var,home}
chmod 0700 "$ROOTFS/root"
chmod 1777 "$ROOTFS/tmp"

install -m 0755 "$BUSYBOX" "$ROOTFS/bin/busybox"
while IFS= read -r applet; do
    applet=${applet#/}
    [[ -z $applet || $applet == bin/busybox ]] && continue
    mkdir -p "$ROOTFS/$(dirname "$applet")"
    ln -f "$ROOTFS/bin/busybox" "$ROOTFS/$applet"
done < <("$BUSYBOX" --list-full)
[[ -e $ROOTFS/bin/sh ]] || ln -f "$ROOTFS/bin/busybox" "$ROOTFS/bin/sh"

cat > "$ROOTFS/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
# root is a member of wheel, as in upstream busybox images: tests of the image's group
# memberships (SupplementalGroupsPolicy Merge and Strict) rely on it.
cat > "$ROOTFS/etc/group" <<'GROUP'
root:x:0:
wheel:x:10:root
nogroup:x:65534:
GROUP
chmod 0644 "$ROOTFS/etc/passwd" "$ROOTFS/etc/group"

# --- layer ----------------------------------------------------------------
LAYER_TAR=$WORK/layer.tar
tar --create --file "$LAYER_TAR" --directory "$ROOTFS" \
    --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
    --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    .
DIFF_ID=$(sha256sum "$LAYER_TAR" | cut -d' ' -f1)
gzip -n -9 -c "$LAYER_TAR" > "$WORK/layer.tar.gz"
LAYER_DIGEST=$(sha256sum "$WORK/layer.tar.gz" | cut -d' ' -f1)
LAYER_SIZE=$(stat -c %s "$WORK/layer.tar.gz")
mv "$WORK/layer.tar.gz" "$LAYOUT/blobs/sha256/$LAYER_DIGEST"

# Writes stdin as a blob; prints "<hex> <size>".
# Runs in a process substitution, i.e. concurrently with the script: its own temp file, and
# the answer printed only once the blob is in place.
put_blob() {
    local tmp hex size
    tmp=$(mktemp "$WORK/blob.XXXXXX")
    cat > "$tmp"
    hex=$(sha256sum "$tmp" | cut -d' ' -f1)
    size=$(stat -c %s "$tmp")
    mv "$tmp" "$LAYOUT/blobs/sha256/$hex"
    echo "$hex $size"
}

# --- config ---------------------------------------------------------------
read -r CONFIG_DIGEST CONFIG_SIZE < <(printf '%s' \
'{"architecture":"amd64","os":"linux",'\
'"config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":'"$CMD_JSON"'},'\
'"rootfs":{"type":"layers","diff_ids":["sha256:'"$DIFF_ID"'"]},'\
'"history":[{"created":"1970-01-01T00:00:00Z","created_by":"tests/images/build-busybox.sh"}]}' | put_blob)

# --- manifest -------------------------------------------------------------
read -r MANIFEST_DIGEST MANIFEST_SIZE < <(printf '%s' \
'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'\
'"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:'"$CONFIG_DIGEST"'","size":'"$CONFIG_SIZE"'},'\
'"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:'"$LAYER_DIGEST"'","size":'"$LAYER_SIZE"'}]}' | put_blob)

# --- layout ---------------------------------------------------------------
printf '%s' '{"imageLayoutVersion":"1.0.0"}' > "$LAYOUT/oci-layout"
printf '%s' \
'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{'\
'"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:'"$MANIFEST_DIGEST"'","size":'"$MANIFEST_SIZE"','\
'"annotations":{"io.containerd.image.name":"'"$NAME"'","org.opencontainers.image.ref.name":"'"$TAG"'"}}]}' \
    > "$LAYOUT/index.json"

rm -rf "$OUTDIR"
mkdir -p "$(dirname "$OUTDIR")"
mv "$LAYOUT" "$OUTDIR"
echo "$OUTDIR"
