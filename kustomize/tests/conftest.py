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


@functools.cache
def rendered_text(target: str) -> str:
    return subprocess.run(["kubectl", "kustomize", str(TARGETS[target])], check=True,
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
