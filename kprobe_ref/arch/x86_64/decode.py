"""x86_64 decode table: the verdict for each instruction class.

Mirrors Linux ``arch/x86/kernel/kprobes/core.c`` (``can_probe``, ``prepare_emulation``,
``__copy_instruction``) and goes further: memory-indirect ``call``/``jmp`` (jump tables) are
simulated rather than refused.  Rows are written as the Intel SDM's opcode maps (appendix A)
give them: an opcode map, the opcode byte as a bit pattern (letters are fields: ``c`` the
condition code) and, where the map uses ModRM.reg as an opcode extension, the ModRM byte as
a bit pattern (``mm`` mod, ``rrr`` rm).  Rows are pairwise disjoint (a proof checks it), so
their order does not matter.  An instruction no row matches is stepped out of line, with its
RIP-relative displacement rewritten when it has one.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from kprobe_ref.arch.base import Decoded, Verdict, compile_pattern
from kprobe_ref.arch.x86_64 import encoding
from kprobe_ref.arch.x86_64.encoding import (
    MAP_0F,
    MAP_1BYTE,
    Insn,
)

__all__ = [
    "EXCLUSIVE_OPENERS",
    "LINUX_DIFFERENCES",
    "PREFIX_RULES",
    "ROWS",
    "Row",
    "classify",
    "decode",
    "doc_rows",
    "lookup",
    "verdict_key",
]

SIM, REJ = Verdict.SIMULATE, Verdict.REJECT


def _compile(pattern: str) -> tuple[int, int]:
    if len(pattern.replace(" ", "")) != 8:
        raise ValueError(f"pattern {pattern!r} is not 8 bits")
    return compile_pattern(pattern)


@dataclass(frozen=True)
class Row:
    """One class of the table: opcode map, opcode pattern, optional ModRM pattern."""

    klass: str
    opmap: str
    opcode: str
    verdict: Verdict
    reason: str
    modrm: str | None = None
    forbid: tuple[tuple[int, str], ...] = ()
    """Prefixes that turn the row into a rejection: (prefix byte, reason code).  A prefix
    counts wherever it stands in the prefix area."""
    note: str = ""
    mandatory: tuple[int, ...] = ()
    """When not empty, the row matches only if the last ``F2``/``F3`` prefix is one of
    these (the SDM's mandatory prefix selecting the instruction)."""

    @cached_property
    def opcode_mask_match(self) -> tuple[int, int]:
        return _compile(self.opcode)

    @cached_property
    def modrm_mask_match(self) -> tuple[int, int]:
        return _compile(self.modrm) if self.modrm is not None else (0, 0)

    def matches(self, insn: Insn) -> bool:
        """Tell whether the instruction belongs to this row's class."""
        mask, match = self.opcode_mask_match
        if insn.opmap != self.opmap or insn.opcode & mask != match:
            return False
        if self.mandatory and last_rep_prefix(insn) not in self.mandatory:
            return False
        mmask, mmatch = self.modrm_mask_match
        return self.modrm is None or (insn.modrm is not None and insn.modrm & mmask == mmatch)


def last_rep_prefix(insn: Insn) -> int | None:
    """The last ``F2``/``F3`` byte of the prefix area (the one the CPU uses when both are
    present), or ``None``."""
    reps = [b for b in insn.prefix_bytes if b in (0xF2, 0xF3)]
    return reps[-1] if reps else None


_NEAR = ((0x66, "operand-size-branch"),)
_COUNTED = ((0x66, "operand-size-branch"), (0x67, "address-size-branch"))
_INDIRECT_MEM = (
    (0x66, "operand-size-branch"),
    (0x67, "address-size-branch"),
    (0x64, "segment-relative-target"),
    (0x65, "segment-relative-target"),
)


def _mem_rows(klass: str, reg: str, reason: str, note: str) -> tuple[Row, ...]:
    """The three memory forms (mod 00, 01, 10) of an ``FF /reg`` branch."""
    return tuple(
        Row(klass, MAP_1BYTE, "1111 1111", SIM, reason, f"{mod} {reg} xxx", _INDIRECT_MEM, note)
        for mod in ("00", "01", "10")
    )


ROWS: tuple[Row, ...] = (
    # -- simulated: control transfers -------------------------------------------------------
    Row("jcc_rel8", MAP_1BYTE, "0111 cccc", SIM, "branch-relative", None, _NEAR, "Jcc rel8"),
    Row("jcc_rel32", MAP_0F, "1000 cccc", SIM, "branch-relative", None, _NEAR, "Jcc rel32"),
    Row("jmp_rel8", MAP_1BYTE, "1110 1011", SIM, "branch-relative", None, _NEAR, "JMP rel8"),
    Row("jmp_rel32", MAP_1BYTE, "1110 1001", SIM, "branch-relative", None, _NEAR, "JMP rel32"),
    Row("call_rel32", MAP_1BYTE, "1110 1000", SIM, "call-relative", None, _NEAR, "CALL rel32"),
    Row("ret", MAP_1BYTE, "1100 0011", SIM, "return", None, _NEAR, "RET"),
    Row("ret_imm16", MAP_1BYTE, "1100 0010", SIM, "return", None, _NEAR, "RET imm16"),
    Row("loopne", MAP_1BYTE, "1110 0000", SIM, "branch-counted", None, _COUNTED, "LOOPNE rel8"),
    Row("loope", MAP_1BYTE, "1110 0001", SIM, "branch-counted", None, _COUNTED, "LOOPE rel8"),
    Row("loop", MAP_1BYTE, "1110 0010", SIM, "branch-counted", None, _COUNTED, "LOOP rel8"),
    Row("jrcxz", MAP_1BYTE, "1110 0011", SIM, "branch-counted", None, _COUNTED, "JRCXZ rel8"),
    Row("call_ind_reg", MAP_1BYTE, "1111 1111", SIM, "call-indirect", "11 010 xxx", _NEAR,
        "CALL r64 (FF /2)"),
    *_mem_rows("call_ind_mem", "010", "call-indirect", "CALL m64 (FF /2); Linux refuses it"),
    Row("jmp_ind_reg", MAP_1BYTE, "1111 1111", SIM, "branch-indirect", "11 100 xxx", _NEAR,
        "JMP r64 (FF /4)"),
    *_mem_rows("jmp_ind_mem", "100", "branch-indirect", "JMP m64 (FF /4); Linux refuses it"),
    # -- rejected ----------------------------------------------------------------------------
    Row("int3", MAP_1BYTE, "1100 1100", REJ, "exception-generating", note="INT3"),
    Row("int_n", MAP_1BYTE, "1100 1101", REJ, "exception-generating", note="INT imm8"),
    Row("into", MAP_1BYTE, "1100 1110", REJ, "exception-generating", note="INTO"),
    Row("int1", MAP_1BYTE, "1111 0001", REJ, "exception-generating", note="INT1 / ICEBP"),
    Row("ud0", MAP_0F, "1111 1111", REJ, "exception-generating", note="UD0"),
    Row("ud1", MAP_0F, "1011 1001", REJ, "exception-generating", note="UD1"),
    Row("ud2", MAP_0F, "0000 1011", REJ, "exception-generating", note="UD2"),
    Row("iret", MAP_1BYTE, "1100 1111", REJ, "privilege-change", note="IRET/IRETQ"),
    Row("syscall", MAP_0F, "0000 0101", REJ, "privilege-change", note="SYSCALL"),
    Row("sysret", MAP_0F, "0000 0111", REJ, "privilege-change", note="SYSRET"),
    Row("sysenter", MAP_0F, "0011 0100", REJ, "privilege-change", note="SYSENTER"),
    Row("sysexit", MAP_0F, "0011 0101", REJ, "privilege-change", note="SYSEXIT"),
    Row("rsm", MAP_0F, "1010 1010", REJ, "privilege-change", note="RSM"),
    Row("retf", MAP_1BYTE, "1100 101x", REJ, "far-transfer", note="RETF, RETF imm16"),
    Row("call_far", MAP_1BYTE, "1001 1010", REJ, "far-transfer", note="CALL ptr16:32"),
    Row("jmp_far", MAP_1BYTE, "1110 1010", REJ, "far-transfer", note="JMP ptr16:32"),
    Row("call_far_ind", MAP_1BYTE, "1111 1111", REJ, "far-transfer", "xx 011 xxx",
        note="CALL m16:64 (FF /3)"),
    Row("jmp_far_ind", MAP_1BYTE, "1111 1111", REJ, "far-transfer", "xx 101 xxx",
        note="JMP m16:64 (FF /5)"),
    Row("mov_ss", MAP_1BYTE, "1000 1110", REJ, "interrupt-shadow", "xx 010 xxx",
        note="MOV SS, r/m16"),
    Row("pop_ss", MAP_1BYTE, "0001 0111", REJ, "interrupt-shadow", note="POP SS"),
    Row("hlt", MAP_1BYTE, "1111 0100", REJ, "halts", note="HLT"),
    Row("xabort", MAP_1BYTE, "1100 0110", REJ, "transactional", "1111 1000", note="XABORT"),
    Row("xbegin", MAP_1BYTE, "1100 0111", REJ, "transactional", "1111 1000", note="XBEGIN"),
    Row("xend", MAP_0F, "0000 0001", REJ, "transactional", "1101 0101", note="XEND"),
    Row("vmx", MAP_0F, "0000 0001", REJ, "privilege-change", "11 000 xxx",
        note="ENCLV, VMCALL, VMLAUNCH, VMRESUME, VMXOFF (0F 01 /0, register form)"),
    Row("svm", MAP_0F, "0000 0001", REJ, "privilege-change", "11 011 xxx",
        note="VMRUN, VMMCALL, VMLOAD, VMSAVE, STGI, CLGI, SKINIT, INVLPGA (0F 01 D8-DF)"),
    Row("fred_return", MAP_0F, "0000 0001", REJ, "privilege-change", "1100 1010",
        note="ERETS (F2), ERETU (F3); without the prefix it is CLAC", mandatory=(0xF2, 0xF3)),
)  # fmt: skip
"""The table.  Classes not listed are stepped out of line."""


def _index(rows: tuple[Row, ...]) -> dict[tuple[str, int], tuple[Row, ...]]:
    """The rows that can match each (opcode map, opcode byte): a lookup tries only these."""
    index: dict[tuple[str, int], tuple[Row, ...]] = {}
    for opmap in {r.opmap for r in rows}:
        for op in range(256):
            hits = tuple(r for r in rows if r.opmap == opmap
                         and op & r.opcode_mask_match[0] == r.opcode_mask_match[1])
            if hits:
                index[opmap, op] = hits
    return index


_BY_OPCODE = _index(ROWS)


def lookup(insn: Insn) -> Row | None:
    """Return the row whose class the instruction belongs to, if any."""
    for row in _BY_OPCODE.get((insn.opmap, insn.opcode), ()):
        if row.matches(insn):
            return row
    return None


def _fields(insn: Insn, row: Row | None) -> dict[str, int]:
    f: dict[str, int] = {"len": insn.length}
    if row is not None and "c" in row.opcode:
        f["cc"] = insn.opcode & 0xF
    if row is not None and row.klass in ("jcc_rel8", "jmp_rel8", "loop", "loope", "loopne",
                                         "jrcxz"):
        f["disp"], f["dsize"] = insn.raw[-1], 8
    elif row is not None and row.klass in ("jcc_rel32", "jmp_rel32", "call_rel32"):
        f["disp"], f["dsize"] = int.from_bytes(insn.raw[-4:], "little"), 32
    elif row is not None and row.klass == "ret_imm16":
        f["imm"] = int.from_bytes(insn.raw[-2:], "little")
    if row is not None and row.klass.endswith("_reg") and insn.modrm_rm_register is not None:
        f["reg"] = insn.modrm_rm_register
    if insn.mem is not None:
        f.update(base=insn.mem.base, index=insn.mem.index, scale=insn.mem.scale,
                 mdisp=insn.mem.disp)
    if insn.disp_offset is not None:
        f["disp_offset"] = insn.disp_offset
    return f


def _verdict(insn: Insn, row: Row | None) -> tuple[Verdict, str, str]:
    if row is None:
        if insn.transfers_control:
            return REJ, "unclassified_flow", "control-flow-unclassified"
        if insn.disp_offset is not None:
            return Verdict.STEP_OUT_OF_LINE, "rip_relative", "rip-relative-operand"
        return Verdict.STEP_OUT_OF_LINE, "plain", "no-pc-use"
    for prefix, reason in row.forbid:
        if prefix in insn.prefixes:
            return REJ, row.klass, reason
    return row.verdict, row.klass, row.reason


def decode(code: bytes, addr: int, user: bool = False) -> Decoded:
    """Decode the instruction at the start of ``code`` (located at ``addr``) and give its
    verdict, class, reason code and fields."""
    try:
        insn = encoding.parse(code, addr)
    except ValueError:
        insn = None
    if insn is None:
        raw = code[:1]
        return Decoded(addr, raw, REJ, "undecodable", "undecodable", f".byte {raw.hex()}")
    row = lookup(insn)
    verdict, klass, reason = _verdict(insn, row)
    if verdict is Verdict.SIMULATE and klass.endswith("_reg") and (
        insn.modrm_rm_register is None or insn.reg_operand != insn.modrm_rm_register
    ):
        verdict, reason = REJ, "undecodable"  # capstone and the ModRM/REX.B bits disagree
    return Decoded(addr, insn.raw, verdict, klass, reason, insn.text, _fields(insn, row))


PREFIX_RULES: tuple[str, ...] = (
    "The prefix area is the run of legacy prefixes (`66 67 F0 F2 F3 2E 3E 26 36 64 65`) and "
    "REX bytes (`40`-`4F`) before the opcode, in any order and with repeats.  The opcode map "
    "and opcode byte are found after the whole area, so a row matches whatever stands in "
    "front of the opcode (`40 2e e8 rel32` is `call_rel32`, `48 40 c3` is `ret`).",
    "Only a REX byte standing last, immediately before the opcode or escape, is the "
    "instruction's REX; one followed by any other prefix is ignored by the CPU.  The "
    "register of `call_ind_reg`/`jmp_ind_reg` is ModRM.rm extended by that REX.B alone "
    "(`41 2e ff d0` is `call rax`, `40 41 ff d0` is `call r8`), checked against capstone.",
    "A row's prefix rules look at every legacy prefix of the area, wherever it stands: "
    "`66` on a near branch, `67` on a counted or memory-indirect branch and `64`/`65` on a "
    "memory-indirect branch refuse it (`F0` on a branch makes the CPU raise #UD; capstone "
    "does not decode it, so it is refused as undecodable).  `2E`/`3E` (branch "
    "hints, `notrack`), `26`/`36`, `F2` (`bnd`), `F3` (`rep ret`), REX and REX.W change "
    "nothing a simulated branch does and are accepted.  `67` on a relative `jcc`/`jmp`/"
    "`call` does not change the target in 64-bit mode and is accepted.",
    "A mandatory prefix selects a row where the SDM's map does: `F2`/`F3 0F 01 CA` are "
    "ERETS/ERETU (refused), plain `0F 01 CA` is CLAC (stepped).  When both `F2` and `F3` "
    "appear, the last one counts.",
    "A memory operand is RIP-relative with ModRM `00 reg 101` and no SIB; with `67` it is "
    "EIP-relative (the address taken mod 2^32), and is relocated the same way: the rewritten "
    "displacement gives the same address modulo 2^32.",
    "Below the table, any instruction capstone counts a jump, call, return or interrupt, or "
    "that reads or writes RIP implicitly, and that no row simulates, is refused "
    "(`control-flow-unclassified`): the decoder's own view of control flow is a safety net, "
    "so a gap in the rows refuses rather than steps.",
    "`tools/x86_campaign.py` checks the whole classification against iced-x86, an "
    "independent decoder: every prefix arrangement the CPU can tell apart of up to four "
    "prefix classes, every opcode of the one-byte, 0F, 0F38 and 0F3A maps, register, "
    "RIP-relative and SIB memory ModRM forms with all eight ModRM.reg values, and VEX, EVEX "
    "and XOP forms.  No stepped encoding may be a control transfer or carry an unrelocated "
    "RIP-relative operand in iced's view; disagreements between the decoders are settled in "
    "unicorn at two addresses (`tests/vectors/x86_disagreements.json`).",
)
"""How prefixes are classified, for ``docs/x86_64.md``."""
def classify(code: bytes) -> tuple[Verdict, str, str]:
    """``(verdict, class, reason)`` of the instruction at the start of ``code``, as
    :func:`decode` gives them, without the text and fields (the whole-image audit's cache
    fills from this)."""
    d = decode(code, 0)
    return d.verdict, d.klass, d.reason


LINUX_DIFFERENCES: tuple[str, ...] = (
    "Memory-indirect `call`/`jmp` (`FF /2`, `FF /4` with a memory operand, as in jump tables) "
    "are simulated: the handler computes the effective address (RIP-relative included) and "
    "loads the target. Linux refuses them (`prepare_emulation`: 'TODO: support memory "
    "addressing').",
    "Near branches with an operand-size prefix (0x66) are refused with their own reason: "
    "Intel and AMD disagree on their meaning in 64-bit mode.",
    "`loop`/`jrcxz` with an address-size prefix (0x67, counting in ECX) are refused rather "
    "than simulated with a 64-bit counter.",
    "`cli`, `sti`, `pushf` and `popf` are stepped out of line (Linux emulates them so that "
    "single-stepping cannot enable interrupts; this machine delivers none).",
    "VMX and SVM instructions in register form (`0F 01 C0`-`C4`, `D8`-`DF`) are refused, as "
    "Linux refuses `0F 01 /0` register forms; Linux steps the SVM ones.",
    "ERETS/ERETU (FRED returns) are refused by their mandatory prefix; Linux relies on them "
    "sitting in non-probeable entry code.",
    "Linux's instruction decoder looks for a REX byte only after the legacy prefixes, so in "
    "`40 2e e8 rel32` it takes `2e` for the opcode.  Here the whole prefix area is read as "
    "the CPU reads it.",
    "A RIP-relative operand whose kernel slot would be out of 32-bit reach is a registration "
    "error (`OutOfReach`), never a silently wrapped displacement.",
)
"""Where this table deliberately departs from Linux, for ``docs/x86_64.md``."""


def _pattern_text(row: Row) -> str:
    modrm = f" /ModRM {row.modrm}" if row.modrm is not None else ""
    return f"{row.opmap}: {row.opcode}{modrm}"


def doc_rows() -> list[tuple[str, str, str, str, str]]:
    """The table as (class, encoding, verdict, reason code, note) for the docs, with the
    classes every unlisted instruction falls into last."""
    rows = [(r.klass, _pattern_text(r), r.verdict.value, r.reason, r.note) for r in ROWS]
    for prefix, reason in {p: r for row in ROWS for p, r in row.forbid}.items():
        rows.append(("(prefixed branch)", f"prefix {prefix:#04x} on a simulated branch", "reject",
                     reason, "see the rows' prefix rules"))
    rows.append(("unclassified_flow", "any other instruction capstone counts a jump, call, "
                 "return or interrupt, or that reads or writes RIP implicitly", "reject",
                 "control-flow-unclassified", "a safety net: never stepped"))
    rows.append(("rip_relative", "any other instruction with ModRM 00 reg 101", "step",
                 "rip-relative-operand", "disp32 rewritten for the slot"))
    rows.append(("plain", "any other instruction", "step", "no-pc-use", "copied unchanged"))
    rows.append(("undecodable", "bytes capstone cannot decode", "reject", "undecodable", ""))
    return rows

EXCLUSIVE_OPENERS: frozenset[str] = frozenset()
"""x86_64 has no load-exclusive/store-conditional sequences."""


_NO_MODRM_1BYTE = frozenset(
    [*range(0x04, 0x40, 8), *range(0x05, 0x40, 8), *range(0x50, 0x60), 0x68, 0x6A,
     *range(0x6C, 0x80), *range(0x90, 0xA0), *range(0xA0, 0xC0), 0xC2, 0xC3, 0xC8, 0xC9,
     *range(0xCA, 0xD0), *range(0xE0, 0xF0), 0xF1, 0xF4, 0xF5, *range(0xF8, 0xFE)]
)
"""One-byte-map opcodes without a ModRM byte in 64-bit mode (SDM Vol. 2, appendix A.3:
ALU with AL/eAX and an immediate, push/pop r, push imm, string, port and flag operations,
jcc rel8, xchg with eAX, moffs moves, mov r, imm, ret, enter/leave, int, loop/jrcxz, call and
jmp rel)."""
_NO_MODRM_0F = frozenset(
    [0x05, 0x06, 0x07, 0x08, 0x09, 0x0B, *range(0x30, 0x38), *range(0x80, 0x90), 0xA0, 0xA1,
     0xA2, 0xA8, 0xA9, 0xAA, *range(0xC8, 0xD0)]
)
"""Two-byte-map (0F) opcodes without a ModRM byte: syscall, clts, sysret, invd, wbinvd, ud2,
wrmsr/rdtsc/rdmsr/rdpmc/sysenter/sysexit/getsec, jcc rel32, push/pop fs/gs, cpuid, rsm,
bswap."""


def verdict_key(raw: bytes) -> bytes:
    """The part of an instruction's encoding its verdict, class and reason depend on: the
    legacy prefixes, REX, the opcode map and opcode, the ModRM byte where the opcode has one
    (its mod and rm decide a RIP-relative operand, its reg an opcode extension or the
    register of ``call``/``jmp`` through a register), and the length.  Displacements and
    immediates never change a verdict, so instructions that differ only there share a cached
    verdict.  Where the opcode is not known to lack a ModRM byte, the byte after it is kept
    whatever it is."""
    _prefixes, _rex, opmap, at = encoding.opcode_position(raw)
    op = raw[at] if at < len(raw) else -1
    no_modrm = (opmap == MAP_1BYTE and op in _NO_MODRM_1BYTE) or (
        opmap == MAP_0F and op in _NO_MODRM_0F)
    return raw[: at + (1 if no_modrm else 2)] + bytes((len(raw),))
