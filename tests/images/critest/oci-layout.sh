# shellcheck shell=bash
# Writes one OCI image layout holding several images, deterministically: layers are sorted tars
# with mtime 0 and numeric root owners (unless told otherwise), gzip -n; configs and manifests
# are fixed text. Sourced by build.sh:
#
#   oci_init DIR                          start an empty layout in DIR
#   oci_layer ROOTFS [PATH=UID:GID ...]   add ROOTFS as a layer; prints "<hex> <size> <diff-hex>"
#                                         (each PATH, relative to ROOTFS, owned by UID:GID)
#   oci_image REF CONFIG CREATED_BY LAYER...
#                                         add an image: CONFIG is the JSON of the config's
#                                         "config" object, each LAYER a line oci_layer printed;
#                                         REF names it in index.json (skopeo's oci:DIR:REF)
#   oci_finish                            write index.json
#
# oci_image and oci_finish keep state in this shell (OCI_MANIFESTS): call them directly, not in
# $(...).
#
# The layer tar flags are those of tests/images/build-busybox.sh.

OCI_TAR_FLAGS=(
    --sort=name --mtime=@0 --numeric-owner --format=posix
    '--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime'
)
# Not the build time: images built from the same inputs must be the same bytes.
OCI_EPOCH=1970-01-01T00:00:00Z

oci_init() {
    OCI_DIR=$1
    rm -rf "$OCI_DIR"
    mkdir -p "$OCI_DIR/blobs/sha256"
    printf '%s' '{"imageLayoutVersion":"1.0.0"}' > "$OCI_DIR/oci-layout"
    OCI_MANIFESTS=()
}

# Moves FILE into the blob store; prints "<hex> <size>".
oci_put_blob() {
    local hex size
    hex=$(sha256sum "$1" | cut -d' ' -f1)
    size=$(stat -c %s "$1")
    mv -f "$1" "$OCI_DIR/blobs/sha256/$hex"
    echo "$hex $size"
}

oci_layer() {
    local rootfs=$1 tmp diff o path ids
    shift
    tmp=$(mktemp "$OCI_DIR/layer.XXXXXX")
    local exclude=()
    for o in "$@"; do
        exclude+=("--exclude=./${o%%=*}")
    done
    tar --create --file "$tmp" --directory "$rootfs" "${OCI_TAR_FLAGS[@]}" \
        --owner=0 --group=0 "${exclude[@]}" .
    # Entries with other owners go last, one tar run each: tar sets owners per run only.
    for o in "$@"; do
        path=${o%%=*}
        ids=${o#*=}
        tar --append --file "$tmp" --directory "$rootfs" "${OCI_TAR_FLAGS[@]}" \
            --owner="${ids%%:*}" --group="${ids#*:}" --no-recursion "./$path"
    done
    diff=$(sha256sum "$tmp" | cut -d' ' -f1)
    gzip -n -9 "$tmp"
    echo "$(oci_put_blob "$tmp.gz") $diff"
}

oci_image() {
    local ref=$1 config=$2 created_by=$3 hex size diff
    shift 3
    local diff_ids="" history="" layers="" sep=""
    for layer in "$@"; do
        read -r hex size diff <<< "$layer"
        diff_ids+="$sep\"sha256:$diff\""
        history+="$sep{\"created\":\"$OCI_EPOCH\",\"created_by\":\"$created_by\"}"
        layers+="$sep{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\","
        layers+="\"digest\":\"sha256:$hex\",\"size\":$size}"
        sep=,
    done
    local tmp
    tmp=$(mktemp "$OCI_DIR/config.XXXXXX")
    printf '%s' "{\"created\":\"$OCI_EPOCH\",\"architecture\":\"amd64\",\"os\":\"linux\"," \
        "\"config\":$config,\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[$diff_ids]}," \
        "\"history\":[$history]}" > "$tmp"
    read -r hex size < <(oci_put_blob "$tmp")
    tmp=$(mktemp "$OCI_DIR/manifest.XXXXXX")
    printf '%s' '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",' \
        '"config":{"mediaType":"application/vnd.oci.image.config.v1+json",' \
        "\"digest\":\"sha256:$hex\",\"size\":$size},\"layers\":[$layers]}" > "$tmp"
    read -r hex size < <(oci_put_blob "$tmp")
    OCI_MANIFESTS+=("{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$hex\",\"size\":$size,\"annotations\":{\"org.opencontainers.image.ref.name\":\"$ref\"}}")
}

oci_finish() {
    local IFS=,
    printf '%s' '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",' \
        "\"manifests\":[${OCI_MANIFESTS[*]}]}" > "$OCI_DIR/index.json"
}
