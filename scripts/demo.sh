#!/usr/bin/env bash
# Sets up crisp on this machine with its embedded defaults and runs a demo pod:
# installs what building and running crispd needs, builds, places a locally built busybox
# image in the import dir, starts crispd (socket /run/crisp/crisp.sock, root /var/lib/crisp,
# pid in /run/crisp/crispd.pid) and runs a pod through the project's CRI client. crispd keeps
# running afterwards (log: /var/log/crispd.log); point crictl at it with:
#   crictl --runtime-endpoint unix:///run/crisp/crisp.sock ps
#
#   scripts/demo.sh          set up and run the demo
#   scripts/demo.sh --undo   remove the demo's pods, stop its crispd, delete what it made
set -euo pipefail
cd "$(dirname "$0")/.."
# CRISP_PROFILE=debug reuses the test build instead of a (slower to build) release one.
profile=${CRISP_PROFILE:-release}
bin=target/$profile
pidfile=/run/crisp/crispd.pid
root=/var/lib/crisp
state=/run/crisp

marker=$root/.crisp-demo

running_pid() {
  local pid exe
  pid=$(cat "$pidfile" 2>/dev/null) || return 1
  # Only a crispd: a reused pid must not be signalled (a rebuilt binary reads "(deleted)").
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(basename "${exe% (deleted)}")" = crispd ] && echo "$pid"
}

undo() {
  local pid
  # The root and state are the packaged install's too: remove only what the demo made.
  if [ -d "$root" ] && [ ! -e "$marker" ]; then
    echo "$root was not made by scripts/demo.sh: not removing it" >&2
    exit 1
  fi
  if pid=$(running_pid); then
    "$bin/crispctl" pods | awk '{print $1}' | while read -r id; do
      "$bin/crispctl" rm-pod "$id"
    done
    kill "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    echo "stopped crispd ($pid)"
  elif [ -S "$state/crisp.sock" ]; then
    echo "a crispd not started by this script serves $state/crisp.sock: stop it first" >&2
    exit 1
  fi
  # Whatever a crash may have left mounted under the root or state dir.
  findmnt -rn -o TARGET | { grep -E "^($root|$state)/" || true; } | sort -r | while read -r m; do
    umount -l "$m"
  done
  rm -rf "$root" "$state" /var/log/crispd.log /var/log/pods/default_crisp-demo_*
  ip link del crisp0 2>/dev/null || true
  for d in /sys/fs/cgroup/crisp /sys/fs/cgroup/*/crisp; do
    if [ -d "$d" ]; then find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
  done
  echo "demo removed"
}

if [ "${1:-}" = --undo ]; then
  undo
  exit 0
fi

scripts/install-deps.sh --run
if [ "$profile" = release ]; then
  cargo build --release -p crisp-cri-server -p crisp-shim -p crisp-client -p crisp-cni
else
  cargo build -p crisp-cri-server -p crisp-shim -p crisp-client -p crisp-cni
fi

import=$root/import
if [ ! -f "$import/busybox/index.json" ]; then
  [ -d "$root" ] || { mkdir -p "$root" && touch "$marker"; }
  mkdir -p "$import"
  tests/images/build-busybox.sh "$import/busybox" >/dev/null
fi

if ! running_pid >/dev/null && ! "$bin/crispctl" version >/dev/null 2>&1; then
  echo "starting crispd (log: /var/log/crispd.log)"
  mkdir -p "$state"
  setsid "$bin/crispd" >>/var/log/crispd.log 2>&1 < /dev/null &
  pid=$!
  for _ in $(seq 100); do
    "$bin/crispctl" version >/dev/null 2>&1 && break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null || { echo "crispd exited; see /var/log/crispd.log" >&2; exit 1; }
  echo "$pid" > "$pidfile"
fi
"$bin/crispctl" version
"$bin/crispctl" demo --keep
