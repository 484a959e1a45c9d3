"""aarch64 decode table: the verdict for each instruction class.

Mirrors Linux ``arch/arm64/kernel/probes/decode-insn.c`` (``aarch64_insn_is_steppable``,
``arm_probe_decode_insn``, ``arm_kprobe_decode_insn``, ``is_probed_address_atomic``) and the
masks of ``arch/arm64/include/asm/insn.h``, and goes further where Linux has gaps (see
:data:`LINUX_DIFFERENCES`).  Rows are written as the encoding diagrams of the Arm ARM
(DDI 0487, chapter C4 "A64 Instruction Set Encoding" and the C6 instruction pages) give
them: 32 bits from bit 31 down, ``0``/``1`` fixed, ``x`` ignored, letters fields (see
:data:`~kprobe_ref.arch.aarch64.encoding.FIELD_NAMES`).  Rows are pairwise disjoint (a test
checks every pair by mask/match intersection), so their order does not matter.  A word no
row matches neither reads nor writes the PC and is stepped out of line unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from kprobe_ref.arch.aarch64 import encoding
from kprobe_ref.arch.base import Decoded, Verdict, bucket_rows

__all__ = [
    "EXCLUSIVE_OPENERS",
    "LINUX_DIFFERENCES",
    "LOAD_EXCLUSIVE",
    "ROWS",
    "STORE_EXCLUSIVE",
    "Row",
    "classify",
    "decode",
    "doc_rows",
    "lookup",
    "sequence_hazard",
    "verdict_key",
]

SIM, REJ = Verdict.SIMULATE, Verdict.REJECT
_I16 = "iiiiiiiiiiiiiiii"
_I19 = "iiiiiiiiiiiiiiiiiii"
_HINT = "1101010100 0 00 011 0010"
"""HINT space: ``HINT #(CRm:op2)`` is ``_HINT CRm op2 11111``."""


@dataclass(frozen=True)
class Row:
    """One instruction class: its encoding pattern, verdict and reason code."""

    klass: str
    pattern: str
    verdict: Verdict
    reason: str
    note: str = ""

    @cached_property
    def mask_match(self) -> tuple[int, int]:
        """``(mask, match)`` compiled from the pattern."""
        return encoding.compile_pattern(self.pattern)

    def matches(self, w: int) -> bool:
        """Tell whether word ``w`` belongs to this row's class."""
        mask, match = self.mask_match
        return w & mask == match


ROWS: tuple[Row, ...] = (
    # -- simulated: branches (C4.1.3 "Branches, Exception Generating and System") -------------
    Row("b", "000101 iiiiiiiiiiiiiiiiiiiiiiiiii", SIM, "branch-relative", "B label"),
    Row("bl", "100101 iiiiiiiiiiiiiiiiiiiiiiiiii", SIM, "call-relative", "BL label"),
    Row("b_cond", f"0101010 0 {_I19} 0 cccc", SIM, "branch-relative", "B.cond label"),
    Row("bc_cond", f"0101010 0 {_I19} 1 cccc", SIM, "branch-relative",
        "BC.cond label (FEAT_HBC); unicorn lacks it"),
    Row("cbz", f"s 011010 0 {_I19} ttttt", SIM, "branch-relative", "CBZ Wt/Xt, label"),
    Row("cbnz", f"s 011010 1 {_I19} ttttt", SIM, "branch-relative", "CBNZ Wt/Xt, label"),
    Row("tbz", "b 011011 0 eeeee iiiiiiiiiiiiii ttttt", SIM, "branch-relative",
        "TBZ Rt, #bit, label"),
    Row("tbnz", "b 011011 1 eeeee iiiiiiiiiiiiii ttttt", SIM, "branch-relative",
        "TBNZ Rt, #bit, label"),
    Row("br", "1101011 0000 11111 000000 nnnnn 00000", SIM, "branch-indirect", "BR Xn"),
    Row("blr", "1101011 0001 11111 000000 nnnnn 00000", SIM, "call-indirect", "BLR Xn"),
    Row("ret", "1101011 0010 11111 000000 nnnnn 00000", SIM, "return", "RET Xn (any n)"),
    # -- simulated: PC-relative addressing and literal loads (C4.1.2, C4.1.4) -------------------
    Row("adr", "0 ll 10000 hhhhhhhhhhhhhhhhhhh ddddd", SIM, "pc-relative-address", "ADR Xd"),
    Row("adrp", "1 ll 10000 hhhhhhhhhhhhhhhhhhh ddddd", SIM, "pc-relative-address",
        "ADRP Xd"),
    Row("ldr_lit_w", f"00 011 0 00 {_I19} ttttt", SIM, "pc-relative-load", "LDR Wt, label"),
    Row("ldr_lit_x", f"01 011 0 00 {_I19} ttttt", SIM, "pc-relative-load", "LDR Xt, label"),
    Row("ldrsw_lit", f"10 011 0 00 {_I19} ttttt", SIM, "pc-relative-load", "LDRSW Xt, label"),
    Row("prfm_lit", f"11 011 0 00 {_I19} ttttt", SIM, "no-op",
        "PRFM prfop, label: a hint, simulated as a no-op; Linux refuses it"),
    Row("ldr_lit_s", f"00 011 1 00 {_I19} ttttt", SIM, "pc-relative-load",
        "LDR St, label; Linux steps it and loads relative to the slot"),
    Row("ldr_lit_d", f"01 011 1 00 {_I19} ttttt", SIM, "pc-relative-load",
        "LDR Dt, label; Linux steps it and loads relative to the slot"),
    Row("ldr_lit_q", f"10 011 1 00 {_I19} ttttt", SIM, "pc-relative-load",
        "LDR Qt, label; Linux steps it and loads relative to the slot"),
    Row("ldr_lit_v_unallocated", f"11 011 1 00 {_I19} xxxxx", REJ, "undecodable",
        "opc 11 of LDR (literal, SIMD&FP) is unallocated"),
    # -- simulated: hints ------------------------------------------------------------------------
    Row("nop", f"{_HINT} 0000 000 11111", SIM, "no-op", "NOP"),
    Row("wfe", f"{_HINT} 0000 010 11111", SIM, "no-op",
        "WFE: may complete at any time (spurious wake-up), so a no-op is a correct execution"),
    Row("wfi", f"{_HINT} 0000 011 11111", SIM, "no-op",
        "WFI: may complete at any time (spurious wake-up), so a no-op is a correct execution"),
    # -- rejected: exception generating (C4.1.3) ------------------------------------------------
    Row("svc", f"11010100 000 {_I16} 000 01", REJ, "exception-generating", "SVC #imm16"),
    Row("hvc", f"11010100 000 {_I16} 000 10", REJ, "exception-generating", "HVC #imm16"),
    Row("smc", f"11010100 000 {_I16} 000 11", REJ, "exception-generating", "SMC #imm16"),
    Row("brk", f"11010100 001 {_I16} 000 00", REJ, "exception-generating", "BRK #imm16"),
    Row("hlt", f"11010100 010 {_I16} 000 00", REJ, "exception-generating", "HLT #imm16"),
    Row("tcancel", f"11010100 011 {_I16} 000 00", REJ, "transactional", "TCANCEL (FEAT_TME)"),
    Row("dcps1", f"11010100 101 {_I16} 000 01", REJ, "exception-generating", "DCPS1"),
    Row("dcps2", f"11010100 101 {_I16} 000 10", REJ, "exception-generating", "DCPS2"),
    Row("dcps3", f"11010100 101 {_I16} 000 11", REJ, "exception-generating", "DCPS3"),
    # -- rejected: exception return and pointer-authenticated branches --------------------------
    Row("eret", "1101011 0100 11111 000000 11111 00000", REJ, "privilege-change", "ERET"),
    Row("eretaa", "1101011 0100 11111 00001 x 11111 11111", REJ, "privilege-change",
        "ERETAA, ERETAB"),
    Row("drps", "1101011 0101 11111 000000 11111 00000", REJ, "privilege-change", "DRPS"),
    Row("braz", "1101011 0 0 00 11111 00001 x nnnnn 11111", REJ, "aarch64-pointer-authentication",
        "BRAAZ, BRABZ"),
    Row("blraz", "1101011 0 0 01 11111 00001 x nnnnn 11111", REJ, "aarch64-pointer-authentication",
        "BLRAAZ, BLRABZ"),
    Row("retaa", "1101011 0 0 10 11111 00001 x 11111 11111", REJ, "aarch64-pointer-authentication",
        "RETAA, RETAB"),
    Row("bra", "1101011 1 0 00 11111 00001 x nnnnn xxxxx", REJ, "aarch64-pointer-authentication",
        "BRAA, BRAB"),
    Row("blra", "1101011 1 0 01 11111 00001 x nnnnn xxxxx", REJ, "aarch64-pointer-authentication",
        "BLRAA, BLRAB"),
    Row("aut_1716", f"{_HINT} 0001 1x0 11111", REJ, "aarch64-pointer-authentication",
        "AUTIA1716, AUTIB1716"),
    Row("aut_z_sp", f"{_HINT} 0011 1xx 11111", REJ, "aarch64-pointer-authentication",
        "AUTIAZ, AUTIASP, AUTIBZ, AUTIBSP"),
    # -- rejected: PSTATE and the interrupt mask -----------------------------------------------
    Row("msr_imm", "1101010100 0 00 xxx 0100 xxxx xxx 11111", REJ, "aarch64-pstate-daif",
        "MSR (immediate) to any PSTATE field; also CFINV, XAFLAG, AXFLAG, SMSTART/SMSTOP"),
    Row("msr_daif", "1101010100 0 1 1 011 0100 0010 001 ttttt", REJ, "aarch64-pstate-daif",
        "MSR DAIF, Xt"),
    Row("mrs_daif", "1101010100 1 1 1 011 0100 0010 001 ttttt", REJ, "aarch64-pstate-daif",
        "MRS Xt, DAIF"),
    # -- rejected: exclusives and memory copy/set (C4.1.5 "Loads and Stores") -----------------
    Row("ldxr", "xx 001000 0 1 0 xxxxx x xxxxx xxxxx xxxxx", REJ, "exclusive-access",
        "LDXR, LDAXR (and B/H forms)"),
    Row("stxr", "xx 001000 0 0 0 xxxxx x xxxxx xxxxx xxxxx", REJ, "exclusive-access",
        "STXR, STLXR (and B/H forms)"),
    Row("ldxp", "1x 001000 0 1 1 xxxxx x xxxxx xxxxx xxxxx", REJ, "exclusive-access",
        "LDXP, LDAXP"),
    Row("stxp", "1x 001000 0 0 1 xxxxx x xxxxx xxxxx xxxxx", REJ, "exclusive-access",
        "STXP, STLXP"),
    Row("mops", "xx 011 x 01 xx 0 xxxxx xxxx 01 xxxxx xxxxx", REJ, "aarch64-mops",
        "CPY*, SET* (FEAT_MOPS prologue, main and epilogue forms)"),
)  # fmt: skip
"""The table.  Classes not listed are stepped out of line."""

LOAD_EXCLUSIVE = frozenset({"ldxr", "ldxp"})
"""Classes that open an exclusive sequence (set the exclusive monitor)."""
STORE_EXCLUSIVE = frozenset({"stxr", "stxp"})
"""Classes that close one."""

MAX_ATOMIC_CONTEXT = 32
"""How many instructions back a probe is checked for an open exclusive sequence (Linux
``MAX_ATOMIC_CONTEXT_SIZE``)."""


_BUCKETS = [tuple(ROWS[i] for i in b)
            for b in bucket_rows([r.mask_match for r in ROWS], shift=24, bits=8)]
"""The rows each value of bits [31:24] allows (a lookup tests only those)."""


def lookup(w: int) -> Row | None:
    """Return the row whose class word ``w`` belongs to, if any."""
    for row in _BUCKETS[(w >> 24) & 0xFF]:
        if row.matches(w):
            return row
    return None


def decode(code: bytes, addr: int, user: bool = False) -> Decoded:
    """Decode the word at the start of ``code`` (located at ``addr``) and give its verdict,
    class, reason code and raw fields.  ``user`` does not change any verdict."""
    if len(code) < 4:
        return Decoded(addr, code, REJ, "undecodable", "undecodable", f".byte {code.hex()}")
    w = encoding.word(code)
    row = lookup(w)
    raw, text = code[:4], encoding.text(w, addr)
    if row is None:
        return Decoded(addr, raw, Verdict.STEP_OUT_OF_LINE, "plain", "no-pc-use", text)
    fields = encoding.pattern_fields(row.pattern, w)
    return Decoded(addr, raw, row.verdict, row.klass, row.reason, text, fields)


def classify(code: bytes) -> tuple[Verdict, str, str]:
    """``(verdict, class, reason)`` of the instruction at the start of ``code``, as
    :func:`decode` gives them, without the text and fields (the whole-image audit's cache
    fills from this)."""
    if len(code) < 4:
        return REJ, "undecodable", "undecodable"
    row = lookup(encoding.word(code))
    if row is None:
        return Verdict.STEP_OUT_OF_LINE, "plain", "no-pc-use"
    return row.verdict, row.klass, row.reason


def sequence_hazard(code: bytes, start: int, addr: int) -> str | None:
    """Given the code from ``start`` up to and including the probed word at ``addr``, tell
    whether ``addr`` lies between a load-exclusive and its store-exclusive.

    Scan backwards from the word before ``addr``, at most :data:`MAX_ATOMIC_CONTEXT` words and
    never before ``start`` (the function's start): a store-exclusive met first closes any
    sequence (``None``); a load-exclusive met first means the probe is inside one."""
    lowest = max(start, addr - 4 * MAX_ATOMIC_CONTEXT)
    pc = addr - 4
    while pc >= lowest:
        row = lookup(encoding.word(code[pc - start : pc - start + 4]))
        klass = row.klass if row is not None else ""
        if klass in STORE_EXCLUSIVE:
            return None
        if klass in LOAD_EXCLUSIVE:
            return "inside-exclusive-sequence"
        pc -= 4
    return None


LINUX_DIFFERENCES: tuple[str, ...] = (
    "`LDR St|Dt|Qt, label` (literal loads into FP/SIMD registers) are simulated: the "
    "handler loads from `PC + offset` and writes the whole 128-bit V register, zero-extended. "
    "Linux's `aarch64_insn_uses_literal` covers only the general-register forms, so it steps "
    "these out of line and loads relative to the slot: wrong data, or a fault.",
    "`PRFM prfop, label` is simulated as a no-op (a prefetch is only a hint); Linux refuses it "
    "(`aarch64_insn_uses_literal`).",
    "`BC.cond` (FEAT_HBC) is simulated like `B.cond`. Linux's `bcond` mask was `0xff000010`, "
    "which leaves `BC.cond` out of the branch class, so kernels with that mask step it out of "
    "line and branch relative to the slot; newer kernels widened the mask to `0xff000000`.",
    "Only exclusives are refused in the load/store exclusive group (LDXR/STXR/LDAXR/STLXR and "
    "the pair forms). Linux's `exclusive` mask (`0x3f800000`) also refuses CASP/CASPA/CASPL/"
    "CASPAL, which are single atomic instructions and are stepped here like CAS and LDAR/STLR.",
    "MSR (register) and MRS are stepped except for the interrupt mask DAIF (`MSR DAIF, Xt`, "
    "`MRS Xt, DAIF`, refused); MSR (immediate) is refused whatever PSTATE field it writes. "
    "Linux refuses every MSR (register) and MRS of DAIF.",
    "Hints are stepped unless listed: NOP, WFE and WFI are simulated as no-ops (WFE/WFI may "
    "complete spuriously, so skipping the wait is a correct execution), the AUT* hints are "
    "refused (an authentication failure would fault in the slot under FEAT_FPAC). Linux "
    "steps only an allow-list (PACIA*/PACIB*, XPACLRI, BTI) and refuses the other hints "
    "(YIELD, SEV, SEVL, ESB, CSDB, DGH, CLRBHB...), which are harmless to step.",
    "Unallocated words in the exception-generating class are stepped (and raise an "
    "undefined-instruction fault in the slot, reported at the probe); Linux's `exception` "
    "mask refuses the whole class.",
)
"""Where this table deliberately departs from Linux, for ``docs/aarch64.md``."""


def doc_rows() -> list[tuple[str, str, str, str, str]]:
    """The table as (class, encoding, verdict, reason code, note) for the docs, with the
    class every unlisted word falls into last."""
    rows = [(r.klass, r.pattern, r.verdict.value, r.reason, r.note) for r in ROWS]
    rows.append(
        (
            "(inside exclusive sequence)",
            "any word after an open LDXR/LDXP",
            "reject",
            "inside-exclusive-sequence",
            "scanned back up to 32 words or the function "
            "start, as Linux's is_probed_address_atomic",
        )
    )
    rows.append(("plain", "any other word", "step", "no-pc-use", "copied unchanged"))
    return rows

EXCLUSIVE_OPENERS = LOAD_EXCLUSIVE
"""Classes after which :func:`sequence_hazard` can report a probe inside a sequence."""


def verdict_key(raw: bytes) -> bytes:
    """The part of an instruction's encoding its verdict, class and reason depend on: all of
    it (the rows test every bit), so verdicts can be cached by encoding."""
    return raw
