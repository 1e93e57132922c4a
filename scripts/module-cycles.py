#!/usr/bin/env python3
"""Import circles between the modules of a crate's source folder.

Every `crate::…` and `super::…` path outside a file's `#[cfg(test)] mod
tests` is an edge from its module (one per file) to the module it names;
a strongly connected set of more than one module is a circle, printed with
its edges. Exits 1 when a folder has one.

    scripts/module-cycles.py shared/src sim/src cli/src
"""
import os, re, sys
from collections import defaultdict


def check(root):
    mods = {}
    for dp, dn, fn in os.walk(root):
        for f in fn:
            if not f.endswith('.rs'): continue
            p = os.path.join(dp, f)
            rel = os.path.relpath(p, root)[:-3].split(os.sep)
            if rel[-1] == 'mod': rel = rel[:-1]
            if rel in (['lib'], ['main']): rel = []
            mods['::'.join(rel)] = p
    def strip_tests(text):
        m = re.search(r'#\[cfg\(test\)\]\s*mod tests', text)
        return text[:m.start()] if m else text
    def resolve(parts):
        for i in range(len(parts), -1, -1):
            name = '::'.join(parts[:i])
            if name in mods: return name
        return None
    edges = defaultdict(set)
    for m, p in mods.items():
        text = strip_tests(open(p).read())
        text = re.sub(r'//.*', '', text)
        # expand use groups crudely: crate::a::{b, c::d}
        for mt in re.finditer(r'\b(crate|super)((?:::\w+)+)(::\{([^}]*)\})?', text):
            base = mt.group(1); rest = mt.group(2).split('::')[1:]
            here = m.split('::') if m else []
            if base == 'crate': start = []
            else:
                # super relative to module; a mod.rs module's super is its parent
                start = here[:-1]
                while rest and rest[0] == 'super':
                    start = start[:-1]; rest = rest[1:]
            targets = [start + rest]
            if mt.group(4):
                for item in mt.group(4).split(','):
                    item = item.strip().split(' as ')[0]
                    if item and item != 'self':
                        targets.append(start + rest + item.split('::'))
            for t in targets:
                r = resolve(t)
                if r is not None and r != m:
                    edges[m].add(r)
    # Tarjan SCC
    index = {}; low = {}; stack = []; on = set(); sccs = []; i = [0]
    def strong(v):
        index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
        for w in edges[v]:
            if w not in index:
                strong(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: sccs.append(sorted(comp))
    sys.setrecursionlimit(10000)
    for v in list(mods):
        if v not in index: strong(v)
    for c in sccs:
        print('circle:', ', '.join(x or '(root)' for x in c))
        for a in c:
            print('   ', a or '(root)', '->', ', '.join(sorted(b or '(root)' for b in edges[a] if b in c)))
    print(f'{root}: {len(sccs)} import circle(s) among {len(mods)} modules')
    return not sccs


if __name__ == "__main__":
    results = [check(root) for root in sys.argv[1:]]
    sys.exit(0 if all(results) else 1)
