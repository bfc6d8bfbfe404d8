#!/usr/bin/env python3
"""Checks that the module import graph of src/ points one way: down.

Every top-level module of the crate (src/<m>.rs or src/<m>/) has a place in LAYERS, listed
bottom to top. A module may use only modules listed below it; an arrow to a module at or
above its own place, or to a module not listed, fails the check, and so does a cycle (which
an upward arrow always implies, but is reported on its own for clarity).

What counts as an arrow: `use crate::…` items, grouped ones included
(`use crate::{a, b::{c, d}}`), any `crate::x::…` path in code, and in src/main.rs the
`sipdns::x` paths (main is the binary over the library). Comments, string literals and
test code (files named tests.rs and `#[cfg(test)]` modules) are not arrows: tests may reach across layers.

Usage: scripts/check-imports.py [--graph]   (--graph prints `module -> imports` lines)
"""
import os
import re
import sys

# Bottom to top. One line per module; the comment says why it sits there.
LAYERS = [
    "memory",    # returning freed memory to the system: no crate imports
    "atomic_file",  # replacing a file atomically, never through a symlink: no crate imports
    "descriptors",  # the open-files limit raised and shared out: no crate imports
    "shutdown",  # the cancellation token
    "record",    # plain DNS record data: the floor every other module stands on
    "target",    # what a SIP target is
    "config",    # the YAML config, its types and validation
    "metrics",   # every Prometheus series (counted into by the modules above)
    "hickory",   # the one conversion between hickory's types and `record`
    "zones",     # static entries: YAML and RFC 1035 zones, and their edits on disk
    "state",     # loading config + zones into the state in force (`Data`), `sipdns check`
    "upstream",  # the forwarder, its cache and serve-stale
    "health",    # target health, the SIP OPTIONS codec, the prober
    "policy",    # the pure health policy and its explain view
    "phones",    # provisioning snippets for phones from config + zones (`sipdns phones`)
    "resolve",   # the one lookup path: zones + upstream by merge mode, then policy
    "dns",       # the UDP/TCP listeners and the wire format
    "notify",    # systemd readiness / watchdog notifications
    "reload",    # hot reload: validate aside, swap, tell the followers
    "events",    # webhooks: a prober observer and a reload-result hook
    "api",       # the REST API (HTTP only) and the status page
    "cli",       # the command-line client of the API (over HTTP; reads the config only)
    "app",       # wiring only: nothing imports it but main
    "main",      # the binary
]

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def module_of(rel):
    """src-relative path -> top-level module name."""
    parts = rel.split(os.sep)
    if len(parts) == 1:
        name = parts[0][:-3]
        return None if name == "lib" else name
    return parts[0]


def strip(text):
    """Removes comments, string and char literals, keeping line structure."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    if text[i] == "\n":
                        out.append("\n")
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append("\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.[^']*|[^\\'])'", text[i:i + 12]):
            i += len(re.match(r"'(\\.[^']*|[^\\'])'", text[i:i + 12]).group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def without_tests(text):
    """Drops test code: every `#[cfg(test)]` module, inline (to its closing brace) or not."""
    text = re.sub(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*;", "", text)
    while True:
        m = re.search(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", text)
        if not m:
            return text
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        text = text[: m.start()] + text[j:]


def split_top(group):
    """`a, b::{c, d}, e` -> ['a', 'b::{c, d}', 'e']."""
    items, depth, cur = [], 0, []
    for ch in group:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            items.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    items.append("".join(cur))
    return [i.strip() for i in items if i.strip()]


def imports(code, prefix):
    """Top-level modules named after `prefix::` (crate or sipdns) in `code`."""
    found = set()
    for m in re.finditer(r"\b" + prefix + r"::\s*(\{|[A-Za-z_][A-Za-z0-9_]*)", code):
        if m.group(1) != "{":
            found.add(m.group(1))
            continue
        depth, j = 1, m.end()
        while j < len(code) and depth:
            depth += {"{": 1, "}": -1}.get(code[j], 0)
            j += 1
        for item in split_top(code[m.end(): j - 1]):
            head = re.match(r"[A-Za-z_][A-Za-z0-9_]*", item)
            if head and head.group(0) not in ("self", "super"):
                found.add(head.group(0))
    return found


def graph():
    edges = {}
    for dirpath, _, files in os.walk(ROOT):
        for f in sorted(files):
            if not f.endswith(".rs") or f == "tests.rs" or "tests" in dirpath.split(os.sep)[-1:]:
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, ROOT)
            module = module_of(rel)
            if module is None:
                continue
            with open(path, encoding="utf-8") as fh:
                code = without_tests(strip(fh.read()))
            targets = imports(code, "crate")
            if module == "main":
                targets |= imports(code, "sipdns")
            targets.discard(module)
            edges.setdefault(module, set()).update(targets)
    return edges


def cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main():
    edges = graph()
    rank = {m: i for i, m in enumerate(LAYERS)}
    errors = []
    for module in sorted(edges):
        if module not in rank:
            errors.append(f"module `{module}` has no place in LAYERS (scripts/check-imports.py)")
            continue
        for target in sorted(edges[module]):
            if target not in rank:
                errors.append(f"`{module}` imports `{target}`, which has no place in LAYERS")
            elif rank[target] >= rank[module]:
                errors.append(f"upward arrow: `{module}` imports `{target}`, a layer above it")
    for comp in cycles(edges):
        errors.append("cycle: " + " <-> ".join(comp))
    if "--graph" in sys.argv:
        for module in sorted(edges, key=lambda m: rank.get(m, -1)):
            below = sorted(edges[module], key=lambda m: rank.get(m, -1))
            print(f"{module} -> {', '.join(below) if below else '(none)'}")
    for e in errors:
        print(f"check-imports: {e}", file=sys.stderr)
    if errors:
        sys.exit(1)
    print(f"check-imports: {len(edges)} modules, every arrow points down, no cycle")


main()
