#!/usr/bin/env python3
"""The shape of src/: no file over 600 lines, and no import cycle between modules.

A module's imports are the `crate::` and `super::` paths its file names outside its tests.
Modules are compared at each depth of the tree (`engine` against `store`, `engine::server`
against `engine::client`, ...); a module's use of its own parent or children is not a cycle.
Prints each cycle with the imports that make it, and exits 1 if there is one.
"""

import os
import re
import sys

SRC = "src"
MAX_LINES = 600


def module_of(path):
    name = os.path.relpath(path, SRC)[: -len(".rs")]
    if name.endswith("/mod"):
        name = name[: -len("/mod")]
    return name.replace("/", "::")


def files():
    for root, _, names in os.walk(SRC):
        for n in sorted(names):
            if n.endswith(".rs"):
                yield os.path.join(root, n)


def imports(path, module):
    text = open(path, encoding="utf-8").read()
    # Leave out a file's test module (at its end, by this project's habit).
    text = re.split(r"#\[cfg\(test\)\]\s*mod tests\s*\{", text)[0]
    parent = module.rsplit("::", 1)[0] if "::" in module else ""
    found = set(re.findall(r"\bcrate::((?:[a-z_][a-z0-9_]*)(?:::[a-z_][a-z0-9_]*)*)", text))
    for rel in re.findall(r"\bsuper::((?:[a-z_][a-z0-9_]*)(?:::[a-z_][a-z0-9_]*)*)", text):
        found.add(f"{parent}::{rel}" if parent else rel)
    return found


def main():
    modules = {module_of(p): p for p in files()}
    too_long = []
    for m, p in modules.items():
        n = sum(1 for _ in open(p, encoding="utf-8"))
        if n > MAX_LINES:
            too_long.append(f"{p}: {n} lines (at most {MAX_LINES})")

    def resolve(path):
        parts = path.split("::")
        while parts:
            if "::".join(parts) in modules:
                return "::".join(parts)
            parts.pop()
        return None

    def related(a, b):
        return a == b or a.startswith(b + "::") or b.startswith(a + "::")

    edges = {}
    for m, p in modules.items():
        if m.split("::")[-1] == "tests" or "::sim" in m:
            continue
        for target in imports(p, m):
            t = resolve(target)
            if t and not related(m, t):
                edges.setdefault(m, set()).add(t)

    depth_max = max(m.count("::") + 1 for m in modules)
    cycles = []
    for depth in range(1, depth_max + 1):
        cut = lambda m: "::".join(m.split("::")[:depth])
        graph = {}
        for a, targets in edges.items():
            for b in targets:
                ca, cb = cut(a), cut(b)
                if not related(ca, cb):
                    graph.setdefault(ca, set()).add(cb)
        # Tarjan's strongly connected components.
        index, low, stack, on, counter = {}, {}, [], set(), [0]

        def visit(v):
            index[v] = low[v] = counter[0]
            counter[0] += 1
            stack.append(v)
            on.add(v)
            for w in graph.get(v, ()):
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
                if len(comp) > 1 and sorted(comp) not in cycles:
                    cycles.append(sorted(comp))
                    for a in sorted(comp):
                        why = sorted(b for b in graph.get(a, ()) if b in comp)
                        print(f"cycle: {a} imports {', '.join(why)}")

        for v in sorted(graph):
            if v not in index:
                visit(v)

    for line in too_long:
        print(line)
    under_400 = sum(1 for p in modules.values() if sum(1 for _ in open(p, encoding="utf-8")) <= 400)
    print(f"src: {len(modules)} files, {under_400} of them at most 400 lines; "
          f"{len(cycles)} import cycles; {len(too_long)} files over {MAX_LINES} lines")
    return 1 if cycles or too_long else 0


if __name__ == "__main__":
    sys.exit(main())
