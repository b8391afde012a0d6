#!/usr/bin/env python3
"""Static checks of the Nix flake that need no Nix store (run by .ci/nix.sh).

  lock                      flake.lock is valid and matches flake.nix (and the vetted pins)
  paths                     every path the Nix files name exists
  contract                  nix/image-contract.json states the service contract
  image-config CONTRACT CONFIG [LABELS]
                            an image's config (Docker config JSON) is the contract's, plus
                            exactly LABELS if given (else non-empty version/revision labels)
  source-filter [DEPINFO..] every file the build reads is inside the crane source filter
  materialize DEST          copy exactly the files the crane source filter selects to DEST
                            (.ci/rust.sh runs the test suite there)
  placeholders              every crane builder call gets pname and version (crane's
                            placeholder warning, modelled by nix/crane-model.nix)
  static-toolchain          the static package builds with rust-overlay's prebuilt toolchain
                            for a musl target, +crt-static and a musl C compiler
  audit                     run cargo-audit exactly as the flake's cargo-audit check would
  devshell                  .ci/tools.toml is well-formed and nix/shell.nix's packages are
                            exactly its nixpkgs attributes (shell.nix evaluated with stand-ins)

Run from the repository root. nix-instantiate (Debian nix-bin) evaluates flake.nix and the
filter spec; the rest is plain Python so the checks run on machines without Nix.
"""

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib

ROOT = os.getcwd()
# shared/ sits beside the checkout, as for .ci/security.sh.
PINS = os.path.join(os.environ.get("SHIPSHAPE_SHARED_DIR", os.path.join(ROOT, "..", "shared")), "flake-pins.md")
failures = []


def fail(msg):
    failures.append(msg)
    print(f"  FAIL {msg}")


def ok(msg):
    print(f"  ok   {msg}")


def nix_eval(expr):
    out = subprocess.run(
        ["nix-instantiate", "--eval", "--strict", "--json", "-E", expr],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout)


def git_files():
    out = subprocess.run(["git", "ls-files", "-z"], check=True, capture_output=True, text=True)
    return {f for f in out.stdout.split("\0") if f}


# ---------------------------------------------------------------------------------- lock
def parse_github_url(url):
    m = re.fullmatch(r"github:([^/]+)/([^/?]+)(?:/([^?]+))?", url)
    if not m:
        return None
    original = {"owner": m.group(1), "repo": m.group(2), "type": "github"}
    if m.group(3):
        original["ref"] = m.group(3)
    return original


def vetted_pins():
    if not os.path.exists(PINS):
        return None
    pins = {}
    for block in re.findall(r"```json\n(.*?)```", open(PINS).read(), re.S):
        block = block.strip()
        if block.startswith('"'):
            for name, node in json.loads("{" + block + "}").items():
                pins.setdefault(name, []).append(node)
    return pins


def check_lock():
    try:
        lock = json.load(open("flake.lock"))
    except (OSError, ValueError) as err:
        fail(f"flake.lock is not valid JSON: {err}")
        return
    ok("flake.lock is valid JSON")
    if lock.get("version") != 7 or lock.get("root") != "root":
        fail(f"flake.lock: expected version 7 and root 'root', got {lock.get('version')}, {lock.get('root')}")
    nodes = lock.get("nodes", {})

    inputs = nix_eval("(import ./flake.nix).inputs")
    root_inputs = nodes.get("root", {}).get("inputs", {})
    if sorted(root_inputs) == sorted(inputs):
        ok(f"lock root inputs == flake.nix inputs: {', '.join(sorted(inputs))}")
    else:
        fail(f"lock root inputs {sorted(root_inputs)} != flake.nix inputs {sorted(inputs)}")

    args = nix_eval("builtins.functionArgs (import ./flake.nix).outputs")
    if sorted(args) == sorted(["self", *inputs]):
        ok("outputs takes exactly self and the inputs")
    else:
        fail(f"outputs arguments {sorted(args)} != self + inputs {sorted(inputs)}")

    pins = vetted_pins()
    if pins is None:
        fail(f"{PINS} not found: cannot compare the lock nodes with the vetted pins (set SHIPSHAPE_SHARED_DIR)")
    for name, spec in sorted(inputs.items()):
        node = nodes.get(root_inputs.get(name, name))
        if node is None:
            fail(f"{name}: no lock node")
            continue
        locked = node.get("locked", {})
        missing = [k for k in ("rev", "narHash", "lastModified") if k not in locked]
        if missing:
            fail(f"{name}: locked node lacks {', '.join(missing)}")
        elif not (re.fullmatch(r"[0-9a-f]{40}", locked["rev"]) and locked["narHash"].startswith("sha256-")
                  and isinstance(locked["lastModified"], int)):
            fail(f"{name}: malformed rev/narHash/lastModified {locked}")
        want = parse_github_url(spec.get("url", ""))
        if want is None:
            fail(f"{name}: url {spec.get('url')!r} is not a github: url (this check knows no other)")
        elif node.get("original") != want:
            fail(f"{name}: lock original {node.get('original')} does not match url {spec['url']}")
        elif any(locked.get(k) != want[k] for k in ("owner", "repo", "type")):
            fail(f"{name}: locked owner/repo/type {locked} differ from original {want}")
        if spec.get("flake", True) != node.get("flake", True):
            fail(f"{name}: flake = {spec.get('flake', True)} in flake.nix but {node.get('flake', True)} in the lock")
        # An input's own inputs may only follow ours (rust-overlay's nixpkgs follows the root's),
        # so the lock holds no second nixpkgs; the lock then records the followed path.
        own = spec.get("inputs", {})
        loose = sorted(k for k, v in own.items() if set(v) != {"follows"})
        if loose:
            fail(f"{name}: inputs {loose} do not `follows` one of ours; this flake locks no inputs of inputs")
        want_inputs = {k: v["follows"].split("/") for k, v in own.items() if set(v) == {"follows"}}
        for k, path in want_inputs.items():
            if path[0] not in inputs:
                fail(f"{name}: inputs.{k}.follows = {'/'.join(path)!r}, which is not an input of this flake")
        if node.get("inputs", {}) != want_inputs:
            fail(f"{name}: lock inputs {node.get('inputs', {})} != flake.nix follows {want_inputs}")
        if pins is not None:
            if node in pins.get(name, []):
                ok(f"{name}: rev {locked.get('rev', '?')[:12]} is a vetted pin (rev, narHash, lastModified present)")
            else:
                fail(f"{name}: lock node is not one of the vetted pins in {PINS}")
    extra = set(nodes) - {"root"} - {root_inputs.get(n, n) for n in inputs}
    if extra:
        fail(f"flake.lock has nodes no input uses: {sorted(extra)}")


# ---------------------------------------------------------------------------------- paths
def nix_files():
    return sorted(f for f in git_files() | untracked() if f.endswith(".nix") and os.path.exists(f))


def untracked():
    out = subprocess.run(["git", "ls-files", "-z", "--others", "--exclude-standard"],
                         check=True, capture_output=True, text=True)
    return {f for f in out.stdout.split("\0") if f}


def check_paths():
    seen, before = 0, len(failures)
    for f in nix_files():
        parsed = subprocess.run(["nix-instantiate", "--parse", f], check=True, capture_output=True, text=True).stdout
        # The parser prints path literals as absolute paths, outside string quotes.
        for path in re.findall(r'(?<![\w"/.-])(' + re.escape(ROOT) + r'(?:/[\w.+-]+)*)', parsed):
            seen += 1
            if not os.path.exists(path):
                fail(f"{f}: names {os.path.relpath(path, ROOT)}, which does not exist")
    spec = nix_eval("(import ./nix/source.nix).spec")
    for rel in spec["files"] + spec["dirs"] + spec["cargoSources"] + spec["kustomize"]:
        seen += 1
        if not os.path.exists(rel):
            fail(f"nix/source.nix spec names {rel}, which does not exist")
    for rel in spec["kustomize"]:
        if os.path.isdir(rel) and not any(os.path.exists(os.path.join(rel, k)) for k in
                                          ("kustomization.yaml", "kustomization.yml", "Kustomization")):
            fail(f"{rel}: no kustomization.yaml for the kustomize check to build")
    if len(failures) == before:
        ok(f"{seen} paths named by the Nix files and the source spec exist")


# ------------------------------------------------------------------------------- contract
def check_contract():
    c = json.load(open("nix/image-contract.json"))
    cfg = c["config"]
    entry = cfg["Entrypoint"]
    checks = [
        (entry[:1] == ["/bin/shipshape"] and entry[1:] == ["serve"], f"Entrypoint is [/bin/shipshape, serve]: {entry}"),
        (re.fullmatch(r"[1-9]\d*:[1-9]\d*", cfg["User"]) is not None and cfg["User"] == "65532:65532",
         f"User is numeric non-root 65532:65532: {cfg['User']}"),
        (list(cfg["ExposedPorts"]) == ["8080/tcp"], f"ExposedPorts is 8080/tcp: {list(cfg['ExposedPorts'])}"),
        (cfg["Healthcheck"]["Test"] == ["CMD", entry[0], "healthcheck"],
         f"Healthcheck runs `shipshape healthcheck` without a shell: {cfg['Healthcheck']['Test']}"),
        (cfg.get("StopSignal") == "SIGTERM", "StopSignal is SIGTERM"),
        ({"path": "/tmp", "mode": "1777", "owner": "0:0"} in c["directories"], "/tmp exists with mode 1777"),
        (all(re.fullmatch(r"\d+:\d+", d["owner"]) and re.fullmatch(r"[0-7]{4}", d["mode"]) for d in c["directories"]),
         "directories have numeric owners and octal modes"),
    ]
    for good, what in checks:
        (ok if good else fail)(f"contract: {what}")


def check_image_config(contract_path, config_path, labels_path=None):
    """Shared by the Nix `image` check and .ci/container.sh: one definition of "matches"."""
    want = json.load(open(contract_path))["config"]
    img = json.load(open(config_path))
    bad = [k for k, v in want.items() if k not in ("Env", "Labels") and img.get(k) != v]
    bad += [f"Env {e}" for e in want["Env"] if e not in (img.get("Env") or [])]
    labels = dict(want["Labels"])
    if labels_path:
        labels.update(json.load(open(labels_path)))
    else:
        labels.update({f"org.opencontainers.image.{k}": img.get("Labels", {}).get(f"org.opencontainers.image.{k}")
                       or "(missing)" for k in ("version", "revision", "source", "licenses")})
    bad += [f"Label {k}" for k, v in labels.items() if (img.get("Labels") or {}).get(k) != v or v == "(missing)"]
    if bad:
        print(json.dumps(img, indent=2))
        fail(f"image config differs from {contract_path}: {', '.join(bad)}")
    else:
        ok(f"image config matches the contract ({len(want)} keys, {len(labels)} labels)")


# -------------------------------------------------------------------------- source filter
def in_filter(path, spec):
    if path in spec["files"]:
        return True
    if any(path == d or path.startswith(d + "/") for d in spec["dirs"] + spec["optionalDirs"]):
        return True
    name = os.path.basename(path)
    return any(path.startswith(d + "/") for d in spec["cargoSources"]) and (
        name in ("Cargo.toml", "Cargo.lock") or name.endswith((".rs", ".toml")))


def files_under(path, universe):
    path = os.path.normpath(path)
    return {f for f in universe if f == path or f.startswith(path + "/")}


STR = r'"((?:[^"\\]|\\.)*)"'
INCLUDE = re.compile(r'\binclude_(?:str|bytes)!\s*\(\s*' + STR)
INCLUDE_MANIFEST = re.compile(r'\binclude_(?:str|bytes)!\s*\(\s*concat!\s*\(\s*env!\s*\(\s*"CARGO_MANIFEST_DIR"\s*\)\s*,\s*' + STR)
MIGRATE = re.compile(r'\bmigrate!\s*\(\s*(?:' + STR + r')?\s*\)')
QUERY_FILE = re.compile(r'\bquery(?:_as|_scalar)?_file(?:_as)?(?:_unchecked)?!\s*\(\s*(?:[\w:]+\s*,\s*)?' + STR)
QUERY_MACRO = re.compile(r'\bquery(?:_as|_scalar)?(?:_unchecked)?!\s*\(')
RERUN = re.compile(r'cargo:rerun-if-changed=([^"\s)]+)')
# Run-time reads: a path built from the crate directory (what tests do to find fixtures),
# e.g. format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR")), or
# Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data.json").
MANIFEST_DIR = re.compile(r'\benv!\s*\(\s*"CARGO_MANIFEST_DIR"\s*\)|\bvar(?:_os)?\s*\(\s*"CARGO_MANIFEST_DIR"\s*\)')
LITERAL = re.compile(STR)


def manifest_dir_reads(member, rs, text, universe):
    """(path, reason) pairs for paths under CARGO_MANIFEST_DIR that `rs` builds at run time.

    The path is taken from the string literals on the lines around each use of the variable:
    placeholders ({}, {name}) cut it to the directory they sit in, and everything tracked
    under that directory is needed. A use with no path literal nearby is reported as a failure
    (the build might read anything), so a new kind of read cannot pass unnoticed."""
    need = []
    lines = text.splitlines()
    for m in MANIFEST_DIR.finditer(text):
        lineno = text.count("\n", 0, m.start())
        window = "\n".join(lines[max(0, lineno - 2):lineno + 3])
        where = f"{rs}:{lineno + 1}"
        paths = []
        for lit in LITERAL.findall(window):
            if lit == "CARGO_MANIFEST_DIR" or "/" not in lit and "." not in lit:
                continue
            rel = lit[2:] if lit.startswith("{}") else lit
            static = rel.split("{", 1)[0]
            if "{" in rel:  # a placeholder inside the name: the directory it sits in
                static = static.rsplit("/", 1)[0] if not static.endswith("/") else static
            static = static.strip("/")
            if static:
                paths.append(os.path.normpath(os.path.join(member, static)))
        if not paths:
            need.append((f"{where} (CARGO_MANIFEST_DIR)", "run-time read whose path this scan cannot tell"))
        for path in paths:
            found = files_under(path, universe)
            if not found:
                need.append((path, f"run-time read under CARGO_MANIFEST_DIR at {where}"))
            need += [(f, f"run-time read under CARGO_MANIFEST_DIR at {where}") for f in sorted(found)]
    return need


def required_files(universe):
    """(path, reason) pairs for every repository file the cargo build reads."""
    need = [("Cargo.toml", "workspace manifest"), ("Cargo.lock", "lock file")]
    if os.path.exists(".cargo/config.toml"):
        need.append((".cargo/config.toml", "cargo configuration"))
    workspace = tomllib.load(open("Cargo.toml", "rb")).get("workspace", {})
    members = sorted({m for pat in workspace.get("members", []) for m in glob.glob(pat)})
    for member in members:
        for f in sorted(files_under(member, universe)):
            if f.endswith(".rs") or os.path.basename(f) == "Cargo.toml":
                need.append((f, "crate source"))
        uses_query_macros = False
        for rs in sorted(f for f in files_under(member, universe) if f.endswith(".rs")):
            text = open(rs, encoding="utf-8", errors="replace").read()
            for m in INCLUDE.finditer(text):
                need.append((os.path.join(os.path.dirname(rs), m.group(1)), f"include_str!/include_bytes! in {rs}"))
            for m in INCLUDE_MANIFEST.finditer(text):
                need.append((member + m.group(1), f"include_str!/include_bytes! in {rs}"))
            for m in MIGRATE.finditer(text):
                mig_dir = os.path.join(member, m.group(1) or "migrations")
                found = files_under(mig_dir, universe)
                if not found:
                    need.append((mig_dir, f"migrate! in {rs} (no tracked migrations found)"))
                need += [(f, f"migrate! in {rs}") for f in sorted(found)]
            need += manifest_dir_reads(member, rs, text, universe)
            for m in QUERY_FILE.finditer(text):
                need.append((os.path.join(member, m.group(1)), f"query_file! in {rs}"))
            uses_query_macros |= QUERY_MACRO.search(text) is not None
            if os.path.basename(rs) == "build.rs":
                for m in RERUN.finditer(text):
                    need.append((os.path.join(member, m.group(1)), f"rerun-if-changed in {rs}"))
        if uses_query_macros:
            sqlx = [d for d in (os.path.join(member, ".sqlx"), ".sqlx") if files_under(d, universe)]
            if not sqlx:
                need.append((".sqlx", f"sqlx query macros in {member} (offline build needs cargo sqlx prepare data)"))
            for d in sqlx[:1]:
                need += [(f, f"sqlx offline data for {member}") for f in sorted(files_under(d, universe))]
    return [(os.path.normpath(p), why) for p, why in need]


def dep_info_files(paths):
    """Repository files listed in cargo dep-info (.d) files: what rustc actually read."""
    need = []
    for d in paths:
        text = open(d).read().replace("\\\n", " ")
        for line in text.splitlines():
            if ":" not in line or line.startswith("#"):
                continue
            deps = re.split(r"(?<!\\) ", line.split(": ", 1)[1] if ": " in line else "")
            for dep in filter(None, (x.replace("\\ ", " ") for x in deps)):
                dep = os.path.realpath(dep)
                rel = os.path.relpath(dep, ROOT)
                if rel.startswith("..") or rel.startswith("target/") or "/target/" in rel:
                    continue
                need.append((rel, f"read by rustc ({os.path.basename(d)})"))
    return need


def check_source_filter(dep_infos):
    spec = nix_eval("(import ./nix/source.nix).spec")
    tracked = git_files()
    need = required_files(tracked | untracked())
    if dep_infos:
        need += dep_info_files(dep_infos)
    bad = 0
    for path, why in sorted(set(need)):
        if not os.path.exists(path):
            bad += 1
            fail(f"{path}: needed ({why}) but missing")
        elif not in_filter(path, spec):
            bad += 1
            fail(f"{path}: needed ({why}) but outside the crane source filter (nix/source.nix)")
        elif path not in tracked:
            bad += 1
            fail(f"{path}: needed ({why}) but not tracked by git, so a flake build cannot see it")
    if not bad:
        kept = sum(in_filter(f, spec) for f in tracked)
        src = f" and {len(dep_infos)} dep-info file(s)" if dep_infos else ""
        ok(f"all {len(set(need))} files the build and tests need (sources, includes, migrations, run-time "
           f"reads under CARGO_MANIFEST_DIR{src}) are in the "
           f"filter, which keeps {kept} of {len(tracked)} tracked files")


def filter_files(spec):
    """The tracked files the Nix source (mkSource's `src`) holds: a flake sees git's files only."""
    return sorted(f for f in git_files() if in_filter(f, spec) and os.path.isfile(f))


def materialize(dest):
    """Copy exactly the files the crane source filter selects into the empty directory DEST, so
    the test suite can run on what `nix flake check`'s nextest check sees."""
    if os.path.exists(dest) and (not os.path.isdir(dest) or os.listdir(dest)):
        sys.exit(f"materialize: {dest} must be an empty directory or not exist")
    spec = nix_eval("(import ./nix/source.nix).spec")
    files = filter_files(spec)
    if not files:
        sys.exit("materialize: the source filter selects no files")
    for f in files:
        os.makedirs(os.path.join(dest, os.path.dirname(f)), exist_ok=True)
        shutil.copy2(f, os.path.join(dest, f))  # keeps the mode, as the Nix store copy does
    ok(f"copied the {len(files)} files the crane source filter selects (of {len(git_files())} tracked) to {dest}")


# ---------------------------------------------------------------------------- crane model
def crane_model(arch="x86_64"):
    """Evaluate our Nix files against nix/crane-model.nix (an imitation of crane, nixpkgs and
    rust-overlay; see its header and docs/pipeline.md) for a build machine of this CPU."""
    db = os.path.join(os.path.dirname(PINS), "advisory-db")
    out = subprocess.run(["nix-instantiate", "--eval", "--strict", "--json", "nix/crane-model.nix",
                          "--argstr", "advisoryDb", db, "--argstr", "arch", arch], capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"nix/crane-model.nix does not evaluate our Nix files:\n{out.stderr.strip()}")
        return None
    return json.loads(out.stdout)


def check_placeholders():
    model = crane_model()
    if model is None:
        return
    bad = [c for c in model["calls"] if c["placeholders"] or c["nameError"]]
    for c in bad:
        what = c["nameError"] or f"no {' and no '.join(c['placeholders'])}"
        fail(f"{c['name']}: craneLib.{c['builder']} gets {what}: crane warns \"will use a placeholder value\" "
             f"(an error under abort-on-warn); pass pname/version or a src whose Cargo.toml has them")
    if not bad:
        ok(f"all {len(model['calls'])} crane builder calls get pname and version "
           f"({', '.join(sorted({c['builder'] for c in model['calls']}))})")


def check_static_toolchain():
    for arch in ("x86_64", "aarch64"):
        model = crane_model(arch)
        if model is not None:
            static_toolchain(arch, model["static"])


def static_toolchain(arch, st):
    target = st["buildTarget"]
    checks = [
        (st["rustOverlay"], f"the static package's Rust toolchain is rust-overlay's prebuilt one, not "
                            f"nixpkgs' (pkgsStatic's rustc is compiled from source on every cold build): {st['toolchain']}"),
        (st["dependencyBuild"]["toolchain"] == st["toolchain"],
         f"its dependency build uses the same toolchain: {st['dependencyBuild']['toolchain']}"),
        (target == st["want"] and target in st["toolchainTargets"],
         f"CARGO_BUILD_TARGET is the build machine's musl target and the toolchain has it: {target} in "
         f"{st['toolchainTargets']}"),
        (st["dependencyBuild"]["buildTarget"] == target, "the dependency build has the same CARGO_BUILD_TARGET"),
        ("+crt-static" in (st["rustflags"] or ""), f"CARGO_BUILD_RUSTFLAGS has +crt-static: {st['rustflags']}"),
        (bool(st["cc"]) and "musl" in st["cc"] and st["linker"] == st["cc"],
         f"C code and the link use a musl C compiler: CC {st['cc']}, linker {st['linker']}"),
    ]
    for good, what in checks:
        (ok if good else fail)(f"static build on {arch}-linux: {what}")


def check_audit():
    """Run the real cargo-audit with exactly the command crane's cargoAudit would run for our
    `cargo-audit` check, on the advisory-db snapshot the flake locks."""
    model = crane_model()
    if model is None:
        return
    db = os.path.join(os.path.dirname(PINS), "advisory-db")
    locked = json.load(open("flake.lock"))["nodes"].get("advisory-db", {}).get("locked", {}).get("rev")
    try:
        snapshot = open(os.path.join(db, "SNAPSHOT")).read().split()[0]
    except (OSError, IndexError):
        snapshot = None
    if snapshot != locked:
        fail(f"{db} is snapshot {snapshot}, but flake.lock locks advisory-db {locked}: the audit here would "
             f"not test what the flake audits")
        return
    ok(f"advisory-db snapshot {snapshot[:12]} is the revision flake.lock locks")
    if not model["audit"]:
        fail("the flake has no cargoAudit check")
    for a in model["audit"]:
        # crane's cargoAudit keeps only the Cargo.lock and audit.toml files of the check's source.
        spec = nix_eval("(import ./nix/source.nix).spec")
        keep = [f for f in filter_files(spec) if os.path.basename(f) in ("Cargo.lock", "audit.toml")]
        with tempfile.TemporaryDirectory(prefix="shipshape-audit.") as work:
            for f in keep:
                os.makedirs(os.path.join(work, os.path.dirname(f)), exist_ok=True)
                shutil.copy2(f, os.path.join(work, f))
            print(f"  $ {a['command']}")
            run = subprocess.run(["bash", "-c", a["command"]], cwd=work, capture_output=True, text=True)
            lines = [x for x in (run.stdout + run.stderr).splitlines() if x.strip()]
            print("\n".join(f"    {x}" for x in lines[-12:]))
            if run.returncode == 0:
                ok(f"{a['name']}: cargo-audit passes with the flake's arguments")
            else:
                fail(f"{a['name']}: cargo-audit fails with the flake's arguments (exit {run.returncode}); the flake "
                     f"takes them from nix/audit.nix, i.e. deny.toml's [advisories] ignore")


TOOL_KEYS = {"nixpkgs", "apt", "pip", "venv", "cargo", "version", "optional", "note"}


def check_devshell():
    """.ci/tools.toml is well-formed, and nix/shell.nix puts exactly its nixpkgs attributes (plus
    the formatter) into the dev shell: shell.nix evaluated with stand-ins for pkgs and crane."""
    with open(".ci/tools.toml", "rb") as f:
        tools = tomllib.load(f)["tools"]
    for cmd, t in sorted(tools.items()):
        unknown = set(t) - TOOL_KEYS
        if unknown:
            fail(f".ci/tools.toml [tools.{cmd}]: unknown keys {sorted(unknown)}")
        if not {"nixpkgs", "apt", "pip", "cargo"} & set(t):
            fail(f".ci/tools.toml [tools.{cmd}]: neither nixpkgs nor apt, pip or cargo")
        if len({"apt", "pip", "cargo"} & set(t)) > 1:
            fail(f".ci/tools.toml [tools.{cmd}]: more than one of apt, pip, cargo (ensure uses one)")
        if "version" in t and "cargo" not in t:
            fail(f".ci/tools.toml [tools.{cmd}]: version is for cargo (pip pins go in the requirement)")
    attrs = sorted({t["nixpkgs"] for t in tools.values() if "nixpkgs" in t})
    stub = {"stdenv": {"hostPlatform": {}}}
    for a in attrs:
        d = stub
        parts = a.split(".")
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = {"attr": a}
    expr = ("let shell = import ./nix/shell.nix { lib.meta.availableOn = _: _: true; craneLib.devShell = a: a;"
            f" formatter.attr = \"formatter\"; pkgs = builtins.fromJSON {json.dumps(json.dumps(stub))}; }};"
            " in map (p: p.attr) shell.packages")
    try:
        got = nix_eval(expr)
    except subprocess.CalledProcessError as e:
        fail(f"nix/shell.nix does not evaluate with stand-ins for pkgs and crane:\n{e.stderr.strip()}")
        return
    want = sorted(attrs + ["formatter"])
    if sorted(got) != want:
        fail(f"nix/shell.nix packages {sorted(got)} are not .ci/tools.toml's nixpkgs attributes + formatter {want}")
    elif not failures:
        ok(f".ci/tools.toml: {len(tools)} tools; the dev shell has its {len(attrs)} nixpkgs attributes and the formatter")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    if sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return
    cmd, args = sys.argv[1], sys.argv[2:]
    {"lock": check_lock, "paths": check_paths, "contract": check_contract,
     "image-config": lambda: check_image_config(*args),
     "source-filter": lambda: check_source_filter(args),
     "materialize": lambda: materialize(*args),
     "placeholders": check_placeholders, "static-toolchain": check_static_toolchain,
     "audit": check_audit, "devshell": check_devshell}[cmd]()
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
