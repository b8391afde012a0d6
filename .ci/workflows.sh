#!/usr/bin/env bash
# .ci/workflows.sh: the GitHub Actions stage of .ci/run (issue 8).
#
# actionlint cannot be installed here, and GitHub cannot be reached, so this stage proves what can
# be proved on this machine:
#   static   yamllint, the SchemaStore JSON schemas for workflows and dependabot.yml,
#            zizmor (offline, pedantic), checkov's github_actions framework, shellcheck
#            on every run: block and every script, .github/scripts/check-workflows.py (SHA pins
#            against ../shared/actions-pins.md, hardening, needs/steps references, flake outputs
#            and dev-shell tools, repository paths, the dev overlay the deploy job assumes, the ZAP
#            plan, the single coverage threshold), and a mutation test showing that checker fails
#   runtime  the deploy job's scripts against the real binary on loopback: smoke.sh against one
#            instance (SQLite), then a rolling restart under load of two instances sharing one
#            PostgreSQL database behind HAProxy, with zero failed requests; plus negative
#            controls proving the scripts do fail (a dead URL; a hard kill of every instance)
# Environment: SERVICE_BIN to test a prebuilt binary instead of `cargo build -p shipshape`.
set -euo pipefail
# shellcheck source=.ci/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

passed=0
failed=0
result() { # result NAME RC
  if [ "$2" -eq 0 ]; then passed=$((passed + 1)); printf 'ok   %s\n' "$1"
  else failed=$((failed + 1)); printf 'FAIL %s (exit %s)\n' "$1" "$2"; fi
}
# indent: show a command's output without letting its own "N passed, N failed" line stand alone.
indent() { sed 's/^/    | /'; }

work=$(mktemp -d /tmp/shipshape-ci-workflows.XXXXXX)
cleanup() {
  if [ -n "${single_pid:-}" ]; then kill "$single_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
on_exit cleanup

log "workflows: tools"
ensure shellcheck haproxy jq curl yamllint zizmor checkov check-jsonschema
wf_venv="$CI_CACHE/venv-workflows" # check-jsonschema's own venv (.ci/tools.toml says why)
printf '%s\n' "shellcheck $(shellcheck --version | sed -n 's/^version: //p'), $(yamllint --version)," \
  "$(zizmor --version), checkov $(checkov --version 2>/dev/null), $(haproxy -v | head -n 1 | cut -d' ' -f1-3)"

# ---------------------------------------------------------------- static checks
log "workflows: yamllint --strict .github/"
rc=0; yamllint --strict -c .github/yamllint.yaml .github/ || rc=$?
result "yamllint (.github/: workflows, dependabot, ZAP plan)" "$rc"

log "workflows: JSON schemas (SchemaStore, vendored in check-jsonschema)"
rc=0
"$wf_venv/bin/check-jsonschema" --builtin-schema vendor.github-workflows .github/workflows/*.yml || rc=$?
"$wf_venv/bin/check-jsonschema" --builtin-schema vendor.dependabot .github/dependabot.yml || rc=$?
result "workflow and dependabot files match their JSON schemas" "$rc"

log "workflows: zizmor --offline --pedantic"
rc=0; zizmor --offline --pedantic --strict-collection .github/ || rc=$?
result "zizmor --offline --pedantic: no findings" "$rc"
# The auditor persona (false positives expected) is shown, not gated: it flags the custom
# `nix develop` shell and secrets used without a deployment environment, both deliberate.
auditor=$(zizmor --offline --persona auditor --format json .github/ 2>/dev/null \
  | jq -r 'group_by(.ident) | map("\(.[0].ident)=\(length)") | join(" ")' || true)
echo "zizmor auditor persona (informational): ${auditor:-none}"

log "workflows: checkov --framework github_actions"
rc=0
checkov -d .github/workflows --framework github_actions --compact --quiet --skip-download >"$work/checkov.txt" 2>&1 || rc=$?
grep -E 'Passed checks|Failed checks|Check:|FAILED' "$work/checkov.txt" || cat "$work/checkov.txt"
result "checkov github_actions: no failed checks" "$rc"

log "workflows: pins, hardening, references (check-workflows.py)"
pins=$SHARED_DIR/actions-pins.md
if [ ! -f "$pins" ]; then
  # Skipping the vetted-pin comparison is for a laptop without shared/, never for CI.
  [ "${CI:-}" != true ] || die "no $pins (shared/ beside the checkout, or set SHIPSHAPE_SHARED_DIR)"
  echo "no $pins: vetted-pin comparison skipped"
  pins=""
fi
rc=0
# .github/actions-pins.md: pins this repository reviewed itself (provenance in the file).
"$CI_VENV/bin/python" .github/scripts/check-workflows.py --extract-run "$work/runs" \
  ${pins:+--pins "$pins" --pins .github/actions-pins.md} || rc=$?
result "check-workflows.py (pins, hardening, flake outputs, paths, overlays, ZAP plan, coverage threshold)" "$rc"

log "workflows: Trivy's ConfigMap secret checks (KSV-0109 patterns) on the rendered base, dev and prod"
# Trivy cannot be installed here; this applies the patterns of its check, copied with their
# source commit (an imitation: docs/pipeline.md says what it cannot catch).
rc=0
"$CI_VENV/bin/python" .github/scripts/configmap-secrets.py kustomize/base kustomize/overlays/dev kustomize/overlays/prod \
  >"$work/cm.txt" 2>&1 || rc=$?
indent <"$work/cm.txt"
result "no ConfigMap matches KSV-0109 (the image job's trivy config gate)" "$rc"
printf '%s\n' 'apiVersion: v1' 'kind: ConfigMap' 'metadata:' '  name: negative' 'data:' '  app.toml: |' \
  '    # key from SHIPSHAPE_AUTH__HS256_SECRET=file:/run/key' >"$work/cm-neg.yaml"
rc=0; "$CI_VENV/bin/python" .github/scripts/configmap-secrets.py "$work/cm-neg.yaml" >"$work/cm-neg.txt" 2>&1 || rc=$?
if [ "$rc" -eq 1 ] && grep -q '^HIGH   KSV-0109' "$work/cm-neg.txt"; then rc=0; else rc=1; fi
result "negative control: a comment 'HS256_SECRET=file:...' in a ConfigMap fails KSV-0109" "$rc"

log "workflows: ZAP SARIF rewrite on ZAP's own sample, validated as code scanning takes it"
# SARIF Multitool (Microsoft; npm ships the linux binary) runs GitHub's ingestion rules, and
# embeds the SARIF 2.1.0 JSON schema that sarif-validate.py applies with jsonschema.
smt_dir=$CI_CACHE/sarif-multitool-5.7.0
smt=$smt_dir/node_modules/@microsoft/sarif-multitool-linux/Sarif.Multitool
if [ ! -f "$smt" ]; then
  command -v npm >/dev/null || die "npm is needed for the SARIF Multitool"
  npm install --prefix "$smt_dir" --no-audit --no-fund --ignore-scripts --loglevel=error \
    @microsoft/sarif-multitool-linux@5.7.0 >/dev/null
fi
chmod u+x "$smt"
sample=.github/zap/testdata/zap-readme-example.sarif.json
validate=("$wf_venv/bin/python" .github/scripts/sarif-validate.py --multitool "$smt" --config .github/zap/sarif-github-rules.xml)
rc=0; "${validate[@]}" "$sample" >"$work/sarif-raw.txt" 2>&1 || rc=$?
indent <"$work/sarif-raw.txt"
if [ "$rc" -eq 1 ] && grep -q 'GH1005' "$work/sarif-raw.txt"; then rc=0; else rc=1; fi
result "negative control: ZAP's raw SARIF (URL locations) fails GitHub's rule GH1005" "$rc"
rc=0
python3 .github/scripts/zap-sarif.py "$sample" "$work/zap-rewritten.sarif.json" --artifact service/src/http/docs.rs \
  >"$work/sarif-new.txt" 2>&1 || rc=$?
if [ "$rc" -eq 0 ]; then "${validate[@]}" "$work/zap-rewritten.sarif.json" >>"$work/sarif-new.txt" 2>&1 || rc=$?; fi
indent <"$work/sarif-new.txt"
result "zap-sarif.py output passes the SARIF 2.1.0 schema and GitHub's ingestion rules" "$rc"

log "workflows: update-flake-lock.sh opens the PR, or fails clearly when Actions may not"
ufl="$work/ufl"
mkdir -p "$ufl/bin"
git init -q --bare "$ufl/remote.git"
git init -q -b main "$ufl/repo"
cp flake.nix flake.lock "$ufl/repo/"
git -C "$ufl/repo" add flake.nix flake.lock
git -C "$ufl/repo" -c user.name=ci -c user.email=ci@localhost commit -q -m init
# Stubs: nix changes the lock as `nix flake update` would; gh answers as GitHub does.
cat >"$ufl/bin/nix" <<'STUB'
#!/usr/bin/env bash
[ "$*" = "flake update" ] || { echo "unexpected: nix $*" >&2; exit 1; }
sed -i 's/"lastModified": \([0-9]*\)/"lastModified": 1\1/' flake.lock
echo "• Updated input 'nixpkgs':" >&2
STUB
cat >"$ufl/bin/gh" <<'STUB'
#!/usr/bin/env bash
echo "gh $*" >>"$GH_LOG"
case "$1 $2" in
  "pr list" | "label create") exit 0 ;;
  "pr create")
    if [ "$GH_MODE" = forbidden ]; then
      echo "pull request create failed: GraphQL: GitHub Actions is not permitted to create or approve pull requests (createPullRequest)" >&2
      exit 1
    fi
    echo "https://github.com/o/r/pull/7" ;;
  *) echo "unexpected: gh $*" >&2; exit 1 ;;
esac
STUB
chmod +x "$ufl/bin/nix" "$ufl/bin/gh"
ufl_run() { # ufl_run MODE: the script in a fresh clone, GITHUB_TOKEN only, pushing to a local remote
  rm -rf "$ufl/w" "$ufl/gh.log" && git clone -q "$ufl/repo" "$ufl/w"
  (cd "$ufl/w" && PATH="$ufl/bin:$PATH" GH_MODE=$1 GH_LOG="$ufl/gh.log" DEFAULT_TOKEN=t0ken FLAKE_LOCK_TOKEN='' \
    GITHUB_REPOSITORY=o/r FLAKE_LOCK_REMOTE="$ufl/remote.git" bash "$ROOT_DIR/.github/scripts/update-flake-lock.sh")
}
ROOT_DIR=$PWD
rc=0; ufl_run forbidden >"$ufl/out1.txt" 2>&1 || rc=$?
grep '::error::' "$ufl/out1.txt" | cut -c1-220 | indent
if [ "$rc" -eq 1 ] && grep -q "Allow GitHub Actions to create and approve pull requests" "$ufl/out1.txt" \
  && grep -q FLAKE_LOCK_TOKEN "$ufl/out1.txt" \
  && git -C "$ufl/remote.git" rev-parse -q --verify refs/heads/automation/update-flake-lock >/dev/null; then
  rc=0
else
  rc=1; indent <"$ufl/out1.txt"
fi
result "GITHUB_TOKEN refused: exit 1 naming the setting and FLAKE_LOCK_TOKEN, the update kept on its branch" "$rc"
rc=0; ufl_run allowed >"$ufl/out2.txt" 2>&1 || rc=$?
grep -q '^gh pr create --base main --head automation/update-flake-lock' "$ufl/gh.log" || rc=1
[ "$rc" -eq 0 ] || indent <"$ufl/out2.txt"
result "allowed: the pull request is opened against main" "$rc"

log "workflows: shellcheck on every run: block and script"
run_blocks=("$work"/runs/*.sh)
shell_files=("${run_blocks[@]}" .github/scripts/*.sh .ci/workflows.sh)
rc=0; shellcheck -x "${shell_files[@]}" || rc=$?
result "shellcheck: ${#shell_files[@]} files (${#run_blocks[@]} extracted run: blocks)" "$rc"

log "workflows: the checker fails when it should (mutation test)"
mut="$work/mutant"
mkdir -p "$mut"
cp -r .github .ci kustomize nix flake.nix "$mut"/
mkdir -p "$mut/service" && cp service/Cargo.toml "$mut/service/"
[ -f flake.lock ] && cp flake.lock "$mut"/
[ -d .semgrep ] && cp -r .semgrep "$mut"/
sed -i '0,/actions\/checkout@[0-9a-f]\{40\}/s//actions\/checkout@v7/' "$mut/.github/workflows/ci.yml"
sed -i 's/kustomize\/overlays\/dev/kustomize\/overlays\/devx/' "$mut/.github/workflows/ci.yml"
sed -i 's/\.#image/.#imagex/' "$mut/.github/workflows/ci.yml"
sed -i "0,/vars.CACHIX_CACHE }}/s//vars.CACHIX_CACHE || 'shipshape' }}/" "$mut/.github/workflows/ci.yml"
sed -i 's/sarif_file: zap-code-scanning.sarif.json/sarif_file: zap-report\/zap.sarif.json/' "$mut/.github/workflows/ci.yml"
load="minikube image"" load" # split, so the checker does not read this line as an instruction
sed -i "0,/$load \/tmp\/shipshape.tar/s//$load result/" "$mut/kustomize/overlays/dev/kustomization.yaml"
rc=0
"$CI_VENV/bin/python" "$mut/.github/scripts/check-workflows.py" \
  ${pins:+--pins "$(realpath "$pins")" --pins "$mut/.github/actions-pins.md"} >"$work/mutant.txt" 2>&1 || rc=$?
mutant_ok=0
for want in 'FAIL every uses:' 'FAIL repository paths' 'FAIL flake outputs' 'FAIL binary cache' 'FAIL ZAP plan' \
  'FAIL minikube image'; do
  grep -q "^$want" "$work/mutant.txt" || { echo "the mutant did not trip: $want"; mutant_ok=1; }
done
[ "$rc" -ne 0 ] || mutant_ok=1
if [ "$mutant_ok" -eq 0 ]; then grep '^FAIL' "$work/mutant.txt" | cut -c1-160 | indent; else tail -n 20 "$work/mutant.txt" | indent; fi
result "mutation test: tag pin, missing path, unknown flake output, cache fallback, raw ZAP SARIF, out-link load: all caught" "$mutant_ok"

# ---------------------------------------------------------------- runtime: the deploy job's scripts
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

if [ -n "${SERVICE_BIN:-}" ]; then
  bin=$SERVICE_BIN
else
  log "workflows: cargo build -p shipshape"
  cargo build -p shipshape --locked --quiet
  bin=${CARGO_TARGET_DIR:-target}/debug/shipshape
fi
bin=$(realpath "$bin")
[ -x "$bin" ] || die "no binary at $bin"
"$bin" --version
# These belong to the build (.ci/run exports the revision for build.rs) and to lib.sh.
unset SHIPSHAPE_GIT_REVISION SHIPSHAPE_CI_CACHE

# The deploy job runs these scripts against the dev overlay, which has auth and rate limiting
# off (local use); the local instances here are configured the same way.
export SHIPSHAPE_LOG__FORMAT=json SHIPSHAPE_HTTP__DRAIN_DELAY=1s
export SHIPSHAPE_AUTH__ENABLED=false SHIPSHAPE_RATE_LIMIT__ENABLED=false

log "workflows: smoke.sh against one local instance (SQLite)"
port=$(free_port)
mkdir -p "$work/single"
SHIPSHAPE_HTTP__LISTEN="127.0.0.1:$port" SHIPSHAPE_DATABASE__URL="sqlite://$work/single/db.sqlite" \
  "$bin" serve >"$work/single/log" 2>&1 &
single_pid=$!
rc=0; SMOKE_WAIT=30 timeout 60 .github/scripts/smoke.sh "http://127.0.0.1:$port" | tee "$work/smoke.txt" || rc=$?
result "smoke.sh against http://127.0.0.1:$port: $(grep '^smoke:' "$work/smoke.txt" | cut -d' ' -f2-)" "$rc"
# Stopped, not tested: SIGTERM -> drain -> exit 0 is service/tests/process.rs's job.
kill -TERM "$single_pid" 2>/dev/null || true
timeout 30 tail --pid="$single_pid" -f /dev/null || kill -KILL "$single_pid" 2>/dev/null || true
wait "$single_pid" 2>/dev/null || true
single_pid=""
[ "$rc" -eq 0 ] || { echo "instance log (last 20 lines):"; tail -n 20 "$work/single/log" | cut -c1-300 | indent; }

log "workflows: negative control, smoke.sh against a port nobody listens on must fail"
rc=0; SMOKE_WAIT=1 SMOKE_TIMEOUT=2 timeout 60 .github/scripts/smoke.sh "http://127.0.0.1:$(free_port)" >"$work/smoke-neg.txt" 2>&1 || rc=$?
tail -n 1 "$work/smoke-neg.txt" | indent
if [ "$rc" -ne 0 ]; then rc=0; else rc=1; fi
result "smoke.sh fails against a dead URL" "$rc"

log "workflows: rolling restart under load, 2 instances on one PostgreSQL database behind HAProxy"
start_postgres # stopped on exit if this script started it
cluster=""
cluster_down() {
  if [ -n "$cluster" ] && [ -f "$cluster/bin" ]; then .github/scripts/local-cluster.sh down "$cluster" >/dev/null 2>&1 || true; fi
}
# Registered after start_postgres, so it runs first: the instances stop before their database.
on_exit cluster_down
db="shipshape_rr_$$"
psql "$SHIPSHAPE_TEST_PG_URL" -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE $db" >/dev/null
cluster="$work/cluster"
rc=0
lb=$(SERVICE_BIN="$bin" SHIPSHAPE_DATABASE__URL="${SHIPSHAPE_TEST_PG_URL%/*}/$db" \
  timeout 90 .github/scripts/local-cluster.sh up "$cluster" | tail -n 1) || rc=$?
result "local cluster up at ${lb:-?}" "$rc"
if [ "$rc" -eq 0 ]; then
  rc=0; timeout 60 .github/scripts/smoke.sh "$lb" | tee "$work/smoke-lb.txt" || rc=$?
  result "smoke.sh through HAProxy: $(grep '^smoke:' "$work/smoke-lb.txt" | cut -d' ' -f2-)" "$rc"

  rc=0
  timeout 240 .github/scripts/rolling-restart.sh --url "$lb" --read-after-write --workers 4 \
    --restart ".github/scripts/local-cluster.sh restart $cluster" | tee "$work/rr.txt" || rc=$?
  result "rolling restart under load: $(grep '^rolling-restart:' "$work/rr.txt" | cut -d' ' -f2-); $(grep '^# total' "$work/rr.txt" | cut -c3-)" "$rc"

  log "workflows: negative control, SIGKILL of both instances under load must show failed requests"
  rc=0
  timeout 120 .github/scripts/rolling-restart.sh --url "$lb" --read-after-write --workers 4 --warmup 1 --settle 1 \
    --min-requests 1 --restart ".github/scripts/local-cluster.sh kill $cluster" >"$work/rr-neg.txt" 2>&1 || rc=$?
  neg_failed=$(sed -n 's/^rolling-restart: [0-9]* passed, \([0-9]*\) failed$/\1/p' "$work/rr-neg.txt")
  if [ -n "$neg_failed" ]; then
    grep -E '^# total|^rolling-restart:' "$work/rr-neg.txt" | indent
  else
    echo "rolling-restart.sh gave no result line (exit $rc); its last output:"
    tail -n 25 "$work/rr-neg.txt" | indent
  fi
  if [ "$rc" -ne 0 ] && [ "${neg_failed:-0}" -gt 0 ]; then rc=0; else rc=1; fi
  result "rolling-restart.sh detects an outage (${neg_failed:-0} failed requests when both instances are killed)" "$rc"

  rc=0; timeout 90 .github/scripts/local-cluster.sh down "$cluster" || rc=$?
  cluster=""
  result "both instances exited 0 on SIGTERM" "$rc"
fi

echo "workflows: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
