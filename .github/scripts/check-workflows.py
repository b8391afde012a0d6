#!/usr/bin/env python3
"""Static checks on .github/ that actionlint, zizmor and checkov do not make (run by .ci/workflows.sh).

    check-workflows.py [--extract-run DIR] [--pins ../shared/actions-pins.md [--pins .github/actions-pins.md]]

- pins: every `uses:` is pinned by a 40-hex commit SHA with a version comment that is an exact
  release tag (vX.Y.Z: a major tag such as v17 moves, and then the comment lies), and (when the
  pins files are given: the shared vetted list, plus .github/actions-pins.md for pins this
  repository reviewed itself, each with its provenance) that exact action/SHA/tag is one of them;
  known-compromised or retired actions are refused.
- binary cache: no `vars.X || 'literal'` fallback (forks see no variables and would get the
  literal), every step that names the cachix cache runs only `if: vars.CACHIX_CACHE != ''`, and
  only push events (main) write to it.
- instructions: every `minikube image load X` in the repository loads a tarball (*.tar) or an
  image reference (name:tag), never the `nix build` out-link, which is a script.
- hardening: top-level `permissions: contents: read`, `timeout-minutes` on every job,
  `persist-credentials: false` on every checkout, no `${{ }}` inside `run:`, no
  pull_request_target, cancel-in-progress concurrency in ci.yml.
- structure: `needs:` name existing jobs, `steps.<id>` in `if:` name existing steps.
- references: every flake output the workflows and their scripts use exists in flake.nix/nix/*.nix,
  every tool they take from the dev shell is in it, every repository path they name exists, the
  dev overlay renders with the namespace/Deployment/NodePort the deploy job assumes, the ZAP plan
  writes the report the workflow uploads, the coverage threshold has one source.
- with --extract-run DIR: writes every `run:` block as a bash file for shellcheck.
Prints one line per check and "workflow checks: N passed, M failed"; exit 1 on any failure.
"""

import argparse
import glob
import os
import re
import subprocess
import sys

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
os.chdir(ROOT)

results = []


def check(name, ok, detail="", info=""):
    """Record one check; `detail` explains a failure, `info` is printed under a pass."""
    results.append(ok)
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f": {detail}" if detail and not ok else ""))
    if info and ok:
        print(f"     {info}")


def load_workflows():
    wfs = {}
    for path in sorted(glob.glob(".github/workflows/*.yml") + glob.glob(".github/workflows/*.yaml")):
        with open(path) as f:
            text = f.read()
        doc = yaml.safe_load(text)
        # PyYAML (YAML 1.1) reads the key `on` as True.
        if True in doc:
            doc["on"] = doc.pop(True)
        wfs[path] = (doc, text)
    return wfs


def vetted_pins(paths):
    paths = [p for p in paths or [] if p and os.path.exists(p)]
    if not paths:
        return None
    pins = {}
    row = re.compile(r"^\|\s*([\w.-]+/[\w./-]+)\s*\|\s*`([0-9a-f]{40})\s*#\s*(\S+)`")
    for path in paths:
        with open(path) as f:
            for line in f:
                m = row.match(line)
                if m:
                    pins[(m.group(1), m.group(2))] = m.group(3)
    return pins


FORBIDDEN = {
    "DeterminateSystems/magic-nix-cache-action": "the free magic-nix-cache tier ended 2025-02-01; use cachix",
    "DeterminateSystems/magic-nix-cache": "the free magic-nix-cache tier ended 2025-02-01; use cachix",
    "semgrep/semgrep-action": "archived; run semgrep from the dev shell",
    "returntocorp/semgrep-action": "archived; run semgrep from the dev shell",
}
TRIVY_SAFE = "57a97c7e7821a5776cebc9bb87c984fa69cba8f1"
EXACT_TAG = re.compile(r"v\d+\.\d+\.\d+")


def check_pins(wfs, pins):
    uses_re = re.compile(r"^\s*(?:-\s+)?uses:\s*(['\"]?)([^'\"\s#]+)\1\s*(?:#\s*(\S+))?")
    problems, count = [], 0
    for path, (_, text) in wfs.items():
        for n, line in enumerate(text.splitlines(), 1):
            m = uses_re.match(line)
            if not m:
                continue
            count += 1
            ref, version = m.group(2), m.group(3)
            where = f"{path}:{n}"
            if ref.startswith("./"):
                continue
            if ref.startswith("docker://"):
                if "@sha256:" not in ref:
                    problems.append(f"{where} docker image not pinned by digest: {ref}")
                continue
            action, _, sha = ref.partition("@")
            if not re.fullmatch(r"[0-9a-f]{40}", sha):
                problems.append(f"{where} {action} pinned by '{sha}', not a full commit SHA")
                continue
            if not version:
                problems.append(f"{where} {action}@{sha[:12]} has no version comment")
            elif not EXACT_TAG.fullmatch(version):
                problems.append(f"{where} {action}@{sha[:12]} # {version}: not an exact release tag (vX.Y.Z);"
                                " a major tag moves, and then the comment no longer names the pinned commit")
            repo = "/".join(action.split("/")[:2])
            if repo in FORBIDDEN or action in FORBIDDEN:
                problems.append(f"{where} {action} is refused: {FORBIDDEN.get(repo) or FORBIDDEN[action]}")
            if repo == "aquasecurity/trivy-action" and sha != TRIVY_SAFE:
                problems.append(f"{where} trivy-action tags were hijacked (CVE-2026-33634); only {TRIVY_SAFE} is safe")
            if pins is not None:
                vetted = pins.get((action, sha))
                if vetted is None:
                    problems.append(f"{where} {action}@{sha} is not a vetted pin in the pins file")
                elif version and version != vetted:
                    problems.append(f"{where} {action}@{sha[:12]} says {version}, the pins file says {vetted}")
    note = f"{count} uses: lines" + ("" if pins is not None else " (no pins file: vetted-list check skipped)")
    check("every uses: is pinned by SHA with an exact-tag comment" + (" and vetted" if pins is not None else ""),
          not problems, "; ".join(problems), note)


CACHE_IF = "vars.CACHIX_CACHE != ''"


def check_cache(wfs):
    """The binary cache is named by explicit variables only, and written by pushes to main only."""
    problems = []
    for path, (doc, text) in wfs.items():
        for n, line in enumerate(text.splitlines(), 1):
            if re.search(r"\bvars\.[A-Za-z0-9_]+\s*\|\|\s*['\"]", line):
                problems.append(f"{path}:{n} falls back from a variable to a literal (forks get the literal):"
                                f" {line.strip()}")
        for jname, job in jobs_of(doc).items():
            for i, step in enumerate(job.get("steps") or []):
                uses = str(step.get("uses", ""))
                blob = " ".join(str(x) for x in (step.get("run", ""), step.get("env") or {}, step.get("with") or {}))
                if not (uses.startswith("cachix/cachix-action@") or "CACHIX_CACHE" in blob or "nix-cache.sh" in blob):
                    continue
                cond = str(step.get("if", ""))
                label = f"{path}: {jname} step '{step.get('name', i + 1)}'"
                if CACHE_IF not in cond:
                    problems.append(f"{label} uses the binary cache without `if: ${{{{ {CACHE_IF} }}}}`")
                writes = ("nix-cache.sh push" in blob or "CACHIX_AUTH_TOKEN" in blob
                          or "authToken" in (step.get("with") or {}))
                if writes and "github.event_name == 'push'" not in cond:
                    problems.append(f"{label} can push to the cache outside push events (pull requests would write it)")
    check("binary cache: explicit variables only (no || fallback), steps conditional on CACHIX_CACHE, pushes only"
          " from push events", not problems, "; ".join(problems))


MINIKUBE_LOAD = re.compile(r"minikube image load\s+(\S+)")


def check_minikube_load():
    """`minikube image load` takes an image reference or a tarball; `nix build .#image` leaves a script."""
    files = ["README.md"] + sorted(glob.glob("docs/**/*.md", recursive=True))
    for top in ("kustomize", "nix", ".github", ".ci"):
        files += sorted(f for f in glob.glob(f"{top}/**/*", recursive=True) if os.path.isfile(f))
    problems, count = [], 0
    for f in files:
        if os.path.abspath(f) == os.path.abspath(__file__):
            continue
        try:
            with open(f, encoding="utf-8") as fh:
                lines = fh.read().splitlines()
        except (UnicodeDecodeError, OSError):
            continue
        for n, line in enumerate(lines, 1):
            for m in MINIKUBE_LOAD.finditer(line):
                arg = m.group(1).strip("`'\";,)")
                count += 1
                # A shell variable or an upper-case placeholder (usage text: TAG) is not checked.
                if arg.endswith(".tar") or ":" in arg or arg.startswith("$") or re.fullmatch(r"[A-Z_]+", arg):
                    continue
                problems.append(f"{f}:{n} loads {arg!r}, neither a tarball (*.tar) nor an image name:tag"
                                " (the out-link of nix build .#image is a script: ./result > /tmp/shipshape.tar first)")
    check(f"minikube image load takes a tarball or an image reference ({count} found)", not problems,
          "; ".join(problems))


def jobs_of(doc):
    return doc.get("jobs") or {}


def check_hardening(wfs):
    problems = []
    for path, (doc, _) in wfs.items():
        if doc.get("permissions") != {"contents": "read"}:
            problems.append(f"{path}: top-level permissions must be exactly 'contents: read'")
        on = doc.get("on") or {}
        if isinstance(on, dict) and "pull_request_target" in on or on == "pull_request_target":
            problems.append(f"{path}: pull_request_target is not allowed")
        for jname, job in jobs_of(doc).items():
            if "timeout-minutes" not in job and "uses" not in job:
                problems.append(f"{path}: job {jname} has no timeout-minutes")
            for i, step in enumerate(job.get("steps") or []):
                uses = step.get("uses", "")
                if uses.startswith("actions/checkout@"):
                    if (step.get("with") or {}).get("persist-credentials") is not False:
                        problems.append(f"{path}: {jname} step {i + 1} checkout without persist-credentials: false")
                run = step.get("run")
                if run and "${{" in run:
                    problems.append(f"{path}: {jname} step '{step.get('name', i + 1)}' interpolates ${{{{ }}}} in run:")
    ci = wfs.get(".github/workflows/ci.yml")
    if ci:
        conc = ci[0].get("concurrency") or {}
        if "cancel-in-progress" not in conc or "pull_request" not in str(conc.get("cancel-in-progress")):
            problems.append("ci.yml: concurrency must cancel superseded pull request runs")
        on = ci[0].get("on") or {}
        if "pull_request" not in on or "push" not in on:
            problems.append("ci.yml: must run on pull_request and push")
    check("hardening: read-only default token, timeouts, no persisted credentials, no ${{ }} in run:",
          not problems, "; ".join(problems))


def check_structure(wfs):
    problems = []
    for path, (doc, _) in wfs.items():
        jobs = jobs_of(doc)
        for jname, job in jobs.items():
            needs = job.get("needs") or []
            needs = [needs] if isinstance(needs, str) else needs
            for n in needs:
                if n not in jobs:
                    problems.append(f"{path}: {jname} needs unknown job {n}")
            ids = {s.get("id") for s in job.get("steps") or [] if s.get("id")}
            texts = [str(job.get("if", ""))] + [str(s.get("if", "")) for s in job.get("steps") or []]
            for t in texts:
                for ref in re.findall(r"steps\.([A-Za-z0-9_-]+)\.", t):
                    if ref not in ids:
                        problems.append(f"{path}: {jname} refers to unknown step id {ref}")
                for ref in re.findall(r"needs\.([A-Za-z0-9_-]+)\.", t):
                    if ref not in needs:
                        problems.append(f"{path}: {jname} refers to needs.{ref} it does not need")
    ci = wfs.get(".github/workflows/ci.yml")
    if ci:
        jobs = jobs_of(ci[0])
        for want in ["check", "coverage", "sast", "image", "deploy", "dast", "notify"]:
            if want not in jobs:
                problems.append(f"ci.yml: no job {want}")
    check("structure: needs and steps.<id> references resolve; ci.yml has every stage", not problems,
          "; ".join(problems))


def step_shell(doc, job, step):
    return (step.get("shell") or ((job.get("defaults") or {}).get("run") or {}).get("shell")
            or ((doc.get("defaults") or {}).get("run") or {}).get("shell") or "bash")


def extract_runs(wfs, out):
    os.makedirs(out, exist_ok=True)
    n, problems = 0, []
    for path, (doc, _) in wfs.items():
        base = os.path.splitext(os.path.basename(path))[0]
        for jname, job in jobs_of(doc).items():
            for i, step in enumerate(job.get("steps") or []):
                run = step.get("run")
                if not run:
                    continue
                shell = step_shell(doc, job, step)
                if "bash" in shell.split() or shell == "bash":
                    interp = "bash"
                elif shell.split()[0] == "sh":
                    interp = "sh"
                else:
                    problems.append(f"{path}: {jname} step {i + 1} uses shell '{shell}'")
                    continue
                n += 1
                fname = os.path.join(out, f"{base}--{jname}--{i + 1:02d}.sh")
                with open(fname, "w") as f:
                    f.write(f"#!/usr/bin/env {interp}\n# {path} / {jobs_of(doc)[jname].get('name', jname)} / "
                            f"{step.get('name', i + 1)}  (shell: {shell})\n")
                    # GitHub runs bash steps as `bash -eo pipefail {0}`.
                    f.write("set -eo pipefail\n" if interp == "bash" else "set -e\n")
                    f.write(run if run.endswith("\n") else run + "\n")
    check(f"extracted {n} run: blocks for shellcheck", not problems, "; ".join(problems))
    return n


def texts_to_scan(wfs):
    """(origin, text) pairs holding commands: run blocks, step shells, `with:` values, scripts."""
    out = []
    for path, (doc, _) in wfs.items():
        for jname, job in jobs_of(doc).items():
            for step in job.get("steps") or []:
                for key in ("run", "shell"):
                    if step.get(key):
                        out.append((f"{path}:{jname}", str(step[key])))
                for v in (step.get("with") or {}).values():
                    out.append((f"{path}:{jname}", str(v)))
            sh = ((job.get("defaults") or {}).get("run") or {}).get("shell")
            if sh:
                out.append((f"{path}:{jname}", sh))
    for script in sorted(glob.glob(".github/scripts/*.sh")):
        with open(script) as f:
            # Comments may name files of other stages; only commands count.
            code = "\n".join(line for line in f.read().splitlines() if not line.lstrip().startswith("#"))
        out.append((script, code))
    return out


def nix_sources():
    files = ["flake.nix"] + sorted(glob.glob("nix/**/*.nix", recursive=True))
    text = ""
    for f in files:
        if os.path.exists(f):
            with open(f) as fh:
                text += fh.read() + "\n"
    return files, text


def defines(text, attr):
    """True when some .nix file binds `attr = ...` or `inherit ... attr ...;`."""
    a = re.escape(attr)
    return (re.search(r'(^|[\s{;(])"?' + a + r'"?\s*=', text, re.M) is not None
            or re.search(r"\binherit\b[^;]*?(?<![\w-])" + a + r"(?![\w-])[^;]*;", text) is not None)


def dev_shell_attrs():
    """The nixpkgs attributes .ci/tools.toml puts into the dev shell."""
    import tomllib
    try:
        with open(".ci/tools.toml", "rb") as f:
            tools = tomllib.load(f).get("tools", {})
    except FileNotFoundError:
        return []
    return sorted({t["nixpkgs"] for t in tools.values() if "nixpkgs" in t})


def check_flake_refs(wfs):
    _, text = nix_sources()
    if not os.path.exists("flake.nix"):
        check("flake outputs used by the workflows exist", False, "no flake.nix")
        return
    used = {}
    for origin, t in texts_to_scan(wfs):
        # `.#x`, `path:DIR#x`; `nixpkgs#x` comes from the pinned nixpkgs, not from this flake.
        for m in re.finditer(r'(?:(?<![\w/-])\.|path:\S*?)#([A-Za-z0-9_.$"{}-]+)', t):
            ref = m.group(1).strip('"')
            parts = ref.split(".")
            if parts[0] in ("packages", "checks", "devShells", "apps") and len(parts) >= 3:
                key = f"{parts[0]}.{parts[-1]}"
            else:
                key = f"packages.{parts[-1]}"
            used.setdefault(key, set()).add(origin)
        if re.search(r"\bnix flake check\b", t):
            used.setdefault("checks", set()).add(origin)
        if re.search(r"\bnix develop\b(?!\s+\.#)", t):
            used.setdefault("devShells.default", set()).add(origin)
    missing = []
    for key in sorted(used):
        category, _, attr = key.partition(".")
        if category not in text or (attr and not defines(text, attr)):
            missing.append(f"{key} (used in {', '.join(sorted(used[key]))})")
    check("flake outputs used by the workflows exist in flake.nix/nix/*.nix", not missing, "; ".join(missing),
          "uses " + ", ".join(sorted(used)))
    # The checks ci.yml's check job names in its "# checks.<system>: a, b, ..." comment.
    with open(".github/workflows/ci.yml") as f:
        comment = " ".join(line.strip().lstrip("#").strip() for line in f if line.strip().startswith("#"))
    m = re.search(r"checks\.<system>:\s*([^.]*(?:\.[^\s][^.]*)*)\.(?:\s|$)", comment)
    promised = [re.sub(r"\(.*?\)", "", c).strip() for c in (m.group(1).split(",") if m else [])]
    absent = [c for c in promised if not defines(text, c)]
    check("flake checks named in ci.yml exist", bool(promised) and not absent,
          "missing: " + ", ".join(absent) if promised else "ci.yml names no checks.<system>", ", ".join(promised))
    # Tools the workflows take from the dev shell (`nix develop --command ...`): nix/shell.nix
    # takes its packages from the `nixpkgs` attributes of .ci/tools.toml.
    text += "\n" + " ".join(dev_shell_attrs())
    tools = {"semgrep": "semgrep", "cargo-deny": "cargo-deny", "zizmor": "zizmor", "trivy": "trivy",
             "minikube": "minikube", "kubectl": "kubectl", "zap": r"\bzap\b", "cargo": "cargo|rustToolchain|craneLib"}
    absent = [name for name, rx in tools.items() if not re.search(rx, text)]
    check("dev shell provides the tools the workflows run (" + ", ".join(tools) + ")", not absent,
          "not found in flake.nix/nix/*.nix: " + ", ".join(absent))


PATH_RE = re.compile(r"(?<![\w/.$-])((?:\.github|\.ci|\.semgrep|kustomize|nix|service|docs)/[\w./-]*|flake\.(?:nix|lock)|Cargo\.lock)")


def check_paths(wfs):
    missing, seen = [], set()
    for origin, t in texts_to_scan(wfs):
        for m in PATH_RE.finditer(t):
            p = m.group(1).rstrip(".")
            if "*" in p or p in seen:
                continue
            seen.add(p)
            if not os.path.exists(p):
                missing.append(f"{p} (in {origin})")
    check(f"repository paths named in workflows and scripts exist ({len(seen)} checked)", not missing,
          "; ".join(missing))


def render(overlay):
    try:
        out = subprocess.run(["kubectl", "kustomize", overlay], check=True, capture_output=True, text=True).stdout
    except FileNotFoundError:
        return None, "kubectl not installed"
    except subprocess.CalledProcessError as e:
        return None, e.stderr.strip()[:400]
    return [d for d in yaml.safe_load_all(out) if d], ""


def check_overlays():
    ns = os.environ.get("K8S_NAMESPACE", "shipshape-dev")
    name = os.environ.get("K8S_DEPLOYMENT", "shipshape")
    port = int(os.environ.get("K8S_NODEPORT", "30080"))
    docs, err = render("kustomize/overlays/dev")
    if docs is None:
        check("dev overlay renders", False, err)
    else:
        problems = []
        deps = [d for d in docs if d.get("kind") == "Deployment" and d["metadata"]["name"] == name]
        if not deps:
            problems.append(f"no Deployment {name}")
        for d in deps:
            if d["metadata"].get("namespace") != ns:
                problems.append(f"Deployment {name} is in namespace {d['metadata'].get('namespace')}, not {ns}")
            images = [c.get("image") for c in d["spec"]["template"]["spec"]["containers"]]
            if "shipshape:dev" not in images:
                problems.append(f"Deployment image is {images}, the deploy job loads shipshape:dev")
            labels = d["spec"]["template"]["metadata"].get("labels", {})
            if labels.get("app.kubernetes.io/name") != "shipshape":
                problems.append("pods lack app.kubernetes.io/name=shipshape (k8s.sh diagnose selects on it)")
        node_ports = [p.get("nodePort") for d in docs if d.get("kind") == "Service"
                      and d.get("spec", {}).get("type") == "NodePort" for p in d["spec"].get("ports", [])]
        if port not in node_ports:
            problems.append(f"no NodePort Service on {port} (found {node_ports})")
        check(f"dev overlay: Deployment {name} in {ns}, image shipshape:dev, NodePort {port}", not problems,
              "; ".join(problems))
    docs, err = render("kustomize/overlays/prod")
    if docs is None:
        check("prod overlay renders", False, err)
    else:
        with open("kustomize/overlays/prod/kustomization.yaml") as f:
            kz = yaml.safe_load(f)
        names = [i.get("name") for i in kz.get("images") or []]
        check("prod overlay renders and pins image 'shipshape' (release notes give its digest)",
              "shipshape" in names, f"images: entries {names}")


def check_zap():
    path = ".github/zap/api-scan.yaml"
    with open(path) as f:
        plan = yaml.safe_load(f)
    jobs = plan.get("jobs") or []
    types = [j.get("type") for j in jobs]
    problems = []
    for want in ["openapi", "activeScan", "report", "exitStatus"]:
        if want not in types:
            problems.append(f"no {want} job")
    for j in jobs:
        if j.get("type") == "openapi" and "/openapi.json" not in str((j.get("parameters") or {}).get("apiUrl")):
            problems.append("openapi job does not read /openapi.json")
        if j.get("type") == "exitStatus" and not (j.get("parameters") or {}).get("errorLevel"):
            problems.append("exitStatus has no errorLevel: alerts would not fail the stage")
        if j.get("type") == "alertFilter":
            for r in j.get("alertFilters") or []:
                if "ruleId" not in r or "newRisk" not in r:
                    problems.append(f"alertFilter entry without ruleId/newRisk: {r}")
    sarif = [(j.get("parameters") or {}).get("reportFile") for j in jobs
             if j.get("type") == "report" and (j.get("parameters") or {}).get("template") == "sarif-json"]
    with open(".github/workflows/ci.yml") as f:
        ci = f.read()
    if not sarif or f"zap-report/{sarif[0]}" not in ci:
        problems.append(f"ci.yml does not read the SARIF the plan writes ({sarif})")
    # Code scanning rejects ZAP's URL locations: what goes up must be zap-sarif.py's output.
    dast = (load_workflows()[".github/workflows/ci.yml"][0].get("jobs") or {}).get("dast") or {}
    steps = dast.get("steps") or []
    rewritten = set()
    for st in steps:
        m = re.search(r"zap-sarif\.py\s+(\S+)\s+(\S+)", str(st.get("run", "")))
        if m:
            rewritten.add(m.group(2))
    for st in steps:
        if str(st.get("uses", "")).startswith("github/codeql-action/upload-sarif@"):
            f = (st.get("with") or {}).get("sarif_file")
            if f not in rewritten:
                problems.append(f"dast uploads {f} to code scanning, not a file .github/scripts/zap-sarif.py wrote")
    check("ZAP plan: openapi-driven active scan, alert rules, SARIF rewritten before upload, exitStatus gate",
          not problems, "; ".join(problems))


def check_coverage():
    problems = []
    try:
        with open(".ci/coverage-threshold") as f:
            value = float(f.read().strip())
        if value < 85:
            problems.append(f"threshold {value} is below the reference's 85")
    except (OSError, ValueError) as e:
        problems.append(f".ci/coverage-threshold: {e}")
    for origin, t in texts_to_scan(load_workflows()):
        if re.search(r"fail-under-lines[= ]+\d", t):
            problems.append(f"{origin} hard-codes a coverage number; read .ci/coverage-threshold")
    with open(".github/scripts/coverage.sh") as f:
        if ".ci/coverage-threshold" not in f.read():
            problems.append("coverage.sh does not read .ci/coverage-threshold")
    check("coverage threshold has one source (.ci/coverage-threshold)", not problems, "; ".join(problems))


def check_dependabot():
    with open(".github/dependabot.yml") as f:
        d = yaml.safe_load(f)
    eco = {u.get("package-ecosystem") for u in d.get("updates") or []}
    check("dependabot covers cargo and github-actions", {"cargo", "github-actions"} <= eco, f"has {sorted(eco)}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--extract-run")
    ap.add_argument("--pins", action="append", help="a vetted-pins table (repeatable)")
    args = ap.parse_args()
    wfs = load_workflows()
    check(f"{len(wfs)} workflows parse", bool(wfs), "none found")
    check_pins(wfs, vetted_pins(args.pins))
    check_cache(wfs)
    check_hardening(wfs)
    check_structure(wfs)
    if args.extract_run:
        extract_runs(wfs, args.extract_run)
    check_flake_refs(wfs)
    check_paths(wfs)
    check_overlays()
    check_zap()
    check_coverage()
    check_dependabot()
    check_minikube_load()
    failed = results.count(False)
    print(f"workflow checks: {len(results) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
