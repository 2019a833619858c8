#!/usr/bin/env bash
# Builds every image the CRI validation suite (critest v1.36.0) pulls, from Debian packages, into
# one OCI image layout, for scripts/critest.sh to push into a local registry.
#
#   build.sh OUTDIR
#
# OUTDIR/layout     the OCI layout; each image named by a ref (skopeo's oci:OUTDIR/layout:REF)
# OUTDIR/images.txt "REF NAME" lines: push REF as NAME (the name critest pulls)
# OUTDIR/stamp      what the images were built from (this directory's files, the Debian package
#                   versions); a second run with the same stamp does nothing
# OUTDIR.cache/     apt's package cache (fast apt-cache) and the downloaded .debs
#
# What the specs check in each image: ../shared/critools/README.md (next to the repo) and
# cri-tools' pkg/validate at v1.36.0; the comments below say which check shaped what.
#
# Debian packages (bookworm), installed on the host:
#   gcc libc6-dev procps util-linux libc6 libcrypt1 libpcre2-8-0 libssl3 zlib1g libapr1
#   libaprutil1 libexpat1 libuuid1 libproc2-0 libsystemd0 libcap2 libgcrypt20 liblzma5 libzstd1
#   liblz4-1 libgpg-error0 libgcc-s1
# and fetched with apt-get download (unpacked into the images, never installed): busybox nginx
# apache2-bin
set -euo pipefail
# Fixed modes for what mkdir/install/redirections create, and C collation for every sort (file
# order in the stamp, tar's --sort=name).
umask 022
export LC_ALL=C

if [[ $# -ne 1 ]]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(realpath -m "$1")
CACHE=$OUT.cache

# Everything whose files end up in an image, so that their versions are part of the stamp. The
# shared libraries copied next to nginx, httpd, pgrep and ipcs must belong to one of these (the
# build checks): a new dependency means a new entry here.
HOST_PKGS=(
    gcc libc6-dev procps util-linux
    libc6 libcrypt1 libpcre2-8-0 libssl3 zlib1g libapr1 libaprutil1 libexpat1 libuuid1
    libproc2-0 libsystemd0 libcap2 libgcrypt20 liblzma5 libzstd1 liblz4-1 libgpg-error0
    libgcc-s1
)
# busybox, not busybox-static (which conflicts with it, so it is never installed): the static
# build's shell runs any applet name through /proc/self/exe before it searches PATH
# (FEATURE_SH_STANDALONE), so `sh -c ls` with /bin/ls masked would still list, and the httpd
# image's `exec httpd` would start busybox's own httpd.
DEB_PKGS=(busybox nginx apache2-bin)

PATH_ENV='"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"'
GCR=gcr.io/k8s-staging-cri-tools
E2E=registry.k8s.io/e2e-test-images

mkdir -p "$(dirname "$OUT")" "$CACHE"
exec 9> "$OUT.lock"
flock 9

# apt keeps no binary package cache on this kind of machine (docker-clean), so each apt-cache
# call would parse every package list (~1 s); a private one makes it ~30 ms.
APT_OPTS=(
    -o "Dir::Cache::pkgcache=$CACHE/pkgcache.bin"
    -o "Dir::Cache::srcpkgcache=$CACHE/srcpkgcache.bin"
)

host_versions() {
    local p missing=()
    for p in "${HOST_PKGS[@]}"; do
        dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || missing+=("$p")
    done
    if ((${#missing[@]})); then
        echo "error: missing Debian packages; run: apt-get install -y --no-install-recommends" \
            "$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')" >&2
        return 1
    fi
    dpkg-query -W -f='${Package} ${Version}\n' "${HOST_PKGS[@]}"
}

# "PKG VERSION" of the candidate apt would download.
deb_candidates() {
    local pkg="" line
    while IFS= read -r line; do
        case $line in
            [a-z0-9]*:) pkg=${line%:} ;;
            *Candidate:*)
                line=${line##*Candidate: }
                if [[ $line == "(none)" ]]; then
                    echo "error: apt has no candidate for $pkg (apt-get update?)" >&2
                    return 1
                fi
                echo "$pkg $line"
                ;;
        esac
    done < <(apt-cache "${APT_OPTS[@]}" policy "${DEB_PKGS[@]}")
}

HOST_VERSIONS=$(host_versions)
DEB_VERSIONS=$(deb_candidates)
[[ $(wc -l <<< "$DEB_VERSIONS") -eq ${#DEB_PKGS[@]} ]] || {
    echo "error: apt-cache policy ${DEB_PKGS[*]} did not name a candidate for each" >&2
    exit 1
}
STAMP=$(
    cd "$HERE"
    {
        for f in *; do
            echo "== $f"
            cat "$f"
        done
        echo "== packages"
        echo "$HOST_VERSIONS"
        echo "$DEB_VERSIONS"
    } | sha256sum | cut -d' ' -f1
)
if [[ -f $OUT/stamp && $(< "$OUT/stamp") == "$STAMP" ]]; then
    echo "critest images in $OUT are up to date"
    exit 0
fi

for tool in tar gzip sha256sum ldd gcc apt-get dpkg-deb; do
    command -v "$tool" > /dev/null || { echo "error: $tool is required" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/critest-images.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# shellcheck source=SCRIPTDIR/oci-layout.sh
source "$HERE/oci-layout.sh"

# --- Debian packages unpacked for their binaries ---------------------------------------------
mkdir -p "$CACHE/debs"
while read -r pkg version; do
    deb=""
    for f in "$CACHE/debs/${pkg}"_*.deb; do
        [[ -f $f && $(dpkg-deb -f "$f" Package Version) == "Package: $pkg"$'\n'"Version: $version" ]] &&
            deb=$f
    done
    if [[ -z $deb ]]; then
        rm -f "$CACHE/debs/${pkg}"_*.deb
        # The root-run download would otherwise warn that _apt cannot write here.
        if ! (cd "$CACHE/debs" && apt-get "${APT_OPTS[@]}" -q -o APT::Sandbox::User=root \
            download "$pkg=$version" > /dev/null); then
            echo "error: cannot download $pkg $version; stale package lists? (apt-get update)" >&2
            exit 1
        fi
        debs=("$CACHE/debs/${pkg}"_*.deb)
        deb=${debs[0]}
    fi
    mkdir -p "$WORK/deb/$pkg"
    dpkg-deb -x "$deb" "$WORK/deb/$pkg"
done <<< "$DEB_VERSIONS"

# --- helpers ---------------------------------------------------------------------------------
LIBS=$WORK/libs.txt
: > "$LIBS"

# Installs ELF SRC at ROOTFS/DEST with the shared libraries it needs (resolved on the host,
# where HOST_PKGS put them): libraries in /lib/x86_64-linux-gnu (ld.so's built-in search path
# on Debian, no ld.so.cache needed), the loader at its PT_INTERP path.
install_elf() {
    local rootfs=$1 src=$2 dest=$3 lib
    install -D -m 0755 "$src" "$rootfs/$dest"
    while read -r lib; do
        echo "$lib" >> "$LIBS"
        if [[ $lib == */ld-linux-x86-64.so.2 ]]; then
            install -D -m 0755 "$lib" "$rootfs/lib64/ld-linux-x86-64.so.2"
        else
            install -D -m 0644 "$lib" "$rootfs/lib/x86_64-linux-gnu/$(basename "$lib")"
        fi
    done < <(ldd "$src" | awk '$2 == "=>" && $3 ~ /^\// { print $3; next } $1 ~ /^\// { print $1 }')
}

# The busybox base of every image but pause: upstream busybox's layout with Debian's busybox,
# every applet a hard link (a masked /bin/ls must fail with exactly
# "/bin/sh: ls: Permission denied", which a symlink to the masked binary would not), and
# procps' pgrep and util-linux' ipcs, which upstream's busybox has and Debian's lacks.
busybox_rootfs() {
    local r=$1 applet d bb=$WORK/deb/busybox/bin/busybox
    for d in bin sbin usr/bin usr/sbin etc proc sys dev root var/spool/mail var/www home tmp; do
        mkdir -p "$r/$d"
    done
    install_elf "$r" "$bb" bin/busybox
    while IFS= read -r applet; do
        applet=${applet#/}
        [[ -z $applet || $applet == bin/busybox ]] && continue
        mkdir -p "$r/$(dirname "$applet")"
        ln -f "$r/bin/busybox" "$r/$applet"
    done < <("$bb" --list-full)
    [[ -e $r/bin/sh ]] || ln -f "$r/bin/busybox" "$r/bin/sh"
    install_elf "$r" /usr/bin/pgrep usr/bin/pgrep
    install_elf "$r" /usr/bin/ipcs usr/bin/ipcs
    # glibc dlopens libgcc_s when a thread exits or is cancelled (httpd's event MPM does): ldd
    # cannot see it, and its absence aborts the process.
    install_elf "$r" /lib/x86_64-linux-gnu/libgcc_s.so.1 lib/x86_64-linux-gnu/libgcc_s.so.1
    echo /lib/x86_64-linux-gnu/libgcc_s.so.1 >> "$LIBS"
    chmod 0644 "$r/lib/x86_64-linux-gnu/libgcc_s.so.1"
    # Upstream busybox's users and groups (buildroot's skeleton).
    cat > "$r/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
EOF
    cat > "$r/etc/group" <<'EOF'
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
users:x:100:
staff:x:50:
nogroup:x:65534:
EOF
    # glibc programs (nginx, httpd) look users up through NSS; spell out the files backend.
    printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n' > "$r/etc/nsswitch.conf"
    chmod 0644 "$r/etc/passwd" "$r/etc/group" "$r/etc/nsswitch.conf"
    chmod 0755 "$r" "$r"/{bin,sbin,usr,usr/bin,usr/sbin,etc,proc,sys,dev,var,home}
    chmod 0700 "$r/root"
    chmod 1777 "$r/tmp"
}

# A rootfs dir for one layer. Only the directories the layer adds files to go into it: the
# base's modes stay the ones that count.
new_rootfs() {
    local r=$WORK/rootfs/$1
    mkdir -p "$r"
    chmod 0755 "$r"
    echo "$r"
}

static_c() {
    gcc -static -O2 -s -o "$2" "$HERE/$1"
}

# --- layers ----------------------------------------------------------------------------------
oci_init "$WORK/layout"

R=$(new_rootfs busybox)
busybox_rootfs "$R"
L_BUSYBOX=$(oci_layer "$R")

R=$(new_rootfs pause)
static_c pause.c "$WORK/pause"
install -m 0755 "$WORK/pause" "$R/pause"
L_PAUSE=$(oci_layer "$R")

R=$(new_rootfs nonewprivs)
static_c nnp.c "$WORK/nnp"
install -D -m 4755 "$WORK/nnp" "$R/usr/local/bin/nnp"
L_NNP=$(oci_layer "$R")

# default-user (1000, own group 1000) is a member of group-defined-in-image (50000), as
# upstream's "adduser -u 1000 -D default-user; addgroup -g 50000 group-defined-in-image;
# addgroup default-user group-defined-in-image" leaves it.
R=$(new_rootfs predefined-group)
mkdir -p "$R/etc" "$R/home/default-user"
cp "$WORK/rootfs/busybox/etc/passwd" "$WORK/rootfs/busybox/etc/group" "$R/etc/"
echo 'default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh' >> "$R/etc/passwd"
printf 'default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n' >> "$R/etc/group"
chmod 0755 "$R/home" "$R/home/default-user"
L_GROUP=$(oci_layer "$R" home/default-user=1000:1000)

R=$(new_rootfs nginx-bin)
install_elf "$R" "$WORK/deb/nginx/usr/sbin/nginx" usr/sbin/nginx
mkdir -p "$R/var/lib/nginx" "$R/var/log/nginx" "$R/var/run" "$R/run" "$R/usr/share/nginx/html"
printf '<!DOCTYPE html>\n<html><body><h1>Welcome to nginx!</h1></body></html>\n' \
    > "$R/usr/share/nginx/html/index.html"
install -D -m 0644 "$HERE/nginx.conf" "$R/etc/nginx/nginx.conf"
L_NGINX_BIN=$(oci_layer "$R")

declare -A L_CONF
for conf in nginx hostnet-nginx; do
    R=$(new_rootfs "$conf-conf")
    install -D -m 0644 "$HERE/$conf-default.conf" "$R/etc/nginx/conf.d/default.conf"
    L_CONF[$conf]=$(oci_layer "$R")
done

R=$(new_rootfs httpd)
A=$WORK/deb/apache2-bin
install_elf "$R" "$A/usr/sbin/apache2" usr/local/apache2/bin/httpd
install -m 0755 "$HERE/httpd-foreground" "$R/usr/local/apache2/bin/httpd-foreground"
for m in mpm_event authz_core dir mime; do
    install_elf "$R" "$A/usr/lib/apache2/modules/mod_$m.so" "usr/lib/apache2/modules/mod_$m.so"
    chmod 0644 "$R/usr/lib/apache2/modules/mod_$m.so"
done
install -D -m 0644 "$HERE/httpd.conf" "$R/etc/apache2/apache2.conf"
mkdir -p "$R/usr/local/apache2/conf" "$R/usr/local/apache2/htdocs" "$R/usr/local/apache2/logs"
printf 'text/html\t\t\t\t\thtml htm\n' > "$R/usr/local/apache2/conf/mime.types"
printf '<html><body><h1>It works!</h1></body></html>\n' > "$R/usr/local/apache2/htdocs/index.html"
L_HTTPD=$(oci_layer "$R")

# Upstream's test images are busybox plus one file named after the image, so each is distinct.
declare -A L_MARK
for name in test-image-latest test-image-1 test-image-2 test-image-3 test-image-tags \
    test-image-tag-test test-image-tag-all; do
    R=$(new_rootfs "$name")
    echo "$name" > "$R/$name"
    L_MARK[$name]=$(oci_layer "$R")
done

# Every shared library must come from a package in the stamp.
mapfile -t libs < <(sort -u "$LIBS")
candidates=()
for lib in "${libs[@]}"; do
    real=$(realpath "$lib")
    candidates+=("$lib" "$real" "${real#/usr}" "/usr${lib}")
done
owned=$(dpkg-query -S "${candidates[@]}" 2>/dev/null || true)
for lib in "${libs[@]}"; do
    real=$(realpath "$lib")
    pkg=$(awk -v a="$lib" -v b="$real" -v c="${real#/usr}" -v d="/usr$lib" -F ': ' \
        '$2 == a || $2 == b || $2 == c || $2 == d { sub(/:.*/, "", $1); print $1; exit }' \
        <<< "$owned")
    if [[ -z $pkg || " ${HOST_PKGS[*]} " != *" $pkg "* ]]; then
        echo "error: $lib (package '${pkg:-?}') goes into an image; add its package to" \
            "HOST_PKGS in $0" >&2
        exit 1
    fi
done

# --- images ----------------------------------------------------------------------------------
IMAGES=$WORK/images.txt
: > "$IMAGES"
# image REF CONFIG LAYER...: an image in the layout; names REF NAME...: push it as each NAME.
image() {
    oci_image "$1" "$2" "tests/images/critest/build.sh $1" "${@:3}"
}
names() {
    local ref=$1 n
    shift
    for n in "$@"; do
        echo "$ref $n" >> "$IMAGES"
    done
}

BUSYBOX_CONFIG="{\"Env\":[$PATH_ENV],\"Cmd\":[\"sh\"]}"
image busybox "$BUSYBOX_CONFIG" "$L_BUSYBOX"
# public.ecr.aws: the benchmark specs' images (critest -benchmark); the same busybox.
names busybox "$E2E/busybox:1.29-2" \
    public.ecr.aws/docker/library/busybox:{1,1-glibc,1-musl,1-uclibc,1.35.0-glibc}

# registry.k8s.io/pause:3.9's config; one spec pulls it from both registries and wants one image
# with exactly those two tags.
image pause "{\"Env\":[$PATH_ENV],\"Entrypoint\":[\"/pause\"],\"User\":\"65535:65535\",\"WorkingDir\":\"/\"}" \
    "$L_PAUSE"
names pause registry.k8s.io/pause:3.9 k8s.gcr.io/pause:3.9

# The specs run it as uid 1000 with no_new_privs on and off and read its log.
image nonewprivs "{\"Env\":[$PATH_ENV],\"Entrypoint\":[\"/usr/local/bin/nnp\"],\"User\":\"1000\"}" \
    "$L_BUSYBOX" "$L_NNP"
names nonewprivs "$E2E/nonewprivs:1.3"

# Upstream's Cmd: in the foreground, the master's /proc/1/cmdline reads "nginx: master process".
NGINX_CMD='"Cmd":["nginx","-g","daemon off;"]'
image nginx "{\"ExposedPorts\":{\"80/tcp\":{}},\"Env\":[$PATH_ENV],$NGINX_CMD}" \
    "$L_BUSYBOX" "$L_NGINX_BIN" "${L_CONF[nginx]}"
names nginx "$E2E/nginx:1.14-2"
image hostnet-nginx "{\"ExposedPorts\":{\"12003/tcp\":{}},\"Env\":[$PATH_ENV],$NGINX_CMD}" \
    "$L_BUSYBOX" "$L_NGINX_BIN" "${L_CONF[hostnet-nginx]}"
names hostnet-nginx "$GCR/hostnet-nginx-amd64:latest"

# Upstream's Cmd, working dir and environment.
image httpd "{\"ExposedPorts\":{\"80/tcp\":{}},\"Env\":[\"PATH=/usr/local/apache2/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\",\"HTTPD_PREFIX=/usr/local/apache2\"],\"Cmd\":[\"httpd-foreground\"],\"WorkingDir\":\"/usr/local/apache2\"}" \
    "$L_BUSYBOX" "$L_HTTPD"
names httpd "$E2E/httpd:2.4.39-4"

# ImageStatus must report these users as uid 1002 / username www-data / uid 1003 / www-data.
for user in uid:1002 username:www-data uid-group:1003:1004 username-group:www-data:1004; do
    name=test-image-user-${user%%:*}
    image "$name" "{\"Env\":[$PATH_ENV],\"Cmd\":[\"sh\"],\"User\":\"${user#*:}\"}" "$L_BUSYBOX"
    names "$name" "$GCR/$name:latest"
done

image test-image-predefined-group "{\"Env\":[$PATH_ENV],\"Cmd\":[\"sh\"],\"User\":\"1000\"}" \
    "$L_BUSYBOX" "$L_GROUP"
names test-image-predefined-group "$GCR/test-image-predefined-group:latest"

for name in test-image-latest test-image-1 test-image-2 test-image-3; do
    image "$name" "$BUSYBOX_CONFIG" "$L_BUSYBOX" "${L_MARK[$name]}"
    names "$name" "$GCR/$name:latest"
done
image test-image-tags "$BUSYBOX_CONFIG" "$L_BUSYBOX" "${L_MARK[test-image-tags]}"
names test-image-tags "$GCR/test-image-tags:"{1,2,3}
image test-image-tag-test "$BUSYBOX_CONFIG" "$L_BUSYBOX" "${L_MARK[test-image-tag-test]}"
names test-image-tag-test "$GCR/test-image-tag:test"
image test-image-tag-all "$BUSYBOX_CONFIG" "$L_BUSYBOX" "${L_MARK[test-image-tag-all]}"
names test-image-tag-all "$GCR/test-image-tag:all"
# Not built: gcr.io/k8s-staging-cri-tools/test-image-digest@sha256:9700f9a2…, pinned by digest
# to upstream's bytes, which cannot be reproduced offline.

oci_finish
echo "$STAMP" > "$WORK/stamp"

rm -rf "$OUT.new"
mkdir "$OUT.new"
mv "$WORK/layout" "$IMAGES" "$WORK/stamp" "$OUT.new/"
rm -rf "$OUT"
mv "$OUT.new" "$OUT"
echo "critest images built in $OUT"
