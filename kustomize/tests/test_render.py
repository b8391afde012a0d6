"""Rendering and schema validation: kubectl kustomize, Kubernetes OpenAPI schemas of two
current minors (kubernetes-validate --strict), and the CRDs' published schemas."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from conftest import KUSTOMIZE, TARGETS, rendered, rendered_text

K8S_VERSIONS = os.environ.get("SHIPSHAPE_K8S_VERSIONS", "1.32.0 1.34.0").split()
SCHEMAS = KUSTOMIZE / "schemas"
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_prometheusrule_v1.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitor_v1.yaml",
    ("postgresql.cnpg.io/v1", "Cluster"): "postgresql.cnpg.io_cluster_v1.yaml",
}


def strict(schema):
    """Structural schema -> JSON Schema with the API server's strict field validation:
    objects reject properties their schema does not list (unless preserve-unknown-fields)."""
    s = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (node.get("type") == "object" and "properties" in node
                    and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(s)
    return s


def crd_validator(api_version, kind):
    schema = yaml.safe_load((SCHEMAS / CRD_SCHEMAS[(api_version, kind)]).read_text())
    return jsonschema.Draft7Validator(strict(schema))


@pytest.mark.parametrize("target", list(TARGETS))
def test_renders(target):
    docs = rendered(target)
    kinds = sorted({d["kind"] for d in docs})
    assert "Deployment" in kinds and "Service" in kinds and "ConfigMap" in kinds, kinds
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(names) == len(set(names)), "duplicate objects"


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("target", list(TARGETS))
def test_kubernetes_schema_strict(target, version):
    exe = shutil.which("kubernetes-validate") or str(Path(sys.executable).parent / "kubernetes-validate")
    r = subprocess.run([exe, "--strict", "-k", version, "-"],
                       input=rendered_text(target), capture_output=True, text=True)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    # Kinds without a built-in schema are only warned about: they must be exactly the CRD
    # kinds validated by test_custom_resources_match_crd_schemas.
    for line in out.splitlines():
        if line.startswith("WARN"):
            assert any(f"kind {k} with api version {a}" in line for a, k in CRD_SCHEMAS), line
    passed = out.count("INFO - passed")
    builtin = [d for d in rendered(target) if (d["apiVersion"], d["kind"]) not in CRD_SCHEMAS]
    assert passed == len(builtin), f"{passed} passed, {len(builtin)} built-in objects"


@pytest.mark.parametrize("target", list(TARGETS))
def test_custom_resources_match_crd_schemas(target):
    crs = [d for d in rendered(target) if (d["apiVersion"], d["kind"]) in CRD_SCHEMAS]
    if target == "prod":
        assert {d["kind"] for d in crs} == {"PrometheusRule", "ServiceMonitor", "Cluster"}
    for d in crs:
        errors = sorted(crd_validator(d["apiVersion"], d["kind"]).iter_errors(d), key=str)
        assert not errors, f"{d['kind']}/{d['metadata']['name']}: " + "; ".join(
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
    unknown = [(d["apiVersion"], d["kind"]) for d in rendered(target)
               if "." in d["apiVersion"].split("/")[0] and (d["apiVersion"], d["kind"]) not in CRD_SCHEMAS
               and not d["apiVersion"].split("/")[0].endswith(".k8s.io")]
    assert not unknown, f"custom kinds without a schema in kustomize/schemas: {unknown}"


@pytest.mark.parametrize("mutate, expect", [
    (lambda c: c["spec"].__setitem__("instancez", 3), "Additional properties"),
    (lambda c: c["spec"].__setitem__("instances", 0), "less than the minimum"),
    (lambda c: c["spec"].__setitem__("primaryUpdateMethod", "inplace"), "is not one of"),
    (lambda c: c["spec"]["storage"].__setitem__("size", 10), "is not of type"),
])
def test_crd_validation_rejects_bad_cluster(mutate, expect):
    """The CRD check is not a rubber stamp: typos, bad enums and minimums are caught."""
    cluster = next(d for d in rendered("prod") if d["kind"] == "Cluster")
    mutate(cluster)
    errors = list(crd_validator("postgresql.cnpg.io/v1", "Cluster").iter_errors(cluster))
    assert any(expect in e.message for e in errors), [e.message for e in errors]


def test_crd_validation_rejects_bad_servicemonitor_and_rule():
    docs = rendered("prod")
    sm = next(d for d in docs if d["kind"] == "ServiceMonitor")
    sm["spec"]["endpoints"][0]["interval"] = "30 seconds"
    assert list(crd_validator("monitoring.coreos.com/v1", "ServiceMonitor").iter_errors(sm))
    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    rule["spec"]["groups"][1]["rules"][0]["for"] = "two minutes"
    del rule["spec"]["groups"][0]["name"]
    assert len(list(crd_validator("monitoring.coreos.com/v1", "PrometheusRule").iter_errors(rule))) == 2
