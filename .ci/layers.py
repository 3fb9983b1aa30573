#!/usr/bin/env python3
"""Checks that dependencies in src/ point down the layers DESIGN.md draws,
that every FFI call (libc::f(..)) is made in src/sys, and that no file
outgrows MAX_LINES unless it is one algorithm.

Each file belongs to a layer (by its path); a `crate::` path in a file may
name only modules of its own layer or lower ones. Within a layer, modules
may use each other, but no two modules may use each other (no circles).
Exit status 1 and a list of the offending lines otherwise.
"""
import os
import re
import sys

# Lowest first. A module path (crate::a::b) is matched by its longest prefix.
LAYERS = [
    ("sys", ["sys"]),
    ("error", ["error", "region::kind"]),
    ("region", ["region", "codec", "macros"]),
    ("sync", ["sync", "queue::ring", "queue::atomic", "queue::looks", "queue::control", "queue::blocking"]),
    ("objects", ["shared", "value", "array", "atomic", "map", "queue", "pipe", "select"]),
    ("process", ["process"]),
    ("pool", ["pool"]),
    ("admin", ["admin"]),
    ("root", ["lib"]),
]

def match(module):
    """(layer index, the prefix that placed it) of a module path."""
    best, best_p = None, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + "::")) and (best_p is None or len(p) > len(best_p)):
                best, best_p = i, p
    return best, best_p


def layer_of(module):
    return match(module)[0]


def unit_of(module):
    """The unit circles are checked between: the prefix that placed it."""
    return match(module)[1] or module

def module_of(path):
    rel = os.path.relpath(path, "src")[:-3]
    parts = rel.split(os.sep)
    if parts[-1] == "mod":
        parts = parts[:-1]
    return "::".join(parts)

USE = re.compile(r"\bcrate::((?:[a-z_][a-z0-9_]*)(?:::[a-z_][a-z0-9_]*)*)")
ROOT_ITEM = re.compile(r"\bcrate::([A-Z][A-Za-z0-9_]*)")
GROUP = re.compile(r"\bcrate::\{([^}]*)\}")
FFI_CALL = re.compile(r"\b(?:libc|nix)::[a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*\s*\(")
SUPER = re.compile(r"\bsuper::([a-z_][a-z0-9_]*)")


def root_reexports():
    """Names lib.rs re-exports at the crate root, and the module each is from."""
    names = {}
    text = open("src/lib.rs").read()
    for m in re.finditer(r"pub use ([a-z_][a-z0-9_:]*?)::(\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*);", text):
        module, items = m.group(1), m.group(2).strip("{}")
        for item in items.split(","):
            item = item.strip().split(" as ")[-1].strip()
            if item:
                names[item] = module
    return names

# A file longer than this is split, unless it is one algorithm.
MAX_LINES = 580
ONE_ALGORITHM = {"src/queue/ring.rs", "src/sync/lock_word.rs"}


def main():
    bad = []
    edges = {}
    sibling = {}
    roots = root_reexports()
    for root, _, files in os.walk("src"):
        if root.startswith(os.path.join("src", "bin")):
            continue
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(root, f)
            me = module_of(path)
            mine = layer_of(me)
            if mine is None:
                bad.append(f"{path}: module {me} is in no layer (add it to .ci/layers.py)")
                continue
            n_lines = sum(1 for _ in open(path))
            if n_lines > MAX_LINES and path not in ONE_ALGORITHM:
                bad.append(f"{path}: {n_lines} lines (more than {MAX_LINES}): split it by what it does")
            in_tests = False
            for n, line in enumerate(open(path), 1):
                if line.startswith("#[cfg(test)]"):
                    in_tests = True  # unit tests may reach anywhere
                if in_tests or line.lstrip().startswith("//"):
                    continue
                if FFI_CALL.search(line) and not me.startswith("sys"):
                    bad.append(f"{path}:{n}: an FFI call outside src/sys: {line.strip()}")
                targets = [m.group(1) for m in USE.finditer(line)]
                targets += [roots[m.group(1)] for m in ROOT_ITEM.finditer(line) if m.group(1) in roots]
                for g in GROUP.finditer(line):
                    for item in g.group(1).split(","):
                        item = item.strip().split("::")[0]
                        if item in roots:
                            targets.append(roots[item])
                        elif item and item[0].islower() and item not in ("self",):
                            targets.append(item)
                # Siblings inside one module (pool::job uses super::state).
                parent = me.rsplit("::", 1)[0] if "::" in me else None
                if parent is not None and not path.endswith("mod.rs"):
                    for m in SUPER.finditer(line):
                        sib = parent + "::" + m.group(1)
                        if sib != me:
                            sibling.setdefault(me, set()).add(sib)
                for target in targets:
                    theirs = layer_of(target)
                    if theirs is None:
                        continue  # a crate-root item (crate::Error, crate::Result ...)
                    if unit_of(target) != unit_of(me):
                        edges.setdefault(me, set()).add(target)
                    if theirs > mine:
                        bad.append(
                            f"{path}:{n}: {me} ({LAYERS[mine][0]}) uses {target} "
                            f"({LAYERS[theirs][0]}): an upward dependency"
                        )
    # Circles between top-level modules of one layer.
    tops = {}
    for a, targets in edges.items():
        for t in targets:
            tops.setdefault(unit_of(a), set()).add(unit_of(t))
    for a, ts in sorted(tops.items()):
        for b in sorted(ts):
            if a < b and a in tops.get(b, set()):
                bad.append(f"circle: {a} and {b} use each other")
    for a, ts in sorted(sibling.items()):
        for b in sorted(ts):
            if a < b and a in sibling.get(b, set()):
                bad.append(f"circle: {a} and {b} use each other")
    for b in bad:
        print(b)
    if bad:
        print(f"{len(bad)} upward or circular dependencies (layers: "
              + " < ".join(name for name, _ in LAYERS) + ")")
        sys.exit(1)
    print("layers: every dependency points down ("
          + " < ".join(name for name, _ in LAYERS) + ")")

if __name__ == "__main__":
    main()
