"""riscv64 decode table: the verdict for each instruction class.

Mirrors Linux ``arch/riscv/kernel/probes/decode-insn.c`` and ``simulate-insn.h`` (the
``RISCV_INSN_REJECTED`` / ``RISCV_INSN_SET_SIMULATE`` lists) and goes further: LR/SC and
probes inside an LR..SC sequence are refused, reserved encodings are refused at
registration, and ``c.jr``/``c.jalr`` are told apart from ``c.mv``/``c.add`` exactly.

Rows are written as the encoding tables of the RISC-V Unprivileged ISA manual give them (the
chapter "RV32/64G Instruction Set Listings" and the RVC opcode map of the "C" chapter): 32
bits for standard instructions, 16 for compressed ones, most significant bit first; ``0``
and ``1`` are fixed bits, letters are fields (``o`` offset/immediate, ``d`` rd, ``s`` rs1,
``t`` rs2, ``c`` CSR number, ``a`` aq/rl, ``p`` privileged-operation fields, ``x`` any),
spaces are ignored.  Each pattern compiles to ``(mask, match)``.  A row may also require
that the bits of one letter are not all zero (``nonzero``): ``c.jr`` is ``c.jr`` only when
rs1 is not ``x0``.  Rows are pairwise disjoint (a test checks it), so their order does not
matter.  A valid instruction no row matches is stepped out of line unchanged: on RISC-V only
the instructions listed here read the PC.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, lru_cache

import capstone

from kprobe_ref.arch.base import Decoded, Verdict, bucket_rows, compile_pattern
from kprobe_ref.arch.riscv64 import encoding as enc

__all__ = [
    "EXCLUSIVE_OPENERS",
    "LINUX_DIFFERENCES",
    "ROWS",
    "Row",
    "classify",
    "decode",
    "doc_rows",
    "is_lr",
    "is_sc",
    "lookup",
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
    """The instruction format whose fields the rule needs (J, I, U, B, CJ, CB, CR)."""
    nonzero: str = ""
    """A field letter whose bits must not all be zero for the row to match."""

    @cached_property
    def bits(self) -> str:
        bits = self.pattern.replace(" ", "")
        if len(bits) not in (16, 32):
            raise ValueError(f"{self.klass}: pattern {self.pattern!r} is not 16 or 32 bits")
        return bits

    @property
    def width(self) -> int:
        """16 for a compressed row, 32 for a standard one."""
        return len(self.bits)

    def letter_mask(self, letter: str) -> int:
        """The bits the field ``letter`` occupies."""
        return int("".join("1" if b == letter else "0" for b in self.bits), 2)

    @cached_property
    def mask_match(self) -> tuple[int, int]:
        """``(mask, match)``: a word is in the class when ``word & mask == match``."""
        return compile_pattern(self.bits)

    def matches(self, w: int, width: int) -> bool:
        """Tell whether the ``width``-bit instruction ``w`` belongs to this row's class."""
        mask, match = self.mask_match
        if width != self.width or w & mask != match:
            return False
        return not self.nonzero or w & self.letter_mask(self.nonzero) != 0


_IMM = "oooooooooooooooooooo"
ROWS: tuple[Row, ...] = (
    # -- simulated: control transfers and PC-relative addresses -----------------------------
    Row("jal", f"{_IMM} ddddd 1101111", SIM, "call-relative",
        "JAL rd, offset (rd = x0 is J)", "J"),
    Row("jalr", "oooooooooooo sssss 000 ddddd 1100111", SIM, "call-indirect",
        "JALR rd, offset(rs1) (rd = x0: JR, RET)", "I"),
    Row("auipc", f"{_IMM} ddddd 0010111", SIM, "pc-relative-address", "AUIPC rd, imm", "U"),
    Row("beq", "ooooooo ttttt sssss 000 ooooo 1100011", SIM, "branch-relative", "BEQ", "B"),
    Row("bne", "ooooooo ttttt sssss 001 ooooo 1100011", SIM, "branch-relative", "BNE", "B"),
    Row("blt", "ooooooo ttttt sssss 100 ooooo 1100011", SIM, "branch-relative", "BLT", "B"),
    Row("bge", "ooooooo ttttt sssss 101 ooooo 1100011", SIM, "branch-relative", "BGE", "B"),
    Row("bltu", "ooooooo ttttt sssss 110 ooooo 1100011", SIM, "branch-relative", "BLTU", "B"),
    Row("bgeu", "ooooooo ttttt sssss 111 ooooo 1100011", SIM, "branch-relative", "BGEU", "B"),
    Row("c_j", "101 ooooooooooo 01", SIM, "branch-relative", "C.J offset", "CJ"),
    Row("c_beqz", "110 ooo sss ooooo 01", SIM, "branch-relative", "C.BEQZ rs1', offset", "CB"),
    Row("c_bnez", "111 ooo sss ooooo 01", SIM, "branch-relative", "C.BNEZ rs1', offset", "CB"),
    Row("c_jr", "1000 sssss 00000 10", SIM, "branch-indirect",
        "C.JR rs1, rs1 != x0 (rs2 != x0 is C.MV, stepped)", "CR", "s"),
    Row("c_jalr", "1001 sssss 00000 10", SIM, "call-indirect",
        "C.JALR rs1, rs1 != x0 (rs2 != x0 is C.ADD, stepped)", "CR", "s"),
    # -- rejected ------------------------------------------------------------------------------
    Row("ecall", "000000000000 00000 000 00000 1110011", REJ, "privilege-change", "ECALL"),
    Row("ebreak", "000000000001 00000 000 00000 1110011", REJ, "exception-generating",
        "EBREAK"),
    Row("system_priv", "ppppppppppp x ppppp 000 ppppp 1110011", REJ, "privilege-change",
        "MRET, SRET, WFI, SFENCE.VMA, HFENCE...: funct3 000 other than ECALL/EBREAK",
        nonzero="p"),
    Row("csr", "cccccccccccc sssss x01 ddddd 1110011", REJ, "riscv64-csr-access", "CSRRW, CSRRWI"),
    Row("csr", "cccccccccccc sssss x1x ddddd 1110011", REJ, "riscv64-csr-access",
        "CSRRS, CSRRC, CSRRSI, CSRRCI (csrr, rdcycle, rdtime...)"),
    Row("system_100", "xxxxxxx xxxxx xxxxx 100 xxxxx 1110011", REJ, "privilege-change",
        "HLV/HLVX/HSV (guest loads and stores) and Zimop"),
    Row("fence_i", "xxxxxxxxxxxx xxxxx 001 xxxxx 0001111", REJ, "riscv64-instruction-fetch-fence",
        "FENCE.I (Zifencei)"),
    Row("lr", "00010 aa 00000 sssss 01x ddddd 0101111", REJ, "exclusive-access", "LR.W, LR.D"),
    Row("sc", "00011 aa ttttt sssss 01x ddddd 0101111", REJ, "exclusive-access", "SC.W, SC.D"),
    Row("branch_reserved", "xxxxxxx xxxxx xxxxx 01x xxxxx 1100011", REJ, "undecodable",
        "BRANCH opcode with reserved funct3 010/011"),
    Row("c_ebreak", "1001 00000 00000 10", REJ, "exception-generating", "C.EBREAK"),
    Row("c_jr_reserved", "1000 00000 00000 10", REJ, "undecodable",
        "C.JR with rs1 = x0 (reserved)"),
    Row("c_lui_reserved", "011 0 xxxxx 00000 01", REJ, "undecodable",
        "C.LUI / C.ADDI16SP with a zero immediate (reserved); capstone decodes it"),
    Row("c_illegal", "0000 0000 0000 0000", REJ, "undecodable",
        "the all-zero halfword, defined illegal"),
)  # fmt: skip
"""The table.  Valid instructions not listed are stepped out of line."""


_BUCKETS = [tuple(ROWS[i] for i in b)
            for b in bucket_rows([r.mask_match for r in ROWS], shift=0, bits=7)]
"""The rows each value of bits [6:0] allows (a lookup tests only those)."""


def lookup(w: int, width: int) -> Row | None:
    """Return the row whose class the ``width``-bit instruction ``w`` belongs to, if any."""
    for row in _BUCKETS[w & 0x7F]:
        if row.matches(w, width):
            return row
    return None


_FIELDS: dict[str, Callable[[int], dict[str, int]]] = {
    "J": lambda w: {"rd": enc.rd(w), "imm": enc.imm_j(w)},
    "I": lambda w: {"rd": enc.rd(w), "rs1": enc.rs1(w), "imm": enc.imm_i(w)},
    "U": lambda w: {"rd": enc.rd(w), "imm": enc.imm_u(w)},
    "B": lambda w: {"rs1": enc.rs1(w), "rs2": enc.rs2(w), "funct3": enc.funct3(w),
                    "imm": enc.imm_b(w)},
    "CJ": lambda h: {"imm": enc.c_imm_j(h)},
    "CB": lambda h: {"rs1": enc.c_rs1_prime(h), "imm": enc.c_imm_b(h)},
    "CR": lambda h: {"rs1": enc.c_rs1(h), "rs2": enc.c_rs2(h)},
}  # fmt: skip
"""The encoding fields each format's rule reads (immediates assembled, unsigned)."""


@lru_cache(maxsize=1)
def _capstone() -> capstone.Cs:
    return capstone.Cs(capstone.CS_ARCH_RISCV, capstone.CS_MODE_RISCV64 | capstone.CS_MODE_RISCVC)


def disassemble(raw: bytes, addr: int) -> str | None:
    """capstone's text for exactly the instruction ``raw``, or ``None`` if it rejects it."""
    ins = next(_capstone().disasm_lite(raw, addr, count=1), None)
    if ins is None or ins[1] != len(raw):
        return None
    return f"{ins[2]} {ins[3]}".strip()


def _undecodable(addr: int, raw: bytes) -> Decoded:
    return Decoded(addr, raw, REJ, "undecodable", "undecodable", f".insn 0x{raw[::-1].hex()}",
                   {"len": len(raw)})


def decode(code: bytes, addr: int, user: bool = False) -> Decoded:
    """Decode the instruction at the start of ``code`` (located at ``addr``) and give its
    verdict, class, reason code and fields.  ``raw`` is the 2 or 4 instruction bytes."""
    n = enc.length(code)
    if n == 0:
        return _undecodable(addr, code[:2])
    raw, w = code[:n], enc.word(code)
    row = lookup(w, 8 * n)
    text = disassemble(raw, addr)
    if row is None:
        if text is None:
            return _undecodable(addr, raw)
        return Decoded(addr, raw, Verdict.STEP_OUT_OF_LINE, "plain", "no-pc-use", text,
                       {"len": n})
    fields = {"len": n, **(_FIELDS[row.fmt](w) if row.fmt else {})}
    return Decoded(addr, raw, row.verdict, row.klass, row.reason, text or row.note, fields)


def classify(code: bytes) -> tuple[Verdict, str, str]:
    """``(verdict, class, reason)`` of the instruction at the start of ``code``, as
    :func:`decode` gives them, without the text and fields (the whole-image audit's cache
    fills from this)."""
    n = enc.length(code)
    if n == 0:
        return REJ, "undecodable", "undecodable"
    row = lookup(enc.word(code), 8 * n)
    if row is not None:
        return row.verdict, row.klass, row.reason
    if disassemble(code[:n], 0) is None:
        return REJ, "undecodable", "undecodable"
    return Verdict.STEP_OUT_OF_LINE, "plain", "no-pc-use"


@lru_cache(maxsize=1 << 16)
def _klass(w: int, width: int) -> str | None:
    """The class of the ``width``-bit instruction ``w`` (cached: sequence scans ask about
    the same words again and again)."""
    row = lookup(w, width)
    return None if row is None else row.klass


def is_lr(code: bytes) -> bool:
    """Whether ``code`` starts with LR.W or LR.D."""
    return _klass(enc.word(code), 8 * enc.length(code)) == "lr"


def is_sc(code: bytes) -> bool:
    """Whether ``code`` starts with SC.W or SC.D."""
    return _klass(enc.word(code), 8 * enc.length(code)) == "sc"


def sequence_hazard(code: bytes, start: int, addr: int, window: int = 32) -> str | None:
    """``"inside-exclusive-sequence"`` if, among the up to ``window`` instructions decoded
    from ``start`` up to the probed one at ``addr``, an LR comes after the last SC: the
    probe would sit between a load-reserved and its store-conditional.

    ``start`` is the function start or a point up to 32 instructions back; if it is not
    itself an instruction boundary, the scan resynchronises from the next halfword."""
    for first in (start, start + 2):
        kinds = _walk(code[first - start :], first, addr)
        if kinds is not None:
            last = [k for k in kinds[-window:] if k != ""]
            return "inside-exclusive-sequence" if last and last[-1] == "lr" else None
    return None


def _walk(code: bytes, pc: int, addr: int) -> list[str] | None:
    """Kinds ("lr", "sc" or "") of the instructions from ``pc`` to ``addr``, or ``None``
    when decoding from ``pc`` does not land on ``addr``."""
    kinds: list[str] = []
    while pc < addr:
        n = enc.length(code)
        if n == 0:
            return None
        kinds.append("lr" if is_lr(code) else "sc" if is_sc(code) else "")
        pc, code = pc + n, code[n:]
    return kinds if pc == addr else None


LINUX_DIFFERENCES: tuple[str, ...] = (
    "LR/SC are refused (`exclusive-access`), and so is any probe between an LR and the SC "
    "that closes it (`inside-exclusive-sequence`, found by scanning up to 32 instructions "
    "back or to the function start). Linux has no such check: it steps LR or SC in the "
    "slot, and the trap between them clears the reservation, so the SC fails on every "
    "retry and the loop can livelock.",
    "Conditional branches with the reserved funct3 010 or 011 are refused at registration. "
    "Linux's branch mask covers only the opcode (0x7f), so it accepts them and "
    "`simulate_branch` fails at hit time.",
    "`c.jr`/`c.jalr` require rs2 = x0 and rs1 != x0; `c.mv`/`c.add` (rs2 != x0) are "
    "stepped. Linux shipped masks 0xf007 for both, which also matched `c.mv` and `c.add` "
    "and simulated them as jumps (fixed to 0xf07f); it checks rs1 != x0 only at hit time.",
    "`c.jal` does not exist on RV64: its bits are `c.addiw`, stepped here. Linux's table "
    "once matched c.jal (mask 0xe003, match 0x2001) on RV64 too; it is now RV32-only.",
    "`c.jr`/`c.jalr` clear bit 0 of the target, as the JALR they expand to does; Linux "
    "jumps to the register's value unchanged.",
    "FENCE, FENCE.TSO and PAUSE are stepped; only FENCE.I is refused. Linux refuses the "
    "whole MISC-MEM opcode (mask 0x7f).",
    "An instruction no row lists is stepped only if capstone decodes it; otherwise it is "
    "refused as `undecodable`. Linux steps anything its tables do not list.",
)
"""Where this table deliberately departs from Linux, for ``docs/riscv64.md``."""


def doc_rows() -> list[tuple[str, str, str, str, str]]:
    """The table as (class, encoding, verdict, reason code, note) for the docs, with the
    classes every unlisted instruction falls into last."""
    rows = [(r.klass, r.pattern + (f" ({r.nonzero} != 0)" if r.nonzero else ""),
             r.verdict.value, r.reason, r.note) for r in ROWS]
    rows.append(("plain", "any other valid instruction", "step", "no-pc-use",
                 "copied unchanged, followed by ebreak"))
    rows.append(("undecodable", "words capstone cannot decode; 48-bit and longer", "reject",
                 "undecodable", ""))
    return rows

EXCLUSIVE_OPENERS = frozenset({"lr"})
"""Classes after which :func:`sequence_hazard` can report a probe inside a sequence."""


def verdict_key(raw: bytes) -> bytes:
    """The part of an instruction's encoding its verdict, class and reason depend on: all of
    it (the rows test every bit), so verdicts can be cached by encoding."""
    return raw
