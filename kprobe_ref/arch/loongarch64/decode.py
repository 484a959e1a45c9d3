"""loongarch64 decode table: the verdict for each instruction class.

Mirrors Linux ``arch/loongarch/kernel/inst.c`` (``insns_not_supported``,
``insns_need_simulation``) and ``kprobes.c`` (``arch_prepare_kprobe``), and goes further:
BCEQZ/BCNEZ are simulated instead of refused; a probe between an LL and its SC is refused;
exception-generating, privileged and cache/TLB maintenance instructions are refused at
registration; words no disassembler knows are refused.

Rows are written as the encoding tables of the LoongArch Reference Manual, volume 1,
appendix B give them: 32 bits, most significant first, grouped as the manual groups the
fields (spaces are ignored).  ``0`` and ``1`` are fixed bits; letters are fields (``d`` rd,
``j`` rj, ``k`` rk, ``c`` cj/CSR number/cache op, ``o`` branch offset, ``i`` other
immediates, ``x`` any).  Each pattern compiles to ``(mask, match)``.  Rows are pairwise
disjoint (a test checks it), so their order does not matter.  A word no row matches is
stepped out of line unchanged when Ghidra's LoongArch disassembler decodes it: on
LoongArch only the instructions listed here read the PC.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

import pypcode

from kprobe_ref.arch.base import Decoded, Verdict, bucket_rows, compile_pattern
from kprobe_ref.arch.loongarch64 import encoding as enc

__all__ = [
    "EXCLUSIVE_OPENERS",
    "LINUX_DIFFERENCES",
    "ROWS",
    "Row",
    "classify",
    "decode",
    "doc_rows",
    "is_ll",
    "is_sc",
    "lookup",
    "sequence_hazard",
    "verdict_key",
]

SIM, REJ = Verdict.SIMULATE, Verdict.REJECT


@dataclass(frozen=True)
class Row:
    """One class of the table: a bit pattern, its verdict and why."""

    klass: str
    pattern: str
    verdict: Verdict
    reason: str
    note: str = ""
    fmt: str = ""
    """The format whose fields the rule needs (1RI20, I26, 2RI16, 1RI21, CJ21)."""

    @cached_property
    def bits(self) -> str:
        bits = self.pattern.replace(" ", "")
        if len(bits) != 32:
            raise ValueError(f"{self.klass}: pattern {self.pattern!r} is not 32 bits")
        return bits

    @cached_property
    def mask_match(self) -> tuple[int, int]:
        """``(mask, match)``: a word is in the class when ``word & mask == match``."""
        return compile_pattern(self.bits)

    def matches(self, w: int) -> bool:
        """Tell whether the word ``w`` belongs to this row's class."""
        mask, match = self.mask_match
        return w & mask == match


_O16 = "oooooooooooooooo"
_I20 = "iiiiiiiiiiiiiiiiiiii"
_I15 = "iiiiiiiiiiiiiii"
_AM = "kkkkk jjjjj ddddd"
ROWS: tuple[Row, ...] = (
    # -- simulated: PC-relative addresses, branches, calls ----------------------------------
    Row("pcaddi", f"0001100 {_I20} ddddd", SIM, "pc-relative-address",
        "PCADDI rd, si20: rd = PC + (si20 << 2)", "1RI20"),
    Row("pcalau12i", f"0001101 {_I20} ddddd", SIM, "pc-relative-address",
        "PCALAU12I rd, si20: rd = (PC + (si20 << 12)) & ~0xfff", "1RI20"),
    Row("pcaddu12i", f"0001110 {_I20} ddddd", SIM, "pc-relative-address",
        "PCADDU12I rd, si20: rd = PC + (si20 << 12)", "1RI20"),
    Row("pcaddu18i", f"0001111 {_I20} ddddd", SIM, "pc-relative-address",
        "PCADDU18I rd, si20: rd = PC + (si20 << 18)", "1RI20"),
    Row("beqz", f"010000 {_O16} jjjjj ooooo", SIM, "branch-relative", "BEQZ rj, offs21",
        "1RI21"),
    Row("bnez", f"010001 {_O16} jjjjj ooooo", SIM, "branch-relative", "BNEZ rj, offs21",
        "1RI21"),
    Row("bceqz", f"010010 {_O16} 00 ccc ooooo", SIM, "branch-relative",
        "BCEQZ cj, offs21: branch when FP condition flag fcc[cj] is 0", "CJ21"),
    Row("bcnez", f"010010 {_O16} 01 ccc ooooo", SIM, "branch-relative",
        "BCNEZ cj, offs21: branch when fcc[cj] is 1", "CJ21"),
    Row("jirl", f"010011 {_O16} jjjjj ddddd", SIM, "call-indirect",
        "JIRL rd, rj, offs16 (rd = r0: JR, RET)", "2RI16"),
    Row("b", f"010100 {_O16} oooooooooo", SIM, "branch-relative", "B offs26", "I26"),
    Row("bl", f"010101 {_O16} oooooooooo", SIM, "call-relative", "BL offs26 (links r1)",
        "I26"),
    Row("beq", f"010110 {_O16} jjjjj ddddd", SIM, "branch-relative", "BEQ rj, rd", "2RI16"),
    Row("bne", f"010111 {_O16} jjjjj ddddd", SIM, "branch-relative", "BNE rj, rd", "2RI16"),
    Row("blt", f"011000 {_O16} jjjjj ddddd", SIM, "branch-relative", "BLT rj, rd", "2RI16"),
    Row("bge", f"011001 {_O16} jjjjj ddddd", SIM, "branch-relative", "BGE rj, rd", "2RI16"),
    Row("bltu", f"011010 {_O16} jjjjj ddddd", SIM, "branch-relative", "BLTU rj, rd",
        "2RI16"),
    Row("bgeu", f"011011 {_O16} jjjjj ddddd", SIM, "branch-relative", "BGEU rj, rd",
        "2RI16"),
    # -- rejected: exclusive and atomic memory access ------------------------------------------
    Row("ll", "001000x0 iiiiiiiiiiiiii jjjjj ddddd", REJ, "exclusive-access", "LL.W, LL.D"),
    Row("sc", "001000x1 iiiiiiiiiiiiii jjjjj ddddd", REJ, "exclusive-access", "SC.W, SC.D"),
    Row("sc_q", f"00111000010101110 {_AM}", REJ, "exclusive-access", "SC.Q rd, rk, rj"),
    Row("llacq", "0011100001010111100 0x0 jjjjj ddddd", REJ, "exclusive-access",
        "LLACQ.W, LLACQ.D"),
    Row("screl", "0011100001010111100 0x1 jjjjj ddddd", REJ, "exclusive-access",
        "SCREL.W, SCREL.D"),
    Row("am", f"0011100001011xxxx {_AM}", REJ, "loongarch64-atomic-memory-access",
        "AMCAS[_DB].{B,H,W,D}, AMSWAP[_DB].{B,H}, AMADD[_DB].{B,H}"),
    Row("am", f"00111000011 0xxxxx {_AM}", REJ, "loongarch64-atomic-memory-access",
        "AMSWAP/AMADD/AMAND/AMOR/AMXOR/AMMAX/AMMIN[.WU/.DU].{W,D}, AMSWAP_DB.W..AMMIN_DB.DU"),
    Row("am", f"00111000011 1000xx {_AM}", REJ, "loongarch64-atomic-memory-access",
        "AMSWAP_DB.W..AMMIN_DB.DU (the rest of the _DB forms)"),
    # -- rejected: exceptions, privilege, system maintenance ----------------------------------
    Row("break", f"00000000001010100 {_I15}", REJ, "exception-generating", "BREAK code"),
    Row("dbcl", f"00000000001010101 {_I15}", REJ, "exception-generating", "DBCL code"),
    Row("syscall", f"00000000001010110 {_I15}", REJ, "privilege-change", "SYSCALL code"),
    Row("hvcl", f"00000000001010111 {_I15}", REJ, "privilege-change",
        "HVCL code (virtualization extension)"),
    Row("csr", "00000100 cccccccccccccc jjjjj ddddd", REJ, "loongarch64-csr-access",
        "CSRRD (rj = 0), CSRWR (rj = 1), CSRXCHG"),
    Row("gcsr", "00000101 cccccccccccccc jjjjj ddddd", REJ, "loongarch64-csr-access",
        "GCSRRD, GCSRWR, GCSRXCHG (virtualization extension)"),
    Row("cacop", "0000011000 iiiiiiiiiiii jjjjj ccccc", REJ, "loongarch64-cache-maintenance",
        "CACOP code, rj, si12"),
    Row("lddir", "00000110010000 iiiiiiii jjjjj ddddd", REJ, "loongarch64-tlb-maintenance",
        "LDDIR (page-table walk)"),
    Row("ldpte", "00000110010001 iiiiiiii jjjjj xxxxx", REJ, "loongarch64-tlb-maintenance",
        "LDPTE (page-table walk)"),
    Row("iocsr", "00000110010010000 00xxx jjjjj ddddd", REJ, "loongarch64-iocsr-access",
        "IOCSRRD.{B,H,W,D}, IOCSRWR.{B,H,W,D}"),
    Row("tlb", "00000110010010000 010xx xxxxx xxxxx", REJ, "loongarch64-tlb-maintenance",
        "TLBCLR, TLBFLUSH, TLBSRCH, TLBRD"),
    Row("tlb", "00000110010010000 0110x xxxxx xxxxx", REJ, "loongarch64-tlb-maintenance",
        "TLBWR, TLBFILL"),
    Row("ertn", "00000110010010000 01110 xxxxx xxxxx", REJ, "privilege-change", "ERTN"),
    Row("idle", f"00000110010010001 {_I15}", REJ, "halts", "IDLE level"),
    Row("invtlb", "00000110010010011 kkkkk jjjjj iiiii", REJ, "loongarch64-tlb-maintenance",
        "INVTLB op, rj, rk"),
    Row("jiscr", f"010010 {_O16} 1x xxx ooooo", REJ, "loongarch64-lbt-jump",
        "JISCR0, JISCR1 (binary translation extension) and the reserved BCEQZ/BCNEZ forms"),
)  # fmt: skip
"""The table.  Valid instructions not listed are stepped out of line."""


_BUCKETS = [tuple(ROWS[i] for i in b)
            for b in bucket_rows([r.mask_match for r in ROWS], shift=22, bits=10)]
"""The rows each value of bits [31:22] allows (a lookup tests only those)."""


def lookup(w: int) -> Row | None:
    """Return the row whose class the word ``w`` belongs to, if any."""
    for row in _BUCKETS[(w >> 22) & 0x3FF]:
        if row.matches(w):
            return row
    return None


_FIELDS: dict[str, Callable[[int, str], dict[str, int]]] = {
    "1RI20": lambda w, k: {"rd": enc.rd(w), "imm": enc.imm_si20(w, enc.PC_REL_SHIFT[k])},
    "I26": lambda w, k: {"imm": enc.imm_i26(w)},
    "2RI16": lambda w, k: {"rd": enc.rd(w), "rj": enc.rj(w), "imm": enc.imm_i16(w)},
    "1RI21": lambda w, k: {"rj": enc.rj(w), "imm": enc.imm_i21(w)},
    "CJ21": lambda w, k: {"cj": enc.cj(w), "imm": enc.imm_i21(w)},
}
"""The encoding fields each format's rule reads (immediates assembled, unsigned)."""


@lru_cache(maxsize=1)
def _sleigh() -> Any:
    return pypcode.Context("Loongarch:LE:64:lp64d")


def disassemble(raw: bytes, addr: int) -> str | None:
    """Ghidra's text for the word ``raw``, or ``None`` if its LoongArch specification does
    not decode it."""
    try:
        dx = _sleigh().disassemble(raw[:4], base_address=addr, max_instructions=1)
    except (pypcode.BadDataError, pypcode.UnimplError):
        return None
    if not dx.instructions or dx.instructions[0].length != 4:
        return None
    first = dx.instructions[0]
    return f"{first.mnem} {first.body}".strip()


def decode(code: bytes, addr: int, user: bool = False) -> Decoded:
    """Decode the word at the start of ``code`` (located at ``addr``) and give its verdict,
    class, reason code and fields."""
    raw = code[:4]
    if len(raw) < 4:
        return Decoded(addr, raw, REJ, "undecodable", "undecodable", "(truncated)", {})
    w = enc.word(raw)
    row = lookup(w)
    text = disassemble(raw, addr)
    if row is None:
        if text is None:
            return Decoded(addr, raw, REJ, "undecodable", "undecodable", f".word {w:#010x}",
                           {})
        return Decoded(addr, raw, Verdict.STEP_OUT_OF_LINE, "plain", "no-pc-use", text, {})
    fields = _FIELDS[row.fmt](w, row.klass) if row.fmt else {}
    return Decoded(addr, raw, row.verdict, row.klass, row.reason, text or row.note, fields)


def classify(code: bytes) -> tuple[Verdict, str, str]:
    """``(verdict, class, reason)`` of the instruction at the start of ``code``, as
    :func:`decode` gives them, without the text and fields (the whole-image audit's cache
    fills from this)."""
    raw = code[:4]
    if len(raw) < 4:
        return REJ, "undecodable", "undecodable"
    row = lookup(enc.word(raw))
    if row is not None:
        return row.verdict, row.klass, row.reason
    if disassemble(raw, 0) is None:
        return REJ, "undecodable", "undecodable"
    return Verdict.STEP_OUT_OF_LINE, "plain", "no-pc-use"


def is_ll(code: bytes) -> bool:
    """Whether ``code`` starts with a load-linked (LL.W, LL.D, LLACQ.W, LLACQ.D)."""
    row = lookup(enc.word(code))
    return row is not None and row.klass in ("ll", "llacq")


def is_sc(code: bytes) -> bool:
    """Whether ``code`` starts with a store-conditional (SC.W, SC.D, SC.Q, SCREL.W,
    SCREL.D)."""
    row = lookup(enc.word(code))
    return row is not None and row.klass in ("sc", "sc_q", "screl")


def sequence_hazard(code: bytes, start: int, addr: int, window: int = 32) -> str | None:
    """``"inside-exclusive-sequence"`` if, among the up to ``window`` words from ``start``
    up to (not including) the probed one at ``addr``, an LL comes after the last SC: the
    probe would sit between a load-linked and its store-conditional.  ``start`` is the
    function start or a point up to 32 words back (4-aligned)."""
    kinds = []
    for pc in range(max(start, addr - 4 * window), addr, 4):
        off = pc - start
        word = code[off : off + 4]
        kinds.append("ll" if is_ll(word) else "sc" if is_sc(word) else "")
    last = [k for k in kinds if k]
    return "inside-exclusive-sequence" if last and last[-1] == "ll" else None


LINUX_DIFFERENCES: tuple[str, ...] = (
    "BCEQZ/BCNEZ are simulated: the rule reads the FP condition flag fcc[cj] from the "
    "interrupted context's FP state (`state.extra(\"fcc<n>\")`), which is all the branch "
    "needs. Linux refuses them (`insns_not_supported`) because its trap path does not "
    "reach the flags.",
    "A probe between an LL (or LLACQ) and the SC (or SCREL, SC.Q) that closes it is refused "
    "(`inside-exclusive-sequence`, found by scanning up to 32 instructions back or to the "
    "function start). Linux refuses LL and SC themselves but not the instructions between "
    "them: the trap's ERTN clears LLbit, so the SC fails on every retry and the loop can "
    "livelock.",
    "SC.Q and LLACQ/SCREL (LoongArch v1.1) are refused as exclusive accesses, and the v1.1 "
    "AM* forms (AMCAS, byte and halfword AMSWAP/AMADD) with the v1.0 ones. Linux's opcode "
    "ranges cover only the v1.0 instructions.",
    "BREAK, DBCL, SYSCALL, HVCL, ERTN, IDLE, CSR and GCSR access, IOCSR access, CACOP, TLB "
    "maintenance and LDDIR/LDPTE are refused at registration. Linux steps them in the slot, "
    "where they raise the wrong exception, act on the trap path's own state or never "
    "return.",
    "JISCR0/JISCR1 (binary translation extension) and the reserved BCEQZ/BCNEZ forms (bits "
    "9..8 = 1x) are refused: they jump PC-relative on state outside pt_regs. Linux "
    "refuses the whole BCEQZ opcode, which covers them.",
    "A word Ghidra's LoongArch specification cannot decode is refused as `undecodable`. "
    "Linux steps anything its tables do not list.",
)
"""Where this table deliberately departs from Linux, for ``docs/loongarch64.md``."""


def doc_rows() -> list[tuple[str, str, str, str, str]]:
    """The table as (class, encoding, verdict, reason code, note) for the docs, with the
    classes every unlisted word falls into last."""
    rows = [(r.klass, r.pattern, r.verdict.value, r.reason, r.note) for r in ROWS]
    rows.append(("plain", "any other valid instruction", "step", "no-pc-use",
                 "copied unchanged, followed by break 11 (break 13 in a process)"))
    rows.append(("undecodable", "words Ghidra's LoongArch specification cannot decode",
                 "reject", "undecodable", ""))
    return rows

EXCLUSIVE_OPENERS = frozenset({"ll", "llacq"})
"""Classes after which :func:`sequence_hazard` can report a probe inside a sequence."""


def verdict_key(raw: bytes) -> bytes:
    """The part of an instruction's encoding its verdict, class and reason depend on: all of
    it (the rows test every bit), so verdicts can be cached by encoding."""
    return raw
