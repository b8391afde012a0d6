"""Policy facts about the rendered manifests: Pod Security Standards `restricted` on every
container, pinned images, resources, probes, rollout safety, scaling bounds, wiring."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from conftest import OVERLAYS, TARGETS, rendered
from flaggersim import as_flagger_runs_it
from podsim import Pod, app_container, find, one, random_secret, resolve_container_port, selects
from test_render import CLUSTER_SCOPED, group_of

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod"}
# Volume types the `restricted` profile allows.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}


def pod_specs(docs):
    for d in docs:
        if d["kind"] in WORKLOAD_KINDS:
            spec = d["spec"]
            if d["kind"] == "CronJob":
                spec = spec["jobTemplate"]["spec"]
            yield d, (spec["template"]["spec"] if d["kind"] != "Pod" else spec)


def all_containers(spec):
    return spec.get("initContainers", []) + spec["containers"] + spec.get("ephemeralContainers", [])


@pytest.mark.parametrize("target", list(TARGETS))
def test_restricted_pod_security_on_every_container(target):
    found = 0
    for obj, spec in pod_specs(rendered(target)):
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        psc = spec.get("securityContext", {})
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            assert spec.get(key) in (None, False), f"{where}: {key}"
        for v in spec.get("volumes", []):
            kinds = set(v) - {"name"}
            assert kinds <= RESTRICTED_VOLUMES, f"{where}: volume {v['name']} uses {kinds}"
        assert psc.get("runAsUser", 0) != 0 and psc.get("runAsNonRoot") is True, where
        for c in all_containers(spec):
            found += 1
            sc = c.get("securityContext", {})
            eff = {**psc, **sc}
            cw = f"{where} container {c['name']}"
            assert eff.get("runAsNonRoot") is True, cw
            assert eff.get("runAsUser") == 65532 and eff.get("runAsGroup") == 65532, cw
            assert sc.get("allowPrivilegeEscalation") is False, cw
            assert sc.get("privileged") in (None, False), cw
            assert sc.get("readOnlyRootFilesystem") is True, cw
            assert "ALL" in sc.get("capabilities", {}).get("drop", []), cw
            assert set(sc.get("capabilities", {}).get("add", [])) <= {"NET_BIND_SERVICE"}, cw
            assert eff.get("seccompProfile", {}).get("type") in ("RuntimeDefault", "Localhost"), cw
            assert sc.get("procMount") in (None, "Default"), cw
            for p in c.get("ports", []):
                assert "hostPort" not in p, cw
    assert found >= 1


@pytest.mark.parametrize("target", OVERLAYS)
def test_namespace_enforces_restricted(target):
    docs = rendered(target)
    ns = one(docs, "Namespace")
    assert ns["metadata"]["name"] == {"dev": "shipshape-dev", "prod": "shipshape"}[target]
    labels = ns["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
    for d in docs:
        if d["kind"] != "Namespace" and (group_of(d), d["kind"]) not in CLUSTER_SCOPED:
            assert d["metadata"].get("namespace") == ns["metadata"]["name"], f"{d['kind']}/{d['metadata']['name']}"


@pytest.mark.parametrize("target", list(TARGETS))
def test_images_are_pinned_and_resources_set(target):
    for obj, spec in pod_specs(rendered(target)):
        for c in all_containers(spec):
            image = c["image"]
            name, _, digest = image.partition("@")
            tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else None
            assert digest or tag, f"{image}: no tag or digest"
            assert tag != "latest", f"{image}: latest tag"
            if digest:
                assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), image
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    assert r in res.get(kind, {}), f"{c['name']}: resources.{kind}.{r} missing"


def test_prod_image_is_pinned_by_digest_and_dev_uses_local_image():
    prod = app_container(one(rendered("prod"), "Deployment"))
    assert re.fullmatch(r"ghcr\.io/shipshape-dev/shipshape@sha256:[0-9a-f]{64}", prod["image"]), prod["image"]
    dev = app_container(one(rendered("dev"), "Deployment"))
    assert dev["image"] == "shipshape:dev" and dev["imagePullPolicy"] == "IfNotPresent"


@pytest.mark.parametrize("target", list(TARGETS))
def test_deployment_rollout_and_pod_settings(target):
    docs = rendered(target)
    d = one(docs, "Deployment", "shipshape")
    spec = d["spec"]
    ru = spec["strategy"]["rollingUpdate"]
    assert spec["strategy"]["type"] == "RollingUpdate" and ru["maxUnavailable"] == 0 and ru["maxSurge"] == 1
    assert spec["minReadySeconds"] > 0
    assert spec["progressDeadlineSeconds"] > spec["minReadySeconds"]
    assert 1 <= spec["revisionHistoryLimit"] <= 10
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    sa = one(docs, "ServiceAccount", pod["serviceAccountName"])
    assert sa["automountServiceAccountToken"] is False
    # /tmp: memory-backed emptyDir with a size limit
    c = app_container(d)
    tmp = next(m for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
    vol = next(v for v in pod["volumes"] if v["name"] == tmp["name"])
    assert vol["emptyDir"]["medium"] == "Memory" and vol["emptyDir"]["sizeLimit"]
    # spread over zones and nodes, this ReplicaSet's pods only
    keys = {t["topologyKey"] for t in pod["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    for t in pod["topologySpreadConstraints"]:
        assert selects(t["labelSelector"], spec["template"]["metadata"]["labels"])
        assert "pod-template-hash" in t.get("matchLabelKeys", [])
    # recommended labels, scrape annotations
    labels = spec["template"]["metadata"]["labels"]
    for k in ("name", "instance", "component", "part-of", "managed-by"):
        assert f"app.kubernetes.io/{k}" in labels
    ann = spec["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/path"] == "/metrics"
    scrape_port = "metrics" if any(p["name"] == "metrics" for p in c["ports"]) else "http"
    assert int(ann["prometheus.io/port"]) == resolve_container_port(c, scrape_port)
    # the config file comes from the generated (hash-suffixed) ConfigMap
    cfg_mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/etc/shipshape")
    cm_name = next(v for v in pod["volumes"] if v["name"] == cfg_mount["name"])["configMap"]["name"]
    assert re.fullmatch(r"shipshape-config-[a-z0-9]{10}", cm_name), cm_name
    assert "shipshape.toml" in one(docs, "ConfigMap", cm_name)["data"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["SHIPSHAPE_CONFIG"] == "/etc/shipshape/shipshape.toml"
    assert "command" not in c and "args" not in c, "the image entrypoint is [shipshape, serve]"


@pytest.mark.parametrize("target", list(TARGETS))
def test_probes_are_http_on_declared_ports(target):
    c = app_container(one(rendered(target), "Deployment"))
    paths = {}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        p = c[probe]
        assert set(p) & {"httpGet", "exec", "tcpSocket", "grpc"} == {"httpGet"}, probe
        resolve_container_port(c, p["httpGet"]["port"])
        paths[probe] = p["httpGet"]["path"]
    assert paths == {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    assert "sleep" in c["lifecycle"]["preStop"], "preStop must be the sleep action (no shell in the image)"


@pytest.mark.parametrize("target", list(TARGETS))
def test_service_selects_the_pods_on_port_http(target):
    """Service shipshape answers on port `http` from pods listening on 8080. In prod the
    Services are Flagger's (components/canary): the apex and -primary select the primary
    pods, -canary the canary's, each with the same ports."""
    docs = as_flagger_runs_it(rendered(target))
    deploys = {d["metadata"]["name"]: d for d in find(docs, "Deployment")}
    names = {"prod": ["shipshape", "shipshape-primary", "shipshape-canary"]}.get(target, ["shipshape"])
    assert sorted(s["metadata"]["name"] for s in find(docs, "Service")) == sorted(names)
    expect = {"shipshape": "shipshape-primary", "shipshape-primary": "shipshape-primary",
              "shipshape-canary": "shipshape"} if target == "prod" else {"shipshape": "shipshape"}
    for name in names:
        svc = one(docs, "Service", name)
        chosen = [n for n, d in deploys.items() if svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert chosen == [expect[name]], f"Service {name} selects the pods of {chosen}"
        d = deploys[expect[name]]
        assert svc["spec"]["selector"].items() <= d["spec"]["selector"]["matchLabels"].items()
        http = [p for p in svc["spec"]["ports"] if p["name"] == "http"]
        assert len(http) == 1 and http[0]["port"] == 80
        assert resolve_container_port(app_container(d), http[0]["targetPort"]) == 8080
        expected = {"base": "ClusterIP", "prod": "ClusterIP", "dev": "NodePort"}[target]
        assert svc["spec"].get("type", "ClusterIP") == expected
        if target == "dev":
            assert http[0]["nodePort"] == 30080
        if target == "prod":
            metrics = [p for p in svc["spec"]["ports"] if p["name"] == "metrics"]
            assert len(metrics) == 1 and resolve_container_port(app_container(d), metrics[0]["targetPort"]) == 9090


def test_dev_is_single_replica_sqlite_on_emptydir():
    d = one(rendered("dev"), "Deployment")
    assert d["spec"]["replicas"] == 1
    c = app_container(d)
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["SHIPSHAPE_DATABASE__URL"] == "sqlite:///data/shipshape.db"
    assert env["SHIPSHAPE_LOG__LEVEL"].startswith("debug")
    data = next(m for m in c["volumeMounts"] if m["mountPath"] == "/data")
    vol = next(v for v in d["spec"]["template"]["spec"]["volumes"] if v["name"] == data["name"])
    assert "emptyDir" in vol and vol["emptyDir"]["sizeLimit"]
    assert not find(rendered("dev"), "HorizontalPodAutoscaler")


def test_prod_scaling_bounds_and_disruption_budget():
    docs = rendered("prod")
    d = one(docs, "Deployment")
    assert "replicas" not in d["spec"], "the HPA owns the replica count"
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["minReplicas"] == 3 and hpa["spec"]["maxReplicas"] == 10
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "shipshape"}
    resources = {m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"}
    assert resources == {"cpu", "memory"}
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
    assert pdb["spec"].get("maxUnavailable") == 1
    # the database can take every pod's pool at the HPA's maximum
    cluster = one(docs, "Cluster")
    assert cluster["spec"]["instances"] == 3
    toml = tomllib.loads(one(docs, "ConfigMap", next(
        v["configMap"]["name"] for v in d["spec"]["template"]["spec"]["volumes"] if "configMap" in v))["data"]["shipshape.toml"])
    assert int(cluster["spec"]["postgresql"]["parameters"]["max_connections"]) >= \
        hpa["spec"]["maxReplicas"] * toml["database"]["max_connections"] + 20


def test_prod_network_policy_default_deny_and_narrow_allows():
    """Default deny for the app's pods (canary and primary alike), then: the API port from the
    gateway's namespace only, the metrics port from the monitoring namespace only, DNS and
    PostgreSQL out. The database pods take 5432 from the app's pods."""
    docs = as_flagger_runs_it(rendered("prod"))
    app_pods = [d["spec"]["template"]["metadata"]["labels"] for d in find(docs, "Deployment")]
    assert len(app_pods) == 2, "the canary and Flagger's primary"
    pols = [p for p in find(docs, "NetworkPolicy") if p["metadata"]["name"] != "shipshape-db"]
    for p in pols:
        for labels in app_pods:
            assert p["spec"]["podSelector"]["matchLabels"].items() <= labels.items(), p["metadata"]["name"]
    deny = one(docs, "NetworkPolicy", "shipshape-default-deny")
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    ingress = [r for p in pols for r in p["spec"].get("ingress", [])]
    allowed = {(n["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"], port["port"])
               for r in ingress for n in r["from"] for port in r["ports"]}
    assert allowed == {("envoy-gateway-system", "http"), ("monitoring", "metrics")}, allowed
    c = app_container(one(docs, "Deployment", "shipshape"))
    assert resolve_container_port(c, "http") == 8080 and resolve_container_port(c, "metrics") == 9090
    egress_ports = {(port["protocol"], port["port"]) for p in pols for r in p["spec"].get("egress", []) for port in r["ports"]}
    assert egress_ports == {("UDP", 53), ("TCP", 53), ("TCP", 5432)}
    pg = one(docs, "NetworkPolicy", "shipshape-allow-egress-postgres")
    cluster = one(docs, "Cluster")["metadata"]["name"]
    assert pg["spec"]["egress"][0]["to"][0]["podSelector"]["matchLabels"] == {"cnpg.io/cluster": cluster}
    db = one(docs, "NetworkPolicy", "shipshape-db")
    assert db["spec"]["podSelector"]["matchLabels"] == {"cnpg.io/cluster": cluster}
    from_app = db["spec"]["ingress"][0]
    for labels in app_pods:
        assert from_app["from"][0]["podSelector"]["matchLabels"].items() <= labels.items()
    assert from_app["ports"] == [{"port": 5432, "protocol": "TCP"}]
    # nothing else selects the app pods' labels as a peer
    monitor = [r for r in db["spec"]["ingress"] if r["from"][0].get("namespaceSelector", {}).get("matchLabels") ==
               {"kubernetes.io/metadata.name": "monitoring"}]
    assert [p["port"] for r in monitor for p in r["ports"]] == [9187]


def test_prod_database_url_and_auth_secret_are_file_mounts():
    docs = rendered("prod")
    d = one(docs, "Deployment")
    c = app_container(d)
    env = {e["name"]: e for e in c["env"]}
    assert env["SHIPSHAPE_DATABASE__URL"]["value"] == "file:/var/run/secrets/shipshape/db/uri"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
    db = vols[mounts["/var/run/secrets/shipshape/db"]["name"]]["secret"]
    cluster = one(docs, "Cluster")["metadata"]["name"]
    assert db["secretName"] == f"{cluster}-app" and db["items"] == [{"key": "uri", "path": "uri"}]
    auth = vols[mounts["/var/run/secrets/shipshape/auth"]["name"]]["secret"]
    assert auth["secretName"] == "shipshape-auth" and auth["items"][0]["key"] == "hs256-secret"
    for m in ("/var/run/secrets/shipshape/db", "/var/run/secrets/shipshape/auth"):
        assert mounts[m]["readOnly"] is True
    assert not any(e.get("valueFrom", {}).get("secretKeyRef") for e in c["env"]), "secrets as files, not env"


def test_auth_is_on_in_prod_with_the_key_from_the_secret_and_off_in_dev():
    """Prod: auth on (the default) with the HS256 key read from the mounted shipshape-auth
    Secret; dev: explicitly off for local use."""
    prod = one(rendered("prod"), "Deployment")
    c = app_container(prod)
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env.get("SHIPSHAPE_AUTH__ENABLED", "true") != "false"
    key = env["SHIPSHAPE_AUTH__HS256_SECRET"]
    assert key.startswith("file:"), key
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert key.removeprefix("file:").startswith(mounts["auth"] + "/"), (key, mounts)
    dev = {e["name"]: e.get("value") for e in app_container(one(rendered("dev"), "Deployment"))["env"]}
    assert dev.get("SHIPSHAPE_AUTH__ENABLED") == "false"


def test_servicemonitor_scrapes_the_metrics_port_of_primary_and_canary():
    """The ServiceMonitor scrapes port `metrics` (/metrics on its own listener) of exactly
    Flagger's shipshape-primary and shipshape-canary Services (never the apex, whose endpoints
    are the primary's again, nor the database's), and names the job `shipshape`."""
    docs = as_flagger_runs_it(rendered("prod"))
    sm = one(docs, "ServiceMonitor")
    ep = sm["spec"]["endpoints"]
    assert len(ep) == 1 and ep[0]["port"] == "metrics" and ep[0]["path"] == "/metrics"
    sel = sm["spec"]["selector"]["matchLabels"]
    chosen = sorted(s["metadata"]["name"] for s in find(docs, "Service") if sel.items() <= s["metadata"]["labels"].items())
    assert chosen == ["shipshape-canary", "shipshape-primary"], chosen
    for name in chosen:
        assert one(docs, "Service", name)["metadata"]["labels"][sm["spec"]["jobLabel"]] == "shipshape"
    assert not sel.items() <= one(docs, "Cluster")["metadata"]["labels"].items()
    env = {e["name"]: e.get("value") for e in app_container(one(docs, "Deployment", "shipshape"))["env"]}
    assert env["SHIPSHAPE_HTTP__METRICS_LISTEN"] == "0.0.0.0:9090"


def test_pdb_topology_and_hpa_cover_flaggers_primary():
    docs = as_flagger_runs_it(rendered("prod"))
    primary = one(docs, "Deployment", "shipshape-primary")
    canary = one(docs, "Deployment", "shipshape")
    assert primary["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "shipshape-primary"
    pdb = one(docs, "PodDisruptionBudget")
    for d in (primary, canary):
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items(), d["metadata"]["name"]
        for t in d["spec"]["template"]["spec"]["topologySpreadConstraints"]:
            assert selects(t["labelSelector"], labels), d["metadata"]["name"]
            other = (canary if d is primary else primary)["spec"]["template"]["metadata"]["labels"]
            # with pod-template-hash in matchLabelKeys each ReplicaSet spreads on its own
            assert "pod-template-hash" in t["matchLabelKeys"] and selects(t["labelSelector"], other)
    hpas = {h["metadata"]["name"]: h["spec"]["scaleTargetRef"]["name"] for h in find(docs, "HorizontalPodAutoscaler")}
    assert hpas == {"shipshape": "shipshape", "shipshape-primary": "shipshape-primary"}
    canary_cr = one(docs, "Canary")
    assert canary_cr["spec"]["targetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "shipshape"}
    assert canary_cr["spec"]["autoscalerRef"] == {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": "shipshape"}
    # the rendered prod overlay leaves the Services and the HTTPRoute to Flagger
    assert not find(rendered("prod"), "Service") and not find(rendered("prod"), "HTTPRoute")


# ---- checks that need the binary: the app's effective config decides the grace period -----

def humantime(s: str) -> float:
    total = 0.0
    units = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "us": 1e-6, "ns": 1e-9}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]+)", s)
    assert parts and "".join(f"{n}{u}" for n, u in parts) == s.replace(" ", ""), s
    for n, u in parts:
        total += float(n) * units[u]
    return total


def effective_config(target, binary):
    secrets = {("shipshape-db-app", "uri"): "postgresql://u:p@127.0.0.1:5432/db",
               ("shipshape-auth", "hs256-secret"): random_secret()}
    pod = Pod.prepare(rendered(target), binary, secrets)
    try:
        r = pod.run("config")
        assert r.returncode == 0, f"shipshape config failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
        return tomllib.loads(r.stdout), pod.deploy
    finally:
        pod.cleanup()


@pytest.mark.parametrize("target", OVERLAYS)
def test_grace_period_covers_prestop_drain_and_grace(target, binary):
    cfg, deploy = effective_config(target, binary)
    spec = deploy["spec"]["template"]["spec"]
    c = app_container(deploy)
    pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = humantime(cfg["http"]["drain_delay"])
    grace = humantime(cfg["http"]["shutdown_grace"])
    need = pre_stop + drain + grace
    print(f"{target}: preStop {pre_stop}s + drain_delay {drain}s + shutdown_grace {grace}s = {need}s "
          f"<= terminationGracePeriodSeconds {spec['terminationGracePeriodSeconds']}s")
    assert spec["terminationGracePeriodSeconds"] >= need
    # the startup probe outlasts the database retry window
    sp = c["startupProbe"]
    assert sp["periodSeconds"] * sp["failureThreshold"] >= humantime(cfg["database"]["startup_timeout"])


@pytest.mark.parametrize("target", OVERLAYS)
def test_effective_config_is_what_the_overlay_means(target, binary):
    cfg, _ = effective_config(target, binary)
    assert cfg["http"]["listen"].startswith("127.0.0.1:")  # remapped by the harness, see podsim
    assert cfg["log"]["format"] == "json"
    url = cfg["database"]["url"]
    assert "p@" not in url, "the password must be redacted in `shipshape config`"
    if target == "dev":
        assert cfg["log"]["level"].startswith("debug")
        assert url.startswith("sqlite://") and url.endswith("/data/shipshape.db")
    else:
        assert cfg["log"]["level"] == "info"


def _mib(quantity):
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * factor
    return float(quantity) / 2**20


def test_memory_sizing_covers_the_measured_peaks():
    """The HPA memory target sits well above the peak RSS of ordinary load (so normal traffic
    never scales on memory), and the limit above the saturated peak plus every allowed body."""
    measured = json.loads((Path(__file__).parent / "memory-measured.json").read_text())
    docs = rendered("prod")
    res = app_container(one(docs, "Deployment"))["resources"]
    request, limit = _mib(res["requests"]["memory"]), _mib(res["limits"]["memory"])
    hpa = one(docs, "HorizontalPodAutoscaler")
    util = next(m["resource"]["target"]["averageUtilization"] for m in hpa["spec"]["metrics"]
                if m["type"] == "Resource" and m["resource"]["name"] == "memory")
    ordinary = measured["peak_rss_mib_32_connections"]
    assert request * util / 100 >= 1.5 * ordinary, (
        f"HPA memory target {request * util / 100:.0f}Mi is under 1.5x the ordinary peak {ordinary}Mi")
    worst = max(ordinary, measured["peak_rss_mib_512_connections"]) + measured["body_bytes_in_flight_mib"]
    assert limit >= 2 * worst, f"limit {limit:.0f}Mi is under 2x the worst measured case {worst:.0f}Mi"
