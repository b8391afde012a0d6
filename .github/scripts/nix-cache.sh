#!/usr/bin/env bash
# Optional Nix binary cache on cachix, named only by explicit repository variables.
#
#   nix-cache.sh use     before the first nix command: substitute from https://$CACHIX_CACHE.cachix.org,
#                        trusting exactly the key in CACHIX_PUBLIC_KEY; records the store's paths
#   nix-cache.sh push    at the end of the job: push the store paths built or fetched since `use`
#                        (needs CACHIX_AUTH_TOKEN; the workflows call it on pushes to main only)
#
# Why not cachix/cachix-action: it is published only under moving major tags (v17 was moved
# twice, cachix/cachix-action#219), so no exact release tag can be pinned, and given a cache
# name alone it trusts whatever key the owner of that global name publishes. Here both the name
# and the key are repository variables: when they are unset (forks never see them) there is no
# cache at all, and the workflows skip these steps (`if: vars.CACHIX_CACHE != ''`).
# install-nix-action makes the runner user a trusted Nix user, so a user nix.conf may add a
# substituter and its key; the cachix CLI comes from the flake's locked nixpkgs.
set -euo pipefail

before=${RUNNER_TEMP:-/tmp}/nix-store-paths-before
cache=${CACHIX_CACHE:-}
[ -n "$cache" ] || { echo "nix-cache: CACHIX_CACHE is not set: no binary cache (fork pull request, or none configured)"; exit 0; }
[[ $cache =~ ^[a-z0-9][a-z0-9-]*$ ]] || { echo "::error::nix-cache: CACHIX_CACHE '$cache' is not a cachix cache name"; exit 1; }

case ${1:-} in
  use)
    key=${CACHIX_PUBLIC_KEY:-}
    # A cachix key reads "<name>.cachix.org-1:<base64 ed25519 key>".
    [[ $key =~ ^[A-Za-z0-9.-]+-[0-9]+:[A-Za-z0-9+/]{43}=$ ]] || {
      echo "::error::nix-cache: CACHIX_CACHE is set but CACHIX_PUBLIC_KEY is missing or malformed;" \
        "set it to the cache's public signing key (cachix.org, cache settings), e.g. $cache.cachix.org-1:..."
      exit 1
    }
    conf=${XDG_CONFIG_HOME:-$HOME/.config}/nix/nix.conf
    mkdir -p "$(dirname "$conf")"
    printf 'extra-substituters = https://%s.cachix.org\nextra-trusted-public-keys = %s\n' "$cache" "$key" >>"$conf"
    nix path-info --all | sort >"$before"
    echo "nix-cache: substituting from https://$cache.cachix.org (key ${key%%:*}); $(wc -l <"$before") store paths before the job"
    ;;
  push)
    if [ -z "${CACHIX_AUTH_TOKEN:-}" ]; then
      echo "::warning::nix-cache: no CACHIX_AUTH_TOKEN secret: nothing pushed to $cache"
      exit 0
    fi
    [ -f "$before" ] || { echo "::error::nix-cache: no record from 'nix-cache.sh use' ($before)"; exit 1; }
    new=${RUNNER_TEMP:-/tmp}/nix-store-paths-new
    nix path-info --all | sort | comm -13 "$before" - | grep -v '\.drv$' >"$new" || true
    echo "nix-cache: pushing $(wc -l <"$new") new store paths to $cache"
    if [ -s "$new" ]; then
      nix shell --inputs-from . nixpkgs#cachix --command cachix push "$cache" <"$new"
    fi
    ;;
  *)
    sed -n '2,8p' "$0"
    exit 2
    ;;
esac
