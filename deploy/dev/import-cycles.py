#!/usr/bin/env python3
"""List the import circles between the modules of each crate in this workspace.

A module is one source file (`a/b.rs` or `a/b/mod.rs` is `a::b`). An edge
A -> B means a `use` or path in A names an item of B (`crate::…`, `super::…`,
`self::…`). Edges between a module and its own ancestors or descendants are
left out (a child naming `super::X` is ordinary Rust), and so is test code
(`tests.rs` files and `#[cfg(test)] mod tests { … }` blocks). A circle is a
strongly connected component of two or more modules.

    python3 deploy/dev/import-cycles.py            # every crate
    python3 deploy/dev/import-cycles.py controller # crates under a directory
    python3 deploy/dev/import-cycles.py --largest 15
    python3 deploy/dev/import-cycles.py --layers controller  # who imports whom

Exits 1 when there is a circle, so CI or a hook can hold the line.
"""

import os
import re
import sys
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def crates(under):
    """(crate directory, src directory) of every Cargo package below `under`."""
    for dirpath, dirnames, filenames in os.walk(under):
        dirnames[:] = [d for d in dirnames if d not in ("target", ".git", "fuzz", "tests", "benches")]
        if "Cargo.toml" in filenames and os.path.isdir(os.path.join(dirpath, "src")):
            with open(os.path.join(dirpath, "Cargo.toml")) as f:
                if "[package]" in f.read():
                    yield dirpath, os.path.join(dirpath, "src")


def module_of(src, path):
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    if rel in (["lib"], ["main"]):
        return ()
    if rel[0] == "bin":
        return ("bin",) + tuple(rel[1:])
    return tuple(rel)


def strip_tests(text):
    text = re.sub(r"//[^\n]*", "", text)
    m = re.search(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", text)
    return text[: m.start()] if m else text


def expand(tree):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e]."""
    tree = re.sub(r"\s+", "", tree)
    i = tree.find("{")
    if i < 0:
        return [re.sub(r"\bas\w+$", "", tree)]
    prefix, body = tree[:i], tree[i + 1 : tree.rfind("}")]
    parts, depth, cur = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    return [p for part in parts if part for p in expand(prefix + part)]


def paths_in(text):
    out = []
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        out.extend(expand(m.group(1)))
    for m in re.finditer(r"(?<![\w:])((?:crate|super|self)(?:::\w+)+)", text):
        out.append(m.group(1))
    return out


def resolve(mod, path, modules):
    segs = path.split("::")
    if segs[0] == "crate":
        base, segs = (), segs[1:]
    elif segs[0] in ("super", "self"):
        base = mod
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super":
                base = base[:-1]
            segs = segs[1:]
    else:
        return None
    target = base
    for s in segs:
        if target + (s,) in modules:
            target = target + (s,)
        else:
            break
    return target


def related(a, b):
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def sccs(nodes, edges):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def print_layers(name, edges):
    """Top-level modules by layer: each imports only modules of lower layers."""
    top = defaultdict(set)
    for a, targets in edges.items():
        for b in targets:
            if a[:1] != b[:1] and a and b and a[0] != "bin":
                top[a[0]].add(b[0])
    nodes = set(top) | {b for t in top.values() for b in t}
    level = {}

    def lv(n):
        if n not in level:
            level[n] = 1 + max((lv(b) for b in top[n]), default=-1)
        return level[n]

    for n in nodes:
        lv(n)
    for l in sorted(set(level.values()), reverse=True):
        mods = sorted(n for n in nodes if level[n] == l)
        print(f"  layer {l}: " + ", ".join(f"{n} -> {{{', '.join(sorted(top[n]))}}}" if top[n] else n for n in mods))


def main():
    args = sys.argv[1:]
    largest = 0
    layers = "--layers" in args
    if layers:
        args.remove("--layers")
    if "--largest" in args:
        i = args.index("--largest")
        largest = int(args[i + 1])
        del args[i : i + 2]
    under = os.path.join(ROOT, args[0]) if args else ROOT
    circles = 0
    sizes = []
    for crate, src in sorted(crates(under)):
        files = {}
        for dirpath, _, filenames in os.walk(src):
            for name in filenames:
                if name.endswith(".rs"):
                    p = os.path.join(dirpath, name)
                    with open(p) as f:
                        text = f.read()
                    sizes.append((text.count("\n"), os.path.relpath(p, ROOT)))
                    if name == "tests.rs":
                        continue
                    files[module_of(src, p)] = (p, strip_tests(text))
        modules = set(files)
        edges = defaultdict(set)
        for mod, (_, text) in files.items():
            for path in paths_in(text):
                t = resolve(mod, path, modules)
                if t is not None and t != mod and not related(mod, t):
                    edges[mod].add(t)
        name = os.path.relpath(crate, ROOT)
        comps = [c for c in sccs(modules, edges) if len(c) > 1]
        for comp in sorted(comps, key=len, reverse=True):
            circles += 1
            shown = sorted("::".join(m) or "(root)" for m in comp)
            print(f"{name}: circle of {len(comp)} modules: {', '.join(shown)}")
        if not comps:
            print(f"{name}: no circles ({len(modules)} modules)")
        if layers and not comps:
            print_layers(name, edges)
    if largest:
        print(f"\nlargest files:")
        for n, p in sorted(sizes, reverse=True)[:largest]:
            print(f"{n:7} {p}")
    return 1 if circles else 0


if __name__ == "__main__":
    sys.exit(main())
