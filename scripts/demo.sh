#!/usr/bin/env bash
# Sets up crisp on this machine with its embedded defaults and runs a demo pod:
# installs build deps, builds, places a locally built busybox image in the import dir,
# starts crispd (socket /run/crisp/crisp.sock, root /var/lib/crisp) and runs a pod through
# the project's CRI client. crispd keeps running afterwards (log: /var/log/crispd.log);
# point crictl at it with: crictl --runtime-endpoint unix:///run/crisp/crisp.sock ps
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# CRISP_PROFILE=debug reuses the test build instead of a (slower to build) release one.
profile=${CRISP_PROFILE:-release}
if [ "$profile" = release ]; then
  cargo build --release -p crisp-cri-server -p crisp-shim -p crisp-client -p crisp-cni
else
  cargo build -p crisp-cri-server -p crisp-shim -p crisp-client -p crisp-cni
fi
bin=target/$profile

import=/var/lib/crisp/import
if [ ! -f "$import/busybox/index.json" ]; then
  mkdir -p "$import"
  tests/images/build-busybox.sh "$import/busybox" >/dev/null
fi

if ! "$bin/crispctl" version >/dev/null 2>&1; then
  echo "starting crispd (log: /var/log/crispd.log)"
  setsid "$bin/crispd" >>/var/log/crispd.log 2>&1 < /dev/null &
  for _ in $(seq 100); do
    "$bin/crispctl" version >/dev/null 2>&1 && break
    sleep 0.1
  done
fi
"$bin/crispctl" version
"$bin/crispctl" demo --keep
