"""PrometheusRule and dashboard, taken from the RENDERED prod overlay: promtool check rules,
promtool test rules (every alert fires when it should and stays silent when it should not),
and every dashboard query parses as PromQL."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import rendered

ALERT_TESTS = sorted((Path(__file__).parent / "alerts").glob("*.test.yaml"))


def promtool():
    exe = shutil.which("promtool")
    if not exe:
        pytest.fail("promtool missing: apt-get install prometheus")
    return exe


def rule_groups():
    rule = next(d for d in rendered("prod") if d["kind"] == "PrometheusRule")
    return rule["spec"]["groups"]


@pytest.fixture
def rules_dir(tmp_path):
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups()}, sort_keys=False))
    for t in ALERT_TESTS:
        shutil.copy(t, tmp_path / t.name)
    return tmp_path


def test_promtool_check_rules(rules_dir):
    r = subprocess.run([promtool(), "check", "rules", str(rules_dir / "rules.yaml")], capture_output=True, text=True)
    print(r.stdout + r.stderr)
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_unit_tests(rules_dir):
    r = subprocess.run([promtool(), "test", "rules", *[t.name for t in ALERT_TESTS]], cwd=rules_dir,
                       capture_output=True, text=True)
    print(r.stdout + r.stderr)
    assert r.returncode == 0, r.stdout + r.stderr


def test_alert_tests_fix_the_group_order():
    # promtool evaluates rule groups in random order unless told; an alert evaluated before the
    # recording rules it reads sees the previous step's value, or nothing when the step is longer
    # than the 5m lookback (the 10m-step slow-burn test then failed about 1 run in 6).
    names = [g["name"] for g in rule_groups()]
    for t in ALERT_TESTS:
        assert yaml.safe_load(t.read_text()).get("group_eval_order") == names, t.name


def test_every_alert_has_a_firing_and_a_silent_case():
    alerts = {r["alert"] for g in rule_groups() for r in g["rules"] if "alert" in r}
    fires, silent = set(), set()
    for t in ALERT_TESTS:
        for case in yaml.safe_load(t.read_text())["tests"]:
            for a in case.get("alert_rule_test", []):
                (fires if a.get("exp_alerts") else silent).add(a["alertname"])
    assert alerts == fires, f"alerts without a firing test: {alerts - fires}"
    assert alerts == silent, f"alerts without a silent test: {alerts - silent}"
    assert len(alerts) >= 8


def test_alerts_are_documented():
    alerts = {r["alert"] for g in rule_groups() for r in g["rules"] if "alert" in r}
    doc = (Path(__file__).resolve().parents[2] / "docs" / "deployment.md").read_text()
    missing = [a for a in alerts if a not in doc]
    assert not missing, f"alerts without a runbook entry in docs/deployment.md: {missing}"
    for g in rule_groups():
        for r in g["rules"]:
            if "alert" in r:
                assert r["labels"]["severity"] in ("critical", "warning")
                assert {"summary", "description", "runbook_url"} <= set(r["annotations"])


def dashboard():
    cm = next(d for d in rendered("prod") if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "shipshape-grafana-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    return json.loads(cm["data"]["shipshape.json"])


def dashboard_exprs():
    return [(p["title"], t["expr"]) for p in dashboard()["panels"] for t in p["targets"]]


def test_dashboard_covers_the_required_views():
    titles = " | ".join(p["title"] for p in dashboard()["panels"]).lower()
    for word in ["request rate", "errors", "latency", "in-flight", "saturation", "memory", "cpu", "db pool"]:
        assert word in titles, f"dashboard lacks a {word!r} panel: {titles}"
    exprs = " ".join(e for _, e in dashboard_exprs())
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}," in exprs


def test_dashboard_queries_are_valid_promql(tmp_path):
    """Grafana variables replaced by sample values, then each query checked by promtool as a rule."""
    rules = []
    for i, (title, expr) in enumerate(dashboard_exprs()):
        e = expr.replace("$__rate_interval", "5m").replace("$namespace", "shipshape")
        assert "$" not in e, f"unknown variable in {title}: {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": e})
    f = tmp_path / "dashboard-rules.yaml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    r = subprocess.run([promtool(), "check", "rules", str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


APP_METRIC = re.compile(r"\b((?:http_server|shipshape|process)_[a-z_]+)")
RECORDED = re.compile(r"^shipshape:")


def app_metric_names():
    """Metric names the rules and dashboard expect the binary to export (kube-state-metrics and
    cAdvisor series excluded); checked against a real scrape in test_contract.py."""
    names = set()
    exprs = [r["expr"] for g in rule_groups() for r in g["rules"]] + [e for _, e in dashboard_exprs()]
    for e in exprs:
        for m in APP_METRIC.findall(e):
            names.add(re.sub(r"_(bucket|count|sum)$", "", m))
    return {n for n in names if not RECORDED.match(n)}


@pytest.mark.skipif(os.environ.get("SHIPSHAPE_KUBE_MUTATION") != "1", reason="slow (2 min); set SHIPSHAPE_KUBE_MUTATION=1")
@pytest.mark.parametrize("alert, old, new", [
    ("ShipshapeErrorBudgetBurnFast", "(14.4 * 0.001)", "(100 * 0.001)"),
    ("ShipshapeErrorBudgetBurnFast", "(6 * 0.001)", "(0.1 * 0.001)"),
    ("ShipshapeErrorBudgetBurnFast", "(6 * 0.001)", "(20 * 0.001)"),
    ("ShipshapeErrorBudgetBurnSlow", "(3 * 0.001)", "(30 * 0.001)"),
    ("ShipshapeErrorBudgetBurnSlow", "3d > 0.001", "3d > 0.01"),
    ("ShipshapeErrorBudgetBurnSlow", "6h > 0.001", "6h > 0.00001"),
    ("ShipshapeLatencyP95High", ") > 0.5", ") > 5"),
    ("ShipshapeLatencyP95High", 'route!~"/healthz|/readyz|/metrics"', 'route!~"/healthz"'),
    ("ShipshapeHigh5xxRatio", ")) > 0.1", ")) > 0.0001"),
    ("ShipshapeHigh5xxRatio", ") > 0.05", ") > 0.5"),
    ("ShipshapeCrashLooping", ">= 1", ">= 0"),
    ("ShipshapePodRestarting", ">= 3", ">= 1"),
    ("ShipshapeHPAAtMaxReplicas", ">=", "<"),
    ("ShipshapeReadinessFlapping", "[15m]) > 4", "[15m]) > 40"),
    ("ShipshapeReadinessFlapping", "{5}", "*"),
])
def test_alert_tests_kill_mutants(rules_dir, alert, old, new):
    """Mutation check: change one threshold/selector of one alert; the unit tests must fail."""
    groups = rule_groups()
    hit = False
    for g in groups:
        for r in g["rules"]:
            if r.get("alert") == alert and old in r["expr"]:
                r["expr"] = r["expr"].replace(old, new)
                hit = True
    assert hit
    (rules_dir / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    r = subprocess.run([promtool(), "test", "rules", *[t.name for t in ALERT_TESTS]], cwd=rules_dir,
                       capture_output=True, text=True)
    assert r.returncode != 0, f"mutant survived: {alert}: {old} -> {new}"
