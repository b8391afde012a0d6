#!/usr/bin/env python3
"""Make ZAP's SARIF acceptable to GitHub code scanning (the dast job, before upload-sarif).

    zap-sarif.py IN.sarif.json OUT.sarif.json --artifact REPO_FILE

ZAP's sarif-json report puts the scanned URL in physicalLocation.artifactLocation.uri
(http://<minikube ip>:30080/v1/items...). Code scanning accepts only locations that are file
paths (relative URIs or file: URIs), and rejects the whole upload otherwise (the SARIF
Multitool's rule GH1005 states the same constraint). This rewrite, for every location whose URI
is not a file path:
  - points it at REPO_FILE (the source of the OpenAPI document), line 1;
  - keeps what ZAP said: the location's message reads "GET /v1/items?..." and its properties
    hold the original URL and region (`zapUrl`, `zapRegion`);
  - sets partialFingerprints.primaryLocationLineHash from rule, method and path+query, so each
    endpoint stays its own alert across runs (the host, a throwaway minikube IP, is left out);
and gives every rule the `help` object code scanning requires (GH2012), from ZAP's description,
solution and references. Everything else is copied unchanged. Only the standard library is used,
so it runs on a bare runner. Exit 0 on success, 2 on input that is not a SARIF 2.1.0 log.
"""

import argparse
import hashlib
import json
import os
import sys
from urllib.parse import urlsplit


def fail(msg):
    print(f"zap-sarif: {msg}", file=sys.stderr)
    sys.exit(2)


def is_file_path(uri):
    scheme = urlsplit(uri).scheme
    # A one-letter scheme is a Windows drive letter, not a URL scheme.
    return scheme in ("", "file") or len(scheme) == 1


def endpoint(uri):
    parts = urlsplit(uri)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def rule_help(rule):
    desc = (rule.get("fullDescription") or {}).get("text") or (rule.get("shortDescription") or {}).get("text") or ""
    props = rule.get("properties") or {}
    solution = (props.get("solution") or {}).get("text") or ""
    refs = [r for r in props.get("references") or [] if isinstance(r, str)]
    text = desc.strip()
    if solution.strip():
        text += "\n\nSolution: " + solution.strip()
    if refs:
        text += "\n\nReferences:\n" + "\n".join(f"- {r}" for r in refs)
    return {"text": text or f"ZAP rule {rule.get('id')}"}


def rewrite(log, artifact):
    if not isinstance(log, dict) or log.get("version") != "2.1.0" or not isinstance(log.get("runs"), list):
        fail("input is not a SARIF 2.1.0 log (no version 2.1.0 / runs)")
    moved = results = helped = 0
    for run in log["runs"]:
        for rule in ((run.get("tool") or {}).get("driver") or {}).get("rules") or []:
            if "help" not in rule:
                rule["help"] = rule_help(rule)
                helped += 1
        for result in run.get("results") or []:
            results += 1
            method = ((result.get("webRequest") or {}).get("method") or "").upper()
            locations = result.get("locations") or []
            target = (result.get("webRequest") or {}).get("target")
            if not locations and target:
                locations = [{"physicalLocation": {"artifactLocation": {"uri": target}}}]
            result["locations"] = locations
            first_endpoint = None
            for loc in locations:
                phys = loc.get("physicalLocation") or {}
                uri = (phys.get("artifactLocation") or {}).get("uri")
                if uri is None or is_file_path(uri):
                    continue
                ep = endpoint(uri)
                first_endpoint = first_endpoint or ep
                props = dict(loc.get("properties") or {})
                props["zapUrl"] = uri
                if phys.get("region"):
                    props["zapRegion"] = phys["region"]
                loc["physicalLocation"] = {"artifactLocation": {"uri": artifact}, "region": {"startLine": 1}}
                loc["message"] = {"text": f"{method} {ep}".strip()}
                loc["properties"] = props
                moved += 1
            if first_endpoint is not None:
                key = f"{result.get('ruleId')}|{method}|{first_endpoint}"
                result.setdefault("partialFingerprints", {})["primaryLocationLineHash"] = \
                    hashlib.sha256(key.encode()).hexdigest()[:32]
    return moved, results, helped


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--artifact", required=True, help="repository file the locations point at")
    args = ap.parse_args()
    if os.path.isabs(args.artifact) or not os.path.isfile(args.artifact):
        fail(f"--artifact {args.artifact}: not a file relative to the repository root")
    try:
        with open(args.input, encoding="utf-8") as f:
            log = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        fail(f"{args.input}: {e}")
    moved, results, helped = rewrite(log, args.artifact)
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(log, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print(f"zap-sarif: {results} results, {moved} URL locations moved to {args.artifact}, "
          f"{helped} rules given help -> {args.output}")


if __name__ == "__main__":
    main()
