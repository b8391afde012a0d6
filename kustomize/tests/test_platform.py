"""The platform components' contracts across files: the signing identity the admission policy
trusts is exactly the one the release workflow signs with; the Flux image automation rewrites
the prod overlay's digest and nothing else is needed for a release to reach the pods; the
gateway is the only trusted hop for client addresses; backups and restore refer to each other
consistently."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import tempfile
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import EXTRA_TARGETS, KUSTOMIZE, REPO, TARGETS, rendered
from podsim import Pod, http, one, random_secret

RELEASE_WORKFLOW = REPO / ".github" / "workflows" / "release.yml"
RELEASE_SCRIPT = REPO / ".github" / "scripts" / "release-publish.sh"
GITHUB_OIDC_ISSUER = "https://token.actions.githubusercontent.com"


# ---- signed images: the policy's identity vs the release workflow's -------------------------

def github_glob_to_regex(glob: str) -> str:
    """GitHub Actions branch/tag filter syntax (*, **, ?, +, [..]) -> an anchored regex."""
    out, i = "", 0
    while i < len(glob):
        c = glob[i]
        if glob.startswith("**", i):
            out, i = out + ".*", i + 2
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?" or c == "+":
            out += c
        elif c == "[":
            j = glob.index("]", i)
            out, i = out + glob[i:j + 1], j + 1
            continue
        else:
            out += re.escape(c)
        i += 1
    return "^" + out + "$"


def release_identity(workflow_path: Path, workflow_text: str, script_text: str, repository: str):
    """(issuer, subject regex, example tags) the release signs with, derived from the files."""
    wf = yaml.safe_load(workflow_text)
    on = wf.get("on", wf.get(True))
    tags = on["push"]["tags"]
    assert set(on) == {"push"} and set(on["push"]) == {"tags"}, f"release runs only on tag pushes: {on}"
    signing = []
    for name, job in wf["jobs"].items():
        perms = job.get("permissions", {})
        runs = " ".join(s.get("run", "") for s in job["steps"])
        if perms.get("id-token") == "write":
            signing.append((name, runs))
    assert len(signing) == 1, f"exactly one job may mint OIDC tokens (id-token: write): {signing}"
    assert ".github/scripts/" + RELEASE_SCRIPT.name in signing[0][1], "the id-token job does not run the publish script"
    signs = [ln.strip() for ln in script_text.splitlines() if re.match(r"\s*cosign (sign|attest)\b", ln)]
    assert signs, "the publish script does not sign"
    for ln in signs:
        assert "--key" not in ln, f"not keyless: {ln}"
    assert re.search(r'^identity="\$server/\$workflow_ref"$', script_text, re.M), "identity is not the workflow ref"
    assert re.search(r"^workflow_ref=\$\{GITHUB_WORKFLOW_REF:-", script_text, re.M)
    issuers = set(re.findall(r"--certificate-oidc-issuer (\S+)", script_text))
    assert issuers == {GITHUB_OIDC_ISSUER}, issuers
    subject = ("^" + re.escape(f"https://github.com/{repository}/.github/workflows/{workflow_path.name}@refs/tags/")
               + "(?:" + "|".join(github_glob_to_regex(t)[1:-1] for t in tags) + ")$")
    return GITHUB_OIDC_ISSUER, subject, tags


def repository() -> str:
    url = tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]["package"]["repository"]
    return url.removeprefix("https://github.com/")


def check_policy_matches_release(policy: dict, workflow_path: Path, workflow_text: str, script_text: str, image: str):
    issuer, subject, tags = release_identity(workflow_path, workflow_text, script_text, repository())
    repo = repository()
    rules = [r for r in policy["spec"]["rules"] if "verifyImages" in r]
    assert rules
    for rule in rules:
        for vi in rule["verifyImages"]:
            assert any(fnmatch.fnmatch(image, ref) for ref in vi["imageReferences"]), (image, vi["imageReferences"])
            assert vi["failureAction"] == "Enforce" and vi["required"] is True and vi["verifyDigest"] is True
            entries = [e for a in vi["attestors"] for e in a["entries"]]
            assert entries and all(set(e) == {"keyless"} for e in entries), "keyless attestors only"
            for e in entries:
                k = e["keyless"]
                assert k.get("issuer") == issuer and "issuerRegExp" not in k, k
                assert "subject" not in k, "subjectRegExp only (the tag varies)"
                pol = re.compile(k["subjectRegExp"])
                release = re.compile(subject)
                base = f"https://github.com/{repo}/.github/workflows/{workflow_path.name}@refs/tags/"
                samples = ["v0.1.0", "v1.2.3", "v10.20.30", "v1.2", "v1.2.3-rc.1", "1.2.3", "vx.y.z", "v1.2.3.4"]
                for tag in samples:
                    s = base + tag
                    # Kyverno matches with Go's regexp.MatchString: unanchored unless the pattern anchors
                    assert bool(pol.search(s)) == bool(release.fullmatch(s)), (
                        f"{s}: policy {'accepts' if pol.search(s) else 'rejects'}, the release "
                        f"{'signs' if release.fullmatch(s) else 'never signs'} it")
                assert any(release.fullmatch(base + t) for t in samples), "no sample tag is a release tag"
                for other in [f"https://github.com/{repo}/.github/workflows/ci.yml@refs/tags/v1.2.3",
                              f"https://github.com/{repo}/.github/workflows/{workflow_path.name}@refs/heads/main",
                              f"https://github.com/{repo}-fork/.github/workflows/{workflow_path.name}@refs/tags/v1.2.3",
                              f"https://github.com/evil/{repo.split('/')[1]}/.github/workflows/{workflow_path.name}@refs/tags/v1.2.3",
                              "x" + base + "v1.2.3"]:
                    assert not pol.search(other), f"policy accepts {other!r}"
    return issuer, subject


def prod_policy_and_image():
    docs = rendered("prod")
    image = next(c["image"] for d in docs if d["kind"] == "Deployment" for c in d["spec"]["template"]["spec"]["containers"])
    pol = one(docs, "ClusterPolicy")
    ns = one(docs, "Namespace")["metadata"]["name"]
    for r in pol["spec"]["rules"]:
        assert r["match"]["any"][0]["resources"]["namespaces"] == [ns]
    return pol, image


def test_admission_policy_trusts_exactly_the_release_identity():
    pol, image = prod_policy_and_image()
    issuer, subject = check_policy_matches_release(pol, RELEASE_WORKFLOW, RELEASE_WORKFLOW.read_text(),
                                                   RELEASE_SCRIPT.read_text(), image)
    print(f"\nrelease signs as issuer={issuer} subject~{subject}; the policy admits exactly these")


def _mutations():
    wf = RELEASE_WORKFLOW.read_text()
    sh = RELEASE_SCRIPT.read_text()
    return [
        ("workflow file renamed", RELEASE_WORKFLOW.with_name("publish.yml"), wf, sh),
        ("tags widened to v*", RELEASE_WORKFLOW, wf.replace('tags: ["v[0-9]+.[0-9]+.[0-9]+"]', 'tags: ["v*"]'), sh),
        ("also on branch pushes", RELEASE_WORKFLOW, wf.replace('    tags: ["v[0-9]+.[0-9]+.[0-9]+"]', '    tags: ["v[0-9]+.[0-9]+.[0-9]+"]\n    branches: [main]'), sh),
        ("id-token on the build job too", RELEASE_WORKFLOW, wf.replace("      packages: write # push the per-arch image to GHCR",
                                                                     "      packages: write # push the per-arch image to GHCR\n      id-token: write"), sh),
        ("signing with a key", RELEASE_WORKFLOW, wf, sh.replace("cosign sign --yes --recursive", "cosign sign --key cosign.key --yes --recursive")),
        ("another issuer", RELEASE_WORKFLOW, wf, sh.replace("--certificate-oidc-issuer https://token.actions.githubusercontent.com",
                                                              "--certificate-oidc-issuer https://accounts.google.com")),
    ]


@pytest.mark.parametrize("what, path, wf, sh", _mutations(), ids=[m[0] for m in _mutations()])
def test_signing_identity_drift_fails(what, path, wf, sh):
    """Drift demonstration: change the release workflow or its script (in memory) and the
    check above fails."""
    assert wf != RELEASE_WORKFLOW.read_text() or sh != RELEASE_SCRIPT.read_text() or path != RELEASE_WORKFLOW, what
    pol, image = prod_policy_and_image()
    with pytest.raises(AssertionError):
        check_policy_matches_release(pol, path, wf, sh, image)


@pytest.mark.parametrize("subject", [
    r"^https://github\.com/shipshape-dev/shipshape/\.github/workflows/release\.yml@refs/tags/v.*$",
    r"https://github\.com/shipshape-dev/shipshape/\.github/workflows/release\.yml@refs/tags/v[0-9]+\.[0-9]+\.[0-9]+",
    r"^https://github\.com/shipshape-dev/shipshape/\.github/workflows/.*@refs/tags/v[0-9]+\.[0-9]+\.[0-9]+$",
])
def test_policy_drift_fails(subject):
    pol, image = prod_policy_and_image()
    pol["spec"]["rules"][0]["verifyImages"][0]["attestors"][0]["entries"][0]["keyless"]["subjectRegExp"] = subject
    with pytest.raises(AssertionError):
        check_policy_matches_release(pol, RELEASE_WORKFLOW, RELEASE_WORKFLOW.read_text(), RELEASE_SCRIPT.read_text(), image)


# ---- GitOps: tag -> digest in git -> pods ---------------------------------------------------

MARKER = re.compile(r'#\s*(\{"\$imagepolicy":\s*"([^"]+)"\})\s*$')


def test_image_automation_closes_the_loop_from_tag_to_digest():
    docs = rendered("prod")
    ns = one(docs, "Namespace")["metadata"]["name"]
    kfile = TARGETS["prod"] / "kustomization.yaml"
    k = yaml.safe_load(kfile.read_text())
    entry = next(i for i in k["images"] if i["name"] == "shipshape")
    policy = one(docs, "ImagePolicy")
    repo = one(docs, "ImageRepository", policy["spec"]["imageRepositoryRef"]["name"])
    assert repo["spec"]["image"] == entry["newName"]
    # the release pushes <repo>:<X.Y.Z> for tag vX.Y.Z (and per-arch X.Y.Z-<arch>)
    script = RELEASE_SCRIPT.read_text()
    assert 'repo=ghcr.io/${GITHUB_REPOSITORY,,}' in script and '--tag "$repo:$version"' in script
    assert entry["newName"] == "ghcr.io/" + repository().lower()
    pat = re.compile(policy["spec"]["filterTags"]["pattern"])
    for tag, ok in [("1.2.3", True), ("0.1.0", True), ("1.2.3-amd64", False), ("1.2.3-arm64", False),
                    ("sha256-" + "a" * 64 + ".sig", False), ("latest", False), ("v1.2.3", False)]:
        assert bool(pat.search(tag)) == ok, tag
    assert "semver" in policy["spec"]["policy"]
    assert policy["spec"]["digestReflectionPolicy"] in ("IfNotPresent", "Always")
    # the setter marker: on the digest line, naming this ImagePolicy, field `digest`
    lines = [ln for ln in kfile.read_text().splitlines() if MARKER.search(ln)]
    assert len(lines) == 1, lines
    key, _, value = lines[0].strip().lstrip("- ").partition(":")
    setter = MARKER.search(lines[0]).group(2)
    assert key == "digest" and setter == f"{ns}:{policy['metadata']['name']}:digest", lines[0]
    assert value.split("#")[0].strip() == entry["digest"]
    # the automation writes that directory of the repository Flux applies, on the branch it reads
    auto = one(docs, "ImageUpdateAutomation")
    git = one(docs, "GitRepository", auto["spec"]["sourceRef"]["name"])
    flux = next(d for d in docs if d["kind"] == "Kustomization" and d["apiVersion"].startswith("kustomize.toolkit"))
    assert flux["spec"]["sourceRef"]["name"] == git["metadata"]["name"]
    overlay = "./" + str(TARGETS["prod"].relative_to(REPO))
    assert auto["spec"]["update"] == {"path": overlay, "strategy": "Setters"}
    assert flux["spec"]["path"] == overlay
    branch = git["spec"]["ref"]["branch"]
    assert auto["spec"]["git"]["checkout"]["ref"]["branch"] == branch == auto["spec"]["git"]["push"]["branch"]
    assert auto["spec"]["policySelector"]["matchLabels"].items() <= policy["metadata"]["labels"].items()
    assert git["spec"]["url"].rstrip("/").endswith("github.com/" + repository())
    assert "!/kustomize/" in git["spec"]["ignore"]


def apply_setter(text: str, setter: str, value: str) -> str:
    """What image-automation-controller's Setters strategy does to a marked line: the scalar
    before the marker becomes the policy's value (an imitation limited to `key: value # marker`
    lines, docs/pipeline.md)."""
    out = []
    for ln in text.splitlines(keepends=True):
        m = MARKER.search(ln)
        if m and m.group(2) == setter:
            head, sep, _ = ln.partition(":")
            ln = f"{head}{sep} {value} # {m.group(1)}\n"
        out.append(ln)
    return "".join(out)


def test_a_release_digest_written_by_the_automation_reaches_the_pods(tmp_path):
    """The commit the automation makes (simulated on a copy of kustomize/) changes exactly the
    image of the rendered prod Deployment to the new digest."""
    new = "sha256:" + "ab12" * 16
    copy = tmp_path / "kustomize"
    shutil.copytree(KUSTOMIZE, copy, ignore=shutil.ignore_patterns("tests", "__pycache__"))
    kfile = copy / TARGETS["prod"].relative_to(KUSTOMIZE) / "kustomization.yaml"
    before = kfile.read_text()
    after = apply_setter(before, "shipshape:shipshape:digest", new)
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert len(changed) == 1, changed
    kfile.write_text(after)
    out = subprocess.run(["kubectl", "kustomize", str(kfile.parent)], check=True, capture_output=True, text=True).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    images = {c["image"] for d in docs if d["kind"] == "Deployment" for c in d["spec"]["template"]["spec"]["containers"]}
    assert images == {f"ghcr.io/shipshape-dev/shipshape@{new}"}, images
    old = [d for d in rendered("prod")]
    assert len(docs) == len(old)


# ---- traffic in: the gateway is the only trusted hop ----------------------------------------

def test_gateway_wiring():
    docs = rendered("component:gateway")
    gw, route, cert = one(docs, "Gateway"), one(docs, "HTTPRoute"), one(docs, "Certificate")
    https = next(x for x in gw["spec"]["listeners"] if x["name"] == "https")
    assert https["protocol"] == "HTTPS" and https["port"] == 443 and https["tls"]["mode"] == "Terminate"
    assert https["tls"]["certificateRefs"] == [{"group": "", "kind": "Secret", "name": cert["spec"]["secretName"]}]
    assert cert["spec"]["dnsNames"] == [https["hostname"]] == route["spec"]["hostnames"]
    assert route["spec"]["parentRefs"][0]["name"] == gw["metadata"]["name"]
    assert route["spec"]["parentRefs"][0]["sectionName"] == "https"
    svc = one(docs, "Service", "shipshape")
    backend = route["spec"]["rules"][0]["backendRefs"][0]
    assert backend["name"] == svc["metadata"]["name"] and backend["port"] in [p["port"] for p in svc["spec"]["ports"]]


def trusted_proxies(docs):
    env = {e["name"]: e.get("value") for d in docs if d["kind"] == "Deployment"
           for c in d["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])}
    return yaml.safe_load(env["SHIPSHAPE_RATE_LIMIT__TRUSTED_PROXIES"])


def test_trusted_proxies_are_the_gateway_only():
    import ipaddress
    for target in ("prod", "component:gateway"):
        nets = [ipaddress.ip_network(n) for n in trusted_proxies(rendered(target))]
        assert nets and all(n.prefixlen >= 8 and n.is_private for n in nets), nets
    assert "SHIPSHAPE_RATE_LIMIT__TRUSTED_PROXIES" not in rendered_text_env("dev")


def rendered_text_env(target):
    return {e["name"] for d in rendered(target) if d["kind"] == "Deployment"
            for c in d["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])}


def remaining(r) -> int:
    m = re.search(r";r=(\d+)", r.headers.get("RateLimit", r.headers.get("ratelimit", "")))
    assert m, (r.status, r.headers)
    return int(m.group(1))


def test_rate_limit_sees_the_client_behind_the_gateway(binary, app_database):
    """The real binary with the prod env: a request through the gateway (its pod address is
    127.0.0.1 here, added to the rendered trusted_proxies) is limited per client address the
    gateway appended; an address the client put in X-Forwarded-For itself is not believed."""
    secrets = {("shipshape-db-app", "uri"): app_database["uri"], ("shipshape-auth", "hs256-secret"): random_secret()}
    docs = rendered("prod")
    proxies = trusted_proxies(docs)
    pod = Pod.prepare(docs, binary, secrets, extra_env={
        "SHIPSHAPE_RATE_LIMIT__TRUSTED_PROXIES": yaml.safe_dump(proxies + ["127.0.0.1/32"], default_flow_style=True).strip()})
    pod.remapped.append(f"the gateway pod's address: 127.0.0.1, added to trusted_proxies {proxies}")
    try:
        pod.start()
        pod.wait_probe("readinessProbe", budget=30)
        url = pod.url("http", "/v1/items")
        def via_gateway(xff):
            r = http("GET", url, headers={"X-Forwarded-For": xff} if xff else {})
            assert r.status == 401, r.status  # no token: keyed by client address, counted
            return remaining(r)
        a = [via_gateway("203.0.113.7") for _ in range(3)]
        assert a[0] - a[2] == 2, a
        assert via_gateway("203.0.113.8") == a[0], "another client has its own budget"
        # the client sent X-Forwarded-For: 198.51.100.1 itself; the gateway appended what it saw
        assert via_gateway("198.51.100.1, 203.0.113.7") == a[2] - 1, "a client-supplied hop was believed"
        # the address of a trusted hop is never the client
        assert via_gateway("203.0.113.7, 127.0.0.1") == a[2] - 2
        print(f"\n  remapped: {pod.remapped[-1]}\n  RateLimit remaining for 203.0.113.7: {a} -> "
              f"other client {a[0]}, forged-left hop still counted on 203.0.113.7")
    finally:
        pod.cleanup()


# ---- backups ---------------------------------------------------------------------------------

def test_backups_and_restore_refer_to_each_other():
    docs = rendered("prod")
    cluster = one(docs, "Cluster")
    store = one(docs, "ObjectStore")
    plugin = cluster["spec"]["plugins"]
    assert plugin == [{"name": "barman-cloud.cloudnative-pg.io", "isWALArchiver": True,
                       "parameters": {"barmanObjectName": store["metadata"]["name"]}}]
    assert "backup" not in cluster["spec"], "WAL archiving through the plugin only"
    sb = one(docs, "ScheduledBackup")
    assert sb["spec"]["cluster"]["name"] == cluster["metadata"]["name"]
    assert sb["spec"]["method"] == "plugin" and sb["spec"]["pluginConfiguration"]["name"] == plugin[0]["name"]
    assert len(sb["spec"]["schedule"].split()) == 6, "CloudNativePG schedules have a seconds field"
    pm = one(docs, "PodMonitor")
    assert pm["spec"]["selector"]["matchLabels"] == {"cnpg.io/cluster": cluster["metadata"]["name"]}
    assert [e["port"] for e in pm["spec"]["podMetricsEndpoints"]] == ["metrics"]
    restore = one(rendered("backups-restore"), "Cluster")
    rec = restore["spec"]["bootstrap"]["recovery"]
    origin = next(e for e in restore["spec"]["externalClusters"] if e["name"] == rec["source"])
    assert origin["plugin"]["name"] == plugin[0]["name"]
    assert origin["plugin"]["parameters"] == {"barmanObjectName": store["metadata"]["name"], "serverName": cluster["metadata"]["name"]}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rec["recoveryTarget"]["targetTime"])
    assert restore["metadata"]["name"] != cluster["metadata"]["name"]
    arch = restore["spec"]["plugins"][0]["parameters"]
    assert arch["serverName"] != cluster["metadata"]["name"], "the restored cluster must not archive into the origin's folder"
    assert restore["metadata"]["namespace"] == one(docs, "Namespace")["metadata"]["name"]
    assert (KUSTOMIZE / "tests" / "backup_drill.py").exists()
