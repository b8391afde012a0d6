"""The canary analysis (components/canary) tested with promtool on synthetic series: the
MetricTemplates' own query text, with Flagger's template variables filled in as Flagger does
for the rendered Canary, becomes a recording rule per check, and the Canary's thresholdRange
an alert; canary/canary.test.yaml then says which releases pass and which fail."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import rendered
from flaggersim import flagger_objects
from podsim import one

TESTS = Path(__file__).parent / "canary" / "canary.test.yaml"
RECORD = {"success-rate": "canary:success_rate", "latency-p99": "canary:latency_p99"}


def promtool():
    exe = shutil.which("promtool")
    if not exe:
        pytest.fail("promtool missing: apt-get install prometheus")
    return exe


def fill(query: str, canary: dict, interval: str) -> str:
    """Flagger's MetricTemplate variables ({{ namespace }}, {{ target }}, {{ interval }})."""
    values = {"namespace": canary["metadata"]["namespace"], "target": canary["spec"]["targetRef"]["name"],
              "interval": interval}
    out = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: values[m.group(1)], query)
    assert "{{" not in out, out
    return out.strip()


def canary_rules(docs, mutate=None):
    canary = one(docs, "Canary")
    templates = {d["metadata"]["name"]: d for d in docs if d["kind"] == "MetricTemplate"}
    rules = []
    for m in canary["spec"]["analysis"]["metrics"]:
        tpl = templates[m["templateRef"]["name"]]
        assert tpl["spec"]["provider"]["type"] == "prometheus"
        query = fill(tpl["spec"]["query"], canary, m["interval"])
        if mutate:
            query = mutate(m["name"], query)
        rng = m["thresholdRange"]
        rules.append({"record": RECORD[m["name"]], "expr": query})
        bad = " or ".join(f"{RECORD[m['name']]} {op} {rng[k]}" for k, op in (("min", "<"), ("max", ">")) if k in rng)
        rules.append({"alert": "CanaryCheck_" + m["name"].replace("-", "_"), "expr": bad,
                      "labels": {"metric": m["name"]}})
    assert set(RECORD) == {m["name"] for m in canary["spec"]["analysis"]["metrics"]}
    return {"groups": [{"name": "canary", "rules": rules}]}


def run_tests(tmp_path, rules):
    (tmp_path / "canary-rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    shutil.copy(TESTS, tmp_path / TESTS.name)
    check = subprocess.run([promtool(), "check", "rules", "canary-rules.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    return subprocess.run([promtool(), "test", "rules", TESTS.name], cwd=tmp_path, capture_output=True, text=True)


def test_canary_queries_pass_and_fail_the_right_releases(tmp_path):
    r = run_tests(tmp_path, canary_rules(rendered("prod")))
    print(r.stdout + r.stderr)
    assert r.returncode == 0, r.stdout + r.stderr
    names = [t["name"] for t in yaml.safe_load(TESTS.read_text())["tests"]]
    assert any("good" in n for n in names) and any("5xx fails" in n for n in names) and any("slow" in n for n in names)


@pytest.mark.parametrize("metric, old, new", [
    ("success-rate", 'status!~"5.."', 'status!~"4..|5.."'),   # 4xx counted as failures
    ("success-rate", 'pod=~"shipshape-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)",', ""),  # primary's traffic counted
    ("success-rate", ',route!~"/healthz|/readyz|/metrics"', ""),  # probes counted
    ("latency-p99", "histogram_quantile(0.99,", "histogram_quantile(0.5,"),
    ("latency-p99", "1000 * ", ""),  # seconds compared with a millisecond threshold
])
def test_canary_tests_catch_a_wrong_query(tmp_path, metric, old, new):
    """Mutation check: each of these query mistakes makes the promtool tests fail."""
    def mutate(name, q):
        if name != metric:
            return q
        assert old in q, (old, q)
        return q.replace(old, new)
    r = run_tests(tmp_path, canary_rules(rendered("prod"), mutate))
    assert r.returncode != 0, f"mutant survived: {metric}: {old!r} -> {new!r}"


def test_canary_thresholds_and_flagger_wiring():
    docs = rendered("prod")
    canary = one(docs, "Canary")
    metrics = {m["name"]: m for m in canary["spec"]["analysis"]["metrics"]}
    assert metrics["success-rate"]["thresholdRange"] == {"min": 99}
    assert metrics["latency-p99"]["thresholdRange"] == {"max": 500}
    gw = one(docs, "Gateway")
    listener = next(x for x in gw["spec"]["listeners"] if x["name"] == canary["spec"]["service"]["gatewayRefs"][0]["sectionName"])
    assert canary["spec"]["service"]["gatewayRefs"][0]["name"] == gw["metadata"]["name"]
    assert canary["spec"]["service"]["hosts"] == [listener["hostname"]] == one(docs, "Certificate")["spec"]["dnsNames"]
    # Flagger's HTTPRoute replaces the gateway component's: same parent, host, backend port, timeout
    ours = one(rendered("component:gateway"), "HTTPRoute")
    theirs = one(flagger_objects(docs), "HTTPRoute")
    assert theirs["metadata"]["name"] == ours["metadata"]["name"]
    assert theirs["spec"]["hostnames"] == ours["spec"]["hostnames"]
    assert [(r["name"], r["sectionName"]) for r in theirs["spec"]["parentRefs"]] == \
        [(r["name"], r["sectionName"]) for r in ours["spec"]["parentRefs"]]
    assert theirs["spec"]["rules"][0]["timeouts"] == ours["spec"]["rules"][0]["timeouts"]
    assert {b["port"] for b in theirs["spec"]["rules"][0]["backendRefs"]} == {b["port"] for b in ours["spec"]["rules"][0]["backendRefs"]}
