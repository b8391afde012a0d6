#!/usr/bin/env bash
# Security gates (issue 4), all offline:
#   1. cargo-deny: advisories (RustSec snapshot in ../shared/advisory-db), licenses, bans, sources
#      against deny.toml; a canary proves the advisory database was really loaded.
#   2. cargo-audit: the same snapshot, every warning (unmaintained, unsound, yanked) is an error;
#      a canary lock file with a known-vulnerable crate must be rejected.
#   3. Semgrep rule tests (.semgrep/tests): every rule has a test file, every test passes and
#      every rule has at least one `ruleid:` case, so no rule can silently match nothing.
#   4. Semgrep scan of service/ with the repository's rules: zero findings.
# Runs every gate, prints a summary, exits non-zero if any gate failed.
# Locally: bash .ci/security.sh   (or see docs/security.md for each tool on its own).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
ROOT=$PWD

SHARED="$SHARED_DIR" # from lib.sh
ADVISORY_SRC="$SHARED/advisory-db"
# cargo-deny looks for the RustSec DB in <db-path>/advisory-db-<hash of its URL>.
ADVISORY_DIRNAME="advisory-db-3157b0e258782691"
export SEMGREP_ENABLE_VERSION_CHECK=0 SEMGREP_SEND_METRICS=off

work=$(mktemp -d /tmp/shipshape-security.XXXXXX)
trap 'rm -rf "$work"' EXIT

declare -a summary=()
failed=0
pass() { summary+=("  ok    $1"); echo "  ok   $1"; }
fail() { summary+=("  FAIL  $1"); echo "  FAIL $1" >&2; failed=1; }

log "tools"
[ -d "$ADVISORY_SRC/crates" ] || die "RustSec snapshot not found at $ADVISORY_SRC (shared/ beside the checkout, or set SHIPSHAPE_SHARED_DIR)"
ensure cargo-deny cargo-audit semgrep
echo "  $(cargo deny --version)  |  cargo-audit $(cargo audit --version | awk '{print $NF}')  |  semgrep $(semgrep --version 2>/dev/null)"
# cargo-deny --offline reads crate sources from the local cargo cache (license texts).
cargo fetch --locked --quiet

# --- RustSec database -------------------------------------------------------------------------
# cargo-deny only opens the database as a git repository; shared/ is a plain, read-only copy.
# Build a git copy once per snapshot and keep it in the CI cache.
snapshot=$(awk 'NR==1 {print $1}' "$ADVISORY_SRC/SNAPSHOT" 2>/dev/null || true)
[ -n "$snapshot" ] || snapshot=$(find "$ADVISORY_SRC" -type f -printf '%P %s\n' | sort | sha256sum | cut -c1-16)
db_root="$CI_CACHE/advisory-dbs/$snapshot"
db_repo="$db_root/$ADVISORY_DIRNAME"
if ! git -C "$db_repo" rev-parse -q --verify HEAD >/dev/null 2>&1; then
  log "advisory DB: git copy of snapshot $snapshot"
  rm -rf "$db_root" && mkdir -p "$db_root"
  cp -r "$ADVISORY_SRC" "$db_root/.tmp-db" && chmod -R u+w "$db_root/.tmp-db"
  (cd "$db_root/.tmp-db" && git init -q && git add -A &&
    git -c user.name=shipshape-ci -c user.email=ci@localhost -c commit.gpgsign=false \
      commit -q -m "RustSec advisory-db snapshot $snapshot")
  mv "$db_root/.tmp-db" "$db_repo"
fi
advisories=$(find "$db_repo/crates" -name 'RUSTSEC-*.md' | wc -l)
[ "$advisories" -gt 100 ] || die "advisory DB at $db_repo looks empty ($advisories advisories)"
echo "  RustSec snapshot $snapshot: $advisories crate advisories"

# deny.toml leaves db-path at its default so `cargo deny check` works on a connected
# workstation; CI runs the same policy with db-path pointing at the local git copy.
python3 - "$ROOT/deny.toml" "$work/deny.toml" "$db_root" <<'EOF'
import sys, tomllib
src, dst, db = sys.argv[1:]
text = open(src).read()
cfg = tomllib.loads(text)                      # fail early on a broken deny.toml
assert "db-path" not in cfg.get("advisories", {}), "deny.toml must not set advisories.db-path"
marker = "\n[advisories]\n"
assert marker in text, "deny.toml has no [advisories] table"
open(dst, "w").write(text.replace(marker, marker + f'db-path = "{db}"\n', 1))
# Advisory ids accepted in deny.toml, shared with cargo-audit below (one list of exceptions).
ids = [e["id"] if isinstance(e, dict) else e for e in cfg["advisories"].get("ignore", [])]
open(dst + ".ignore", "w").write("\n".join(i for i in ids if i.startswith("RUSTSEC-")))
EOF

# --- 1. cargo-deny ----------------------------------------------------------------------------
log "cargo deny --offline check (advisories, bans, licenses, sources)"
if cargo deny --offline --locked --config "$work/deny.toml" check --hide-inclusion-graph --show-stats \
  >"$work/deny.log" 2>&1; then
  grep -E '^(warning|error)\[' "$work/deny.log" || true
  stats=$(grep -E '^ *(advisories|bans|licenses|sources) ' "$work/deny.log" || true)
  [ -n "$stats" ] && sed 's/^ */    /' <<<"$stats"
  pass "cargo-deny: $(awk '{sub(/:$/, "", $2); printf "%s%s %s", sep, $1, $2; sep=", "}' <<<"$stats")"
else
  cat "$work/deny.log" >&2
  fail "cargo-deny (run: cargo deny check; see deny.toml for the policy and how to record an exception)"
fi

# Canary: ignoring an advisory that exists in the DB but not in our graph must produce
# "advisory-not-detected". If the DB were empty or unreadable, it would say "unknown-advisory".
cp "$work/deny.toml" "$work/deny-canary.toml"
python3 - "$work/deny-canary.toml" <<'EOF'
import re, sys
p = sys.argv[1]; s = open(p).read()
s = re.sub(r'(?m)^ignore = \[.*?\]\n', '', s, flags=re.S)   # drop our ignore list
s = s.replace('\n[advisories]\n', '\n[advisories]\nignore = [{ id = "RUSTSEC-2021-0078", reason = "canary" }]\n', 1)
open(p, "w").write(s)
EOF
cargo deny --offline --locked --config "$work/deny-canary.toml" check advisories --hide-inclusion-graph \
  >"$work/deny-canary.log" 2>&1 || true
if grep -q 'advisory-not-detected' "$work/deny-canary.log" && ! grep -q 'unknown-advisory' "$work/deny-canary.log"; then
  pass "cargo-deny canary: RUSTSEC-2021-0078 known to the loaded database"
elif grep -q 'unknown-advisory' "$work/deny-canary.log"; then
  cat "$work/deny-canary.log" >&2
  fail "cargo-deny canary: the advisory database at $db_repo was not loaded (empty or unreadable)"
else
  cat "$work/deny-canary.log" >&2
  fail "cargo-deny canary: cargo-deny could not run (see above)"
fi

# --- 2. cargo-audit ---------------------------------------------------------------------------
log "cargo audit --no-fetch --deny warnings"
audit_args=(--db "$db_repo" --no-fetch --deny warnings)
while read -r id || [ -n "$id" ]; do [ -n "$id" ] && audit_args+=(--ignore "$id"); done <"$work/deny.toml.ignore"
if cargo audit "${audit_args[@]}" >"$work/audit.log" 2>&1; then
  grep -E 'Scanning|Loaded|advisories|crate dependencies' "$work/audit.log" | sed 's/^ */    /' || true
  pass "cargo-audit: $(grep -oE 'Scanning Cargo.lock for vulnerabilities \([0-9]+ crate dependencies\)' "$work/audit.log" | grep -oE '[0-9]+ crate dependencies' || echo 'Cargo.lock'), no advisories"
else
  cat "$work/audit.log" >&2
  fail "cargo-audit (an advisory hits Cargo.lock: update the crate, or record a reviewed ignore in deny.toml)"
fi

# Canary: a lock file with hyper 0.14.9 (RUSTSEC-2021-0078, fixed in 0.14.10) must be rejected.
mkdir -p "$work/canary"
cat >"$work/canary/Cargo.lock" <<'EOF'
version = 3

[[package]]
name = "canary"
version = "0.1.0"
dependencies = ["hyper"]

[[package]]
name = "hyper"
version = "0.14.9"
source = "registry+https://github.com/rust-lang/crates.io-index"
EOF
if cargo audit --db "$db_repo" --no-fetch --file "$work/canary/Cargo.lock" >"$work/audit-canary.log" 2>&1; then
  cat "$work/audit-canary.log" >&2
  fail "cargo-audit canary: a known-vulnerable hyper 0.14.9 was NOT reported"
elif grep -q 'RUSTSEC-2021-0078' "$work/audit-canary.log"; then
  pass "cargo-audit canary: hyper 0.14.9 rejected with RUSTSEC-2021-0078"
else
  cat "$work/audit-canary.log" >&2
  fail "cargo-audit canary: failed for another reason"
fi

# --- 3. Semgrep rule tests --------------------------------------------------------------------
log "semgrep --test (.semgrep/tests)"
# Semgrep's built-in ignore list contains `.semgrep` (and `tests/`): run the tests from inside.
(cd .semgrep && semgrep --test --config . tests --metrics=off --disable-version-check --json) \
  >"$work/semgrep-test.json" 2>"$work/semgrep-test.log" || true
if python3 - "$work/semgrep-test.json" .semgrep <<'EOF'
import json, pathlib, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception as e:
    sys.exit(f"    semgrep --test produced no JSON report ({e})")
rules_dir = pathlib.Path(sys.argv[2])
declared = set()
for f in sorted(rules_dir.glob("*.yaml")) + sorted(rules_dir.glob("*.yml")):
    for line in f.read_text().splitlines():
        if line.strip().startswith("- id:"):
            declared.add(line.split(":", 1)[1].strip())
ok = True
for key in ("config_missing_tests", "config_with_errors"):
    if d.get(key):
        print(f"    {key}: {d[key]}"); ok = False
seen = set()
for cfg, res in sorted(d.get("results", {}).items()):
    for rule, chk in sorted(res.get("checks", {}).items()):
        seen.add(rule)
        expected = sum(len(m.get("expected_lines", [])) for m in chk.get("matches", {}).values())
        status = "ok  " if chk.get("passed") and expected > 0 else "FAIL"
        if status == "FAIL": ok = False
        extra = ""
        if not chk.get("passed"):
            for path, m in chk.get("matches", {}).items():
                missed = sorted(set(m.get("expected_lines", [])) - set(m.get("reported_lines", [])))
                wrong = sorted(set(m.get("reported_lines", [])) - set(m.get("expected_lines", [])))
                extra += f"  missed lines {missed}, unexpected lines {wrong} in {path}"
        elif expected == 0:
            extra = "  (no `ruleid:` case: the rule is never shown to match)"
        print(f"    {status} {rule:34} {expected:3} ruleid cases{extra}")
untested = sorted(declared - seen)
if untested:
    print(f"    rules without tests: {untested}"); ok = False
print(f"    {len(seen)} rules tested, {len(declared)} declared")
sys.exit(0 if ok else 1)
EOF
then
  pass "semgrep rule tests: $(grep -c -- '- id:' .semgrep/*.yaml | awk -F: '{s+=$2} END {print s}') rules, all pass, each with ruleid cases"
else
  tail -n 20 "$work/semgrep-test.log" >&2
  fail "semgrep rule tests (cd .semgrep && semgrep --test --config . tests)"
fi

# --- 4. Semgrep scan --------------------------------------------------------------------------
log "semgrep scan --config .semgrep/ service/"
# A rule that times out on a file silently skips it, so timeouts fail the gate; the generous
# per-rule timeout keeps a busy 2-core CI machine (the taint rule needs ~1 s per file) from
# tripping it.
if semgrep scan --config .semgrep/ --metrics=off --disable-version-check --error --quiet \
  --timeout 120 --timeout-threshold 0 \
  --json-output="$work/semgrep.json" service/; then scan_rc=0; else scan_rc=$?; fi
if python3 - "$work/semgrep.json" "$scan_rc" <<'EOF'; then
import json, sys
rc = int(sys.argv[2])
try:
    d = json.load(open(sys.argv[1]))
except Exception as e:
    sys.exit(f"    semgrep produced no JSON report ({e}), exit {rc}")
scanned = [p for p in d["paths"]["scanned"] if p.endswith(".rs")]
errors = [e for e in d.get("errors", []) if e.get("level") == "error" or "Timeout" in str(e.get("type"))]
for e in d.get("errors", []):
    print(f"    {e.get('level')}: {e.get('type')} {e.get('path', '')} {str(e.get('message', ''))[:200]}")
for r in d["results"]:
    print(f"    {r['path']}:{r['start']['line']}: {r['check_id'].split('.')[-1]}")
print(f"    {len(scanned)} Rust files scanned, {len(d['results'])} findings, {len(errors)} errors")
sys.exit(0 if rc == 0 and scanned and not d["results"] and not errors else 1)
EOF
  pass "semgrep scan: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(len([p for p in d["paths"]["scanned"] if p.endswith(".rs")]), "Rust files,", len(d["results"]), "findings")' "$work/semgrep.json")"
else
  fail "semgrep scan of service/ (fix the code, or justify a line with // nosemgrep: <rule-id> -- <reason>)"
fi

log "security summary"
printf '%s\n' "${summary[@]}"
[ "$failed" = 0 ] || die "security gates failed"
echo "security: all gates passed"
