{
  description = "shipshape: items REST service, built reproducibly with crane and shipped as a minimal OCI image";

  # Keep this list short: every input is a pin to review and update (`nix flake update`).
  # .ci/nix.sh checks that flake.lock's root inputs equal these names.
  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixpkgs-unstable";

    crane.url = "github:ipetkov/crane";

    advisory-db = {
      url = "github:rustsec/advisory-db";
      flake = false;
    };

    # Prebuilt upstream Rust toolchains with the musl target, for the static image build
    # (crane's examples/cross-musl): nothing Rust is compiled from source.
    rust-overlay = {
      url = "github:oxalica/rust-overlay";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs = {
    self,
    nixpkgs,
    crane,
    advisory-db,
    rust-overlay,
  }: let
    inherit (nixpkgs) lib;

    # The image, the static build and the checks are Linux only; the package, `nix run`
    # and the dev shell also work on macOS.
    linux = ["x86_64-linux" "aarch64-linux"];
    darwin = ["x86_64-darwin" "aarch64-darwin"];

    # Everything per system lives in nix/; see nix/default.nix.
    perSystem = systems: f:
      lib.genAttrs systems (system:
        f (import ./nix {
          pkgs = nixpkgs.legacyPackages.${system};
          inherit crane advisory-db rust-overlay;
          # Passed into the binary (`--version`, `shipshape_build_info`) and the image labels.
          revision = self.rev or self.dirtyRev or "unknown";
          # Commit time, so the image's `created` is fixed per commit.
          lastModifiedDate = self.lastModifiedDate or "19700101000001";
        }));
  in {
    packages = perSystem (linux ++ darwin) (ss: ss.packages);
    apps = perSystem (linux ++ darwin) (ss: ss.apps);
    devShells = perSystem (linux ++ darwin) (ss: {default = ss.devShell;});
    checks = perSystem linux (ss: ss.checks);
    formatter = perSystem (linux ++ darwin) (ss: ss.formatter);
  };
}
