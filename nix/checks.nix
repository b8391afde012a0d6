# `nix flake check`: every quality gate as a derivation. The cargo checks reuse the package's
# dependency artifacts, so only the workspace crate is compiled again.
{
  pkgs,
  craneLib,
  advisory-db,
  source,
  shipshape,
  shipshape-static,
  image,
  formatter,
}: let
  inherit (shipshape) commonArgs cargoArtifacts;
  contract = ./image-contract.json;
  # The root Cargo.toml is a virtual workspace without a name or version: crane builders whose
  # src is the repository root get them here, or crane warns that it uses placeholders.
  name = {
    pname = "shipshape";
    inherit (shipshape) version;
  };
in {
  inherit shipshape;

  shipshape-clippy = craneLib.cargoClippy (commonArgs
    // {
      inherit cargoArtifacts;
      cargoClippyExtraArgs = "--all-targets -- --deny warnings";
    });

  shipshape-fmt = craneLib.cargoFmt (name // {inherit (source) src;});

  toml-fmt = craneLib.taploFmt (name
    // {
      src = source.tomlSrc;
      taploExtraArgs = "--config nix/taplo.toml";
    });

  # The PostgreSQL tests run in the sandbox too: postgresqlTestHook starts a throwaway cluster
  # before the check phase and stops it after. Tests get the superuser URL and create their
  # own databases, exactly as with start_postgres in .ci/lib.sh.
  shipshape-nextest = craneLib.cargoNextest (commonArgs
    // {
      inherit cargoArtifacts;
      partitions = 1;
      partitionType = "count";
      nativeBuildInputs = [pkgs.postgresql pkgs.postgresqlTestHook];
      postgresqlEnableTCP = 1;
      postgresqlExtraSettings = ''
        port = 5432
        max_connections = 300
        fsync = off
      '';
      preCheck = ''
        export SHIPSHAPE_TEST_PG_URL=postgres://postgres@127.0.0.1:5432/postgres
      '';
    });

  # crane runs `cargo audit -n -d <advisory-db> <cargoAuditExtraArgs>`; the arguments (every
  # warning denied, deny.toml's reviewed ignores) come from audit.nix, which .ci/nix.sh runs
  # through the real cargo-audit against the same advisory-db snapshot.
  cargo-audit = craneLib.cargoAudit (name
    // {
      inherit (source) src;
      inherit advisory-db;
      cargoAuditExtraArgs = builtins.concatStringsSep " " (import ./audit.nix).args;
    });

  # bans, licenses and sources (crane's default); advisories are cargo-audit's job above.
  cargo-deny = craneLib.cargoDeny (name // {src = source.denySrc;});

  # The image's binary is static: no program interpreter, no shared libraries.
  shipshape-static =
    pkgs.runCommand "shipshape-static-check" {
      nativeBuildInputs = [pkgs.binutils];
    } ''
      bin=${shipshape-static}/bin/shipshape
      if readelf -lW $bin | grep -q 'INTERP'; then
        echo "$bin has a program interpreter: not a static binary"; exit 1
      fi
      if readelf -dW $bin | grep -q '(NEEDED)'; then
        readelf -dW $bin; echo "$bin needs shared libraries: not a static binary"; exit 1
      fi
      readelf -hW $bin | grep -E 'Class|Machine' > $out
    '';

  kustomize =
    pkgs.runCommand "shipshape-kustomize" {
      nativeBuildInputs = [pkgs.kustomize pkgs.kubernetes-validate];
    } ''
      export HOME=$TMPDIR
      mkdir -p $out
      for dir in ${toString source.spec.kustomize}; do
        echo "kustomize build $dir"
        kustomize build ${source.kustomizeSrc}/$dir > rendered.yaml
        kubernetes-validate --strict rendered.yaml
        cp rendered.yaml $out/''${dir//\//-}.yaml
      done
    '';

  nix-lint =
    pkgs.runCommand "shipshape-nix-lint" {
      nativeBuildInputs = [formatter pkgs.deadnix pkgs.statix];
    } ''
      cd ${source.nixSrc}
      shipshape-alejandra --check .
      deadnix --fail .
      statix check .
      touch $out
    '';

  # Streams the image in the sandbox and holds it to the contract: config equal to
  # image-contract.json, no shell, libc, package manager or compiler in any layer.
  image =
    pkgs.runCommand "shipshape-image-check" {
      nativeBuildInputs = [pkgs.jq pkgs.gnutar pkgs.python3];
    } ''
      ${image} > image.tar
      tar -xf image.tar manifest.json
      config=$(jq -r '.[0].Config' manifest.json)
      tar -xf image.tar "$config"
      jq .config "$config" > config.json
      python3 ${./static-checks.py} image-config ${contract} config.json

      for layer in $(jq -r '.[0].Layers[]' manifest.json); do
        tar -xOf image.tar "$layer" | tar -t
      done | sort -u > files.txt
      # Store path names start right after the 32-character hash, so a package name merely
      # containing "musl" does not match.
      if grep -E '(^|/)bin/(sh|bash)$|nix/store/[0-9a-z]{32}-(bash|coreutils|glibc|musl|gcc|rustc|cargo|nix)-[0-9]' files.txt; then
        echo "the image must not contain a shell, a libc, a compiler or a package manager"; exit 1
      fi

      mkdir -p $out
      cp config.json $out/config.json
      cp files.txt $out/files.txt
      stat -c %s image.tar > $out/size-bytes
      echo "image: $(cat $out/size-bytes) bytes, $(grep -c . files.txt) entries"
      # The budget (docs/deployment.md): about 20 MB today, almost all of it the binary.
      if [ "$(cat $out/size-bytes)" -gt 25000000 ]; then
        echo "the image archive is over 25 MB: something was pulled into the closure"; exit 1
      fi
    '';
}
