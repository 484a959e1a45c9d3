"""The engine reads alone: it imports none of the user-facing tools, and its tracer events
are the ones :class:`~kprobe_ref.manager.EventKind` lists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from kprobe_ref import EventKind, ProbeBuilder, register_kprobe
from kprobe_ref.sim import Machine

PACKAGE = Path(__file__).resolve().parent.parent / "kprobe_ref"
IMPORT_PATHS = {
    "verify.py": "kprobe_ref.verify stays an import path of the README's bundled_image",
    "__main__.py": "python -m kprobe_ref runs the command line",
}
"""Engine-side modules allowed to import ``kprobe_ref.tools``, with why."""


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_no_engine_module_imports_the_tools() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "tools" or str(rel) in IMPORT_PATHS:
            continue
        if any(m == "kprobe_ref.tools" or m.startswith("kprobe_ref.tools.")
               for m in _imports(path)):
            offenders.append(str(rel))
    assert not offenders, offenders


def test_every_emitted_event_kind_is_listed_and_every_listed_one_is_emitted() -> None:
    emitted: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        if "tools" not in path.relative_to(PACKAGE).parts:
            emitted |= set(re.findall(r"\bemit\(\s*\"([a-z-]+)\"", path.read_text()))
    assert emitted == {k.value for k in EventKind}


def test_event_kinds_compare_equal_to_strings() -> None:
    m = Machine("x86_64")
    m.map(0x40_0000, 0x1000, "rx")
    m.write(0x40_0000, bytes.fromhex("4801d8c3"))
    m.add_symbol("f", 0x40_0000, 4)
    events = []
    m.manager.tracers.append(events.append)
    register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(0x40_0000))
    m.call(0x40_0000)
    kinds = [e.kind for e in events]
    assert "hit" in kinds and EventKind.HIT in kinds
    assert all(isinstance(k, EventKind) for k in kinds)
