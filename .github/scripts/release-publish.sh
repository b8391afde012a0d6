#!/usr/bin/env bash
# Publish job of release.yml, after both per-arch images were pushed as <version>-amd64/-arm64:
#   1. join them into one multi-arch index <version>
#   2. cosign keyless signature of the index and of each image (--recursive)
#   3. per image: CycloneDX SBOM (trivy) and SLSA v1 provenance, attested with cosign
#   4. GitHub release: digests, the prod overlay's `images:` stanza, verify commands, the files
# Needs cosign, trivy, skopeo, jq (the workflow's nix shell) and docker buildx, gh (the runner).
set -euo pipefail
cd "$(dirname "$0")/../.."

: "${GITHUB_REF_NAME:?}" "${GITHUB_REPOSITORY:?}" "${GITHUB_ACTOR:?}" "${REGISTRY_TOKEN:?}"
version=${GITHUB_REF_NAME#v}
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "not a release tag: $GITHUB_REF_NAME"; exit 1; }
repo=ghcr.io/${GITHUB_REPOSITORY,,}
server=${GITHUB_SERVER_URL:-https://github.com}
workflow_ref=${GITHUB_WORKFLOW_REF:-$GITHUB_REPOSITORY/.github/workflows/release.yml@$GITHUB_REF}
run_url="$server/$GITHUB_REPOSITORY/actions/runs/${GITHUB_RUN_ID:-0}"
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)

printf '%s' "$REGISTRY_TOKEN" | docker login ghcr.io --username "$GITHUB_ACTOR" --password-stdin
digest_of() { printf 'sha256:%s' "$(skopeo inspect --raw "docker://$1" | sha256sum | cut -d' ' -f1)"; }

declare -A digest
for arch in amd64 arm64; do
  digest[$arch]=$(digest_of "$repo:$version-$arch")
  echo "$arch: $repo@${digest[$arch]}"
done

docker buildx imagetools create --tag "$repo:$version" \
  "$repo@${digest[amd64]}" "$repo@${digest[arm64]}"
index=$(digest_of "$repo:$version")
echo "index: $repo@$index"

cosign sign --yes --recursive "$repo@$index"

nixpkgs_rev=$(jq -r '.nodes.nixpkgs.locked.rev // empty' flake.lock)
crane_rev=$(jq -r '.nodes.crane.locked.rev // empty' flake.lock)
for arch in amd64 arm64; do
  ref="$repo@${digest[$arch]}"
  trivy image --format cyclonedx --output "sbom-$arch.cdx.json" "$ref"
  cosign attest --yes --type cyclonedx --predicate "sbom-$arch.cdx.json" "$ref"
  jq -n --arg buildType "$server/$GITHUB_REPOSITORY/.github/workflows/release.yml" \
    --arg repo "$server/$GITHUB_REPOSITORY" --arg ref "${GITHUB_REF:-}" --arg sha "${GITHUB_SHA:-}" \
    --arg arch "$arch" --arg builder "$server/$workflow_ref" --arg run "$run_url" \
    --arg started "$started" --arg nixpkgs "$nixpkgs_rev" --arg crane "$crane_rev" '{
      buildDefinition: {
        buildType: $buildType,
        externalParameters: {repository: $repo, ref: $ref,
          flakeOutput: ("packages." + (if $arch == "amd64" then "x86_64-linux" else "aarch64-linux" end) + ".image")},
        internalParameters: {runner: ("ubuntu-24.04" + (if $arch == "arm64" then "-arm" else "" end))},
        resolvedDependencies: [
          {uri: ("git+" + $repo + "@" + $ref), digest: {gitCommit: $sha}},
          {uri: "git+https://github.com/NixOS/nixpkgs", digest: {gitCommit: $nixpkgs}},
          {uri: "git+https://github.com/ipetkov/crane", digest: {gitCommit: $crane}}
        ]
      },
      runDetails: {builder: {id: $builder}, metadata: {invocationId: $run, startedOn: $started}}
    }' >"provenance-$arch.json"
  cosign attest --yes --type slsaprovenance1 --predicate "provenance-$arch.json" "$ref"
done

identity="$server/$workflow_ref"
cat >notes.md <<EOF
## Image

\`$repo:$version\` (multi-arch index)

| platform | digest |
| --- | --- |
| index | \`$index\` |
| linux/amd64 | \`${digest[amd64]}\` |
| linux/arm64 | \`${digest[arm64]}\` |

## Deploy: pin the prod overlay to this digest

In \`kustomize/overlays/prod/kustomization.yaml\`:

\`\`\`yaml
images:
  - name: shipshape
    newName: $repo
    digest: $index
\`\`\`

or \`(cd kustomize/overlays/prod && kustomize edit set image shipshape=$repo@$index)\`.

## Verify

\`\`\`sh
cosign verify $repo@$index \\
  --certificate-identity '$identity' \\
  --certificate-oidc-issuer https://token.actions.githubusercontent.com
cosign verify-attestation --type cyclonedx $repo@${digest[amd64]} \\
  --certificate-identity '$identity' \\
  --certificate-oidc-issuer https://token.actions.githubusercontent.com
cosign verify-attestation --type slsaprovenance1 $repo@${digest[amd64]} \\
  --certificate-identity '$identity' \\
  --certificate-oidc-issuer https://token.actions.githubusercontent.com
\`\`\`

SBOMs (CycloneDX) and provenance predicates are attached to this release and attested in GHCR.
Built by $run_url from ${GITHUB_SHA:-}.
EOF

gh release create "$GITHUB_REF_NAME" --verify-tag --title "shipshape $version" --notes-file notes.md \
  sbom-amd64.cdx.json sbom-arm64.cdx.json provenance-amd64.json provenance-arm64.json
if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then cat notes.md >>"$GITHUB_STEP_SUMMARY"; fi
