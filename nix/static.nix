# The static musl build for the image, following crane's examples/cross-musl: rust-overlay's
# prebuilt upstream toolchain with the musl target, CARGO_BUILD_TARGET and +crt-static, so no
# rustc is ever compiled from source (pkgsStatic's rustc is not in the binary cache).
#
# The C code (ring, the bundled SQLite of libsqlite3-sys) needs a C compiler for the musl
# target too: the glibc gcc wrapper is not one (its fortify hardening emits __*_chk calls musl
# lacks). pkgsStatic's musl gcc is used for that and for linking, and for nothing else: Hydra
# builds it on x86_64-linux and aarch64-linux through the `pkgsStatic.stdenv` job of nixpkgs'
# release.nix (docs/deployment.md has the evidence and what is not proven). .ci/nix.sh checks
# that the Rust toolchain here comes from rust-overlay and never from pkgsStatic.
{
  pkgs,
  crane,
  rust-overlay,
}: let
  inherit (pkgs) lib;
  muslPlatform = pkgs.pkgsStatic.stdenv.hostPlatform;
  # x86_64-unknown-linux-musl or aarch64-unknown-linux-musl, per build machine.
  target = muslPlatform.rust.rustcTarget;
  inherit (pkgs.pkgsStatic.stdenv) cc;
  prefix = cc.targetPrefix;

  # The release CI tests with (1.95, rust-version 1.94); upstream binaries, fetched.
  toolchain = p:
    (rust-overlay.lib.mkRustBin {} p).stable."1.95.0".minimal.override {
      targets = [target];
    };
in {
  inherit target;

  craneLib = (crane.mkLib pkgs).overrideToolchain toolchain;

  # Added to the package's arguments (and so to its dependency build).
  args = {
    CARGO_BUILD_TARGET = target;
    CARGO_BUILD_RUSTFLAGS = "-C target-feature=+crt-static";
    # The cc crate (ring, libsqlite3-sys) and the final link use the musl gcc; build scripts
    # still run on the build machine with the native compiler.
    "CC_${lib.replaceStrings ["-"] ["_"] target}" = "${cc}/bin/${prefix}cc";
    "AR_${lib.replaceStrings ["-"] ["_"] target}" = "${cc.bintools}/bin/${prefix}ar";
    "CARGO_TARGET_${muslPlatform.rust.cargoEnvVarTarget}_LINKER" = "${cc}/bin/${prefix}cc";
    # The image never runs the tests; do not build the dev-dependencies for musl.
    doCheck = false;
  };
}
