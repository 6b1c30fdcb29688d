"""Offline checks of facetalk's Kubernetes manifests (`make k8s-lint`); no cluster needed.

Three layers, because no single offline tool covers all of it:

1. every kustomization's resource and component lists point at files that exist, and
   each overlay is rendered: with ``kubectl kustomize`` or ``kustomize`` when one is on
   PATH, and always with a small resolver of our own (base + components + namespace;
   these kustomizations use no patches) whose (kind, name) set must match kustomize's;
2. every rendered object is validated against the Kubernetes OpenAPI schemas (strict:
   unknown fields are errors) with ``kubernetes-validate`` for several API versions.
   KEDA's ScaledObject and TriggerAuthentication are custom resources with no schema
   there: they are reported as skipped, with the reason, and checked by layer 3;
3. facetalk's own invariants, which a schema cannot know: API and workers mount the same
   ReadWriteMany claim at the storage path, probes on /readyz and /healthz, nobody runs as
   root, Redis keeps an append-only file on its volume, KEDA watches the Celery queue's
   list (its name read from facetalk's source), and what the manifests reference exists.

Run with the venv `make k8s-lint` makes (PyYAML + kubernetes-validate); the invariants
alone need only PyYAML (tests/test_deploy_manifests.py imports them).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
OVERLAYS = sorted(p.parent for p in (HERE / "overlays").glob("*/kustomization.yaml"))
#: Kubernetes API versions checked: an old still-common minor and the newest schemas shipped.
K8S_VERSIONS = ("1.29.0", "1.37.0")
CUSTOM_GROUPS = ("keda.sh/",)
STORAGE_CLAIM = "facetalk-data"
#: Kinds that are not namespaced (the namespace transformer leaves them alone).
CLUSTER_KINDS = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole", "ClusterRoleBinding"}

Doc = dict[str, Any]


def load_docs(path: Path) -> list[Doc]:
    """The YAML documents of one file, empty ones dropped."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kustomization(folder: Path) -> Doc:
    """The kustomization.yaml of a folder (a base, a component or an overlay)."""
    return yaml.safe_load((folder / "kustomization.yaml").read_text())


def check_lists(folder: Path) -> list[str]:
    """Problems with a kustomization's resource/component lists, recursively."""
    problems = []
    k = kustomization(folder)
    for key in ("resources", "components"):
        for entry in k.get(key, []):
            target = (folder / entry).resolve()
            if target.is_dir():
                if not (target / "kustomization.yaml").is_file():
                    problems.append(f"{folder.name}: {key} entry {entry} has no kustomization.yaml")
                else:
                    problems += check_lists(target)
            elif not target.is_file():
                problems.append(f"{folder.name}: {key} entry {entry} does not exist")
    return problems


def resolve(folder: Path, namespace: str | None = None) -> list[Doc]:
    """Our own rendering of a kustomization: its resources and components, namespaced.

    Enough for these files (no patches, no generators); ``images`` is applied so the
    container images read as kustomize writes them.
    """
    k = kustomization(folder)
    namespace = k.get("namespace", namespace)
    docs: list[Doc] = []
    for entry in [*k.get("resources", []), *k.get("components", [])]:
        target = (folder / entry).resolve()
        docs += resolve(target, namespace) if target.is_dir() else load_docs(target)
    images = {i["name"]: f"{i.get('newName', i['name'])}:{i['newTag']}" for i in k.get("images", [])}
    for d in docs:
        if namespace and d["kind"] not in CLUSTER_KINDS:
            d.setdefault("metadata", {})["namespace"] = namespace
        for c in pod_spec(d).get("containers", []) if pod_spec(d) else []:
            c["image"] = images.get(c["image"], c["image"])
    return docs


def kustomize_command() -> list[str] | None:
    """How to run kustomize here, if at all (kubectl has it built in since 1.14)."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def render(folder: Path, command: list[str]) -> list[Doc]:
    """An overlay rendered by kustomize itself."""
    out = subprocess.run([*command, str(folder)], check=True, capture_output=True, text=True, timeout=120)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def key(d: Doc) -> tuple[str, str]:
    """(kind, name) of an object."""
    return d["kind"], d["metadata"]["name"]


def pod_spec(d: Doc) -> Doc:
    """The pod template's spec of a workload, or {}."""
    if d.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return d["spec"]["template"]["spec"]
    return {}


def celery_queue_name(src: Path = REPO / "src") -> str:
    """The Celery queue's name as facetalk's source defines it (``CELERY_QUEUE = "..."``).

    Read from the source rather than imported, so moving the module does not break this.
    """
    found = {m.group(1) for f in src.rglob("*.py")
             for m in re.finditer(r'^CELERY_QUEUE\s*(?::\s*str)?\s*=\s*"([^"]+)"', f.read_text(), re.M)}
    if len(found) != 1:
        raise LookupError(f"expected one CELERY_QUEUE definition under {src}, found {sorted(found)}")
    return found.pop()


def env_of(container: Doc) -> dict[str, Any]:
    """A container's env entries by name (values or valueFrom dicts)."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def invariants(docs: list[Doc]) -> list[str]:
    """facetalk's deployment rules checked on one rendered overlay; returns the problems."""
    p: list[str] = []
    by = {key(d): d for d in docs}
    config = by.get(("ConfigMap", "facetalk-config"), {}).get("data", {})
    storage_path = config.get("FACETALK_STORAGE")
    if not storage_path:
        p.append("ConfigMap facetalk-config has no FACETALK_STORAGE")
    pvc = by.get(("PersistentVolumeClaim", STORAGE_CLAIM))
    if not pvc or "ReadWriteMany" not in pvc["spec"].get("accessModes", []):
        p.append(f"PersistentVolumeClaim {STORAGE_CLAIM} missing or not ReadWriteMany")

    for name, verb in (("facetalk-api", "serve"), ("facetalk-worker", "worker")):
        dep = by.get(("Deployment", name))
        if not dep:
            p.append(f"Deployment {name} missing")
            continue
        spec = pod_spec(dep)
        c = spec["containers"][0]
        if c.get("command", [])[:2] != ["facetalk", verb]:
            p.append(f"{name}: command is not `facetalk {verb}`")
        if not str(env_of(c).get("FACETALK_QUEUE", "")).startswith("redis://"):
            p.append(f"{name}: FACETALK_QUEUE is not a redis:// URL")
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
                  for v in spec.get("volumes", []) if "persistentVolumeClaim" in v}
        mounts = [m["mountPath"] for m in c.get("volumeMounts", []) if claims.get(m["name"]) == STORAGE_CLAIM]
        if mounts != [storage_path]:
            p.append(f"{name}: {STORAGE_CLAIM} mounted at {mounts}, not at FACETALK_STORAGE {storage_path}")
        for field in ("requests", "limits"):
            if "memory" not in c.get("resources", {}).get(field, {}):
                p.append(f"{name}: no memory {field}")

    api = by.get(("Deployment", "facetalk-api"))
    if api:
        c = pod_spec(api)["containers"][0]
        if api["spec"].get("replicas", 1) != 1 or api["spec"].get("strategy", {}).get("type") != "Recreate":
            p.append("facetalk-api: needs replicas 1 and strategy Recreate (one SQLite writer)")
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            if c.get(probe, {}).get("httpGet", {}).get("path") != path:
                p.append(f"facetalk-api: {probe} is not GET {path}")
        ports = {pt["name"]: pt["containerPort"] for pt in c.get("ports", [])}
        svc = by.get(("Service", "facetalk-api"))
        if not svc or any(sp["targetPort"] not in ports and sp["targetPort"] not in ports.values()
                          for sp in svc["spec"]["ports"]):
            p.append("Service facetalk-api missing or its targetPort is not a port of the API container")
        elif svc["spec"]["selector"].items() > api["spec"]["template"]["metadata"]["labels"].items():
            p.append("Service facetalk-api selects no API pod")

    worker = by.get(("Deployment", "facetalk-worker"))
    if worker:
        c = pod_spec(worker)["containers"][0]
        cpu = str(c.get("resources", {}).get("requests", {}).get("cpu", "0"))
        cores = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
        renders = int(env_of(c).get("FACETALK_WORKERS") or 1)
        if cores < 1.75 * renders:
            p.append(f"facetalk-worker: requests {cores} cores for {renders} render(s); "
                     "one render keeps ~1.75 busy")

    for d in docs:
        spec = pod_spec(d)
        if not spec:
            continue
        sc = spec.get("securityContext", {})
        if sc.get("runAsNonRoot") is not True or sc.get("runAsUser", 0) == 0:
            p.append(f"{d['metadata']['name']}: pod may run as root")
        for c in spec["containers"]:
            csc = c.get("securityContext", {})
            if csc.get("allowPrivilegeEscalation") is not False:
                p.append(f"{d['metadata']['name']}/{c['name']}: allowPrivilegeEscalation is not false")

    redis = by.get(("StatefulSet", "facetalk-redis"))
    if redis:
        c = pod_spec(redis)["containers"][0]
        args = c.get("args", [])
        if "--appendonly" not in args or args[args.index("--appendonly") + 1] != "yes":
            p.append("facetalk-redis: not started with --appendonly yes")
        data_dir = args[args.index("--dir") + 1] if "--dir" in args else "/data"
        templates = {t["metadata"]["name"] for t in redis["spec"].get("volumeClaimTemplates", [])}
        if not any(m["mountPath"] == data_dir and m["name"] in templates for m in c.get("volumeMounts", [])):
            p.append(f"facetalk-redis: its --dir {data_dir} is not on a volumeClaimTemplate")
        if ("Service", redis["spec"]["serviceName"]) not in by:
            p.append("facetalk-redis: its serviceName has no Service")

    for d in docs:
        if d["kind"] != "ScaledObject":
            continue
        target = d["spec"]["scaleTargetRef"]["name"]
        if ("Deployment", target) not in by:
            p.append(f"ScaledObject {d['metadata']['name']}: target Deployment {target} not in the render")
        if d["spec"].get("minReplicaCount", 0) < 1:
            p.append("ScaledObject: minReplicaCount below 1 leaves /readyz without a worker")
        queue = celery_queue_name()
        for t in d["spec"]["triggers"]:
            if t["type"] == "redis" and t["metadata"].get("listName") != queue:
                p.append(f"ScaledObject: listName {t['metadata'].get('listName')} is not the queue {queue}")
            ref = t.get("authenticationRef", {}).get("name")
            if ref and ("TriggerAuthentication", ref) not in by:
                p.append(f"ScaledObject: TriggerAuthentication {ref} not in the render")
    return p


def schema_check(docs: list[Doc]) -> tuple[list[str], list[str]]:
    """(problems, skipped) from kubernetes-validate's strict schemas, for each version."""
    import kubernetes_validate

    problems, skipped = [], []
    for d in docs:
        name = "{}/{}".format(*key(d))
        if d["apiVersion"].startswith(CUSTOM_GROUPS):
            skipped.append(f"{name}: custom resource ({d['apiVersion']}), no schema in kubernetes-validate; "
                           "checked by the invariants instead")
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(d, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                problems.append(f"{name} (Kubernetes {version}): {exc.message} at {list(exc.path)}")
            except kubernetes_validate.SchemaNotFoundError:
                problems.append(f"{name}: no schema for {d['apiVersion']} in Kubernetes {version}")
    return problems, skipped


def say(line: str) -> None:
    """One line of the report on stdout (this is a command, not library code)."""
    sys.stdout.write(line + "\n")


def main() -> int:
    """Check every overlay; print what was checked and with what; exit 1 on any problem."""
    import kubernetes_validate.version

    problems = check_lists(HERE / "base")
    for folder in (HERE / "components").iterdir():
        problems += check_lists(folder)
    command = kustomize_command()
    say(f"kubernetes-validate {kubernetes_validate.version.__version__}, strict schemas of Kubernetes "
          f"{', '.join(K8S_VERSIONS)}; kustomize: {' '.join(command) if command else 'none on PATH'}")
    for overlay in OVERLAYS:
        problems += check_lists(overlay)
        ours = resolve(overlay)
        if command:
            docs = render(overlay, command)
            if sorted(map(key, docs)) != sorted(map(key, ours)):
                problems.append(f"{overlay.name}: kustomize renders {sorted(map(key, docs))}, "
                                f"our resolver {sorted(map(key, ours))}")
        else:
            docs = ours
        found, skipped = schema_check(docs)
        found += invariants(docs)
        problems += [f"{overlay.name}: {f}" for f in found]
        kinds = ", ".join(f"{k}/{n}" for k, n in sorted(map(key, docs)))
        say(f"overlays/{overlay.name}: {len(docs)} objects ({kinds})")
        say(f"  rendered by {'kustomize and ' if command else ''}our resolver; "
              f"schema problems and invariant problems: {len(found)}")
        for s in skipped:
            say(f"  skipped schema: {s}")
    for problem in problems:
        say(f"PROBLEM: {problem}")
    say(f"k8s-lint: {'FAILED' if problems else 'ok'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
