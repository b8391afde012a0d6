# Everything the flake exposes for one system, put together from the small files beside this
# one. Each of them is a function of `pkgs`/`craneLib`/`src`; this file only wires them up.
{
  pkgs,
  crane,
  advisory-db,
  rust-overlay,
  revision,
  lastModifiedDate,
}: let
  inherit (pkgs) lib;
  inherit (pkgs.stdenv.hostPlatform) isLinux;

  craneLib = crane.mkLib pkgs;
  source = (import ./source.nix).mkSource {inherit lib craneLib;};

  # glibc build: `nix run`, `nix build`, and what the cargo checks reuse.
  shipshape = pkgs.callPackage ./package.nix {
    inherit craneLib revision;
    inherit (source) src;
  };

  # Static musl build for the image (see static.nix), so the image needs no libc at all. Linux
  # only (evaluated lazily, so macOS never touches it).
  static = import ./static.nix {inherit pkgs crane rust-overlay;};
  shipshape-static = pkgs.callPackage ./package.nix {
    inherit (static) craneLib;
    inherit revision;
    inherit (source) src;
    extraArgs = static.args;
  };

  mkImage = package:
    pkgs.callPackage ./image.nix {
      shipshape = package;
      inherit revision lastModifiedDate;
    };
  image = mkImage shipshape-static;

  # `nix fmt` and the Nix format check run the same alejandra (library 3.1.0, pinned by
  # nix/fmt-check/Cargo.lock) that .ci/nix.sh runs on machines without Nix.
  formatter = pkgs.callPackage ./formatter.nix {inherit craneLib;};
in {
  packages =
    {
      default = shipshape;
      inherit shipshape;
    }
    // lib.optionalAttrs isLinux {
      inherit shipshape-static image;
      # Fallback if the static build ever breaks on a nixpkgs bump: same contract, glibc closure.
      image-glibc = mkImage shipshape;
    };

  apps.default = {
    type = "app";
    program = lib.getExe shipshape;
    meta.description = "Run the shipshape service (SQLite in ./data by default)";
  };

  devShell = pkgs.callPackage ./shell.nix {inherit craneLib formatter;};

  checks = import ./checks.nix {
    inherit pkgs craneLib advisory-db source shipshape shipshape-static image formatter;
  };

  inherit formatter;
}
