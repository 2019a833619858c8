"""Offline checks of manifests/ (run by scripts/validate-manifests.sh in its venv).

1. Every document of every manifests/*.yaml and manifests/examples/*.yaml file is validated
   against the Kubernetes JSON schemas that PyPI's kubernetes-validate bundles, for each of the
   given fixed Kubernetes versions, in strict mode (an unknown or misspelt field fails). A document whose
   kind has no schema fails too (kubernetes-validate itself only warns). Files that are not
   Kubernetes API objects are listed in NOT_API_OBJECTS with the reason, and checked for what
   crisp needs from them instead.
2. References inside a file resolve: ConfigMaps, Secrets, PVCs and service accounts that a pod
   template names exist in the same file (what `kubectl apply -f FILE` needs); every pod in
   examples/ asks for `runtimeClassName: crisp`, and each example still has what it is there
   to show (a hostPort; a PVC, ConfigMap/Secret env and readiness probes; the hardening).
3. The crisp-specific payloads: the ConfigMap's config.toml only uses keys crispd knows (from
   cri-server/src/default_config.toml), the CNI conflist is the same network as
   packaging/99-crisp.conflist and crispd's embedded default (cni/src/runtime/conf.rs), and the
   endpoints in crictl.yaml and kubelet-config.yaml are the socket in that config.

Usage: validate_manifests.py REPO_ROOT KUBERNETES_VERSION...
"""

import json
import re
import sys
import tomllib
from pathlib import Path

import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

NOT_API_OBJECTS = {
    "crictl.yaml": "crictl's own config file (/etc/crictl.yaml), not a Kubernetes API object",
    "kubelet-config.yaml": "KubeletConfiguration is a kubelet config file kind; "
    "kubernetes-validate ships schemas only for API-server objects",
}

POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}

errors = []


def fail(where, msg):
    errors.append(f"{where}: {msg}")


def pod_spec(doc):
    kind = doc.get("kind")
    if kind == "Pod":
        return doc.get("spec") or {}
    if kind in POD_TEMPLATE_KINDS:
        return ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}
    if kind == "CronJob":
        job = ((doc.get("spec") or {}).get("jobTemplate") or {}).get("spec") or {}
        return (job.get("template") or {}).get("spec") or {}
    return None


def referenced(spec):
    """(kind, name) pairs a pod spec needs to exist in its namespace."""
    refs = set()
    if spec.get("serviceAccountName"):
        refs.add(("ServiceAccount", spec["serviceAccountName"]))
    for v in spec.get("volumes") or []:
        if "configMap" in v and not v["configMap"].get("optional"):
            refs.add(("ConfigMap", v["configMap"]["name"]))
        if "secret" in v and not v["secret"].get("optional"):
            refs.add(("Secret", v["secret"]["secretName"]))
        if "persistentVolumeClaim" in v:
            refs.add(("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"]))
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        for e in c.get("env") or []:
            src = e.get("valueFrom") or {}
            for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                if key in src and not src[key].get("optional"):
                    refs.add((kind, src[key]["name"], src[key]["key"]))
        for e in c.get("envFrom") or []:
            for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                if key in e and not e[key].get("optional"):
                    refs.add((kind, e[key]["name"]))
    return refs


def object_keys(doc):
    return set((doc.get("data") or {}).keys()) | set((doc.get("stringData") or {}).keys())


def check_references(path, docs):
    have = {}
    for d in docs:
        md = d.get("metadata") or {}
        have[(d["kind"], md.get("namespace", "default"), md.get("name"))] = d
    for d in docs:
        spec = pod_spec(d)
        if spec is None:
            continue
        ns = (d.get("metadata") or {}).get("namespace", "default")
        where = f"{path} {d['kind']}/{d['metadata']['name']}"
        for ref in sorted(referenced(spec)):
            kind, name = ref[0], ref[1]
            obj = have.get((kind, ns, name))
            if obj is None:
                fail(where, f"refers to {kind} {ns}/{name}, which this file does not define")
            elif len(ref) == 3 and ref[2] not in object_keys(obj):
                fail(where, f"refers to key {ref[2]!r} of {kind} {name}, which it lacks")


def crispd_config_keys(root):
    """Keys crispd knows, as `section.key`, from its documented default config (keys that are
    commented out there, like images.import_dir, count: they are documented optional keys)."""
    keys, section = set(), ""
    text = (root / "cri-server/src/default_config.toml").read_text()
    for line in text.splitlines():
        m = re.match(r"^\[([a-z_]+)\]\s*$", line)
        if m:
            section = m.group(1)
            keys.add(section)
            continue
        m = re.match(r"^#?\s?([a-z_]+)\s*=", line)
        if m:
            keys.add(f"{section}.{m.group(1)}" if section else m.group(1))
    return keys


def flatten(table, prefix=""):
    for k, v in table.items():
        name = f"{prefix}{k}"
        yield name
        if isinstance(v, dict):
            yield from flatten(v, name + ".")


def embedded_default_conflist(root):
    src = (root / "cni/src/runtime/conf.rs").read_text()
    m = re.search(r'pub const DEFAULT_CONFLIST: &str = r#"(.*?)"#;', src, re.S)
    if not m:
        fail("cni/src/runtime/conf.rs", "DEFAULT_CONFLIST not found")
        return None
    return json.loads(m.group(1))


def check_crisp_config(root, path, doc, state):
    data = doc.get("data") or {}
    where = f"{path} ConfigMap/{doc['metadata']['name']}"
    if "config.toml" in data:
        try:
            cfg = tomllib.loads(data["config.toml"])
        except tomllib.TOMLDecodeError as e:
            fail(where, f"config.toml: {e}")
        else:
            known = crispd_config_keys(root)
            for key in flatten(cfg):
                if key not in known:
                    fail(where, f"config.toml: crispd has no key {key!r}")
            state["socket"] = cfg.get("socket", "/run/crisp/crisp.sock")
    for name, text in data.items():
        if not name.endswith((".conflist", ".conf")):
            continue
        try:
            conf = json.loads(text)
        except json.JSONDecodeError as e:
            fail(where, f"{name}: not JSON: {e}")
            continue
        ours = json.loads((root / "packaging/99-crisp.conflist").read_text())
        if conf != ours:
            fail(where, f"{name} differs from packaging/99-crisp.conflist (the image's copy)")
        embedded = embedded_default_conflist(root)
        if embedded is not None and conf != embedded:
            fail(where, f"{name} differs from crispd's embedded default network")
        state["conflist"] = True


def check_not_api_object(path, docs, state):
    sock = "unix://" + state.get("socket", "/run/crisp/crisp.sock")
    (doc,) = docs
    if path.name == "crictl.yaml":
        for k in ("runtime-endpoint", "image-endpoint"):
            if doc.get(k) != sock:
                fail(path, f"{k} is {doc.get(k)!r}, expected {sock!r}")
    elif path.name == "kubelet-config.yaml":
        if doc.get("apiVersion") != "kubelet.config.k8s.io/v1beta1":
            fail(path, "apiVersion must be kubelet.config.k8s.io/v1beta1")
        if doc.get("kind") != "KubeletConfiguration":
            fail(path, "kind must be KubeletConfiguration")
        for k in ("containerRuntimeEndpoint", "imageServiceEndpoint"):
            if doc.get(k) != sock:
                fail(path, f"{k} is {doc.get(k)!r}, expected {sock!r}")
        if doc.get("cgroupDriver") != "cgroupfs":
            fail(path, "crispd reports the cgroupfs driver: cgroupDriver must be cgroupfs")


def check_examples(rel, docs):
    """Each example keeps showing what it is there to show."""
    specs = [pod_spec(d) for d in docs if pod_spec(d) is not None]
    ctrs = [c for sp in specs for c in sp.get("containers") or []]
    kinds = {d["kind"] for d in docs}
    need = []
    if rel.name == "web-hostport.yaml":
        need.append(("a hostPort", any(p.get("hostPort") for c in ctrs for p in c.get("ports") or [])))
    elif rel.name == "app-with-database.yaml":
        need += [
            ("a PersistentVolumeClaim in use", "PersistentVolumeClaim" in kinds and any(
                "persistentVolumeClaim" in v for sp in specs for v in sp.get("volumes") or [])),
            ("env from a ConfigMap", any("configMapKeyRef" in (e.get("valueFrom") or {})
                                         for c in ctrs for e in c.get("env") or [])),
            ("env from a Secret", any("secretKeyRef" in (e.get("valueFrom") or {})
                                      for c in ctrs for e in c.get("env") or [])),
            ("a readiness probe on every container", bool(ctrs) and all(
                "readinessProbe" in c for c in ctrs)),
        ]
    elif rel.name == "hardened.yaml":
        for sp in specs:
            psc = sp.get("securityContext") or {}
            tmp_vols = {m["name"] for c in ctrs for m in c.get("volumeMounts") or []
                        if m["mountPath"] == "/tmp"}
            need.append(("/tmp on an emptyDir", any(
                v["name"] in tmp_vols and "emptyDir" in v for v in sp.get("volumes") or [])))
            for c in ctrs:
                sc = {**psc, **(c.get("securityContext") or {})}
                limits = (c.get("resources") or {}).get("limits") or {}
                need += [
                    ("runAsNonRoot with a runAsUser", sc.get("runAsNonRoot") is True
                     and (sc.get("runAsUser") or 0) > 0),
                    ("readOnlyRootFilesystem", sc.get("readOnlyRootFilesystem") is True),
                    ("capabilities drop ALL", (sc.get("capabilities") or {}).get("drop") == ["ALL"]),
                    ("seccomp RuntimeDefault", (sc.get("seccompProfile") or {}).get("type")
                     == "RuntimeDefault"),
                    ("allowPrivilegeEscalation false", sc.get("allowPrivilegeEscalation") is False),
                    ("memory and CPU limits", "memory" in limits and "cpu" in limits),
                ]
    for what, ok in need:
        if not ok:
            fail(rel, f"the example lost {what}")


def main():
    root, versions = Path(sys.argv[1]), sys.argv[2:]
    mdir = root / "manifests"
    files = sorted(mdir.glob("*.yaml")) + sorted((mdir / "examples").glob("*.yaml"))
    files += sorted(mdir.glob("*.yml")) + sorted((mdir / "examples").glob("*.yml"))
    state, ndocs, later = {}, 0, []
    for path in files:
        rel = path.relative_to(root)
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as e:
            fail(rel, f"not YAML: {e}")
            continue
        if path.parent == mdir and path.name in NOT_API_OBJECTS:
            print(f"skip schema  {rel}: {NOT_API_OBJECTS[path.name]} (checked for crisp's endpoints)")
            later.append((rel, docs))
            continue
        if not docs:
            fail(rel, "no documents")
        for d in docs:
            if not isinstance(d, dict) or "apiVersion" not in d or "kind" not in d:
                fail(rel, "a document without apiVersion and kind")
                continue
            name = f"{d['kind']}/{(d.get('metadata') or {}).get('name')}"
            ok = True
            for version in versions:
                try:
                    kubernetes_validate.validate(d, version, strict=True)
                except ValidationError as e:
                    loc = ".".join(str(p) for p in e.absolute_path) or "(top)"
                    fail(rel, f"{name}: Kubernetes {version}: {loc}: {e.message}")
                    ok = False
                except SchemaNotFoundError as e:
                    fail(rel, f"{name}: {e.message}")
                    ok = False
            if not ok:
                continue
            ndocs += 1
            if d["kind"] == "ConfigMap":
                check_crisp_config(root, rel, d, state)
            spec = pod_spec(d)
            if spec is not None and path.parent.name == "examples":
                if spec.get("runtimeClassName") != "crisp":
                    fail(rel, f"{name}: examples must set runtimeClassName: crisp")
        api_docs = [d for d in docs if isinstance(d, dict) and "kind" in d]
        check_references(rel, api_docs)
        if path.parent.name == "examples":
            check_examples(rel, api_docs)
        print(f"valid        {rel}: {len(docs)} document(s)")
    for rel, docs in later:
        check_not_api_object(rel, docs, state)
    rc = (root / "manifests/runtimeclass.yaml").read_text()
    if "handler: crisp" not in rc:
        fail("manifests/runtimeclass.yaml", "handler must be crisp (the handler crispd accepts)")
    if not state.get("conflist"):
        fail("manifests/daemonset.yaml", "no ConfigMap with the crisp CNI conflist found")
    if errors:
        for e in dict.fromkeys(errors):
            print(f"ERROR {e}", file=sys.stderr)
        sys.exit(1)
    print(f"manifests: {ndocs} objects valid against Kubernetes {', '.join(versions)} (strict)")


if __name__ == "__main__":
    main()
