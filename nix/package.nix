# The shipshape binary, following crane's quick-start: dependencies are built once by
# buildDepsOnly and reused (cargoArtifacts) by the package and every cargo check.
{
  lib,
  stdenv,
  libiconv,
  cargo-auditable,
  craneLib,
  src,
  revision,
  # Extra crane arguments for every build step (the static build's target and toolchain).
  extraArgs ? {},
}: let
  manifest = (lib.importTOML ../service/Cargo.toml).package;
  workspace = (lib.importTOML ../Cargo.toml).workspace.package;
  # `version.workspace = true` would make this an attribute set; fall back to the workspace.
  version =
    if builtins.isString manifest.version
    then manifest.version
    else workspace.version;

  commonArgs =
    {
      inherit src version;
      pname = "shipshape";
      strictDeps = true;
      cargoExtraArgs = "--locked --package shipshape";

      buildInputs = lib.optionals stdenv.hostPlatform.isDarwin [libiconv];

      # No network in the sandbox: sqlx macros read checked-in query data (.sqlx) instead of a
      # live database, and the Swagger UI is vendored (utoipa-swagger-ui "vendored" feature).
      SQLX_OFFLINE = "true";
    }
    // extraArgs;

  # Built *only* from Cargo.toml/Cargo.lock (crane swaps in dummy sources), so it is reused
  # until the dependencies change.
  cargoArtifacts = craneLib.buildDepsOnly commonArgs;
in
  craneLib.buildPackage (commonArgs
    // {
      inherit cargoArtifacts;
      # Tests run once, in the nextest check (with PostgreSQL), not again here.
      doCheck = false;
      # Embed the dependency list in the binary (as nixpkgs' buildRustPackage does), so image
      # scanners such as trivy see every crate. It wraps only the workspace crate's rustc, so
      # the dependency artifacts above are reused as they are.
      nativeBuildInputs = [cargo-auditable];
      cargoBuildCommand = "cargo auditable build --profile release";
      # Read with option_env! by the service: `--version` and shipshape_build_info{revision}.
      # Set here and not in commonArgs, so a new commit does not rebuild the dependencies.
      SHIPSHAPE_GIT_REVISION = revision;

      passthru = {inherit commonArgs cargoArtifacts;};

      meta = {
        description = "Production-grade items REST service";
        homepage = workspace.repository;
        license = lib.licenses.asl20;
        mainProgram = "shipshape";
      };
    })
