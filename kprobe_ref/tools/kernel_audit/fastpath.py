"""Verdicts for every instruction of a function, fast: bulk decoding and a verdict cache.

:func:`~kprobe_ref.manager.check_probe` answers for one address at a time, and decodes each
instruction in full (operands, text).  A whole kernel has millions of instructions, most of
them repeats: the same encodings, or encodings that differ only in a displacement or an
immediate.  This path gives the same answer as ``check_probe`` for every instruction of a
function, in the same order of checks:

1. the blacklist (the host's ``within_kprobe_blacklist`` hook; here the image's
   :class:`~kprobe_ref.kernel.blacklist.Blacklist`): ``reject``, ``blacklisted:<cause>``;
2. instruction boundaries: decoding from the function's start, as ``instruction_starts``
   does (x86_64: capstone over the whole function at once, without operand detail, which
   gives the same lengths as the one-at-a-time decoder because it is the same decoder; the
   fixed-width ISAs: one word after another; riscv64: the length bits);
3. the decode table: ``verdict, class, reason`` cached by the ISA's ``verdict_key`` (the
   whole word on the fixed-width ISAs and riscv64; on x86_64 the prefixes, opcode and ModRM
   byte and the length), computed on a miss by the ISA's ``classify`` (``decode`` without
   the text and fields);
4. the exclusive-sequence check, run exactly as registration runs it, in the functions
   that contain an instruction opening such a sequence.

Where decoding stops (bytes the decoder does not accept), the instruction there is rejected
as ``undecodable`` and the rest of the function is unreachable by boundary, as for
``check_probe``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Protocol

import capstone

from kprobe_ref.arch import ArchOps, get_arch, instruction_starts
from kprobe_ref.arch.base import Verdict
from kprobe_ref.errors import KprobeError
from kprobe_ref.manager import ProbeManager, check_probe
from kprobe_ref.point import ProbePointList

__all__ = [
    "Classified",
    "FastPath",
    "Reserved",
    "check_probe_verdict",
    "disagreements",
    "iter_rejected",
]

Verdicts = tuple[str, str, str]
"""(verdict, class, reason)."""


class Reserved(Protocol):
    """What the fast path asks of a blacklist."""

    def cause(self, addr: int) -> str | None: ...

    def overlaps(self, start: int, end: int) -> bool: ...

    def sites_in(self, start: int, end: int) -> dict[int, str]: ...


Classified = tuple[int, int, str, str, str]
"""One instruction: its address, length (0 where decoding stopped), verdict, class and
reason code."""

EXACT_CACHE_LIMIT = 1 << 20
"""At most this many whole encodings are remembered (memory stays bounded)."""


_CS_MODES: dict[str, tuple[int, int]] = {
    "x86_64": (capstone.CS_ARCH_X86, capstone.CS_MODE_64),
}


class FastPath:
    """The bulk classifier of one ISA, with its verdict cache."""

    def __init__(self, isa: str) -> None:
        self.isa = isa
        self.arch: ArchOps = get_arch(isa)
        self.decode: ModuleType = importlib.import_module(f"kprobe_ref.arch.{isa}.decode")
        self.key: Callable[[bytes], bytes] = self.decode.verdict_key
        self.openers: frozenset[str] = self.decode.EXCLUSIVE_OPENERS
        self.classify: Callable[[bytes], tuple[Verdict, str, str]] = self.decode.classify
        self.cache: dict[bytes, Verdicts] = {}
        """Verdicts by ``verdict_key``."""
        self.exact: dict[bytes, Verdicts] = {}
        """Verdicts by whole encoding (a first, cheaper look)."""
        self.misses = 0
        cs = _CS_MODES.get(isa)
        self._cs = capstone.Cs(*cs) if cs is not None else None
        enc = importlib.import_module(f"kprobe_ref.arch.{isa}.encoding")
        self._sdm_length: Callable[[bytes, int], int] = getattr(
            enc, "sdm_length", lambda _code, n: n)

    # -- boundaries ------------------------------------------------------------------------------
    def starts(self, code: bytes, start: int) -> tuple[list[tuple[int, int]], int | None]:
        """``(offset, length)`` of each instruction decoded from ``start`` and the offset
        where decoding stopped (``None`` when the whole of ``code`` decoded)."""
        if self._cs is not None:
            return self._bulk(code, start)
        if not self.arch.variable_length:
            step = self.arch.insn_align if self.arch.max_insn_len == 4 else 4
            whole = len(code) - len(code) % step
            return [(o, step) for o in range(0, whole, step)], (whole if whole < len(code)
                                                               else None)
        out: list[tuple[int, int]] = []
        off, length = 0, self.arch.insn_length
        while off < len(code):
            n = length(code[off : off + 8], start + off)
            if n == 0:
                return out, off
            out.append((off, n))
            off += n
        return out, None

    def _bulk(self, code: bytes, start: int) -> tuple[list[tuple[int, int]], int | None]:
        """x86_64: capstone over the whole function, resumed after each ``ud0``/``ud1``
        whose length the ISA's ``sdm_length`` corrects."""
        assert self._cs is not None
        out: list[tuple[int, int]] = []
        off = 0
        while off < len(code):
            resume = None
            for a, n, mnem, _ops in self._cs.disasm_lite(code[off:], start + off):
                at = a - start
                if mnem in ("ud0", "ud1"):
                    fixed = self._sdm_length(code[at : at + 15], n)
                    if fixed != n:
                        resume = (at, fixed)
                        break
                out.append((at, n))
            if resume is None:
                end = out[-1][0] + out[-1][1] if out else 0
                return out, (end if end < len(code) else None)
            at, fixed = resume
            if fixed == 0:
                return out, at
            out.append((at, fixed))
            off = at + fixed
        return out, None

    # -- verdicts ----------------------------------------------------------------------------------
    def verdict(self, raw: bytes, addr: int) -> Verdicts:
        """The decode table's answer for the instruction ``raw`` (cached by its key)."""
        key = self.key(raw)
        got = self.cache.get(key)
        if got is None:
            self.misses += 1
            verdict, klass, reason = self.classify(raw)
            got = (verdict.value, klass, reason)
            self.cache[key] = got
        return got

    def function(self, code: bytes, start: int, reserved: Reserved | None
                 ) -> tuple[list[Classified], int | None]:
        """Classify every instruction of the function whose bytes are ``code`` at ``start``;
        also return the offset where decoding stopped, if it did."""
        insns, stuck = self.starts(code, start)
        end = start + len(code)
        ranged = reserved is not None and reserved.overlaps(start, end)
        sites = reserved.sites_in(start, end) if reserved is not None else {}
        window = 32 * max(self.arch.insn_align, 4)
        exact, verdict_of, openers = self.exact, self.verdict, self.openers
        out: list[Classified] = []
        plain = not ranged and not sites and not openers
        for off, n in insns:
            raw = code[off : off + n]
            got = exact.get(raw)
            if got is None:
                got = verdict_of(raw, start + off)
                if len(exact) < EXACT_CACHE_LIMIT:
                    exact[raw] = got
            out.append((start + off, n, *got))
        if not plain:
            self._refine(out, code, start, reserved if ranged else None, sites, window)
        if stuck is not None:
            addr = start + stuck
            cause = reserved.cause(addr) if reserved is not None else None
            out.append((addr, 0, "reject", "BlacklistedAddress", f"blacklisted:{cause}")
                       if cause is not None else (addr, 0, "reject", "undecodable",
                                                  "undecodable"))
        return out, stuck

    def _refine(self, out: list[Classified], code: bytes, start: int,
                ranged: Reserved | None, sites: dict[int, str], window: int) -> None:
        """Apply the blacklist and the exclusive-sequence check to classified
        instructions, in registration's order (the blacklist first)."""
        opened = -1 - window  # offset of the last sequence-opening instruction
        for i, (addr, n, verdict, klass, _reason) in enumerate(out):
            off = addr - start
            cause = ranged.cause(addr) if ranged is not None else sites.get(addr)
            if klass in self.openers:
                opened = off
            if cause is not None:
                out[i] = (addr, n, "reject", "BlacklistedAddress", f"blacklisted:{cause}")
            elif off - opened <= window and verdict != "reject":
                hazard = self._hazard(code, start, off, n)
                if hazard is not None:
                    out[i] = (addr, n, "reject", "UnsupportedInstruction", hazard)

    def _hazard(self, code: bytes, start: int, off: int, n: int) -> str | None:
        """Registration's exclusive-sequence check (``manager._check_sequence``)."""
        window = 32 * max(self.arch.insn_align, 4)
        lo = max(0, off - window)
        return self.arch.sequence_hazard(code[lo : off + n], start + lo, start + off)

    def text(self, code: bytes, addr: int) -> str:
        """The disassembly of the instruction at the start of ``code``."""
        return self.arch.decode(code[: self.arch.max_insn_len], addr, False).text


def iter_rejected(path: FastPath, code: bytes, start: int, insns: list[Classified],
                  skip: Callable[[str], bool]) -> Iterator[tuple[int, str, str]]:
    """``(offset, text, reason)`` of each rejected instruction whose reason ``skip`` does
    not exclude."""
    for addr, _n, verdict, _klass, reason in insns:
        if verdict == "reject" and not skip(reason):
            off = addr - start
            yield off, path.text(code[off:], addr), reason


def check_probe_verdict(manager: ProbeManager, points: ProbePointList, addr: int) -> Verdicts:
    """``check_probe``'s answer at ``addr`` as ``(verdict, class, reason)``: the point's
    decoded verdict, or for a refusal ``reject``, the error's class name and reason code."""
    try:
        d = check_probe(manager, points, addr).decoded
        return d.verdict.value, d.klass, d.reason
    except KprobeError as exc:
        return "reject", type(exc).__name__, str(getattr(exc, "reason", "invalid-address"))


def disagreements(fast: FastPath, manager: ProbeManager, code: bytes, start: int,
                  reserved: Reserved | None) -> list[str]:
    """Where the fast path and ``check_probe`` differ on the function at ``start``: each
    instruction's verdict and reason code (and class, unless rejected: ``check_probe``
    names the error there, the fast path the decode-table row), and the instruction starts
    themselves (found by ``instruction_starts`` as registration finds them)."""
    points = ProbePointList()
    out = []
    insns, _stuck = fast.function(code, start, reserved)
    starts, stuck = instruction_starts(fast.isa, start, code)
    mine = [a for a, n, *_ in insns if n]
    if fast.arch.variable_length and mine != list(starts):
        out.append(f"{start:#x}: instruction starts differ from instruction_starts")
    if (stuck is None) != (len(mine) == len(insns)):
        out.append(f"{start:#x}: decoding stops at {stuck} here, not there in the fast path")
    for addr, _n, verdict, klass, reason in insns:
        want = check_probe_verdict(manager, points, addr)
        same = want[0] == verdict and want[2] == reason and (
            verdict == "reject" or want[1] == klass)
        if not same:
            out.append(f"{addr:#x}: fast path {verdict}/{klass}/{reason}, check_probe "
                       f"{'/'.join(want)}")
    return out
