#!/usr/bin/env bash
# Static checks of the Nix flake, for machines without a Nix store (nixpkgs cannot be fetched
# here, so `nix build` / `nix flake check` cannot run; see docs/deployment.md for what only
# they prove). What this proves: every .nix file parses and is alejandra-formatted, deadnix
# finds nothing, flake.lock matches flake.nix and the vetted pins, every path the Nix files
# name exists, the image contract states the service contract, every file the Rust build
# reads is inside the crane source filter (the rust stage also runs the tests from exactly those
# files), every crane builder gets pname/version, the static build uses rust-overlay's prebuilt
# musl toolchain, the flake's cargo-audit command passes when run with the real cargo-audit, and
# TOML is taplo-formatted like the flake checks.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

# Debian's nix-bin expects a nixbld group it does not create; parsing and eval need none.
export NIX_CONFIG="build-users-group ="

ensure nix-instantiate deadnix taplo

# The alejandra library, pinned by nix/fmt-check/Cargo.lock: the same formatter `nix fmt` runs.
log "build the alejandra formatter (nix/fmt-check)"
fmt_target="$CI_CACHE/nix-fmt-target"
cargo build --quiet --release --locked --manifest-path nix/fmt-check/Cargo.toml --target-dir "$fmt_target"
alejandra_fmt="$fmt_target/release/shipshape-alejandra"

mapfile -t nix_files < <(git ls-files --cached --others --exclude-standard -- '*.nix' | sort -u)
[ "${#nix_files[@]}" -gt 0 ] || die "no .nix files found"

log "nix-instantiate --parse (${#nix_files[@]} files)"
for f in "${nix_files[@]}"; do
  nix-instantiate --parse "$f" >/dev/null || die "$f does not parse"
done
echo "  ok   all ${#nix_files[@]} files parse"

log "alejandra --check"
"$alejandra_fmt" --check "${nix_files[@]}" || die "Nix files not formatted: run $alejandra_fmt ${nix_files[*]} (or nix fmt)"

log "deadnix --fail"
deadnix --fail "${nix_files[@]}" || die "deadnix found unused code"
echo "  ok   no unused bindings or arguments"

log "flake.lock against flake.nix and ../shared/flake-pins.md"
python3 nix/static-checks.py lock || die "flake.lock check failed"

log "paths named by the Nix files"
python3 nix/static-checks.py paths || die "the Nix files name missing paths"

log "image contract (nix/image-contract.json)"
python3 nix/static-checks.py contract || die "the image contract does not state the service contract"

log "crane source filter covers every file the build reads"
# rustc's dep-info lists exactly the files a build read; use any build of the service that exists
# (the container test's musl build, the workspace build) on top of the static scan.
mapfile -t dep_info < <(ls target/debug/shipshape.d target/release/shipshape.d \
  "$CI_CACHE"/musl-target/*/release/shipshape.d 2>/dev/null || true)
python3 nix/static-checks.py source-filter "${dep_info[@]}" || die "the crane source filter misses files the build needs"

# nix/crane-model.nix imitates crane, nixpkgs and rust-overlay just enough to evaluate our Nix
# files here; docs/pipeline.md says what it can and cannot catch.
log "crane builder calls get pname and version (model of crane's placeholder warning)"
python3 nix/static-checks.py placeholders || die "a crane builder would use placeholder pname/version"

log "static image build: rust-overlay's prebuilt musl toolchain, not pkgsStatic's rustc"
python3 nix/static-checks.py static-toolchain || die "the static build's toolchain is wrong (see nix/static.nix)"

log "dev shell: nix/shell.nix takes its packages from .ci/tools.toml"
python3 nix/static-checks.py devshell || die "the dev shell and .ci/tools.toml disagree"

log "the flake's cargo-audit check, run here with the real cargo-audit"
# The exact command crane's cargoAudit runs for our check (arguments from nix/audit.nix, i.e.
# deny.toml's reviewed ignores), on the advisory-db snapshot flake.lock locks.
ensure cargo-audit
python3 nix/static-checks.py audit || die "the flake's cargo-audit check would fail"

log "taplo fmt --check (same config as the toml-fmt flake check)"
mapfile -t toml_files < <(git ls-files --cached --others --exclude-standard -- '*.toml' | sort -u)
RUST_LOG=error taplo fmt --check --config nix/taplo.toml "${toml_files[@]}" || die "TOML not formatted: run taplo fmt --config nix/taplo.toml"
echo "  ok   ${#toml_files[@]} TOML files formatted"

log "kustomize builds render (the flake check also schema-validates them)"
mapfile -t kustomizations < <(nix-instantiate --eval --strict --json -E '(import ./nix/source.nix).spec.kustomize' | python3 -c 'import json,sys; print("\n".join(json.load(sys.stdin)))')
for dir in "${kustomizations[@]}"; do
  kubectl kustomize "$dir" >/dev/null || die "kubectl kustomize $dir failed"
  echo "  ok   $dir"
done

log "nix static checks passed"
