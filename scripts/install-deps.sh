#!/usr/bin/env bash
# Installs what building and testing crisp needs on a bare Debian machine (idempotent).
set -euo pipefail

pkgs=(
  protobuf-compiler      # k8s-cri generates its gRPC code with protoc
  libseccomp-dev pkg-config  # youki's libcontainer links libseccomp
  busybox-static         # the test and demo images are built from it
  iproute2 util-linux    # ip / ip netns, mount tools used by tests
  iptables               # crisp-bridge's masquerade and hostPort rules (iptables-restore)
  containernetworking-plugins  # Debian's reference CNI plugins: interop tests (/usr/lib/cni)
  containerd             # runs crisp-shim as containerd-shim-crisp-v2 in a test; bench baseline
  python3 python3-venv   # scripts/validate-manifests.sh: kubernetes-validate in a venv
  systemd                # systemd-analyze verify manifests/crispd.service
  shellcheck             # lints the DaemonSet's installer script
  docker-registry skopeo  # registry pull tests: a local distribution registry, pushed to with skopeo
  apache2-utils openssl  # htpasswd (bcrypt) and a throwaway CA for the registry auth and TLS tests
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "cargo (Rust toolchain) is required" >&2; exit 1; }
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
# scripts/fuzz.sh: cargo-fuzz runs the libFuzzer targets in fuzz/ (on stable Rust, -s none).
if ! cargo fuzz --version 2>/dev/null | grep -qx 'cargo-fuzz 0.13.2'; then
  cargo install --locked cargo-fuzz --version 0.13.2
fi
