#!/usr/bin/env bash
# The update-flake-lock workflow: `nix flake update`, commit flake.lock on the branch
# automation/update-flake-lock (force-pushed), and open a pull request for it (or leave the open
# one, which the push has updated).
#
# Environment:
#   FLAKE_LOCK_TOKEN   optional secret: a fine-grained token (contents: write, pull-requests: write)
#                      or a GitHub App installation token; preferred, because pull requests
#                      opened with it run CI
#   DEFAULT_TOKEN      the job's GITHUB_TOKEN, used when FLAKE_LOCK_TOKEN is empty
#   GITHUB_REPOSITORY  owner/name; FLAKE_LOCK_REMOTE overrides the push URL, FLAKE_LOCK_BASE the
#                      base branch (default: the checked-out branch)
#
# A new repository cannot open the pull request with GITHUB_TOKEN: "Allow GitHub Actions to
# create and approve pull requests" (Settings > Actions > General > Workflow permissions) is off
# by default, and the API answers "GitHub Actions is not permitted to create or approve pull
# requests". This script then fails with the two ways out instead of a bare API error.
set -euo pipefail

branch=automation/update-flake-lock
title="flake.lock: update nixpkgs, crane and advisory-db"
token=${FLAKE_LOCK_TOKEN:-${DEFAULT_TOKEN:-}}
[ -n "$token" ] || { echo "::error::update-flake-lock: neither FLAKE_LOCK_TOKEN nor DEFAULT_TOKEN is set"; exit 1; }
if [ -n "${FLAKE_LOCK_TOKEN:-}" ]; then source=FLAKE_LOCK_TOKEN; else source=GITHUB_TOKEN; fi
export GH_TOKEN=$token
remote=${FLAKE_LOCK_REMOTE:-https://github.com/${GITHUB_REPOSITORY:?GITHUB_REPOSITORY is not set}.git}
base=${FLAKE_LOCK_BASE:-$(git rev-parse --abbrev-ref HEAD)}

log=$(mktemp)
nix flake update 2>&1 | tee "$log"
if git diff --quiet -- flake.lock; then
  echo "update-flake-lock: flake.lock is up to date, nothing to propose"
  exit 0
fi
changes=$(grep -E "^(• |  ['‘→])" "$log" || true)
body="Automated \`nix flake update\` (.github/workflows/update-flake-lock.yml).

\`\`\`
${changes:-see the diff}
\`\`\`

Merge only when CI is green: the new nixpkgs, crane and advisory-db run through every gate."
git -c user.name='github-actions[bot]' -c user.email='41898282+github-actions[bot]@users.noreply.github.com' \
  commit -q -m "flake.lock: update inputs" -m "$changes" -- flake.lock
auth=$(printf 'x-access-token:%s' "$token" | base64 -w0)
git -c "http.extraheader=AUTHORIZATION: basic $auth" push --force -q "$remote" "HEAD:refs/heads/$branch"
echo "update-flake-lock: pushed $branch ($(git rev-parse --short HEAD))"

existing=$(gh pr list --head "$branch" --state open --json number --jq '.[0].number // empty')
if [ -n "$existing" ]; then
  echo "update-flake-lock: pull request #$existing already open; the push updated it"
  exit 0
fi
for label in dependencies nix; do gh label create "$label" --force >/dev/null; done
err=$(mktemp)
if gh pr create --base "$base" --head "$branch" --title "$title" --body "$body" \
  --label dependencies --label nix 2>"$err"; then
  if [ "$source" = GITHUB_TOKEN ]; then
    echo "::warning::update-flake-lock: opened with GITHUB_TOKEN, so no workflow runs on this pull request;" \
      "set the FLAKE_LOCK_TOKEN secret to get CI on it (or close and reopen it by hand)"
  fi
  exit 0
fi
cat "$err" >&2
if grep -q "not permitted to create or approve pull requests" "$err"; then
  echo "::error::update-flake-lock: $source may not open pull requests in this repository." \
    "Either enable Settings > Actions > General > Workflow permissions > 'Allow GitHub Actions to create and approve pull requests'," \
    "or store a fine-grained token or GitHub App token with contents: write and pull-requests: write as the FLAKE_LOCK_TOKEN secret." \
    "The update itself is on the branch $branch."
else
  echo "::error::update-flake-lock: gh pr create failed with $source (see above); the update is on the branch $branch"
fi
exit 1
