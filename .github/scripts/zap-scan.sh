#!/usr/bin/env bash
# OWASP ZAP API scan (zap from the dev shell) of a deployed shipshape, driven by its
# /openapi.json, with the plan and accepted-alert rules in .github/zap/api-scan.yaml.
#
#   zap-scan.sh BASE_URL
#
# Fails when the plan fails or raises any alert of risk Low or above that the plan's alertFilter
# rules do not accept ("new warnings"). Reports: zap-report/zap.{sarif.json,md,html}.
set -euo pipefail
cd "$(dirname "$0")/../.."

target=${1:?usage: zap-scan.sh BASE_URL}
ZAP_TARGET=${target%/}
ZAP_REPORT_DIR=$PWD/${ZAP_REPORT_DIR:-zap-report}
export ZAP_TARGET ZAP_REPORT_DIR
zap=${ZAP_CMD:-zap}
command -v "$zap" >/dev/null || zap=zap.sh
home=$(mktemp -d "${RUNNER_TEMP:-/tmp}/zap-home.XXXXXX")
mkdir -p "$ZAP_REPORT_DIR"

code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$ZAP_TARGET/openapi.json") || code=000
[ "$code" = 200 ] || { echo "FAIL: $ZAP_TARGET/openapi.json answered $code"; exit 1; }

# The OpenAPI add-on is not in every ZAP bundle; installing an installed add-on is a no-op.
"$zap" -cmd -dir "$home" -addoninstall openapi

rc=0
timeout 1800 "$zap" -cmd -dir "$home" -autorun "$PWD/.github/zap/api-scan.yaml" || rc=$?
if [ -f "$ZAP_REPORT_DIR/zap.md" ] && [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
  cat "$ZAP_REPORT_DIR/zap.md" >>"$GITHUB_STEP_SUMMARY"
fi
case $rc in
  0) echo "ZAP: no alert at Low or above outside the accepted rules" ;;
  1) echo "FAIL: ZAP raised alerts at Low or above (or the plan failed); see $ZAP_REPORT_DIR" ;;
  2) echo "FAIL: ZAP plan finished with warnings; see $ZAP_REPORT_DIR" ;;
  *) echo "FAIL: ZAP exited $rc" ;;
esac
exit "$rc"
