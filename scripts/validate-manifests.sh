#!/usr/bin/env bash
# Offline checks of manifests/ and packaging/ (scripts/test.sh runs this; so can you, as any
# user, once scripts/install-deps.sh has installed python3-venv, systemd and shellcheck):
#   1. every Kubernetes object in manifests/*.yaml and manifests/examples/*.yaml against the
#      schemas of Kubernetes 1.30 and 1.37 bundled in PyPI's kubernetes-validate, strict (unknown
#      fields fail), plus references and crisp's own payloads (scripts/validate_manifests.py);
#   2. manifests/crispd.service with `systemd-analyze verify`;
#   3. packaging/crisp-install.sh (the DaemonSet's installer) with shellcheck and a dry run
#      against a scratch "host" directory;
#   4. that the crates and binaries packaging/Containerfile builds exist (cargo metadata).
# The venv lives in target/manifests-venv and is reused while the pinned versions below are
# unchanged. Fails on the first failing step.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

# kubernetes-validate 1.37.0 bundles schemas for Kubernetes 1.25 to 1.37 (no network needed).
# The manifests are checked against the oldest release they aim at, 1.30, and the newest the
# package knows, so that a field added later or removed since fails either way.
K8S_VERSIONS=(1.30.0 1.37.0)
REQUIREMENTS=(
  kubernetes-validate==1.37.0
  jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0
  rpds-py==2026.9.1 attrs==26.1.0 PyYAML==6.0.3 packaging==26.3
  importlib_resources==7.1.0 typing_extensions==4.16.0
)

venv=target/manifests-venv
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "${REQUIREMENTS[*]}" ] ||
  ! "$venv/bin/python" -c 'import kubernetes_validate' 2>/dev/null; then
  echo "validate-manifests: creating $venv"
  rm -rf "$venv"
  mkdir -p target
  # Debian's python3 (python3-venv installs ensurepip for it), else whatever python3 is.
  py=/usr/bin/python3
  [ -x "$py" ] || py=$(command -v python3)
  "$py" -m venv "$venv"
  # Wheels only: rpds-py would otherwise fall back to a Rust build from source.
  "$venv/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: "${REQUIREMENTS[@]}"
  echo "${REQUIREMENTS[*]}" >"$stamp"
fi

# 1. Schemas, references, payloads.
"$venv/bin/python" scripts/validate_manifests.py "$root" "${K8S_VERSIONS[@]}"

# 2. The systemd unit. `systemd-analyze verify` also checks that ExecStart's binary exists and
# is executable, and crispd is not installed here (nor need it be built yet: this runs before
# cargo). So it verifies a copy whose only change is crispd's path, pointing at an executable
# stub; every other line is the unit as shipped. It exits 0 on warnings such as an unknown key
# or a bad value ("Unknown key 'KillMod'", "Failed to parse kill mode"), so any line it prints
# about the unit fails the check too. Lines about other units (the targets it depends on, as
# installed on this machine) are shown but are not ours to fix.
command -v systemd-analyze >/dev/null || {
  echo "validate-manifests: systemd-analyze missing (scripts/install-deps.sh installs systemd)" >&2
  exit 1
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
unit=manifests/crispd.service
grep -qx 'KillMode=process' "$unit" || {
  echo "validate-manifests: $unit must keep KillMode=process (containers survive restarts)" >&2
  exit 1
}
grep -Eq '^ExecStart=/usr/local/bin/crispd( |$)' "$unit" || {
  echo "validate-manifests: $unit: ExecStart is not /usr/local/bin/crispd ..." >&2
  exit 1
}
mkdir -p "$tmp/unit" "$tmp/bin"
printf '#!/bin/sh\nexit 0\n' >"$tmp/bin/crispd"
chmod +x "$tmp/bin/crispd"
sed -E "s#^ExecStart=/usr/local/bin/crispd( |$)#ExecStart=$tmp/bin/crispd\1#" "$unit" >"$tmp/unit/crispd.service"
grep -q "^ExecStart=$tmp/bin/crispd" "$tmp/unit/crispd.service"
set +e
out=$(systemd-analyze verify --man=no "$tmp/unit/crispd.service" 2>&1)
status=$?
set -e
[ -z "$out" ] || printf '%s\n' "$out"
if [ "$status" -ne 0 ] || grep -q 'crispd\.service' <<<"$out"; then
  echo "validate-manifests: systemd-analyze verify $unit failed" >&2
  exit 1
fi
echo "valid        $unit (systemd-analyze verify)"

# 3. The installer: lint, then a dry run into a scratch host with stub binaries and a stub
# for the host commands (nsenter ... systemctl/ldd/test), twice: the second run must find
# everything in place and only check that crispd is up.
if command -v shellcheck >/dev/null; then
  shellcheck packaging/crisp-install.sh scripts/validate-manifests.sh
  echo "valid        packaging/crisp-install.sh scripts/validate-manifests.sh (shellcheck)"
else
  echo "validate-manifests: shellcheck missing (scripts/install-deps.sh installs it)" >&2
  exit 1
fi
h=$tmp/host
mkdir -p "$h/usr/local/bin" "$h/opt/cni/bin" "$h/etc/systemd/system" "$h/etc/crisp" \
  "$h/etc/cni/net.d" "$tmp/src/bin" "$tmp/conf"
for b in crispd crisp-shim crisp-bridge; do printf '#!/bin/sh\n# %s\n' "$b" >"$tmp/src/bin/$b"; done
cp manifests/crispd.service "$tmp/src/crispd.service"
cp cri-server/src/default_config.toml "$tmp/src/config.toml"
cp packaging/99-crisp.conflist "$tmp/src/99-crisp.conflist"
"$venv/bin/python" - "$tmp/conf" <<'EOF'
import sys, yaml
for d in yaml.safe_load_all(open("manifests/daemonset.yaml")):
    if d and d["kind"] == "ConfigMap" and d["metadata"]["name"] == "crisp-config":
        for k, v in d["data"].items():
            open(f"{sys.argv[1]}/{k}", "w").write(v)
EOF
# The stub "host": logs each command; `test` answers for the scratch host's paths, with the
# socket and /run/systemd/system always present; systemctl is-active says yes.
cat >"$tmp/host-exec" <<EOF
#!/bin/sh
echo "\$*" >>"$tmp/host.log"
case "\$1" in
  test) exit 0 ;;
  ldd) echo "	libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6"; exit 0 ;;
  sh) exit 0 ;;
  systemctl|/usr/local/bin/crispd) exit 0 ;;
  *) echo "unexpected host command: \$*" >&2; exit 1 ;;
esac
EOF
chmod +x "$tmp/host-exec"
dry_run() {
  CRISP_HOST_ROOT=$h CRISP_SRC=$tmp/src CRISP_CONFIG_DIR=$tmp/conf \
    CRISP_HOST_EXEC=$tmp/host-exec CRISP_SETTLE_SECONDS=0 packaging/crisp-install.sh >"$tmp/install.out" 2>&1 || {
    cat "$tmp/install.out" >&2
    echo "validate-manifests: installer dry run failed" >&2
    exit 1
  }
}
expect() { grep -qx -- "$1" "$2" || {
  echo "validate-manifests: installer dry run: expected '$1' in $2:" >&2
  cat "$2" >&2
  exit 1
}; }
dry_run
for f in usr/local/bin/crispd usr/local/bin/crisp-shim opt/cni/bin/crisp-bridge; do
  [ -x "$h/$f" ] || { echo "validate-manifests: installer did not install /$f" >&2; exit 1; }
done
same() { cmp -s "$1" "$2" || {
  echo "validate-manifests: installer dry run: $2 is not $1" >&2
  exit 1
}; }
same manifests/crispd.service "$h/etc/systemd/system/crispd.service"
same "$tmp/conf/config.toml" "$h/etc/crisp/config.toml"
same "$tmp/conf/99-crisp.conflist" "$h/etc/cni/net.d/99-crisp.conflist"
expect "/usr/local/bin/crispd config check /etc/crisp/config.toml" "$tmp/host.log"
expect "systemctl daemon-reload" "$tmp/host.log"
expect "systemctl enable crispd.service" "$tmp/host.log"
expect "systemctl restart crispd.service" "$tmp/host.log"
: >"$tmp/host.log"
dry_run
expect "crisp-install: unchanged /usr/local/bin/crispd" "$tmp/install.out"
if grep -q restart "$tmp/host.log"; then
  echo "validate-manifests: installer restarted crispd although nothing changed" >&2
  exit 1
fi
echo "valid        packaging/crisp-install.sh (dry run: installs, enables, restarts only on change)"

# 4. What packaging/Containerfile builds: these crates exist and give the three binaries.
"$venv/bin/python" - <<'EOF'
import json, re, subprocess, sys
cf = open("packaging/Containerfile").read()
build = re.search(r"cargo build --release --locked ((?:-p \S+ ?)+)", cf).group(1).split()[1::2]
r = subprocess.run(["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"],
                   capture_output=True, text=True)
if r.returncode:
    sys.exit(f"cargo metadata failed:\n{r.stderr}")
meta = json.loads(r.stdout)
bins = {t["name"] for p in meta["packages"] if p["name"] in build
        for t in p["targets"] if "bin" in t["kind"]}
missing = {"crispd", "crisp-shim", "crisp-bridge"} - bins
unknown = set(build) - {p["name"] for p in meta["packages"]}
if missing or unknown:
    sys.exit(f"packaging/Containerfile: unknown crates {sorted(unknown)}, binaries not built {sorted(missing)}")
print(f"valid        packaging/Containerfile builds {sorted(bins)}")
EOF
echo "validate-manifests: all checks passed"
