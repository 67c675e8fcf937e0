"""A static bound on the stack from GCC's call graph (``-fcallgraph-info=su``): the deepest call chain's
frames added up. It cross-checks the painted high-water mark; calls into the C library (memcpy, expf, ...)
carry no frame sizes, so they are listed rather than counted.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Set, Tuple, Union
from ..errors import InvalidInputError

NODE = re.compile(r'node: \{ title: "([^"]+)" label: "[^"]*?\\n[^"]*?\\n(\d+) bytes \(([^)]*)\)')
EXTERNAL = re.compile(r'node: \{ title: "([^"]+)" label: "[^"]*" shape : ellipse')
EDGE = re.compile(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"')


@dataclass
class StackBound:
    bytes: int  # frames along the deepest chain from the root
    chain: List[str]
    unknown: List[str] = field(default_factory=list)  # functions without frame sizes (C library)
    dynamic: List[str] = field(default_factory=list)  # functions whose frames are not static


def read_call_graph(files: List[Union[str, Path]]) -> Tuple[Dict[str, int], Dict[str, Set[str]], Set[str], Set[str]]:
    """(frame bytes, callees, external functions, dynamically sized frames) from ``.ci`` files."""
    frames: Dict[str, int] = {}
    calls: Dict[str, Set[str]] = {}
    external: Set[str] = set()
    dynamic: Set[str] = set()
    for path in files:
        text = re.sub(r'"[^"\s]*\.o:', '"', Path(path).read_text())  # LTO prefixes local names with their partition
        for name, size, kind in NODE.findall(text):
            frames[name] = int(size)
            if kind != "static":
                dynamic.add(name)
        external.update(EXTERNAL.findall(text))
        for src, dst in EDGE.findall(text):
            calls.setdefault(src, set()).add(dst)
    return frames, calls, external - set(frames), dynamic


def stack_bound(files: List[Union[str, Path]], root: str = "program_main") -> StackBound:
    """The largest sum of frames along a call chain from ``root`` (the call graph must be acyclic); the
    default root is where the program's own stack starts (platform_m4.c)."""
    frames, calls, external, dynamic = read_call_graph(files)
    if root not in frames:
        raise InvalidInputError(f"{root} is not in the call graph ({len(frames)} functions read)")
    best: Dict[str, Tuple[int, List[str]]] = {}

    def deepest(name: str, path: Tuple[str, ...]) -> Tuple[int, List[str]]:
        if name in path:
            raise InvalidInputError(f"recursion through {name}: no static stack bound")
        if name in best:
            return best[name]
        below = [deepest(c, path + (name,)) for c in sorted(calls.get(name, ())) if c in frames]
        depth, chain = max(below, key=lambda b: b[0], default=(0, []))
        best[name] = (frames[name] + depth, [name] + chain)
        return best[name]

    total, chain = deepest(root, ())
    reached = set()
    todo = [root]
    while todo:
        name = todo.pop()
        if name in reached:
            continue
        reached.add(name)
        todo += list(calls.get(name, ()))
    return StackBound(total, chain, sorted(external & reached), sorted(dynamic & reached))


__all__ = ["StackBound", "read_call_graph", "stack_bound"]
