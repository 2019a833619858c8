#!/usr/bin/env bash
# Builds the cargo-fuzz targets in fuzz/ and runs each for a bounded time; scripts/test.sh (and
# so CI) calls it. A panic (a broken invariant), crash, hang (-timeout) or runaway memory in any
# target fails the script; libFuzzer leaves the input in fuzz/artifacts/<target>/, and
# `cargo fuzz run -s none --dev <target> <file>` replays it.
#
#   FUZZ_SECONDS   seconds per target (default 20; 0 skips fuzzing, build included)
#   FUZZ_TARGETS   targets to run (default all: reference unpack unpack_entries spec)
#
# Stable Rust: `-s none` (no sanitizer) is the cargo-fuzz mode that passes no nightly -Z flag.
# libFuzzer is still guided by coverage (sancov), and the targets check their invariants with
# assert!. Each run starts from the seeds in fuzz/seeds/<target>/, copied to a scratch corpus, so
# what a run finds is not committed.
# Runs as root in CI, which the unpack targets want (owners, device nodes, trusted xattrs).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-20}
read -r -a targets <<<"${FUZZ_TARGETS:-reference unpack unpack_entries spec}"
[ "$secs" != 0 ] || { echo "fuzz: skipped (FUZZ_SECONDS=0)"; exit 0; }

command -v cargo-fuzz >/dev/null || {
  echo "fuzz: cargo-fuzz missing (scripts/install-deps.sh installs it)" >&2
  exit 1
}
# --dev: fuzz/Cargo.toml's dev profile (crisp's code and a few hot dependencies at opt-level 1,
# the rest at 0; debug assertions and overflow checks on). cargo fuzz's default, release with one
# codegen unit, took twice as long to build here, and the build is most of this script's time.
flags=(-s none --dev --fuzz-dir fuzz)
# A workspace of its own, so test.sh's `cargo fmt --all` does not see it.
cargo fmt --check --manifest-path fuzz/Cargo.toml
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
echo "fuzz: building the targets"
if ! cargo fuzz build "${flags[@]}" >"$scratch/build.log" 2>&1; then
  cat "$scratch/build.log" >&2
  exit 1
fi

# The unpack targets create and remove a directory tree per input: tmpfs is much faster.
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
  sandboxes=$(mktemp -d -p /dev/shm crisp-fuzz.XXXXXX)
else
  sandboxes=$scratch/sandboxes
  mkdir -p "$sandboxes"
fi
trap 'rm -rf "$scratch" "$sandboxes"' EXIT
export CRISP_FUZZ_TMP=$sandboxes

failed=()
for t in "${targets[@]}"; do
  corpus=$scratch/corpus/$t
  mkdir -p "$corpus" "fuzz/artifacts/$t"
  if [ -d "fuzz/seeds/$t" ]; then cp -R "fuzz/seeds/$t/." "$corpus"/; fi
  echo "fuzz: $t for ${secs}s"
  log=$scratch/$t.log
  if cargo fuzz run "${flags[@]}" "$t" "$corpus" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" | sed "s/^/fuzz: $t: /"
  else
    tail -n 60 "$log" >&2
    failed+=("$t")
  fi
done
if ((${#failed[@]})); then
  echo "fuzz: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${secs}s each: no crash"
