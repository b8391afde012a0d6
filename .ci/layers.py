#!/usr/bin/env python3
"""The layer check: the crate's module graph, as `cargo modules` draws it, must point one way.

`cargo modules dependencies` (cargo-modules, a real tool that reads the crate with
rust-analyzer) draws every `use` between the crate's items. This script folds that graph onto
the top-level modules and fails on any edge that points from a lower layer to a higher one,
which is also every cycle between modules. The layers, lowest first, are the ones
`service/src/lib.rs` lists under "# Layout" (docs/architecture.md draws them):

    config < telemetry, metrics < items < auth < http < startup < cli, healthcheck

Modules in one layer may not use each other either. Items of the crate root (`VERSION`, ...)
are below everything. A module missing from LAYERS fails the check, so a new module has to
be placed.

cargo-modules sees `use` declarations, not paths written inline (`crate::a::f()` in an
expression), so the check also fails on an inline `crate::` path into another top-level
module: every dependency is then a `use`, and the graph is complete.

    python3 .ci/layers.py            draw the graph and check it (needs cargo-modules)
    python3 .ci/layers.py --dot F    check the graph in DOT file F instead
    python3 .ci/layers.py --print    also print the folded module graph
"""
import argparse
import pathlib
import re
import subprocess
import sys
from collections import defaultdict

CRATE = "shipshape"
LAYERS = [
    ["config"],
    ["telemetry", "metrics"],
    ["items"],
    ["auth"],
    ["http"],
    ["startup"],
    ["cli", "healthcheck"],
]
RANK = {m: i for i, layer in enumerate(LAYERS) for m in layer}
EDGE = re.compile(r'^\s*"([^"]+)"\s*->\s*"([^"]+)"\s*\[label="uses"')
SRC = pathlib.Path(__file__).resolve().parent.parent / "service" / "src"
MOD = re.compile(r"^\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*;", re.M)
INLINE = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)::")


def top_modules() -> set[str]:
    """The crate's top-level modules, as lib.rs declares them."""
    return set(MOD.findall((SRC / "lib.rs").read_text()))


def inline_paths(modules: set[str]) -> list[str]:
    """`crate::<module>::` written outside a `use` declaration, into another top-level module."""
    found = []
    for path in sorted(SRC.rglob("*.rs")):
        rel = path.relative_to(SRC)
        own = rel.parts[0].removesuffix(".rs")
        in_use = False
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("//", 1)[0]
            stripped = code.strip()
            if re.match(r"(pub(\([a-z]+\))?\s+)?use\b", stripped):
                in_use = not stripped.endswith(";")
                continue
            if in_use:
                in_use = not stripped.endswith(";")
                continue
            for m in INLINE.finditer(code):
                if m.group(1) in modules and m.group(1) != own:
                    found.append(f"service/src/{rel}:{n}: crate::{m.group(1)}:: (write a `use`)")
    return found


def draw() -> str:
    cmd = ["cargo", "modules", "dependencies", "--package", CRATE, "--lib",
           "--no-externs", "--no-sysroot", "--no-owns", "--cfg-test"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"layers: `{' '.join(cmd)}` failed:\n{out.stderr}")
    return out.stdout


def top(path: str) -> str | None:
    """The top-level module an item path belongs to; None for the crate root's own items."""
    parts = path.split("::")
    if parts[0] != CRATE or len(parts) < 2:
        return None
    return parts[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dot", help="read the graph from this DOT file instead of drawing it")
    ap.add_argument("--print", action="store_true", help="print the folded module graph")
    args = ap.parse_args()
    dot = open(args.dot).read() if args.dot else draw()

    modules = top_modules()
    edges: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for line in dot.splitlines():
        m = EDGE.match(line)
        if not m:
            continue
        src, dst = m.groups()
        a, b = top(src), top(dst)
        if a is None or b is None or a == b:
            continue
        if b in modules:  # not a root item such as VERSION
            edges[(a, b)].append((src, dst))
    if not edges:
        sys.exit("layers: the graph has no module dependencies; did cargo modules change its output?")

    problems = inline_paths(modules)
    unplaced = sorted(m for m in modules if m not in RANK)
    for m in unplaced:
        problems.append(f"module `{m}` is not in any layer: add it to LAYERS in .ci/layers.py "
                        "and to the Layout of service/src/lib.rs")
    for (a, b), uses in sorted(edges.items()):
        if a not in RANK or b not in RANK:
            continue
        if RANK[a] <= RANK[b]:
            what = "a higher layer" if RANK[a] < RANK[b] else "a module of its own layer"
            examples = "; ".join(f"{s} uses {d}" for s, d in uses[:3])
            problems.append(f"`{a}` (layer {RANK[a]}) uses {what}, `{b}` (layer {RANK[b]}): {examples}")
    if args.print or problems:
        for (a, b) in sorted(edges):
            print(f"  {a} -> {b}  ({len(edges[(a, b)])} uses)")
    if problems:
        print("FAIL: the module graph does not point one way (lowest first: "
              + " < ".join(", ".join(layer) for layer in LAYERS) + ")")
        for p in problems:
            print("  - " + p)
        return 1
    print(f"ok: {len(modules)} modules in {len(LAYERS)} layers, {len(edges)} module dependencies, "
          "all pointing down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
