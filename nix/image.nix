# The OCI image (`nix build .#image && ./result | docker load`): the binary, CA certificates,
# /tmp and /data, nothing else: no shell, no package manager, no compiler. Its runtime
# contract (entrypoint, user, port, env, healthcheck, labels, directories) is read from
# image-contract.json, which .ci/container.sh also uses to build and run an equivalent image.
{
  lib,
  dockerTools,
  shipshape,
  revision,
  lastModifiedDate,
}: let
  contract = lib.importJSON ./image-contract.json;
  workspace = (lib.importTOML ../Cargo.toml).workspace.package;

  # Commit time as ISO 8601 (lastModifiedDate is YYYYMMDDHHMMSS): the same commit always
  # yields the same image config, so the image is reproducible bit for bit.
  part = start: len: builtins.substring start len lastModifiedDate;
  created = "${part 0 4}-${part 4 2}-${part 6 2}T${part 8 2}:${part 10 2}:${part 12 2}Z";

  mkDirectory = dir: ''
    mkdir -p .${dir.path}
    chmod ${dir.mode} .${dir.path}
    chown ${dir.owner} .${dir.path}
  '';
in
  dockerTools.streamLayeredImage {
    inherit (contract) name;
    # The local name after `docker load` / `minikube image load`: shipshape:dev is what the dev
    # overlay runs. Registries get their tags (version, digest) when the image is pushed; the
    # version and revision are in the labels.
    tag = "dev";
    # File mtimes stay at the default epoch, so unchanged layers dedupe across commits.
    inherit created;

    # /bin/shipshape and /etc/ssl/certs/ca-bundle.crt, as symlinks into their store paths.
    contents = [shipshape dockerTools.caCertificates];
    fakeRootCommands = lib.concatMapStrings mkDirectory contract.directories;

    config =
      contract.config
      // {
        Labels =
          contract.config.Labels
          // {
            "org.opencontainers.image.version" = shipshape.version;
            "org.opencontainers.image.revision" = revision;
            "org.opencontainers.image.source" = workspace.repository;
            "org.opencontainers.image.licenses" = workspace.license;
          };
      };
  }
