"""The Kubernetes manifests (deploy/kubernetes/) keep facetalk's deployment rules.

The rules live in deploy/kubernetes/validate.py (`make k8s-lint` runs them with the
Kubernetes schemas too); here they run on every overlay, and each rule is shown to
fire on a manifest broken on purpose, so a rule that cannot fail is caught.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("k8s_validate", ROOT / "deploy/kubernetes/validate.py")
assert _spec and _spec.loader
kv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kv)

OVERLAY_NAMES = [p.name for p in kv.OVERLAYS]


def _find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def test_overlays_exist() -> None:
    assert {"standard", "keda"} <= set(OVERLAY_NAMES)


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_overlay_keeps_the_rules(overlay: str) -> None:
    folder = kv.HERE / "overlays" / overlay
    assert kv.check_lists(folder) == []
    docs = kv.resolve(folder)
    assert kv.invariants(docs) == []
    assert all(d["metadata"].get("namespace") == "facetalk" for d in docs)


def test_keda_watches_the_celery_queue() -> None:
    docs = kv.resolve(kv.HERE / "overlays" / "keda")
    scaled = _find(docs, "ScaledObject", "facetalk-worker")
    assert [t["metadata"]["listName"] for t in scaled["spec"]["triggers"]] == [kv.celery_queue_name()]


def _broken(change: str) -> list[str]:
    docs = copy.deepcopy(kv.resolve(kv.HERE / "overlays" / "keda"))
    api = _find(docs, "Deployment", "facetalk-api")["spec"]
    worker = _find(docs, "Deployment", "facetalk-worker")["spec"]
    if change == "pvc-rwo":
        _find(docs, "PersistentVolumeClaim", "facetalk-data")["spec"]["accessModes"] = ["ReadWriteOnce"]
    elif change == "worker-mount":
        worker["template"]["spec"]["containers"][0]["volumeMounts"][0]["mountPath"] = "/data"
    elif change == "readiness":
        api["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] = "/healthz"
    elif change == "root":
        worker["template"]["spec"]["securityContext"]["runAsUser"] = 0
    elif change == "two-apis":
        api["replicas"] = 2
    elif change == "cpu":
        worker["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "500m"
    elif change == "aof":
        redis = _find(docs, "StatefulSet", "facetalk-redis")["spec"]["template"]["spec"]
        args = redis["containers"][0]["args"]
        args[args.index("--appendonly") + 1] = "no"
    elif change == "list-name":
        trigger = _find(docs, "ScaledObject", "facetalk-worker")["spec"]["triggers"][0]
        trigger["metadata"]["listName"] = "celery"
    elif change == "scale-to-zero":
        _find(docs, "ScaledObject", "facetalk-worker")["spec"]["minReplicaCount"] = 0
    return kv.invariants(docs)


@pytest.mark.parametrize("change", ["pvc-rwo", "worker-mount", "readiness", "root", "two-apis", "cpu", "aof",
                                    "list-name", "scale-to-zero"])
def test_each_rule_fires(change: str) -> None:
    assert len(_broken(change)) == 1, _broken(change)


@pytest.mark.skipif(kv.kustomize_command() is None, reason="no kustomize or kubectl on PATH")
@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_kustomize_renders_what_the_resolver_reads(overlay: str) -> None:
    folder = kv.HERE / "overlays" / overlay
    rendered = kv.render(folder, kv.kustomize_command())
    assert sorted(map(kv.key, rendered)) == sorted(map(kv.key, kv.resolve(folder)))
    assert kv.invariants(rendered) == []


def test_schemas_when_available() -> None:
    pytest.importorskip("kubernetes_validate", reason="`make k8s-lint` installs it in build/k8s-validate")
    docs = kv.resolve(kv.HERE / "overlays" / "keda")
    problems, skipped = kv.schema_check(docs)
    assert problems == []
    assert len(skipped) == 2  # ScaledObject and TriggerAuthentication: no schema for KEDA's CRDs
    bad = copy.deepcopy(docs)
    _find(bad, "Deployment", "facetalk-api")["spec"]["template"]["spec"]["containers"][0]["portz"] = []
    assert kv.schema_check(bad)[0]


def test_no_kustomize_needed_for_the_resolver() -> None:
    # The resolver alone must see every file the kustomizations list.
    listed = {d["kind"] for d in kv.resolve(kv.HERE / "overlays" / "keda")}
    expected = {"Deployment", "Service", "StatefulSet", "PersistentVolumeClaim", "ConfigMap", "ScaledObject"}
    assert expected <= listed
