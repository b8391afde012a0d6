#!/usr/bin/env python3
"""Trivy's ConfigMap secret checks, applied to rendered kustomize output (run by .ci/workflows.sh).

    configmap-secrets.py DIR_OR_FILE...    kustomize directories (rendered with `kubectl kustomize`)
                                           or already rendered YAML files

The image job gates on `trivy config --severity HIGH,CRITICAL --exit-code 1` over the rendered
overlays, and Trivy cannot be installed here. This script is an imitation of two Trivy checks,
with their regular expressions copied verbatim as data from aquasecurity/trivy-checks
(MIT licence), commit 80e5382269707262f35cf893bdc0805cb72217e9, where both files were last
changed in 6c9170dd115c3ebcca326b68a66c8fad3537a4b9:

  KSV-0109  HIGH    checks/kubernetes/configMap_with_secrets.rego    gated (exit 1), as in CI
  KSV-01010 MEDIUM  checks/kubernetes/configmap_with_sensitive.rego  printed only: CI's
                                                                     severity filter drops it

The matching logic follows the rego line by line (see the comments below). What it cannot catch:
any other Trivy check, a newer trivy-checks release that adds patterns, and differences between
Go's RE2 and Python's `re` (none for these patterns). docs/pipeline.md lists it as an imitation.
Exit 0: no HIGH finding; 1: a HIGH finding; 2: bad input.
"""

import os
import re
import subprocess
import sys

import yaml

# KSV-0109 cm_value_patterns and cm_key_patterns (sets in the rego; order is irrelevant).
KSV0109_VALUE = [
    r"(?i)(password\s*(=|:))", r"(?i)(pass\s*(=|:))", r"(?i)(pword\s*(=|:))",
    r"(?i)(passphrase\s*(=|:))", r"(?i)(passwrd\s*(=|:))", r"(?i)(passwd\s*(=|:))",
    r"(?i)(secret\s*(=|:))", r"(?i)(secretkey\s*(=|:))", r"(?i)(appSecret\s*(=|:))",
    r"(?i)(clientSecret\s*(=|:))", r"(?i)(aws_access_key_id\s*(=|:))", r"(?i)(pswrd\s*(=|:))",
    r"(?i)(token\s*(=|:))", r"(?i)(pwd\s*(=|:))",
]
KSV0109_KEY = [
    r"(?i)(password\s*)", r"(?i)(pass\s*)", r"(?i)(pword\s*)", r"(?i)(passphrase\s*)",
    r"(?i)(passwrd\s*)", r"(?i)(passwd\s*)", r"(?i)(secret\s*)", r"(?i)(secretkey\s*)",
    r"(?i)(appSecret\s*)", r"(?i)(clientSecret\s*)", r"(?i)(aws_access_key_id\s*)",
    r"(?i)(pswrd\s*)", r"(?i)(token\s*)", r"(?i)(pwd\s*)",
]
# KSV-01010 patterns, patternsForKey, patternsForEmail, patternForIbanAndPassport.
_EMAIL = (r"([a-zA-Z0-9_\-\.]+)@((\[[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.)|(([a-zA-Z0-9\-]+\.)+))"
          r"([a-zA-Z]{2,4}|[0-9]{1,3})(\]?)")
_IBAN = r"[^\.](?:\b[A-Z]{2}\d{2} ?\d{4} ?\d{4} ?\d{4} ?\d{4} ?[\d]{0,2}\b)"
KSV01010_VALUE = [r"(?i)(username\s*(=|:))", r"(?i)(email\s*(=|:))", _EMAIL, r"(?i)(key\s*(=|:))",
                  r"(?i)(phone\s*(=|:))", _IBAN, r"(?i)(SHA1)", r"(?i)(MD5)", r"(?i)(iban\s*(=|:))"]
KSV01010_KEY = [r"(?i)(username\s*)", r"(?i)(email\s*)", _EMAIL, r"(?i)(key\s*)", r"(?i)(phone\s*)",
                _IBAN, r"(?i)(SHA1\s*)", r"(?i)(MD5\s*)", r"(?i)(iban\s*)"]
KSV01010_IBAN_PASSPORT = [r"([A-Z]{2}[ \-]?[0-9]{2}[ \-]?([A-Z0-9]{3,5}[ \-]?){2,7}[A-Z0-9]{1,3})",
                          r"^[A-Z0-9<]{3,20}$"]


def match(pattern, text):
    """Rego's regex.match: unanchored search (Go RE2)."""
    return re.search(pattern, text) is not None


def is_interpolation(val):
    trimmed = val[1:] if val.startswith('"') else val  # trim_prefix(val, "\"")
    return any(trimmed.startswith(p) for p in ("${", "$(", "{{"))


def ksv0109_secret_key(line):
    """config_map_secret_key: the text before a delimiter, when what follows it is a value."""
    keys = set()
    for delimiter in (":", "="):
        parts = line.split(delimiter)
        if len(parts) > 1 and parts[1] != "" and not is_interpolation(parts[1]):
            keys.add(parts[0])
    return keys


def ksv0109(data):
    """Returns {key or line-key: (data key, line number, line)} that KSV-0109 reports."""
    found = {}
    for key in data:
        if any(match(p, key) for p in KSV0109_KEY):
            found[key] = (key, 0, "(the data key itself)")
    for k, v in data.items():
        for pattern in KSV0109_VALUE:
            if not match(pattern, v):
                continue
            for n, line in enumerate(v.split("\n"), 1):
                if match(pattern, line):
                    for secret_key in ksv0109_secret_key(line):
                        found.setdefault(secret_key, (k, n, line))
    return found


def ksv01010_value(line):
    """configMapValue: split on ':' first, else on '='."""
    for delimiter in (":", "="):
        parts = line.split(delimiter)
        if len(parts) > 1:
            return parts[0]
    return None


def ksv01010(data):
    found = {}
    for d, v in data.items():
        lines = v.split("\n")
        for pattern in KSV01010_VALUE:
            if match(pattern, v):
                for n, line in enumerate(lines, 1):
                    if match(pattern, line):
                        s = ksv01010_value(line)
                        if s is not None:
                            found.setdefault(s, (d, n, line))
        if any(match(p, d) for p in KSV01010_KEY):
            found.setdefault(d, (d, 0, "(the data key itself)"))
        # The rego indexes the ':'-split line with the line's own index (val[v]); kept as is.
        for n, line in enumerate(lines):
            val = line.split(":")
            if n < len(val) and (match(_EMAIL, val[n])
                                 or any(match(p, val[n]) for p in KSV01010_IBAN_PASSPORT)):
                found.setdefault(d, (d, n + 1, line))
    return found


def load(arg):
    if os.path.isdir(arg):
        try:
            text = subprocess.run(["kubectl", "kustomize", arg], check=True, capture_output=True,
                                  text=True).stdout
        except (OSError, subprocess.CalledProcessError) as e:
            sys.exit(f"configmap-secrets: cannot render {arg}: {getattr(e, 'stderr', '') or e}")
    elif os.path.isfile(arg):
        with open(arg) as f:
            text = f.read()
    else:
        sys.exit(f"configmap-secrets: {arg}: no such directory or file")
    try:
        return [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    except yaml.YAMLError as e:
        sys.exit(f"configmap-secrets: {arg}: not YAML: {e}")


def main(args):
    if not args:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    high = 0
    for arg in args:
        maps = [d for d in load(arg) if d.get("kind") == "ConfigMap"]
        for cm in maps:
            meta = cm.get("metadata") or {}
            where = f"{arg}: ConfigMap {meta.get('namespace', '-')}/{meta.get('name')}"
            data = {str(k): str(v) for k, v in (cm.get("data") or {}).items()}
            found = ksv0109(data)
            high += 1 if found else 0  # Trivy reports one failure per ConfigMap
            for key, (dk, n, line) in sorted(found.items()):
                print(f"HIGH   KSV-0109 {where}: data[{dk}] line {n} stores secret-like key {key.strip()!r}:"
                      f" {line.strip()[:120]}")
            for key, (dk, n, line) in sorted(ksv01010(data).items()):
                print(f"MEDIUM KSV-01010 (not gated) {where}: data[{dk}] line {n} key {key.strip()!r}:"
                      f" {line.strip()[:120]}")
        print(f"configmap-secrets: {arg}: {len(maps)} ConfigMaps scanned")
    print(f"configmap-secrets: {high} ConfigMaps fail KSV-0109 (HIGH)")
    return 1 if high else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
