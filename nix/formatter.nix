# `nix fmt`: alejandra, through the tiny nix/fmt-check crate (the alejandra library 3.1.0,
# pinned by its own Cargo.lock), so `nix fmt`, the nix-lint check and .ci/nix.sh (which has
# no Nix store) all format exactly alike.
{craneLib}:
craneLib.buildPackage {
  src = craneLib.cleanCargoSource ./fmt-check;
  strictDeps = true;
  doCheck = false;
  meta.mainProgram = "shipshape-alejandra";
}
