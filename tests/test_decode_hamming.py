"""Hand-typed mask bugs in the fixed-width decode tables, hunted with P-code.

A decode row is a (mask, match) pair typed from the manual.  A wrong bit in either moves
words across the row's edge, and those words sit at Hamming distance 1 from the row.  For
every row of aarch64, riscv64 (32- and 16-bit) and loongarch64 this test flips each bit of
two base words of the row (``match`` with the free bits clear, and with them set to a fixed
pattern) and compares our verdict with what Ghidra's specification (through pypcode) says
the word does:

- a word we step out of line must not branch, call or return in P-code, and its P-code must
  be the same at two addresses apart from the fall-through (it does not read the PC);
- a word we simulate as a control transfer must branch in P-code, and one we simulate as a
  PC-relative address or load must read the PC (these are findings, counted and asserted
  only where the specification is known to agree).

Where the specification itself is wrong or models an instruction differently, the word is
listed in ``SLEIGH_DIFFERENCES`` with the reason; ``docs/proofs.md`` explains them.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from typing import Any

import pypcode
import pytest

from kprobe_ref.arch import get_arch
from kprobe_ref.arch.base import Verdict, bucket_rows
from kprobe_ref.proofs.tables import decode_module, row_width

LANGS = {"aarch64": "AARCH64:LE:64:v8A", "riscv64": "RISCV:LE:64:RV64GC",
         "loongarch64": "Loongarch:LE:64:lp64d"}
ADDRS = (0x0000_0000_0040_1000, 0x7FFF_A5A5_5A5A_0F00)
FILL = 0x5A5A_5A5A
"""The free-bit pattern of the second base word of each row."""

_BRANCHES = {pypcode.OpCode.BRANCH, pypcode.OpCode.BRANCHIND, pypcode.OpCode.CALL,
             pypcode.OpCode.CALLIND, pypcode.OpCode.RETURN}

SLEIGH_DIFFERENCES: dict[tuple[str, int], str] = {}
"""(isa, word) pairs where Ghidra's specification is wrong or models the word differently
from the manual, with why (see ``docs/proofs.md``)."""


@cache
def _ctx(isa: str) -> Any:
    return pypcode.Context(LANGS[isa])


def _ops(isa: str, word: int, width: int, addr: int) -> list[tuple[object, ...]] | None:
    """The word's P-code at ``addr`` with the fall-through address written ``NEXT`` where
    it is a branch target, and the instruction's own address written ``FAULT_PC`` where it
    is passed to an exception (``CALLOTHER``)."""
    code = word.to_bytes(width // 8, "little")
    try:
        tr = _ctx(isa).translate(code, addr, max_instructions=1)
    except (pypcode.BadDataError, pypcode.UnimplError):
        return None
    out: list[tuple[object, ...]] = []
    length = width // 8
    for op in tr.ops:
        if op.opcode == pypcode.OpCode.IMARK:
            length = sum(v.size for v in op.inputs)
            continue
        branch = op.opcode in (*_BRANCHES, pypcode.OpCode.CBRANCH)
        trap = op.opcode == pypcode.OpCode.CALLOTHER
        ins = []
        for i, v in enumerate(op.inputs):
            key: tuple[object, ...] = (v.space.name, v.offset, v.size)
            if branch and i == 0 and v.offset == (addr + length) % (1 << 64):
                key = (v.space.name, "NEXT", v.size)
            elif trap and v.space.name == "const" and v.offset == addr:
                key = ("const", "FAULT_PC", v.size)
            ins.append(key)
        outv = None if op.output is None else (op.output.space.name, op.output.offset,
                                               op.output.size)
        out.append((op.opcode, outv, *ins))
    return out


def pcode_kind(isa: str, word: int, width: int) -> str:
    """``undecodable``, ``branch`` (a P-code branch, call or return leaving the
    instruction: an indirect one whose target an exception (``CALLOTHER``) produced is the
    specification's way of trapping, not a branch), ``branch-next`` (its only branches go
    to the fall-through: a bounds-check load resuming after its exception, or a branch
    whose offset is the instruction's length), ``pc-read`` (the P-code differs at two
    addresses) or ``none``."""
    a, b = (_ops(isa, word, width, addr) for addr in ADDRS)
    if a is None or b is None:
        return "undecodable"
    trapped = {op[1] for op in a if op[0] == pypcode.OpCode.CALLOTHER}
    kind = "pc-read" if a != b else "none"
    for op in a:
        if (op[0] in _BRANCHES and op[2] not in trapped) or (
                op[0] == pypcode.OpCode.CBRANCH and op[2][0] == "ram"):
            if op[2][1] != "NEXT":
                return "branch"
            kind = "branch-next"
    return kind


def base_words(row: Any) -> list[int]:
    """``match`` with the free bits clear, set to ``FILL`` and set to its complement; a row
    that needs a field to be non-zero gets it."""
    mask, match = row.mask_match
    width = row_width(row)
    free = ~mask & ((1 << width) - 1)
    words = [match, match | (FILL & free), match | (~FILL & free)]
    if getattr(row, "nonzero", ""):
        words = [w | (row.letter_mask(row.nonzero) & FILL) or w for w in words]
    return words


def neighbours(row: Any) -> list[int]:
    """Every word at Hamming distance 0 or 1 from the row's base words."""
    width = row_width(row)
    return sorted({w ^ flip for w in base_words(row)
                   for flip in (0, *(1 << i for i in range(width)))})


_CONTROL = ("branch-relative", "branch-counted", "call-relative", "branch-indirect",
            "call-indirect", "return")
_PC_DATA = ("pc-relative-address", "pc-relative-load")


def classify(isa: str, word: int, width: int) -> tuple[str, str, str]:
    """(our verdict, our reason, P-code kind) of one word."""
    d = get_arch(isa).decode(word.to_bytes(width // 8, "little"), 0x1000, False)
    return d.verdict.value, d.reason, pcode_kind(isa, word, width)


def survey(isa: str) -> tuple[list[str], list[str], int]:
    """(failures, findings, words checked) over every row's neighbours."""
    failures: list[str] = []
    findings: list[str] = []
    seen: set[tuple[int, int]] = set()
    for row in decode_module(isa).ROWS:
        width = row_width(row)
        for word in neighbours(row):
            if (word, width) in seen or (isa, word) in SLEIGH_DIFFERENCES:
                continue
            seen.add((word, width))
            verdict, reason, kind = classify(isa, word, width)
            line = (f"{isa} {word:0{width // 4}x} ({row.klass} +-1 bit): "
                    f"ours {verdict}/{reason}, P-code {kind}")
            if verdict == Verdict.STEP_OUT_OF_LINE.value and kind in ("branch", "pc-read"):
                failures.append(line)
            elif verdict == Verdict.SIMULATE.value and (
                    (reason in _CONTROL and kind not in ("branch", "branch-next"))
                    or (reason in _PC_DATA and kind != "pc-read")):
                findings.append(line)
    return failures, findings, len(seen)


_table_survey = cache(survey)
"""The survey of the implementation's tables, shared by the two tests below."""


@pytest.mark.parametrize("isa", ["aarch64", "riscv64", "loongarch64"])
def test_no_stepped_neighbour_of_a_row_uses_the_pc(isa: str) -> None:
    failures, _findings, checked = _table_survey(isa)
    assert checked > 500
    assert failures == []


@pytest.mark.parametrize("isa", ["aarch64", "riscv64", "loongarch64"])
def test_simulated_neighbours_use_the_pc_as_their_class_says(isa: str) -> None:
    _failures, findings, _checked = _table_survey(isa)
    assert findings == []


def test_a_mistyped_mask_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check fails on a table whose ``B`` row has one offset bit typed as fixed: the
    branches with that bit set fall out of the row and would be stepped."""
    module = decode_module("aarch64")
    rows = tuple(replace(r, pattern="000101 0iiiiiiiiiiiiiiiiiiiiiiiii") if r.klass == "b"
                 else r for r in module.ROWS)
    monkeypatch.setattr(module, "ROWS", rows)
    buckets = bucket_rows([r.mask_match for r in rows], shift=24, bits=8)
    monkeypatch.setattr(module, "_BUCKETS", [tuple(rows[i] for i in b) for b in buckets])
    failures, _findings, _checked = survey("aarch64")
    assert any("(b +-1 bit): ours step/no-pc-use, P-code branch" in f for f in failures)
