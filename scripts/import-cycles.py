#!/usr/bin/env python3
"""Import cycles between the modules of each crate (llama-rs, the protocol layer, the
server, llama-py): a module is a file or directory directly under src/; an edge A -> B is
a `use crate::B` (or `crate::B::` path) written in A. Prints every cycle (strongly
connected group) and exits 1 if there is one. Run by scripts/style.sh.

    python3 scripts/import-cycles.py            # all crates
    python3 scripts/import-cycles.py --graph    # and the edges
"""
import os
import re
import sys

CRATES = ["llama-rs/src", "protocol/src", "server/src", "llama-py/src"]
# Crates whose modules `use super::*` (the root's imports): an edge A -> B is also A
# naming an item B defines at its top level.
GLOB = {"llama-py/src"}
ITEM = re.compile(r"^pub\(crate\) (?:struct|enum|fn|type|static|const|trait) ([A-Za-z_][A-Za-z0-9_]*)", re.M)
PATH = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
USE_GROUP = re.compile(r"\buse crate::\{([^}]*)\}", re.S)


def modules(src):
    out = {}
    for name in os.listdir(src):
        p = os.path.join(src, name)
        if name.endswith(".rs") and name not in ("lib.rs", "main.rs"):
            out[name[:-3]] = [p]
        elif os.path.isdir(p):
            out[name] = [os.path.join(dp, f) for dp, _, fs in os.walk(p) for f in fs if f.endswith(".rs")]
    return out


def strip_comments(text):
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def edges(src, glob=False):
    mods = modules(src)
    g = {m: set() for m in mods}
    defined = {}
    if glob:
        for m, files in mods.items():
            for f in files:
                for name in ITEM.findall(open(f, encoding="utf-8").read()):
                    defined[name] = m
    for m, files in mods.items():
        for f in files:
            text = strip_comments(open(f, encoding="utf-8").read())
            for word in set(re.findall(r"\b[A-Za-z_][A-Za-z0-9_]*\b", text)) if glob else ():
                if defined.get(word, m) != m:
                    g[m].add(defined[word])
            targets = set(PATH.findall(text))
            for group in USE_GROUP.findall(text):
                targets |= {t.strip().split("::")[0] for t in group.split(",") if t.strip()}
            g[m] |= {t for t in targets if t in mods and t != m}
    return g


def cycles(g):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
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

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    bad = 0
    for c in CRATES:
        g = edges(os.path.join(root, c), c in GLOB)
        if "--graph" in sys.argv:
            for m in sorted(g):
                print(f"{c}: {m} -> {', '.join(sorted(g[m])) or '-'}")
        for comp in cycles(g):
            bad += 1
            inner = {m: sorted(g[m] & set(comp)) for m in comp}
            print(f"import cycle in {c}: {inner}")
    if bad:
        sys.exit(1)
    print(f"import-cycles: no cycle between the modules of {', '.join(CRATES)}")


if __name__ == "__main__":
    main()
