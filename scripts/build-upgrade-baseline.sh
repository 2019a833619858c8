#!/usr/bin/env bash
# Builds the upgrade baseline: crispd, crisp-shim and crisp-bridge of the release commit named in
# tests/upgrade-baseline, for tests/tests/upgrade.rs. Prints the directory holding them (and
# nothing else) on stdout; scripts/test.sh exports it as CRISP_UPGRADE_FROM.
#
#   <target>/upgrade-baseline/bin/{crispd,crisp-shim,crisp-bridge,.commit}
#
# <target> is $CARGO_TARGET_DIR, else target/. `.commit` is the stamp: when it names the
# baseline commit nothing is built, so only the first run after a bump (or a clean) pays.
#
# The commit's sources come from `git archive` (nothing registered in .git that a killed run
# could leave behind), so the commit must be in this clone: CI's full clone has it, a shallow
# one does not. They are built in a target dir of their own: in target/debug the two versions'
# crates would have the same names and metadata hashes and rebuild over each other. That dir is
# seeded with the compiled dependencies of target/debug (`cargo build --workspace` has just made
# them), minus the artifacts of crisp's own crates, so only those (and the patched third_party
# crates) compile again, plus whatever dependency the release locked at another version. The
# seed is deleted after the build.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

commit=$(grep -v '^[[:space:]]*#' tests/upgrade-baseline | tr -d '[:space:]')
if ! [[ $commit =~ ^[0-9a-f]{40}$ ]]; then
  echo "upgrade baseline: tests/upgrade-baseline must hold one full commit id, not '$commit'" >&2
  exit 1
fi
if ! git rev-parse --git-dir >/dev/null; then
  echo "upgrade baseline: $repo is not a usable git clone (git says why above)" >&2
  exit 1
fi
if ! git cat-file -e "$commit^{commit}" 2>/dev/null; then
  echo "upgrade baseline: commit $commit (tests/upgrade-baseline) is not in this clone." >&2
  if [ "$(git rev-parse --is-shallow-repository)" = true ]; then
    echo "  This clone is shallow: git fetch --unshallow (CI must clone the full history)." >&2
  fi
  exit 1
fi

target=${CARGO_TARGET_DIR:-target}
[[ $target == /* ]] || target=$repo/$target
out=$target/upgrade-baseline
bin=$out/bin
bins=(crispd crisp-shim crisp-bridge)

built=yes
for b in "${bins[@]}"; do [ -x "$bin/$b" ] || built=no; done
if [ "$built" = yes ] && [ "$(cat "$bin/.commit" 2>/dev/null)" = "$commit" ]; then
  echo "upgrade baseline: ${commit:0:12} already built in $bin" >&2
  echo "$bin"
  exit 0
fi

src=$out/src
build=$out/target
cleanup() { rm -rf "$src" "$build" "$bin.new"; }
trap cleanup EXIT
cleanup
mkdir -p "$src" "$build/debug"
# -m: the files get the current time, so cargo's mtime check sees every crisp source as newer
# than anything the seed holds, on top of the seed leaving crisp's own crates out.
git archive "$commit" | tar -x -m -C "$src"

# Packages with their sources in the tree (workspace members, third_party): their artifacts in
# target/debug are this build's, not the baseline's, and must not be taken for fresh.
mapfile -t own < <(find "$src" -name Cargo.toml -not -path "$src/fuzz/*" \
  -exec sed -n '/^\[package\]/,/^\[/s/^name *= *"\([^"]*\)".*/\1/p' {} +)
if ((${#own[@]} == 0)); then
  echo "upgrade baseline: no package found in $commit" >&2
  exit 1
fi
own_names=$(printf '%s|' "${own[@]}")
own_names=${own_names%|}
own_re="^\./(\.fingerprint|build)/(${own_names})-[0-9a-f]+$|^\./deps/lib(${own_names//-/_})-[0-9a-f]+\."

started=$SECONDS
if [ -d "$target/debug/deps" ]; then
  # Libraries, build script outputs and fingerprints; not the test and bin executables in
  # deps/ (no dot in their names), which are most of target/debug's size and of no use here.
  (
    cd "$target/debug"
    { find ./.fingerprint ./build -mindepth 1 -maxdepth 1; find ./deps -maxdepth 1 -type f -name '*.*'; } |
      { grep -Ev "$own_re" || true; } | tar -c -T - -f -
  ) | tar -x -C "$build/debug"
  echo "upgrade baseline: seeded from $target/debug in $((SECONDS - started)) s" >&2
else
  echo "upgrade baseline: no $target/debug to seed from; building every dependency" >&2
fi

echo "upgrade baseline: building ${commit:0:12} (${bins[*]})" >&2
(
  cd "$src"
  # --workspace: the same feature unification as test.sh's `cargo build --workspace`, so the
  # seeded dependencies match; --bin: only the three binaries the test runs.
  CARGO_TARGET_DIR=$build cargo build --quiet --locked --workspace \
    --bin crispd --bin crisp-shim --bin crisp-bridge
)
mkdir -p "$bin.new"
for b in "${bins[@]}"; do cp "$build/debug/$b" "$bin.new/"; done
echo "$commit" >"$bin.new/.commit"
rm -rf "$bin"
mv "$bin.new" "$bin"
cleanup
echo "upgrade baseline: ${commit:0:12} built in $((SECONDS - started)) s into $bin" >&2
echo "$bin"
