#!/usr/bin/env bash
# Runs COMMAND with systemd as PID 1, as on a node: in the cgroup v2 VM
# (../shared/vm/cgv2-vm.sh), whose init is a shell. systemd (the host's /lib/systemd/systemd)
# boots as PID 1 of new PID, mount and cgroup namespaces, with a fresh /run and the VM's cgroup
# tree below a cgroup of its own as its root, into an empty target (no services: only its
# private D-Bus socket, which the systemd cgroup driver talks to). COMMAND then runs in those
# namespaces, in a cgroup beside systemd's (the test's crispd runs there, as it would beside
# system.slice); systemd is killed when it ends. Runs inside the VM only (it takes over
# /sys/fs/cgroup below a new cgroup, which it removes).
#
#   scripts/vm-systemd.sh COMMAND [ARG ...]
set -euo pipefail
(($# >= 1)) || { echo "usage: $0 COMMAND [ARG ...]" >&2; exit 2; }
[[ $(stat -fc %T /sys/fs/cgroup) == cgroup2fs ]] || { echo "vm-systemd: needs cgroup v2" >&2; exit 2; }

root=/sys/fs/cgroup/crisp-systemd-$$ holder=/sys/fs/cgroup/crisp-systemd-$$-holder
work=$(mktemp -d)
mkdir "$root" "$holder"
sd=''
# shellcheck disable=SC2317  # run by the trap
cleanup() {
  if [[ -n $sd ]]; then kill -KILL "$sd" 2>/dev/null || true; fi
  # The namespace's processes die with its PID 1; their cgroups empty soon after.
  for _ in $(seq 50); do
    find "$root" -depth -type d -exec rmdir {} + 2>/dev/null || true
    [[ -d $root ]] || break
    sleep 0.1
  done
  rmdir "$holder" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/init.sh" <<'INIT'
mount --make-rprivate /
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/systemd/system
printf '[Unit]\nDescription=crisp tests under systemd\n' > /run/systemd/system/crisp-test.target
# The cgroup namespace's view: systemd's root cgroup is the one it was started in.
umount -l /sys/fs/cgroup
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
exec env -i container=crisp-test /lib/systemd/systemd --unit=crisp-test.target \
  --log-target=console --log-level=warning
INIT
(
  echo "$BASHPID" > "$root/cgroup.procs"
  exec unshare --pid --fork --mount --cgroup --mount-proc bash "$work/init.sh"
) > "$work/systemd.log" 2>&1 &
upid=$!
# unshare stays outside the namespace; out of systemd's root cgroup too, or that cgroup would
# hold a process and systemd could not hand controllers down from it.
for _ in $(seq 100); do
  sd=$(awk '{print $1}' "/proc/$upid/task/$upid/children" 2>/dev/null || true)
  [[ -n $sd ]] && break
  sleep 0.05
done
[[ -n $sd ]] || { echo "vm-systemd: systemd did not start" >&2; cat "$work/systemd.log" >&2; exit 1; }
echo "$upid" > "$holder/cgroup.procs"
in_ns() { nsenter -t "$sd" -p -m -C -- "$@"; }
for _ in $(seq 600); do
  state=$(in_ns systemctl is-system-running 2>/dev/null || true)
  [[ $state == running || $state == degraded ]] && break
  sleep 0.1
done
[[ $state == running || $state == degraded ]] || {
  echo "vm-systemd: systemd is $state" >&2; cat "$work/systemd.log" >&2; exit 1; }
echo "vm-systemd: systemd $(in_ns systemctl --version | awk 'NR == 1 {print $2}') is PID 1 ($state)"
mkdir "$root/crisp-e2e"
set +e
(
  echo "$BASHPID" > "$root/crisp-e2e/cgroup.procs"
  # Entering a mount namespace moves to its root: back to where we were.
  exec nsenter -t "$sd" -p -m -C --wd="$PWD" -- "$@"
)
rc=$?
set -e
exit $rc
