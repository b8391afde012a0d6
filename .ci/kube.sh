#!/usr/bin/env bash
# Kubernetes stage (kustomize/): no cluster needed. Proves, for base, both overlays, the
# optional overlay dev-flux, the restore example and every component (rendered over the base):
#   1. they render (kubectl kustomize);
#   2. every built-in object is valid against the Kubernetes OpenAPI schemas of two current
#      minors in strict mode (kubernetes-validate), and every custom resource against its
#      released CRD schema in ../shared/crd-schemas, strictly (pytest, test_render.py); a
#      custom kind without a schema fails;
#   3. checkov finds nothing (each skip is justified inline with a checkov.io/skipN annotation);
#   4. promtool checks the PrometheusRule and its unit tests pass (every alert fires when it
#      should and stays silent when it should not);
#   5. policy facts (restricted PSS on every container, pinned images, resources, probes,
#      grace period >= preStop + drain_delay + shutdown_grace from the app's own config, ...);
#   6. contract: the real binary started from the rendered Deployment (env, config file,
#      Secret files, uid 65532, only the emptyDirs writable) answers the declared probes, the
#      API, the ServiceMonitor's scrape, and exits 0 on SIGTERM within the grace period left
#      after preStop; prod against PostgreSQL;
#   7. platform components (test_platform.py, test_canary.py): the admission policy trusts
#      exactly the release workflow's signing identity, the Flux image automation moves the
#      prod digest, the gateway is the only trusted hop, the canary queries pass a good
#      release and fail bad ones (promtool);
#   8. backup drill (kustomize/tests/backup_drill.py): point-in-time restore of a local
#      PostgreSQL written by the real service; every item acknowledged before the target
#      time is restored, none after.
# Set SHIPSHAPE_KUBE_MUTATION=1 to also run the alert-test mutation check (~2 min).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

K8S_VERSIONS=${SHIPSHAPE_K8S_VERSIONS:-"1.32.0 1.34.0"}
export SHIPSHAPE_K8S_VERSIONS="$K8S_VERSIONS"

log "tools"
command -v kubectl >/dev/null || die "kubectl (with kustomize) is required"
ensure promtool setpriv kubernetes-validate checkov pytest
echo "  kubectl $(kubectl version --client 2>/dev/null | tr '\n' ' ')"
echo "  $(promtool --version 2>&1 | head -1)"
echo "  kubernetes-validate $(kubernetes-validate --version), checkov $(checkov --version)"

[ -d "$SHIPSHAPE_SHARED_DIR/crd-schemas" ] ||
  die "no CRD schemas at $SHIPSHAPE_SHARED_DIR/crd-schemas (set SHIPSHAPE_SHARED_DIR to the shared/ directory)"
echo "  CRD schemas: $SHIPSHAPE_SHARED_DIR/crd-schemas"

out=$(mktemp -d /tmp/shipshape-kube.XXXXXX)
on_exit "rm -rf '$out'"

log "render (kubectl kustomize)"
declare -A dirs=([base]=kustomize/base [dev]=kustomize/overlays/dev [prod]=kustomize/overlays/prod)
for t in base dev prod; do
  kubectl kustomize "${dirs[$t]}" >"$out/$t.yaml" || die "kubectl kustomize ${dirs[$t]} failed"
  kinds=$(grep -E '^kind: ' "$out/$t.yaml" | cut -d' ' -f2 | sort | uniq -c | awk '{printf "%s%s×%s", sep, $2, $1; sep=", "}')
  echo "  ok   $t: $kinds"
done

log "kubernetes-validate --strict against Kubernetes $K8S_VERSIONS"
for t in base dev prod; do
  for v in $K8S_VERSIONS; do
    if ! res=$(kubernetes-validate --strict -k "$v" "$out/$t.yaml" 2>&1); then
      printf '%s\n' "$res" | grep -v '^INFO' >&2
      die "$t does not validate against Kubernetes $v"
    fi
    passed=$(grep -cE '^INFO .*passed for resource' <<<"$res" || true)
    crd=$(grep -c "Couldn't find schema" <<<"$res" || true)
    echo "  ok   $t @ $v: $passed built-in objects valid; $crd custom resources -> CRD schemas (pytest)"
  done
done

log "checkov (kubernetes framework, rendered overlays)"
for t in dev prod; do
  checkov -f "$out/$t.yaml" --framework kubernetes --skip-download -o json >"$out/checkov-$t.json" || true
  "$CI_VENV/bin/python" - "$t" "$out/checkov-$t.json" <<'PY' || die "checkov: failed checks in $t"
import json, sys
t, path = sys.argv[1], sys.argv[2]
report = json.load(open(path))
summary, results = report["summary"], report["results"]
for f in results.get("failed_checks", []):
    print(f"  FAIL {f['check_id']} {f['check_name']} on {f['resource']}")
ok = summary["failed"] == 0 and summary["parsing_errors"] == 0 and summary["passed"] > 0
print(f"  {'ok  ' if ok else 'FAIL'} {t}: {summary['resource_count']} resources, passed {summary['passed']}, "
      f"failed {summary['failed']}, skipped {summary['skipped']}")
for s in results.get("skipped_checks", []):
    print(f"       skipped {s['check_id']} on {s['resource']}: {s['check_result'].get('suppress_comment', '')}")
sys.exit(0 if ok else 1)
PY
done

log "binary for the contract tests"
bin=${SHIPSHAPE_BIN:-target/debug/shipshape}
if [ ! -x "$bin" ]; then
  echo "  $bin missing: cargo build -p shipshape"
  nice -n 10 cargo build --quiet -p shipshape
fi
"$bin" --version >/dev/null || die "$bin --version failed"
export SHIPSHAPE_BIN="$PWD/$bin"
[ "${bin#/}" != "$bin" ] && export SHIPSHAPE_BIN="$bin"
echo "  ok   $("$SHIPSHAPE_BIN" --version)"

start_postgres

log "pytest kustomize/tests (CRD schemas, policy, promtool, contract, platform)"
"$CI_VENV/bin/python" -m pytest kustomize/tests -q -s -p no:cacheprovider -rfEs

log "backup drill (point-in-time restore of a local PostgreSQL 15 under the real service)"
timeout 240 "$CI_VENV/bin/python" kustomize/tests/backup_drill.py --binary "$SHIPSHAPE_BIN" ||
  die "backup drill failed"
