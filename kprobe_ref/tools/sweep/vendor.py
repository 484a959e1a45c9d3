"""riscv64 decode rows against the vendor's encoding tables (riscv-opcodes), by set algebra.

``data/riscv-opcodes.json`` (see ``data/manifest.json`` for its source and commit) lists
every ratified RV64 instruction as a cube (``mask``/``match``) minus the words its
arguments forbid (``exclude``).  Each decode row expects a family of vendor instructions
(:data:`FAMILIES`: ``jal`` expects ``jal``; a reserved-encoding row expects none).  The
check reports, as findings:

- ``overlap``: a row shares words with a vendor instruction outside its family (Linux's
  ``c.jr`` mask 0xf007 would share words with ``c.mv``);
- ``gap``: a vendor instruction of a row's family has words no row of that class holds
  (``b.cond``-style masks too narrow);
- ``pc-gap``: a vendor instruction that reads or writes the PC (:data:`PC_NAMES`) has
  words that no row simulates or refuses, so they would be stepped.

16-bit words are enumerated exactly (each vendor cube has at most a few thousand words);
32-bit cubes are intersected arithmetically (rows are pairwise disjoint, a proved
obligation, so intersections add up; no 32-bit vendor entry carries an ``exclude``).
Findings :data:`EXPLAINED` names are listed with their reason and do not fail the check.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from kprobe_ref.tools.sweep import ours

__all__ = ["EXPLAINED", "FAMILIES", "PC_NAMES", "Finding", "check", "render", "vendor_table"]

DATA = Path(__file__).resolve().parent / "data"

_SYSTEM, _F3 = 0x73, 0x707F
_Pred = Callable[[dict[str, Any]], bool]


def _names(*names: str) -> _Pred:
    return lambda v: v["name"] in names


def _system(funct3: int, but: tuple[str, ...] = ()) -> _Pred:
    return lambda v: (v["width"] == 32 and v["mask"] & _F3 == _F3
                      and v["match"] & _F3 == _SYSTEM | funct3 << 12 and v["name"] not in but)


FAMILIES: dict[str, _Pred] = {
    **{k: _names(k) for k in ("jal", "jalr", "auipc", "beq", "bne", "blt", "bge", "bltu",
                              "bgeu", "ecall", "ebreak")},
    "c_j": _names("c.j"), "c_beqz": _names("c.beqz"), "c_bnez": _names("c.bnez"),
    "c_jr": _names("c.jr"), "c_jalr": _names("c.jalr"), "c_ebreak": _names("c.ebreak"),
    "system_priv": _system(0, ("ecall", "ebreak")),
    "csr": lambda v: v["name"].startswith("csrr"),
    "system_100": _system(4),
    "fence_i": _names("fence.i"),
    "lr": _names("lr.w", "lr.d"), "sc": _names("sc.w", "sc.d"),
    "branch_reserved": _names(), "c_jr_reserved": _names(), "c_lui_reserved": _names(),
    "c_illegal": _names(),
}
"""The vendor instructions each row's class stands for."""

PC_NAMES = frozenset({"jal", "jalr", "auipc", "beq", "bne", "blt", "bge", "bltu", "bgeu",
                      "c.j", "c.jal", "c.jr", "c.jalr", "c.beqz", "c.bnez", "cm.jalt",
                      "cm.jt", "cm.popret", "cm.popretz", "mret", "sret", "mnret", "dret",
                      "ecall", "ebreak", "c.ebreak"})
"""Vendor instructions that read or write the PC (by the manuals)."""

EXPLAINED: dict[tuple[str, str, str], str] = {
    ("overlap", "c_lui_reserved", "c.mop.N"): "C.MOP.n (Zcmop) reuses the reserved C.LUI "
    "encodings with a zero immediate: refused, which is safe",
    ("pc-gap", "-", "cm.jalt"): "CM.JALT (Zcmt; CM.JT is its low-index alias) shares its "
    "encodings with C.FSDSP (Zcd), which the RV64GC kernels this table serves use; a Zcmt "
    "kernel would need it simulated (CM.JALT links PC + 2)",
    ("pc-gap", "-", "cm.popret"): "CM.POPRET/CM.POPRETZ (Zcmp) share their encodings with "
    "C.FSDSP (Zcd); they return to ra, an absolute address, so stepping them would be "
    "correct under Zcmp too",
    ("pc-gap", "-", "cm.popretz"): "see CM.POPRET",
}
"""Understood findings: (kind, row class or ``-``, vendor name) -> reason."""


@dataclass(frozen=True)
class Finding:
    """One overlap or gap between a row class and a vendor instruction."""

    kind: str
    row: str
    vendor: str
    ext: str
    words: int
    example: int
    explained: str | None


@lru_cache(maxsize=1)
def vendor_table() -> tuple[dict[str, Any], ...]:
    """The vendor instructions, as committed."""
    return tuple(json.loads((DATA / "riscv-opcodes.json").read_text()))


def _words16(v: dict[str, Any]) -> list[int]:
    free = [b for b in range(16) if not v["mask"] >> b & 1]
    out = []
    for k in range(1 << len(free)):
        w = v["match"]
        for i, b in enumerate(free):
            if k >> i & 1:
                w |= 1 << b
        if not any(w & m == x for m, x in v["exclude"]):
            out.append(w)
    return out


def _size32(mask: int) -> int:
    return 1 << (32 - bin(mask).count("1"))


def _meet32(v: dict[str, Any], r: ours.Rule) -> tuple[int, int]:
    """Words shared by a 32-bit vendor cube and a row, and one of them (-1 if none)."""
    if (v["match"] ^ r.match) & v["mask"] & r.mask:
        return 0, -1
    mask, value = v["mask"] | r.mask, v["match"] | r.match
    n = _size32(mask)
    if r.nonzero and value & r.nonzero == 0:
        n -= _size32(mask | r.nonzero)
        value |= r.nonzero & -r.nonzero
    return n, value


def _finding(kind: str, row: str, v: dict[str, Any], words: int, ex: int) -> Finding:
    why = EXPLAINED.get((kind, row, v["name"]))
    return Finding(kind, row, v["name"], v["ext"], words, ex, why)


def _check_vendor(v: dict[str, Any], rules: tuple[ours.Rule, ...]) -> list[Finding]:
    out = []
    per_row: dict[str, tuple[int, int]] = {}
    if v["width"] == 16:
        for w in _words16(v):
            hit = next((r for r in rules if r.matches(w)), None)
            key = hit.klass if hit is not None else "-"
            n, ex = per_row.get(key, (0, w))
            per_row[key] = (n + 1, ex)
        total = sum(n for n, _ in per_row.values())
    else:
        for r in rules:
            n, ex = _meet32(v, r)
            if n:
                m, e = per_row.get(r.klass, (0, ex))
                per_row[r.klass] = (m + n, e)
        total = _size32(v["mask"])
        covered = sum(n for n, _ in per_row.values())
        if covered < total:
            per_row["-"] = (total - covered, -1)
    for klass, (n, ex) in per_row.items():
        if klass != "-" and not FAMILIES[klass](v):
            out.append(_finding("overlap", klass, v, n, ex))
    mine = [k for k, pred in FAMILIES.items() if pred(v)]
    for klass in mine:
        n = total - per_row.get(klass, (0, 0))[0]
        if n:
            out.append(_finding("gap", klass, v, n, -1))
    if v["name"] in PC_NAMES and "-" in per_row:
        n, ex = per_row["-"]
        out.append(_finding("pc-gap", "-", v, n, ex))
    return out


def check() -> list[Finding]:
    """Every overlap and gap between the riscv64 table and the vendor's."""
    out: list[Finding] = []
    for v in vendor_table():
        out += _check_vendor(v, ours.rules("riscv64", v["width"]))
    return out


def render(findings: list[Finding]) -> str:
    """The findings as text, the unexplained ones first."""
    manifest = json.loads((DATA / "manifest.json").read_text())
    lines = [f"riscv64 decode rows vs riscv-opcodes {manifest['commit'][:12]} "
             f"({manifest['instructions']} instructions): {len(findings)} findings"]
    for f in sorted(findings, key=lambda f: (f.explained is not None, f.kind, f.row)):
        ex = f" e.g. {f.example:#x}" if f.example >= 0 else ""
        note = f"  [{f.explained}]" if f.explained else "  UNEXPLAINED"
        lines.append(f"  {f.kind:<8} row {f.row:<16} {f.vendor:<14} ({f.ext}) "
                     f"{f.words:,} words{ex}{note}")
    return "\n".join(lines) + "\n"
