#!/usr/bin/env bash
# Runs the Kubernetes CRI validation suite (critest v1.36.0, validation mode) against crispd,
# offline: the images critest pulls are built locally (tests/images/critest/build.sh) and served
# by a private docker-registry on 127.0.0.1, which crispd reaches through containerd-style
# hosts.toml files for registry.k8s.io, k8s.gcr.io, gcr.io and public.ecr.aws.
#
#   scripts/critest.sh [CRITEST_ARGS...]     e.g. --ginkgo.focus 'Image Manager'
#
# Env: CRISPD=path      crispd to test (default target/debug/crispd; crisp-shim and crisp-bridge
#                       are taken from next to it)
#      CRITEST_KEEP=1   keep the run's root, state, registry storage and configs
#      CRITEST_CGROUP_DRIVER=systemd   crispd's cgroup_driver (default cgroupfs); systemd needs
#                       systemd as PID 1 and cgroup v2 (in the VM: scripts/vm-systemd.sh)
#      CRITEST_WORKDIR  where the run's root goes (default target/critest; in the cgroup v2 VM
#                       a tmpfs such as /tmp, since overlay upper dirs cannot be on its 9p share)
# Logs (kept, replaced by the next run): target/critest/logs/ — critest.log (its output),
# critest.json (ginkgo's report), crispd.log, registry.log.
#
# Exits non-zero if any spec fails, except the one that pulls
# gcr.io/k8s-staging-cri-tools/test-image-digest@sha256:…: upstream's bytes, pinned by digest,
# which no local build reproduces.
#
# Needs root and, beyond build.sh's packages: docker-registry skopeo jq util-linux procps
# iproute2. critest and crictl come from ../shared/critools (next to the repo).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
OUT=$REPO/target/critest
BIN=$OUT/bin
LOGS=$OUT/logs
DIGEST_SPEC='public image with digest should be pulled and removed'

if [[ $EUID -ne 0 ]]; then
    echo "error: run as root (crispd creates namespaces, mounts and cgroups)" >&2
    exit 1
fi
for tool in docker-registry skopeo jq ipcs ipcrm findmnt ss setsid timeout; do
    command -v "$tool" > /dev/null || { echo "error: $tool is required" >&2; exit 1; }
done
CRISPD=$(realpath -m "${CRISPD:-target/debug/crispd}")
for b in crispd crisp-shim crisp-bridge; do
    if [[ ! -x $(dirname "$CRISPD")/$b ]]; then
        echo "error: $(dirname "$CRISPD")/$b not found (cargo build --workspace?)" >&2
        exit 1
    fi
done

SHARED=$(realpath -m ../shared)
if [[ ! -x $SHARED/critools/install.sh ]]; then
    echo "error: $SHARED/critools/install.sh not found (the shared dir next to the repo)" >&2
    exit 1
fi
"$SHARED/critools/install.sh" "$BIN"
tests/images/critest/build.sh "$OUT/images"
IMAGES=$OUT/images

# Unique per run, so that runs (and the integration tests' crispds) never share anything. The
# state dir holds crispd's sockets: short, below the 107-byte sun_path limit.
RUN=${CRITEST_WORKDIR:-$OUT}/crisp-critest-run-$$
STATE=/run/crisp-critest-$$
DRIVER=${CRITEST_CGROUP_DRIVER:-cgroupfs}
case $DRIVER in
    cgroupfs) CGROUP=crisp-critest-$$ PARENT=/$CGROUP ;;
    # systemd nests a slice by its name's dashes.
    systemd) CGROUP=crisp.slice/crisp-critest.slice/crisp-critest-$$.slice PARENT=crisp-critest-$$.slice ;;
    *) echo "error: CRITEST_CGROUP_DRIVER must be cgroupfs or systemd" >&2; exit 2 ;;
esac
SOCK=$STATE/crisp.sock
CRICTL=("$BIN/crictl" --config "$RUN/crictl.yaml")
CRISPD_PID=""
REGISTRY_PID=""
CRITEST_PID=""
TAIL_PID=""
rm -rf "$RUN" "$LOGS"
mkdir -p "$RUN" "$LOGS"

# Shared memory ids, for removing the segments the HostIpc specs create on the host with
# `ipcmk -M 1048576` and never remove: any unattached 1 MiB segment new since the start goes
# (on a shared machine another user's could be among them).
shm_ids() {
    ipcs -m | awk '$2 ~ /^[0-9]+$/ { print $2, $5, $6 }'
}
SHM_BEFORE=$(shm_ids)
# crispd's embedded network makes the bridge crisp0 (the pods' DELs leave it, as a node's
# bridge stays): removed at the end unless it was there before the run.
BRIDGE_BEFORE=$(ip -o link show crisp0 2> /dev/null || true)

# Every process whose command line names our state or run dir: crispd's shims (crisp-shim
# serve --dir STATE/containers/ID, started in their own session so that they outlive crispd)
# and anything they left.
pids_mentioning() {
    local p cmd
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [[ $p == "$$" || $p == "$BASHPID" ]] && continue
        cmd=$(tr '\0' ' ' 2> /dev/null < "/proc/$p/cmdline") || continue
        if [[ $cmd == *"$STATE/"* || $cmd == *"$RUN/"* ]]; then
            echo "$p"
        fi
    done
}

# The cgroup parent's directory in each hierarchy (cgroup v1: one per controller; v2: one).
cgroup_dirs() {
    local d
    for d in /sys/fs/cgroup/*/"$CGROUP" /sys/fs/cgroup/"$CGROUP"; do
        [[ -d $d ]] && echo "$d"
    done
}

# SIGKILLs what is left in our cgroups and below our dirs until nothing is (5 s at most).
kill_leftovers() {
    local i pids
    for ((i = 0; i < 50; i++)); do
        pids=$(
            pids_mentioning
            cgroup_dirs | while read -r d; do
                find "$d" -name cgroup.procs -exec cat {} + 2> /dev/null
            done
        )
        pids=$(sort -un <<< "$pids")
        [[ -z $pids ]] && return 0
        # shellcheck disable=SC2086 # one pid per word
        kill -KILL $pids 2> /dev/null
        sleep 0.1
    done
    echo "warning: processes still alive: $(tr '\n' ' ' <<< "$pids")" >&2
}

stop_pid() {
    local pid=$1 i
    if [[ -z $pid ]] || ! kill -0 "$pid" 2> /dev/null; then
        return 0
    fi
    kill -TERM "$pid" 2> /dev/null || true
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2> /dev/null || break
        sleep 0.1
    done
    # Gone already, or reaped with its signal's status: neither may end a `set -e` caller.
    kill -KILL "$pid" 2> /dev/null || true
    wait "$pid" 2> /dev/null || true
    return 0
}

cleanup() {
    local rc=$? d m id size nattch i
    trap - EXIT INT TERM
    set +e
    echo "--- cleaning up"
    # Interrupted: ginkgo runs its cleanup nodes on SIGTERM (the grace period is 30 s).
    if [[ -n $CRITEST_PID ]]; then
        kill -TERM "$CRITEST_PID" 2> /dev/null
        for ((i = 0; i < 350; i++)); do
            kill -0 "$CRITEST_PID" 2> /dev/null || break
            sleep 0.1
        done
        kill -KILL "$CRITEST_PID" 2> /dev/null
    fi
    stop_pid "$TAIL_PID"
    if [[ -n $CRISPD_PID ]] && kill -0 "$CRISPD_PID" 2> /dev/null; then
        timeout 180 "${CRICTL[@]}" rmp -fa > /dev/null 2>&1 ||
            echo "warning: crictl rmp -fa failed; killing what is left" >&2
    fi
    stop_pid "$CRISPD_PID"
    stop_pid "$REGISTRY_PID"
    kill_leftovers
    # Deepest first: overlay rootfs and namespace pins under the state and root dirs.
    for d in "$STATE" "$RUN"; do
        findmnt -rn -o TARGET | awk -v d="$d/" 'index($0, d) == 1' | sort -r |
            while read -r m; do
                umount "$m" 2> /dev/null || umount -l "$m" ||
                    echo "warning: cannot unmount $m" >&2
            done
    done
    if [[ $DRIVER == systemd ]]; then
        systemctl stop "$PARENT" 2> /dev/null
    fi
    cgroup_dirs | while read -r d; do
        find "$d" -depth -type d -exec rmdir {} + 2> /dev/null
        [[ -d $d ]] && echo "warning: cgroup $d is left" >&2
    done
    if [[ -z $BRIDGE_BEFORE ]]; then
        ip link del crisp0 2> /dev/null
    fi
    while read -r id size nattch; do
        [[ -n $id && $size == 1048576 && $nattch == 0 ]] || continue
        grep -qx "$id $size $nattch" <<< "$SHM_BEFORE" || ipcrm -m "$id"
    done <<< "$(shm_ids)"
    if [[ ${CRITEST_KEEP:-} == 1 ]]; then
        echo "kept: $RUN $STATE"
    else
        rm -rf --one-file-system "$RUN" "$STATE"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for port in 12000 12001 12002 12003; do
    if [[ -n $(ss -Hltn "sport = :$port") ]]; then
        echo "warning: port $port is in use; the port mapping and port-forward specs need it" >&2
    fi
done

# --- registry ------------------------------------------------------------------------------
start_registry() {
    local attempt i port
    mkdir -p "$RUN/registry"
    for ((attempt = 0; attempt < 5; attempt++)); do
        # A port free a moment ago; a lost race shows as the registry exiting, and we retry.
        port=$((20000 + RANDOM % 30000))
        [[ -n $(ss -Hltn "sport = :$port") ]] && continue
        cat > "$RUN/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $RUN/registry/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
        setsid docker-registry serve "$RUN/registry/config.yml" >> "$LOGS/registry.log" 2>&1 &
        REGISTRY_PID=$!
        for ((i = 0; i < 150; i++)); do
            if ! kill -0 "$REGISTRY_PID" 2> /dev/null; then
                REGISTRY_PID=""
                break
            fi
            if (exec 3<> "/dev/tcp/127.0.0.1/$port") 2> /dev/null; then
                REGISTRY_PORT=$port
                return 0
            fi
            sleep 0.1
        done
        stop_pid "$REGISTRY_PID"
        REGISTRY_PID=""
    done
    echo "error: docker-registry did not start; $LOGS/registry.log:" >&2
    tail -20 "$LOGS/registry.log" >&2
    return 1
}
start_registry
REGISTRY=127.0.0.1:$REGISTRY_PORT
echo "--- registry on $REGISTRY: pushing $(wc -l < "$IMAGES/images.txt") image names"
# Keep each name's repository path (registry.k8s.io/pause:3.9 -> REGISTRY/pause:3.9): the
# hosts.toml files below only swap the host.
while read -r ref name; do
    skopeo copy --quiet --insecure-policy --dest-tls-verify=false --preserve-digests \
        "oci:$IMAGES/layout:$ref" "docker://$REGISTRY/${name#*/}"
done < "$IMAGES/images.txt"

for host in registry.k8s.io k8s.gcr.io gcr.io public.ecr.aws _default; do
    mkdir -p "$RUN/certs.d/$host"
    # _default too: a name nobody built fails at once instead of going out to the network.
    printf 'server = "http://%s"\n' "$REGISTRY" > "$RUN/certs.d/$host/hosts.toml"
done

# --- crispd --------------------------------------------------------------------------------
mkdir -p "$RUN/net.d" "$STATE"
# No import_dir: every image comes from the registry, as on a node. An empty CNI conf dir:
# crispd's embedded crisp-bridge network, whatever the host has in /etc/cni/net.d.
cat > "$RUN/crispd.toml" <<EOF
root = "$RUN/root"
state = "$STATE"
socket = "$SOCK"
log_level = "info"
cgroup_driver = "$DRIVER"
cgroup_parent = "$PARENT"

[registry]
config_path = "$RUN/certs.d"

[cni]
conf_dir = "$RUN/net.d"
EOF
cat > "$RUN/crictl.yaml" <<EOF
runtime-endpoint: unix://$SOCK
image-endpoint: unix://$SOCK
timeout: 60
EOF
echo "--- starting $CRISPD (root $RUN/root, state $STATE)"
# Own session: a Ctrl-C reaches this script, which still needs crispd to remove the pods.
NO_COLOR=1 setsid "$CRISPD" --config "$RUN/crispd.toml" > "$LOGS/crispd.log" 2>&1 &
CRISPD_PID=$!
deadline=$((SECONDS + 60))
until [[ -S $SOCK ]] && timeout 10 "${CRICTL[@]}" version > /dev/null 2>&1; do
    if ! kill -0 "$CRISPD_PID" 2> /dev/null; then
        echo "error: crispd exited; $LOGS/crispd.log:" >&2
        tail -30 "$LOGS/crispd.log" >&2
        exit 1
    fi
    if ((SECONDS >= deadline)); then
        echo "error: crispd's socket $SOCK not ready within 60 s" >&2
        exit 1
    fi
    sleep 0.1
done

# --- critest -------------------------------------------------------------------------------
echo "--- critest${*:+ $*} (output: $LOGS/critest.log)"
start=$SECONDS
# In the background with `wait`: a signal to this script then runs the cleanup at once, where a
# foreground critest would first have to finish. Longer than ginkgo's default 1 h suite
# timeout, for slow runtimes; a --ginkgo.timeout in "$@" comes later and wins.
# Its own TMPDIR: specs put pod log dirs, seccomp profiles and mount sources there and leave
# them behind when they fail; the run dir's removal takes them along.
mkdir -p "$RUN/tmp"
TMPDIR=$RUN/tmp "$BIN/critest" --runtime-endpoint "unix://$SOCK" --image-endpoint "unix://$SOCK" \
    --ginkgo.no-color --ginkgo.timeout=4h \
    --ginkgo.json-report="$LOGS/critest.json" "$@" > "$LOGS/critest.log" 2>&1 &
CRITEST_PID=$!
tail -n +1 -f --pid="$CRITEST_PID" "$LOGS/critest.log" &
TAIL_PID=$!
critest_rc=0
wait "$CRITEST_PID" || critest_rc=$?
CRITEST_PID=""
wait "$TAIL_PID" || true
TAIL_PID=""
echo
echo "=== critest summary (exit $critest_rc, $((SECONDS - start)) s)"
grep -E '^(Ran [0-9]+ of [0-9]+ Specs|SUCCESS!|FAIL!)' "$LOGS/critest.log" || true
if [[ ! -s $LOGS/critest.json ]]; then
    echo "error: critest wrote no report ($LOGS/critest.json)" >&2
    exit 1
fi
jq -r '[.[].SpecReports[] | select(.LeafNodeType == "It") | .State] | group_by(.)
    | map("\(.[0]): \(length)") | join(", ")' "$LOGS/critest.json"
# Failed nodes of any kind (a failed BeforeSuite fails every spec), with the failure's first
# lines as the reason.
failed=$(jq -r '.[].SpecReports[]
    | select(.State != "passed" and .State != "skipped" and .State != "pending")
    | [((.ContainerHierarchyTexts // []) + [.LeafNodeText] | map(select(. != "")) | join(" ")),
       (.Failure.Message // "" | split("\n") | map(gsub("^\\s+"; "")) | map(select(. != ""))
        | .[0:4] | join(" ") | .[0:300]),
       (.Failure.Location // {} | "\(.FileName // "?" | split("/") | last):\(.LineNumber // "?")"),
       .State]
    | @tsv' "$LOGS/critest.json")
unexpected=0
if [[ -n $failed ]]; then
    echo "failed specs:"
    while IFS=$'\t' read -r name reason location state; do
        if [[ $name == *"$DIGEST_SPEC"* ]]; then
            echo "  - $name [$state; expected: upstream's digest-pinned image is not built]"
        else
            echo "  - $name [$state]"
            unexpected=$((unexpected + 1))
        fi
        echo "      $location: $reason"
    done <<< "$failed"
fi
if ((unexpected > 0)); then
    echo "critest: $unexpected unexpected failure(s)"
    exit 1
fi
if ((critest_rc != 0)) && [[ -z $failed ]]; then
    echo "critest exited $critest_rc without a failed spec in its report"
    exit 1
fi
echo "critest: no unexpected failures"
