#!/usr/bin/env python3
"""Import cycles between the files of the proxy crate (proxy/src/**/*.rs).

Every file is a node. An edge A -> B means that A's code names something in B:

- `use crate::...`, `use super::...`, `use self::...` (use trees `{a, b::{c, d}}` expanded);
- `crate::a::b`, `super::x`, `self::x` paths anywhere else in the code;
- `mod x;`: a file's own submodule is its child (parent -> child). That edge is not a cycle on
  its own; it becomes one when the child names its parent back (a `super::` or `crate::` path
  into the parent's file), and such cycles are reported like any other.

A path is mapped to the file of its longest prefix that is a file module: `crate::a::b::C` goes
to proxy/src/a/b.rs or proxy/src/a/b/mod.rs if that exists, else to proxy/src/a.rs or
proxy/src/a/mod.rs, else to lib.rs. `super` and `self` are resolved against the module the
path is written in, inline modules (`mod tests { ... }`) included.

Comments, string and character literals are ignored (a doc link is not a dependency). Items under
`#[cfg(test)]` (unit-test modules) are left out unless `--tests` is given: a test may use its
parent's API without the shipped code depending on it.

Prints every strongly connected component of more than one file, with the edges that hold it
together and where each edge comes from, and exits 1; otherwise prints
"no import cycles among N files" and exits 0.

Options:
  --files   only print the list of edges (`from -> to  path at line`), for debugging; exits 0
  --tests   count `#[cfg(test)]` code too
  --root R  the crate's source directory (default: proxy/src next to this script's parent)

Python 3 standard library only.
"""

import os
import re
import sys

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip(text):
    """Blanks out comments, string and char literals (newlines kept, so offsets and line numbers
    stay valid)."""
    out = []
    i, n = 0, len(text)

    def blank(s):
        return "".join("\n" if c == "\n" else " " for c in s)

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(blank(text[i:j]))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(blank(text[i:j]))
            i = j
        elif re.match(r'(?:b|c)?r#*"', text[i:i + 40]) and (i == 0 or not re.match(r"[A-Za-z0-9_]", text[i - 1])):
            m = re.match(r'(?:b|c)?r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append(blank(text[i:j]))
            i = j
        elif c == '"' or (c in "bc" and text.startswith('"', i + 1)
                          and (i == 0 or not re.match(r"[A-Za-z0-9_]", text[i - 1]))):
            j = i + (1 if c == '"' else 2)
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(blank(text[i:j]))
            i = j
        elif c == "'" or (c == "b" and text.startswith("'", i + 1)
                          and (i == 0 or not re.match(r"[A-Za-z0-9_]", text[i - 1]))):
            start = i + (1 if c == "'" else 2)
            # A char literal ('x', '\n', '\u{1F600}', b'x'), not a lifetime or label ('a, 'static).
            m = re.match(r"(?:\\u\{[0-9A-Fa-f_]*\}|\\x[0-9A-Fa-f]{2}|\\.|[^\\'\n])'", text[start:])
            if m:
                j = start + m.end()
                out.append(blank(text[i:j]))
                i = j
            else:
                out.append(text[i:start])
                i = start
        else:
            out.append(c)
            i += 1
    return "".join(out)


def matching(text, open_at):
    """The index just past the brace (or bracket) that closes the one at `open_at`."""
    pairs = {"{": "}", "[": "]", "(": ")"}
    close = pairs[text[open_at]]
    depth = 0
    for j in range(open_at, len(text)):
        if text[j] == text[open_at]:
            depth += 1
        elif text[j] == close:
            depth -= 1
            if depth == 0:
                return j + 1
    return len(text)


def test_ranges(code):
    """Byte ranges of items under `#[cfg(test)]`."""
    ranges = []
    for m in re.finditer(r"#\s*\[\s*cfg\s*\(\s*test\s*\)\s*\]", code):
        j = m.end()
        # Further attributes of the same item.
        while True:
            a = re.match(r"\s*#\s*\[", code[j:])
            if not a:
                break
            j = matching(code, j + a.end() - 1)
        k = j
        while k < len(code) and code[k] not in ";{":
            k += 1
        end = matching(code, k) if k < len(code) and code[k] == "{" else k + 1
        ranges.append((m.start(), end))
    return ranges


def expand_use(tree):
    """`a::{b, c::{d, e as f}, self}` -> [[a, b], [a, c, d], [a, c, e], [a]]."""
    tokens = re.findall(IDENT + r"|::|[{},*]", tree)
    pos = 0

    def parse(prefix):
        nonlocal pos
        paths, path = [], list(prefix)
        while pos < len(tokens):
            t = tokens[pos]
            if t == "{":
                pos += 1
                while pos < len(tokens) and tokens[pos] != "}":
                    if tokens[pos] == ",":
                        pos += 1
                        continue
                    paths.extend(parse(path))
                pos += 1
                return paths
            if t in ",}":
                break
            pos += 1
            if t == "::" or t == "*":
                continue
            if t == "as":
                pos += 1  # the alias
                continue
            if t == "self" and path:
                continue  # `a::{self}` is `a`
            path.append(t)
        if len(path) > len(prefix) or not paths:
            paths.append(path)
        return paths

    return parse([])


class Crate:
    def __init__(self, root):
        self.root = root
        self.files = {}  # module path (tuple) -> file, relative to root
        for dirpath, _, names in os.walk(root):
            for name in names:
                if not name.endswith(".rs"):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, name), root)
                parts = rel[:-3].split(os.sep)
                if parts[-1] in ("mod", "lib", "main"):
                    parts = parts[:-1]
                self.files[tuple(parts)] = rel
        self.module_of = {f: m for m, f in self.files.items()}

    def file_for(self, path):
        """The file of the longest prefix of an absolute module path."""
        for k in range(len(path), -1, -1):
            f = self.files.get(tuple(path[:k]))
            if f:
                return f
        return None


def absolute(path, here, crate):
    """An absolute module path for `path` written in module `here`, or None (an external crate,
    a local item)."""
    if not path:
        return None
    if path[0] == "crate":
        return path[1:]
    if path[0] in ("super", "self"):
        base = list(here)
        i = 0
        while i < len(path) and path[i] in ("super", "self"):
            if path[i] == "super":
                if not base:
                    return None
                base.pop()
            i += 1
        return base + path[i:]
    # A path relative to the current module: only its declared file submodules matter.
    if tuple(list(here) + path[:1]) in crate.files:
        return list(here) + path
    return None


def edges_of(crate, rel, with_tests):
    """(target file, written path, line) for every reference in one file."""
    with open(os.path.join(crate.root, rel), encoding="utf-8") as f:
        code = strip(f.read())
    skip = [] if with_tests else test_ranges(code)

    def skipped(at):
        return any(a <= at < b for a, b in skip)

    def line(at):
        return code.count("\n", 0, at) + 1

    # Inline modules: (start, end, name), to resolve `super`/`self` where a path is written.
    inline = []
    for m in re.finditer(r"\bmod\s+(" + IDENT + r")\s*\{", code):
        inline.append((m.end() - 1, matching(code, m.end() - 1), m.group(1)))

    file_mod = list(crate.module_of[rel])

    def module_at(at):
        mods = list(file_mod)
        for start, end, name in inline:
            if start <= at < end:
                mods.append(name)
        return mods

    out = []

    def add(path, at, shown):
        if skipped(at):
            return
        target_path = absolute(path, module_at(at), crate)
        if target_path is None:
            return
        target = crate.file_for(target_path)
        if target and target != rel:
            out.append((target, shown, line(at)))

    # `mod x;` declares a child file.
    for m in re.finditer(r"\bmod\s+(" + IDENT + r")\s*;", code):
        child = tuple(module_at(m.start()) + [m.group(1)])
        if child in crate.files and not skipped(m.start()):
            out.append((crate.files[child], "mod " + m.group(1), line(m.start())))

    masked = list(code)
    for m in re.finditer(r"\buse\s+", code):
        end = m.end()
        depth = 0
        while end < len(code) and not (code[end] == ";" and depth == 0):
            depth += {"{": 1, "}": -1}.get(code[end], 0)
            end += 1
        tree = code[m.end():end]
        for path in expand_use(tree):
            add(path, m.start(), "use " + "::".join(path))
        for k in range(m.start(), end):
            if masked[k] != "\n":
                masked[k] = " "
    rest = "".join(masked)
    for m in re.finditer(r"(?<![A-Za-z0-9_:])(crate|super|self)((?:\s*::\s*" + IDENT + r")+)", rest):
        path = [m.group(1)] + re.findall(IDENT, m.group(2))
        add(path, m.start(), "::".join(path))
    return out


def sccs(nodes, graph):
    """Tarjan's strongly connected components."""
    index, low, on, stack, result = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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
            result.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return result


def main(argv):
    args = argv[1:]
    only_edges = "--files" in args
    with_tests = "--tests" in args
    root = None
    if "--root" in args:
        root = args[args.index("--root") + 1]
    unknown = [a for a in args if a.startswith("-") and a not in ("--files", "--tests", "--root")]
    if unknown:
        print(__doc__, file=sys.stderr)
        return 2
    if root is None:
        root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "proxy", "src")
    crate = Crate(root)
    prefix = os.path.relpath(root)
    show = lambda f: os.path.join(prefix, f)  # noqa: E731

    graph, why = {}, {}
    for rel in sorted(crate.module_of):
        for target, shown, line in edges_of(crate, rel, with_tests):
            graph.setdefault(rel, set()).add(target)
            why.setdefault((rel, target), []).append((line, shown))

    if only_edges:
        for (a, b) in sorted(why):
            line, shown = why[(a, b)][0]
            more = len(why[(a, b)]) - 1
            print(f"{show(a)} -> {show(b)}  {shown} at line {line}" + (f" (+{more} more)" if more else ""))
        return 0

    cycles = [c for c in sccs(crate.module_of.keys(), graph) if len(c) > 1]
    if not cycles:
        print(f"no import cycles among {len(crate.module_of)} files")
        return 0
    for comp in cycles:
        print(f"cycle among {len(comp)} files: " + ", ".join(show(f) for f in comp))
        members = set(comp)
        for a in comp:
            for b in sorted(graph.get(a, ())):
                if b in members:
                    line, shown = why[(a, b)][0]
                    print(f"  {show(a)} -> {show(b)}  {shown} at line {line}")
    print(f"{len(cycles)} import cycle(s) among {len(crate.module_of)} files")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
