"""The objects Flagger creates from the rendered Canary, modelled on Flagger's own code
(fluxcd/flagger pkg/canary/deployment_controller.go, util.go makePrimaryLabels/getPorts,
pkg/router/kubernetes_default.go reconcileService, pkg/router/gateway_api.go), so the tests can
check that the PDB, NetworkPolicies, ServiceMonitor and Services still select the right pods
once Flagger runs. An imitation: it covers the object shapes (names, labels, selectors,
ports), not Flagger's timing or its analysis loop (docs/pipeline.md)."""

from __future__ import annotations

import copy

from podsim import find, one

# Flagger's default -selector-labels: the first one present in the Deployment's selector.
SELECTOR_LABELS = ("app", "name", "app.kubernetes.io/name")
TOOLKIT_MARKER = "toolkit.fluxcd.io"


def primary_labels(labels: dict, label: str, value: str) -> dict:
    out = {k: v for k, v in labels.items() if TOOLKIT_MARKER not in k and k != label}
    out[label] = value
    return out


def flagger_objects(docs) -> list:
    canary = one(docs, "Canary")
    spec = canary["spec"]
    ns = canary["metadata"].get("namespace")
    dep = one(docs, "Deployment", spec["targetRef"]["name"])
    sel = dep["spec"]["selector"]["matchLabels"]
    label = next(k for k in SELECTOR_LABELS if k in sel)
    value = sel[label]
    pvalue = f"{value}-primary"
    name = dep["metadata"]["name"]
    out = []

    primary = copy.deepcopy(dep)
    primary["metadata"]["name"] = f"{name}-primary"
    primary["metadata"]["labels"] = primary_labels(dep["metadata"].get("labels", {}), label, pvalue)
    primary["spec"]["selector"] = {"matchLabels": {label: pvalue}}
    primary["spec"]["template"]["metadata"]["labels"] = primary_labels(dep["spec"]["template"]["metadata"]["labels"], label, pvalue)
    for t in primary["spec"]["template"]["spec"].get("topologySpreadConstraints", []):
        for e in t.get("labelSelector", {}).get("matchExpressions", []):
            if e["key"] in SELECTOR_LABELS:
                e["values"] = [v + "-primary" if v == name else v for v in e["values"]]
    out.append(primary)

    svc = spec["service"]
    target_port = svc.get("targetPort", svc["port"])
    ports = [{"name": svc.get("portName", "http"), "protocol": "TCP", "port": svc["port"], "targetPort": target_port}]
    if svc.get("appProtocol"):
        ports[0]["appProtocol"] = svc["appProtocol"]
    if svc.get("portDiscovery"):
        for c in dep["spec"]["template"]["spec"]["containers"]:
            for i, p in enumerate(c.get("ports", [])):
                if (isinstance(target_port, str) and p.get("name") == target_port) or p["containerPort"] == target_port:
                    continue
                pname = p.get("name") or f"tcp-{c['name']}-{i}"
                ports.append({"name": pname, "protocol": "TCP", "port": p["containerPort"], "targetPort": p["containerPort"]})
    apex = svc.get("name", name)
    for sname, pod_value, meta in ((apex, pvalue, svc.get("apex", {})), (f"{apex}-primary", pvalue, svc.get("primary", {})),
                                   (f"{apex}-canary", value, svc.get("canary", {}))):
        labels = dict(meta.get("labels", {}))
        labels[label] = sname
        out.append({"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": sname, "namespace": ns, "labels": labels, "annotations": dict(meta.get("annotations", {}))},
                    "spec": {"type": "ClusterIP", "selector": {label: pod_value}, "ports": copy.deepcopy(ports)}})

    if "autoscalerRef" in spec:
        hpa = copy.deepcopy(one(docs, spec["autoscalerRef"]["kind"], spec["autoscalerRef"]["name"]))
        hpa["metadata"]["name"] = f"{hpa['metadata']['name']}-primary"
        hpa["spec"]["scaleTargetRef"]["name"] = f"{name}-primary"
        out.append(hpa)

    if spec.get("provider", "").startswith("gatewayapi") and svc.get("gatewayRefs"):
        out.append({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                    "metadata": {"name": apex, "namespace": ns},
                    "spec": {"parentRefs": copy.deepcopy(svc["gatewayRefs"]), "hostnames": list(svc.get("hosts", [])),
                             "rules": [{"backendRefs": [
                                 {"group": "", "kind": "Service", "name": f"{apex}-primary", "port": svc["port"], "weight": 100},
                                 {"group": "", "kind": "Service", "name": f"{apex}-canary", "port": svc["port"], "weight": 0}],
                                 **({"timeouts": {"request": svc["timeout"]}} if svc.get("timeout") else {})}]}})
    return out


def as_flagger_runs_it(docs) -> list:
    """The rendered docs plus what Flagger creates (nothing added without a Canary)."""
    if not find(docs, "Canary"):
        return list(docs)
    return list(docs) + flagger_objects(docs)
