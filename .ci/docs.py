#!/usr/bin/env python3
"""Execute the documentation: every shell command in README.md and docs/*.md.

    python3 .ci/docs.py --bin target/debug/shipshape [FILE.md ...]

Reads the fenced ```sh, ```bash, ```shell and ```console blocks of the Markdown itself (in a
console block only `$ ` lines are commands). A command is one line, or several joined by a
trailing backslash. Each command is either RUN here or CHECKED statically:

RUN (in a private network namespace made by .ci/docs.sh, so localhost:8080 is ours): commands
made only of curl, variable assignments/export, small shell utilities (head, base64, echo, ...)
and the service itself (`cargo run ... -p shipshape [-- ARGS]`, `shipshape ARGS`). `cargo run`
is not compiled again: a shell function runs the once-built binary given with --bin (the debug
build of the rust stage; no release build is made for this). Commands of one file share one
shell state (variables and exports carry over, like one terminal) and one working directory (a
fresh temp dir with links to the repository's top-level entries, so ./data/ is throwaway).
  - A command that starts the server (no subcommand, or `serve`; trailing `&` or not) runs in
    the background; the check waits for 200 on /readyz (the port from SHIPSHAPE_HTTP__LISTEN,
    else 8080). It replaces the previous server. Every server is stopped at the end of its
    file, and on failure or interruption.
  - Other commands must exit 0. For curl, the status and headers of the response are captured
    (curl is a shell function adding `-D FILE`; the command line is not changed) and checked:
    by default the status must be 2xx/3xx.
  - `<name>` placeholders (`<id>`, `<next_cursor>`) are replaced by the last value of the JSON
    key `name` printed by an earlier command of the same file; `<token>` also matches a JWT
    printed by a server. A placeholder with no value fails.

CHECKED statically (cannot run here: no Nix store, no cluster, no Docker; or run by another
stage: .ci/run, bench/, cargo deny/audit, semgrep):
  - nix: the installable exists among the flake's outputs, parsed from flake.nix, nix/default.nix
    and nix/checks.nix (`nix run`/`build`/`develop`/`path-info`/`flake check`/`fmt`); for
    `nix run ... -- ARGS` the service's subcommand and flags; `nix develop -c CMD` checks CMD.
  - kubectl: `apply -k DIR`/`kustomize DIR`/`diff -k DIR` render with `kubectl kustomize`; any
    other subcommand and every --flag must exist (`kubectl SUB --help`).
  - docker/podman run: the service subcommand and flags after the image name.
  - repository scripts (.ci/, bench/, .github/scripts/): the file exists and is executable, and
    every --flag used appears in it or in a script beside it.
  - every argument whose first path component exists at the repository root (kustomize/...,
    .semgrep/, deny.toml, ../shared/ as SHIPSHAPE_SHARED_DIR) must exist; `cd DIR` must exist.
  - any other program must be a known tool that is not installed here (docker, minikube, ...)
    or be on PATH.

Expectations are written next to the block as HTML comments (invisible when rendered), put on
the lines just before the opening fence:
    <!-- docs-check: expect 201 location etag | 200 | 304 | 204 -->
        one entry per curl command of the block, in order, separated by `|`: a status code
        (or 2xx/4xx), header names that must be present, `header=text` for a header that must
        contain text. The number of entries must equal the number of curl commands.
    <!-- docs-check: name NAME -->      names this block (for `server`)
    <!-- docs-check: server NAME -->    (re)start the server command of block NAME first
    <!-- docs-check: seed N -->         create N items (tag kitchen, name "... cup") first,
                                        so that pages and cursors have something to show
Exit status 1 if any command fails; each command prints one PASS/STATIC/FAIL line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench" / "lib"))
import harness  # noqa: E402  (the Python glue's one readiness wait)

SHARED = Path(os.environ.get("SHIPSHAPE_SHARED_DIR") or REPO.parent / "shared")
LANGS = {"sh", "bash", "shell", "console"}
# Programs that may appear in a command that runs here.
LIVE = {"curl", "export", "head", "base64", "echo", "printf", "sleep", "jq", "kill", "wait",
        "true", "cargo", "shipshape", "openssl", "cat", "grep", "tr", "python3", "unset",
        "umask"}
# Known tools this machine does not have (checked statically, never run).
ABSENT = {"docker", "podman", "minikube", "kustomize", "nix", "cachix", "trivy", "cosign",
          "gh", "helm", "kind"}
# Programs run by other stages of .ci/run; here their arguments are checked, they are not run.
ELSEWHERE = {"semgrep", "git", "sed", "mktemp", "cp", "chmod", "rm", "wc", "ls", "tee", "zizmor"}
SHELL_UTIL = {"cd", "export", "unset", "true"}
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w-]*)")
DIRECTIVE = re.compile(r"<!--\s*docs-check:\s*(\w+)\s*(.*?)\s*-->")
PLACEHOLDER = re.compile(r"<([A-Za-z_][A-Za-z0-9_]*)>")
JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


class Fail(Exception):
    pass


# ---------------------------------------------------------------- Markdown and shell parsing

class Block:
    def __init__(self, path, line, lang, body, directives):
        self.path, self.line, self.lang, self.body = path, line, lang, body
        self.directives = directives  # list of (key, value)

    def directive(self, key):
        return [v for k, v in self.directives if k == key]

    def commands(self):
        """(line number, command text) for each command; continuation lines joined."""
        out, cur, start = [], "", None
        for i, raw in enumerate(self.body):
            line = raw
            if self.lang == "console":
                if cur == "":
                    if not line.lstrip().startswith("$ "):
                        continue
                    line = line.lstrip()[2:]
            if cur == "" and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if start is None:
                start = self.line + 1 + i
            text = strip_comment(line)
            if text.rstrip().endswith("\\"):
                cur += text.rstrip()[:-1] + " "
                continue
            cur += text
            out.append((start, cur.strip()))
            cur, start = "", None
        if cur.strip():
            out.append((start, cur.strip()))
        return out


def blocks_of(path):
    lines = path.read_text().split("\n")
    found, pending, i = [], [], 0
    while i < len(lines):
        line = lines[i]
        m = FENCE.match(line)
        if m:
            fence, lang = m.group(2), m.group(3).lower()
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith(fence[:3]):
                j += 1
            if lang in LANGS:
                found.append(Block(path, i + 1, lang, lines[i + 1:j], pending))
            pending, i = [], j + 1
            continue
        for d in DIRECTIVE.finditer(line):
            pending.append((d.group(1), d.group(2)))
        if line.strip() and not DIRECTIVE.search(line):
            pending = []
        i += 1
    return found


def strip_comment(line):
    """Drops a trailing `# comment` that is outside quotes and starts a word."""
    q, prev = None, " "
    for i, c in enumerate(line):
        if q:
            if c == q:
                q = None
            elif c == "\\" and q == '"':
                pass
        elif c in "'\"":
            q = c
        elif c == "#" and prev in " \t":
            return line[:i].rstrip()
        prev = c
    return line


def split_simple(cmd):
    """Top-level simple commands of a command line, plus those inside $( ) and <( ).

    Returns (list of simple command strings, list of operators between them)."""
    parts, ops, cur, i, q = [], [], "", 0, None
    nested = []
    while i < len(cmd):
        c = cmd[i]
        if q:
            cur += c
            if c == q:
                q = None
            elif c == "\\" and q == '"' and i + 1 < len(cmd):
                cur += cmd[i + 1]
                i += 1
            elif q == '"' and cmd.startswith("$(", i):
                inner, end = matching(cmd, i + 1)
                nested.append(inner)
                cur += cmd[i + 1:end + 1]
                i = end
        elif c in "'\"":
            q = c
            cur += c
        elif cmd.startswith("$(", i) or cmd.startswith("<(", i):
            inner, end = matching(cmd, i + 1)
            nested.append(inner)
            cur += cmd[i:end + 1]
            i = end
        elif c == "(" and not cur.strip():
            _, end = matching(cmd, i)  # a subshell group stays one part
            cur += cmd[i:end + 1]
            i = end
        elif cmd.startswith("&&", i) or cmd.startswith("||", i):
            parts.append(cur)
            ops.append(cmd[i:i + 2])
            cur = ""
            i += 1
        elif c in "|;&" and not cmd.startswith(">&", i - 1):
            parts.append(cur)
            ops.append(c)
            cur = ""
        else:
            cur += c
        i += 1
    parts.append(cur)
    out = []
    for p in (p.strip() for p in parts):
        if p.startswith("(") and p.endswith(")"):
            out += split_simple(p[1:-1])[0]  # a subshell: its commands
        elif p:
            out.append(p)
    for n in nested:
        out += split_simple(n)[0]
    return out, ops


def matching(cmd, open_at):
    depth, i, q = 0, open_at, None
    while i < len(cmd):
        c = cmd[i]
        if q:
            if c == q:
                q = None
        elif c in "'\"":
            q = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return cmd[open_at + 1:i], i
        i += 1
    raise Fail(f"unbalanced parentheses in: {cmd}")


def hide_substitutions(text):
    """Replaces each $( ) and <( ) outside single quotes by a marker; returns (text, originals)."""
    out, saved, i, q = "", [], 0, None
    while i < len(text):
        c = text[i]
        if q == "'":
            q = None if c == "'" else q
        elif c == "'" and q is None:
            q = "'"
        elif c == '"':
            q = None if q == '"' else '"'
        if q != "'" and (text.startswith("$(", i) or text.startswith("<(", i)):
            _, end = matching(text, i + 1)
            saved.append(text[i:end + 1])
            out += f"\x00{len(saved) - 1}\x00"
            i = end + 1
            continue
        out += c
        i += 1
    return out, saved


def words(simple):
    """Shell words of a simple command (quotes removed, substitutions kept as text)."""
    import shlex
    simple, saved = hide_substitutions(simple)
    toks = _words(simple)
    return [re.sub("\x00(\\d+)\x00", lambda m: saved[int(m.group(1))], t) for t in toks]


def _words(simple):
    import shlex
    lex = shlex.shlex(simple, posix=True, punctuation_chars="<>")
    lex.whitespace_split = True
    lex.commenters = ""
    try:
        toks = list(lex)
    except ValueError as e:
        raise Fail(f"cannot parse `{simple}`: {e}")
    out, skip = [], False
    for t in toks:
        if skip:
            skip = False
            continue
        if t and set(t) <= set("<>&0123456789") and (">" in t or "<" in t):
            skip = True  # a redirection and its target
            continue
        out.append(t)
    return out


def program(ws):
    """(program, args) after leading VAR=value assignments; program None for pure assignments."""
    i = 0
    while i < len(ws) and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", ws[i]):
        i += 1
    if i == len(ws):
        return None, []
    return ws[i], ws[i + 1:]


def assignments(ws):
    env = {}
    for w in ws:
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", w)
        if not m:
            break
        env[m.group(1)] = m.group(2)
    return env


# ---------------------------------------------------------------- the service's command line

class Cli:
    def __init__(self, binary):
        self.binary = binary
        self.helps = {}

    def help(self, sub):
        if sub not in self.helps:
            args = [self.binary] + ([sub] if sub else []) + ["--help"]
            r = subprocess.run(args, capture_output=True, text=True, timeout=20,
                               env=clean_env(os.environ))
            self.helps[sub] = r.stdout if r.returncode == 0 else None
        return self.helps[sub]

    def subcommands(self):
        text = self.help("") or ""
        m = re.search(r"Commands:\n((?:  .*\n)+)", text)
        return {ln.split()[0] for ln in m.group(1).splitlines()} if m else set()

    def check(self, args):
        """Raises Fail unless ARGS name an existing subcommand and only its flags."""
        sub, flags = "", []
        for a in args:
            if a.startswith("-"):
                flags.append(a.split("=", 1)[0])
            elif not sub and not flags:
                sub = a
        if sub and sub not in self.subcommands():
            raise Fail(f"`shipshape {sub}`: no such subcommand (have {sorted(self.subcommands())})")
        text = (self.help(sub) or "") + (self.help("") or "")
        for f in flags:
            if f in ("-h", "--help", "-V", "--version"):
                continue
            if not re.search(r"(?<![\w-])" + re.escape(f) + r"(?![\w-])", text):
                raise Fail(f"`shipshape {sub or '(serve)'}`: no flag {f}")
        return sub or "serve"

    @staticmethod
    def cargo_run_args(args):
        """ARGS of `cargo run [opts] -p shipshape [-- ARGS]`, or None if not that."""
        if not args or args[0] != "run":
            return None
        i, pkg = 1, None
        while i < len(args):
            a = args[i]
            if a == "--":
                return args[i + 1:] if pkg == "shipshape" else None
            if a in ("-p", "--package", "--bin"):
                pkg = args[i + 1] if i + 1 < len(args) else None
                i += 2
                continue
            if a.startswith("-"):
                i += 1
                continue
            break
        return [] if pkg == "shipshape" else None


# ---------------------------------------------------------------- flake outputs (text parse)

def nix_strip(text):
    """Nix source with comments and string contents blanked (structure kept)."""
    out, i, n = [], 0, len(text)
    while i < n:
        if text[i] == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif text.startswith("/*", i):
            i = text.index("*/", i) + 2
        elif text.startswith("''", i):
            j = i + 2
            while j < n:
                if text.startswith("'''", j) or text.startswith("''$", j):
                    j += 3  # escaped '' or $
                elif text.startswith("''\\", j):
                    j += 4  # ''\n and friends
                elif text.startswith("''", j):
                    break
                else:
                    j += 1
            out.append('""')
            i = j + 2
        elif text[i] == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""')
            i = j + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def attrs_at(src, pos):
    """Attribute names bound directly in the attribute sets of the expression at src[pos:]
    (up to its terminating `;`), e.g. `{ a = 1; inherit b c; } // f { d = 2; }`."""
    names, depth, i, start_stmt = set(), 0, pos, None
    while i < len(src):
        c = src[i]
        if c in "{[(":
            depth += 1
            if c == "{" and depth == 1:
                start_stmt = i + 1
        elif c in "}])":
            depth -= 1
            if depth < 0:
                break
        elif c == ";" and depth == 0:
            break
        elif c == ";" and depth == 1 and start_stmt is not None:
            stmt = src[start_stmt:i].strip()
            m = re.match(r"^inherit\s*(?:\([^)]*\))?\s*(.*)$", stmt, re.S)
            if m:
                names |= set(m.group(1).split())
            else:
                m = re.match(r"^([\w.-]+)\s*=", stmt)
                if m:
                    names.add(m.group(1).split(".")[0] if "." not in m.group(1) else m.group(1))
            start_stmt = i + 1
        elif c == "{" and depth == 1:
            start_stmt = i + 1
        if c in "{[(" and depth > 1:
            pass
        i += 1
    return names


def binding(src, name):
    """Position just after `name =` at the outermost attribute level that binds it."""
    for m in re.finditer(r"(?<![\w.-])" + re.escape(name) + r"\s*=(?!=)", src):
        return m.end()
    return None


def flake_outputs():
    """{kind: set(names)} for packages, apps, devShells, checks, formatter."""
    flake = nix_strip((REPO / "flake.nix").read_text())
    tail = flake[flake.rindex(" in {") + 3:] if " in {" in flake else flake
    kinds = attrs_at(tail, 0)
    nixdir = REPO / "nix" / "default.nix"
    per = nix_strip(nixdir.read_text()) if nixdir.exists() else ""
    body = per[per.rindex("in {") + 3:] if "in {" in per else per
    out = {k: set() for k in kinds}
    if "packages" in kinds and binding(body, "packages") is not None:
        out["packages"] = attrs_at(body, binding(body, "packages"))
    out["apps"] = {m.group(1) for m in re.finditer(r"\bapps\.([\w-]+)\s*=", body)}
    if binding(body, "apps") is not None:
        out["apps"] |= attrs_at(body, binding(body, "apps"))
    if "devShells" in kinds:
        pos = binding(tail, "devShells")
        out["devShells"] = attrs_at(tail, tail.index("{", pos)) if pos else {"default"}
    checks = REPO / "nix" / "checks.nix"
    if "checks" in kinds and checks.exists():
        c = nix_strip(checks.read_text())
        c_body = c[c.rindex("in {") + 3:] if "in {" in c else c[c.index("{"):]
        out["checks"] = attrs_at(c_body, 0)
    if "formatter" in kinds:
        out["formatter"] = {"default"}
    return out


def check_installable(sub, inst, outputs):
    if inst in (".", "", None):
        attr = None
    elif inst.startswith(".#"):
        attr = inst[2:]
    elif inst.startswith("#"):
        attr = inst[1:]
    else:
        raise Fail(f"installable {inst}: only this flake (`.`, `.#attr`) can be checked")
    if attr and "." in attr:
        kind, *rest = attr.split(".")
        name = rest[-1]
        if kind not in outputs or name not in outputs[kind]:
            raise Fail(f"flake has no output {attr} (have {kind}: {sorted(outputs.get(kind, []))})")
        return f"{kind}.{name}"
    want = {"run": ["apps", "packages"], "develop": ["devShells", "packages"],
            "shell": ["packages"]}.get(sub, ["packages"])
    name = attr or "default"
    for kind in want:
        if name in outputs.get(kind, set()):
            return f"{kind}.{name}"
    raise Fail(f"`nix {sub} {inst or ''}`: flake has no {' or '.join(want)}.<system>.{name} "
               f"(packages: {sorted(outputs.get('packages', []))})")


# ---------------------------------------------------------------- static checks

class Static:
    def __init__(self, cli, outputs):
        self.cli, self.outputs = cli, outputs
        self.kube_rendered = {}

    def path(self, word, cwd):
        """Checks a word that names a repository path; returns a note or None."""
        if not word or word.startswith("-") or any(c in word for c in "$*=@:"):
            return None
        if "/" not in word and not re.search(r"\.(toml|lock|ya?ml|json|md|sh|py|nix|rs)$", word):
            return None  # a plain word (a name, a subcommand), not a path
        if word.startswith("../shared"):
            p = SHARED / word[len("../shared/"):] if word != "../shared" else SHARED
        else:
            p = (cwd / word)
            first = Path(os.path.normpath(cwd / word)).relative_to(REPO).parts[:1] \
                if os.path.normpath(cwd / word).startswith(str(REPO) + os.sep) else ()
            if not first or first[0] in ("result", "data", "target"):
                return None
            if not (REPO / first[0]).exists():
                return None
        if not p.exists():
            raise Fail(f"no such path: {word}")
        return word

    def kustomize(self, d, cwd):
        p = (cwd / d).resolve()
        if p not in self.kube_rendered:
            r = subprocess.run(["kubectl", "kustomize", str(p)], capture_output=True, text=True,
                               timeout=60)
            if r.returncode != 0:
                raise Fail(f"kubectl kustomize {d}: {r.stderr.strip()[:300]}")
            self.kube_rendered[p] = r.stdout.count("\nkind: ") + r.stdout.startswith("kind: ")
        return f"{d} renders ({self.kube_rendered[p]} objects)"

    def kubectl(self, args, cwd):
        rest, i = [], 0
        while i < len(args):
            a = args[i]
            if a in ("-n", "--namespace", "--context", "--kubeconfig"):
                i += 2
                continue
            rest.append(a)
            i += 1
        notes = []
        if rest[:1] in (["apply"], ["diff"], ["delete"]) and "-k" in rest:
            notes.append(self.kustomize(rest[rest.index("-k") + 1], cwd))
        if rest[:1] == ["kustomize"]:
            return [self.kustomize(rest[1] if len(rest) > 1 else ".", cwd)]
        lead = []
        for w in rest:
            if w.startswith("-"):
                break
            lead.append(w)
        helptext, sub = None, []
        for n in range(min(3, len(lead)), 0, -1):
            r = subprocess.run(["kubectl", *lead[:n], "--help"], capture_output=True, text=True,
                               timeout=20)
            usage = re.search(r"Usage:\s*\n\s*(.*)", r.stdout)
            if r.returncode == 0 and usage and usage.group(1).startswith(
                    "kubectl " + " ".join(lead[:n])):
                helptext, sub = r.stdout, lead[:n]
                break
        if helptext is None:
            raise Fail(f"kubectl has no subcommand `{' '.join(lead[:2])}`")
        avail = re.search(r"Available Commands:\n((?:  .*\n)+)", helptext)
        if avail and len(lead) > len(sub):
            names = {ln.split()[0] for ln in avail.group(1).splitlines() if ln.strip()}
            if lead[len(sub)] not in names:
                raise Fail(f"kubectl {' '.join(sub)} has no subcommand `{lead[len(sub)]}`")
        for a in rest:
            if a.startswith("--"):
                f = a.split("=", 1)[0]
                if f not in helptext and f not in kubectl_global_flags():
                    raise Fail(f"kubectl {' '.join(sub)}: no flag {f}")
        notes.append(f"kubectl {' '.join(sub)} and its flags exist")
        return notes

    def nix(self, args, cwd, check_simple):
        sub = args[0] if args else ""
        if sub == "flake":
            action = args[1] if len(args) > 1 else ""
            if action not in ("check", "update", "show", "lock", "metadata", "info"):
                raise Fail(f"nix flake {action}: not a nix flake command")
            extra = [a for a in args[2:] if not a.startswith("-")]
            if action == "update":
                for inp in extra:
                    if not re.search(r"\b" + re.escape(inp) + r"(\.url)?\s*=",
                                     (REPO / "flake.nix").read_text()):
                        raise Fail(f"nix flake update {inp}: flake.nix has no input {inp}")
            return [f"nix flake {action}: flake.nix, flake.lock present"]
        if sub == "fmt":
            if "formatter" not in self.outputs:
                raise Fail("nix fmt: the flake has no formatter output")
            return ["flake has a formatter"]
        if sub in ("run", "build", "develop", "shell", "path-info", "eval", "log"):
            rest = args[1:]
            inner = None
            if sub in ("develop", "shell") and ("-c" in rest or "--command" in rest):
                k = rest.index("-c") if "-c" in rest else rest.index("--command")
                inner, rest = rest[k + 1:], rest[:k]
            after = None
            if "--" in rest:
                k = rest.index("--")
                after, rest = rest[k + 1:], rest[:k]
            notes = []
            if "--inputs-from" in rest:
                # `--inputs-from . nixpkgs#X`: X from this flake's locked input of that name.
                k = rest.index("--inputs-from")
                if rest[k + 1:k + 2] != ["."]:
                    raise Fail("--inputs-from: only this flake (`.`) can be checked")
                rest = rest[:k] + rest[k + 2:]
                for i in [a for a in rest if "#" in a and not a.startswith((".", "#"))]:
                    inp = i.split("#", 1)[0]
                    if not re.search(r"\b" + re.escape(inp) + r"(\.url)?\s*=",
                                     (REPO / "flake.nix").read_text()):
                        raise Fail(f"{i}: flake.nix has no input {inp}")
                    notes.append(f"{i}: {inp} is an input of this flake (the package is not "
                                 "checked here)")
                    rest.remove(i)
            insts = [a for a in rest if not a.startswith("-")] or ([None] if not notes else [])
            notes += [f"flake output {check_installable(sub, i, self.outputs)}" for i in insts]
            if sub == "run" and after is not None:
                notes.append(f"shipshape {self.cli.check(after)} and its flags exist")
            if inner and sub == "shell":
                # The command comes from the packages the shell adds: it must be one of them.
                pkgs = {i.split("#", 1)[1].split(".")[-1] for i in args[1:] if "#" in i}
                if inner[0] not in pkgs:
                    raise Fail(f"nix shell --command {inner[0]}: not a package it adds ({sorted(pkgs)})")
                notes.append(f"{inner[0]} comes from the shell's packages")
            elif inner:
                notes += check_simple(" ".join(shell_quote(w) for w in inner), cwd)
            return notes
        raise Fail(f"nix {sub}: not checked (unknown nix command)")

    def container(self, prog, args):
        takes_value = {"-p", "-e", "-v", "-u", "-w", "--name", "--network", "--user", "--env",
                       "--volume", "--publish", "--entrypoint", "--workdir", "--mount",
                       "--env-file", "--platform", "--storage-driver", "--runtime",
                       "--security-opt", "--cap-drop", "--cap-add", "--tmpfs"}
        if not args or args[0] != "run":
            return [f"{prog} {args[0] if args else ''}: not available here, nothing to check"]
        i = 1
        while i < len(args) and args[i].startswith("-"):
            i += 2 if args[i] in takes_value else 1
        if i >= len(args):
            raise Fail(f"{prog} run: no image named")
        image, rest = args[i], args[i + 1:]
        if not image.startswith("shipshape"):
            return [f"{prog} run {image}: not our image"]
        # Arguments after the image follow the image's Entrypoint (`/bin/shipshape serve`).
        entry = json.loads((REPO / "nix/image-contract.json").read_text())["config"]["Entrypoint"]
        sub = self.cli.check(entry[1:] + rest)
        return [f"{prog} run {image}: Entrypoint {' '.join(entry)}; shipshape {sub} and its flags exist"]

    def script(self, prog, args, cwd):
        p = (cwd / prog).resolve()
        if not p.is_file():
            raise Fail(f"no such script: {prog}")
        if not os.access(p, os.X_OK):
            raise Fail(f"{prog} is not executable")
        texts = p.read_text(errors="replace")
        for sib in p.parent.iterdir():
            if sib.suffix in (".py", ".sh") and sib != p:
                texts += sib.read_text(errors="replace")
        for a in args:
            if a.startswith("--"):
                f = a.split("=", 1)[0]
                if f not in texts:
                    raise Fail(f"{prog}: no option {f} in the script")
        return [f"{prog} exists, executable, options found in it"]


def kubectl_global_flags():
    if not hasattr(kubectl_global_flags, "text"):
        kubectl_global_flags.text = subprocess.run(["kubectl", "options"], capture_output=True,
                                                   text=True, timeout=20).stdout
    return kubectl_global_flags.text


def shell_quote(w):
    import shlex
    return shlex.quote(w)


# ---------------------------------------------------------------- running commands

def clean_env(base):
    """The caller's environment without service configuration (a developer's own settings
    must not change what the docs show)."""
    env = {}
    for k, v in base.items():
        if k.startswith("SHIPSHAPE_") and ("__" in k or k == "SHIPSHAPE_CONFIG"):
            continue
        if k.startswith("OTEL_"):
            continue
        env[k] = v
    return env


PRELUDE = r"""
set +e
[ -f "$DOCS_STATE" ] && source "$DOCS_STATE"
cargo() {
  if [ "$1" != run ]; then echo "docs-check: only 'cargo run -p shipshape' runs here" >&2; return 97; fi
  shift
  local pkg=""
  while [ $# -gt 0 ]; do
    case $1 in
      --) shift; break ;;
      -p|--package|--bin) pkg=$2; shift 2 ;;
      -*) shift ;;
      *) break ;;
    esac
  done
  if [ "$pkg" != shipshape ]; then echo "docs-check: cargo run of '$pkg' is not run here" >&2; return 97; fi
  "$DOCS_BIN" "$@"
}
shipshape() { "$DOCS_BIN" "$@"; }
curl() { command curl --max-time 20 -D "$DOCS_HDR" "$@"; }
"""

SAVE = r"""
__rc=$?
for __v in $(compgen -v); do
  case " $DOCS_BASE_VARS " in *" $__v "*) continue ;; esac
  case $__v in __*|DOCS_*|BASH*|FUNCNAME|PIPESTATUS|_) continue ;; esac
  declare -p "$__v" 2>/dev/null
done > "$DOCS_STATE.new" && mv "$DOCS_STATE.new" "$DOCS_STATE"
pwd > "$DOCS_STATE.cwd"
exit $__rc
"""


class Session:
    """One file's terminal: shell state, working dir, server, outputs seen."""

    def __init__(self, binary, tmp, name):
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix=name + ".", dir=tmp))
        self.work = self.dir / "work"
        self.work.mkdir()
        for entry in REPO.iterdir():
            if entry.name not in ("data", ".git", "result"):
                (self.work / entry.name).symlink_to(entry)
        self.state = self.dir / "state.sh"
        self.hdr = self.dir / "headers"
        self.env = clean_env(os.environ)
        self.env.update(DOCS_BIN=str(binary), DOCS_STATE=str(self.state), DOCS_HDR=str(self.hdr))
        base = subprocess.run(["bash", "-c", "compgen -v"], capture_output=True, text=True,
                              env=self.env).stdout.split()
        self.env["DOCS_BASE_VARS"] = " ".join(base)
        self.cwd = self.work
        self.values = {}  # placeholder name -> last value, from top-level JSON keys
        self.nested = {}  # the same from nested keys
        self.server = None
        self.server_log = None
        self.servers_by_name = {}

    def script(self, command, save=True):
        return PRELUDE + f"cd {shell_quote(str(self.cwd))}\n" + command + "\n" + (SAVE if save else "")

    def run(self, command, timeout=60):
        self.hdr.write_text("")
        r = subprocess.run(["bash", "-c", self.script(command)], capture_output=True, text=True,
                           env=self.env, cwd=self.cwd, timeout=timeout, start_new_session=True)
        cwd_file = Path(str(self.state) + ".cwd")
        if cwd_file.exists():
            self.cwd = Path(cwd_file.read_text().strip())
        self.learn(r.stdout)
        return r

    def learn(self, text):
        for m in JWT.finditer(text):
            self.values["token"] = m.group(0)
        for chunk in re.split(r"\r?\n\r?\n", text):
            chunk = chunk.strip()
            if not chunk.startswith(("{", "[")):
                continue
            try:
                self.walk(json.loads(chunk), 0)
            except ValueError:
                continue

    def walk(self, v, depth):
        """Top-level keys (a created item's `id`) win over nested ones (ids in a list)."""
        if isinstance(v, dict):
            for k, x in v.items():
                if isinstance(x, (str, int, float)) and not isinstance(x, bool):
                    (self.values if depth == 0 else self.nested)[k] = str(x)
                    if depth == 0:
                        self.nested.pop(k, None)
                else:
                    self.walk(x, depth + 1)
        elif isinstance(v, list):
            for x in v:
                self.walk(x, depth + 1)

    def substitute(self, command):
        def repl(m):
            for name in (m.group(1), m.group(1).lower()):
                for table in (self.values, self.nested):
                    if name in table:
                        return table[name]
            raise Fail(f"placeholder <{m.group(1)}>: no earlier output of this file has a "
                       f"value for it")
        return PLACEHOLDER.sub(repl, command)

    def response(self):
        text = self.hdr.read_text(errors="replace") if self.hdr.exists() else ""
        status, headers = None, {}
        for line in text.splitlines():
            m = re.match(r"^HTTP/[\d.]+ (\d{3})", line)
            if m:
                status, headers = int(m.group(1)), {}
            elif ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        return status, headers

    # -- the server
    def start_server(self, command, port):
        self.stop_server()
        command = re.sub(r"&\s*$", "", command).strip()
        self.server_log = self.dir / f"server.{int(time.time() * 1000)}.log"
        log = open(self.server_log, "w")
        self.server = subprocess.Popen(["bash", "-c", self.script(command, save=False)], stdout=log,
                                       stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd,
                                       start_new_session=True)
        try:
            harness.wait_ready(port, 30, interval=0.1, alive=lambda: self.server.poll() is None)
        except harness.Failure as e:
            code = f" (exit {self.server.returncode})" if self.server.poll() is not None else ""
            raise Fail(f"{e}{code}:\n{self.server_log.read_text()[-1500:]}") from None
        self.learn(self.server_log.read_text(errors="replace"))

    def stop_server(self):
        if not self.server:
            return
        if self.server.poll() is None:
            try:
                os.killpg(self.server.pid, signal.SIGTERM)
                self.server.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.server.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.server.wait()
        try:  # anything else left in the server's process group
            os.killpg(self.server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.server = None

    def close(self):
        self.stop_server()


def parse_expect(spec):
    """'201 location etag' -> (status spec, [(header, contains)])."""
    status, headers = None, []
    for tok in spec.split():
        if re.fullmatch(r"\d{3}|[1-5]xx", tok):
            status = tok
        else:
            k, _, v = tok.partition("=")
            headers.append((k.lower(), v))
    return status, headers


def status_ok(spec, status):
    if status is None:
        return False
    if spec is None:
        return 200 <= status < 400
    if spec.endswith("xx"):
        return str(status)[0] == spec[0]
    return str(status) == spec


# ---------------------------------------------------------------- the runner

class Checker:
    def __init__(self, binary, tmp):
        self.binary, self.tmp = binary, tmp
        self.cli = Cli(binary)
        self.outputs = flake_outputs()
        self.static = Static(self.cli, self.outputs)
        self.passed = self.static_n = self.failed = 0

    def report(self, kind, where, cmd, note):
        short = cmd if len(cmd) <= 110 else cmd[:107] + "..."
        print(f"{kind:<6} {where}  {short}\n         {note}")

    def classify(self, cmd):
        simples, _ = split_simple(cmd)
        kinds = set()
        serve = False
        for s in simples:
            prog, args = program(words(s))
            if prog is None or prog in ("export", "unset"):
                continue
            if prog == "cargo":
                a = Cli.cargo_run_args(args)
                if a is None:
                    return "static", False
                if not [w for w in a if not w.startswith("-")] or a[:1] == ["serve"]:
                    serve = True
                continue
            if prog == "shipshape":
                if not [w for w in args if not w.startswith("-")] or args[:1] == ["serve"]:
                    serve = True
                continue
            if prog == "curl":
                url = " ".join(args)
                if "$(minikube" in url or "://$(" in url:
                    return "static", False
            if prog not in LIVE:
                return "static", False
            kinds.add(prog)
        return "live", serve

    def check_simple(self, simple, cwd):
        ws = words(simple)
        prog, args = program(ws)
        if prog is None:
            return []
        notes = []
        if prog == "cd":
            target = args[0] if args else str(REPO)
            return [f"cd {target}: exists" if self.static.path(target, cwd) else f"cd {target}"]
        if prog == "nix":
            notes += self.static.nix(args, cwd, self.check_simple)
        elif prog == "kubectl":
            notes += self.static.kubectl(args, cwd)
        elif prog in ("docker", "podman"):
            notes += self.static.container(prog, args)
        elif prog in ("bash", "sh", "python3") and args and not args[0].startswith("-"):
            notes += self.static.script(args[0], args[1:], cwd) if os.access(cwd / args[0], os.X_OK) \
                else [self.static.path(args[0], cwd) + " exists"]
        elif prog in ("./result", "result") or prog.startswith(("./result/", "result/")):
            notes.append(f"{prog}: the output of the `nix build` before it (no Nix store here)")
        elif "/" in prog:
            notes += self.static.script(prog, args, cwd)
        elif prog == "cargo":
            a = Cli.cargo_run_args(args)
            if a is not None:
                notes.append(f"shipshape {self.cli.check(a)} and its flags exist")
            elif args and shutil.which(f"cargo-{args[0]}") is None and args[0] not in (
                    "build", "test", "run", "fmt", "clippy", "check", "install", "tree"):
                notes.append(f"cargo {args[0]}: plugin not installed here (a CI stage runs it)")
            else:
                notes.append(f"cargo {args[0] if args else ''}: exists")
        elif prog == "shipshape":
            notes.append(f"shipshape {self.cli.check(args)} and its flags exist")
        elif prog in ABSENT or prog in ELSEWHERE or prog in LIVE:
            notes.append(f"{prog}: not run here")
        elif shutil.which(prog) is None:
            raise Fail(f"unknown program `{prog}` (not installed here and not a known tool)")
        if prog != "kubectl":
            for w in args:
                for part in [w] + ([w.split("=", 1)[1]] if "=" in w and w.startswith("-") else []):
                    p = self.static.path(part, cwd)
                    if p:
                        notes.append(f"{p} exists")
        return notes

    def run_file(self, path):
        rel = path.relative_to(REPO)
        session = Session(self.binary, self.tmp, str(rel).replace("/", "_"))
        static_cwd = REPO
        blocks = blocks_of(path)
        named = {}
        for b in blocks:
            for n in b.directive("name"):
                named[n] = b
        try:
            for b in blocks:
                self.run_block(b, session, named, static_cwd)
        finally:
            session.close()

    def server_port(self, cmd):
        m = re.search(r"SHIPSHAPE_HTTP__LISTEN=\S*:(\d+)", cmd)
        return int(m.group(1)) if m else 8080

    def run_block(self, b, session, named, static_cwd):
        rel = b.path.relative_to(REPO)
        try:
            cmds = b.commands()
            expects = [e.strip() for spec in b.directive("expect") for e in spec.split("|")]
            curls = [c for c in cmds if self.classify(c[1])[0] == "live"
                     and any(program(words(s))[0] == "curl" for s in split_simple(c[1])[0])]
            if b.directive("expect") and len(expects) != len(curls):
                raise Fail(f"block at line {b.line}: {len(expects)} expectations for "
                           f"{len(curls)} curl commands")
            for server in b.directive("server"):
                if server not in named:
                    raise Fail(f"block at line {b.line}: no block named {server}")
                srv = [c for c in named[server].commands() if self.classify(c[1])[1]]
                if not srv:
                    raise Fail(f"block {server} starts no server")
                session.start_server(srv[0][1], self.server_port(srv[0][1]))
                self.report("PASS", f"{rel}:{srv[0][0]}", srv[0][1],
                            f"(again, for the block at line {b.line}) server ready")
            for n in b.directive("seed"):
                seed = "".join(
                    f"curl -s -o /dev/null localhost:8080/v1/items -H 'content-type: "
                    f"application/json' ${{TOKEN:+-H \"authorization: Bearer $TOKEN\"}} "
                    f"-d '{{\"name\":\"seed cup {i}\",\"price\":1,\"quantity\":1,"
                    f"\"tags\":[\"kitchen\"]}}' || exit 1\n" for i in range(int(n)))
                r = session.run(seed)
                if r.returncode != 0 or session.response()[0] != 201:
                    raise Fail(f"seeding {n} items failed: {session.response()[0]} {r.stderr}")
        except Fail as e:
            self.failed += 1
            self.report("FAIL", f"{rel}:{b.line}", "(block)", str(e))
            return
        ci = 0
        forwarded = False  # a `kubectl port-forward` earlier in the block: curls go to a cluster
        for line, cmd in cmds:
            where = f"{rel}:{line}"
            try:
                kind, serve = self.classify(cmd)
                progs = [program(words(s))[0] for s in split_simple(cmd)[0]]
                if kind == "static" and "kubectl" in progs and "port-forward" in cmd:
                    forwarded = True
                elif kind == "live" and forwarded and "curl" in progs:
                    kind = "static"
                if kind == "static":
                    notes = []
                    for s in split_simple(cmd)[0]:
                        notes += self.check_simple(s, static_cwd)
                    if cmd.startswith("cd ") and "&&" not in cmd and ";" not in cmd:
                        static_cwd = (static_cwd / words(cmd)[1]).resolve()  # like a terminal
                    self.static_n += 1
                    self.report("STATIC", where, cmd, "; ".join(dict.fromkeys(notes)) or "parsed")
                    continue
                live = session.substitute(cmd)
                if serve:
                    for s in split_simple(live)[0]:
                        self.check_simple(s, REPO)
                    session.start_server(live, self.server_port(live))
                    self.passed += 1
                    self.report("PASS", where, cmd, "server ready (/readyz 200)")
                    continue
                is_curl = any(program(words(s))[0] == "curl" for s in split_simple(live)[0])
                spec = expects[ci] if is_curl and ci < len(expects) else ""
                if is_curl:
                    ci += 1
                r = session.run(live)
                if r.returncode != 0:
                    raise Fail(f"exit {r.returncode}: {(r.stderr or r.stdout).strip()[-600:]}")
                note = "exit 0"
                if is_curl:
                    want, heads = parse_expect(spec)
                    status, headers = session.response()
                    if not status_ok(want, status):
                        body = r.stdout.strip().split("\n")[-1][-300:]
                        raise Fail(f"HTTP {status}, expected {want or '2xx/3xx'}: {body}")
                    for h, v in heads:
                        if h not in headers:
                            raise Fail(f"HTTP {status} without header {h}")
                        if v and v.lower() not in headers[h].lower():
                            raise Fail(f"header {h}: {headers[h]!r} does not contain {v!r}")
                    note = f"HTTP {status}" + (f" with {', '.join(h for h, _ in heads)}" if heads else "")
                self.passed += 1
                self.report("PASS", where, cmd, note)
            except Fail as e:
                self.failed += 1
                self.report("FAIL", where, cmd, str(e))
            except subprocess.TimeoutExpired:
                self.failed += 1
                self.report("FAIL", where, cmd, "timed out")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", required=True, help="the built shipshape binary to run")
    ap.add_argument("files", nargs="*")
    a = ap.parse_args()
    binary = Path(a.bin).resolve()
    if not os.access(binary, os.X_OK):
        sys.exit(f"docs: {binary} is not an executable binary")
    files = [Path(f).resolve() for f in a.files] or \
        [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))
    tmp = tempfile.mkdtemp(prefix="shipshape-docs.")
    checker = Checker(binary, tmp)
    try:
        for f in files:
            print(f"\n== {f.relative_to(REPO)}")
            checker.run_file(f)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\ndocs: {checker.passed} commands run and passed, {checker.static_n} checked "
          f"statically, {checker.failed} failed")
    sys.exit(1 if checker.failed else 0)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
