"""Shared fixtures: rendered manifests, the binary, a throwaway PostgreSQL database."""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

KUSTOMIZE = Path(__file__).resolve().parents[1]
REPO = KUSTOMIZE.parent
TARGETS = {
    "base": KUSTOMIZE / "base",
    "dev": KUSTOMIZE / "overlays" / "dev",
    "prod": KUSTOMIZE / "overlays" / "prod",
}
OVERLAYS = ["dev", "prod"]
COMPONENTS_DIR = KUSTOMIZE / "components"
# Each component is also rendered on its own over the base, after the components it patches.
COMPONENT_NEEDS = {
    "hpa": [],
    "network-policy": [],
    "database-secret": [],
    "postgres": [],
    "monitoring": [],
    "metrics-port": ["monitoring", "network-policy"],
    "gateway": ["network-policy"],
    "backups": ["postgres"],
    "canary": ["hpa", "network-policy", "monitoring", "gateway"],
    "gitops": [],
    "gitops-dev": [],
    "signed-images": [],
}
# Components the prod overlay does not use, and why (docs/deployment.md says the same).
OPTIONAL_COMPONENTS = {
    "gitops-dev": "Flux for a dev cluster (overlays/dev-flux); the dev quick start must run without Flux",
}
# Everything else that renders: the optional overlays and the restore example.
EXTRA_TARGETS = {
    "dev-flux": KUSTOMIZE / "overlays" / "dev-flux",
    "backups-restore": COMPONENTS_DIR / "backups" / "restore",
}
RENDER_TARGETS = [*TARGETS, *EXTRA_TARGETS, *(f"component:{c}" for c in COMPONENT_NEEDS)]


def _component_kustomization(name: str) -> str:
    """A kustomization in a temporary directory: the base plus the component after the ones
    it needs (kustomize takes relative paths only)."""
    import tempfile
    d = Path(tempfile.mkdtemp(prefix="shipshape-component-"))
    rel = lambda p: os.path.relpath(p, d)  # noqa: E731
    comps = [rel(COMPONENTS_DIR / c) for c in [*COMPONENT_NEEDS[name], name]]
    (d / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [rel(TARGETS["base"])], "components": comps}))
    return str(d)


@functools.cache
def rendered_text(target: str) -> str:
    if target.startswith("component:"):
        d = _component_kustomization(target.removeprefix("component:"))
        try:
            return subprocess.run(["kubectl", "kustomize", d], check=True, capture_output=True, text=True).stdout
        finally:
            shutil.rmtree(d, ignore_errors=True)
    path = TARGETS.get(target) or EXTRA_TARGETS[target]
    return subprocess.run(["kubectl", "kustomize", str(path)], check=True,
                          capture_output=True, text=True).stdout


@functools.cache
def _rendered(target: str):
    return [d for d in yaml.safe_load_all(rendered_text(target)) if d]


def rendered(target: str):
    import copy
    return copy.deepcopy(_rendered(target))


@pytest.fixture(scope="session")
def binary() -> Path:
    path = Path(os.environ.get("SHIPSHAPE_BIN", REPO / "target" / "debug" / "shipshape"))
    if not path.exists():
        pytest.fail(f"{path} missing: build it with `cargo build -p shipshape` (or set SHIPSHAPE_BIN)")
    return path


def psql(url: str, sql: str) -> str:
    exe = shutil.which("psql") or "/usr/lib/postgresql/15/bin/psql"
    return subprocess.run([exe, url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql], check=True,
                          capture_output=True, text=True).stdout


@pytest.fixture
def app_database():
    """A fresh database + owner role on the test PostgreSQL, like CloudNativePG's initdb creates,
    and the `uri` CloudNativePG would put in the <cluster>-app Secret."""
    admin = os.environ.get("SHIPSHAPE_TEST_PG_URL")
    if not admin:
        pytest.fail("SHIPSHAPE_TEST_PG_URL is not set: run via .ci/kube.sh (start_postgres)")
    u = urllib.parse.urlsplit(admin)
    name = "shipshape_" + secrets.token_hex(4)
    password = secrets.token_urlsafe(18)
    psql(admin, f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
    psql(admin, f"CREATE DATABASE {name} OWNER {name}")
    uri = f"postgresql://{name}:{password}@{u.hostname}:{u.port}/{name}"
    admin_db = urllib.parse.urlunsplit((u.scheme, u.netloc, f"/{name}", "", ""))
    yield {"uri": uri, "password": password, "name": name, "admin_db_url": admin_db}
    psql(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    psql(admin, f"DROP ROLE IF EXISTS {name}")


def shared_dir() -> Path:
    """../shared as .ci/lib.sh finds it (it exports SHIPSHAPE_SHARED_DIR); beside the checkout
    or beside the repository this clone came from, when pytest runs on its own."""
    env = os.environ.get("SHIPSHAPE_SHARED_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared")
    origin = subprocess.run(["git", "-C", str(REPO), "remote", "get-url", "origin"],
                            capture_output=True, text=True).stdout.strip()
    if origin and not origin.startswith(("http", "git@", "ssh:")):
        candidates.append(Path(origin).parent / "shared")
    for c in candidates:
        if (c / "crd-schemas").is_dir():
            return c
    pytest.fail(f"no crd-schemas in any of {[str(c) for c in candidates]}: set SHIPSHAPE_SHARED_DIR")
