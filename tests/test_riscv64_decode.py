"""riscv64 decode table: disjoint rows, every reject class with its reason, the c.jr/c.mv and
c.jal/c.addiw traps, LR..SC sequences, and agreement with capstone over all 65,536 16-bit
words and ~20k random 32-bit words for the branch and jump classes."""

from __future__ import annotations

import itertools
import random
from functools import cache
from typing import Any

import capstone
import pytest

from kprobe_ref.arch import ARCHES, Verdict
from kprobe_ref.arch.riscv64 import decode as D
from kprobe_ref.arch.riscv64 import encoding as E
from kprobe_ref.bits import to_signed
from kprobe_ref.reasons import REASONS

RV = ARCHES["riscv64"]
AT = 0x40_1000


@cache
def cs() -> Any:
    md = capstone.Cs(capstone.CS_ARCH_RISCV, capstone.CS_MODE_RISCV64 | capstone.CS_MODE_RISCVC)
    md.detail = True
    return md


def cs_insn(raw: bytes) -> Any:
    """capstone's decoding of exactly ``raw``, or None."""
    got = next(cs().disasm(raw, AT, count=1), None)
    return got if got is not None and got.size == len(raw) else None


def dec(raw: bytes) -> Any:
    return RV.decode(raw + b"\x13\x00\x00\x00", AT, False)


def w4(x: int) -> bytes:
    return x.to_bytes(4, "little")


def w2(x: int) -> bytes:
    return x.to_bytes(2, "little")


# -- the table itself -------------------------------------------------------------------------


def test_every_row_compiles_and_names_a_known_reason() -> None:
    for row in D.ROWS:
        mask, match = row.mask_match
        assert match & ~mask == 0
        assert row.width in (16, 32)
        assert row.reason in REASONS
        if row.width == 32:
            assert match & 0b11 == 0b11 and (match >> 2) & 0b111 != 0b111
        else:
            assert mask & 0b11 == 0b11 and match & 0b11 != 0b11


def _overlap(a: D.Row, b: D.Row) -> bool:
    """Whether some word satisfies both rows (masks, matches and nonzero constraints)."""
    (ma, va), (mb, vb) = a.mask_match, b.mask_match
    if a.width != b.width or (ma & mb) & (va ^ vb):
        return False
    fixed, value = ma | mb, va | vb
    for row in (a, b):
        if row.nonzero:
            field = row.letter_mask(row.nonzero)
            if field & ~fixed == 0 and value & field == 0:
                return False
    if a.nonzero and b.nonzero:  # both constrained: fall back to enumerating the free bits
        return _brute_overlap(a, b)
    return True


def _brute_overlap(a: D.Row, b: D.Row) -> bool:
    assert a.width == 16, "nonzero constraints only on compressed rows are enumerated"
    return any(a.matches(h, 16) and b.matches(h, 16) for h in range(1 << 16))


def test_rows_are_pairwise_disjoint() -> None:
    for a, b in itertools.combinations(D.ROWS, 2):
        assert not _overlap(a, b), (a.klass, b.klass)


def test_compressed_rows_are_disjoint_by_enumeration() -> None:
    rows16 = [r for r in D.ROWS if r.width == 16]
    for h in range(1 << 16):
        assert sum(r.matches(h, 16) for r in rows16) <= 1, hex(h)


def test_c_jr_and_c_jalr_masks_are_not_linux_0xf007() -> None:
    jr = next(r for r in D.ROWS if r.klass == "c_jr")
    jalr = next(r for r in D.ROWS if r.klass == "c_jalr")
    assert jr.mask_match == (0xF07F, 0x8002)
    assert jalr.mask_match == (0xF07F, 0x9002)
    assert jr.letter_mask("s") == 0x0F80


# -- concrete verdicts ------------------------------------------------------------------------

REJECTS = [
    ("ecall", w4(0x0000_0073), "privilege-change"),
    ("ebreak", w4(0x0010_0073), "exception-generating"),
    ("system_priv", w4(0x3020_0073), "privilege-change"),  # mret
    ("system_priv", w4(0x1020_0073), "privilege-change"),  # sret
    ("system_priv", w4(0x1050_0073), "privilege-change"),  # wfi
    ("system_priv", w4(0x1200_0073), "privilege-change"),  # sfence.vma zero, zero
    ("csr", w4(0xC000_2573), "riscv64-csr-access"),  # rdcycle a0
    ("csr", w4(0x3000_9073), "riscv64-csr-access"),  # csrw mstatus, ra
    ("csr", w4(0x3004_7073), "riscv64-csr-access"),  # csrci mstatus, 8
    ("system_100", w4(0x6000_4073), "privilege-change"),  # hlv.b zero, (zero)
    ("fence_i", w4(0x0000_100F), "riscv64-instruction-fetch-fence"),
    ("lr", E.encode_lr(5, 10), "exclusive-access"),
    ("lr", E.encode_lr(5, 10, double=False), "exclusive-access"),
    ("sc", E.encode_sc(5, 6, 10), "exclusive-access"),
    ("sc", E.encode_sc(5, 6, 10, double=False), "exclusive-access"),
    ("branch_reserved", E.encode_branch(0b010, 1, 2, 8), "undecodable"),
    ("branch_reserved", E.encode_branch(0b011, 1, 2, -8), "undecodable"),
    ("c_ebreak", E.C_EBREAK, "exception-generating"),
    ("c_jr_reserved", w2(0x8002), "undecodable"),
    ("c_illegal", w2(0x0000), "undecodable"),
    ("c_lui_reserved", w2(0x6081), "undecodable"),  # c.lui ra, 0 (nzimm = 0 is reserved)
    ("c_lui_reserved", w2(0x6101), "undecodable"),  # c.addi16sp sp, 0 (reserved)
    ("c_lui_reserved", w2(0x6F81), "undecodable"),  # c.lui t6, 0
    ("undecodable", w4(0x0000_107F)[:2] + b"\0\0", "undecodable"),  # 48-bit encoding
    ("undecodable", E.encode_jalr(1, 1, 0)[:1] + bytes([0x90 | 0x00, 0, 0]), "undecodable"),
]


@pytest.mark.parametrize(("klass", "raw", "reason"), REJECTS)
def test_reject_classes(klass: str, raw: bytes, reason: str) -> None:
    d = RV.decode(raw + b"\0\0", AT, False)
    assert (d.verdict, d.klass, d.reason) == (Verdict.REJECT, klass, reason)
    assert len(d.raw) in (2, 4)


def test_other_fences_and_amos_are_stepped() -> None:
    for word in (0x0FF0_000F, 0x8330_000F, 0x0100_000F):  # fence, fence.tso, pause
        d = dec(w4(word))
        assert (d.verdict, d.reason) == (Verdict.STEP_OUT_OF_LINE, "no-pc-use"), hex(word)
    amoadd = 0x00B5_302F  # amoadd.d zero, a1, (a0)
    assert dec(w4(amoadd)).verdict is Verdict.STEP_OUT_OF_LINE


SIMULATED = [
    ("jal", E.encode_jal(1, 2048), {"rd": 1, "imm": 2048}),
    ("jal", E.encode_jal(0, -(1 << 20)), {"rd": 0, "imm": 1 << 20}),
    ("jalr", E.encode_jalr(1, 1, 0), {"rd": 1, "rs1": 1, "imm": 0}),
    ("jalr", E.encode_jalr(0, 5, -1), {"rd": 0, "rs1": 5, "imm": 0xFFF}),
    ("auipc", E.encode_auipc(10, 0xFFFFF), {"rd": 10, "imm": 0xFFFFF000}),
    ("beq", E.encode_branch(0, 1, 2, -4096), {"rs1": 1, "rs2": 2, "funct3": 0, "imm": 0x1000}),
    ("bgeu", E.encode_branch(7, 31, 0, 4094), {"rs1": 31, "rs2": 0, "funct3": 7, "imm": 4094}),
    ("c_j", E.encode_c_j(-2048), {"imm": 0x800}),
    ("c_jr", E.encode_c_jr(1), {"rs1": 1, "rs2": 0}),
    ("c_jalr", E.encode_c_jalr(1), {"rs1": 1, "rs2": 0}),
    ("c_beqz", E.encode_c_beqz(8, -256), {"rs1": 8, "imm": 0x100}),
    ("c_bnez", E.encode_c_bnez(15, 254), {"rs1": 15, "imm": 254}),
]


@pytest.mark.parametrize(("klass", "raw", "fields"), SIMULATED)
def test_simulated_classes_and_raw_fields(klass: str, raw: bytes, fields: dict[str, int]) -> None:
    d = dec(raw)
    assert (d.verdict, d.klass) == (Verdict.SIMULATE, klass)
    assert d.raw == raw and d.length == len(raw)
    assert {k: d.fields[k] for k in fields} == fields


def test_c_mv_and_c_add_are_plain_steps_not_jumps() -> None:
    for rs1, rs2 in itertools.product((1, 5, 31), (1, 10, 31)):
        for funct4 in (0b1000, 0b1001):  # c.mv, c.add
            h = funct4 << 12 | rs1 << 7 | rs2 << 2 | 0b10
            d = dec(w2(h))
            assert (d.verdict, d.klass) == (Verdict.STEP_OUT_OF_LINE, "plain"), hex(h)


def test_c_jal_encoding_is_c_addiw_on_rv64() -> None:
    for h in (0x2081, 0x2F7D, 0x3FFD, 0x2505):
        d = dec(w2(h))
        assert d.verdict is Verdict.STEP_OUT_OF_LINE and d.text.startswith("c.addiw"), d


def test_breakpoint_matches_instruction_length() -> None:
    assert RV.breakpoint(dec(E.encode_c_j(8)), False) == E.C_EBREAK
    assert RV.breakpoint(dec(E.encode_jal(0, 8)), False) == E.EBREAK
    assert RV.step_breakpoint(False) == E.EBREAK == b"\x73\x00\x10\x00"
    assert E.C_EBREAK == b"\x02\x90"


# -- LR..SC sequences ---------------------------------------------------------------------------

ADDI = E.encode_i(0x13, 0, 5, 5, 1)
C_NOP = w2(0x0001)
LOOP = [E.encode_lr(5, 10), E.encode_branch(1, 5, 11, 16), E.encode_sc(6, 12, 10),
        E.encode_c_bnez(9, -10), ADDI]  # fmt: skip


def _hazard(insns: list[bytes], index: int, lead: bytes = b"") -> str | None:
    code = lead + b"".join(insns)
    addr = AT + len(lead) + sum(len(i) for i in insns[:index])
    return RV.sequence_hazard(code, AT, addr)


def test_probe_between_lr_and_sc_is_refused() -> None:
    assert _hazard(LOOP, 1) == "inside-exclusive-sequence"
    assert _hazard(LOOP, 0) is None
    assert _hazard(LOOP, 3) is None  # after the SC
    assert _hazard(LOOP, 4) is None


def test_open_lr_far_back_is_outside_the_window() -> None:
    body = [E.encode_lr(5, 10)] + [ADDI] * 32 + [ADDI]
    assert _hazard(body, 32) == "inside-exclusive-sequence"
    assert _hazard(body, 33) is None


def test_scan_resynchronises_from_a_start_inside_an_instruction() -> None:
    lead = ADDI[2:]  # the upper half of a 4-byte instruction
    assert _hazard([C_NOP, *LOOP], 2, lead) == "inside-exclusive-sequence"


# -- agreement with capstone ------------------------------------------------------------------

C_CLASSES = {"c_j": "c.j", "c_jr": "c.jr", "c_jalr": "c.jalr", "c_beqz": "c.beqz",
             "c_bnez": "c.bnez", "c_ebreak": "c.ebreak"}  # fmt: skip
WIDTH = {"c_j": E.CJ_WIDTH, "c_beqz": E.CB_WIDTH, "c_bnez": E.CB_WIDTH, "jal": E.J_WIDTH,
         "jalr": E.I_WIDTH, **dict.fromkeys(("beq", "bne", "blt", "bge", "bltu", "bgeu"),
                                            E.B_WIDTH)}  # fmt: skip


def _imm_operand(ins: Any) -> int | None:
    imms = [op.imm for op in ins.operands if op.type == capstone.CS_OP_IMM]
    return imms[-1] if imms else None


def _check_against_capstone(raw: bytes, classes: dict[str, str]) -> None:
    d = RV.decode(raw, AT, False)
    ins = cs_insn(raw)
    name = None if ins is None else ins.insn_name()
    mine = classes.get(d.klass)
    assert (mine == name) or (mine is None and name not in classes.values()), (raw.hex(), d)
    if ins is None:
        assert d.verdict is Verdict.REJECT, (raw.hex(), d)
    if d.verdict is Verdict.SIMULATE and d.klass in WIDTH and _imm_operand(ins) is not None:
        assert to_signed(d.fields["imm"], WIDTH[d.klass]) == _imm_operand(ins), raw.hex()
    if d.klass in ("c_jr", "c_jalr"):
        assert ins.operands[0].reg - 1 == d.fields["rs1"]


def test_all_16_bit_words_against_capstone() -> None:
    for h in range(1 << 16):
        if h & 0b11 != 0b11:
            _check_against_capstone(w2(h), C_CLASSES)


B_CLASSES = {k: k for k in ("jal", "jalr", "auipc", "beq", "bne", "blt", "bge", "bltu", "bgeu")}
OPCODES = (0b1101111, 0b1100111, 0b1100011, 0b0010111, 0b1110011, 0b0101111, 0b0001111)


def test_random_32_bit_words_against_capstone() -> None:
    rng = random.Random(20240611)
    for i in range(20_000):
        w = rng.getrandbits(32)
        if i % 2:
            w = (w & ~0x7F) | rng.choice(OPCODES)
        if w & 0b11 != 0b11 or (w >> 2) & 0b111 == 0b111:
            w |= 0b11
            w &= ~0b10000
        _check_against_capstone(w4(w), B_CLASSES)
