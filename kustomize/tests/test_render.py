"""Rendering and schema validation of every overlay and every component: kubectl kustomize,
the Kubernetes OpenAPI schemas of two current minors for built-in kinds (kubernetes-validate
--strict), and the released CRD schemas in ../shared/crd-schemas for every custom resource
(strict: additionalProperties false, so a misspelt or invented field fails)."""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from conftest import (COMPONENT_NEEDS, COMPONENTS_DIR, KUSTOMIZE, OPTIONAL_COMPONENTS, RENDER_TARGETS,
                      TARGETS, rendered, rendered_text, shared_dir)

K8S_VERSIONS = os.environ.get("SHIPSHAPE_K8S_VERSIONS", "1.32.0 1.34.0").split()
# API groups served by Kubernetes itself (kubernetes-validate has their schemas). Any other
# group containing a dot is a custom resource and needs a CRD schema.
BUILTIN_GROUPS = {"", "apps", "batch", "policy", "autoscaling", "networking.k8s.io", "rbac.authorization.k8s.io",
                  "storage.k8s.io", "scheduling.k8s.io", "coordination.k8s.io", "node.k8s.io",
                  "discovery.k8s.io", "admissionregistration.k8s.io", "apiextensions.k8s.io"}
# Cluster-scoped custom kinds: kustomize would give them the overlay's namespace.
CLUSTER_SCOPED = {("kyverno.io", "ClusterPolicy"), ("cert-manager.io", "ClusterIssuer"),
                  ("policy.sigstore.dev", "ClusterImagePolicy"), ("gateway.networking.k8s.io", "GatewayClass")}


def group_of(doc) -> str:
    return doc["apiVersion"].rpartition("/")[0]


def is_custom(doc) -> bool:
    return group_of(doc) not in BUILTIN_GROUPS


def schema_path(api_version: str, kind: str) -> Path:
    group, _, version = api_version.rpartition("/")
    return shared_dir() / "crd-schemas" / group / f"{kind.lower()}_{version}.json"


def python_patterns(schema, where="", dropped=None):
    """The schema with Go regular expressions made usable by Python's re: a leading `^(?i)`
    becomes `(?i)^` (same meaning); a pattern Python still cannot compile is removed and
    listed in `dropped` (that field is not checkable here; everything else still is)."""
    dropped = [] if dropped is None else dropped

    def walk(node, path):
        if isinstance(node, dict):
            pat = node.get("pattern")
            if isinstance(pat, str):
                fixed = re.sub(r"^\^\(\?([a-z]+)\)", r"(?\1)^", pat)
                try:
                    re.compile(fixed)
                    node["pattern"] = fixed
                except re.error as e:
                    del node["pattern"]
                    dropped.append(f"{path or '/'}: {pat!r} ({e})")
            for k, v in node.items():
                walk(v, f"{path}/{k}" if k not in ("properties", "items") else path)
        elif isinstance(node, list):
            for v in node:
                walk(v, path)

    s = copy.deepcopy(schema)
    walk(s, where)
    return s, dropped


@functools.cache
def crd_validator(api_version: str, kind: str):
    path = schema_path(api_version, kind)
    if not path.exists():
        pytest.fail(f"no CRD schema for {kind} ({api_version}): expected {path}")
    schema, dropped = python_patterns(json.loads(path.read_text()))
    return jsonschema.Draft7Validator(schema), tuple(dropped)


def crd_errors(doc):
    validator, _ = crd_validator(doc["apiVersion"], doc["kind"])
    return sorted(("/".join(map(str, e.absolute_path)) + ": " + e.message for e in validator.iter_errors(doc)))


@pytest.mark.parametrize("target", RENDER_TARGETS)
def test_renders(target):
    docs = rendered(target)
    assert docs, f"{target} renders nothing"
    names = [(d["apiVersion"], d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(names) == len(set(names)), "duplicate objects"
    if target in TARGETS or target.startswith("component:"):
        kinds = {d["kind"] for d in docs}
        assert "Deployment" in kinds and "ConfigMap" in kinds, kinds


def test_every_component_is_rendered_and_used_by_prod_or_optional():
    on_disk = {p.parent.name for p in COMPONENTS_DIR.glob("*/kustomization.yaml")}
    assert on_disk == set(COMPONENT_NEEDS), f"components not rendered by the tests: {on_disk ^ set(COMPONENT_NEEDS)}"

    def used(kdir: Path, seen):
        k = yaml.safe_load((kdir / "kustomization.yaml").read_text())
        for c in k.get("components", []):
            p = (kdir / c).resolve()
            if p.parent == COMPONENTS_DIR.resolve() and p.name not in seen:
                seen.add(p.name)
                used(p, seen)
        return seen

    prod = used(TARGETS["prod"], set())
    for c in on_disk - prod:
        assert c in OPTIONAL_COMPONENTS, f"components/{c} is neither used by overlays/prod nor listed as optional"
    doc = (KUSTOMIZE.parent / "docs" / "deployment.md").read_text()
    section = doc[doc.index("## Platform components"):]
    for c in OPTIONAL_COMPONENTS:
        assert f"components/{c}" in section, f"docs/deployment.md 'Platform components' does not explain {c}"
    for c in prod:
        assert f"components/{c}" in section, f"docs/deployment.md 'Platform components' does not describe {c}"


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("target", RENDER_TARGETS)
def test_kubernetes_schema_strict(target, version):
    exe = shutil.which("kubernetes-validate") or str(Path(sys.executable).parent / "kubernetes-validate")
    r = subprocess.run([exe, "--strict", "-k", version, "-"],
                       input=rendered_text(target), capture_output=True, text=True)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    docs = rendered(target)
    custom = {(d["apiVersion"], d["kind"]) for d in docs if is_custom(d)}
    # Kinds without a built-in schema are only warned about: they must be exactly the kinds
    # validated against CRD schemas below.
    warned = set()
    for line in out.splitlines():
        if line.startswith("WARN"):
            hit = [(a, k) for a, k in custom if f"kind {k} with api version {a}" in line]
            assert hit, line
            warned |= set(hit)
    assert warned == custom, f"built-in per kubernetes-validate but custom here: {custom - warned}"
    passed = out.count("INFO - passed")
    builtin = [d for d in docs if not is_custom(d)]
    assert passed == len(builtin), f"{passed} passed, {len(builtin)} built-in objects"


@pytest.mark.parametrize("target", RENDER_TARGETS)
def test_custom_resources_match_crd_schemas(target):
    report = []
    for d in rendered(target):
        if not is_custom(d):
            continue
        errors = crd_errors(d)
        assert not errors, f"{d['kind']}/{d['metadata']['name']}: " + "; ".join(errors)
        _, dropped = crd_validator(d["apiVersion"], d["kind"])
        scoped = (group_of(d), d["kind"]) in CLUSTER_SCOPED
        if target in ("dev", "prod", "dev-flux", "backups-restore"):
            assert ("namespace" in d["metadata"]) != scoped, (
                f"{d['kind']}/{d['metadata']['name']}: namespace {d['metadata'].get('namespace')!r} "
                f"({'cluster' if scoped else 'namespace'}-scoped)")
        report.append(f"{d['kind']}/{d['metadata']['name']} ok" + (f" (not checkable in Python: {list(dropped)})" if dropped else ""))
    print(f"\n[{target}] " + "; ".join(report))


def test_prod_has_every_platform_kind():
    kinds = {d["kind"] for d in rendered("prod") if is_custom(d)}
    assert kinds == {"PrometheusRule", "ServiceMonitor", "PodMonitor", "Cluster", "ObjectStore", "ScheduledBackup",
                     "Gateway", "Certificate", "Canary", "MetricTemplate", "GitRepository", "Kustomization",
                     "ImageRepository", "ImagePolicy", "ImageUpdateAutomation", "ClusterPolicy"}, kinds


def _doc(target, kind, name=None):
    return copy.deepcopy(next(d for d in rendered(target) if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)))


MUTANTS = [
    ("prod", "Cluster", lambda c: c["spec"].__setitem__("instancez", 3), "Additional properties"),
    ("prod", "Cluster", lambda c: c["spec"].__setitem__("instances", 0), "less than the minimum"),
    ("prod", "Cluster", lambda c: c["spec"].__setitem__("primaryUpdateMethod", "inplace"), "is not one of"),
    ("prod", "Cluster", lambda c: c["spec"]["storage"].__setitem__("size", 10), "is not of type"),
    ("prod", "Cluster", lambda c: c["spec"]["plugins"][0].__setitem__("isWalArchiver", True), "Additional properties"),
    ("prod", "ServiceMonitor", lambda s: s["spec"]["endpoints"][0].__setitem__("interval", "30 seconds"), "does not match"),
    ("prod", "PrometheusRule", lambda r: r["spec"]["groups"][1]["rules"][0].__setitem__("for", "two minutes"), "does not match"),
    ("prod", "PrometheusRule", lambda r: r["spec"]["groups"][0].pop("name"), "'name' is a required property"),
    ("prod", "PodMonitor", lambda p: p["spec"].__setitem__("podMetricEndpoints", []), "Additional properties"),
    ("prod", "ObjectStore", lambda o: o["spec"].__setitem__("retentionPolicy", "30 days"), "does not match"),
    ("prod", "ScheduledBackup", lambda s: s["spec"].__setitem__("method", "barmanCloud"), "is not one of"),
    ("prod", "Gateway", lambda g: g["spec"]["listeners"][0]["tls"].__setitem__("mode", "terminate"), "is not one of"),
    ("component:gateway", "HTTPRoute", lambda r: r["spec"]["rules"][0]["timeouts"].__setitem__("request", "20 s"), "does not match"),
    ("prod", "Certificate", lambda c: c["spec"].pop("secretName"), "'secretName' is a required property"),
    ("prod", "Canary", lambda c: c["spec"]["analysis"].__setitem__("interval", "1 minute"), "does not match"),
    ("prod", "Canary", lambda c: c["spec"]["autoscalerRef"].__setitem__("kind", "HPA"), "is not one of"),
    ("prod", "MetricTemplate", lambda m: m["spec"]["provider"].__setitem__("type", "prom"), "is not one of"),
    ("prod", "ImagePolicy", lambda p: p["spec"].__setitem__("digestReflectionPolicy", "Sometimes"), "is not one of"),
    ("prod", "ImagePolicy", lambda p: p["spec"].__setitem__("reflectDigest", "Always"), "Additional properties"),
    ("prod", "ImageUpdateAutomation", lambda a: a["spec"]["update"].__setitem__("strategy", "setters"), "is not one of"),
    ("prod", "ImageRepository", lambda r: r["spec"].__setitem__("provider", "ghcr"), "is not one of"),
    ("prod", "GitRepository", lambda g: g["spec"]["ref"].__setitem__("branchName", "main"), "Additional properties"),
    ("prod", "Kustomization", lambda k: k["spec"].pop("sourceRef"), "'sourceRef' is a required property"),
    ("prod", "ClusterPolicy", lambda p: p["spec"]["rules"][0]["verifyImages"][0].__setitem__("failureAction", "Deny"), "is not one of"),
    ("prod", "ClusterPolicy", lambda p: p["spec"]["rules"][0]["verifyImages"][0]["attestors"][0]["entries"][0]["keyless"].__setitem__("subjectRegex", "x"), "Additional properties"),
]


@pytest.mark.parametrize("target, kind, mutate, expect", MUTANTS, ids=[f"{m[1]}-{i}" for i, m in enumerate(MUTANTS)])
def test_crd_validation_rejects_bad_fields(target, kind, mutate, expect):
    """The CRD check is not a rubber stamp: typos, bad enums, patterns, minimums and missing
    required fields are caught, for every custom kind we ship."""
    doc = _doc(target, kind)
    assert not crd_errors(doc)
    mutate(doc)
    errors = crd_errors(doc)
    assert any(expect in e for e in errors), errors


def test_go_only_patterns_are_reported_not_passed():
    """A Go-only regular expression drops that one pattern (reported), the rest of the
    document is still checked: an invented field next to it fails."""
    schema = {"type": "object", "additionalProperties": False,
              "properties": {"a": {"type": "string", "pattern": "^(?i)(abort|warn)?$"},
                             "b": {"type": "string", "pattern": "^[a-z]+(?<!x)\\p{L}$"}}}
    fixed, dropped = python_patterns(schema)
    v = jsonschema.Draft7Validator(fixed)
    assert not list(v.iter_errors({"a": "WARN"})) and list(v.iter_errors({"a": "nope"}))
    assert len(dropped) == 1 and "/b" in dropped[0]
    assert list(v.iter_errors({"a": "warn", "c": 1}))
