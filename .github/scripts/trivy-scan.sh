#!/usr/bin/env bash
# Trivy gates of the image stage (trivy from the dev shell, never the trivy-action).
#
#   trivy-scan.sh image IMAGE.tar     vulnerabilities in the image, SBOM, SARIF
#   trivy-scan.sh config DIR...       misconfigurations in the rendered kustomize directories
#
# Gates: fixable HIGH/CRITICAL vulnerabilities; HIGH/CRITICAL misconfigurations. SARIF files
# (all severities) go to code scanning: trivy-image.sarif, trivy-config.sarif.
# A Nix image has no OS package database, so Trivy sees the Rust crates only when the binary
# embeds its dependency list (cargo-auditable). If it does not, this script says so and scans
# Cargo.lock instead, so the gate still covers every crate.
set -euo pipefail
cd "$(dirname "$0")/../.."

summary() { if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then printf '%s\n' "$@" >>"$GITHUB_STEP_SUMMARY"; fi; }
gate=(--severity "HIGH,CRITICAL" --exit-code 1)

case ${1:-} in
  image)
    tar=$2
    trivy image --input "$tar" --format cyclonedx --output sbom.cdx.json
    crates=$(jq '[.components[]? | select((.purl // "") | startswith("pkg:cargo/"))] | length' sbom.cdx.json)
    trivy image --input "$tar" --scanners vuln --format sarif --output trivy-image.sarif
    if [ "$crates" -gt 0 ]; then
      echo "Trivy sees $crates Rust crates in the image (cargo-auditable data)"
      summary "### Trivy image scan" "Rust crates visible in the image: $crates (SBOM: sbom.cdx.json)"
      trivy image --input "$tar" --scanners vuln --ignore-unfixed "${gate[@]}"
    else
      echo "::warning::Trivy sees no Rust crates in the image (binary not built with cargo-auditable); scanning Cargo.lock instead"
      summary "### Trivy image scan" "No Rust crates visible in the image; gate applied to Cargo.lock"
      trivy image --input "$tar" --scanners vuln --ignore-unfixed "${gate[@]}"
      trivy fs --scanners vuln --format cyclonedx --output sbom.cdx.json Cargo.lock
      trivy fs --scanners vuln --ignore-unfixed "${gate[@]}" Cargo.lock
    fi
    ;;
  config)
    shift
    rm -rf rendered
    mkdir -p rendered
    for dir in "$@"; do
      name=$(echo "$dir" | tr '/' '-')
      kubectl kustomize "$dir" >"rendered/$name.yaml"
      echo "rendered $dir -> rendered/$name.yaml"
    done
    trivy config --format sarif --output trivy-config.sarif rendered/
    trivy config "${gate[@]}" rendered/
    summary "### Trivy config scan" "Rendered and scanned: $*"
    ;;
  *)
    sed -n '2,12p' "$0"
    exit 2
    ;;
esac
