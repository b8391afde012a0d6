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

    python3 .ci/layers.py            draw the graph and check it (needs cargo-modules)
    python3 .ci/layers.py --dot F    check the graph in DOT file F instead
    python3 .ci/layers.py --print    also print the folded module graph
"""
import argparse
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
NODE = re.compile(r'^\s*"([^"]+)"\s*\[label="([^"|]*)\|')


def draw() -> str:
    cmd = ["cargo", "modules", "dependencies", "--package", CRATE, "--lib",
           "--no-externs", "--no-sysroot", "--no-owns", "--layout", "none"]
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

    modules = set()
    for line in dot.splitlines():
        m = NODE.match(line)
        if m and m.group(2).strip().endswith("mod") and m.group(1).count("::") == 1:
            modules.add(top(m.group(1)))
    edges: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for line in dot.splitlines():
        m = EDGE.match(line)
        if not m:
            continue
        src, dst = m.groups()
        a, b = top(src), top(dst)
        if a is None or b is None or a == b:
            continue
        if b not in RANK or b in modules:  # a root item such as VERSION is not a module
            edges[(a, b)].append((src, dst))
    if not modules:
        sys.exit("layers: the graph has no modules; did cargo modules change its output?")

    problems = []
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
