# What the Rust build is allowed to see. The spec is plain data on purpose: .ci/nix.sh evaluates
# it without nixpkgs (`nix-instantiate --eval --strict --json -E '(import ./nix/source.nix).spec'`)
# and proves that every file the build and the tests read (sources, include_str!/include_bytes!
# targets, sqlx migrations, .sqlx query data, test fixtures) is inside. `mkSource` turns it into crane sources with
# lib.fileset, so editing the README or the manifests never rebuilds the binary.
let
  spec = {
    # Single files, relative to the repository root.
    files = ["Cargo.toml" "Cargo.lock"];
    # Crate directories: crane's commonCargoSources keeps Cargo.toml, Cargo.lock, *.rs, *.toml.
    cargoSources = ["service"];
    # Directories kept whole: data the compiler embeds (sqlx::migrate!) and data the tests read
    # at run time under CARGO_MANIFEST_DIR (the PEM keys of tests/api/). The rust stage
    # (.ci/rust.sh) runs the whole test suite from a copy of exactly these files.
    dirs = ["service/migrations" "service/tests/fixtures"];
    # Kept whole when present: sqlx offline query data, cargo configuration.
    optionalDirs = [".sqlx" "service/.sqlx" ".cargo"];
    # Kustomizations the kustomize check renders and validates (not part of the Rust build).
    kustomize = ["kustomize/base" "kustomize/overlays/dev" "kustomize/overlays/prod"];
  };
in {
  inherit spec;

  mkSource = {
    lib,
    craneLib,
  }: let
    root = ../.;
    at = rel: root + "/${rel}";
    inherit (lib) fileset;
    buildFiles = fileset.unions (
      map at (spec.files ++ spec.dirs)
      ++ map (dir: craneLib.fileset.commonCargoSources (at dir)) spec.cargoSources
      ++ map (dir: fileset.maybeMissing (at dir)) spec.optionalDirs
    );
    toSource = files:
      fileset.toSource {
        inherit root;
        fileset = files;
      };
  in {
    inherit spec;
    src = toSource buildFiles;
    # cargo-deny also reads its policy.
    denySrc = toSource (fileset.unions [buildFiles (fileset.maybeMissing (at "deny.toml"))]);
    # Every TOML file, for taplo (its configuration lives in nix/taplo.toml).
    tomlSrc = toSource (fileset.fileFilter (file: file.hasExt "toml") root);
    # Every Nix file, for alejandra, deadnix and statix.
    nixSrc = toSource (fileset.fileFilter (file: file.hasExt "nix") root);
    # The Kubernetes manifests, rendered and schema-validated by the kustomize check.
    kustomizeSrc = toSource (at "kustomize");
  };
}
