#!/usr/bin/env bash
# The project's test command (README and .ci/run call exactly this). Needs root: the
# integration tests create real namespaces, overlay mounts, cgroups and processes, and clean
# them up again.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/validate-manifests.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo build --workspace --quiet
# The upgrade test (tests/tests/upgrade.rs) starts from the last release's crispd, crisp-shim and
# crisp-bridge: built once per baseline commit, reusing target/debug's dependencies.
upgrade_from=$(scripts/build-upgrade-baseline.sh)
export CRISP_UPGRADE_FROM=$upgrade_from
# Bounded fuzzing of the reference parser, the layer unpacker and the spec builder (FUZZ_SECONDS).
scripts/fuzz.sh
# The Kubernetes CRI validation suite against a crispd of its own (critest from ../shared).
scripts/critest.sh
cargo nextest run --workspace --no-fail-fast "$@"
# The cgroup- and mount-touching end-to-end tests again, on a cgroup v2 node's kernel (6.1).
scripts/test-vm.sh
