# The cargo-audit arguments of the flake's `cargo-audit` check: as strict as .ci/security.sh
# (every warning is an error) and with the same reviewed exceptions, read from deny.toml's
# [advisories] ignore, the one list both use. Plain data (builtins only), so .ci/nix.sh
# evaluates it without nixpkgs and runs cargo-audit with exactly these arguments.
let
  deny = builtins.fromTOML (builtins.readFile ../deny.toml);
  entries = deny.advisories.ignore or [];
  ids = map (e:
    if builtins.isAttrs e
    then e.id or (throw "deny.toml: advisory ignore ${builtins.toJSON e} has no id (cargo-audit ignores ids only)")
    else e)
  entries;
  # Spliced into crane's shell command unquoted: only plain advisory ids may pass.
  checked = map (id:
    if builtins.match "RUSTSEC-[0-9]{4}-[0-9]{4}" id != null
    then id
    else throw "deny.toml: advisory ignore ${builtins.toJSON id} is not a RustSec advisory id")
  ids;
in {
  ignores = checked;
  args = ["--deny" "warnings"] ++ builtins.concatMap (id: ["--ignore" id]) checked;
}
