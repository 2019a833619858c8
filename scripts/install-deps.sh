#!/usr/bin/env bash
# Installs what building and testing crisp needs on a bare Debian machine (idempotent).
#   install-deps.sh [--run|--test]   --run: only what building and running crispd needs
set -euo pipefail

# What building and running crispd needs (scripts/demo.sh installs only these: --run).
run_pkgs=(
  protobuf-compiler      # cri-api and cri-server generate their gRPC code with protoc
  libseccomp-dev pkg-config  # youki's libcontainer links libseccomp
  busybox-static         # the demo and test images are built from it
  iproute2 util-linux    # ip / ip netns, mount tools
  iptables               # crisp-bridge's masquerade and hostPort rules (iptables-restore)
)
# What the tests add (scripts/test.sh).
test_pkgs=(
  containernetworking-plugins  # Debian's reference CNI plugins: interop tests (/usr/lib/cni)
  containerd             # runs crisp-shim as containerd-shim-crisp-v2 in a test; bench baseline
  python3 python3-venv   # scripts/validate-manifests.sh: kubernetes-validate in a venv
  systemd                # systemd-analyze verify manifests/crispd.service
  shellcheck             # lints the DaemonSet's installer script and the test scripts
  docker-registry skopeo  # registry pull tests and critest: a local registry, pushed to with skopeo
  apache2-utils openssl  # htpasswd (bcrypt) and a throwaway CA for the registry auth and TLS tests
  jq                     # scripts/critest.sh reads ginkgo's JSON report
  criu                   # CheckpointContainer's `criu check` (tests/tests/current_kubelet.rs)
  # tests/images/critest/build.sh: the critest images' programs and the libraries copied into
  # them (busybox, nginx and apache2-bin it downloads and unpacks itself, never installs)
  gcc libc6-dev procps libcrypt1 libpcre2-8-0 libssl3 zlib1g libapr1 libaprutil1 libexpat1
  libuuid1 libproc2-0 libsystemd0 libcap2 libgcrypt20 liblzma5 libzstd1 liblz4-1
  libgpg-error0 libgcc-s1
)
mode=${1:---test}
case $mode in
  --run) pkgs=("${run_pkgs[@]}") ;;
  --test) pkgs=("${run_pkgs[@]}" "${test_pkgs[@]}") ;;
  *) echo "usage: $0 [--run|--test]" >&2; exit 2 ;;
esac
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
if ! command -v cargo >/dev/null; then
  echo "cargo is required: a Rust toolchain >= 1.85 (rustup);" \
    "Debian's rustc is too old" >&2
  exit 1
fi
[ "$mode" = --run ] && exit 0
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
# scripts/fuzz.sh: cargo-fuzz runs the libFuzzer targets in fuzz/ (on stable Rust, -s none).
if ! cargo fuzz --version 2>/dev/null | grep -qx 'cargo-fuzz 0.13.2'; then
  cargo install --locked cargo-fuzz --version 0.13.2
fi
