"""One shard of a sweep: classify every word of a range in one process.

A shard is ``(isa, width, lo, hi)``: the ``width``-bit words ``lo <= w < hi`` of ``isa``'s
encoding space (riscv64's 32-bit space holds only the words whose low two bits are ``11``;
the others are 16-bit instructions, swept in the 16-bit space).  :func:`run_shard` returns a
plain, JSON-ready record:

- ``counts``: ``[rule, sleigh class, capstone, words]`` for every combination met, where
  ``rule`` is the table row (``plain``, ``undecodable``) our verdict comes from and
  ``capstone`` is ``valid``, ``invalid`` or ``-`` (no opinion);
- ``findings``: for every disagreement of one kind, rule, SLEIGH class and capstone opinion,
  the number of words and the cubes (:mod:`~kprobe_ref.tools.sweep.patterns`) covering them.

The kinds of disagreement:

- ``stepped-uses-pc``: stepped out of line, but SLEIGH's P-code branches, calls, returns,
  reads or writes the PC;
- ``simulated-class-mismatch``: simulated, but SLEIGH's control flow is not the rule's
  (direct transfer, indirect transfer, PC-relative data, none; a direct branch whose
  target is the fall-through shows only ``branch-next`` in SLEIGH and agrees);
- ``accepted-undecodable``: stepped or simulated, but SLEIGH cannot decode it;
- ``rejected-decodable``: refused as ``undecodable``, but SLEIGH decodes it.
"""

from __future__ import annotations

import struct
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from kprobe_ref.tools.sweep import ours, patterns, sleigh, third

__all__ = ["KINDS", "classify", "expected_flow", "flow", "kind_of", "run_shard", "words_of"]

KINDS = ("stepped-uses-pc", "simulated-class-mismatch", "accepted-undecodable",
         "rejected-decodable")

_USES_PC = (sleigh.DIRECT | sleigh.COND | sleigh.INDIRECT | sleigh.CALL | sleigh.CALL_IND
            | sleigh.RETURN | sleigh.READS_PC | sleigh.WRITES_PC)
_EXPECTED = {"branch-relative": "direct", "call-relative": "direct",
             "branch-indirect": "indirect", "call-indirect": "indirect", "return": "indirect",
             "pc-relative-address": "pc-data", "pc-relative-load": "pc-data", "no-op": "none"}


def flow(flags: int) -> str:
    """The coarse control flow of SLEIGH flags: ``indirect``, ``direct``, ``next`` (only a
    branch to the fall-through), ``pc-data``, ``none``."""
    if flags & (sleigh.INDIRECT | sleigh.CALL_IND | sleigh.RETURN):
        return "indirect"
    if flags & (sleigh.DIRECT | sleigh.COND | sleigh.CALL):
        return "direct"
    if flags & sleigh.NEXT:
        return "next"
    if flags & (sleigh.READS_PC | sleigh.WRITES_PC):
        return "pc-data"
    return "none"


def expected_flow(reason: str) -> str | None:
    """The control flow a simulated rule with this reason code implies."""
    return _EXPECTED.get(reason)


def kind_of(rule: ours.Rule, flags: int) -> str | None:
    """The kind of disagreement between our rule and SLEIGH's flags, or ``None``."""
    if rule.verdict == "reject":
        if rule.reason == "undecodable" and flags != sleigh.UNDECODABLE:
            return "rejected-decodable"
        return None
    if flags == sleigh.UNDECODABLE:
        return "accepted-undecodable"
    if flags == sleigh.UNIMPLEMENTED:
        return None
    if rule.verdict == "step":
        return "stepped-uses-pc" if flags & _USES_PC else None
    seen, want = flow(flags), expected_flow(rule.reason)
    if seen != want and not (seen == "next" and want == "direct"):
        return "simulated-class-mismatch"
    return None


def words_of(isa: str, width: int, lo: int, hi: int) -> list[int]:
    """The words of the shard, in order."""
    if isa == "riscv64" and width == 32:
        return list(range(lo | 3, hi, 4)) if lo | 3 < hi else []
    if isa == "riscv64":
        return [w for w in range(lo, hi) if w & 3 != 3]
    return list(range(lo, hi))


def _riscv_length_ok(w: int, width: int) -> bool:
    return width == 16 or (w >> 2) & 7 != 7


def _oracle(isa: str, width: int, words: Sequence[int], flags: Sequence[int],
            cap: Sequence[bool] | None, buf: bytes) -> list[bool]:
    """Whether the ISA's validity oracle accepts each word (only asked of unlisted ones)."""
    if isa == "aarch64":
        return [True] * len(words)
    if isa == "riscv64":
        assert cap is not None
        return [c and _riscv_length_ok(w, width) for w, c in zip(words, cap, strict=True)]
    from kprobe_ref.arch.loongarch64.decode import disassemble

    return [f >= 0 or (f == sleigh.UNIMPLEMENTED
                       and disassemble(buf[4 * k : 4 * k + 4], 0x1000) is not None)
            for k, f in enumerate(flags)]


def classify(isa: str, width: int, lo: int, hi: int
             ) -> tuple[list[int], list[ours.Rule], list[int], Sequence[bool] | None]:
    """The shard's words, our rule for each, SLEIGH's flags and capstone's opinion (``None``
    where capstone has none)."""
    words = words_of(isa, width, lo, hi)
    size = width // 8
    buf = struct.pack(f"<{len(words)}{'H' if size == 2 else 'I'}", *words)
    flags = sleigh.SleighView(isa, width).classify(buf)
    cap = third.valid(isa, buf, size) if isa in third.HAS_OPINION else None
    table = ours.rules(isa, width)
    rows = ours.row_indices(isa, width, words)
    ok = _oracle(isa, width, words, flags, cap, buf)
    rules = []
    for k, w in enumerate(words):
        i = rows[k]
        rule = table[i] if i >= 0 else ours.PLAIN if ok[k] else ours.UNDECODABLE
        if isa == "riscv64" and not _riscv_length_ok(w, width):
            rule = ours.UNDECODABLE
        rules.append(rule)
    return words, rules, flags, cap


def run_shard(isa: str, width: int, lo: int, hi: int) -> dict[str, Any]:
    """Classify every word of the shard and return its record."""
    t0 = time.perf_counter()
    words, rules, flags, cap = classify(isa, width, lo, hi)
    counts: Counter[tuple[str, int, str]] = Counter()
    found: dict[tuple[str, str, int, str], list[int]] = {}
    for k, w in enumerate(words):
        rule, f = rules[k], flags[k]
        c = "-" if cap is None else "valid" if cap[k] else "invalid"
        counts[rule.label, f, c] += 1
        kind = kind_of(rule, f)
        if kind is not None:
            found.setdefault((kind, rule.label, f, c), []).append(w)
    return {
        "isa": isa, "width": width, "lo": lo, "hi": hi, "words": len(words),
        "table": ours.fingerprint(isa), "seconds": round(time.perf_counter() - t0, 3),
        "counts": sorted([r, sleigh.class_name(f), c, n] for (r, f, c), n in counts.items()),
        "findings": [
            {"kind": kind, "rule": r, "sleigh": sleigh.class_name(f), "capstone": c,
             "words": len(ws), "cubes": [list(x) for x in patterns.cover(ws, width)]}
            for (kind, r, f, c), ws in sorted(found.items())
        ],
    }
