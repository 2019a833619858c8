#!/usr/bin/env bash
# Runs the end-to-end tests that touch cgroups, mounts, OOM, stats, resources, exec and restart
# inside a throwaway QEMU VM with Debian 12's kernel 6.1 and cgroup v2 only
# (../shared/vm/cgv2-vm.sh): the kernel and cgroup layout of real nodes, which this host
# (cgroup v1 hybrid, kernel 6.18) is not. The test binaries are built here, on the host; the VM
# shares this directory and runs them (software emulation: a process start costs ~20x the
# host's, so the set is chosen, and each binary runs its tests one at a time).
#
#   scripts/test-vm.sh [TEST ...]     default: the list below
#
# Logs: target/vm-tests/<test>.log. Exits non-zero if any test binary fails in the VM.
set -euo pipefail
cd "$(dirname "$0")/.."

tests=("$@")
if ((${#tests[@]} == 0)); then
  tests=(
    pod_lifecycle    # namespaces, the overlay rootfs (kernel 6.1: the legacy option string)
    resources        # every LinuxContainerResources field, live updates, pod resize
    stats            # cgroup v2 stat files, PSI
    current_kubelet  # env bytes, stop signals, Stream* lists over the newest CRI
    checkpoint       # CheckpointContainer and restore with CRIU (works on 6.1, not on 6.18)
    exec_sync        # exec joining the container's cgroup
    restart          # crispd killed and restarted with pods running
    shim_killed
    crash_mid_create # teardown kills what is left in a container's cgroup (cgroup.kill)
    stop_semantics
    security
    pid_namespaces
    no_log_path
    users_and_groups
    seccomp_without_no_new_privs
    systemd_driver   # scopes in slices over D-Bus, with systemd as PID 1 (below)
  )
fi
# These run under systemd as PID 1 (scripts/vm-systemd.sh), as on a node with kubelet's
# systemd cgroup driver; the VM's own init is a shell.
under_systemd=" systemd_driver "

vm=$(realpath ../shared/vm/cgv2-vm.sh)
out=target/vm-tests
rm -rf "$out"
mkdir -p "$out"

# The executables of the chosen integration tests (built already by scripts/test.sh; cargo
# only links what is missing).
cargo test -p crisp-tests --no-run --message-format=json |
  python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])
' > "$out/binaries"
run=()
for t in "${tests[@]}"; do
  bin=$(awk -v t="$t" '$1 == t { print $2 }' "$out/binaries")
  [[ -n $bin ]] || { echo "test-vm: no test binary named $t" >&2; exit 2; }
  if [[ $under_systemd == *" $t "* ]]; then
    run+=("$t=scripts/vm-systemd.sh:$bin")
  else
    run+=("$t=$bin")
  fi
done

# In the guest: /tmp is a tmpfs (overlay upper dirs must not be on the 9p share), the tests'
# crispds put their roots there through TMPDIR.
guest_script=$(cat <<'EOF'
set -u
failed=0
echo "guest: $(uname -r), $(stat -fc %T /sys/fs/cgroup)"
for pair in $RUN; do
  t=${pair%%=*} bin=${pair#*=} wrap=()
  if [[ $bin == *:* ]]; then wrap=("${bin%%:*}") bin=${bin#*:}; fi
  start=$(date +%s)
  if TMPDIR=/tmp CRISP_TEST_SLOWDOWN=5 "${wrap[@]}" "$bin" --test-threads 1 > "$OUT/$t.log" 2>&1; then
    r=ok
  else
    r=FAILED failed=1
  fi
  echo "vm test $t: $r ($(( $(date +%s) - start )) s)"
done
exit $failed
EOF
)
echo "test-vm: running ${#tests[@]} test binaries in the cgroup v2 VM (logs: $out/)"
set +e
RUN="${run[*]}" OUT=$(realpath "$out") CGV2_MEM=${CGV2_MEM:-6144} \
  "$vm" "export RUN OUT; $guest_script" | tee "$out/summary"
rc=${PIPESTATUS[0]}
set -e
passed=$(grep -c ': ok (' "$out/summary" || true)
failed=$(grep -c ': FAILED (' "$out/summary" || true)
echo "test-vm: $passed passed, $failed failed"
if ((rc != 0)); then
  grep ': FAILED (' "$out/summary" | while read -r _ _ t _; do
    t=${t%:}
    echo "--- $t (tail of $out/$t.log)"
    tail -40 "$out/$t.log"
  done
  exit 1
fi
