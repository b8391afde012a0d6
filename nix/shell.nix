# `nix develop`: the Rust toolchain (craneLib.devShell adds cargo, rustc, clippy, rustfmt) and
# every tool the CI gates and the runbooks use. Tools nixpkgs cannot build for this platform
# (e.g. some on macOS) are left out instead of breaking the shell.
{
  lib,
  pkgs,
  craneLib,
  formatter,
}:
craneLib.devShell {
  packages = builtins.filter (lib.meta.availableOn pkgs.stdenv.hostPlatform) (with pkgs; [
    # Rust
    rust-analyzer
    cargo-nextest
    cargo-deny
    cargo-audit
    sqlx-cli
    taplo
    # Kubernetes
    kubectl
    kustomize
    minikube
    kubeconform
    kubernetes-validate
    # Security and lint
    trivy
    zap
    semgrep
    checkov
    actionlint
    zizmor
    # Nix
    formatter
    deadnix
    statix
    # Runtime and load
    prometheus.cli # promtool
    postgresql
    oha
  ]);

  shellHook = ''
    echo "shipshape dev shell ($(rustc --version))"
    echo "  cargo run -- serve      service on http://127.0.0.1:8080 (SQLite in ./data)"
    echo "  cargo nextest run       tests (PostgreSQL ones use SHIPSHAPE_TEST_PG_URL)"
    echo "  nix flake check         every CI gate; bash .ci/run runs them without Nix"
  '';
}
