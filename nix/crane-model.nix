# An imitation of crane, nixpkgs and rust-overlay, just detailed enough to evaluate our own Nix
# files (nix/default.nix and what it imports) without a Nix store: nixpkgs cannot be fetched on
# the CI machines, so `nix flake check` cannot run there. Every crane builder returns a record of
# its arguments instead of a derivation. .ci/nix.sh (nix/static-checks.py crane-model) evaluates
#   nix-instantiate --eval --strict --json nix/crane-model.nix --argstr advisoryDb DIR
# and checks the result: which crane builders would print crane's "will use a placeholder
# value" warning (the condition of lib/crateNameFromCargoToml.nix at the locked crane rev),
# the exact `cargo audit` command crane's cargoAudit would run (lib/cargoAudit.nix), and where
# the static package's Rust toolchain comes from. What this can and cannot catch:
# docs/pipeline.md ("Imitations").
{
  advisoryDb ? "/advisory-db",
  # The build machine's CPU: the flake builds the image on x86_64-linux and aarch64-linux.
  arch ? "x86_64",
}: let
  musl = "${arch}-unknown-linux-musl";
  muslEnv = builtins.replaceStrings ["-" "x86" "aarch"] ["_" "X86" "AARCH"] "${arch}-UNKNOWN-LINUX-MUSL";
  inherit (builtins) attrNames filter functionArgs head intersectAttrs isAttrs isString listToAttrs;

  # Call a function with exactly the arguments it declares (as callPackage does), so the model
  # also evaluates older versions of our files.
  callWith = f: args: f (intersectAttrs (functionArgs f) args);

  # nixpkgs' lib: only what our files use, with nixpkgs' meaning. fileset.toSource is
  # cleanSourceWith underneath, so crane sees `origSrc` = the fileset's root.
  lib = {
    importTOML = p: builtins.fromTOML (builtins.readFile p);
    importJSON = p: builtins.fromJSON (builtins.readFile p);
    optionals = c: l:
      if c
      then l
      else [];
    optionalAttrs = c: a:
      if c
      then a
      else {};
    inherit (builtins) replaceStrings concatStringsSep;
    getExe = d: "${d.pname or "drv"}/bin/${d.pname or "drv"}";
    licenses.asl20 = "Apache-2.0";
    meta.availableOn = _: _: true;
    fileset = {
      unions = l: {union = l;};
      maybeMissing = p: p;
      fileFilter = _: p: p;
      toSource = {root, ...}: {
        _isLibCleanSourceWith = true;
        origSrc = root;
      };
    };
  };

  # crane's crateNameFromCargoToml: pname/version from the Cargo.toml at the root of the
  # (original, unfiltered) src, unless given; a missing one is crane's placeholder warning.
  firstString = l: let
    s = filter isString l;
  in
    if s == []
    then null
    else head s;
  cargoToml = args: let
    src = args.src or null;
    orig =
      if isAttrs src && src ? _isLibCleanSourceWith
      then src.origSrc
      else src;
    path = args.cargoToml or (orig + "/Cargo.toml");
  in
    if args ? cargoTomlContents
    then builtins.fromTOML args.cargoTomlContents
    else if src != null && builtins.pathExists path
    then lib.importTOML path
    else null;
  crateName = args: let
    t = cargoToml args;
  in
    if t == null
    then {
      pname = null;
      version = null;
      error = "no Cargo.toml at the root of src (crane throws)";
    }
    else {
      pname = firstString [(t.package.metadata.crane.name or null) (t.package.name or null) (t.workspace.metadata.crane.name or null) (t.workspace.package.name or null)];
      version = firstString [(t.package.version or null) (t.workspace.package.version or null)];
      error = null;
    };

  # Every crane builder that ends in mkCargoDerivation/crateNameFromCargoToml. cargoAudit sets
  # its own placeholders without a warning, so it is recorded apart.
  builders = ["buildPackage" "buildDepsOnly" "cargoBuild" "cargoClippy" "cargoDoc" "cargoDocTest" "cargoFmt" "cargoLlvmCov" "cargoNextest" "cargoTarpaulin" "cargoTest" "cargoDeny" "taploFmt" "mkCargoDerivation"];
  mkCraneLib = toolchain: let
    record = builder: args: let
      name = crateName args;
    in
      (args.passthru or {})
      // {
        __crane = builder;
        inherit args toolchain;
        placeholders =
          (
            if args ? pname || name.pname != null
            then []
            else ["pname"]
          )
          ++ (
            if args ? version || name.version != null
            then []
            else ["version"]
          );
        nameError =
          if args ? pname && args ? version
          then null
          else name.error;
        version = args.version or name.version;
      };
  in
    listToAttrs (map (b: {
        name = b;
        value = record b;
      })
      builders)
    // {
      cargoAudit = args: {
        __crane = "cargoAudit";
        inherit toolchain;
        placeholders = [];
        nameError = null;
        # lib/cargoAudit.nix at the locked crane rev, verbatim.
        command = "cargo audit -n -d ${args.advisory-db} ${args.cargoAuditExtraArgs or "--ignore yanked"}";
      };
      devShell = _: {__devShell = true;};
      fileset.commonCargoSources = p: p;
      cleanCargoSource = p: {
        _isLibCleanSourceWith = true;
        origSrc = p;
      };
      # crane calls the function with its (spliced) pkgs.
      overrideToolchain = f: mkCraneLib (f pkgs);
    };

  crane.mkLib = p:
    mkCraneLib {
      from =
        if p ? __pkgsStatic
        then "nixpkgs rustc of pkgsStatic"
        else "nixpkgs rustc";
    };

  # rust-overlay: a prebuilt upstream toolchain. The model does not know which versions the
  # pinned revision ships; any 1.80.0-1.99.9 or `latest` evaluates.
  toolchainOf = channel: version: profile: {
    override = a: {
      from = "rust-overlay ${channel} ${version} ${profile}";
      rustOverlay = true;
      targets = a.targets or [];
    };
    from = "rust-overlay ${channel} ${version} ${profile}";
    rustOverlay = true;
    targets = [];
  };
  versions =
    ["latest"]
    ++ builtins.concatMap (m: builtins.genList (p: "1.${toString m}.${toString p}") 10) (builtins.genList (i: i + 80) 20);
  rustBin = {
    stable = listToAttrs (map (v: {
        name = v;
        value = listToAttrs (map (profile: {
          name = profile;
          value = toolchainOf "stable" v profile;
        }) ["minimal" "default" "complete"]);
      })
      versions);
  };
  rust-overlay.lib.mkRustBin = _: _: rustBin;

  stub = name: {
    inherit name;
    pname = name;
  };
  pkgs = {
    inherit lib;
    stdenv.hostPlatform = {
      isLinux = true;
      isDarwin = false;
    };
    callPackage = fn: args: callWith (import fn) (pkgs // args);
    runCommand = name: _: _: {__runCommand = name;};
    libiconv = stub "libiconv";
    cargo-auditable = stub "cargo-auditable";
    dockerTools = {
      streamLayeredImage = a: {__image = a.name;};
      caCertificates = stub "cacert";
    };
    pkgsStatic =
      pkgs
      // {
        __pkgsStatic = true;
        stdenv = {
          hostPlatform = {
            rust = {
              rustcTarget = musl;
              cargoEnvVarTarget = muslEnv;
            };
            isLinux = true;
            isStatic = true;
          };
          cc = {
            outPath = "/nix/store/model-${musl}-gcc-wrapper";
            targetPrefix = "${musl}-";
            bintools = "/nix/store/model-${musl}-binutils-wrapper";
          };
        };
      };
  };

  ss = callWith (import ./default.nix) {
    inherit pkgs crane rust-overlay;
    advisory-db = advisoryDb;
    revision = "model";
    lastModifiedDate = "19700101000001";
  };

  # Every crane call the flake makes: the checks, the packages and their dependency builds.
  isCrane = v: isAttrs v && v ? __crane;
  named = prefix: set:
    map (n: {
      name = "${prefix}.${n}";
      value = set.${n};
    }) (attrNames set);
  top = filter (e: isCrane e.value) (named "checks" ss.checks
    ++ named "packages" ss.packages
    ++ [
      {
        name = "formatter";
        value = ss.formatter;
      }
    ]);
  deps = map (e: {
    name = "${e.name}.cargoArtifacts";
    value = e.value.args.cargoArtifacts;
  }) (filter (e: isCrane (e.value.args.cargoArtifacts or null)) top);
  report = e: {
    inherit (e) name;
    builder = e.value.__crane;
    inherit (e.value) placeholders nameError;
  };
  static = ss.packages.shipshape-static;
in {
  calls = map report (top ++ deps);
  audit = map (e: {
    inherit (e) name;
    inherit (e.value) command;
  }) (filter (e: e.value.__crane == "cargoAudit") top);
  static = {
    builder = static.__crane or null;
    toolchain = static.toolchain.from;
    rustOverlay = static.toolchain.rustOverlay or false;
    toolchainTargets = static.toolchain.targets or [];
    buildTarget = static.args.CARGO_BUILD_TARGET or null;
    rustflags = static.args.CARGO_BUILD_RUSTFLAGS or null;
    want = musl;
    cc = static.args."CC_${builtins.replaceStrings ["-"] ["_"] musl}" or null;
    linker = static.args."CARGO_TARGET_${muslEnv}_LINKER" or null;
    dependencyBuild = {
      toolchain = static.args.cargoArtifacts.toolchain.from or null;
      buildTarget = static.args.cargoArtifacts.args.CARGO_BUILD_TARGET or null;
    };
  };
}
