#!/usr/bin/env python3
"""Validate a SARIF file as GitHub code scanning would take it (run by .ci/workflows.sh).

    sarif-validate.py --multitool PATH/Sarif.Multitool --config .github/zap/sarif-github-rules.xml FILE...

Two real tools, no imitation:
  1. JSON schema: the SARIF 2.1.0 schema that Microsoft's SARIF Multitool (npm
     @microsoft/sarif-multitool-linux) embeds, extracted from the installed binary and applied
     with the `jsonschema` library (check-jsonschema's venv);
  2. `Sarif.Multitool validate --rule-kind "Sarif;Gh"` with the GitHub ingestion rules
     (GH1001-GH1007, off by default, enabled as errors by the config file; GH2012 is on).
Prints every error; exit 1 when any file has one, 2 on bad input or a broken tool.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import jsonschema

TITLE = b'"title": "Static Analysis Results Format (SARIF) Version 2.1.0 JSON Schema"'


def embedded_schema(binary):
    """The schema object whose title is TITLE, cut out of the single-file Multitool binary."""
    with open(binary, "rb") as f:
        blob = f.read()
    at = blob.find(TITLE)
    if at < 0:
        sys.exit(f"sarif-validate: no SARIF 2.1.0 schema inside {binary}")
    decoder = json.JSONDecoder()
    start = at
    for _ in range(64):  # walk back over the opening braces before the title
        start = blob.rfind(b"{", 0, start)
        if start < 0:
            break
        try:
            obj, _ = decoder.raw_decode(blob[start:start + 4_000_000].decode("utf-8", "replace"))
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and obj.get("title", "").startswith("Static Analysis Results Format"):
            return obj
    sys.exit(f"sarif-validate: could not parse the schema inside {binary}")


def multitool_errors(multitool, config, path):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "validation.sarif")
        proc = subprocess.run([multitool, "validate", "--config", config, "--rule-kind", "Sarif;Gh",
                               "--output", out, path], capture_output=True, text=True)
        if not os.path.exists(out):
            sys.exit(f"sarif-validate: Sarif.Multitool wrote no result (exit {proc.returncode}):\n"
                     f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        with open(out) as f:
            log = json.load(f)
    errors = []
    for run in log.get("runs") or []:
        for note in (run.get("invocations") or [{}])[0].get("toolConfigurationNotifications") or []:
            if note.get("level") == "error":
                sys.exit(f"sarif-validate: Sarif.Multitool configuration error: {note.get('message', {}).get('text')}")
        for r in run.get("results") or []:
            if r.get("level") == "error":
                args = (r.get("message") or {}).get("arguments") or []
                errors.append(f"{r.get('ruleId')}: {' / '.join(str(a) for a in args)[:300]}")
    return errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--multitool", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    for p in [args.multitool, args.config, *args.files]:
        if not os.path.isfile(p):
            print(f"sarif-validate: {p}: no such file", file=sys.stderr)
            return 2
    schema = embedded_schema(args.multitool)
    validator = jsonschema.validators.validator_for(schema)(schema)
    bad = 0
    for path in args.files:
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            print(f"ERROR {path}: not JSON: {e}")
            bad += 1
            continue
        errors = [f"schema: {'/'.join(str(p) for p in e.absolute_path) or '$'}: {e.message[:200]}"
                  for e in validator.iter_errors(doc)]
        errors += multitool_errors(args.multitool, args.config, path)
        for e in errors:
            print(f"ERROR {path}: {e}")
        n_results = sum(len(r.get("results") or []) for r in doc.get("runs") or []) if isinstance(doc, dict) else 0
        print(f"{'FAIL' if errors else 'ok  '} {path}: {n_results} results, {len(errors)} errors"
              " (SARIF 2.1.0 schema, Multitool Sarif+GitHub rules)")
        bad += bool(errors)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
