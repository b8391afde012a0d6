# `nix develop`: the Rust toolchain (craneLib.devShell adds cargo, rustc, clippy, rustfmt) and
# every tool of .ci/tools.toml that names a nixpkgs attribute: the one list of the tools CI and
# the runbooks use, from which .ci/lib.sh's `ensure` installs them on machines without Nix.
# Tools nixpkgs cannot build for this platform (e.g. some on macOS) are left out instead of
# breaking the shell.
{
  lib,
  pkgs,
  craneLib,
  formatter,
}: let
  inherit (builtins.fromTOML (builtins.readFile ../.ci/tools.toml)) tools;
  # Each attribute path once ("prometheus.cli", "util-linux"): several commands share a package.
  attrs = builtins.attrNames (builtins.listToAttrs (map (t: {
    name = t.nixpkgs;
    value = null;
  }) (builtins.filter (t: t ? nixpkgs) (builtins.attrValues tools))));
  fromPath = attr: builtins.foldl' (set: name: set.${name}) pkgs (builtins.filter builtins.isString (builtins.split "[.]" attr));
in
  craneLib.devShell {
    packages = builtins.filter (lib.meta.availableOn pkgs.stdenv.hostPlatform) ([formatter] ++ map fromPath attrs);

    shellHook = ''
      echo "shipshape dev shell ($(rustc --version))"
      echo "  cargo run -- serve      service on http://127.0.0.1:8080 (SQLite in ./data)"
      echo "  cargo nextest run       tests (PostgreSQL ones use SHIPSHAPE_TEST_PG_URL)"
      echo "  nix flake check         every CI gate; bash .ci/run runs them without Nix"
    '';
  }
