"""Shared by the encoding-pool generators (``tools/gen_<isa>_pool.py``): assemble labelled
template lines with the ziglang toolchain and cut ``.text`` into one piece per line.

A generator writes its assembly source with :func:`label` before every template line and
``p_end:`` after the last one; :func:`assemble_lines` assembles it, reads ``.text``, the
label addresses and any relocations from the object file, and splits the bytes.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection

__all__ = ["Assembled", "assemble_lines", "label"]


@dataclass
class Assembled:
    """Bytes of every template line, their offsets in ``.text`` and the relocations."""

    parts: list[list[bytes]]
    starts: list[list[int]]
    text: bytes
    relocs: list[int]


def label(record: int, line: int) -> str:
    """The label placed before line ``line`` of template ``record``."""
    return f"p_{record:04d}_{line}"


def _object(target: str, source: str, workdir: Path) -> tuple[bytes, dict[str, int], list[int]]:
    asm, obj = workdir / "pool.S", workdir / "pool.o"
    asm.write_text(source)
    cmd = [sys.executable, "-m", "ziglang", "cc", "-target", target, "-c", str(asm),
           "-o", str(obj)]
    subprocess.run(cmd, check=True, cwd=workdir)
    with obj.open("rb") as fh:
        elf = ELFFile(fh)
        text_sec = elf.get_section_by_name(".text")
        assert text_sec is not None
        text = bytes(text_sec.data())
        symtab = elf.get_section_by_name(".symtab")
        assert isinstance(symtab, SymbolTableSection)
        addr = {s.name: int(s["st_value"]) for s in symtab.iter_symbols()
                if s.name.startswith("p_")}
        relocs: list[int] = []
        for sec in elf.iter_sections():
            if isinstance(sec, RelocationSection) and sec.name in (".rela.text", ".rel.text"):
                relocs.extend(int(r["r_offset"]) for r in sec.iter_relocations())
    return text, addr, relocs


def assemble_lines(target: str, source: str, line_counts: Sequence[int],
                   workdir: Path) -> Assembled:
    """Assemble ``source`` for ``target`` (a zig target triple) and split ``.text`` at the
    labels: template ``i`` has ``line_counts[i]`` lines."""
    text, addr, relocs = _object(target, source, workdir)
    order = [label(ri, li) for ri, n in enumerate(line_counts) for li in range(n)] + ["p_end"]
    bounds = [addr[name] for name in order]
    parts: list[list[bytes]] = []
    starts: list[list[int]] = []
    k = 0
    for n in line_counts:
        parts.append([text[bounds[k + i] : bounds[k + i + 1]] for i in range(n)])
        starts.append(bounds[k : k + n])
        k += n
    assert bounds[-1] == len(text), "trailing bytes after p_end"
    return Assembled(parts, starts, text, sorted(relocs))
